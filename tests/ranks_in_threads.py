"""Data parallelism between threads of one process: ranks without MPI, for tests.

:class:`Threads` makes the calls :class:`xbp.parallel.mpi.MPIStrategy` makes (its
row shares, its sums over ranks of the gradients, of host sums and of batch
statistics in the middle of a pass), with a barrier in place of the transport;
:func:`fit_in_threads` runs ``xbp.fit`` of each network on its own thread as one
rank of such a run.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

import xbp
from xbp.parallel.mpi import MPIStrategy
from xbp.parallel.strategy import Strategy


class Threads(Strategy):
    """One rank of a run whose ranks are threads sharing ``board``."""

    reduces = True

    def __init__(self, rank: int, size: int, board: dict[str, Any]) -> None:
        self.rank, self.size, self.board = rank, size, board

    share = MPIStrategy.share  # the real row shares, not a copy of them

    def _allsum(self, value: Any) -> Any:
        """The sum over ranks, in rank order (every rank gets the same bits)."""
        b = self.board
        b["slots"][self.rank] = value
        b["barrier"].wait()
        total = sum(b["slots"][1:], b["slots"][0])
        b["barrier"].wait()
        return total

    def reduce_grads(self, cost: Any, grads: Any) -> tuple[Any, Any]:
        names = [sorted(g) for g in grads]
        flat = np.concatenate(
            [np.ravel(g[k]) for g, ks in zip(grads, names) for k in ks] + [[cost]]
        )
        total = self._allsum(flat)
        out, i = [], 0
        for g, ks in zip(grads, names):
            layer = {}
            for k in ks:
                layer[k] = total[i : i + g[k].size].reshape(g[k].shape)
                i += g[k].size
            out.append(layer)
        return np.asarray(total[-1]), out

    def reduce_stats(self, values: Any) -> Any:
        return self._allsum(values)

    def reduce_sums(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(self._allsum(np.asarray(values, dtype=np.float64)))

    def any(self, flag: bool) -> bool:
        return bool(self._allsum(np.array([float(flag)]))[0])


def fit_in_threads(
    nets: list[xbp.Network], x: Any, y: Any, args: dict[str, Any], errors: bool = False
) -> list[Any]:
    """``xbp.fit`` of each network on its own thread, as ranks of one :class:`Threads` run:
    each rank's History. A rank that fails releases the others from the barrier; its
    error is raised (``errors=True``: returned in its rank's place instead)."""
    size = len(nets)
    board: dict[str, Any] = {"slots": [None] * size, "barrier": threading.Barrier(size)}
    results: list[Any] = [None] * size

    def work(rank: int) -> None:
        try:
            results[rank] = xbp.fit(nets[rank], x, y, strategy=Threads(rank, size, board), **args)
        except BaseException as exc:  # surfaced below
            results[rank] = exc
            board["barrier"].abort()

    threads = [threading.Thread(target=work, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a rank's thread hung"
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed and not errors:
        first = [e for e in failed if not isinstance(e, threading.BrokenBarrierError)]
        raise (first or failed)[0]
    return results
