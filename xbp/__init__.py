"""xbp: neural networks trained by explicit backpropagation on any array library."""

from . import data, metrics, optim, tree
from .activations import ACTIVATIONS, register_activation
from .backend import (
    BACKEND_NAMES,
    Backend,
    BackendInfo,
    available_backends,
    backend,
    default_backend,
)
from .callbacks import CSVLogger, ReduceLROnPlateau, TensorBoard
from .checkpoint import ModelCheckpoint
from .errors import (
    BackendUnavailableError,
    CollectiveError,
    DivergenceError,
    GradcheckError,
    XbpError,
    XbpFileError,
    XbpFileNotFoundError,
    XbpTypeError,
    XbpValueError,
)
from .explain import explain
from .export import export_onnx
from .gradcheck import gradcheck
from .init import INITS
from .io import Checkpoint, load, load_checkpoint, save
from .layers import BatchNorm, Dropout, Layer, LayerNorm, Standardize, register_layer
from .losses import LOSSES, register_loss
from .network import Dense, Network, StepResult, mlp
from .run import evaluate, fit, predict, predict_classes
from .strategy import LocalStrategy, Strategy
from .targets import infer_targets
from .training import Callback, EarlyStopping, History, Trainer, TrainOptions

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "BACKEND_NAMES",
    "INITS",
    "LOSSES",
    "Backend",
    "Callback",
    "CSVLogger",
    "Checkpoint",
    "EarlyStopping",
    "History",
    "LocalStrategy",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "TensorBoard",
    "StepResult",
    "Strategy",
    "Trainer",
    "TrainOptions",
    "BackendInfo",
    "BackendUnavailableError",
    "CollectiveError",
    "Dense",
    "Dropout",
    "Layer",
    "LayerNorm",
    "BatchNorm",
    "Standardize",
    "register_layer",
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
    "data",
    "evaluate",
    "explain",
    "export_onnx",
    "fit",
    "gradcheck",
    "infer_targets",
    "load",
    "load_checkpoint",
    "metrics",
    "optim",
    "tree",
    "predict",
    "predict_classes",
    "register_activation",
    "register_loss",
    "save",
    "mlp",
    "__version__",
]
