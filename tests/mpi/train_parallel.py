"""Run under mpiexec: train K epochs with comm=COMM_WORLD, rank 0 writes the weights."""

import sys

import numpy as np
from mpi4py import MPI

import xbp

backend, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
if backend == "jax":
    import jax

    jax.config.update("jax_enable_x64", True)
comm = MPI.COMM_WORLD
rng = np.random.default_rng(0)
x = rng.normal(size=(103, 5))  # 103 rows, batch 16: the last batch has 7, shares are uneven
y = (x[:, :3].sum(axis=1) > 0).astype(np.int64) + (x[:, 3] > 1)
net = xbp.mlp([5, 8, 3], activation="tanh", loss="cross_entropy", backend=backend, seed=4)
if mode == "fail" and comm.Get_rank() == 1:
    y = y + 10  # a bad label on one rank only
opt = xbp.optim.momentum(0.1) if mode != "sgd" else xbp.optim.sgd(0.3)
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
    comm=comm if mode != "single" else None,
)
if comm.Get_rank() == 0:
    arrays = {f"{i}{k}": v for i, p in enumerate(net.host_params()) for k, v in p.items()}
    arrays["val_loss"] = np.array(hist["val_loss"])
    arrays["accuracy"] = np.array(hist["accuracy"])
    np.savez(out, **arrays)
