"""Data-parallel training over ``torch.distributed``, launched by ``torchrun``.

The same data parallelism as :class:`xbp.parallel.mpi.MPIStrategy` (shares of
each global batch, the configuration handshake, rank 0's weights broadcast,
bucketed gradient exchange started from the backward pass's ``grad_ready``
hook and awaited before the update, collective stop decisions, batch
statistics summed over ranks), over the collectives PyTorch ships:

* **gloo** for host buffers: NumPy gradients are summed where they lie
  (``torch.from_numpy`` shares their memory); torch CPU tensors, JAX and
  array-api-strict arrays are staged through persistent NumPy buffers, as
  under MPI;
* **NCCL** for CUDA buffers: torch CUDA tensors directly, CuPy (and JAX on a
  GPU) through DLPack without a copy. Host sums (metrics, stop decisions, the
  handshake) still go through gloo: the process group is
  ``"cpu:gloo,cuda:nccl"`` where CUDA works.

The process group comes from the launcher's environment (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``: ``torchrun`` sets them);
one already initialised by the caller is used as it is.

No rank ever waits forever: every collective is started asynchronously and
polled against ``timeout`` seconds; a collective that fails (a rank died) or
times out (a rank stopped or stuck) ends the job with one line naming the
ranks that did not answer a liveness probe through torchrun's key-value
store. Ending the job kills this machine's other ranks at once (as
``MPI_Abort`` does); torchrun then stops the rest.

    torchrun --standalone --nproc_per_node 2 -m xbp train --distributed
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
import time
from datetime import timedelta
from typing import Any, NoReturn

import numpy as np

from ..errors import XbpValueError
from ..nn.network import Network
from .collective import (
    BUCKET_BYTES,
    DEFAULT_TIMEOUT,
    PROBE_EVERY,
    CollectiveStrategy,
    Job,
    check_timeout,
)

__all__ = ["TorchDistributedStrategy", "job"]

#: (host, pid) of every rank of this job, gathered when the process group is made: the
#: ranks on this machine that an ending rank kills
_PEERS: list[tuple[str, int]] = []
_PROBE_KEY = "probe"


def _dist() -> Any:
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        raise XbpValueError(
            "TorchDistributedStrategy needs PyTorch with torch.distributed: pip install torch"
        ) from None
    if not dist.is_available():
        raise XbpValueError(
            "this PyTorch build has no torch.distributed; install a build that has it "
            "(the PyPI wheels do), or run under mpiexec with MPIStrategy"
        )
    return torch, dist


def _connect_store(dist: Any) -> Any:
    """A client of torchrun's key-value store at ``MASTER_ADDR:MASTER_PORT`` (its agent
    runs it, so it answers while ranks are stopped): the liveness probe's channel. None
    elsewhere (a process group made otherwise): timeouts still end the job, without
    naming the ranks."""
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    # only torchrun's agent store: a store that rank 0 hosts itself (a group made from
    # MASTER_ADDR by hand) refused this second client here, after a 10 s wait
    if not addr or not port or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    try:
        store = dist.TCPStore(
            addr, int(port), is_master=False, timeout=timedelta(seconds=10), wait_for_workers=False
        )
        return dist.PrefixStore("xbp", store)
    except Exception:
        return None


def _end(rank: int, size: int, message: str) -> NoReturn:
    """Print the one line, kill this machine's other ranks, exit: torchrun stops the rest."""
    print(f"xbp: rank {rank} of {size} {message}; aborting all ranks", file=sys.stderr, flush=True)
    sys.stdout.flush()
    host, me = socket.gethostname(), os.getpid()
    for peer_host, pid in _PEERS:
        if peer_host == host and pid != me:
            try:  # SIGKILL also ends a stopped (SIGSTOP) rank, which SIGTERM would not
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass  # already gone
    os._exit(1)


class TorchDistributedStrategy(CollectiveStrategy):
    """Data parallelism over ``torch.distributed`` (see the module docstring).

    Parameters
    ----------
    backend : str, optional
        The process group's backend when this strategy makes it: default
        ``"cpu:gloo,cuda:nccl"`` where CUDA works, else ``"gloo"``.
    overlap : bool
        Start summing each bucket of gradients while the backward pass goes on
        (default). False sums everything in one exchange after it.
    bucket_bytes : int
        Gradients are sent in buckets of at least this many bytes (default 4 MiB).
    timeout : float
        Seconds a rank waits in one collective (default
        :data:`xbp.parallel.mpi.DEFAULT_TIMEOUT`, 300) before it ends the job,
        naming the ranks that did not respond (the process group's own timeout,
        when this strategy makes it, is 60 s longer: a backstop).

    Examples
    --------
    Under ``torchrun --nproc_per_node 2 train.py``:

    >>> strategy = xbp.parallel.torchdist.TorchDistributedStrategy(timeout=60)  # doctest: +SKIP
    >>> xbp.fit(net, x, y, strategy=strategy)  # doctest: +SKIP
    """

    engine = "torch.distributed"

    def __init__(
        self,
        *,
        backend: str | None = None,
        overlap: bool = True,
        bucket_bytes: int = BUCKET_BYTES,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        timeout = check_timeout(timeout)
        torch, dist = _dist()
        self.torch, self.dist = torch, dist
        if not dist.is_initialized():
            missing = [
                k
                for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
                if k not in os.environ
            ]
            if missing:
                raise XbpValueError(
                    f"TorchDistributedStrategy: {', '.join(missing)} not set; launch with "
                    "torchrun (torchrun --nproc_per_node N script.py), or call "
                    "torch.distributed.init_process_group first"
                )
            cuda = torch.cuda.is_available()
            if backend is None:
                backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
            if cuda and "nccl" in backend:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            # the group's own timeout is a backstop: xbp's deadline (``timeout``) comes first
            # and names the ranks
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout + 60))
            # a group left to the interpreter's teardown can abort the process (SIGABRT
            # in gloo's destructor when a peer went first): close it while Python runs
            atexit.register(_close_group)
        self.group_backend = str(dist.get_backend())
        if "gloo" not in self.group_backend:  # the handshake and metric sums are host arrays
            raise XbpValueError(
                f"the process group's backend is {self.group_backend!r}: xbp also sums host "
                "arrays (the handshake, metrics, stop decisions), which need gloo; make the "
                "group with torch.distributed.init_process_group('cpu:gloo,cuda:nccl'), or "
                "let TorchDistributedStrategy make it"
            )
        self._init(dist.get_rank(), dist.get_world_size(), overlap, bucket_bytes, timeout)
        self._store = _connect_store(dist)
        if not _PEERS and self.size > 1:
            me = f"{socket.gethostname()}\n{os.getpid()}"
            for text in self._allgather_text(me, "the start of torch.distributed"):
                host, pid = text.split("\n")
                _PEERS.append((host, int(pid)))

    # -- the transport ----------------------------------------------------------------
    def _tensor(self, buf: Any) -> Any:
        """``buf`` as a torch tensor sharing its memory (NumPy: from_numpy; other device
        arrays: DLPack)."""
        torch = self.torch
        if isinstance(buf, torch.Tensor):
            return buf
        if isinstance(buf, np.ndarray):
            return torch.from_numpy(buf)
        return torch.from_dlpack(buf)

    def _start_allreduce(self, buf: Any) -> Any:
        t = self._tensor(buf)
        return (self.dist.all_reduce(t, op=self.dist.ReduceOp.SUM, async_op=True), t)

    def _start_bcast(self, buf: np.ndarray) -> Any:
        t = self._tensor(buf)
        return (self.dist.broadcast(t, src=0, async_op=True), t)

    def _start_allgather(self, send: np.ndarray, recv: np.ndarray) -> Any:
        out = list(self.torch.from_numpy(recv).chunk(self.size))  # views: gathered in place
        t = self.torch.from_numpy(send)
        return (self.dist.all_gather(out, t, async_op=True), (out, t))

    def _completed(self, requests: list[Any]) -> bool:
        if not all(work.is_completed() for work, _ in requests):
            return False
        for work, _ in requests:
            work.wait()  # raises where the collective failed
        return True

    def _answer_probes(self) -> None:
        store = self._store
        if store is None:
            return
        try:
            if store.check([_PROBE_KEY]):
                store.set(f"alive/{self.rank}", "1")
        except Exception:
            pass  # the store is gone: the ranks that probe name this one

    def _probe(self, grace: float) -> list[int] | None:
        store = self._store
        if store is None:
            return None
        others = [r for r in range(self.size) if r != self.rank]
        try:
            store.set_timeout(timedelta(seconds=grace))
            store.set(f"alive/{self.rank}", "1")
            store.set(_PROBE_KEY, "1")
            deadline = time.monotonic() + grace
            while True:
                missing = [r for r in others if not store.check([f"alive/{r}"])]
                if not missing or time.monotonic() > deadline:
                    return missing
                time.sleep(PROBE_EVERY / 5)
        except Exception:
            return None  # the store itself does not answer (its host rank is stopped)

    def _end_job(self, message: str) -> NoReturn:
        _end(self.rank, self.size, message)

    def _device_buffers_for(self, net: Network) -> bool:
        # kDLCUDA (2) or kDLCUDAManaged (13): NCCL reads the device buffer itself
        arrays = [a for p in net.params for a in p.values()]  # a layer may have none
        device_type = arrays[0].__dlpack_device__()[0] if arrays else 1
        return int(device_type) in (2, 13) and "nccl" in self.group_backend


def _close_group() -> None:
    try:
        _, dist = _dist()
        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:
        pass  # ending anyway


class _TorchJob(Job):
    """The ranks torchrun started: see :func:`xbp.parallel.mpi.collective_guard`."""

    def __init__(self, rank: int, size: int) -> None:
        self.rank, self.size = rank, size

    def abort(self, message: str) -> NoReturn:
        _end(self.rank, self.size, message)

    def finish(self, timeout: float) -> None:
        """Wait, at most ``timeout`` s, for every rank to finish (where a process group
        exists: before one, a rank has nothing to wait for and torchrun collects them)."""
        torch, dist = _dist()
        if not dist.is_initialized():
            return
        flag = torch.zeros(1)
        work = dist.all_reduce(flag, async_op=True)  # on gloo: a barrier with a deadline
        deadline, pause = time.monotonic() + timeout, 1e-4
        while True:
            try:
                if work.is_completed():
                    work.wait()
                    return
            except Exception as exc:
                self.abort(
                    f"finished, but waiting for the other ranks failed ({type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:200]}): a rank is stuck or ended without a "
                    "message"
                )
            if time.monotonic() > deadline:
                self.abort(
                    f"finished, but not every rank did within {timeout:g} s (a rank is stuck "
                    "or failed without a message)"
                )
            time.sleep(pause)
            pause = min(2 * pause, 0.05)


def job() -> Job | None:
    """This torchrun job (None under one process)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return _TorchJob(int(os.environ.get("RANK", "0")), size) if size > 1 else None
