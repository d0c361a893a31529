"""Seconds for 3 epochs of the digits network on torch's CPU with n threads.

Usage: python scripts/bench_threads.py 1 0 1 0   (0: torch's default, one per core)
Each argument is one run, in order, so alternating runs share the machine's load.
"""

from __future__ import annotations

import sys
import time

import torch

import xbp


def run(threads: int) -> float:
    if threads:
        torch.set_num_threads(threads)
    x, y = xbp.data.load_digits()
    net = xbp.mlp([64, 256, 10], activation="relu", loss="cross_entropy", backend="torch", seed=0)
    t = time.perf_counter()
    xbp.fit(net, x, y, epochs=3, batch_size=16, optimizer="adam", progress=False)
    return time.perf_counter() - t


if __name__ == "__main__":
    default = torch.get_num_threads()
    for arg in sys.argv[1:] or ["1", "0"]:
        n = int(arg)
        torch.set_num_threads(default)
        seconds = run(n)
        print(f"threads={torch.get_num_threads()}: {seconds:.2f} s for 3 epochs")
