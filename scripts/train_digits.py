#!/usr/bin/env python
"""Train on the bundled 8x8 digits, on any backend and device.

python scripts/train_digits.py                                   # NumPy, CPU
python scripts/train_digits.py --backend cupy --device 0         # CuPy, first GPU
python scripts/train_digits.py --backend torch --device cuda
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
    p.add_argument("--dtype", default="float32")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    device = int(args.device) if args.device and args.device.isdigit() else args.device

    x, y = xbp.data.load_digits()
    (xtr, ytr), (xva, yva), (xte, yte) = xbp.data.train_val_test_split(x, y, seed=args.seed)
    xtr, xva, xte, _, _ = xbp.data.standardize(xtr, xva, xte)
    net = xbp.mlp(
        [64, 256, 10],
        activation="relu",
        loss="cross_entropy",
        backend=args.backend,
        device=device,
        dtype=args.dtype,
        seed=args.seed,
    )
    steps = args.epochs * -(-len(ytr) // 16)
    opt = xbp.optim.adamw(xbp.optim.cosine(2e-3, steps), weight_decay=0.1)
    t0 = time.perf_counter()
    xbp.fit(
        net,
        xtr,
        ytr,
        epochs=args.epochs,
        batch_size=16,
        optimizer=opt,
        validation_data=(xva, yva),
        seed=args.seed,
        progress=False,
    )
    res = xbp.evaluate(net, xte, yte)
    print(f"{net!r}\ntest accuracy {res['accuracy']:.4f} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
