"""The docs show what their code prints and draws, and it is what the code does today."""

from __future__ import annotations

import importlib.util
import re
import runpy
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TOOLS = DOCS / "_tools"
# Tutorial and how-to pages: every block that prints shows its output under it.
SHOWN = [DOCS / "tutorial.md", *sorted((DOCS / "howto").glob("*.md"))]
IMAGE = re.compile(r"!\[[^\]]*\]\((?P<path>[^)\s]+)\)")


def tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_tools_{name}", TOOLS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", SHOWN, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_every_block_that_prints_shows_its_output(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPLBACKEND", "Agg")
    outputs = tool("outputs")
    lines = page.read_text(encoding="utf-8").splitlines()
    for block, printed in outputs.outputs(page, tmp_path):
        shown = outputs.shown_after(lines, block)
        where = f"{page.name}:{block.start + 1}"
        if not printed:
            continue
        assert shown is not None, (
            f"{where} prints but shows no ```text block under it; run "
            f"`uv run python docs/_tools/outputs.py docs/{page.relative_to(DOCS)}`"
        )
        text = "\n".join(lines[shown.start + 1 : shown.end])
        assert outputs.masked(text) == outputs.masked(printed), (
            f"{where}: the output shown is stale; refresh it with docs/_tools/outputs.py"
        )
    for picture in tool("pictures").PICTURES.get(page.relative_to(DOCS).as_posix(), []):
        assert (tmp_path / picture).is_file()  # the page's own code draws what it shows


def test_masking_ignores_values_not_words() -> None:
    outputs = tool("outputs")
    assert outputs.masked("|##  | 5/5 epochs, loss=0.12") == outputs.masked(
        "|### | 5/5 epochs, loss=0.1"
    )
    assert outputs.masked("5 epochs") != outputs.masked("5 steps")
    assert outputs.shown("0%|\r50%|\r100%|\ndone") == "100%|\ndone"


@pytest.mark.parametrize(
    ("page", "pictures"),
    [
        ("howto/plots.md", ["../_generated/history.png"]),
        (
            "howto/ensembles.md",
            ["../_generated/sweep.png", "../_static/tensorboard_ensemble_hparams.png"],
        ),
        (
            "howto/tensorboard.md",
            [
                "../_static/tensorboard_timeseries.png",
                "../_static/tensorboard_custom_scalars.png",
                "../_static/tensorboard_hparams.png",
                "../_static/tensorboard_grid_timeseries.png",
                "../_static/tensorboard_grid_custom_scalars.png",
                "../_static/tensorboard_grid_hparams.png",
            ],
        ),
    ],
)
def test_pages_show_pictures_that_exist_or_are_drawn_by_the_build(
    page: str, pictures: list[str]
) -> None:
    found = IMAGE.findall((DOCS / page).read_text(encoding="utf-8"))
    assert found == pictures
    drawn = {name for names in tool("pictures").PICTURES.values() for name in names}
    for picture in found:
        path = (DOCS / page).parent / picture
        if "_generated" in path.parts:
            assert path.name in drawn  # drawn by make doc (conf.py, builder-inited)
        else:
            assert path.resolve().is_file()
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_build_draws_the_pictures_first() -> None:
    connected: list[tuple[str, Any]] = []

    class App:
        def connect(self, event: str, callback: Any) -> None:
            connected.append((event, callback))

    conf = runpy.run_path(str(DOCS / "conf.py"))
    conf["setup"](App())
    assert [event for event, _ in connected] == ["builder-inited"]
    assert connected[0][1].__name__ == "_make_pictures"


def test_the_progress_page_shows_a_bar() -> None:
    text = (DOCS / "howto" / "progress.md").read_text(encoding="utf-8")
    assert re.search(r"^\|#+\| 5/5 epochs \[", text, re.MULTILINE)
    assert "epochs (ended early) [" in text


def test_the_lightning_guide_links_the_examples_it_names() -> None:
    text = (DOCS / "coming-from-lightning.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`examples/(\w+)\.py`", text))
    assert named
    for name in named:
        anchor = "example-" + name.replace("_", "-")
        assert f"[`examples/{name}.py`](#{anchor})" in text
        assert f"({anchor})=" in (DOCS / "examples.md").read_text(encoding="utf-8")


def test_the_adapter_readme_links_the_docs_absolutely() -> None:
    text = (ROOT / "adapters" / "lightning" / "README.md").read_text(encoding="utf-8")
    assert "](../../README.md)" not in text
    assert "](https://fitstream.readthedocs.io/)" in text


def test_api_examples_fit_the_column() -> None:
    import inspect

    import fitstream_lightning

    import fitstream
    import fitstream.bridge

    too_wide = []
    for module in (fitstream, fitstream.bridge, fitstream_lightning):
        for name in module.__all__:
            doc = inspect.getdoc(getattr(module, name)) or ""
            example = doc[doc.find("Example") :] if "Example" in doc else ""
            code = False  # doctest lines: from a >>> line to the next blank line
            for line in (line.strip() for line in example.splitlines()):
                code = line.startswith(">>>") or (code and bool(line))
                if code and len(line) > 84:  # as the page shows it, in a code block
                    too_wide.append(f"{name}: {line}")
    assert not too_wide
