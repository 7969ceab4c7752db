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


def test_the_server_shows_the_logged_scalars_layout_and_hparams(
    tensorboard_server: tuple[Server, Path],
) -> None:
    server, logdir = tensorboard_server
    for name, lr in (("lr_0.1", 0.1), ("lr_0.01", 0.01)):
        collect(pipe(training_run(lr), log_tensorboard(logdir / name, hparams={"lr": lr})))

    def both_runs_loaded() -> dict[str, Any] | None:
        tags = server.get("/data/plugin/scalars/tags")
        ready = all("best/val_loss" in tags.get(run, {}) for run in ("lr_0.1", "lr_0.01"))
        return tags if ready else None

    tags = server.wait_for("both runs' scalars", both_runs_loaded)
    assert {"train_loss", "val_loss", "val_acc"} <= set(tags["lr_0.1"])

    for run, lr in (("lr_0.1", 0.1), ("lr_0.01", 0.01)):
        points = server.get("/data/plugin/scalars/scalars", run=run, tag="val_loss")
        assert [step for _, step, _ in points] == [1, 2, 3]
        assert [value for _, _, value in points] == pytest.approx([2 * lr / s for s in (1, 2, 3)])

    layout = server.get("/data/plugin/custom_scalars/layout")
    charts = {chart["title"]: chart["multiline"]["tag"] for chart in layout["category"][0]["chart"]}
    assert charts == {"loss": ["^train_loss$", "^val_loss$"]}

    groups = server.post(
        "/data/plugin/hparams/session_groups",
        {
            "experimentName": "",
            "allowedStatuses": ["STATUS_SUCCESS", "STATUS_UNKNOWN"],
            "colParams": [],
            "startIndex": 0,
            "sliceSize": 10,
        },
    )["sessionGroups"]
    by_run = {
        group["name"]: (
            group["hparams"]["lr"],
            {m["name"]["tag"]: m["value"] for m in group["metricValues"]},
        )
        for group in groups
    }
    assert set(by_run) == {"lr_0.1", "lr_0.01"}
    for run, lr in (("lr_0.1", 0.1), ("lr_0.01", 0.01)):
        hparam, metrics = by_run[run]
        assert hparam == pytest.approx(lr)
        assert metrics["best/val_loss"] == pytest.approx(2 * lr / 3)
        assert metrics["best/val_acc"] == pytest.approx(0.75)
        assert metrics["final/train_loss"] == pytest.approx(lr / 3)
