"""How a training run is spread over processes: the loop's only view of parallelism.

The training loop never asks for ranks or talks to a transport. It holds a
:class:`Strategy` and calls it to learn which rows of a global batch this
process computes, to combine gradients and sums across processes, to take
collective decisions (stop training) and to know who writes files and logs.
:class:`LocalStrategy` is one process; :class:`xbp.parallel.mpi.MPIStrategy`
(MPI) and :class:`xbp.parallel.torchdist.TorchDistributedStrategy` (torch.distributed:
gloo, NCCL) implement the same calls, both through
:class:`xbp.parallel.mpi.CollectiveStrategy`, where every collective has a
deadline (``timeout=``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import XbpValueError

__all__ = ["Strategy", "LocalStrategy"]

Params = list[dict[str, Any]]


class Strategy:
    """The calls the training loop makes; the default is one process.

    Attributes
    ----------
    rank, size : int
        This process's index and the number of processes.
    reduces : bool
        True when gradients must be combined across processes each step.

    Examples
    --------
    >>> import xbp
    >>> strategy = xbp.parallel.strategy_from_environment()  # no launcher: one process
    >>> isinstance(strategy, xbp.parallel.Strategy), strategy.size
    (True, 1)
    """

    rank: int = 0
    size: int = 1
    reduces: bool = False
    #: ``grad_ready(l, {"W", "b"})``, called by the backward pass as each layer's
    #: gradients are produced (see Network.value_and_grad), or None
    grad_ready: Any = None

    @property
    def is_root(self) -> bool:
        """Whether this process writes checkpoints, logs and progress."""
        return self.rank == 0

    def share(self, start: int, stop: int) -> tuple[int, int]:
        """The rows ``[lo, hi)`` of the global batch ``[start, stop)`` this process computes.

        Every process divides by the *global* batch size, so the shares'
        gradients add up to exactly the full-batch gradient.
        """
        return start, stop

    def reduce_grads(self, cost: Any, grads: Params) -> tuple[Any, Params]:
        """Sum the cost and every gradient over processes (one process: unchanged).

        Called after the backward pass; a strategy that started exchanging
        layers in ``grad_ready`` waits for those exchanges here."""
        return cost, grads

    def reduce_stats(self, values: Any) -> Any:
        """Sum a device array over processes during a forward or backward pass (batch
        statistics of the global batch, e.g. BatchNorm's; one process: unchanged).

        Called on every process at the same point of the same layer, with the same
        shape (a process with no rows of the batch sends zeros). A strategy that
        ``reduces`` must implement it: local statistics would train another model."""
        if self.reduces:
            raise XbpValueError(
                f"{type(self).__name__} combines processes (reduces=True) but does not "
                "implement reduce_stats; BatchNorm needs its batch statistics summed over "
                "processes: implement reduce_stats(values) -> their sum over processes"
            )
        return values

    def reduce_sums(self, values: np.ndarray) -> np.ndarray:
        """Sum host values over processes (one process: unchanged)."""
        return values

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on any (a collective OR)."""
        return bool(flag)

    def setup(self, net: Any, config: dict[str, Any]) -> None:
        """Before the first step: compare every process's run configuration and
        make every process start from the same weights (one process: nothing to do)."""

    def abort(self, exc: BaseException) -> None:
        """A failure on this process: end the others too (one process: nothing to do)."""


class LocalStrategy(Strategy):
    """One process: the training loop's default.

    Examples
    --------
    >>> import xbp
    >>> local = xbp.parallel.LocalStrategy()
    >>> local.rank, local.size, local.reduces, local.is_root
    (0, 1, False, True)
    """

    def __repr__(self) -> str:
        return "LocalStrategy()"
