"""The task and target rules (xbp.nn.targets), class labels and feature names kept on the
model, through the library call and through the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

import xbp
from xbp.cli import main
from xbp.errors import XbpValueError, spelled
from xbp.nn.targets import MIN_ROWS_PER_CLASS, encode_labels, infer_targets

pd = pytest.importorskip("pandas")


def _diabetes_like(n: int = 442) -> np.ndarray:
    # a disease-progression score: ~200 distinct whole numbers from 25 to 346
    return np.random.default_rng(0).integers(25, 347, size=n)


def test_many_whole_numbers_are_a_measurement() -> None:
    t = infer_targets(_diabetes_like())
    assert (t.task, t.n_out, t.loss, t.classes) == ("regression", 1, "quadratic", None)
    assert t.y.dtype == np.float64


def test_many_whole_numbers_under_cross_entropy_say_how_to_choose() -> None:
    with pytest.raises(XbpValueError, match=r"task='regression'.*task='classification'"):
        infer_targets(_diabetes_like(), loss="cross_entropy")
    # asked for explicitly: one class per distinct value, the values kept as labels
    y = _diabetes_like()
    t = infer_targets(y, task="classification")
    assert t.n_out == np.unique(y).size and t.classes == tuple(np.unique(y).tolist())
    np.testing.assert_array_equal(np.asarray(t.classes)[t.y], y)


@pytest.mark.parametrize("k", [2, 3, 7])
def test_rows_per_class_threshold(k: int) -> None:
    enough = np.arange(MIN_ROWS_PER_CLASS * k) % k
    assert infer_targets(enough).task == "classification"
    assert infer_targets(enough[:-1]).task == "regression"  # one row short


def test_contiguous_from_zero_or_one_are_labels_a_gap_is_not() -> None:
    plain = infer_targets(np.arange(30) % 3)
    assert (plain.task, plain.n_out, plain.classes) == ("classification", 3, None)
    wine = infer_targets(np.arange(30) % 3 + 1)
    assert (wine.task, wine.n_out, wine.classes) == ("classification", 3, (1, 2, 3))
    np.testing.assert_array_equal(wine.y, np.arange(30) % 3)
    assert infer_targets(np.arange(30) % 3 + 2).task == "regression"  # 2..4
    assert infer_targets(np.array([1, 2, 4] * 10)).task == "regression"  # a gap
    assert infer_targets(np.array([3, 9] * 10)).task == "classification"  # any two values


def test_names_booleans_rows_and_reals() -> None:
    t = infer_targets(np.array(["b", "a", "c", "a"]))
    assert (t.task, t.n_out, t.loss, t.classes) == (
        "classification",
        3,
        "cross_entropy",
        ("a", "b", "c"),
    )
    assert t.y.tolist() == [1, 0, 2, 0]
    t = infer_targets(np.array([True, False, True, False]), loss="binary_cross_entropy")
    assert (t.n_out, t.classes, t.y.tolist()) == (1, (False, True), [1, 0, 1, 0])
    assert infer_targets(np.eye(3)[[0, 1, 2, 1]]).loss == "cross_entropy"
    assert infer_targets(np.array([[1, 0], [1, 1], [0, 0]])).loss == "binary_cross_entropy"
    real = infer_targets(np.array([[0.5, 2.0], [1.5, 3.0]]))
    assert (real.task, real.n_out, real.loss) == ("regression", 2, "quadratic")
    assert infer_targets(np.array([0.5, 1.25, 2.0])).task == "regression"
    # class labels under the quadratic cost keep the classic sigmoid output
    q = infer_targets(np.arange(12) % 3, loss="quadratic")
    assert (q.task, q.n_out, q.output) == ("classification", 3, "sigmoid")
    assert infer_targets(np.arange(12) % 2, loss="quadratic").n_out == 1


@pytest.mark.parametrize(
    ("y", "kw", "match"),
    [
        (np.array(["a", "b"]), {"task": "regression"}, "holds names"),
        (np.array([0.5, 1.5]), {"task": "classification"}, "not whole numbers"),
        (np.array([0.5, 1.5]), {"loss": "cross_entropy"}, "not whole numbers"),
        (np.array([1, 1, 1]), {"task": "classification"}, "single class"),
        (np.array([0.0, np.nan]), {}, "NaN"),
        (np.arange(9) % 3, {"loss": "binary_cross_entropy"}, r"\[0, 1\]"),
        (np.arange(4), {"task": "sideways"}, "task="),
    ],
)
def test_bad_targets_one_line(y, kw, match) -> None:
    with pytest.raises(XbpValueError, match=match) as info:
        infer_targets(y, **kw)
    assert "\n" not in str(info.value)


def test_errors_read_in_the_callers_words() -> None:
    table = {"loss": ("--loss", {}), "task": ("--task", {"regression": "regress"})}
    with spelled(table), pytest.raises(XbpValueError, match="pass --task regress"):
        infer_targets(_diabetes_like(), loss="cross_entropy")
    with pytest.raises(XbpValueError, match="pass task='regression'"):  # the table is gone
        infer_targets(_diabetes_like(), loss="cross_entropy")


def test_encode_labels_refuses_unknown() -> None:
    assert encode_labels(np.array(["dog", "cat"]), ("cat", "dog")).tolist() == [1, 0]
    with pytest.raises(XbpValueError, match=r"\['cow'\] that are not among"):
        encode_labels(["cat", "cow"], ("cat", "dog"))


@pytest.fixture(params=["numpy", "torch"])
def backend(request):
    if request.param == "torch":
        pytest.importorskip("torch")
    return request.param


def _named_data() -> tuple[object, object]:
    rng = np.random.default_rng(1)
    x = pd.DataFrame(rng.normal(size=(60, 3)), columns=["height", "weight", "age"])
    y = pd.Series(np.where(x["height"] > 0, "tall", "short"))
    return x, y


def test_fit_keeps_class_names_and_feature_names(tmp_path, backend) -> None:
    x, y = _named_data()
    net = xbp.mlp([3, 6, 2], activation="tanh", loss="cross_entropy", backend=backend)
    xbp.fit(net, x, y, epochs=40, optimizer=xbp.optim.adam(0.05), progress=False)
    assert net.classes == ("short", "tall")
    assert net.feature_names == ("height", "weight", "age")
    pred = net.predict_classes(x)
    assert pred.dtype.kind == "U" and (pred == y.to_numpy()).mean() > 0.9
    assert net.evaluate(x, y)["accuracy"] > 0.9
    path = tmp_path / "m.npz"
    xbp.save(net, path)
    back = xbp.load(path, backend=backend)
    assert back.classes == net.classes and back.feature_names == net.feature_names
    np.testing.assert_array_equal(back.predict_classes(x), pred)
    # new data is checked against the recorded columns
    with pytest.raises(XbpValueError, match="reorders them"):
        back.predict(x[["weight", "height", "age"]])
    with pytest.raises(XbpValueError, match=r"lacks \['age'\]"):
        back.predict(x.rename(columns={"age": "years"}))
    back.predict(x.to_numpy())  # plain arrays carry no names to check
    with pytest.raises(XbpValueError, match="not among the network's classes"):
        back.evaluate(x, pd.Series(["tall"] * 59 + ["medium"]))


def test_fit_refuses_names_that_do_not_fit_the_outputs() -> None:
    x, y = _named_data()
    net = xbp.mlp([3, 4, 3], activation="tanh", loss="cross_entropy")
    with pytest.raises(XbpValueError, match="2 classes.*3 output"):
        xbp.fit(net, x, y, epochs=1, progress=False)
    assert net.classes is None


def test_classes_setter_checks_width() -> None:
    net = xbp.mlp([2, 3], loss="cross_entropy")
    with pytest.raises(XbpValueError, match="3 distinct labels"):
        net.classes = ["a", "b"]
    binary = xbp.mlp([2, 1], loss="binary_cross_entropy", classes=["no", "yes"])
    assert set(binary.predict_classes(np.eye(2)).tolist()) <= {"no", "yes"}
    assert binary.config()["classes"] == ["no", "yes"]
    assert "classes" not in xbp.mlp([2, 1]).config()  # old files stay as they were


# -- the same rules through the command line ----------------------------------------
def _csv(path, y, n_features: int = 2) -> str:
    x = np.random.default_rng(0).normal(size=(len(y), n_features))
    rows = "".join(",".join(f"{v:.5f}" for v in row) + f",{int(t)}\n" for row, t in zip(x, y))
    path.write_text(",".join(f"f{i}" for i in range(n_features)) + ",target\n" + rows)
    return str(path)


def test_cli_measurement_target_trains_a_regression(tmp_path, capsys) -> None:
    data = _csv(tmp_path / "diab.csv", _diabetes_like(120))
    model = tmp_path / "m.npz"
    argv = ["train", "--data", data, "--epochs", "1", "--layers", "4", "--quiet"]
    assert main([*argv, "--save", str(model)]) == 0
    ck = xbp.load_checkpoint(model)
    assert ck.metadata["task"] == "regression" and ck.network.n_out == 1
    assert ck.network.loss.name == "quadratic"
    # naming the loss of a classifier is refused in the CLI's words
    assert main([*argv, "--loss", "cross_entropy"]) == 2
    err = capsys.readouterr().err
    assert "--task regress" in err and "task=" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("rows", "task"), [(6, "classification"), (5, "regression")])
def test_cli_task_auto_minimum_rows_per_class(tmp_path, rows, task) -> None:
    data = _csv(tmp_path / "d.csv", np.arange(rows) % 3)
    model = tmp_path / "m.npz"
    argv = ["train", "--data", data, "--epochs", "1", "--layers", "2", "--batch-size", "1"]
    argv += ["--val-split", "0", "--test-split", "0", "--quiet", "--save", str(model)]
    assert main(argv) == 0
    assert xbp.load_checkpoint(model).metadata["task"] == task


def test_cli_resume_keeps_the_stored_task(tmp_path) -> None:
    # labels 0..2 that --task auto would call classes, trained as one real target
    data = _csv(tmp_path / "d.csv", np.arange(60) % 3)
    ck = tmp_path / "ck.npz"
    base = ["train", "--data", data, "--layers", "3", "--batch-size", "8", "--quiet"]
    argv = [*base, "--task", "regress", "--schedule", "constant", "--epochs", "1"]
    assert main([*argv, "--checkpoint", str(ck)]) == 0
    assert main(["train", "--resume", str(ck), "--epochs", "2", "--quiet"]) == 0
    resumed = xbp.load_checkpoint(ck)
    assert resumed.metadata["task"] == "regression" and resumed.network.n_out == 1
    assert resumed.training["epoch"] == 2


def test_cli_keeps_whole_number_classes_on_the_model(tmp_path) -> None:
    data = _csv(tmp_path / "wine.csv", np.arange(60) % 3 + 1)
    model, out = tmp_path / "m.npz", tmp_path / "p.npy"
    argv = ["train", "--data", data, "--epochs", "2", "--layers", "4", "--quiet"]
    assert main([*argv, "--save", str(model)]) == 0
    net = xbp.load(model)
    assert net.classes == (1, 2, 3)
    assert main(["predict", str(model), "--data", data, "--out", str(out)]) == 0
    assert set(np.load(out).tolist()) <= {1, 2, 3}
    assert main(["evaluate", str(model), "--data", data]) == 0


# -- resume checks live in the library: fit(resume=...) refuses what xbp train refuses --
def _run(tmp_path, **kw):
    x, y = xbp.data.make_blobs(n=64, seed=0)
    net = xbp.mlp([x.shape[1], 4, int(y.max()) + 1], activation="tanh", loss="cross_entropy")
    ck = tmp_path / "ck.npz"
    opts = {"epochs": 2, "batch_size": 8, "seed": 3, "progress": False, **kw}
    xbp.fit(net, x, y, checkpoint=ck, **opts)
    return net, x, y, ck, opts


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"batch_size": 16}, r"batch_size=16 contradicts .* trained with batch_size=8"),
        ({"seed": 4}, r"seed=4 contradicts .* seed=3"),
        ({"shuffle": False, "seed": 4}, r"shuffle=False, seed=4 contradicts"),
        ({"validation_split": 0.25}, "validation_split=0.25"),
        ({"epochs": 2}, r"epochs=2 is not beyond the 2 epochs"),
    ],
)
def test_fit_resume_refuses_contradicting_settings(tmp_path, change, match) -> None:
    net, x, y, ck, opts = _run(tmp_path)
    with pytest.raises(XbpValueError, match=match):
        xbp.fit(net, x, y, resume=ck, **{**opts, "epochs": 4, **change})
    xbp.fit(net, x, y, resume=ck, **{**opts, "epochs": 4})  # the same run continues


def test_fit_resume_refuses_other_data(tmp_path) -> None:
    net, x, y, ck, opts = _run(tmp_path)
    x2 = x.copy()
    x2[0, 0] += 1.0
    with pytest.raises(XbpValueError, match="training data .* differ from what"):
        xbp.fit(net, x2, y, resume=ck, **{**opts, "epochs": 4})
    with pytest.raises(XbpValueError, match="validation data differ"):
        xbp.fit(net, x, y, resume=ck, validation_data=(x[:8], y[:8]), **{**opts, "epochs": 4})


def test_cli_resume_on_changed_data_is_refused_by_the_library(tmp_path, capsys) -> None:
    data = tmp_path / "d.csv"
    _csv(data, np.arange(60) % 3)
    ck = tmp_path / "ck.npz"
    argv = ["train", "--data", str(data), "--layers", "3", "--schedule", "constant", "--quiet"]
    assert main([*argv, "--epochs", "1", "--checkpoint", str(ck)]) == 0
    lines = data.read_text().splitlines()
    lines[5] = "9.0," + lines[5].split(",", 1)[1]  # one feature value changes
    data.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["train", "--resume", str(ck), "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "the training data (--data) differ from what" in err and len(err.splitlines()) == 1


# -- one verb, one behaviour: predict streams host rows in bounded memory -------------
@pytest.mark.parametrize("spelling", ["method", "function"])
def test_predict_never_holds_a_whole_hidden_layer(spelling) -> None:
    import tracemalloc

    rows, width = 40_000, 256
    x = np.random.default_rng(0).normal(size=(rows, 10))
    net = xbp.mlp([10, width, 2], activation="relu", loss="cross_entropy")
    whole_layer = rows * width * 8  # 82 MB: what an unbatched forward pass allocates
    tracemalloc.start()
    try:
        if spelling == "method":
            out = net.predict(x, batch_size=1000)
        else:
            out = xbp.predict(net, x, batch_size=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < whole_layer / 8, peak  # the result (0.6 MB) and one batch's layers
    np.testing.assert_allclose(out, net.forward(x), rtol=1e-12)
    assert out.shape == (rows, 2)


def test_onnx_export_carries_the_models_class_and_feature_names(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    x, y = _named_data()
    net = xbp.mlp([3, 4, 2], activation="tanh", loss="cross_entropy", standardize=True)
    xbp.fit(net, x, y, epochs=1, progress=False)
    path = xbp.export_onnx(net, tmp_path / "m.onnx")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["xbp_classes"]) == ["short", "tall"]
    assert json.loads(props["xbp_feature_names"]) == ["height", "weight", "age"]


def test_labels_beyond_float64s_integers_stay_apart() -> None:
    y = np.array([2**53, 2**53 + 1] * 3)
    t = infer_targets(y)
    assert t.classes == (2**53, 2**53 + 1) and t.y.tolist() == [0, 1] * 3
    with pytest.raises(XbpValueError, match="more than the 65536 classes"):
        infer_targets(np.arange(70_000), task="classification")


def test_poisson_targets_are_a_regression_of_counts() -> None:
    t = infer_targets(np.array([0, 3, 1, 7, 2, 0]), loss="poisson")
    assert (t.task, t.n_out, t.loss, t.output) == ("regression", 1, "poisson", None)
    with pytest.raises(XbpValueError, match=r"counts or rates >= 0.*lowest -1"):
        infer_targets(np.array([0.0, -1.0, 2.0]), loss="poisson")
    with pytest.raises(XbpValueError, match="not poisson"):
        infer_targets(np.array([0, 1, 2]), loss="poisson", task="classification")


def test_evaluate_streams_host_rows_like_xbp_evaluate() -> None:
    import tracemalloc

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30_000, 200))  # 48 MB of float64 rows
    y = rng.integers(0, 3, size=30_000)
    w = rng.random(30_000)
    net = xbp.mlp([200, 16, 3], activation="relu", loss="cross_entropy", dtype="float32")
    want = xbp.evaluate(net, x, y, sample_weight=w)
    tracemalloc.start()
    try:
        got = net.evaluate(x, y, batch_size=1000, sample_weight=w)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8e6, peak  # a batch at a time, never the rows cast to float32 at once (24 MB)
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert got["accuracy"] == pytest.approx(want["accuracy"], rel=1e-6)
    assert net.evaluate(x[:500], y[:500]) == pytest.approx(
        net.evaluate(x[:500], y[:500], batch_size=64)
    )


def test_a_model_file_of_the_old_cli_still_predicts_on_raw_data(tmp_path, capsys) -> None:
    """Before the Standardize layer, xbp train recorded the scaling beside the model;
    such files keep predicting, evaluating and exporting on raw features."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)) * 5 + 2
    y = (x[:, 0] > 2).astype(int)
    mean, std = x.mean(axis=0), x.std(axis=0)
    net = xbp.mlp([3, 4, 2], activation="tanh", loss="cross_entropy")
    xbp.fit(net, (x - mean) / std, y, epochs=5, progress=False)
    old = tmp_path / "old.npz"
    meta = {
        "standardize": {"mean": mean.tolist(), "std": std.tolist()},
        "features": {"count": 3, "names": None},
        "label": {"name": None, "index": None, "columns": None},
        "classes": None,
        "task": "classification",
    }
    xbp.save(net, old, metadata=meta)
    data = tmp_path / "x.npz"
    np.savez(data, x=x, y=y)
    out = tmp_path / "p.npz"
    assert main(["predict", str(old), "--data", str(data), "--out", str(out)]) == 0
    np.testing.assert_allclose(np.load(out)["output"], net.predict((x - mean) / std), rtol=1e-12)
    assert main(["evaluate", str(old), "--data", str(data)]) == 0
    want = net.evaluate((x - mean) / std, y)["loss"]
    assert f"{want:.4f}" in capsys.readouterr().out
