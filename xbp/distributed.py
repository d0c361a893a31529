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
    "MPIStrategy",
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
    """This process's rank among the ranks on the same machine."""
    MPI = _mpi()
    comm = comm or MPI.COMM_WORLD
    return int(comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank())


def local_device(backend: str, comm: Any = None) -> Any:
    """One GPU per rank: this rank's device, from its local rank (None on the CPU backends)."""
    library = backends.lookup(backend)
    if library.gpu_count() == 0:  # the library decides what "no GPU" means for it
        return library.local_device(0)
    return library.local_device(local_rank(comm))


# the environment each launcher gives its processes: (variable holding the process count, name)
_LAUNCHERS = (
    ("OMPI_COMM_WORLD_SIZE", "mpiexec (Open MPI)"),
    ("PMI_SIZE", "mpiexec (MPICH)"),
    ("PMIX_SIZE", "mpiexec (PMIx)"),
    ("MV2_COMM_WORLD_SIZE", "mpiexec (MVAPICH)"),
    ("WORLD_SIZE", "torchrun"),
)


def launcher(environ: dict[str, str] | None = None) -> tuple[str, int] | None:
    """The parallel launcher this process runs under and its process count, when it
    started more than one (``mpiexec -n 2``, ``torchrun --nproc_per_node 2``), read from
    the environment it sets; None otherwise.

    Examples
    --------
    >>> from xbp.distributed import launcher
    >>> launcher({"OMPI_COMM_WORLD_SIZE": "2"}), launcher({"PMI_SIZE": "1"})
    (('mpiexec (Open MPI)', 2), None)
    """
    env = os.environ if environ is None else environ
    for variable, name in _LAUNCHERS:
        try:
            size = int(env.get(variable, "1"))
        except ValueError:
            continue
        if size > 1:
            return name, size
    return None


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
    with CUDA-aware MPI) at ``offsets``. ``requests`` and the buffers they write stay
    referenced here until the bucket is waited for."""

    __slots__ = ("entries", "inplace", "staged", "offsets", "requests")

    def __init__(self) -> None:
        self.entries: list[tuple[int, str, Any]] = []
        self.inplace: dict[tuple[int, str], np.ndarray] = {}
        self.staged: Any = None
        self.offsets: dict[tuple[int, str], int] = {}
        self.requests: list[Any] = []


class MPIStrategy(Strategy):
    """Data parallelism over an MPI communicator (see the module docstring).

    Parameters
    ----------
    comm : mpi4py communicator
    overlap : bool
        Start summing each bucket of gradients while the backward pass goes on
        (default). False sums everything in one blocking exchange after it.
    bucket_bytes : int
        Gradients are sent in buckets of at least this many bytes (default
        4 MiB; the last one, with the first layer and the loss, may be
        smaller). Smaller buckets start earlier, larger ones make fewer
        collectives.

    Examples
    --------
    >>> from mpi4py import MPI  # doctest: +SKIP
    >>> xbp.fit(net, x, y, strategy=MPIStrategy(MPI.COMM_WORLD))  # doctest: +SKIP
    """

    reduces = True

    def __init__(
        self, comm: Any, *, overlap: bool = True, bucket_bytes: int = BUCKET_BYTES
    ) -> None:
        if not all(hasattr(comm, m) for m in ("Get_rank", "Get_size", "Allreduce")):
            raise XbpValueError(
                f"comm is a {type(comm).__name__}, not an MPI communicator; pass "
                "mpi4py.MPI.COMM_WORLD (or xbp.distributed.world())"
            )
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, int) or bucket_bytes < 1:
            raise XbpValueError(
                f"bucket_bytes={bucket_bytes!r} must be a positive integer (bytes), e.g. 1 << 20"
            )
        self.comm = comm
        self.MPI = _mpi()
        self.rank, self.size = int(comm.Get_rank()), int(comm.Get_size())
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
        return f"MPIStrategy(rank={self.rank}, size={self.size}, overlap={self.overlap})"

    def share(self, start: int, stop: int) -> tuple[int, int]:
        base, extra = divmod(stop - start, self.size)
        lo = start + self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    def reduce_sums(self, values: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, out, op=self.MPI.SUM)
        return out

    def reduce_stats(self, values: Any) -> Any:
        """Sum a device vector over ranks in the middle of a pass (BatchNorm's global
        batch statistics): one blocking ``Allreduce`` through the host, summed in
        float64 and returned in ``values``' dtype. Under mixed precision the sums of
        the low compute type (bfloat16, float16) cross in the network's dtype.

        Every rank calls it at the same point of the same layer (a rank with no rows
        of the batch sends zeros), so the collectives pair up; it may run while the
        gradients' ``Iallreduce`` buckets of the layers above are in flight."""
        net = self._net
        if net is None:
            raise XbpValueError(
                "MPIStrategy.reduce_stats before setup(net, config); call setup first "
                "(xbp.fit does)"
            )
        xp = net.xp
        wide = values if values.dtype == net.dtype else xp.astype(values, net.dtype)
        host = np.array(net.backend.to_host(wide), dtype=np.float64, copy=True, order="C")
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        out = net.backend.asarray(host, net.dtype)
        return out if values.dtype == net.dtype else xp.astype(out, values.dtype)

    def any(self, flag: bool) -> bool:
        return bool(self.comm.allreduce(bool(flag), op=self.MPI.LOR))

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
        configs = self.comm.allgather(json.dumps(mine, sort_keys=True, default=str))
        if len(set(configs)) > 1:
            message = _disagreement([json.loads(c) for c in configs])
            if message is not None:
                _COLLECTIVE_FAILURE = True
                raise RanksDisagreeError(message)
        self._device_buffers = net.backend.mpi_device_buffers(cuda_aware())
        # every rank must start from rank 0's weights (and layer state), whatever seed
        # it was given
        for p in [*net.params, *net.state]:
            for k in sorted(p):
                host = np.array(net.backend.to_host(p[k]), copy=True, order="C")  # writable
                self.comm.Bcast(host, root=0)
                p[k] = net.backend.asarray(host, net.dtype, copy=True)
        self._net = net
        self._dtype = np.dtype(net.backend.dtype_name(net.dtype))
        self._buffers.clear()
        self._open, self._open_bytes, self._sent = _Bucket(), 0, []

    # -- the exchange -----------------------------------------------------------------
    def _grad_ready(self, layer: int, grads: dict[str, Any]) -> None:
        """Called by the backward pass with layer ``layer``'s fresh gradients."""
        if self._sent:  # let the library move the buckets already sent along
            self.MPI.Request.Testall([r for b in self._sent for r in b.requests])
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
                "MPIStrategy.reduce_grads before setup(net, config); call setup first "
                "(xbp.fit does)"
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
        self.MPI.Request.Waitall([r for b in buckets for r in b.requests])
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
        MPI = self.MPI
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
                bucket.requests.append(self.comm.Iallreduce(MPI.IN_PLACE, host, op=MPI.SUM))
            else:
                staged.append((layer, k, a))
        if not staged:
            self._sent.append(bucket)
            return
        offset = 0
        for layer, k, a in staged:
            bucket.offsets[(layer, k)] = offset
            offset += int(np.prod(a.shape))
        if self._device_buffers:  # CUDA-aware MPI reads the GPU buffer itself
            buf = xp.concat([xp.reshape(a, (-1,)) for _, _, a in staged])
            be.sync()
        else:
            # one persistent host buffer per bucket: the MPI library registers its memory
            # once instead of on every step (a fresh buffer cost 3x the transfer)
            buf = self._host_buffer(len(self._sent), offset)
            for layer, k, a in staged:
                off = bucket.offsets[(layer, k)]
                size = int(np.prod(a.shape))
                buf[off : off + size] = np.reshape(be.to_host(a), (-1,))
        bucket.staged = buf  # referenced until the request completes
        bucket.requests.append(self.comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM))
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
        abort_on_error(self.comm, exc)


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

    Returns
    -------
    dict
        ``{"train": hex digest, "validation": hex digest or None}``.
    """
    return {
        "train": train.fingerprint(net, rows),
        "validation": None if val is None else val.fingerprint(net, rows),
    }


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


def abort_on_error(comm: Any, exc: BaseException) -> None:
    """On a multi-rank run, print one clear line and abort every rank instead of hanging."""
    if comm is None or comm.Get_size() == 1:
        return
    detail = " ".join("".join(traceback.format_exception_only(type(exc), exc)).split())
    abort_all(f"failed: {detail}", comm)


def _exit_status(code: Any) -> int:
    """The process exit status ``sys.exit(code)`` gives."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1  # a message: Python prints it and exits 1


def _world_or_none() -> Any:
    try:
        comm = world()
    except XbpValueError:  # no mpi4py: nothing to abort
        return None
    return comm if comm.Get_size() > 1 else None


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


def _failed(comm: Any, status: int) -> None:
    """This rank ends with ``status``: abort the others unless every rank saw the same error."""
    if status != 0 and not _COLLECTIVE_FAILURE:
        abort_all(f"failed (exit status {status}; its error is above)", comm)


@contextmanager
def collective_guard(finish_timeout: float = FINISH_TIMEOUT) -> Iterator[None]:
    """Run the block as one rank of a multi-rank job that must end together.

    An exception (or a non-zero ``sys.exit``) in the block on any rank prints
    ``xbp: rank R of N failed: ...; aborting all ranks`` and aborts the job,
    so the other ranks never wait in a collective for it; a block that ends
    normally waits up to ``finish_timeout`` seconds for every rank to end its
    own, then aborts the job (a rank is stuck). Under one process, or without
    mpi4py, it does nothing. Use it around the whole of a training script,
    including loading data before ``fit`` and saving after it.

    Parameters
    ----------
    finish_timeout : float
        Seconds a rank that finished waits for the others.

    Examples
    --------
    >>> with xbp.distributed.collective_guard():  # doctest: +SKIP
    ...     x, y = load(path)
    ...     xbp.fit(net, x, y, comm=MPI.COMM_WORLD)
    ...     xbp.save(net, "model.npz")
    """
    try:
        yield
    except SystemExit as exc:
        status = _exit_status(exc.code)
        comm = _world_or_none()
        if comm is not None:
            if status != 0 and isinstance(exc.code, str):
                print(exc.code, file=sys.stderr, flush=True)
            _failed(comm, status)
            if status == 0:
                _finish(comm, finish_timeout)
        raise
    except BaseException as exc:
        comm = _world_or_none()
        if comm is not None and not isinstance(exc, CollectiveError):
            abort_on_error(comm, exc)
        raise
    comm = _world_or_none()
    if comm is not None:
        _finish(comm, finish_timeout)


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
        comm = _world_or_none() if status != 0 else None
        if comm is not None:
            _failed(comm, status)  # returns only when every rank failed alike
    return status
