"""Data parallelism: the strategy interface (``Strategy``, ``LocalStrategy``), the
engine-neutral exchange (``CollectiveStrategy``) and its transports, MPI (``mpi``) and
torch.distributed (``torchdist``)."""

from .collective import CollectiveStrategy
from .mpi import MPIStrategy, launcher, strategy_from_environment
from .strategy import LocalStrategy, Strategy
from .torchdist import TorchDistributedStrategy

__all__ = [
    "CollectiveStrategy",
    "LocalStrategy",
    "MPIStrategy",
    "Strategy",
    "TorchDistributedStrategy",
    "launcher",
    "strategy_from_environment",
]
