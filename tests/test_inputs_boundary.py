"""Inputs at the boundary: detached, never aliased where xbp writes, refused when the
network's type cannot hold them (issue 26). Each class runs on numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKEND_SPECS, backend_or_skip, required_backends

import xbp
from xbp.errors import XbpTypeError, XbpValueError

SPECS = [s for s in BACKEND_SPECS if s[0] in ("numpy", "torch-cpu")]
RNG = np.random.default_rng(0)
X = RNG.normal(size=(12, 3))
Y = np.arange(12) % 2


@pytest.fixture(params=SPECS, ids=[s[0] for s in SPECS])
def be(request: pytest.FixtureRequest) -> xbp.backends.select.Backend:
    return backend_or_skip(*request.param, required_backends())


def net(be: xbp.backends.select.Backend, dtype: str = "float64", **kw) -> xbp.Network:
    return xbp.mlp([3, 4, 2], activation="tanh", loss="cross_entropy", backend=be, seed=0,
                   dtype=dtype, **kw)  # fmt: skip


def on(be: xbp.backends.select.Backend, a: np.ndarray) -> object:
    """``a`` as an array of ``be`` (device data), keeping its dtype."""
    return be.asarray(a) if a.dtype.kind != "f" else be.xp.asarray(a, device=be.device)


def fit(n: xbp.Network, x, y, **kw) -> xbp.History:
    return xbp.fit(n, x, y, epochs=1, batch_size=4, progress=False, **kw)


# -- float64 values beyond the network's type -----------------------------------------------
@pytest.mark.parametrize("where", ["host", "device"])
def test_float64_beyond_float32_is_refused(be, where) -> None:
    big = X.copy()
    big[5, 1] = 4e38  # just above float32's largest finite value (3.4028e38)
    x = big if where == "host" else on(be, big)
    with pytest.raises(XbpValueError, match=r"x holds values up to 4e\+38 .* float32"):
        fit(net(be, "float32"), x, Y)
    # the threshold: float32's largest value itself trains (no Inf, no refusal)
    ok = X.copy()
    ok[5, 1] = 3.4e38
    n = net(be, "float32")
    xbp.evaluate(n, ok if where == "host" else on(be, ok), Y)
    # and a float64 network takes the 4e38
    fit(net(be, "float64"), x, Y)


def test_float64_targets_beyond_float32_are_refused(be) -> None:
    n = xbp.mlp([3, 2], loss="quadratic", backend=be, dtype="float32", seed=0)
    y = np.zeros((12, 2))
    y[3, 0] = -1e39
    with pytest.raises(XbpValueError, match="y holds values up to 1e\\+39"):
        fit(n, X, y)


def test_streamed_batches_are_checked_before_the_cast(be) -> None:
    big = X.copy()
    big[7, 0] = 1e300
    with pytest.raises(XbpValueError, match=r"x \(in rows .*\) holds values up to 1e\+300"):
        fit(net(be, "float32"), big, Y, stream=True)


def test_fp16_inputs_beyond_float16_are_refused() -> None:
    be = backend_or_skip("torch-cpu", "torch", "cpu", required_backends())
    n = net(be, "float32", precision="fp16")
    big = X.copy()
    big[0, 0] = 7e4  # float16's largest finite value is 65504
    with pytest.raises(XbpValueError, match=r"computes in fp16 \(float16\)"):
        fit(n, big, Y)
    big[0, 0] = 6e4
    fit(n, big, Y)  # within float16's range: trains


# -- complex values --------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["host", "device"])
def test_complex_inputs_are_refused(be, where) -> None:
    xc = X.astype(np.complex128)
    x = xc if where == "host" else be.xp.asarray(xc, device=be.device)
    with pytest.raises(XbpTypeError, match="x has complex dtype"):
        fit(net(be), x, Y)
    yc = np.eye(2)[Y].astype(np.complex64)
    y = yc if where == "host" else be.xp.asarray(yc, device=be.device)
    with pytest.raises(XbpTypeError, match="y has complex dtype"):
        fit(net(be), X, y)


# -- masked arrays ---------------------------------------------------------------------------
def test_masked_values_are_refused_and_unmasked_arrays_used(be) -> None:
    xm = np.ma.masked_array(X, mask=X > 1.0)
    with pytest.raises(XbpValueError, match=r"x is a NumPy masked array with \d+ masked"):
        fit(net(be), xm, Y)
    ym = np.ma.masked_array(Y, mask=np.arange(12) == 3)
    with pytest.raises(XbpValueError, match="y is a NumPy masked array with 1 masked"):
        fit(net(be), X, ym)
    with pytest.raises(XbpValueError, match="masked array"):
        net(be).predict(xm)
    # the documented rule: a masked array with nothing masked is its values
    clear = np.ma.masked_array(X, mask=np.zeros_like(X, bool))
    np.testing.assert_array_equal(net(be).predict(clear), net(be).predict(X))


# -- autograd and aliasing -------------------------------------------------------------------
def test_torch_inputs_requiring_grad_leave_the_weights_plain() -> None:
    be = backend_or_skip("torch-cpu", "torch", "cpu", required_backends())
    torch = pytest.importorskip("torch")
    x = torch.tensor(X, requires_grad=True)
    y = torch.tensor(np.eye(2)[Y], requires_grad=True)
    n = net(be)
    fit(n, x, y, validation_data=(x, y))
    cost, grads = n.backprop(x, y)
    for p in n.params:
        for w in p.values():
            assert not w.requires_grad and w.grad_fn is None
    assert cost.grad_fn is None and all(g.grad_fn is None for gp in grads for g in gp.values())
    assert n.predict(x).grad_fn is None
    assert x.grad is None  # nothing was differentiated through the user's graph


def test_user_arrays_are_never_written(be) -> None:
    x, y, w = X.copy(), Y.copy(), np.linspace(0.5, 2, 12)
    xd = be.xp.asarray(X, device=be.device)
    before = be.to_host(xd).copy()
    n = net(be)
    fit(n, x, y, sample_weight=w, validation_split=0.25)
    fit(n, xd, y)
    xbp.evaluate(n, x, y)
    xbp.predict(n, xd)
    n.backprop(x, y)
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, Y)
    np.testing.assert_array_equal(w, np.linspace(0.5, 2, 12))
    np.testing.assert_array_equal(be.to_host(xd), before)


# -- lists of rows and evaluation chunks ------------------------------------------------------
def test_predict_takes_a_list_of_rows(be) -> None:
    n = net(be)
    rows = X.tolist()
    np.testing.assert_array_equal(xbp.predict(n, rows, batch_size=5), n.predict(X))
    np.testing.assert_array_equal(xbp.predict(n, list(X)), n.predict(X))  # 1-D arrays
    with pytest.raises(XbpValueError, match="x could not be read as an array"):
        xbp.predict(n, [[1.0, 2.0, 3.0], [1.0]])
    with pytest.raises(XbpTypeError, match="batch 0 is a NoneType"):
        xbp.predict(n, [[None, 1.0]])


def test_evaluate_names_rows_of_the_users_arrays(be) -> None:
    y = Y.copy()
    y[10] = 5
    with pytest.raises(XbpValueError, match=r"^y\[8:12\] holds class labels") as info:
        xbp.evaluate(net(be), X, y, batch_size=4)
    assert "batch" not in str(info.value)
    x = X.copy()
    x[5, 0] = np.nan
    with pytest.raises(XbpValueError, match=r"^x\[4:8\] contains NaN"):
        xbp.predict(net(be), x, batch_size=4)


# -- exact integers from files -----------------------------------------------------------------
@pytest.mark.parametrize("engine", ["pandas", "numpy", "python"])
def test_csv_labels_above_2_53_stay_distinct(tmp_path, engine) -> None:
    path = tmp_path / "big.csv"
    labels = [2**53 + 1, 2**53, 2**53 + 1, 3, -(2**62)]
    path.write_text("".join(f"{i},{i},{v}\n" for i, v in enumerate(labels)))
    x, y = xbp.data.load_csv(path, engine=engine)
    assert y.dtype == np.int64 and y.tolist() == labels
    assert np.unique(y).size == 4  # 2**53 and 2**53 + 1 are two classes
    # whole floats are still labels; beyond 2**53 they are real-valued targets
    path.write_text("1,2,3.0\n3,4,1.0\n")
    assert load_y(path, engine).dtype == np.int64
    path.write_text("1,2,1e17\n3,4,1.0\n")
    assert load_y(path, engine).dtype == np.float64


def load_y(path, engine):
    return xbp.data.load_csv(path, engine=engine)[1]


# -- custom parts: independent buffers, checked results ---------------------------------------
@pytest.fixture
def registries():
    """The part registries restored after the test."""
    from xbp.nn.activations import ACTIVATIONS
    from xbp.nn.losses import LOSSES

    acts, losses = dict(ACTIVATIONS), dict(LOSSES)
    yield
    ACTIVATIONS.clear()
    ACTIVATIONS.update(acts)
    LOSSES.clear()
    LOSSES.update(losses)


def tanh_prime_z(xp, z):
    t = xp.tanh(z)
    return 1 - t * t


def test_in_place_rules_are_refused_at_registration(registries) -> None:
    def doubles(xp, z):
        z *= 2  # writes into xbp's array
        return xp.tanh(z)

    with pytest.raises(XbpValueError, match="doubles modified its argument 1 in place"):
        xbp.register_activation("doubles_t", doubles, tanh_prime_z, from_z=True)

    def clears_y(xp, a, y):
        y[...] = 0
        return (a - y) ** 2

    with pytest.raises(XbpValueError, match="clears_y modified its argument 2 in place"):
        xbp.register_loss("clears_t", clears_y, lambda xp, a, y: 2 * (a - y))


def scribbles(xp, z):
    """tanh, and on large values (the registration probe stays below them) it scribbles
    over its argument: without its own buffer, the backward pass reads zeros."""
    out = xp.tanh(z)
    if bool(xp.any(z > 4)):
        z[...] = 0
    return out


def test_a_rule_writing_its_argument_runs_on_its_own_copy(be, registries) -> None:
    xbp.register_activation("scribbles_t", scribbles, tanh_prime_z, from_z=True)
    xbp.register_activation("clean_t", lambda xp, z: xp.tanh(z), tanh_prime_z, from_z=True)
    x = X * 20  # pre-activations well above 4
    y = np.eye(2)[Y]
    grads = {}
    for act in ("scribbles_t", "clean_t"):
        n = xbp.mlp([3, 4, 2], activation=act, loss="quadratic", backend=be, seed=0)
        _, g = n.backprop(x, y)
        grads[act] = [be.to_host(p["W"]) for p in g]
    for a, b in zip(grads["scribbles_t"], grads["clean_t"]):
        np.testing.assert_array_equal(a, b)


def test_a_loss_writing_its_targets_leaves_them_intact(be, registries) -> None:
    def value(xp, a, y):
        out = (a - y) ** 2
        if bool(xp.any(a > 0.999)):  # never in the probe; always below
            y[...] = 0
        return out

    xbp.register_loss("scribble_loss_t", value, lambda xp, a, y: 2 * (a - y))
    xbp.register_loss("clean_loss_t", lambda xp, a, y: (a - y) ** 2, lambda xp, a, y: 2 * (a - y))
    yd = be.xp.asarray(np.eye(2)[Y] * 5, device=be.device)  # device targets, used as they are
    before = be.to_host(yd).copy()
    costs = {}
    for loss in ("scribble_loss_t", "clean_loss_t"):
        n = xbp.mlp([3, 4, 2], output="identity", loss=loss, backend=be, seed=0)
        costs[loss] = [float(n.backprop(X * 100, yd)[0]) for _ in range(2)]
    np.testing.assert_array_equal(be.to_host(yd), before)
    assert costs["scribble_loss_t"] == costs["clean_loss_t"]


def test_a_rule_returning_the_wrong_shape_or_dtype_is_one_line(be, registries) -> None:
    def per_batch(xp, z):  # right on the 2x3 probe, wrong on a real layer
        return xp.tanh(z) if z.shape[0] == 2 else xp.tanh(z)[:, :1]

    xbp.register_activation("per_batch_t", per_batch, tanh_prime_z, from_z=True)
    n = xbp.mlp([3, 4, 2], activation="per_batch_t", backend=be, seed=0)
    want = r"activation 'per_batch_t' \(per_batch\) returned shape \(12, 1\) for inputs of shape"
    with pytest.raises(XbpValueError, match=want):
        n.predict(X)

    def widens(xp, a, y):
        d = a - y
        return d * d if a.dtype == xp.float64 else xp.astype(d * d, xp.float64)

    xbp.register_loss("widens_t", widens, lambda xp, a, y: 2 * (a - y))
    n32 = xbp.mlp([3, 4, 2], loss="widens_t", output="identity", backend=be, dtype="float32")
    with pytest.raises(XbpValueError, match=r"loss 'widens_t' \(widens\) returned dtype "):
        n32.backprop(X.astype(np.float32), np.eye(2, dtype=np.float32)[Y])


def test_a_registered_layer_runs_on_its_own_input_and_is_checked(be) -> None:
    import dataclasses

    from xbp.nn.layers import unregister_layer

    @xbp.register_layer
    @dataclasses.dataclass(frozen=True)
    class DoubleInPlace(xbp.nn.Layer):
        kind = "double_in_place_t"
        n: int
        wrong: bool = False
        n_in = property(lambda self: self.n)
        n_out = property(lambda self: self.n)

        def forward(self, ctx, p, s, a, l):
            a *= 2  # in place: on the user's own array, were it passed through
            return (a[:, :1] if self.wrong else a), None, None

        def backward(self, ctx, p, saved, d, need_input):
            return (2.0 * d if need_input else None), {}

    try:
        x = X.copy()
        xd = be.xp.asarray(X, device=be.device)
        n = xbp.Network([DoubleInPlace(3), xbp.nn.Dense(3, 2, "identity")], backend=be)
        ref = xbp.Network([xbp.nn.Dense(3, 2, "identity")], backend=be)
        ref.params = [{"W": 2 * n.params[1]["W"], "b": n.params[1]["b"]}]
        for inp in (x, xd):
            np.testing.assert_allclose(be.to_host(n.forward(inp)), be.to_host(ref.forward(X)))
        np.testing.assert_array_equal(x, X)  # the user's arrays are untouched
        np.testing.assert_array_equal(be.to_host(xd), X)
        bad = xbp.Network(
            [DoubleInPlace(3, wrong=True), xbp.nn.Dense(3, 2, "identity")], backend=be
        )
        want = r"layer 'double_in_place_t' \(DoubleInPlace\.forward\) returned shape \(12, 1\)"
        with pytest.raises(XbpValueError, match=want + r" where \(12, 3\) was due"):
            bad.predict(X)
    finally:
        unregister_layer("double_in_place_t")


# -- one-line errors instead of tracebacks ------------------------------------------------------
@pytest.mark.parametrize("policy", ["bf16", "fp16"])
def test_explain_on_a_mixed_precision_network(policy) -> None:
    be = backend_or_skip("torch-cpu", "torch", "cpu", required_backends())
    n = net(be, "float32", precision=policy)
    before = [be.to_host(p["W"]).copy() for p in n.params]
    text = xbp.explain(n, X[:1], Y[:1])
    assert f"trains with precision={policy!r}" in text and "exact float32" in text
    assert n.precision == policy  # put back
    exact = xbp.explain(net(be, "float32"), X[:1], Y[:1]).splitlines()
    assert [t for t in text.splitlines() if not t.startswith("precision:")] == exact
    for b, p in zip(before, n.params):
        np.testing.assert_array_equal(b, be.to_host(p["W"]))


def test_explain_says_when_dropout_is_left_out(be) -> None:
    layers = [xbp.nn.Dense(3, 4, "tanh", dropout=0.25), xbp.nn.Dense(4, 2, "softmax")]
    n = xbp.Network(layers, loss="cross_entropy", backend=be)
    assert "dropout (layer 1: 0.25): training zeroes inputs at random" in xbp.explain(
        n, X[:1], Y[:1]
    )
    assert "dropout" not in xbp.explain(net(be), X[:1], Y[:1])


def test_fp16_loss_scale_stops_before_zero() -> None:
    from xbp.errors import DivergenceError
    from xbp.train.loop import MIN_LOSS_SCALE, LossScaler

    s = LossScaler()
    while s.scale * 0.5 >= MIN_LOSS_SCALE:  # down to the floor: still running
        s.update(False)
    assert s.scale == MIN_LOSS_SCALE and s.skipped == 40
    with pytest.raises(DivergenceError, match="steps overflowed float16"):
        s.update(False)  # the next halving would pass the floor (and, later, reach 0)


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_network_seed_is_checked(be, seed) -> None:
    with pytest.raises((XbpValueError, XbpTypeError), match=f"seed={seed!r}"):
        xbp.mlp([3, 4, 2], seed=seed, backend=be)
    assert xbp.mlp([3, 2], seed=None, backend=be).seed is None


def test_the_no_x64_test_device_is_refused_and_not_listed() -> None:
    strict = pytest.importorskip("array_api_strict")
    with pytest.raises(XbpValueError, match="no 64-bit integers"):
        xbp.backend("array_api_strict", strict.Device("no_x64"))
    info = {b.name: b for b in xbp.available_backends()}["array_api_strict"]
    assert "no_x64" not in info.devices and "no_float64" in info.devices


def test_bench_refuses_unknown_backends(capsys) -> None:
    from xbp import cli

    assert cli.main(["bench", "--cases", "tiny", "--backends", "nunpy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--backends ['nunpy'] not known" in err[0]


@pytest.mark.parametrize("rows", ["abc", "10", "0,5", "2000000,1"])
def test_train_mnist_checks_synthetic_rows(tmp_path, rows) -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "train_mnist.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--synthetic", f"--synthetic-rows={rows}"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "--synthetic-rows" in proc.stderr


def test_estimators_detach_torch_inputs_and_refuse_complex_ones() -> None:
    be = backend_or_skip("torch-cpu", "torch", "cpu", required_backends())
    torch = pytest.importorskip("torch")
    from xbp.sklearn import MLPClassifier

    xt = torch.tensor(X, requires_grad=True)
    m = MLPClassifier((4,), max_iter=2, backend=be.name, random_state=0).fit(xt, Y)
    assert not any(w.requires_grad for p in m._net.params for w in p.values())
    assert xt.grad is None
    with pytest.raises(ValueError, match="Complex data not supported"):
        MLPClassifier((4,), max_iter=2, backend=be.name).fit(torch.tensor(X + 1j), Y)


def test_a_backward_rule_may_still_overwrite_its_temporaries(be, registries) -> None:
    def backward(xp, d, a):
        d *= 1 - a * a  # documented: backward may overwrite both arguments
        return d

    xbp.register_activation("tanh_bw_t", lambda xp, z: xp.tanh(z), lambda xp, a: 1 - a * a,
                            backward=backward)  # fmt: skip
    n = xbp.mlp([3, 4, 2], activation="tanh_bw_t", loss="quadratic", backend=be, seed=0)
    ref = xbp.mlp([3, 4, 2], activation="tanh", loss="quadratic", backend=be, seed=0)
    for g, r in zip(n.backprop(X, np.eye(2)[Y])[1], ref.backprop(X, np.eye(2)[Y])[1]):
        np.testing.assert_allclose(be.to_host(g["W"]), be.to_host(r["W"]), rtol=1e-12)
