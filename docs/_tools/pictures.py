"""Pictures the docs make from their own code while ``make doc`` builds them.

``make_pictures(folder)`` runs the code of the pages in ``PICTURES`` (plots and
ensembles), which save figures of ``plot_history``, and copies them to
``folder`` (the docs' ``_generated/``), so a picture on a page is what its code
draws today. The
TensorBoard screenshots need a browser; they are made by
``tensorboard_screenshot.py`` and kept in ``_static/``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
PICTURES = {
    "tutorial.md": ["digits.png"],
    "howto/plots.md": ["history.png"],
    "howto/ensembles.md": ["sweep.png"],
    "howto/cross-validation.md": ["cv.png"],
    "howto/grids.md": ["grid.png"],
}
"""Each page whose code saves pictures, and the files it saves."""


def make_pictures(folder: Path) -> list[Path]:
    """Run the pages of ``PICTURES``; copy the pictures they save to ``folder``."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from outputs import outputs
    finally:
        sys.path.pop(0)
    os.environ.setdefault("MPLBACKEND", "Agg")
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for page, names in PICTURES.items():
        with tempfile.TemporaryDirectory() as tmp:
            outputs(DOCS / page, Path(tmp))
            for name in names:
                made.append(Path(shutil.copy(Path(tmp) / name, folder / name)))
    return made


if __name__ == "__main__":
    for path in make_pictures(DOCS / "_generated"):
        print("wrote", path.relative_to(DOCS.parent))
