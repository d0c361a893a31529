"""Run under mpiexec: BatchNorm trained over MPI ranks, rank 0 writes what it learned.

    python train_batchnorm.py BACKEND OUT CASE MODE

CASE: ``bn`` (``mlp([8, 16, 16, 3], norm="batch")``), ``bn-dropout-weighted``
(the same with dropout and row weights) or ``bn-bf16`` (``bn`` under
``precision="bf16"``: the statistics are summed in the low type). MODE:
``single`` (one process, no MPI), ``parallel`` (``MPIStrategy`` with
``compile=None``, which runs eagerly under MPI with BatchNorm) or ``compile``
(``compile=True``: every rank must raise the same one-line error; rank 0
prints each rank's, and every rank exits 0).

34 training rows in batches of 11: the shares of a batch are uneven (6 + 5, or
4 + 4 + 3) and the last batch has one row, so every rank but rank 0 computes
none of it. The 9 validation rows are shared unevenly too. Ranks other than
rank 0 build their network from another seed and with other running
statistics: every rank must start from rank 0's (broadcast). Exits non-zero
when the ranks' weights or running statistics are not bitwise equal.
"""

import sys

import numpy as np

import xbp

backend, out, case, mode = sys.argv[1:5]
if backend == "jax":
    import jax

    jax.config.update("jax_enable_x64", True)
strategy = None
rank = 0
if mode != "single":  # the launcher's engine: mpiexec or torchrun
    import engine

    strategy = engine.strategy()
    rank = strategy.rank
rng = np.random.default_rng(0)
x = rng.normal(size=(43, 8)) * rng.uniform(0.5, 3.0, size=8) + rng.normal(size=8)
y = (x[:, :3].sum(axis=1) > 0.5).astype(np.int64) + (x[:, 3] > 1)
w = rng.integers(0, 4, size=43).astype(np.float64) if case == "bn-dropout-weighted" else None
dropout = 0.3 if case == "bn-dropout-weighted" else 0.0
net = xbp.mlp(
    [8, 16, 16, 3],
    activation="relu",
    loss="cross_entropy",
    norm="batch",
    dropout=dropout,
    backend=backend,
    seed=3 + 10 * rank,  # rank 0's weights are broadcast
)
if rank:  # and rank 0's running statistics
    net.state = [{k: v + 0.5 for k, v in s.items()} for s in net.host_state()]
options = dict(
    precision="bf16" if case == "bn-bf16" else None,
    epochs=4,
    batch_size=11,
    optimizer=xbp.optim.momentum(0.05),
    seed=2,
    progress=False,
    validation_split=0.2,
    sample_weight=w,
)
if mode == "compile":
    try:
        xbp.fit(net, x, y, compile=True, strategy=strategy, **options)
    except xbp.XbpError as exc:
        # every rank raised: none waits in a collective, so rank 0 gathers the lines
        # (two processes' prints could interleave)
        lines = engine.allgather(f"rank {rank} caught: {exc}") if strategy else []
        if rank == 0:
            print("\n".join(lines), flush=True)
        sys.exit(0)
    sys.exit(f"rank {rank}: compile=True trained BatchNorm under MPI")
hist = xbp.fit(net, x, y, strategy=strategy, compile=None, **options)
arrays = {f"p{i}{k}": v for i, p in enumerate(net.host_params()) for k, v in p.items()}
arrays.update({f"s{i}{k}": v for i, s in enumerate(net.host_state()) for k, v in s.items()})
if strategy is not None:
    for i, theirs in enumerate(engine.allgather(arrays)):
        for key, mine in arrays.items():
            if not np.array_equal(mine, theirs[key]):
                sys.exit(f"rank {rank}'s {key} differs from rank {i}'s")
# validation and evaluation run on the running statistics
for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
    arrays[key] = np.array(hist[key])
arrays["evaluate"] = np.array(list(xbp.evaluate(net, x, y).values()))
arrays["predict"] = np.asarray(net.backend.to_host(net.predict(x)))
if rank == 0:
    np.savez(out, **arrays)
