"""A table of bad inputs: each raises the right xbp error, names the argument, changes no file."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import xbp
from xbp import optim
from xbp.errors import (
    BackendUnavailableError,
    XbpError,
    XbpFileError,
    XbpFileNotFoundError,
    XbpTypeError,
    XbpValueError,
)

X = np.random.default_rng(0).normal(size=(12, 3))
Y = np.arange(12) % 2


def net(be):
    return xbp.mlp([3, 4, 2], activation="tanh", loss="cross_entropy", backend=be, seed=0)


def fit(be, x=X, y=Y, **kw):
    args = {"epochs": 1, "batch_size": 4, "progress": False, **kw}
    return xbp.fit(net(be), x, y, **args)


def newer_version(tmp: Path) -> Path:
    path = tmp / "model.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["format_version"] = 99
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    out = tmp / "sub" / "newer.npz"
    np.savez(out, **arrays)
    return out


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


# (id, call(be, tmp), exception, text the message must contain)
CASES = [
    ("x-width", lambda be, t: fit(be, x=np.zeros((12, 5))), XbpValueError, "x has 5 features"),
    ("x-1d", lambda be, t: fit(be, x=np.zeros(12)), XbpValueError, "x has shape (12,)"),
    ("x-3d", lambda be, t: fit(be, x=np.zeros((12, 3, 1))), XbpValueError, "x has shape"),
    ("x-int", lambda be, t: fit(be, x=np.ones((12, 3), int)), XbpTypeError, "x has dtype int64"),
    ("x-nan", lambda be, t: fit(be, x=np.where(X > 1, np.nan, X)), XbpValueError, "x contains NaN"),
    (
        "x-inf",
        lambda be, t: fit(be, x=np.where(X > 1, np.inf, X)),
        XbpValueError,
        "x contains NaN or Inf",
    ),
    (
        "x-empty",
        lambda be, t: fit(be, x=np.zeros((0, 3)), y=np.zeros(0, int)),
        XbpValueError,
        "x has no rows",
    ),
    (
        "x-ragged",
        lambda be, t: fit(be, x=[[1.0, 2.0, 3.0], [1.0]]),
        XbpValueError,
        "x could not be read",
    ),
    (
        "x-object",
        lambda be, t: fit(be, x=np.array([[None] * 3] * 12)),
        XbpTypeError,
        "x has dtype object",
    ),
    ("x-not-array", lambda be, t: fit(be, x="data.csv"), XbpTypeError, "x is a str"),
    ("y-rows", lambda be, t: fit(be, y=Y[:5]), XbpValueError, "y has 5 rows but x has 12"),
    (
        "y-label-range",
        lambda be, t: fit(be, y=np.arange(12) % 3),
        XbpValueError,
        "y holds class labels from 0 to 2",
    ),
    (
        "y-negative-label",
        lambda be, t: fit(be, y=np.arange(12) % 2 - 1),
        XbpValueError,
        "y holds class labels from -1",
    ),
    (
        "y-float-labels",
        lambda be, t: fit(be, y=Y.astype(float)),
        XbpTypeError,
        "y is 1-D with dtype float64",
    ),
    ("y-width", lambda be, t: fit(be, y=np.zeros((12, 3))), XbpValueError, "y has 3 columns"),
    ("y-nan", lambda be, t: fit(be, y=np.full((12, 2), np.nan)), XbpValueError, "y contains NaN"),
    ("y-bool", lambda be, t: fit(be, y=np.zeros((12, 2), bool)), XbpTypeError, "y has dtype bool"),
    (
        "one-sample-split",
        lambda be, t: fit(be, x=X[:1], y=Y[:1], batch_size=1, validation_split=0.5),
        XbpValueError,
        "validation_split=0.5",
    ),
    ("epochs-zero", lambda be, t: fit(be, epochs=0), XbpValueError, "epochs=0"),
    ("epochs-float", lambda be, t: fit(be, epochs=2.5), XbpTypeError, "epochs=2.5"),
    ("batch-negative", lambda be, t: fit(be, batch_size=-4), XbpValueError, "batch_size=-4"),
    (
        "batch-too-big",
        lambda be, t: fit(be, batch_size=13),
        XbpValueError,
        "batch_size=13 is larger",
    ),
    (
        "lr-zero",
        lambda be, t: fit(be, optimizer="sgd", learning_rate=0.0),
        XbpValueError,
        "learning_rate=0.0",
    ),
    ("lr-negative", lambda be, t: optim.adam(-1e-3), XbpValueError, "learning_rate=-0.001"),
    (
        "lr-nan",
        lambda be, t: optim.sgd(float("nan")),
        XbpValueError,
        "learning_rate=nan must be finite",
    ),
    ("momentum-range", lambda be, t: optim.momentum(0.1, beta=1.0), XbpValueError, "momentum=1.0"),
    (
        "unknown-optimizer",
        lambda be, t: fit(be, optimizer="lbfgs"),
        XbpValueError,
        "optimizer='lbfgs'",
    ),
    (
        "unknown-activation",
        lambda be, t: xbp.mlp([3, 2], activation="gelu", backend=be),
        XbpValueError,
        "activation='gelu'",
    ),
    (
        "unknown-loss",
        lambda be, t: xbp.mlp([3, 2], loss="hinge", backend=be),
        XbpValueError,
        "loss='hinge'",
    ),
    (
        "unknown-backend",
        lambda be, t: xbp.mlp([3, 2], backend="tensorflow"),
        XbpValueError,
        "backend='tensorflow'",
    ),
    (
        "unknown-init",
        lambda be, t: xbp.mlp([3, 2], init="orthogonal", backend=be),
        XbpValueError,
        "init='orthogonal'",
    ),
    (
        "softmax-mse",
        lambda be, t: xbp.mlp([3, 2], output="softmax", loss="mse", backend=be),
        XbpValueError,
        "loss='quadratic' cannot follow",
    ),
    (
        "dtype",
        lambda be, t: xbp.mlp([3, 2], dtype="float16", backend=be),
        XbpTypeError,
        "dtype='float16'",
    ),
    (
        "mixed-namespace",
        lambda be, t: fit(be, x=foreign_array(be)),
        XbpTypeError,
        "x is a torch array",
    ),
    (
        "mixed-device",
        lambda be, t: xbp.mlp([3, 2], backend=xbp.backend("array_api_strict", "device1")).forward(
            other_device(be)
        ),
        XbpValueError,
        "x is on device",
    ),
    (
        "validation-data-shape",
        lambda be, t: fit(be, validation_data=(X[:, :2], Y)),
        XbpValueError,
        "x_val has 2 features",
    ),
    (
        "cuda-unusable",
        lambda be, t: xbp.mlp([3, 2], backend="numpy", device="cuda:0"),
        XbpValueError,
        "device='cuda:0'",
    ),
    (
        "load-missing",
        lambda be, t: xbp.load(t / "sub" / "nothing.npz", backend=be),
        XbpFileNotFoundError,
        "nothing.npz",
    ),
    (
        "load-directory",
        lambda be, t: xbp.load(t / "sub", backend=be),
        XbpFileError,
        "is a directory",
    ),
    ("load-text", lambda be, t: xbp.load(t / "notes.txt", backend=be), XbpFileError, "notes.txt"),
    ("load-truncated", lambda be, t: xbp.load(truncated(t), backend=be), XbpFileError, "truncated"),
    (
        "load-newer-format",
        lambda be, t: xbp.load(newer_version(t), backend=be),
        XbpFileError,
        "format version 99, newer",
    ),
    (
        "load-mismatched",
        lambda be, t: xbp.load(mismatched(t), backend=be),
        XbpFileError,
        "does not match its own architecture",
    ),
    (
        "load-pickle",
        lambda be, t: xbp.load(pickled(t), backend=be),
        XbpFileError,
        "pickled Python objects",
    ),
    (
        "resume-model-file",
        lambda be, t: fit(be, resume=t / "model.npz"),
        XbpValueError,
        "without training state",
    ),
    (
        "save-missing-dir",
        lambda be, t: xbp.save(net(be), t / "nope" / "m.npz"),
        XbpFileNotFoundError,
        "does not exist",
    ),
    (
        "save-read-only-dir",
        lambda be, t: xbp.save(net(be), t / "ro" / "m.npz"),
        XbpFileError,
        "is read-only",
    ),
    (
        "save-not-network",
        lambda be, t: xbp.save({"W": 1}, t / "m2.npz"),
        XbpTypeError,
        "net is a dict",
    ),
    (
        "checkpoint-missing-dir",
        lambda be, t: fit(be, checkpoint=t / "nope" / "c.npz"),
        XbpFileNotFoundError,
        "checkpoint=",
    ),
    (
        "csv-ragged",
        lambda be, t: xbp.data.load_csv(t / "ragged.csv"),
        XbpValueError,
        "line 3 has 2 fields",
    ),
    (
        "idx-not-idx",
        lambda be, t: xbp.data.load_idx(t / "notes.txt"),
        XbpFileError,
        "not an IDX file",
    ),
]


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def files(tmp_path: Path) -> Path:
    xbp.save(net("numpy"), tmp_path / "model.npz")
    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.txt").write_text("not a model\n")
    (tmp_path / "ragged.csv").write_text("1,2,0\n3,4,1\n5,6\n")
    ro = tmp_path / "ro"
    ro.mkdir()
    xbp.save(net("numpy"), ro / "m.npz")
    ro.chmod(0o555)
    yield tmp_path
    ro.chmod(0o755)


def test_table_has_at_least_30_distinct_cases() -> None:
    assert len({c[0] for c in CASES}) == len(CASES) >= 30


@pytest.mark.parametrize("be_name", ["numpy", "array_api_strict"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, be_name: str, files: Path) -> None:
    name, call, error, text = case
    be = xbp.backend(be_name)
    # files the case itself prepares (inputs) are made first; then nothing may change
    before = snapshot(files)
    with pytest.raises(error) as info:
        call(be, files)
    assert isinstance(info.value, XbpError), type(info.value)
    message = str(info.value)
    assert text in message, message
    after = snapshot(files)
    changed = {k for k in before if before[k] != after.get(k)}
    assert not changed, f"{name} changed {changed}"
    # only files the case deliberately wrote as its bad input may be new
    assert set(after) - set(before) <= {
        "sub/newer.npz",
        "sub/mismatch.npz",
        "sub/cut.npz",
        "sub/evil.npz",
    }
    assert not [p for p in files.rglob("*.tmp")], "a temporary file was left behind"


def test_unusable_backend_says_why() -> None:
    with pytest.raises(BackendUnavailableError, match="(not installed|no CUDA device)"):
        xbp.backend("cupy")


def test_malicious_pickle_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as z:
        import io
        import pickle

        buf = io.BytesIO()
        np.save(buf, np.array([Evil()], dtype=object), allow_pickle=True)
        z.writestr("meta.npy", buf.getvalue())
        z.writestr("param.0.W.npy", pickle.dumps(Evil()))
    for loader in (xbp.load, xbp.load_checkpoint, xbp.data.load_npz):
        with pytest.raises(XbpFileError, match="pickled|not a readable"):
            loader(path)
    assert not marker.exists()
