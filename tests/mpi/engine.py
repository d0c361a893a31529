"""What the scripts here need from the launcher they run under (mpiexec or torchrun).

``strategy(**options)`` makes the engine's strategy (and, under torchrun, the
process group); ``rank()`` and ``allgather(obj)`` work once it exists.
"""

import os

from xbp.parallel.mpi import launcher, strategy_from_environment

TORCH = launcher() == "torchrun"


def strategy(**options):
    return strategy_from_environment(**options)


def rank() -> int:
    if TORCH:
        return int(os.environ["RANK"])
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank()


def allgather(obj) -> list:
    if TORCH:
        import torch.distributed as dist

        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    from mpi4py import MPI

    return MPI.COMM_WORLD.allgather(obj)
