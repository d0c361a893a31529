"""xbp: neural networks trained by explicit backpropagation on any array library.

The top level holds what a script writes; the layers of the library are its
sub-packages (docs/architecture.md): ``backends`` (one module per array
library), ``nn`` (layers, activations, losses, the network and its one
backprop, the task and target rules), ``optim`` (optimizers and schedules),
``io`` (model files, checkpoints' files, ONNX), ``data`` (loaders and the data
sources the loop reads), ``parallel`` (data-parallel strategies), ``train``
(the one step, the loop, callbacks, ``fit``), ``tools`` (gradient checks, the
explained step, benchmarks), ``sklearn`` and ``cli``.
"""

__version__ = "0.1.0"

from . import data, metrics, nn, optim  # noqa: E402
from .backends.select import available_backends, backend  # noqa: E402
from .errors import XbpError  # noqa: E402
from .io import load, load_checkpoint, save  # noqa: E402
from .io.onnx import export_onnx  # noqa: E402
from .nn import (  # noqa: E402
    Network,
    infer_targets,
    mlp,
    register_activation,
    register_layer,
    register_loss,
)
from .tools import explain  # noqa: E402
from .train import (  # noqa: E402
    Callback,
    CSVLogger,
    EarlyStopping,
    History,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TensorBoard,
    TrainOptions,
    evaluate,
    fit,
    predict,
)

__all__ = [
    # building a network
    "Network",
    "mlp",
    "infer_targets",
    "register_activation",
    "register_loss",
    "register_layer",
    # training
    "fit",
    "evaluate",
    "predict",
    "TrainOptions",
    "History",
    "Callback",
    "EarlyStopping",
    "ModelCheckpoint",
    "CSVLogger",
    "ReduceLROnPlateau",
    "TensorBoard",
    # files
    "save",
    "load",
    "load_checkpoint",
    "export_onnx",
    # backends, errors, learning
    "backend",
    "available_backends",
    "XbpError",
    "explain",
    # modules
    "data",
    "metrics",
    "nn",
    "optim",
]
