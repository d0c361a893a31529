"""A data set on the network's device: checked once, moved once, batched by index.

:func:`to_device` checks ``(x, y)`` against a network and moves them to its
backend and device; :func:`split_validation` holds out a seeded fraction.
Everything downstream (the training loop, evaluation, the scikit-learn
adapter, data-parallel strategies) works on a :class:`DeviceData`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import XbpValueError
from .network import Network
from .weights import check_sample_weight, class_weights

__all__ = [
    "DeviceData",
    "to_device",
    "split_validation",
    "class_weight_table",
    "with_class_weight",
]


class DeviceData:
    """Features, float targets and (where accuracy applies) class labels, on one device.

    Parameters
    ----------
    x : array (n, n_in)
    y : array (n, n_out)
    labels : array (n,) of integer class labels, or None when accuracy does not apply
    """

    def __init__(self, x: Any, y: Any, labels: Any = None) -> None:
        self.x, self.y, self.labels = x, y, labels
        self.n = int(x.shape[0])
        #: row weights ``(n,)`` on the device, or None (every row weighs 1); set by
        #: :func:`to_device` and :func:`with_class_weight` together with their sum
        self.w: Any = None
        self._weight_total: float | None = None

    def weigh(self, w: Any, total: float) -> None:
        """Set the row weights (device ``(n,)``) and their sum."""
        self.w, self._weight_total = w, float(total)

    @property
    def weight_total(self) -> float:
        """The divisor of the data set's average cost: the sum of the row weights (or n)."""
        if self.w is None:
            return float(self.n)
        assert self._weight_total is not None, "weights set without their total"
        return self._weight_total

    def batch_sizes(self, batch_size: int) -> np.ndarray:
        """The global size of every batch of an epoch (the last one may be short)."""
        n_batches = -(-self.n // batch_size)
        sizes = np.full(n_batches, batch_size, dtype=float)
        sizes[-1] = self.n - batch_size * (n_batches - 1)
        return sizes

    def take(self, net: Network, rows: np.ndarray) -> DeviceData:
        """The given host row indices, gathered on the device."""
        idx = net.backend.asarray(rows)
        xp = net.xp
        labels = None if self.labels is None else xp.take(self.labels, idx, axis=0)
        out = DeviceData(xp.take(self.x, idx, axis=0), xp.take(self.y, idx, axis=0), labels)
        if self.w is not None:
            w = xp.take(self.w, idx, axis=0)
            out.weigh(w, float(np.sum(np.asarray(net.backend.to_host(w), np.float64))))
        return out


def to_device(
    net: Network, x: Any, y: Any, argument: str = "x", sample_weight: Any = None
) -> DeviceData:
    """Check ``(x, y)`` (and row weights) for ``net`` and move them onto its device, once."""
    yname = "y" if argument == "x" else argument.replace("x", "y")
    xd = net.check_inputs(x, argument)
    yd = net.check_targets(y, int(xd.shape[0]), yname)
    data = DeviceData(xd, yd, net.class_labels(y, yd))
    if sample_weight is not None:
        wname = "sample_weight" if argument == "x" else argument.replace("x", "sample_weight")
        data.weigh(*check_sample_weight(net.backend, sample_weight, data.n, net.dtype, wname))
    return data


def class_weight_table(net: Network, data: DeviceData, class_weight: Any) -> np.ndarray:
    """One weight per class from ``"balanced"`` (counting ``data``'s rows) or a dict;
    see :func:`xbp.weights.class_weights`. Regression targets are an error."""
    if data.labels is None:
        raise XbpValueError(
            f"class_weight= needs class labels 0..k-1 (or one-hot rows), but loss="
            f"{net.loss.name!r} with these targets (soft, multi-label or real-valued) has no "
            "classes; weight the rows with sample_weight= instead"
        )
    labels = np.asarray(net.backend.to_host(data.labels), dtype=np.int64)
    return class_weights(labels, class_weight, max(net.n_out, 2))


def with_class_weight(net: Network, data: DeviceData, table: np.ndarray) -> DeviceData:
    """``data`` with each row's weight multiplied by ``table[its class]``."""
    labels = np.asarray(net.backend.to_host(data.labels), dtype=np.int64)
    rows = table[labels]
    if data.w is not None:
        rows = rows * np.asarray(net.backend.to_host(data.w), dtype=np.float64)
    out = DeviceData(data.x, data.y, data.labels)
    out.weigh(*check_sample_weight(net.backend, rows, data.n, net.dtype, "class_weight"))
    return out


def split_validation(
    net: Network, data: DeviceData, fraction: float, seed: int | None
) -> tuple[DeviceData, DeviceData]:
    """Hold out ``round(n * fraction)`` rows, drawn by a generator seeded with ``seed + 1``."""
    n_val = int(round(data.n * fraction))
    if n_val < 1 or n_val >= data.n:
        raise XbpValueError(
            f"validation_split={fraction} leaves {n_val} validation and {data.n - n_val} "
            "training rows; choose a fraction that keeps at least one row in each"
        )
    perm = np.random.default_rng(None if seed is None else seed + 1).permutation(data.n)
    return data.take(net, np.sort(perm[n_val:])), data.take(net, np.sort(perm[:n_val]))
