"""Sphinx configuration for the FitStream documentation.

Pages are MyST Markdown; the API reference comes from the docstrings
(autodoc + napoleon, Google style). Nothing here reaches the internet: no
intersphinx, no remote images.
"""

from __future__ import annotations

import fitstream

project = "FitStream"
author = "FitStream developers"
copyright = "FitStream developers"
release = fitstream.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: ``{note}`` style admonitions with ::: fences, and header anchors
# for [](#links).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc / napoleon: Google-style docstrings, signatures without the type
# noise, types in the parameter descriptions, members in source order.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
# Show the library's own aliases by name instead of their expansion (modules
# use ``from __future__ import annotations``, so annotations are the strings
# these keys match).
autodoc_type_aliases = {
    "Stage": "fitstream.Stage",
    "EventStream": "fitstream.EventStream",
}
add_module_names = False
python_display_short_literal_types = True

html_theme = "furo"
html_title = f"FitStream {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
pygments_style = "friendly"
pygments_dark_style = "monokai"


def _make_pictures(app: object) -> None:
    """Draw the pages' pictures from their own code (docs/_generated)."""
    import sys
    from pathlib import Path

    tools = Path(__file__).parent / "_tools"
    sys.path.insert(0, str(tools))
    try:
        from pictures import make_pictures
    finally:
        sys.path.remove(str(tools))
    make_pictures(Path(__file__).parent / "_generated")


def setup(app: object) -> dict[str, bool]:
    app.connect("builder-inited", _make_pictures)  # type: ignore[attr-defined]
    return {"parallel_read_safe": True}
