#!/usr/bin/env python
"""Train an MLP on MNIST (or Fashion-MNIST) IDX files, on any backend.

    python scripts/train_mnist.py --backend cupy --device 0 --data ~/mnist
    python scripts/train_mnist.py --backend torch --device cuda --data ~/fashion
    python scripts/train_mnist.py --backend numpy --data ~/mnist        # CPU, unchanged
    python scripts/train_mnist.py --data ~/mnist --mmap    # IDX files read in place, streamed
    python scripts/train_mnist.py --synthetic --epochs 2   # no files: IDX-shaped made-up digits

The directory holds train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz];
when t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] are there too they
are the test set, otherwise the last sixth of the training files is held out.
``--synthetic`` writes such a directory first (28x28 uint8 images whose class
decides which of ten patches is bright, plus noise; 6000 train and 1000 t10k
images by default) and then runs the same code path as real files.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import xbp


def write_synthetic(directory: Path, n_train: int, n_test: int, seed: int) -> None:
    """MNIST-format files of made-up digits: class k lights patch k of a 28x28 image."""
    rng = np.random.default_rng(seed)
    for kind, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 96, (n, 28, 28)).astype(np.uint8)  # background noise
        for k in range(10):
            r, c = divmod(k, 4)  # ten 7x7 patches on a 4x3 grid
            rows = np.flatnonzero(labels == k)
            patch = images[rows, 7 * r : 7 * r + 7, 7 * c : 7 * c + 7]
            images[rows, 7 * r : 7 * r + 7, 7 * c : 7 * c + 7] = np.maximum(patch, 160)
        xbp.data.write_idx(directory / f"{kind}-images-idx3-ubyte", images)
        xbp.data.write_idx(directory / f"{kind}-labels-idx1-ubyte", labels)


def test_set(directory: Path, x: object, y: np.ndarray, mmap: bool) -> tuple[object, ...]:
    """(x_train, y_train, x_test, y_test, name): the t10k files when present."""
    try:
        x_test, y_test = xbp.data.load_mnist(directory, "t10k", mmap=mmap)
    except xbp.errors.XbpFileNotFoundError:
        if mmap:
            raise SystemExit("--mmap needs the t10k files as the test set in --data") from None
        n = len(y) - len(y) // 6
        return x[:n], y[:n], x[n:], y[n:], "held-out train rows (no t10k files)"  # type: ignore[index]
    return x, y, x_test, y_test, "t10k"


#: the most synthetic images per file (784 bytes each: 1e6 rows are 784 MB)
MAX_SYNTHETIC_ROWS = 1_000_000


def counts(text: str, what: str, n: int | None = None, high: int | None = None) -> list[int]:
    """Comma-separated positive integers (``n`` of them when given), for argparse: a bad
    value is one usage line, never a traceback, and is refused before anything is made."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or (n is not None and len(values) != n) or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give {n or 'one or more'} positive integers separated by commas ({what})"
        )
    if high is not None and max(values) > high:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {high} each ({what})")
    return values


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backend", default="numpy")
    p.add_argument("--device", default=None)
    p.add_argument("--data", default=None, help="directory of MNIST-format IDX files")
    p.add_argument("--synthetic", action="store_true", help="make IDX files first (no download)")
    p.add_argument(
        "--synthetic-rows",
        default=[6000, 1000],
        type=lambda t: counts(t, "train,t10k images", 2, MAX_SYNTHETIC_ROWS),
        help="train,t10k images",
    )
    p.add_argument("--mmap", action="store_true", help="read uncompressed IDX files in place")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--layers", default=[512, 256], type=lambda t: counts(t, "hidden widths"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None)
    args = p.parse_args()
    if args.data is None and not args.synthetic:
        p.error("give --data DIRECTORY (MNIST IDX files) or --synthetic")
    if args.data is not None and args.synthetic:
        # the synthetic files would replace the MNIST files of that directory
        p.error("--synthetic writes its own files to a temporary directory; drop --data")
    device = int(args.device) if args.device and args.device.isdigit() else args.device

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(args.data) if args.data else Path(tmp)
        if args.synthetic:
            n_train, n_test = args.synthetic_rows
            write_synthetic(directory, n_train, n_test, args.seed)
            print(f"wrote synthetic IDX files to {directory}")
        x, y = xbp.data.load_mnist(directory, "train", mmap=args.mmap)
        x, y, x_test, y_test, which = test_set(directory, x, y, args.mmap)
        hidden = args.layers
        net = xbp.mlp(
            [784, *hidden, 10],
            activation="relu",
            loss="cross_entropy",
            backend=args.backend,
            device=device,
            dtype=args.dtype,
            seed=args.seed,
        )
        print(net)
        print(f"train {len(y)} rows, test {len(y_test)} rows ({which})")
        t0 = time.perf_counter()
        xbp.fit(
            net,
            x,
            y,
            epochs=args.epochs,
            batch_size=args.batch_size,
            optimizer=xbp.optim.adam(args.lr),
            validation_data=(x_test, y_test),
            seed=args.seed,
        )
        result = xbp.evaluate(net, x_test, y_test)
        print(f"trained in {time.perf_counter() - t0:.1f} s; test {result}")
    if args.save:
        xbp.save(net, args.save)  # loads on any backend, e.g. a CPU-only machine
        print(f"saved {args.save}")


if __name__ == "__main__":
    main()
