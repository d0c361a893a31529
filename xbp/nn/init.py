"""Weight initialisation, drawn on the host from a seeded NumPy generator.

Drawing on the host in float64 and casting once makes the initial weights
bit-identical on every backend and device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import XbpValueError

__all__ = ["INITS", "init_layer", "default_init", "output_bias_at_mean"]

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


def output_bias_at_mean(net: Any, y: Any) -> None:
    """Start a regression network at the trivial predictor: the last layer's bias becomes
    the mean of the training targets ``y`` (host, ``(n,)`` or ``(n, n_out)``), so the
    first updates learn the targets' variation instead of their offset.

    With an identity output the untrained network then predicts the mean. On
    scikit-learn's diabetes data (targets around 152) ``xbp train``'s defaults reach
    R² 0.38 on a held-out file with it and 0.18 without (docs/metrics.md).

    Examples
    --------
    >>> import numpy as np, xbp
    >>> from xbp.nn.init import output_bias_at_mean
    >>> net = xbp.mlp([2, 4, 1], output="identity", seed=0)
    >>> output_bias_at_mean(net, np.array([10.0, 14.0]))
    >>> net.host_params()[-1]["b"]
    array([12.])
    """
    targets = np.asarray(y, dtype=np.float64)
    targets = targets.reshape(targets.shape[0], -1)
    if targets.shape[0] == 0 or targets.shape[1] != net.n_out:
        raise XbpValueError(
            f"y has {targets.shape[1]} columns for a network of {net.n_out} outputs; pass the "
            "training targets"
        )
    params = [dict(p) for p in net.params]
    if "b" not in params[-1]:
        raise XbpValueError("the network's last layer has no bias to start at the mean")
    params[-1]["b"] = net.backend.asarray(targets.mean(axis=0), net.dtype, copy=True)
    net.params = params
