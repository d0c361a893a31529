"""The precision policy: exact IEEE products by default on every backend, TF32 on request."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest
from conftest import backend_or_skip, required_backends

import xbp
from xbp.errors import XbpValueError
from xbp.train.loop import LossScaler


def test_exact_is_the_default_and_is_saved(
    backend: xbp.backends.select.Backend, tmp_path: Any
) -> None:
    net = xbp.mlp([3, 4, 2], loss="cross_entropy", backend=backend, seed=0)
    assert net.precision == "exact" and net.config()["precision"] == "exact"
    xbp.save(net, tmp_path / "m.npz")
    assert xbp.load(tmp_path / "m.npz", backend=backend).precision == "exact"
    assert xbp.Network.from_config(net.config(), backend=backend).precision == "exact"


def test_tf32_is_refused_where_the_device_has_no_tf32(backend: xbp.backends.select.Backend) -> None:
    if str(backend.device).startswith(("cuda", "gpu")):
        pytest.skip("a GPU may have TF32")
    with pytest.raises(XbpValueError, match=r"precision='tf32' needs TensorFloat-32.*'exact'"):
        xbp.mlp([3, 4, 2], backend=backend, precision="tf32")
    net = xbp.mlp([3, 4, 2], backend=backend)
    x, y = np.zeros((4, 3)), np.zeros((4, 2))
    with pytest.raises(XbpValueError, match="precision='tf32'"):
        xbp.fit(net, x, y, epochs=1, batch_size=2, precision="tf32", progress=False)
    assert net.precision == "exact"


def test_unknown_policies_are_refused() -> None:
    with pytest.raises(XbpValueError, match=r"precision='bf17' is not known"):
        xbp.mlp([2, 1], precision="bf17")
    with pytest.raises(XbpValueError, match=r"precision='half' is not known"):
        xbp.TrainOptions(precision="half")


def test_every_product_of_the_kernel_runs_inside_the_scope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered: list[str] = []

    @contextlib.contextmanager
    def scope(self: Any, policy: str) -> Any:
        entered.append(policy)
        yield

    net = xbp.mlp([3, 4, 2], loss="cross_entropy", seed=0)
    monkeypatch.setattr(xbp.backends.select.Backend, "precision_scope", scope)
    x = np.ones((5, 3))
    calls = {
        "backprop": lambda: net.backprop(x, np.arange(5) % 2),
        "forward": lambda: net.forward(x),
        "layer_outputs": lambda: net.layer_outputs(x),
        "evaluate": lambda: net.evaluate(x, np.arange(5) % 2),
    }
    for name, call in calls.items():
        entered.clear()
        call()
        assert entered and set(entered) == {"exact"}, name


def test_jax_exact_scope_is_highest_and_leaves_the_global_setting() -> None:
    be = backend_or_skip("jax-cpu", "jax", "cpu", required_backends())
    import jax

    jax.config.update("jax_default_matmul_precision", "bfloat16")  # a user's own choice
    try:
        with be.precision_scope("exact"):
            assert jax.config.jax_default_matmul_precision == "highest"
        assert jax.config.jax_default_matmul_precision == "bfloat16"
    finally:
        jax.config.update("jax_default_matmul_precision", None)


def test_torch_scopes_set_the_tf32_switch_for_xbp_and_restore_the_users() -> None:
    be = backend_or_skip("torch-cpu", "torch", "cpu", required_backends())
    import torch

    lib = be.library
    flags = torch.backends.cuda.matmul
    saved = flags.allow_tf32
    try:
        flags.allow_tf32 = True  # another library switched TF32 on globally
        with lib.precision_scope("exact", torch.device("cuda")):
            assert flags.allow_tf32 is False
        assert flags.allow_tf32 is True
        flags.allow_tf32 = False
        with lib.precision_scope("tf32", torch.device("cuda")):
            assert flags.allow_tf32 is True
        assert flags.allow_tf32 is False
    finally:
        flags.allow_tf32 = saved


def test_float32_gradients_agree_with_numpy_under_exact(
    backend: xbp.backends.select.Backend,
) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 20)).astype(np.float32)
    y = rng.integers(0, 5, 32)
    ref = xbp.mlp([20, 64, 5], loss="cross_entropy", dtype="float32", seed=1)
    net = xbp.mlp([20, 64, 5], loss="cross_entropy", dtype="float32", seed=1, backend=backend)
    _, g_ref = ref.backprop(x, y)
    _, g = net.backprop(x, y)
    for a, b in zip(g_ref, g):
        for k in a:
            expect = np.asarray(a[k])
            err = np.max(np.abs(backend.to_host(b[k]) - expect)) / np.max(np.abs(expect))
            assert err <= 1e-5, (k, err)


# -- mixed precision: bf16 / fp16 -----------------------------------------------------------
MIXED_BACKENDS = [("torch-cpu", "torch", "cpu"), ("jax-cpu", "jax", "cpu")]
#: Documented in docs/precision.md: norm-wise relative error of each gradient against
#: float64, for smooth activations (a ReLU kink flipped by rounding can exceed it).
MIXED_TOL = {"bf16": 2e-2, "fp16": 3e-3}


def _mixed_backend(spec: tuple[str, str, str]) -> xbp.backends.select.Backend:
    return backend_or_skip(*spec, required_backends())


def _host(be: xbp.backends.select.Backend, a: Any) -> np.ndarray:
    return np.asarray(be.to_host(a), dtype=np.float64)


@pytest.mark.parametrize("spec", MIXED_BACKENDS, ids=[s[0] for s in MIXED_BACKENDS])
@pytest.mark.parametrize("policy", ["bf16", "fp16"])
@pytest.mark.parametrize(
    "act, loss", [("tanh", "cross_entropy"), ("sigmoid", "quadratic"), ("softplus", "mse")]
)
def test_mixed_gradients_are_float32_and_within_the_documented_tolerance(
    spec: tuple[str, str, str], policy: str, act: str, loss: str
) -> None:
    be = _mixed_backend(spec)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 20)).astype(np.float32)
    y = rng.integers(0, 5, 64)
    ref = xbp.mlp([20, 48, 32, 5], activation=act, loss=loss, seed=2)  # NumPy float64
    net = xbp.mlp(
        [20, 48, 32, 5], activation=act, loss=loss, dtype="float32", seed=2, backend=be,
        precision=policy,
    )  # fmt: skip
    loss_ref, g_ref = ref.backprop(x.astype(np.float64), y)
    loss_mixed, g = net.backprop(x, y)
    # the output layer, softmax/log-sum-exp and the loss run in float32
    assert loss_mixed.dtype == net.dtype and net.forward(x).dtype == net.dtype
    assert abs(float(loss_mixed) - float(loss_ref)) <= MIXED_TOL[policy] * abs(float(loss_ref))
    worst = 0.0
    for a, b in zip(g_ref, g):
        for k in a:
            assert b[k].dtype == net.dtype  # the optimizer is handed float32 gradients
            err = np.linalg.norm(_host(be, b[k]) - a[k]) / np.linalg.norm(a[k])
            assert err <= MIXED_TOL[policy], (k, err)
            worst = max(worst, err)
    # the products really ran in the low-precision type: float32 alone is ~1e-7 off
    assert worst > 1e-5
    for p in net.params:
        assert all(v.dtype == net.dtype for v in p.values())  # master weights stay float32


def test_numpy_has_no_bfloat16_and_says_what_to_use() -> None:
    with pytest.raises(XbpValueError) as info:
        xbp.mlp([3, 2], dtype="float32", precision="bf16")
    text = str(info.value)
    assert "\n" not in text and "'exact'" in text and "'torch'" in text and "'jax'" in text


def test_exact_adds_no_casts(monkeypatch: pytest.MonkeyPatch) -> None:
    be = _mixed_backend(MIXED_BACKENDS[0])
    net = xbp.mlp([3, 4, 2], loss="cross_entropy", dtype="float32", backend=be)
    x, y = net.check_inputs(np.ones((5, 3))), net.check_targets(np.arange(5) % 2, 5)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a cast on the exact path")

    monkeypatch.setattr(be.xp, "astype", refuse)
    monkeypatch.setattr(be.kernel_xp, "astype", refuse)  # the namespace the kernels use
    net.value_and_grad(x, y)  # the exact path: no astype anywhere
    net.precision = "bf16"
    with pytest.raises(AssertionError, match="a cast"):
        net.value_and_grad(x, y)


@pytest.mark.parametrize("policy", ["bf16", "fp16"])
def test_mixed_policy_is_saved_and_loaded(policy: str, tmp_path: Any) -> None:
    be = _mixed_backend(MIXED_BACKENDS[0])
    net = xbp.mlp([3, 4, 2], loss="cross_entropy", dtype="float32", backend=be, precision=policy)
    xbp.save(net, tmp_path / "m.npz")
    back = xbp.load(tmp_path / "m.npz", backend=be)
    assert back.precision == policy
    x = np.random.default_rng(0).normal(size=(6, 3))
    np.testing.assert_array_equal(back.predict(x), net.predict(x))  # same casts, same output
    assert xbp.Network.from_config(net.config(), backend=be).precision == policy
    assert net.to(dtype="float32").precision == policy


# -- fp16 dynamic loss scaling --------------------------------------------------------------
def _fp16_trainer(optimizer: str) -> tuple[xbp.train.Trainer, Any, Any]:
    be = _mixed_backend(MIXED_BACKENDS[0])
    rng = np.random.default_rng(1)
    net = xbp.mlp(
        [6, 16, 3], activation="tanh", loss="cross_entropy", dtype="float32", backend=be,
        precision="fp16", seed=1,
    )  # fmt: skip
    trainer = xbp.train.Trainer(net, xbp.TrainOptions(optimizer=optimizer, learning_rate=0.1))
    x = net.check_inputs(rng.normal(size=(32, 6)))
    y = net.check_targets(rng.integers(0, 3, 32), 32)
    return trainer, x, y


def _weights(trainer: xbp.train.Trainer) -> list[np.ndarray]:
    return [np.array(v) for p in trainer.net.host_params() for v in p.values()]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_an_overflowing_step_is_skipped_and_halves_the_scale(optimizer: str) -> None:
    trainer, x, y = _fp16_trainer(optimizer)
    scaler = trainer.loss_scaler
    trainer.train_step(x, y)  # a good step at the default scale
    assert scaler.skipped == 0 and scaler.good_steps == 1
    before, state = _weights(trainer), trainer.copy_state(trainer.opt_state)
    scaler.scale = 2.0**40  # planted: the scaled output error overflows float16
    _, updates, _ = trainer.train_step(x, y)
    assert scaler.skipped == 1 and scaler.scale == 2.0**39 and scaler.good_steps == 0
    for a, b in zip(before, _weights(trainer)):
        np.testing.assert_array_equal(a, b)  # the step changed no weight
    assert trainer.step == 1  # and is not counted as an update
    assert all(float(trainer.net.xp.sum(abs(u))) == 0.0 for p in updates for u in p.values())
    assert repr(trainer.opt_state) == repr(state)  # nor the optimizer state
    # with a representable scale the same batch updates the weights again
    scaler.scale = 2.0**10
    trainer.train_step(x, y)
    assert trainer.step == 2 and not np.array_equal(before[0], _weights(trainer)[0])


def test_unscaled_updates_match_float32_training() -> None:
    trainer, x, y = _fp16_trainer("sgd")
    ref = xbp.train.Trainer(
        trainer.net.to(), xbp.TrainOptions(optimizer="sgd", learning_rate=0.1)
    )  # the same weights
    ref.net.precision = "exact"
    start = _weights(trainer)
    trainer.train_step(x, y)
    ref.train_step(x, y)
    for w0, a, b in zip(start, _weights(ref), _weights(trainer)):
        # the scale is divided out: the fp16 update is the float32 one within fp16's tolerance
        assert np.linalg.norm((b - w0) - (a - w0)) <= MIXED_TOL["fp16"] * np.linalg.norm(a - w0)


def test_the_scale_grows_after_the_window_of_good_steps() -> None:
    trainer, x, y = _fp16_trainer("sgd")
    scaler = trainer.loss_scaler
    scaler.scale, scaler.growth_interval = 256.0, 3
    for expect in (256.0, 256.0, 512.0, 512.0, 512.0, 1024.0):
        trainer.train_step(x, y)
        assert scaler.scale == expect
    assert LossScaler().growth_interval == 2000  # the documented default window


def test_the_scalers_state_holds_every_field_and_loads_back() -> None:
    import dataclasses

    s = LossScaler(scale=8.0, growth_interval=5, good_steps=2, skipped=3)
    state = s.state_dict()
    assert set(state) == {f.name for f in dataclasses.fields(LossScaler)}
    again = LossScaler()
    again.load_state_dict(state)
    assert again == s


class _PlantOverflow(xbp.Callback):
    def on_train_begin(self, trainer: xbp.train.Trainer) -> None:
        trainer.loss_scaler.scale = 2.0**28  # the first steps overflow until it is small enough


def test_history_counts_skipped_steps_and_checkpoints_keep_the_scaler(tmp_path: Any) -> None:
    be = _mixed_backend(MIXED_BACKENDS[0])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(128, 6)), rng.integers(0, 3, 128)
    net = xbp.mlp([6, 8, 3], loss="cross_entropy", dtype="float32", backend=be, precision="fp16")
    ck = tmp_path / "ck.npz"
    hist = xbp.fit(
        net, x, y, epochs=2, batch_size=8, callbacks=[_PlantOverflow()], checkpoint=ck,
        progress=False,
    )  # fmt: skip
    skipped = hist["skipped_steps"]
    assert skipped[0] > 0 and skipped[1] == 0
    assert 2.0**28 / 2.0 ** skipped[0] == hist["loss_scale"][0] == hist["loss_scale"][1]
    state = xbp.load_checkpoint(ck, backend=be).training
    assert state["loss_scaler"]["skipped"] == skipped[0]
    assert state["loss_scaler"]["scale"] == hist["loss_scale"][1]
    assert state["step"] == 2 * 16 - skipped[0]  # skipped steps are not updates
    assert state["history"]["epochs"][0]["skipped_steps"] == skipped[0]
    # resuming restores the scaler: a third epoch continues from its scale
    more = xbp.fit(net, x, y, epochs=3, batch_size=8, resume=ck, progress=False)
    assert more["skipped_steps"][:2] == skipped and more["loss_scale"][2] == hist["loss_scale"][1]
    exact = xbp.fit(xbp.mlp([6, 3], backend=be), x, y, epochs=1, batch_size=8, progress=False)
    assert exact["skipped_steps"] == [None]  # the column applies to fp16 runs only


def test_fp16_refuses_compile_true_and_runs_eagerly_under_none() -> None:
    be = backend_or_skip("jax-cpu", "jax", "cpu", required_backends())
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)), rng.integers(0, 2, 32)
    net = xbp.mlp([4, 6, 2], loss="cross_entropy", dtype="float32", backend=be, precision="fp16")
    with pytest.raises(XbpValueError, match=r"compile=True: precision='fp16'.*compile=None"):
        xbp.fit(net, x, y, epochs=1, batch_size=8, compile=True, progress=False)
    hist = xbp.fit(net, x, y, epochs=1, batch_size=8, compile=None, progress=False)
    assert hist["skipped_steps"] == [0]


def test_bf16_compiled_epochs_agree_with_eager_ones() -> None:
    be = backend_or_skip("jax-cpu", "jax", "cpu", required_backends())
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
    runs = {}
    for policy, compile_flag in (("bf16", True), ("bf16", False), ("exact", False)):
        net = xbp.mlp([4, 16, 3], activation="tanh", loss="cross_entropy", dtype="float32",
                      backend=be, precision=policy, seed=5)  # fmt: skip
        start = np.concatenate([w.ravel() for w in _weights(xbp.train.Trainer(net))])
        xbp.fit(net, x, y, epochs=2, batch_size=16, compile=compile_flag, progress=False)
        end = np.concatenate([w.ravel() for w in _weights(xbp.train.Trainer(net))])
        runs[policy, compile_flag] = end - start
    # XLA may keep fused bf16 intermediates in float32, so compiled and eager bf16 are not
    # bit-equal; both move the weights as float32 does, within bf16's tolerance
    change = np.linalg.norm(runs["exact", False])
    for key in (("bf16", True), ("bf16", False)):
        assert np.linalg.norm(runs[key] - runs["exact", False]) <= MIXED_TOL["bf16"] * change
    diff = np.linalg.norm(runs["bf16", True] - runs["bf16", False])
    assert diff <= MIXED_TOL["bf16"] * change
    # and the traced step did run in bfloat16 (compiled float32 is ~1e-7 off eager)
    assert np.linalg.norm(runs["bf16", True] - runs["exact", False]) > 1e-4 * change


def test_train_precision_bf16_end_to_end(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _mixed_backend(MIXED_BACKENDS[0])
    from xbp.cli import main

    model = tmp_path / "m.npz"
    argv = ["train", "--backend", "torch", "--precision", "bf16", "--dtype", "float32"]
    assert main([*argv, "--epochs", "3", "--save", str(model), "--quiet"]) == 0
    accuracy = float(capsys.readouterr().out.split("test accuracy ")[1].split()[0])
    assert accuracy >= 0.9
    assert xbp.load(model, backend="torch").precision == "bf16"


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimators_train_in_bf16() -> None:
    _mixed_backend(MIXED_BACKENDS[0])
    from xbp.sklearn import MLPClassifier

    x, y = xbp.data.load_digits()
    order = np.random.default_rng(0).permutation(len(y))
    x, y = (x[order] / 16.0).astype(np.float32), y[order]
    scores = {}
    for policy in ("exact", "bf16"):
        clf = MLPClassifier(
            (32,), learning_rate_init=0.01, max_iter=20, backend="torch", precision=policy,
            random_state=0,
        )  # fmt: skip
        clf.fit(x[:1400], y[:1400])
        scores[policy] = clf.score(x[1400:], y[1400:])
    assert scores["exact"] > 0.9 and abs(scores["bf16"] - scores["exact"]) <= 0.03


def test_a_model_whose_policy_the_backend_lacks_loads_as_exact_with_a_warning(
    tmp_path: Any,
) -> None:
    be = _mixed_backend(MIXED_BACKENDS[0])
    net = xbp.mlp([3, 4, 2], loss="cross_entropy", dtype="float32", backend=be, precision="bf16")
    xbp.save(net, tmp_path / "m.npz")
    with pytest.warns(UserWarning, match=r"precision='bf16' cannot run here.*'exact'"):
        host = xbp.load(tmp_path / "m.npz", backend="numpy")
    assert host.precision == "exact"
    x = np.random.default_rng(0).normal(size=(6, 3))
    exact = net.to()
    exact.precision = "exact"
    np.testing.assert_allclose(host.predict(x), exact.predict(x), rtol=1e-5, atol=1e-6)
    bad = {**net.config(), "precision": "bf17"}
    with pytest.raises(XbpValueError, match="precision='bf17' is not known"):
        xbp.Network.from_config(bad)


class _EveryStepOverflows(xbp.Callback):
    def on_train_begin(self, trainer: xbp.train.Trainer) -> None:
        trainer.loss_scaler.scale = 2.0**60  # every step of the epoch overflows float16

    def on_epoch_end(self, trainer: xbp.train.Trainer, logs: dict[str, Any]) -> None:
        self.penalties = trainer.step_sums["penalties"]


def test_a_skipped_fp16_step_still_counts_its_per_step_l2_term() -> None:
    """sklearn_sgd(alpha=...) under fp16: a step skipped for overflow counts its batch's
    cost in the epoch's loss, and so its L2 term (alpha/2 ||W||^2 of the unchanged
    weights): one term per step, lined up with the costs."""
    be = _mixed_backend(MIXED_BACKENDS[0])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)), rng.integers(0, 3, 64)
    logs, terms = {}, {}
    for alpha in (0.0, 1.0):
        net = xbp.mlp(
            [6, 8, 3], loss="cross_entropy", dtype="float32", backend=be, precision="fp16",
            seed=0,
        )  # fmt: skip
        square = sum(float(np.sum(np.asarray(w, np.float64) ** 2)) for w in _ws(net))
        cb = _EveryStepOverflows()
        hist = xbp.fit(
            net, x, y, epochs=1, batch_size=8, shuffle=False, callbacks=[cb],
            optimizer=xbp.optim.sklearn_sgd(0.01, alpha=alpha), progress=False,
        )  # fmt: skip
        assert hist["skipped_steps"] == [8]
        logs[alpha], terms[alpha] = hist.epochs[0], cb.penalties
    np.testing.assert_allclose(terms[1.0], [0.5 * square] * 8, rtol=1e-5)
    assert logs[1.0]["accuracy"] == logs[0.0]["accuracy"]  # the weights never changed
    extra = logs[1.0]["loss"] - logs[0.0]["loss"]
    np.testing.assert_allclose(extra, 8 * 0.5 * square / 64, rtol=1e-5)


def _ws(net: xbp.Network) -> list[np.ndarray]:
    return [np.asarray(net.backend.to_host(p["W"])) for p in net.params]
