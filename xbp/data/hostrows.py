"""Host rows read a batch at a time: memory maps, :class:`MappedRows`, and the
prefetch thread that overlaps reading with the training step.

Nothing here knows a network or a device: :mod:`xbp.data.sources` turns these rows
into batches on the device, and :mod:`xbp.data` (the loaders) hands out
:class:`MappedRows` over IDX files.
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..errors import XbpValueError

__all__ = ["MappedRows", "prefetch", "row_reader", "gather", "HostChunks"]


class MappedRows:
    """Rows of a memory-mapped (or any) raw array read as floats in place, batch by batch.

    ``rows[i]`` gives ``raw[i]`` flattened to one row, cast to ``dtype`` and
    divided by ``divisor`` (MNIST IDX images: uint8 to float32 / 255, the same
    arithmetic as :func:`xbp.data.load_mnist`). Nothing is read until rows are
    asked for, so a file larger than memory can be trained on; :func:`xbp.fit`
    streams it like a memory map.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> rows = xbp.data.MappedRows(np.arange(12, dtype=np.uint8).reshape(3, 2, 2), divisor=2.0)
    >>> rows.shape, rows[np.array([2])].tolist()
    ((3, 4), [[4.0, 4.5, 5.0, 5.5]])

    ``rows`` (indices into ``raw``) makes a view of those rows in that order,
    nothing read: row ``i`` is ``raw[rows[i]]`` (the parts of a split of a file
    too big to copy, as ``xbp train`` streams them).

    >>> part = xbp.data.MappedRows(np.arange(12, dtype=np.uint8).reshape(3, 2, 2), rows=[2, 0])
    >>> part.shape, part[:].tolist()
    ((2, 4), [[8.0, 9.0, 10.0, 11.0], [0.0, 1.0, 2.0, 3.0]])
    """

    streamed = True

    def __init__(
        self, raw: Any, dtype: Any = np.float32, divisor: float = 1.0, rows: Any = None
    ) -> None:
        self.raw = raw
        self.dtype = np.dtype(dtype)
        self.divisor = float(divisor)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        width = int(np.prod(raw.shape[1:], dtype=np.int64)) if raw.ndim > 1 else 1
        count = int(raw.shape[0]) if self.rows is None else int(self.rows.shape[0])
        self.shape = (count, width)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Any) -> np.ndarray:
        if self.rows is None:
            return self.convert(np.asarray(self.raw[rows]))
        src = np.atleast_1d(self.rows[rows])
        reader = row_reader(self.raw)  # read from the file: its pages stay out of the process
        try:
            block = reader.read(src) if reader is not None else _in_order(self.raw, src)
        finally:
            if reader is not None:
                reader.close()
        return self.convert(block, fresh=True)

    def source_rows(self, positions: np.ndarray) -> np.ndarray:
        """The rows of ``raw`` at ``positions`` of this view."""
        return positions if self.rows is None else self.rows[positions]

    def convert(self, block: np.ndarray, fresh: bool = False) -> np.ndarray:
        """Raw rows (as read from ``raw``) as float rows: flattened, cast, divided.
        ``fresh``: ``block`` is an array of our own (read from the file), used as it is
        where it has the type already (no second copy of a large block)."""
        out = block.reshape(-1, self.shape[1]).astype(self.dtype, copy=not fresh)
        if self.divisor != 1.0:
            out /= self.divisor
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def prefetch(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """``items`` produced by a background thread, up to ``depth`` ahead of the consumer.

    The producer's work (gathering rows on the host, starting the copy to the
    device) overlaps the consumer's (the training step). An exception in the
    producer is raised in the consumer; closing the iterator stops the thread.
    """
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator's own clean-up (open files) runs here, now

    thread = threading.Thread(target=work, name="xbp-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


class _RowReader:
    """Rows of a file-backed NumPy memory map read with ``pread`` into fresh memory.

    Reading through the mapping would fault its pages into this process (the
    kernel maps neighbours too), so a random-order epoch would leave the whole
    file resident; reading the file keeps the process's memory to a batch,
    and a run of consecutive rows is one system call. Only a memory map that
    is not a view (its first element at ``offset`` in the file) with
    contiguous rows qualifies (:func:`row_reader`); ``close()`` when done.
    """

    def __init__(self, m: np.memmap) -> None:
        self.m = m
        self.row_bytes = int(m.strides[0])
        self.fd = os.open(str(m.filename), os.O_RDONLY)

    def close(self) -> None:
        os.close(self.fd)

    def read(self, src: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(src, return_inverse=True)  # sorted: the file in order
        out = np.empty((uniq.size, *self.m.shape[1:]), dtype=self.m.dtype)
        # the rows land in one array of our own: no list of pieces, no joined copy
        buf = memoryview(out.reshape(-1).view(np.uint8).data)
        ends = np.flatnonzero(np.diff(uniq) != 1) + 1  # where a run of consecutive rows ends
        starts = [0, *ends.tolist()]
        for a, b in zip(starts, [*ends.tolist(), uniq.size]):
            self._read_into(buf[a * self.row_bytes : b * self.row_bytes], int(uniq[a]))
        if uniq.size == src.size and bool(np.all(src[1:] > src[:-1])):
            return out  # already in order (a writable array of our own)
        return out[inverse]

    def _read_into(self, view: memoryview, row: int) -> None:
        """Fill ``view`` from the file starting at ``row``: one system call per run."""
        pos = int(self.m.offset) + row * self.row_bytes
        done = 0
        while done < len(view):
            if hasattr(os, "preadv"):
                got = os.preadv(self.fd, [view[done:]], pos + done)
            else:  # pragma: no cover - platforms without preadv
                data = os.pread(self.fd, len(view) - done, pos + done)
                view[done : done + len(data)] = data
                got = len(data)
            if not got:
                raise XbpValueError(
                    f"{self.m.filename!r} ended early (truncated while being read?)"
                )
            done += got


def row_reader(x: Any) -> _RowReader | None:
    """A :class:`_RowReader` for ``x`` (or MappedRows' raw array) where one applies."""
    m = x.raw if isinstance(x, MappedRows) else x
    if not isinstance(m, np.memmap) or not hasattr(os, "pread"):
        return None
    whole = isinstance(m.base, mmap.mmap)  # not a view: element 0 sits at m.offset
    rows_contiguous = m.ndim >= 1 and m[:1].flags.c_contiguous
    if not (whole and rows_contiguous and m.filename and m.strides[0] > 0):
        return None
    if m.strides[0] != m.dtype.itemsize * int(np.prod(m.shape[1:], dtype=np.int64)):
        return None
    return _RowReader(m)


def gather(x: Any, src: np.ndarray, reader: _RowReader | None = None) -> np.ndarray:
    """Host rows ``src`` of ``x`` (a memory map, :class:`MappedRows` or array), in that
    order; read from the file by ``reader`` (see :func:`row_reader`) where given."""
    if reader is not None:
        if isinstance(x, MappedRows):
            return x.convert(reader.read(x.source_rows(src)), fresh=True)
        return reader.read(src)
    return _in_order(x, src)


def _in_order(x: Any, src: np.ndarray) -> np.ndarray:
    """``x[src]`` read in the file's order (memory-map locality), in ``src``'s order."""
    if src.size > 1 and bool(np.any(src[1:] < src[:-1])):
        order = np.argsort(src, kind="stable")
        block = np.asarray(x[src[order]])
        out = np.empty_like(block)
        out[order] = block
        return out
    return np.asarray(x[src])


class HostChunks:
    """Host arrays as a batch source of consecutive rows, ``batch_size`` at a time
    (bounded-memory evaluation and prediction). A memory map is read from its file
    (see :func:`row_reader`), so its pages do not pile up in the process."""

    def __init__(self, x: Any, y: Any, batch_size: int) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size
        self.n = int(x.shape[0])  # known in advance: predict fills one preallocated result

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        n = int(self.x.shape[0])
        reader = row_reader(self.x)
        try:
            for s in range(0, n, self.batch_size):
                e = min(s + self.batch_size, n)
                xb = gather(self.x, np.arange(s, e), reader) if reader else self.x[s:e]
                yield xb, None if self.y is None else self.y[s:e]
        finally:
            if reader is not None:
                reader.close()
