"""What several commands share: the files they read and write (checked before any
work), reading data, loading models, the library's keywords as flags.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import backends
from ..errors import XbpError, XbpFileError, XbpValueError
from .options import TASKS, device_option, flag_of, label_column_option


# -- files: what a command reads and writes, checked before any work -------------------
def data_files(args: argparse.Namespace) -> tuple[str, list[Path]]:
    """The data's format and the files it is read from (checked: regular, readable)."""
    from ..data import dataset_format, mnist_files
    from ..io.paths import input_file

    fmt = dataset_format(args.data, args.format)
    if fmt == "builtin":
        return fmt, []
    p = Path(args.data)
    if fmt == "mnist":
        directory = p if p.is_dir() else p.parent
        files = list(mnist_files(directory, mnist_kind(args)))
        return fmt, [input_file(f, "--data") for f in files]
    return fmt, [input_file(p, "--data", f"a .{fmt} file")]


def mnist_kind(args: argparse.Namespace) -> str:
    """evaluate and predict read an MNIST directory's t10k files (the test set) when present."""
    from ..data import mnist_files

    if args.command not in ("evaluate", "predict"):
        return "train"
    p = Path(args.data)
    try:
        mnist_files(p if p.is_dir() else p.parent, "t10k")
    except XbpError:
        return "train"
    return "t10k"


def _check_layout_options(args: argparse.Namespace, fmt: str) -> None:
    """--delimiter goes with CSV data, --x-key/--y-key with .npz data."""
    for name, wanted in (("delimiter", "csv"), ("x_key", "npz"), ("y_key", "npz")):
        if name in args.given and fmt != wanted:
            raise XbpValueError(
                f"{flag_of(name)} applies to {wanted} data; --data {args.data!r} is {fmt} data: "
                f"drop {flag_of(name)}"
            )


def _layout(args: argparse.Namespace, meta: dict[str, Any]) -> dict[str, Any]:
    """The data layout evaluate and predict read: the options given, else what the model
    file recorded at training (xbp train), else the defaults."""
    stored: dict[str, Any] = meta["layout"] if isinstance(meta.get("layout"), dict) else {}
    fallback = {"delimiter": ",", "x_key": "x", "y_key": "y"}
    out = {}
    for name, default in fallback.items():
        value = getattr(args, name, None)
        if value is None:
            value = stored.get(name) if isinstance(stored.get(name), str) else default
        out[name] = value
    return out


def check_outputs(
    reads: dict[str, Any],
    writes: dict[str, Any],
    allowed: Sequence[tuple[str, str]] = (),
) -> None:
    """Every output's directory, name and kind, then no output may hit an input or another
    (the library's one rule, :func:`xbp.io.paths.check_files`, which ``fit`` applies too)."""
    from ..io.paths import check_files

    check_files(reads, writes, allowed)


def reads_of(files: list[Path], **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {f"--data ({f.name})" if len(files) > 1 else "--data": f for f in files}
    out.update({k: v for k, v in more.items() if v is not None})
    return out


def prepare_backend(args: argparse.Namespace) -> None:
    """float64 on JAX needs 64-bit mode, switched on before any array exists."""
    name = getattr(args, "backend", None)
    if name is None:
        return
    try:
        library = backends.lookup(name)
    except XbpError:
        return  # the backend check says what is known
    library.enable_float64()  # a no-op where float64 always works
    library.set_cpu_threads(cpu_threads())


def cpu_threads(environ: Any = None) -> int:
    """The CPU threads of xbp's own runs for libraries with a thread pool (torch): 1, or
    ``XBP_THREADS``. Tiny and mid MLP steps are dominated by per-operation overhead
    that a pool's synchronisation adds to: on a busy 2-core machine, 3 epochs of the
    digits network took 2.1-2.5 s with one torch thread and 37-43 s with torch's
    default (``scripts/bench_threads.py``)."""
    env = os.environ if environ is None else environ
    text = env.get("XBP_THREADS", "").strip()
    if not text:
        return 1
    if not text.isdigit() or int(text) < 1:
        raise XbpValueError(f"XBP_THREADS={text!r}; give a whole number of threads >= 1")
    return int(text)


# -- data ------------------------------------------------------------------------------
class _Loaded:
    """Training data with what the model file records about it."""

    def __init__(
        self,
        x: Any,
        y: np.ndarray,
        feature_names: list[str] | None = None,
        label_name: str | None = None,
        label_index: int | None = None,
        classes: list[str] | None = None,
        columns: int | None = None,
    ) -> None:
        self.x, self.y = x, y
        self.feature_names, self.label_name = feature_names, label_name
        self.label_index, self.classes, self.columns = label_index, classes, columns


#: features of at least this many bytes (as the floats they train as) are left in their
#: file and streamed by ``xbp train`` where the file can be memory-mapped; smaller ones
#: are loaded whole (on the device once, compiled epochs where the backend has them)
STREAM_BYTES = 64 * 2**20


def load_training(args: argparse.Namespace, fmt: str, mapped: bool = False) -> _Loaded:
    """``--data``'s training rows; ``mapped``: features of :data:`STREAM_BYTES` or more in
    an uncompressed .npz or IDX file stay in the file (:func:`_mapped_training`)."""
    _check_layout_options(args, fmt)
    if fmt != "csv" and "label_column" in args.given:
        raise XbpValueError(
            f"--label-column applies to CSV data; --data {args.data!r} is {fmt} data with "
            "its labels stored apart: drop --label-column"
        )
    found = None
    if mapped:
        found = _csv_training(args) if fmt == "csv" else _mapped_training(args, fmt)
    return found if found is not None else _read_training(args, fmt)


def _mapped_training(args: argparse.Namespace, fmt: str) -> _Loaded | None:
    """``--data``'s features as :class:`~xbp.data.MappedRows` over the file read in place
    (the labels read whole), or None where the file cannot be mapped (compressed), the
    features are not a table, or they are smaller than :data:`STREAM_BYTES`."""
    from ..data import load_mnist, load_npz
    from ..data.hostrows import MappedRows

    rows: Any
    if fmt == "npz" and _stored_plain(args.data):
        raw, y = load_npz(args.data, args.x_key, args.y_key, mmap=True)
        if raw.ndim != 2:
            return None  # the whole-file path names the shape it cannot train on
        # the arithmetic of the whole-file path: floats as stored, other numbers as float64
        kind = raw.dtype.newbyteorder("=") if raw.dtype.kind == "f" else np.dtype(np.float64)
        rows = MappedRows(raw, kind)
    elif fmt == "mnist":
        p = Path(args.data)
        try:
            rows, y = load_mnist(p if p.is_dir() else p.parent, "train", mmap=True)
        except XbpValueError:
            return None  # gzip-compressed files are read whole
    else:
        return None
    if rows.shape[0] * rows.shape[1] * rows.dtype.itemsize < STREAM_BYTES:
        return None
    return _Loaded(rows, np.asarray(y))


#: rows per chunk read from a big CSV into its temporary file
CSV_CHUNK_ROWS = 65536

#: the temporary files of this run (a big CSV's features as floats), removed at its end
TEMPORARY: list[str] = []


def _csv_training(args: argparse.Namespace) -> _Loaded | None:
    """A big CSV's features read in chunks into a temporary float64 file in the system
    temp directory (listed in :data:`TEMPORARY`; ``xbp train`` removes it however it ends)
    and streamed from there as :class:`~xbp.data.MappedRows`; the labels kept in memory.
    None where the features (estimated from the line count) are under
    :data:`STREAM_BYTES` or the labels are names (their codes need the whole column)."""
    import shutil
    import tempfile

    from ..data import csv_columns, iter_table
    from ..data.hostrows import MappedRows
    from ..io.paths import new_file

    column = label_column_option(args.label_column)
    if column is None:
        return None  # the whole-file path names what is missing
    _, width = csv_columns(args.data, delimiter=args.delimiter)
    need = _line_count(args.data) * max(width - 1, 0) * 8
    if width < 2 or need < STREAM_BYTES:
        return None
    folder = tempfile.gettempdir()
    free = shutil.disk_usage(folder).free
    if free < need:
        raise XbpValueError(
            f"--data {args.data!r} is streamed through a temporary copy of its features "
            f"({need / 2**20:.0f} MiB as floats) but the temp directory {folder!r} has "
            f"{free / 2**20:.0f} MiB free; free space there or point TMPDIR at a larger disk"
        )
    # listed before it exists: an interrupt at any moment leaves it to remove_temporary
    fd = new_file(folder, "xbp-csv-", ".f64", TEMPORARY)
    name = TEMPORARY[-1]
    labels: list[np.ndarray] = []
    first, n = None, 0
    with os.fdopen(fd, "wb") as f:
        for t in iter_table(
            args.data, column, delimiter=args.delimiter, chunk_rows=CSV_CHUNK_ROWS, bounded=True
        ):
            if t.classes is not None:
                remove_temporary()  # class names: read whole (codes need every label)
                return None
            first = t if first is None else first
            f.write(np.ascontiguousarray(t.x, dtype=np.float64).tobytes())
            assert t.y is not None  # a label column was named
            labels.append(t.y)
            n += t.x.shape[0]
    assert first is not None and first.label_index is not None
    raw = np.memmap(name, np.float64, "r", shape=(n, first.x.shape[1]))
    y: np.ndarray = np.concatenate(
        labels
    )  # int64 chunks beside float64 ones: float64, as read whole
    return _Loaded(
        MappedRows(raw, np.float64),
        y,
        first.feature_names,
        first.label_name,
        first.label_index,
        None,
        width,
    )


def _line_count(path: str) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def remove_temporary() -> None:
    while TEMPORARY:
        try:
            os.unlink(TEMPORARY.pop())
        except FileNotFoundError:
            pass


def _read_training(args: argparse.Namespace, fmt: str) -> _Loaded:
    from ..data import load_dataset, load_table

    if fmt == "csv":
        column = label_column_option(args.label_column)
        if column is None:
            raise XbpValueError(
                f"--label-column none: xbp {args.command} needs a label column; give its index "
                "or name"
            )
        t = load_table(args.data, column, delimiter=args.delimiter)
        assert t.y is not None and t.label_index is not None
        width = t.x.shape[1] + (t.y.shape[1] if t.y.ndim == 2 else 1)
        return _Loaded(t.x, t.y, t.feature_names, t.label_name, t.label_index, t.classes, width)
    x, y = load_dataset(
        args.data, format=args.format, seed=args.seed, x_key=args.x_key, y_key=args.y_key
    )
    return _Loaded(np.asarray(x), np.asarray(y))


def targets_of(y: np.ndarray, loss: str | None, task: str = "auto") -> Any:
    """The library's task and target rules (:func:`xbp.nn.targets.infer_targets`) for
    ``--data``'s labels under ``--loss`` and ``--task``."""
    from ..nn.targets import infer_targets

    return infer_targets(y, loss=loss, task=TASKS[task], argument="--data's labels")


def task_choice(args: argparse.Namespace, ck: Any = None, classes: Any = None) -> str:
    """``--task``, or the checkpoint's task on a resume, or ``classify`` for class names."""
    if args.task != "auto":
        return str(args.task)
    stored = None if ck is None else ck.metadata.get("task")
    if stored in ("classification", "regression"):
        return "classify" if stored == "classification" else "regress"
    return "classify" if classes is not None else "auto"


def scaled_features(x: np.ndarray, scaling: Any, argument: str = "--data") -> np.ndarray:
    """Apply a model's stored scaling; refuse values that are not finite afterwards."""
    if scaling is None:
        out = x if x.dtype.kind == "f" else x.astype(np.float64)
    else:
        mean, std = scaling
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = (x - mean) / std
    bad = ~np.isfinite(out)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise XbpValueError(
            f"{argument} row {row} column {col} is {x[row, col]!r}, which is not finite after "
            "scaling (NaN, Inf, or too large); clean or rescale the data"
            + ("" if scaling is None else " (or train with --no-standardize)")
        )
    return out


def stored_scaling(meta: dict[str, Any], n_in: int, argument: str) -> Any:
    pre = meta.get("standardize")
    if not pre:
        return None
    try:
        mean = np.asarray(pre["mean"], dtype=np.float64)
        std = np.asarray(pre["std"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise XbpFileError(f"{argument} has a corrupt 'standardize' entry in its header") from None
    if mean.shape != (n_in,) or std.shape != (n_in,):
        raise XbpFileError(
            f"{argument} stores scaling for {mean.size} features but its network takes {n_in}"
        )
    return mean, std


# -- models --------------------------------------------------------------------------
def build_network(args: argparse.Namespace, n_in: int, n_out: int, output: str | None) -> Any:
    from ..nn.network import mlp

    return mlp(
        [n_in, *args.layers, n_out],
        standardize=not getattr(args, "no_standardize", True),
        activation=args.activation,
        output=output,
        loss=args.loss,
        backend=args.backend,
        device=device_option(args.device),
        dtype=args.dtype,
        seed=args.seed,
        init=args.init,
    )


# -- evaluate and predict: a saved model on new data -----------------------------------
def model_option(args: argparse.Namespace) -> str:
    return "--model" if args.command == "explain" else "model"


def load_model(args: argparse.Namespace, path: str, name: str) -> tuple[Any, dict[str, Any]]:
    from ..io import load_checkpoint

    ck = load_checkpoint(
        path, backend=args.backend, device=device_option(args.device), argument=name
    )
    return ck.network, ck.metadata


def _model_features(meta: dict[str, Any], net: Any) -> tuple[int, list[str] | None]:
    features = meta.get("features")
    names = features.get("names") if isinstance(features, dict) else None
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        names = None
    return net.n_in, names


def _width_error(have: int, want: int, what: str, hint: str = "") -> XbpValueError:
    return XbpValueError(
        f"--data has {have} feature columns but the model takes {want} features{what}; "
        f"give data with the model's {want} features{hint}"
    )


def data_chunks(
    args: argparse.Namespace, fmt: str, net: Any, meta: dict[str, Any], need_labels: bool
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Chunks of (scaled features, labels or None) of at most ``--batch-size`` rows."""
    yield from _read_chunks(args, fmt, net, meta, need_labels)


def _read_chunks(
    args: argparse.Namespace, fmt: str, net: Any, meta: dict[str, Any], need_labels: bool
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    from ..data import csv_columns, iter_table, load_dataset, load_npz
    from ..data.hostrows import HostChunks

    n_in, names = _model_features(meta, net)
    scaling = stored_scaling(meta, n_in, f"model {args.model!r}")
    classes = meta.get("classes") if isinstance(meta.get("classes"), list) else None
    label: dict[str, Any] = meta["label"] if isinstance(meta.get("label"), dict) else {}
    given = "label_column" in args.given
    bs = args.batch_size
    _check_layout_options(args, fmt)
    layout = _layout(args, meta)

    def finish(x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        if x.ndim != 2 or x.shape[1] != n_in:
            raise _width_error(x.shape[1] if x.ndim == 2 else 1, n_in, "")
        if x.dtype.kind not in "fiu":
            raise XbpValueError(f"--data has features of dtype {x.dtype}; need numbers")
        if y is not None and classes and net.classes is not None:
            y = np.asarray(classes)[y]  # the names iter_table coded, for the model's classes
        return scaled_features(x, scaling), y

    if fmt == "csv":
        delimiter = layout["delimiter"]
        file_names, width = csv_columns(args.data, delimiter=delimiter)
        stored = label.get("name")
        stored_names = stored if isinstance(stored, list) else [stored]
        n_labels = len(stored) if isinstance(stored, list) else 1
        index = label.get("index")
        if given:
            column = label_column_option(args.label_column)
        elif file_names is not None and all(n in file_names for n in stored_names):
            column = stored
        elif width == n_in:
            column = None
        elif width == n_in + n_labels:
            if isinstance(index, list) and all(isinstance(i, int) for i in index):
                column = index
            elif isinstance(index, int) and 0 <= index < width:
                column = index
            else:  # trained on arrays (.npz, a named dataset): any column could be the extra one
                raise XbpValueError(
                    f"--data has {width} columns, {n_labels} more than the model's {n_in} "
                    "features, and the model records no label column (it was not trained on a "
                    "CSV); name the extra column with --label-column (e.g. -1 or 0), or drop it"
                )
        else:
            raise XbpValueError(
                f"--data has {width} columns but the model takes {n_in} features (with "
                f"{'its label columns' if n_labels > 1 else 'a label column'}: "
                f"{n_in + n_labels}); give data with the model's features, or name the label "
                "column with --label-column"
            )
        if column is None and need_labels:
            raise XbpValueError(
                f"--data has no label column (its {width} columns are the model's features); "
                f"{args.command} needs labels: add them, or use xbp predict"
            )
        columns = [] if column is None else column if isinstance(column, list) else [column]
        positions = {
            file_names.index(c) if isinstance(c, str) and file_names and c in file_names else c
            for c in columns
        }
        positions = {c % width if isinstance(c, int) else c for c in positions}
        n_features = width - len(columns)
        if n_features != n_in:
            raise _width_error(
                n_features,
                n_in,
                " (after setting aside the label column)" if column is not None else "",
                "" if column is not None else "; name a label column with --label-column",
            )
        if file_names is not None and names is not None:
            keep = [n for i, n in enumerate(file_names) if i not in positions]
            if keep != names:
                raise XbpValueError(
                    f"--data's feature columns {keep[:4]}... differ from the model's "
                    f"{names[:4]}...; give the columns the model was trained on, in its order"
                )
        for t in iter_table(
            args.data,
            column,
            classes=classes if classes and column is not None else None,
            chunk_rows=bs,
            delimiter=delimiter,
        ):
            if t.y is not None and classes is None and t.classes is not None:
                raise XbpValueError(
                    f"--data's label column holds names ({t.classes[:3]}...) but the model was "
                    "trained on numeric labels; check --label-column"
                )
            yield finish(t.x, t.y if need_labels else None)
        return
    if fmt == "npz" and not need_labels:
        x, _ = load_npz(args.data, layout["x_key"], y_key=None, mmap=_stored_plain(args.data))
        y: Any = None
    elif fmt == "npz":
        x, y = load_npz(args.data, layout["x_key"], layout["y_key"], mmap=_stored_plain(args.data))
    else:
        x, y = load_dataset(args.data, format=args.format, seed=0, kind=mnist_kind(args))
    if len(x.shape) != 2:
        raise XbpValueError(f"--data has features of shape {x.shape}; need (samples, features)")
    if x.shape[1] != n_in:
        raise _width_error(x.shape[1], n_in, "")
    # a memory map is read from its file a chunk at a time (HostChunks' pread), so its
    # pages never pile up in this process (peak RSS: a chunk, not the file)
    for xb, yb in HostChunks(x, y if need_labels else None, bs):
        yield finish(np.asarray(xb), None if yb is None else np.asarray(yb))


def _stored_plain(path: str) -> bool:
    """Whether an .npz's arrays are stored uncompressed (then they are read in place)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    except (OSError, zipfile.BadZipFile):
        return False  # load_npz says what is wrong with the file


def task_of(net: Any, meta: dict[str, Any]) -> str:
    task = meta.get("task")
    if task in ("classification", "regression"):
        return str(task)
    return "regression" if net.loss.name in ("quadratic", "poisson") else "classification"
