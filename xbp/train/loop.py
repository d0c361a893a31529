"""The training loop: mini-batch gradient descent with callbacks.

The loop reads any data source (:class:`xbp.data.sources.Source`: arrays moved to
the device once and batched with ``xp.take`` of device indices, host rows
prefetched a batch at a time, a source's own batches) through one epoch
runner, :meth:`Trainer.run_epoch`; per-step losses stay on the device and are
read back once per epoch, together with a finiteness check of the weights, so
the batch loop never waits for the device. When an epoch turns
out to have diverged, it is replayed step by step from its starting weights
(the same batches, the same arithmetic) to find the exact step and the last
good weights.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.sources import Plan, Source, close_batches, forward_sums
from ..errors import DivergenceError, XbpTypeError, XbpValueError, arg
from ..io.signals import raise_if_terminated
from ..metrics import MetricSet, metric_mode
from ..nn.network import (
    EVAL_BATCH,
    LOSS_SCALED,
    PRECISIONS,
    Network,
    Params,
    StepResult,
    epoch_summary,
    weight_sum,
)
from ..nn.rng import MASK32, dropout_key
from ..nn.validate import check_int, check_number
from ..nn.weights import batch_weight_sum
from ..optim import Optimizer, get_optimizer, tree
from ..parallel.strategy import LocalStrategy, Strategy
from .step import Batch, Step, StepOut, all_finite

__all__ = [
    "History",
    "Callback",
    "LossScaler",
    "EarlyStopping",
    "TrainOptions",
    "Trainer",
    "evaluate_data",
    "evaluate_metrics",
    "monitor_mode",
    "monitor_value",
]


# every run's columns, and fp16's, in the order an epoch's logs hold them
_HISTORY_COLUMNS = (
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "seconds",
    "skipped_steps",
    "loss_scale",
)


@dataclass
class History:
    """Per-epoch records of a run: ``loss``, ``accuracy``, ``val_loss``,
    ``val_accuracy``, ``learning_rate``, ``seconds``, and for ``precision="fp16"``
    ``skipped_steps`` (updates skipped for overflow in that epoch) and
    ``loss_scale`` (at its end); None where they do not apply.

    With ``metrics=[...]`` each metric is a column too (``f1_macro``,
    ``val_f1_macro``; see :mod:`xbp.metrics`).

    A read-only mapping of column name to per-epoch values, like Keras'
    ``History.history``: ``history["loss"]`` gives one column, ``keys()``,
    ``values()``, ``items()``, ``get()`` and ``in`` work on the columns;
    ``len(history)`` is the number of epochs and ``history.epochs`` the rows.
    ``diverged`` says at which epoch and step a run hit NaN/Inf, if it did.

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.make_xor()
    >>> net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    >>> hist = xbp.fit(net, x, y, epochs=2, batch_size=4, progress=False)
    >>> list(hist.keys())[:3], len(hist)
    (['epoch', 'loss', 'accuracy'], 2)
    >>> "val_loss" in hist, hist.get("no_such_column") is None
    (True, True)
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    diverged: list[dict[str, Any]] = field(default_factory=list)

    def __getitem__(self, key: str) -> list[Any]:
        # the documented columns are always there (None where they do not apply); no
        # epochs yet: every column is empty
        if self.epochs and key not in self and key not in _HISTORY_COLUMNS:
            raise KeyError(f"{key!r} is not a column of this History; its columns: {self.keys()}")
        return [row.get(key) for row in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    def __contains__(self, key: object) -> bool:
        return any(key in row for row in self.epochs)

    def keys(self) -> list[str]:
        """The column names, in the order the epochs' logs first hold them."""
        names: dict[str, None] = {}
        for row in self.epochs:
            names.update(dict.fromkeys(row))
        return list(names)

    def values(self) -> list[list[Any]]:
        return [self[k] for k in self.keys()]

    def items(self) -> list[tuple[str, list[Any]]]:
        return [(k, self[k]) for k in self.keys()]

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "stopped_early": self.stopped_early,
            "diverged": self.diverged,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(
            list(d.get("epochs", [])),
            bool(d.get("stopped_early", False)),
            list(d.get("diverged", [])),
        )


#: below this loss scale (float16's smallest subnormal) an fp16 run stops: every step since
#: the scale was 2**16 overflowed, so the overflow does not come from the backward pass
MIN_LOSS_SCALE = 2.0**-24


@dataclass
class LossScaler:
    """Dynamic loss scaling for ``precision="fp16"`` (see ``docs/precision.md``).

    Each step multiplies the output error (and so every gradient) by
    ``scale`` before the float16 backward pass, and divides the float32
    gradients by it again. A step whose gradients are not finite changes
    nothing (weights and optimizer state stay as they were): it is counted in
    ``skipped`` and the scale halves. After ``growth_interval`` finite steps in
    a row the scale doubles. The defaults are PyTorch's ``GradScaler``'s.

    Examples
    --------
    >>> s = LossScaler(scale=8.0, growth_interval=2)
    >>> s.update(False); s.scale, s.skipped
    (4.0, 1)
    >>> s.update(True); s.update(True); s.scale
    8.0
    """

    scale: float = 2.0**16
    growth_interval: int = 2000
    good_steps: int = 0
    skipped: int = 0

    def update(self, finite: bool) -> None:
        """Record one step: finite gradients count towards growth; others halve the scale."""
        if finite:
            self.good_steps += 1
            if self.good_steps >= self.growth_interval:
                self.scale *= 2.0
                self.good_steps = 0
        else:
            self.scale *= 0.5
            self.good_steps = 0
            self.skipped += 1
            if self.scale < MIN_LOSS_SCALE:
                # halving further only ends in a scale of 0 (a division by zero): the
                # overflow is in the forward pass or the data, which no scale can fix
                raise DivergenceError(
                    f"precision='fp16': {self.skipped} steps overflowed float16, the last ones "
                    f"even with the loss scaled down to {self.scale * 2:.3g}; the forward pass "
                    "or the data overflow float16 (largest 65504): scale the inputs, lower the "
                    "learning rate, or use precision='bf16' or 'exact'"
                )

    def state_dict(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies, and the loop saves this every epoch
        return {
            "scale": self.scale,
            "growth_interval": self.growth_interval,
            "good_steps": self.good_steps,
            "skipped": self.skipped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state.get("scale", self.scale))
        self.growth_interval = int(state.get("growth_interval", self.growth_interval))
        self.good_steps = int(state.get("good_steps", 0))
        self.skipped = int(state.get("skipped", 0))


def _is_order(order: np.ndarray, n: int) -> bool:
    """Whether ``order`` holds each of ``0..n-1`` once (an integer vector of length n)."""
    if order.shape != (n,) or order.dtype.kind not in "iu":
        return False
    if not n:
        return True
    if int(order.max()) >= n:  # before counting: a count per row up to a huge one is huge
        return False
    try:  # a count per row, every count 1 (NumPy 1.26's bincount refuses uint64)
        counts = np.bincount(order.astype(np.intp, copy=False), minlength=n)
    except ValueError:  # negative entries
        return False
    return counts.shape[0] == n and int(counts.max()) == 1


class Callback:
    """Hooks called by :class:`Trainer`; override what you need.

    A run starts each callback afresh: :meth:`reset` is called when a
    :class:`Trainer` (one per :func:`xbp.fit`) takes it, so an object reused for
    a second run carries nothing over from the first; a resumed run then loads
    the state its checkpoint saved (:meth:`state_dict`, which may hold NumPy
    arrays: they are stored in the checkpoint's arrays, bit-exact).
    :meth:`outputs` names the files a callback writes, so that
    :func:`xbp.fit` checks them against its inputs and locks them for the run.

    Examples
    --------
    >>> import xbp
    >>> class Losses(xbp.Callback):
    ...     def reset(self):
    ...         self.seen = []
    ...     def on_epoch_end(self, trainer, logs):
    ...         self.seen.append(round(logs["loss"], 4))
    >>> x, y = xbp.data.make_xor()
    >>> cb = Losses()
    >>> history = xbp.fit(xbp.mlp([2, 3, 1], seed=0), x, y, epochs=3, batch_size=4,
    ...                   callbacks=[cb], progress=False)
    >>> cb.seen == [round(v, 4) for v in history["loss"]]
    True
    """

    #: True for a callback that writes the run's state (:class:`xbp.ModelCheckpoint`):
    #: at each epoch's end it runs after the others, so it saves their final state.
    writes_run_state = False

    def reset(self) -> None:
        """Forget everything learnt in an earlier run (called as a run begins)."""

    def outputs(self) -> dict[str, Any]:
        """``{argument name: path}`` of the files this callback writes."""
        return {}

    def on_train_begin(self, trainer: Trainer) -> None:
        pass

    def on_resume(self, trainer: Trainer) -> None:
        """After a resumed run gave this callback its saved state: check the state fits
        the run (an :class:`xbp.errors.XbpValueError` if not) and take what it needs onto the
        run's device."""

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def improves(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether a monitored ``value`` improves on ``best`` by more than ``min_delta`` in
    the monitor's direction (``mode`` ``"max"`` or ``"min"``); the first value does.

    Examples
    --------
    >>> improves(0.5, 0.4, "max", 0.05), improves(0.5, 0.4, "max", 0.2), improves(0.3, 0.4, "min")
    (True, False, True)
    """
    if best is None:
        return True
    if mode == "max":
        return value > best + min_delta
    return value < best - min_delta


def monitor_value(logs: dict[str, Any], monitor: str, owner: str = "monitor") -> float:
    """The value of ``monitor`` in an epoch's logs (``val_*`` falls back to the training one).

    A name that no part of the run logs (a typo, accuracy on regression targets)
    is an error at the first epoch's end, never a callback that silently does
    nothing."""
    value = logs.get(monitor)
    if value is None and monitor.startswith("val_"):
        value = logs.get(monitor[4:])  # no validation data: watch the training metric
    if value is None:
        logged = sorted(k for k, v in logs.items() if v is not None and k != "epoch")
        raise XbpValueError(
            f"{owner}={monitor!r} is not logged by this run (it logs {logged}); watch one of "
            "those, or add a callback that writes it into the epoch's logs"
        )
    return float(value)


def monitor_mode(monitor: str, mode: str | None = None) -> str:
    """Whether a larger ``monitor`` is better (``"max"``) or a smaller (``"min"``):
    ``mode`` when given, else the loss's and each metric's own direction
    (:func:`xbp.metrics.metric_mode`: ``val_loss``, ``log_loss``, ``rmse`` min;
    ``accuracy``, ``f1_macro``, ``r2``, ``roc_auc`` max)."""
    if mode is None:
        found = metric_mode(monitor) if isinstance(monitor, str) else None
        if found is None:
            raise XbpValueError(
                f"monitor={monitor!r} is neither the loss nor a metric xbp knows; use "
                "'val_loss', 'loss' or a metric name such as 'val_accuracy' or 'val_f1_macro' "
                "(with metrics=[...]), or name mode='min'/'max' for a value a callback logs"
            )
        return found
    if mode not in ("min", "max"):
        raise XbpValueError(f"mode={mode!r}; use 'min' or 'max'")
    return mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    At the end of training the best weights are restored, whether or not the
    run stopped early (``restore_best=False`` keeps the last ones).
    ``monitor`` is ``"val_loss"`` (falls back to ``"loss"`` without
    validation data), ``"loss"``, ``"val_accuracy"``, ``"accuracy"`` or any
    metric of ``fit(metrics=[...])`` (``"val_f1_macro"``, ``"val_r2"``, ...),
    each watched in its own direction; any other key a callback adds to the
    epoch's logs works with ``mode="min"`` or ``"max"``.

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.load_digits()
    >>> net = xbp.mlp([64, 32, 10], activation="relu", loss="cross_entropy", seed=0)
    >>> stop = xbp.EarlyStopping(patience=2, monitor="val_accuracy")  # max is better
    >>> history = xbp.fit(net, x[:300], y[:300], epochs=50, validation_split=0.3,
    ...                   optimizer="adam", learning_rate=0.01, callbacks=[stop], progress=False)
    >>> len(history) < 50  # stopped early, with the best epoch's weights restored
    True
    """

    def __init__(
        self,
        patience: int = 5,
        min_delta: float = 0.0,
        monitor: str = "val_loss",
        restore_best: bool = True,
        mode: str | None = None,
    ) -> None:
        self.patience = check_int(patience, "patience", low=0)
        self.min_delta = check_number(min_delta, "min_delta", low_open=False)
        self.monitor = monitor
        self.mode = monitor_mode(monitor, mode)
        self.restore_best = restore_best
        self.reset()

    def reset(self) -> None:
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self._best_params: tuple[Params, Params] | None = None
        # best weights read from a checkpoint, on the host until the run begins
        self._best_host: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None
        self._to_host: Any = None

    def _better(self, value: float) -> bool:
        return improves(value, self.best, self.mode, self.min_delta)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        value = monitor_value(logs, self.monitor, "EarlyStopping monitor")
        if self._better(value):
            self.best, self.best_epoch, self.wait = value, logs["epoch"], 0
            if self.restore_best:
                self._best_params = trainer.copy_model()
                self._to_host = trainer.net.backend.to_host
        else:
            self.wait += 1
            if self.wait > self.patience:
                trainer.stop_training = True
                trainer.history.stopped_early = True

    def on_resume(self, trainer: Trainer) -> None:
        if self._best_host is not None:  # the checkpoint's best weights, on the device
            self._best_params = _model_to_device(trainer.net, self._best_host)
            self._to_host = trainer.net.backend.to_host
            self._best_host = None

    def on_train_end(self, trainer: Trainer) -> None:
        if self.restore_best and self._best_params is not None:
            trainer.set_model(self._best_params)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
        }
        if self._best_params is not None:  # saved as arrays of the checkpoint, bit-exact
            to_host = self._to_host
            params, layer_state = self._best_params
            state["best_model"] = [
                [{k: np.array(to_host(v)) for k, v in p.items()} for p in params],
                [{k: np.array(to_host(v)) for k, v in p.items()} for p in layer_state],
            ]
        elif self._best_host is not None:
            state["best_model"] = [list(self._best_host[0]), list(self._best_host[1])]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best, epoch, wait = state.get("best"), state.get("best_epoch"), state.get("wait", 0)
        model = state.get("best_model")
        if best is not None and (
            isinstance(best, bool) or not isinstance(best, (int, float)) or math.isnan(best)
        ):
            raise XbpValueError(f"EarlyStopping's saved best value is {best!r}, not a number")
        for name, value in (("best_epoch", epoch), ("wait", wait)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise XbpValueError(f"EarlyStopping's saved {name} is {value!r}, not a count")
        if model is not None and not (
            isinstance(model, list)
            and len(model) == 2
            and all(isinstance(part, list) for part in model)
            and all(isinstance(d, dict) for part in model for d in part)
            and all(hasattr(a, "dtype") for part in model for d in part for a in d.values())
        ):
            raise XbpValueError("EarlyStopping's saved best weights are not lists of arrays")
        self.reset()
        self.best = None if best is None else float(best)
        self.best_epoch, self.wait = epoch, int(wait)
        self._best_host = None if model is None else (model[0], model[1])


def _model_to_device(
    net: Network, host: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> tuple[Params, Params]:
    """Host copies of weights and layer state (as a checkpoint stores them) on ``net``'s
    device, after checking that every array fits the network's own."""
    be = net.backend
    out: list[Params] = []
    for what, saved, own in (("weights", host[0], net.params), ("state", host[1], net.state)):
        if len(saved) != len(own) or any(set(a) != set(b) for a, b in zip(saved, own)):
            raise XbpValueError(
                f"EarlyStopping's saved best {what} do not fit this network's layers"
            )
        moved = []
        for i, (a, b) in enumerate(zip(saved, own)):
            layer = {}
            for k, v in a.items():
                if tuple(v.shape) != tuple(b[k].shape) or v.dtype.kind not in "fiu":
                    raise XbpValueError(
                        f"EarlyStopping's saved best {what}[{i}]['{k}'] has shape "
                        f"{tuple(v.shape)} ({v.dtype}); this network has {tuple(b[k].shape)}"
                    )
                if not np.isfinite(v).all():  # saved weights are finite (save refuses others)
                    raise XbpValueError(
                        f"EarlyStopping's saved best {what}[{i}]['{k}'] holds NaN or Inf"
                    )
                layer[k] = be.asarray(v, be.dtype_name(b[k].dtype), copy=True)
            moved.append(layer)
        out.append(moved)
    return out[0], out[1]


@dataclass(frozen=True)
class TrainOptions:
    """Every option of a training run, stated once: :func:`xbp.fit`, the
    scikit-learn estimators and ``xbp train`` read their defaults from here.

    Parameters
    ----------
    epochs : int
        Total epochs (a resumed run continues up to this number).
    batch_size : int
        Rows per update, at most the number of training rows.
    optimizer : Optimizer or str
        ``xbp.optim.sgd(0.1)`` by default; a name takes ``learning_rate``.
    learning_rate : float or Schedule, optional
        Only with an optimizer name.
    validation_split : float
        Fraction of the data held out (seeded) when no validation data is given.
    shuffle : bool
        Reshuffle every epoch from a host generator seeded by ``seed``: the same
        seed gives the same batches on every backend.
    seed : int or None
        Seeds shuffling and the validation split (a non-negative integer).
    callbacks : sequence of Callback
        e.g. ``EarlyStopping(patience=5)``, ``ModelCheckpoint(path, every=2)``.
    progress : "auto", "bar", "lines" or False
        A tqdm bar on a terminal, one line per epoch otherwise, or nothing.
    checkpoint : path, optional
        Shortcut for ``ModelCheckpoint(checkpoint, every=checkpoint_every)``.
    checkpoint_every : int
    on_divergence : "raise", "halve" or "continue"
        On a NaN/Inf loss or gradient: restore the last good weights and raise
        :class:`xbp.errors.DivergenceError`, halve the learning rate and retry the
        epoch up to ``max_retries`` times, or go on training (the epoch's logs hold
        the non-finite loss and ``history.diverged`` the epoch; the caller checks the
        weights, as the scikit-learn estimators do). "continue" keeps no per-epoch
        snapshot of the weights, so it also saves that copy.
    max_retries : int
    compile : bool or None
        Run the training step compiled (``jax.jit`` over an epoch on JAX, a
        captured CUDA graph on torch-cuda): None = where the backend supports
        it, True = required (an error where impossible), False = eager.
    precision : "exact", "tf32", "bf16", "fp16" or None
        Overrides the network's matrix-product policy for this run (None keeps
        ``net.precision``); see :class:`xbp.Network`.
    metadata : dict, optional
        JSON-able data written into every checkpoint (e.g. input scaling).
    metrics : sequence of str or xbp.metrics.Metric
        Metrics logged for the training rows (accumulated over each epoch's steps,
        as the loss) and the validation rows (``val_`` prefix), e.g.
        ``["f1_macro", "roc_auc_ovr"]`` or ``["r2", "rmse"]``; see :mod:`xbp.metrics`.
        Training metrics run the epoch eagerly (``compile=True`` is refused).
    sampler : callable, optional
        ``sampler(n) -> order``: the epoch's host order of the ``n`` training rows (each
        row once, as integers), called once per epoch in place of ``shuffle``'s draw;
        the batches are consecutive runs of ``batch_size`` rows of it. Your own random
        generator, a curriculum, or another library's draws (the scikit-learn
        estimators pass scikit-learn's). Its state is not in checkpoints: a resumed run
        calls it afresh. Needs a data source with known rows (not a batch source);
        under data parallelism (MPI) every process must return the same order.

    Examples
    --------
    >>> import xbp
    >>> opts = xbp.TrainOptions(epochs=3, batch_size=4)
    >>> opts.replace(epochs=5).epochs, opts.optimizer
    (5, 'sgd')
    """

    epochs: int = 10
    batch_size: int = 32
    optimizer: Any = "sgd"
    learning_rate: Any = None
    validation_split: float = 0.0
    shuffle: bool = True
    seed: int | None = 0
    callbacks: Any = ()
    progress: Any = "auto"
    checkpoint: str | os.PathLike[str] | None = None
    checkpoint_every: int = 1
    on_divergence: str = "raise"
    max_retries: int = 3
    compile: bool | None = None
    precision: str | None = None
    metadata: dict[str, Any] | None = None
    metrics: Any = ()
    # last, so that positional construction written before it still means the same
    sampler: Any = None

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs")
        check_int(self.batch_size, "batch_size")
        check_number(
            self.validation_split,
            "validation_split",
            low=0.0,
            low_open=False,
            high=1.0,
            high_open=True,
        )
        if self.seed is not None:
            check_int(self.seed, "seed", low=0)
        if not isinstance(self.shuffle, (bool, np.bool_)):
            raise XbpTypeError(f"shuffle={self.shuffle!r}; pass True or False")
        if self.on_divergence not in ("raise", "halve", "continue"):
            raise XbpValueError(
                f"on_divergence={self.on_divergence!r}; use 'raise', 'halve' or 'continue'"
            )
        if self.sampler is not None and not callable(self.sampler):
            raise XbpTypeError(
                f"sampler is a {type(self.sampler).__name__}; pass a function "
                "sampler(n) -> the epoch's order of the n rows, or None"
            )
        check_int(self.max_retries, "max_retries", low=0)
        check_int(self.checkpoint_every, "checkpoint_every")
        if self.compile not in (None, True, False):
            raise XbpValueError(
                f"compile={self.compile!r}; use None (where supported), True or False"
            )
        if self.progress not in ("auto", "bar", "lines", "off", True, False, None):
            raise XbpValueError(f"progress={self.progress!r}; use 'auto', 'bar', 'lines' or False")
        if self.checkpoint is not None and not isinstance(self.checkpoint, (str, os.PathLike)):
            raise XbpTypeError(
                f"checkpoint is a {type(self.checkpoint).__name__}; pass a file path"
            )
        if self.precision is not None and self.precision not in PRECISIONS:
            raise XbpValueError(
                f"{arg('precision', self.precision)} is not known; use one of {list(PRECISIONS)} "
                "(or None for the network's own)"
            )
        if self.metadata is not None and not isinstance(self.metadata, dict):
            raise XbpTypeError(
                f"metadata is a {type(self.metadata).__name__}; pass a dict of JSON-able values"
            )
        if isinstance(self.callbacks, Callback) or not hasattr(self.callbacks, "__iter__"):
            raise XbpTypeError(
                "callbacks must be a list of xbp Callbacks, e.g. [xbp.EarlyStopping(patience=5)]"
            )
        callbacks = tuple(self.callbacks)
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise XbpTypeError(f"callbacks holds a {type(cb).__name__}; pass xbp Callbacks")
        object.__setattr__(self, "callbacks", callbacks)
        object.__setattr__(self, "metrics", tuple(MetricSet(self.metrics).metrics))
        if self.metrics and self.compile is True:
            raise XbpValueError(
                f"{arg('compile', True)} with metrics=: training metrics are accumulated by the "
                "eager "
                f"epoch; pass {arg('compile', None)} (eager with metrics) or drop metrics"
            )
        self.make_optimizer()  # refuse a bad optimizer/learning_rate pair now

    def replace(self, **changes: Any) -> TrainOptions:
        """A copy with some options changed (unknown names are an error)."""
        known = {f.name for f in dataclasses.fields(self)}
        for name in changes:
            if name not in known:
                raise XbpTypeError(f"{name}= is not a training option; use one of {sorted(known)}")
        return dataclasses.replace(self, **changes)

    def make_optimizer(self) -> Optimizer:
        """The optimizer this run uses (a fresh one from a name, or the object given)."""
        if isinstance(self.optimizer, str):
            return get_optimizer(self.optimizer, self.learning_rate)
        if isinstance(self.optimizer, Optimizer):
            if self.learning_rate is not None:
                raise XbpValueError(
                    "learning_rate= goes with an optimizer name; an Optimizer "
                    "object carries its own learning rate"
                )
            return self.optimizer
        raise XbpTypeError(
            f"optimizer={self.optimizer!r}; pass a name such as 'sgd' or an xbp.optim optimizer"
        )


class _Progress:
    """A live tqdm bar on a terminal (per batch: epoch n/N, the last epoch's metrics,
    ETA), one line per epoch otherwise, nothing when off."""

    def __init__(self, mode: Any, epochs: int, start: int, batches: int) -> None:
        stream = sys.stdout
        if mode == "auto" or mode is True:
            mode = "bar" if stream.isatty() else "lines"
        self.mode = mode if mode in ("bar", "lines") else "off"
        self.epochs = epochs
        self.bar = None
        if self.mode == "bar":
            try:
                from tqdm.auto import tqdm
            except ImportError:
                self.mode = "lines"
            else:
                # one tick per batch: the host counts them, nothing waits for the device
                self.bar = tqdm(
                    total=epochs * batches,
                    initial=start * batches,
                    unit="batch",
                    file=stream,
                    desc=f"epoch {start + 1}/{epochs}",
                )

    @staticmethod
    def line(logs: dict[str, Any]) -> str:
        parts = [f"epoch {logs['epoch']:>3}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if logs.get(key) is not None:
                parts.append(f"{key} {logs[key]:.4f}")
        for key, value in logs.items():  # the metrics of fit(metrics=[...])
            if key not in _HISTORY_COLUMNS and isinstance(value, float):
                parts.append(f"{key} {value:.4f}")
        parts.append(f"lr {logs['learning_rate']:.3g}")
        parts.append(f"{logs['seconds']:.2f}s")
        return "  ".join(parts)

    def batches(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def update(self, logs: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self.line(logs).split("  ", 1)[1])
            self.bar.set_description(f"epoch {min(logs['epoch'] + 1, self.epochs)}/{self.epochs}")
        elif self.mode == "lines":
            print(self.line(logs), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Trainer:
    """Runs a training loop over a data source; callbacks receive it and may read or stop it.

    Parameters
    ----------
    net : Network
        Trained in place.
    options : TrainOptions, optional
    strategy : Strategy, optional
        How the run is spread over processes (default: one process).
    optimizer : Optimizer, optional
        Overrides ``options.optimizer`` (e.g. one restored from a checkpoint).

    Attributes a callback may use: ``net``, ``options``, ``optimizer``,
    ``opt_state``, ``history``, ``epoch`` (completed epochs), ``step``
    (completed updates), ``stop_training``, ``strategy``, ``metadata``,
    ``loss_scaler`` (its :class:`LossScaler`, used when ``net.precision`` is ``"fp16"``),
    ``lr_scale`` (the factor on every step's learning rate; a callback may set it, as
    :class:`xbp.ReduceLROnPlateau` does) and ``step_sums`` (the last epoch's per-step
    sums on the host: ``costs``, each step's ``cost * n_total``, and ``penalties``, each
    step's per-step L2 term or None; read in the epoch's one transfer).

    Examples
    --------
    >>> import numpy as np, xbp
    >>> net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    >>> trainer = xbp.train.Trainer(net, xbp.TrainOptions(optimizer="sgd", learning_rate=0.5))
    >>> x, y = np.zeros((4, 2)), np.ones((4, 1))
    >>> loss, updates, out = trainer.train_step(net.check_inputs(x), net.check_targets(y, 4))
    >>> trainer.step
    1
    """

    def __init__(
        self,
        net: Network,
        options: TrainOptions | None = None,
        *,
        strategy: Strategy | None = None,
        optimizer: Optimizer | None = None,
    ) -> None:
        if not isinstance(net, Network):
            raise XbpTypeError(f"net is a {type(net).__name__}; pass an xbp.Network")
        self.net = net
        self.options = TrainOptions() if options is None else options
        if not isinstance(self.options, TrainOptions):
            raise XbpTypeError(
                f"options is a {type(self.options).__name__}; pass an xbp.TrainOptions"
            )
        self.strategy: Strategy = LocalStrategy() if strategy is None else strategy
        self.optimizer = self.options.make_optimizer() if optimizer is None else optimizer
        self.opt_state = self.optimizer.init(net.params)
        self.one_step = Step(net, self.optimizer, self.strategy)  # the only weight update
        self.rng = np.random.default_rng(self.options.seed)
        self.retries = 0
        self.lr_scale = 1.0
        self.callbacks: list[Callback] = list(self.options.callbacks)
        for cb in self.callbacks:  # a callback reused from an earlier run starts afresh
            cb.reset()
        self.metric_set = MetricSet(self.options.metrics)
        self.metric_set.check(net.n_out)
        self.history = History()
        self.epoch = 0
        self.step = 0
        self.stop_training = False
        self.metadata: dict[str, Any] = dict(self.options.metadata or {})
        # what defines the run (settings, data fingerprint), saved with checkpoints so a
        # resume can refuse what contradicts it (xbp.train.checkpoint.check_resumed_run)
        self.run_record: dict[str, Any] = {}
        self._compiled: Any = None  # the compiled epoch runner, built on first use
        self.loss_scaler = LossScaler()  # used by fp16 steps only
        self._scaler_at_epoch: dict[str, Any] = self.loss_scaler.state_dict()
        self._bar: _Progress | None = None
        #: the last epoch's per-step sums on the host, for callbacks: ``costs`` (each
        #: step's ``cost * n_total``) and ``penalties`` (each step's per-step L2 term,
        #: :attr:`xbp.train.step.StepOut.penalty_sum`, or None without one)
        self.step_sums: dict[str, Any] = {"costs": None, "penalties": None}
        #: the training data of the running fit (callbacks may read a batch of it)
        self.train_data: Source | None = None
        # the dropout masks' seed: the run's seed, or one drawn now (saved for resume)
        seed = self.options.seed
        if seed is None:
            self.dropout_seed = int(np.random.SeedSequence().generate_state(1)[0]) & MASK32
        else:
            self.dropout_seed = int(seed)
        if any(net.dropout):
            self.dropout_keys(0, [0])  # refuse a backend without int64 arithmetic now

    # -- state ---------------------------------------------------------
    def copy_params(self) -> Params:
        xp = self.net.xp
        return [{k: xp.asarray(v, copy=True) for k, v in p.items()} for p in self.net.params]

    def set_params(self, params: Params) -> None:
        """Make ``params`` (arrays of the network's backend and device) the network's own."""
        self.net.adopt_params(params)

    def copy_model(self) -> tuple[Params, Params]:
        """Copies of the weights and of the layers' state (running statistics): a
        snapshot that :meth:`set_model` restores."""
        return self.copy_state((self.net.params, self.net.state))  # type: ignore[no-any-return]

    def set_model(self, model: tuple[Params, Params]) -> None:
        """Make a :meth:`copy_model` snapshot the network's weights and state."""
        params, state = model
        self.net.adopt_params(params)
        self.net.adopt_state(state)

    def copy_state(self, state: Any) -> Any:
        """A deep copy of an optimizer state (arrays copied, counts kept)."""
        xp = self.net.xp
        return tree.map(state, lambda v: v if isinstance(v, int) else xp.asarray(v, copy=True))

    def training_state(self) -> dict[str, Any]:
        """Everything besides weights and optimizer state that resuming needs (JSON-able)."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "rng": self.rng.bit_generator.state,
            "seed": self.options.seed,
            "lr_scale": self.lr_scale,
            "retries": self.retries,
            "dropout_seed": self.dropout_seed,
            "history": self.history.to_dict(),
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "callback_types": [type(cb).__name__ for cb in self.callbacks],
            "loss_scaler": self.loss_scaler.state_dict(),
            "run": self.run_record,
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.rng.bit_generator.state = state["rng"]
        self.lr_scale = float(state.get("lr_scale", 1.0))
        self.retries = int(state.get("retries", 0))
        self.dropout_seed = int(state.get("dropout_seed", self.dropout_seed))
        self.history = History.from_dict(state.get("history", {}))
        saved = state.get("callbacks", [])
        types = state.get("callback_types")
        if types is None:  # files written before the types were recorded: by position
            pairs = list(zip(self.callbacks, saved))
        else:  # the k-th callback of a type takes the k-th saved state of that type
            by_type: dict[str, list[Any]] = {}
            for name, cb_state in zip(types, saved):
                by_type.setdefault(name, []).append(cb_state)
            pairs = []
            for cb in self.callbacks:
                queue = by_type.get(type(cb).__name__, [])
                if queue:
                    pairs.append((cb, queue.pop(0)))
        for cb, cb_state in pairs:
            cb.load_state_dict(cb_state)
            cb.on_resume(self)
        self.loss_scaler.load_state_dict(state.get("loss_scaler", {}))

    # -- the step ------------------------------------------------------
    def dropout_keys(self, first_step: int, row_offsets: list[int]) -> Any:
        """The dropout keys of ``len(row_offsets)`` consecutive steps from ``first_step``,
        as one int64 device array ``(steps, 3)`` (one transfer), or None without dropout.

        Row b is ``[seed, first_step + b, row_offsets[b]]`` (:func:`xbp.nn.rng.dropout_key`):
        the step count is the trainer's, which is saved and resumed, so a resumed
        run draws the masks it would have drawn."""
        if not any(self.net.dropout):
            return None
        be = self.net.backend
        host = np.array(
            [dropout_key(self.dropout_seed, first_step + b, o) for b, o in enumerate(row_offsets)],
            dtype=np.int64,
        )
        keys = be.asarray(host)
        if be.xp.iinfo(keys.dtype).bits < 64:
            raise XbpValueError(
                f"dropout needs 64-bit integers, which the {be.name} backend has off; enable "
                "them (for JAX: jax.config.update('jax_enable_x64', True)) or use dropout=0"
            )
        return keys

    def train_step(
        self,
        xb: Any,
        yb: Any,
        n_total: Any = None,
        *,
        sample_weight: Any = None,
        dropout_key: Any = None,
    ) -> StepResult:
        """One update of the network's weights from the batch ``(xb, yb)``.

        ``xb``/``yb`` are arrays on the network's device (see
        :meth:`Network.check_inputs`); ``n_total`` divides the batch average
        (the global batch size when the batch is shared between processes, the
        batch's global weight sum with ``sample_weight``, the rows' weights on
        the device). ``dropout_key`` is the step's int64 key (see
        :meth:`dropout_keys`; made from the step count when the network drops
        and none is given). The update is the one step (:class:`xbp.train.step.Step`):
        gradients from :meth:`Network.value_and_grad`, combined across processes
        by the strategy, turned into updates by the optimizer and added to the
        weights. Returns the cost, the updates that were applied and the output.
        """
        if n_total is None:
            n_total = xb.shape[0] if sample_weight is None else None
        if dropout_key is None and any(self.net.dropout):
            dropout_key = self.dropout_keys(self.step, [0])[0, ...]
        if n_total is None:
            n_total = batch_weight_sum(self.net.xp, sample_weight)
        out = self.run_step(Batch(xb, yb, n_total, sample_weight, dropout_key))
        return StepResult(out.cost, out.updates, out.output)

    def run_step(self, batch: Batch) -> StepOut:
        """The one step (:class:`xbp.train.step.Step`) on ``batch``, with this run's host
        numbers (schedule, halved learning rate, fp16 loss scale); the network, the
        optimizer state and the step count advance (an fp16 step skipped for overflow
        changes none of them)."""
        scaled = self.one_step.loss_scaled
        scalars = self.one_step.scalars(
            self.opt_state, self.lr_scale, self.loss_scaler.scale if scaled else None
        )
        out = self.one_step(self.net.params, self.opt_state, batch, scalars, self.net.state)
        if scaled:
            self.loss_scaler.update(out.applied)
        if out.applied:
            self.net.adopt_params(out.params)
            self.net.adopt_state(out.state)
            self.opt_state = out.opt_state
            self.step += 1
        return out

    def run_epoch(
        self, data: Source, perm: np.ndarray | None, check_each: bool = False
    ) -> dict[str, Any]:
        """One eager pass over ``data`` (any :class:`~xbp.data.sources.Source`) in the order
        of the host permutation ``perm`` (None: the source's own batches): per-step
        ``costs`` (cost times rows) and ``corrects`` as 1-D device arrays (None unless
        every batch has class labels), and the epoch's ``summary`` (see
        :func:`xbp.nn.network.epoch_summary`; the per-step L2 sums last). With
        ``check_each`` every step is checked on the host (only when replaying a
        diverged epoch)."""
        xp = self.net.xp
        plan = Plan.of(perm, self.options.batch_size, self.strategy.share)
        offsets = plan.offsets
        # where the batches are known ahead, the epoch's dropout keys move in one
        # transfer and each step reads its row, each process's rows drawing the mask of
        # its own share of the batch; a source's batches are not: each step makes its key
        keys = None if offsets is None else self.dropout_keys(self.step, offsets)
        keyed_per_step = keys is None and any(self.net.dropout)
        costs, corrects, penalties = [], [], []
        labelled = True
        metrics = self.metric_set if self.metric_set and not check_each else None
        mstate: Any = None if metrics is None else metrics.start(self.net)
        batches = data.batches(self.net, plan)
        try:
            for b, batch in enumerate(batches):
                before = self.copy_model() if check_each else None
                if keys is not None:
                    batch = batch._replace(key=keys[b, ...])
                elif keyed_per_step:
                    batch = batch._replace(key=self.dropout_keys(self.step, [0])[0, ...])
                raise_if_terminated()  # a SIGTERM whose exception a finalizer dropped
                out = self.run_step(batch)
                if check_each and (
                    not math.isfinite(float(out.cost)) or not all_finite(xp, out.updates)
                ):
                    assert before is not None
                    self.set_model(before)
                    self.step -= 1
                    return {"failed_batch": b}
                costs.append(out.cost_sum)
                if out.penalty_sum is not None:
                    penalties.append(out.penalty_sum)
                if metrics is not None:  # the step's own output, as the loss (Keras' rule)
                    mstate = metrics.update(xp, mstate, out.output, batch.y, batch.labels, batch.w)
                if out.correct is None:
                    labelled = False
                else:
                    corrects.append(out.correct)
                if self._bar is not None and not check_each:
                    self._bar.batches(1)
        finally:
            close_batches(batches)  # a generator stops its prefetch thread
        # the epoch's read-back vector in one stack, laid out as epoch_summary's (and a
        # compiled epoch's): per-step costs, correct counts, the sum over every weight
        # and state value (NaN/Inf anywhere makes it non-finite), per-step L2 sums
        kxp = self.net.backend.kernel_xp
        weights = weight_sum(kxp, self.net.params + self.net.state)
        labelled = labelled and bool(corrects)
        parts = [*costs, *(corrects if labelled else ()), weights, *penalties]
        summary = kxp.stack(parts)
        n = len(costs)
        return {
            "costs": summary[:n],
            "corrects": summary[n : 2 * n] if labelled else None,
            "metrics": None if metrics is None else metrics.vector(xp, mstate),
            "penalties": summary[-n:] if penalties else None,
            "summary": summary,
        }

    def _permutation(self, train: Source) -> np.ndarray | None:
        """The epoch's host order of ``train``'s rows: ``options.sampler``'s (checked),
        else the source's own draw from the run's generator (None: its own batches)."""
        sampler = self.options.sampler
        if sampler is None:
            return train.permutation(self.rng, self.options.shuffle)
        n = train.n
        if n is None:
            raise XbpValueError(
                "sampler= orders rows a source knows ahead; a batch source yields its own "
                "batches: drop sampler= or pass arrays"
            )
        order = np.ascontiguousarray(sampler(n))  # torch refuses negative strides
        if not _is_order(order, n):
            raise XbpValueError(
                f"sampler({n}) returned {order.dtype} {order.shape}, not an order of the {n} "
                f"rows; return each of 0..{n - 1} once, e.g. rng.permutation({n})"
            )
        return order

    def compiled_runner(self) -> Any:
        """The compiled epoch runner this run uses, or None when it runs eagerly.

        Built on first use: ``options.compile`` None compiles where the backend
        can (see :mod:`xbp.train.compile`), True requires it (an error saying why not),
        False never compiles."""
        want = self.options.compile
        if want is False or self.metric_set:  # training metrics accumulate eagerly
            return None
        if self._compiled is None:
            from .compile import compiled_epoch_runner  # compile.py sits below this module

            self._compiled = compiled_epoch_runner(self, required=want is True)
        return self._compiled or None

    # -- the loop ------------------------------------------------------
    def fit(self, train: Source, val: Source | None, epochs: int) -> History:
        """Train on ``train`` until ``epochs`` epochs are complete (or a callback stops
        the run), evaluating on ``val`` after each; both are data sources
        (:mod:`xbp.data.sources`)."""
        xp = self.net.xp
        be = self.net.backend
        strategy = self.strategy
        if train.n is not None and self.options.batch_size > train.n:
            raise XbpValueError(
                f"batch_size={self.options.batch_size} is larger than the {train.n} training "
                f"rows; use batch_size <= {train.n}"
            )
        if self.metric_set and strategy.size > 1:
            raise XbpValueError(
                "metrics= is not supported in data-parallel runs yet (each process sees its "
                "share of the rows); evaluate the trained model with xbp.evaluate(..., "
                "metrics=[...]) on one process instead"
            )
        self.train_data = train
        arrays = train.device_arrays()  # compiled epochs index device arrays directly
        runner = None if arrays is None else self.compiled_runner()
        for cb in self.callbacks:
            cb.on_train_begin(self)
        n_batches = -(-(train.n or 0) // self.options.batch_size)
        bar = _Progress(
            self.options.progress if strategy.is_root else False, epochs, self.epoch, n_batches
        )
        self._bar = bar
        try:
            while self.epoch < epochs and not self.stop_training:
                raise_if_terminated()
                t0 = time.perf_counter()
                epoch_no = self.epoch + 1
                lr = self.optimizer.learning_rate(self.opt_state) * self.lr_scale
                # the host order of the epoch's rows (None: a source's own batches)
                perm = self._permutation(train)
                snapshot = None
                if self.options.on_divergence != "continue":  # the replay's start
                    snapshot = (self.copy_model(), self.copy_state(self.opt_state), self.step)
                self._scaler_at_epoch = self.loss_scaler.state_dict()
                if runner is not None:
                    out = runner.run_epoch(arrays, perm)
                    bar.batches(n_batches)
                else:
                    out = self.run_epoch(train, perm)
                # one device->host read per epoch: every step's loss, the correct counts
                # and a sum over all weights (NaN/Inf anywhere makes it non-finite)
                summary = epoch_summary(be.kernel_xp, self.net.params + self.net.state, out)
                mvec, pvec = out.get("metrics"), out.get("penalties")
                if pvec is not None and out.get("summary") is None:
                    # the per-step L2 term's sums ride on the same read (a compiled epoch
                    # appends them to its summary itself)
                    summary = xp.concat([summary, xp.astype(pvec, summary.dtype)])
                if mvec is not None:  # the metrics too
                    summary = xp.concat([summary, xp.astype(mvec, summary.dtype)])
                summary = np.array(be.to_host(summary))
                summary = summary.astype(np.float64)
                train_metrics: dict[str, Any] = {}
                if mvec is not None:
                    n_metric = int(mvec.shape[0])
                    train_metrics = self.metric_set.decode(summary[-n_metric:])
                    summary = summary[:-n_metric]
                n_steps = int(out["costs"].shape[0])
                step_penalties = None
                if pvec is not None:
                    step_penalties, summary = summary[-n_steps:], summary[:-n_steps]
                if out["corrects"] is not None:  # each process counted its own share
                    summary[n_steps:-1] = strategy.reduce_sums(summary[n_steps:-1])
                self.step_sums = {"costs": summary[:n_steps], "penalties": step_penalties}
                finite = np.isfinite(summary).all() and (
                    step_penalties is None or np.isfinite(step_penalties).all()
                )
                if not finite and snapshot is not None:
                    self._diverged(train, perm, snapshot, summary[:n_steps], epoch_no)
                    continue
                if not finite:  # on_divergence="continue": the caller checks the weights
                    self.history.diverged.append({"epoch": epoch_no, "learning_rate": lr})
                total = summary[:n_steps].sum()
                if step_penalties is not None:
                    total = total + step_penalties.sum()
                loss = float(total) / train.weight_total
                acc = None
                if out["corrects"] is not None:
                    acc = float(summary[n_steps:-1].sum()) / train.weight_total
                logs: dict[str, Any] = {
                    "epoch": epoch_no,
                    "loss": loss,
                    "accuracy": acc,
                    "val_loss": None,
                    "val_accuracy": None,
                    "learning_rate": lr,
                }
                if self.net.precision in LOSS_SCALED:
                    skipped = self.loss_scaler.skipped - self._scaler_at_epoch["skipped"]
                    logs["skipped_steps"] = skipped
                    logs["loss_scale"] = self.loss_scaler.scale
                logs.update(train_metrics)
                if val is not None and self.metric_set:
                    scores = evaluate_metrics(self.net, [val], self.metric_set)
                    logs.update({f"val_{k}": v for k, v in scores.items()})
                elif val is not None:
                    logs["val_loss"], logs["val_accuracy"] = evaluate_data(self.net, val, strategy)
                self.epoch = epoch_no
                logs["seconds"] = time.perf_counter() - t0
                self.history.epochs.append(logs)
                # those that save the run go last: they save every other's state of this epoch
                for cb in sorted(self.callbacks, key=lambda c: c.writes_run_state):
                    cb.on_epoch_end(self, logs)
                # a stop on any process stops every process: none is left in a collective
                self.stop_training = strategy.any(self.stop_training)
                bar.update(logs)
        finally:
            bar.close()
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history

    def _diverged(
        self,
        train: Source,
        perm: np.ndarray | None,
        snapshot: tuple[tuple[Params, Params], Any, int],
        step_sums: np.ndarray,
        epoch_no: int,
    ) -> None:
        model, opt_state, step0 = snapshot
        # replay the epoch from its starting weights, checking every step, to find
        # the exact step and keep the weights just before it
        # updates run in place: replay on copies so the snapshot stays pristine
        self.set_model(self.copy_state(model))
        self.opt_state, self.step = self.copy_state(opt_state), step0
        self.loss_scaler.load_state_dict(self._scaler_at_epoch)
        replay = self.run_epoch(train, perm, check_each=True)
        batch = replay.get("failed_batch")
        if batch is None:  # the replay stayed finite: blame the first non-finite loss
            bad = np.flatnonzero(~np.isfinite(step_sums))
            batch = int(bad[0]) if bad.size else len(step_sums) - 1
        record = {
            "epoch": epoch_no,
            "step": self.step + 1,
            "batch": batch + 1,
            "learning_rate": self.optimizer.learning_rate(self.opt_state) * self.lr_scale,
        }
        self.history.diverged.append(record)
        where = f"epoch {epoch_no}, step {record['step']} (batch {batch + 1} of the epoch)"
        if self.options.on_divergence == "halve" and self.retries < self.options.max_retries:
            self.retries += 1
            self.lr_scale *= 0.5
            self.set_model(self.copy_state(model))
            self.opt_state, self.step = self.copy_state(opt_state), step0
            self.loss_scaler.load_state_dict(self._scaler_at_epoch)
            if self.strategy.is_root:
                print(
                    f"xbp: loss or gradient became NaN/Inf at {where}; retrying the epoch "
                    f"with the learning rate halved (retry {self.retries} of "
                    f"{self.options.max_retries})",
                    file=sys.stderr,
                )
            return
        tail = (
            f" after {self.retries} halvings of the learning rate"
            if self.options.on_divergence == "halve"
            else ""
        )
        raise DivergenceError(
            f"training diverged at {where}: the loss or a gradient became NaN/Inf{tail}. "
            "The network holds the last good weights (from just before that step). Lower the "
            "learning rate, clip gradients (clip_norm=...), or pass on_divergence='halve'"
        )


def evaluate_data(
    net: Network, data: Source, strategy: Strategy | None = None, batch_size: int = EVAL_BATCH
) -> tuple[float, float | None]:
    """Loss and accuracy (None where it does not apply) over a data source, each
    process evaluating its share in batches of ``batch_size`` rows."""
    strategy = LocalStrategy() if strategy is None else strategy
    lo, hi = strategy.share(0, data.n or 0)
    cost, correct = data.evaluation_sums(net, lo, hi, batch_size)
    total = data.weight_total  # a source's rows are known once it has been read
    xp = net.xp
    parts = [xp.reshape(cost, (1,))]
    if correct is not None:
        parts.append(xp.reshape(correct, (1,)))
    sums = np.array(net.backend.to_host(xp.concat(parts)), dtype=np.float64)
    sums = strategy.reduce_sums(sums)  # every process evaluated its own rows
    loss = float(sums[0]) / total
    acc = float(sums[1]) / total if correct is not None else None
    return loss, acc


def evaluate_metrics(
    net: Network,
    parts: Iterable[Source],
    metrics: MetricSet,
    batch_size: int = EVAL_BATCH,
) -> dict[str, Any]:
    """Loss, accuracy (None where it does not apply) and every metric of ``metrics``
    over data sources taken one after the other (one source, or the chunks of a file too
    big to hold), in one forward pass and one host read, batches of ``batch_size`` rows;
    see :mod:`xbp.metrics`."""
    xp = net.xp
    states = metrics.start(net)

    def observe(out: Any, batch: Any) -> None:
        nonlocal states
        states = metrics.update(xp, states, out, batch.y, batch.labels, batch.w)

    cost: Any = None
    correct: Any = None
    labelled = True
    total = 0.0
    for part in parts:
        plan = Plan(None) if part.n is None else Plan.rows(0, part.n, batch_size)
        c, k = forward_sums(net, part.batches(net, plan), observe)
        cost = c if cost is None else cost + c
        labelled = labelled and k is not None
        correct = None if not labelled else (k if correct is None else correct + k)
        total += part.weight_total  # a batch source's rows are counted during its pass
    if cost is None:
        raise XbpValueError("the data has no rows; evaluate at least one sample")
    parts = [xp.reshape(cost, (1,))]
    if correct is not None:
        parts.append(xp.reshape(correct, (1,)))
    vec = metrics.vector(xp, states)
    if vec is not None:
        parts.append(xp.astype(vec, cost.dtype))
    sums = np.array(net.backend.to_host(xp.concat(parts)), dtype=np.float64)
    at = 2 if correct is not None else 1
    result: dict[str, Any] = {
        "loss": float(sums[0]) / total,
        "accuracy": float(sums[1]) / total if correct is not None else None,
    }
    result.update(metrics.decode(sums[at:]))
    return result
