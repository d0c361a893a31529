"""What every data-parallel engine shares: the exchange, the handshake, the deadlines.

:class:`CollectiveStrategy` is the engine-neutral part of
:class:`xbp.parallel.mpi.MPIStrategy` (mpi4py) and
:class:`xbp.parallel.torchdist.TorchDistributedStrategy` (torch.distributed): an
engine only says how to start a collective, test whether it finished, ask
which ranks still respond and end the job. Every wait has a deadline.
"""

from __future__ import annotations

import json
import time
import traceback
from typing import Any, NoReturn

import numpy as np

from ..errors import CollectiveError, XbpValueError
from ..nn.network import Network, Params
from .strategy import Strategy

__all__ = [
    "BUCKET_BYTES",
    "DEFAULT_TIMEOUT",
    "CollectiveStrategy",
    "Job",
    "RanksDisagreeError",
    "check_timeout",
    "collective_failure",
    "one_line",
]

#: a bucket is sent once it holds this many bytes of gradients
BUCKET_BYTES = 4 << 20
#: NumPy gradients at least this large are summed in place (smaller ones are staged together)
IN_PLACE_BYTES = 1 << 14
#: how long a rank waits in one collective (seconds) before it ends the job: the default
#: of ``timeout=`` (MPIStrategy, TorchDistributedStrategy) and ``xbp train --timeout``
DEFAULT_TIMEOUT = 300.0
#: after a timeout, how long a rank waits for the others to answer a liveness probe
PROBE_GRACE = 2.0
#: how often a rank waiting in a collective answers the probes of ranks that gave up
PROBE_EVERY = 0.05
#: fields that may differ between ranks: every rank starts from rank 0's broadcast weights
_MAY_DIFFER = ("architecture.seed", "architecture.init")

# set when this rank raised a CollectiveError (RanksDisagreeError, ...): every rank did,
# none needs aborting
_COLLECTIVE_FAILURE = False


def collective_failure(value: bool | None = None) -> bool:
    """Whether this rank raised an error every rank raises alike (a
    :class:`~xbp.errors.CollectiveError`): then no rank needs aborting. ``value``
    sets it first."""
    global _COLLECTIVE_FAILURE
    if value is not None:
        _COLLECTIVE_FAILURE = bool(value)
    return _COLLECTIVE_FAILURE


def one_line(exc: BaseException) -> str:
    """``exc`` as Python prints its last line, on one line."""
    return " ".join("".join(traceback.format_exception_only(type(exc), exc)).split())


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
    """``timeout`` as positive finite seconds, or a one-line error naming ``argument``.

    Examples
    --------
    >>> from xbp.parallel.collective import check_timeout
    >>> check_timeout(60)
    60.0
    """
    ok = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
    if not ok or not (0 < float(timeout) < float("inf")):
        raise XbpValueError(
            f"{argument}={timeout!r} must be a positive number of seconds (how long a rank "
            f"waits in a collective for the others), e.g. {argument}={DEFAULT_TIMEOUT:g}"
        )
    return float(timeout)


class CollectiveStrategy(Strategy):
    """Data parallelism over a transport of collectives (the engine-neutral part).

    :class:`MPIStrategy` and :class:`xbp.parallel.torchdist.TorchDistributedStrategy`
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

    Examples
    --------
    >>> from xbp.parallel.collective import CollectiveStrategy
    >>> from xbp.parallel.mpi import MPIStrategy
    >>> issubclass(MPIStrategy, CollectiveStrategy)
    True
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
        collective_failure(False)
        mine = dict(config)
        mine["backend"] = net.backend.name
        text = json.dumps(mine, sort_keys=True, default=str)
        configs = self._allgather_text(text, "the configuration handshake")
        if len(set(configs)) > 1:
            message = _disagreement([json.loads(c) for c in configs])
            if message is not None:
                collective_failure(True)
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
        if isinstance(exc, CollectiveError):
            collective_failure(True)
            return  # every rank raises it: each exits on its own, with the message
        if self.size > 1:
            self._end_job(f"failed: {one_line(exc)}")


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


class Job:
    """The ranks of this job, as the guards see them: end them all, or wait for them all."""

    def abort(self, message: str) -> NoReturn:
        raise NotImplementedError

    def finish(self, timeout: float) -> None:
        raise NotImplementedError
