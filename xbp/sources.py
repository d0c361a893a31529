"""A data set on the network's device: checked once, moved once, batched by index.

:func:`to_device` checks ``(x, y)`` against a network and moves them to its
backend and device; :func:`split_validation` holds out a seeded fraction.
Everything downstream (the training loop, evaluation, the scikit-learn
adapter, data-parallel strategies) works on a :class:`DeviceData`.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Generator, Iterator
from typing import Any

import numpy as np

from .errors import XbpTypeError, XbpValueError
from .hostrows import MappedRows, gather, prefetch, row_reader
from .network import Network, count_correct
from .validate import is_host_array
from .weights import check_sample_weight, class_weights

__all__ = [
    "DeviceData",
    "to_device",
    "split_validation",
    "class_weight_table",
    "with_class_weight",
    "HostData",
    "BatchSource",
    "is_streamed",
    "to_stream",
    "as_stream",
    "stream_sums",
    "stream_predict",
    "stream_fingerprint",
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


# -- streamed data: the features stay on the host, a batch at a time moves ---------------------
def is_streamed(x: Any) -> bool:
    """Whether :func:`xbp.fit` streams ``x`` by default (a memory map or :class:`MappedRows`)."""
    return isinstance(x, (np.memmap, MappedRows))


def _host_dtype(net: Network) -> np.dtype[Any]:
    xp = net.xp
    return np.dtype(net.backend.to_host(xp.zeros((0,), dtype=net.dtype, device=net.device)).dtype)


def _stage(net: Network, xb: Any, host_dtype: np.dtype[Any], argument: str, where: str) -> Any:
    """Check a host batch (finite), cast it and start its copy to the device; ``ready()``."""
    block = np.asarray(xb, dtype=host_dtype)  # as to_device: read, never written
    if not np.isfinite(block).all():
        raise XbpValueError(
            f"{argument} contains NaN or Inf ({where}); remove or impute those values "
            "before training"
        )
    return net.backend.library.copy_in(net.xp, block, net.dtype, net.device)


class HostData:
    """Rows whose features stay on the host (a memory map, :class:`MappedRows`, or an
    array passed with ``stream=True``); targets and class labels are on the device.

    Batches are gathered on the host in a background thread (in file order for
    locality, then put back in the batch's order) and copied to the device
    while the previous batch computes (:func:`prefetch`,
    :meth:`xbp.backends.Library.copy_in`). Training on it gives the same
    weights as training on the same array in memory: the same permutation,
    the same rows in the same order, the same arithmetic.
    """

    streamed = True
    w = None  # streamed data is unweighted (row weights need the data in memory)

    @property
    def weight_total(self) -> float:
        """The divisor of epoch averages: the rows (streamed data has no row weights)."""
        return float(self.n)

    def __init__(self, x: Any, y: Any, labels: Any = None, rows: np.ndarray | None = None) -> None:
        self.x, self.y, self.labels, self.rows = x, y, labels, rows
        self.n = int(x.shape[0]) if rows is None else int(rows.shape[0])
        self.argument = "x"

    batch_sizes = DeviceData.batch_sizes

    def take(self, net: Network, rows: np.ndarray) -> HostData:
        """The given row positions (features still on the host)."""
        idx = net.backend.asarray(rows)
        xp = net.xp
        labels = None if self.labels is None else xp.take(self.labels, idx, axis=0)
        source = rows if self.rows is None else self.rows[rows]
        out = HostData(self.x, xp.take(self.y, idx, axis=0), labels, np.asarray(source))
        out.argument = self.argument
        return out

    def gather(self, positions: np.ndarray, reader: Any = None) -> np.ndarray:
        """Host rows at ``positions`` (positions in this data set), in that order; read
        from the file by ``reader`` (a :func:`~xbp.hostrows.row_reader`) where given."""
        return gather(self.x, positions if self.rows is None else self.rows[positions], reader)

    def batches(
        self, net: Network, plan: list[tuple[np.ndarray, int]]
    ) -> Generator[tuple[Any, Any, Any, int], None, None]:
        """``(xb, yb, labels_b, global rows)`` on the device for each ``(positions, rows)``
        of ``plan``, prefetched."""
        host_dtype = _host_dtype(net)
        argument = self.argument

        def staged() -> Iterator[tuple[Any, np.ndarray, int]]:
            reader = row_reader(self.x)
            try:
                for positions, rows in plan:
                    where = (
                        f"in rows {int(positions.min())}..{int(positions.max())}" if rows else ""
                    )
                    block = (
                        self.gather(positions, reader)
                        if positions.size
                        else np.zeros((0, net.n_in))
                    )
                    # the rows' indices move to the device here too, on the prefetch thread
                    idx = net.backend.asarray(positions)
                    yield _stage(net, block, host_dtype, argument, where), idx, rows
            finally:
                if reader is not None:
                    reader.close()

        xp = net.xp
        for ready, idx, rows in prefetch(staged()):
            labels = None if self.labels is None else xp.take(self.labels, idx, axis=0)
            yield ready(), xp.take(self.y, idx, axis=0), labels, rows


def to_stream(net: Network, x: Any, y: Any, argument: str = "x") -> HostData:
    """Check ``(x, y)`` for streamed training: the features' shape and dtype now (row 0
    read), their values batch by batch; the targets moved to the device once."""
    yname = "y" if argument == "x" else argument.replace("x", "y")
    if len(x.shape) != 2 or int(x.shape[0]) == 0:
        net.check_inputs(x, argument)  # raises, naming the shape, before any row is read
    net.check_inputs(np.array(x[:1]), argument)  # shape and dtype, with xbp's messages
    y_host = np.asarray(y)
    yd = net.check_targets(y_host, int(x.shape[0]), yname)
    data = HostData(x, yd, net.class_labels(y_host, yd))
    data.argument = argument
    return data


class BatchSource:
    """A re-iterable source of ``(x, y)`` batches, as :func:`xbp.fit`, :func:`xbp.evaluate`
    and :func:`xbp.predict` take it.

    The contract: ``iter(source)`` is called once per epoch (and once per
    evaluation) and yields ``(x, y)`` pairs of host NumPy arrays (or arrays of
    the network's backend on its device); ``predict`` also takes bare ``x``
    batches. Every batch is one training step whatever its size
    (``batch_size`` is the source's business), and shuffling is the source's
    job: xbp neither shuffles nor splits it. A generator is refused (it is used
    up after one epoch); a list of pairs, or an object whose ``__iter__``
    starts over, works.
    """

    streamed = True
    w = None  # streamed data is unweighted (row weights need the data in memory)

    @property
    def weight_total(self) -> float:
        """The divisor of epoch averages: the rows of the last pass (no row weights)."""
        return float(self.n or 0)

    def __init__(self, source: Any, argument: str = "x") -> None:
        if not hasattr(source, "__iter__") or isinstance(source, (str, bytes)):
            raise XbpTypeError(
                f"{argument} is a {type(source).__name__}; pass an array or a re-iterable "
                "source of (x, y) batches"
            )
        if iter(source) is source:
            raise XbpTypeError(
                f"{argument} is a one-shot iterator ({type(source).__name__}), used up after "
                "one epoch; pass a list of (x, y) batches or an object whose __iter__ starts "
                "a fresh pass each time"
            )
        self.source = source
        self.argument = argument
        self.n: int | None = None  # counted during the first pass
        self.sizes = np.zeros(0)

    def batch_sizes(self, batch_size: int) -> np.ndarray:
        """The size of every batch of the last pass (the source decides them)."""
        return self.sizes

    def pairs(self, need_targets: bool = True) -> Iterator[tuple[Any, Any]]:
        """``(x, y)`` of every batch of one pass (``y`` None for bare ``x`` batches)."""
        for b, item in enumerate(self.source):
            if isinstance(item, (tuple, list)) and len(item) == 2:
                yield item[0], item[1]
            elif not need_targets and hasattr(item, "shape"):
                yield item, None
            else:
                raise XbpTypeError(
                    f"{self.argument}: batch {b} is a {type(item).__name__}; the source must "
                    "yield (x, y) pairs of arrays"
                )

    def batches(
        self, net: Network, plan: Any = None, need_targets: bool = True
    ) -> Generator[tuple[Any, Any, Any, int], None, None]:
        """``(xb, yb, labels_b, rows)`` on the device for every batch of one pass,
        prefetched; ``yb`` and ``labels_b`` are None without targets."""
        host_dtype = _host_dtype(net)
        argument = self.argument
        yname = "y" if argument == "x" else argument.replace("x", "y")

        def staged() -> Iterator[tuple[Any, Any, int]]:
            for b, (xb, yb) in enumerate(self.pairs(need_targets)):
                if is_host_array(xb):
                    block = np.asarray(xb)
                    if block.ndim != 2 or 0 in block.shape or block.shape[1] != net.n_in:
                        net.check_inputs(block, f"{argument} batch {b}")  # raises
                    if block.dtype.kind != "f":
                        net.check_inputs(block, f"{argument} batch {b}")  # raises
                    ready = _stage(net, block, host_dtype, argument, f"batch {b}")
                else:
                    ready = _checked(net, xb, f"{argument} batch {b}")
                yield ready, yb, int(xb.shape[0])

        total, sizes = 0, []
        for b, (ready, yb, rows) in enumerate(prefetch(staged())):
            xd = ready()
            yd = labels = None
            if need_targets:
                yd = net.check_targets(yb, rows, f"{yname} batch {b}")
                labels = net.class_labels(yb, yd)
            total += rows
            sizes.append(rows)
            yield xd, yd, labels, rows
        if not sizes:
            raise XbpValueError(
                f"{argument} yielded no batches; the source must yield (x, y) pairs"
            )
        self.n, self.sizes = total, np.array(sizes, dtype=float)


def _checked(net: Network, x: Any, argument: str) -> Any:
    return lambda: net.check_inputs(x, argument)


def as_stream(net: Network, x: Any, y: Any, argument: str = "x", stream: bool | None = None) -> Any:
    """The streamed form of ``(x, y)`` (a :class:`HostData` or :class:`BatchSource`), or
    None when the data goes to the device whole (see :func:`xbp.fit`'s ``stream``)."""
    if y is None and not hasattr(x, "shape"):
        if stream is False:
            raise XbpValueError(
                f"stream=False with a batch source as {argument}; a source is always streamed"
            )
        return BatchSource(x, argument)
    if stream is True or (stream is None and is_streamed(x)):
        if y is None:
            raise XbpTypeError(f"{argument} is an array but y is None; pass the targets too")
        return to_stream(net, x, y, argument)
    return None


def stream_sums(
    net: Network, data: Any, start: int, stop: int, batch_size: int
) -> tuple[Any, Any, int]:
    """Summed cost, correct predictions (None where accuracy does not apply) and rows
    over streamed data, ``batch_size`` rows at a time; rows ``[start, stop)`` of a
    :class:`HostData` (a process's share), every batch of a :class:`BatchSource`."""
    xp = net.xp
    cost_sum = xp.zeros((), dtype=net.dtype, device=net.device)
    correct: Any = xp.zeros((), dtype=net.dtype, device=net.device)
    if isinstance(data, HostData):
        plan = [
            (np.arange(s, min(s + batch_size, stop)), min(s + batch_size, stop) - s)
            for s in range(start, stop, batch_size)
        ]
        batches = data.batches(net, plan)
    else:
        batches = data.batches(net)
    rows_seen = 0
    with contextlib.closing(batches):
        for xb, yb, labels, rows in batches:
            cost, _, out = net.value_and_grad(xb, yb, forward_only=True)
            cost_sum = cost_sum + cost * rows
            rows_seen += rows
            if labels is None:
                correct = None  # accuracy applies only where every batch has class labels
            elif correct is not None:
                correct = correct + count_correct(xp, out, labels)
    if isinstance(data, HostData) and data.labels is None:
        correct = None
    return cost_sum, correct, rows_seen


def stream_predict(net: Network, data: Any, batch_size: int) -> np.ndarray:
    """The network's outputs for streamed features, on the host, ``batch_size`` rows at a
    time: the only memory that grows with the rows is the result."""
    be = net.backend
    result: np.ndarray | None
    if isinstance(data, HostData):
        plan = [
            (np.arange(s, min(s + batch_size, data.n)), min(s + batch_size, data.n) - s)
            for s in range(0, data.n, batch_size)
        ]
        batches = data.batches(net, plan)
        result = np.empty((data.n, net.n_out), dtype=_host_dtype(net))
    else:
        batches = data.batches(net, need_targets=False)
        total = getattr(data.source, "n", None)
        result = None if total is None else np.empty((total, net.n_out), dtype=_host_dtype(net))
    parts = []
    at = 0
    with contextlib.closing(batches):
        for xb, _, _, rows in batches:
            out = be.to_host(net.forward(xb))
            if result is not None:
                result[at : at + rows] = out
            else:
                parts.append(out)
            at += rows
    return result if result is not None else np.concatenate(parts)


def stream_fingerprint(net: Network, data: Any, rows: int = 1024) -> str | None:
    """A hash of up to ``rows`` evenly spaced rows of streamed data (features as the
    device sees them, and targets), for the processes of a run to compare."""
    if data is None:
        return None
    h = hashlib.blake2b(digest_size=8)
    h.update(repr((data.n, tuple(data.x.shape), tuple(data.y.shape))).encode())
    take = np.unique(np.linspace(0, data.n - 1, min(data.n, rows)).round().astype(np.int64))
    h.update(np.ascontiguousarray(data.gather(take), dtype=_host_dtype(net)).tobytes())
    sample = net.xp.take(data.y, net.backend.asarray(take), axis=0)
    h.update(np.ascontiguousarray(net.backend.to_host(sample)).tobytes())
    return h.hexdigest()
