from __future__ import annotations

import math

import numpy as np
import pytest

import xbp
from xbp import optim
from xbp.errors import XbpFileError, XbpValueError


def reference(name: str, steps: int, g_seq, p0, **h):
    """Independent NumPy implementations of each update rule."""
    p = p0.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    lr = h["lr"]
    for t, g in enumerate(g_seq[:steps], start=1):
        if name == "sgd":
            p = p - lr * g
        elif name in ("momentum", "nesterov"):
            m = 0.9 * m + g
            p = p - lr * (g + 0.9 * m if name == "nesterov" else m)
        elif name in ("adam", "adamw"):
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            step = (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
            if name == "adamw":
                step = step + 0.01 * p
            p = p - lr * step
        elif name == "rmsprop":
            v = 0.9 * v + 0.1 * g * g
            p = p - lr * g / (np.sqrt(v) + 1e-8)
    return p


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"])
def test_update_rules_match_reference(backend: xbp.backends.select.Backend, name: str) -> None:
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 2))
    b0 = rng.normal(size=2)
    gs = [rng.normal(size=(3, 2)) for _ in range(4)]
    gb = [rng.normal(size=2) for _ in range(4)]
    opt = optim.get_optimizer(name, 0.05)
    params = [
        {
            "W": backend.asarray(w0, "float64", copy=True),
            "b": backend.asarray(b0, "float64", copy=True),
        }
    ]
    state = opt.init(params)
    for g, h in zip(gs, gb):
        grads = [{"W": backend.asarray(g, "float64"), "b": backend.asarray(h, "float64")}]
        updates, state = opt.update(grads, state, params)
        params = optim.apply_updates(params, updates)
    ref_w = reference(name, 4, gs, w0, lr=0.05)
    np.testing.assert_allclose(backend.to_host(params[0]["W"]), ref_w, rtol=1e-12, atol=1e-14)
    assert backend.owns(params[0]["W"]) and backend.same_device(params[0]["W"])


def test_l2_weight_decay_adds_to_gradient_not_bias() -> None:
    opt = optim.sgd(0.1, weight_decay=0.5)
    p = [{"W": np.ones((1, 1)), "b": np.ones(1)}]
    g = [{"W": np.zeros((1, 1)), "b": np.zeros(1)}]
    u, _ = opt.update(g, opt.init(p), p)
    assert u[0]["W"][0, 0] == pytest.approx(-0.05) and u[0]["b"][0] == 0.0


def test_clip_by_global_norm(backend: xbp.backends.select.Backend) -> None:
    opt = optim.sgd(1.0, clip_norm=1.0)
    p = [
        {
            "W": backend.asarray(np.zeros((1, 2)), "float64"),
            "b": backend.asarray(np.zeros(1), "float64"),
        }
    ]
    g = [
        {
            "W": backend.asarray(np.array([[3.0, 0.0]]), "float64"),
            "b": backend.asarray(np.array([4.0]), "float64"),
        }
    ]
    u, _ = opt.update(g, opt.init(p), p)
    np.testing.assert_allclose(backend.to_host(u[0]["W"]), [[-0.6, 0.0]], rtol=1e-12)
    small = [
        {
            "W": backend.asarray(np.array([[0.3, 0.0]]), "float64"),
            "b": backend.asarray(np.array([0.4]), "float64"),
        }
    ]
    u, _ = opt.update(small, opt.init(p), p)
    np.testing.assert_allclose(backend.to_host(u[0]["b"]), [-0.4], rtol=1e-12)


def test_schedules() -> None:
    assert optim.constant(0.1)(1000) == 0.1
    s = optim.step(1.0, 10, 0.5)
    assert (s(0), s(9), s(10), s(25)) == (1.0, 1.0, 0.5, 0.25)
    e = optim.exponential(1.0, 0.5, 2)
    assert e(2) == pytest.approx(0.5) and e(1) == pytest.approx(math.sqrt(0.5))
    c = optim.cosine(1.0, 100, alpha=0.1)
    assert c(0) == 1.0 and c(50) == pytest.approx(0.55) and c(100) == pytest.approx(0.1) == c(500)
    w = optim.warmup(0.4, 4)
    assert [w(i) for i in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4])
    rebuilt = optim.as_schedule(optim.warmup(optim.cosine(1.0, 10), 3).config())
    assert [rebuilt(i) for i in range(12)] == [
        optim.warmup(optim.cosine(1.0, 10), 3)(i) for i in range(12)
    ]


def test_optimizer_uses_schedule_position() -> None:
    opt = optim.sgd(optim.step(1.0, 1, 0.5))
    p = [{"W": np.zeros((1, 1)), "b": np.zeros(1)}]
    g = [{"W": np.ones((1, 1)), "b": np.ones(1)}]
    state = opt.init(p)
    steps = []
    for _ in range(3):
        u, state = opt.update(g, state, p)
        steps.append(-u[0]["W"][0, 0])
    assert steps == [1.0, 0.5, 0.25] and opt.learning_rate(state) == 0.125


def test_bad_hyper_parameters() -> None:
    with pytest.raises(XbpValueError, match="learning_rate=0 must be > 0"):
        optim.sgd(0)
    with pytest.raises(XbpValueError, match="learning_rate=-1"):
        optim.adam(-1)
    with pytest.raises(XbpValueError, match="momentum=1.5"):
        optim.momentum(0.1, beta=1.5)
    with pytest.raises(XbpValueError, match="optimizer='lbfgs'.*'adam'"):
        optim.get_optimizer("lbfgs")


def test_state_round_trip_and_mismatch() -> None:
    opt = optim.adam(0.01)
    p = [{"W": np.ones((2, 2)), "b": np.ones(2)}]
    state = opt.init(p)
    _, state = opt.update(p, state, p)
    leaves = optim.state_to_host(state, np.asarray)
    back = optim.state_from_host(opt.init(p), leaves, lambda a, dt: np.array(a))
    assert back[0].steps == 1 and np.array_equal(back[0].mu[0]["W"], state[0].mu[0]["W"])
    with pytest.raises(XbpFileError, match="optimizer state has"):
        optim.state_from_host(optim.sgd(0.1).init(p) + ((),), leaves, lambda a, dt: a)
    rebuilt = optim.from_config(opt.config())
    assert rebuilt.config() == opt.config()


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"])
def test_updates_never_write_to_their_inputs(
    backend: xbp.backends.select.Backend, name: str
) -> None:
    """Every rule is written once, pure: gradients, parameters and state stay as they
    were (the training step decides what replaces what)."""
    rng = np.random.default_rng(3)
    opt = optim.get_optimizer(name, 0.05, clip_norm=5.0, weight_decay=0.01)
    params = [{k: backend.asarray(v, "float64", copy=True)
               for k, v in (("W", rng.normal(size=(3, 2))), ("b", np.zeros(2)))}]  # fmt: skip
    state = opt.init(params)
    for _ in range(3):
        grads = [{k: backend.asarray(rng.normal(size=s), "float64", copy=True)
                  for k, s in (("W", (3, 2)), ("b", (2,)))}]  # fmt: skip
        host = [np.array(backend.to_host(v), copy=True) for v in xbp.optim.tree.leaves(
            (grads, params, xbp.optim.tree.arrays(state)))]  # fmt: skip
        updates, new_state = opt.update(grads, state, params)
        after = [backend.to_host(v) for v in xbp.optim.tree.leaves(
            (grads, params, xbp.optim.tree.arrays(state)))]  # fmt: skip
        for a, b in zip(host, after):
            np.testing.assert_array_equal(a, b)
        params = optim.apply_updates(params, updates)
        state = new_state


def test_only_a_pure_learning_rate_chain_is_folded_into_backprop() -> None:
    p = [{"W": np.ones((2, 2)), "b": np.ones(2)}]
    opt = optim.sgd(optim.step(0.5, 1, 0.5))
    assert opt.scale_only
    state = opt.init(p)
    assert opt.scalars(state) == ((-0.5,),)
    assert opt.scalars(state, lr_scale=0.5) == ((-0.25,),)  # the divergence halving
    _, state = opt.update(p, state, p)
    assert opt.scalars(state) == ((-0.25,),)  # the schedule advances
    for other in (
        optim.sgd(0.1, weight_decay=0.01),
        optim.sgd(0.1, clip_norm=1.0),
        optim.momentum(0.1),
        optim.adam(0.1),
    ):
        assert not other.scale_only, other.name
        # the learning rate is always the last scalar, and lr_scale scales it
        full, half = other.scalars(other.init(p)), other.scalars(other.init(p), 0.5)
        assert half[-1][0] == full[-1][0] * 0.5 and half[:-1] == full[:-1]
    rebuilt = optim.from_config(optim.sgd(0.3).config())
    assert rebuilt.scale_only and rebuilt.scalars(rebuilt.init(p)) == ((-0.3,),)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_l1_adds_the_sign_of_each_weight_to_its_gradient(
    backend: xbp.backends.select.Backend, name: str
) -> None:
    """l1 adds l1 * sign(W) (0 at W = 0, never to biases) to the gradient, beside L2,
    before the optimizer's own rule: checked against a by-hand NumPy update."""
    rng = np.random.default_rng(5)
    w0 = rng.normal(size=(3, 2))
    w0[1, 1] = 0.0  # the subgradient at 0 is 0
    b0 = rng.normal(size=2)
    gs = [rng.normal(size=(3, 2)) for _ in range(3)]
    gb = [rng.normal(size=2) for _ in range(3)]
    l1, wd = 0.3, 0.05
    opt = optim.get_optimizer(name, 0.05, l1=l1, weight_decay=wd)
    params = [{"W": backend.asarray(w0, "float64", copy=True),
               "b": backend.asarray(b0, "float64", copy=True)}]  # fmt: skip
    state = opt.init(params)
    w, b = w0.copy(), b0.copy()
    mw, mb, vw, vb = (np.zeros_like(w), np.zeros_like(b), np.zeros_like(w), np.zeros_like(b))
    for t, (g, h) in enumerate(zip(gs, gb), start=1):
        grads = [{"W": backend.asarray(g, "float64", copy=True),
                   "b": backend.asarray(h, "float64", copy=True)}]  # fmt: skip
        updates, state = opt.update(grads, state, params)
        params = optim.apply_updates(params, updates)
        gw = g + wd * w + l1 * np.sign(w)  # by hand
        if name == "sgd":
            w, b = w - 0.05 * gw, b - 0.05 * h
        elif name == "momentum":
            mw, mb = 0.9 * mw + gw, 0.9 * mb + h
            w, b = w - 0.05 * mw, b - 0.05 * mb
        else:
            mw, vw = 0.9 * mw + 0.1 * gw, 0.999 * vw + 0.001 * gw * gw
            mb, vb = 0.9 * mb + 0.1 * h, 0.999 * vb + 0.001 * h * h
            c1, c2 = 1 - 0.9**t, 1 - 0.999**t
            w = w - 0.05 * (mw / c1) / (np.sqrt(vw / c2) + 1e-8)
            b = b - 0.05 * (mb / c1) / (np.sqrt(vb / c2) + 1e-8)
    np.testing.assert_allclose(backend.to_host(params[0]["W"]), w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(backend.to_host(params[0]["b"]), b, rtol=1e-12, atol=1e-14)


def test_l1_is_saved_with_the_optimizer(tmp_path) -> None:
    opt = optim.adam(0.01, l1=1e-3)
    assert opt.config()["l1"] == 1e-3
    assert optim.from_config(opt.config()).config() == opt.config()
    assert "l1" not in optim.adam(0.01).config()  # configs without L1 are unchanged
    net = xbp.mlp([2, 3, 1], seed=0)
    xbp.save(net, tmp_path / "m.npz", optimizer=opt, optimizer_state=opt.init(net.params))
    assert xbp.load_checkpoint(tmp_path / "m.npz").optimizer.config() == opt.config()
    # a weight at exactly 0 stays there under plain SGD + L1 with a zero gradient
    p = [{"W": np.array([[0.0, 2.0]]), "b": np.zeros(2)}]
    u, _ = optim.sgd(0.1, l1=0.5).update([{"W": np.zeros((1, 2)), "b": np.zeros(2)}],
                                         optim.sgd(0.1, l1=0.5).init(p), p)  # fmt: skip
    assert u[0]["W"].tolist() == [[0.0, -0.05]] and u[0]["b"].tolist() == [0.0, 0.0]


# -- scikit-learn's update rules ----------------------------------------------------------
def sklearn_by_hand(rule, w0, b0, gws, gbs, lrs, l2s, momentum=0.9, nesterov=True):
    """scikit-learn's SGD and Adam written out in NumPy (the formulas of
    sklearn.neural_network._stochastic_optimizers), with its L2 term on the weights."""
    params = [w0.copy(), b0.copy()]
    velocity = [np.zeros_like(p) for p in params]
    ms = [np.zeros_like(p) for p in params]
    vs = [np.zeros_like(p) for p in params]
    b1, b2, eps = 0.8, 0.95, 1e-6
    for t, (gw, gb, lr, c) in enumerate(zip(gws, gbs, lrs, l2s), start=1):
        grads = [gw + c * params[0], gb]  # alpha W / sum(w_batch) on the weights only
        if rule == "sgd":
            velocity = [momentum * v - lr * g for v, g in zip(velocity, grads)]
            if nesterov:
                updates = [momentum * v - lr * g for v, g in zip(velocity, grads)]
            else:
                updates = velocity
        else:
            ms = [b1 * m + (1 - b1) * g for m, g in zip(ms, grads)]
            vs = [b2 * v + (1 - b2) * g**2 for v, g in zip(vs, grads)]
            lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
            updates = [-lr_t * m / (np.sqrt(v) + eps) for m, v in zip(ms, vs)]
        params = [p + u for p, u in zip(params, updates)]
    return params


@pytest.mark.parametrize(
    "rule, momentum, nesterov",
    [("sgd", 0.9, True), ("sgd", 0.7, False), ("sgd", 0.0, True), ("adam", None, None)],
    ids=["sgd-nesterov", "sgd-momentum", "sgd-no-momentum", "adam"],
)
def test_sklearn_rules_match_scikit_learns_formulas(
    backend: xbp.backends.select.Backend, rule: str, momentum: float, nesterov: bool
) -> None:
    """sklearn_sgd / sklearn_adam against the formulas by hand: the rate inside the
    momentum (it changes between steps here, as scikit-learn's invscaling and adaptive
    rates do, and the velocity keeps the old rate's share), the bias-corrected step size,
    and a per-step L2 coefficient on the weights only; pure, like every rule."""
    rng = np.random.default_rng(5)
    w0, b0 = rng.normal(size=(3, 2)), rng.normal(size=2)
    gws = [rng.normal(size=(3, 2)) for _ in range(5)]
    gbs = [rng.normal(size=2) for _ in range(5)]
    lrs = [0.1, 0.1, 0.02, 0.004, 0.004] if rule == "sgd" else [0.05] * 5
    l2s = [0.01, 0.03, 0.0, 0.02, 0.005]

    def make(lr: float) -> optim.Optimizer:
        if rule == "sgd":
            return optim.sklearn_sgd(lr, momentum=momentum, nesterov=nesterov)
        return optim.sklearn_adam(lr, beta_1=0.8, beta_2=0.95, epsilon=1e-6)

    dev = lambda a: backend.asarray(a, "float64", copy=True)  # noqa: E731
    params = [{"W": dev(w0), "b": dev(b0)}]
    state = make(lrs[0]).init(params)
    for gw, gb, lr, c in zip(gws, gbs, lrs, l2s):
        opt = make(lr)  # the rate changes on the host: a new optimizer, the same state
        grads = [{"W": dev(gw), "b": dev(gb)}]
        before = [np.array(backend.to_host(v)) for v in xbp.optim.tree.leaves((grads, params))]
        updates, state = opt.update(grads, state, params, scalars=opt.scalars(state, l2=c))
        after = [backend.to_host(v) for v in xbp.optim.tree.leaves((grads, params))]
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)
        params = optim.apply_updates(params, updates)
    ref_w, ref_b = sklearn_by_hand(rule, w0, b0, gws, gbs, lrs, l2s, momentum, nesterov)
    np.testing.assert_allclose(backend.to_host(params[0]["W"]), ref_w, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(backend.to_host(params[0]["b"]), ref_b, rtol=1e-13, atol=1e-15)
    assert state[-1].steps == 5


def test_sklearn_rules_keep_the_scalar_conventions() -> None:
    """The learning-rate scalar is the chain's last (``lr_scale`` multiplies it, Adam's
    bias correction included), the per-step L2 coefficient its first; only the
    scikit-learn rules take ``l2``; the compiled-step key leaves the rate out."""
    p = [{"W": np.ones((2, 2)), "b": np.ones(2)}]
    sgd = optim.sklearn_sgd(0.2)
    state = sgd.init(p)
    assert sgd.scalars(state) == ((0.0,), (-0.2,))
    assert sgd.scalars(state, 0.5, l2=0.25) == ((0.25,), (-0.1,))
    assert sgd.learning_rate(state) == 0.2 and not sgd.scale_only
    adam = optim.sklearn_adam(0.1, beta_1=0.5, beta_2=0.75)
    state = adam.init(p)
    lr_1 = 0.1 * math.sqrt(1 - 0.75) / (1 - 0.5)
    assert adam.scalars(state) == ((0.0,), (-lr_1,))
    _, state = adam.update(p, state, p)
    lr_2 = 0.1 * math.sqrt(1 - 0.75**2) / (1 - 0.5**2)
    assert adam.scalars(state, 0.5) == ((0.0,), (-lr_2 * 0.5,))
    with pytest.raises(XbpValueError, match=r"l2=0\.1: the adam optimizer has no per-step"):
        optim.adam(0.1).scalars(optim.adam(0.1).init(p), l2=0.1)
    assert optim.sklearn_sgd(0.1).key == optim.sklearn_sgd(0.5).key
    assert optim.sklearn_sgd(0.1).key != optim.sklearn_sgd(0.1, momentum=0.5).key
    assert optim.sklearn_sgd(0.1).key != optim.sklearn_sgd(0.1, nesterov=False).key
    assert optim.sklearn_adam(0.1).key != optim.sklearn_adam(0.1, epsilon=1e-6).key
    assert optim.adam(optim.cosine(0.1, 5)).key == optim.adam(0.3).key
    assert optim.adam(0.1).key != optim.adam(0.1, weight_decay=0.01).key
