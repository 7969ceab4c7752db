"""Integration: a real TensorBoard server reads what log_tensorboard wrote.

The server runs on 127.0.0.1 on a free port; the test asks its HTTP API (the routes the web
app uses) for the scalars, the custom-scalars layout and the HParams session groups.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fitstream import collect, log_tensorboard, pipe

T = TypeVar("T")

pytestmark = pytest.mark.slow

STARTUP_DEADLINE_S = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.base = f"http://127.0.0.1:{port}"
        self.log = log

    def get(self, route: str, **query: str) -> Any:
        url = f"{self.base}{route}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def post(self, route: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.base}{route}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def wait_for(self, what: str, probe: Callable[[], T | None]) -> T:
        """Call ``probe`` until it returns something other than None, within the deadline."""
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"tensorboard exited early:\n{self.log.read_text(errors='replace')}")
            try:
                result = probe()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                result = None
            if result is not None:
                return result
            time.sleep(0.5)
        pytest.fail(
            f"tensorboard did not serve {what} within {STARTUP_DEADLINE_S} s:\n"
            f"{self.log.read_text(errors='replace')}"
        )


@pytest.fixture
def tensorboard_server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    logdir = tmp_path / "runs"
    logdir.mkdir()
    port = free_port()
    log = tmp_path / "tensorboard.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorboard.main",
                "--logdir",
                str(logdir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--reload_interval",
                "1",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            yield Server(process, port, log), logdir
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


def training_run(lr: float) -> list[dict[str, Any]]:
    return [
        {"step": step, "train_loss": lr / step, "val_loss": 2 * lr / step, "val_acc": 0.25 * step}
        for step in (1, 2, 3)
    ]


def session_groups(server: Server) -> dict[str, tuple[dict[str, Any], dict[str, float]]]:
    """The HParams table: {session run: (hyperparameters, {"group/tag": metric value})}."""
    groups = server.post(
        "/data/plugin/hparams/session_groups",
        {
            "experimentName": "",
            "allowedStatuses": ["STATUS_SUCCESS", "STATUS_UNKNOWN", "STATUS_RUNNING"],
            "colParams": [],
            "startIndex": 0,
            "sliceSize": 100,
        },
    )["sessionGroups"]
    return {
        group["name"]: (
            group["hparams"],
            {f"{m['name']['group']}/{m['name']['tag']}": m["value"] for m in group["metricValues"]},
        )
        for group in groups
    }


def test_the_server_shows_the_logged_scalars_layout_and_hparams(
    tensorboard_server: tuple[Server, Path],
) -> None:
    server, logdir = tensorboard_server
    for name, hparams in (("lr_0.1", {"lr": 0.1}), ("lr_0.01", {"lr": 0.01, "momentum": 0.9})):
        lr = hparams["lr"]
        collect(pipe(training_run(lr), log_tensorboard(logdir / name, hparams=hparams)))

    def both_runs_loaded() -> dict[str, Any] | None:
        tags = server.get("/data/plugin/scalars/tags")
        ready = all(
            "hparams/acc_best" in tags.get(f"{run}/validation", {}) for run in ("lr_0.1", "lr_0.01")
        )
        return tags if ready else None

    tags = server.wait_for("both runs' scalars", both_runs_loaded)
    # train and validation share a tag in sibling runs: one chart each in Time Series.
    assert set(tags["lr_0.1/train"]) == {"epoch/loss"}
    assert set(tags["lr_0.1/validation"]) == {
        "epoch/loss",
        "hparams/loss_best",
        "epoch/acc",
        "hparams/acc_best",
    }
    assert not tags.get("lr_0.1")  # no one-point cards in the session's own folder

    for run, lr in (("lr_0.1", 0.1), ("lr_0.01", 0.01)):
        points = server.get(
            "/data/plugin/scalars/scalars", run=f"{run}/validation", tag="epoch/loss"
        )
        assert [step for _, step, _ in points] == [1, 2, 3]
        assert [value for _, _, value in points] == pytest.approx([2 * lr / s for s in (1, 2, 3)])

    layout = server.get("/data/plugin/custom_scalars/layout")
    charts = {chart["title"]: chart["multiline"]["tag"] for chart in layout["category"][0]["chart"]}
    assert charts == {
        "acc": ["^epoch/acc$", "^hparams/acc_best$"],
        "loss": ["^epoch/loss$", "^hparams/loss_best$"],
    }

    by_run = session_groups(server)
    assert set(by_run) == {"lr_0.1", "lr_0.01"}
    assert "momentum" not in by_run["lr_0.1"][0]  # a name one run lacks is an empty cell...
    assert by_run["lr_0.01"][0]["momentum"] == pytest.approx(0.9)  # ...and shown for the other
    for run, lr in (("lr_0.1", 0.1), ("lr_0.01", 0.01)):
        hparams, metrics = by_run[run]
        assert hparams["lr"] == pytest.approx(lr)
        assert metrics["validation/hparams/loss_best"] == pytest.approx(2 * lr / 3)
        assert metrics["validation/hparams/acc_best"] == pytest.approx(0.75)
        assert metrics["train/epoch/loss"] == pytest.approx(lr / 3)


def test_the_server_shows_an_ensemble_as_one_session_per_member(
    tensorboard_server: tuple[Server, Path], sweep: Any
) -> None:
    server, logdir = tensorboard_server
    collect(pipe(sweep(4, 3), log_tensorboard(logdir / "sweep")))
    by_run = server.wait_for(
        "the members' sessions",
        lambda: session_groups(server) if len(session_groups(server)) == 4 else None,
    )
    assert sorted(by_run) == sorted(f"sweep/lr={10.0 ** -(k + 1):g}" for k in range(4))
    hparams, metrics = by_run["sweep/lr=0.001"]
    assert hparams["lr"] == pytest.approx(1e-3)
    assert hparams["member"] == "2"  # a whole number, shown as one
    assert metrics["validation/hparams/loss_best"] == pytest.approx(2 * 3 / 3)
    assert metrics["train/epoch/loss"] == pytest.approx(3 / 3)


def test_the_server_shows_a_grid_as_one_session_per_setting_and_no_empty_run(
    tensorboard_server: tuple[Server, Path], sweep: Any
) -> None:
    server, logdir = tensorboard_server
    lrs = (0.1, 0.01, 0.001, 0.0001)
    grid = [{"lr": lr, "fold": fold} for lr in lrs for fold in range(5)]  # 20 members
    collect(pipe(sweep(20, 3, hparams=grid), log_tensorboard(logdir / "grid")))
    by_run = server.wait_for(
        "the settings' sessions",
        lambda: session_groups(server) if len(session_groups(server)) == 4 else None,
    )
    assert sorted(by_run) == sorted(f"grid/lr={lr:g}" for lr in lrs)
    hparams, metrics = by_run["grid/lr=0.01"]
    assert hparams == {"lr": pytest.approx(0.01), "folds": "5"}
    # members 5..9 have val_loss 2 * (m + 1) / s: at step 3 their mean is 2 * 8 / 3
    assert metrics["validation/epoch/loss"] == pytest.approx(2 * 8 / 3)
    runs = server.get("/data/runs")
    assert "grid" not in runs
    assert "." not in runs
    curves = {run for run, tags in server.get("/data/plugin/scalars/tags").items() if tags}
    assert len(curves) == 8  # 4 settings x (train, validation), not 40
    assert set(runs) == curves | set(by_run)  # the others hold the settings' sessions
    layout = server.get("/data/plugin/custom_scalars/layout")
    charts = {chart["title"]: chart for chart in layout["category"][0]["chart"]}
    margin = charts["loss (mean ± std over folds)"]["margin"]["series"]
    assert margin == [
        {"value": "epoch/loss", "lower": "folds/loss_low", "upper": "folds/loss_high"}
    ]
