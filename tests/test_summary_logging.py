"""``Network.summary()``, ``xbp summary`` and the ``CSVLogger`` callback (``--log-csv``)."""

from __future__ import annotations

import csv
import io
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

import xbp
from xbp import cli


def run(*argv: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main([str(a) for a in argv]) == 0
    return out.getvalue()


# -- summary ------------------------------------------------------------------------------
def test_summary_counts_every_parameter(backend: xbp.backends.select.Backend) -> None:
    net = xbp.mlp(
        [64, 32, 16, 10], activation="relu", loss="cross_entropy", backend=backend, seed=0
    )
    text = net.summary()
    lines = text.splitlines()
    total = sum(v.size for p in net.host_params() for v in p.values())  # 2080 + 528 + 170
    rows = [line.split() for line in lines if line[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    assert [r[-1] for r in rows] == ["2,080", "528", "170"]
    assert [r[5] for r in rows] == ["relu", "relu", "softmax"]
    assert f"parameters: {total:,} ({total * 8:,} bytes of float64)" in text
    assert "loss: cross_entropy" in text and "precision: exact" in text
    assert f"backend: {backend.name} on {backend.device!s}" in text
    assert repr(text) == str(text)  # a prompt shows the table, not a quoted string


def test_summary_reads_a_layers_dropout() -> None:
    net = xbp.Network([xbp.nn.Dense(3, 4, "tanh", dropout=0.25), xbp.nn.Dense(4, 1, "identity")])
    rows = [line.split() for line in net.summary().splitlines() if line[:1].isdigit()]
    assert [r[6] for r in rows] == ["0.25", "0"]


def test_summary_command_shows_the_saved_model(tmp_path: Path) -> None:
    net = xbp.mlp([4, 8, 3], activation="tanh", loss="cross_entropy", dtype="float32", seed=0)
    x, y = xbp.data.make_blobs(30, centers=3, n_features=4, seed=0)
    xbp.fit(net, x, y, epochs=2, batch_size=10, progress=False, checkpoint=tmp_path / "ck.npz")
    out = run("summary", tmp_path / "ck.npz")
    assert net.summary() in out
    assert "dtype: float32" in out and "optimizer: sgd" in out and "trained: 2 epochs" in out


# -- CSVLogger ------------------------------------------------------------------------------
def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def xor_fit(path: Path, epochs: int, **kw):
    x, y = xbp.data.make_xor()
    net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    logger = xbp.CSVLogger(path, append=kw.pop("append", False))
    return xbp.fit(net, x, y, epochs=epochs, batch_size=2, progress=False, callbacks=[logger], **kw)


def test_one_row_per_epoch_equal_to_the_history(tmp_path: Path) -> None:
    x, y = xbp.data.make_blobs(40, centers=2, n_features=3, seed=1)
    net = xbp.mlp([3, 5, 2], activation="tanh", loss="cross_entropy", seed=0)
    log = tmp_path / "log.csv"
    hist = xbp.fit(
        net, x, y, epochs=3, batch_size=8, validation_split=0.25, progress=False,
        callbacks=[xbp.CSVLogger(log)],
    )  # fmt: skip
    rows = read(log)
    assert list(rows[0]) == list(xbp.train.callbacks.HISTORY_COLUMNS)
    assert len(rows) == len(hist) == 3
    for row, rec in zip(rows, hist.epochs):
        for key in xbp.train.callbacks.HISTORY_COLUMNS:
            value = rec[key]
            assert (row[key] == "") if value is None else (float(row[key]) == value), key


def test_a_new_run_replaces_the_file_unless_append(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    xor_fit(log, 2)
    xor_fit(log, 3)
    assert [r["epoch"] for r in read(log)] == ["1", "2", "3"]
    xor_fit(log, 2, append=True)
    assert [r["epoch"] for r in read(log)] == ["1", "2", "3", "1", "2"]


def test_resume_continues_the_file_without_duplicates(tmp_path: Path) -> None:
    """An interrupted run logged epochs 3-4 after its last checkpoint (epoch 2); resuming
    from that checkpoint drops them and logs 3-4 again, equal to an uninterrupted run."""
    log, ck = tmp_path / "log.csv", tmp_path / "ck.npz"
    whole = xor_fit(tmp_path / "whole.csv", 4)
    xor_fit(log, 2, checkpoint=ck)
    shutil.copy(ck, tmp_path / "at2.npz")
    xor_fit(log, 4, resume=ck)  # the rows a crash after epoch 4 leaves behind
    assert [r["epoch"] for r in read(log)] == ["1", "2", "3", "4"]
    xor_fit(log, 4, resume=tmp_path / "at2.npz")
    rows = read(log)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert [float(r["loss"]) for r in rows] == whole["loss"]


def test_train_log_csv_option(tmp_path: Path) -> None:
    log = tmp_path / "train.csv"
    run(
        "train", "--data", "xor", "--layers", "3", "--loss", "binary_cross_entropy",
        "--epochs", "3", "--batch-size", "4", "--val-split", "0", "--test-split", "0",
        "--schedule", "constant",
        "--checkpoint", tmp_path / "run.npz", "--log-csv", log, "--quiet",
    )  # fmt: skip
    assert [r["epoch"] for r in read(log)] == ["1", "2", "3"]
    run("train", "--resume", tmp_path / "run.npz", "--epochs", "5", "--log-csv", log, "--quiet")
    rows = read(log)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert all(np.isfinite(float(r["loss"])) for r in rows)


def test_resume_drops_a_partial_last_row(tmp_path: Path) -> None:
    """A kill while writing epoch 3's row leaves a cut line; resuming from the epoch-2
    checkpoint keeps rows 1-2 byte for byte and logs 3-4 like an uninterrupted run."""
    log, ck = tmp_path / "log.csv", tmp_path / "ck.npz"
    whole = xor_fit(tmp_path / "whole.csv", 4)
    xor_fit(log, 2, checkpoint=ck)
    kept = log.read_text()
    with open(log, "a") as f:
        f.write("3,0.6931")  # no newline: the kill came mid-row
    xor_fit(log, 4, resume=ck)
    text = log.read_text()
    assert text.startswith(kept)
    rows = read(log)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert [float(r["loss"]) for r in rows] == whole["loss"]
