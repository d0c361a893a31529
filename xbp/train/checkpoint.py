"""Checkpoints and resume: the one module that turns a training run into a file and back.

It sits above the training loop: :class:`ModelCheckpoint` is a callback that
writes the trainer's state through :func:`xbp.io.save`; :func:`resume`
restores a trainer from a :class:`xbp.io.Checkpoint` (read once, by the caller
or here from a path). A checkpoint holds the weights, the optimizer and its
state, the schedule position, epoch and step, the shuffling RNG state, the
callbacks' state and the history, so a resumed run continues exactly.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..errors import XbpFileError, XbpTypeError, XbpValueError, arg
from ..io import Checkpoint, check_same_architecture, load_checkpoint, save
from ..io.paths import output_file
from ..metrics import metric_mode
from ..nn.validate import check_int
from ..optim import state_from_host, state_to_host
from .loop import Callback, Trainer, improves, monitor_mode, monitor_value

__all__ = [
    "ModelCheckpoint",
    "save_checkpoint",
    "resume",
    "read_checkpoint",
    "check_resumed_run",
    "run_record",
    "checkpoint_epoch",
]


def save_checkpoint(trainer: Trainer, path: str | os.PathLike[str]) -> None:
    """Write the trainer's whole state to ``path`` (atomically; the root process only)."""
    if not trainer.strategy.is_root:
        return
    save(
        trainer.net,
        path,
        optimizer=trainer.optimizer,
        optimizer_state=trainer.opt_state,
        training=trainer.training_state(),
        metadata=trainer.metadata,
    )


class ModelCheckpoint(Callback):
    """Write a checkpoint every ``every`` epochs, or only when ``monitor`` improves.

    A checkpoint resumes a run exactly (see ``fit(..., resume=path)``). Files
    are replaced atomically. With ``best_only`` the ``monitor`` (the loss or any
    metric of ``fit(metrics=[...])``) is watched in its own direction (``mode``
    None) or the one given (``"min"``/``"max"``).

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.make_xor()
    >>> net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    >>> save = xbp.ModelCheckpoint("run.npz", every=2)
    >>> history = xbp.fit(net, x, y, epochs=4, batch_size=4, callbacks=[save], progress=False)
    >>> xbp.load_checkpoint("run.npz").training["epoch"]
    4
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        every: int = 1,
        best_only: bool = False,
        monitor: str = "val_loss",
        mode: str | None = None,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise XbpTypeError(f"path is a {type(path).__name__}; pass a file path")
        self.path = os.fspath(path)
        self.every = check_int(every, "every")
        self.best_only = best_only
        self.monitor = monitor
        # the loss's or the metric's own direction; another logged value: lower is better
        self.mode = monitor_mode(monitor, mode) if mode or metric_mode(monitor) else "min"
        self.best: float | None = None

    writes_run_state = True

    def reset(self) -> None:
        self.best = None

    def outputs(self) -> dict[str, Any]:
        return {"checkpoint": self.path}

    def on_train_begin(self, trainer: Trainer) -> None:
        output_file(Path(self.path), "checkpoint")

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self.best_only:
            value = monitor_value(logs, self.monitor, "ModelCheckpoint monitor")
            if not improves(value, self.best, self.mode):
                return
            self.best = value
        elif logs["epoch"] % self.every:
            return
        save_checkpoint(trainer, self.path)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best = state.get("best")
        if best is not None and (
            isinstance(best, bool) or not isinstance(best, (int, float)) or math.isnan(best)
        ):
            raise XbpValueError(f"ModelCheckpoint's saved best value is {best!r}, not a number")
        self.best = None if best is None else float(best)


def read_checkpoint(source: Any, trainer: Trainer, argument: str = "resume") -> Checkpoint:
    """``source`` as a loaded :class:`xbp.io.Checkpoint` on the trainer's backend and device."""
    if isinstance(source, Checkpoint):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise XbpTypeError(
            f"{argument} is a {type(source).__name__}; pass a checkpoint path or an "
            "xbp.io.Checkpoint from xbp.load_checkpoint"
        )
    net = trainer.net
    return load_checkpoint(source, backend=net.backend, argument=argument)


def resume(trainer: Trainer, source: Any, argument: str = "resume") -> Checkpoint:
    """Continue ``trainer``'s run from a checkpoint (a path, or one already loaded).

    The network must have the same architecture and the run the same
    optimizer settings; the weights, optimizer state and training state are
    taken from the checkpoint. Returns the checkpoint.
    """
    ck = read_checkpoint(source, trainer, argument)
    where = f"{argument}={os.fspath(source)!r}" if not isinstance(source, Checkpoint) else argument
    net = trainer.net
    check_same_architecture(net, ck.network, where)
    if not ck.training or "epoch" not in ck.training:
        raise XbpValueError(
            f"{where} is a model file without training state; resume from a checkpoint "
            "written with checkpoint=... (or load it with xbp.load to start anew)"
        )
    moved = ck.network.to(net.backend, dtype=net.backend.dtype_name(net.dtype))
    trainer.set_model((moved.params, moved.state))
    if ck.optimizer is not None and ck.optimizer_state is not None:
        if ck.optimizer.config() != trainer.optimizer.config():
            raise XbpValueError(
                f"{where} was trained with {ck.optimizer.config()} but this run uses "
                f"{trainer.optimizer.config()}; resume with the same optimizer settings"
            )
        state = ck.optimizer_state
        if ck.network.backend != net.backend or ck.network.dtype != net.dtype:
            # loaded elsewhere: the leaves travel through the host, like the weights
            src, be = ck.network.backend, net.backend
            state = state_from_host(
                trainer.optimizer.init(net.params),
                state_to_host(state, src.to_host),
                lambda a, dt: be.asarray(a, dt, copy=True),
            )
        trainer.opt_state = state
    try:
        trainer.load_training_state(ck.training)
    except XbpValueError as exc:  # a callback's saved state that does not fit it
        raise XbpFileError(
            f"{where} has a corrupt training state: {exc}; use a checkpoint written by fit"
        ) from None
    return ck


# the settings of fit that define a run: a resume must not contradict them
RUN_SETTINGS = (
    "batch_size",
    "validation_split",
    "shuffle",
    "seed",
    "precision",
    "on_divergence",
    "max_retries",
)


def run_record(trainer: Trainer, epochs: int, data: dict[str, Any]) -> dict[str, Any]:
    """What defines ``trainer``'s run: its settings, planned epochs and data
    fingerprint (:func:`xbp.parallel.mpi.data_fingerprint`), JSON-able."""
    o = trainer.options
    record: dict[str, Any] = {name: getattr(o, name) for name in RUN_SETTINGS}
    record["precision"] = o.precision if o.precision is not None else trainer.net.precision
    record["epochs"] = int(epochs)
    record["data"] = data
    return record


def check_resumed_run(ck: Checkpoint, current: dict[str, Any], where: str) -> None:
    """Refuse a resume whose settings or data contradict the checkpoint's run.

    Every contradicting setting is named in one line (in the caller's words,
    :func:`xbp.errors.arg`); data whose fingerprint differs (other rows, another
    split or order) is refused; so is a run already at or beyond ``epochs``.
    A checkpoint of an xbp that recorded no run is checked for the epochs only.
    """
    done = int(ck.training.get("epoch", 0))
    if current["epochs"] <= done:
        raise XbpValueError(
            f"{arg('epochs', current['epochs'])} is not beyond the {done} epochs {where} has "
            f"done; ask for more (e.g. {arg('epochs', done + max(current['epochs'], 1))}) to "
            "continue the run"
        )
    stored = ck.training.get("run")
    if not isinstance(stored, dict) or not stored:
        return
    clashes = [
        name
        for name in RUN_SETTINGS
        if name in stored and _same(stored[name]) != _same(current[name])
    ]
    if clashes:
        now = ", ".join(arg(n, current[n]) for n in clashes)
        then = ", ".join(arg(n, stored[n]) for n in clashes)
        raise XbpValueError(
            f"{now} contradicts {where}, which was trained with {then}; pass the same to "
            "continue the run, or start a new run without resuming"
        )
    if "data" in stored and stored["data"] != current["data"]:
        then, now = stored["data"], current["data"]
        which = [k for k in ("train", "validation") if then.get(k) != now.get(k)]
        what = {"train": f"the training data ({arg('x')})", "validation": "the validation data"}
        raise XbpValueError(
            f"{' and '.join(what[k] for k in which)} differ from what {where} was trained on "
            "(other rows, values, split or order); resume with the same data, or start a new run"
        )


def _same(value: Any) -> Any:
    """Settings compared as JSON stores them (tuples become lists, floats stay exact)."""
    return json.loads(json.dumps(value))


def checkpoint_epoch(path: str | os.PathLike[str]) -> int | None:
    """The epoch a checkpoint file holds, or None when there is no readable checkpoint
    there (not written yet, a plain model file)."""
    try:
        ck = load_checkpoint(path)
    except (OSError, ValueError):
        return None
    epoch = (ck.training or {}).get("epoch")
    return None if epoch is None else int(epoch)
