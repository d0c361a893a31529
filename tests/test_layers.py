"""Layers as parts (xbp/nn/layers.py): every layer's gradients, state, files and compiled steps.

Each built-in layer (Dropout, LayerNorm, BatchNorm, Standardize) and a layer a
user registers is held to what Dense layers are held to (docs/math.md, "What
the tests hold the code to"): central finite differences in float64, NumPy's
numbers on every backend, compiled steps equal to eager ones, exact resume,
files that load back by name, one-line errors for bad input. BatchNorm's two
modes and Standardize's adaptation are checked against NumPy computations
written out here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pytest
from conftest import backend_or_skip, required_backends
from ranks_in_threads import fit_in_threads
from test_compile import fake_capture  # noqa: F401  (a fixture: torch-cpu posing as a capture)
from test_dropout import py_mask

import xbp
from xbp import optim
from xbp.errors import XbpError, XbpFileError, XbpTypeError, XbpValueError
from xbp.nn.layers import Context, unregister_layer

NP = xbp.backend("numpy")


# -- helpers ----------------------------------------------------------------------------------
def _data(n: int = 40, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features of very different offsets and spreads (Standardize has work to do) and
    three classes."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k)) * np.linspace(0.2, 5.0, k) + np.linspace(-3.0, 4.0, k)
    z = (x - x.mean(0)) / x.std(0)
    y = (z[:, 0] + z[:, 1] * z[:, -1] > 0).astype(np.int64) + (z[:, -1] > 1)
    return x, y


# a user's own layer: a learnable per-feature scale, written against the array API
@dataclasses.dataclass(frozen=True)
class FeatureScale(xbp.nn.Layer):
    """``y = a * s`` with a learnable ``s`` per feature."""

    kind: ClassVar[str] = "test_feature_scale"
    n: int

    @property
    def n_in(self) -> int:  # type: ignore[override]
        return self.n

    @property
    def n_out(self) -> int:  # type: ignore[override]
        return self.n

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"s": (self.n,)}

    def init_params(self, rng: np.random.Generator, init: str) -> dict[str, np.ndarray]:
        return {"s": 1.0 + 0.25 * rng.normal(size=self.n)}

    def forward(self, ctx: Context, p: Any, s: Any, a: Any, l: int) -> tuple[Any, Any, Any]:
        return a * p["s"], a, None

    def backward(
        self, ctx: Context, p: Any, saved: Any, d: Any, need_input: bool
    ) -> tuple[Any, dict[str, Any]]:
        grads = {"s": ctx.ones(d.shape[0]) @ (d * saved)}
        return (d * p["s"] if need_input else None), grads


def _every_kind(
    be: Any = "numpy", dtype: str = "float64", seed: int = 1, user: bool = False
) -> xbp.Network:
    """A network with every built-in layer kind, Standardize both first and in the middle,
    a Dropout layer and a Dense layer's own input dropout; with ``user``, a layer of the
    user's own (:class:`FeatureScale`, unregistered: a network takes any Layer) too.

    The JAX tests share these shapes and :data:`TRAIN` (JAX compiles every operation
    for every shape it meets, about 0.1 s each on a small machine)."""
    layers = [
        xbp.nn.Standardize(3),
        xbp.nn.Dense(3, 6, "tanh"),
        xbp.nn.LayerNorm(6),
        *([FeatureScale(6)] if user else []),
        xbp.nn.Dropout(0.3),
        xbp.nn.Dense(6, 5, "relu", dropout=0.2),
        xbp.nn.BatchNorm(5, momentum=0.8),
        xbp.nn.Standardize(5),
        xbp.nn.Dense(5, 3, "softmax"),
    ]
    return xbp.Network(layers, loss="cross_entropy", backend=be, dtype=dtype, seed=seed)


def _bn(net: xbp.Network) -> int:
    """The position of the network's (first) BatchNorm layer."""
    return next(l for l, d in enumerate(net.layers) if isinstance(d, xbp.nn.BatchNorm))


#: 40 rows, 8 of them for validation: four training batches of 8 rows; the gradients and
#: the adaptation of the JAX tests take 8 rows too (the captured steps add a short batch)
N_ROWS = 40
TRAIN: dict[str, Any] = dict(epochs=3, batch_size=8, seed=5, progress=False,
                             validation_split=0.2)  # fmt: skip


def _host(net: xbp.Network) -> list[dict[str, np.ndarray]]:
    return net.host_params() + net.host_state()


def _max_diff(a: xbp.Network, b: xbp.Network) -> float:
    """Largest absolute difference over weights and layer state."""
    return max(
        (float(np.max(np.abs(p[k] - q[k]))) for p, q in zip(_host(a), _host(b)) for k in p),
        default=0.0,
    )


def _max_rel(a: xbp.Network, b: xbp.Network) -> float:
    """Largest difference of any weight or state array relative to its largest entry."""
    err = 0.0
    for p, q in zip(_host(a), _host(b)):
        for k in p:
            scale = float(np.max(np.abs(p[k]))) or 1.0
            err = max(err, float(np.max(np.abs(p[k] - q[k]))) / scale)
    return err


def _key(be: xbp.backends.select.Backend, seed: int = 3, step: int = 11, row0: int = 0) -> Any:
    return be.asarray(np.array([seed, step, row0], dtype=np.int64))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _cross_entropy(out: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(out[np.arange(len(labels)), labels])))


def _fd_worst(
    net: xbp.Network, x: np.ndarray, y: np.ndarray, key: Any = None, training: bool = True
) -> dict[str, float]:
    """Backprop against central differences of every weight, in training mode (batch
    statistics; the fixed dropout ``key`` when given) or inference mode (running
    statistics): ``{"layer{l}.{name}": error}`` relative to the largest gradient entry."""
    xd, yd = net.check_inputs(x), net.check_targets(y, x.shape[0])
    _, grads, _ = net.value_and_grad(xd, yd, dropout_key=key, training=training)
    host = net.host_params()
    g_bp = [{k: np.asarray(net.backend.to_host(v)) for k, v in g.items()} for g in grads]
    eps = 1e-6
    diffs, scale = {}, 0.0
    for l, p in enumerate(host):
        for name, value in p.items():
            num = np.zeros_like(value)
            for i in np.ndindex(value.shape):
                costs = []
                for sign in (1.0, -1.0):
                    moved = [dict(q) for q in net.params]
                    t = value.copy()
                    t[i] += sign * eps
                    moved[l][name] = net.backend.asarray(t, net.dtype)
                    cost = net.value_and_grad(
                        xd, yd, params=moved, dropout_key=key, forward_only=True, training=training
                    ).loss
                    costs.append(float(cost))
                num[i] = (costs[0] - costs[1]) / (2 * eps)
            scale = max(scale, float(np.max(np.abs(g_bp[l][name]))))
            diffs[f"layer{l}.{name}"] = float(np.max(np.abs(num - g_bp[l][name])))
    return {k: v / scale for k, v in diffs.items()}


@pytest.fixture
def scale_layer() -> Any:
    xbp.register_layer(FeatureScale)
    yield FeatureScale
    unregister_layer(FeatureScale.kind)


def _user_net(be: Any = "numpy", seed: int = 2) -> xbp.Network:
    layers = [
        xbp.nn.Standardize(3),
        xbp.nn.Dense(3, 6, "tanh"),
        FeatureScale(6),
        xbp.nn.BatchNorm(6, momentum=0.9),
        xbp.nn.LayerNorm(6),
        xbp.nn.Dropout(0.25),
        xbp.nn.Dense(6, 3, "softmax"),
    ]
    return xbp.Network(layers, loss="cross_entropy", backend=be, seed=seed)


# -- 1. finite differences ---------------------------------------------------------------------
CHAINS: dict[str, Callable[[], list[xbp.nn.Layer]]] = {
    "layer_norm": lambda: [
        xbp.nn.Dense(3, 5, "tanh"), xbp.nn.LayerNorm(5), xbp.nn.Dense(5, 3, "softmax"),
    ],
    "batch_norm": lambda: [
        xbp.nn.Dense(3, 5, "sigmoid"), xbp.nn.BatchNorm(5, eps=1e-4), xbp.nn.Dense(5, 3, "softmax"),
    ],
    "standardize": lambda: [
        xbp.nn.Standardize(3), xbp.nn.Dense(3, 4, "tanh"), xbp.nn.Standardize(4),
        xbp.nn.Dense(4, 3, "softmax"),
    ],
    "mixed": lambda: [
        xbp.nn.Standardize(3), xbp.nn.Dense(3, 5, "softplus"), xbp.nn.LayerNorm(5),
        xbp.nn.BatchNorm(5),
        xbp.nn.Dense(5, 4, "tanh"), xbp.nn.BatchNorm(4), xbp.nn.LayerNorm(4), xbp.nn.Standardize(4),
        xbp.nn.Dense(4, 3, "softmax"),
    ],
}  # fmt: skip


def _perturb(net: xbp.Network, seed: int = 5) -> None:
    """Move every parameter away from its initial value (scales of 1, shifts of 0), so
    that every term of every gradient counts."""
    rng = np.random.default_rng(seed)
    net.params = [
        {k: v + 0.3 * rng.normal(size=v.shape) for k, v in p.items()} for p in net.host_params()
    ]


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_every_parameter_matches_finite_differences(chain: str) -> None:
    x, y = _data(9)
    net = xbp.Network(CHAINS[chain](), loss="cross_entropy", seed=4)
    net.adapt(x)  # Standardize: adapted (a mean and spread far from 0 and 1)
    _perturb(net)
    errors = xbp.tools.gradcheck(net, x, y, max_checks=None, tol=1e-6)
    # every parameter of every layer was checked, and through each normalisation to the
    # Dense layers before it
    assert set(errors) == {f"layer{l}.{k}" for l, p in enumerate(net.params) for k in p}
    assert max(errors.values()) <= 1e-6, errors
    assert _fd_worst(net, x, y) == pytest.approx(errors, abs=1e-9)


def test_dropout_layers_with_a_fixed_key_match_finite_differences() -> None:
    x, y = _data(8)
    layers = [
        xbp.nn.Dense(3, 6, "tanh"),
        xbp.nn.Dropout(0.4),
        xbp.nn.LayerNorm(6),
        xbp.nn.Dense(6, 5, "sigmoid", dropout=0.3),
        xbp.nn.BatchNorm(5),
        xbp.nn.Dropout(0.5),
        xbp.nn.Dense(5, 3, "softmax"),
    ]
    net = xbp.Network(layers, loss="cross_entropy", seed=6)
    k, onehot = _key(NP), np.eye(3)[y]
    # the masks act: another step's key, or none, gives another cost
    cost = float(net.value_and_grad(x, onehot, dropout_key=k).loss)
    assert cost != float(net.value_and_grad(x, onehot).loss)
    assert cost != float(net.value_and_grad(x, onehot, dropout_key=_key(NP, step=12)).loss)
    errors = _fd_worst(net, x, y, key=k)
    assert max(errors.values()) <= 1e-6, errors


def test_inference_mode_gradients_match_finite_differences() -> None:
    """``value_and_grad(training=False)``: the gradients of the inference cost (BatchNorm
    on its running statistics, constants of the pass; no dropout)."""
    x, y = _data(8)
    net = xbp.Network(CHAINS["mixed"](), loss="cross_entropy", seed=4)
    net.adapt(x)
    net.state = [
        {"mean": np.full(s["mean"].shape, 0.2), "var": np.full(s["var"].shape, 1.7)}
        if isinstance(d, xbp.nn.BatchNorm) else s
        for d, s in zip(net.layers, net.host_state())
    ]  # fmt: skip
    _perturb(net)
    errors = _fd_worst(net, x, y, training=False)
    assert max(errors.values()) <= 1e-6, errors
    # and they are not the training mode's
    onehot = np.eye(3)[y]
    g_inf = net.value_and_grad(x, onehot, training=False).grads
    g_train = net.value_and_grad(x, onehot).grads
    assert not np.allclose(g_inf[1]["W"], g_train[1]["W"])


def _ctx(training: bool = True, key: Any = None) -> Context:
    return Context(
        xp=NP.xp,
        dtype=np.float64,
        device=None,
        training=training,
        key=key,
        ones=lambda n: np.ones(n),
    )


def _layer_cases() -> dict[str, tuple[xbp.nn.Layer, dict[str, Any], dict[str, Any], Context]]:
    rng = np.random.default_rng(8)
    g, b = 1.0 + 0.3 * rng.normal(size=4), 0.3 * rng.normal(size=4)
    running = {"mean": rng.normal(size=4), "var": 0.5 + rng.random(4)}
    adapted = {"mean": rng.normal(size=4), "std": 0.5 + rng.random(4), "count": np.array([9.0])}
    return {
        "layer_norm": (xbp.nn.LayerNorm(4), {"gamma": g, "beta": b}, {}, _ctx()),
        "batch_norm-training": (xbp.nn.BatchNorm(4), {"gamma": g, "beta": b}, running, _ctx()),
        "batch_norm-inference": (
            xbp.nn.BatchNorm(4), {"gamma": g, "beta": b}, running, _ctx(training=False),
        ),
        "standardize": (xbp.nn.Standardize(4), {}, adapted, _ctx()),
        "dropout": (xbp.nn.Dropout(0.5, n=4), {}, {}, _ctx(key=_key(NP))),
        "dense-dropout": (
            xbp.nn.Dense(4, 4, "tanh", dropout=0.3),
            {"W": rng.normal(size=(4, 4)), "b": rng.normal(size=4)},
            {},
            _ctx(key=_key(NP)),
        ),
        "user": (FeatureScale(4), {"s": 1.0 + rng.normal(size=4)}, {}, _ctx()),
    }  # fmt: skip


@pytest.mark.parametrize("case", sorted(_layer_cases()))
def test_each_layer_passes_the_right_gradient_to_the_layer_before(case: str) -> None:
    """A layer in the middle of a chain: its backward rule's dC/d(input) (what the
    layer before it receives) and its parameter gradients against central differences
    of ``C = sum(G * layer(A))`` for a random upstream ``G = dC/d(output)``."""
    layer, p, s, ctx = _layer_cases()[case]
    rng = np.random.default_rng(9)
    a = rng.normal(size=(6, 4)) * 2.0 + 0.5
    out, saved, _ = layer.forward(ctx, p, s, a.copy(), 2)
    upstream = rng.normal(size=out.shape)
    d_in, grads = layer.backward(ctx, p, saved, upstream.copy(), True)

    def cost(a_: np.ndarray, p_: dict[str, Any]) -> float:
        return float(np.sum(upstream * layer.forward(ctx, p_, s, a_, 2)[0]))

    eps = 1e-6
    num = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        hi, lo = a.copy(), a.copy()
        hi[i] += eps
        lo[i] -= eps
        num[i] = (cost(hi, p) - cost(lo, p)) / (2 * eps)
    scale = float(np.max(np.abs(num)))
    assert scale > 0.1
    assert float(np.max(np.abs(np.asarray(d_in) - num))) <= 1e-6 * scale
    assert set(grads) == set(p)
    for name, value in p.items():
        num_p = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            hi, lo = dict(p), dict(p)
            hi[name], lo[name] = value.copy(), value.copy()
            hi[name][i] += eps
            lo[name][i] -= eps
            num_p[i] = (cost(a, hi) - cost(a, lo)) / (2 * eps)
        err = float(np.max(np.abs(np.asarray(grads[name]) - num_p)))
        assert err <= 1e-6 * max(scale, float(np.max(np.abs(num_p)))), name
    # the first layer computes no dC/d(input): its input is the data
    assert (
        layer.backward(ctx, p, layer.forward(ctx, p, s, a.copy(), 2)[1], upstream, False)[0] is None
    )


# -- 2. NumPy's numbers on every backend --------------------------------------------------------
@pytest.mark.parametrize("dtype,rel", [("float64", 1e-12), ("float32", 1e-5)])
def test_gradients_equal_numpy_on_every_backend(
    backend: xbp.backends.select.Backend, dtype: str, rel: float
) -> None:
    x, y = _data(N_ROWS)
    x, y = x[:8], y[:8]

    def run(be: Any) -> tuple[float, list[dict[str, np.ndarray]], list[Any], xbp.Network]:
        net = _every_kind(be, dtype, user=True)
        net.adapt(x)  # both Standardize layers, the second one through the layers before it
        xd, yd = net.check_inputs(x), net.check_targets(y, 8)
        new: list[Any] = [None] * len(net.layers)
        cost, grads, _ = net.value_and_grad(xd, yd, dropout_key=_key(net.backend), state_out=new)
        to_host = net.backend.to_host
        host = [{k: np.asarray(to_host(v), np.float64) for k, v in g.items()} for g in grads]
        st = [
            None if n is None else {k: np.asarray(to_host(v), np.float64) for k, v in n.items()}
            for n in new
        ]
        return float(cost), host, st, net

    c0, g0, s0, ref = run("numpy")
    c1, g1, s1, net = run(backend)
    for a, b in zip(ref.host_state(), net.host_state()):  # the adapted statistics
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=rel, atol=0)
    scale = max(float(np.max(np.abs(v))) for g in g0 for v in g.values())
    assert [set(g) for g in g1] == [set(g) for g in g0]
    err = max(float(np.max(np.abs(g1[l][k] - g0[l][k]))) for l in range(len(g0)) for k in g0[l])
    assert err <= rel * scale
    assert c1 == pytest.approx(c0, rel=rel)
    bn = _bn(net)
    assert [n is None for n in s1] == [n is None for n in s0] == [l != bn for l in range(len(s0))]
    for k in ("mean", "var"):  # the running statistics of the training step
        np.testing.assert_allclose(s1[bn][k], s0[bn][k], rtol=10 * rel, atol=rel)


def test_three_epochs_equal_numpy_on_every_backend(backend: xbp.backends.select.Backend) -> None:
    """Weights and layer state after 3 epochs (compiled where the backend compiles: the
    default), with validation (inference mode) after each epoch."""
    x, y = _data(N_ROWS)
    ref, got = _every_kind("numpy", user=True), _every_kind(backend, user=True)
    ref.adapt(x[:8])
    got.adapt(x[:8])
    h_ref = xbp.fit(ref, x, y, optimizer=optim.adam(0.02), **TRAIN)
    h_got = xbp.fit(got, x, y, optimizer=optim.adam(0.02), **TRAIN)
    assert _max_diff(ref, got) <= 1e-10
    np.testing.assert_allclose(h_got["val_loss"], h_ref["val_loss"], rtol=1e-10)


# -- 3. BatchNorm ------------------------------------------------------------------------------
def test_batch_norm_trains_on_batch_statistics_and_infers_on_running_ones() -> None:
    x, y = _data(10)
    m, eps = 0.9, 1e-3
    net = xbp.Network(
        [
            xbp.nn.Dense(3, 4, "tanh"),
            xbp.nn.BatchNorm(4, momentum=m, eps=eps),
            xbp.nn.Dense(4, 3, "softmax"),
        ],
        loss="cross_entropy",
        seed=3,
    )
    rng = np.random.default_rng(1)
    p = net.host_params()
    p[1] = {"gamma": 1.0 + 0.5 * rng.normal(size=4), "beta": 0.5 * rng.normal(size=4)}
    net.params = p
    # running statistics far from this batch's (they differ, so the modes differ)
    running = {"mean": np.array([0.4, -0.3, 0.2, 0.1]), "var": np.array([2.0, 0.5, 1.5, 3.0])}
    net.state = [{}, running, {}]

    h = np.tanh(x @ p[0]["W"] + p[0]["b"])
    mu, var = h.mean(axis=0), h.var(axis=0)  # biased, over the batch's rows

    def head(hn: np.ndarray) -> np.ndarray:
        return _softmax((p[1]["gamma"] * hn + p[1]["beta"]) @ p[2]["W"] + p[2]["b"])

    train_out = head((h - mu) / np.sqrt(var + eps))
    infer_out = head((h - running["mean"]) / np.sqrt(running["var"] + eps))
    assert np.max(np.abs(train_out - infer_out)) > 0.05

    new: list[Any] = [None] * 3
    cost, _, out = net.value_and_grad(x, np.eye(3)[y], state_out=new)  # a training pass
    np.testing.assert_allclose(out, train_out, rtol=1e-12, atol=1e-14)
    assert float(cost) == pytest.approx(_cross_entropy(train_out, y), rel=1e-12)
    # the running-statistics update: momentum * running + (1 - momentum) * batch
    np.testing.assert_allclose(new[1]["mean"], m * running["mean"] + (1 - m) * mu, rtol=1e-13)
    np.testing.assert_allclose(new[1]["var"], m * running["var"] + (1 - m) * var, rtol=1e-13)
    assert new[0] is None and new[2] is None
    # a training pass does not change the network's own state; only a step does
    np.testing.assert_array_equal(net.host_state()[1]["mean"], running["mean"])

    # inference: predict, evaluate, loss_value and forward-only passes use the running ones
    np.testing.assert_allclose(net.predict(x), infer_out, rtol=1e-12, atol=1e-14)
    want = _cross_entropy(infer_out, y)
    assert net.evaluate(x, y)["loss"] == pytest.approx(want, rel=1e-12)
    assert xbp.evaluate(net, x, y)["loss"] == pytest.approx(want, rel=1e-12)  # streamed path
    assert net.loss_value(x, y) == pytest.approx(want, rel=1e-12)
    # one batch of a training run trains on the batch's statistics and moves the running
    # ones once; its validation (the same rows) is measured with the moved running ones
    hist = xbp.fit(net, x, y, epochs=1, batch_size=10, optimizer=optim.sgd(0.5), shuffle=False,
                   validation_data=(x, y), progress=False)  # fmt: skip
    assert hist["loss"][0] == pytest.approx(_cross_entropy(train_out, y), rel=1e-12)
    moved, q = net.host_state()[1], net.host_params()
    np.testing.assert_allclose(moved["mean"], new[1]["mean"], rtol=1e-13)
    np.testing.assert_allclose(moved["var"], new[1]["var"], rtol=1e-13)
    h2 = np.tanh(x @ q[0]["W"] + q[0]["b"])
    hn = (h2 - moved["mean"]) / np.sqrt(moved["var"] + eps)
    val_out = _softmax((q[1]["gamma"] * hn + q[1]["beta"]) @ q[2]["W"] + q[2]["b"])
    assert hist["val_loss"][0] == pytest.approx(_cross_entropy(val_out, y), rel=1e-12)
    batch_stats = (h2 - h2.mean(axis=0)) / np.sqrt(h2.var(axis=0) + eps)
    other = _softmax((q[1]["gamma"] * batch_stats + q[1]["beta"]) @ q[2]["W"] + q[2]["b"])
    assert abs(_cross_entropy(other, y) - hist["val_loss"][0]) > 1e-3


@pytest.mark.parametrize("shuffle", [False, True])
def test_running_statistics_after_fit_equal_the_recursion(shuffle: bool) -> None:
    # BatchNorm first: its batch statistics are those of the data's batches, whatever
    # the weights do, so the recursion can be written out from the rows alone
    x, y = _data(30)
    m, bs, epochs, seed = 0.7, 8, 3, 5
    net = xbp.Network(
        [
            xbp.nn.BatchNorm(3, momentum=m),
            xbp.nn.Dense(3, 4, "tanh"),
            xbp.nn.Dense(4, 3, "softmax"),
        ],
        loss="cross_entropy",
    )
    xbp.fit(net, x, y, epochs=epochs, batch_size=bs, shuffle=shuffle, seed=seed, progress=False,
            optimizer=optim.adam(0.05))  # fmt: skip
    mean, var = np.zeros(3), np.ones(3)
    perms = np.random.default_rng(seed)
    for _ in range(epochs):
        order = perms.permutation(len(x)) if shuffle else np.arange(len(x))
        for s in range(0, len(x), bs):  # 3 batches of 8 and a last one of 6
            rows = x[order[s : s + bs]]
            mean = m * mean + (1 - m) * rows.mean(axis=0)
            var = m * var + (1 - m) * rows.var(axis=0)
    got = net.host_state()[0]
    np.testing.assert_allclose(got["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(got["var"], var, rtol=1e-12)


def test_running_statistics_survive_save_and_load(tmp_path: Any) -> None:
    x, y = _data(30)
    net = _every_kind()
    xbp.fit(net, x, y, epochs=2, batch_size=8, progress=False)
    assert not np.allclose(net.host_state()[5]["var"], 1.0)
    path = xbp.save(net, tmp_path / "m.npz")
    for be in ("numpy", "array_api_strict"):
        back = xbp.load(path, backend=be)
        assert back.layers == net.layers
        assert _max_diff(net, back) == 0.0
        np.testing.assert_array_equal(back.predict(x), net.predict(x))


def test_resume_gives_the_weights_and_running_statistics_of_one_run(tmp_path: Any) -> None:
    x, y = _data(50)
    ck = tmp_path / "run.npz"
    args: dict[str, Any] = dict(batch_size=16, seed=4, progress=False, optimizer=optim.adam(0.02))
    full = _every_kind()
    xbp.fit(full, x, y, epochs=4, **args)
    xbp.fit(_every_kind(), x, y, epochs=2, checkpoint=ck, **args)
    resumed = _every_kind()
    xbp.fit(resumed, x, y, epochs=4, resume=ck, **args)
    assert _max_diff(full, resumed) == 0.0
    for a, b in zip(full.host_state(), resumed.host_state()):
        for k in a:
            assert np.array_equal(a[k], b[k]), k


class _Record(xbp.Callback):
    """The weights and the layers' state at the end of every epoch."""

    def __init__(self) -> None:
        self.models: list[list[dict[str, np.ndarray]]] = []

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self.models.append(_host(trainer.net))


def test_early_stopping_restores_the_running_statistics_of_the_best_epoch() -> None:
    x, y = _data(60)
    record = _Record()
    stop = xbp.EarlyStopping(patience=1, monitor="val_loss")
    net = _every_kind()
    hist = xbp.fit(net, x, y, epochs=30, batch_size=16, seed=4, progress=False,
                   optimizer=optim.sgd(2.0), validation_split=0.3,
                   callbacks=[record, stop])  # fmt: skip
    assert hist.stopped_early and stop.best_epoch is not None and stop.best_epoch < len(hist)
    best, last = record.models[stop.best_epoch - 1], record.models[-1]
    bn = len(net.layers) + _bn(net)  # the running statistics in _host's list
    assert not np.array_equal(best[bn]["mean"], last[bn]["mean"])  # the state moved on
    for want, got in zip(best, _host(net)):
        for k in want:
            assert np.array_equal(want[k], got[k]), k


# -- 4. Standardize ----------------------------------------------------------------------------
def test_adapt_takes_mean_and_spread_and_divides_a_constant_feature_by_one() -> None:
    x = np.array([[0.0, 10.0, 5.0], [2.0, 30.0, 5.0], [4.0, 20.0, 5.0], [6.0, 0.0, 5.0]])
    net = xbp.Network([xbp.nn.Standardize(3), xbp.nn.Dense(3, 1, "identity")])
    assert not net.adapted
    net.adapt(x)
    s = net.host_state()[0]
    np.testing.assert_allclose(s["mean"], x.mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(s["std"], [np.std(x[:, 0]), np.std(x[:, 1]), 1.0], rtol=1e-15)
    assert s["count"].tolist() == [4.0] and net.adapted
    # the same from nested lists, in float32 and on the way to a later Standardize layer
    net32 = xbp.Network([xbp.nn.Dense(3, 3, "identity"), xbp.nn.Standardize(3), xbp.nn.Dense(3, 1)],
                        dtype="float32")  # fmt: skip
    net32.params = [{"W": np.eye(3), "b": np.zeros(3)}, {}, net32.host_params()[2]]
    net32.adapt(x.tolist())
    s32 = net32.host_state()[1]
    assert s32["std"].dtype == np.float32 and s32["std"][2] == 1.0
    np.testing.assert_allclose(s32["mean"], x.mean(axis=0), rtol=1e-6)


def test_adapt_runs_the_layers_before_a_later_standardize_on_every_backend(
    backend: xbp.backends.select.Backend,
) -> None:
    x, _ = _data(20)
    net = xbp.Network(
        [xbp.nn.Dense(3, 4, "tanh"), xbp.nn.Standardize(4), xbp.nn.Dense(4, 2, "softmax")],
        loss="cross_entropy",
        backend=backend,
        seed=2,
    )
    net.adapt(x)
    p = net.host_params()
    h = np.tanh(x @ p[0]["W"] + p[0]["b"])
    s = net.host_state()[1]
    np.testing.assert_allclose(s["mean"], h.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s["std"], h.std(axis=0), rtol=1e-12)


@pytest.mark.parametrize("stream", [False, True])
def test_fit_adapts_from_the_training_rows_only(stream: bool) -> None:
    x, y = _data(40)
    seed, n_val = 4, 10
    net = xbp.mlp([3, 5, 3], activation="tanh", loss="cross_entropy", standardize=True)
    xbp.fit(net, x, y, epochs=1, batch_size=8, seed=seed, validation_split=0.25, stream=stream,
            progress=False)  # fmt: skip
    # validation_split's rows: a generator seeded with seed + 1 draws them
    train = np.sort(np.random.default_rng(seed + 1).permutation(40)[n_val:])
    s = net.host_state()[0]
    assert s["count"].tolist() == [30.0]
    np.testing.assert_allclose(s["mean"], x[train].mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(s["std"], x[train].std(axis=0), rtol=1e-13)
    assert not np.allclose(s["mean"], x.mean(axis=0), rtol=1e-6)


def test_predict_takes_raw_data() -> None:
    x, y = _data(40)
    net = xbp.mlp([3, 5, 3], activation="tanh", loss="cross_entropy", standardize=True, seed=1)
    xbp.fit(net, x, y, epochs=2, batch_size=8, progress=False)
    st, p = net.host_state()[0], net.host_params()
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    np.testing.assert_allclose(st["mean"], x.mean(axis=0), rtol=1e-13)
    want = _softmax(np.tanh(z @ p[1]["W"] + p[1]["b"]) @ p[2]["W"] + p[2]["b"])
    np.testing.assert_allclose(net.predict(x), want, rtol=1e-12, atol=1e-15)


def test_resume_does_not_adapt_again(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _data(40)
    ck = tmp_path / "run.npz"
    args: dict[str, Any] = dict(batch_size=8, seed=4, progress=False)
    first = _every_kind()
    xbp.fit(first, x, y, epochs=1, checkpoint=ck, **args)
    adapted = first.host_state()
    calls: list[Any] = []
    real = xbp.Network.adapt
    monkeypatch.setattr(xbp.Network, "adapt", lambda self, x_: calls.append(x_) or real(self, x_))
    # other rows (another mean and spread) are another run: refused before any adapting
    with pytest.raises(xbp.errors.XbpValueError, match="differ from what"):
        xbp.fit(_every_kind(), 3.0 * x + 1.0, y, epochs=2, resume=ck, **args)
    resumed = _every_kind()
    xbp.fit(resumed, x, y, epochs=2, resume=ck, **args)
    assert calls == []
    for l in (0, 6):
        for k in ("mean", "std", "count"):
            assert np.array_equal(resumed.host_state()[l][k], adapted[l][k]), (l, k)


def test_an_unadapted_standardize_cannot_train_from_a_batch_source() -> None:
    x, y = _data(40)
    batches = [(x[s : s + 8], y[s : s + 8]) for s in range(0, 40, 8)]

    class Source:
        def __iter__(self) -> Any:
            return iter(batches)

    for source in (batches, Source()):
        net = xbp.mlp([3, 4, 3], loss="cross_entropy", standardize=True)
        with pytest.raises(XbpValueError, match="Standardize layer that is not adapted") as info:
            xbp.fit(net, source, epochs=1, progress=False)
        assert "\n" not in str(info.value) and "net.adapt" in str(info.value)
        net.adapt(x)  # adapted first, the source trains
        assert np.isfinite(xbp.fit(net, source, epochs=1, progress=False)["loss"][0])


# -- 5. compiled steps equal eager ones --------------------------------------------------------
@pytest.fixture
def jax_backend() -> xbp.backends.select.Backend:
    return backend_or_skip("jax-cpu", "jax", "cpu", required_backends())


def _train_both(be: xbp.backends.select.Backend, **kw: Any) -> tuple[Any, Any, Any, Any]:
    x, y = _data(N_ROWS)
    args = {**TRAIN, "optimizer": optim.adam(0.02), **kw}
    eager, compiled = _every_kind(be, user=True), _every_kind(be, user=True)
    for net in (eager, compiled):
        net.adapt(x[:8])
    h1 = xbp.fit(eager, x, y, compile=False, **args)
    h2 = xbp.fit(compiled, x, y, compile=True, **{**args, "optimizer": optim.adam(0.02)})
    return eager, compiled, h1, h2


def test_jax_compiled_steps_equal_eager_steps_with_every_layer(
    jax_backend: xbp.backends.select.Backend,
) -> None:
    """Every built-in layer and a user's own one (FeatureScale) in a traced epoch (the
    scanned batches carry the layers' state)."""
    eager, compiled, h1, h2 = _train_both(jax_backend)
    assert _max_rel(eager, compiled) <= 1e-12
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-12)
    np.testing.assert_allclose(h2["val_loss"], h1["val_loss"], rtol=1e-12)
    assert not np.allclose(compiled.host_state()[_bn(compiled)]["var"], 1.0)  # the state moved


def test_captured_steps_equal_eager_steps_with_every_layer(
    fake_capture: xbp.backends.select.Backend,  # noqa: F811
) -> None:
    # batches of 12: the captured step replays twice, the short last batch of 8 runs eagerly
    eager, compiled, h1, h2 = _train_both(fake_capture, batch_size=12)
    assert _max_rel(eager, compiled) <= 1e-12
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-12)
    np.testing.assert_allclose(h2["val_loss"], h1["val_loss"], rtol=1e-12)
    assert not np.allclose(compiled.host_state()[_bn(compiled)]["var"], 1.0)


# -- 6. a layer of the user's own ---------------------------------------------------------------
def test_a_registered_layer_trains_and_passes_gradcheck(scale_layer: Any) -> None:
    x, y = _data(40)
    net = _user_net()
    before = net.host_params()[2]["s"].copy()
    hist = xbp.fit(net, x, y, epochs=8, batch_size=8, optimizer=optim.adam(0.03), progress=False)
    assert hist["loss"][-1] < 0.8 * hist["loss"][0]
    assert not np.allclose(net.host_params()[2]["s"], before)  # its parameter trained
    errors = xbp.tools.gradcheck(net, x[:7], y[:7], max_checks=None)
    assert max(errors.values()) <= 1e-6 and "layer2.s" in errors
    assert max(_fd_worst(net, x[:7], y[:7], key=_key(NP)).values()) <= 1e-6


def test_a_registered_layer_saves_and_loads_by_name(scale_layer: Any, tmp_path: Any) -> None:
    x, y = _data(40)
    net = _user_net()
    xbp.fit(net, x, y, epochs=2, batch_size=8, progress=False)
    path = xbp.save(net, tmp_path / "m.npz")
    assert net.config()["layers"][2] == {"kind": "test_feature_scale", "n": 6}
    back = xbp.load(path)
    assert back.layers == net.layers and _max_diff(net, back) == 0.0
    np.testing.assert_array_equal(back.predict(x), net.predict(x))
    unregister_layer(FeatureScale.kind)
    try:
        with pytest.raises(XbpFileError) as info:
            xbp.load(path)
        message = str(info.value)
        assert "\n" not in message
        assert "'test_feature_scale'" in message and "xbp.register_layer" in message
        with pytest.raises(XbpValueError, match="test_feature_scale"):
            xbp.Network.from_config(net.config())
    finally:
        xbp.register_layer(FeatureScale)
    assert xbp.load(path).layers == net.layers


def test_a_registered_layer_trains_in_shares_like_one_process(scale_layer: Any) -> None:
    x, y = _data(37)
    args: dict[str, Any] = dict(epochs=3, batch_size=8, seed=2, optimizer=optim.momentum(0.2),
                                validation_split=0.2, progress=False)  # fmt: skip
    single = _user_net()
    h_single = xbp.fit(single, x, y, **args)
    nets = [_user_net() for _ in range(2)]
    hists = fit_in_threads(nets, x, y, args)
    for net, hist in zip(nets, hists):
        assert _max_rel(single, net) <= 1e-12
        np.testing.assert_allclose(hist["loss"], h_single["loss"], rtol=1e-12)
        np.testing.assert_allclose(hist["val_loss"], h_single["val_loss"], rtol=1e-12)


def test_onnx_export_refuses_a_layer_it_does_not_know(scale_layer: Any, tmp_path: Any) -> None:
    net = xbp.Network([xbp.nn.Dense(3, 4, "tanh"), FeatureScale(4), xbp.nn.Dense(4, 2, "softmax")],
                      loss="cross_entropy")  # fmt: skip
    with pytest.raises(XbpError) as info:
        xbp.export_onnx(net, tmp_path / "m.onnx")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "m.onnx").exists()


# -- 7. old files and configs -------------------------------------------------------------------
def test_a_dense_network_writes_the_config_it_always_wrote(tmp_path: Any) -> None:
    net = xbp.Network([xbp.nn.Dense(3, 4, "tanh", dropout=0.2), xbp.nn.Dense(4, 2, "softmax")],
                      loss="cross_entropy", seed=7)  # fmt: skip
    cfg = net.config()
    assert cfg["layers"] == [[3, 4, "tanh"], [4, 2, "softmax"]]
    assert cfg["dropout"] == [0.2, 0.0]
    assert "dropout" not in xbp.mlp([3, 4, 2], seed=7).config()
    assert xbp.mlp([3, 4, 2]).config()["layers"] == [[3, 4, "sigmoid"], [4, 2, "identity"]]
    path = xbp.save(net, tmp_path / "m.npz")
    with np.load(path) as z:  # no state arrays in a file of Dense layers
        assert sorted(z.files) == ["meta", "param.0.W", "param.0.b", "param.1.W", "param.1.b"]
    back = xbp.load(path)
    assert back.config() == cfg and back.layers == net.layers and _max_diff(net, back) == 0.0
    # a config as the releases before layers wrote it
    old = {"layers": [[3, 4, "relu"], [4, 1, "sigmoid"]], "loss": "binary_cross_entropy",
           "dtype": "float64", "init": "auto", "seed": 3, "dropout": [0.5, 0.0]}  # fmt: skip
    built = xbp.Network.from_config(old)
    assert built.layers == (xbp.nn.Dense(3, 4, "relu", 0.5), xbp.nn.Dense(4, 1, "sigmoid"))
    assert {k: built.config()[k] for k in old} == old


def test_dense_input_dropout_draws_the_masks_it_always_drew() -> None:
    # the mask of a Dense layer's input (and of a Dropout layer) at position l is the hash
    # of (seed, step, l, element), as before layers were parts (test_dropout.py's reference)
    x, y = _data(9)
    net = xbp.Network(
        [
            xbp.nn.Dense(3, 5, "tanh", dropout=0.3),
            xbp.nn.Dropout(0.4),
            xbp.nn.Dense(5, 3, "softmax", 0.2),
        ],
        loss="cross_entropy",
        seed=1,
    )
    cost, _, out = net.value_and_grad(x, np.eye(3)[y], dropout_key=_key(NP, 3, 11))
    p = net.host_params()
    a = np.tanh((x * py_mask(3, 11, 0, 0, 9, 3, 0.3)) @ p[0]["W"] + p[0]["b"])
    a = a * py_mask(3, 11, 0, 1, 9, 5, 0.4)
    want = _softmax((a * py_mask(3, 11, 0, 2, 9, 5, 0.2)) @ p[2]["W"] + p[2]["b"])
    np.testing.assert_allclose(out, want, rtol=1e-13)
    assert float(cost) == pytest.approx(_cross_entropy(want, y), rel=1e-13)
    assert net.dropout == (0.3, 0.4, 0.2)


def test_from_config_rebuilds_every_layer_kind(scale_layer: Any) -> None:
    layers = [
        xbp.nn.Standardize(3),
        xbp.nn.Dense(3, 6, "tanh", dropout=0.1),
        xbp.nn.LayerNorm(6, eps=1e-4),
        xbp.nn.Dropout(0.3),
        FeatureScale(6),
        xbp.nn.BatchNorm(6, momentum=0.8, eps=1e-2),
        xbp.nn.Dense(6, 2, "sigmoid"),
    ]
    net = xbp.Network(layers, loss="binary_cross_entropy", seed=9)
    cfg = net.config()
    assert [c["kind"] for c in cfg["layers"]] == [
        "standardize", "dense", "layer_norm", "dropout", "test_feature_scale", "batch_norm",
        "dense",
    ]  # fmt: skip
    assert cfg["layers"][3] == {"kind": "dropout", "rate": 0.3, "n": 6}
    assert cfg["layers"][5] == {"kind": "batch_norm", "n": 6, "momentum": 0.8, "eps": 1e-2}
    back = xbp.Network.from_config(cfg)
    assert back.layers == net.layers and back.config() == cfg
    assert _max_diff(back, net) == 0.0  # the same seed draws the same weights
    again = xbp.Network.from_config(json_round_trip(cfg))
    assert again.layers == net.layers
    table = net.summary()
    for name in ("Standardize", "LayerNorm", "Dropout", "FeatureScale", "BatchNorm"):
        assert name in table


def json_round_trip(cfg: dict[str, Any]) -> dict[str, Any]:
    import json

    return dict(json.loads(json.dumps(cfg)))


# -- 8. bad input: one-line xbp errors -----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Unregisterable(xbp.nn.Layer):
    kind: ClassVar[str] = "batch_norm"
    n: int


class _NotADataclass(xbp.nn.Layer):
    kind: ClassVar[str] = "not_a_dataclass"


@dataclasses.dataclass
class _NotFrozen(xbp.nn.Layer):
    kind: ClassVar[str] = "not_frozen"
    n: int

    @property
    def n_in(self) -> int:  # type: ignore[override]
        return self.n

    @property
    def n_out(self) -> int:  # type: ignore[override]
        return self.n


def _net_for_assignment() -> xbp.Network:
    return xbp.Network(
        [
            xbp.nn.Standardize(3),
            xbp.nn.Dense(3, 4),
            xbp.nn.LayerNorm(4),
            xbp.nn.BatchNorm(4),
            xbp.nn.Dense(4, 2),
        ]
    )


def _set_params(change: Callable[[list[dict[str, Any]]], None]) -> None:
    net = _net_for_assignment()
    p = net.host_params()
    change(p)
    net.params = p


def _set_state(change: Callable[[list[dict[str, Any]]], None]) -> None:
    net = _net_for_assignment()
    s = net.host_state()
    change(s)
    net.state = s


BAD: dict[str, tuple[Callable[[], Any], type[XbpError], str]] = {
    "widths-do-not-chain": (
        lambda: xbp.Network([xbp.nn.Dense(3, 4), xbp.nn.LayerNorm(5), xbp.nn.Dense(5, 1)]),
        XbpValueError, r"layers\[1\].n_in=5 does not match layers\[0\].n_out=4",
    ),
    "dropout-width-does-not-chain": (
        lambda: xbp.Network([xbp.nn.Dense(3, 4), xbp.nn.Dropout(0.5, n=5), xbp.nn.Dense(4, 1)]),
        XbpValueError, r"layers\[1\].n_in=5 does not match layers\[0\].n_out=4",
    ),
    "dense-after-norm-does-not-chain": (
        lambda: xbp.Network([xbp.nn.Dense(3, 4), xbp.nn.BatchNorm(4), xbp.nn.Dense(5, 1)]),
        XbpValueError, r"layers\[2\].n_in=5 does not match layers\[1\].n_out=4",
    ),
    "last-layer-not-dense": (
        lambda: xbp.Network([xbp.nn.Dense(3, 4), xbp.nn.LayerNorm(4)]),
        XbpValueError, "the last layer is a LayerNorm; end the network with an xbp.nn.Dense",
    ),
    "dropout-first-without-width": (
        lambda: xbp.Network([xbp.nn.Dropout(0.5), xbp.nn.Dense(3, 1)]),
        XbpValueError, r"layers\[0\] is a Dropout without a width",
    ),
    "not-a-layer": (
        lambda: xbp.Network([xbp.nn.Dense(3, 4), "layer_norm", xbp.nn.Dense(4, 1)]),
        XbpTypeError, r"layers\[1\] is a str",
    ),
    "unhashable-layer": (
        lambda: xbp.Network([xbp.nn.Dense(3, 4), _NotFrozen(4), xbp.nn.Dense(4, 1)]),
        XbpTypeError, r"layers\[1\] is a _NotFrozen that cannot be hashed",
    ),
    "register-not-a-layer": (
        lambda: xbp.register_layer(dict), XbpTypeError, "subclass of xbp.nn.Layer",
    ),
    "register-an-instance": (
        lambda: xbp.register_layer(xbp.nn.LayerNorm(3)), XbpTypeError, "subclass of xbp.nn.Layer",
    ),
    "register-not-a-dataclass": (
        lambda: xbp.register_layer(_NotADataclass), XbpTypeError, "not a dataclass",
    ),
    "register-not-frozen": (
        lambda: xbp.register_layer(_NotFrozen), XbpTypeError, "not frozen",
    ),
    "register-a-built-in-kind": (
        lambda: xbp.register_layer(_Unregisterable), XbpValueError, "'batch_norm' is built in",
    ),
    "mlp-norm-group": (
        lambda: xbp.mlp([3, 4, 2], norm="group"), XbpValueError, "norm='group'",
    ),
    "params-wrong-keys": (
        lambda: _set_params(lambda p: p.__setitem__(2, {"W": np.ones(4), "b": np.zeros(4)})),
        XbpValueError, r"params\[2\] must be a mapping with keys 'gamma' and 'beta'",
    ),
    "params-for-a-layer-without": (
        lambda: _set_params(lambda p: p.__setitem__(0, {"W": np.ones(3)})),
        XbpValueError, r"params\[0\] must be a mapping with no keys",
    ),
    "params-wrong-shape": (
        lambda: _set_params(lambda p: p[3].__setitem__("gamma", np.ones(5))),
        XbpValueError, r"params\[3\]\['gamma'\] has shape \(5,\); layer 3 needs \(4,\)",
    ),
    "params-too-few": (
        lambda: _set_params(lambda p: p.pop()), XbpValueError, "list of 5 mappings",
    ),
    "state-wrong-keys": (
        lambda: _set_state(lambda s: s.__setitem__(3, {"mean": np.zeros(4)})),
        XbpValueError, r"state\[3\] must be a mapping with keys 'mean' and 'var'",
    ),
    "state-wrong-shape": (
        lambda: _set_state(lambda s: s[0].__setitem__("std", np.ones((3, 1)))),
        XbpValueError, r"state\[0\]\['std'\] has shape \(3, 1\); layer 0 needs \(3,\)",
    ),
    "state-not-finite": (
        lambda: _set_state(lambda s: s[3].__setitem__("var", np.array([1, np.nan, 1, 1.0]))),
        XbpValueError, r"state\[3\]\['var'\] contains NaN",
    ),
    "state-for-a-layer-without": (
        lambda: _set_state(lambda s: s.__setitem__(2, {"mean": np.zeros(4)})),
        XbpValueError, r"state\[2\] must be a mapping with no keys",
    ),
    "adapt-wrong-width": (
        lambda: _net_for_assignment().adapt(np.ones((5, 4))),
        XbpValueError, r"adapt: x has shape \(5, 4\); pass \(rows, 3\)",
    ),
    "adapt-one-dimensional": (
        lambda: _net_for_assignment().adapt(np.ones(3)),
        XbpValueError, r"adapt: x has shape \(3,\); pass \(rows, 3\)",
    ),
    "adapt-list-wrong-width": (
        lambda: _net_for_assignment().adapt([[1.0, 2.0]]),
        XbpValueError, r"adapt: x has shape \(1, 2\)",
    ),
    "adapt-no-rows": (
        lambda: _net_for_assignment().adapt(np.ones((0, 3))), XbpValueError, "no rows",
    ),
    "batch-norm-momentum": (
        lambda: xbp.nn.BatchNorm(4, momentum=1.5), XbpValueError, "BatchNorm.momentum=1.5",
    ),
    "layer-norm-width": (lambda: xbp.nn.LayerNorm(0), XbpValueError, "LayerNorm.n=0"),
    "layer-norm-eps": (lambda: xbp.nn.LayerNorm(3, eps=-1.0), XbpValueError, "LayerNorm.eps"),
    "dropout-rate": (lambda: xbp.nn.Dropout(1.0), XbpValueError, "Dropout.rate=1.0"),
    "unknown-kind-in-config": (
        lambda: xbp.Network.from_config(
            {"layers": [{"kind": "conv", "n": 3}, {"kind": "dense", "n_in": 3, "n_out": 1}],
             "loss": "quadratic"}  # fmt: skip
        ),
        XbpValueError, "needs the layer kind 'conv'.*xbp.register_layer",
    ),
    "bad-argument-in-config": (
        lambda: xbp.Network.from_config(
            {"layers": [{"kind": "layer_norm", "width": 3}, {"kind": "dense", "n_in": 3,
             "n_out": 1}], "loss": "quadratic"}  # fmt: skip
        ),
        XbpValueError, "layer_norm does not take",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_layers_are_one_line_xbp_errors(case: str) -> None:
    make, kind, pattern = BAD[case]
    try:
        with pytest.raises(kind, match=pattern) as info:
            make()
        assert "\n" not in str(info.value)
        assert "not_frozen" not in xbp.nn.layers.layer_types()  # nothing was registered
    finally:
        unregister_layer("not_frozen")
        unregister_layer("not_a_dataclass")
