"""ONNX export: onnxruntime predicts what xbp predicts, for every activation and loss.

Tests that run a model need ``onnx`` and ``onnxruntime`` (``pip install 'xbp[onnx]'``)
and are skipped without them; the missing-package error is tested either way.
"""

from __future__ import annotations

import dataclasses
import doctest
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import backend_or_skip, required_backends

import xbp
from xbp.errors import XbpFileError, XbpFileNotFoundError, XbpTypeError, XbpValueError
from xbp.io import onnx as export

HIDDEN = ["sigmoid", "tanh", "relu", "leaky_relu", "softplus", "identity"]
# every (loss, output activation) pair xbp accepts
PAIRS = [("quadratic", act) for act in HIDDEN] + [
    ("cross_entropy", "softmax"),
    ("binary_cross_entropy", "sigmoid"),
]
# numpy and a second library: the export reads weights through host_params on any backend
# (jax compiles every new architecture for seconds: test_trained_on_jax covers it once)
BACKENDS = [("numpy", "numpy", None), ("torch-cpu", "torch", "cpu")]
# onnxruntime against xbp: float32 as the issue asks; float64 to about what the
# float32 LeakyRelu alpha attribute allows (0.01 rounded to float32: 2e-8 relative)
TOL = {"float32": 1e-5, "float64": 1e-8}


@pytest.fixture
def ort() -> Any:
    pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install 'xbp[onnx]'")
    return pytest.importorskip(
        "onnxruntime", reason="running exported models needs onnxruntime: pip install 'xbp[onnx]'"
    )


@pytest.fixture(params=BACKENDS, ids=[b[0] for b in BACKENDS])
def trained_on(request: pytest.FixtureRequest) -> xbp.backends.select.Backend:
    test_id, name, device = request.param
    return backend_or_skip(test_id, name, device, required_backends())


def _data(loss: str, n_out: int, n: int = 96, n_in: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, n_in))
    score = x @ rng.normal(size=(n_in, n_out))
    if loss == "cross_entropy":
        return x, np.argmax(score, axis=1)
    if loss == "binary_cross_entropy":
        return x, (score > 0).astype(np.float64)
    return x, 1 / (1 + np.exp(-score))  # in (0, 1): a target every output can reach


def _probe(n_in: int, dtype: str) -> np.ndarray:
    """Rows of ordinary size and rows that saturate every activation."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(37, n_in))
    x[-8:] *= 40.0
    return x.astype(dtype)


def _trained(
    be: xbp.backends.select.Backend, layers: list[tuple[int, int, str]], loss: str, dtype: str
) -> xbp.Network:
    net = xbp.Network(
        [xbp.nn.Dense(*d) for d in layers], loss=loss, backend=be, dtype=dtype, seed=5
    )
    x, y = _data(loss, layers[-1][1])
    xbp.fit(
        net,
        x.astype(dtype),
        y,
        epochs=3,
        batch_size=16,
        optimizer="adam",
        learning_rate=1e-2,
        progress=False,
    )
    return net


def _run(ort: Any, path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = session.run(["y"], {"x": x})
    return y


def _check_predictions(ort: Any, net: xbp.Network, path: Path, dtype: str) -> None:
    x = _probe(net.n_in, dtype)
    want = np.asarray(net.predict(x))
    # the batch dimension is symbolic: one row, and all of them
    for rows in (x[:1], x):
        got = _run(ort, path, rows)
        assert got.dtype == np.dtype(dtype)
        assert got.shape == (rows.shape[0], net.n_out)
        np.testing.assert_allclose(
            got, want[: rows.shape[0]], rtol=TOL[dtype], atol=TOL[dtype], err_msg=str(net)
        )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden", HIDDEN)
def test_every_hidden_activation(
    ort: Any, trained_on: xbp.backends.select.Backend, hidden: str, dtype: str, tmp_path: Path
) -> None:
    layers = [(5, 7, hidden), (7, 6, hidden), (6, 3, "softmax")]
    net = _trained(trained_on, layers, "cross_entropy", dtype)
    path = export.export_onnx(net, tmp_path / "net.onnx")
    _check_predictions(ort, net, path, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss,output", PAIRS, ids=[f"{l}-{o}" for l, o in PAIRS])
def test_every_loss_and_output(
    ort: Any,
    trained_on: xbp.backends.select.Backend,
    loss: str,
    output: str,
    dtype: str,
    tmp_path: Path,
) -> None:
    n_out = 1 if loss == "binary_cross_entropy" else 3
    net = _trained(trained_on, [(5, 8, "tanh"), (8, n_out, output)], loss, dtype)
    path = export.export_onnx(net, tmp_path / "net.onnx")
    _check_predictions(ort, net, path, dtype)


def test_trained_on_jax(ort: Any, tmp_path: Path) -> None:
    # one model: jax compiles for seconds (float64 is covered on numpy and torch)
    dtype = "float32"
    be = backend_or_skip("jax-cpu", "jax", "cpu", required_backends())
    layers = [(5, 6, "relu"), (6, 6, "sigmoid"), (6, 3, "softmax")]
    net = _trained(be, layers, "cross_entropy", dtype)
    assert net.backend.name == "jax"
    path = export.export_onnx(net, tmp_path / "net.onnx")
    _check_predictions(ort, net, path, dtype)


def _ops(path: Path) -> list[str]:
    import onnx

    return [node.op_type for node in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_graph_structure(ort: Any, dtype: str, tmp_path: Path) -> None:
    import onnx

    acts = ["sigmoid", "tanh", "relu", "leaky_relu", "identity", "softmax"]
    sizes = [4, 6, 5, 7, 3, 8, 2]
    layers = [xbp.nn.Dense(sizes[i], sizes[i + 1], a) for i, a in enumerate(acts)]
    net = xbp.Network(layers, loss="cross_entropy", dtype=dtype)
    path = export.export_onnx(net, tmp_path / "net.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert model.ir_version == 8  # the oldest that opset 17 allows
    assert model.producer_name == "xbp"
    assert _ops(path) == [
        "Gemm", "Sigmoid", "Gemm", "Tanh", "Gemm", "Relu", "Gemm", "LeakyRelu",
        "Gemm", "Gemm", "Softmax",
    ]  # fmt: skip
    nodes = model.graph.node
    assert onnx.helper.get_attribute_value(nodes[7].attribute[0]) == pytest.approx(0.01)
    assert [(a.name, a.i) for a in nodes[-1].attribute] == [("axis", -1)]
    elem = onnx.TensorProto.FLOAT if dtype == "float32" else onnx.TensorProto.DOUBLE
    for value, width in ((model.graph.input[0], 4), (model.graph.output[0], 2)):
        tensor = value.type.tensor_type
        assert tensor.elem_type == elem
        dims = [(d.dim_param, d.dim_value) for d in tensor.shape.dim]
        assert dims == [("N", 0), ("", width)]
    assert [v.name for v in model.graph.input] == ["x"]
    assert [v.name for v in model.graph.output] == ["y"]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["xbp_loss"] == "cross_entropy" and props["xbp_dtype"] == dtype
    assert props["xbp_layers"].split(";")[0] == "4,6,sigmoid"


def test_softplus_node_per_dtype(ort: Any, tmp_path: Path) -> None:
    net = xbp.Network([xbp.nn.Dense(3, 4, "softplus"), xbp.nn.Dense(4, 1, "identity")])
    export.export_onnx(net.to(dtype="float32"), tmp_path / "f32.onnx")
    export.export_onnx(net, tmp_path / "f64.onnx")
    assert _ops(tmp_path / "f32.onnx") == ["Gemm", "Softplus", "Gemm"]
    # onnxruntime has no double Softplus: float64 spells it out, and runs
    assert "Softplus" not in _ops(tmp_path / "f64.onnx")
    x = np.linspace(-800, 800, 12).reshape(4, 3)
    np.testing.assert_allclose(_run(ort, tmp_path / "f64.onnx", x), net.predict(x), rtol=1e-12)


def test_opset_argument(ort: Any, tmp_path: Path) -> None:
    import onnx

    net = xbp.mlp([3, 4, 2], activation="relu", loss="cross_entropy", dtype="float32")
    path = export.export_onnx(net, tmp_path / "net.onnx", opset=13)
    assert onnx.load(str(path)).opset_import[0].version == 13
    x = _probe(3, "float32")
    np.testing.assert_allclose(_run(ort, path, x), net.predict(x), rtol=1e-5, atol=1e-6)
    for bad in (12, 10_000, True, "17", 17.0):
        with pytest.raises(XbpValueError, match="opset="):
            export.export_onnx(net, tmp_path / "bad.onnx", opset=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "bad.onnx").exists()


def test_activation_without_onnx_op(
    ort: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a later activation the exporter does not know: the error names the layer
    monkeypatch.delitem(export.ONNX_OPS, "softplus")
    net = xbp.Network([xbp.nn.Dense(3, 4, "tanh"), xbp.nn.Dense(4, 2, "softplus")])
    with pytest.raises(XbpValueError, match=r"net\.layers\[1\] uses activation 'softplus'") as e:
        export.export_onnx(net, tmp_path / "net.onnx")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "net.onnx").exists()


def test_missing_onnx_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    with pytest.raises(XbpValueError, match=r"pip install 'xbp\[onnx\]'") as e:
        export.export_onnx(xbp.mlp([2, 3, 1]), tmp_path / "net.onnx")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "net.onnx").exists()


def test_refuses_bad_networks(ort: Any, tmp_path: Path) -> None:
    with pytest.raises(XbpTypeError, match="net is a dict"):
        export.export_onnx({"W": 1}, tmp_path / "net.onnx")  # type: ignore[arg-type]
    net = xbp.mlp([2, 3, 1])
    params = net.host_params()
    params[1]["b"][0] = np.nan
    net.adopt_params(params)  # the params setter refuses NaN; a diverged run can leave it
    with pytest.raises(XbpValueError, match=r"net\.params\[1\]\['b'\] contains NaN"):
        export.export_onnx(net, tmp_path / "net.onnx")
    assert not (tmp_path / "net.onnx").exists()


def test_output_path_checks(ort: Any, tmp_path: Path) -> None:
    net = xbp.mlp([2, 3, 1])
    with pytest.raises(XbpFileNotFoundError, match="does not exist"):
        export.export_onnx(net, tmp_path / "no" / "net.onnx")
    with pytest.raises(XbpFileError, match="is a directory"):
        export.export_onnx(net, tmp_path)
    with pytest.raises(XbpTypeError, match="path is a int"):
        export.export_onnx(net, 3)  # type: ignore[arg-type]
    # an existing file is replaced atomically, keeping its mode, leaving no temporary file
    target = tmp_path / "net.onnx"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    export.export_onnx(net, target)
    assert target.read_bytes() != b"old"
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]


def test_export_file(ort: Any, tmp_path: Path) -> None:
    net = xbp.mlp([4, 5, 3], activation="relu", loss="cross_entropy", dtype="float32", seed=2)
    xbp.save(net, tmp_path / "m.npz")
    summary = export.export_file(tmp_path / "m.npz", tmp_path / "m.onnx")
    assert "\n" not in summary
    assert summary.startswith(f"wrote {str(tmp_path / 'm.onnx')!r}: ONNX opset 17, float32, 4-5-3")
    assert "(relu, softmax), loss cross_entropy, 43 parameters" in summary
    x = _probe(4, "float32")
    np.testing.assert_allclose(
        _run(ort, tmp_path / "m.onnx", x), net.predict(x), rtol=1e-5, atol=1e-6
    )


def test_export_file_never_overwrites_the_model(
    ort: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "m.npz"
    xbp.save(xbp.mlp([2, 3, 1]), model)
    before = model.read_bytes()
    (tmp_path / "link.onnx").symlink_to(model)
    os.link(model, tmp_path / "hard.onnx")
    for out in (model, tmp_path / "link.onnx", tmp_path / "hard.onnx", tmp_path / "." / "m.npz"):
        with pytest.raises(XbpValueError, match="same file as model_path"):
            export.export_file(model, out)
    assert model.read_bytes() == before
    with pytest.raises(XbpFileNotFoundError, match="model_path=.*does not exist"):
        export.export_file(tmp_path / "missing.npz", tmp_path / "m.onnx")
    with pytest.raises(XbpFileError, match="--model 'x.onnx' is a text file"):
        (tmp_path / "x.onnx").write_text("not a model")
        monkeypatch.chdir(tmp_path)
        export.export_file("x.onnx", "y.onnx", model_argument="--model")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "y.onnx").exists()


def test_standardize_argument(ort: Any, tmp_path: Path) -> None:
    net = xbp.mlp([3, 4, 2], activation="tanh", loss="cross_entropy", seed=1)
    mean, std = np.array([1.0, -2.0, 30.0]), np.array([0.5, 2.0, 10.0])
    path = export.export_onnx(net, tmp_path / "net.onnx", standardize=(mean, std))
    assert _ops(path)[:3] == ["Sub", "Div", "Gemm"]
    x = _probe(3, "float64") * 10 + 5
    np.testing.assert_allclose(_run(ort, path, x), net.predict((x - mean) / std), rtol=1e-12)
    bad = [
        (5, "not a pair"),
        (([0.0, 0.0], [1.0, 1.0]), r"mean \(2,\) and std \(2,\) but the network takes 3"),
        ((mean, [1.0, 0.0, 1.0]), "std <= 0"),
        (([np.nan, 0, 0], std), "NaN, Inf"),
    ]
    for value, match in bad:
        with pytest.raises(XbpValueError, match=match):
            export.export_onnx(net, tmp_path / "bad.onnx", standardize=value)
    assert not (tmp_path / "bad.onnx").exists()


def test_export_file_keeps_the_cli_input_scaling(
    ort: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from xbp.cli import main

    monkeypatch.chdir(tmp_path)
    x, _ = xbp.data.make_blobs(seed=0)
    x = x * 3 + 5  # far from standardised: a graph without the scaling predicts otherwise
    np.savetxt("f.csv", x, delimiter=",")
    train = ["train", "--data", "blobs", "--layers", "8", "--epochs", "3", "--save", "m.npz"]
    assert main([*train, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["predict", "m.npz", "--data", "f.csv", "--label-column", "none"]) == 0
    classes = np.array(capsys.readouterr().out.split(), dtype=np.int64)
    summary = export.export_file("m.npz", "m.onnx")
    assert "inputs standardised in the graph" in summary
    assert _ops(tmp_path / "m.onnx")[:2] == ["Sub", "Div"]
    probs = _run(ort, tmp_path / "m.onnx", x)
    np.testing.assert_array_equal(np.argmax(probs, axis=1), classes)  # as xbp predict
    want = xbp.load("m.npz").predict(x)  # the model's Standardize layer is in the graph
    np.testing.assert_allclose(probs, want, rtol=1e-12, atol=1e-15)


def test_export_file_corrupt_scaling(ort: Any, tmp_path: Path) -> None:
    net = xbp.mlp([2, 3, 1])
    for meta, match in (
        ({"mean": [0.0, 0.0]}, "is corrupt"),
        ("scale", "is corrupt"),
        ({"mean": [0.0], "std": [1.0]}, "takes 2 features"),
    ):
        xbp.save(net, tmp_path / "m.npz", metadata={"standardize": meta})
        with pytest.raises(XbpFileError, match=r"model_path=.*'s 'standardize' header entry"):
            export.export_file(tmp_path / "m.npz", tmp_path / "m.onnx")
        with pytest.raises(XbpFileError, match=match):
            export.export_file(tmp_path / "m.npz", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_docstring_examples_run(ort: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(export, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


def test_the_export_command_writes_a_model_onnxruntime_runs(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from xbp.cli import main

    model, out = tmp_path / "m.npz", tmp_path / "m.onnx"
    assert main(["train", "--epochs", "1", "--quiet", "--save", str(model)]) == 0
    assert main(["export", str(model), str(out)]) == 0
    x, _ = xbp.data.load_digits()
    x = x[:7].astype(np.float64)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    want = xbp.load(model).predict(x)  # raw features: the scaling is the model's own layer
    assert np.max(np.abs(got - want)) <= 1e-9
    assert main(["export", str(model), str(model)]) == 2  # never over the model itself


# ---- layers between the Dense layers ------------------------------------------------------

# onnxruntime against xbp for networks without LeakyRelu (whose float32 alpha bounds the
# float64 agreement above): 1e-5 in float32, 1e-10 in float64
LAYER_TOL = {"float32": 1e-5, "float64": 1e-10}


def _layer_data(n: int = 160, n_in: int = 5, n_out: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Regression rows far from standardised (Standardize and the norms have work to do)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, n_in)) * np.array([3.0, 0.5, 10.0, 1.0, 2.0])[:n_in] + 4.0
    return x, np.tanh((x - 4.0) @ rng.normal(size=(n_in, n_out)) / 4.0)


def _fit_layers(net: xbp.Network, dtype: str, epochs: int = 4) -> xbp.Network:
    x, y = _layer_data(n_in=net.n_in, n_out=net.n_out)
    xbp.fit(
        net,
        x.astype(dtype),
        y,
        epochs=epochs,
        batch_size=16,
        optimizer="adam",
        learning_rate=1e-2,
        progress=False,
    )
    return net


def _layer_probe(n_in: int, dtype: str) -> np.ndarray:
    """Rows like the training rows, a few far outside them."""
    x, _ = _layer_data(n=40, n_in=n_in)
    x[-6:] = x[-6:] * 5 - 20
    return x.astype(dtype)


def _max_difference(ort: Any, net: xbp.Network, path: Path, dtype: str) -> float:
    """The largest |onnxruntime - net.predict| over the probe rows (one row and all of them),
    asserted within LAYER_TOL (relative and absolute)."""
    x = _layer_probe(net.n_in, dtype)
    want = np.asarray(net.predict(x))
    worst = 0.0
    for rows in (x[:1], x):
        got = _run(ort, path, rows)
        assert got.dtype == np.dtype(dtype) and got.shape == (rows.shape[0], net.n_out)
        np.testing.assert_allclose(
            got,
            want[: rows.shape[0]],
            rtol=LAYER_TOL[dtype],
            atol=LAYER_TOL[dtype],
            err_msg=str(net),
        )
        worst = max(worst, float(np.max(np.abs(got - want[: rows.shape[0]]))))
    return worst


# each kind in a small network: (layers, the ONNX ops expected in float32 and in float64)
LAYER_KINDS: dict[str, tuple[Any, list[str], list[str]]] = {
    "standardize": (
        lambda: [xbp.nn.Standardize(5), xbp.nn.Dense(5, 8, "tanh"), xbp.nn.Dense(8, 3, "identity")],
        ["Sub", "Div", "Gemm", "Tanh", "Gemm"],
        ["Sub", "Div", "Gemm", "Tanh", "Gemm"],
    ),
    "dropout": (
        lambda: [xbp.nn.Dense(5, 8, "tanh"), xbp.nn.Dropout(0.3), xbp.nn.Dense(8, 3, "identity")],
        ["Gemm", "Tanh", "Gemm"],
        ["Gemm", "Tanh", "Gemm"],
    ),
    "layer_norm": (
        lambda: [
            xbp.nn.Dense(5, 8, "relu"),
            xbp.nn.LayerNorm(8, eps=1e-3),
            xbp.nn.Dense(8, 3, "identity"),
        ],
        ["Gemm", "Relu", "LayerNormalization", "Gemm"],
        # ONNX's epsilon attribute is a float32 (1e-3 moves by 5e-11): float64 spells it out
        ["Gemm", "Relu", "ReduceMean", "Sub", "Mul", "ReduceMean", "Add", "Sqrt", "Reciprocal"]
        + ["Mul", "Mul", "Add", "Gemm"],
    ),
    "batch_norm": (
        lambda: [
            xbp.nn.Dense(5, 8, "relu"),
            xbp.nn.BatchNorm(8, momentum=0.9),
            xbp.nn.Dense(8, 3, "identity"),
        ],
        ["Gemm", "Relu", "BatchNormalization", "Gemm"],
        # ONNX's epsilon attribute is a float32: float64 spells the inference rule out
        ["Gemm", "Relu", "Sub", "Mul", "Add", "Gemm"],
    ),
}


def _state_moved(net: xbp.Network) -> None:
    """Training left non-trivial state: the test compares the trained statistics."""
    for layer, s in zip(net.layers, net.host_state()):
        if isinstance(layer, xbp.nn.BatchNorm):
            assert np.abs(s["mean"]).max() > 0.1 and np.abs(s["var"] - 1).max() > 0.1
        if isinstance(layer, xbp.nn.Standardize):
            assert s["count"][0] > 0 and np.abs(s["std"] - 1).max() > 0.1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", list(LAYER_KINDS))
def test_every_layer_kind(
    ort: Any, trained_on: xbp.backends.select.Backend, kind: str, dtype: str, tmp_path: Path
) -> None:
    make, ops32, ops64 = LAYER_KINDS[kind]
    net = xbp.Network(make(), loss="quadratic", backend=trained_on, dtype=dtype, seed=5)
    _fit_layers(net, dtype)
    _state_moved(net)
    path = export.export_onnx(net, tmp_path / "net.onnx")
    assert _ops(path) == (ops32 if dtype == "float32" else ops64)
    _max_difference(ort, net, path, dtype)


def test_norm_attributes(ort: Any, tmp_path: Path) -> None:
    import onnx

    layers = [
        xbp.nn.Dense(3, 4, "relu"),
        xbp.nn.LayerNorm(4, eps=0.25),
        xbp.nn.BatchNorm(4, eps=0.125),
        xbp.nn.Dense(4, 2, "identity"),
    ]
    net = xbp.Network(layers, dtype="float32")
    model = onnx.load(str(export.export_onnx(net, tmp_path / "net.onnx")))
    attrs = {
        n.op_type: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        for n in model.graph.node
    }
    assert attrs["LayerNormalization"] == {"axis": -1, "epsilon": 0.25}
    # inference: no training_mode attribute (its default, 0, uses the running statistics)
    assert attrs["BatchNormalization"] == {"epsilon": 0.125}
    names = {t.name for t in model.graph.initializer}
    assert {"layer1.gamma", "layer1.beta", "layer2.mean", "layer2.var"} <= names


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_chain_of_every_layer(ort: Any, norm: str, dtype: str, tmp_path: Path) -> None:
    import json

    import onnx

    net = xbp.mlp(
        [5, 8, 6, 3],
        activation="relu",
        standardize=True,
        norm=norm,
        dropout=0.2,
        dtype=dtype,
        seed=3,
    )
    _fit_layers(net, dtype, epochs=5)
    _state_moved(net)
    path = export.export_onnx(net, tmp_path / "net.onnx")
    _max_difference(ort, net, path, dtype)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    # not Dense-only: the layers' configs, as xbp's model files hold them
    assert json.loads(props["xbp_layers"]) == net.config()["layers"]
    assert [d["kind"] for d in json.loads(props["xbp_layers"])][:4] == [
        "standardize",
        "dense",
        f"{norm}_norm",
        "dropout",
    ]
    assert props["xbp_standardized_input"] == "true"
    # the standardize= argument still goes in front of the whole network
    mean, std = np.full(5, 2.0), np.full(5, 0.5)
    scaled = export.export_onnx(net, tmp_path / "scaled.onnx", standardize=(mean, std))
    x = _layer_probe(5, dtype)
    np.testing.assert_allclose(
        _run(ort, scaled, x * 0.5 + 2.0),
        net.predict(x),
        rtol=LAYER_TOL[dtype],
        atol=LAYER_TOL[dtype],
    )


@pytest.mark.parametrize("opset", [13, 16, 18])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_norm_at_every_opset(ort: Any, opset: int, dtype: str, tmp_path: Path) -> None:
    import onnx

    net = xbp.mlp([5, 8, 6, 3], activation="tanh", norm="layer", dtype=dtype, seed=4)
    _fit_layers(net, dtype)
    path = export.export_onnx(net, tmp_path / "net.onnx", opset=opset)
    assert onnx.load(str(path)).opset_import[0].version == opset
    ops = _ops(path)
    if opset >= 17 and dtype == "float32":
        assert ops.count("LayerNormalization") == 2 and "ReduceMean" not in ops
    else:
        # LayerNormalization is opset 17's; float64 keeps its eps exact: primitive operators
        assert "LayerNormalization" not in ops and ops.count("ReduceMean") == 4
    _max_difference(ort, net, path, dtype)


def test_refuses_non_finite_state(ort: Any, tmp_path: Path) -> None:
    net = xbp.mlp([3, 4, 2], norm="batch")
    state = net.host_state()
    state[1]["var"][2] = np.inf
    net.adopt_state([{k: net.backend.asarray(v, net.dtype) for k, v in s.items()} for s in state])
    with pytest.raises(XbpValueError, match=r"net\.state\[1\]\['var'\] contains NaN or Inf") as e:
        export.export_onnx(net, tmp_path / "net.onnx")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "net.onnx").exists()


# ---- a user's own layer -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Recentre(xbp.nn.Layer):
    """``y = (a - offset) * gain + shift``: trainable gain and shift, a fixed offset (state)."""

    kind = "recentre_test"
    n: int

    n_in = property(lambda self: self.n)  # type: ignore[assignment]
    n_out = property(lambda self: self.n)  # type: ignore[assignment]

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"gain": (self.n,), "shift": (self.n,)}

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"offset": (self.n,)}

    def init_params(self, rng: np.random.Generator, init: str) -> dict[str, np.ndarray]:
        return {"gain": np.linspace(0.5, 1.5, self.n), "shift": np.linspace(-1, 1, self.n)}

    def init_state(self) -> dict[str, np.ndarray]:
        return {"offset": np.linspace(2.0, -2.0, self.n)}

    def forward(self, ctx: Any, p: Any, s: Any, a: Any, l: int) -> tuple[Any, Any, Any]:
        c = a - s["offset"]
        return c * p["gain"] + p["shift"], c, None

    def backward(self, ctx: Any, p: Any, saved: Any, d: Any, need_input: bool) -> Any:
        ones = ctx.ones(d.shape[0])
        grads = {"gain": ones @ (d * saved), "shift": ones @ d}
        return (d * p["gain"] if need_input else None), grads


@dataclasses.dataclass(frozen=True)
class RecentreOnnx(Recentre):
    kind = "recentre_onnx_test"

    def onnx(self, graph: Any, src: str, params: Any, state: Any, index: int) -> str:
        assert graph.index == index and graph.dtype == params["gain"].dtype
        c = graph.node("Sub", [src, graph.constant("offset", state["offset"])])
        scaled = graph.node("Mul", [c, graph.constant("gain", params["gain"])])
        out = graph.node("Add", [scaled, graph.constant("shift", params["shift"])])
        # a constant of another type: a no-op reshape to [-1, n]
        shape = graph.constant("shape", [-1, self.n], dtype=np.int64)
        return graph.node("Reshape", [out, shape])


@pytest.fixture
def user_layers() -> Any:
    from xbp.nn.layers import unregister_layer

    for cls in (Recentre, RecentreOnnx):
        xbp.register_layer(cls)
    yield
    for cls in (Recentre, RecentreOnnx):
        unregister_layer(cls.kind)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_user_layer_with_onnx_hook(ort: Any, user_layers: None, dtype: str, tmp_path: Path) -> None:
    import onnx

    layers = [xbp.nn.Dense(5, 4, "tanh"), RecentreOnnx(4), xbp.nn.Dense(4, 3, "identity")]
    net = xbp.Network(layers, dtype=dtype, seed=2)
    _fit_layers(net, dtype)
    assert np.abs(net.host_params()[1]["gain"] - np.linspace(0.5, 1.5, 4)).min() > 1e-3
    path = export.export_onnx(net, tmp_path / "net.onnx")
    assert _ops(path) == ["Gemm", "Tanh", "Sub", "Mul", "Add", "Reshape", "Gemm"]
    _max_difference(ort, net, path, dtype)
    model = onnx.load(str(path))
    assert {"layer1.offset", "layer1.gain", "layer1.shift", "layer1.shape"} <= {
        t.name for t in model.graph.initializer
    }


def test_user_layer_without_onnx_hook(ort: Any, user_layers: None, tmp_path: Path) -> None:
    net = xbp.Network([xbp.nn.Dense(5, 4, "tanh"), Recentre(4), xbp.nn.Dense(4, 3, "identity")])
    with pytest.raises(XbpValueError) as e:
        export.export_onnx(net, tmp_path / "net.onnx")
    message = str(e.value)
    assert "\n" not in message
    assert "net.layers[1] is a Recentre (kind 'recentre_test') with no ONNX form" in message
    assert "onnx(self, graph, src, params, state, index)" in message
    assert not (tmp_path / "net.onnx").exists()


def test_subclass_of_a_built_in_layer_needs_its_own_hook(ort: Any, tmp_path: Path) -> None:
    from xbp.nn.layers import unregister_layer

    @dataclasses.dataclass(frozen=True)
    class MyNorm(xbp.nn.BatchNorm):
        kind = "my_norm_test"

    xbp.register_layer(MyNorm)
    try:
        net = xbp.Network([xbp.nn.Dense(3, 4, "relu"), MyNorm(4), xbp.nn.Dense(4, 1, "identity")])
        # its forward may differ from BatchNorm's: writing BatchNorm's form could be wrong
        with pytest.raises(XbpValueError, match=r"net\.layers\[1\] is a MyNorm .* no ONNX form"):
            export.export_onnx(net, tmp_path / "net.onnx")
    finally:
        unregister_layer("my_norm_test")


def test_broken_onnx_hooks(ort: Any, user_layers: None, tmp_path: Path) -> None:
    net = xbp.Network([xbp.nn.Dense(3, 4, "relu"), RecentreOnnx(4), xbp.nn.Dense(4, 1, "identity")])
    cases = [
        (lambda self, g, src, p, s, i: "nowhere", r"hook returned 'nowhere', which is no tensor"),
        (lambda self, g, src, p, s, i: g.node("Neg", ["ghost"]), r"takes 'ghost', which is no"),
        (lambda self, g, src, p, s, i: g.node("NoSuchOp", [src]), "fails onnx.checker"),
        (  # shapes that do not broadcast: onnx's shape inference
            lambda self, g, src, p, s, i: g.node("Add", [src, g.constant("c", np.ones(3))]),
            r"fails onnx\.checker \(\[ShapeInferenceError\].*Incompatible dimensions",
        ),
    ]
    for hook, match in cases:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(RecentreOnnx, "onnx", hook)
            with pytest.raises(XbpValueError, match=match) as e:
                export.export_onnx(net, tmp_path / "net.onnx")
            assert "\n" not in str(e.value)
    assert not (tmp_path / "net.onnx").exists()


def test_export_command_with_batch_norm(
    ort: Any, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from xbp.cli import main

    net = xbp.mlp([5, 8, 3], activation="relu", norm="batch", standardize=True, dropout=0.1)
    _fit_layers(net, "float64")
    _state_moved(net)
    model, out = tmp_path / "m.npz", tmp_path / "m.onnx"
    xbp.save(net, model)
    capsys.readouterr()
    assert main(["export", str(model), str(out)]) == 0
    summary = capsys.readouterr().out
    assert "(standardize, relu, batch norm, dropout 0.1, identity)" in summary
    assert "inputs standardised in the graph" in summary
    loaded = xbp.load(model)
    x = _layer_probe(5, "float64")
    np.testing.assert_allclose(_run(ort, out, x), loaded.predict(x), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(_run(ort, out, x), net.predict(x), rtol=1e-10, atol=1e-10)
