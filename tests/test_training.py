from __future__ import annotations

import numpy as np
import pytest
from conftest import backend_or_skip, required_backends

import xbp
from xbp import optim
from xbp.errors import XbpTypeError, XbpValueError


def test_xor_learned_by_the_seed_setup() -> None:
    """2-2-1 sigmoid, quadratic cost, plain SGD: the classic XOR network."""
    x, y = xbp.data.make_xor()
    net = xbp.Network(
        [xbp.nn.Dense(2, 2, "sigmoid"), xbp.nn.Dense(2, 1, "sigmoid")],
        loss="quadratic",
        seed=0,
        init="nielsen",
    )
    hist = xbp.fit(net, x, y, epochs=3000, batch_size=4, optimizer=optim.sgd(4.0), progress=False)
    out = net.predict(x).ravel()
    assert np.all(np.abs(out - y.ravel()) < 0.1), out
    assert hist["accuracy"][-1] == 1.0 and hist["loss"][-1] < 1e-3 < hist["loss"][0]


def test_same_seed_same_weights_on_every_backend(backend: xbp.backends.select.Backend) -> None:
    x, y = xbp.data.load_digits()
    x, y = x[:400], y[:400]
    kwargs = dict(activation="sigmoid", loss="cross_entropy", seed=1, dtype="float64")
    ref = xbp.mlp([64, 20, 10], **kwargs)
    net = xbp.mlp([64, 20, 10], backend=backend, **kwargs)
    for n in (ref, net):
        xbp.fit(n, x, y, epochs=3, batch_size=32, optimizer=optim.sgd(0.5), seed=7, progress=False)
    for p, r in zip(net.params, ref.params):
        for key in "Wb":
            got = backend.to_host(p[key])
            assert np.max(np.abs(got - r[key])) <= 1e-10 * np.max(np.abs(r[key]))


def test_history_fields_and_validation_split() -> None:
    x, y = xbp.data.make_blobs(200, centers=3, seed=0)
    net = xbp.mlp([2, 8, 3], activation="tanh", loss="cross_entropy")
    hist = xbp.fit(
        net,
        x,
        y,
        epochs=4,
        batch_size=16,
        optimizer="adam",
        learning_rate=0.01,
        validation_split=0.25,
        progress=False,
    )
    assert len(hist) == 4 and [r["epoch"] for r in hist.epochs] == [1, 2, 3, 4]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"):
        assert all(v is not None for v in hist[key]), key
    assert hist["learning_rate"] == [0.01] * 4
    assert hist["val_accuracy"][-1] > 0.9 and hist["loss"][-1] < hist["loss"][0]


def test_integer_labels_equal_one_hot_targets() -> None:
    x, y = xbp.data.make_blobs(60, centers=3, seed=1)
    a = xbp.mlp([2, 5, 3], loss="cross_entropy", seed=2)
    b = xbp.mlp([2, 5, 3], loss="cross_entropy", seed=2)
    xbp.fit(a, x, y, epochs=2, batch_size=10, progress=False)
    xbp.fit(b, x, xbp.data.one_hot(y, 3), epochs=2, batch_size=10, progress=False)
    np.testing.assert_array_equal(a.params[0]["W"], b.params[0]["W"])


def test_device_arrays_used_as_they_are(backend: xbp.backends.select.Backend) -> None:
    x, y = xbp.data.make_moons(64, noise=0.1, seed=0)
    net = xbp.mlp([2, 6, 1], activation="tanh", loss="binary_cross_entropy", backend=backend)
    xd = backend.asarray(x, "float64")
    yd = backend.asarray(y.reshape(-1, 1).astype(float), "float64")
    before = net.evaluate(xd, yd)
    hist = xbp.fit(
        net, xd, yd, epochs=40, batch_size=16, optimizer=optim.adam(0.05), progress=False
    )
    res = net.evaluate(xd, yd)
    # training learned: the loss more than halved, and the moons are separated well above
    # what the untrained network (0.75) or a linear boundary (about 0.85) reach
    assert hist["loss"][-1] < 0.5 * hist["loss"][0] and res["loss"] < 0.5 * before["loss"]
    assert res["accuracy"] >= 0.9, (before, res)
    # evaluate agrees with the loss and accuracy computed here from the raw outputs
    out = backend.to_host(net.forward(xd))[:, 0]
    assert res["accuracy"] == pytest.approx(np.mean((out > 0.5) == (y == 1)), abs=1e-12)
    bce = -np.mean(y * np.log(out) + (1 - y) * np.log1p(-out))
    assert res["loss"] == pytest.approx(bce, rel=1e-9)
    labels = net.predict_classes(xd)
    assert backend.owns(labels) and backend.same_device(labels)
    np.testing.assert_array_equal(backend.to_host(labels).ravel(), (out > 0.5).astype(int))
    host_labels = net.predict_classes(x)
    assert isinstance(host_labels, np.ndarray)
    np.testing.assert_array_equal(host_labels.ravel(), (out > 0.5).astype(int))


def test_foreign_device_array_refused() -> None:
    required = required_backends()
    home = backend_or_skip("array_api_strict", "array_api_strict", None, required)
    other = backend_or_skip("array_api_strict-device1", "array_api_strict", "device1", required)
    net = xbp.mlp([2, 3, 1], backend=other)
    x = home.asarray(np.zeros((4, 2)), "float64")
    with pytest.raises(XbpValueError, match="x is on device"):
        xbp.fit(net, x, np.zeros((4, 1)), epochs=1, batch_size=2, progress=False)


def test_early_stopping_restores_best_weights() -> None:
    x, y = xbp.data.make_moons(120, noise=0.2, seed=3)
    perm = np.random.default_rng(1).permutation(len(y))
    train, val = perm[:84], perm[84:]
    net = xbp.mlp([2, 8, 2], activation="relu", loss="cross_entropy", seed=0)
    stop = xbp.EarlyStopping(patience=2, monitor="val_loss")
    # a large learning rate makes validation loss bounce, so stopping triggers
    hist = xbp.fit(
        net,
        x[train],
        y[train],
        epochs=50,
        batch_size=8,
        optimizer=optim.sgd(1.0),
        validation_data=(x[val], y[val]),
        callbacks=[stop],
        progress=False,
        seed=1,
    )
    best = min(hist["val_loss"])
    assert stop.best == pytest.approx(best)
    assert hist.stopped_early and len(hist) < 50
    assert hist["val_loss"][-1] > best  # the last epoch was worse: restoring matters
    assert xbp.evaluate(net, x[val], y[val])["loss"] == pytest.approx(best, rel=1e-12)


def test_early_stopping_restores_best_even_without_stopping() -> None:
    x, y = xbp.data.make_blobs(80, centers=2, seed=4)
    net = xbp.mlp([2, 4, 2], loss="cross_entropy", seed=0)
    stop = xbp.EarlyStopping(patience=100, monitor="loss")
    hist = xbp.fit(
        net,
        x,
        y,
        epochs=6,
        batch_size=80,
        optimizer=optim.sgd(50.0),
        callbacks=[stop],
        progress=False,
    )
    assert not hist.stopped_early
    best_epoch = int(np.argmin(hist["loss"])) + 1
    assert stop.best_epoch == best_epoch


def test_checkpoints_every_n_and_best_only(tmp_path) -> None:
    x, y = xbp.data.make_blobs(60, centers=2, seed=0)
    net = xbp.mlp([2, 4, 2], loss="cross_entropy")
    every = xbp.ModelCheckpoint(tmp_path / "every.npz", every=2)
    best = xbp.ModelCheckpoint(tmp_path / "best.npz", best_only=True, monitor="loss")
    xbp.fit(net, x, y, epochs=5, batch_size=10, callbacks=[every, best], progress=False)
    ck = xbp.load_checkpoint(tmp_path / "every.npz")
    assert ck.training["epoch"] == 4 and len(ck.training["history"]["epochs"]) == 4
    ckb = xbp.load_checkpoint(tmp_path / "best.npz")
    losses = [r["loss"] for r in ckb.training["history"]["epochs"]]
    assert losses[-1] == min(losses)


def test_progress_modes(capsys: pytest.CaptureFixture[str]) -> None:
    x, y = xbp.data.make_xor()
    net = xbp.mlp([2, 2, 1], loss="binary_cross_entropy")
    xbp.fit(net, x, y, epochs=3, batch_size=2, progress=False)
    assert capsys.readouterr().out == ""
    xbp.fit(net, x, y, epochs=3, batch_size=2, progress="auto")  # not a terminal: lines
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch   1  loss")


def test_fit_bad_hyper_parameters() -> None:
    x, y = xbp.data.make_xor()
    net = xbp.mlp([2, 2, 1])
    cases = [
        (dict(epochs=0), XbpValueError, "epochs=0"),
        (dict(batch_size=0), XbpValueError, "batch_size=0"),
        (dict(batch_size=5), XbpValueError, "batch_size=5 is larger than the 4 training rows"),
        (dict(optimizer="sgd", learning_rate=-0.1), XbpValueError, "learning_rate=-0.1"),
        (dict(optimizer="sgd", learning_rate=0), XbpValueError, "learning_rate=0"),
        (dict(validation_split=1.5), XbpValueError, "validation_split=1.5"),
        (dict(optimizer=3), XbpTypeError, "optimizer=3"),
        (dict(on_divergence="ignore"), XbpValueError, "on_divergence='ignore'"),
        (dict(callbacks=[print]), XbpTypeError, "callbacks holds"),
    ]
    for kwargs, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            xbp.fit(net, x, y, progress=False, **{"batch_size": 2, **kwargs})


def test_evaluate_and_predict_proba() -> None:
    x, y = xbp.data.make_blobs(90, centers=3, seed=2)
    net = xbp.mlp([2, 8, 3], loss="cross_entropy")
    xbp.fit(
        net, x, y, epochs=20, batch_size=10, optimizer="adam", learning_rate=0.05, progress=False
    )
    res = xbp.evaluate(net, x, y)
    proba = net.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert res["accuracy"] == pytest.approx(np.mean(proba.argmax(1) == y))
    with pytest.raises(XbpValueError, match="predict_proba needs a softmax or sigmoid"):
        xbp.mlp([2, 1], activation="identity").predict_proba(x)


def test_early_stopping_on_a_metric_a_callback_logs() -> None:
    class Score(xbp.Callback):
        def on_epoch_end(self, trainer, logs) -> None:
            logs["score"] = [0.5, 0.9, 0.8, 0.7, 0.6, 0.5][logs["epoch"] - 1]

    x, y = xbp.data.make_blobs(40, centers=2, seed=0)
    stop = xbp.EarlyStopping(patience=1, monitor="score", mode="max")
    hist = xbp.fit(
        xbp.mlp([2, 3, 2], loss="cross_entropy"),
        x,
        y,
        epochs=6,
        batch_size=8,
        callbacks=[Score(), stop],
        progress=False,
    )
    assert stop.best == 0.9 and stop.best_epoch == 2 and len(hist) == 4 and hist.stopped_early
    with pytest.raises(XbpValueError, match="monitor='score'.*mode='min'/'max'"):
        xbp.EarlyStopping(monitor="score")
    with pytest.raises(XbpValueError, match="mode='up'"):
        xbp.EarlyStopping(monitor="score", mode="up")


def test_a_monitor_that_nothing_logs_is_an_error_not_a_silent_callback(tmp_path) -> None:
    from xbp.errors import XbpValueError

    x, y = xbp.data.make_xor()
    for cb, owner in (
        (xbp.EarlyStopping(monitor="val_los", mode="min"), "EarlyStopping monitor"),
        (
            xbp.ModelCheckpoint(tmp_path / "ck.npz", best_only=True, monitor="vall"),
            "ModelCheckpoint",
        ),
    ):
        net = xbp.mlp([2, 3, 1], loss="quadratic", seed=0)
        with pytest.raises(XbpValueError, match=rf"{owner}.* is not logged by this run"):
            xbp.fit(
                net, x, y.astype(float) * 3, epochs=2, batch_size=2, callbacks=[cb], progress=False
            )
    # accuracy does not apply to real-valued targets: watching it is the same mistake
    net = xbp.mlp([2, 3, 1], loss="quadratic", seed=0)
    with pytest.raises(XbpValueError, match="monitor='accuracy' is not logged"):
        xbp.fit(
            net,
            x,
            y.astype(float) * 3,
            epochs=2,
            batch_size=2,
            callbacks=[xbp.EarlyStopping(monitor="accuracy")],
            progress=False,
        )
    assert not (tmp_path / "ck.npz").exists()


def test_the_progress_bar_ticks_once_per_batch(monkeypatch) -> None:
    pytest.importorskip("tqdm")
    import io

    from xbp.train import loop as training

    ticks: list[int] = []
    real = training._Progress.batches

    def counting(self, n: int) -> None:
        ticks.append(n)
        real(self, n)

    monkeypatch.setattr(training._Progress, "batches", counting)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    x, y = xbp.data.make_xor()
    net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    xbp.fit(net, np.tile(x, (3, 1)), np.tile(y, (3, 1)), epochs=2, batch_size=5, progress="bar")
    assert sum(ticks) == 2 * 3  # 12 rows in batches of 5: three batches per epoch


# -- the loop's hooks the scikit-learn estimators drive it with (public, for users too) -----
def _blobs() -> tuple[np.ndarray, np.ndarray]:
    return xbp.data.make_blobs(60, centers=3, seed=0)


def _weights(net: xbp.Network) -> list[np.ndarray]:
    return [np.array(net.backend.to_host(p[k])) for p in net.params for k in sorted(p)]


def test_a_sampler_gives_the_epochs_row_order(backend: xbp.backends.select.Backend) -> None:
    """sampler(n) replaces shuffle's draw: a generator's permutations give the weights of
    shuffle=True with that generator's seed, arange those of shuffle=False, and another
    order (reversed) other weights; it is called once per epoch with the rows."""
    x, y = _blobs()
    kw = dict(epochs=3, batch_size=16, optimizer="adam", learning_rate=0.05, progress=False)

    def trained(**options: object) -> list[np.ndarray]:
        net = xbp.mlp([2, 5, 3], loss="cross_entropy", seed=0, backend=backend)
        xbp.fit(net, x, y, **kw, **options)
        return _weights(net)

    gen = np.random.default_rng(4)
    calls: list[int] = []

    def draw(n: int) -> np.ndarray:
        calls.append(n)
        return gen.permutation(n)

    for a, b in zip(trained(sampler=draw), trained(seed=4)):
        np.testing.assert_array_equal(a, b)
    assert calls == [60, 60, 60]
    in_order = trained(shuffle=False)
    for a, b in zip(trained(sampler=lambda n: np.arange(n)), in_order):
        np.testing.assert_array_equal(a, b)
    reversed_ = trained(sampler=lambda n: np.arange(n)[::-1])
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(reversed_, in_order)) > 1e-6


@pytest.mark.parametrize(
    "order, message",
    [
        (lambda n: np.arange(n - 1), r"not an order of the 60 rows"),
        (lambda n: np.zeros(n, dtype=int), r"not an order of the 60 rows"),
        (lambda n: np.arange(n) * 1.0, r"float64 \(60,\), not an order"),
        (lambda n: np.arange(1, n + 1), r"return each of 0\.\.59 once"),
        (lambda n: np.arange(n) - 1, r"not an order of the 60 rows"),
        (lambda n: np.r_[np.arange(1, n), 0, 0], r"not an order of the 60 rows"),
        (lambda n: np.r_[np.arange(n - 1), n - 2].astype(np.uint64), r"not an order"),
        # a row far past n: refused as the others, not a count per row up to it (75 GiB)
        (lambda n: np.r_[np.arange(n - 1), 10**10], r"not an order of the 60 rows"),
    ],
)
def test_a_sampler_that_is_not_an_order_is_refused(order, message) -> None:
    x, y = _blobs()
    net = xbp.mlp([2, 3], loss="cross_entropy", seed=0)
    with pytest.raises(XbpValueError, match=r"sampler\(60\) returned .*" + message):
        xbp.fit(net, x, y, epochs=1, batch_size=16, sampler=order, progress=False)
    with pytest.raises(XbpTypeError, match="sampler is a list; pass a function"):
        xbp.TrainOptions(sampler=[0, 1])


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "uint32", "int64", "uint64"])
def test_the_order_check_takes_every_integer_dtype(dtype: str) -> None:
    """An order is an order in any integer dtype (NumPy 1.26's bincount refuses uint64)."""
    from xbp.train.loop import _is_order

    order = np.random.default_rng(0).permutation(100).astype(dtype)
    assert _is_order(order, 100)
    order[3] = order[4]
    assert not _is_order(order, 100)


def test_on_divergence_continue_trains_on_and_records_the_epochs() -> None:
    """on_divergence="continue" neither raises nor replays: every epoch runs, the logged
    loss is not finite and history.diverged names the epochs; "raise" still raises."""
    x, y = _blobs()
    x = x * 1e6  # a rate this large on these inputs overflows at once
    kw = dict(epochs=3, batch_size=20, optimizer="sgd", learning_rate=1e300, progress=False)
    net = xbp.mlp([2, 4, 3], activation="relu", loss="cross_entropy", seed=0)
    with np.errstate(all="ignore"):
        hist = xbp.fit(net, x, y, on_divergence="continue", **kw)
        assert len(hist) == 3 and not np.isfinite(hist["loss"][-1])
        assert [d["epoch"] for d in hist.diverged] == [1, 2, 3]
        with pytest.raises(xbp.errors.DivergenceError, match="training diverged at epoch 1"):
            net = xbp.mlp([2, 4, 3], activation="relu", loss="cross_entropy", seed=0)
            xbp.fit(net, x, y, **kw)
    with pytest.raises(XbpValueError, match="use 'raise', 'halve' or 'continue'"):
        xbp.TrainOptions(on_divergence="ignore")


def test_weights_the_last_update_overflows_are_a_divergence_though_every_loss_was_finite(
    backend: xbp.backends.select.Backend,
) -> None:
    """The epoch's read-back includes a sum over every weight: one step whose loss (at the
    weights before it) is finite but whose update overflows the weights is caught, by
    the eager and (where the backend compiles) the compiled epoch alike."""
    x, y = _blobs()
    x = x * 100  # weight gradients near 100: the update overflows, the loss does not
    kw = dict(epochs=1, batch_size=60, optimizer="sgd", learning_rate=1e307, progress=False)

    def net() -> xbp.Network:
        return xbp.mlp([2, 4, 3], "relu", loss="cross_entropy", seed=0, backend=backend)

    for compile in [False] + ([None] if backend.compiler() is not None else []):
        with np.errstate(all="ignore"):
            model = net()
            hist = xbp.fit(model, x, y, on_divergence="continue", compile=compile, **kw)
            assert np.isfinite(hist["loss"][0])  # the one loss was finite
            assert not all(np.isfinite(w).all() for w in _weights(model))
            assert [d["epoch"] for d in hist.diverged] == [1]
            with pytest.raises(xbp.errors.DivergenceError, match="diverged at epoch 1"):
                xbp.fit(net(), x, y, compile=compile, **kw)


def test_the_per_step_l2_term_divides_by_the_batch_and_joins_the_loss(
    backend: xbp.backends.select.Backend,
) -> None:
    """sklearn_sgd(alpha=...) in xbp.fit: each step adds (alpha / n_batch) W to the weight
    gradients (biases untouched), and the logged loss is the batch objective with
    alpha/2 ||W||^2 / n_batch (weights before the step); alpha is data (one key)."""
    x, y = _blobs()
    alpha, lr = 0.3, 0.05
    net = xbp.mlp([2, 4, 3], activation="tanh", loss="cross_entropy", seed=0, backend=backend)
    ref = xbp.mlp([2, 4, 3], activation="tanh", loss="cross_entropy", seed=0)
    w0 = [{k: v.copy() for k, v in p.items()} for p in ref.params]
    opt = optim.sklearn_sgd(lr, momentum=0.0, alpha=alpha)
    hist = xbp.fit(net, x, y, epochs=1, batch_size=60, optimizer=opt, shuffle=False,
                   progress=False)  # fmt: skip
    cost, grads, _ = ref.value_and_grad(ref.check_inputs(x), ref.check_targets(y, 60))
    norm = sum(float(np.sum(p["W"] ** 2)) for p in w0)
    assert hist["loss"][0] == pytest.approx(float(cost) + 0.5 * alpha * norm / 60, rel=1e-12)
    got = _weights(net)
    want = [
        p[k] - lr * (g[k] + (alpha / 60 * p[k] if k == "W" else 0.0))
        for p, g in zip(w0, grads)
        for k in sorted(p)
    ]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert optim.sklearn_sgd(0.1, alpha=0.1).key == optim.sklearn_sgd(0.1, alpha=0.5).key
    assert optim.sklearn_adam(alpha=0.1).key == optim.sklearn_adam(alpha=0.0).key


def test_a_callback_reads_the_step_sums_and_sets_the_rate() -> None:
    """trainer.step_sums holds the epoch's per-step cost sums (they add up to the logged
    loss); a callback setting trainer.lr_scale changes the next epoch's rate."""
    x, y = _blobs()
    seen: list[np.ndarray] = []

    class Halve(xbp.Callback):
        def on_epoch_end(self, trainer, logs):  # type: ignore[no-untyped-def]
            seen.append(trainer.step_sums["costs"])
            assert trainer.step_sums["penalties"] is None
            trainer.lr_scale *= 0.5

    net = xbp.mlp([2, 3], loss="cross_entropy", seed=0)
    hist = xbp.fit(net, x, y, epochs=3, batch_size=16, optimizer="sgd", learning_rate=0.4,
                   callbacks=[Halve()], progress=False)  # fmt: skip
    assert [len(s) for s in seen] == [4, 4, 4]
    assert [float(s.sum()) / 60 for s in seen] == pytest.approx(hist["loss"], rel=1e-12)
    assert hist["learning_rate"] == pytest.approx([0.4, 0.2, 0.1])
