#!/usr/bin/env python
"""Compiled versus eager training on the CPU: digits, float32, 64-256-10 ReLU, batch 32.

    python scripts/bench_compile.py [--epochs 40] [--repeat 3]

Reports, per backend: the first fit of one epoch (for JAX: the compilation of
the epoch, once per network shape and batch size, plus JAX's per-shape
compilation of the small eager operations around it), a second one-epoch fit
(the compiled epoch reused), and the median of ``--repeat`` fits of
``--epochs`` epochs with new networks of the same shape.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import xbp


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    x, y = xbp.data.load_digits()
    x = (x / 16).astype(np.float32)
    # compiled JAX before eager JAX: its first fit then pays every compilation itself
    runs = [("numpy", False), ("jax", True), ("jax", False)]
    results = {}
    for name, compile in runs:
        try:
            xbp.backend(name)
        except xbp.XbpError as exc:
            print(f"{name}: skipped ({exc})")
            continue

        def fit(epochs: int, seed: int, name: str = name, compile: bool = compile) -> float:
            net = xbp.mlp(
                [64, 256, 10],
                activation="relu",
                loss="cross_entropy",
                backend=name,
                dtype="float32",
                seed=seed,
            )
            t = time.perf_counter()
            xbp.fit(net, x, y, epochs=epochs, batch_size=32, progress=False, compile=compile)
            net.backend.sync()  # wait for asynchronous backends
            return time.perf_counter() - t

        first = fit(1, 0)
        second = fit(1, 1)
        if name == "jax" and not compile:
            epochs = max(1, args.epochs // 10)  # eager JAX is slow: time fewer epochs
        else:
            epochs = args.epochs
        many = statistics.median(fit(epochs, 2 + r) for r in range(args.repeat))
        per_epoch = many / epochs
        label = f"{name} {'compiled' if compile else 'eager'}"
        results[label] = per_epoch
        print(
            f"{label:<14} first 1-epoch fit {first:6.2f} s   second {second:6.3f} s   "
            f"{epochs} epochs {many:6.2f} s ({per_epoch * 1e3:6.1f} ms/epoch)"
        )
    for a, b in (("jax compiled", "numpy eager"), ("jax compiled", "jax eager")):
        if a in results and b in results:
            print(f"{a} / {b} per epoch: {results[a] / results[b]:.3f}")


if __name__ == "__main__":
    main()
