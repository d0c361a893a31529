"""Data-parallel training across processes and machines over MPI (mpi4py).

Every rank holds the same data and starts from the same weights (rank 0's
are broadcast). Each global mini-batch, drawn from the same seeded
permutation on every rank, is split into contiguous shares, one per rank.
Each rank runs backprop on its share with the *global* batch size as the
divisor of the average, so the shares' gradients add up to exactly the
full-batch gradient, however unevenly the batch divides. Every rank then
applies the same optimizer update. Rank 0 alone writes checkpoints, logs and
the progress bar; validation metrics are summed across ranks.

The exchange overlaps the backward pass: as soon as backprop has produced a
layer's gradients (last layer first) they join a bucket, and a full bucket
is summed across ranks by a non-blocking ``Iallreduce`` while the earlier
layers are still being computed; the last bucket carries the loss, and the
step waits for every bucket only before the update. NumPy gradients are
summed in place; other arrays are staged through persistent host buffers
(or, with CUDA-aware MPI, summed on the device).

A run never hangs on a rank that disagrees or fails:

* :meth:`MPIStrategy.setup` compares every rank's run configuration before
  the first step and raises :class:`RanksDisagreeError` on *every* rank,
  naming each differing field and which ranks hold which value;
* an exception inside ``fit`` on one rank prints ``xbp: rank R of N failed:
  ...; aborting all ranks`` and aborts the job (:func:`abort_on_error`);
* :func:`run_collectively` (the CLI's ``--distributed`` entry) and
  :func:`collective_guard` (scripts) do the same for failures before or
  after ``fit``, and make a rank that finished wait, with a time limit, for
  the others.

Run with ``mpiexec -n 4 xbp train --distributed`` or, from Python,
``xbp.fit(net, x, y, comm=MPI.COMM_WORLD)`` (the same as
``strategy=xbp.distributed.MPIStrategy(MPI.COMM_WORLD)``). The training loop
knows none of this: it calls the strategy (:mod:`xbp.strategy`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import numpy as np

from . import backends
from .errors import CollectiveError, XbpValueError
from .network import Network, Params
from .strategy import Strategy

__all__ = [
    "world",
    "local_rank",
    "local_device",
    "cuda_aware",
    "CollectiveStrategy",
    "MPIStrategy",
    "DEFAULT_TIMEOUT",
    "launcher",
    "strategy_from_environment",
    "RanksDisagreeError",
    "data_fingerprint",
    "abort_on_error",
    "abort_all",
    "collective_guard",
    "run_collectively",
]

#: a bucket is sent once it holds this many bytes of gradients
BUCKET_BYTES = 4 << 20
#: NumPy gradients at least this large are summed in place (smaller ones are staged together)
IN_PLACE_BYTES = 1 << 14
#: how long a rank that finished waits for the others before aborting the job
FINISH_TIMEOUT = 120.0
#: how long a rank waits in one collective (seconds) before it ends the job: the default
#: of ``timeout=`` (MPIStrategy, TorchDistributedStrategy) and ``xbp train --timeout``
DEFAULT_TIMEOUT = 300.0
#: after a timeout, how long a rank waits for the others to answer a liveness probe
PROBE_GRACE = 2.0
#: how often a rank waiting in a collective answers the probes of ranks that gave up
PROBE_EVERY = 0.05
_PROBE_TAG, _ALIVE_TAG = 30571, 30572  # point-to-point tags of MPI's liveness probe
#: fields that may differ between ranks: every rank starts from rank 0's broadcast weights
_MAY_DIFFER = ("architecture.seed", "architecture.init")

# set when this rank raised a CollectiveError (RanksDisagreeError, ...): every rank did,
# none needs aborting
_COLLECTIVE_FAILURE = False


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
    """This process's rank among the ranks on the same machine (torchrun's ``LOCAL_RANK``
    under torchrun)."""
    if comm is None and launcher() == "torchrun" and "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    MPI = _mpi()
    comm = comm or MPI.COMM_WORLD
    return int(comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank())


def local_device(backend: str, comm: Any = None) -> Any:
    """One GPU per rank: this rank's device, from its local rank (None on the CPU backends)."""
    library = backends.lookup(backend)
    if library.gpu_count() == 0:  # the library decides what "no GPU" means for it
        return library.local_device(0)
    return library.local_device(local_rank(comm))


def cuda_aware() -> bool:
    """Whether the MPI library can read CUDA device buffers directly."""
    MPI = _mpi()
    query = getattr(MPI, "Query_cuda_support", None)
    try:
        return bool(query()) if query is not None else False
    except Exception:  # an MPI without the extension
        return False


class RanksDisagreeError(CollectiveError):
    """The ranks of a distributed run were given different configurations or data.

    Raised on every rank at once (the comparison is collective), so no rank
    is left waiting and none needs aborting."""


class _Bucket:
    """Gradients of consecutive layers being summed across ranks by one or more requests.

    ``entries`` are ``(layer, key, array)``; ``inplace`` are host arrays summed where they
    are; the rest are packed into ``staged`` (a persistent host buffer, or a device buffer
    the transport reads directly) at ``offsets``. ``requests`` and the buffers they write
    stay referenced here until the bucket is waited for."""

    __slots__ = ("entries", "inplace", "staged", "offsets", "requests")

    def __init__(self) -> None:
        self.entries: list[tuple[int, str, Any]] = []
        self.inplace: dict[tuple[int, str], np.ndarray] = {}
        self.staged: Any = None
        self.offsets: dict[tuple[int, str], int] = {}
        self.requests: list[Any] = []


def check_timeout(timeout: Any, argument: str = "timeout") -> float:
    """``timeout`` as positive finite seconds, or a one-line error naming ``argument``."""
    ok = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
    if not ok or not (0 < float(timeout) < float("inf")):
        raise XbpValueError(
            f"{argument}={timeout!r} must be a positive number of seconds (how long a rank "
            f"waits in a collective for the others), e.g. {argument}={DEFAULT_TIMEOUT:g}"
        )
    return float(timeout)


class CollectiveStrategy(Strategy):
    """Data parallelism over a transport of collectives (the engine-neutral part).

    :class:`MPIStrategy` and :class:`xbp.torchdist.TorchDistributedStrategy`
    differ only in how they start a collective, test whether it finished, ask
    which ranks still respond, and end the job. Everything else is here, once:
    the shares, the configuration handshake, rank 0's weights broadcast, the
    bucketed gradient exchange started from the backward pass's ``grad_ready``
    hook and awaited before the update, the sums of statistics and metrics, and
    the collective stop decision.

    Every wait has a deadline (``timeout`` seconds): a collective that has not
    finished by then (a rank stopped, dead or stuck), or that fails in the
    transport, ends the job with one line naming the ranks that did not answer
    a liveness probe.
    """

    reduces = True
    #: what the messages call the transport
    engine = "collectives"

    def _init(self, rank: int, size: int, overlap: bool, bucket_bytes: int, timeout: Any) -> None:
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, int) or bucket_bytes < 1:
            raise XbpValueError(
                f"bucket_bytes={bucket_bytes!r} must be a positive integer (bytes), e.g. 1 << 20"
            )
        self.timeout = check_timeout(timeout)
        self.rank, self.size = rank, size
        self.reduces = self.size > 1
        self.overlap = bool(overlap)
        self.bucket_bytes = bucket_bytes
        self.in_place_bytes = IN_PLACE_BYTES
        # the backward pass hands each layer's gradients to _grad_ready as they appear
        self.grad_ready = self._grad_ready if self.reduces and self.overlap else None
        self._net: Network | None = None
        self._dtype = np.dtype(np.float64)  # the network's, on the host (set in setup)
        self._device_buffers = False
        self._buffers: dict[int, np.ndarray] = {}  # persistent staging buffers, by bucket
        self._open = _Bucket()  # layers handed in, not yet sent
        self._open_bytes = 0
        self._sent: list[_Bucket] = []  # sent this step, not yet waited for

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(rank={self.rank}, size={self.size}, overlap={self.overlap}, "
            f"timeout={self.timeout:g})"
        )

    # -- the transport (each engine) --------------------------------------------------
    def _start_allreduce(self, buf: Any) -> Any:
        """Start summing ``buf`` (a host array, or a device buffer) over ranks, in place."""
        raise NotImplementedError

    def _start_bcast(self, buf: np.ndarray) -> Any:
        """Start copying rank 0's ``buf`` into every rank's."""
        raise NotImplementedError

    def _start_allgather(self, send: np.ndarray, recv: np.ndarray) -> Any:
        """Start gathering every rank's ``send`` into ``recv`` (rank by rank)."""
        raise NotImplementedError

    def _completed(self, requests: list[Any]) -> bool:
        """Whether every request finished; raises where the transport failed."""
        raise NotImplementedError

    def _answer_probes(self) -> None:
        """Answer the liveness probes of ranks that gave up waiting."""

    def _probe(self, grace: float) -> list[int] | None:
        """Ask every other rank whether it responds; the ranks that did not within
        ``grace`` seconds (None: this engine cannot tell)."""
        return None

    def _end_job(self, message: str) -> NoReturn:
        """Print ``xbp: rank R of N <message>; aborting all ranks`` and end every rank."""
        raise NotImplementedError

    def _device_buffers_for(self, net: Network) -> bool:
        """Whether the transport reads ``net``'s device arrays directly."""
        return False

    # -- waiting, with a deadline -------------------------------------------------------
    def _wait(self, requests: list[Any], what: str) -> None:
        """Wait until ``requests`` finish, at most ``timeout`` seconds, then end the job."""
        t0 = time.monotonic()
        deadline, probes = t0 + self.timeout, t0 + PROBE_EVERY
        pause = 0.0
        while True:
            try:
                if self._completed(requests):
                    return
            except Exception as exc:  # the transport failed (a rank died): say which
                self._stalled(what, time.monotonic() - t0, exc)
            now = time.monotonic()
            if now > deadline:
                self._stalled(what, now - t0)
            if now > probes:  # a rank that gave up asks whether this one is alive
                self._answer_probes()
                probes = now + PROBE_EVERY
            # spin for the first millisecond (an exchange usually ends within it), then
            # sleep: a rank waiting for a stopped one must not burn a core
            if now - t0 > 1e-3:
                pause = min(2 * pause or 1e-5, 1e-3)
                time.sleep(pause)

    def _stalled(self, what: str, waited: float, error: BaseException | None = None) -> NoReturn:
        grace = min(PROBE_GRACE, self.timeout)
        missing = self._probe(grace)
        how = f"the timeout is {self.timeout:g} s: timeout= or --timeout"
        if missing:
            message = (
                f"waited {waited:.1f} s in {what}, but {_ranks(missing)} did not respond "
                f"(stopped, dead or stuck; {how})"
            )
        elif error is not None:
            detail = " ".join(str(error).split())[:300]
            message = f"failed in {what}: {type(error).__name__}: {detail}"
        elif missing is None:
            message = f"waited {waited:.1f} s in {what} for the other ranks ({how})"
        else:
            message = (
                f"waited {waited:.1f} s in {what}; every rank responds, but not in this "
                f"collective (the ranks run different code; {how})"
            )
        responding = sorted(set(range(self.size)) - set(missing or ()))
        if responding and self.rank != responding[0]:
            time.sleep(grace)  # the lowest responding rank reports and ends the job
        self._end_job(message)

    def _sum_host(self, values: np.ndarray, what: str) -> np.ndarray:
        out = np.array(values, dtype=np.float64, copy=True, order="C")
        self._wait([self._start_allreduce(out)], what)
        return out

    # -- the Strategy calls -----------------------------------------------------------
    def share(self, start: int, stop: int) -> tuple[int, int]:
        base, extra = divmod(stop - start, self.size)
        lo = start + self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    def reduce_sums(self, values: np.ndarray) -> np.ndarray:
        return self._sum_host(values, "the sum of metrics")

    def any(self, flag: bool) -> bool:
        return bool(self._sum_host(np.array([float(bool(flag))]), "the stop decision")[0] > 0)

    def reduce_stats(self, values: Any) -> Any:
        """Sum a device vector over ranks in the middle of a pass (BatchNorm's global
        batch statistics): one blocking sum through the host, in float64, returned in
        ``values``' dtype. Under mixed precision the sums of the low compute type
        (bfloat16, float16) cross in the network's dtype.

        Every rank calls it at the same point of the same layer (a rank with no rows
        of the batch sends zeros), so the collectives pair up; it may run while the
        gradients' buckets of the layers above are in flight."""
        net = self._net
        if net is None:
            raise XbpValueError(
                f"{type(self).__name__}.reduce_stats before setup(net, config); call setup "
                "first (xbp.fit does)"
            )
        xp = net.xp
        wide = values if values.dtype == net.dtype else xp.astype(values, net.dtype)
        host = self._sum_host(net.backend.to_host(wide), "the sum of batch statistics")
        out = net.backend.asarray(host, net.dtype)
        return out if values.dtype == net.dtype else xp.astype(out, values.dtype)

    def _allgather_text(self, text: str, what: str) -> list[str]:
        data = np.frombuffer(text.encode(), dtype=np.uint8)
        lengths = np.zeros(self.size, dtype=np.int64)
        self._wait([self._start_allgather(np.array([data.size], np.int64), lengths)], what)
        width = max(int(lengths.max()), 1)
        send = np.zeros(width, dtype=np.uint8)
        send[: data.size] = data
        recv = np.zeros(self.size * width, dtype=np.uint8)
        self._wait([self._start_allgather(send, recv)], what)
        return [
            bytes(recv[r * width : r * width + int(lengths[r])]).decode() for r in range(self.size)
        ]

    # -- before the first step ------------------------------------------------------
    def setup(self, net: Network, config: dict[str, Any]) -> None:
        """Compare every rank's run configuration, then start all from rank 0's weights.

        Raises
        ------
        RanksDisagreeError
            On every rank, when any field differs between ranks; the message
            names every differing field and which ranks hold which value.
        """
        global _COLLECTIVE_FAILURE
        _COLLECTIVE_FAILURE = False
        mine = dict(config)
        mine["backend"] = net.backend.name
        text = json.dumps(mine, sort_keys=True, default=str)
        configs = self._allgather_text(text, "the configuration handshake")
        if len(set(configs)) > 1:
            message = _disagreement([json.loads(c) for c in configs])
            if message is not None:
                _COLLECTIVE_FAILURE = True
                raise RanksDisagreeError(message)
        self._device_buffers = self._device_buffers_for(net)
        # every rank must start from rank 0's weights (and layer state), whatever seed
        # it was given
        for p in [*net.params, *net.state]:
            for k in sorted(p):
                host = np.array(net.backend.to_host(p[k]), copy=True, order="C")  # writable
                self._wait([self._start_bcast(host)], "the broadcast of rank 0's weights")
                p[k] = net.backend.asarray(host, net.dtype, copy=True)
        self._net = net
        self._dtype = np.dtype(net.backend.dtype_name(net.dtype))
        self._buffers.clear()
        self._open, self._open_bytes, self._sent = _Bucket(), 0, []

    # -- the exchange -----------------------------------------------------------------
    def _grad_ready(self, layer: int, grads: dict[str, Any]) -> None:
        """Called by the backward pass with layer ``layer``'s fresh gradients."""
        if self._sent:  # let the transport move the buckets already sent along
            try:
                self._completed([r for b in self._sent for r in b.requests])
            except Exception:
                pass  # reduce_grads waits for them and reports the failure
        for k in sorted(grads):
            a = grads[k]
            self._open.entries.append((layer, k, a))
            self._open_bytes += int(np.prod(a.shape)) * self._dtype.itemsize
        # the first layer comes last: it is sent with the loss in reduce_grads
        if layer > 0 and self._open_bytes >= self.bucket_bytes:
            self._send(self._open)
            self._open, self._open_bytes = _Bucket(), 0

    def reduce_grads(self, cost: Any, grads: Params) -> tuple[Any, Params]:
        """Sum the loss and every gradient across ranks.

        The buckets started during the backward pass are waited for here;
        layers not handed to ``grad_ready`` (none with overlap on) and the
        loss go in a last bucket."""
        net = self._net
        if net is None:
            raise XbpValueError(
                f"{type(self).__name__}.reduce_grads before setup(net, config); call setup "
                "first (xbp.fit does)"
            )
        be, xp = net.backend, net.xp
        last = self._open
        seen = {(b_layer, k) for b in self._sent for b_layer, k, _ in b.entries}
        seen.update((b_layer, k) for b_layer, k, _ in last.entries)
        for layer in range(len(grads) - 1, -1, -1):
            for k in sorted(grads[layer]):
                if (layer, k) not in seen:
                    last.entries.append((layer, k, grads[layer][k]))
        last.entries.append((-1, "cost", xp.reshape(cost, (1,))))
        self._send(last)
        buckets, self._sent = self._sent, []
        self._open, self._open_bytes = _Bucket(), 0
        self._wait([r for b in buckets for r in b.requests], "the gradient exchange")
        out: Params = [dict(g) for g in grads]
        total = cost
        for bucket in buckets:
            staged = bucket.staged
            if staged is not None and not self._device_buffers:
                staged = be.asarray(staged)  # views (NumPy, torch on the CPU) or one copy
            for layer, k, a in bucket.entries:
                if (layer, k) in bucket.inplace:
                    value = a  # summed where it lies
                else:
                    off = bucket.offsets[(layer, k)]
                    size = int(np.prod(a.shape))
                    value = xp.reshape(staged[off : off + size], a.shape)
                if layer < 0:
                    total = xp.reshape(value, ())
                else:
                    out[layer][k] = value
        return total, out

    def _send(self, bucket: _Bucket) -> None:
        """Start summing ``bucket`` across ranks (non-blocking)."""
        assert self._net is not None
        be, xp = self._net.backend, self._net.xp
        staged: list[tuple[int, str, Any]] = []
        for layer, k, a in bucket.entries:
            host = a if be.is_host and isinstance(a, np.ndarray) else None
            if (
                host is not None
                and host.nbytes >= self.in_place_bytes
                and host.flags.c_contiguous
                and host.flags.writeable
            ):
                bucket.inplace[(layer, k)] = host
                bucket.requests.append(self._start_allreduce(host))
            else:
                staged.append((layer, k, a))
        if not staged:
            self._sent.append(bucket)
            return
        offset = 0
        for layer, k, a in staged:
            bucket.offsets[(layer, k)] = offset
            offset += int(np.prod(a.shape))
        if self._device_buffers:  # the transport reads the GPU buffer itself
            buf = xp.concat([xp.reshape(a, (-1,)) for _, _, a in staged])
            be.sync()
        else:
            # one persistent host buffer per bucket: the transport registers its memory
            # once instead of on every step (a fresh buffer cost 3x the transfer)
            buf = self._host_buffer(len(self._sent), offset)
            for layer, k, a in staged:
                off = bucket.offsets[(layer, k)]
                size = int(np.prod(a.shape))
                buf[off : off + size] = np.reshape(be.to_host(a), (-1,))
        bucket.staged = buf  # referenced until the request completes
        bucket.requests.append(self._start_allreduce(buf))
        self._sent.append(bucket)

    def _host_buffer(self, index: int, size: int) -> np.ndarray:
        buf = self._buffers.get(index)
        if buf is None or buf.shape[0] != size or buf.dtype != self._dtype:
            buf = self._buffers[index] = np.empty(size, dtype=self._dtype)
        return buf

    def abort(self, exc: BaseException) -> None:
        """End every rank on a failure of this one; an error every rank raises alike (a
        :class:`~xbp.errors.CollectiveError`: a disagreement all ranks found, a refusal
        of ``compile=True``) is raised instead."""
        global _COLLECTIVE_FAILURE
        if isinstance(exc, CollectiveError):
            _COLLECTIVE_FAILURE = True
            return  # every rank raises it: each exits on its own, with the message
        if self.size > 1:
            self._end_job(f"failed: {_one_line(exc)}")


class MPIStrategy(CollectiveStrategy):
    """Data parallelism over an MPI communicator (see the module docstring).

    Parameters
    ----------
    comm : mpi4py communicator
    overlap : bool
        Start summing each bucket of gradients while the backward pass goes on
        (default). False sums everything in one exchange after it.
    bucket_bytes : int
        Gradients are sent in buckets of at least this many bytes (default
        4 MiB; the last one, with the first layer and the loss, may be
        smaller). Smaller buckets start earlier, larger ones make fewer
        collectives.
    timeout : float
        Seconds a rank waits in one collective (default
        :data:`DEFAULT_TIMEOUT`, 300) before it ends the job, naming the ranks
        that did not respond. Every collective is non-blocking and polled
        against this deadline.

    Examples
    --------
    >>> from mpi4py import MPI  # doctest: +SKIP
    >>> xbp.fit(net, x, y, strategy=MPIStrategy(MPI.COMM_WORLD, timeout=60))  # doctest: +SKIP
    """

    engine = "MPI"

    def __init__(
        self,
        comm: Any,
        *,
        overlap: bool = True,
        bucket_bytes: int = BUCKET_BYTES,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not all(hasattr(comm, m) for m in ("Get_rank", "Get_size", "Iallreduce")):
            raise XbpValueError(
                f"comm is a {type(comm).__name__}, not an MPI communicator; pass "
                "mpi4py.MPI.COMM_WORLD (or xbp.distributed.world())"
            )
        self.comm = comm
        self.MPI = _mpi()
        self._pending: list[Any] = []  # answers to probes, referenced until the job ends
        self._init(int(comm.Get_rank()), int(comm.Get_size()), overlap, bucket_bytes, timeout)

    def _start_allreduce(self, buf: Any) -> Any:
        return self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)

    def _start_bcast(self, buf: np.ndarray) -> Any:
        return self.comm.Ibcast(buf, root=0)

    def _start_allgather(self, send: np.ndarray, recv: np.ndarray) -> Any:
        return self.comm.Iallgather(send, recv)

    def _completed(self, requests: list[Any]) -> bool:
        return bool(self.MPI.Request.Testall(requests))

    def _answer_probes(self) -> None:
        MPI, status = self.MPI, self.MPI.Status()
        while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=_PROBE_TAG, status=status):
            source, ping = status.Get_source(), np.zeros(1, np.int8)
            self.comm.Recv(ping, source=source, tag=_PROBE_TAG)
            self._pending.append(self.comm.Isend(ping, dest=source, tag=_ALIVE_TAG))

    def _probe(self, grace: float) -> list[int]:
        others = [r for r in range(self.size) if r != self.rank]
        ping = np.zeros(1, np.int8)
        answers = {r: np.zeros(1, np.int8) for r in others}
        self._pending += [self.comm.Isend(ping, dest=r, tag=_PROBE_TAG) for r in others]
        waiting = {r: self.comm.Irecv(answers[r], source=r, tag=_ALIVE_TAG) for r in others}
        self._pending += [ping, answers, waiting]  # MPI writes them until the job ends
        deadline = time.monotonic() + grace
        while waiting and time.monotonic() < deadline:
            self._answer_probes()  # others may be asking too
            for r in [r for r, req in waiting.items() if req.Test()]:
                del waiting[r]
            time.sleep(0.01)
        return sorted(waiting)

    def _end_job(self, message: str) -> NoReturn:
        abort_all(message, self.comm)

    def _device_buffers_for(self, net: Network) -> bool:
        return bool(net.backend.mpi_device_buffers(cuda_aware()))


# -- the handshake's report ------------------------------------------------------------------
def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _ranks(ranks: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``ranks 0-2,5``."""
    runs: list[list[int]] = []
    for r in ranks:
        if runs and r == runs[-1][-1] + 1:
            runs[-1].append(r)
        else:
            runs.append([r])
    text = ",".join(
        f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)) for run in runs
    )
    return ("rank " if len(ranks) == 1 else "ranks ") + text


def _disagreement(configs: list[dict[str, Any]]) -> str | None:
    """One line naming every setting the ranks disagree on, with which ranks hold what."""
    flats = [_flatten(c) for c in configs]
    names: list[str] = []
    for flat in flats:  # rank 0's fields, then those only other ranks have
        names.extend(n for n in flat if n not in names)
    fields = []
    for name in names:
        if name in _MAY_DIFFER:
            continue
        values = [json.dumps(f.get(name), sort_keys=True) for f in flats]
        if len(set(values)) == 1:
            continue
        groups: dict[str, list[int]] = {}
        for rank, v in enumerate(values):
            groups.setdefault(v, []).append(rank)
        shown = "; ".join(
            f"{_ranks(ranks)}: {v if len(v) <= 60 else v[:57] + '...'}"
            for v, ranks in groups.items()
        )
        fields.append(f"{name} ({shown})")
    if not fields:
        return None
    return (
        f"the ranks disagree on {', '.join(fields)}; every rank must run the same configuration "
        "on the same data (the same command, files and options)"
    )


def data_fingerprint(net: Network, train: Any, val: Any = None, rows: int = 1024) -> dict[str, Any]:
    """A cheap fingerprint of the data a rank trains on, for the ranks to compare.

    Each data source hashes itself (:meth:`xbp.sources.Source.fingerprint`):
    device arrays and memory maps hash the bytes of up to ``rows`` evenly spaced
    rows of the features and targets (first and last included), as the device
    sees them after splitting and scaling, with the shapes: different files,
    splits, row orders or scalings show; a change confined to rows not sampled
    does not.

    Parameters
    ----------
    net : Network
    train, val : data sources (``val`` may be None)
    rows : int
        Rows sampled from each data set.

    Row weights (``sample_weight``, ``class_weight``) are hashed whole, every
    row: they change the result as much as the data does.

    Returns
    -------
    dict
        ``{"train": hex digest, "validation": hex digest or None, "train_weights":
        hex digest or None, "validation_weights": ...}`` (None: unweighted).
    """
    return {
        "train": train.fingerprint(net, rows),
        "validation": None if val is None else val.fingerprint(net, rows),
        "train_weights": _weights_digest(net, train),
        "validation_weights": None if val is None else _weights_digest(net, val),
    }


def _weights_digest(net: Network, data: Any) -> str | None:
    """blake2b of every row weight of ``data`` (sample and class weights multiplied, as
    training uses them), or None where it is unweighted: a weight that differs on one row
    changes the result, so none is skipped."""
    w = getattr(data, "w", None)
    if w is None:
        return None
    h = hashlib.blake2b(digest_size=8)
    h.update(np.ascontiguousarray(net.backend.to_host(w)).tobytes())
    return h.hexdigest()


# -- failures: no rank is left waiting ---------------------------------------------------------
def abort_all(message: str, comm: Any = None) -> NoReturn:
    """Print ``xbp: rank R of N <message>; aborting all ranks`` and abort the whole job."""
    comm = world() if comm is None else comm
    print(
        f"xbp: rank {comm.Get_rank()} of {comm.Get_size()} {message}; aborting all ranks",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    # the process manager forwards each rank's stderr asynchronously and tears the job
    # down on Abort: give it a moment to pass this line on, or the reason can be lost
    time.sleep(0.3)
    comm.Abort(1)
    # MPICH's Abort may return before the process manager's kill arrives: end this
    # process now, so that it does nothing more (the others are being killed)
    os._exit(1)


def _one_line(exc: BaseException) -> str:
    return " ".join("".join(traceback.format_exception_only(type(exc), exc)).split())


def abort_on_error(comm: Any, exc: BaseException) -> None:
    """On a multi-rank run, print one clear line and abort every rank instead of hanging."""
    if comm is None or comm.Get_size() == 1:
        return
    abort_all(f"failed: {_one_line(exc)}", comm)


def _exit_status(code: Any) -> int:
    """The process exit status ``sys.exit(code)`` gives."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1  # a message: Python prints it and exits 1


class _Job:
    """The ranks of this job, as the guards see them: end them all, or wait for them all."""

    def abort(self, message: str) -> NoReturn:
        raise NotImplementedError

    def finish(self, timeout: float) -> None:
        raise NotImplementedError


class _MPIJob(_Job):
    def __init__(self, comm: Any) -> None:
        self.comm = comm

    def abort(self, message: str) -> NoReturn:
        abort_all(message, self.comm)

    def finish(self, timeout: float) -> None:
        _finish(self.comm, timeout)


def _job() -> _Job | None:
    """This process's multi-rank job (MPI or torchrun), or None for one process."""
    if launcher() == "torchrun":
        from .torchdist import job

        return job()
    try:
        comm = world()
    except XbpValueError:  # no mpi4py: nothing to abort
        return None
    return _MPIJob(comm) if comm.Get_size() > 1 else None


def _finish(comm: Any, timeout: float) -> None:
    """Wait, at most ``timeout`` seconds, until every rank has finished; else abort the job."""
    request = comm.Ibarrier()
    deadline = time.monotonic() + timeout
    pause = 1e-4
    while not request.Test():
        if time.monotonic() > deadline:
            abort_all(
                f"finished, but not every rank did within {timeout:g} s (a rank is stuck or "
                "failed without a message)",
                comm,
            )
        time.sleep(pause)
        pause = min(2 * pause, 0.05)


def _failed(job: _Job, status: int) -> None:
    """This rank ends with ``status``: abort the others unless every rank saw the same error."""
    if status != 0 and not _COLLECTIVE_FAILURE:
        job.abort(f"failed (exit status {status}; its error is above)")


@contextmanager
def collective_guard(finish_timeout: float = FINISH_TIMEOUT) -> Iterator[None]:
    """Run the block as one rank of a multi-rank job that must end together.

    An exception (or a non-zero ``sys.exit``) in the block on any rank prints
    ``xbp: rank R of N failed: ...; aborting all ranks`` and aborts the job,
    so the other ranks never wait in a collective for it; a block that ends
    normally waits up to ``finish_timeout`` seconds for every rank to end its
    own, then aborts the job (a rank is stuck). Under one process, or without
    mpi4py, it does nothing. The job is the MPI world under ``mpiexec``, or the
    ranks of ``torchrun`` (see :func:`launcher`). Use it around the whole of a
    training script, including loading data before ``fit`` and saving after it.

    Parameters
    ----------
    finish_timeout : float
        Seconds a rank that finished waits for the others.

    Examples
    --------
    >>> with xbp.distributed.collective_guard():  # doctest: +SKIP
    ...     x, y = load(path)
    ...     xbp.fit(net, x, y, strategy=xbp.distributed.strategy_from_environment())
    ...     xbp.save(net, "model.npz")
    """
    try:
        yield
    except SystemExit as exc:
        status = _exit_status(exc.code)
        job = _job()
        if job is not None:
            if status != 0 and isinstance(exc.code, str):
                print(exc.code, file=sys.stderr, flush=True)
            _failed(job, status)
            if status == 0:
                job.finish(finish_timeout)
        raise
    except BaseException as exc:
        job = _job()
        if job is not None and not isinstance(exc, CollectiveError):
            job.abort(f"failed: {_one_line(exc)}")
        raise
    job = _job()
    if job is not None:
        job.finish(finish_timeout)


def run_collectively(
    main: Callable[..., int | None], *args: Any, finish_timeout: float = FINISH_TIMEOUT
) -> int:
    """``main(*args)`` as one rank of a multi-rank job: the CLI's ``--distributed`` entry.

    Like :func:`collective_guard`, and a non-zero status returned by ``main``
    counts as a failure: the rank prints ``xbp: rank R of N failed (exit
    status S; its error is above); aborting all ranks`` and aborts the job.
    An error every rank raises alike (:class:`RanksDisagreeError`, any
    :class:`~xbp.errors.CollectiveError`) is not aborted: every rank prints it
    and exits with its status.

    Returns
    -------
    int
        ``main``'s status (0 for None).
    """
    global _COLLECTIVE_FAILURE
    _COLLECTIVE_FAILURE = False
    with collective_guard(finish_timeout):
        status = _exit_status(main(*args))
        job = _job() if status != 0 else None
        if job is not None:
            _failed(job, status)  # returns only when every rank failed alike
    return status


# -- which engine ------------------------------------------------------------------------------
#: variables a launcher sets in every rank's environment
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_MPI_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


def launcher(environ: Any = None) -> str | None:
    """The launcher this process runs under: ``"torchrun"``, ``"mpiexec"`` or None.

    Read from the environment a launcher gives each rank: torchrun (and any
    ``env://`` launcher of torch.distributed) sets ``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR`` and ``MASTER_PORT``; MPI process managers (MPICH's Hydra,
    Open MPI, PMIx, Slurm's ``srun --mpi``) set ``PMI_RANK``,
    ``OMPI_COMM_WORLD_SIZE`` or ``PMIX_RANK``. torchrun wins where both appear.

    Examples
    --------
    >>> from xbp.distributed import launcher
    >>> launcher({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    'torchrun'
    >>> launcher({"PMI_RANK": "1", "PMI_SIZE": "2"}), launcher({})
    ('mpiexec', None)
    """
    env = os.environ if environ is None else environ
    if "TORCHELASTIC_RUN_ID" in env or all(k in env for k in _TORCHRUN_VARS):
        return "torchrun"
    if any(k in env for k in _MPI_VARS):
        return "mpiexec"
    return None


def strategy_from_environment(timeout: float = DEFAULT_TIMEOUT, **options: Any) -> Strategy:
    """The data-parallel strategy of the launcher this process runs under.

    Under ``torchrun``: :class:`xbp.torchdist.TorchDistributedStrategy` (gloo
    for host arrays, NCCL for CUDA ones); otherwise :class:`MPIStrategy` over
    ``MPI.COMM_WORLD`` (under ``mpiexec``, or one process without a launcher).
    ``xbp train --distributed`` calls it.

    Parameters
    ----------
    timeout : float
        Seconds a rank waits in one collective before it ends the job.
    **options
        ``overlap``, ``bucket_bytes``: passed to the strategy.

    Examples
    --------
    >>> strategy = xbp.distributed.strategy_from_environment(timeout=60)  # doctest: +SKIP
    >>> xbp.fit(net, x, y, strategy=strategy)  # doctest: +SKIP
    """
    check_timeout(timeout)
    if launcher() == "torchrun":
        from .torchdist import TorchDistributedStrategy

        return TorchDistributedStrategy(timeout=timeout, **options)
    return MPIStrategy(world(), timeout=timeout, **options)
