"""The training loop: mini-batch gradient descent with callbacks, checkpoints and resume.

The data set moves to the device once per :func:`fit`; batches are gathered
with ``xp.take`` and device-side indices; per-step losses stay on the device
and are read back once per epoch, together with a finiteness check of the
weights, so the batch loop never waits for the device. When an epoch turns
out to have diverged, it is replayed step by step from its starting weights
(the same batches, the same arithmetic) to find the exact step and the last
good weights.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DivergenceError, XbpTypeError, XbpValueError
from .network import Network, Params
from .optim import Optimizer, apply_updates, get_optimizer
from .validate import as_features, as_targets, check_int, check_number, is_host_array

__all__ = [
    "History",
    "Callback",
    "EarlyStopping",
    "ModelCheckpoint",
    "Trainer",
    "fit",
    "evaluate",
    "predict_classes",
]

EVAL_CHUNK = 8192


@dataclass
class History:
    """Per-epoch records of a run: ``loss``, ``accuracy``, ``val_loss``,
    ``val_accuracy``, ``learning_rate``, ``seconds`` (None where they do not apply).

    ``history["loss"]`` gives one column; ``history.epochs`` the rows.
    ``diverged`` says at which epoch and step a run hit NaN/Inf, if it did.
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    diverged: list[dict[str, Any]] = field(default_factory=list)

    def __getitem__(self, key: str) -> list[Any]:
        return [row.get(key) for row in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

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


class Callback:
    """Hooks called by :class:`Trainer`; override what you need."""

    def on_train_begin(self, trainer: Trainer) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _monitor_value(logs: dict[str, Any], monitor: str) -> float | None:
    value = logs.get(monitor)
    if value is None and monitor.startswith("val_"):
        value = logs.get(monitor[4:])  # no validation data: watch the training metric
    return None if value is None else float(value)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    At the end of training the best weights are restored, whether or not the
    run stopped early (``restore_best=False`` keeps the last ones).
    ``monitor`` is ``"val_loss"`` (falls back to ``"loss"`` without
    validation data), ``"loss"``, ``"val_accuracy"`` or ``"accuracy"``; any
    other key a callback adds to the epoch's logs works with ``mode="min"``
    or ``"max"``.
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
        known = ("loss", "val_loss", "accuracy", "val_accuracy")
        if mode is None:
            if monitor not in known:
                raise XbpValueError(
                    f"monitor={monitor!r}; use 'loss', 'val_loss', 'accuracy' or "
                    "'val_accuracy', or name mode='min'/'max' for a metric a callback logs"
                )
            mode = "max" if "accuracy" in monitor else "min"
        elif mode not in ("min", "max"):
            raise XbpValueError(f"mode={mode!r}; use 'min' or 'max'")
        self.monitor = monitor
        self.mode = mode
        self.restore_best = restore_best
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self._best_params: Params | None = None

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        value = _monitor_value(logs, self.monitor)
        if value is None:
            return
        if self._better(value):
            self.best, self.best_epoch, self.wait = value, logs["epoch"], 0
            if self.restore_best:
                self._best_params = trainer.copy_params()
        else:
            self.wait += 1
            if self.wait > self.patience:
                trainer.stop_training = True
                trainer.history.stopped_early = True

    def on_train_end(self, trainer: Trainer) -> None:
        if self.restore_best and self._best_params is not None:
            trainer.set_params(self._best_params)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")
        self.wait = int(state.get("wait", 0))


class ModelCheckpoint(Callback):
    """Write a checkpoint every ``every`` epochs, or only when ``monitor`` improves.

    A checkpoint holds weights, optimizer state, schedule position, epoch and
    step, the shuffling RNG state and the history; it resumes a run exactly
    (see ``fit(..., resume=path)``). Files are replaced atomically.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        every: int = 1,
        best_only: bool = False,
        monitor: str = "val_loss",
    ) -> None:
        self.path = os.fspath(path)
        self.every = check_int(every, "every")
        self.best_only = best_only
        self.monitor = monitor
        self.best: float | None = None

    def on_train_begin(self, trainer: Trainer) -> None:
        from pathlib import Path

        from .io import _check_target_dir

        _check_target_dir(Path(self.path), "checkpoint")

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self.best_only:
            value = _monitor_value(logs, self.monitor)
            better = value is not None and (
                self.best is None
                or (value > self.best if "accuracy" in self.monitor else value < self.best)
            )
            if not better:
                return
            self.best = value
        elif logs["epoch"] % self.every:
            return
        trainer.save_checkpoint(self.path)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")


class _Progress:
    """A tqdm bar on a terminal, one line per epoch otherwise, nothing when off."""

    def __init__(self, mode: Any, epochs: int, start: int) -> None:
        stream = sys.stdout
        if mode == "auto" or mode is True:
            mode = "bar" if stream.isatty() else "lines"
        if mode not in ("bar", "lines", False, None, "off"):
            raise XbpValueError(f"progress={mode!r}; use True/'auto', 'bar', 'lines' or False")
        self.mode = mode if mode in ("bar", "lines") else "off"
        self.bar = None
        if self.mode == "bar":
            try:
                from tqdm.auto import tqdm
            except ImportError:
                self.mode = "lines"
            else:
                self.bar = tqdm(total=epochs, initial=start, unit="epoch", file=stream)

    @staticmethod
    def line(logs: dict[str, Any]) -> str:
        parts = [f"epoch {logs['epoch']:>3}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if logs.get(key) is not None:
                parts.append(f"{key} {logs[key]:.4f}")
        parts.append(f"lr {logs['learning_rate']:.3g}")
        parts.append(f"{logs['seconds']:.2f}s")
        return "  ".join(parts)

    def update(self, logs: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self.line(logs).split("  ", 1)[1])
            self.bar.update(1)
        elif self.mode == "lines":
            print(self.line(logs), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Trainer:
    """Runs :func:`fit`; callbacks receive it and may read or stop it.

    Attributes a callback may use: ``net``, ``optimizer``, ``opt_state``,
    ``history``, ``epoch`` (completed epochs), ``step`` (completed updates),
    ``stop_training``.
    """

    def __init__(
        self,
        net: Network,
        optimizer: Optimizer,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int | None,
        on_divergence: str,
        max_retries: int,
        callbacks: list[Callback],
        comm: Any = None,
    ) -> None:
        self.net = net
        self.optimizer = optimizer
        self.opt_state = optimizer.init(net.params)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.on_divergence = on_divergence
        self.max_retries = max_retries
        self.retries = 0
        self.lr_scale = 1.0
        self.callbacks = callbacks
        self.history = History()
        self.epoch = 0
        self.step = 0
        self.stop_training = False
        self.comm = comm
        self.reducer: Any = None  # set by xbp.distributed: combines per-rank gradients
        self.metadata: dict[str, Any] = {}

    # -- state ---------------------------------------------------------
    def copy_params(self) -> Params:
        xp = self.net.xp
        return [{k: xp.asarray(v, copy=True) for k, v in p.items()} for p in self.net.params]

    def set_params(self, params: Params) -> None:
        # the copies are private to xbp already: no second copy needed
        self.net._params = [dict(p) for p in params]

    def _copy_state(self, state: Any) -> Any:
        xp = self.net.xp
        if isinstance(state, tuple):
            vals = [self._copy_state(s) for s in state]
            return type(state)(*vals) if hasattr(state, "_fields") else tuple(vals)
        if isinstance(state, list):
            return [self._copy_state(s) for s in state]
        if isinstance(state, dict):
            return {k: self._copy_state(v) for k, v in state.items()}
        if isinstance(state, int):
            return state
        return xp.asarray(state, copy=True)

    def training_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "rng": self.rng.bit_generator.state,
            "seed": self.seed,
            "lr_scale": self.lr_scale,
            "retries": self.retries,
            "history": self.history.to_dict(),
            "callbacks": [cb.state_dict() for cb in self.callbacks],
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.rng.bit_generator.state = state["rng"]
        self.lr_scale = float(state.get("lr_scale", 1.0))
        self.retries = int(state.get("retries", 0))
        self.history = History.from_dict(state.get("history", {}))
        for cb, cb_state in zip(self.callbacks, state.get("callbacks", [])):
            cb.load_state_dict(cb_state)

    def save_checkpoint(self, path: str) -> None:
        if self.comm is not None and self.comm.Get_rank() != 0:
            return
        from .io import save

        save(
            self.net,
            path,
            optimizer=self.optimizer,
            optimizer_state=self.opt_state,
            training=self.training_state(),
            metadata=self.metadata,
        )

    # -- the step ------------------------------------------------------
    def _update(self, xb: Any, yb: Any, n_total: int) -> tuple[Any, Any, Params]:
        """One step; returns the cost, the output and the updates that were applied."""
        net = self.net
        fused = self.optimizer.fused_scale(self.opt_state)
        if fused is not None:
            # plain SGD: the backward pass yields -lr * grad directly
            scale, self.opt_state = fused
            cost, updates, out = net._backprop_out(
                xb, yb, n_total, grad_scale=scale * self.lr_scale
            )
            if self.reducer is not None:
                cost, updates = self.reducer(cost, updates)
            apply_updates(net._params, updates)
            return cost, out, updates
        cost, grads, out = net._backprop_out(xb, yb, n_total)
        if self.reducer is not None:
            cost, grads = self.reducer(cost, grads)
        # the gradients are fresh arrays of this step: the optimizer may overwrite them
        updates, self.opt_state = self.optimizer.update(
            grads, self.opt_state, net._params, inplace=True
        )
        if self.lr_scale != 1.0:
            updates = [{k: u * self.lr_scale for k, u in p.items()} for p in updates]
        apply_updates(net._params, updates)
        return cost, out, updates

    def _batches(self, n: int) -> list[tuple[int, int]]:
        bs = self.batch_size
        return [(s, min(s + bs, n)) for s in range(0, n, bs)]

    def run_epoch(self, data: _Data, perm: Any, check_each: bool = False) -> dict[str, Any]:
        """One pass over the data. With ``check_each`` every step is checked on the host
        (only when replaying a diverged epoch)."""
        xp = self.net.xp
        costs, corrects = [], []
        for b, (s, e) in enumerate(self._batches(data.n)):
            idx = data.batch_indices(perm, s, e)
            xb = xp.take(data.x, idx, axis=0)
            yb = xp.take(data.y, idx, axis=0)
            before = self.copy_params() if check_each else None
            cost, out, updates = self._update(xb, yb, data.scale_n(e - s))
            if check_each:
                bad = not math.isfinite(float(cost)) or not _finite(xp, updates)
                if bad:
                    assert before is not None
                    self.set_params(before)
                    return {"failed_batch": b}
            costs.append(cost * (e - s))
            if data.labels is not None:
                corrects.append(_correct(xp, out, xp.take(data.labels, idx, axis=0)))
            self.step += 1
        return {"costs": costs, "corrects": corrects}

    # -- the loop ------------------------------------------------------
    def fit(self, train: _Data, val: _Data | None, epochs: int, progress: Any) -> History:
        xp = self.net.xp
        be = self.net.backend
        for cb in self.callbacks:
            cb.on_train_begin(self)
        bar = _Progress(progress if self._is_root() else False, epochs, self.epoch)
        try:
            while self.epoch < epochs and not self.stop_training:
                t0 = time.perf_counter()
                epoch_no = self.epoch + 1
                lr = self.optimizer.learning_rate(self.opt_state) * self.lr_scale
                host_perm = train.permutation(self.rng, self.shuffle)
                perm = be.asarray(host_perm)
                snapshot = (self.copy_params(), self._copy_state(self.opt_state), self.step)
                out = self.run_epoch(train, perm)
                # one device->host read per epoch: every step's loss, the correct counts
                # and a sum over all weights (NaN/Inf anywhere makes it non-finite)
                weight_sum = sum(xp.sum(v) for p in self.net._params for v in p.values())
                stacked = xp.stack([*out["costs"], *out["corrects"], weight_sum])
                summary = np.array(be.to_host(stacked), dtype=np.float64)  # writable copy
                n_steps = len(out["costs"])
                if out["corrects"]:  # each rank counted its own share of every batch
                    summary[n_steps:-1] = train.reduce_sums(summary[n_steps:-1])
                step_costs = summary[:n_steps] / train.batch_sizes(self.batch_size)
                if not np.isfinite(summary).all():
                    self._diverged(train, perm, snapshot, step_costs, epoch_no)
                    continue
                loss = float(summary[:n_steps].sum()) / train.total
                acc = None
                if out["corrects"]:
                    acc = float(summary[n_steps:-1].sum()) / train.total
                logs: dict[str, Any] = {
                    "epoch": epoch_no,
                    "loss": loss,
                    "accuracy": acc,
                    "val_loss": None,
                    "val_accuracy": None,
                    "learning_rate": lr,
                }
                if val is not None:
                    logs["val_loss"], logs["val_accuracy"] = _evaluate_data(self.net, val)
                self.epoch = epoch_no
                logs["seconds"] = time.perf_counter() - t0
                self.history.epochs.append(logs)
                for cb in self.callbacks:
                    cb.on_epoch_end(self, logs)
                bar.update(logs)
        finally:
            bar.close()
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history

    def _is_root(self) -> bool:
        return self.comm is None or self.comm.Get_rank() == 0

    def _diverged(
        self,
        train: _Data,
        perm: Any,
        snapshot: tuple[Params, Any, int],
        step_costs: np.ndarray,
        epoch_no: int,
    ) -> None:
        params, opt_state, step0 = snapshot
        # replay the epoch from its starting weights, checking every step, to find
        # the exact step and keep the weights just before it
        # updates run in place: replay on copies so the snapshot stays pristine
        self.set_params(self._copy_state(params))
        self.opt_state, self.step = self._copy_state(opt_state), step0
        replay = self.run_epoch(train, perm, check_each=True)
        batch = replay.get("failed_batch")
        if batch is None:  # the replay stayed finite: blame the first non-finite loss
            bad = np.flatnonzero(~np.isfinite(step_costs))
            batch = int(bad[0]) if bad.size else len(step_costs) - 1
        record = {
            "epoch": epoch_no,
            "step": self.step + 1,
            "batch": batch + 1,
            "learning_rate": self.optimizer.learning_rate(self.opt_state) * self.lr_scale,
        }
        self.history.diverged.append(record)
        where = f"epoch {epoch_no}, step {record['step']} (batch {batch + 1} of the epoch)"
        if self.on_divergence == "halve" and self.retries < self.max_retries:
            self.retries += 1
            self.lr_scale *= 0.5
            self.set_params(self._copy_state(params))
            self.opt_state, self.step = self._copy_state(opt_state), step0
            if self._is_root():
                print(
                    f"xbp: loss or gradient became NaN/Inf at {where}; retrying the epoch "
                    f"with the learning rate halved (retry {self.retries} of "
                    f"{self.max_retries})",
                    file=sys.stderr,
                )
            return
        tail = (
            f" after {self.retries} halvings of the learning rate"
            if self.on_divergence == "halve"
            else ""
        )
        raise DivergenceError(
            f"training diverged at {where}: the loss or a gradient became NaN/Inf{tail}. "
            "The network holds the last good weights (from just before that step). Lower the "
            "learning rate, clip gradients (clip_norm=...), or pass on_divergence='halve'"
        )


def _finite(xp: Any, grads: Params) -> bool:
    total = sum(xp.sum(v) for g in grads for v in g.values())
    return math.isfinite(float(total))


def _correct(xp: Any, out: Any, labels: Any) -> Any:
    if out.shape[1] == 1:
        pred = xp.astype(out[:, 0] > 0.5, labels.dtype)
    else:
        pred = xp.astype(xp.argmax(out, axis=1), labels.dtype)
    return xp.sum(xp.astype(pred == labels, out.dtype))


class _Data:
    """A data set on the device: features, float targets, optional class labels."""

    def __init__(self, x: Any, y: Any, labels: Any, total: int | None = None) -> None:
        self.x, self.y, self.labels = x, y, labels
        self.n = int(x.shape[0])
        self.total = self.n if total is None else total  # rows over all ranks

    def scale_n(self, rows: int) -> int:
        """The divisor of this batch's average (overridden for distributed batches)."""
        return rows

    def batch_indices(self, perm: Any, s: int, e: int) -> Any:
        """The rows of global batch ``[s, e)`` this process works on."""
        return perm[s:e]

    def reduce_sums(self, values: np.ndarray) -> np.ndarray:
        """Sum host values over all processes (one process: unchanged)."""
        return values

    def eval_range(self) -> tuple[int, int]:
        """The rows this process evaluates."""
        return 0, self.n

    def permutation(self, rng: np.random.Generator, shuffle: bool) -> np.ndarray:
        return rng.permutation(self.n) if shuffle else np.arange(self.n)

    def batch_sizes(self, bs: int) -> np.ndarray:
        n_batches = -(-self.n // bs)
        sizes = np.full(n_batches, bs, dtype=float)
        sizes[-1] = self.n - bs * (n_batches - 1)
        return sizes


def _labels_of(net: Network, y_in: Any, y_dev: Any) -> Any:
    """Class labels on the device when accuracy applies, else None."""
    xp = net.xp
    if net.n_out > 1 and y_in is not None and getattr(y_in, "ndim", 0) == 1:
        return xp.argmax(y_dev, axis=1)  # integer labels were one-hot encoded
    if net.loss.name == "cross_entropy" or (net.loss.name == "quadratic" and net.n_out > 1):
        onehot = bool(xp.all(xp.sum(y_dev, axis=1) == 1)) and bool(
            xp.all((y_dev == 0) | (y_dev == 1))
        )
        return xp.argmax(y_dev, axis=1) if onehot else None
    if net.n_out == 1 and bool(xp.all((y_dev == 0) | (y_dev == 1))):
        return xp.astype(y_dev[:, 0] > 0.5, xp.int64)  # 0/1 targets: binary accuracy
    return None


def _prepare(net: Network, x: Any, y: Any, argument: str = "x") -> _Data:
    yname = "y" if argument == "x" else argument.replace("x", "y")
    xd = as_features(net.backend, x, net.dtype, net.n_in, argument)
    yd = as_targets(net.backend, y, net.dtype, net.n_out, int(xd.shape[0]), yname)
    return _Data(xd, yd, _labels_of(net, y, yd))


def _evaluate_data(net: Network, data: _Data) -> tuple[float, float | None]:
    xp = net.xp
    parts = []
    correct = []
    lo, hi = data.eval_range()
    for s in range(lo, hi, EVAL_CHUNK):
        e = min(s + EVAL_CHUNK, hi)  # out-of-bounds slice stops are not standard
        xb, yb = data.x[s:e, ...], data.y[s:e, ...]
        cost, _, out = net._backprop_out(xb, yb, None, forward_only=True)
        parts.append(cost * (e - s))
        if data.labels is not None:
            correct.append(_correct(xp, out, data.labels[s:e]))
    vals = net.backend.to_host(xp.stack([*parts, *correct])) if parts else np.zeros(0)
    sums = np.array([vals[: len(parts)].sum(), vals[len(parts) :].sum()])
    sums = data.reduce_sums(sums)  # every process evaluated its own rows
    loss = float(sums[0]) / data.n
    acc = float(sums[1]) / data.n if data.labels is not None else None
    return loss, acc


def _split(net: Network, data: _Data, fraction: float, seed: int | None) -> tuple[_Data, _Data]:
    n_val = int(round(data.n * fraction))
    if n_val < 1 or n_val >= data.n:
        raise XbpValueError(
            f"validation_split={fraction} leaves {n_val} validation and {data.n - n_val} "
            "training rows; choose a fraction that keeps at least one row in each"
        )
    perm = np.random.default_rng(None if seed is None else seed + 1).permutation(data.n)
    be, xp = net.backend, net.xp

    def take(rows: np.ndarray) -> _Data:
        idx = be.asarray(np.sort(rows))
        labels = None if data.labels is None else xp.take(data.labels, idx, axis=0)
        return _Data(xp.take(data.x, idx, axis=0), xp.take(data.y, idx, axis=0), labels)

    return take(perm[n_val:]), take(perm[:n_val])


def fit(
    net: Network,
    x: Any,
    y: Any,
    *,
    epochs: int = 10,
    batch_size: int = 32,
    optimizer: Optimizer | str = "sgd",
    learning_rate: Any = None,
    validation_data: tuple[Any, Any] | None = None,
    validation_split: float = 0.0,
    shuffle: bool = True,
    seed: int | None = 0,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
    progress: Any = "auto",
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 1,
    resume: str | os.PathLike[str] | None = None,
    on_divergence: str = "raise",
    max_retries: int = 3,
    comm: Any = None,
    metadata: dict[str, Any] | None = None,
) -> History:
    """Train ``net`` in place by mini-batch gradient descent and return the History.

    Parameters
    ----------
    net : Network
    x, y : arrays
        Host NumPy data (any backend) or arrays of the network's backend on its
        device. ``y`` may be ``(n,)`` integer class labels (one-hot encoded for
        you) or ``(n, n_out)`` targets.
    epochs : int
        Total epochs (a resumed run continues up to this number).
    batch_size : int
        Rows per update, at most the number of training rows.
    optimizer : Optimizer or str
        ``xbp.optim.sgd(0.1)`` by default; a name takes ``learning_rate``.
    validation_data : (x_val, y_val), optional
    validation_split : float
        Fraction of (x, y) held out (seeded) when ``validation_data`` is None.
    shuffle : bool
        Reshuffle every epoch from a host generator seeded by ``seed``: the same
        seed gives the same batches on every backend.
    callbacks : list of Callback
        e.g. ``EarlyStopping(patience=5)``, ``ModelCheckpoint(path, every=2)``.
    progress : "auto", "bar", "lines" or False
        A tqdm bar on a terminal, one line per epoch otherwise, or nothing.
    checkpoint : path, optional
        Shortcut for ``ModelCheckpoint(checkpoint, every=checkpoint_every)``.
    resume : path, optional
        Continue from a checkpoint written by this run's ``checkpoint``: weights,
        optimizer state, schedule position, epoch, RNG state and history.
    on_divergence : "raise" or "halve"
        On a NaN/Inf loss or gradient: restore the last good weights and raise
        :class:`xbp.DivergenceError`, or halve the learning rate and retry the
        epoch up to ``max_retries`` times.
    comm : mpi4py communicator, optional
        Data-parallel training across ranks (see :mod:`xbp.distributed`).
    metadata : dict, optional
        JSON-able data written into every checkpoint (e.g. input scaling).

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.make_xor()
    >>> net = xbp.mlp([2, 4, 1], activation="tanh", loss="binary_cross_entropy", seed=0)
    >>> hist = xbp.fit(net, x, y, epochs=3, batch_size=4, progress=False)
    >>> len(hist)
    3
    """
    args = dict(
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        learning_rate=learning_rate,
        validation_data=validation_data,
        validation_split=validation_split,
        shuffle=shuffle,
        seed=seed,
        callbacks=callbacks,
        progress=progress,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
        on_divergence=on_divergence,
        max_retries=max_retries,
        comm=comm,
        metadata=metadata,
    )
    if comm is None:
        return _fit(net, x, y, **args)
    from .distributed import abort_on_error

    try:
        return _fit(net, x, y, **args)
    except BaseException as exc:
        abort_on_error(comm, exc)  # never leave the other ranks waiting in a collective
        raise


def _fit(
    net: Network,
    x: Any,
    y: Any,
    *,
    epochs: int,
    batch_size: int,
    optimizer: Any,
    learning_rate: Any,
    validation_data: Any,
    validation_split: float,
    shuffle: bool,
    seed: int | None,
    callbacks: Any,
    progress: Any,
    checkpoint: Any,
    checkpoint_every: int,
    resume: Any,
    on_divergence: str,
    max_retries: int,
    comm: Any,
    metadata: dict[str, Any] | None,
) -> History:
    if not isinstance(net, Network):
        raise XbpTypeError(f"net is a {type(net).__name__}; pass an xbp.Network")
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    check_number(
        validation_split, "validation_split", low=0.0, low_open=False, high=1.0, high_open=True
    )
    if on_divergence not in ("raise", "halve"):
        raise XbpValueError(f"on_divergence={on_divergence!r}; use 'raise' or 'halve'")
    max_retries = check_int(max_retries, "max_retries", low=0)
    if isinstance(optimizer, str):
        opt = get_optimizer(optimizer, learning_rate)
    elif isinstance(optimizer, Optimizer):
        if learning_rate is not None:
            raise XbpValueError(
                "learning_rate= goes with an optimizer name; an Optimizer "
                "object carries its own learning rate"
            )
        opt = optimizer
    else:
        raise XbpTypeError(
            f"optimizer={optimizer!r}; pass a name such as 'sgd' or an xbp.optim optimizer"
        )
    callbacks = list(callbacks)
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise XbpTypeError(f"callbacks holds a {type(cb).__name__}; pass xbp Callbacks")
    if checkpoint is not None:
        callbacks.append(ModelCheckpoint(checkpoint, every=checkpoint_every))

    if comm is not None:
        from .distributed import prepare_distributed

        train, val = prepare_distributed(net, comm, x, y, validation_data, validation_split, seed)
    else:
        train = _prepare(net, x, y)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise XbpTypeError("validation_data must be a pair (x_val, y_val)")
            val = _prepare(net, validation_data[0], validation_data[1], "x_val")
        elif validation_split:
            train, val = _split(net, train, validation_split, seed)
    if batch_size > train.n:
        raise XbpValueError(
            f"batch_size={batch_size} is larger than the {train.n} training rows; "
            f"use batch_size <= {train.n}"
        )
    trainer = Trainer(
        net,
        opt,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        on_divergence=on_divergence,
        max_retries=max_retries,
        callbacks=callbacks,
        comm=comm,
    )
    trainer.metadata = dict(metadata or {})
    if comm is not None:
        from .distributed import attach

        attach(trainer, train)
    if resume is not None:
        _resume(trainer, resume)
    return trainer.fit(train, val, epochs, progress)


def _resume(trainer: Trainer, path: str | os.PathLike[str]) -> None:
    from .io import check_same_architecture, load_checkpoint

    net = trainer.net
    ck = load_checkpoint(path, backend=net.backend)
    check_same_architecture(net, ck.network, f"resume={os.fspath(path)!r}")
    if not ck.training:
        raise XbpValueError(
            f"resume={os.fspath(path)!r} is a model file without training state; resume from a "
            "checkpoint written with checkpoint=... (or load it with xbp.load to start anew)"
        )
    net._params = ck.network.to(dtype=net.backend.dtype_name(net.dtype))._params
    if ck.optimizer is not None and ck.optimizer_state is not None:
        if ck.optimizer.config() != trainer.optimizer.config():
            raise XbpValueError(
                f"resume={os.fspath(path)!r} was trained with {ck.optimizer.config()} but this run "
                f"uses {trainer.optimizer.config()}; resume with the same optimizer settings"
            )
        trainer.opt_state = ck.optimizer_state
    trainer.load_training_state(ck.training)


def evaluate(net: Network, x: Any, y: Any) -> dict[str, float | None]:
    """Loss and (where it applies) accuracy of ``net`` on ``(x, y)``.

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.make_xor()
    >>> sorted(xbp.evaluate(xbp.mlp([2, 2, 1], loss="binary_cross_entropy"), x, y))
    ['accuracy', 'loss']
    """
    loss, acc = _evaluate_data(net, _prepare(net, x, y))
    return {"loss": loss, "accuracy": acc}


def predict_classes(net: Network, x: Any) -> Any:
    """Class labels: argmax of the outputs, or ``output > 0.5`` for one output.

    Returned where ``x`` came from (NumPy in, NumPy out)."""
    xp = net.xp
    out = net.forward(x)
    labels = xp.argmax(out, axis=1) if out.shape[1] > 1 else xp.astype(out[:, 0] > 0.5, xp.int64)
    return net.backend.to_host(labels) if is_host_array(x) else labels
