"""Run under mpiexec: train 3 epochs with MPI, rank 0 writes the weights.

    python train_parallel.py BACKEND OUT MODE [EXCHANGE]

MODE: ``single`` (one process, no MPI), ``momentum``, ``sgd`` (the fused
SGD path) or ``fail`` (bad labels on rank 1). EXCHANGE: ``default``
(overlapped, default buckets), ``layers`` (overlapped, a bucket per layer) or
``blocking`` (one exchange after the backward pass). Exits non-zero when the
ranks' weights are not bitwise equal.
"""

import sys

import numpy as np
from mpi4py import MPI

import xbp
from xbp.distributed import MPIStrategy

backend, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
exchange = sys.argv[4] if len(sys.argv) > 4 else "default"
if backend == "jax":
    import jax

    jax.config.update("jax_enable_x64", True)
comm = MPI.COMM_WORLD
rng = np.random.default_rng(0)
x = rng.normal(size=(103, 5))  # 103 rows, batch 16: the last batch has 7, shares are uneven
y = (x[:, :3].sum(axis=1) > 0).astype(np.int64) + (x[:, 3] > 1)
# 64x48 float64 weights (24 KiB) are summed in place on NumPy, the others staged
net = xbp.mlp([5, 64, 48, 3], activation="tanh", loss="cross_entropy", backend=backend, seed=4)
if mode == "fail" and comm.Get_rank() == 1:
    y = y + 10  # a bad label on one rank only
opt = xbp.optim.momentum(0.1) if mode != "sgd" else xbp.optim.sgd(0.3)
strategy = None
if mode != "single":
    kinds = {"default": {}, "layers": {"bucket_bytes": 1}, "blocking": {"overlap": False}}
    strategy = MPIStrategy(comm, **kinds[exchange])
hist = xbp.fit(
    net,
    x,
    y,
    epochs=3,
    batch_size=16,
    optimizer=opt,
    seed=2,
    progress=False,
    validation_split=0.2,
    strategy=strategy,
)
params = [v for p in net.host_params() for v in p.values()]
if mode != "single":
    for i, theirs in enumerate(comm.allgather(params)):
        for mine, other in zip(params, theirs):
            if not np.array_equal(mine, other):
                sys.exit(f"rank {comm.Get_rank()}'s weights differ from rank {i}'s")
if comm.Get_rank() == 0:
    arrays = {f"{i}{k}": v for i, p in enumerate(net.host_params()) for k, v in p.items()}
    arrays["val_loss"] = np.array(hist["val_loss"])
    arrays["accuracy"] = np.array(hist["accuracy"])
    np.savez(out, **arrays)
