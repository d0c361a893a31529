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
``strategy=xbp.parallel.mpi.MPIStrategy(MPI.COMM_WORLD)``). The training loop
knows none of this: it calls the strategy (:mod:`xbp.parallel.strategy`).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import numpy as np

from .. import backends
from ..errors import CollectiveError, XbpValueError
from ..nn.network import Network
from .collective import (
    BUCKET_BYTES,
    DEFAULT_TIMEOUT,
    IN_PLACE_BYTES,
    CollectiveStrategy,
    Job,
    RanksDisagreeError,
    check_timeout,
    collective_failure,
    one_line,
)
from .strategy import Strategy

__all__ = [
    "world",
    "BUCKET_BYTES",
    "IN_PLACE_BYTES",
    "check_timeout",
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

#: how long a rank that finished waits for the others before aborting the job
FINISH_TIMEOUT = 120.0
_PROBE_TAG, _ALIVE_TAG = 30571, 30572  # point-to-point tags of MPI's liveness probe


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


# the environment each launcher gives its processes: (variable holding the process count, name)
_LAUNCHERS = (
    ("OMPI_COMM_WORLD_SIZE", "mpiexec (Open MPI)"),
    ("PMI_SIZE", "mpiexec (MPICH)"),
    ("PMIX_SIZE", "mpiexec (PMIx)"),
    ("MV2_COMM_WORLD_SIZE", "mpiexec (MVAPICH)"),
    ("WORLD_SIZE", "torchrun"),
)


def parallel_launch(environ: dict[str, str] | None = None) -> tuple[str, int] | None:
    """The parallel launcher this process runs under and its process count, when it
    started more than one (``mpiexec -n 2``, ``torchrun --nproc_per_node 2``), read from
    the environment it sets; None otherwise (:func:`launcher` says which engine).

    Examples
    --------
    >>> from xbp.parallel.mpi import parallel_launch
    >>> parallel_launch({"OMPI_COMM_WORLD_SIZE": "2"}), parallel_launch({"PMI_SIZE": "1"})
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
                "mpi4py.MPI.COMM_WORLD (or xbp.parallel.mpi.world())"
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
def data_fingerprint(net: Network, train: Any, val: Any = None, rows: int = 1024) -> dict[str, Any]:
    """A cheap fingerprint of the data a rank trains on, for the ranks to compare.

    Each data source hashes itself (:meth:`xbp.data.sources.Source.fingerprint`):
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


def abort_on_error(comm: Any, exc: BaseException) -> None:
    """On a multi-rank run, print one clear line and abort every rank instead of hanging."""
    if comm is None or comm.Get_size() == 1:
        return
    abort_all(f"failed: {one_line(exc)}", comm)


def _exit_status(code: Any) -> int:
    """The process exit status ``sys.exit(code)`` gives."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1  # a message: Python prints it and exits 1


class _MPIJob(Job):
    def __init__(self, comm: Any) -> None:
        self.comm = comm

    def abort(self, message: str) -> NoReturn:
        abort_all(message, self.comm)

    def finish(self, timeout: float) -> None:
        _finish(self.comm, timeout)


def _job() -> Job | None:
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


def _failed(job: Job, status: int) -> None:
    """This rank ends with ``status``: abort the others unless every rank saw the same error."""
    if status != 0 and not collective_failure():
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
    >>> with xbp.parallel.mpi.collective_guard():  # doctest: +SKIP
    ...     x, y = load(path)
    ...     xbp.fit(net, x, y, strategy=xbp.parallel.mpi.strategy_from_environment())
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
            job.abort(f"failed: {one_line(exc)}")
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
    collective_failure(False)
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
    >>> from xbp.parallel.mpi import launcher
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

    Under ``torchrun``: :class:`xbp.parallel.torchdist.TorchDistributedStrategy` (gloo
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
    >>> strategy = xbp.parallel.mpi.strategy_from_environment(timeout=60)  # doctest: +SKIP
    >>> xbp.fit(net, x, y, strategy=strategy)  # doctest: +SKIP
    """
    check_timeout(timeout)
    if launcher() == "torchrun":
        from .torchdist import TorchDistributedStrategy

        return TorchDistributedStrategy(timeout=timeout, **options)
    return MPIStrategy(world(), timeout=timeout, **options)
