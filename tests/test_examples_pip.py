"""The README's pip path for the examples: a fresh environment, its install line, one script.

The environment is new and empty but for torch, which it borrows from the project's own
environment (a ``.pth`` file pointing at links to torch and the packages torch needs), so the
test downloads no 1 GB wheel. Everything else the example needs must come from the install
line the README gives: the library and its ``examples`` extra (scikit-learn).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "examples/validation_early_stopping.py"


def _install_line() -> list[str]:
    """The README's ``pip install ".[examples]"`` line, as words."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = [line for line in readme.splitlines() if re.match(r"pip install \S*\[examples\]", line)]
    assert len(lines) == 1, f"README.md should give one pip line with [examples], has {lines}"
    return shlex.split(lines[0].split("#")[0])


def _requirements(name: str) -> list[str]:
    requires = importlib.metadata.distribution(name).requires or []
    names = (re.match(r"[A-Za-z0-9_.\-]+", r) for r in requires if "extra ==" not in r)
    return [m.group(0) for m in names if m is not None]


def _torch_site(folder: Path) -> Path:
    """A folder of links to the installed torch and what it depends on, with their metadata."""
    folder.mkdir()
    seen: set[str] = set()
    todo = ["torch"]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a dependency for another platform
        todo.extend(_requirements(name))
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            source = Path(str(dist.locate_file(top)))
            if top != ".." and source.exists() and not (folder / top).exists():
                (folder / top).symlink_to(source)
    return folder


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_readme_install_line_is_all_an_example_needs(tmp_path: Path) -> None:
    env = tmp_path / "env"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    paths = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    site = Path(paths.stdout.strip())
    (site / "borrowed-torch.pth").write_text(f"{_torch_site(tmp_path / 'torch')}\n")
    clean = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}

    missing = subprocess.run(
        [python, "-c", "import sklearn"], check=False, capture_output=True, text=True, env=clean
    )
    assert missing.returncode != 0  # the new environment starts without scikit-learn

    pip, install, *packages = _install_line()
    assert (pip, install) == ("pip", "install")
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", *packages],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=clean,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    ran = subprocess.run(
        [python, SCRIPT],  # as the README runs it, from the clone
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**clean, "FITSTREAM_EXAMPLE_EPOCHS": "2", "MPLBACKEND": "Agg"},
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "test accuracy of the best model:" in ran.stdout
    where = subprocess.run(
        [python, "-c", "import fitstream; print(fitstream.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=clean,
        check=True,
    )
    assert where.stdout.startswith(str(env)), where.stdout  # installed, not the clone's
