"""Compiled steps (``compile=``) train exactly like the eager loop, on every backend.

The compiled step traces or captures the same array-API code as the eager
one; these tests compare their weights after several epochs from one seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import backend_or_skip, required_backends

import xbp
from xbp import optim
from xbp.errors import XbpValueError
from xbp.train import compile as xbp_compile
from xbp.train.step import Step


def _data(n: int = 70, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int64) + (x[:, 3] > 1)
    return x, y


def _train(
    be: xbp.backends.select.Backend, compile: Any, epochs: int = 3, **kwargs: Any
) -> tuple[Any, Any]:
    x, y = _data()
    net = xbp.mlp([5, 8, 6, 3], activation="tanh", loss="cross_entropy", backend=be, seed=3)
    args: dict[str, Any] = dict(epochs=epochs, batch_size=16, progress=False, seed=5)
    args.update(kwargs)
    hist = xbp.fit(net, x, y, compile=compile, **args)
    return net, hist


def _max_rel(a: xbp.Network, b: xbp.Network) -> float:
    err = 0.0
    for p, q in zip(a.host_params(), b.host_params()):
        for k in p:
            scale = float(np.max(np.abs(p[k]))) or 1.0
            err = max(err, float(np.max(np.abs(p[k] - q[k]))) / scale)
    return err


def _compiles(be: xbp.backends.select.Backend) -> bool:
    return be.name == "jax" or (be.name == "torch" and str(be.device).startswith("cuda"))


def test_compiled_and_eager_runs_agree_on_every_backend(
    backend: xbp.backends.select.Backend,
) -> None:
    eager, h_eager = _train(backend, False)
    auto, h_auto = _train(backend, None)
    assert _max_rel(eager, auto) <= 1e-12
    assert np.allclose(h_eager["loss"], h_auto["loss"], rtol=1e-12, atol=0)
    assert h_eager["accuracy"] == pytest.approx(h_auto["accuracy"], abs=1e-12)
    if _compiles(backend):
        required, _ = _train(backend, True)
        assert _max_rel(eager, required) <= 1e-12
    else:
        with pytest.raises(XbpValueError, match=r"compile=True: .* has no compiled step"):
            _train(backend, True)


@pytest.fixture
def jax_backend() -> xbp.backends.select.Backend:
    return backend_or_skip("jax-cpu", "jax", "cpu", required_backends())


OPTIMIZERS = {
    "sgd-cosine-warmup": lambda: optim.sgd(optim.warmup(optim.cosine(0.3, 10), 3)),
    "sgd-clip-l2": lambda: optim.sgd(0.2, weight_decay=1e-3, clip_norm=0.5),
    "momentum-step": lambda: optim.momentum(optim.step(0.1, 4, 0.5), 0.8),
    "nesterov": lambda: optim.nesterov(0.05, 0.9, weight_decay=1e-2),
    "adam": lambda: optim.adam(0.01),
    "adamw-exponential": lambda: optim.adamw(optim.exponential(0.02, 0.9, 3)),
    "rmsprop-clip": lambda: optim.rmsprop(0.01, clip_norm=1.0),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_and_schedule_compiles_exactly(
    jax_backend: xbp.backends.select.Backend, name: str
) -> None:
    eager, h1 = _train(jax_backend, False, epochs=4, optimizer=OPTIMIZERS[name]())
    comp, h2 = _train(jax_backend, True, epochs=4, optimizer=OPTIMIZERS[name]())
    assert _max_rel(eager, comp) <= 1e-12
    assert h1["learning_rate"] == h2["learning_rate"]


def test_the_last_short_batch_is_trained_not_dropped(
    jax_backend: xbp.backends.select.Backend,
) -> None:
    # 70 rows in batches of 16: four full batches and one of 6, every epoch
    _, hist = _train(jax_backend, True, epochs=1)
    eager, _ = _train(jax_backend, False, epochs=1)
    comp, _ = _train(jax_backend, True, epochs=1)
    assert _max_rel(eager, comp) <= 1e-12
    # the loss averages all 70 rows: four batches of 16 and one of 6
    assert np.isfinite(hist["loss"][0]) and hist["loss"][0] > 0


def test_compilation_is_reused_by_later_fit_calls(
    jax_backend: xbp.backends.select.Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    traces = []
    real = xbp_compile.traced_step

    def counting(*args: Any, **kwargs: Any) -> Any:
        traces.append(1)  # runs only while jax traces the step
        return real(*args, **kwargs)

    monkeypatch.setattr(xbp_compile, "traced_step", counting)
    Step._CACHE.clear()
    _train(jax_backend, True, epochs=2)
    first = len(traces)
    assert first == 2  # the scanned full-batch step and the short last step, traced once
    _train(jax_backend, True, epochs=3)  # a new network of the same structure
    assert len(traces) == first


def test_divergence_and_resume_work_compiled(
    jax_backend: xbp.backends.select.Backend, tmp_path: Any
) -> None:
    x, y = _data()
    target = (x @ np.arange(5.0))[:, None]
    found = []
    for compile in (False, True):
        net = xbp.mlp([5, 16, 1], activation="identity", loss="quadratic", backend=jax_backend)
        with pytest.raises(xbp.errors.DivergenceError) as info:
            xbp.fit(
                net,
                x,
                target,
                epochs=3,
                batch_size=16,
                optimizer=optim.sgd(2.0),
                progress=False,
                compile=compile,
            )
        found.append((net, str(info.value)))
    # the same step is blamed and the same last good weights are kept
    assert found[0][1] == found[1][1]
    assert _max_rel(found[0][0], found[1][0]) <= 1e-12

    ck = tmp_path / "run.npz"
    full, _ = _train(jax_backend, True, epochs=4, optimizer=optim.adam(0.01))
    _train(jax_backend, True, epochs=2, optimizer=optim.adam(0.01), checkpoint=ck)
    x, y = _data()
    resumed = xbp.mlp([5, 8, 6, 3], activation="tanh", loss="cross_entropy", backend=jax_backend)
    xbp.fit(
        resumed,
        x,
        y,
        epochs=4,
        batch_size=16,
        seed=5,
        progress=False,
        optimizer=optim.adam(0.01),
        resume=ck,
        compile=True,
    )
    assert _max_rel(full, resumed) <= 1e-12


def test_early_stopping_and_validation_work_compiled(
    jax_backend: xbp.backends.select.Backend,
) -> None:
    def run(compile: bool) -> tuple[Any, Any]:
        stop = xbp.EarlyStopping(patience=1, monitor="val_loss")
        return _train(
            jax_backend,
            compile,
            epochs=30,
            optimizer=optim.sgd(2.0),
            validation_split=0.3,
            callbacks=[stop],
        )

    eager, h1 = run(False)
    comp, h2 = run(True)
    assert h1.stopped_early and h2.stopped_early and len(h1) == len(h2) < 30
    assert _max_rel(eager, comp) <= 1e-12


def test_estimators_take_compile(jax_backend: xbp.backends.select.Backend) -> None:
    pytest.importorskip("sklearn")
    from xbp.sklearn import MLPClassifier

    x, y = _data()
    coefs = []
    for compile in (False, True):
        clf = MLPClassifier(
            (8,), max_iter=5, random_state=0, backend="jax", device="cpu", compile=compile
        )
        with pytest.warns(Warning):  # not converged after 5 iterations
            clf.fit(x, y)
        coefs.append(clf.coefs_)
    for a, b in zip(*coefs):
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(a))


def test_torch_cuda_graph_step_equals_eager() -> None:
    be = backend_or_skip("torch-cuda", "torch", "cuda", required_backends())
    for opt in (lambda: optim.sgd(0.3), lambda: optim.adam(0.01)):
        eager, _ = _train(be, False, optimizer=opt())
        comp, _ = _train(be, True, optimizer=opt())
        assert _max_rel(eager, comp) <= 1e-12


@pytest.fixture
def fake_capture(monkeypatch: pytest.MonkeyPatch) -> xbp.backends.select.Backend:
    """torch on the CPU posing as a capturing device: ``capture`` runs the step as
    warm-up and "records" it; each replay runs it again and leaves the results in the
    recorded output buffers, as a CUDA graph does. This runs the captured-epoch logic
    (static buffers, re-adoption of replaced weights, eager short batch) without a GPU."""
    be = backend_or_skip("torch-cpu", "torch", "cpu", required_backends())
    lib = type(be.library)

    def capture(self: Any, step: Any, device: Any) -> tuple[Any, Any]:
        step()  # warm-up
        outputs = step()  # the recording: a real capture would not execute it

        def replay() -> None:
            for out, new in zip(outputs, step()):
                if out is not None:
                    out[...] = new

        return replay, outputs

    monkeypatch.setattr(lib, "compiler", lambda self, device: "capture")
    monkeypatch.setattr(lib, "capture", capture)
    return be


@pytest.mark.parametrize("name", ["sgd-cosine-warmup", "adam", "rmsprop-clip", "nesterov"])
def test_captured_steps_equal_eager_steps(
    fake_capture: xbp.backends.select.Backend, name: str
) -> None:
    eager, h1 = _train(fake_capture, False, epochs=3, optimizer=OPTIMIZERS[name]())
    comp, h2 = _train(fake_capture, True, epochs=3, optimizer=OPTIMIZERS[name]())
    assert _max_rel(eager, comp) <= 1e-12
    assert np.allclose(h1["loss"], h2["loss"], rtol=1e-12, atol=0)


def test_captured_steps_follow_weights_replaced_between_epochs(
    fake_capture: xbp.backends.select.Backend,
) -> None:
    # early stopping restores the best weights (new arrays) at the end, and resume /
    # divergence replay replace them between epochs: the static buffers must follow
    def run(compile: bool) -> tuple[Any, Any]:
        stop = xbp.EarlyStopping(patience=1, monitor="val_loss")
        return _train(
            fake_capture,
            compile,
            epochs=30,
            optimizer=optim.sgd(2.0),
            validation_split=0.3,
            callbacks=[stop],
        )

    eager, h1 = run(False)
    comp, h2 = run(True)
    assert h1.stopped_early and len(h1) == len(h2)
    assert _max_rel(eager, comp) <= 1e-12


def test_captured_steps_retry_a_diverged_epoch_from_restored_weights(
    fake_capture: xbp.backends.select.Backend,
) -> None:
    # the retried epoch starts from restored copies of the weights: new arrays that the
    # captured step must adopt into its static buffers
    x, _ = _data()
    target = (x @ np.arange(5.0))[:, None]
    nets = []
    for compile in (False, True):
        net = xbp.mlp([5, 16, 1], activation="identity", loss="quadratic", backend=fake_capture)
        hist = xbp.fit(
            net,
            x,
            target,
            epochs=1,
            batch_size=16,
            optimizer=optim.sgd(1e6),
            on_divergence="halve",
            max_retries=40,
            progress=False,
            compile=compile,
        )
        assert hist.diverged
        nets.append(net)
    assert _max_rel(nets[0], nets[1]) <= 1e-12


def test_a_part_registered_again_never_runs_its_old_rule_compiled(
    jax_backend: xbp.backends.select.Backend,
) -> None:
    """Compiled steps are cached by the parts themselves, not their names: after
    ``register_activation`` replaces a rule, a new network's compiled training runs
    the new rule (equal to eager training), never the rule the cache saw first."""
    from xbp.nn.activations import ACTIVATIONS

    x, y = _data()

    def run(compile: bool) -> xbp.Network:
        net = xbp.Network(
            [xbp.nn.Dense(5, 8, "twisted_t"), xbp.nn.Dense(8, 3, "softmax")],
            loss="cross_entropy",
            backend=jax_backend,
            seed=3,
        )
        xbp.fit(net, x, y, epochs=2, batch_size=16, progress=False, compile=compile)
        return net

    try:
        xbp.register_activation("twisted_t", lambda xp, z: xp.tanh(z), lambda xp, a: 1 - a * a)
        first = run(True)
        xbp.register_activation(
            "twisted_t", lambda xp, z: 0.5 * xp.tanh(z), lambda xp, a: 0.5 - 2.0 * a * a
        )
        eager, compiled = run(False), run(True)
    finally:
        ACTIVATIONS.pop("twisted_t", None)
    assert _max_rel(eager, compiled) <= 1e-12
    assert _max_rel(first, compiled) > 1e-3  # the rule did change what training computes
