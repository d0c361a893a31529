"""Dropout: identical masks on every backend, the right rate, exact gradients, exact resume.

The masks come from the counter-based hash in ``xbp.nn.rng``; these tests check
it against a plain-Python evaluation of the same formula, check the rate and
the independence of the masks statistically, check backprop through a fixed
mask by finite differences, and train the same seeded run on every backend,
compiled and eager, stopped and resumed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import backend_or_skip, required_backends

import xbp
from xbp import optim
from xbp.nn.rng import keep_mask

M = 0xFFFFFFFF


def py_hash(x: int) -> int:
    """lowbias32 in Python integers (no int64 tricks): the reference for xbp.rng."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M
    x ^= x >> 15
    x = (x * 0x846CA68B) & M
    return x ^ (x >> 16)


def py_mask(seed: int, step: int, row0: int, layer: int, rows: int, cols: int, p: float) -> Any:
    k = py_hash(seed & M)
    k = py_hash(k ^ (step & M))
    k = py_hash(k ^ (step >> 32))
    k = py_hash(k ^ layer)
    thr = round(p * 2.0**32)
    out = np.zeros((rows, cols))
    for r in range(rows):
        for c in range(cols):
            bits = py_hash(py_hash(((row0 + r) * cols + c) & M) ^ k)
            out[r, c] = 1.0 / (1.0 - p) if bits >= thr else 0.0
    return out


def key(be: xbp.backends.select.Backend, seed: int, step: int, row0: int = 0) -> Any:
    return be.asarray(np.array([seed, step, row0], dtype=np.int64))


def test_masks_equal_a_python_evaluation_on_every_backend(
    backend: xbp.backends.select.Backend,
) -> None:
    for seed, step, row0, layer, p in [(0, 0, 0, 0, 0.5), (12345, 2**33 + 7, 3, 2, 0.2)]:
        got = keep_mask(
            backend.xp,
            key(backend, seed, step, row0),
            layer,
            (5, 7),
            p,
            backend.dtype("float64"),
            backend.device,
        )
        want = py_mask(seed, step, row0, layer, 5, 7, p)
        assert np.array_equal(np.asarray(backend.to_host(got)), want)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_mask_rate_and_independence(p: float) -> None:
    be = xbp.backend("numpy")
    n = 400_000
    masks = [
        np.asarray(keep_mask(np, key(be, 7, step), layer, (400, 1000), p, np.float64, None))
        for step, layer in [(0, 0), (1, 0), (0, 1), (2**32, 0)]
    ]
    sigma = np.sqrt(p * (1 - p) / n)
    for m in masks:
        dropped = m == 0
        assert abs(dropped.mean() - p) < 5 * sigma
        assert np.all(m[~dropped] == 1.0 / (1.0 - p))
        # inverted dropout keeps the mean: E[m] = 1
        assert abs(m.mean() - 1.0) < 5 * sigma / (1 - p)
    # different steps, layers and the high word of the step give unrelated masks:
    # P(both dropped) = p^2 within tolerance, and no two masks are equal
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            both = np.mean((masks[i] == 0) & (masks[j] == 0))
            assert abs(both - p * p) < 6 * np.sqrt(p * p * (1 - p * p) / n)
    # neighbouring elements are unrelated too
    flat = (masks[0] == 0).ravel()
    assert abs(np.mean(flat[1:] & flat[:-1]) - p * p) < 6 * np.sqrt(p * p / n)


def test_backprop_through_a_fixed_mask_matches_finite_differences() -> None:
    rng = np.random.default_rng(0)
    net = xbp.Network(
        [
            xbp.nn.Dense(4, 6, "tanh", dropout=0.3),
            xbp.nn.Dense(6, 5, "sigmoid", dropout=0.5),
            xbp.nn.Dense(5, 3, "softmax", dropout=0.2),
        ],
        loss="cross_entropy",
        seed=1,
    )
    x, y = rng.normal(size=(9, 4)), np.eye(3)[rng.integers(0, 3, 9)]
    k = np.array([3, 11, 0], dtype=np.int64)
    cost, grads, _ = net.value_and_grad(x, y, dropout_key=k)
    # the mask acts: the cost differs from the undropped one, and from another step's
    assert float(cost) != float(net.value_and_grad(x, y, forward_only=True).loss)
    other = np.array([3, 12, 0], dtype=np.int64)
    assert float(cost) != float(net.value_and_grad(x, y, dropout_key=other).loss)

    # an independent forward pass with the masks applied by hand gives the same cost
    a = x
    for l, (p, d) in enumerate(zip(net.params, net.layers)):
        a = a * py_mask(3, 11, 0, l, a.shape[0], a.shape[1], d.dropout)
        z = a @ p["W"] + p["b"]
        a = {"tanh": np.tanh, "sigmoid": lambda v: 1 / (1 + np.exp(-v))}.get(
            d.activation, lambda v: np.exp(v) / np.exp(v).sum(1, keepdims=True)
        )(z)
    assert float(cost) == pytest.approx(-np.mean(np.sum(y * np.log(a), axis=1)), rel=1e-12)

    eps, worst = 1e-6, 0.0
    for l, p in enumerate(net.params):
        for name in p:
            num = np.zeros_like(p[name])
            for i in np.ndindex(p[name].shape):
                vals = []
                for sign in (1, -1):
                    moved = [{kk: v.copy() for kk, v in q.items()} for q in net.params]
                    moved[l][name][i] += sign * eps
                    vals.append(
                        float(
                            net.value_and_grad(
                                x, y, params=moved, dropout_key=k, forward_only=True
                            ).loss
                        )
                    )
                num[i] = (vals[0] - vals[1]) / (2 * eps)
            scale = np.abs(grads[l][name]).max()
            worst = max(worst, float(np.abs(num - grads[l][name]).max() / scale))
    assert worst < 1e-6


def _data(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(n, 5))
    return x, (x[:, 0] * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 0.5)


def _net(be: Any) -> xbp.Network:
    layers = [
        xbp.nn.Dense(5, 8, "tanh", dropout=0.2),
        xbp.nn.Dense(8, 6, "relu", dropout=0.5),
        xbp.nn.Dense(6, 3, "softmax"),
    ]
    return xbp.Network(layers, loss="cross_entropy", backend=be, seed=3)


def _train(be: Any, epochs: int = 3, **kw: Any) -> xbp.Network:
    x, y = _data()
    net = _net(be)
    args: dict[str, Any] = dict(epochs=epochs, batch_size=16, seed=4, progress=False)
    args.update(kw)
    xbp.fit(net, x, y, **args)
    return net


def _max_diff(a: xbp.Network, b: xbp.Network) -> float:
    return max(
        float(np.max(np.abs(p[k] - q[k])))
        for p, q in zip(a.host_params(), b.host_params())
        for k in p
    )


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_dropout_training_is_identical_on_every_backend(
    backend: xbp.backends.select.Backend, opt: str
) -> None:
    make = {"sgd": lambda: optim.sgd(0.3), "adam": lambda: optim.adam(0.02)}[opt]
    ref = _train("numpy", optimizer=make())
    got = _train(backend, optimizer=make())
    assert _max_diff(ref, got) <= 1e-10


def test_dropout_changes_training_but_never_evaluation() -> None:
    net = _train("numpy")
    x, y = _data()
    twin = xbp.Network(
        [xbp.nn.Dense(d.n_in, d.n_out, d.activation) for d in net.layers],
        loss="cross_entropy",
        seed=3,
    )
    twin.params = net.host_params()
    assert np.array_equal(net.predict(x), twin.predict(x))
    assert net.evaluate(x, y) == twin.evaluate(x, y)
    undropped = xbp.Network(
        [xbp.nn.Dense(d.n_in, d.n_out, d.activation) for d in net.layers],
        loss="cross_entropy",
        seed=3,
    )
    xbp.fit(undropped, x, y, epochs=3, batch_size=16, seed=4, progress=False)
    assert _max_diff(net, undropped) > 1e-3


@pytest.fixture
def jax_backend() -> xbp.backends.select.Backend:
    return backend_or_skip("jax-cpu", "jax", "cpu", required_backends())


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_compiled_dropout_equals_eager(jax_backend: xbp.backends.select.Backend, opt: str) -> None:
    make = {"sgd": lambda: optim.sgd(0.3), "adam": lambda: optim.adam(0.02)}[opt]
    eager = _train(jax_backend, compile=False, optimizer=make())
    compiled = _train(jax_backend, compile=True, optimizer=make())
    assert _max_diff(eager, compiled) <= 1e-12
    assert _max_diff(eager, _train("numpy", optimizer=make())) <= 1e-10


@pytest.mark.parametrize("compile", [False, True])
def test_resume_with_dropout_is_bit_identical(tmp_path: Any, compile: bool) -> None:
    be = backend_or_skip("jax-cpu", "jax", "cpu", required_backends()) if compile else "numpy"
    ck = tmp_path / "run.npz"
    full = _train(be, epochs=4, optimizer=optim.adam(0.02), compile=compile)
    _train(be, epochs=2, optimizer=optim.adam(0.02), checkpoint=ck, compile=compile)
    x, y = _data()
    resumed = _net(be)
    xbp.fit(
        resumed,
        x,
        y,
        epochs=4,
        batch_size=16,
        seed=4,
        progress=False,
        optimizer=optim.adam(0.02),
        resume=ck,
        compile=compile,
    )
    assert _max_diff(full, resumed) == 0.0


def test_resume_keeps_a_drawn_dropout_seed(tmp_path: Any) -> None:
    """seed=None draws the dropout seed; the checkpoint carries it."""
    ck = tmp_path / "run.npz"
    x, y = _data()
    first = _net("numpy")
    xbp.fit(first, x, y, epochs=2, batch_size=16, seed=None, shuffle=False, progress=False,
            checkpoint=ck)  # fmt: skip
    drawn = xbp.load_checkpoint(ck).training["dropout_seed"]
    assert isinstance(drawn, int)
    cont = _net("numpy")
    xbp.fit(cont, x, y, epochs=3, batch_size=16, seed=None, shuffle=False, progress=False,
            resume=ck)  # fmt: skip
    ref = _net("numpy")
    xbp.fit(ref, x, y, epochs=3, batch_size=16, seed=drawn, shuffle=False, progress=False)
    assert _max_diff(cont, ref) == 0.0


def test_dropout_is_saved_and_loaded(tmp_path: Any) -> None:
    net = _net("numpy")
    assert net.config()["dropout"] == [0.2, 0.5, 0.0]
    xbp.save(net, tmp_path / "m.npz")
    back = xbp.load(tmp_path / "m.npz")
    assert back.dropout == (0.2, 0.5, 0.0)
    assert xbp.Network.from_config(net.config()).dropout == net.dropout
    # without dropout the config is what it always was
    assert "dropout" not in xbp.mlp([2, 3, 1]).config()
