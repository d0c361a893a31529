"""Ten rules of xbp that no other test pins, each checked through the public API.

Every test here was seen to fail with its rule broken in the library (one planted bug at
a time): the cosine schedule's flat tail, the disjoint validation split, the halved rate
in a compiled step, EarlyStopping's ``min_delta``, ModelCheckpoint's best model, the
precision policy restored by ``fit``, no accuracy for soft targets, the estimators'
``tol`` under early stopping, the CLI's rows-per-class rule and the task of a resumed run.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import backend_or_skip, required_backends

import xbp
from xbp import optim
from xbp.cli import main
from xbp.data.sources import split_validation, to_device


class _Script(xbp.Callback):
    """Writes ``values[epoch - 1]`` into the epoch's logs as ``name`` (a controlled metric)."""

    def __init__(self, name: str, values: list[float]) -> None:
        self.name, self.values = name, values

    def on_epoch_end(self, trainer: xbp.train.Trainer, logs: dict[str, Any]) -> None:
        logs[self.name] = self.values[logs["epoch"] - 1]


class _Weights(xbp.Callback):
    """Keeps a host copy of the weights at the end of every epoch."""

    def __init__(self) -> None:
        self.seen: list[list[dict[str, np.ndarray]]] = []

    def on_epoch_end(self, trainer: xbp.train.Trainer, logs: dict[str, Any]) -> None:
        self.seen.append(trainer.net.host_params())


def _xor() -> tuple[np.ndarray, np.ndarray]:
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return x, np.array([[0.0], [1.0], [1.0], [0.0]])


def _max_rel(a: xbp.Network, b: xbp.Network) -> float:
    err = 0.0
    for p, q in zip(a.host_params(), b.host_params()):
        for k in p:
            scale = float(np.max(np.abs(p[k]))) or 1.0
            err = max(err, float(np.max(np.abs(p[k] - q[k]))) / scale)
    return err


# -- 1. the cosine schedule ends flat at alpha * lr ------------------------------------------
def test_cosine_schedule_is_flat_at_alpha_lr_after_decay_steps() -> None:
    """Rule 1: cosine(lr, n, alpha) follows the formula up to n, then stays at alpha * lr."""
    lr, n, alpha = 0.3, 8, 0.1
    sched = optim.cosine(lr, n, alpha)
    for c in range(n + 1):
        want = lr * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * c / n)) + alpha)
        assert sched(c) == pytest.approx(want, rel=1e-14)
    assert sched(0) == pytest.approx(lr, rel=1e-15)
    assert sched(n) == pytest.approx(alpha * lr, rel=1e-14)
    # flat after the decay: the very same number at n, n + 1, 10 n and beyond
    tail = [sched(c) for c in (n, n + 1, n + 3, 2 * n, 10 * n, 1000 * n)]
    assert len(set(tail)) == 1
    # alpha=0 decays to exactly 0 and stays there
    assert [optim.cosine(1.0, 5)(c) for c in (5, 6, 50)] == [0.0, 0.0, 0.0]


def test_cosine_schedule_is_flat_in_the_learning_rate_history() -> None:
    """Rule 1 through fit: the logged rate stops changing once decay_steps have passed."""
    x, y = _xor()
    net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    sched = optim.cosine(0.5, 3, alpha=0.2)
    hist = xbp.fit(net, x, y, epochs=7, batch_size=4, optimizer=optim.sgd(sched), progress=False)
    # one step per epoch: epoch k starts at step k - 1
    assert hist["learning_rate"] == [sched(c) for c in range(7)]
    assert hist["learning_rate"][3:] == [pytest.approx(0.1, rel=1e-14)] * 4
    assert hist["learning_rate"][2] > hist["learning_rate"][3]


# -- 2. a validation split never leaks rows into training ------------------------------------
@pytest.mark.parametrize(("n", "fraction", "seed"), [(20, 0.25, 0), (17, 0.3, 5), (9, 0.5, None)])
def test_split_validation_is_a_partition(n: int, fraction: float, seed: int | None) -> None:
    """Rule 2: training and validation rows are disjoint and together every row, once."""
    net = xbp.mlp([1, 1], seed=0)
    x = np.arange(n, dtype=float)[:, None]  # the feature names the row
    data = to_device(net, x, x * 10)
    train, val = split_validation(net, data, fraction, seed)
    rows_t = np.asarray(train.x)[:, 0].astype(int).tolist()
    rows_v = np.asarray(val.x)[:, 0].astype(int).tolist()
    assert len(rows_v) == round(n * fraction) and len(rows_t) == n - len(rows_v)
    assert len(set(rows_t)) == len(rows_t) and len(set(rows_v)) == len(rows_v)
    assert not set(rows_t) & set(rows_v)
    assert sorted(rows_t + rows_v) == list(range(n))
    # targets travel with their rows
    np.testing.assert_array_equal(np.asarray(train.y)[:, 0], np.asarray(rows_t) * 10.0)
    np.testing.assert_array_equal(np.asarray(val.y)[:, 0], np.asarray(rows_v) * 10.0)


def _rows_in(mean_cost: float, count: int, n: int) -> set[int]:
    """Rows whose costs 0.5 * 4**i sum to ``mean_cost * count`` (base-4 digits)."""
    mask = int(round(2 * mean_cost * count))
    rows = {i for i in range(n) if (mask >> (2 * i)) & 3}
    assert mask == sum(4**i for i in rows), "a row counted twice or a cost not a row's"
    return rows


def test_fit_validation_split_trains_on_the_other_rows() -> None:
    """Rule 2 through fit: the loss and val_loss come from disjoint rows covering all rows.

    The network outputs 0 (zero weights, a negligible rate), so row i costs
    0.5 * 4**i and each mean cost spells out, in base 4, exactly which rows it
    averaged."""
    n, fraction = 20, 0.25
    net = xbp.mlp([1, 1], loss="quadratic", seed=0)
    net.params = [{"W": np.zeros((1, 1)), "b": np.zeros(1)}]
    x = np.zeros((n, 1))
    y = (2.0 ** np.arange(n))[:, None]
    hist = xbp.fit(
        net,
        x,
        y,
        epochs=1,
        batch_size=5,
        optimizer=optim.sgd(1e-300),
        validation_split=fraction,
        seed=3,
        progress=False,
    )
    n_val = round(n * fraction)
    train_rows = _rows_in(hist["loss"][0], n - n_val, n)
    val_rows = _rows_in(hist["val_loss"][0], n_val, n)
    assert len(val_rows) == n_val and len(train_rows) == n - n_val
    assert not train_rows & val_rows
    assert train_rows | val_rows == set(range(n))
    # the same rows split_validation holds out with the run's seed
    data = to_device(net, np.arange(n, dtype=float)[:, None], y)
    _, val = split_validation(net, data, fraction, 3)
    assert set(np.asarray(val.x)[:, 0].astype(int).tolist()) == val_rows


# -- 3. compiled steps honour the halved rate of a non-SGD optimizer -------------------------
@pytest.fixture
def jax_backend() -> xbp.backends.select.Backend:
    return backend_or_skip("jax-cpu", "jax", "cpu", required_backends())


def _diverging_run(
    be: xbp.backends.select.Backend, name: str, compile: bool
) -> tuple[xbp.Network, xbp.History]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    y = (x @ np.arange(5.0))[:, None]
    if name == "momentum":
        # two layers with momentum at 0.02, one row a step: the weights blow up in epoch 1
        net = xbp.mlp([5, 8, 1], activation="identity", loss="quadratic", backend=be, seed=1)
        opt, batch = optim.momentum(0.02, 0.9), 1
    else:
        # Adam moves each weight by about the rate: only a rate near overflow diverges
        net = xbp.mlp([5, 1], loss="quadratic", backend=be, seed=1)
        opt, batch = optim.adam(1e154), 8
    hist = xbp.fit(
        net,
        x,
        y,
        epochs=2,
        batch_size=batch,
        optimizer=opt,
        on_divergence="halve",
        max_retries=6,
        progress=False,
        compile=compile,
        seed=2,
    )
    return net, hist


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_compiled_step_uses_the_halved_rate_after_divergence(
    jax_backend: xbp.backends.select.Backend, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rule 3: after on_divergence='halve', a compiled (jax) momentum/Adam step trains at the
    halved rate, giving the eager run's weights and learning-rate column."""
    eager, h_eager = _diverging_run(jax_backend, name, compile=False)
    comp, h_comp = _diverging_run(jax_backend, name, compile=True)
    capsys.readouterr()
    # the first epoch diverged and was retried at a halved rate, in both runs alike
    assert h_eager.diverged and h_eager.diverged[0]["epoch"] == 1
    assert [d["epoch"] for d in h_comp.diverged] == [d["epoch"] for d in h_eager.diverged]
    lr0 = h_eager.diverged[0]["learning_rate"]
    rate = lr0 / 2 ** len(h_eager.diverged)
    assert h_eager["learning_rate"] == h_comp["learning_rate"] == [rate, rate]
    assert np.isfinite(h_comp["loss"]).all() and len(h_comp) == 2
    assert _max_rel(eager, comp) <= 1e-12
    np.testing.assert_allclose(h_comp["loss"], h_eager["loss"], rtol=1e-12)


# -- 4. EarlyStopping honours min_delta --------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "values"),
    [
        ("min", [1.0, 0.95, 0.89, 0.85, 0.84, 0.83, 0.82, 0.81]),
        ("max", [0.0, 0.05, 0.11, 0.15, 0.16, 0.17, 0.18, 0.19]),
    ],
)
def test_early_stopping_min_delta_counts_small_gains_as_none(
    mode: str, values: list[float]
) -> None:
    """Rule 4: a gain smaller than min_delta over the best is no improvement (both modes);
    with min_delta=0 the same sequence never stops."""
    x, y = _xor()

    def run(min_delta: float) -> tuple[xbp.History, xbp.EarlyStopping]:
        stopper = xbp.EarlyStopping(patience=1, min_delta=min_delta, monitor="fake", mode=mode)
        net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
        hist = xbp.fit(
            net,
            x,
            y,
            epochs=len(values),
            batch_size=4,
            callbacks=[_Script("fake", values), stopper],
            progress=False,
        )
        return hist, stopper

    # epoch 2 gains 0.05 (< 0.1: waits), epoch 3 beats the best by 0.11, then 4 and 5 wait
    hist, stopper = run(0.1)
    assert hist.stopped_early and len(hist) == 5
    assert stopper.best_epoch == 3 and stopper.best == values[2]
    hist, stopper = run(0.0)
    assert not hist.stopped_early and len(hist) == len(values)
    assert stopper.best_epoch == len(values)


# -- 5. ModelCheckpoint(best_only=True) keeps the best model ----------------------------------
@pytest.mark.parametrize(
    ("monitor", "values", "best"),
    [
        ("val_accuracy", [0.5, 0.9, 0.7, 0.8, 0.6], 2),
        ("accuracy", [0.4, 0.6, 0.95, 0.3, 0.9], 3),
        ("val_loss", [0.9, 0.3, 0.5, 0.4, 0.7], 2),
        ("loss", [0.8, 0.9, 0.6, 0.2, 0.5], 4),
    ],
)
def test_best_only_checkpoint_holds_the_best_epochs_weights(
    tmp_path: Path, monitor: str, values: list[float], best: int
) -> None:
    """Rule 5: accuracy monitors keep the highest value's model, loss monitors the lowest."""
    x, y = _xor()
    path = tmp_path / "best.npz"
    weights = _Weights()
    net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    xbp.fit(
        net,
        x,
        y,
        epochs=len(values),
        batch_size=2,
        optimizer=optim.sgd(0.5),
        validation_data=(x, y),
        callbacks=[
            _Script(monitor, values),
            weights,
            xbp.ModelCheckpoint(path, best_only=True, monitor=monitor),
        ],
        progress=False,
    )
    ck = xbp.load_checkpoint(path)
    assert ck.training["epoch"] == best
    saved = ck.network.host_params()
    for got, want in zip(saved, weights.seen[best - 1]):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    # and not the last epoch's (the weights kept changing)
    assert any(not np.array_equal(saved[0]["W"], w[0]["W"]) for w in weights.seen[best:])


# -- 6. fit restores the network's precision policy ------------------------------------------
@pytest.fixture
def torch_cpu() -> xbp.backends.select.Backend:
    return backend_or_skip("torch-cpu", "torch", "cpu", required_backends())


class _Precision(xbp.Callback):
    """Records the policy in force during training; optionally fails after epoch 1."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.seen: list[str] = []

    def on_epoch_end(self, trainer: xbp.train.Trainer, logs: dict[str, Any]) -> None:
        self.seen.append(trainer.net.precision)
        if self.fail:
            raise RuntimeError("a callback failed")


@pytest.mark.parametrize(("own", "run"), [("exact", "bf16"), ("exact", "fp16"), ("bf16", "exact")])
def test_fit_restores_the_networks_precision(
    torch_cpu: xbp.backends.select.Backend, own: str, run: str
) -> None:
    """Rule 6: fit(precision=...) applies for the run only, also when the run raises."""
    x, y = _xor()
    for fail in (False, True):
        net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", backend=torch_cpu, seed=0)
        net.precision = own
        probe = _Precision(fail)
        args: dict[str, Any] = dict(epochs=2, batch_size=4, progress=False, callbacks=[probe])
        if fail:
            with pytest.raises(RuntimeError, match="a callback failed"):
                xbp.fit(net, x, y, precision=run, **args)
        else:
            xbp.fit(net, x, y, precision=run, **args)
        assert probe.seen and set(probe.seen) == {run}  # the run's policy while training
        assert net.precision == own


# -- 7. soft targets get no accuracy -----------------------------------------------------------
def test_soft_targets_have_no_accuracy_one_hot_targets_do() -> None:
    """Rule 7: probability rows under cross_entropy are not credited with an accuracy."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3))
    p = rng.uniform(0.2, 0.8, size=12)
    soft = np.stack([p, 1 - p], axis=1)
    mixed = soft.copy()
    mixed[:6] = np.eye(2)[rng.integers(0, 2, size=6)]  # half one-hot is still soft data
    labels = (x[:, 0] > 0).astype(np.int64)
    onehot = np.eye(2)[labels]
    for targets in (soft, mixed):
        net = xbp.mlp([3, 4, 2], loss="cross_entropy", seed=0)
        hist = xbp.fit(
            net, x, targets, epochs=2, batch_size=4, validation_data=(x, targets), progress=False
        )
        assert hist["accuracy"] == [None, None] and hist["val_accuracy"] == [None, None]
        assert xbp.evaluate(net, x, targets)["accuracy"] is None
        assert net.evaluate(x, targets)["accuracy"] is None
    net = xbp.mlp([3, 4, 2], loss="cross_entropy", seed=0)
    hist = xbp.fit(
        net, x, onehot, epochs=2, batch_size=4, validation_data=(x, onehot), progress=False
    )
    assert all(isinstance(a, float) and 0 <= a <= 1 for a in hist["accuracy"])
    assert all(isinstance(a, float) for a in hist["val_accuracy"])
    acc = xbp.evaluate(net, x, onehot)["accuracy"]
    assert acc == pytest.approx(float(np.mean(net.predict(x).argmax(axis=1) == labels)))


# -- 8. the estimators' tol in the validation-score stopping rule ----------------------------
def test_estimator_tol_applies_to_early_stopping_as_in_scikit_learn() -> None:
    """Rule 8: with early_stopping=True, a validation gain below tol is no improvement:
    xbp stops at scikit-learn's epoch for a large tol and for tol=0, and they differ."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_iris
    from sklearn.neural_network import MLPClassifier as SkClassifier

    from xbp.sklearn import MLPClassifier

    x, y = load_iris(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    params: dict[str, Any] = dict(
        hidden_layer_sizes=(5,),
        batch_size=16,
        learning_rate_init=0.01,
        alpha=1e-3,
        random_state=0,
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=3,
        max_iter=200,
        solver="adam",
    )
    stops = {}
    for tol in (0.05, 0.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = MLPClassifier(**params, tol=tol).fit(x, y)
            theirs = SkClassifier(**params, tol=tol).fit(x, y)
        assert ours.n_iter_ == theirs.n_iter_
        assert ours.validation_scores_ is not None
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
        assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_)
        stops[tol] = ours.n_iter_
    # tol=0.05 ends the run while accuracy still climbs by 1/30 an epoch
    assert stops[0.05] < stops[0.0] < params["max_iter"]


# -- 9. the CLI's rows-per-class rule for whole-number targets -------------------------------
def _int_csv(path: Path, labels: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(labels), 2))
    rows = "".join(f"{a:.4f},{b:.4f},{int(v)}\n" for (a, b), v in zip(x, labels))
    path.write_text("a,b,target\n" + rows)
    return path


_SMALL_RUN = ["--layers", "2", "--batch-size", "2", "--val-split", "0", "--test-split", "0"]


@pytest.mark.parametrize(("k", "n", "want"), [(3, 6, 3), (3, 5, 1), (4, 8, 4), (4, 7, 1)])
def test_task_auto_needs_two_rows_per_class(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], k: int, n: int, want: int
) -> None:
    """Rule 9: under quadratic, labels 0..k-1 count as k classes only with n >= 2k rows."""
    data = _int_csv(tmp_path / "d.csv", np.arange(n) % k)
    model = tmp_path / "m.npz"
    argv = ["train", "--data", str(data), "--loss", "quadratic", "--task", "auto"]
    assert main([*argv, *_SMALL_RUN, "--epochs", "1", "--quiet", "--save", str(model)]) == 0
    capsys.readouterr()
    ck = xbp.load_checkpoint(model)
    assert ck.network.n_out == want
    assert ck.metadata["task"] == ("classification" if want == k else "regression")


# -- 10. a resumed CLI run keeps the checkpoint's task -----------------------------------------
@pytest.mark.parametrize(
    ("labels", "task", "stored", "n_out"),
    [
        # auto would call 5 rows of 3 labels a regression; the run was told to classify
        (np.arange(5) % 3, "classify", "classification", 3),
        # auto would call 12 rows of labels 0..2 classes; the run was told to regress
        (np.arange(12) % 3, "regress", "regression", 1),
    ],
)
def test_resume_keeps_the_checkpoints_task(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    labels: np.ndarray,
    task: str,
    stored: str,
    n_out: int,
) -> None:
    """Rule 10: `xbp train --resume` continues with the stored task (not auto-detection on
    the data), and a --task contradicting the stored network is refused."""
    data = _int_csv(tmp_path / "d.csv", labels)
    ck_path, model = tmp_path / "run.npz", tmp_path / "m.npz"
    argv = ["train", "--data", str(data), "--loss", "quadratic", "--task", task, *_SMALL_RUN]
    argv += ["--schedule", "constant", "--epochs", "1", "--quiet", "--checkpoint", str(ck_path)]
    assert main(argv) == 0
    assert xbp.load_checkpoint(ck_path).metadata["task"] == stored
    resume = ["train", "--resume", str(ck_path), "--quiet"]
    assert main([*resume, "--epochs", "2", "--save", str(model)]) == 0
    for path in (ck_path, model):
        ck = xbp.load_checkpoint(path)
        assert ck.metadata["task"] == stored and ck.network.n_out == n_out
    assert xbp.load_checkpoint(ck_path).training["epoch"] == 2
    capsys.readouterr()
    other = "regress" if task == "classify" else "classify"
    assert main([*resume, "--epochs", "3", "--task", other]) == 2
    assert "network but --data gives" in capsys.readouterr().err
    assert xbp.load_checkpoint(ck_path).training["epoch"] == 2  # nothing was trained
