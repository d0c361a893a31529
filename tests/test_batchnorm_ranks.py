"""BatchNorm under data parallelism: N ranks train what one process trains.

The ranks here are threads of one process (``ranks_in_threads.Threads``: the
row shares of ``MPIStrategy`` and sums over ranks in rank order);
``tests/test_distributed.py`` runs the same under ``mpiexec``. Training
normalises by the *global* batch's statistics, summed over ranks in the
forward and the backward pass; validation, evaluation and prediction use the
running statistics, which every rank updates from the global ones.

34 training rows (43, 9 held out) in batches of 11: the shares are uneven
(6 + 5, or 4 + 4 + 3) and the last batch has one row, so every rank but rank
0 has none of it and must neither divide by zero nor compute statistics of
its own.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from conftest import backend_or_skip, required_backends
from ranks_in_threads import Threads, fit_in_threads

import xbp
from xbp import optim
from xbp.parallel.mpi import MPIStrategy
from xbp.parallel.strategy import Strategy

TOL = 1e-12


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    # features of different scales and offsets: the statistics matter
    x = rng.normal(size=(43, 8)) * rng.uniform(0.5, 3.0, size=8) + rng.normal(size=8)
    y = (x[:, :3].sum(axis=1) > 0.5).astype(np.int64) + (x[:, 3] > 1)
    w = rng.integers(0, 4, size=43).astype(np.float64)
    return x, y, w


def _net(dropout: float = 0.0, be: Any = "numpy") -> xbp.Network:
    return xbp.mlp(
        [8, 16, 16, 3],
        activation="relu",
        loss="cross_entropy",
        norm="batch",
        dropout=dropout,
        backend=be,
        seed=3,
    )


def _options(**more: Any) -> dict[str, Any]:
    return dict(epochs=4, batch_size=11, optimizer=optim.momentum(0.05), seed=2,
                progress=False, validation_split=0.2, **more)  # fmt: skip


def _arrays(net: xbp.Network) -> dict[str, np.ndarray]:
    """Weights and running statistics on the host."""
    out = {f"p{i}{k}": v for i, p in enumerate(net.host_params()) for k, v in p.items()}
    out.update({f"s{i}{k}": v for i, s in enumerate(net.host_state()) for k, v in s.items()})
    return out


def _max_rel(a: xbp.Network, b: xbp.Network) -> float:
    """Largest difference of any weight or running statistic, relative to the array's
    largest value (absolute below 1: the bias before a BatchNorm has no gradient and
    holds rounding noise only)."""
    ours, theirs = _arrays(a), _arrays(b)
    assert any(k.endswith("var") for k in ours)  # the running statistics are compared
    return max(
        float(np.max(np.abs(ours[k] - theirs[k]))) / max(float(np.max(np.abs(ours[k]))), 1.0)
        for k in ours
    )


def test_the_shares_are_uneven_and_some_rank_has_no_rows() -> None:
    """What the tests below rely on: 34 training rows, batch 11."""
    for size in (2, 3):
        last = [MPIStrategy.share(Threads(r, size, {}), 33, 34) for r in range(size)]
        assert last[0] == (33, 34) and all(lo == hi for lo, hi in last[1:])
        full = [hi - lo for lo, hi in (MPIStrategy.share(Threads(r, size, {}), 0, 11)
                                       for r in range(size))]  # fmt: skip
        assert full == ([6, 5] if size == 2 else [4, 4, 3])


CASES = {
    "batchnorm": dict(dropout=0.0),
    "batchnorm-streamed": dict(dropout=0.0, stream=True),
    "batchnorm-dropout-weights": dict(dropout=0.3, weighted=True),
}


# a rank with no rows of a batch must not divide by zero: NumPy's warning is an error
@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("case", list(CASES))
def test_ranks_equal_one_process(case: str, size: int) -> None:
    spec = dict(CASES[case])
    x, y, w = _data()
    more: dict[str, Any] = {}
    if spec.get("weighted"):
        more["sample_weight"] = w
    if spec.get("stream"):
        more["stream"] = True
    dropout = float(spec["dropout"])
    single = _net(dropout)
    h_single = xbp.fit(single, x, y, **_options(**more))
    nets = [_net(dropout) for _ in range(size)]
    hists = fit_in_threads(nets, x, y, _options(**more))
    want_eval = xbp.evaluate(single, x, y)
    want_pred = np.asarray(single.predict(x))
    for rank, (net, hist) in enumerate(zip(nets, hists)):
        assert _max_rel(single, net) <= TOL, rank
        # every rank holds the same bits: the statistics and gradients are global
        assert all(np.array_equal(v, _arrays(nets[0])[k]) for k, v in _arrays(net).items())
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            # validation runs on the running statistics
            np.testing.assert_allclose(hist[key], h_single[key], rtol=TOL, err_msg=key)
        got = xbp.evaluate(net, x, y)
        assert got["loss"] == pytest.approx(want_eval["loss"], rel=TOL)
        assert got["accuracy"] == pytest.approx(want_eval["accuracy"], rel=TOL)
        np.testing.assert_allclose(np.asarray(net.predict(x)), want_pred, rtol=TOL, atol=TOL)


def test_batch_statistics_are_the_global_batchs() -> None:
    """One training forward pass through a BatchNorm layer: rank 0's 6 rows of an
    11-row batch, with rank 1's sums added by the reduction, give the full batch's
    output rows and running statistics; the 6 rows alone do not."""
    x, _, _ = _data()
    net = _net()
    ctx = net._context(True)
    a = np.asarray(net.layers[0].forward(ctx, net.params[0], net.state[0], x[:11], 0)[0])
    bn = net.layers[1]

    def forward(rows: slice, reduce: Any) -> tuple[Any, Any]:
        out, _, state = bn.forward(
            net._context(True, None, reduce), net.params[1], net.state[1], a[rows], 1
        )
        return out, state

    full, full_state = forward(slice(0, 11), None)
    mean = a.sum(axis=0) / 11
    theirs = iter([  # rank 1's rows 6..10: column sums, then squares about the global mean
        np.concatenate([a[6:].sum(axis=0), [5.0]]),
        np.concatenate([((a[6:] - mean) ** 2).sum(axis=0), [5.0]]),
    ])  # fmt: skip
    mine, mine_state = forward(slice(0, 6), lambda v: v + next(theirs))
    np.testing.assert_allclose(mine, full[:6], rtol=1e-13, atol=1e-13)
    for k in ("mean", "var"):
        np.testing.assert_allclose(mine_state[k], full_state[k], rtol=1e-13)
    alone, _ = forward(slice(0, 6), None)
    assert float(np.max(np.abs(alone - full[:6]))) > 1e-2


@pytest.mark.filterwarnings("error")  # 0 / 0 warns in NumPy
def test_no_rows_divide_by_zero() -> None:
    """A pass over no rows (a rank's empty share, here without the other ranks' sums)
    gives empty outputs and finite statistics and gradients, not 0 / 0."""
    net = _net()
    bn, p, s = net.layers[1], net.params[1], net.state[1]
    out, saved, state = bn.forward(net._context(True), p, s, np.zeros((0, 16)), 1)
    assert out.shape == (0, 16)
    assert all(np.isfinite(v).all() for v in state.values())
    d_in, grads = bn.backward(net._context(True), p, saved, np.zeros((0, 16)), True)
    assert d_in.shape == (0, 16)
    assert all(np.array_equal(g, np.zeros(16)) for g in grads.values())


def test_a_strategy_without_reduce_stats_is_refused() -> None:
    """A strategy that combines processes but cannot sum batch statistics would train
    each rank on its own statistics (another model): a one-line error instead."""

    class NoStats(Threads):
        reduce_stats = Strategy.reduce_stats

    x, y, _ = _data()
    board: dict[str, Any] = {"slots": [None], "barrier": threading.Barrier(1)}
    with pytest.raises(xbp.errors.XbpValueError, match="does not implement reduce_stats") as err:
        xbp.fit(_net(), x, y, strategy=NoStats(0, 1, board), **_options())
    assert "\n" not in str(err.value)


@pytest.fixture
def jax_backend() -> xbp.backends.select.Backend:
    return backend_or_skip("jax-cpu", "jax", "cpu", required_backends())


def test_compile_none_runs_eagerly_and_compile_true_says_why(
    jax_backend: xbp.backends.select.Backend,
) -> None:
    """Traced data-parallel steps cannot sum statistics in the middle of a pass:
    ``compile=None`` trains eagerly (equal to one compiled process), ``compile=True``
    raises the same one-line :class:`xbp.errors.CollectiveError` on every rank (no rank waits
    for another, none is aborted)."""
    x, y, _ = _data()
    single = _net(be=jax_backend)
    xbp.fit(single, x, y, **_options(compile=None))  # one process: compiled
    nets = [_net(be=jax_backend) for _ in range(2)]
    fit_in_threads(nets, x, y, _options(compile=None))
    for net in nets:
        assert _max_rel(single, net) <= TOL
    errors = fit_in_threads(
        [_net(be=jax_backend) for _ in range(2)], x, y, _options(compile=True), errors=True
    )
    for exc in errors:
        assert isinstance(exc, xbp.errors.CollectiveError), exc
        message = str(exc)
        assert message.startswith("compile=True: batch statistics over processes (BatchNorm")
        assert "compile=None" in message and "\n" not in message
