"""Data sets and helpers: bundled digits, IDX/CSV/npz loaders, generated sets, splits.

Everything here runs on the host with NumPy; :func:`xbp.fit` moves the
arrays to the device once.
"""

from __future__ import annotations

import csv
import gzip
import os
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import XbpError, XbpFileError, XbpFileNotFoundError, XbpTypeError, XbpValueError, arg
from ..io import atomic_write
from ..io.paths import as_path, describe, input_file, sniff
from ..nn.validate import check_int, check_memory, check_number
from .hostrows import MappedRows
from .mnist1d import load_mnist1d, load_mnist1d_joined

__all__ = [
    "load_digits",
    "load_mnist1d",
    "load_idx",
    "load_mnist",
    "load_csv",
    "load_table",
    "CSV_ENGINES",
    "iter_table",
    "csv_columns",
    "Table",
    "load_npz",
    "MappedRows",
    "write_idx",
    "load_dataset",
    "make_xor",
    "make_spirals",
    "make_moons",
    "make_blobs",
    "standardize",
    "one_hot",
    "train_val_test_split",
    "split_indices",
    "mnist_files",
    "dataset_format",
    "BUILTIN_SETS",
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
    # stat only: a FIFO or device is refused before anything opens it
    return input_file(path, argument, "a file")


def _check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    return check_int(seed, "seed", low=0)


_IDX_TYPES: dict[int, Any] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def load_idx(path: str | os.PathLike[str], *, mmap: bool = False) -> np.ndarray:
    """Read an IDX file (the MNIST format), plain or gzip-compressed.

    ``mmap=True`` reads an uncompressed file in place (a read-only
    ``numpy.memmap`` in the file's byte order): nothing is loaded until rows
    are used, so a file larger than memory can be streamed by :func:`xbp.fit`.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> _ = xbp.data.write_idx("images.idx", np.zeros((2, 28, 28), np.uint8))
    >>> xbp.data.load_idx("images.idx").shape
    (2, 28, 28)
    """
    p = _exists(path, "path")
    if mmap:
        return _map_idx(p)
    try:
        with p.open("rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        opener: Any = gzip.open if gz else open
        with opener(p, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise XbpFileError(
            f"{arg('path', str(p))} could not be read ({exc}); it may be truncated"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise XbpFileError(
            f"{arg('path', str(p))} is not an IDX file (bad magic number); pass MNIST-format files "
            "such as train-images-idx3-ubyte.gz"
        )
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise XbpFileError(f"{arg('path', str(p))} is truncated (incomplete IDX header)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(shape))
    body = raw[4 + 4 * ndim :]
    if len(body) != count * dtype.itemsize:
        raise XbpFileError(
            f"{arg('path', str(p))} is truncated or padded: the header promises {count} values of "
            f"{dtype.itemsize} bytes but {len(body)} bytes follow"
        )
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _map_idx(p: Path) -> np.ndarray:
    try:
        with p.open("rb") as f:
            head = f.read(4)
            if head[:2] == b"\x1f\x8b":
                raise XbpValueError(
                    f"{arg('path', str(p))} is gzip-compressed and cannot be memory-mapped; "
                    "decompress it (gunzip) or load it with mmap=False"
                )
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_TYPES or not head[3]:
                raise XbpFileError(
                    f"{arg('path', str(p))} is not an IDX file (bad magic number); pass "
                    "MNIST-format "
                    "files such as train-images-idx3-ubyte"
                )
            dims = f.read(4 * head[3])
        size = p.stat().st_size
    except OSError as exc:
        raise XbpFileError(f"{arg('path', str(p))} could not be read ({exc})") from None
    if len(dims) < 4 * head[3]:
        raise XbpFileError(f"{arg('path', str(p))} is truncated (incomplete IDX header)")
    shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(head[3]))
    dtype = np.dtype(_IDX_TYPES[head[2]])
    offset = 4 + len(dims)
    body = size - offset
    count = int(np.prod(shape))
    if body != count * dtype.itemsize:
        raise XbpFileError(
            f"{arg('path', str(p))} is truncated or padded: the header promises {count} values of "
            f"{dtype.itemsize} bytes but {body} bytes follow"
        )
    return np.memmap(p, dtype=dtype, mode="r", offset=offset, shape=shape)


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (``.gz`` names are compressed); the inverse of
    :func:`load_idx`, for synthetic or converted MNIST-format data.

    Examples
    --------
    >>> import os, tempfile, numpy as np, xbp
    >>> path = os.path.join(tempfile.mkdtemp(), "t10k-labels-idx1-ubyte")
    >>> _ = xbp.data.write_idx(path, np.array([7, 2, 1], dtype=np.uint8))
    >>> xbp.data.load_idx(path).tolist()
    [7, 2, 1]
    """
    a = np.asarray(array)
    codes = {np.dtype(t).newbyteorder(">").str: c for c, t in _IDX_TYPES.items()}
    code = codes.get(a.dtype.newbyteorder(">").str)
    if code is None or a.ndim == 0:
        raise XbpTypeError(
            f"array has dtype {a.dtype} and shape {a.shape}; IDX holds arrays of uint8, int8, "
            "int16, int32, float32 or float64"
        )
    p = as_path(path, "path")
    head = bytes([0, 0, code, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    body = head + np.ascontiguousarray(a, dtype=a.dtype.newbyteorder(">")).tobytes()

    def write(f: Any) -> None:
        if p.suffix == ".gz":
            with gzip.GzipFile(fileobj=f, mode="wb") as z:
                z.write(body)
        else:
            f.write(body)

    # the path rules of every file xbp writes: special files refused, atomic replace
    atomic_write(p, write, "path")
    return p


def load_mnist(
    directory: str | os.PathLike[str], kind: str = "train", *, mmap: bool = False
) -> tuple[Any, np.ndarray]:
    """Load MNIST or Fashion-MNIST IDX files from ``directory``.

    ``kind`` is ``"train"`` or ``"t10k"`` (the test set). Files may be plain or
    ``.gz``. Returns ``x`` as float32 in [0, 1] of shape (n, 784) and int64 labels.
    ``mmap=True`` (uncompressed files) returns ``x`` as :class:`MappedRows` over
    the images file read in place, the same values a batch at a time; training
    on it streams (:func:`xbp.fit`).

    Examples
    --------
    >>> import os, numpy as np, xbp
    >>> os.mkdir("mnist")  # two made-up images in MNIST's files
    >>> _ = xbp.data.write_idx("mnist/train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    >>> _ = xbp.data.write_idx("mnist/train-labels-idx1-ubyte", np.array([3, 7], np.uint8))
    >>> x, y = xbp.data.load_mnist("mnist", "train")
    >>> x.shape, x.dtype, y.tolist()
    ((2, 784), dtype('float32'), [3, 7])
    """
    images_path, labels_path = mnist_files(directory, kind)
    if mmap:
        raw = load_idx(images_path, mmap=True)
        labels = load_idx(labels_path)
        if raw.ndim != 3 or labels.ndim != 1 or raw.shape[0] != labels.shape[0]:
            raise XbpFileError(
                f"directory={str(directory)!r}: images {raw.shape} and labels {labels.shape} "
                "do not pair up"
            )
        return MappedRows(raw, np.float32, 255.0), labels.astype(np.int64)
    images = load_idx(images_path)
    labels = load_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise XbpFileError(
            f"directory={str(directory)!r}: images {images.shape} and labels {labels.shape} "
            "do not pair up"
        )
    x = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0
    return x, labels.astype(np.int64)


def mnist_files(directory: str | os.PathLike[str], kind: str = "train") -> tuple[Path, Path]:
    """The images and labels IDX files :func:`load_mnist` reads from ``directory``.

    Examples
    --------
    >>> import os, numpy as np, xbp
    >>> os.mkdir("mnist")
    >>> _ = xbp.data.write_idx("mnist/train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    >>> _ = xbp.data.write_idx("mnist/train-labels-idx1-ubyte", np.array([3, 7], np.uint8))
    >>> [path.name for path in xbp.data.mnist_files("mnist")]
    ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte']
    """
    if kind not in ("train", "t10k", "test"):
        raise XbpValueError(f"kind={kind!r}; use 'train' or 't10k'")
    kind = "t10k" if kind == "test" else kind
    d = as_path(directory, "directory")
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

    return find(f"{kind}-images-idx3-ubyte"), find(f"{kind}-labels-idx1-ubyte")


# -- CSV tables ----------------------------------------------------------------
class Table(NamedTuple):
    r"""A CSV file as features and (optionally) labels, with what the columns were.

    Attributes
    ----------
    x : ndarray (n, d) float64
        The feature columns, in file order.
    y : ndarray (n,) or None
        The label column: int64 when every value is an integer (or when the
        labels are strings: then codes into ``classes``), float64 otherwise;
        None when the table has no label column.
    feature_names : list of str or None
        Header names of the feature columns (None without a header row).
    label_name : str, list of str, or None
        Header name of the label column (a list for several label columns).
    label_index : int, list of int, or None
        Position of the label column in the file (0-based; a list for several).
    classes : list of str or None
        For string labels: the class names, ``y`` holding indices into it.

    Examples
    --------
    >>> import xbp
    >>> _ = open("t.csv", "w").write("a,b,kind\n1,2,cat\n3,4,dog\n")
    >>> table = xbp.data.load_table("t.csv", "kind")
    >>> table.y.tolist(), table.classes, table.feature_names, table.label_name
    ([0, 1], ['cat', 'dog'], ['a', 'b'], 'kind')
    """

    x: np.ndarray
    y: np.ndarray | None
    feature_names: list[str] | None
    label_name: Any
    label_index: Any
    classes: list[str] | None


def _number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _integer_labels(raw: list[Any]) -> np.ndarray | None:
    """Labels written as integers, parsed exactly (int64), or None.

    Parsing through float64 would merge labels above 2**53 (9007199254740993 reads as
    9007199254740992). Integers beyond int64 are left to the caller (class names).
    """
    try:
        values = [int(v) for v in raw]
    except (ValueError, TypeError):
        return None
    if values and not -(2**63) <= min(values) <= max(values) < 2**63:
        return None
    return np.array(values, dtype=np.int64)


def _check_csv_args(path: Any, header: Any, delimiter: Any) -> Path:
    p = _exists(path, "path")
    if header is not None and not isinstance(header, (bool, np.bool_)):
        raise XbpTypeError(f"header={header!r}; pass True, False or None (detect)")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise XbpValueError(f"delimiter={delimiter!r} must be one character, e.g. ',' or ';'")
    kind = sniff(p)
    if kind in ("legacy-text", "utf16-text"):
        source = "latin1" if kind == "legacy-text" else "utf-16"
        raise XbpFileError(
            f"{arg('path', str(p))} is {describe(kind)}, not UTF-8; re-save it as UTF-8 (e.g. "
            f"iconv -f {source} -t utf-8)"
        )
    if kind not in ("text", "empty") and not _bom_text(p):
        raise XbpFileError(f"{arg('path', str(p))} is {describe(kind)}, not a CSV text file")
    return p


def _bom_text(p: Path) -> bool:
    """Text that starts with a UTF-8 byte-order mark (as spreadsheets write it)."""
    with p.open("rb") as f:
        head = f.read(512)
    if not head.startswith(b"\xef\xbb\xbf"):
        return False
    text = head[3:].decode("utf-8", errors="ignore")
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def _numbered(p: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number in the file, stripped fields) of every non-blank row, read lazily."""
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:  # a byte-order mark is dropped
            reader = csv.reader(f, delimiter=delimiter, skipinitialspace=True)
            for row in reader:
                if row and any(v.strip() for v in row):
                    yield reader.line_num, [v.strip() for v in row]
    except UnicodeDecodeError as exc:  # UTF-8 at the start, another encoding further on
        raise XbpFileError(
            f"{arg('path', str(p))} is not UTF-8 text further on (byte "
            f"{exc.object[exc.start]:#04x}: "
            "Latin-1 or Windows-1252?); re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from None
    except (OSError, csv.Error) as exc:
        raise XbpFileError(f"{arg('path', str(p))} is not a readable CSV file ({exc})") from None


def _has_header(first: list[str], second: list[str] | None, header: bool | None) -> bool:
    if header is not None:
        return bool(header)
    if second is None or len(second) != len(first):
        return not all(_number(v) for v in first)
    # a header row: a non-numeric field above a numeric one (string labels stay below)
    return (
        any(not _number(a) and _number(b) for a, b in zip(first, second))
        or all(not _number(v) for v in first)
        and all(_number(v) for v in second)
    )


def csv_columns(
    path: str | os.PathLike[str], *, header: bool | None = None, delimiter: str = ","
) -> tuple[list[str] | None, int]:
    r"""The header names (None without a header row) and the number of columns of a CSV.

    Reads only the first two rows.

    Examples
    --------
    >>> import xbp
    >>> _ = open("t.csv", "w").write("a,b,label\n1,2,0\n")
    >>> xbp.data.csv_columns("t.csv")
    (['a', 'b', 'label'], 3)
    """
    p = _check_csv_args(path, header, delimiter)
    rows = _numbered(p, delimiter)
    first = next(rows, None)
    if first is None:
        raise XbpValueError(f"{arg('path', str(p))} is empty; it needs at least one data row")
    second = next(rows, None)
    rows.close()  # type: ignore[attr-defined]  # a generator: closes the file now
    names = (
        first[1] if _has_header(first[1], None if second is None else second[1], header) else None
    )
    return names, len(first[1])


def _label_index(label_column: Any, names: list[str] | None, width: int, p: Path) -> int | None:
    if label_column is None:
        return None
    if isinstance(label_column, str):
        if names is None or label_column not in names:
            raise XbpValueError(
                f"{arg('label_column', label_column)} is not a column name of {str(p)!r} "
                f"(columns: {names}); give a name from the header or an index"
            )
        return names.index(label_column)
    col = check_int(label_column, "label_column", low=-width)
    if not -width <= col < width:
        raise XbpValueError(
            f"{arg('label_column', label_column)} is outside the {width} columns of {str(p)!r}; "
            "use "
            f"an index in {-width}..{width - 1} or a header name"
        )
    return col % width


def iter_table(
    path: str | os.PathLike[str],
    label_column: int | str | Sequence[int | str] | None = -1,
    *,
    header: bool | None = None,
    delimiter: str = ",",
    classes: list[str] | None = None,
    chunk_rows: int = 65536,
    dtype: Any = np.float64,
    engine: str | None = None,
    bounded: bool = False,
) -> Iterator[Table]:
    r"""Read a CSV in chunks of ``chunk_rows`` rows (bounded memory); see :func:`load_table`.

    The pandas engine parses a file of up to 512 MiB in one read (about 1.6x
    faster; memory about the size of the whole result) and hands it out in
    chunks; ``bounded=True`` parses it a chunk at a time whatever its size.

    String labels need ``classes`` (the names, in code order) when the file is
    read in more than one chunk, so that every chunk uses the same codes;
    :func:`load_table` reads one chunk and finds them itself.

    Examples
    --------
    >>> import xbp
    >>> rows = ["a,b,label", "1,2,0", "3,4,1", "5,6,1"]
    >>> _ = open("t.csv", "w").write("\n".join(rows) + "\n")
    >>> [(t.x.shape, t.y.tolist()) for t in xbp.data.iter_table("t.csv", "label", chunk_rows=2)]
    [((2, 2), [0, 1]), ((1, 2), [1])]
    """
    p = _check_csv_args(path, header, delimiter)
    chunk_rows = check_int(chunk_rows, "chunk_rows")
    dtype = _feature_dtype(dtype)
    engine = _csv_engine(engine)
    if classes is not None and (
        not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes)
    ):
        raise XbpTypeError("classes must be a list of class names (strings)")
    rows = _numbered(p, delimiter)
    first = next(rows, None)
    if first is None:
        raise XbpValueError(f"{arg('path', str(p))} is empty; it needs at least one data row")
    second = next(rows, None)
    names = None
    pending = [first] if second is None else [first, second]
    if _has_header(first[1], None if second is None else second[1], header):
        names, pending = first[1], pending[1:]
    if not pending:
        raise XbpValueError(f"{arg('path', str(p))} has a header but no data rows")
    width = len(pending[0][1])
    if names is not None and len(names) != width:
        raise XbpValueError(
            f"{arg('path', str(p))}: the header has {len(names)} columns but line {pending[0][0]} "
            "has "
            f"{width}; a quoted field must start right after the delimiter (no space before "
            f"its quote) and every row needs one value per header column"
        )
    wanted: list[Any] = (
        list(label_column) if isinstance(label_column, (list, tuple)) else [label_column]
    )
    if not wanted:
        raise XbpValueError(
            f"{arg('label_column', [])} names no column; give one or more columns, or None"
        )
    found = (_label_index(c, names, width, p) for c in wanted)
    label_cols = [i for i in found if i is not None]
    if len(set(label_cols)) != len(label_cols):
        raise XbpValueError(
            f"{arg('label_column', label_column)} names a column twice; name each once"
        )
    many = len(label_cols) > 1  # several label columns: real-valued (regression) targets
    col = label_cols[0] if len(label_cols) == 1 else None
    feature_cols = [i for i in range(width) if i not in label_cols]
    feature_names = None if names is None else [names[i] for i in feature_cols]
    label_name: Any = None if names is None or col is None else names[col]
    label_index: Any = col
    if many:
        label_name = None if names is None else [names[i] for i in label_cols]
        label_index = label_cols
    lookup = None if classes is None else {c: i for i, c in enumerate(classes)}

    def table(chunk: list[tuple[int, list[str]]]) -> Table:
        feats = np.empty((len(chunk), len(feature_cols)), dtype=dtype)
        raw_labels: list[str] = []
        for r, (line, row) in enumerate(chunk):
            if len(row) != width:
                raise XbpValueError(
                    f"{arg('path', str(p))} line {line} has {len(row)} fields but the first data "
                    "row "
                    f"has {width}; every row needs the same number of columns"
                )
            for j, c in enumerate(feature_cols):
                try:
                    feats[r, j] = float(row[c])
                except ValueError:
                    where = repr(names[c]) if names is not None else str(c)
                    raise XbpValueError(
                        f"{arg('path', str(p))} line {line} column {where} holds {row[c]!r}, a "
                        "non-numeric value; features must be numbers (fill or drop missing "
                        "values; choose the label column with label_column)"
                    ) from None
            if many:
                raw_labels.append(tuple(row[c] for c in label_cols))  # type: ignore[arg-type]
            elif col is not None:
                raw_labels.append(row[col])
        return labelled(feats, raw_labels, [line for line, _ in chunk])

    def labelled(feats: np.ndarray, raw_labels: list[Any], lines: Any) -> Table:
        nonlocal lookup, classes
        if many:
            try:
                y = np.array(raw_labels, dtype=np.float64).reshape(-1, len(label_cols))
            except ValueError:
                raise XbpValueError(
                    f"{arg('path', str(p))}: the label columns {label_name or label_cols} hold a "
                    "non-numeric value; several label columns are regression targets and "
                    "must be numbers"
                ) from None
            return Table(feats, y, feature_names, label_name, label_index, None)
        if col is None:
            return Table(feats, None, feature_names, label_name, col, classes)
        if lookup is None:
            exact = _integer_labels(raw_labels)
            if exact is not None:
                return Table(feats, exact, feature_names, label_name, col, None)
        if lookup is None and all(_number(v) for v in raw_labels):
            y = np.array([float(v) for v in raw_labels])
            # whole floats ("3.0") are labels too, where float64 holds them exactly
            if np.all(np.isfinite(y)) and np.all(y == np.round(y)) and np.all(np.abs(y) < 2**53):
                return Table(feats, y.astype(np.int64), feature_names, label_name, col, None)
            return Table(feats, y, feature_names, label_name, col, None)
        if lookup is None:
            classes = sorted(set(raw_labels))
            lookup = {c: i for i, c in enumerate(classes)}
        codes = np.empty(len(raw_labels), dtype=np.int64)
        for r, v in enumerate(raw_labels):
            code = lookup.get(v)
            if code is None:
                raise XbpValueError(
                    f"{arg('path', str(p))} line {lines[r] if lines else '?'} has the label {v!r}, "
                    "which is not one "
                    f"of the known classes {list(lookup)}; fix the label or retrain"
                )
            codes[r] = code
        return Table(feats, codes, feature_names, label_name, col, classes)

    def by_rows() -> Iterator[Table]:
        """The reference parser: Python's csv module, row by row, exact line numbers."""
        chunk = list(pending)
        for item in rows:
            chunk.append(item)
            if len(chunk) >= chunk_rows:
                yield table(chunk)
                chunk = []
        if chunk:
            yield table(chunk)

    if engine == "python":
        yield from by_rows()
        return
    rows.close()  # type: ignore[attr-defined]  # the fast parser reads the file itself
    skip = pending[0][0] - 1  # physical lines before the first data row
    fast = _fast_chunks(
        p, engine, delimiter, skip, feature_cols, label_cols, dtype, chunk_rows, bounded
    )
    for k, parsed in enumerate(fast):
        done = None
        # short rows read as NaN or an empty label: the reference parser says which line
        if parsed is not None and np.isfinite(parsed[0]).all() and not _blank(parsed[1]):
            try:
                done = labelled(parsed[0], parsed[1], None)
            except XbpValueError:
                done = None
        if done is None:
            # a malformed or unusual file: the reference parser finds the line and says what
            # is wrong (or, for NaN/Inf spelled out, reads the same values)
            rows = _numbered(p, delimiter)
            if names is not None:
                next(rows)  # the header row
            pending = []
            reference = by_rows()
            for _ in range(k):
                next(reference)
            yield from reference
            return
        yield done


# CSV files up to this size are parsed by pandas in one read (the parsed frame is
# about the size of the result); larger ones in chunks of ``chunk_rows`` rows
WHOLE_CSV_BYTES = 512 << 20


def _fast_chunks(
    p: Path,
    engine: str,
    delimiter: str,
    skip: int,
    feature_cols: list[int],
    label_cols: list[int],
    dtype: np.dtype[Any],
    chunk_rows: int,
    bounded: bool = False,
) -> Iterator[tuple[np.ndarray, list[Any]] | None]:
    """(features, stripped label strings) per chunk of ``chunk_rows`` data rows, by pandas'
    C parser or ``numpy.loadtxt``; None (and the end) where the parser gives up."""
    try:
        if engine == "pandas":
            import pandas as pd

            # features as pandas infers them (integers parse ~3x faster than floats), cast
            # to ``dtype`` below; labels as text
            types: dict[int, Any] = {c: str for c in label_cols}
            with p.open("rb") as f:
                head = f.read(1 << 16)
            options: dict[str, Any] = {
                "sep": delimiter,
                "header": None,
                "skiprows": skip,
                "dtype": types,
                "na_filter": False,  # an empty field is an error, not NaN: the reference explains
                # numbers parse with spaces around them; skipping them costs ~40%, so only
                # where a field starts with one (a quoted label after a space needs it)
                "skipinitialspace": any(f"{delimiter}{w}".encode() in head for w in (" ", "\t")),
                "encoding": "utf-8-sig",
                "engine": "c",
            }
            if p.stat().st_size <= WHOLE_CSV_BYTES and not bounded:
                # one read: pandas' chunked reader is ~1.6x slower than a whole read
                whole = pd.read_csv(p, **options)
                frames: Any = nullcontext(
                    whole.iloc[s : s + chunk_rows] for s in range(0, len(whole), chunk_rows)
                )
            else:
                frames = pd.read_csv(p, chunksize=chunk_rows, **options)
            with frames as reader:
                for frame in reader:
                    # drop, not select: selecting hundreds of columns by list is slow
                    feats = frame.drop(columns=label_cols).to_numpy(dtype=dtype)
                    feats = np.ascontiguousarray(feats)
                    yield feats, _stripped(frame[label_cols].to_numpy(dtype=str))
            return
        with p.open(encoding="utf-8-sig", newline="") as f:
            for _ in range(skip):
                f.readline()
            while True:
                lines = []
                for line in f:
                    if line.strip():
                        lines.append(line)
                        if len(lines) >= chunk_rows:
                            break
                if not lines:
                    return
                if any(
                    line.count(delimiter) != len(feature_cols) + len(label_cols) - 1
                    for line in lines
                ):
                    yield None  # ragged rows (or quoted delimiters): the reference decides
                    return
                kw: dict[str, Any] = {"delimiter": delimiter, "comments": None, "quotechar": '"'}
                feats = np.loadtxt(lines, dtype=dtype, usecols=feature_cols, ndmin=2, **kw)
                labels = np.zeros((len(lines), 0), dtype=str)
                if label_cols:
                    labels = np.loadtxt(lines, dtype=str, usecols=label_cols, ndmin=2, **kw)
                yield feats, _stripped(labels)
    except (ValueError, TypeError, OverflowError, UnicodeDecodeError) as exc:
        if type(exc).__module__.startswith("xbp"):
            raise
        yield None  # pandas' ParserError is a ValueError too


def _stripped(labels: np.ndarray) -> list[Any]:
    """Label strings of a chunk, stripped: one per row, a tuple per row for several columns."""
    if labels.shape[1] == 0:
        return []
    if labels.shape[1] == 1:
        return [v.strip() for v in labels[:, 0].tolist()]
    return [tuple(v.strip() for v in row) for row in labels.tolist()]


def _blank(labels: list[Any]) -> bool:
    """An empty label field (a short row reads as one): the reference parser decides."""
    return any("" in v if isinstance(v, tuple) else v == "" for v in labels)


#: the CSV parsers ``load_table(engine=...)`` takes (None picks pandas, else numpy)
CSV_ENGINES = ("pandas", "numpy", "python")


def _csv_engine(engine: Any) -> str:
    if engine is not None and engine not in CSV_ENGINES:
        raise XbpValueError(f"engine={engine!r}; use one of {list(CSV_ENGINES)} or None (fastest)")
    if engine in (None, "pandas"):
        try:
            import pandas  # noqa: F401
        except ImportError:
            if engine == "pandas":
                raise XbpValueError(
                    "engine='pandas' needs pandas: pip install 'xbp[csv]' (or engine=None "
                    "for numpy's parser)"
                ) from None
            return "numpy"
        return "pandas"
    return str(engine)


def _feature_dtype(dtype: Any) -> np.dtype[Any]:
    try:
        out = np.dtype(dtype)
    except TypeError:
        out = None
    if out not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise XbpTypeError(f"dtype={dtype!r}; pass 'float32' or 'float64'")
    return out


def load_table(
    path: str | os.PathLike[str],
    label_column: int | str | Sequence[int | str] | None = -1,
    *,
    header: bool | None = None,
    delimiter: str = ",",
    classes: list[str] | None = None,
    dtype: Any = np.float64,
    engine: str | None = None,
) -> Table:
    r"""Load a CSV as a :class:`Table`: features, labels and what the columns are called.

    Parameters
    ----------
    path : str or Path
    label_column : int, str, list of them, or None
        The label column: an index (negative counts from the end), a header
        name, or None for a features-only file. A list of several columns
        gives ``(n, k)`` float64 targets (multi-output regression).
    header : bool or None
        Whether the first row names the columns; None detects it (a
        non-numeric field above a numeric one).
    delimiter : str
    classes : list of str, optional
        Known class names (from a trained model): string labels are coded by
        their position here, and an unknown label is an error. Without it the
        classes are the sorted distinct labels.
    dtype : "float64" or "float32"
        The features' dtype, parsed straight into it (float32 for float32
        training halves the memory).
    engine : "pandas", "numpy", "python" or None
        The parser. None takes pandas' C parser when pandas is installed (the
        ``csv`` extra: ``pip install xbp[csv]``) and ``numpy.loadtxt``
        otherwise. A file either fast parser cannot read (ragged rows, text in
        a feature column) is read again by Python's csv module, row by row,
        so that the error names the line; "python" uses only that parser.
        Quoted fields and a UTF-8 byte-order mark are handled by all three.

    Examples
    --------
    >>> import os, tempfile, xbp
    >>> path = os.path.join(tempfile.mkdtemp(), "iris.csv")
    >>> _ = open(path, "w").write("petal,width,species\n1.4,0.2,setosa\n4.7,1.4,versicolor\n")
    >>> t = xbp.data.load_table(path, "species")
    >>> t.y.tolist(), t.classes, t.feature_names
    ([0, 1], ['setosa', 'versicolor'], ['petal', 'width'])
    """
    parts = list(
        iter_table(
            path,
            label_column,
            header=header,
            delimiter=delimiter,
            classes=classes,
            chunk_rows=1 << 62,
            dtype=dtype,
            engine=engine,
        )
    )
    (t,) = parts
    return t


def load_csv(
    path: str | os.PathLike[str],
    label_column: int | str = -1,
    *,
    header: bool | None = None,
    delimiter: str = ",",
    dtype: Any = np.float64,
    engine: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Load a numeric CSV: features and the label column the user chooses.

    ``label_column`` is an index (negative counts from the end) or, with a
    header row, a column name. ``header=None`` detects a non-numeric first row.
    Integer-valued labels come back as int64, others as float64. For string
    class labels (``setosa``, ...) use :func:`load_table`, which maps them to
    codes and keeps the names. ``dtype`` (float64 or float32) and ``engine``
    (pandas' C parser when installed, else ``numpy.loadtxt``) are
    :func:`load_table`'s.

    Examples
    --------
    >>> import xbp
    >>> _ = open("t.csv", "w").write("a,b,label\n1,2,0\n3,4,1\n")
    >>> x, y = xbp.data.load_csv("t.csv", "label")
    >>> x.tolist(), y.tolist()
    ([[1.0, 2.0], [3.0, 4.0]], [0, 1])
    """
    if label_column is None or isinstance(label_column, bool):
        raise XbpTypeError(
            f"{arg('label_column', label_column)}; pass a column index or header name (for a "
            "features-only file use load_table(path, label_column=None))"
        )
    t = load_table(
        path, label_column, header=header, delimiter=delimiter, dtype=dtype, engine=engine
    )
    if t.classes is not None:
        raise XbpValueError(
            f"{arg('path', str(path))} holds non-numeric labels ({t.classes[:3]}...) in column "
            f"{t.label_name or t.label_index}; load_csv reads numbers only: use "
            "xbp.data.load_table for string class labels"
        )
    assert t.y is not None
    return t.x, t.y


def _map_npz_member(p: Path, key: str) -> np.ndarray:
    """An array of an uncompressed .npz as a read-only memory map of the archive itself."""
    with zipfile.ZipFile(p) as zf:
        info = zf.getinfo(key + ".npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise XbpValueError(
                f"{arg('path', str(p))} is compressed (np.savez_compressed) and cannot be "
                "memory-mapped; save it with np.savez, or load it with mmap=False"
            )
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise XbpFileError(
                    f"{arg('path', str(p))}: {key!r} has .npy format {version}; load it with "
                    "mmap=False"
                )
            header = f.tell()
    if dtype.hasobject:
        raise XbpFileError(
            f"{arg('path', str(p))} holds pickled objects; xbp never unpickles. Save plain arrays"
        )
    with p.open("rb") as raw:
        raw.seek(info.header_offset)
        local = raw.read(30)  # the local file header: its name and extra field lengths
    start = info.header_offset + 30 + int.from_bytes(local[26:28], "little")
    start += int.from_bytes(local[28:30], "little") + header
    return np.memmap(
        p, dtype=dtype, mode="r", offset=start, shape=shape, order="F" if fortran else "C"
    )


def load_npz(
    path: str | os.PathLike[str],
    x_key: str = "x",
    y_key: str | None = "y",
    *,
    mmap: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Load features and labels from an .npz file (no pickles are ever loaded).

    ``y_key=None`` reads features only (``y`` is then None). ``mmap=True``
    returns read-only memory maps into the archive (written by ``np.savez``,
    not ``np.savez_compressed``): nothing is read until rows are used, and
    :func:`xbp.fit` streams them a batch at a time.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> np.savez("d.npz", x=np.ones((3, 2)), y=np.arange(3))
    >>> x, y = xbp.data.load_npz("d.npz")
    >>> x.shape, y.tolist()
    ((3, 2), [0, 1, 2])
    >>> x, _ = xbp.data.load_npz("d.npz", mmap=True)  # read in place, streamed by fit
    """
    p = _exists(path, "path")
    for name, key in (("x_key", x_key), ("y_key", y_key)):
        if not isinstance(key, str) and not (name == "y_key" and key is None):
            raise XbpTypeError(f"{name}={key!r}; pass the name of an array in the file")
    kind = sniff(p)
    if kind == "npy":
        raise XbpFileError(
            f"{arg('path', str(p))} is {describe(kind)}, not an .npz of x and y; save them "
            "together "
            "with np.savez(path, x=x, y=y)"
        )
    if kind != "npz":
        raise XbpFileError(
            f"{arg('path', str(p))} is {describe(kind)}, not an .npz archive; save the data with "
            "np.savez(path, x=x, y=y)"
        )
    keys = [k for k in (x_key, y_key) if k is not None]
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise XbpValueError(
                    f"{arg('path', str(p))} lacks {missing}; it holds {z.files} (choose "
                    "x_key/y_key)"
                )
            if mmap:
                x = _map_npz_member(p, x_key)
                y = _map_npz_member(p, y_key) if y_key is not None else None
            else:
                x = z[x_key]
                y = z[y_key] if y_key is not None else None
    except XbpError:
        raise  # xbp's own message (a missing key), not NumPy's
    except ValueError as exc:
        if "pickle" in str(exc) or "Object arrays" in str(exc):
            raise XbpFileError(
                f"{arg('path', str(p))} holds pickled objects; xbp never unpickles. Save plain "
                "arrays"
            ) from None
        raise
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise XbpFileError(f"{arg('path', str(p))} is not a readable .npz file ({exc})") from None
    return x, y


def make_xor() -> tuple[np.ndarray, np.ndarray]:
    """The four XOR points and their 0/1 targets, shape (4, 1).

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.make_xor()
    >>> x.tolist(), y.ravel().tolist()
    ([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], [0.0, 1.0, 1.0, 0.0])
    """
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return x, np.array([[0.0], [1.0], [1.0], [0.0]])


def make_spirals(
    n: int = 400, noise: float = 0.2, seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals, ``n`` points, integer labels 0/1.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> x, y = xbp.data.make_spirals(100, seed=0)
    >>> x.shape, np.bincount(y).tolist()
    ((100, 2), [50, 50])
    """
    n = check_int(n, "n", low=2)
    check_number(noise, "noise", low=0.0, low_open=False)
    check_memory(8 * 6 * n, f"make_spirals(n={n})", "ask for fewer rows")
    seed = _check_seed(seed)
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
    """Two interleaving half circles, integer labels 0/1.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> x, y = xbp.data.make_moons(50, noise=0.1, seed=0)
    >>> x.shape, np.bincount(y).tolist()
    ((50, 2), [25, 25])
    """
    n = check_int(n, "n", low=2)
    check_number(noise, "noise", low=0.0, low_open=False)
    check_memory(8 * 6 * n, f"make_moons(n={n})", "ask for fewer rows")
    seed = _check_seed(seed)
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
    """Gaussian blobs around ``centers`` random centres, integer labels.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> x, y = xbp.data.make_blobs(90, centers=3, n_features=4, seed=0)
    >>> x.shape, np.bincount(y).tolist()
    ((90, 4), [30, 30, 30])
    """
    n = check_int(n, "n", low=1)
    centers = check_int(centers, "centers")
    n_features = check_int(n_features, "n_features")
    check_number(spread, "spread")
    seed = _check_seed(seed)
    check_memory(
        8 * (n + centers) * n_features + 8 * n,
        f"make_blobs(n={n}, centers={centers}, n_features={n_features})",
        "ask for fewer rows or features",
    )
    rng = np.random.default_rng(seed)
    mu = rng.uniform(-10, 10, size=(centers, n_features))
    y = np.arange(n) % centers
    return mu[y] + rng.normal(scale=spread, size=(n, n_features)), y.astype(np.int64)


def standardize(x: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Scale columns to zero mean and unit variance using ``x``'s statistics.

    Returns the scaled ``x``, each of ``others`` scaled the same way, then the
    mean and the scale. Constant columns are left centred, not divided by 0.
    Values too large to standardise in float64 (the variance overflows) are
    refused rather than turned into zeros.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> train, test = np.array([[1.0, 10.0], [3.0, 30.0]]), np.array([[2.0, 20.0]])
    >>> train_s, test_s, mean, scale = xbp.data.standardize(train, test)
    >>> train_s.tolist(), test_s.tolist(), mean.tolist(), scale.tolist()
    ([[-1.0, -1.0], [1.0, 1.0]], [[0.0, 0.0]], [2.0, 20.0], [1.0, 10.0])
    """
    x = _numeric_2d(x, "x")
    scaled_others = [_numeric_2d(o, f"others[{i}]", x.shape[1]) for i, o in enumerate(others)]
    with np.errstate(over="ignore", invalid="ignore"):
        mean = x.mean(axis=0)
        std = x.std(axis=0)
    bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))
    if bad.size:
        j = int(bad[0])
        raise XbpValueError(
            f"x column {j} cannot be standardised: its values (up to {np.abs(x[:, j]).max():.3g}) "
            "overflow float64 when squared; rescale that column first (or do not standardise)"
        )
    std[std == 0] = 1.0
    return ((x - mean) / std, *((o - mean) / std for o in scaled_others), mean, std)


def _numeric_2d(a: Any, argument: str, width: int | None = None) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise XbpTypeError(
            f"{argument} could not be read as numbers ({exc}); pass a 2-D numeric array"
        ) from None
    if arr.ndim != 2:
        raise XbpValueError(f"{argument} has shape {arr.shape}; pass (n_samples, n_features)")
    if width is not None and arr.shape[1] != width:
        raise XbpValueError(f"{argument} has {arr.shape[1]} columns but x has {width}")
    if not np.isfinite(arr).all():
        raise XbpValueError(f"{argument} contains NaN or Inf; clean the data first")
    return arr


def one_hot(y: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Integer labels to a float64 one-hot matrix.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> xbp.data.one_hot(np.array([0, 2, 1]))
    array([[1., 0., 0.],
           [0., 0., 1.],
           [0., 1., 0.]])
    """
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise XbpTypeError(f"y must be 1-D integer labels, got shape {y.shape} dtype {y.dtype}")
    if n_classes is None and not y.size:
        raise XbpValueError("y is empty; pass labels or n_classes")
    k = int(y.max()) + 1 if n_classes is None else check_int(n_classes, "n_classes")
    if y.size and (y.min() < 0 or y.max() >= k):
        raise XbpValueError(f"y holds labels outside 0..{k - 1}")
    check_memory(
        8 * y.size * k, f"one_hot of {y.size} labels into {k} classes", "pass fewer classes"
    )
    out = np.zeros((y.size, k))  # not np.eye(k): k * k numbers for any number of labels
    out[np.arange(y.size), y] = 1.0
    return out


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

    The rows of each part are :func:`split_indices`' (the one split rule).

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.load_digits()
    >>> (xtr, ytr), (xva, yva), (xte, yte) = xbp.data.train_val_test_split(x, y)
    >>> len(ytr) + len(yva) + len(yte)
    1797
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise XbpValueError("x and y must be arrays with one row per sample")
    if x.shape[0] != y.shape[0]:
        raise XbpValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    parts = split_indices(y, val=val, test=test, seed=seed, stratify=stratify)
    return tuple((x[idx], y[idx]) for idx in parts)


def split_indices(
    y: np.ndarray,
    *,
    val: float = 0.1,
    test: float = 0.2,
    seed: int | None = 0,
    stratify: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The row indices of :func:`train_val_test_split`'s (train, validation, test) parts,
    in their order, computed from the labels alone: a file's features can stay in place
    (a memory map indexed by them reads the same rows).

    Examples
    --------
    >>> import numpy as np, xbp
    >>> x, y = xbp.data.load_digits()
    >>> train, val, test = xbp.data.split_indices(y, seed=3)
    >>> (xtr, ytr), _, _ = xbp.data.train_val_test_split(x, y, seed=3)
    >>> bool(np.array_equal(x[train], xtr)), len(train) + len(val) + len(test)
    (True, 1797)
    """
    y = np.asarray(y)
    if y.ndim == 0:
        raise XbpValueError("x and y must be arrays with one row per sample")
    check_number(val, "val", low=0.0, low_open=False, high=1.0, high_open=True)
    check_number(test, "test", low=0.0, low_open=False, high=1.0, high_open=True)
    if val + test >= 1:
        raise XbpValueError(f"val={val} + test={test} must be below 1 to leave training data")
    seed = _check_seed(seed)
    if not isinstance(stratify, (bool, np.bool_)):
        raise XbpTypeError(f"stratify={stratify!r}; pass True or False")
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
    train, held, tested = (rng.permutation(np.concatenate(p)) for p in parts)
    if len(train) == 0:
        raise XbpValueError(
            f"val={val} and test={test} leave no training rows of the {len(y)}; lower them"
        )
    return train, held, tested


#: the data sets ``load_dataset`` and ``xbp train --data`` know by name
BUILTIN_SETS = ("digits", "mnist1d", "xor", "spirals", "moons", "blobs")
FORMATS = ("csv", "npz", "mnist")


def dataset_format(spec: str, format: str | None = None) -> str:
    """What :func:`load_dataset` would read for ``spec``: ``"builtin"``, ``"csv"``,
    ``"npz"`` or ``"mnist"`` (a directory of IDX files, or one IDX file's directory).

    Examples
    --------
    >>> import xbp
    >>> [xbp.data.dataset_format(s) for s in ("digits", "iris.csv", "arrays.npz")]
    ['builtin', 'csv', 'npz']
    """
    if not isinstance(spec, (str, os.PathLike)) or isinstance(spec, bool):
        raise XbpTypeError(
            f"spec is a {type(spec).__name__}; pass a built-in set name {list(BUILTIN_SETS)} "
            "or a path"
        )
    spec = os.fspath(spec)
    if format is not None and format not in (*FORMATS, "idx"):
        raise XbpValueError(f"format={format!r}; use one of {list(FORMATS)} or None (guess)")
    if format is None and spec in BUILTIN_SETS:
        return "builtin"
    p = Path(spec)
    fmt = format or (
        "mnist" if p.is_dir() else p.suffix.lower().lstrip(".").replace("gz", "") or None
    )
    if fmt in ("mnist", "idx"):
        return "mnist"
    if fmt in ("csv", "npz"):
        return fmt
    if not p.exists():
        raise XbpFileNotFoundError(
            f"--data {spec!r} is neither a built-in set {list(BUILTIN_SETS)} nor an existing path"
        )
    raise XbpValueError(f"--data {spec!r}: cannot tell its format; pass --format csv, npz or mnist")


def load_dataset(
    spec: str,
    *,
    format: str | None = None,
    label_column: int | str | Sequence[int | str] = -1,
    seed: int | None = 0,
    delimiter: str = ",",
    x_key: str = "x",
    y_key: str = "y",
    kind: str = "train",
) -> tuple[np.ndarray, np.ndarray]:
    """Load a data set the CLI names: ``digits``, ``xor``, ``spirals``, ``moons``, ``blobs``,
    an MNIST directory, or a ``.csv``/``.npz``/IDX path (``format`` overrides the guess).

    String class labels in a CSV come back as codes (see :func:`load_table` for
    the names). ``delimiter`` is the CSV's, ``x_key``/``y_key`` name the arrays
    of an .npz, ``kind`` the MNIST files (``"train"`` or ``"t10k"``).

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.load_dataset("digits")
    >>> x.shape, y.shape
    ((1797, 64), (1797,))
    """
    seed = _check_seed(seed)
    fmt = dataset_format(spec, format)
    if fmt == "builtin":
        generated = {
            "digits": load_digits,
            # the published set (seed 42) whatever the run's seed; train rows, then test rows
            "mnist1d": load_mnist1d_joined,
            "xor": make_xor,
            "spirals": lambda: make_spirals(seed=seed),
            "moons": lambda: make_moons(seed=seed),
            "blobs": lambda: make_blobs(seed=seed),
        }
        return generated[os.fspath(spec)]()
    p = Path(spec)
    if fmt == "mnist":
        return load_mnist(p if p.is_dir() else p.parent, kind)
    if fmt == "csv":
        t = load_table(p, label_column, delimiter=delimiter)
        if t.y is None:
            raise XbpValueError(f"{arg('label_column', None)}: load_dataset needs labels")
        return t.x, t.y
    x, y = load_npz(p, x_key, y_key)
    assert y is not None
    return x, y
