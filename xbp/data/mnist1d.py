"""MNIST-1D (Greydanus & Kobak), made on this machine by the ``mnist1d`` package.

MNIST-1D is a procedurally generated stand-in for MNIST: ten 1-D templates of
the digits, padded, translated, scaled, sheared and made noisy, sampled to 40
points. It is small (5,000 samples) yet separates model classes the way MNIST
no longer does. Published reference (Greydanus & Kobak, "Scaling down deep
learning with MNIST-1D", ICML 2024), test accuracy on the standard split:
logistic regression about 32%, an MLP about 68%, a CNN about 94%.

Only the package's offline generator is used (``make_dataset(get_dataset_args())``,
the published arguments and seed 42): never its ``get_dataset``, which downloads
a pickle from the web, unpickles it and writes a file in the working directory.
Nothing is written unless a ``path`` is given.

The ``mnist1d`` package is an optional dependency: ``pip install 'xbp[mnist1d]'``.
"""

from __future__ import annotations

import json
import os
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import XbpFileError, XbpValueError, arg
from ..io.paths import as_path, describe, input_file, output_file, sniff
from ..nn.validate import check_int

__all__ = ["load_mnist1d", "load_mnist1d_joined", "SEED", "N_TRAIN", "N_TEST", "N_FEATURES"]

#: The seed of the published data set (``get_dataset_args().seed``).
SEED = 42
N_TRAIN, N_TEST, N_FEATURES = 4000, 1000, 40

_FORMAT = "xbp-mnist1d"
_KEYS = ("x_train", "y_train", "x_test", "y_test")

Split = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _generator() -> tuple[Any, Any]:
    try:
        # the offline generator only; get_dataset (the download path) is never imported
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise XbpValueError(
            "MNIST-1D needs the mnist1d package: pip install 'xbp[mnist1d]'"
        ) from None
    return make_dataset, get_dataset_args


def _arguments(seed: int) -> Any:
    _, get_dataset_args = _generator()
    args = get_dataset_args()  # a fresh object each call: changing it changes no default
    args.seed = seed
    return args


def _describe_arguments(args: Any) -> dict[str, Any]:
    """The generator's arguments as JSON (the URL is no part of the data)."""
    return {k: v for k, v in sorted(vars(args).items()) if k != "url"}


def _generate(seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    make_dataset, _ = _generator()
    args = _arguments(seed)
    # make_dataset seeds the global random and numpy.random generators: put the
    # caller's states back, so loading data never changes their random streams
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        made = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    arrays = {
        "x_train": np.asarray(made["x"], dtype=np.float64),
        "y_train": np.asarray(made["y"], dtype=np.int64),
        "x_test": np.asarray(made["x_test"], dtype=np.float64),
        "y_test": np.asarray(made["y_test"], dtype=np.int64),
    }
    return arrays, _describe_arguments(args)


def _read_cache(path: Path, seed: int, arguments: dict[str, Any]) -> dict[str, np.ndarray]:
    name = f"{arg('path', str(path))}"
    kind = sniff(path)
    if kind != "npz":
        raise XbpFileError(
            f"{name} is {describe(kind)}, not an MNIST-1D file written by load_mnist1d; pass "
            "another path (or none, to cache nothing)"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
        meta = json.loads(files.pop("meta").tobytes().decode("utf-8"))
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError, UnicodeDecodeError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT or set(files) != set(_KEYS):
        raise XbpFileError(
            f"{name} is not an MNIST-1D file written by load_mnist1d (or it is damaged); "
            "delete it or pass another path"
        )
    if meta.get("seed") != seed or meta.get("arguments") != arguments:
        raise XbpValueError(
            f"{name} holds MNIST-1D made with seed {meta.get('seed')!r}, not seed={seed} (or "
            "by other generator arguments); pass another path, or delete the file to remake it"
        )
    return files


def _write_cache(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    from ..io import atomic_write

    header = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, meta=header, **arrays))  # type: ignore[arg-type]


def _check_seed(seed: Any) -> int:
    seed = check_int(seed, "seed", low=0)
    if seed >= 2**32:  # numpy.random.seed's range
        raise XbpValueError(f"seed={seed} is too large; pass an integer below 2**32")
    return seed


def load_mnist1d(seed: int = SEED, *, path: str | os.PathLike[str] | None = None) -> Split:
    """MNIST-1D's standard split: 4,000 training and 1,000 test signals of 40 points.

    Made by the ``mnist1d`` package's offline generator,
    ``make_dataset(get_dataset_args())`` with ``seed``; the package's download
    path is never used. Generating takes a few seconds (about 8 s on one
    core); pass ``path`` to keep the result in an ``.npz`` file and read it
    from there next time.

    Parameters
    ----------
    seed : int
        The generator's seed, 0 <= seed < 2**32. The default, 42, is the
        published data set's; the same seed always gives the same arrays.
    path : str or Path, optional
        A cache file: read when it exists (it must have been written by this
        function with the same seed), else written (atomically) after
        generating. None (the default) writes nothing.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        ``x`` float64 of shape (n, 40), standardised over the whole set by
        the generator; ``y`` int64 class labels 0..9.

    Raises
    ------
    XbpValueError
        ``mnist1d`` is not installed, ``seed`` is out of range, or ``path``
        holds data made with another seed.
    XbpFileError
        ``path`` exists but is not a file this function wrote.

    Notes
    -----
    The generator seeds Python's and NumPy's global random generators; their
    states are restored afterwards, so calling this changes no random stream
    of the caller's.

    Published reference (Greydanus & Kobak, ICML 2024): logistic regression
    about 32% test accuracy, an MLP about 68%; ``xbp.mlp([40, 100, 100, 10],
    activation="relu", loss="cross_entropy")`` trained with Adam reproduces
    the MLP row (docs/data.md, "MNIST-1D").

    Examples
    --------
    >>> from xbp.data.mnist1d import load_mnist1d
    >>> (x_train, y_train), (x_test, y_test) = load_mnist1d()
    >>> x_train.shape, x_test.shape, sorted(set(y_test.tolist())) == list(range(10))
    ((4000, 40), (1000, 40), True)
    """
    seed = _check_seed(seed)
    target = None
    if path is not None:
        target = as_path(path, "path")
        if target.exists() or target.is_symlink():
            arguments = _describe_arguments(_arguments(seed))
            files = _read_cache(input_file(target, "path", "an MNIST-1D file"), seed, arguments)
            return (files["x_train"], files["y_train"]), (files["x_test"], files["y_test"])
        output_file(target, "path")  # before the seconds of work: the file can be written
    arrays, arguments = _generate(seed)
    if target is not None:
        meta = {"format": _FORMAT, "seed": seed, "arguments": arguments}
        _write_cache(target, arrays, meta)
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def load_mnist1d_joined(
    seed: int = SEED, *, path: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 MNIST-1D samples as one ``(x, y)``: the training rows, then the test rows.

    For code that makes its own split (``xbp train --data mnist1d``); the
    standard test set is the last 1,000 rows. Arguments as :func:`load_mnist1d`.

    Examples
    --------
    >>> from xbp.data.mnist1d import load_mnist1d_joined
    >>> x, y = load_mnist1d_joined()
    >>> x.shape, y.shape
    ((5000, 40), (5000,))
    """
    (x_train, y_train), (x_test, y_test) = load_mnist1d(seed, path=path)
    return np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
