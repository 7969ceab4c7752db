"""The documentation site: every page's code runs, and the API reference misses no public name."""

from __future__ import annotations

import importlib
import re
import runpy
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)

# ```{autofunction} fitstream.take   (MyST fence)   or   .. autofunction:: fitstream.take   (rST)
DIRECTIVE = re.compile(
    r"^\s*(?:`{3,}\{(?P<myst>auto\w+)\}|\.\. (?P<rst>auto\w+)::)\s+(?P<target>[\w.]+)",
    re.MULTILINE,
)

# The packages whose ``__all__`` the reference must cover, each name documented once.
PUBLIC_MODULES = ("fitstream", "fitstream.bridge", "fitstream_lightning")


def _page_id(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


def _directives() -> list[tuple[str, str, Path]]:
    """Every ``(kind, target, page)`` autodoc directive in the docs sources."""
    found = []
    for page in PAGES:
        for match in DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            kind = match.group("myst") or match.group("rst")
            found.append((kind, match.group("target"), page))
    return found


def _resolve(target: str) -> Any:
    """Resolve ``a.b.c`` as autodoc does: attribute ``c`` of module ``a.b``, else module ``a.b.c``.

    The attribute comes first: ``fitstream.progress`` is the function, not the module.
    """
    module_name, _, attr = target.rpartition(".")
    if module_name:
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            pass
    return importlib.import_module(target)


def _documented_objects() -> list[tuple[str, Any]]:
    """``(target, object)`` for each object the reference documents, modules expanded."""
    objects: list[tuple[str, Any]] = []
    for kind, target, _ in _directives():
        obj = _resolve(target)
        objects.append((target, obj))
        if kind == "automodule" and isinstance(obj, ModuleType):
            objects.extend((f"{target}.{n}", getattr(obj, n)) for n in getattr(obj, "__all__", ()))
    return objects


def test_docs_have_pages() -> None:
    names = {_page_id(p) for p in PAGES}
    for required in (
        "index.md",
        "tutorial.md",
        "howto/index.md",
        "coming-from-lightning.md",
        "coming-from-a-loop.md",
        "api/index.md",
        "changelog.md",
    ):
        assert required in names


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_code_runs(
    page: Path,
    tmp_path: Path,
    markdown_runner: Callable[[str | Path, Path], dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MPLBACKEND", "Agg")
    markdown_runner(page, tmp_path)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_is_in_the_reference(module_name: str) -> None:
    module = importlib.import_module(module_name)
    public = getattr(module, "__all__", None)
    assert public, f"{module_name} has no __all__"
    documented = _documented_objects()
    missing = [
        name
        for name in public
        if not any(
            target.rpartition(".")[2] == name and obj is getattr(module, name)
            for target, obj in documented
        )
    ]
    assert not missing, f"missing from docs/api: {module_name}.{{{', '.join(missing)}}}"


def test_reference_directives_name_real_objects() -> None:
    directives = _directives()
    assert directives, "no autodoc directive found in docs/"
    for kind, target, page in directives:
        try:
            _resolve(target)
        except (ImportError, AttributeError) as exc:
            pytest.fail(f"{_page_id(page)}: {kind} {target} does not resolve: {exc}")


def test_no_name_is_documented_twice() -> None:
    targets = [target for _, target, _ in _directives()]
    duplicates = {t for t in targets if targets.count(t) > 1}
    assert not duplicates


def test_build_needs_no_internet() -> None:
    conf = runpy.run_path(str(DOCS / "conf.py"))
    assert "sphinx.ext.intersphinx" not in conf["extensions"]
    assert not conf.get("intersphinx_mapping")
    assert not any("://" in str(css) for css in conf.get("html_css_files", []))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_code_fences_are_closed(page: Path) -> None:
    fences = [
        line for line in page.read_text(encoding="utf-8").splitlines() if line.startswith("```")
    ]
    assert len(fences) % 2 == 0, f"{_page_id(page)} has an unclosed code fence"


def test_the_api_reference_shows_no_private_parameter() -> None:
    """A class whose constructor has a private keyword gets a written signature in the docs."""
    import inspect

    import fitstream

    found = []
    for page in sorted((DOCS / "api").glob("*.md")):
        for name in re.findall(r"^\.\. autoclass:: fitstream\.(\w+)\s*$", page.read_text(), re.M):
            try:
                params = inspect.signature(getattr(fitstream, name)).parameters
            except ValueError:  # a builtin's subclass (Event is a dict): no Python signature
                continue
            found += [f"{name}({p})" for p in params if p.startswith("_")]
    assert found == []
