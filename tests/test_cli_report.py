"""The CLI's metrics, reports, version, launcher check, interrupt message and threads."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import xbp
from xbp.cli import main
from xbp.cli.common import cpu_threads
from xbp.metrics import classification_report, output_names

skm = pytest.importorskip("sklearn.metrics")


def _main(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's --version and usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_version() -> None:
    code, out, _ = _main("--version")
    assert code == 0 and out.strip() == f"xbp {xbp.__version__}"


@pytest.mark.parametrize(
    "env",
    [
        {"OMPI_COMM_WORLD_SIZE": "2"},
        {"PMI_SIZE": "3"},
        {"WORLD_SIZE": "2", "LOCAL_RANK": "0"},
    ],
)
def test_a_launcher_without_distributed_is_refused(monkeypatch, env) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, out, err = _main("train", "--epochs", "1")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "without --distributed" in err and "add --distributed" in err


def test_one_process_under_a_launcher_runs(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")  # mpiexec -n 1: nothing to refuse
    code, out, _ = _main("train", "--epochs", "1", "--layers", "8", "--quiet")
    assert code == 0 and "test accuracy" in out


def test_train_metrics_headline_and_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboardX")
    tb = tmp_path / "tb"
    code, out, _ = _main(
        "train", "--epochs", "2", "--layers", "16", "--quiet", "--metrics",
        "f1_weighted,top_2_accuracy", "--tensorboard", tb, "--save", tmp_path / "m.npz",
    )  # fmt: skip
    assert code == 0
    line = out.splitlines()[0]
    for label in ("test accuracy", "test F1 (macro)", "test loss", "test f1_weighted",
                  "test top_2_accuracy"):  # fmt: skip
        assert label in line, label
    assert any(p.name.startswith("events.out.tfevents") for p in tb.iterdir())
    code, _, err = _main("train", "--metrics", "f2")
    assert code == 2 and "'f2' is not a metric xbp knows" in err and err.count("\n") == 1


def test_evaluate_prints_a_classification_report_equal_to_sklearns(tmp_path: Path) -> None:
    model = tmp_path / "m.npz"
    assert _main("train", "--epochs", "2", "--layers", "16", "--quiet", "--save", model)[0] == 0
    code, out, _ = _main("evaluate", model, "--data", "digits")
    assert code == 0
    _, y = xbp.data.load_digits()
    # the model's own predictions, however it scales its inputs
    assert _main("predict", model, "--data", "digits", "--out", tmp_path / "p.npz")[0] == 0
    pred = np.load(tmp_path / "p.npz")["output"].argmax(axis=1)
    want = skm.classification_report(y, pred, output_dict=True)
    rows = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines() if len(ln.split()) == 5}
    for c in range(10):
        p, r, f, s = (float(v) for v in rows[str(c)])
        w = want[str(c)]
        assert (p, r, f) == pytest.approx((w["precision"], w["recall"], w["f1-score"]), abs=5e-5)
        assert s == w["support"]
    assert "macro avg" in out and "weighted avg" in out


def test_classification_report_equals_sklearn_with_weights_and_absent_classes() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=60)
    pred = np.where(rng.random(60) < 0.7, y, rng.integers(0, 4, size=60))
    pred[pred == 3] = 2  # class 3 never predicted: precision 0
    cm = skm.confusion_matrix(y, pred, labels=range(5))  # class 4 never occurs: left out
    text = classification_report(cm, ["a", "b", "c", "d", "e"], digits=6)
    want = skm.classification_report(y, pred, output_dict=True, zero_division=0)
    lines = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.strip()}
    assert "e" not in lines
    for name, key in zip("abcd", "0123"):
        got = [float(v) for v in lines[name][1:4]]
        w = want[key]
        assert got == pytest.approx([w["precision"], w["recall"], w["f1-score"]], abs=1e-6)
    macro = [float(v) for v in lines["macro"][2:5]]
    m = want["macro avg"]
    assert macro == pytest.approx([m["precision"], m["recall"], m["f1-score"]], abs=1e-6)
    assert float(lines["accuracy"][1]) == pytest.approx(want["accuracy"], abs=1e-6)


def test_evaluate_reports_r2_rmse_mae_for_regression(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=120)
    csv = tmp_path / "r.csv"
    np.savetxt(csv, np.column_stack([x, y]), delimiter=",", header="a,b,c,target", comments="")
    model = tmp_path / "r.npz"
    args = ["--data", csv, "--label-column", "target", "--loss", "quadratic"]
    code, out, _ = _main("train", *args, "--epochs", "5", "--quiet", "--save", model)
    assert code == 0 and "test R²" in out and "test RMSE" in out
    code, out, _ = _main("evaluate", model, "--data", csv)
    assert code == 0
    report = out.splitlines()[1]
    got = dict(zip(report.split()[0::2], (float(v) for v in report.split()[1::2])))
    assert _main("predict", model, "--data", csv, "--out", tmp_path / "p.npy")[0] == 0
    pred = np.load(tmp_path / "p.npy")[:, 0]
    assert got["R²"] == pytest.approx(skm.r2_score(y, pred), abs=5e-5)
    assert got["MAE"] == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-5)
    # the prediction file names its column after the target
    out_csv = tmp_path / "p.csv"
    assert _main("predict", model, "--data", csv, "--out", out_csv)[0] == 0
    assert out_csv.read_text().splitlines()[0] == "target"


def test_output_names() -> None:
    assert output_names(2, "classification", ["b", "a"]) == ["b", "a"]
    assert output_names(1, "classification", None) == ["1"]
    assert output_names(2, "regression", None, ["u", "v"]) == ["u", "v"]
    assert output_names(2, "regression", None, None) == ["out0", "out1"]


def test_cpu_threads_default_and_override() -> None:
    assert cpu_threads({}) == 1
    assert cpu_threads({"XBP_THREADS": "3"}) == 3
    with pytest.raises(xbp.errors.XbpValueError, match="XBP_THREADS='x'"):
        cpu_threads({"XBP_THREADS": "x"})


def test_cli_runs_torch_on_one_thread(monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        code, _, _ = _main("train", "--backend", "torch", "--epochs", "1", "--layers", "8",
                           "--quiet")  # fmt: skip
        assert code == 0 and torch.get_num_threads() == 1
        monkeypatch.setenv("XBP_THREADS", "2")
        assert _main("train", "--backend", "torch", "--epochs", "1", "--layers", "8",
                     "--quiet")[0] == 0  # fmt: skip
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_names_the_checkpoint_and_the_resume_command(tmp_path: Path, sig) -> None:
    ck = tmp_path / "ck.npz"
    proc = subprocess.Popen(
        [sys.executable, "-m", "xbp", "train", "--epochs", "100000", "--layers", "8",
         "--checkpoint", str(ck), "--progress", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
        # a shell's background job inherits SIGINT ignored; Python then installs no
        # KeyboardInterrupt handler: give the child the default, as a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ck.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert ck.exists(), proc.communicate()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:  # never leave a 100000-epoch run behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    what, status = ("interrupted", 130) if sig == signal.SIGINT else ("terminated by SIGTERM", 143)
    assert proc.returncode == status
    line = err.strip().splitlines()[-1]
    head = f"xbp train: {what} (exit status {status}); the checkpoint {ck} holds epoch "
    assert line.startswith(head), line
    assert line.endswith(f"continue with xbp train --resume {ck}")
    epoch = int(line.split("holds epoch ")[1].split(":")[0])
    assert epoch == xbp.load_checkpoint(ck).training["epoch"]  # the file is whole


def test_interrupt_without_a_checkpoint_says_so() -> None:
    from argparse import Namespace

    from xbp.cli import interrupted_message

    msg = interrupted_message(Namespace(command="train", checkpoint=None, resume=None))
    assert msg == (
        "interrupted (exit status 130); no checkpoint was written (pass --checkpoint FILE to "
        "make a run resumable)"
    )
    assert interrupted_message(Namespace(command="predict")) == (
        "interrupted (exit status 130); files written before it are whole"
    )


def test_onnx_export_carries_class_and_feature_names(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import json

    rng = np.random.default_rng(2)
    x = rng.normal(size=(90, 2))
    names = np.array(["zebra", "apple", "mango"])[np.argmax(x @ rng.normal(size=(2, 3)), axis=1)]
    csv = tmp_path / "c.csv"
    lines = ["width,height,kind"] + [f"{a},{b},{c}" for (a, b), c in zip(x, names)]
    csv.write_text("\n".join(lines) + "\n")
    model, out = tmp_path / "m.npz", tmp_path / "m.onnx"
    assert _main("train", "--data", csv, "--epochs", "2", "--quiet", "--save", model)[0] == 0
    assert _main("export", model, out)[0] == 0
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    classes = sorted(set(names))  # the model's class order: sorted names
    assert json.loads(props["xbp_classes"]) == classes
    assert json.loads(props["xbp_feature_names"]) == ["width", "height"]
    # and the prediction file's probability columns follow the same order
    pred = tmp_path / "p.csv"
    assert _main("predict", model, "--data", csv, "--out", pred)[0] == 0
    assert pred.read_text().splitlines()[0] == "label," + ",".join(classes)


def _diabetes(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_diabetes()
    x, y = d.data, d.target
    idx = np.random.default_rng(0).permutation(len(y))
    cut = int(0.8 * len(y))
    paths = []
    for name, rows in (("train", idx[:cut]), ("test", idx[cut:])):
        path = tmp_path / f"diab_{name}.csv"
        header = ",".join([*d.feature_names, "progression"])
        np.savetxt(path, np.column_stack([x[rows], y[rows]]), delimiter=",", header=header,
                   comments="")  # fmt: skip
        paths.append(path)
    return paths[0], paths[1], idx, y


def test_regression_defaults_beat_a_linear_fit_on_diabetes(tmp_path: Path) -> None:
    """``xbp train`` on a regression CSV with its defaults is at least as good on held-out
    rows as a linear regression fitted to the same training rows (R² 0.38 vs 0.33; without
    starting the output at the target mean the defaults gave 0.18)."""
    lm = pytest.importorskip("sklearn.linear_model")
    train, test, _, _ = _diabetes(tmp_path)
    model = tmp_path / "r.npz"
    args = ["--data", train, "--label-column", "progression", "--loss", "quadratic"]
    code, _, err = _main("train", *args, "--quiet", "--save", model)
    assert code == 0 and "warning" not in err
    code, out, _ = _main("evaluate", model, "--data", test)
    r2 = float(out.splitlines()[1].split()[1])
    tr = np.loadtxt(train, delimiter=",", skiprows=1)
    te = np.loadtxt(test, delimiter=",", skiprows=1)
    # the CLI trains on the rows its own split keeps (70% of the file)
    (xtr, ytr), _, _ = xbp.data.train_val_test_split(
        tr[:, :-1], tr[:, -1], val=0.1, test=0.2, seed=0
    )
    linear = skm.r2_score(te[:, -1], lm.LinearRegression().fit(xtr, ytr).predict(te[:, :-1]))
    assert r2 >= linear > 0.3


def test_a_model_worse_than_the_trivial_predictor_is_warned_about(tmp_path: Path) -> None:
    train, _, _, _ = _diabetes(tmp_path)
    args = ["--data", train, "--label-column", "progression", "--loss", "quadratic", "--quiet"]
    code, _, err = _main("train", *args, "--epochs", "1", "--lr", "1e-6")
    assert code == 0
    assert "xbp train: warning: the validation loss" in err and "training mean" in err


def test_trivial_warning_rules() -> None:
    from xbp.metrics import trivial_warning

    ytr = np.array([0, 0, 0, 1])
    yva = np.array([0, 0, 1, 1])  # the majority class (0) scores 0.5 here
    assert trivial_warning("classification", ytr, yva, {"accuracy": 0.5}) is None
    assert "most frequent training class (0.5000)" in str(
        trivial_warning("classification", ytr, yva, {"accuracy": 0.49})
    )
    yr, ye = np.array([[1.0], [3.0]]), np.array([[2.0], [4.0]])  # mean 2: loss 0.5*(0+4)/2 = 1
    assert trivial_warning("regression", yr, ye, {"loss": 1.0}) is None
    assert trivial_warning("regression", yr, ye, {"loss": 1.01}) is not None


def test_evaluate_and_predict_read_a_plain_npz_with_pread(tmp_path: Path, monkeypatch) -> None:
    """A stored (uncompressed) .npz is memory-mapped and read a chunk at a time from the
    file, never through the mapping, so its pages do not pile up in the process (480 MiB
    file: evaluate peaked at 109 MB, was 570 MB; README)."""
    from xbp.data import hostrows

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    data = tmp_path / "d.npz"
    np.savez(data, x=x, y=y)
    model = tmp_path / "m.npz"
    assert _main("train", "--data", data, "--epochs", "1", "--quiet", "--save", model)[0] == 0
    reads: list[int] = []
    real = hostrows._RowReader.read

    def spy(self, src):  # type: ignore[no-untyped-def]
        reads.append(len(src))
        return real(self, src)

    monkeypatch.setattr(hostrows._RowReader, "read", spy)
    code, out, _ = _main("evaluate", model, "--data", data, "--batch-size", "128")
    assert code == 0 and reads == [128, 128, 44]
    reads.clear()
    assert _main("predict", model, "--data", data, "--out", tmp_path / "p.npz")[0] == 0
    assert sum(reads) == 300
    proba = np.load(tmp_path / "p.npz")["output"]  # the loss printed is the file's
    want = -np.mean(np.log(proba[np.arange(300), y]))
    assert float(out.split()[1]) == pytest.approx(want, rel=1e-5)
