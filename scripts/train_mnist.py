#!/usr/bin/env python
"""Train an MLP on MNIST (or Fashion-MNIST) IDX files, on any backend.

    python scripts/train_mnist.py --backend cupy --device 0 --data ~/mnist
    python scripts/train_mnist.py --backend torch --device cuda --data ~/fashion
    python scripts/train_mnist.py --backend numpy --data ~/mnist        # CPU, unchanged

The directory holds train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz].
"""

from __future__ import annotations

import argparse
import time

import xbp


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backend", default="numpy")
    p.add_argument("--device", default=None)
    p.add_argument("--data", required=True, help="directory of MNIST-format IDX files")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--layers", default="512,256")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None)
    args = p.parse_args()
    device = int(args.device) if args.device and args.device.isdigit() else args.device

    x, y = xbp.data.load_mnist(args.data, "train")
    x_test, y_test = xbp.data.load_mnist(args.data, "t10k")
    hidden = [int(v) for v in args.layers.split(",")]
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
    print(f"trained in {time.perf_counter() - t0:.1f} s; test {xbp.evaluate(net, x_test, y_test)}")
    if args.save:
        xbp.save(net, args.save)  # loads on any backend, e.g. a CPU-only machine
        print(f"saved {args.save}")


if __name__ == "__main__":
    main()
