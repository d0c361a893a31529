"""Callbacks beyond the loop's own: :class:`CSVLogger` writes one row per epoch."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from .checkpoint import ModelCheckpoint
from .errors import XbpFileError, XbpTypeError
from .io import atomic_write
from .paths import check_distinct, output_file, write_target
from .training import Callback, Trainer

__all__ = ["CSVLogger", "HISTORY_COLUMNS"]

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
                f"CSVLogger path={self.path!r} cannot be read as a CSVLogger's log ({exc}); {fix}"
            ) from None
        if header is None:
            return None, []
        rows = []
        for n, values in enumerate(table[1:], start=2):
            if len(values) != len(header) or not values[0].isdigit():
                if n == len(table) and (done or len(values) < len(header)):
                    break  # the partial row a killed run was writing
                raise XbpFileError(
                    f"CSVLogger path={self.path!r} line {n} is not a row of its header; {fix}"
                )
            rows.append(dict(zip(header, values)))
        return header, rows

    def _check_header(self, header: list[str], fix: str) -> None:
        if not header or header[0] != "epoch":
            raise XbpFileError(
                f"CSVLogger path={self.path!r} holds a file that a CSVLogger did not write (its "
                f"first column is not 'epoch'); {fix}"
            )
        if tuple(header[: len(HISTORY_COLUMNS)]) != HISTORY_COLUMNS:
            raise XbpFileError(
                f"CSVLogger path={self.path!r} has the header {','.join(header)}, not a "
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
                f"CSVLogger path={self.path!r} could not be written: {exc}"
            ) from None
