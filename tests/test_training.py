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
