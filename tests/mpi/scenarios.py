"""Run under ``mpiexec -n 2``: ranks that disagree or fail (tests/test_distributed.py).

``disagree`` runs several fits in one job and prints one line per fit and
rank (``NAME: rank R caught: MESSAGE`` or ``NAME: rank R trained E epochs``);
``before``, ``inside``, ``after`` and ``stuck`` end the job (non-zero) when
a rank fails before, inside or after ``fit``, or never finishes.
"""

import sys
import time

import numpy as np
from mpi4py import MPI

import xbp
from xbp.distributed import RanksDisagreeError, collective_guard

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
scenario = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.normal(size=(40, 3))
y = (x[:, 0] > 0).astype(np.int64)


def attempt(name: str, dtype: str = "float64", **options) -> None:
    """One fit with per-rank options; prints what happened on this rank."""
    options = {"epochs": 2, "batch_size": 8, "seed": 0, "progress": False, **options}
    data = options.pop("x", x)
    net = xbp.mlp([3, 4, 2], loss="cross_entropy", dtype=dtype, seed=0)
    try:
        hist = xbp.fit(net, data, y, comm=comm, **options)
    except RanksDisagreeError as exc:
        line = f"{name}: rank {rank} caught: {exc}"
    else:
        line = f"{name}: rank {rank} trained {len(hist)} epochs"
    lines = comm.gather(line)  # rank 0 prints: lines of two processes could interleave
    if rank == 0:
        print("\n".join(lines), flush=True)


if scenario == "disagree":  # every rank raises; the job goes on
    attempt("epochs", epochs=2 + rank)
    attempt(
        "several",
        dtype=("float64", "float32")[rank],
        batch_size=8 + rank,
        seed=rank,
        validation_split=0.1 * (1 + rank),
    )
    attempt("data", x=x + rank)  # same shape, other values
    # rank 1 stops after epoch 2 (no improvement by 1e9); rank 0 would go on
    stopper = xbp.EarlyStopping(
        patience=0 if rank else 100,
        min_delta=1e9 if rank else 0.0,
        monitor="loss",
        restore_best=False,
    )
    attempt("stop", epochs=6, callbacks=[stopper])
    attempt("agree")
elif scenario == "before":  # a data file missing on rank 1, before fit
    with collective_guard():
        if rank == 1:
            open("/nonexistent/xbp-data.csv")
        attempt("before")
elif scenario == "inside":  # a callback fails on rank 1 after the first epoch

    class Failing(xbp.Callback):
        def on_epoch_end(self, trainer, logs):
            if rank == 1:
                raise RuntimeError("callback failed on purpose")

    attempt("inside", callbacks=[Failing()])
elif scenario == "after":  # saving fails on rank 0 after fit; rank 1 finished
    with collective_guard():
        attempt("after")
        if rank == 0:
            raise OSError("disk full while writing model.npz")
elif scenario == "stuck":  # rank 1 never finishes; rank 0 gives up after 2 s
    with collective_guard(finish_timeout=2.0):
        attempt("stuck")
        if rank == 1:
            time.sleep(120)
else:
    raise SystemExit(f"unknown scenario {scenario!r}")
