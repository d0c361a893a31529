"""Data-parallel training across processes and machines over MPI (mpi4py).

Every rank holds the same data and starts from the same weights (same seed;
rank 0's weights are broadcast to make sure). Each global mini-batch, drawn
from the same seeded permutation on every rank, is split into contiguous
shares, one per rank. Each rank runs backprop on its share with the *global*
batch size as the divisor of the average, so the shares' gradients add up
to exactly the full-batch gradient, however unevenly the batch divides. One
``Allreduce`` per step sums one flat buffer holding every gradient and the
loss; then every rank applies the same optimizer update. Rank 0 alone
writes checkpoints, logs and the progress bar; validation metrics are
summed across ranks.

Run with ``mpiexec -n 4 xbp train --distributed`` or, from Python,
``xbp.fit(net, x, y, comm=MPI.COMM_WORLD)``.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import numpy as np

from .backend import gpu_count
from .errors import XbpValueError
from .network import Network, Params
from .training import Trainer, _Data, _prepare, _split

__all__ = [
    "world",
    "local_rank",
    "local_device",
    "cuda_aware",
    "prepare_distributed",
    "attach",
    "abort_on_error",
]


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError:
        raise XbpValueError(
            "distributed training needs mpi4py: pip install 'xbp[mpi]' (it brings mpich and "
            "mpiexec), then run under mpiexec -n N"
        ) from None
    return MPI


def world() -> Any:
    """``MPI.COMM_WORLD``."""
    return _mpi().COMM_WORLD


def local_rank(comm: Any = None) -> int:
    """This process's rank among the ranks on the same machine."""
    MPI = _mpi()
    comm = comm or MPI.COMM_WORLD
    return int(comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank())


def local_device(backend: str, comm: Any = None) -> Any:
    """One GPU per rank: this rank's device, from its local rank (None on the CPU backends)."""
    if backend not in ("cupy", "torch"):
        return None
    count = gpu_count(backend)
    if count == 0:
        return "cpu" if backend == "torch" else None
    index = local_rank(comm) % count
    return index if backend == "cupy" else f"cuda:{index}"


def cuda_aware() -> bool:
    """Whether the MPI library can read CUDA device buffers directly."""
    MPI = _mpi()
    query = getattr(MPI, "Query_cuda_support", None)
    try:
        return bool(query()) if query is not None else False
    except Exception:  # an MPI without the extension
        return False


class _DistData(_Data):
    """The full data set on every rank; each global batch split into per-rank shares."""

    def __init__(self, x: Any, y: Any, labels: Any, comm: Any) -> None:
        super().__init__(x, y, labels)
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    def share(self, s: int, e: int) -> tuple[int, int]:
        rows = e - s
        base, extra = divmod(rows, self.size)
        lo = s + self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    def batch_indices(self, perm: Any, s: int, e: int) -> Any:
        lo, hi = self.share(s, e)
        return perm[lo:hi]

    def scale_n(self, rows: int) -> int:
        return rows  # the global batch: shares add up to the full-batch average

    def reduce_sums(self, values: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(values, dtype=np.float64)
        self.comm.Allreduce(_mpi().IN_PLACE, out, op=_mpi().SUM)
        return out

    def eval_range(self) -> tuple[int, int]:
        return self.share(0, self.n)


class _Reducer:
    """Sums every gradient and the loss across ranks with one Allreduce of one flat buffer."""

    def __init__(self, net: Network, comm: Any) -> None:
        self.net, self.comm = net, comm
        self.MPI = _mpi()
        self.device_buffers = net.backend.name == "cupy" and cuda_aware()

    def __call__(self, cost: Any, grads: Params) -> tuple[Any, Params]:
        be = self.net.backend
        xp = be.xp
        arrays = [g[k] for g in grads for k in ("W", "b")]
        flat_parts = [xp.reshape(a, (-1,)) for a in arrays] + [xp.reshape(cost, (1,))]
        if self.device_buffers:  # CUDA-aware MPI reads the GPU buffer itself
            flat = xp.concat(flat_parts)
            be.sync()
            self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
        else:
            # staged through one persistent host buffer: the MPI library registers its
            # memory once instead of on every step (a fresh buffer cost 3x the transfer)
            host = self._host_buffer(sum(int(p.shape[0]) for p in flat_parts), arrays[0])
            offset = 0
            for part in flat_parts:
                size = int(part.shape[0])
                host[offset : offset + size] = be.to_host(part)
                offset += size
            self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
            # views of the buffer (NumPy, torch on the CPU) or one copy to the device; either
            # way they are consumed within this step, before the buffer is reused
            flat = be.asarray(host)
        out: Params = []
        offset = 0
        for g in grads:
            entry = {}
            for k in ("W", "b"):
                size = int(np.prod(g[k].shape))
                entry[k] = xp.reshape(flat[offset : offset + size], g[k].shape)
                offset += size
            out.append(entry)
        return flat[offset], out

    def _host_buffer(self, size: int, like: Any) -> np.ndarray:
        dtype = np.dtype(self.net.backend.dtype_name(like.dtype))
        buf = getattr(self, "_buf", None)
        if buf is None or buf.shape[0] != size or buf.dtype != dtype:
            buf = self._buf = np.empty(size, dtype=dtype)
        return buf


def prepare_distributed(
    net: Network,
    comm: Any,
    x: Any,
    y: Any,
    validation_data: Any,
    validation_split: float,
    seed: int | None,
) -> tuple[_Data, _Data | None]:
    """Validate and place the data on this rank's device; split off validation data."""
    base = _prepare(net, x, y)
    train: _Data = _DistData(base.x, base.y, base.labels, comm)
    val: _Data | None = None
    if validation_data is not None:
        v = _prepare(net, validation_data[0], validation_data[1], "x_val")
        val = _DistData(v.x, v.y, v.labels, comm)
    elif validation_split:
        t, v = _split(net, base, validation_split, seed)
        train = _DistData(t.x, t.y, t.labels, comm)
        val = _DistData(v.x, v.y, v.labels, comm)
    # every rank must start from rank 0's weights, whatever seed it was given
    for p in net.params:
        for k in p:
            host = np.array(net.backend.to_host(p[k]), copy=True, order="C")  # writable
            comm.Bcast(host, root=0)
            p[k] = net.backend.asarray(host, net.dtype, copy=True)
    return train, val


def attach(trainer: Trainer, train: _Data) -> None:
    trainer.reducer = _Reducer(trainer.net, trainer.comm)


def abort_on_error(comm: Any, exc: BaseException) -> None:
    """On a multi-rank run, print one clear line and abort every rank instead of hanging."""
    if comm is None or comm.Get_size() == 1:
        return
    rank = comm.Get_rank()
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    print(
        f"xbp: rank {rank} of {comm.Get_size()} failed: {detail}; aborting all ranks",
        file=sys.stderr,
        flush=True,
    )
    comm.Abort(1)
