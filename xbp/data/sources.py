"""What the training loop reads: one protocol, :class:`Source`, for every kind of data.

A source hands the loop its batches as :class:`Batch` objects on the network's
device, one per step, for an epoch's :class:`Plan` (the host permutation cut
into batches and into each process's share). The loop, the divergence replay
and evaluation consume a source without asking what it is:

* :class:`DeviceData`: arrays checked and moved to the device once
  (:func:`to_device`), with row weights; batches are ``xp.take`` of device
  indices, and compiled epochs index the arrays directly
  (:meth:`Source.device_arrays`).
* :class:`HostData`: rows that stay on the host (memory maps,
  :class:`~xbp.data.hostrows.MappedRows`, ``stream=True``), gathered and copied a
  batch at a time by a prefetch thread (:mod:`xbp.data.hostrows`).
* :class:`BatchSource`: a re-iterable of ``(x, y)`` batches; its batches and
  their order are its own.

A user's own data source subclasses :class:`Source` (see its docstring) and is
passed to :func:`xbp.fit` as ``x``. :func:`as_stream` and :func:`to_device`
turn :func:`xbp.fit`'s arguments into a source; :func:`split_validation` holds
out a seeded fraction. The loaders (files, generated sets) are in
:mod:`xbp.data`.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Generator, Iterator
from typing import Any, NamedTuple

import numpy as np

from ..errors import XbpTypeError, XbpValueError
from ..nn.network import Network, count_correct
from ..nn.validate import check_values, host_array, is_host_array
from ..nn.weights import batch_weight_sum, check_sample_weight, class_weights, take_batch
from .hostrows import MappedRows, gather, prefetch, row_reader

__all__ = [
    "Batch",
    "Plan",
    "Source",
    "DeviceData",
    "HostData",
    "BatchSource",
    "forward_sums",
    "close_batches",
    "to_device",
    "split_validation",
    "class_weight_table",
    "with_class_weight",
    "is_streamed",
    "to_stream",
    "as_stream",
    "stream_predict",
]


class Batch(NamedTuple):
    """One step's data, on the device.

    ``x``/``y``: the rows this process computes; ``n_total``: the divisor of the
    batch average (the global batch's rows, or its weight sum with row weights
    ``w``); ``key``: the step's dropout key (None: nothing is dropped; the
    trainer sets it); ``labels``: the rows' class labels, for the correct count
    (None: no accuracy).
    """

    x: Any
    y: Any
    n_total: Any
    w: Any = None
    key: Any = None
    labels: Any = None


class Plan(NamedTuple):
    """An epoch's batches, decided on the host before its first step.

    Batch ``b`` is rows ``perm[s:e]`` of the data set, ``(s, e, lo, hi) =
    spans[b]``, of which this process computes ``perm[lo:hi]`` (its
    :meth:`xbp.parallel.Strategy.share`). ``perm`` None: the source's own batches in its
    own order, not known ahead (``spans`` empty).
    """

    perm: np.ndarray | None
    spans: tuple[tuple[int, int, int, int], ...] = ()

    @classmethod
    def of(cls, perm: np.ndarray | None, batch_size: int, share: Callable[[int, int], Any]) -> Plan:
        """The epoch of permutation ``perm`` in batches of ``batch_size`` rows (the last
        one may be short), each shared by ``share(start, stop) -> (lo, hi)``."""
        if perm is None:
            return cls(None)
        n = int(perm.shape[0])
        spans = []
        for s in range(0, n, batch_size):
            e = min(s + batch_size, n)
            lo, hi = share(s, e)
            spans.append((s, e, lo, hi))
        return cls(perm, tuple(spans))

    @classmethod
    def rows(cls, start: int, stop: int, batch_size: int) -> Plan:
        """Rows ``[start, stop)`` in order, ``batch_size`` at a time, all computed here
        (evaluation of a process's share)."""
        spans = tuple(
            (s, min(s + batch_size, stop - start), s, min(s + batch_size, stop - start))
            for s in range(0, stop - start, batch_size)
        )
        return cls(np.arange(start, stop), spans)

    @property
    def offsets(self) -> list[int] | None:
        """Where this process's share starts in each batch (the dropout keys' third
        field); None when the batches are not known ahead."""
        return None if self.perm is None else [lo - s for s, _, lo, _ in self.spans]


class Source:
    """The data protocol of the training loop (:meth:`xbp.train.Trainer.fit`).

    A subclass implements :meth:`batches` and sets ``n``; everything else has
    a default that suits a source of its own batches in its own order.

    ``n`` : int or None
        The rows (None while unknown: a source that counts them sets ``n``
        during its first pass, before the epoch's loss is divided by
        :attr:`weight_total`).
    ``argument`` : str
        The name used in error messages (``"x"``, ``"x_val"``).

    The loop calls, per epoch: :meth:`permutation` (the host order of the rows,
    or None for the source's own), then :meth:`batches` with the epoch's
    :class:`Plan`, stepping once per :class:`Batch` it yields; evaluation calls
    :meth:`evaluation_sums`. :func:`xbp.fit` also asks :meth:`device_arrays`
    (compiled epochs), :attr:`shareable` (MPI), :meth:`adapt_rows`
    (``Standardize``), :meth:`take` (``validation_split``) and
    :meth:`fingerprint` (the processes' handshake).
    """

    n: int | None = None
    argument: str = "x"
    #: whether every process can compute its own share of every batch (MPI): the rows
    #: of :meth:`batches` follow the plan's ``perm[lo:hi]``
    shareable: bool = False

    @property
    def weight_total(self) -> float:
        """The divisor of epoch averages: the sum of the row weights, or the rows."""
        return float(self.n or 0)

    @property
    def weighted(self) -> bool:
        """Whether the rows carry weights (their batches pass ``w``)."""
        return False

    def permutation(self, rng: np.random.Generator, shuffle: bool) -> np.ndarray | None:
        """The epoch's host order of the rows, drawn from the run's ``rng`` (or
        ``arange(n)`` without ``shuffle``); None: the source's own order (``rng`` is
        left alone)."""
        return None

    def batches(self, net: Network, plan: Plan) -> Iterator[Batch]:
        """One :class:`Batch` on ``net``'s device per batch of ``plan`` (or, where
        ``plan.perm`` is None, of one pass of the source). A generator: the loop
        closes it when it stops early."""
        raise NotImplementedError(f"{type(self).__name__}.batches")

    def evaluation_sums(
        self, net: Network, start: int, stop: int, batch_size: int
    ) -> tuple[Any, Any]:
        """Summed cost and correct predictions (0-d device arrays; None where accuracy
        does not apply) over rows ``[start, stop)`` (a process's share), or over one
        pass where ``n`` is not known, forward only."""
        plan = Plan(None) if self.n is None else Plan.rows(start, stop, batch_size)
        return forward_sums(net, self.batches(net, plan))

    def device_arrays(self) -> DeviceData | None:
        """The whole data set as device arrays for compiled epochs (which index
        ``x``, ``y``, ``w``, ``labels`` inside traced code), or None: the loop runs
        eagerly over :meth:`batches`."""
        return None

    def adapt_rows(self) -> Any:
        """Rows (host or device, ``(n, n_in)``) to adapt ``Standardize`` layers to, or
        None where the source cannot be read ahead of training."""
        return None

    def take(self, net: Network, rows: np.ndarray) -> Source:
        """The rows at host positions ``rows`` as a source of their own
        (``validation_split``)."""
        raise XbpValueError(
            f"validation_split: {type(self).__name__} cannot take rows (it has no take()); "
            "pass validation_data=(x_val, y_val) or a second source"
        )

    def fingerprint(self, net: Network, rows: int = 1024) -> str | None:
        """A hash of sampled rows for the processes of a run to compare, or None."""
        return None


def forward_sums(
    net: Network,
    batches: Iterator[Batch],
    observe: Callable[[Any, Batch], None] | None = None,
) -> tuple[Any, Any]:
    """Summed cost and correct predictions over ``batches`` (forward only), as
    :meth:`Source.evaluation_sums` returns them; accuracy applies only where every
    batch has class labels. ``observe(output, batch)`` sees each batch's output
    (metrics accumulate from it)."""
    xp = net.xp
    cost_sum = xp.zeros((), dtype=net.dtype, device=net.device)
    correct: Any = xp.zeros((), dtype=net.dtype, device=net.device)
    try:
        for batch in batches:
            if batch.w is None:
                cost, _, out = net.value_and_grad(batch.x, batch.y, forward_only=True)
                part = cost * batch.n_total
            else:  # divisor 1: the weighted sum itself
                part, _, out = net.value_and_grad(
                    batch.x, batch.y, forward_only=True, sample_weight=batch.w, n_total=1
                )
            cost_sum = cost_sum + part
            if observe is not None:
                observe(out, batch)
            if batch.labels is None:
                correct = None
            elif correct is not None:
                correct = correct + count_correct(xp, out, batch.labels, batch.w)
    finally:
        close_batches(batches)
    return cost_sum, correct


def close_batches(batches: Iterator[Any]) -> None:
    """Close a source's batch iterator (a generator stops its prefetch thread)."""
    close = getattr(batches, "close", None)
    if close is not None:
        close()


def _fingerprint(net: Network, data: Any, features: Any, rows: int) -> str:
    """blake2b of the shapes and of up to ``rows`` evenly spaced rows: ``features(take)``
    gives the features as the device sees them (host), the targets are taken here."""
    h = hashlib.blake2b(digest_size=8)
    h.update(repr((data.n, tuple(data.x.shape), tuple(data.y.shape))).encode())
    if data.n:
        take = np.unique(np.linspace(0, data.n - 1, min(data.n, rows)).round().astype(np.int64))
        h.update(np.ascontiguousarray(features(take)).tobytes())
        sample = net.xp.take(data.y, net.backend.asarray(take), axis=0)
        h.update(np.ascontiguousarray(net.backend.to_host(sample)).tobytes())
    return h.hexdigest()


class DeviceData(Source):
    """Features, float targets and (where accuracy applies) class labels, on one device.

    Parameters
    ----------
    x : array (n, n_in)
    y : array (n, n_out)
    labels : array (n,) of integer class labels, or None when accuracy does not apply
    """

    shareable = True

    def __init__(self, x: Any, y: Any, labels: Any = None) -> None:
        self.x, self.y, self.labels = x, y, labels
        self.n: int = int(x.shape[0])
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

    @property
    def weighted(self) -> bool:
        return self.w is not None

    def permutation(self, rng: np.random.Generator, shuffle: bool) -> np.ndarray:
        return rng.permutation(self.n) if shuffle else np.arange(self.n)

    def batches(self, net: Network, plan: Plan) -> Iterator[Batch]:
        """``xp.take`` of each batch's rows (this process's share), the permutation
        moved to the device once per epoch."""
        xp = net.xp
        perm = net.backend.asarray(plan.perm)  # one transfer; batches are device slices
        x, y, w, labels = self.x, self.y, self.w, self.labels
        for s, e, lo, hi in plan.spans:
            idx = perm[lo:hi]
            # the divisor: the global batch's rows, or its weight sum (every process has
            # the whole data set, so it sums the global batch's weights itself)
            xb, yb, wb, total = take_batch(xp, x, y, w, idx, e - s)
            if wb is not None and (lo, hi) != (s, e):
                total = batch_weight_sum(xp, xp.take(w, perm[s:e]))
            lb = None if labels is None else xp.take(labels, idx, axis=0)
            yield Batch(xb, yb, total, wb, None, lb)

    def evaluation_sums(
        self, net: Network, start: int, stop: int, batch_size: int
    ) -> tuple[Any, Any]:
        return net.evaluation_sums(self.x, self.y, self.labels, start, stop, batch_size, self.w)

    def device_arrays(self) -> DeviceData:
        return self

    def adapt_rows(self) -> Any:
        return self.x

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

    def fingerprint(self, net: Network, rows: int = 1024) -> str:
        def features(take: np.ndarray) -> Any:
            return net.backend.to_host(net.xp.take(self.x, net.backend.asarray(take), axis=0))

        return _fingerprint(net, self, features, rows)


def to_device(
    net: Network, x: Any, y: Any, argument: str = "x", sample_weight: Any = None
) -> DeviceData:
    """Check ``(x, y)`` (and row weights) for ``net`` and move them onto its device, once."""
    yname = "y" if argument == "x" else argument.replace("x", "y")
    xd = net.check_inputs(x, argument)
    yd = net.check_targets(y, int(xd.shape[0]), yname)
    data = DeviceData(xd, yd, net.class_labels(y, yd))
    data.argument = argument
    if sample_weight is not None:
        wname = "sample_weight" if argument == "x" else argument.replace("x", "sample_weight")
        data.weigh(*check_sample_weight(net.backend, sample_weight, data.n, net.dtype, wname))
    return data


def _in_memory(data: Source) -> DeviceData:
    arrays = data.device_arrays()
    if arrays is None:
        raise XbpValueError(
            "sample_weight and class_weight need the data in memory; streamed data (a memory "
            "map, a batch source or stream=True) trains unweighted: pass stream=False"
        )
    return arrays


def class_weight_table(net: Network, data: Source, class_weight: Any) -> np.ndarray:
    """One weight per class from ``"balanced"`` (counting ``data``'s rows) or a dict;
    see :func:`xbp.nn.weights.class_weights`. Regression targets are an error."""
    data = _in_memory(data)
    if data.labels is None:
        raise XbpValueError(
            f"class_weight= needs class labels 0..k-1 (or one-hot rows), but loss="
            f"{net.loss.name!r} with these targets (soft, multi-label or real-valued) has no "
            "classes; weight the rows with sample_weight= instead"
        )
    labels = np.asarray(net.backend.to_host(data.labels), dtype=np.int64)
    return class_weights(labels, class_weight, max(net.n_out, 2))


def with_class_weight(net: Network, data: Source, table: np.ndarray) -> DeviceData:
    """``data`` with each row's weight multiplied by ``table[its class]``."""
    data = _in_memory(data)
    labels = np.asarray(net.backend.to_host(data.labels), dtype=np.int64)
    rows = table[labels]
    if data.w is not None:
        rows = rows * np.asarray(net.backend.to_host(data.w), dtype=np.float64)
    out = DeviceData(data.x, data.y, data.labels)
    out.argument = data.argument
    out.weigh(*check_sample_weight(net.backend, rows, data.n, net.dtype, "class_weight"))
    return out


def split_validation(
    net: Network, data: Source, fraction: float, seed: int | None
) -> tuple[Source, Source]:
    """Hold out ``round(n * fraction)`` rows, drawn by a generator seeded with ``seed + 1``."""
    if data.n is None:
        raise XbpValueError(
            "validation_split with a batch source: xbp cannot split a source; pass "
            "validation_data=(x_val, y_val) or a second source"
        )
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


def _stage(net: Network, xb: Any, host_dtype: np.dtype[Any], name: str) -> Any:
    """Check a host batch (finite, within the compute type's range), cast it and start its
    copy to the device; ``ready()``. ``name`` names the rows in errors (``x[0:512]``)."""
    block = np.asarray(xb)
    check_values(block, name, net.input_limit())  # before the cast, which would hide Inf
    block = np.asarray(block, dtype=host_dtype)  # as to_device: read, never written
    return net.backend.library.copy_in(net.xp, block, net.dtype, net.device)


class _Selected:
    """Rows ``rows`` of a host array, read a block at a time (for adapting); a memory
    map's from its file (:func:`~xbp.data.hostrows.row_reader`): read through the
    mapping, a pass over every row would leave the whole file resident."""

    def __init__(self, x: Any, rows: np.ndarray) -> None:
        self.x, self.rows = x, np.sort(rows)
        self.shape = (int(rows.shape[0]), int(x.shape[1]))

    def __getitem__(self, block: slice) -> np.ndarray:
        reader = row_reader(self.x)
        try:
            return gather(self.x, self.rows[block], reader)
        finally:
            if reader is not None:
                reader.close()


class HostData(Source):
    """Rows whose features stay on the host (a memory map, :class:`MappedRows`, or an
    array passed with ``stream=True``); targets and class labels are on the device.

    Batches are gathered on the host in a background thread (in file order for
    locality, then put back in the batch's order) and copied to the device
    while the previous batch computes (:func:`~xbp.data.hostrows.prefetch`,
    :meth:`xbp.backends.Library.copy_in`). Training on it gives the same
    weights as training on the same array in memory: the same permutation,
    the same rows in the same order, the same arithmetic. Unweighted (row
    weights need the data in memory).
    """

    shareable = True

    def __init__(self, x: Any, y: Any, labels: Any = None, rows: np.ndarray | None = None) -> None:
        self.x, self.y, self.labels, self.rows = x, y, labels, rows
        self.n: int = int(x.shape[0]) if rows is None else int(rows.shape[0])

    def permutation(self, rng: np.random.Generator, shuffle: bool) -> np.ndarray:
        return rng.permutation(self.n) if shuffle else np.arange(self.n)

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
        from the file by ``reader`` (a :func:`~xbp.data.hostrows.row_reader`) where given."""
        return gather(self.x, positions if self.rows is None else self.rows[positions], reader)

    def batches(self, net: Network, plan: Plan) -> Iterator[Batch]:
        """Each batch's share ``perm[lo:hi]`` gathered on the host and copied to the
        device, prefetched (:func:`~xbp.data.hostrows.prefetch`)."""
        host_dtype = _host_dtype(net)
        argument = self.argument
        perm = plan.perm

        def staged() -> Iterator[tuple[Any, Any, int]]:
            assert perm is not None, "HostData batches follow a permutation"
            reader = row_reader(self.x)
            try:
                for s, e, lo, hi in plan.spans:
                    positions, rows = perm[lo:hi], e - s
                    where = (
                        # a process may have no rows of a batch (an uneven share)
                        f"{argument} (in rows {int(positions.min())}..{int(positions.max())})"
                        if positions.size
                        else argument
                    )
                    block = (
                        self.gather(positions, reader)
                        if positions.size
                        else np.zeros((0, net.n_in))
                    )
                    # the rows' indices move to the device here too, on the prefetch thread
                    idx = net.backend.asarray(positions)
                    yield _stage(net, block, host_dtype, where), idx, rows
            finally:
                if reader is not None:
                    reader.close()

        xp = net.xp
        for ready, idx, rows in prefetch(staged()):
            labels = None if self.labels is None else xp.take(self.labels, idx, axis=0)
            yield Batch(ready(), xp.take(self.y, idx, axis=0), rows, None, None, labels)

    def evaluation_sums(
        self, net: Network, start: int, stop: int, batch_size: int
    ) -> tuple[Any, Any]:
        cost, correct = super().evaluation_sums(net, start, stop, batch_size)
        # an empty share (more processes than rows) still says whether accuracy applies
        return cost, None if self.labels is None else correct

    def adapt_rows(self) -> Any:
        if self.rows is None and not is_streamed(self.x):
            return self.x  # an array in memory (stream=True): its rows as they are
        return _Selected(self.x, np.arange(self.n) if self.rows is None else self.rows)

    def fingerprint(self, net: Network, rows: int = 1024) -> str:
        host_dtype = _host_dtype(net)
        # rows spread over the whole file: read through a mapping, each would fault in its
        # neighbourhood (a 480 MiB .npz: +500 MB resident); read from the file instead
        reader = row_reader(self.x)
        try:
            return _fingerprint(
                net,
                self,
                lambda take: np.asarray(self.gather(take, reader), dtype=host_dtype),
                rows,
            )
        finally:
            if reader is not None:
                reader.close()


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


class BatchSource(Source):
    """A re-iterable source of ``(x, y)`` batches, as :func:`xbp.fit`, :func:`xbp.evaluate`
    and :func:`xbp.predict` take it.

    The contract: ``iter(source)`` is called once per epoch (and once per
    evaluation) and yields ``(x, y)`` pairs of host NumPy arrays (or arrays of
    the network's backend on its device); ``predict`` also takes bare ``x``
    batches. Every batch is one training step whatever its size
    (``batch_size`` is the source's business), and shuffling is the source's
    job: xbp neither shuffles nor splits it. A generator is refused (it is used
    up after one epoch); a list of pairs, or an object whose ``__iter__``
    starts over, works. The rows are counted during the first pass (``n``).
    """

    def __init__(
        self, source: Any, argument: str = "x", rows: tuple[int, int] | None = None
    ) -> None:
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
        # (batch_size, n): the batches are consecutive rows of the caller's own arrays (the
        # chunks of evaluate and predict), so errors name those rows, not internal batches
        self.rows = rows
        self.n: int | None = None  # counted during the first pass

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

    def _name(self, argument: str, b: int) -> str:
        """How an error names batch ``b`` of ``argument``: ``x batch 2`` for a user's
        source, ``x[1024:1536]`` for chunks of a user's array."""
        if self.rows is None:
            return f"{argument} batch {b}"
        size, n = self.rows
        return f"{argument}[{b * size}:{min((b + 1) * size, n)}]"

    def device_pairs(
        self, net: Network, need_targets: bool = True
    ) -> Generator[tuple[Any, Any, Any, int], None, None]:
        """``(xb, yb, labels_b, rows)`` on the device for every batch of one pass,
        prefetched; ``yb`` and ``labels_b`` are None without targets."""
        host_dtype = _host_dtype(net)
        argument = self.argument
        yname = "y" if argument == "x" else argument.replace("x", "y")

        def staged() -> Iterator[tuple[Any, Any, int]]:
            for b, (xb, yb) in enumerate(self.pairs(need_targets)):
                if is_host_array(xb):
                    block = host_array(xb, self._name(argument, b))
                    if block.ndim != 2 or 0 in block.shape or block.shape[1] != net.n_in:
                        net.check_inputs(block, self._name(argument, b))  # raises
                    if block.dtype.kind != "f":
                        net.check_inputs(block, self._name(argument, b))  # raises
                    ready = _stage(net, block, host_dtype, self._name(argument, b))
                    rows = int(block.shape[0])
                elif hasattr(xb, "shape"):
                    ready, rows = _checked(net, xb, self._name(argument, b)), int(xb.shape[0])
                else:
                    raise XbpTypeError(
                        f"{argument}: batch {b} is a {type(xb).__name__}, not an array; the "
                        "source must yield arrays (or (x, y) pairs of arrays)"
                    )
                yield ready, yb, rows

        total, count = 0, 0
        for b, (ready, yb, rows) in enumerate(prefetch(staged())):
            xd = ready()
            yd = labels = None
            if need_targets:
                yd = net.check_targets(yb, rows, self._name(yname, b))
                labels = net.class_labels(yb, yd)
            total += rows
            count += 1
            yield xd, yd, labels, rows
        if not count:
            raise XbpValueError(
                f"{argument} yielded no batches; the source must yield (x, y) pairs"
            )
        self.n = total

    def batches(self, net: Network, plan: Plan) -> Iterator[Batch]:
        """Every batch of one pass, in the source's order (``plan`` has none)."""
        for xd, yd, labels, rows in self.device_pairs(net):
            yield Batch(xd, yd, rows, None, None, labels)

    def evaluation_sums(
        self, net: Network, start: int, stop: int, batch_size: int
    ) -> tuple[Any, Any]:
        """Over every batch of one pass (a source is never shared between processes)."""
        return forward_sums(net, self.batches(net, Plan(None)))


def _checked(net: Network, x: Any, argument: str) -> Any:
    return lambda: net.check_inputs(x, argument)


def as_stream(
    net: Network, x: Any, y: Any, argument: str = "x", stream: bool | None = None
) -> Source | None:
    """The streamed form of ``(x, y)`` (a :class:`Source` as it is, a :class:`HostData`
    or a :class:`BatchSource`), or None when the data goes to the device whole (see
    :func:`xbp.fit`'s ``stream``)."""
    if y is None and not hasattr(x, "shape"):
        if stream is False:
            raise XbpValueError(
                f"stream=False with a batch source as {argument}; a source is always streamed"
            )
        return x if isinstance(x, Source) else BatchSource(x, argument)
    if isinstance(x, Source):
        raise XbpTypeError(
            f"{argument} is a data source ({type(x).__name__}) and y is not None; a source "
            "yields its own targets: omit y"
        )
    if stream is True or (stream is None and is_streamed(x)):
        if y is None:
            raise XbpTypeError(f"{argument} is an array but y is None; pass the targets too")
        return to_stream(net, x, y, argument)
    return None


def stream_predict(net: Network, data: BatchSource) -> np.ndarray:
    """The network's outputs for a source's batches, on the host: the only memory that
    grows with the rows is the result (preallocated where the source knows its rows)."""
    be = net.backend
    total = getattr(data.source, "n", None)
    result = None if total is None else np.empty((total, net.n_out), dtype=_host_dtype(net))
    parts = []
    at = 0
    batches = data.device_pairs(net, need_targets=False)
    with contextlib.closing(batches):
        for xb, _, _, rows in batches:
            out = be.to_host(net.forward(xb))
            if result is not None:
                result[at : at + rows] = out
            else:
                parts.append(out)
            at += rows
    return result if result is not None else np.concatenate(parts)
