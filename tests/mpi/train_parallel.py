"""Run under mpiexec or torchrun: train 3 epochs data-parallel, rank 0 writes the weights.

    python train_parallel.py BACKEND OUT MODE [EXCHANGE [VARIANT]]
    python train_parallel.py --cases OUTDIR BACKEND:MODE:EXCHANGE:VARIANT ...

MODE: ``momentum``, ``sgd`` (the fused SGD path), ``adam`` or ``fail`` (bad
labels on rank 1); ``single``, ``single-sgd``, ``single-adam``: one process, no
launcher (``single`` with momentum). EXCHANGE: ``default`` (overlapped,
default buckets), ``layers`` (overlapped, a bucket per layer) or ``blocking``
(one exchange after the backward pass). VARIANT: ``plain`` or
``dropout-weighted`` (dropout and row weights) or ``mapped`` (the features
memory-mapped from a file: streamed). ``--cases`` trains several
jobs in one launch (one process start for all), each to ``OUTDIR/CASE.npz``
with ``:`` replaced by ``-``. Exits non-zero when the ranks' weights are not
bitwise equal. The engine is the launcher's (tests/mpi/engine.py).
"""

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import xbp  # noqa: E402

STRATEGIES: dict = {}


def train(backend: str, out: str, mode: str, exchange: str = "default", variant: str = "plain"):
    if backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    if backend == "torch":
        import torch

        torch.set_num_threads(1)
    strategy = None
    parallel = not mode.startswith("single")
    mode = mode.removeprefix("single").removeprefix("-")
    if parallel:
        import engine

        kinds = {"default": {}, "layers": {"bucket_bytes": 1}, "blocking": {"overlap": False}}
        strategy = engine.strategy(**kinds[exchange])
    rank = 0 if strategy is None else strategy.rank
    rng = np.random.default_rng(0)
    x = rng.normal(size=(103, 5))  # 103 rows, batch 16: the last batch has 7, uneven shares
    y = (x[:, :3].sum(axis=1) > 0).astype(np.int64) + (x[:, 3] > 1)
    weights = rng.uniform(0.2, 2.0, size=len(y)) if variant == "dropout-weighted" else None
    if variant == "mapped":  # a memory map: streamed, each rank reads its share's rows
        path = os.path.join(os.path.dirname(out) or ".", f"x-{os.getpid()}.npy")
        np.save(path, x)
        x = np.load(path, mmap_mode="r")
    # 64x48 float64 weights (24 KiB) are summed in place on NumPy, the others staged
    net = xbp.mlp(
        [5, 64, 48, 3],
        activation="tanh",
        loss="cross_entropy",
        backend=backend,
        seed=4,
        dropout=0.2 if variant == "dropout-weighted" else 0.0,
    )
    if mode == "fail" and rank == 1:
        y = y + 10  # a bad label on one rank only
    opts = {"sgd": xbp.optim.sgd(0.3), "adam": xbp.optim.adam(0.01)}
    hist = xbp.fit(
        net,
        x,
        y,
        epochs=3,
        batch_size=16,
        optimizer=opts.get(mode, xbp.optim.momentum(0.1)),
        seed=2,
        progress=False,
        validation_split=0.2,
        strategy=strategy,
        sample_weight=weights,
    )
    params = [v for p in net.host_params() for v in p.values()]
    if strategy is not None:
        for i, theirs in enumerate(engine.allgather(params)):
            for mine, other in zip(params, theirs):
                if not np.array_equal(mine, other):
                    sys.exit(f"rank {rank}'s weights differ from rank {i}'s")
    if rank == 0:
        arrays = {f"{i}{k}": v for i, p in enumerate(net.host_params()) for k, v in p.items()}
        arrays["val_loss"] = np.array(hist["val_loss"])
        arrays["accuracy"] = np.array(hist["accuracy"])
        np.savez(out, **arrays)


if sys.argv[1] == "--cases":
    for case in sys.argv[3:]:
        train(
            *case.split(":")[:1],
            os.path.join(sys.argv[2], case.replace(":", "-") + ".npz"),
            *case.split(":")[1:],
        )
else:
    train(*sys.argv[1:])
