"""Sample and class weights in fit and evaluate.

Integer weights must train exactly like repeated rows; ``class_weight="balanced"``
must give scikit-learn's weights; validation, resume, compiled steps and
data-parallel shares must see the same weighted objective.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import backend_or_skip, required_backends
from ranks_in_threads import fit_in_threads

import xbp
from xbp import optim
from xbp.nn.weights import class_weights


def _data(n: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.8)
    w = rng.integers(0, 4, size=n).astype(np.float64)
    return x, y, w


def _net(be: Any = "numpy", dropout: float = 0.0, **kw: Any) -> xbp.Network:
    layers = [xbp.nn.Dense(4, 7, "tanh", dropout=dropout), xbp.nn.Dense(7, 3, "softmax")]
    return xbp.Network(layers, loss="cross_entropy", backend=be, seed=1, **kw)


def _max_diff(a: xbp.Network, b: xbp.Network) -> float:
    return max(
        float(np.max(np.abs(p[k] - q[k])))
        for p, q in zip(a.host_params(), b.host_params())
        for k in p
    )


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_integer_weights_equal_repeated_rows(
    backend: xbp.backends.select.Backend, opt: str
) -> None:
    x, y, w = _data()
    rep = np.repeat(np.arange(len(y)), w.astype(int))
    make = {"sgd": lambda: optim.sgd(0.5), "adam": lambda: optim.adam(0.05)}[opt]
    weighted, repeated = _net(backend), _net(backend)
    common: dict[str, Any] = dict(epochs=6, shuffle=False, progress=False)
    h1 = xbp.fit(weighted, x, y, sample_weight=w, batch_size=len(y), optimizer=make(), **common)
    h2 = xbp.fit(repeated, x[rep], y[rep], batch_size=len(rep), optimizer=make(), **common)
    assert _max_diff(weighted, repeated) <= 1e-12
    np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=1e-12)
    np.testing.assert_allclose(h1["accuracy"], h2["accuracy"], rtol=1e-12)
    assert xbp.evaluate(weighted, x, y, sample_weight=w) == pytest.approx(
        xbp.evaluate(weighted, x[rep], y[rep]), rel=1e-12
    )


def test_weighted_evaluation_by_hand() -> None:
    x, y, w = _data()
    net = _net()
    out = net.predict(x)
    per_row = -np.log(out[np.arange(len(y)), y])
    got = xbp.evaluate(net, x, y, sample_weight=w, batch_size=7)  # several batches
    assert got["loss"] == pytest.approx(np.sum(w * per_row) / w.sum(), rel=1e-12)
    hit = out.argmax(1) == y
    assert got["accuracy"] == pytest.approx(np.sum(w * hit) / w.sum(), rel=1e-12)
    assert got != xbp.evaluate(net, x, y)


def test_balanced_class_weights_match_scikit_learn() -> None:
    sk = pytest.importorskip("sklearn.utils.class_weight")
    rng = np.random.default_rng(3)
    for labels, k in [(rng.integers(0, 3, 50), 3), (np.array([0, 0, 0, 2, 2, 1, 0]), 3)]:
        want = sk.compute_class_weight("balanced", classes=np.unique(labels), y=labels)
        got = class_weights(labels, "balanced", k)
        np.testing.assert_allclose(got[np.unique(labels)], want, rtol=1e-15)
    # a class absent from the labels weighs 1 (no row uses it)
    assert class_weights(np.array([0, 0, 2]), "balanced", 3)[1] == 1.0


def test_class_weight_is_a_per_row_weight() -> None:
    """fit(class_weight=cw) trains exactly like fit(sample_weight=cw[y]); with both given
    the weights multiply."""
    x, y, w = _data()
    sk = pytest.importorskip("sklearn.utils.class_weight")
    cw = sk.compute_class_weight("balanced", classes=np.unique(y), y=y)
    common: dict[str, Any] = dict(epochs=3, batch_size=8, progress=False, seed=2)
    for class_weight, table in [("balanced", cw), ({0: 0.5, 2: 3.0}, np.array([0.5, 1.0, 3.0]))]:
        a, b = _net(), _net()
        ha = xbp.fit(a, x, y, class_weight=class_weight, sample_weight=w, **common)
        hb = xbp.fit(b, x, y, sample_weight=w * table[y], **common)
        assert _max_diff(a, b) == 0.0
        assert ha["loss"] == hb["loss"]
    assert _max_diff(_net(), a) > 1e-3  # it trained


def test_validation_weights() -> None:
    """validation_data's third element weights val_loss; validation_split keeps the held-out
    rows' own sample weights; class_weight never touches validation."""
    x, y, w = _data(40)
    xv, yv, wv = _data(12, seed=9)
    net = _net()
    hist = xbp.fit(net, x, y, validation_data=(xv, yv, wv), class_weight="balanced",
                   epochs=2, batch_size=8, progress=False)  # fmt: skip
    want = xbp.evaluate(net, xv, yv, sample_weight=wv)
    assert hist["val_loss"][-1] == pytest.approx(want["loss"], rel=1e-12)
    assert hist["val_accuracy"][-1] == pytest.approx(want["accuracy"], rel=1e-12)

    net = _net()
    hist = xbp.fit(net, x, y, sample_weight=w, validation_split=0.25, seed=3,
                   class_weight={0: 5.0}, epochs=2, batch_size=8, progress=False)  # fmt: skip
    held = np.sort(np.random.default_rng(4).permutation(40)[:10])  # the split's rule: seed + 1
    want = xbp.evaluate(net, x[held], y[held], sample_weight=w[held])
    assert hist["val_loss"][-1] == pytest.approx(want["loss"], rel=1e-12)


def test_zero_weight_batches_and_rows() -> None:
    """A batch whose rows all weigh 0 changes nothing (no 0/0); zero-weight rows are ignored."""
    x, y, _ = _data()
    w = np.ones(len(y))
    w[:10] = 0.0  # the first batch of 10 (no shuffling) weighs nothing
    a, b = _net(), _net()
    h = xbp.fit(a, x, y, sample_weight=w, epochs=2, batch_size=10, shuffle=False,
                progress=False)  # fmt: skip
    assert np.isfinite(h["loss"]).all()
    # the same as training on the other rows alone with their batches
    b_x, b_y = x[10:], y[10:]
    xbp.fit(b, b_x, b_y, epochs=2, batch_size=10, shuffle=False, progress=False)
    assert _max_diff(a, b) <= 1e-15


@pytest.fixture
def jax_backend() -> xbp.backends.select.Backend:
    return backend_or_skip("jax-cpu", "jax", "cpu", required_backends())


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_compiled_weighted_steps_equal_eager(
    jax_backend: xbp.backends.select.Backend, opt: str
) -> None:
    x, y, w = _data(37)  # a short last batch
    make = {"sgd": lambda: optim.sgd(0.5), "adam": lambda: optim.adam(0.05)}[opt]
    nets, hists = [], []
    for compile in (False, True):
        net = _net(jax_backend, dropout=0.3)
        hists.append(xbp.fit(net, x, y, sample_weight=w, class_weight="balanced", epochs=3,
                             batch_size=8, optimizer=make(), compile=compile,
                             progress=False))  # fmt: skip
        nets.append(net)
    assert _max_diff(*nets) <= 1e-12
    np.testing.assert_allclose(hists[0]["loss"], hists[1]["loss"], rtol=1e-12)
    np.testing.assert_allclose(hists[0]["accuracy"], hists[1]["accuracy"], rtol=1e-12)


def test_resume_with_weights_is_bit_identical(tmp_path: Any) -> None:
    x, y, w = _data()
    ck = tmp_path / "run.npz"
    args: dict[str, Any] = dict(sample_weight=w, class_weight="balanced", batch_size=8, seed=2,
                                optimizer=optim.adam(0.05), progress=False)  # fmt: skip
    full = _net(dropout=0.3)
    xbp.fit(full, x, y, epochs=4, **args)
    xbp.fit(_net(dropout=0.3), x, y, epochs=2, checkpoint=ck, **args)
    resumed = _net(dropout=0.3)
    xbp.fit(resumed, x, y, epochs=4, resume=ck, **args)
    assert _max_diff(full, resumed) == 0.0


def test_streamed_shares_draw_the_masks_of_their_rows() -> None:
    """Streamed data (read a batch at a time from the host) shared between 2 ranks: each
    rank drops its own rows' inputs as one process does, so the weights are the same."""
    x, y, _ = _data(37)
    args: dict[str, Any] = dict(epochs=3, batch_size=8, seed=2, optimizer=optim.sgd(0.3),
                                progress=False)  # fmt: skip
    single = _net(dropout=0.4)
    xbp.fit(single, x, y, **args)
    nets = [_net(dropout=0.4) for _ in range(2)]
    fit_in_threads(nets, x, y, {**args, "stream": True})
    for net in nets:
        assert _max_diff(single, net) <= 1e-12


@pytest.mark.parametrize("size,compiled", [(2, False), (3, False), (2, True)])
def test_shares_use_the_global_weight_sum_and_the_global_masks(size: int, compiled: bool) -> None:
    """Eager shares on NumPy; compiled halves of each step (JAX) with the exchange between."""
    be: Any = "numpy"
    if compiled:
        be = backend_or_skip("jax-cpu", "jax", "cpu", required_backends())
    x, y, w = _data(37)
    args: dict[str, Any] = dict(sample_weight=w, epochs=3, batch_size=8, seed=2,
                                optimizer=optim.momentum(0.2), progress=False,
                                validation_split=0.2, compile=compiled)  # fmt: skip
    single = _net(dropout=0.4)
    h_single = xbp.fit(single, x, y, **{**args, "compile": False})
    nets = [_net(be, dropout=0.4) for _ in range(size)]
    hists = fit_in_threads(nets, x, y, args)
    for net, hist in zip(nets, hists):
        assert _max_diff(single, net) <= 1e-12
        np.testing.assert_allclose(hist["loss"], h_single["loss"], rtol=1e-12)
        np.testing.assert_allclose(hist["val_loss"], h_single["val_loss"], rtol=1e-12)


def test_huge_weights_give_the_unit_weight_results() -> None:
    """The weighted mean sum(w C) / sum(w) does not depend on the weights' scale: 1e308
    (finite, but its sum overflows) gives what weights of 1 give, in evaluate and fit."""
    x, y, _ = _data()
    ones, huge = np.ones(len(y)), np.full(len(y), 1e308)
    net = _net()
    want = xbp.evaluate(net, x, y, sample_weight=ones)
    got = xbp.evaluate(net, x, y, sample_weight=huge)
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-12)
    assert got["accuracy"] == pytest.approx(want["accuracy"], rel=1e-12)
    a, b = _net(), _net()
    kw: dict[str, Any] = {"epochs": 2, "batch_size": 8, "progress": False, "seed": 0}
    xbp.fit(a, x, y, sample_weight=ones, **kw)
    xbp.fit(b, x, y, sample_weight=huge, **kw)
    assert _max_diff(a, b) < 1e-12
