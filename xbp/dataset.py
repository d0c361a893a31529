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

__all__ = ["DeviceData", "to_device", "split_validation"]


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
        return DeviceData(xp.take(self.x, idx, axis=0), xp.take(self.y, idx, axis=0), labels)


def to_device(net: Network, x: Any, y: Any, argument: str = "x") -> DeviceData:
    """Check ``(x, y)`` for ``net`` and move them onto its device, once."""
    yname = "y" if argument == "x" else argument.replace("x", "y")
    xd = net.check_inputs(x, argument)
    yd = net.check_targets(y, int(xd.shape[0]), yname)
    return DeviceData(xd, yd, net.class_labels(y, yd))


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
