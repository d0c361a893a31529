"""xbp.metrics against scikit-learn's own sklearn.metrics, on every backend (float64, 1e-12)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import xbp
from xbp.errors import XbpTypeError, XbpValueError
from xbp.metrics import MetricSet, get_metric, metric_mode

skm = pytest.importorskip("sklearn.metrics")

TOL = 1e-12

CLASSIFICATION = [
    "accuracy",
    "top_2_accuracy",
    "top_3_accuracy",
    "precision_macro",
    "precision_micro",
    "precision_weighted",
    "recall_macro",
    "recall_micro",
    "recall_weighted",
    "f1_macro",
    "f1_micro",
    "f1_weighted",
    "confusion_matrix",
    "roc_auc_ovr",
    "roc_auc_ovr_weighted",
    "log_loss",
]
BINARY = ["accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "top_1_accuracy"]
REGRESSION = ["r2", "rmse", "mse", "mae", "explained_variance"]


def sklearn_value(name: str, labels: np.ndarray, proba: np.ndarray, w: Any) -> Any:
    """What scikit-learn says for ``name`` on class labels and the network's outputs."""
    k = proba.shape[1]
    score = proba[:, 0] if k == 1 else proba
    pred = (proba[:, 0] > 0.5).astype(int) if k == 1 else np.argmax(proba, axis=1)
    classes = np.arange(max(k, 2))
    if name == "accuracy":
        return skm.accuracy_score(labels, pred, sample_weight=w)
    if name.startswith("top_"):
        kk = int(name.split("_")[1])
        return skm.top_k_accuracy_score(labels, score, k=kk, sample_weight=w, labels=classes)
    if name == "confusion_matrix":
        return skm.confusion_matrix(labels, pred, sample_weight=w, labels=classes)
    if name.startswith(("precision", "recall", "f1")):
        which, _, average = name.partition("_")
        fn = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}
        return fn[which](
            labels, pred, average=average or "binary", sample_weight=w, zero_division=0
        )
    if name == "roc_auc":
        return skm.roc_auc_score(labels, score, sample_weight=w)
    if name.startswith("roc_auc_ovr"):
        average = "weighted" if name.endswith("weighted") else "macro"
        return skm.roc_auc_score(labels, proba, multi_class="ovr", average=average, sample_weight=w)
    if name == "log_loss":
        return skm.log_loss(labels, score, sample_weight=w, labels=classes)
    raise AssertionError(name)


def sklearn_regression(name: str, y: np.ndarray, out: np.ndarray, w: Any) -> float:
    if name == "r2":
        return float(skm.r2_score(y, out, sample_weight=w))
    if name == "rmse":
        return float(skm.root_mean_squared_error(y, out, sample_weight=w))
    if name == "mse":
        return float(skm.mean_squared_error(y, out, sample_weight=w))
    if name == "mae":
        return float(skm.mean_absolute_error(y, out, sample_weight=w))
    return float(skm.explained_variance_score(y, out, sample_weight=w))


def assert_matches(got: dict[str, Any], want: dict[str, Any]) -> None:
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=TOL, atol=TOL, err_msg=name)


def _f64(be: xbp.backends.select.Backend) -> xbp.backends.select.Backend:
    return be


@pytest.mark.parametrize("weighted", [False, True])
def test_multiclass_metrics_equal_sklearn(
    backend: xbp.backends.select.Backend, weighted: bool
) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(203, 5))
    labels = rng.integers(0, 4, size=203)
    labels[:3] = [0, 1, 2]  # every class present; class 3 may be rare
    w = rng.uniform(0.1, 3.0, size=203) if weighted else None
    net = xbp.mlp([5, 7, 4], output="softmax", loss="cross_entropy", seed=3, backend=backend)
    got = xbp.evaluate(net, x, labels, metrics=CLASSIFICATION, batch_size=16, sample_weight=w)
    proba = np.asarray(xbp.predict(net, x))
    assert_matches(got, {m: sklearn_value(m, labels, proba, w) for m in CLASSIFICATION})


def test_binary_metrics_equal_sklearn(backend: xbp.backends.select.Backend) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(150, 3))
    labels = (x[:, 0] + 0.8 * rng.normal(size=150) > 0).astype(int)
    w = rng.uniform(0.0, 2.0, size=150)
    net = xbp.mlp([3, 4, 1], loss="binary_cross_entropy", seed=1, backend=backend)
    for weights in (None, w):
        got = xbp.evaluate(net, x, labels, metrics=BINARY, batch_size=32, sample_weight=weights)
        proba = np.asarray(xbp.predict(net, x))
        assert_matches(got, {m: sklearn_value(m, labels, proba, weights) for m in BINARY})


def test_metric_states_over_batches_with_tied_scores(backend: xbp.backends.select.Backend) -> None:
    """Scores rounded to one decimal tie often, across batches: ROC AUC counts a tie a
    half, top-k breaks ties as scikit-learn does, macro averages skip absent classes."""
    rng = np.random.default_rng(2)
    n, k = 120, 5
    raw = rng.multinomial(10, np.ones(k) / k, size=n) / 10.0  # tenths: many ties
    labels = rng.integers(0, 4, size=n)  # class 4 never occurs in the targets
    labels[:4] = [0, 1, 2, 3]
    w = rng.uniform(0.5, 2.0, size=n)
    names = [m for m in CLASSIFICATION if m not in ("roc_auc_ovr", "roc_auc_ovr_weighted")]
    net = xbp.mlp([2, k], output="softmax", loss="cross_entropy", backend=backend)
    ms = MetricSet(names + ["top_1_accuracy"])
    states = ms.start(net)
    for s in range(0, n, 17):
        out = backend.asarray(raw[s : s + 17])
        lab = backend.asarray(labels[s : s + 17])
        states = ms.update(net.xp, states, out, out, lab, backend.asarray(w[s : s + 17]))
    got = ms.decode(backend.to_host(ms.vector(net.xp, states)))
    assert_matches(got, {m: sklearn_value(m, labels, raw, w) for m in names})
    # ROC AUC with ties, binary (scores of class 1) and one-vs-rest on three classes
    binary = labels % 2
    for cols, lab, name in ((raw[:, :1], binary, "roc_auc"), (None, labels % 3, "roc_auc_ovr")):
        if cols is None:
            cols = rng.multinomial(10, np.ones(3) / 3, size=n) / 10.0
        one = MetricSet([name])
        net2 = xbp.mlp([2, cols.shape[1]], backend=backend)
        st = one.start(net2)
        for s in range(0, n, 25):
            o = backend.asarray(cols[s : s + 25])
            st = one.update(
                net2.xp, st, o, o, backend.asarray(lab[s : s + 25]), backend.asarray(w[s : s + 25])
            )
        value = one.decode(backend.to_host(one.vector(net2.xp, st)))[name]
        assert np.isclose(value, sklearn_value(name, lab, cols, w), rtol=TOL, atol=TOL)


def test_regression_metrics_equal_sklearn(backend: xbp.backends.select.Backend) -> None:
    """Two outputs far from zero (offset 1e4): centred sums keep the variances exact."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(177, 4))
    y = np.stack([1e4 + 3 * x[:, 0], -50 + x[:, 1] * x[:, 2]], axis=1) + rng.normal(size=(177, 2))
    w = rng.uniform(0.1, 2.0, size=177)
    net = xbp.mlp([4, 6, 2], activation="tanh", output="identity", seed=2, backend=backend)
    out = np.asarray(xbp.predict(net, x)) + 1e4  # near the first target, as a trained net
    for weights in (None, w):
        for name in REGRESSION:
            ms = MetricSet([name])
            st = ms.start(net)
            for s in range(0, 177, 40):
                st = ms.update(
                    net.xp,
                    st,
                    backend.asarray(out[s : s + 40]),
                    backend.asarray(y[s : s + 40]),
                    None,
                    None if weights is None else backend.asarray(weights[s : s + 40]),
                )
            got = ms.decode(backend.to_host(ms.vector(net.xp, st)))[name]
            want = sklearn_regression(name, y, out, weights)
            assert np.isclose(got, want, rtol=TOL, atol=TOL), (name, got, want)
    got = xbp.evaluate(net, x, y, metrics=REGRESSION, sample_weight=w)
    pred = np.asarray(xbp.predict(net, x))
    assert_matches(got, {m: sklearn_regression(m, y, pred, w) for m in REGRESSION})


def test_constant_targets_follow_sklearns_force_finite() -> None:
    y = np.full((6, 1), 2.0)
    net = xbp.mlp([1, 1], output="identity")
    # exact: 1 for both; off by a constant: R² 0, explained variance 1 (no residual spread)
    for out, want in ((y.copy(), (1.0, 1.0)), (y + 1.0, (0.0, 1.0))):
        for name, value in zip(("r2", "explained_variance"), want):
            ms = MetricSet([name])
            st = ms.update(net.xp, ms.start(net), out, y, None, None)
            got = ms.decode(ms.vector(net.xp, st))[name]
            assert got == value == sklearn_regression(name, y, out, None)


def test_fit_logs_training_and_validation_metrics(backend: xbp.backends.select.Backend) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(96, 3))
    labels = (x @ np.array([1.0, -1.0, 0.5]) > 0).astype(int) + (x[:, 0] > 1)
    xv, lv = x[:40], labels[:40]
    net = xbp.mlp([3, 5, 3], output="softmax", loss="cross_entropy", seed=0, backend=backend)
    names = ["f1_macro", "roc_auc_ovr", "log_loss"]
    # a learning rate below float64 resolution: every step sees the final network, so the running
    # training metrics are scikit-learn's on its predictions too
    hist = xbp.fit(
        net,
        x,
        labels,
        epochs=2,
        batch_size=10,
        optimizer=xbp.optim.sgd(1e-300),
        metrics=names,
        validation_data=(xv, lv),
        progress=False,
    )
    proba = np.asarray(xbp.predict(net, x))
    for m in names:
        assert np.isclose(hist[m][-1], sklearn_value(m, labels, proba, None), rtol=TOL, atol=TOL)
        want = sklearn_value(m, lv, proba[:40], None)
        assert np.isclose(hist[f"val_{m}"][-1], want, rtol=TOL, atol=TOL)
    assert hist["val_loss"][-1] == pytest.approx(xbp.evaluate(net, xv, lv)["loss"], rel=1e-12)
    assert {"f1_macro", "val_roc_auc_ovr", "val_log_loss"} <= set(hist.keys())


def test_training_metrics_follow_the_steps_outputs() -> None:
    """Running metrics (as the loss): with learning, the epoch's training R² is that of
    the outputs each step saw, not the final network's."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 2))
    y = x @ np.array([[2.0], [-1.0]])
    net = xbp.mlp([2, 1], output="identity", seed=0)
    hist = xbp.fit(
        net, x, y, epochs=1, batch_size=8, shuffle=False, metrics=["mse"], progress=False
    )
    # the loss is half the mean squared error of the same outputs
    assert hist["mse"][0] == pytest.approx(2 * hist["loss"][0], rel=1e-12)
    final = xbp.evaluate(net, x, y, metrics=["mse"])["mse"]
    assert final < hist["mse"][0]


@pytest.mark.parametrize(
    ("monitor", "mode"),
    [
        ("val_r2", "max"),
        ("val_rmse", "min"),
        ("f1_macro", "max"),
        ("val_log_loss", "min"),
        ("val_roc_auc_ovr", "max"),
        ("mae", "min"),
        ("val_top_3_accuracy", "max"),
        ("val_loss", "min"),
        ("accuracy", "max"),
    ],
)
def test_each_metric_is_watched_in_its_own_direction(monitor: str, mode: str, tmp_path) -> None:
    assert metric_mode(monitor) == mode
    assert xbp.EarlyStopping(monitor=monitor).mode == mode
    assert xbp.ModelCheckpoint(tmp_path / "c.npz", best_only=True, monitor=monitor).mode == mode
    # and the direction decides: a better value resets the wait, a worse one counts
    stop = xbp.EarlyStopping(monitor=monitor, patience=0, restore_best=False)
    better, worse = (2.0, 0.5) if mode == "max" else (0.5, 2.0)

    class T:
        stop_training = False
        history = xbp.History()

    t = T()
    stop.on_epoch_end(t, {"epoch": 1, monitor: 1.0})  # type: ignore[arg-type]
    stop.on_epoch_end(t, {"epoch": 2, monitor: better})  # type: ignore[arg-type]
    assert not t.stop_training and stop.best == better
    stop.on_epoch_end(t, {"epoch": 3, monitor: worse})  # type: ignore[arg-type]
    assert t.stop_training


def test_early_stopping_on_a_metric_in_a_run() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(80, 2))
    y = x @ np.array([[1.0], [0.5]])
    net = xbp.mlp([2, 1], output="identity", seed=0)
    stop = xbp.EarlyStopping(monitor="val_r2", patience=1)
    hist = xbp.fit(
        net,
        x,
        y,
        epochs=6,
        batch_size=8,
        metrics=["r2"],
        validation_data=(x[:20], y[:20]),
        callbacks=[stop],
        progress=False,
    )
    assert stop.best == max(hist["val_r2"]) and hist["val_r2"][-1] > hist["val_r2"][0]


def test_bad_metric_arguments_are_one_line_errors() -> None:
    x, y = xbp.data.make_xor()
    net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    with pytest.raises(XbpValueError, match="'f2' is not a metric xbp knows"):
        xbp.fit(net, x, y, epochs=1, metrics=["f2"], progress=False)
    with pytest.raises(XbpTypeError, match="metrics must be a list"):
        xbp.evaluate(net, x, y, metrics="f1")
    with pytest.raises(XbpTypeError, match="metrics holds a int"):
        get_metric(3)  # type: ignore[arg-type]
    with pytest.raises(XbpValueError, match="top_k_accuracy k=0"):
        xbp.metrics.top_k_accuracy(0)
    multi = xbp.mlp([2, 3], output="softmax", loss="cross_entropy")
    with pytest.raises(XbpValueError, match="'f1' is for two classes.*use f1_macro"):
        xbp.evaluate(multi, x, np.array([0, 1, 2, 0]), metrics=["f1"])
    with pytest.raises(XbpValueError, match="'roc_auc' is for two classes"):
        xbp.evaluate(multi, x, np.array([0, 1, 2, 0]), metrics=["roc_auc"])
    reg = xbp.mlp([2, 1], output="identity")
    with pytest.raises(XbpValueError, match="'f1_macro' needs class labels.*r2"):
        xbp.evaluate(reg, x, y * 2.5, metrics=["f1_macro"])
    with pytest.raises(XbpValueError, match="compile=True with metrics"):
        xbp.TrainOptions(metrics=["r2"], compile=True)
    with pytest.raises(XbpValueError, match="neither the loss nor a metric"):
        xbp.EarlyStopping(monitor="val_f1_macr")


def test_history_is_a_mapping_of_columns() -> None:
    x, y = xbp.data.make_xor()
    net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    hist = xbp.fit(net, x, y, epochs=3, batch_size=4, metrics=["f1"], progress=False)
    keys = hist.keys()
    assert keys[:3] == ["epoch", "loss", "accuracy"] and "f1" in keys
    assert dict(hist.items())["epoch"] == [1, 2, 3] == hist["epoch"]
    assert hist.values()[keys.index("f1")] == hist["f1"]
    assert "f1" in hist and "f2" not in hist and hist.get("f2", 7) == 7
    assert len(hist) == 3
    with pytest.raises(KeyError, match="'f2' is not a column"):
        hist["f2"]
    assert xbp.History()["loss"] == []  # no epochs yet: every column is empty


def test_extreme_probabilities_and_absent_classes_follow_sklearn() -> None:
    """log_loss clips each class's probability as scikit-learn does (1 - p clipped, not
    1 - clipped p); macro averages skip a class neither true nor predicted."""
    net1 = xbp.mlp([1, 1], loss="binary_cross_entropy")
    out = np.array([[1.0], [0.0], [1e-300], [1 - 1e-17], [0.3]])
    labels = np.array([0, 1, 1, 0, 1])
    ms = MetricSet(["log_loss"])
    st = ms.update(net1.xp, ms.start(net1), out, None, labels, None)
    got = ms.decode(ms.vector(net1.xp, st))["log_loss"]
    assert np.isclose(got, sklearn_value("log_loss", labels, out, None), rtol=TOL)
    net = xbp.mlp([1, 4], output="softmax", loss="cross_entropy")
    proba = np.array([[0.7, 0.2, 0.1, 0.0], [0.1, 0.8, 0.1, 0.0], [0.6, 0.3, 0.1, 0.0]])
    labels = np.array([0, 1, 1])  # classes 2 and 3: never true, never predicted
    names = ["precision_macro", "recall_macro", "f1_macro"]
    ms = MetricSet(names)
    st = ms.update(net.xp, ms.start(net), proba, None, labels, None)
    got = ms.decode(ms.vector(net.xp, st))
    assert_matches(got, {m: sklearn_value(m, labels, proba, None) for m in names})
    assert got["recall_macro"] == 0.75  # (1 + 1/2) / 2 classes, not / 4


def test_regression_sums_are_centred(backend: xbp.backends.select.Backend) -> None:
    """Targets at 1e6 with unit spread: raw sums of squares would lose 1e-4 of R²."""
    rng = np.random.default_rng(7)
    y = 1e6 + rng.normal(size=(177, 1))
    out = y + 0.5 * rng.normal(size=(177, 1))
    net = xbp.mlp([1, 1], output="identity", backend=backend)
    for name in ("r2", "explained_variance"):
        ms = MetricSet([name])
        st = ms.start(net)
        for s in range(0, 177, 40):
            o, t = backend.asarray(out[s : s + 40]), backend.asarray(y[s : s + 40])
            st = ms.update(net.xp, st, o, t, None, None)
        got = ms.decode(backend.to_host(ms.vector(net.xp, st)))[name]
        assert np.isclose(got, sklearn_regression(name, y, out, None), rtol=1e-12, atol=0)


def test_progress_lines_show_the_metrics(capsys) -> None:
    x, y = xbp.data.make_xor()
    net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    hist = xbp.fit(net, x, y, epochs=1, batch_size=4, metrics=["f1"], progress="lines")
    line = capsys.readouterr().out.strip()
    assert f"f1 {hist['f1'][0]:.4f}" in line and "confusion" not in line


def test_metrics_in_a_data_parallel_run_are_refused() -> None:
    class Two(xbp.parallel.LocalStrategy):
        size = 2  # what an MPI strategy of two processes says; nothing is exchanged here

    x, y = xbp.data.make_xor()
    net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    with pytest.raises(XbpValueError, match="metrics= is not supported in data-parallel runs"):
        xbp.fit(net, x, y, epochs=1, batch_size=4, metrics=["f1"], strategy=Two(),
                progress=False)  # fmt: skip
