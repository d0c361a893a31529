"""Reliability at the edges (issue 12): files, new data, targets, resume, early checks, the CLI.

Each class of problem has its tests here, run on numpy and one other backend
(through ``conftest.backend_or_skip``). Tests that only feed bad input and
expect an xbp error live in ``test_bad_input.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import struct
import sys
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from conftest import backend_or_skip, required_backends
from test_bad_input import TWO_BACKENDS

import xbp
from xbp import cli, optim
from xbp.cli import main
from xbp.errors import XbpValueError
from xbp.nn.losses import LOSSES, check_targets

SPECIES = ["setosa", "versicolor", "virginica"]
FAST = ["--layers", "8", "--epochs", "2"]


@pytest.fixture(params=TWO_BACKENDS, ids=[s[0] for s in TWO_BACKENDS])
def be(request: pytest.FixtureRequest) -> xbp.backends.select.Backend:
    return backend_or_skip(*request.param, required_backends())


def run(*argv: object) -> tuple[int, str, str]:
    """``xbp ARGV`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def fails(*argv: object, match: str) -> str:
    rc, out, err = run(*argv)
    assert rc == 2, (rc, out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert match in err, err
    assert "\nepoch " not in "\n" + out, "the error came after training started"
    return err


def spy_fit(monkeypatch: pytest.MonkeyPatch, keyword: str) -> list:
    """Record what the CLI passes to ``xbp.fit`` as ``keyword``."""
    seen: list = []
    real_fit = xbp.fit

    def fit(*a, **k):
        seen.append(k.get(keyword))
        return real_fit(*a, **k)

    monkeypatch.setattr(xbp, "fit", fit)
    return seen


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_iris(path: Path, n: int = 90, label: bool = True, header: bool = True) -> None:
    rng = np.random.default_rng(0)
    cols = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    lines = [",".join(cols + (["species"] if label else []))] if header else []
    for i in range(n):
        c = i % 3
        v = rng.normal(size=4) * 0.3 + c
        lines.append(",".join(f"{a:.4f}" for a in v) + (f",{SPECIES[c]}" if label else ""))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def iris(tmp_path: Path) -> Path:
    write_iris(tmp_path / "iris.csv")
    return tmp_path


def train_iris(d: Path, be: xbp.backends.select.Backend, *extra: object) -> Path:
    model = d / "iris.npz"
    rc, out, err = run(
        "train", "--data", d / "iris.csv", "--label-column", "species", "--backend", be.name,
        "--layers", "8", "--epochs", "30", "--lr", "0.05", "--quiet", "--save", model, *extra,
    )  # fmt: skip
    assert rc == 0, err
    return model


# -- 1. no output destroys an input or another output ----------------------------------
class TestLostFiles:
    def test_every_clash_is_refused_before_any_work(
        self, iris: Path, be: xbp.backends.select.Backend
    ) -> None:
        model = train_iris(iris, be)
        data = iris / "iris.csv"
        (iris / "alias.npz").symlink_to(model)
        os.link(data, iris / "hard.csv")
        before = {p.name: digest(p) for p in iris.iterdir() if p.is_file()}
        b = ["--backend", be.name]
        fails("predict", model, "--data", data, "--out", model, *b, match="same file as model")
        fails("predict", model, "--data", data, "--out", data, *b, match="same file as --data")
        fails("predict", model, "--data", data, "--out", iris / "hard.csv", *b, match="--data")
        fails("predict", iris / "alias.npz", "--data", data, "--out", model, *b, match="model")
        for a, b2 in (("--save", "--plot"), ("--checkpoint", "--save"), ("--plot", "--checkpoint")):
            fails("train", *FAST, a, iris / "x.npz", b2, iris / "x.npz", match="same file")
        fails("train", *FAST, "--save", iris / "alias.npz", "--plot", model, match="same file")
        fails("train", "--data", data, *FAST, "--save", data, match="same file as --data")
        after = {p.name: digest(p) for p in iris.iterdir() if p.is_file()}
        assert after == before

    def test_resume_may_rewrite_its_checkpoint_but_not_save_over_it(self, tmp_path: Path) -> None:
        ck = tmp_path / "run.npz"
        assert run("train", *FAST, "--checkpoint", ck, "--quiet")[0] == 0
        before = digest(ck)
        fails("train", "--resume", ck, "--epochs", "3", "--save", ck, match="same file")
        assert digest(ck) == before
        rc, _, err = run("train", "--resume", ck, "--epochs", "3", "--schedule", "cosine",
                         "--extend-schedule", "--quiet")  # fmt: skip
        assert rc == 0, err
        assert xbp.load_checkpoint(ck).training["epoch"] == 3

    def test_fifo_and_devices_refused_without_blocking(self, tmp_path: Path) -> None:
        fifo = tmp_path / "data.csv"
        os.mkfifo(fifo)
        result: list[tuple[int, str, str]] = []
        worker = threading.Thread(
            target=lambda: result.append(run("train", "--data", fifo, *FAST)), daemon=True
        )
        worker.start()
        worker.join(30)
        assert not worker.is_alive(), "reading a FIFO blocked"
        rc, _, err = result[0]
        assert rc == 2 and "FIFO (named pipe), not a regular file" in err
        with pytest.raises(xbp.errors.XbpFileError, match="FIFO"):
            xbp.load(fifo)
        with pytest.raises(xbp.errors.XbpFileError, match="character device"):
            xbp.data.load_csv("/dev/null")
        fails("train", *FAST, "--save", fifo, match="FIFO")

    def test_modes_follow_umask_or_the_old_file(
        self, tmp_path: Path, be: xbp.backends.select.Backend
    ) -> None:
        net = xbp.mlp([2, 3, 1], backend=be)
        old = os.umask(0o027)
        try:
            xbp.save(net, tmp_path / "new.npz")
        finally:
            os.umask(old)
        assert stat.S_IMODE(os.stat(tmp_path / "new.npz").st_mode) == 0o640
        (tmp_path / "kept.npz").write_bytes(b"")
        os.chmod(tmp_path / "kept.npz", 0o604)
        xbp.save(net, tmp_path / "kept.npz")
        assert stat.S_IMODE(os.stat(tmp_path / "kept.npz").st_mode) == 0o604
        xbp.load(tmp_path / "kept.npz", backend=be)

    def test_symlink_keeps_pointing_at_the_replaced_file(self, tmp_path: Path) -> None:
        net = xbp.mlp([2, 3, 1], seed=1)
        (tmp_path / "models").mkdir()
        target = tmp_path / "models" / "m.npz"
        xbp.save(xbp.mlp([2, 3, 1], seed=2), target)
        link = tmp_path / "latest.npz"
        link.symlink_to(target)
        xbp.save(net, link)
        assert link.is_symlink() and os.readlink(link) == str(target)
        assert xbp.load(target).host_params()[0]["W"].tolist() == net.host_params()[0]["W"].tolist()
        assert sorted(p.name for p in tmp_path.rglob("*")) == ["latest.npz", "m.npz", "models"]

    def test_incompatible_optimizer_state_never_replaces_a_checkpoint(
        self, tmp_path: Path, be: xbp.backends.select.Backend
    ) -> None:
        net = xbp.mlp([3, 4, 2], loss="cross_entropy", backend=be)
        adam = optim.adam(0.01)
        path = tmp_path / "c.npz"
        xbp.save(net, path, optimizer=adam, optimizer_state=adam.init(net.params),
                 training={"epoch": 1})  # fmt: skip
        before = digest(path)
        with pytest.raises(XbpValueError, match="does not belong to optimizer='sgd'"):
            xbp.save(net, path, optimizer=optim.sgd(0.1), optimizer_state=adam.init(net.params))
        wider = xbp.mlp([3, 5, 2], loss="cross_entropy", backend=be)
        with pytest.raises(XbpValueError, match="shape"):
            xbp.save(wider, path, optimizer=adam, optimizer_state=adam.init(net.params))
        assert digest(path) == before
        assert xbp.load_checkpoint(path, backend=be).optimizer_state is not None


# -- 2. predict and evaluate on real data ------------------------------------------------
class TestNewData:
    def test_string_labels_round_trip(self, iris: Path, be: xbp.backends.select.Backend) -> None:
        model = train_iris(iris, be)
        meta = xbp.load_checkpoint(model).metadata
        assert meta["classes"] == SPECIES and meta["features"]["count"] == 4
        assert meta["features"]["names"][0] == "sepal_length"
        assert meta["label"]["name"] == "species" and meta["task"] == "classification"
        write_iris(iris / "new.csv", n=30, label=False)
        rc, out, err = run("predict", model, "--data", iris / "new.csv", "--backend", be.name)
        assert rc == 0, err
        predicted = out.split()
        assert len(predicted) == 30 and set(predicted) <= set(SPECIES)
        assert np.mean([p == SPECIES[i % 3] for i, p in enumerate(predicted)]) > 0.8
        # the labelled file: the label column is found by name and set aside
        rc, out2, _ = run("predict", model, "--data", iris / "iris.csv", "--backend", be.name)
        assert rc == 0 and len(out2.split()) == 90
        rc, out3, _ = run("evaluate", model, "--data", iris / "iris.csv", "--backend", be.name)
        assert rc == 0 and float(out3.split("accuracy ")[1].split()[0]) > 0.8

    def test_label_column_detected_by_width_without_header(
        self, iris: Path, be: xbp.backends.select.Backend
    ) -> None:
        model = train_iris(iris, be)
        write_iris(iris / "plain.csv", n=9, label=True, header=False)
        write_iris(iris / "feats.csv", n=9, label=False, header=False)
        a = run("predict", model, "--data", iris / "plain.csv", "--backend", be.name)
        b = run("predict", model, "--data", iris / "feats.csv", "--backend", be.name)
        assert a[0] == b[0] == 0 and a[1] == b[1]
        fails("evaluate", model, "--data", iris / "feats.csv", match="no label column")

    def test_width_mismatch_names_both_widths(
        self, iris: Path, be: xbp.backends.select.Backend
    ) -> None:
        model = train_iris(iris, be)
        (iris / "two.csv").write_text("1,2\n3,4\n")
        fails("predict", model, "--data", iris / "two.csv", match="2 columns but the model takes 4")
        (iris / "wide.csv").write_text("1,2,3,4,5,6\n")
        err = fails("predict", model, "--data", iris / "wide.csv", "--label-column", "0",
                    match="5 feature columns but the model takes 4")  # fmt: skip
        assert "Traceback" not in err
        fails(
            "predict", model, "--data", "digits", match="64 feature columns but the model takes 4"
        )
        fails("evaluate", model, "--data", "xor", match="2 feature columns but the model takes 4")

    def test_batched_predict_matches_one_pass(
        self, iris: Path, be: xbp.backends.select.Backend
    ) -> None:
        model = train_iris(iris, be)
        outs = []
        for bs in ("7", "100000"):
            path = iris / f"p{bs}.npz"
            rc, _, err = run("predict", model, "--data", iris / "iris.csv", "--batch-size", bs,
                             "--out", path, "--backend", be.name)  # fmt: skip
            assert rc == 0, err
            with np.load(path, allow_pickle=False) as z:
                outs.append((z["output"], z["labels"]))
        np.testing.assert_array_equal(outs[0][0], outs[1][0])
        assert outs[0][1].tolist() == outs[1][1].tolist() and outs[0][1][0] in SPECIES
        net = xbp.load(model)
        x = np.loadtxt(iris / "iris.csv", delimiter=",", skiprows=1, usecols=range(4))
        expected = net.predict(x)  # the model standardises raw features itself
        np.testing.assert_allclose(outs[0][0], expected, rtol=1e-12)
        loss = [run("evaluate", model, "--data", iris / "iris.csv", "--batch-size", bs)[1]
                for bs in ("7", "1000")]  # fmt: skip
        a, b = (float(t.split()[1]) for t in loss)
        assert a == pytest.approx(b, rel=1e-12)

    def test_csv_output_holds_original_labels(
        self, iris: Path, be: xbp.backends.select.Backend
    ) -> None:
        model = train_iris(iris, be)
        out = iris / "p.csv"
        assert run("predict", model, "--data", iris / "iris.csv", "--out", out)[0] == 0
        rows = out.read_text().splitlines()
        # the probability columns are named after the classes, in the model's class order
        classes = sorted(SPECIES)  # the model's class order: the sorted names
        assert rows[0] == "label," + ",".join(classes) and rows[1].split(",")[0] in SPECIES
        assert len(rows) == 91

    def test_unknown_class_in_evaluate_is_named(self, iris: Path) -> None:
        model = train_iris(iris, xbp.backend("numpy"))
        text = (iris / "iris.csv").read_text().replace("virginica", "virginia")
        (iris / "typo.csv").write_text(text)
        fails("evaluate", model, "--data", iris / "typo.csv", match="'virginia'")


# -- 3. loss and target checks ---------------------------------------------------------------
class TestTargets:
    @pytest.mark.parametrize(
        "loss, y, text",
        [
            ("binary_cross_entropy", [[0.0], [9.0]], "targets in [0, 1]"),
            ("binary_cross_entropy", [[-0.5], [1.0]], "from -0.5 to 1"),
            ("cross_entropy", [[1.0], [1.0]], "at least 2 classes"),
            ("cross_entropy", [[1.0, -5.0], [0.0, 1.0]], "negative targets"),
        ],
    )
    def test_check_targets_refuses(
        self, be: xbp.backends.select.Backend, loss: str, y, text: str
    ) -> None:
        yd = be.asarray(np.array(y), be.dtype("float64"))
        with pytest.raises(XbpValueError, match=r"^y_val .*" + _escape(text)):
            check_targets(LOSSES[loss], be.xp, yd, "y_val")

    @pytest.mark.parametrize(
        "loss, y",
        [
            ("binary_cross_entropy", [[0.0], [1.0], [0.25]]),
            ("cross_entropy", [[0.0, 1.0], [0.5, 0.5]]),
            ("quadratic", [[-40.0], [1e6]]),
        ],
    )
    def test_check_targets_accepts(self, be: xbp.backends.select.Backend, loss: str, y) -> None:
        check_targets(LOSSES[loss], be.xp, be.asarray(np.array(y), be.dtype("float64")), "y")

    def test_cli_refuses_nonsense_before_training(
        self, tmp_path: Path, be: xbp.backends.select.Backend
    ) -> None:
        b = ["--backend", be.name]
        fails("train", *FAST, *b, "--loss", "binary_cross_entropy", match="0 to 9")
        rng = np.random.default_rng(0)
        table = np.column_stack([rng.normal(size=(40, 2)), rng.normal(size=40)])
        np.savetxt(tmp_path / "reg.csv", table, delimiter=",", fmt="%.5f")
        fails("train", "--data", tmp_path / "reg.csv", *FAST, *b, "--loss", "cross_entropy",
              match="--loss quadratic")  # fmt: skip
        one = np.column_stack([rng.normal(size=(40, 2)), np.zeros(40)])
        np.savetxt(tmp_path / "one.csv", one, delimiter=",", fmt="%.5f")
        fails("train", "--data", tmp_path / "one.csv", *FAST, *b, match="single class")
        neg = np.column_stack([rng.normal(size=(40, 2)), np.arange(40) % 3 - 5])
        np.savetxt(tmp_path / "neg.csv", neg, delimiter=",", fmt="%.5f")
        fails("train", "--data", tmp_path / "neg.csv", *FAST, *b, "--loss", "cross_entropy",
              match="looks like a measurement")  # fmt: skip
        huge = np.column_stack([rng.normal(size=(40, 2)) * 1e300, np.arange(40) % 2])
        np.savetxt(tmp_path / "huge.csv", huge, delimiter=",")
        fails("train", "--data", tmp_path / "huge.csv", *FAST, *b, match="cannot be standardised")

    def test_regression_gets_identity_output_and_a_loss_only_plot(
        self, tmp_path: Path, be: xbp.backends.select.Backend
    ) -> None:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(60, 2))
        table = np.column_stack([x, 3 * x[:, 0] - 2 * x[:, 1] + 10])  # targets far outside (0, 1)
        np.savetxt(tmp_path / "reg.csv", table, delimiter=",", fmt="%.6f")
        model, png = tmp_path / "reg.npz", tmp_path / "reg.png"
        rc, out, err = run("train", "--data", tmp_path / "reg.csv", "--loss", "quadratic",
                           "--layers", "8", "--epochs", "20", "--backend", be.name, "--save",
                           model, "--plot", png)  # fmt: skip
        assert rc == 0, err
        assert "identity" in out and "(regression)" in out and "test loss" in out
        net = xbp.load(model)
        assert net.layers[-1].activation == "identity"
        width = struct.unpack(">I", png.read_bytes()[16:20])[0]
        assert width == 500, "a regression plot has one panel (loss), 5 inches at 100 dpi"
        rc, out, _ = run("predict", model, "--data", tmp_path / "reg.csv")
        values = [float(v) for v in out.split()]
        assert len(values) == 60 and (min(values) < 0 or max(values) > 1)  # not squashed


def _escape(text: str) -> str:
    import re

    return re.escape(text)


# -- 4. resume continues the same run ------------------------------------------------------------
class TestResume:
    def test_resume_equals_an_uninterrupted_run(
        self, tmp_path: Path, be: xbp.backends.select.Backend
    ) -> None:
        common = ["--layers", "8", "--schedule", "constant", "--quiet", "--backend", be.name]
        assert run("train", *common, "--epochs", "4", "--save", tmp_path / "full.npz")[0] == 0
        ck = tmp_path / "run.npz"
        assert run("train", *common, "--epochs", "2", "--checkpoint", ck)[0] == 0
        rc, _, err = run("train", "--resume", ck, "--epochs", "4", "--backend", be.name,
                         "--quiet", "--save", tmp_path / "resumed.npz")  # fmt: skip
        assert rc == 0, err
        a, b = xbp.load(tmp_path / "full.npz"), xbp.load(tmp_path / "resumed.npz")
        for p, q in zip(a.host_params(), b.host_params()):
            for k in p:  # every parameter (the Standardize layer has none)
                np.testing.assert_allclose(p[k], q[k], rtol=0, atol=1e-12)

    @pytest.mark.parametrize(
        "flag",
        [
            ["--optimizer", "sgd"],
            ["--lr", "0.1"],
            ["--activation", "tanh"],
            ["--dtype", "float32"],
            ["--layers", "9"],
            ["--loss", "quadratic"],
            ["--seed", "3"],
            ["--no-standardize"],
            ["--batch-size", "8"],
            ["--schedule", "step"],
            ["--data", "moons"],
            ["--val-split", "0.2"],
            ["--weight-decay", "0.5"],
            ["--early-stopping", "3"],
        ],
        ids=lambda f: f[0],
    )
    def test_contradicting_flag_is_named(self, tmp_path: Path, flag: list[str]) -> None:
        ck = tmp_path / "run.npz"
        assert run("train", *FAST, "--checkpoint", ck, "--quiet")[0] == 0
        before = digest(ck)
        err = fails("train", "--resume", ck, "--epochs", "3", *flag, match=f"{flag[0]}")
        assert "contradicts" in err
        assert digest(ck) == before

    def test_epochs_and_schedule(self, tmp_path: Path, monkeypatch) -> None:
        ck = tmp_path / "run.npz"
        assert run("train", *FAST, "--checkpoint", ck, "--quiet")[0] == 0
        fails("train", "--resume", ck, match="finished all 2 epochs")
        fails("train", "--resume", ck, "--epochs", "2", match="--epochs 2 is not beyond")
        fails("train", "--resume", ck, "--epochs", "4", match="--extend-schedule")
        fails("train", "--epochs", "3", "--extend-schedule", match="goes with --resume")
        rates = []
        real_fit = xbp.fit

        def spy(*a, **k):
            hist = real_fit(*a, **k)
            rates.extend(hist["learning_rate"])
            return hist

        monkeypatch.setattr(xbp, "fit", spy)
        rc, _, err = run("train", "--resume", ck, "--epochs", "4", "--extend-schedule", "--quiet")
        assert rc == 0, err
        assert len(rates) == 4 and rates[2] > 0 and rates[3] > 0

    def test_model_file_and_foreign_checkpoints(self, tmp_path: Path) -> None:
        model = tmp_path / "m.npz"
        assert run("train", *FAST, "--save", model, "--quiet")[0] == 0
        fails("train", "--resume", model, match="is a model file")
        # a checkpoint written by xbp.fit records no CLI options: explicit flags cannot be checked
        x, y = xbp.data.load_digits()
        net = xbp.mlp([64, 8, 10], activation="relu", loss="cross_entropy")
        ck = tmp_path / "lib.npz"
        xbp.fit(net, x, y, epochs=1, progress=False, checkpoint=ck, optimizer="adamw",
                learning_rate=1e-3)  # fmt: skip
        fails("train", "--resume", ck, "--epochs", "2", "--lr", "0.5", match="cannot be checked")
        fails("train", "--resume", ck, match="--epochs N")

    def test_checkpoint_is_read_once(self, tmp_path: Path, monkeypatch) -> None:
        ck = tmp_path / "run.npz"
        assert run("train", *FAST, "--checkpoint", ck, "--quiet")[0] == 0
        calls = []
        real = xbp.io.load_checkpoint

        def count(*a, **k):
            calls.append(a[0])
            return real(*a, **k)

        monkeypatch.setattr(xbp.io, "load_checkpoint", count)
        rc, _, err = run("train", "--resume", ck, "--epochs", "3", "--extend-schedule", "--quiet")
        assert rc == 0, err
        assert len(calls) == 1

    def test_changed_data_is_refused(self, tmp_path: Path) -> None:
        data = tmp_path / "d.csv"
        rng = np.random.default_rng(0)
        np.savetxt(data, np.column_stack([rng.normal(size=(40, 2)), np.arange(40) % 2]),
                   delimiter=",", fmt="%.5f")  # fmt: skip
        ck = tmp_path / "run.npz"
        assert run("train", "--data", data, *FAST, "--checkpoint", ck, "--quiet")[0] == 0
        text = data.read_text().splitlines()
        text[0] = "9.0,9.0,1"
        data.write_text("\n".join(text) + "\n")
        fails(
            "train", "--resume", ck, "--epochs", "3", "--extend-schedule", match="differ from what"
        )


# -- 5. early checks ------------------------------------------------------------------------------
class TestEarlyChecks:
    @pytest.mark.parametrize("option", ["--save", "--plot", "--checkpoint"])
    def test_missing_directory(self, tmp_path: Path, option: str) -> None:
        fails("train", "--epochs", "40", option, tmp_path / "no" / "f", match="does not exist")

    def test_name_too_long_and_name_at_the_limit(self, tmp_path: Path) -> None:
        fails("train", *FAST, "--save", tmp_path / ("n" * 300 + ".npz"), match="at most")
        long = tmp_path / ("m" * 247 + ".npz")  # 251 characters: fits, with a short temp name
        assert run("train", *FAST, "--save", long, "--quiet")[0] == 0
        assert xbp.load(long).sizes == [64, 64, 8, 10]  # Standardize, two Dense layers

    def test_plot_without_matplotlib(self, tmp_path: Path, monkeypatch) -> None:
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        fails("train", *FAST, "--plot", tmp_path / "c.png", match="pip install 'xbp[plot]'")

    def test_bench_json_directory(self, tmp_path: Path) -> None:
        fails("bench", "--cases", "tiny", "--json", tmp_path / "no" / "b.json", match="no")

    def test_read_only_directory(self, tmp_path: Path) -> None:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            fails("train", *FAST, "--save", ro / "m.npz", match="read-only")
        finally:
            ro.chmod(0o755)


# -- 6. errors: one line, the right words; quiet broken pipes ------------------------------------
class TestErrors:
    def test_seed_minus_one(self, capsys) -> None:
        with pytest.raises(SystemExit) as info:
            main(["train", "--seed", "-1"])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--seed: '-1' must be >= 0" in err

    def test_broken_pipe_ends_quietly(self, iris: Path, monkeypatch) -> None:
        model = train_iris(iris, xbp.backend("numpy"))

        class Closed(io.StringIO):
            def write(self, s: str) -> int:
                raise BrokenPipeError(32, "Broken pipe")

        err = io.StringIO()
        with redirect_stdout(Closed()), redirect_stderr(err):
            rc = main(["predict", str(model), "--data", str(iris / "iris.csv")])
        assert rc == 141 and err.getvalue() == ""

    def test_format_errors_say_what_the_file_is(self, tmp_path: Path) -> None:
        np.save(tmp_path / "a.npy", np.zeros(3))
        (tmp_path / "t.npz").write_text("x,y\n1,2\n")
        with pytest.raises(
            xbp.errors.XbpFileError, match=r"is a \.npy file .*not a readable xbp model"
        ):
            xbp.load(tmp_path / "a.npy")
        with pytest.raises(
            xbp.errors.XbpFileError, match="is a text file, not a readable xbp model"
        ):
            xbp.load(tmp_path / "t.npz")
        with pytest.raises(xbp.errors.XbpFileError, match=r"\.npy file .*np\.savez"):
            xbp.data.load_npz(tmp_path / "a.npy")
        fails("evaluate", tmp_path / "a.npy", "--data", "digits", match="model=")

    @pytest.mark.parametrize(
        "change, key",
        [
            (lambda m: m["training"].update(epoch="three"), "'epoch'"),
            (lambda m: m.update(training=[1]), "'training'"),
            (lambda m: m.update(metadata="x"), "'metadata'"),
            (lambda m: m.update(architecture="x"), "architecture"),
            (lambda m: m.update(optimizer={"name": "adam", "bogus": 1}), "optimizer"),
            (lambda m: m.update(optimizer_state_leaves="7"), "optimizer_state_leaves"),
            (lambda m: m["training"].update(rng=5), "'rng'"),
        ],
    )
    def test_checkpoint_headers_with_wrong_types(self, tmp_path: Path, change, key: str) -> None:
        ck = tmp_path / "c.npz"
        x, y = xbp.data.make_blobs(30, seed=0)
        net = xbp.mlp([2, 4, 3], loss="cross_entropy")
        xbp.fit(net, x, y, epochs=1, batch_size=10, progress=False, checkpoint=ck)
        with np.load(ck, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays["meta"].tobytes())
        change(meta)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(xbp.errors.XbpFileError, match=key):
            xbp.load_checkpoint(tmp_path / "bad.npz")


# -- 7. the CLI a person uses ---------------------------------------------------------------------
class TestCommandLine:
    def test_progress_and_quiet_reach_fit(self, monkeypatch) -> None:
        seen = []
        real_fit = xbp.fit
        monkeypatch.setattr(
            xbp, "fit", lambda *a, **k: seen.append(k["progress"]) or real_fit(*a, **k)
        )
        for extra, expected in (([], "auto"), (["--progress", "bar"], "bar"),
                                (["--progress", "off"], False), (["--quiet"], False)):  # fmt: skip
            assert run("train", *FAST, *extra)[0] == 0
            assert seen[-1] == expected
        rc, out, _ = run("train", *FAST, "--quiet")
        assert out.strip().startswith("test accuracy") and len(out.strip().splitlines()) == 1
        rc, out, _ = run("train", *FAST, "--progress", "lines")
        assert "epoch   2" in out

    def test_early_stopping_says_when_and_what(self) -> None:
        rc, out, _ = run("train", "--layers", "8", "--epochs", "30", "--early-stopping", "0",
                         "--optimizer", "sgd", "--lr", "0.5", "--schedule", "constant")  # fmt: skip
        assert rc == 0
        line = next(t for t in out.splitlines() if t.startswith("early stopping"))
        assert "stopped after epoch" in line and "restored the weights of epoch" in line

    def test_every_option_shows_its_default(self) -> None:
        import argparse

        parser = cli.options.build_parser()
        subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name, sub in subs.choices.items():
            for action in sub._actions:
                if action.option_strings and action.dest not in ("help", "debug"):
                    text = action.help or ""
                    assert "(default" in text or "(required)" in text, f"xbp {name} {action.dest}"

    def test_defaults_are_the_library_defaults(self) -> None:
        import dataclasses

        lib = {f.name: f.default for f in dataclasses.fields(xbp.TrainOptions)}
        args = cli.options.build_parser().parse_args(["train"])
        cli.options.finish_args(args)  # noqa: SLF001
        assert args.seed == lib["seed"] and args.checkpoint_every == lib["checkpoint_every"]
        assert args.on_divergence == lib["on_divergence"] and args.progress == lib["progress"]
        assert args.compile == {None: "auto", True: "on", False: "off"}[lib["compile"]]
        for command, table in cli.options.DEFAULTS.items():
            assert set(table) == set(cli.options.resolved_defaults(command))

    def test_jax_float64_works_from_the_cli(self, tmp_path: Path) -> None:
        backend_or_skip("jax-cpu", "jax", "cpu", required_backends())
        rc, out, err = run("train", "--data", "xor", "--layers", "2", "--epochs", "1",
                           "--batch-size", "4", "--val-split", "0", "--test-split", "0",
                           "--loss", "quadratic", "--backend", "jax", "--dtype", "float64",
                           "--compile", "off", "--save", tmp_path / "m.npz", "--quiet")  # fmt: skip
        assert rc == 0, err
        assert xbp.load(tmp_path / "m.npz").config()["dtype"] == "float64"

    def test_compile_flag_reaches_fit(self, monkeypatch) -> None:
        seen = []
        real_fit = xbp.fit
        monkeypatch.setattr(
            xbp, "fit", lambda *a, **k: seen.append(k.get("compile")) or real_fit(*a, **k)
        )
        assert run("train", *FAST, "--compile", "off", "--quiet")[0] == 0
        assert seen == [False]
        fails("train", *FAST, "--compile", "on", match="--compile")

    def test_explain_uses_the_networks_own_pass(
        self, monkeypatch, be: xbp.backends.select.Backend
    ) -> None:
        calls = []
        real = xbp.Network.value_and_grad

        def spy(self, x, y, **k):
            calls.append((x.shape, y.shape))
            return real(self, x, y, **k)

        monkeypatch.setattr(xbp.Network, "value_and_grad", spy)
        rc, out, _ = run("explain", "--backend", be.name)
        assert rc == 0 and calls == [((1, 2), (1, 1))]
        net = xbp.mlp([2, 3, 1], activation="sigmoid", output="sigmoid", loss="quadratic", seed=0)
        x, y = xbp.data.make_xor()
        cost = float(out.split("C (quadratic) = ")[1].split()[0])
        assert cost == pytest.approx(net.loss_value(x[:1], y[:1]), rel=1e-5)
        assert "docs/math.md" in out and "DESIGN.md" not in out
