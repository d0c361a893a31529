from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from conftest import assert_close, backend_or_skip, required_backends

import xbp

HIDDEN = ["sigmoid", "tanh", "relu", "leaky_relu", "softplus", "identity"]
# every valid (output activation, loss) pair
OUTPUT_LOSS = [(act, "quadratic") for act in HIDDEN] + [
    ("softmax", "cross_entropy"),
    ("sigmoid", "binary_cross_entropy"),
]
TOL = {"float64": 1e-12, "float32": 1e-5}


def configs() -> list[tuple[list[int], str, str, str]]:
    """(sizes, hidden activation, output activation, loss) for depths 1-3."""
    out = []
    for (output, loss), depth in itertools.product(OUTPUT_LOSS, (1, 2, 3)):
        hidden_acts = ["sigmoid"] if depth == 1 else HIDDEN
        for hidden in hidden_acts:
            sizes = [5, 6, 4, 3][:depth] + [3 if loss != "binary_cross_entropy" else 2]
            out.append((sizes, hidden, output, loss))
    return out


def batch(rng: np.random.Generator, sizes: list[int], loss: str, n: int = 7):
    x = rng.normal(size=(n, sizes[0]))
    k = sizes[-1]
    if loss == "cross_entropy":
        y = rng.integers(0, k, n)
    elif loss == "binary_cross_entropy":
        y = (rng.random((n, k)) > 0.5).astype(float)
    else:
        y = rng.normal(size=(n, k))
    return x, y


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gradients_match_numpy_on_every_backend(
    backend: xbp.backends.select.Backend, dtype: str
) -> None:
    rng = np.random.default_rng(7)
    for sizes, hidden, output, loss in configs():
        x, y = batch(rng, sizes, loss)
        kwargs = dict(activation=hidden, output=output, loss=loss, seed=3, dtype=dtype)
        ref = xbp.mlp(sizes, backend="numpy", init="nielsen", **kwargs)
        net = xbp.mlp(sizes, backend=backend, init="nielsen", **kwargs)
        ref_loss, ref_grads = ref.backprop(x.astype(dtype), y)
        loss_value, grads = net.backprop(x.astype(dtype), y)
        label = f"{sizes} {hidden}->{output} {loss} {dtype}"
        assert abs(float(loss_value) - float(ref_loss)) <= TOL[dtype] * max(
            1.0, abs(float(ref_loss))
        ), label
        scale = max(float(np.max(np.abs(g[k]))) for g in ref_grads for k in "Wb")
        for i, (g, r) in enumerate(zip(grads, ref_grads)):
            assert sorted(g) == ["W", "b"]
            for key in "Wb":
                assert backend.owns(g[key]) and backend.same_device(g[key]), label
                assert backend.dtype_name(g[key].dtype) == dtype, label
                host = backend.to_host(g[key])
                assert host.shape == r[key].shape, label
                err = float(np.max(np.abs(host - r[key]))) / scale
                assert err <= TOL[dtype], f"{label} layer {i} {key}: {err:.2e}"


def numpy_cost(params: list[dict[str, np.ndarray]], x, y, acts: list[str], loss: str) -> float:
    """The cost, written independently of xbp in NumPy float64 (the reference for gradcheck)."""
    a = x
    for p, act in zip(params, acts):
        z = a @ p["W"] + p["b"]
        if act == "sigmoid":
            a = 1 / (1 + np.exp(-z))
        elif act == "tanh":
            a = np.tanh(z)
        elif act == "relu":
            a = np.maximum(z, 0)
        elif act == "leaky_relu":
            a = np.where(z > 0, z, 0.01 * z)
        elif act == "softplus":
            a = np.logaddexp(0, z)
        elif act == "identity":
            a = z
        elif act == "softmax":
            e = np.exp(z - z.max(axis=1, keepdims=True))
            a = e / e.sum(axis=1, keepdims=True)
        else:
            raise AssertionError(act)
    n = x.shape[0]
    if loss == "quadratic":
        return float(np.sum((a - y) ** 2) / (2 * n))
    if loss == "cross_entropy":
        return float(-np.sum(np.log(a[np.arange(n), y])) / n)
    return float(-np.sum(y * np.log(a) + (1 - y) * np.log(1 - a)) / n)


def numpy_central_differences(params, x, y, acts, loss, eps=1e-6):
    """dC/dparam for every entry by (C(w + eps) - C(w - eps)) / 2 eps, all in NumPy float64."""
    grads = []
    for i, p in enumerate(params):
        grads.append({})
        for key in "Wb":
            g = np.empty(p[key].shape)
            for idx in np.ndindex(p[key].shape):
                costs = []
                for sign in (1.0, -1.0):
                    trial = [{k: v.copy() for k, v in q.items()} for q in params]
                    trial[i][key][idx] += sign * eps
                    costs.append(numpy_cost(trial, x, y, acts, loss))
                g[idx] = (costs[0] - costs[1]) / (2 * eps)
            grads[i][key] = g
    return grads


@pytest.mark.parametrize("output,loss", OUTPUT_LOSS, ids=[f"{a}-{b}" for a, b in OUTPUT_LOSS])
def test_gradcheck_every_pair(
    backend: xbp.backends.select.Backend, output: str, loss: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gradcheck runs on the network's own device, and backprop there matches NumPy differences."""
    calls: list[tuple[xbp.backends.select.Backend, bool, str]] = []
    real = xbp.Network.value_and_grad

    def spy(self, x, y, **kwargs):
        on_device = backend.owns(x) and backend.same_device(x)
        calls.append((self.backend, on_device, self.backend.dtype_name(self.dtype)))
        return real(self, x, y, **kwargs)

    monkeypatch.setattr(xbp.Network, "value_and_grad", spy)
    rng = np.random.default_rng(11)
    for hidden in HIDDEN:
        sizes = [3, 4, 2]
        x, y = batch(rng, sizes, loss, n=5)
        # random biases (nielsen) keep every z away from the relu kink at 0
        net = xbp.mlp(
            sizes,
            activation=hidden,
            output=output,
            loss=loss,
            seed=5,
            backend=backend,
            init="nielsen",
            dtype="float32",
        )
        label = f"{hidden}->{output} {loss}"
        calls.clear()
        errs = xbp.tools.gradcheck(net, x, y, tol=1e-6)
        assert set(errs) == {"layer0.W", "layer0.b", "layer1.W", "layer1.b"}
        assert max(errs.values()) <= 1e-6, (label, errs)
        # every pass gradcheck made ran on this backend and device, in float64
        assert calls, f"{label}: gradcheck never called Network.value_and_grad"
        for be, on_device, dtype in calls:
            assert be == backend and on_device and dtype == "float64", (label, be, dtype)
        # independently: backprop on this device against differences of a NumPy cost
        net64 = net.to(dtype="float64")
        _, grads = net64.backprop(x, y)
        acts = [hidden, output]
        ref = numpy_central_differences(net64.host_params(), x, y, acts, loss)
        scale = max(float(np.max(np.abs(g[k]))) for g in ref for k in "Wb")
        for i, (g, r) in enumerate(zip(grads, ref)):
            for key in "Wb":
                assert backend.owns(g[key]) and backend.same_device(g[key]), label
                err = float(np.max(np.abs(backend.to_host(g[key]) - r[key]))) / scale
                assert err <= 1e-7, f"{label} layer {i} {key}: {err:.2e} against NumPy"


def test_gradcheck_catches_a_wrong_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    net = xbp.mlp([3, 4, 2], activation="tanh", seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    real = xbp.Network.value_and_grad

    def broken(self, x, y, **kwargs):
        result = real(self, x, y, **kwargs)
        if result.grads:  # not a forward-only pass
            result.grads[0]["W"] = result.grads[0]["W"] * 1.01
        return result

    monkeypatch.setattr(xbp.Network, "value_and_grad", broken)
    with pytest.raises(xbp.errors.GradcheckError, match="layer0.W"):
        xbp.tools.gradcheck(net, x, y)
    errs = xbp.tools.gradcheck(net, x, y, raise_on_failure=False)
    assert errs["layer0.W"] > 1e-3 and errs["layer1.W"] < 1e-6


@pytest.mark.parametrize("init", xbp.nn.init.INITS)
def test_same_seed_same_weights_everywhere(backend: xbp.backends.select.Backend, init: str) -> None:
    ref = xbp.mlp([4, 5, 3], init=init, seed=42, backend="numpy", dtype="float32")
    net = xbp.mlp([4, 5, 3], init=init, seed=42, backend=backend, dtype="float32")
    for p, r in zip(net.params, ref.params):
        for key in "Wb":
            np.testing.assert_array_equal(backend.to_host(p[key]), r[key])


def test_init_statistics() -> None:
    net = xbp.mlp([400, 300, 10], init="nielsen", seed=0)
    w, b = net.params[0]["W"], net.params[0]["b"]
    assert abs(w.std() - 1 / np.sqrt(400)) < 0.002 and abs(b.std() - 1) < 0.15
    net = xbp.mlp([400, 300, 10], init="glorot_uniform", seed=0)
    limit = np.sqrt(6 / 700)
    assert np.abs(net.params[0]["W"]).max() <= limit and not net.params[0]["b"].any()
    net = xbp.mlp([400, 300, 10], init="he_normal", seed=0)
    assert abs(net.params[0]["W"].std() - np.sqrt(2 / 400)) < 0.002


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_results_stay_on_input_backend_and_device(
    backend: xbp.backends.select.Backend, dtype: str
) -> None:
    net = xbp.mlp([3, 4, 2], activation="relu", loss="cross_entropy", backend=backend, dtype=dtype)
    x = backend.asarray(np.random.default_rng(0).normal(size=(6, 3)), dtype)
    out = net.forward(x)
    ref = xbp.mlp([3, 4, 2], activation="relu", loss="cross_entropy", dtype=dtype).forward(
        backend.to_host(x)
    )
    assert_close(out, ref, backend, dtype, TOL[dtype])
    pred = net.predict(x)
    assert backend.owns(pred) and backend.same_device(pred)
    host_pred = net.predict(backend.to_host(x))
    assert isinstance(host_pred, np.ndarray) and host_pred.dtype == np.dtype(dtype)
    np.testing.assert_allclose(backend.to_host(out).sum(axis=1), 1.0, rtol=1e-5)


def test_to_moves_bit_exact(backend: xbp.backends.select.Backend) -> None:
    net = xbp.mlp([3, 5, 2], activation="tanh", seed=9)
    moved = net.to(backend.name, device=backend.device)
    assert moved.backend == backend
    back = moved.to("numpy")
    for p, q in zip(net.params, back.params):
        for key in "Wb":
            np.testing.assert_array_equal(p[key], q[key])
    x = np.random.default_rng(1).normal(size=(4, 3))
    np.testing.assert_allclose(moved.predict(x), net.predict(x), rtol=1e-12, atol=0)


def test_params_assignable_and_copied(backend: xbp.backends.select.Backend) -> None:
    net = xbp.mlp([2, 2, 1], output="sigmoid", backend=backend)
    new = [{"W": np.ones((2, 2)), "b": np.zeros(2)}, {"W": np.ones((2, 1)), "b": np.ones(1)}]
    net.params = new
    out = net.predict(np.array([[1.0, 2.0]]))
    sig = lambda t: 1 / (1 + np.exp(-t))  # noqa: E731
    np.testing.assert_allclose(out, sig(2 * sig(3.0) + 1).reshape(1, 1), rtol=1e-12)
    new[0]["W"][0, 0] = 100.0  # the network holds its own copy
    np.testing.assert_allclose(net.predict(np.array([[1.0, 2.0]])), out, rtol=1e-12)


def test_quadratic_cost_is_half_mean_squared_norm() -> None:
    net = xbp.Network([xbp.nn.Dense(2, 2, "identity")], loss="mse")
    net.params = [{"W": np.eye(2), "b": np.zeros(2)}]
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    y = np.array([[0.0, 2.0], [3.0, 0.0]])
    # C = 1/(2n) sum ||y - a||^2 = (1 + 16) / 4
    assert net.loss_value(x, y) == pytest.approx(17 / 4, rel=1e-15)


def test_stable_losses_survive_huge_logits() -> None:
    net = xbp.Network([xbp.nn.Dense(1, 2, "softmax")], loss="cross_entropy")
    net.params = [{"W": np.array([[1000.0, -1000.0]]), "b": np.zeros(2)}]
    loss, grads = net.backprop(np.array([[1.0]]), np.array([1]))
    assert float(loss) == pytest.approx(2000.0) and np.isfinite(grads[0]["W"]).all()
    net = xbp.Network([xbp.nn.Dense(1, 1, "sigmoid")], loss="binary_cross_entropy")
    net.params = [{"W": np.array([[800.0]]), "b": np.zeros(1)}]
    loss, _ = net.backprop(np.array([[1.0]]), np.array([[0.0]]))
    assert float(loss) == pytest.approx(800.0)


@pytest.mark.parametrize(
    "output,loss", OUTPUT_LOSS[-3:], ids=[f"{a}-{b}" for a, b in OUTPUT_LOSS[-3:]]
)
def test_row_weights_equal_repeated_rows(
    backend: xbp.backends.select.Backend, output: str, loss: str
) -> None:
    """value_and_grad(sample_weight=w) with integer w equals the batch with row i
    repeated w_i times (a zero weight drops the row), on every backend."""
    rng = np.random.default_rng(4)
    sizes = [3, 5, 3 if loss != "binary_cross_entropy" else 1]
    x, y = batch(rng, sizes, loss, n=6)
    w = np.array([1.0, 2.0, 0.0, 3.0, 1.0, 2.0])
    rep = np.repeat(np.arange(6), w.astype(int))
    ref = xbp.mlp(sizes, activation="tanh", output=output, loss=loss, seed=2, dtype="float64")
    want_cost, want_grads, _ = ref.value_and_grad(
        ref.check_inputs(x[rep]), ref.check_targets(y[rep], len(rep))
    )
    net = xbp.mlp(
        sizes, activation="tanh", output=output, loss=loss, seed=2, dtype="float64", backend=backend
    )
    cost, grads, _ = net.value_and_grad(
        net.check_inputs(x), net.check_targets(y, 6), sample_weight=backend.asarray(w, "float64")
    )
    np.testing.assert_allclose(float(cost), float(want_cost), rtol=1e-12)
    for g, h in zip(grads, want_grads):
        for key in "Wb":
            np.testing.assert_allclose(backend.to_host(g[key]), h[key], rtol=1e-12, atol=1e-14)


def test_the_kernels_namespace_reduces_to_the_same_bits(
    backend: xbp.backends.select.Backend,
) -> None:
    """The kernel may compute with faster direct forms of its namespace's functions
    (NumPy's reductions without their Python wrappers): every name is there, and the
    reductions give the same values, types, dtypes and shapes, summed in the same order
    (300 rows cross NumPy's pairwise-summation blocks)."""
    xp, kxp = backend.xp, backend.kernel_xp
    assert all(hasattr(kxp, name) for name in getattr(xp, "__all__", ()))
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        a = backend.asarray(rng.normal(size=(300, 7)) * 1e3, dtype)
        for name, axis, keepdims in itertools.product(
            ("sum", "max", "min"), (None, 0, 1, (0, 1)), (False, True)
        ):
            got = getattr(kxp, name)(a, axis=axis, keepdims=keepdims)
            want = getattr(xp, name)(a, axis=axis, keepdims=keepdims)
            label = f"{name} axis={axis} keepdims={keepdims} {dtype}"
            assert type(got) is type(want) and got.dtype == want.dtype, label
            assert tuple(got.shape) == tuple(want.shape), label
            np.testing.assert_array_equal(backend.to_host(got), backend.to_host(want), label)
    ints = backend.asarray(np.arange(10, dtype=np.int32))
    assert kxp.sum(ints).dtype == xp.sum(ints).dtype and int(kxp.sum(ints)) == 45


@pytest.mark.parametrize("extra", [{}, {"norm": "layer"}, {"norm": "batch"}])
def test_the_kernels_namespace_changes_no_gradient(
    backend: xbp.backends.select.Backend, extra: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """value_and_grad with the kernel's namespace equals, bit for bit, the same pass with
    the plain namespace, for every output and loss (softmax + cross-entropy reduces
    with max and sum, normalisations with sum)."""
    rng = np.random.default_rng(3)
    own_logistic = hasattr(backend.kernel_xp, "logistic")  # read before any patch
    for output, loss in OUTPUT_LOSS:
        sizes = [4, 5, 3 if loss != "binary_cross_entropy" else 2]
        x, y = batch(rng, sizes, loss, n=9)
        kw = dict(activation="tanh", output=output, loss=loss, seed=1, backend=backend, **extra)
        results = []
        for plain in (False, True):
            net = xbp.mlp(sizes, **kw)
            if plain:  # the network's backend is its own object: patch it alone
                monkeypatch.setattr(net.backend, "kernel_xp", net.backend.xp)
            xd, yd = net.check_inputs(x), net.check_targets(y, 9)
            cost, grads, out = net.value_and_grad(xd, yd)
            results.append([cost, out, *(g[k] for g in grads for k in sorted(g))])
        label = f"{output} {loss} {extra}"
        for got, want in zip(*results):
            got, want = backend.to_host(got), backend.to_host(want)
            if output == "sigmoid" and own_logistic:
                # the library's own logistic (torch): equal to rounding, not bit for bit
                eps = float(np.finfo(want.dtype).eps)
                np.testing.assert_allclose(got, want, rtol=64 * eps, atol=64 * eps, err_msg=label)
            else:
                np.testing.assert_array_equal(got, want, label)


def test_the_sigmoid_takes_a_librarys_own_logistic() -> None:
    """Where the kernel's namespace carries ``logistic`` (torch: its CPU ``tanh`` is
    several times slower than its ``sigmoid``), the sigmoid activation is that function;
    its values agree with the standard's ``(1 + tanh(z/2)) / 2`` to rounding."""
    torch_be = backend_or_skip("torch-cpu", "torch", "cpu", required_backends())
    import torch

    assert torch_be.kernel_xp.logistic is torch.sigmoid
    act = xbp.nn.activations.get_activation("sigmoid")
    z = np.linspace(-40, 40, 801)
    calls = []

    def spy(t: Any) -> Any:
        calls.append(t.shape)
        return torch.sigmoid(t)

    ns = xbp.backends.extended_namespace(torch_be.xp, logistic=spy)
    got = act.forward(ns, torch.asarray(z.copy())).numpy()
    assert calls == [(801,)]
    want = act.forward(xbp.backend("numpy").kernel_xp, z.copy())
    # the tanh form rounds the far negative tail to 0 (1 + tanh(z/2) cancels); the
    # library's keeps it (4e-18 at z = -40): equal to within one rounding of 1
    eps = float(np.finfo(np.float64).eps)
    np.testing.assert_allclose(got, want, rtol=4 * eps, atol=eps)
    assert got[0] > 0 and want[0] == 0


def test_a_precision_change_rebuilds_the_passes_contexts() -> None:
    """The contexts a network keeps for its passes belong to one precision policy: after
    ``net.precision = "bf16"`` the products run in bfloat16 (as in a network built with
    it), and back at ``"exact"`` in float32 again."""
    torch_be = backend_or_skip("torch-cpu", "torch", "cpu", required_backends())
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)).astype("float32"), rng.integers(0, 2, 6)
    kw = dict(activation="tanh", loss="cross_entropy", backend=torch_be, dtype="float32", seed=0)
    net = xbp.mlp([3, 8, 2], **kw)
    exact = [torch_be.to_host(g["W"]) for g in net.backprop(x, y)[1]]
    net.precision = "bf16"
    mixed = [torch_be.to_host(g["W"]) for g in net.backprop(x, y)[1]]
    fresh = xbp.mlp([3, 8, 2], precision="bf16", **kw)
    want = [torch_be.to_host(g["W"]) for g in fresh.backprop(x, y)[1]]
    for got, ref, plain in zip(mixed, want, exact):
        np.testing.assert_array_equal(got, ref)
        assert not np.array_equal(got, plain)
    net.precision = "exact"
    for got, plain in zip((torch_be.to_host(g["W"]) for g in net.backprop(x, y)[1]), exact):
        np.testing.assert_array_equal(got, plain)


def test_a_traced_pass_leaves_nothing_cached_on_the_network() -> None:
    """Inside :func:`xbp.nn.network.no_caches` (how compiled steps trace the kernel) a
    pass keeps nothing on the network: a traced value kept there (the bias gradients'
    ones vector) would leak out of the trace into the next eager pass."""
    import jax

    jax_be = backend_or_skip("jax-cpu", "jax", "cpu", required_backends())
    net = xbp.mlp([3, 4, 2], activation="tanh", backend=jax_be, seed=0)
    rng = np.random.default_rng(0)
    x, y = net.check_inputs(rng.normal(size=(5, 3))), net.check_targets(rng.normal(size=(5, 2)), 5)

    @jax.jit
    def traced(params):
        with xbp.nn.network.no_caches():
            return net.value_and_grad(x, y, params=params)[1]

    compiled = traced(net.params)
    eager = net.value_and_grad(x, y)[1]  # a leaked tracer would raise here
    for g, h in zip(compiled, eager):
        for key in "Wb":
            np.testing.assert_allclose(jax_be.to_host(g[key]), jax_be.to_host(h[key]), rtol=1e-12)


def test_the_benchmark_times_the_checked_backprop_against_the_same_pass_by_hand() -> None:
    """``xbp bench`` times the public, checked ``net.backprop`` (host NumPy data; torch
    tensors on torch) beside the same forward and backward pass written by hand and by
    torch autograd, and reports their ratios."""
    from xbp.tools import bench

    case = bench.CASES["tiny"]
    mine = bench.xbp_backprop_contender(case, "numpy")
    hand = bench.numpy_backprop_contender(case)
    assert mine.name == "xbp numpy backprop" and hand.name == "numpy by hand backprop"
    loss, grads = mine.step()
    hand_loss, hand_grads = hand.step()
    assert [g["W"].shape for g in grads] == [g[0].shape for g in hand_grads]
    assert [g["b"].shape for g in grads] == [g[1].shape for g in hand_grads]
    assert np.isfinite(float(loss)) and np.isfinite(float(hand_loss))
    med = {
        "xbp numpy backprop": 3.0,
        "numpy by hand backprop": 2.0,
        "xbp torch-cpu backprop": 1.0,
        "torch autograd cpu backprop": 4.0,
        "GEMM only torch-cpu": 3.6,
    }
    got = bench.ratios("tiny", med)
    assert got["xbp backprop/hand backprop"] == 1.5
    assert got["xbp-torch-cpu backprop/torch autograd backprop"] == 0.25
    # the floor of that ratio: torch's time in the products both passes compute
    assert got["GEMM floor torch-cpu/torch autograd backprop"] == pytest.approx(0.9)
    names = [c.name for c in bench.contenders("tiny", ["torch"])]
    if "torch autograd cpu backprop" in names:
        assert "GEMM only torch-cpu" in names


@pytest.mark.parametrize("loss", ["quadratic", "binary_cross_entropy"])
def test_checked_float32_calls_warn_nothing(loss: str) -> None:
    """The checks' one read of float32 host data compares in Python floats: the square of
    float32's largest value would overflow a float32 comparison (a RuntimeWarning on
    every call)."""
    import warnings

    net = xbp.mlp([2, 4, 1], output="sigmoid", loss=loss, dtype="float32", seed=0)
    x, y = np.ones((4, 2), np.float32), np.ones((4, 1), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):  # the later calls take the one-read path
            net.backprop(x, y)
            net.predict(x)
