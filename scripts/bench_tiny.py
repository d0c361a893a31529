#!/usr/bin/env python
"""The tiny 2-4-1 public call against hand-written NumPy (issue 24, deliverable 6).

Times, interleaved round by round (so machine noise hits every contender
alike), the median of one call of:

* ``hand``: a hand-written NumPy forward + backward of a 2-4-1 sigmoid network
  with the quadratic cost (``--loss binary_cross_entropy``: that loss, whose rule
  on the targets the public call applies too) (no checks, no update): the floor;
* ``backprop``: the public ``net.backprop(x, y)`` on host NumPy data (every
  input check included);
* ``value_and_grad``: ``net.value_and_grad(xd, yd)`` on inputs checked once.

Run it with one BLAS thread on a quiet machine (``uptime`` first)::

    OPENBLAS_NUM_THREADS=1 python scripts/bench_tiny.py --batch 16 --repeat 20000
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import xbp


def hand_step(
    x: np.ndarray, y: np.ndarray, w: list[dict[str, np.ndarray]], loss: str = "quadratic"
) -> Any:
    """Forward + backward of the 2-4-1 sigmoid net, quadratic cost (or binary
    cross-entropy), written by hand."""
    n = x.shape[0]
    a1 = 1.0 / (1.0 + np.exp(-(x @ w[0]["W"] + w[0]["b"])))
    a2 = 1.0 / (1.0 + np.exp(-(a1 @ w[1]["W"] + w[1]["b"])))
    r = a2 - y
    if loss == "quadratic":
        cost = 0.5 * float((r * r).sum()) / n
        d2 = r / n * a2 * (1.0 - a2)
    else:
        cost = -float((y * np.log(a2) + (1.0 - y) * np.log(1.0 - a2)).sum()) / n
        d2 = r / n
    d1 = (d2 @ w[1]["W"].T) * a1 * (1.0 - a1)
    return cost, [
        {"W": x.T @ d1, "b": d1.sum(0)},
        {"W": a1.T @ d2, "b": d2.sum(0)},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=20000, help="rounds (one call each)")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument(
        "--loss",
        default="quadratic",
        choices=["quadratic", "binary_cross_entropy"],
        help="binary_cross_entropy also applies the loss's rule on the targets (in [0, 1])",
    )
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeat < 1:
        parser.error("--batch and --repeat must be >= 1")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, 2)).astype(args.dtype)
    y = (rng.random((args.batch, 1)) > 0.5).astype(args.dtype)
    net = xbp.mlp(
        [2, 4, 1],
        activation="sigmoid",
        output="sigmoid",
        loss=args.loss,
        dtype=args.dtype,
        seed=0,
    )
    w = net.host_params()
    xd, yd = net.check_inputs(x), net.check_targets(y, args.batch)
    # the three compute the same gradients: a benchmark of different work proves nothing
    ref = hand_step(x, y, w, args.loss)[1]
    for got in (net.backprop(x, y)[1], net.value_and_grad(xd, yd)[1]):
        for g, r in zip(got, ref):
            assert np.allclose(g["W"], r["W"]) and np.allclose(g["b"], r["b"])
    contenders: dict[str, Callable[[], Any]] = {
        "hand": lambda: hand_step(x, y, w, args.loss),
        "backprop": lambda: net.backprop(x, y),
        "value_and_grad": lambda: net.value_and_grad(xd, yd),
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    clock = time.perf_counter
    for _ in range(args.repeat):
        for name, fn in contenders.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
    print(
        f"2-4-1 sigmoid, {args.loss}, batch {args.batch}, {args.dtype}, "
        f"{args.repeat} interleaved rounds"
    )
    for name, us in med.items():
        print(f"{name:>15}: {us:7.2f} us  ({us / med['hand']:.2f}x hand)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
