"""One version, defined once (``fitstream.__version__``), which the build and the docs read."""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

import fitstream

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_package_has_the_version_defined_in_the_code() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", fitstream.__version__)
    assert importlib.metadata.version("fitstream") == fitstream.__version__


def test_pyproject_reads_the_version_from_the_code_and_states_none_of_its_own() -> None:
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is Python 3.11's")
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["hatch"]["version"]["path"] == "fitstream/__init__.py"


def test_the_changelog_starts_with_the_version() -> None:
    changelog = (ROOT / "docs" / "changelog.md").read_text(encoding="utf-8")
    first = re.search(r"^## (\S+)", changelog, re.MULTILINE)
    assert first is not None
    assert first.group(1) == fitstream.__version__
