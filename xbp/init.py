"""Weight initialisation, drawn on the host from a seeded NumPy generator.

Drawing on the host in float64 and casting once makes the initial weights
bit-identical on every backend and device.
"""

from __future__ import annotations

import numpy as np

from .errors import XbpValueError

__all__ = ["INITS", "init_layer", "default_init"]

INITS = ("nielsen", "glorot_uniform", "glorot_normal", "he_normal", "lecun_normal")


def default_init(activation: str) -> str:
    """He for the rectifiers, Glorot otherwise."""
    return "he_normal" if activation in ("relu", "leaky_relu") else "glorot_uniform"


def init_layer(
    scheme: str, n_in: int, n_out: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``(W, b)`` in float64 for one layer: ``W`` is ``(n_in, n_out)``."""
    if scheme == "nielsen":
        w = rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)
        return w, rng.standard_normal(n_out)
    if scheme == "glorot_uniform":
        limit = np.sqrt(6.0 / (n_in + n_out))
        w = rng.uniform(-limit, limit, (n_in, n_out))
    elif scheme == "glorot_normal":
        w = rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / (n_in + n_out))
    elif scheme == "he_normal":
        w = rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)
    elif scheme == "lecun_normal":
        w = rng.standard_normal((n_in, n_out)) * np.sqrt(1.0 / n_in)
    else:
        raise XbpValueError(f"init={scheme!r} is not known; use one of {list(INITS)} or 'auto'")
    return w, np.zeros(n_out)
