#!/usr/bin/env python
"""Communication share of a data-parallel step, and projected scaling.

    mpiexec -n 2 python scripts/bench_mpi.py [--case mid] [--repeat 40]

Times, on every rank, the full distributed step (backprop on this rank's share
+ one Allreduce + SGD update) and, inside it, the gradient exchange (packing
the flat buffer, the Allreduce, unpacking), and reports the median share of
communication. Each rank uses one BLAS thread
so that ranks do not fight over cores. The scaling table is a projection from
the measured numbers (compute shrinks as 1/N, a ring Allreduce moves
2 (N-1)/N of the buffer), not a measurement.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import xbp  # noqa: E402
from xbp.bench import CASES, case_data  # noqa: E402
from xbp.distributed import MPIStrategy  # noqa: E402


class TimedMPIStrategy(MPIStrategy):
    """MPIStrategy that times the gradient exchange apart from the wait for the slower rank."""

    def __init__(self, comm) -> None:
        super().__init__(comm)
        self.comm_t: list[float] = []
        self.wait_t: list[float] = []

    def reduce_grads(self, cost, grads):
        t = time.perf_counter()
        self.comm.Barrier()
        t1 = time.perf_counter()
        out = super().reduce_grads(cost, grads)
        self.comm_t.append(time.perf_counter() - t1)
        self.wait_t.append(t1 - t)
        return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--case", default="mid")
    p.add_argument("--repeat", type=int, default=40)
    args = p.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    case = CASES[args.case]
    net = xbp.mlp(
        case["sizes"],
        activation=case["act"],
        output=case["out"],
        loss=case["loss"],
        dtype=case["dtype"],
        seed=0,
    )
    x, y = case_data(case)
    strategy = TimedMPIStrategy(comm)
    xd, yd = net.check_inputs(x), net.check_targets(y, len(x))
    lo, hi = strategy.share(0, len(x))
    xb, yb = xd[lo:hi, ...], yd[lo:hi, ...]
    options = xbp.TrainOptions(
        optimizer=xbp.optim.sgd(0.01), batch_size=len(x), shuffle=False, max_retries=0
    )
    trainer = xbp.Trainer(net, options, strategy=strategy)
    strategy.setup(net, {"case": args.case})
    n_params = sum(int(np.prod(v.shape)) for p_ in net.params for v in p_.values()) + 1
    itemsize = np.dtype(case["dtype"]).itemsize
    step = []
    for _ in range(args.repeat + 3):
        comm.Barrier()
        t0 = time.perf_counter()
        trainer.train_step(xb, yb, len(x))
        step.append(time.perf_counter() - t0)
    step, comm_t, wait_t = step[3:], strategy.comm_t[3:], strategy.wait_t[3:]
    s, c, w = statistics.median(step), statistics.median(comm_t), statistics.median(wait_t)
    all_s = comm.gather(s)
    all_c = comm.gather(c)
    all_w = comm.gather(w)
    if rank == 0:
        s, c, w = max(all_s), max(all_c), max(all_w)
        share = c / s
        print(
            f"case {args.case}: {case['sizes']}, global batch {len(x)}, {case['dtype']}, "
            f"{size} ranks, buffer {n_params * itemsize / 2**20:.2f} MiB"
        )
        print(
            f"median step {s * 1e3:.2f} ms, of which gradient exchange {c * 1e3:.2f} ms "
            f"({100 * share:.1f}% communication); waiting for the slower rank "
            f"{w * 1e3:.2f} ms ({100 * w / s:.1f}%)"
        )
        compute = s - c - w
        one_rank = compute * size  # the whole batch on one rank
        print("\nprojected (not measured): N ranks, same global batch")
        print(" N   step ms   comm ms   comm %   speed-up")
        for n in (1, 2, 4, 8, 16):
            comm_n = 0.0 if n == 1 else c * (2 * (n - 1) / n) / (2 * (size - 1) / size)
            step_n = one_rank / n + comm_n
            print(
                f"{n:2d} {step_n * 1e3:9.2f} {comm_n * 1e3:9.2f} {100 * comm_n / step_n:7.1f}% "
                f"{one_rank / step_n:9.2f}x"
            )


if __name__ == "__main__":
    main()
