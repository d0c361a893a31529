"""Run under ``mpiexec -n 2`` or ``torchrun --nproc_per_node 2``: ranks that disagree,
fail or stop responding (tests/test_distributed.py, tests/test_torchrun.py).

``disagree`` runs several fits in one job and prints one line per fit and
rank (``NAME: rank R caught: MESSAGE`` or ``NAME: rank R trained E epochs``);
``before``, ``inside``, ``after`` and ``stuck`` end the job (non-zero) when
a rank fails before, inside or after ``fit``, or never finishes; ``sigkill``
and ``sigstop`` kill or stop rank 1 in its fifth step (the others end the job
after the 2 s timeout).
"""

import os
import signal
import sys
import time

import engine
import numpy as np

import xbp
from xbp.parallel.mpi import RanksDisagreeError, collective_guard

scenario = sys.argv[1]
# seconds in one collective: small where a test waits for it (a failure, a stopped rank), so
# that the tests are quick; "disagree" never waits for it (each fit ends at the handshake),
# and there a rank slowed by a loaded machine is no failure
TIMEOUT = 20.0 if scenario == "disagree" else 2.0
if scenario not in ("before",):  # "before" fails before any collective exists
    first = engine.strategy(timeout=TIMEOUT)  # under torchrun: the process group
rank = engine.rank()
rng = np.random.default_rng(0)
x = rng.normal(size=(40, 3))
y = (x[:, 0] > 0).astype(np.int64)


def attempt(name: str, dtype: str = "float64", strategy=None, sizes=(3, 4, 2), **options):
    """One fit with per-rank options; prints what happened on this rank."""
    options = {"epochs": 2, "batch_size": 8, "seed": 0, "progress": False, **options}
    data = options.pop("x", x)
    net = xbp.mlp(list(sizes), loss="cross_entropy", dtype=dtype, seed=0)
    strategy = strategy or engine.strategy(timeout=TIMEOUT)
    try:
        hist = xbp.fit(net, data, y, strategy=strategy, **options)
    except RanksDisagreeError as exc:
        line = f"{name}: rank {rank} caught: {exc}"
    else:
        line = f"{name}: rank {rank} trained {len(hist)} epochs"
    lines = engine.allgather(line)  # rank 0 prints: lines of two processes could interleave
    if rank == 0:
        print("\n".join(lines), flush=True)


def signal_in_step(sig: int, step: int = 5):
    """A strategy whose rank 1 sends itself ``sig`` in its ``step``-th exchange."""
    strategy = engine.strategy(timeout=TIMEOUT)
    exchange, calls = strategy.reduce_grads, []

    def reduce_grads(cost, grads):
        calls.append(1)
        if rank == 1 and len(calls) == step:
            os.kill(os.getpid(), sig)
        return exchange(cost, grads)

    strategy.reduce_grads = reduce_grads
    return strategy


if scenario == "disagree":  # every rank raises; the job goes on
    attempt("epochs", epochs=2 + rank)
    attempt("layers", sizes=(3, 4 + rank, 2))
    attempt(
        "several",
        dtype=("float64", "float32")[rank],
        batch_size=8 + rank,
        seed=rank,
        validation_split=0.1 * (1 + rank),
    )
    attempt("data", x=x + rank)  # same shape, other values
    # a row weight that differs on one row only, and other class weights
    w = np.ones(len(y))
    w[17] += rank
    attempt("sample_weight", sample_weight=w)
    attempt("class_weight", class_weight={0: 1.0, 1: 1.0 + rank})
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
elif scenario in ("sigkill", "sigstop"):  # rank 1 dies or stops in the middle of epoch 1
    sig = signal.SIGKILL if scenario == "sigkill" else signal.SIGSTOP
    with collective_guard():
        attempt(scenario, strategy=signal_in_step(sig), epochs=3)
else:
    raise SystemExit(f"unknown scenario {scenario!r}")
