from __future__ import annotations

import ast
import contextlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import device_option

import xbp
from xbp.cli import main

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xbp", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One CLI training run on digits, shared: (what it printed, the saved model)."""
    folder = tmp_path_factory.mktemp("digits")
    model = folder / "m.npz"
    args = ["train", "--epochs", "6", "--layers", "32", "--seed", "0"]
    args += ["--val-split", "0.1", "--test-split", "0.2", "--save", str(model)]
    args += ["--plot", str(folder / "c.png")]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(args) == 0
    return printed.getvalue(), model


def digits_scaled() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All digits and the test split as the CLI splits them (raw: the model standardises
    its inputs itself, by its Standardize layer)."""
    x, y = xbp.data.load_digits()
    (_, _), (_, _), (xte, yte) = xbp.data.train_val_test_split(x, y, val=0.1, test=0.2, seed=0)
    return x, y, xte, yte


def numpy_scores(net: xbp.Network, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Cross-entropy loss and accuracy computed here from the model's NumPy outputs."""
    out = np.asarray(net.predict(x), dtype=np.float64)
    loss = -float(np.mean(np.log(out[np.arange(len(y)), y])))
    return loss, float(np.mean(out.argmax(axis=1) == y))


def printed_number(text: str, label: str) -> float:
    return float(text.split(label)[1].split()[0])


def test_train_prints_what_the_saved_model_scores(digits_model) -> None:
    out, model = digits_model
    assert "epoch   6" in out and f"saved {model}" in out
    assert (model.parent / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the saved model, scored here on the same test split, gives the printed numbers
    net = xbp.load(model)
    assert [d.kind for d in net.layers] == ["standardize", "dense", "dense"]
    assert net.sizes == [64, 64, 32, 10]
    # its Standardize layer holds the training rows' statistics (constant columns: std 1)
    x, y = xbp.data.load_digits()
    (xtr, _), _, _ = xbp.data.train_val_test_split(x, y, val=0.1, test=0.2, seed=0)
    std = xtr.std(axis=0)
    std[std == 0] = 1.0
    np.testing.assert_allclose(net.host_state()[0]["mean"], xtr.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(net.host_state()[0]["std"], std, rtol=1e-12)
    _, _, xte, yte = digits_scaled()
    loss, acc = numpy_scores(net, xte, yte)
    assert printed_number(out, "test accuracy ") == pytest.approx(acc, abs=5e-5)
    assert printed_number(out, "test loss ") == pytest.approx(loss, abs=5e-5)
    assert acc > 0.8  # six epochs learn digits far above chance (0.1)


def test_predict_writes_the_saved_models_predictions(digits_model, tmp_path) -> None:
    _, model = digits_model
    assert main(["predict", str(model), "--data", "digits", "--out", str(tmp_path / "p.csv")]) == 0
    table = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)
    assert table.shape == (1797, 11)
    x, _, _, _ = digits_scaled()
    out = xbp.load(model).predict(x)
    np.testing.assert_allclose(table[:, 1:], out, rtol=1e-7, atol=1e-12)  # written as %.8g
    np.testing.assert_array_equal(table[:, 0], out.argmax(axis=1))


def test_evaluate_on_every_backend(
    digits_model, backend: xbp.backends.select.Backend, capsys
) -> None:
    _, model = digits_model
    args = ["evaluate", str(model), "--data", "digits", "--backend", backend.name]
    assert main(args + device_option(backend)) == 0
    out = capsys.readouterr().out
    assert f"(1797 samples, {backend.name})" in out
    x, y, _, _ = digits_scaled()
    loss, acc = numpy_scores(xbp.load(model), x, y)
    assert printed_number(out, "accuracy ") == pytest.approx(acc, abs=5e-5)
    assert printed_number(out, "loss ") == pytest.approx(loss, abs=5e-7)


def test_train_defaults_reach_97_percent(capsys) -> None:
    assert main(["train", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert float(out.split("test accuracy ")[1].split()[0]) >= 0.97


def test_xor_from_the_command_line(tmp_path, capsys) -> None:
    model = tmp_path / "xor.npz"
    rc = main(
        [
            "train",
            "--data",
            "xor",
            "--layers",
            "2",
            "--activation",
            "sigmoid",
            "--loss",
            "quadratic",
            "--optimizer",
            "sgd",
            "--lr",
            "4",
            "--schedule",
            "constant",
            "--epochs",
            "3000",
            "--batch-size",
            "4",
            "--val-split",
            "0",
            "--test-split",
            "0",
            "--no-standardize",
            "--init",
            "nielsen",
            "--quiet",
            "--save",
            str(model),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "(3000 epochs" in out and f"saved {model}" in out
    # the saved 2-2-1 network computes XOR
    x, y = xbp.data.make_xor()
    net = xbp.load(model)
    assert net.sizes == [2, 2, 1]
    pred = net.predict(x)
    assert np.all(np.abs(pred - y) < 0.1), pred
    assert main(["evaluate", str(model), "--data", "xor"]) == 0
    out = capsys.readouterr().out
    assert printed_number(out, "accuracy ") == 1.0
    cost = float(np.sum((pred - y) ** 2) / (2 * len(y)))  # the quadratic cost, computed here
    assert printed_number(out, "loss ") == pytest.approx(cost, abs=5e-7) and cost < 1e-3


def test_backends_table(capsys) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["backend", "version", "installed", "usable"]
    assert any(line.startswith("numpy") and " yes " in line for line in out.splitlines())


def test_gradcheck_on_every_backend(backend: xbp.backends.select.Backend, capsys) -> None:
    args = ["gradcheck", "--backend", backend.name, "--activation", "softplus", "--samples", "4"]
    assert main(args + device_option(backend)) == 0
    out = capsys.readouterr().out
    assert f"backend={backend.name!r}" in out and "passed: worst" in out


def test_explain(capsys) -> None:
    assert main(["explain"]) == 0
    out = capsys.readouterr().out
    for text in (
        "Z_1 = A_0 W_1 + b_1",
        "A_2 = sigmoid(Z_2)",
        "delta_2 = (A_2 - y) * sigmoid'(Z_2) / n",
        "delta_1 = (delta_2 W_2^T) * sigmoid'(Z_1)",
        "dC/dW_1 = A_0^T delta_1",
    ):
        assert text in out, text


def test_errors_are_one_line_exit_2(tmp_path) -> None:
    cases = [
        ["train", "--lr", "-1"],
        ["train", "--optimizer", "lbfgs"],
        ["train", "--data", str(tmp_path / "none.csv")],
        ["evaluate", str(tmp_path / "missing.npz"), "--data", "digits"],
        ["train", "--batch-size", "100000", "--epochs", "1"],
    ]
    for args in cases:
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr and "error" in proc.stderr


def test_debug_shows_traceback(tmp_path) -> None:
    proc = run("--debug", "evaluate", str(tmp_path / "missing.npz"), "--data", "digits")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_console_script_help() -> None:
    proc = run("train", "--help")
    assert proc.returncode == 0 and "examples:" in proc.stdout and "--resume" in proc.stdout


def test_gpu_scripts_run_unchanged_on_numpy(tmp_path) -> None:
    from test_data import write_idx

    rng = np.random.default_rng(0)
    for kind, n in (("train", 64), ("t10k", 32)):
        write_idx(
            tmp_path / f"{kind}-images-idx3-ubyte.gz",
            rng.integers(0, 256, (n, 28, 28)).astype(np.uint8),
            compress=True,
        )
        write_idx(
            tmp_path / f"{kind}-labels-idx1-ubyte.gz",
            rng.integers(0, 10, n).astype(np.uint8),
            compress=True,
        )
    model = tmp_path / "mnist.npz"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "train_mnist.py"),
            "--backend",
            "numpy",
            "--data",
            str(tmp_path),
            "--epochs",
            "1",
            "--layers",
            "16",
            "--batch-size",
            "16",
            "--save",
            str(model),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    # the saved model scores on the t10k files exactly what the script printed
    net = xbp.load(model)
    assert net.sizes == [784, 16, 10]
    printed = ast.literal_eval(proc.stdout.split("; test ")[1].splitlines()[0])
    x_test, y_test = xbp.data.load_mnist(tmp_path, "t10k")
    assert x_test.shape == (32, 784)
    out = np.asarray(net.predict(x_test), dtype=np.float64)
    assert printed["accuracy"] == pytest.approx(np.mean(out.argmax(axis=1) == y_test), abs=1e-12)
    loss = -np.mean(np.log(out[np.arange(len(y_test)), y_test]))
    assert printed["loss"] == pytest.approx(loss, rel=1e-5)
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "train_digits.py"), "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "test accuracy" in proc.stdout, proc.stderr


def _int_csv(path: Path, labels: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(labels), 2))
    rows = "".join(f"{a:.4f},{b:.4f},{int(v)}\n" for (a, b), v in zip(x, labels))
    path.write_text("a,b,target\n" + rows)
    return path


@pytest.mark.parametrize(
    ("labels", "task", "want_out", "want_task"),
    [
        # whole-number prices: one real-valued target, not 500 classes
        (np.arange(60) * 7 + 200, "auto", 1, "regression"),
        # a gap between whole numbers: a measurement, not class labels
        (np.arange(60) % 3 * 2 + 5, "auto", 1, "regression"),
        # digits-style labels 0..k-1 and wine-style 1..k: one-hot classes
        (np.arange(60) % 3, "auto", 3, "classification"),
        (np.arange(60) % 3 + 1, "auto", 3, "classification"),
        (np.arange(60) % 3, "regress", 1, "regression"),
        # --task classify: one class per distinct value, kept on the model
        (np.arange(60) % 3 * 2 + 5, "classify", 3, "classification"),
    ],
)
def test_whole_number_targets_under_quadratic(
    tmp_path, capsys, labels, task, want_out, want_task
) -> None:
    data = _int_csv(tmp_path / "d.csv", labels)
    model = tmp_path / "m.npz"
    argv = ["train", "--data", str(data), "--loss", "quadratic", "--task", task]
    argv += ["--epochs", "1", "--layers", "4", "--batch-size", "8", "--quiet", "--save", str(model)]
    assert main(argv) == 0
    ck = xbp.load_checkpoint(model)
    net, meta = ck.network, ck.metadata
    assert net.n_out == want_out
    assert meta["task"] == want_task
    out = tmp_path / "p.npy"
    assert main(["predict", str(model), "--data", str(data), "--out", str(out)]) == 0
    pred = np.load(out)
    if want_task == "regression":  # real values, the network's own output
        x = np.loadtxt(data, delimiter=",", skiprows=1)[:, :2]
        assert net.layers[0].kind == "standardize"  # the model scales raw features itself
        want = net.predict(x).reshape(-1)
        np.testing.assert_allclose(pred.reshape(-1), want, rtol=1e-10)
    else:
        assert pred.dtype.kind in "iu"
    capsys.readouterr()


def test_explain_honours_label_column(tmp_path, capsys) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a,b,c\n0.5,1,0\n2.5,0,1\n1.5,1,1\n")
    assert main(["explain", "--data", str(data), "--label-column", "a", "--digits", "3"]) == 0
    out = capsys.readouterr().out
    assert "A_0 = x = [ 1.00e+00  0.00e+00]\n" in out  # features b, c of sample 0
    assert "y       = [ 5.00e-01]\n" in out  # the label, column a


def test_explain_model_uses_its_recorded_data(tmp_path, capsys) -> None:
    data = _int_csv(tmp_path / "d.csv", np.arange(30) % 3)
    model = tmp_path / "m.npz"
    argv = ["train", "--data", str(data), "--epochs", "1", "--layers", "3", "--batch-size", "4"]
    assert main([*argv, "--quiet", "--save", str(model)]) == 0
    capsys.readouterr()
    assert main(["explain", "--model", str(model), "--sample", "2"]) == 0
    without = capsys.readouterr().out
    assert main(["explain", "--model", str(model), "--data", str(data), "--sample", "2"]) == 0
    assert capsys.readouterr().out == without
