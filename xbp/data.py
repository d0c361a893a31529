"""Data sets and helpers: bundled digits, IDX/CSV/npz loaders, generated sets, splits.

Everything here runs on the host with NumPy; :func:`xbp.fit` moves the
arrays to the device once.
"""

from __future__ import annotations

import csv
import gzip
import os
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .errors import XbpFileError, XbpFileNotFoundError, XbpTypeError, XbpValueError
from .validate import check_int, check_number

__all__ = [
    "load_digits",
    "load_idx",
    "load_mnist",
    "load_csv",
    "load_npz",
    "load_dataset",
    "make_xor",
    "make_spirals",
    "make_moons",
    "make_blobs",
    "standardize",
    "one_hot",
    "train_val_test_split",
]


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 handwritten digits (UCI, 1,797 samples, CC BY 4.0), shipped with xbp.

    Returns ``x`` as float64 in [0, 1], shape (1797, 64), and integer labels 0-9.

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.load_digits()
    >>> x.shape, int(y.max())
    ((1797, 64), 9)
    """
    with resources.files("xbp").joinpath("data/digits.npz").open("rb") as f:
        with np.load(f, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    return images.astype(np.float64) / 16.0, labels.astype(np.int64)


def _exists(path: str | os.PathLike[str], argument: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise XbpFileNotFoundError(f"{argument}={str(p)!r} does not exist; check the path")
    if p.is_dir():
        raise XbpFileError(f"{argument}={str(p)!r} is a directory; give a file")
    return p


_IDX_TYPES: dict[int, Any] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def load_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST format), plain or gzip-compressed."""
    p = _exists(path, "path")
    try:
        with p.open("rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        opener: Any = gzip.open if gz else open
        with opener(p, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise XbpFileError(
            f"path={str(p)!r} could not be read ({exc}); it may be truncated"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise XbpFileError(
            f"path={str(p)!r} is not an IDX file (bad magic number); pass MNIST-format files "
            "such as train-images-idx3-ubyte.gz"
        )
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise XbpFileError(f"path={str(p)!r} is truncated (incomplete IDX header)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(shape))
    body = raw[4 + 4 * ndim :]
    if len(body) != count * dtype.itemsize:
        raise XbpFileError(
            f"path={str(p)!r} is truncated or padded: the header promises {count} values of "
            f"{dtype.itemsize} bytes but {len(body)} bytes follow"
        )
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def load_mnist(
    directory: str | os.PathLike[str], kind: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST or Fashion-MNIST IDX files from ``directory``.

    ``kind`` is ``"train"`` or ``"t10k"`` (the test set). Files may be plain or
    ``.gz``. Returns ``x`` as float32 in [0, 1] of shape (n, 784) and int64 labels.
    """
    if kind not in ("train", "t10k", "test"):
        raise XbpValueError(f"kind={kind!r}; use 'train' or 't10k'")
    kind = "t10k" if kind == "test" else kind
    d = Path(directory)
    if not d.is_dir():
        raise XbpFileNotFoundError(f"directory={str(d)!r} is not a directory of IDX files")

    def find(stem: str) -> Path:
        for name in (
            stem,
            stem + ".gz",
            stem.replace("-idx", ".idx"),
            stem.replace("-idx", ".idx") + ".gz",
        ):
            if (d / name).exists():
                return d / name
        raise XbpFileNotFoundError(
            f"directory={str(d)!r} lacks {stem}[.gz]; download the MNIST (or Fashion-MNIST) "
            "IDX files into it"
        )

    images = load_idx(find(f"{kind}-images-idx3-ubyte"))
    labels = load_idx(find(f"{kind}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise XbpFileError(
            f"directory={str(d)!r}: images {images.shape} and labels {labels.shape} do not pair up"
        )
    x = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0
    return x, labels.astype(np.int64)


def load_csv(
    path: str | os.PathLike[str],
    label_column: int | str = -1,
    *,
    header: bool | None = None,
    delimiter: str = ",",
) -> tuple[np.ndarray, np.ndarray]:
    """Load a numeric CSV: features and the label column the user chooses.

    ``label_column`` is an index (negative counts from the end) or, with a
    header row, a column name. ``header=None`` detects a non-numeric first row.
    Integer-valued labels come back as int64, others as float64.
    """
    p = _exists(path, "path")
    try:
        with p.open(newline="") as f:
            rows = [row for row in csv.reader(f, delimiter=delimiter) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise XbpFileError(f"path={str(p)!r} is not a readable CSV file ({exc})") from None
    if not rows:
        raise XbpValueError(f"path={str(p)!r} is empty; it needs at least one data row")

    def numeric(row: list[str]) -> bool:
        try:
            [float(v) for v in row]
        except ValueError:
            return False
        return True

    names = None
    if header or (header is None and not numeric(rows[0])):
        names, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise XbpValueError(f"path={str(p)!r} has a header but no data rows")
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            line = i + 1 + (names is not None)
            raise XbpValueError(
                f"path={str(p)!r} line {line} has {len(row)} fields but the first data row has "
                f"{width}; every row needs the same number of columns"
            )
    try:
        table = np.array([[float(v) for v in row] for row in rows])
    except ValueError as exc:
        raise XbpValueError(f"path={str(p)!r} holds a non-numeric value ({exc})") from None
    if isinstance(label_column, str):
        if names is None or label_column not in names:
            raise XbpValueError(
                f"label_column={label_column!r} is not a column name of {str(p)!r} "
                f"(columns: {names}); give a name from the header or an index"
            )
        col = names.index(label_column)
    else:
        col = (
            check_int(label_column, "label_column", low=-width)
            if label_column < 0
            else label_column
        )
        if not -width <= col < width:
            raise XbpValueError(f"label_column={label_column} is outside the {width} columns")
        col %= width
    y = table[:, col]
    x = np.delete(table, col, axis=1)
    if np.all(y == np.round(y)):
        return x, y.astype(np.int64)
    return x, y


def load_npz(
    path: str | os.PathLike[str], x_key: str = "x", y_key: str = "y"
) -> tuple[np.ndarray, np.ndarray]:
    """Load features and labels from an .npz file (no pickles are ever loaded)."""
    p = _exists(path, "path")
    try:
        with np.load(p, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise XbpFileError(f"path={str(p)!r} is a .npy file; save x and y with np.savez")
            missing = [k for k in (x_key, y_key) if k not in z.files]
            if missing:
                raise XbpValueError(
                    f"path={str(p)!r} lacks {missing}; it holds {z.files} (choose x_key/y_key)"
                )
            return z[x_key], z[y_key]
    except ValueError as exc:
        if "pickle" in str(exc) or "Object arrays" in str(exc):
            raise XbpFileError(
                f"path={str(p)!r} holds pickled objects; xbp never unpickles. Save plain arrays"
            ) from None
        raise
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise XbpFileError(f"path={str(p)!r} is not a readable .npz file ({exc})") from None


def make_xor() -> tuple[np.ndarray, np.ndarray]:
    """The four XOR points and their 0/1 targets, shape (4, 1)."""
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return x, np.array([[0.0], [1.0], [1.0], [0.0]])


def make_spirals(
    n: int = 400, noise: float = 0.2, seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals, ``n`` points, integer labels 0/1."""
    n = check_int(n, "n", low=2)
    rng = np.random.default_rng(seed)
    k = n // 2
    t = np.sqrt(rng.random(n)) * 3 * np.pi
    pts = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / np.pi  # radius up to 3
    pts[k:] *= -1  # the second arm is the first turned by 180 degrees
    pts = pts + rng.normal(scale=noise / np.pi, size=(n, 2))
    return pts, np.concatenate([np.zeros(k, np.int64), np.ones(n - k, np.int64)])


def make_moons(
    n: int = 400, noise: float = 0.1, seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles, integer labels 0/1."""
    n = check_int(n, "n", low=2)
    rng = np.random.default_rng(seed)
    k = n // 2
    t0, t1 = np.linspace(0, np.pi, k), np.linspace(0, np.pi, n - k)
    x = np.concatenate(
        [np.stack([np.cos(t0), np.sin(t0)], 1), np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], 1)]
    )
    x += rng.normal(scale=noise, size=x.shape)
    return x, np.concatenate([np.zeros(k, np.int64), np.ones(n - k, np.int64)])


def make_blobs(
    n: int = 300, centers: int = 3, n_features: int = 2, spread: float = 1.0, seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around ``centers`` random centres, integer labels."""
    n = check_int(n, "n", low=1)
    centers = check_int(centers, "centers")
    n_features = check_int(n_features, "n_features")
    check_number(spread, "spread")
    rng = np.random.default_rng(seed)
    mu = rng.uniform(-10, 10, size=(centers, n_features))
    y = np.arange(n) % centers
    return mu[y] + rng.normal(scale=spread, size=(n, n_features)), y.astype(np.int64)


def standardize(x: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Scale columns to zero mean and unit variance using ``x``'s statistics.

    Returns the scaled ``x``, each of ``others`` scaled the same way, then the
    mean and the scale. Constant columns are left centred, not divided by 0.
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    return ((x - mean) / std, *((np.asarray(o) - mean) / std for o in others), mean, std)


def one_hot(y: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Integer labels to a float64 one-hot matrix."""
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise XbpTypeError(f"y must be 1-D integer labels, got shape {y.shape} dtype {y.dtype}")
    k = int(y.max()) + 1 if n_classes is None else check_int(n_classes, "n_classes")
    if y.size and (y.min() < 0 or y.max() >= k):
        raise XbpValueError(f"y holds labels outside 0..{k - 1}")
    return np.eye(k)[y]


def train_val_test_split(
    x: np.ndarray,
    y: np.ndarray,
    *,
    val: float = 0.1,
    test: float = 0.2,
    seed: int | None = 0,
    stratify: bool = True,
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Split into (train, validation, test) pairs, stratified by class when ``y`` holds labels.

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.load_digits()
    >>> (xtr, ytr), (xva, yva), (xte, yte) = xbp.data.train_val_test_split(x, y)
    >>> len(ytr) + len(yva) + len(yte)
    1797
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.shape[0] != y.shape[0]:
        raise XbpValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    check_number(val, "val", low=0.0, low_open=False, high=1.0, high_open=True)
    check_number(test, "test", low=0.0, low_open=False, high=1.0, high_open=True)
    if val + test >= 1:
        raise XbpValueError(f"val={val} + test={test} must be below 1 to leave training data")
    rng = np.random.default_rng(seed)
    groups = [np.arange(len(y))]
    if stratify and y.ndim == 1 and y.dtype.kind in "iu":
        groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    parts: list[list[np.ndarray]] = [[], [], []]
    for g in groups:
        g = rng.permutation(g)
        n_test, n_val = int(round(len(g) * test)), int(round(len(g) * val))
        parts[2].append(g[:n_test])
        parts[1].append(g[n_test : n_test + n_val])
        parts[0].append(g[n_test + n_val :])
    out = []
    for p in parts:
        idx = rng.permutation(np.concatenate(p))
        out.append((x[idx], y[idx]))
    return tuple(out)


def load_dataset(
    spec: str, *, format: str | None = None, label_column: int | str = -1, seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Load a data set the CLI names: ``digits``, ``xor``, ``spirals``, ``moons``, ``blobs``,
    an MNIST directory, or a ``.csv``/``.npz``/IDX path (``format`` overrides the guess)."""
    generated = {
        "digits": load_digits,
        "xor": make_xor,
        "spirals": lambda: make_spirals(seed=seed),
        "moons": lambda: make_moons(seed=seed),
        "blobs": lambda: make_blobs(seed=seed),
    }
    if format is None and spec in generated:
        return generated[spec]()
    p = Path(spec)
    fmt = format or (
        "mnist" if p.is_dir() else p.suffix.lower().lstrip(".").replace("gz", "") or None
    )
    if fmt in ("mnist", "idx"):
        return load_mnist(p)
    if fmt == "csv":
        return load_csv(p, label_column)
    if fmt == "npz":
        return load_npz(p)
    if not p.exists():
        raise XbpFileNotFoundError(
            f"--data {spec!r} is neither a built-in set {sorted(generated)} nor an existing path"
        )
    raise XbpValueError(f"--data {spec!r}: cannot tell its format; pass --format csv, npz or mnist")
