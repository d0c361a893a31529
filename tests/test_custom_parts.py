"""A user's own activation and loss: registered by name, trained, saved, loaded, checked.

The parts here are GELU (tanh form; its derivative needs Z, so it exercises
``from_z``) and the Huber loss, written once against ``xp``. They are compared
with independent formulas written out in NumPy, and with finite differences.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close

import xbp
from xbp import cli
from xbp.errors import XbpFileError, XbpValueError
from xbp.nn.activations import ACTIVATIONS
from xbp.nn.losses import LOSSES

C = 0.7978845608028654  # sqrt(2 / pi)
K = 0.044715
HUBER = 1.0


def gelu(xp, z):
    return 0.5 * z * (1 + xp.tanh(C * (z + K * z * z * z)))


def gelu_prime(xp, z):
    t = xp.tanh(C * (z + K * z * z * z))
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * C * (1 + 3 * K * z * z)


def huber(xp, a, y):
    r = xp.abs(a - y)
    return xp.where(r <= HUBER, 0.5 * r * r, HUBER * (r - 0.5 * HUBER))


def huber_grad(xp, a, y):
    return xp.clip(a - y, -HUBER, HUBER)


@pytest.fixture
def parts():
    """Register GELU and Huber for one test; the registries are restored afterwards."""
    acts, losses = dict(ACTIVATIONS), dict(LOSSES)
    xbp.register_activation("gelu_t", gelu, gelu_prime, from_z=True)
    xbp.register_loss("huber_t", huber, huber_grad)
    yield
    ACTIVATIONS.clear()
    ACTIVATIONS.update(acts)
    LOSSES.clear()
    LOSSES.update(losses)


def data(rows=9, n_in=3, n_out=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, n_in)), 3 * rng.normal(size=(rows, n_out))


def by_hand(params, x, y, w=None):
    """Cost and gradients of a GELU-hidden, identity-output, Huber net, in plain NumPy.

    GELU's derivative here is that of ``0.5 z (1 + tanh(u))`` by the product rule,
    written independently of the registered function."""
    w = np.ones(len(x)) if w is None else w
    n = w.sum()
    a, zs, outs = x, [], [x]
    for i, p in enumerate(params):
        z = a @ p["W"] + p["b"]
        zs.append(z)
        if i < len(params) - 1:
            u = np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)
            a = 0.5 * z * (1 + np.tanh(u))
        else:
            a = z
        outs.append(a)
    r = a - y
    per = np.where(np.abs(r) <= 1, 0.5 * r**2, np.abs(r) - 0.5)
    cost = (per.sum(axis=1) * w).sum() / n
    delta = np.clip(r, -1, 1) * w[:, None] / n
    grads = [None] * len(params)
    for i in range(len(params) - 1, -1, -1):
        grads[i] = {"W": outs[i].T @ delta, "b": delta.sum(axis=0)}
        if i:
            z = zs[i - 1]
            u = np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)
            du = np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * z**2)
            dphi = 0.5 * (1 + np.tanh(u)) + 0.5 * z * du / np.cosh(u) ** 2
            delta = (delta @ params[i]["W"].T) * dphi
    return cost, grads


def test_registered_parts_match_independent_formulas_on_every_backend(parts, backend) -> None:
    x, y = data()
    net = xbp.mlp([3, 5, 4, 2], activation="gelu_t", loss="huber_t", backend=backend, seed=1)
    assert [d.activation for d in net.layers] == ["gelu_t", "gelu_t", "identity"]
    cost_ref, grads_ref = by_hand(net.host_params(), x, y)
    xd = net.check_inputs(x)
    cost, grads, _ = net.value_and_grad(xd, net.check_targets(y, len(x)))
    assert abs(float(cost) - cost_ref) <= 1e-12 * abs(cost_ref)
    for g, ref in zip(grads, grads_ref):
        for key in ("W", "b"):
            assert_close(g[key], ref[key], backend, "float64", 1e-12)


def test_gradcheck_of_gelu_and_huber(parts) -> None:
    x, y = data(seed=3)
    # GELU hidden and as the output layer under the quadratic cost and under Huber
    for layers, loss in (
        ([xbp.nn.Dense(3, 6, "gelu_t"), xbp.nn.Dense(6, 2, "gelu_t")], "quadratic"),
        ([xbp.nn.Dense(3, 6, "gelu_t"), xbp.nn.Dense(6, 2, "gelu_t")], "huber_t"),
        ([xbp.nn.Dense(3, 6, "tanh"), xbp.nn.Dense(6, 2, "identity")], "huber_t"),
    ):
        net = xbp.Network(layers, loss=loss, seed=2)
        errors = xbp.tools.gradcheck(net, x, y)
        assert max(errors.values()) < 1e-7, (loss, errors)


def test_row_weights_reach_a_registered_loss(parts) -> None:
    """Integer weights equal repeated rows, and match the by-hand weighted gradients."""
    x, y = data(rows=5)
    w = np.array([2.0, 0.0, 1.0, 3.0, 1.0])
    net = xbp.mlp([3, 4, 2], activation="gelu_t", loss="huber_t", seed=0)
    cost, grads, _ = net.value_and_grad(x, y, sample_weight=w)
    rep = np.repeat(np.arange(5), w.astype(int))
    cost_rep, grads_rep, _ = net.value_and_grad(x[rep], y[rep])
    cost_ref, grads_ref = by_hand(net.host_params(), x, y, w)
    assert float(cost) == pytest.approx(float(cost_rep), rel=1e-13)
    assert float(cost) == pytest.approx(cost_ref, rel=1e-13)
    for g, gr, ref in zip(grads, grads_rep, grads_ref):
        for key in ("W", "b"):
            np.testing.assert_allclose(g[key], gr[key], rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(g[key], ref[key], rtol=1e-12, atol=1e-15)


def test_a_loss_given_by_its_output_error_equals_the_builtin(parts) -> None:
    """Binary cross-entropy registered from its fused delta = a - y gives the built-in's
    cost and gradients."""

    def bce(xp, a, y):
        return -(y * xp.log(a) + (1 - y) * xp.log(1 - a))

    xbp.register_loss("my_bce", bce, delta=lambda xp, z, a, y: a - y, outputs=["sigmoid"])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)), (rng.random((8, 1)) > 0.5).astype(float)
    mine = xbp.mlp([3, 4, 1], activation="tanh", loss="my_bce", seed=0)
    ref = xbp.mlp([3, 4, 1], activation="tanh", loss="binary_cross_entropy", seed=0)
    assert mine.layers[-1].activation == "sigmoid"  # the first output it lists
    c1, g1 = mine.backprop(x, y)
    c2, g2 = ref.backprop(x, y)
    assert float(c1) == pytest.approx(float(c2), rel=1e-12)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a["W"], b["W"], rtol=1e-12)
    with pytest.raises(XbpValueError, match="cannot follow output activation 'tanh'"):
        xbp.Network([xbp.nn.Dense(3, 1, "tanh")], loss="my_bce")


def test_saved_by_name_and_loadable_when_registered_again(parts, tmp_path: Path) -> None:
    x, y = data()
    net = xbp.mlp([3, 5, 2], activation="gelu_t", loss="huber_t", seed=0)
    xbp.fit(net, x, y, epochs=2, batch_size=3, progress=False)
    path = xbp.save(net, tmp_path / "m.npz")
    before = net.predict(x)
    gelu_rule, huber_rule = ACTIVATIONS.pop("gelu_t"), LOSSES.pop("huber_t")
    with pytest.raises(XbpFileError, match=r"needs the activation 'gelu_t'.*register_activation"):
        xbp.load(path)
    ACTIVATIONS["gelu_t"] = gelu_rule
    with pytest.raises(XbpFileError, match=r"needs the loss 'huber_t'.*register_loss"):
        xbp.load(path)
    xbp.register_loss("huber_t", huber, huber_grad)
    again = xbp.load(path)
    assert again.config() == net.config()
    np.testing.assert_array_equal(again.predict(x), before)
    del huber_rule


def test_usable_by_name_on_the_command_line(parts, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = cli.main(["gradcheck", "--activation", "gelu_t", "--loss", "huber_t", "--layers", "4"])
    assert rc == 0, err.getvalue()
    assert "gelu_t" in out.getvalue() and "passed" in out.getvalue()
    x, y = data(rows=20, n_out=1)
    csv = tmp_path / "r.csv"
    np.savetxt(csv, np.column_stack([x, y[:, 0]]), delimiter=",")
    with redirect_stdout(out), redirect_stderr(err):
        rc = cli.main(
            ["train", "--data", str(csv), "--activation", "gelu_t", "--loss", "huber_t",
             "--layers", "4", "--epochs", "2", "--batch-size", "4", "--quiet",
             "--save", str(tmp_path / "m.npz")]
        )  # fmt: skip
    assert rc == 0, err.getvalue()
    net = xbp.load(tmp_path / "m.npz")
    assert [getattr(d, "activation", d.kind) for d in net.layers] == [
        "standardize",
        "gelu_t",
        "identity",
    ]
    assert net.loss.name == "huber_t"


def test_registration_rules(parts) -> None:
    assert xbp.nn.activations.ACTIVATIONS["gelu_t"].from_z
    # an Activation object is accepted only as the registered one
    assert xbp.nn.Dense(2, 3, ACTIVATIONS["gelu_t"]).activation == "gelu_t"
    # registering a name again replaces its rule: the new one is used from then on
    xbp.register_activation("gelu_t", lambda xp, z: 2 * z, None)
    net = xbp.mlp([2, 1], activation="gelu_t", output="gelu_t", seed=0)
    x = np.array([[1.0, -2.0]])
    np.testing.assert_allclose(net.predict(x), 2 * (x @ net.host_params()[0]["W"]), rtol=1e-15)


def _readme_parts() -> dict:
    """The guide's GELU and Huber definitions (docs/custom.md: its block up to the registration)."""
    from test_readme import PAGE_BLOCKS

    page, source = next(
        (page, src)
        for page, blocks in PAGE_BLOCKS.items()
        for _, src in blocks
        if 'register_activation("gelu"' in src
    )
    defs = source[: source.index("xbp.register_activation(")]
    namespace: dict = {}
    exec(compile(defs, str(page), "exec"), namespace)
    return namespace


def test_readme_parts_run_on_every_backend(parts, backend) -> None:
    ns = _readme_parts()
    xbp.register_activation("gelu_readme", ns["gelu"], ns["gelu_prime"], from_z=True)
    xbp.register_loss("huber_readme", ns["huber"], ns["huber_grad"])
    try:
        x, y = data()
        net = xbp.mlp([3, 5, 2], activation="gelu_readme", loss="huber_readme", seed=1)
        ref = xbp.mlp([3, 5, 2], activation="gelu_t", loss="huber_t", seed=1)
        on = xbp.mlp([3, 5, 2], activation="gelu_readme", loss="huber_readme", backend=backend)
        on.params = net.host_params()
        kw = {"epochs": 2, "batch_size": 4, "progress": False, "seed": 0}
        xbp.fit(on, x, y, **kw)
        xbp.fit(ref, x, y, **kw)  # the module's own GELU and Huber, written independently
        for p, q in zip(on.host_params(), ref.host_params()):
            for key in ("W", "b"):
                np.testing.assert_allclose(p[key], q[key], rtol=1e-9, atol=1e-12)
    finally:
        ACTIVATIONS.pop("gelu_readme", None)
        LOSSES.pop("huber_readme", None)


def test_a_part_that_fails_on_another_backend_is_one_line(parts) -> None:
    """A forward written with NumPy passes the NumPy probe; on array_api_strict it returns
    a NumPy array, which fit reports naming the activation and the backend."""
    xbp.register_activation(
        "np_tanh", lambda xp, z: np.tanh(np.asarray(z)), lambda xp, a: 1 - a * a
    )
    try:
        x, y = data()
        net = xbp.mlp([3, 4, 2], activation="np_tanh", loss="huber_t", backend="array_api_strict")
        with pytest.raises(XbpValueError, match="activation 'np_tanh'.*array_api_strict") as info:
            xbp.fit(net, x, y, epochs=1, batch_size=4, progress=False)
        assert "\n" not in str(info.value)
    finally:
        ACTIVATIONS.pop("np_tanh", None)


def test_an_unregistered_part_is_not_called_a_damaged_file(tmp_path: Path) -> None:
    """Every command that loads a model says which part to register, never that the
    file is invalid: it is intact and loads once the part is registered again."""
    xbp.register_activation("mytanh", lambda xp, z: xp.tanh(z), lambda xp, a: 1 - a * a)
    x, y = data(rows=12)
    path, ck = tmp_path / "m.npz", tmp_path / "ck.npz"
    xbp.save(xbp.mlp([3, 4, 2], activation="mytanh", loss="quadratic", seed=0), path)
    net = xbp.mlp([3, 4, 2], activation="mytanh", loss="quadratic", seed=0)
    xbp.fit(net, x, y, epochs=1, batch_size=4, progress=False, checkpoint=ck)
    rule = ACTIVATIONS.pop("mytanh")
    try:
        calls = [
            lambda: xbp.load(path),
            lambda: xbp.load_checkpoint(ck),
            lambda: xbp.fit(net, x, y, epochs=2, batch_size=4, progress=False, resume=ck),
        ]
        for argv in (
            ["summary", path],
            ["predict", path, "--data", "xor"],
            ["explain", "--model", path, "--data", "xor"],
            ["train", "--resume", ck],
        ):
            calls.append(lambda argv=argv: cli.main(["--debug", *map(str, argv)]))
        for call in calls:
            with pytest.raises(XbpFileError) as info, redirect_stdout(io.StringIO()):
                call()
            text = str(info.value)
            assert "needs the activation 'mytanh', which is not registered" in text, text
            assert "xbp.register_activation('mytanh'" in text and "invalid" not in text, text
    finally:
        ACTIVATIONS["mytanh"] = rule
    assert xbp.load(path).layers[0].activation == "mytanh"
    ACTIVATIONS.pop("mytanh")


def test_cli_imports_a_module_that_registers_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``xbp --import MODULE`` registers a user's parts before the command, so a model
    built from them trains, saves and predicts from the shell; without it the saved
    model names the flag; a module that fails to import is a one-line error."""
    (tmp_path / "xbp_softsign_parts.py").write_text(
        "import xbp\n"
        "xbp.register_activation('softsign_cli', lambda xp, z: z / (1 + xp.abs(z)),\n"
        "                        lambda xp, a: (1 - xp.abs(a)) ** 2)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = tmp_path / "m.npz"
    train = ["train", "--data", "xor", "--layers", "3", "--activation", "softsign_cli", "--loss"]
    train += ["binary_cross_entropy"]
    train += ["--epochs", "2", "--batch-size", "2", "--save", str(model), "--quiet"]
    try:
        with redirect_stdout(io.StringIO()):
            assert cli.main(["--import", "xbp_softsign_parts", *train]) == 0
        assert xbp.load(model).layers[1].activation == "softsign_cli"
        ACTIVATIONS.pop("softsign_cli")
        err = io.StringIO()
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            assert cli.main(["predict", str(model), "--data", "xor"]) == 2
        assert "softsign_cli" in err.getvalue() and "--import MODULE" in err.getvalue()
        import sys

        sys.modules.pop("xbp_softsign_parts", None)  # imported again by the flag
        out = io.StringIO()
        with redirect_stdout(out):
            assert (
                cli.main(["predict", str(model), "--data", "xor", "--import=xbp_softsign_parts"])
                == 0
            )
        assert out.getvalue().strip()
        err = io.StringIO()
        with redirect_stderr(err):
            assert cli.main(["--import", "no_such_xbp_module", "backends"]) == 2
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and "--import no_such_xbp_module" in lines[0], lines
    finally:
        ACTIVATIONS.pop("softsign_cli", None)


def test_a_loss_that_reads_z_after_a_sigmoid_output_gets_z_itself(parts) -> None:
    """The sigmoid computes in place in Z_L where no loss reads it; a registered loss's
    output error reads Z_L, so it must get Z_L unchanged (here sigmoid(z) - y, the
    built-in binary cross-entropy's delta, written from z)."""

    def bce(xp, a, y):
        return -(y * xp.log(a) + (1 - y) * xp.log(1 - a))

    def from_z(xp, z, a, y):
        return 1 / (1 + xp.exp(-z)) - y

    xbp.register_loss("bce_from_z", bce, delta=from_z, outputs=["sigmoid"])
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 3)), (rng.random((8, 1)) > 0.5).astype(float)
    mine = xbp.mlp([3, 4, 1], activation="tanh", loss="bce_from_z", seed=0)
    ref = xbp.mlp([3, 4, 1], activation="tanh", loss="binary_cross_entropy", seed=0)
    c1, g1 = mine.backprop(x, y)
    c2, g2 = ref.backprop(x, y)
    assert float(c1) == pytest.approx(float(c2), rel=1e-12)
    for a, b in zip(g1, g2):
        for key in ("W", "b"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-10, atol=1e-15)


def test_a_part_registered_again_reaches_new_networks_after_old_ones_ran(parts) -> None:
    """The network's per-call caches (its contexts, the kernel's namespace, the checked
    input types) hold no part: after a network ran, a name registered again with a new
    rule gives new networks the new rule, while the old network keeps the one it was
    built with."""
    x, y = data()
    old = xbp.mlp([3, 4, 2], activation="gelu_t", loss="huber_t", seed=0)
    old_cost, _ = old.backprop(x, y)
    old_out = old.predict(x)
    xbp.register_activation(
        "gelu_t",
        lambda xp, z: 2 * gelu(xp, z),
        lambda xp, z: 2 * gelu_prime(xp, z),
        from_z=True,
    )
    xbp.register_loss(
        "huber_t", lambda xp, a, y: 3 * huber(xp, a, y), lambda xp, a, y: 3 * huber_grad(xp, a, y)
    )
    new = xbp.mlp([3, 4, 2], activation="gelu_t", loss="huber_t", seed=0)
    new_cost, new_grads = new.backprop(x, y)
    p = new.host_params()
    h = gelu(np, x @ p[0]["W"] + p[0]["b"]) * 2
    a = h @ p[1]["W"] + p[1]["b"]  # identity output: the loss's default
    assert float(new_cost) == pytest.approx(3 * huber(np, a, y).sum() / len(x), rel=1e-12)
    assert not np.allclose(new.predict(x), old_out)
    np.testing.assert_allclose(new.predict(x), a, rtol=1e-12)
    # the old network keeps its rules
    assert float(old.backprop(x, y)[0]) == float(old_cost)
    np.testing.assert_array_equal(old.predict(x), old_out)
    assert errors_small(new, x, y)


def errors_small(net: xbp.Network, x: np.ndarray, y: np.ndarray) -> bool:
    return max(xbp.tools.gradcheck(net, x, y).values()) < 1e-7
