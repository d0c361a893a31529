"""Callbacks beyond the loop's own: :class:`CSVLogger` writes one row per epoch,
:class:`ReduceLROnPlateau` lowers the learning rate when a metric stalls,
:class:`TensorBoard` writes TensorBoard event files."""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data.sources import Plan, close_batches
from ..errors import BackendUnavailableError, XbpFileError, XbpTypeError, arg
from ..io import atomic_write
from ..io.paths import check_distinct, output_file, write_target
from ..nn.validate import check_int, check_number
from .checkpoint import ModelCheckpoint
from .loop import Callback, Trainer, improves, monitor_mode, monitor_value

__all__ = ["CSVLogger", "HISTORY_COLUMNS", "ReduceLROnPlateau", "TensorBoard"]

#: The columns of :class:`xbp.History`, in the order a CSV row holds them.
HISTORY_COLUMNS = (
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "seconds",
)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float
    return str(value)


class CSVLogger(Callback):
    """Write one CSV row per epoch: the columns of :class:`xbp.History`.

    The header is ``epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,seconds``
    (then any other number a callback before this one adds to the epoch's
    logs); a value that does not apply (accuracy of a regression, validation
    without validation data) is an empty cell. Each row is flushed to disk as
    its epoch ends, so the file can be followed while training runs.

    A resumed run (``fit(..., resume=...)``, ``xbp train --resume``) continues
    the file: rows of epochs after the checkpoint's (written after the last
    checkpoint by the interrupted run) are dropped, so no epoch appears twice.

    Parameters
    ----------
    path : str or Path
        The CSV file. A new run replaces it (atomically) unless ``append``; a
        file that is not a CSVLogger's log (another header, not CSV) is never
        replaced: the run stops before its first epoch with a one-line error.
    append : bool
        Keep the rows already in the file and add the new run's below them
        (the file must have been written by a CSVLogger: same header).

    Examples
    --------
    >>> import os, tempfile, xbp
    >>> path = os.path.join(tempfile.mkdtemp(), "log.csv")
    >>> x, y = xbp.data.make_xor()
    >>> net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    >>> _ = xbp.fit(net, x, y, epochs=2, batch_size=4, callbacks=[xbp.CSVLogger(path)],
    ...             progress=False)
    >>> open(path).read().splitlines()[0]
    'epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,seconds'
    """

    def __init__(self, path: str | os.PathLike[str], append: bool = False) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise XbpTypeError(f"path is a {type(path).__name__}; pass a file path")
        if not isinstance(append, bool):
            raise XbpTypeError(f"append is a {type(append).__name__}; pass True or False")
        self.path = os.fspath(path)
        self.append = append
        self.columns: list[str] | None = None
        self._active = False

    def _read(self, done: int = 0) -> tuple[list[str] | None, list[dict[str, str]]]:
        """The header and rows already in the file (none when it does not exist).

        On a resume (``done`` > 0, the checkpoint's epoch) a last line that is not a
        whole row, the row a killed run was writing, is dropped with the other rows
        after the checkpoint's epoch.
        """
        target = write_target(Path(self.path))
        if not target.exists():
            return None, []
        fix = (
            "log to another file"
            if done or self.append
            else "log to another file (a new run replaces only a CSVLogger's own log)"
        )
        try:
            with open(target, newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                # the header first: a big file that is not a log is refused unread
                header = next(reader, None)
                if header is not None:
                    self._check_header(header, fix)
                    table = [header, *reader]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise XbpFileError(
                f"{arg('CSVLogger path', self.path)} cannot be read as a CSVLogger's log ({exc}); "
                f"{fix}"
            ) from None
        if header is None:
            return None, []
        rows = []
        for n, values in enumerate(table[1:], start=2):
            if len(values) != len(header) or not values[0].isdigit():
                if n == len(table) and (done or len(values) < len(header)):
                    break  # the partial row a killed run was writing
                raise XbpFileError(
                    f"{arg('CSVLogger path', self.path)} line {n} is not a row of its header; {fix}"
                )
            rows.append(dict(zip(header, values)))
        return header, rows

    def _check_header(self, header: list[str], fix: str) -> None:
        if not header or header[0] != "epoch":
            raise XbpFileError(
                f"{arg('CSVLogger path', self.path)} holds a file that a CSVLogger did not write "
                "(its "
                f"first column is not 'epoch'); {fix}"
            )
        if tuple(header[: len(HISTORY_COLUMNS)]) != HISTORY_COLUMNS:
            raise XbpFileError(
                f"{arg('CSVLogger path', self.path)} has the header {','.join(header)}, not a "
                f"CSVLogger's ({','.join(HISTORY_COLUMNS)}, ...); {fix}"
            )

    def outputs(self) -> dict[str, Any]:
        return {"CSVLogger path": self.path}

    def reset(self) -> None:
        self.columns = None
        self._active = False

    def _check_checkpoints(self, trainer: Trainer) -> None:
        """Refuse a log written to a checkpoint's file: each write would replace the other."""
        for cb in trainer.callbacks:
            if isinstance(cb, ModelCheckpoint):
                check_distinct({}, {"CSVLogger path": self.path, "checkpoint": cb.path})

    def on_train_begin(self, trainer: Trainer) -> None:
        self._active = trainer.strategy.is_root
        if not self._active:
            return
        output_file(Path(self.path), "CSVLogger path")
        self._check_checkpoints(trainer)
        done = int(trainer.epoch)  # > 0 when the run resumes from a checkpoint
        # read even for a new run: a file that is not a CSVLogger's log is never replaced
        header, rows = self._read(done)
        keep: list[dict[str, str]] = []
        if self.append or done:
            keep = [r for r in rows if not done or int(r["epoch"]) <= done]
        else:
            header = None
        self.columns = header
        if header is None:
            self._rewrite(None, [])
            return
        self._rewrite(header, keep)

    def _rewrite(self, header: list[str] | None, rows: list[dict[str, str]]) -> None:
        """Replace the file (atomically) with ``header`` and ``rows``; empty when None."""

        def write(f: Any) -> None:
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            if header is not None:
                table = csv.writer(text, lineterminator="\n")
                table.writerow(header)
                table.writerows([[r[c] for c in header] for r in rows])
            text.flush()
            text.detach()

        atomic_write(self.path, write, "CSVLogger path")

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if not self._active:
            return
        row: list[str] = []
        lines = io.StringIO()
        table = csv.writer(lines, lineterminator="\n")
        if self.columns is None:
            extra = sorted(
                k
                for k, v in logs.items()
                if k not in HISTORY_COLUMNS and isinstance(v, (int, float, type(None)))
            )
            self.columns = [*HISTORY_COLUMNS, *extra]
            table.writerow(self.columns)
        row = [_cell(logs.get(c)) for c in self.columns]
        table.writerow(row)
        try:
            with open(write_target(Path(self.path)), "a", encoding="utf-8", newline="") as f:
                f.write(lines.getvalue())
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise XbpFileError(
                f"{arg('CSVLogger path', self.path)} could not be written: {exc}"
            ) from None


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for
    ``patience`` epochs (Keras' rule).

    The reduction is the run's learning-rate scale (``trainer.lr_scale``): the one
    number every step multiplies its schedule's rate by (:meth:`xbp.optim.Optimizer.scalars`),
    which the divergence halving (``on_divergence="halve"``) also multiplies. So it
    composes with any optimizer and schedule (a cosine schedule keeps its shape,
    scaled), reaches compiled steps as data, and is saved in checkpoints with the
    callback's own counters: a resumed run continues with the reduced rate.

    Parameters
    ----------
    monitor : str
        The loss or any metric of ``fit(metrics=[...])`` (``"val_loss"``,
        ``"val_f1_macro"``, ...), watched in its own direction (``mode`` None).
    factor : float
        In (0, 1): the new rate is ``factor`` times the current one.
    patience : int
        The rate is reduced at the end of the ``patience``-th epoch in a row without
        improvement (0 and 1: the first such epoch).
    min_delta : float
        An improvement must beat the best value by more than this.
    cooldown : int
        The ``cooldown`` epochs after a reduction do not count towards the wait
        (an improvement in them still sets the best value).
    min_lr : float
        The rate is never reduced below this.
    mode : "min", "max" or None

    Examples
    --------
    >>> import numpy as np, xbp
    >>> x, y = xbp.data.make_xor()
    >>> net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    >>> plateau = xbp.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=1.0)
    >>> hist = xbp.fit(net, x, y, epochs=3, batch_size=4, learning_rate=0.2,
    ...                callbacks=[plateau], progress=False)
    >>> [round(r, 3) for r in hist["learning_rate"]]  # epoch 1 sets the best; 2 did not beat it
    [0.2, 0.2, 0.1]
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        mode: str | None = None,
    ) -> None:
        self.monitor = monitor
        self.mode = monitor_mode(monitor, mode)
        self.factor = check_number(factor, "factor", high=1.0, high_open=True)
        self.patience = check_int(patience, "patience", low=0)
        self.min_delta = check_number(min_delta, "min_delta", low_open=False)
        self.cooldown = check_int(cooldown, "cooldown", low=0)
        self.min_lr = check_number(min_lr, "min_lr", low_open=False)
        self.best: float | None = None
        self.wait = 0
        self.cooldown_left = 0
        self.reductions: list[int] = []  # the epochs after which the rate was reduced

    def _better(self, value: float) -> bool:
        return improves(value, self.best, self.mode, self.min_delta)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        value = monitor_value(logs, self.monitor, "ReduceLROnPlateau monitor")
        improved = self._better(value)
        if improved:
            self.best, self.wait = value, 0
        if self.cooldown_left > 0:  # the epochs just after a reduction do not count
            self.cooldown_left -= 1
            return
        if improved:
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        self.wait = 0
        rate = trainer.optimizer.learning_rate(trainer.opt_state) * trainer.lr_scale
        if rate <= self.min_lr:
            return
        new = max(rate * self.factor, self.min_lr)
        trainer.lr_scale *= new / rate
        self.cooldown_left = self.cooldown
        self.reductions.append(int(logs["epoch"]))

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "wait": self.wait,
            "cooldown_left": self.cooldown_left,
            "reductions": list(self.reductions),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
        self.wait = int(state.get("wait", 0))
        self.cooldown_left = int(state.get("cooldown_left", 0))
        self.reductions = [int(e) for e in state.get("reductions", [])]


class TensorBoard(Callback):
    """Write TensorBoard event files: every number of an epoch's logs as a scalar, and
    every ``histogram_freq`` epochs a histogram of each layer's weights and gradients.

    Scalars are tagged with their History column (``loss``, ``val_loss``,
    ``accuracy``, ``learning_rate``, each metric of ``fit(metrics=[...])``) at
    step = epoch. Histograms are ``weights/<i>.<layer>/<name>`` (the weights at the
    epoch's end) and ``gradients/<i>.<layer>/<name>``: the gradient of the loss on
    the first batch of the training rows with those weights (one extra forward and
    backward pass, at histogram epochs only). Needs the ``tensorboard`` extra
    (``pip install tensorboardX``); only the root process of a data-parallel run
    writes. A resumed run drops events after the checkpoint's epoch from the view.

    Parameters
    ----------
    log_dir : str or Path
        The directory of the run's event files (``tensorboard --logdir``).
    histogram_freq : int
        Histograms every this many epochs; 0 writes none.

    Examples
    --------
    >>> import os, tempfile, xbp
    >>> logdir = tempfile.mkdtemp()
    >>> x, y = xbp.data.make_xor()
    >>> net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    >>> _ = xbp.fit(net, x, y, epochs=2, batch_size=4, progress=False,
    ...             callbacks=[xbp.TensorBoard(logdir, histogram_freq=1)])
    >>> any(name.startswith("events.out.tfevents") for name in os.listdir(logdir))
    True
    """

    def __init__(self, log_dir: str | os.PathLike[str], histogram_freq: int = 0) -> None:
        if not isinstance(log_dir, (str, os.PathLike)):
            raise XbpTypeError(f"log_dir is a {type(log_dir).__name__}; pass a directory path")
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = check_int(histogram_freq, "histogram_freq", low=0)
        self._writer: Any = None

    def on_train_begin(self, trainer: Trainer) -> None:
        if not trainer.strategy.is_root:
            return
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise BackendUnavailableError(
                "TensorBoard needs tensorboardX: pip install 'xbp[tensorboard]' "
                "(or pip install tensorboardX)"
            ) from None
        if Path(self.log_dir).exists() and not Path(self.log_dir).is_dir():
            raise XbpFileError(f"TensorBoard log_dir={self.log_dir!r} is a file; pass a directory")
        # a resumed run continues after its checkpoint: later events of the old run hide
        purge = int(trainer.epoch) + 1 if trainer.epoch else None
        # a name of its own: two writers started in the same second would share
        # tensorboardX's default name and the second would replace the first's events;
        # the nanoseconds keep the files in the order TensorBoard must read them
        suffix = f".{time.time_ns():020d}.{os.getpid()}"
        self._writer = SummaryWriter(self.log_dir, purge_step=purge, filename_suffix=suffix)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self._writer is None:
            return
        epoch = int(logs["epoch"])
        for key, value in logs.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(key, float(value), epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._histograms(trainer, epoch)
        self._writer.flush()

    def _histograms(self, trainer: Trainer, epoch: int) -> None:
        net = trainer.net
        names = [f"{i}.{type(layer).__name__.lower()}" for i, layer in enumerate(net.layers)]
        for name, p in zip(names, net.host_params()):
            for k, v in p.items():
                self._writer.add_histogram(f"weights/{name}/{k}", v, epoch)
        grads = self.first_batch_gradients(trainer)
        if grads is None:
            return
        for name, g in zip(names, grads):
            for k, v in g.items():
                self._writer.add_histogram(
                    f"gradients/{name}/{k}", np.asarray(net.backend.to_host(v)), epoch
                )

    @staticmethod
    def first_batch_gradients(trainer: Trainer) -> Any:
        """The loss's gradients on the first batch of the training rows (None without
        training data), with the network's current weights."""
        data = trainer.train_data
        if data is None:
            return None
        size = trainer.options.batch_size
        plan = Plan(None) if data.n is None else Plan.rows(0, min(size, data.n), size)
        batches = data.batches(trainer.net, plan)
        try:
            batch = next(iter(batches), None)
        finally:
            close_batches(batches)
        if batch is None:
            return None
        return trainer.net.value_and_grad(
            batch.x, batch.y, sample_weight=batch.w, n_total=batch.n_total
        ).grads

    def on_train_end(self, trainer: Trainer) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
