"""The docs build's reset between gallery examples (docs/gallery_reset.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import xbp
from xbp.nn.activations import ACTIVATIONS
from xbp.nn.layers import _REGISTERED
from xbp.nn.losses import LOSSES

RESET = Path(__file__).resolve().parents[1] / "docs" / "gallery_reset.py"


def test_parts_an_example_registers_are_forgotten_before_the_next() -> None:
    spec = importlib.util.spec_from_file_location("gallery_reset", RESET)
    assert spec and spec.loader
    reset = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reset)  # records the built-in tables, as conf.py does
    built_in = (set(ACTIVATIONS), set(LOSSES), set(_REGISTERED))

    xbp.register_activation("soft_sign_doc", lambda xp, z: z / (1 + xp.abs(z)), None)
    xbp.register_loss("abs_doc", lambda xp, a, y: xp.abs(a - y), lambda xp, a, y: xp.sign(a - y))
    try:
        reset.forget_registered_parts({}, "plot_x.py", "after")
        assert (set(ACTIVATIONS), set(LOSSES), set(_REGISTERED)) == built_in
        # the built-in parts still work
        assert xbp.mlp([2, 3, 1], activation="tanh", loss="quadratic").loss.name == "quadratic"
    finally:
        ACTIVATIONS.pop("soft_sign_doc", None)
        LOSSES.pop("abs_doc", None)
