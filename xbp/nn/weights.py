"""Row weights: ``sample_weight`` and ``class_weight`` checked, combined and moved once.

A weighted cost is ``sum_i w_i C_i / sum_i w_i`` (see ``docs/math.md``), so
integer weights equal repeating rows. ``class_weight`` multiplies each row's
weight by the weight of its class; ``"balanced"`` gives class ``c`` the weight
``n / (k * n_c)`` (``k`` classes present, ``n_c`` rows of class ``c``), as
scikit-learn's ``compute_class_weight("balanced", ...)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backends.select import Backend
from ..errors import XbpTypeError, XbpValueError
from .validate import host_array, is_host_array

__all__ = ["check_sample_weight", "class_weights", "batch_weight_sum", "take_batch"]


def check_sample_weight(
    backend: Backend, weights: Any, n: int, dtype: Any, argument: str = "sample_weight"
) -> tuple[Any, float]:
    """``weights`` checked (``(n,)``, finite, non-negative, not all zero) and on the device.

    Returns the device array in ``dtype`` and the sum of its values (a host float)."""
    if not is_host_array(weights) and backend.owns(weights):
        weights = backend.to_host(weights)
    if isinstance(weights, np.ma.MaskedArray):
        weights = host_array(weights, argument)  # masked weights refused, as masked data
    try:
        host = np.asarray(weights)
    except Exception:
        host = np.asarray(None)
    if host.dtype.kind not in "fiub":
        raise XbpTypeError(
            f"{argument} is a {type(weights).__name__}; pass {n} non-negative numbers, one per row"
        )
    if host.ndim != 1 or host.shape[0] != n:
        raise XbpValueError(
            f"{argument} has shape {tuple(host.shape)}; pass one weight per row, shape ({n},)"
        )
    host = host.astype(np.float64)
    if not np.isfinite(host).all():
        raise XbpValueError(f"{argument} contains NaN or Inf; pass finite non-negative weights")
    if (host < 0).any():
        raise XbpValueError(
            f"{argument} holds negative weights (down to {host.min():g}); weights must be >= 0"
        )
    top = float(host.max()) if host.size else 0.0
    if top > 0 and not 2.0**-64 <= top <= 2.0**64:
        host = host / top  # the weighted mean is scale-free; huge weights would overflow
    dev = backend.asarray(host, dtype, copy=True)
    total = float(np.sum(np.asarray(backend.to_host(dev), dtype=np.float64)))
    if not total > 0:
        raise XbpValueError(
            f"{argument} is zero for every row; give at least one row a positive weight"
        )
    return dev, total


def class_weights(labels: np.ndarray, class_weight: Any, n_classes: int) -> np.ndarray:
    """One weight per class ``0..n_classes-1`` from ``"balanced"`` or a ``{class: weight}`` dict.

    ``labels`` are the host class labels of the rows. Classes a dict leaves out
    weigh 1; ``"balanced"`` gives classes absent from ``labels`` the weight 1
    (no row uses it).

    Examples
    --------
    >>> import numpy as np
    >>> class_weights(np.array([0, 0, 0, 1]), "balanced", 2).tolist()
    [0.6666666666666666, 2.0]
    """
    out = np.ones(n_classes, dtype=np.float64)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise XbpValueError(
                f"class_weight={class_weight!r}; use 'balanced' or a dict {{class: weight}}"
            )
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
        present = counts > 0
        out[present] = labels.shape[0] / (int(present.sum()) * counts[present])
        return out
    if not isinstance(class_weight, dict):
        raise XbpTypeError(
            f"class_weight is a {type(class_weight).__name__}; pass 'balanced' or a dict "
            "{class: weight}"
        )
    for key, value in class_weight.items():
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
            raise XbpTypeError(
                f"class_weight has the key {key!r}; keys are class labels 0..{n_classes - 1}"
            )
        if not 0 <= int(key) < n_classes:
            raise XbpValueError(
                f"class_weight names class {key} but the network has classes 0..{n_classes - 1}"
            )
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(float(value))
            or float(value) < 0
        ):
            raise XbpValueError(
                f"class_weight[{key}]={value!r}; class weights must be finite numbers >= 0"
            )
        out[int(key)] = float(value)
    return out


def batch_weight_sum(xp: Any, w: Any) -> Any:
    """The divisor of a weighted batch: ``sum(w)``, or 1 for a batch whose weights are
    all zero (its cost and gradients are then 0, not 0/0). A 0-d device array."""
    total = xp.sum(w)
    return total + xp.astype(total == 0, total.dtype)


def take_batch(xp: Any, x: Any, y: Any, w: Any, idx: Any, rows: Any) -> tuple[Any, Any, Any, Any]:
    """The rows ``idx`` of ``x``, ``y`` and the row weights ``w`` (None: unweighted), and
    the batch's divisor: ``rows``, or the weight sum (:func:`batch_weight_sum`)."""
    xb = xp.take(x, idx, axis=0)
    yb = xp.take(y, idx, axis=0)
    if w is None:
        return xb, yb, None, rows
    wb = xp.take(w, idx, axis=0)
    return xb, yb, wb, batch_weight_sum(xp, wb)
