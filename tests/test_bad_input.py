"""A table of bad inputs: each raises the right xbp error, names the argument, changes no file.

Placement rule: every test that feeds bad input and expects an xbp error lives here.

Each case runs on numpy and one other backend (``TWO_BACKENDS``, through the
``conftest`` machinery: a missing library is skipped, or fails when
``XBP_REQUIRE_BACKENDS`` names it). Cases that call the CLI run it with
``--debug`` so the xbp exception itself is checked; ``test_cli_errors_are_one_line``
runs them again as a user would (one line on stderr, exit status 2).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import BACKEND_SPECS, backend_or_skip, required_backends

import xbp
from xbp import cli, optim
from xbp.backends.select import namespace_of
from xbp.errors import (
    BackendUnavailableError,
    XbpError,
    XbpFileError,
    XbpFileNotFoundError,
    XbpTypeError,
    XbpValueError,
)

# numpy and one other library: every case runs on both
TWO_BACKENDS = [s for s in BACKEND_SPECS if s[0] in ("numpy", "array_api_strict")]

X = np.random.default_rng(0).normal(size=(12, 3))
Y = np.arange(12) % 2
SPECIES = ["setosa", "versicolor", "virginica"]


def net(be, **kw):
    return xbp.mlp([3, 4, 2], activation="tanh", loss="cross_entropy", backend=be, seed=0, **kw)


def fit(be, x=X, y=Y, **kw):
    args = {"epochs": 1, "batch_size": 4, "progress": False, **kw}
    return xbp.fit(net(be), x, y, **args)


def edited(tmp: Path, name: str, change) -> Path:
    """A copy of ``ck.npz`` (a checkpoint written by fit) with its JSON header edited."""
    with np.load(tmp / "ck.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    change(meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    out = tmp / "sub" / name
    np.savez(out, **arrays)
    return out


def unknown_activation(meta: dict) -> None:
    """A model header naming an activation that no one registered."""
    meta["architecture"]["layers"][0][2] = "gelu_x"


def newer_version(tmp: Path) -> Path:
    return edited(tmp, "newer.npz", lambda m: m.update(format_version=99))


def mismatched(tmp: Path) -> Path:
    path = tmp / "model.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["param.0.W"] = np.zeros((5, 4))
    out = tmp / "sub" / "mismatch.npz"
    np.savez(out, **arrays)
    return out


def truncated(tmp: Path) -> Path:
    data = (tmp / "model.npz").read_bytes()
    out = tmp / "sub" / "cut.npz"
    out.write_bytes(data[: len(data) // 3])
    return out


def pickled(tmp: Path) -> Path:
    out = tmp / "sub" / "evil.npz"
    np.savez(out, meta=np.array([{"run": "code"}], dtype=object), allow_pickle=True)
    return out


def foreign_array(be, shape=(12, 3), dtype=None):
    torch = pytest.importorskip("torch")
    return torch.zeros(shape, dtype=dtype or torch.float64)


def other_device(be):
    strict = pytest.importorskip("array_api_strict")
    dev = strict.Device("device2")
    return strict.asarray(X, device=dev)


def on_device1():
    strict = pytest.importorskip("array_api_strict")
    return xbp.mlp([3, 4, 2], loss="cross_entropy", backend="array_api_strict",
                   device=strict.Device("device1"))  # fmt: skip


def device1_x_cpu_y():
    strict = pytest.importorskip("array_api_strict")
    return strict.asarray(X, device=strict.Device("device1")), strict.asarray(Y)


def in_place_relu(xp, z):
    z[z < 0] = 0  # writes into its argument
    return z


def in_place_cost(xp, a, y):
    a -= y  # writes into the network's output
    return a * a


def adam_state(be):
    n = net(be)
    return optim.adam(0.01).init(n.params)


def sklearn_compiled(be):
    """An estimator told to compile its step where the backend has no tracing compiler."""
    from xbp.sklearn import MLPClassifier

    return MLPClassifier((4,), max_iter=1, backend=be, compile=True).fit(X, Y)


def cli_raise(argv: list[Any]) -> None:
    """``xbp --debug ARGV``: the xbp error propagates (or the command succeeded)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = cli.main(["--debug", *[str(a) for a in argv]])
    raise AssertionError(f"xbp {argv} exited {rc} without an xbp error: {err.getvalue()}")


# (id, argv(be, tmp), exception, text): the CLI cases, reused by the one-line test below
CLI_CASES: list[tuple[str, Any, type, str]] = [
    ("cli-delimiter-not-csv",
     lambda be, t: ["train", "--data", "digits", "--delimiter", ";"],
     XbpValueError, "--delimiter applies to csv data"),
    ("cli-x-key-not-npz",
     lambda be, t: ["evaluate", t / "iris.npz", "--data", t / "iris.csv", "--x-key", "a"],
     XbpValueError, "--x-key applies to npz data"),
    ("cli-label-columns-text",
     lambda be, t: ["train", "--data", t / "iris.csv", "--label-column",
                    "petal_width,species", "--loss", "quadratic"],
     XbpValueError, "several label columns are regression targets"),
    ("cli-npz-key-missing",
     lambda be, t: ["train", "--data", t / "plain.npz", "--x-key", "a", "--y-key", "b"],
     XbpValueError, "lacks ['b']"),
    ("cli-predict-out-is-model",
     lambda be, t: ["predict", t / "iris.npz", "--data", t / "iris.csv", "--out", t / "iris.npz"],
     XbpValueError, "--out"),
    ("cli-predict-out-is-data",
     lambda be, t: ["predict", t / "iris.npz", "--data", t / "iris.csv", "--out", t / "iris.csv"],
     XbpValueError, "same file as --data"),
    ("cli-predict-out-symlink-to-model",
     lambda be, t: ["predict", t / "iris.npz", "--data", t / "iris.csv", "--out", t / "link.npz"],
     XbpValueError, "same file as model"),
    ("cli-save-is-plot",
     lambda be, t: ["train", "--save", t / "o.npz", "--plot", t / "o.npz"],
     XbpValueError, "are the same file"),
    ("cli-checkpoint-is-save",
     lambda be, t: ["train", "--checkpoint", t / "o.npz", "--save", t / "o.npz"],
     XbpValueError, "are the same file"),
    ("cli-resume-is-save",
     lambda be, t: ["train", "--resume", t / "run.npz", "--save", t / "run.npz"],
     XbpValueError, "same file as --resume"),
    ("cli-save-over-data",
     lambda be, t: ["train", "--data", t / "iris.csv", "--save", t / "iris.csv"],
     XbpValueError, "same file as --data"),
    ("cli-resume-model-file",
     lambda be, t: ["train", "--resume", t / "iris.npz"], XbpValueError, "is a model file"),
    ("cli-resume-lr", lambda be, t: ["train", "--resume", t / "run.npz", "--lr", "0.3"],
     XbpValueError, "--lr 0.3 contradicts"),
    ("cli-resume-optimizer",
     lambda be, t: ["train", "--resume", t / "run.npz", "--optimizer", "sgd"],
     XbpValueError, "--optimizer sgd contradicts"),
    ("cli-resume-no-standardize",
     lambda be, t: ["train", "--resume", t / "run.npz", "--no-standardize"],
     XbpValueError, "--no-standardize contradicts"),
    ("cli-resume-epochs-done",
     lambda be, t: ["train", "--resume", t / "run.npz", "--epochs", "1"],
     XbpValueError, "--epochs 1 is not beyond"),
    ("cli-resume-finished", lambda be, t: ["train", "--resume", t / "run.npz"],
     XbpValueError, "finished all 2 epochs"),
    ("cli-resume-schedule-ended",
     lambda be, t: ["train", "--resume", t / "run.npz", "--epochs", "5"],
     XbpValueError, "--extend-schedule"),
    ("cli-resume-missing", lambda be, t: ["train", "--resume", t / "nope.npz"],
     XbpFileNotFoundError, "--resume"),
    ("cli-extend-without-resume", lambda be, t: ["train", "--extend-schedule"],
     XbpValueError, "goes with --resume"),
    ("cli-predict-width", lambda be, t: ["predict", t / "iris.npz", "--data", "digits"],
     XbpValueError, "64 feature columns but the model takes 4"),
    ("cli-predict-csv-width",
     lambda be, t: ["predict", t / "iris.npz", "--data", t / "two.csv"],
     XbpValueError, "has 2 columns but the model takes 4"),
    ("cli-predict-extra-column",
     lambda be, t: ["predict", t / "model.npz", "--data", t / "ids.csv"],
     XbpValueError, "records no label column"),
    ("cli-csv-latin1", lambda be, t: ["train", "--data", t / "latin1.csv"], XbpFileError,
     "8-bit encoding such as Latin-1"),
    ("cli-csv-labels-beyond-outputs",
     lambda be, t: ["train", "--data", t / "bigint.csv", "--loss", "cross_entropy",
                    "--batch-size", "2"],
     XbpValueError, "looks like a measurement, not class labels"),
    ("cli-evaluate-no-labels",
     lambda be, t: ["evaluate", t / "iris.npz", "--data", t / "feats.csv"],
     XbpValueError, "no label column"),
    ("cli-evaluate-unknown-class",
     lambda be, t: ["evaluate", t / "iris.npz", "--data", t / "typo.csv"],
     XbpValueError, "'virginia'"),
    ("cli-predict-out-suffix",
     lambda be, t: ["predict", t / "iris.npz", "--data", t / "iris.csv", "--out", t / "p.txt"],
     XbpValueError, "use a .csv, .npy or .npz"),
    ("cli-predict-out-fifo",
     lambda be, t: ["predict", t / "iris.npz", "--data", t / "iris.csv", "--out", t / "fifo.csv"],
     XbpFileError, "FIFO"),
    ("cli-model-npy", lambda be, t: ["evaluate", t / "a.npy", "--data", "digits"],
     XbpFileError, "is a .npy file"),
    ("cli-model-directory", lambda be, t: ["evaluate", t / "sub", "--data", "digits"],
     XbpFileError, "is a directory"),
    ("cli-data-fifo", lambda be, t: ["train", "--data", t / "fifo.csv"], XbpFileError, "FIFO"),
    ("cli-data-missing", lambda be, t: ["train", "--data", t / "none.csv"],
     XbpFileNotFoundError, "none.csv"),
    ("cli-data-unknown", lambda be, t: ["train", "--data", "cifar"],
     XbpFileNotFoundError, "neither a built-in set"),
    ("cli-label-column-non-csv", lambda be, t: ["train", "--label-column", "2"],
     XbpValueError, "--label-column applies to CSV"),
    ("cli-label-column-unknown",
     lambda be, t: ["train", "--data", t / "iris.csv", "--label-column", "kind"],
     XbpValueError, "--label-column 'kind' is not a column name"),
    ("cli-bce-on-digits",
     lambda be, t: ["train", "--backend", be.name, "--loss", "binary_cross_entropy"],
     XbpValueError, "binary_cross_entropy needs 0/1"),
    ("cli-float-labels-cross-entropy",
     lambda be, t: ["train", "--backend", be.name, "--data", t / "reg.csv", "--loss",
                    "cross_entropy"], XbpValueError, "--loss quadratic"),
    ("cli-single-class",
     lambda be, t: ["train", "--backend", be.name, "--data", t / "one.csv"],
     XbpValueError, "single class"),
    ("cli-standardize-overflow",
     lambda be, t: ["train", "--backend", be.name, "--data", t / "huge.csv"],
     XbpValueError, "cannot be standardised"),
    ("cli-save-missing-dir", lambda be, t: ["train", "--save", t / "nope" / "m.npz"],
     XbpFileNotFoundError, "does not exist"),
    ("cli-plot-missing-dir", lambda be, t: ["train", "--plot", t / "nope" / "c.png"],
     XbpFileNotFoundError, "does not exist"),
    ("cli-checkpoint-read-only", lambda be, t: ["train", "--checkpoint", t / "ro" / "c.npz"],
     XbpFileError, "is read-only"),
    ("cli-save-name-too-long", lambda be, t: ["train", "--save", t / ("n" * 300 + ".npz")],
     XbpFileError, "at most"),
    ("cli-save-is-directory", lambda be, t: ["train", "--save", t / "sub"],
     XbpFileError, "is a directory"),
    ("cli-bench-unknown-backend", lambda be, t: ["bench", "--cases", "tiny", "--backends", "nunpy"],
     XbpValueError, "--backends ['nunpy'] not known"),
    ("cli-bench-json-missing-dir",
     lambda be, t: ["bench", "--cases", "tiny", "--json", t / "nope" / "b.json"],
     XbpFileNotFoundError, "--json"),
    ("cli-explain-index", lambda be, t: ["explain", "--backend", be.name, "--sample", "9"],
     XbpValueError, "--sample 9 is outside the 4 samples"),
    ("cli-explain-digits", lambda be, t: ["explain", "--backend", be.name, "--digits", "30"],
     XbpValueError, "--digits 30"),
    ("cli-summary-not-a-model", lambda be, t: ["summary", t / "notes.txt"], XbpFileError,
     "model="),
    ("cli-summary-missing", lambda be, t: ["summary", t / "nope.npz"], XbpFileNotFoundError,
     "does not exist"),
    ("cli-summary-unregistered-activation",
     lambda be, t: ["summary", edited(t, "o.npz", unknown_activation)], XbpFileError,
     "needs the activation 'gelu_x'"),
    ("cli-log-csv-is-save",
     lambda be, t: ["train", "--save", t / "m.npz", "--log-csv", t / "m.npz"], XbpValueError,
     "--log-csv"),
    ("cli-log-csv-is-data",
     lambda be, t: ["train", "--data", t / "iris.csv", "--label-column", "species",
                    "--log-csv", t / "iris.csv"], XbpValueError, "same file as --data"),
    ("cli-log-csv-missing-dir",
     lambda be, t: ["train", "--log-csv", t / "nope" / "log.csv"], XbpFileNotFoundError,
     "--log-csv"),
    ("cli-compile-on-unsupported",
     lambda be, t: ["train", "--backend", be.name, "--compile", "on", "--quiet"],
     XbpValueError, "--compile on"),
    ("cli-precision-no-bfloat16",
     lambda be, t: ["train", "--backend", be.name, "--precision", "bf16", "--quiet"],
     XbpValueError, "--precision 'bf16' needs bfloat16 arrays"),
    ("cli-task-regress-cross-entropy",
     lambda be, t: ["train", "--backend", be.name, "--task", "regress", "--epochs", "1",
                    "--loss", "cross_entropy"],
     XbpValueError, "--task regress cannot train with --loss cross_entropy"),
    ("cli-task-classify-real-targets",
     lambda be, t: ["train", "--data", t / "reals.csv", "--loss", "quadratic", "--task",
                    "classify"], XbpValueError, "--task classify needs class labels"),
    ("cli-explain-label-none",
     lambda be, t: ["explain", "--data", t / "iris.csv", "--label-column", "none"],
     XbpValueError, "--label-column none: xbp explain needs a label column"),
    ("cli-explain-label-unknown",
     lambda be, t: ["explain", "--data", t / "iris.csv", "--label-column", "kind"],
     XbpValueError, "--label-column 'kind' is not a column name"),
    ("cli-explain-model-without-data",
     lambda be, t: ["explain", "--model", t / "model.npz"], XbpValueError,
     "records no training data; pass --data"),
    ("cli-log-csv-foreign-header",
     lambda be, t: ["train", "--resume", t / "run.npz", "--epochs", "3", "--extend-schedule",
                    "--log-csv", t / "other_log.csv"], XbpFileError, "--log-csv "),
    ("cli-batch-too-big", lambda be, t: ["train", "--batch-size", "100000", "--epochs", "1"],
     XbpValueError, "--batch-size 100000 is larger than the 1259 training rows"),
]  # fmt: skip


def _cli_case(argv_fn):
    return lambda be, t: cli_raise(argv_fn(be, t))


def mapped(tmp: Path, x: np.ndarray = X) -> np.ndarray:
    """``x`` saved under ``sub/`` and opened again as a read-only memory map."""
    np.save(tmp / "sub" / "stream.npy", x)
    return np.load(tmp / "sub" / "stream.npy", mmap_mode="r")


def locked_run(be, tmp: Path, **kw):
    """``fit`` while this process holds the run lock of ``c3.npz`` (as another run would)."""
    with xbp.io.paths.RunLock({"checkpoint": tmp / "c3.npz"}):
        return fit(be, **kw)


def packed(tmp: Path) -> Path:
    """An .npz written compressed (it cannot be memory-mapped)."""
    np.savez_compressed(tmp / "sub" / "packed.npz", x=X, y=Y)
    return tmp / "sub" / "packed.npz"


def gz_idx(tmp: Path) -> Path:
    xbp.data.write_idx(tmp / "sub" / "labels.gz", np.zeros(3, np.uint8))
    return tmp / "sub" / "labels.gz"


# (id, call(be, tmp), exception, text the message must contain)
CASES: list[tuple[str, Any, type, str]] = [
    # -- arrays into fit, forward, backprop ------------------------------------------------
    ("x-width", lambda be, t: fit(be, x=np.zeros((12, 5))), XbpValueError, "x has 5 features"),
    ("x-1d", lambda be, t: fit(be, x=np.zeros(12)), XbpValueError, "x has shape (12,)"),
    ("x-3d", lambda be, t: fit(be, x=np.zeros((12, 3, 1))), XbpValueError, "x has shape"),
    ("x-int", lambda be, t: fit(be, x=np.ones((12, 3), int)), XbpTypeError, "x has dtype int64"),
    ("x-nan", lambda be, t: fit(be, x=np.where(X > 1, np.nan, X)), XbpValueError, "x contains NaN"),
    ("x-inf", lambda be, t: fit(be, x=np.where(X > 1, np.inf, X)), XbpValueError,
     "x contains NaN or Inf"),
    ("x-empty", lambda be, t: fit(be, x=np.zeros((0, 3)), y=np.zeros(0, int)), XbpValueError,
     "x has no rows"),
    ("x-ragged", lambda be, t: fit(be, x=[[1.0, 2.0, 3.0], [1.0]]), XbpValueError,
     "x could not be read"),
    ("x-object", lambda be, t: fit(be, x=np.array([[None] * 3] * 12)), XbpTypeError,
     "x has dtype object"),
    ("x-not-array", lambda be, t: fit(be, x="data.csv"), XbpTypeError, "x is a str"),
    ("y-rows", lambda be, t: fit(be, y=Y[:5]), XbpValueError, "y has 5 rows but x has 12"),
    ("y-label-range", lambda be, t: fit(be, y=np.arange(12) % 3), XbpValueError,
     "y holds class labels from 0 to 2"),
    ("y-negative-label", lambda be, t: fit(be, y=np.arange(12) % 2 - 1), XbpValueError,
     "y holds class labels from -1"),
    ("y-float-labels", lambda be, t: fit(be, y=Y.astype(float)), XbpTypeError,
     "y is 1-D with dtype float64"),
    ("y-width", lambda be, t: fit(be, y=np.zeros((12, 3))), XbpValueError, "y has 3 columns"),
    ("y-nan", lambda be, t: fit(be, y=np.full((12, 2), np.nan)), XbpValueError, "y contains NaN"),
    ("y-bool", lambda be, t: fit(be, y=np.zeros((12, 2), bool)), XbpTypeError, "y has dtype bool"),
    ("mlp-seed-negative", lambda be, t: xbp.mlp([3, 2], seed=-1, backend=be), XbpValueError,
     "seed=-1 must be an integer >= 0"),
    ("mlp-seed-float", lambda be, t: xbp.mlp([3, 2], seed=0.5, backend=be), XbpTypeError,
     "seed=0.5 must be an integer"),
    ("device-no-x64", lambda be, t: xbp.backend("array_api_strict", "no_x64"), XbpValueError,
     "no 64-bit integers"),
    ("x-complex", lambda be, t: fit(be, x=X + 1j), XbpTypeError, "x has complex dtype complex128"),
    ("y-complex", lambda be, t: fit(be, y=np.eye(2)[Y] + 0j), XbpTypeError, "y has complex dtype"),
    ("x-beyond-float32", lambda be, t: net(be, dtype="float32").backprop(X * 1e300, Y),
     XbpValueError,
     "x holds values up to"),
    ("x-masked", lambda be, t: fit(be, x=np.ma.masked_array(X, X > 1)), XbpValueError,
     "x is a NumPy masked array with"),
    ("y-masked", lambda be, t: fit(be, y=np.ma.masked_array(Y, Y > 0)), XbpValueError,
     "y is a NumPy masked array with 6 masked"),
    ("csv-latin1-further-on", lambda be, t: xbp.data.load_csv(t / "latin1_late.csv"),
     XbpFileError, "is not UTF-8 text further on (byte 0xe9"),
    ("csv-utf16", lambda be, t: xbp.data.load_csv(t / "utf16.csv"), XbpFileError,
     "is UTF-16 text, not UTF-8; re-save it as UTF-8 (e.g. iconv -f utf-16"),
    ("sample-weight-masked",
     lambda be, t: fit(be, sample_weight=np.ma.masked_array(np.ones(12), np.arange(12) == 2)),
     XbpValueError, "sample_weight is a NumPy masked array with 1 masked"),
    ("predict-ragged-rows", lambda be, t: xbp.predict(net(be), [[1.0, 2.0, 3.0], [1.0]]),
     XbpValueError, "x could not be read as an array"),
    ("predict-rows-of-none", lambda be, t: xbp.predict(net(be), [[None, 1.0]]), XbpTypeError,
     "batch 0 is a NoneType"),
    ("evaluate-label-in-later-rows",
     lambda be, t: xbp.evaluate(net(be), X, np.where(np.arange(12) == 10, 5, Y), batch_size=4),
     XbpValueError, "y[8:12] holds class labels from 0 to 5"),
    ("forward-width", lambda be, t: net(be).forward(np.zeros((5, 4))), XbpValueError,
     "x has 4 features per row but the first layer takes 3"),
    ("forward-1d", lambda be, t: net(be).forward(np.zeros(3)), XbpValueError, "x[None, :]"),
    ("forward-int", lambda be, t: net(be).forward(np.zeros((5, 3), dtype=np.int64)),
     XbpTypeError, "astype"),
    ("forward-nan", lambda be, t: net(be).forward(np.full((2, 3), np.nan)), XbpValueError,
     "x contains NaN or Inf"),
    ("forward-empty", lambda be, t: net(be).forward(np.zeros((0, 3))), XbpValueError,
     "x has no rows"),
    ("precision-no-bfloat16", lambda be, t: net(be, precision="bf16"), XbpValueError,
     "precision='bf16' needs bfloat16 arrays"),
    ("fit-precision-no-float16", lambda be, t: fit(be, precision="fp16"), XbpValueError,
     "precision='fp16' needs float16 arrays"),
    ("forward-str", lambda be, t: net(be).forward("abc"), XbpTypeError, "x is a str, not an array"),
    ("backprop-y-rows", lambda be, t: net(be).backprop(X[:5], Y[:4]), XbpValueError,
     "y has 4 rows but x has 5"),
    ("backprop-y-columns", lambda be, t: net(be).backprop(X[:5], np.zeros((5, 3))),
     XbpValueError, "2 outputs"),
    ("backprop-label-range", lambda be, t: net(be).backprop(X[:5], np.array([0, 1, 2, 0, 1])),
     XbpValueError, "0..1"),
    ("backprop-float-labels",
     lambda be, t: net(be).backprop(X[:5], np.array([0.0, 1, 0, 1, 1])), XbpTypeError,
     "integer class labels"),
    ("backprop-inf", lambda be, t: net(be).backprop(X[:5], np.full((5, 2), np.inf)),
     XbpValueError, "y contains NaN or Inf"),
    ("mixed-namespace", lambda be, t: fit(be, x=foreign_array(be)), XbpTypeError,
     "x is a torch array"),
    ("mixed-namespace-y", lambda be, t: net(be).backprop(X, foreign_array(be, (12,), None)),
     XbpTypeError, "y is a torch array"),
    ("mixed-device",
     lambda be, t: xbp.mlp([3, 2], backend=xbp.backend("array_api_strict", "device1")).forward(
         other_device(be)), XbpValueError, "x is on device"),
    ("mixed-device-cpu", lambda be, t: on_device1().forward(other_device(be)), XbpValueError,
     "device1"),
    ("mixed-device-y", lambda be, t: on_device1().backprop(*device1_x_cpu_y()), XbpValueError,
     "y is on device"),
    ("namespace-mixture",
     lambda be, t: namespace_of(np.zeros(2), foreign_array(be, (2,)), argument="x, y"),
     XbpTypeError, "mix"),
    ("validation-data-shape", lambda be, t: fit(be, validation_data=(X[:, :2], Y)), XbpValueError,
     "x_val has 2 features"),
    ("validation-data-not-pair", lambda be, t: fit(be, validation_data=X), XbpTypeError,
     "validation_data must be a pair"),
    # -- options of fit -------------------------------------------------------------------------
    ("one-sample-split",
     lambda be, t: fit(be, x=X[:1], y=Y[:1], batch_size=1, validation_split=0.5), XbpValueError,
     "validation_split=0.5"),
    ("epochs-zero", lambda be, t: fit(be, epochs=0), XbpValueError, "epochs=0"),
    ("epochs-float", lambda be, t: fit(be, epochs=2.5), XbpTypeError, "epochs=2.5"),
    ("batch-negative", lambda be, t: fit(be, batch_size=-4), XbpValueError, "batch_size=-4"),
    ("batch-too-big", lambda be, t: fit(be, batch_size=13), XbpValueError,
     "batch_size=13 is larger"),
    ("seed-negative", lambda be, t: fit(be, seed=-1), XbpValueError, "seed=-1"),
    ("on-divergence", lambda be, t: fit(be, on_divergence="ignore"), XbpValueError,
     "on_divergence='ignore'"),
    ("callbacks-type", lambda be, t: fit(be, callbacks=[print]), XbpTypeError,
     "callbacks holds a builtin_function_or_method"),
    ("metadata-type", lambda be, t: fit(be, metadata=[1]), XbpTypeError, "metadata is a list"),
    ("checkpoint-type", lambda be, t: fit(be, checkpoint=5), XbpTypeError, "checkpoint is a int"),
    ("progress-value", lambda be, t: fit(be, progress="fancy"), XbpValueError,
     "progress='fancy'"),
    ("lr-zero", lambda be, t: fit(be, optimizer="sgd", learning_rate=0.0), XbpValueError,
     "learning_rate=0.0"),
    ("lr-negative", lambda be, t: optim.adam(-1e-3), XbpValueError, "learning_rate=-0.001"),
    ("lr-nan", lambda be, t: optim.sgd(float("nan")), XbpValueError,
     "learning_rate=nan must be finite"),
    ("momentum-range", lambda be, t: optim.momentum(0.1, beta=1.0), XbpValueError,
     "momentum=1.0"),
    ("unknown-optimizer", lambda be, t: fit(be, optimizer="lbfgs"), XbpValueError,
     "optimizer='lbfgs'"),
    ("resume-model-file", lambda be, t: fit(be, resume=t / "model.npz"), XbpValueError,
     "without training state"),
    ("csvlogger-path-type", lambda be, t: xbp.CSVLogger(5), XbpTypeError, "path is a int"),
    ("csvlogger-foreign-csv",
     lambda be, t: fit(be, callbacks=[xbp.CSVLogger(t / "iris.csv", append=True)]),
     XbpFileError, "first column is not 'epoch'"),
    ("csvlogger-missing-dir",
     lambda be, t: fit(be, callbacks=[xbp.CSVLogger(t / "nope" / "log.csv")]),
     XbpFileNotFoundError, "CSVLogger path"),
    ("csvlogger-foreign-header",
     lambda be, t: fit(be, callbacks=[xbp.CSVLogger(t / "other_log.csv", append=True)]),
     XbpFileError, "not a CSVLogger's"),
    ("csvlogger-is-checkpoint",
     lambda be, t: fit(be, checkpoint=t / "c1.npz", callbacks=[xbp.CSVLogger(t / "c1.npz")]),
     XbpValueError, "CSVLogger path"),
    ("csvlogger-is-model-checkpoint",
     lambda be, t: fit(be, callbacks=[xbp.ModelCheckpoint(t / "sub" / ".." / "c2.npz"),
                                      xbp.CSVLogger(t / "c2.npz")]),
     XbpValueError, "are the same file"),
    ("load-unregistered-activation",
     lambda be, t: xbp.load(edited(t, "m.npz", unknown_activation), backend=be), XbpFileError,
     "needs the activation 'gelu_x', which is not registered"),
    ("load-unregistered-loss",
     lambda be, t: xbp.load(edited(t, "n.npz", lambda m: m["architecture"].update(
         loss="huber_x")), backend=be), XbpFileError, "xbp.register_loss('huber_x'"),
    ("checkpoint-missing-dir", lambda be, t: fit(be, checkpoint=t / "nope" / "c.npz"),
     XbpFileNotFoundError, "checkpoint="),
    # -- a run's files: one output rule, locks, logs --------------------------------------------
    ("checkpoint-is-mmap-input",
     lambda be, t: fit(be, x=mapped(t), checkpoint=t / "sub" / "stream.npy"), XbpValueError,
     "is the same file as x"),
    ("checkpoint-is-mmap-view",
     lambda be, t: fit(be, x=np.asarray(mapped(t))[2:], y=Y[2:],
                       checkpoint=t / "sub" / "stream.npy"), XbpValueError,
     "is the same file as x"),
    ("csvlogger-is-mmap-input",
     lambda be, t: fit(be, x=mapped(t), callbacks=[xbp.CSVLogger(t / "sub" / "stream.npy")]),
     XbpValueError, "CSVLogger path"),
    ("csvlogger-is-resume",
     lambda be, t: fit(be, resume=t / "ck.npz", epochs=2, callbacks=[xbp.CSVLogger(t / "ck.npz")]),
     XbpValueError, "is the same file as resume"),
    ("csvlogger-new-run-foreign-csv",
     lambda be, t: fit(be, callbacks=[xbp.CSVLogger(t / "iris.csv")]), XbpFileError,
     "a new run replaces only a CSVLogger's own log"),
    ("csvlogger-new-run-binary",
     lambda be, t: fit(be, callbacks=[xbp.CSVLogger(t / "model.npz")]), XbpFileError,
     "cannot be read as a CSVLogger's log"),
    ("checkpoint-locked", lambda be, t: locked_run(be, t, checkpoint=t / "c3.npz"),
     XbpFileError, "is in use by another run"),
    ("csvlogger-locked",
     lambda be, t: locked_run(be, t, callbacks=[xbp.CSVLogger(t / "c3.npz")]),
     XbpFileError, "CSVLogger path="),
    ("paths-check-files",
     lambda be, t: xbp.io.paths.check_files({"x": t / "iris.csv"}, {"checkpoint": t / "iris.csv"}),
     XbpValueError, "checkpoint"),
    # -- dropout, L1, sample and class weights -----------------------------------------------
    ("dropout-one", lambda be, t: xbp.nn.Dense(3, 2, dropout=1.0), XbpValueError,
     "Dense.dropout=1.0 must be < 1"),
    ("dropout-keeps-nothing", lambda be, t: xbp.nn.Dense(3, 2, dropout=1 - 1e-12), XbpValueError,
     "drops every input"),
    ("dropout-negative", lambda be, t: xbp.nn.Dense(3, 2, dropout=-0.1), XbpValueError,
     "Dense.dropout=-0.1 must be >= 0"),
    ("dropout-nan", lambda be, t: xbp.nn.Dense(3, 2, dropout=float("nan")), XbpValueError,
     "Dense.dropout=nan must be finite"),
    ("dropout-str", lambda be, t: xbp.nn.Dense(3, 2, dropout="half"), XbpTypeError,
     "Dense.dropout='half' must be a number"),
    ("l1-negative", lambda be, t: optim.sgd(0.1, l1=-1e-3), XbpValueError, "l1=-0.001"),
    ("l1-nan", lambda be, t: optim.adam(0.01, l1=float("nan")), XbpValueError,
     "l1=nan must be finite"),
    ("sample-weight-negative", lambda be, t: fit(be, sample_weight=np.arange(12) - 1.0),
     XbpValueError, "sample_weight holds negative weights"),
    ("sample-weight-nan", lambda be, t: fit(be, sample_weight=np.where(Y > 0, np.nan, 1.0)),
     XbpValueError, "sample_weight contains NaN"),
    ("sample-weight-length", lambda be, t: fit(be, sample_weight=np.ones(5)), XbpValueError,
     "sample_weight has shape (5,); pass one weight per row, shape (12,)"),
    ("sample-weight-2d", lambda be, t: fit(be, sample_weight=np.ones((12, 1))), XbpValueError,
     "sample_weight has shape (12, 1)"),
    ("sample-weight-zero", lambda be, t: fit(be, sample_weight=np.zeros(12)), XbpValueError,
     "sample_weight is zero for every row"),
    ("sample-weight-str", lambda be, t: fit(be, sample_weight="balanced"), XbpTypeError,
     "sample_weight is a str"),
    ("sample-weight-val-zero",
     lambda be, t: fit(be, validation_data=(X, Y, np.zeros(12))), XbpValueError,
     "sample_weight_val is zero for every row"),
    ("sample-weight-split-zero",
     lambda be, t: fit(be, validation_split=0.25, seed=0, sample_weight=np.isin(  # held-out rows
         np.arange(12), np.random.default_rng(1).permutation(12)[:3], invert=True) * 1.0),
     XbpValueError, "zero on every validation row"),
    ("evaluate-sample-weight-length",
     lambda be, t: xbp.evaluate(net(be), X, Y, sample_weight=np.ones(3)), XbpValueError,
     "sample_weight has shape (3,)"),
    ("class-weight-regression",
     lambda be, t: xbp.fit(xbp.mlp([3, 2], loss="quadratic", backend=be), X, np.zeros((12, 2)),
                           class_weight="balanced", epochs=1, progress=False),
     XbpValueError, "class_weight= needs class labels 0..k-1"),
    ("class-weight-soft-targets",
     lambda be, t: xbp.fit(net(be), X, np.full((12, 2), 0.5), class_weight="balanced",
                           epochs=1, progress=False), XbpValueError,
     "weight the rows with sample_weight="),
    ("class-weight-name", lambda be, t: fit(be, class_weight="auto"), XbpValueError,
     "class_weight='auto'; use 'balanced'"),
    ("class-weight-type", lambda be, t: fit(be, class_weight=[1, 2]), XbpTypeError,
     "class_weight is a list"),
    ("class-weight-unknown-class", lambda be, t: fit(be, class_weight={5: 2.0}), XbpValueError,
     "class_weight names class 5"),
    ("class-weight-negative", lambda be, t: fit(be, class_weight={0: -1.0}), XbpValueError,
     "class_weight[0]=-1.0"),
    ("class-weight-all-zero", lambda be, t: fit(be, class_weight={0: 0, 1: 0}), XbpValueError,
     "class_weight is zero for every row"),
    ("validation-data-quad", lambda be, t: fit(be, validation_data=(X, Y, Y, Y)), XbpTypeError,
     "validation_data must be a pair"),
    # -- building networks ----------------------------------------------------------------------
    ("unknown-activation", lambda be, t: xbp.mlp([3, 2], activation="mish", backend=be),
     XbpValueError, "activation='mish'"),
    ("unknown-activation-lists", lambda be, t: xbp.mlp([3, 2], activation="swish", backend=be),
     XbpValueError, "'sigmoid'"),
    ("unknown-loss", lambda be, t: xbp.mlp([3, 2], loss="hinge", backend=be), XbpValueError,
     "loss='hinge'"),
    ("unknown-backend", lambda be, t: xbp.mlp([3, 2], backend="tensorflow"), XbpValueError,
     "backend='tensorflow'"),
    ("unknown-init", lambda be, t: xbp.mlp([3, 2], init="orthogonal", backend=be),
     XbpValueError, "init='orthogonal'"),
    ("explain-many-rows", lambda be, t: xbp.explain(net(be), X[:2], Y[:2]), XbpValueError,
     "x has 2 rows"),
    ("explain-digits", lambda be, t: xbp.explain(net(be), X[:1], Y[:1], digits=1),
     XbpValueError, "digits=1"),
    ("explain-not-a-network", lambda be, t: xbp.explain("net", X[:1], Y[:1]), XbpTypeError,
     "net is a str"),
    ("register-activation-builtin",
     lambda be, t: xbp.register_activation("relu", lambda xp, z: z, None), XbpValueError,
     "name='relu' is a built-in"),
    ("register-activation-bad-name",
     lambda be, t: xbp.register_activation("My Act", lambda xp, z: z, None), XbpValueError,
     "lower-case identifier"),
    ("register-activation-shape",
     lambda be, t: xbp.register_activation("summed", lambda xp, z: xp.sum(z), None),
     XbpValueError, "returned shape"),
    ("register-activation-raises",
     lambda be, t: xbp.register_activation("broken", lambda xp, z: z.no_such_method(), None),
     XbpValueError, "raised AttributeError"),
    ("register-activation-backward-shape",
     lambda be, t: xbp.register_activation("summed_back", lambda xp, z: z, None,
                                           backward=lambda xp, d, a: xp.sum(d)),
     XbpValueError, "returned shape"),
    ("register-activation-in-place",
     lambda be, t: xbp.register_activation("inplace", in_place_relu, None), XbpValueError,
     "in_place_relu modified its argument 1 in place"),
    ("register-loss-in-place",
     lambda be, t: xbp.register_loss("inplace_loss", in_place_cost, lambda xp, a, y: a - y),
     XbpValueError, "in_place_cost modified its argument 1 in place"),
    ("register-activation-not-finite",
     lambda be, t: xbp.register_activation("infz", lambda xp, z: z + xp.inf, None),
     XbpValueError, "returned NaN or Inf"),
    ("register-activation-not-callable",
     lambda be, t: xbp.register_activation("half", 0.5, None), XbpValueError,
     "forward is a float"),
    ("activation-object-unregistered",
     lambda be, t: xbp.nn.Dense(2, 3, xbp.nn.activations.Activation("mine", lambda xp, z: z, None)),
     XbpValueError, "Activation('mine') is not registered"),
    ("register-loss-builtin",
     lambda be, t: xbp.register_loss("mse", lambda xp, a, y: a, lambda xp, a, y: a),
     XbpValueError, "name='mse' is a built-in"),
    ("register-loss-grad-and-delta",
     lambda be, t: xbp.register_loss("both", lambda xp, a, y: a, lambda xp, a, y: a,
                                     delta=lambda xp, z, a, y: a), XbpValueError,
     "exactly one of grad"),
    ("register-loss-delta-without-outputs",
     lambda be, t: xbp.register_loss("fused", lambda xp, a, y: a, delta=lambda xp, z, a, y: a),
     XbpValueError, "outputs=[...]"),
    ("register-loss-unknown-output",
     lambda be, t: xbp.register_loss("l1x", lambda xp, a, y: a, lambda xp, a, y: a,
                                     outputs=["gelu_x"]), XbpValueError,
     "outputs names 'gelu_x'"),
    ("register-loss-grad-after-softmax",
     lambda be, t: xbp.register_loss("my_ce", lambda xp, a, y: -xp.sum(y * xp.log(a), axis=1),
                                     lambda xp, a, y: -y / a, outputs=["softmax"]),
     XbpValueError, "pass delta=(xp, z, a, y) -> dC/dZ"),
    ("register-loss-grad-shape",
     lambda be, t: xbp.register_loss("badgrad", lambda xp, a, y: (a - y) ** 2,
                                     lambda xp, a, y: xp.sum(a - y)), XbpValueError,
     "returned shape ()"),
    ("register-loss-value-shape",
     lambda be, t: xbp.register_loss("badvalue", lambda xp, a, y: xp.sum(a - y),
                                     lambda xp, a, y: a - y), XbpValueError, "returned shape ()"),
    ("register-loss-delta-not-finite",
     lambda be, t: xbp.register_loss("baddelta", lambda xp, a, y: (a - y) ** 2,
                                     delta=lambda xp, z, a, y: (a - y) + xp.nan,
                                     outputs=["identity"]), XbpValueError, "NaN or Inf"),
    ("softmax-mse", lambda be, t: xbp.mlp([3, 2], output="softmax", loss="mse", backend=be),
     XbpValueError, "loss='quadratic' cannot follow"),
    ("sigmoid-cross-entropy",
     lambda be, t: xbp.mlp([3, 2], output="sigmoid", loss="cross_entropy", backend=be),
     XbpValueError, "softmax output"),
    ("softmax-hidden",
     lambda be, t: xbp.Network([xbp.nn.Dense(3, 4, "softmax"), xbp.nn.Dense(4, 2, "softmax")],
                               loss="cross_entropy", backend=be), XbpValueError,
     "output activation only"),
    ("layers-chain",
     lambda be, t: xbp.Network([xbp.nn.Dense(3, 4), xbp.nn.Dense(5, 2)], backend=be),
     XbpValueError, "layers[1].n_in=5 does not match layers[0].n_out=4"),
    ("layers-empty", lambda be, t: xbp.Network([], backend=be), XbpValueError, "layers is empty"),
    ("layers-type", lambda be, t: xbp.Network([(3, 2)], backend=be), XbpTypeError,
     "layers[0] is a tuple"),
    ("dense-zero", lambda be, t: xbp.nn.Dense(0, 3), XbpValueError,
     "Dense.n_in=0 must be an integer >= 1"),
    ("mlp-one-width", lambda be, t: xbp.mlp([3], backend=be), XbpValueError,
     "at least two widths"),
    ("dtype", lambda be, t: xbp.mlp([3, 2], dtype="float16", backend=be), XbpTypeError,
     "dtype='float16'"),
    ("cuda-unusable", lambda be, t: xbp.mlp([3, 2], backend="numpy", device="cuda:0"),
     XbpValueError, "device='cuda:0'"),
    ("params-shape",
     lambda be, t: setattr(net(be), "params", [{"W": np.zeros((2, 2)), "b": np.zeros(4)}] * 2),
     XbpValueError, "params[0]['W'] has shape (2, 2)"),
    # -- losses -----------------------------------------------------------------------------------
    ("targets-bce-range",
     lambda be, t: xbp.nn.losses.check_targets(xbp.nn.losses.LOSSES["binary_cross_entropy"], be.xp,
                                            be.asarray(np.array([[0.0], [9.0]])), "y"),
     XbpValueError, "targets in [0, 1]"),
    ("targets-ce-one-class",
     lambda be, t: xbp.nn.losses.check_targets(xbp.nn.losses.LOSSES["cross_entropy"], be.xp,
                                            be.asarray(np.ones((3, 1))), "y"),
     XbpValueError, "at least 2 classes"),
    ("targets-ce-negative",
     lambda be, t: xbp.nn.losses.check_targets(xbp.nn.losses.LOSSES["cross_entropy"], be.xp,
                                            be.asarray(np.array([[1.0, -5.0]])), "y"),
     XbpValueError, "negative targets"),
    ("fit-bce-1d-host-labels",
     lambda be, t: xbp.fit(xbp.mlp([3, 1], output="sigmoid", loss="binary_cross_entropy",
                                   backend=be), X, np.arange(12) % 3, epochs=1, batch_size=4),
     XbpValueError, "y holds targets from 0 to 2 but binary_cross_entropy"),
    ("fit-bce-2d-host", lambda be, t: xbp.fit(
        xbp.mlp([3, 1], output="sigmoid", loss="binary_cross_entropy", backend=be), X,
        np.full((12, 1), 1.5), epochs=1, batch_size=4), XbpValueError, "y holds targets from 1.5"),
    ("fit-ce-negative-device", lambda be, t: fit(be, y=be.asarray(np.tile([[2.0, -1.0]], (12, 1)))),
     XbpValueError, "negative targets"),
    ("get-loss-type", lambda be, t: xbp.nn.losses.get_loss(5), XbpValueError,
     "loss=5 is not known"),
    # -- saving -----------------------------------------------------------------------------------
    ("save-missing-dir", lambda be, t: xbp.save(net(be), t / "nope" / "m.npz"),
     XbpFileNotFoundError, "does not exist"),
    ("save-read-only-dir", lambda be, t: xbp.save(net(be), t / "ro" / "m.npz"), XbpFileError,
     "is read-only"),
    ("save-not-network", lambda be, t: xbp.save({"W": 1}, t / "m2.npz"), XbpTypeError,
     "net is a dict"),
    ("save-path-type", lambda be, t: xbp.save(net(be), 5), XbpTypeError, "path is a int"),
    ("save-to-directory", lambda be, t: xbp.save(net(be), t / "sub"), XbpFileError,
     "is a directory"),
    ("save-to-fifo", lambda be, t: xbp.save(net(be), t / "fifo.csv"), XbpFileError, "FIFO"),
    ("save-name-too-long", lambda be, t: xbp.save(net(be), t / ("n" * 300)), XbpFileError,
     "at most"),
    ("save-optimizer-type", lambda be, t: xbp.save(net(be), t / "m2.npz", optimizer="adam"),
     XbpTypeError, "optimizer is a str"),
    ("save-state-without-optimizer",
     lambda be, t: xbp.save(net(be), t / "m2.npz", optimizer_state=adam_state(be)),
     XbpValueError, "optimizer_state needs optimizer="),
    ("save-state-of-another-optimizer",
     lambda be, t: xbp.save(net(be), t / "ck.npz", optimizer=optim.sgd(0.1),
                            optimizer_state=adam_state(be)),
     XbpValueError, "does not belong to optimizer='sgd'"),
    ("save-state-of-another-network",
     lambda be, t: xbp.save(xbp.mlp([3, 5, 2], loss="cross_entropy", backend=be), t / "ck.npz",
                            optimizer=optim.adam(0.01), optimizer_state=adam_state(be)),
     XbpValueError, "has shape (3, 4) but adam keeps (3, 5)"),
    ("save-state-garbage",
     lambda be, t: xbp.save(net(be), t / "ck.npz", optimizer=optim.adam(0.01),
                            optimizer_state="state"),
     XbpValueError, "does not belong"),
    ("save-training-type", lambda be, t: xbp.save(net(be), t / "m2.npz", training=[1]),
     XbpTypeError, "training is a list"),
    ("save-metadata-json", lambda be, t: xbp.save(net(be), t / "m2.npz", metadata={"a": object}),
     XbpValueError, "not JSON-serialisable"),
    ("atomic-write-callable",
     lambda be, t: xbp.io.atomic_write(t / "m2.npz", b"bytes"), XbpTypeError, "write is a bytes"),
    # -- loading ----------------------------------------------------------------------------------
    ("load-missing", lambda be, t: xbp.load(t / "sub" / "nothing.npz", backend=be),
     XbpFileNotFoundError, "nothing.npz"),
    ("load-directory", lambda be, t: xbp.load(t / "sub", backend=be), XbpFileError,
     "is a directory"),
    ("load-fifo", lambda be, t: xbp.load(t / "fifo.csv", backend=be), XbpFileError,
     "is a FIFO (named pipe), not a regular file"),
    ("load-path-type", lambda be, t: xbp.load(None, backend=be), XbpTypeError,
     "path is a NoneType"),
    ("load-text", lambda be, t: xbp.load(t / "notes.txt", backend=be), XbpFileError,
     "is a text file, not a readable xbp model"),
    ("load-npy", lambda be, t: xbp.load(t / "a.npy", backend=be), XbpFileError,
     "is a .npy file (one array, written by np.save), not"),
    ("load-empty", lambda be, t: xbp.load(t / "empty.npz", backend=be), XbpFileError,
     "is an empty file"),
    ("load-plain-npz", lambda be, t: xbp.load(t / "plain.npz", backend=be), XbpFileError,
     "no xbp header"),
    ("load-truncated", lambda be, t: xbp.load(truncated(t), backend=be), XbpFileError,
     "truncated"),
    ("load-newer-format", lambda be, t: xbp.load(newer_version(t), backend=be), XbpFileError,
     "format version 99, newer"),
    ("load-mismatched", lambda be, t: xbp.load(mismatched(t), backend=be), XbpFileError,
     "does not match its own architecture"),
    ("load-pickle", lambda be, t: xbp.load(pickled(t), backend=be), XbpFileError,
     "pickled Python objects"),
    ("header-architecture-type",
     lambda be, t: xbp.load(edited(t, "a.npz", lambda m: m.update(architecture="x")), backend=be),
     XbpFileError, "invalid architecture header"),
    ("header-architecture-missing",
     lambda be, t: xbp.load(edited(t, "b.npz", lambda m: m.pop("architecture")), backend=be),
     XbpFileError, "invalid architecture header"),
    ("header-epoch-type",
     lambda be, t: xbp.load_checkpoint(
         edited(t, "c.npz", lambda m: m["training"].update(epoch="3")), backend=be),
     XbpFileError, "'epoch' is '3'"),
    ("header-training-type",
     lambda be, t: xbp.load_checkpoint(
         edited(t, "d.npz", lambda m: m.update(training=[1])), backend=be),
     XbpFileError, "'training' is a list"),
    ("header-metadata-type",
     lambda be, t: xbp.load_checkpoint(
         edited(t, "e.npz", lambda m: m.update(metadata=3)), backend=be),
     XbpFileError, "'metadata' is a int"),
    ("header-optimizer-type",
     lambda be, t: xbp.load_checkpoint(
         edited(t, "f.npz", lambda m: m.update(optimizer=[1])), backend=be),
     XbpFileError, "invalid optimizer header"),
    ("header-optimizer-keys",
     lambda be, t: xbp.load_checkpoint(
         edited(t, "g.npz", lambda m: m["optimizer"].update(bogus=1)), backend=be),
     XbpFileError, "invalid optimizer header"),
    ("header-optimizer-unknown",
     lambda be, t: xbp.load_checkpoint(
         edited(t, "h.npz", lambda m: m["optimizer"].update(name="lbfgs")), backend=be),
     XbpFileError, "'lbfgs'"),
    ("header-leaves-type",
     lambda be, t: xbp.load_checkpoint(
         edited(t, "i.npz", lambda m: m.update(optimizer_state_leaves="7")), backend=be),
     XbpFileError, "optimizer_state_leaves is '7'"),
    ("header-leaves-count",
     lambda be, t: xbp.load_checkpoint(
         edited(t, "j.npz", lambda m: m.update(optimizer_state_leaves=99)), backend=be),
     XbpFileError, "lacks part of its optimizer state"),
    ("header-rng-type",
     lambda be, t: xbp.load_checkpoint(
         edited(t, "k.npz", lambda m: m["training"].update(rng=5)), backend=be),
     XbpFileError, "'rng' is 5"),
    ("header-lr-scale-negative",
     lambda be, t: xbp.load_checkpoint(
         edited(t, "p.npz", lambda m: m["training"].update(lr_scale=-1.0)), backend=be),
     XbpFileError, "'lr_scale' is -1.0"),
    ("header-lr-scale-nan",
     lambda be, t: fit(be, epochs=2, resume=edited(
         t, "q.npz", lambda m: m["training"].update(lr_scale=float("nan")))),
     XbpFileError, "'lr_scale' is nan"),
    ("header-rng-state",
     lambda be, t: xbp.load_checkpoint(
         edited(t, "r.npz", lambda m: m["training"]["rng"].update(state=3)), backend=be),
     XbpFileError, "'rng' is not a random generator's state"),
    ("header-history",
     lambda be, t: xbp.load_checkpoint(
         edited(t, "s.npz", lambda m: m["training"]["history"].update(epochs=5)), backend=be),
     XbpFileError, "'history' epochs are not a list"),
    ("header-loss-scaler",
     lambda be, t: xbp.load_checkpoint(
         edited(t, "t.npz", lambda m: m["training"].update(loss_scaler={"scale": 0})),
         backend=be), XbpFileError, "loss scaler's 'scale' is 0"),
    ("header-callback-array",
     lambda be, t: xbp.load_checkpoint(
         edited(t, "u.npz", lambda m: m["training"].update(
             callbacks=[{"best_model": {"__xbp_array__": "train.7"}}])), backend=be),
     XbpFileError, "refers to the array 'train.7'"),
    ("header-huge-layers",
     lambda be, t: xbp.load(edited(t, "v.npz", lambda m: m["architecture"].update(
         layers=[[3, 10**9, "tanh"], [10**9, 2, "softmax"]])), backend=be),
     XbpFileError, "its header gives layer 0 'W' the shape (3, 1000000000)"),
    # -- sizes no memory could hold: refused before anything is allocated ---------------------
    ("mlp-too-big", lambda be, t: xbp.mlp([3, 10**7, 10**6, 2], backend=be), XbpValueError,
     "a network of 10,000,043,000,002 parameters"),
    ("dense-dropout-too-big",
     lambda be, t: xbp.Network([xbp.nn.Dense(3, 10**12, dropout=0.5), xbp.nn.Dense(10**12, 2)],
                               backend=be), XbpValueError, "use smaller layers"),
    ("make-blobs-too-big", lambda be, t: xbp.data.make_blobs(10**13), XbpValueError,
     "make_blobs(n=10000000000000"),
    ("make-moons-too-big", lambda be, t: xbp.data.make_moons(10**15), XbpValueError,
     "ask for fewer rows"),
    ("one-hot-too-many-classes", lambda be, t: xbp.data.one_hot(np.array([0, 1]), 10**13),
     XbpValueError, "one_hot of 2 labels into 10000000000000 classes"),
    ("header-format-version-type",
     lambda be, t: xbp.load(edited(t, "l.npz", lambda m: m.update(format_version="1")),
                            backend=be),
     XbpFileError, "format version '1'"),
    # -- data -------------------------------------------------------------------------------------
    ("csv-ragged", lambda be, t: xbp.data.load_csv(t / "ragged.csv"), XbpValueError,
     "line 3 has 2 fields"),
    ("csv-missing", lambda be, t: xbp.data.load_csv(t / "none.csv"), XbpFileNotFoundError,
     "none.csv"),
    ("csv-directory", lambda be, t: xbp.data.load_csv(t / "sub"), XbpFileError, "is a directory"),
    ("csv-fifo", lambda be, t: xbp.data.load_csv(t / "fifo.csv"), XbpFileError, "FIFO"),
    ("csv-is-npz", lambda be, t: xbp.data.load_csv(t / "model.npz"), XbpFileError,
     "is an .npz archive, not a CSV text file"),
    ("csv-empty", lambda be, t: xbp.data.load_csv(t / "blank.csv"), XbpValueError, "is empty"),
    ("csv-header-only", lambda be, t: xbp.data.load_csv(t / "header.csv"), XbpValueError,
     "has a header but no data rows"),
    ("csv-label-name", lambda be, t: xbp.data.load_csv(t / "iris.csv", "kind"), XbpValueError,
     "label_column='kind' is not a column name"),
    ("csv-label-index", lambda be, t: xbp.data.load_csv(t / "iris.csv", 7), XbpValueError,
     "label_column=7 is outside the 5 columns"),
    ("csv-label-float", lambda be, t: xbp.data.load_csv(t / "iris.csv", 1.5), XbpTypeError,
     "label_column=1.5 must be an integer"),
    ("csv-label-none", lambda be, t: xbp.data.load_csv(t / "iris.csv", None), XbpTypeError,
     "load_table(path, label_column=None)"),
    ("csv-non-numeric-feature", lambda be, t: xbp.data.load_csv(t / "words.csv"),
     XbpValueError, "holds 'abc', a non-numeric value"),
    ("csv-string-labels", lambda be, t: xbp.data.load_csv(t / "iris.csv"), XbpValueError,
     "use xbp.data.load_table"),
    ("csv-delimiter", lambda be, t: xbp.data.load_csv(t / "iris.csv", delimiter=";;"),
     XbpValueError, "delimiter=';;' must be one character"),
    ("csv-engine", lambda be, t: xbp.data.load_csv(t / "two.csv", engine="c"), XbpValueError,
     "engine='c'"),
    ("csv-dtype", lambda be, t: xbp.data.load_csv(t / "two.csv", dtype="int8"), XbpTypeError,
     "dtype='int8'"),
    ("csv-header-type", lambda be, t: xbp.data.load_csv(t / "iris.csv", header="yes"),
     XbpTypeError, "header='yes'"),
    ("table-unknown-class",
     lambda be, t: xbp.data.load_table(t / "typo.csv", "species", classes=SPECIES),
     XbpValueError, "'virginia', which is not one of the known classes"),
    ("table-classes-type",
     lambda be, t: next(xbp.data.iter_table(t / "iris.csv", classes="setosa")), XbpTypeError,
     "classes must be a list"),
    ("table-chunk-rows", lambda be, t: next(xbp.data.iter_table(t / "iris.csv", chunk_rows=0)),
     XbpValueError, "chunk_rows=0"),
    ("csv-columns-missing", lambda be, t: xbp.data.csv_columns(t / "none.csv"),
     XbpFileNotFoundError, "does not exist"),
    ("npz-is-npy", lambda be, t: xbp.data.load_npz(t / "a.npy"), XbpFileError,
     "is a .npy file (one array, written by np.save), not an .npz of x and y"),
    ("npz-is-text", lambda be, t: xbp.data.load_npz(t / "notes.txt"), XbpFileError,
     "is a text file, not an .npz archive"),
    ("npz-missing-key", lambda be, t: xbp.data.load_npz(t / "plain.npz"), XbpValueError,
     "lacks ['x', 'y']"),
    ("npz-key-type", lambda be, t: xbp.data.load_npz(t / "plain.npz", x_key=0), XbpTypeError,
     "x_key=0"),
    ("npz-pickle", lambda be, t: xbp.data.load_npz(pickled(t), x_key="meta", y_key=None),
     XbpFileError, "pickled"),
    ("idx-not-idx", lambda be, t: xbp.data.load_idx(t / "notes.txt"), XbpFileError,
     "not an IDX file"),
    ("idx-directory", lambda be, t: xbp.data.load_idx(t / "sub"), XbpFileError, "is a directory"),
    ("mnist-not-directory", lambda be, t: xbp.data.load_mnist(t / "notes.txt"),
     XbpFileNotFoundError, "is not a directory of IDX files"),
    ("mnist-kind", lambda be, t: xbp.data.load_mnist(t / "sub", kind="valid"), XbpValueError,
     "kind='valid'"),
    ("mnist-missing-files", lambda be, t: xbp.data.mnist_files(t / "sub"),
     XbpFileNotFoundError, "lacks train-images-idx3-ubyte"),
    ("mnist-path-type", lambda be, t: xbp.data.load_mnist(3), XbpTypeError, "directory is a int"),
    ("mnist1d-seed", lambda be, t: xbp.data.load_mnist1d(seed=-1), XbpValueError, "seed=-1"),
    ("mnist1d-path", lambda be, t: xbp.data.load_mnist1d(path=3), XbpTypeError, "path is a int"),
    ("spirals-n", lambda be, t: xbp.data.make_spirals(1), XbpValueError, "n=1"),
    ("spirals-seed", lambda be, t: xbp.data.make_spirals(seed=-1), XbpValueError, "seed=-1"),
    ("moons-noise", lambda be, t: xbp.data.make_moons(noise=-1.0), XbpValueError, "noise=-1.0"),
    ("blobs-centers", lambda be, t: xbp.data.make_blobs(centers=0), XbpValueError, "centers=0"),
    ("blobs-spread", lambda be, t: xbp.data.make_blobs(spread=float("nan")), XbpValueError,
     "spread=nan"),
    ("standardize-1d", lambda be, t: xbp.data.standardize(np.zeros(3)), XbpValueError,
     "x has shape (3,)"),
    ("standardize-nan", lambda be, t: xbp.data.standardize(np.full((2, 2), np.nan)),
     XbpValueError, "x contains NaN"),
    ("standardize-overflow", lambda be, t: xbp.data.standardize(np.array([[1e300], [-1e300]])),
     XbpValueError, "cannot be standardised"),
    ("standardize-other-width",
     lambda be, t: xbp.data.standardize(np.zeros((2, 2)), np.zeros((2, 3))), XbpValueError,
     "others[0] has 3 columns but x has 2"),
    ("standardize-text", lambda be, t: xbp.data.standardize([["a", "b"]]), XbpTypeError,
     "x could not be read as numbers"),
    ("one-hot-float", lambda be, t: xbp.data.one_hot(np.array([0.5])), XbpTypeError,
     "y must be 1-D integer labels"),
    ("one-hot-range", lambda be, t: xbp.data.one_hot(np.array([2]), 2), XbpValueError,
     "outside 0..1"),
    ("one-hot-classes", lambda be, t: xbp.data.one_hot(np.array([0]), 0), XbpValueError,
     "n_classes=0"),
    ("split-rows", lambda be, t: xbp.data.train_val_test_split(X[:3], Y[:2]), XbpValueError,
     "x has 3 rows but y has 2"),
    ("split-fractions", lambda be, t: xbp.data.train_val_test_split(X, Y, val=0.5, test=0.5),
     XbpValueError, "must be below 1"),
    ("split-seed", lambda be, t: xbp.data.train_val_test_split(X, Y, seed=-2), XbpValueError,
     "seed=-2"),
    ("split-stratify", lambda be, t: xbp.data.train_val_test_split(X, Y, stratify="yes"),
     XbpTypeError, "stratify='yes'"),
    ("dataset-unknown", lambda be, t: xbp.data.load_dataset("cifar"), XbpFileNotFoundError,
     "neither a built-in set"),
    ("dataset-format", lambda be, t: xbp.data.load_dataset("digits", format="xls"),
     XbpValueError, "format='xls'"),
    ("dataset-spec-type", lambda be, t: xbp.data.dataset_format(7), XbpTypeError,
     "spec is a int"),
    ("dataset-no-format", lambda be, t: xbp.data.load_dataset(str(t / "notes.txt")),
     XbpValueError, "cannot tell its format"),
    ("paths-clash",
     lambda be, t: xbp.io.paths.check_distinct({"--data": t / "iris.csv"},
                                            {"--out": t / "iris.csv"}),
     XbpValueError, "--out"),
    ("sklearn-compile-required", lambda be, t: sklearn_compiled(be), XbpValueError,
     "compile=True, but"),
    # -- streamed data: memory maps and batch sources ------------------------------------------
    ("stream-nan", lambda be, t: fit(be, x=mapped(t, np.where(X > 1, np.nan, X))), XbpValueError,
     "x (in rows 2..9) contains NaN or Inf"),
    ("stream-compile", lambda be, t: fit(be, x=mapped(t), compile=True), XbpValueError,
     "compile=True needs the data on the device"),
    ("stream-flag", lambda be, t: fit(be, stream="yes"), XbpValueError, "stream='yes'"),
    ("stream-false-source", lambda be, t: fit(be, x=[(X, Y)], y=None, stream=False),
     XbpValueError, "stream=False with a batch source"),
    ("source-generator", lambda be, t: fit(be, x=(b for b in [(X, Y)]), y=None), XbpTypeError,
     "one-shot iterator"),
    ("source-not-pairs", lambda be, t: fit(be, x=[X], y=None), XbpTypeError,
     "the source must yield (x, y) pairs"),
    ("source-empty", lambda be, t: fit(be, x=[], y=None), XbpValueError, "yielded no batches"),
    ("source-split", lambda be, t: fit(be, x=[(X, Y)], y=None, validation_split=0.2),
     XbpValueError, "validation_split with a batch source"),
    ("source-batch-width", lambda be, t: fit(be, x=[(np.zeros((4, 5)), Y[:4])], y=None),
     XbpValueError, "x batch 0 has 5 features"),
    ("source-batch-targets", lambda be, t: fit(be, x=[(X, Y[:3])], y=None), XbpValueError,
     "y batch 0 has 3 rows"),
    ("fit-no-y", lambda be, t: fit(be, y=None), XbpTypeError, "y is None"),
    ("evaluate-no-y", lambda be, t: xbp.evaluate(net(be), X), XbpTypeError, "y is None"),
    ("evaluate-rows", lambda be, t: xbp.evaluate(net(be), X, Y[:4]), XbpValueError,
     "y has 4 rows but x has 12"),
    ("predict-batch-size", lambda be, t: xbp.predict(net(be), X, batch_size=0), XbpValueError,
     "batch_size=0"),
    ("predict-width", lambda be, t: xbp.predict(net(be), np.zeros((3, 5))), XbpValueError,
     "x has 5 features"),
    ("npz-mmap-compressed", lambda be, t: xbp.data.load_npz(packed(t), mmap=True), XbpValueError,
     "cannot be memory-mapped"),
    ("idx-mmap-gz", lambda be, t: xbp.data.load_idx(gz_idx(t), mmap=True), XbpValueError,
     "gzip-compressed and cannot be memory-mapped"),
    ("idx-write-dtype", lambda be, t: xbp.data.write_idx(t / "sub" / "s.idx", np.array(["a"])),
     XbpTypeError, "IDX holds arrays of uint8"),
    # -- the command line -------------------------------------------------------------------------
    *[(name, _cli_case(argv), error, text) for name, argv, error, text in CLI_CASES],
]  # fmt: skip

# files a case may create as its own bad input (everything else must stay untouched)
INPUTS = {
    f"sub/{n}"
    for n in (
        "newer.npz",
        "mismatch.npz",
        "cut.npz",
        "evil.npz",
        "stream.npy",
        "packed.npz",
        "labels.gz",
    )
} | {f"sub/{c}.npz" for c in "abcdefghijklmnopqrstuv"}


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _cli_files(root: Path) -> None:
    """Session-independent CLI inputs: a model with CLI metadata, a checkpoint, CSVs."""
    rng = np.random.default_rng(0)
    cols = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    rows = [",".join(cols + ["species"])]
    rows += [",".join(f"{v:.3f}" for v in rng.normal(size=4)) + f",{SPECIES[i % 3]}"
             for i in range(12)]  # fmt: skip
    (root / "iris.csv").write_text("\n".join(rows) + "\n")
    (root / "typo.csv").write_text("\n".join(rows).replace("virginica", "virginia") + "\n")
    (root / "feats.csv").write_text("\n".join(r.rsplit(",", 1)[0] for r in rows[1:]) + "\n")
    (root / "two.csv").write_text("1,2\n3,4\n")
    (root / "ids.csv").write_text("".join(f"{i},0.1,0.2,0.3\n" for i in range(5)))
    (root / "latin1.csv").write_bytes("caf\xe9,b,label\n1,2,0\n3,4,1\n".encode("latin-1"))
    late = "a,b,label\n" + "1,2,0\n" * 400 + "3,4,caf\xe9\n"
    (root / "latin1_late.csv").write_bytes(late.encode("latin-1"))
    (root / "utf16.csv").write_bytes("a,b,label\n1,2,0\n".encode("utf-16"))
    (root / "bigint.csv").write_text("".join(f"{i},{i},{2**53 + 5 * (i % 3)}\n" for i in range(6)))
    n = rng.normal(size=(30, 2))
    np.savetxt(root / "reg.csv", np.column_stack([n, n[:, 0] * 1.5]), delimiter=",", fmt="%.5f")
    np.savetxt(root / "one.csv", np.column_stack([n, np.zeros(30)]), delimiter=",", fmt="%.5f")
    np.savetxt(root / "huge.csv", np.column_stack([n * 1e300, np.arange(30) % 2]), delimiter=",")
    iris = xbp.mlp([4, 8, 3], loss="cross_entropy", seed=0)
    meta = {
        "features": {"count": 4, "names": cols},
        "label": {"name": "species", "index": 4, "columns": 5},
        "classes": SPECIES,
        "task": "classification",
        "standardize": None,
    }
    xbp.save(iris, root / "iris.npz", metadata=meta)
    (root / "link.npz").symlink_to(root / "iris.npz")  # remade in each copy


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The input files, made once per session (copied for every case)."""
    root = tmp_path_factory.mktemp("inputs")
    with redirect_stdout(io.StringIO()):  # a checkpoint written by xbp train: 2 of 2 epochs
        assert cli.main(["train", "--layers", "8", "--epochs", "2", "--checkpoint",
                         str(root / "run.npz"), "--quiet"]) == 0  # fmt: skip
    xbp.save(net("numpy"), root / "model.npz")
    x, y = xbp.data.make_blobs(12, centers=2, n_features=3, seed=0)
    xbp.fit(net("numpy"), x, y, epochs=1, batch_size=4, progress=False,
            checkpoint=root / "ck.npz")  # fmt: skip
    (root / "sub").mkdir()
    (root / "notes.txt").write_text("not a model\n")
    (root / "other_log.csv").write_text("epoch,foo\n1,2\n")
    (root / "reals.csv").write_text(
        "a,b,y\n" + "".join(f"{i},{i % 3},{i / 7}\n" for i in range(30))
    )
    (root / "ragged.csv").write_text("1,2,0\n3,4,1\n5,6\n")
    (root / "blank.csv").write_text("\n\n")
    (root / "header.csv").write_text("a,b,label\n")
    (root / "words.csv").write_text("a,b,label\n1,abc,0\n")
    (root / "empty.npz").write_bytes(b"")
    np.save(root / "a.npy", np.zeros(3))
    np.savez(root / "plain.npz", a=np.ones(3))
    _cli_files(root)
    (root / "ro").mkdir()
    xbp.save(net("numpy"), root / "ro" / "m.npz")
    return root


@pytest.fixture
def files(tmp_path: Path, template: Path) -> Path:
    root = tmp_path / "t"
    shutil.copytree(template, root, symlinks=False)
    (root / "link.npz").unlink()
    (root / "link.npz").symlink_to(root / "iris.npz")
    os.mkfifo(root / "fifo.csv")
    ro = root / "ro"
    ro.chmod(0o555)
    yield root
    ro.chmod(0o755)


@pytest.fixture(params=TWO_BACKENDS, ids=[s[0] for s in TWO_BACKENDS])
def be(request: pytest.FixtureRequest) -> xbp.backends.select.Backend:
    return backend_or_skip(*request.param, required_backends())


def test_table_size_and_ids() -> None:
    ids = [c[0] for c in CASES]
    assert len(set(ids)) == len(ids), "duplicate case ids"
    assert len(CASES) >= 120


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, be: xbp.backends.select.Backend, files: Path) -> None:
    name, call, error, text = case
    # files the case itself prepares (inputs) are made first; then nothing may change
    before = snapshot(files)
    with pytest.raises(error) as info:
        call(be, files)
    assert isinstance(info.value, XbpError), type(info.value)
    message = str(info.value)
    assert text in message, message
    assert "\n" not in message, "messages are one line"
    after = snapshot(files)
    changed = {k for k in before if before[k] != after.get(k)}
    assert not changed, f"{name} changed {changed}"
    # only files the case deliberately wrote as its bad input may be new
    assert set(after) - set(before) <= INPUTS, set(after) - set(before)
    assert not [p for p in files.rglob("*.tmp")], "a temporary file was left behind"


CSV_CASES = [c for c in CASES if "csv" in c[0]]


@pytest.mark.parametrize("case", CSV_CASES, ids=[c[0] for c in CSV_CASES])
def test_csv_cases_without_pandas(case, files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CSV cases again with pandas hidden: numpy's parser keeps xbp's messages."""
    monkeypatch.setitem(__import__("sys").modules, "pandas", None)
    test_bad_input(case, xbp.backend("numpy"), files)


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_errors_are_one_line(case, files: Path) -> None:
    name, argv, _, text = case
    words = [str(a) for a in argv(xbp.backend("numpy"), files)]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = cli.main(words)
    lines = err.getvalue().strip().splitlines()
    assert rc == 2 and len(lines) == 1, err.getvalue()
    assert lines[0].startswith(f"xbp {words[0]}: error: ") and text in lines[0]
    assert "\nepoch " not in "\n" + out.getvalue(), "the error came after training started"


# argparse refuses these before any command runs: one line, exit 2
USAGE = [
    ["train", "--seed", "-1"],
    ["train", "--lr", "-1"],
    ["train", "--lr", "nan"],
    ["train", "--epochs", "0"],
    ["train", "--batch-size", "x"],
    ["train", "--layers", "a,b"],
    ["train", "--val-split", "1"],
    ["train", "--optimizer", "lbfgs"],
    ["train", "--progress", "fancy"],
    ["predict", "m.npz"],
    ["gradcheck", "--tol", "0"],
]


@pytest.mark.parametrize("argv", USAGE, ids=[" ".join(a) for a in USAGE])
def test_usage_errors_are_one_line(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err, err


def _public(module: Any) -> list[str]:
    return [n for n in module.__all__ if callable(getattr(module, n))
            and not isinstance(getattr(module, n), type)]  # fmt: skip


def test_every_entry_point_has_a_bad_input_case(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every public function of io, data, paths and losses, and every CLI command that
    reads or writes files, is reached by at least one case of the table."""
    called: set[str] = set()

    def spy(label: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            called.add(label)
            return fn(*a, **k)

        return wrapper

    modules = {"io": xbp.io, "data": xbp.data, "paths": xbp.io.paths, "losses": xbp.nn.losses}
    for mod_name, module in modules.items():
        for name in _public(module):
            fn = getattr(module, name)
            wrapped = spy(f"{mod_name}.{name}", fn)
            monkeypatch.setattr(module, name, wrapped)
            if getattr(xbp, name, None) is fn:
                monkeypatch.setattr(xbp, name, wrapped)
    for command in ("train", "evaluate", "predict", "explain", "summary", "bench"):
        monkeypatch.setitem(cli.COMMANDS, command, spy(f"cli.{command}", cli.COMMANDS[command]))
    be = xbp.backend("numpy")
    for _, call, error, _ in CASES:
        try:
            call(be, files)
        except (error, pytest.skip.Exception):
            pass
    expected = {f"{m}.{n}" for m, module in modules.items() for n in _public(module)}
    expected |= {
        f"cli.{c}" for c in ("train", "evaluate", "predict", "explain", "summary", "bench")
    }
    # helpers with nothing a user can get wrong
    expected -= {"data.load_digits", "data.make_xor", "paths.describe", "paths.label",
                 "paths.new_file_mode", "paths.write_target", "paths.name_max", "paths.sniff",
                 "paths.backing_file",
                 "io.check_same_architecture", "losses.check_pair"}  # fmt: skip
    missing = sorted(expected - called)
    assert not missing, f"no bad-input case reaches {missing}"


def test_unusable_backend_says_why() -> None:
    try:
        xbp.backend("cupy")
    except BackendUnavailableError as exc:
        assert "not installed" in str(exc) or "no CUDA device" in str(exc) or "cupy" in str(exc)
    else:
        pytest.skip("cupy is usable here: nothing to refuse")


def test_malicious_pickle_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as z:
        import pickle

        buf = io.BytesIO()
        np.save(buf, np.array([Evil()], dtype=object), allow_pickle=True)
        z.writestr("meta.npy", buf.getvalue())
        z.writestr("param.0.W.npy", pickle.dumps(Evil()))
        # the keys load_npz reads, so that it meets the object array itself
        z.writestr("x.npy", buf.getvalue())
        z.writestr("y.npy", buf.getvalue())
    for loader in (xbp.load, xbp.load_checkpoint, xbp.data.load_npz):
        with pytest.raises(XbpFileError, match="pickled|not a readable"):
            loader(path)
    # the refusal comes from the archive's content, not from words in its path
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(2))
    with pytest.raises(XbpValueError, match="lacks"):
        xbp.data.load_npz(plain)
    assert not marker.exists()


# -- checks that a clean call made cheaper still run on the next call ----------------------------
_ROWS = 12
_BIN = (np.arange(_ROWS) % 2).astype(float).reshape(-1, 1)
_ONE_HOT = np.eye(3)[np.arange(_ROWS) % 3]


def _with(a: np.ndarray, value: float, dtype: Any = None) -> np.ndarray:
    out = np.array(a, dtype=dtype or a.dtype)
    out[5, 0] = value
    return out


# (id, network kwargs (mlp [3, 4, k]), good targets, bad x or None, bad targets, message)
AGAIN = [
    ("bce-above-1", dict(output="sigmoid", loss="binary_cross_entropy"), _BIN, None,
     _with(_BIN, 2.0), "y holds targets from 0 to 2 but binary_cross_entropy"),
    ("bce-below-0", dict(output="sigmoid", loss="binary_cross_entropy"), _BIN, None,
     _with(_BIN, -0.5), "y holds targets from -0.5 to 1 but binary_cross_entropy"),
    ("bce-nan", dict(output="sigmoid", loss="binary_cross_entropy"), _BIN, None,
     _with(_BIN, np.nan), "y contains NaN or Inf"),
    ("bce-inf", dict(output="sigmoid", loss="binary_cross_entropy"), _BIN, None,
     _with(_BIN, -np.inf), "y contains NaN or Inf"),
    ("bce-other-dtype", dict(output="sigmoid", loss="binary_cross_entropy"), _BIN, None,
     _with(_BIN, 3.0, np.float32), "y holds targets from 0 to 3"),
    ("bce-integers", dict(output="sigmoid", loss="binary_cross_entropy"), _BIN, None,
     _with(_BIN, 4, np.int64), "y holds targets from 0 to 4"),
    ("ce-negative", dict(loss="cross_entropy", k=3), _ONE_HOT, None,
     _with(_ONE_HOT, -0.25), "cross_entropy needs non-negative"),
    ("ce-labels", dict(loss="cross_entropy", k=3), np.arange(_ROWS) % 3, None,
     np.arange(_ROWS) % 3 + 1, "y holds class labels from 1 to 3"),
    ("ce-after-labels", dict(loss="cross_entropy", k=3), np.arange(_ROWS) % 3, None,
     _with(_ONE_HOT, np.nan), "y contains NaN or Inf"),
    ("poisson-negative", dict(output="exp", loss="poisson"), _BIN * 3, None,
     _with(_BIN, -1.0), "the poisson loss needs counts"),
    ("quadratic-nan", dict(), _BIN, None, _with(_BIN, np.nan), "y contains NaN or Inf"),
    ("quadratic-x-inf", dict(), _BIN, _with(X, np.inf), _BIN, "x contains NaN or Inf"),
    ("quadratic-x-other-dtype", dict(), _BIN, _with(X, np.nan, np.float32), _BIN,
     "x contains NaN or Inf"),
    ("float32-y-too-big", dict(dtype="float32"), _BIN, None, _with(_BIN, 1e39),
     "y holds values up to 1e+39 in magnitude but the network computes in float32"),
    ("float32-x-too-big", dict(dtype="float32"), _BIN, _with(X, -1e39), _BIN,
     "x holds values up to 1e+39 in magnitude but the network computes in float32"),
]  # fmt: skip


@pytest.mark.parametrize("case", AGAIN, ids=[c[0] for c in AGAIN])
def test_a_clean_call_leaves_the_next_call_checked(case, be: xbp.backends.select.Backend) -> None:
    """The public calls check host data in one read once they have seen its type and the
    loss's rule on the same read: a later call with bad values, another dtype or bad
    labels is still refused in one line, and a clean call works again afterwards."""
    _, kwargs, good, bad_x, bad_y, text = case
    kwargs = dict(kwargs)
    k = kwargs.pop("k", 1)
    dtype = kwargs.get("dtype", "float64")
    net = xbp.mlp([3, 4, k], activation="tanh", backend=be, seed=0, **kwargs)
    x = X.astype(dtype)
    for _ in range(2):  # the second call takes the paths a first call prepared
        net.backprop(x, good)
    for target in (net.backprop, net.loss_value, net.evaluate):
        with pytest.raises(XbpError) as info:
            target(x if bad_x is None else bad_x, bad_y)
        assert text in str(info.value) and "\n" not in str(info.value), str(info.value)
    # and on the device: the targets are read once there too
    with pytest.raises(XbpError, match=text.split(" but ")[0].replace("+", r"\+")):
        net.backprop(
            net.backend.asarray(x if bad_x is None else bad_x),
            be.asarray(bad_y) if bad_y.ndim == 2 or bad_y.dtype.kind == "i" else bad_y,
        )
    cost, _ = net.backprop(x, good)
    assert np.isfinite(float(cost))
