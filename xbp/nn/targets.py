"""What a target column means: the task and target rules, written once.

:func:`infer_targets` decides, from the targets alone (and the loss or task a
caller names), whether a run is classification or regression, how many
outputs the network needs, which loss and output activation fit, and which
class labels the outputs stand for. :func:`xbp.fit`, the command line and the
documentation all follow it, so a user gets from one library call what
``xbp train`` decides.

The rule for ``task="auto"`` on one column of numbers:

* numbers that are not all whole (``2.5``) are a real-valued target: regression;
* whole numbers are class labels when they are few and contiguous — exactly
  two distinct values, or ``0..k-1`` or ``1..k`` — and there are at least
  :data:`MIN_ROWS_PER_CLASS` rows per class on average; any other whole
  numbers (prices, counts, years, a disease-progression score with 214
  distinct values) are a measurement: regression;
* names (strings) and booleans are always class labels.

A caller who means otherwise says so: ``task="classification"`` treats every
distinct value as a class, ``task="regression"`` treats whole numbers as one
real target.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..errors import XbpTypeError, XbpValueError, arg

__all__ = [
    "MAX_CLASSES",
    "MIN_ROWS_PER_CLASS",
    "TASKS",
    "Targets",
    "encode_labels",
    "infer_targets",
]

TASKS = ("auto", "classification", "regression")
MIN_ROWS_PER_CLASS = 2
"""``task="auto"``: whole numbers count as class labels only with at least this
many rows per class on average (fewer rows than that cannot train and validate
a class)."""

MAX_CLASSES = 1 << 16
"""The most classes (outputs) :func:`infer_targets` gives a classifier."""

_CLASS_LOSSES = ("cross_entropy", "binary_cross_entropy")


class Targets(NamedTuple):
    """What :func:`infer_targets` decided.

    Attributes
    ----------
    task : str
        ``"classification"`` or ``"regression"``.
    n_out : int
        The network's output width.
    loss : str
        The loss to train with: the caller's, or the task's default
        (``"cross_entropy"`` for classes, ``"quadratic"`` for real targets).
    output : str or None
        The output activation the task needs where the loss's own default
        (:func:`xbp.mlp`) does not fit it: ``"sigmoid"`` for class labels under the
        quadratic cost (one-hot targets in [0, 1]); None otherwise.
    classes : tuple or None
        The class labels in output order when they are not simply ``0..k-1``
        (names, booleans, whole numbers such as ``1, 2, 3``); None for plain
        labels, one-hot rows and regression.
    y : numpy.ndarray
        The targets as the network takes them: class codes ``0..k-1`` for
        labels, floats for regression, 2-D rows as given.
    """

    task: str
    n_out: int
    loss: str
    output: str | None
    classes: tuple[Any, ...] | None
    y: np.ndarray


def _host(y: Any, argument: str) -> np.ndarray:
    if hasattr(y, "to_numpy"):  # pandas Series / DataFrame
        y = y.to_numpy()
    try:
        a = np.asarray(y)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise XbpTypeError(
            f"{argument} cannot be read as an array ({exc}); pass a NumPy array of labels or "
            "targets"
        ) from None
    if a.ndim == 0 or a.ndim > 2 or a.shape[0] == 0:
        raise XbpValueError(
            f"{argument} has shape {a.shape}; pass one label or target per sample, shape (n,) "
            "or (n, k)"
        )
    return a


def _plain(values: np.ndarray) -> tuple[Any, ...]:
    """Class labels as plain Python values (saved as JSON with the model)."""
    return tuple(v.item() if hasattr(v, "item") else v for v in values)


def _contiguous(classes: np.ndarray) -> bool:
    k = classes.size
    first = int(classes[0])
    return first in (0, 1) and int(classes[-1]) == first + k - 1


def infer_targets(
    y: Any, *, loss: str | None = None, task: str = "auto", argument: str = "y"
) -> Targets:
    """Decide the task, output width, loss and class labels of targets ``y``.

    Parameters
    ----------
    y : array-like, shape (n,) or (n, k)
        Class labels (numbers, names or booleans), one-hot or probability rows,
        or real-valued targets. Host data (NumPy, pandas, lists).
    loss : str, optional
        The loss the caller chose; None picks the task's default.
    task : {"auto", "classification", "regression"}
        ``"auto"`` follows the rule in the module docstring.
    argument : str
        The name used in error messages.

    Returns
    -------
    Targets

    Raises
    ------
    XbpValueError
        One line naming ``argument``, what does not fit and how to choose.

    Examples
    --------
    >>> import numpy as np
    >>> from xbp.nn.targets import infer_targets
    >>> t = infer_targets(np.array(["cat", "dog", "cat", "dog"]))
    >>> t.task, t.n_out, t.loss, t.classes, t.y.tolist()
    ('classification', 2, 'cross_entropy', ('cat', 'dog'), [0, 1, 0, 1])
    >>> infer_targets(np.array([151, 75, 141, 206, 135, 97, 138, 63])).task
    'regression'
    >>> infer_targets(np.array([0, 1, 2, 1, 0, 2])).classes is None
    True
    """
    if task not in TASKS:
        raise XbpValueError(f"task={task!r}; use one of {list(TASKS)}")
    if loss is not None and not isinstance(loss, str):
        raise XbpTypeError(f"loss={loss!r} must be a loss name such as 'cross_entropy'")
    a = _host(y, argument)
    if task == "regression" and loss in _CLASS_LOSSES:
        raise XbpValueError(
            f"{arg('task', 'regression')} cannot train with {arg('loss', loss)}; use "
            f"{arg('loss', 'quadratic')} (or None), or {arg('task', 'classification')}"
        )
    if a.dtype.kind in "OUSb":
        return _named(a, loss, task, argument)
    if a.dtype.kind not in "iuf":
        raise XbpTypeError(f"{argument} has dtype {a.dtype}; pass numbers or class names")
    if not np.isfinite(a).all():
        raise XbpValueError(f"{argument} contains NaN or Inf; clean the targets first")
    if loss == "poisson":  # counts or rates: a regression, one output per column
        if task == "classification":
            raise XbpValueError(
                f"{arg('task', 'classification')} needs a classification loss, not poisson (a "
                f"regression of counts); use {arg('task', 'regression')} or {arg('task', 'auto')}"
            )
        if float(a.min()) < 0:
            raise XbpValueError(
                f"{argument} must be counts or rates >= 0 for {arg('loss', 'poisson')} (lowest "
                f"{float(a.min()):g}); for signed targets use {arg('loss', 'quadratic')}"
            )
        width = 1 if a.ndim == 1 else int(a.shape[1])
        return Targets("regression", width, loss, None, None, a.astype(np.float64))
    if a.ndim == 2:
        return _rows(a, loss, task, argument)
    return _column(a, loss, task, argument)


def _named(a: np.ndarray, loss: str | None, task: str, argument: str) -> Targets:
    if a.ndim != 1:
        raise XbpValueError(
            f"{argument} holds names in shape {a.shape}; class names go in one column, shape (n,)"
        )
    if task == "regression":
        raise XbpValueError(
            f"{argument} holds names (e.g. {a[0]!r}), not numbers: "
            f"{arg('task', 'regression')} needs numeric targets; use "
            f"{arg('task', 'classification')} or {arg('task', 'auto')}"
        )
    if a.dtype.kind == "O" and not all(isinstance(v, (str, bool, np.bool_)) for v in a):
        kinds = sorted({type(v).__name__ for v in a})
        raise XbpTypeError(
            f"{argument} mixes value types {kinds}; class labels must all be names or all numbers"
        )
    classes, codes = np.unique(a, return_inverse=True)
    return _classes(classes, codes.reshape(-1), loss, argument, named=True)


def _classes(
    classes: np.ndarray, codes: np.ndarray, loss: str | None, argument: str, *, named: bool
) -> Targets:
    k = int(classes.size)
    if k < 2:
        raise XbpValueError(
            f"{argument} holds a single class ({_plain(classes)[0]!r}); a classifier needs at "
            "least 2 classes (check the label column and the data)"
        )
    if k > MAX_CLASSES:
        raise XbpValueError(
            f"{argument} holds {k} distinct labels, more than the {MAX_CLASSES} classes (outputs) "
            f"a classifier here may have; these look like identifiers or measurements: use "
            f"{arg('task', 'regression')}, or group the labels"
        )
    keep = named or not (int(classes[0]) == 0 and int(classes[-1]) == k - 1)
    labels = _plain(classes) if keep else None
    loss = loss or "cross_entropy"
    if loss == "binary_cross_entropy":
        if k != 2:
            raise XbpValueError(
                f"{argument} holds {k} classes but binary_cross_entropy takes 2; use "
                f"{arg('loss', 'cross_entropy')}"
            )
        return Targets("classification", 1, loss, None, labels, codes)
    if loss == "quadratic":  # the classic sigmoid output; two classes are one 0/1 target
        return Targets("classification", 1 if k == 2 else k, loss, "sigmoid", labels, codes)
    return Targets("classification", k, loss, None, labels, codes)


def _whole(a: np.ndarray) -> bool:
    return a.dtype.kind in "iu" or bool(np.all(a == np.round(a)))


def _rows(a: np.ndarray, loss: str | None, task: str, argument: str) -> Targets:
    width = int(a.shape[1])
    lo, hi = float(a.min()), float(a.max())
    binary = bool(np.all((a == 0) | (a == 1)))
    onehot = binary and width > 1 and bool(np.all(a.sum(axis=1) == 1))
    if task == "regression" or (task == "auto" and loss not in _CLASS_LOSSES and not binary):
        return Targets("regression", width, loss or "quadratic", None, None, a)
    # one-hot rows: one class per row; other 0/1 rows: independent labels (multi-label)
    loss = loss or ("cross_entropy" if onehot else "binary_cross_entropy")
    if loss == "cross_entropy" and width < 2:
        raise XbpValueError(
            f"{argument} has 1 column but cross_entropy needs at least 2 classes; for 0/1 "
            f"targets use {arg('loss', 'binary_cross_entropy')}"
        )
    if loss == "cross_entropy" and lo < 0:
        raise XbpValueError(
            f"{argument} holds negative targets (down to {lo:g}); cross_entropy needs class "
            "probabilities >= 0"
        )
    if loss == "binary_cross_entropy" and (lo < 0 or hi > 1):
        raise XbpValueError(
            f"{argument} ranges from {lo:g} to {hi:g} but binary_cross_entropy needs targets "
            f"in [0, 1]; for class labels use {arg('loss', 'cross_entropy')}"
        )
    output = "sigmoid" if loss == "quadratic" else None
    return Targets("classification", width, loss, output, None, a)


def _column(a: np.ndarray, loss: str | None, task: str, argument: str) -> Targets:
    whole = _whole(a)
    if task == "regression":
        return Targets("regression", 1, loss or "quadratic", None, None, a.astype(np.float64))
    if task == "classification":
        if not whole:
            sample = a[np.flatnonzero(a != np.round(a))[0]]
            raise XbpValueError(
                f"{argument} are not whole numbers (e.g. {float(sample):g}) but "
                f"{arg('task', 'classification')} needs class labels; use "
                f"{arg('task', 'regression')} or {arg('task', 'auto')}"
            )
        classes, codes = np.unique(a, return_inverse=True)
        return _classes(classes, codes.reshape(-1), loss, argument, named=False)
    # task == "auto"
    if loss == "binary_cross_entropy":
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            raise XbpValueError(
                f"{argument} ranges from {lo:g} to {hi:g} but binary_cross_entropy needs 0/1 "
                "labels or probabilities in [0, 1]; for more classes use "
                f"{arg('loss', 'cross_entropy')}"
            )
        binary = bool(np.all((a == 0) | (a == 1)))
        return Targets("classification", 1, loss, None, None, a if not binary else a.astype(int))
    if not whole:
        if loss == "cross_entropy":
            sample = a[np.flatnonzero(a != np.round(a))[0]]
            raise XbpValueError(
                f"{argument} are not whole numbers (e.g. {float(sample):g}) but cross_entropy "
                f"needs class labels; for real-valued targets use {arg('loss', 'quadratic')} "
                "(regression), or choose the right label column"
            )
        return Targets("regression", 1, loss or "quadratic", None, None, a.astype(np.float64))
    classes, codes = np.unique(a, return_inverse=True)
    k, n = int(classes.size), int(a.shape[0])
    if k == 1 and n > 1:
        raise XbpValueError(
            f"{argument} holds the same value ({classes[0]:g}) in every row: a single class, "
            "nothing to learn; check the label column and the data"
        )
    labels = k >= 2 and (k == 2 or _contiguous(classes)) and n >= MIN_ROWS_PER_CLASS * k
    if labels and loss in (None, *_CLASS_LOSSES, "quadratic"):
        return _classes(classes, codes.reshape(-1), loss, argument, named=False)
    if loss in _CLASS_LOSSES:
        why = (
            f"only {n} rows for {k} classes"
            if k >= 2 and (k == 2 or _contiguous(classes))
            else f"{k} distinct whole numbers from {classes[0]:g} to {classes[-1]:g}"
        )
        raise XbpValueError(
            f"{argument} holds {why}, which looks like a measurement, not class labels; pass "
            f"{arg('task', 'regression')} (with {arg('loss', 'quadratic')}) for one "
            f"real-valued target, or {arg('task', 'classification')} to train one class per "
            "distinct value"
        )
    return Targets("regression", 1, loss or "quadratic", None, None, a.astype(np.float64))


def encode_labels(y: Any, classes: tuple[Any, ...], argument: str = "y") -> np.ndarray:
    """Class labels ``y`` as codes ``0..k-1`` in the order of ``classes``.

    Raises a one-line error naming labels that are not among ``classes``.

    Examples
    --------
    >>> from xbp.nn.targets import encode_labels
    >>> encode_labels(["dog", "cat", "dog"], ("cat", "dog")).tolist()
    [1, 0, 1]
    """
    a = _host(y, argument)
    if a.ndim != 1:
        raise XbpValueError(
            f"{argument} has shape {a.shape}; this network's outputs stand for the classes "
            f"{list(classes)[:5]}: pass one label per sample, shape (n,)"
        )
    values, inverse = np.unique(a, return_inverse=True)
    lookup = {c: i for i, c in enumerate(classes)}
    try:
        codes = np.array([lookup.get(v, -1) for v in _plain(values)], dtype=np.int64)
    except TypeError:  # unhashable values
        codes = np.full(values.shape, -1, dtype=np.int64)
    if (codes < 0).any():
        unknown = [_plain(values)[i] for i in np.flatnonzero(codes < 0)[:3]]
        raise XbpValueError(
            f"{argument} holds labels {unknown} that are not among the network's classes "
            f"{list(classes)[:10]}; train on data that contains them, or fix the labels"
        )
    return codes[inverse.reshape(-1)]
