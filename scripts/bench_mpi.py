#!/usr/bin/env python
"""Communication share of a data-parallel step, blocking and overlapped, and projected scaling.

    mpiexec -n 2 python scripts/bench_mpi.py [--case mid] [--steps 150] [--quantile 50]
                                             [--norm batch] [--engines mpi,torch]

Times, on every rank, three kinds of step on this rank's share of one global
batch, taking turns step by step in a random order (so that load from other
processes, and what the previous step left in the caches, fall on all three
alike):

* ``compute``: backprop on the share + SGD update, no exchange (what the step
  would cost if communication were free);
* ``blocking``: the same plus one exchange of every gradient and the loss
  after the backward pass (``MPIStrategy(overlap=False)``);
* ``overlapped``: the exchange started bucket by bucket during the backward
  pass (``MPIStrategy()``, the default; ``--bucket-bytes 4194304,1048576``
  times one overlapped kind per bucket size).

``--norm batch`` puts a BatchNorm after every hidden layer: the distributed
steps then also sum its batch statistics across ranks (three small blocking
``Allreduce`` per BatchNorm layer per step, counted in "in exchange"); the
compute-only step normalises by its share's own statistics.

``--engines mpi,torch`` times both engines in the same job, interleaved step
by step: each rank also joins a torch.distributed (gloo) process group made
from the MPI ranks (rank 0 picks a free port and broadcasts it), and the
blocking and overlapped kinds run once over MPI (``mpi ...``) and once over
gloo (``torch ...``; :class:`xbp.parallel.torchdist.TorchDistributedStrategy`).

The communication *not hidden* behind compute is ``step - compute``; the share
is that over the step. Every step starts after a barrier and lasts as long as
its slowest rank; the median over steps is reported (``--quantile 10``: a low
quantile, which on a machine shared with other work estimates the unloaded
times). Each rank uses one BLAS thread so that ranks do not fight over cores.
The scaling table is a projection from the overlapped numbers (compute shrinks
as 1/N, a ring Allreduce moves 2 (N-1)/N of the buffer), not a measurement.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import xbp  # noqa: E402
from xbp.parallel.mpi import BUCKET_BYTES, MPIStrategy  # noqa: E402
from xbp.parallel.strategy import LocalStrategy  # noqa: E402
from xbp.tools.bench import CASES, case_data  # noqa: E402


def timed(strategy):
    """``strategy`` with the time spent in its exchange calls added up in ``inside``."""
    strategy.inside = 0.0

    def clock(call):
        def timed_call(*args):
            t = time.perf_counter()
            out = call(*args)
            strategy.inside += time.perf_counter() - t
            return out

        return timed_call

    if strategy.grad_ready is not None:
        strategy.grad_ready = clock(strategy.grad_ready)
    strategy.reduce_grads = clock(strategy.reduce_grads)
    strategy.reduce_stats = clock(strategy.reduce_stats)
    return strategy


def torch_strategy(comm, **options):
    """A gloo process group over the same ranks as ``comm`` (for --engines ...,torch)."""
    import socket

    from xbp.parallel.torchdist import TorchDistributedStrategy

    if comm.Get_rank() == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    else:
        port = None
    os.environ.update(
        RANK=str(comm.Get_rank()),
        WORLD_SIZE=str(comm.Get_size()),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(comm.bcast(port)),
    )
    return TorchDistributedStrategy(**options)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--case", default="mid")
    p.add_argument("--steps", type=int, default=150, help="timed steps of each kind")
    p.add_argument("--quantile", type=float, default=50.0, help="percentile reported (50: median)")
    p.add_argument("--bucket-bytes", default=str(BUCKET_BYTES), help="comma list of sizes")
    p.add_argument("--norm", choices=["none", "batch"], default="none", help="BatchNorm or none")
    p.add_argument("--engines", default="mpi", help="comma list of mpi, torch (interleaved)")
    args = p.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    case = CASES[args.case]
    x, y = case_data(case)

    def trainer(strategy):
        net = xbp.mlp(
            case["sizes"],
            activation=case["act"],
            output=case["out"],
            loss=case["loss"],
            dtype=case["dtype"],
            norm=None if args.norm == "none" else args.norm,
            seed=0,
        )
        options = xbp.TrainOptions(
            optimizer=xbp.optim.sgd(0.01), batch_size=len(x), shuffle=False, max_retries=0
        )
        t = xbp.train.Trainer(net, options, strategy=strategy)
        strategy.setup(net, {"case": args.case})
        return t

    engines = args.engines.split(",")
    makers = {
        "mpi": lambda **o: MPIStrategy(comm, **o),
        "torch": lambda **o: torch_strategy(comm, **o),
    }
    kinds = {"compute": trainer(LocalStrategy())}
    buckets = [int(b) for b in args.bucket_bytes.split(",")]
    for engine in engines:
        prefix = "" if len(engines) == 1 else f"{engine} "
        kinds[f"{prefix}blocking"] = trainer(timed(makers[engine](overlap=False)))
        for b in buckets:
            name = "overlapped" if len(buckets) == 1 else f"ovl {b / 2**20:g} MiB"
            kinds[prefix + name] = trainer(timed(makers[engine](bucket_bytes=b)))
    net = kinds["compute"].net
    xd, yd = net.check_inputs(x), net.check_targets(y, len(x))
    lo, hi = kinds[list(kinds)[1]].strategy.share(0, len(x))
    xb, yb = xd[lo:hi, ...], yd[lo:hi, ...]
    step: dict[str, list[float]] = {k: [] for k in kinds}
    inside: dict[str, list[float]] = {k: [] for k in kinds}
    for i in range(args.steps + 5):  # 5 to warm up
        names = list(kinds)
        order = np.random.default_rng(i).permutation(len(names))  # the same on every rank
        for kind in [names[j] for j in order]:
            t = kinds[kind]
            s = t.strategy
            if hasattr(s, "inside"):
                s.inside = 0.0
            comm.Barrier()
            t0 = time.perf_counter()
            t.train_step(xb, yb, len(x))
            if i >= 5:
                step[kind].append(time.perf_counter() - t0)
                inside[kind].append(getattr(s, "inside", 0.0))
    # a step takes as long as its slowest rank: the maximum over ranks of each step's time
    all_step, all_in = comm.gather(step), comm.gather(inside)
    if rank != 0:
        return

    def quantile(per_rank: list[dict[str, list[float]]], k: str) -> float:
        slowest = np.max([r[k] for r in per_rank], axis=0)
        return float(np.percentile(slowest, args.quantile))

    s = {k: quantile(all_step, k) for k in kinds}
    c = {k: quantile(all_in, k) for k in kinds}
    what = "medians" if args.quantile == 50 else f"{args.quantile:g}th percentiles"
    n_params = sum(int(np.prod(v.shape)) for p_ in net.params for v in p_.values()) + 1
    itemsize = np.dtype(case["dtype"]).itemsize
    print(
        f"case {args.case}: {case['sizes']}, global batch {len(x)}, {case['dtype']}, "
        f"{size} ranks, exchange {n_params * itemsize / 2**20:.2f} MiB, norm {args.norm}, "
        f"buckets of {', '.join(f'{b / 2**20:g}' for b in buckets)} MiB; {what} of "
        f"{args.steps} steps, "
        "slowest rank"
    )
    print(f"{'':20s} {'step ms':>8s} {'in exchange ms':>15s} {'not hidden ms':>14s} {'share':>6s}")
    for k in kinds:
        exposed = s[k] - s["compute"]
        print(
            f"{k:20s} {s[k] * 1e3:8.2f} {c[k] * 1e3:15.2f} {exposed * 1e3:14.2f} "
            f"{100 * exposed / s[k]:5.1f}%"
        )
    compute = s["compute"]
    first = list(kinds)[2]  # the first bucket size given (of the first engine)
    exposed = max(s[first] - compute, 0.0)
    one_rank = compute * size  # the whole batch on one rank
    print(f"\nprojected from the {first} step (not measured): N ranks, same global batch")
    print(" N   step ms   comm ms   comm %   speed-up")
    for n in (1, 2, 4, 8, 16):
        comm_n = 0.0 if n == 1 else exposed * (2 * (n - 1) / n) / (2 * (size - 1) / size)
        step_n = one_rank / n + comm_n
        print(
            f"{n:2d} {step_n * 1e3:9.2f} {comm_n * 1e3:9.2f} {100 * comm_n / step_n:7.1f}% "
            f"{one_rank / step_n:9.2f}x"
        )


if __name__ == "__main__":
    main()
