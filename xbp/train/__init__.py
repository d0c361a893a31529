"""Training: the one step, the loop, compiled epochs, callbacks, checkpoints and ``fit``."""

from .callbacks import CSVLogger, ReduceLROnPlateau, TensorBoard
from .checkpoint import ModelCheckpoint
from .loop import Callback, EarlyStopping, History, Trainer, TrainOptions
from .run import evaluate, fit, predict, predict_classes

__all__ = [
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "History",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "TensorBoard",
    "TrainOptions",
    "Trainer",
    "evaluate",
    "fit",
    "predict",
    "predict_classes",
]
