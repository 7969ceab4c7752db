"""Every bool keyword refuses a truthy string at the call (``'no'`` would otherwise mean true).

One rule (``_internal/checks.py::check_bool``) for one question, across the public names.
"""

from __future__ import annotations

from typing import Any

import pytest

from fitstream import best_model, ema, print_keys, resume, stop_on_nonfinite

CALLS = [
    ("resume", lambda v: resume("no-such-run.ckpt", missing_ok=v), "missing_ok"),
    ("stop_on_nonfinite", lambda v: stop_on_nonfinite(warn=v), "warn"),
    ("print_keys", lambda v: print_keys("val_loss", include_step=v), "include_step"),
    ("ema", lambda v: ema("val_loss", decay=0.5, bias_correction=v), "bias_correction"),
    ("best_model", lambda v: best_model("val_loss", restore=v), "restore"),
]


@pytest.mark.parametrize(("func", "call", "arg"), CALLS, ids=[c[0] for c in CALLS])
@pytest.mark.parametrize("value", ["no", "yes", 1, None])
def test_a_bool_keyword_refuses_what_is_not_a_bool(
    func: str, call: Any, arg: str, value: Any
) -> None:
    with pytest.raises(TypeError, match=rf"{func}: '{arg}' must be True or False, got"):
        call(value)
