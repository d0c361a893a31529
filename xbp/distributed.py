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
``xbp.fit(net, x, y, comm=MPI.COMM_WORLD)`` (the same as
``strategy=xbp.distributed.MPIStrategy(MPI.COMM_WORLD)``). The training loop
knows none of this: it calls the strategy (:mod:`xbp.strategy`).
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

import numpy as np

from .backend import gpu_count
from .errors import XbpValueError
from .network import Network, Params
from .strategy import Strategy

__all__ = [
    "world",
    "local_rank",
    "local_device",
    "cuda_aware",
    "MPIStrategy",
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


class MPIStrategy(Strategy):
    """Data parallelism over an MPI communicator (see the module docstring).

    Parameters
    ----------
    comm : mpi4py communicator
    """

    reduces = True

    def __init__(self, comm: Any) -> None:
        if not all(hasattr(comm, m) for m in ("Get_rank", "Get_size", "Allreduce")):
            raise XbpValueError(
                f"comm is a {type(comm).__name__}, not an MPI communicator; pass "
                "mpi4py.MPI.COMM_WORLD (or xbp.distributed.world())"
            )
        self.comm = comm
        self.MPI = _mpi()
        self.rank, self.size = int(comm.Get_rank()), int(comm.Get_size())
        self.reduces = self.size > 1
        self._buf: np.ndarray | None = None
        self._device_buffers = False

    def __repr__(self) -> str:
        return f"MPIStrategy(rank={self.rank}, size={self.size})"

    def share(self, start: int, stop: int) -> tuple[int, int]:
        base, extra = divmod(stop - start, self.size)
        lo = start + self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    def reduce_sums(self, values: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, out, op=self.MPI.SUM)
        return out

    def any(self, flag: bool) -> bool:
        return bool(self.comm.allreduce(bool(flag), op=self.MPI.LOR))

    def setup(self, net: Network, config: dict[str, Any]) -> None:
        """Compare every rank's run configuration, then start all from rank 0's weights."""
        configs = self.comm.allgather(json.dumps(config, sort_keys=True, default=str))
        if len(set(configs)) > 1:
            raise XbpValueError(_disagreement([json.loads(c) for c in configs]))
        self._device_buffers = net.backend.name == "cupy" and cuda_aware()
        # every rank must start from rank 0's weights, whatever seed it was given
        for p in net.params:
            for k in p:
                host = np.array(net.backend.to_host(p[k]), copy=True, order="C")  # writable
                self.comm.Bcast(host, root=0)
                p[k] = net.backend.asarray(host, net.dtype, copy=True)
        self._net = net

    def reduce_grads(self, cost: Any, grads: Params) -> tuple[Any, Params]:
        """Sum every gradient and the loss across ranks with one Allreduce of one flat buffer."""
        be = self._net.backend
        xp = be.xp
        arrays = [g[k] for g in grads for k in ("W", "b")]
        flat_parts = [xp.reshape(a, (-1,)) for a in arrays] + [xp.reshape(cost, (1,))]
        if self._device_buffers:  # CUDA-aware MPI reads the GPU buffer itself
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
        dtype = np.dtype(self._net.backend.dtype_name(like.dtype))
        buf = self._buf
        if buf is None or buf.shape[0] != size or buf.dtype != dtype:
            buf = self._buf = np.empty(size, dtype=dtype)
        return buf

    def abort(self, exc: BaseException) -> None:
        abort_on_error(self.comm, exc)


def _disagreement(configs: list[dict[str, Any]]) -> str:
    """One line naming the first setting the ranks disagree on, and which ranks."""
    for key in configs[0]:
        values = [json.dumps(c.get(key), sort_keys=True) for c in configs]
        if len(set(values)) > 1:
            groups: dict[str, list[int]] = {}
            for rank, v in enumerate(values):
                groups.setdefault(v, []).append(rank)
            shown = "; ".join(
                f"ranks {ranks}: {v if len(v) <= 60 else v[:57] + '...'}"
                for v, ranks in groups.items()
            )
            return (
                f"the ranks disagree on {key} ({shown}); every rank must run the same "
                "configuration on the same data"
            )
    return "the ranks disagree on their run configuration; run the same command on every rank"


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
