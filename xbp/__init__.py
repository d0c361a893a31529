"""xbp: neural networks trained by explicit backpropagation on any array library."""

from .activations import ACTIVATIONS
from .backend import (
    BACKEND_NAMES,
    Backend,
    BackendInfo,
    available_backends,
    backend,
    default_backend,
)
from .errors import (
    BackendUnavailableError,
    DivergenceError,
    GradcheckError,
    XbpError,
    XbpFileError,
    XbpFileNotFoundError,
    XbpTypeError,
    XbpValueError,
)
from .gradcheck import gradcheck
from .init import INITS
from .losses import LOSSES
from .network import Dense, Network, mlp

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "BACKEND_NAMES",
    "INITS",
    "LOSSES",
    "Backend",
    "BackendInfo",
    "BackendUnavailableError",
    "Dense",
    "DivergenceError",
    "GradcheckError",
    "Network",
    "XbpError",
    "XbpFileError",
    "XbpFileNotFoundError",
    "XbpTypeError",
    "XbpValueError",
    "available_backends",
    "backend",
    "default_backend",
    "gradcheck",
    "mlp",
    "__version__",
]
