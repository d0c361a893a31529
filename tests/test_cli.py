from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xbp
from xbp.cli import main

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xbp", *args], capture_output=True, text=True, timeout=300
    )


def test_train_save_evaluate_predict(tmp_path, capsys) -> None:
    model = tmp_path / "m.npz"
    rc = main(
        [
            "train",
            "--epochs",
            "6",
            "--layers",
            "32",
            "--save",
            str(model),
            "--plot",
            str(tmp_path / "c.png"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "epoch   6" in out and "test accuracy" in out
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["evaluate", str(model), "--data", "digits", "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    acc = float(out.split("accuracy ")[1].split()[0])
    assert acc > 0.8
    assert main(["predict", str(model), "--data", "digits", "--out", str(tmp_path / "p.csv")]) == 0
    table = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)
    assert table.shape == (1797, 11)
    x, y = xbp.data.load_digits()
    assert np.mean(table[:, 0] == y) == pytest.approx(acc, abs=1e-4)


def test_train_defaults_reach_97_percent(capsys) -> None:
    assert main(["train", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert float(out.split("test accuracy ")[1].split()[0]) >= 0.97


def test_xor_from_the_command_line(capsys) -> None:
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
        ]
    )
    assert rc == 0


def test_backends_table(capsys) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["backend", "version", "installed", "usable"]
    assert any(line.startswith("numpy") and " yes " in line for line in out.splitlines())


def test_gradcheck_and_explain(capsys) -> None:
    assert main(["gradcheck", "--backend", "array_api_strict", "--activation", "softplus"]) == 0
    assert "passed: worst" in capsys.readouterr().out
    assert main(["explain"]) == 0
    out = capsys.readouterr().out
    for text in (
        "Z_1 = A_0 W_1 + b_1",
        "A_2 = sigmoid(Z_2)",
        "delta_2 = (A_L - y)/n * sigmoid'",
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
    assert "test {'loss'" in proc.stdout and xbp.load(model).sizes == [784, 16, 10]
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "train_digits.py"), "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "test accuracy" in proc.stdout, proc.stderr
