"""Evaluation metrics accumulated on the device over an epoch's batches.

Every metric is three pure functions over device arrays: ``init`` (the empty
state), ``update`` (a batch's output, targets, class labels and row weights
added in) and ``result`` (the value, from the state). The training loop and
:func:`xbp.evaluate` update the states batch by batch and read every result
back in the one host read of the epoch, so a metric over a streamed data set
needs no more memory than its state:

================================  ===============================================
metric (name)                      state kept on the device
================================  ===============================================
accuracy, precision/recall/f1,     the ``k x k`` weighted confusion matrix (and which
confusion_matrix                   classes occur, for scikit-learn's averaging rule)
top_<k>_accuracy, log_loss         two weighted sums
r2, rmse, mse, mae,                weighted sums per output, centred on the first
explained_variance                 batch's mean (no cancellation in the variances)
roc_auc, roc_auc_ovr(_weighted)    every row's scores, labels and weight: exact
                                   (sorted at the epoch's end), ``n x k`` numbers
================================  ===============================================

ROC AUC is computed exactly, not from a histogram: at the end of the pass the
scores of each class are sorted on the device and the area is the weighted
Mann-Whitney sum ``sum_pos w_i (W_neg(s < s_i) + W_neg(s = s_i)/2) / (W_pos
W_neg)``, which is the trapezoidal area under scikit-learn's ROC curve (ties
count a half). Its memory is therefore ``n x k`` scores, not bounded by the
batch; every other metric's state is a few numbers per class or output.

The values equal ``sklearn.metrics`` on the same predictions (float64, to
rounding): ``precision``/``recall``/``f1`` with ``average="binary"``
(positive class 1) and the ``_macro``/``_micro``/``_weighted`` variants average
over the classes that occur in the targets or predictions (scikit-learn's
default ``labels``), ``zero_division=0``; ``log_loss`` clips probabilities to
``[eps, 1 - eps]`` like scikit-learn; multi-output regression metrics average
the outputs uniformly. A metric that is undefined on the data (ROC AUC with
one class only) is NaN. Row weights (``sample_weight``, ``class_weight``)
weight every metric as scikit-learn's ``sample_weight`` does.

Examples
--------
>>> import numpy as np, xbp
>>> x, y = xbp.data.make_xor()
>>> net = xbp.mlp([2, 4, 1], activation="tanh", loss="binary_cross_entropy", seed=0)
>>> hist = xbp.fit(net, x, y, epochs=2, batch_size=4, metrics=["f1", "roc_auc"],
...                progress=False)
>>> sorted(k for k in hist.keys() if "f1" in k or "auc" in k)
['f1', 'roc_auc']
>>> sorted(xbp.evaluate(net, x, y, metrics=["precision", "log_loss"]))
['accuracy', 'log_loss', 'loss', 'precision']
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .errors import XbpTypeError, XbpValueError

__all__ = [
    "Metric",
    "MetricSet",
    "METRIC_NAMES",
    "classification_report",
    "get_metric",
    "headline_metrics",
    "output_names",
    "metric_mode",
    "regression_report",
    "summary_line",
    "top_k_accuracy",
    "trivial_warning",
]

#: every metric name :func:`get_metric` knows (``top_<k>_accuracy`` takes any k >= 1)
METRIC_NAMES = (
    "accuracy",
    "top_k_accuracy",
    "precision",
    "precision_macro",
    "precision_micro",
    "precision_weighted",
    "recall",
    "recall_macro",
    "recall_micro",
    "recall_weighted",
    "f1",
    "f1_macro",
    "f1_micro",
    "f1_weighted",
    "confusion_matrix",
    "roc_auc",
    "roc_auc_ovr",
    "roc_auc_ovr_weighted",
    "log_loss",
    "r2",
    "rmse",
    "mse",
    "mae",
    "explained_variance",
)


def _classes(n_out: int) -> int:
    """Classes of a network with ``n_out`` outputs: one sigmoid output is two classes."""
    return 2 if n_out == 1 else n_out


def _weights(xp: Any, w: Any, n: int, like: Any) -> Any:
    return xp.ones((n,), dtype=like.dtype, device=like.device) if w is None else w


def _predicted(xp: Any, out: Any, labels: Any) -> Any:
    """The predicted class of each row: ``out > 0.5`` for one output, else the argmax."""
    if out.shape[1] == 1:
        return xp.astype(out[:, 0] > 0.5, labels.dtype)
    return xp.astype(xp.argmax(out, axis=1), labels.dtype)


def _onehot(xp: Any, labels: Any, k: int, like: Any) -> Any:
    classes = xp.arange(k, dtype=labels.dtype, device=labels.device)
    return xp.astype(labels[:, None] == classes[None, :], like.dtype)


def _safe_div(xp: Any, num: Any, den: Any) -> Any:
    """``num / den``, 0 where ``den`` is 0 (scikit-learn's ``zero_division=0``)."""
    zero = den == 0
    return xp.where(zero, xp.zeros_like(num), num / xp.where(zero, xp.ones_like(den), den))


class Metric:
    """A metric computed from device sums accumulated over batches.

    Subclasses set ``name``, ``mode`` (``"max"`` when larger is better, else
    ``"min"``) and ``needs_labels`` (class labels required), and implement
    :meth:`init`, :meth:`update` and :meth:`result`. ``result`` returns a 0-d
    device array (the confusion matrix a 2-d one).

    Examples
    --------
    >>> import numpy as np, xbp
    >>> m = xbp.metrics.get_metric("mae")
    >>> be = xbp.backend("numpy")
    >>> s = m.init(be.xp, 1, np.zeros((0, 1)))
    >>> s = m.update(be.xp, s, np.array([[1.0], [2.0]]), np.array([[0.0], [4.0]]), None, None)
    >>> float(m.result(be.xp, s))
    1.5
    """

    name: str = "metric"
    mode: str = "max"
    needs_labels: bool = False

    def check(self, n_out: int) -> None:
        """Refuse a network whose outputs this metric cannot read (raise XbpValueError)."""

    def init(self, xp: Any, n_out: int, like: Any) -> Any:
        """The empty state for a network of ``n_out`` outputs (``like``: an array of the
        network's dtype and device)."""
        raise NotImplementedError

    def update(self, xp: Any, state: Any, out: Any, y: Any, labels: Any, w: Any) -> Any:
        """The state with a batch added: outputs ``out`` ``(n, n_out)``, targets ``y``,
        class labels ``labels`` ``(n,)`` (None for regression targets), row weights ``w``
        ``(n,)`` (None: every row weighs 1)."""
        raise NotImplementedError

    def result(self, xp: Any, state: Any) -> Any:
        """The metric's value as a device array."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<xbp metric {self.name}>"


class _ConfusionBased(Metric):
    needs_labels = True

    def init(self, xp: Any, n_out: int, like: Any) -> Any:
        k = _classes(n_out)
        zeros = xp.zeros((k, k), dtype=like.dtype, device=like.device)
        return (zeros, xp.zeros((k,), dtype=like.dtype, device=like.device))

    def update(self, xp: Any, state: Any, out: Any, y: Any, labels: Any, w: Any) -> Any:
        matrix, seen = state
        k = int(matrix.shape[0])
        truth = _onehot(xp, labels, k, out)
        pred = _onehot(xp, _predicted(xp, out, labels), k, out)
        ww = _weights(xp, w, int(out.shape[0]), out)
        # rows: true class, columns: predicted class (scikit-learn's orientation)
        matrix = matrix + truth.T @ (pred * ww[:, None])
        seen = seen + xp.sum(truth + pred, axis=0)  # unweighted: which classes occur
        return (matrix, seen)


class _Accuracy(_ConfusionBased):
    name = "accuracy"

    def result(self, xp: Any, state: Any) -> Any:
        matrix = state[0]
        k = int(matrix.shape[0])
        eye = xp.astype(xp.eye(k, dtype=matrix.dtype, device=matrix.device), matrix.dtype)
        return _safe_div(xp, xp.sum(matrix * eye), xp.sum(matrix))


class _ConfusionMatrix(_ConfusionBased):
    name = "confusion_matrix"
    mode = "none"

    def result(self, xp: Any, state: Any) -> Any:
        return state[0]


class _PRF(_ConfusionBased):
    """Precision, recall or F1 with scikit-learn's averages."""

    def __init__(self, which: str, average: str) -> None:
        self.which, self.average = which, average
        self.name = which if average == "binary" else f"{which}_{average}"

    def check(self, n_out: int) -> None:
        if self.average == "binary" and _classes(n_out) != 2:
            raise XbpValueError(
                f"metric {self.name!r} is for two classes but the network has {n_out} outputs; "
                f"use {self.which}_macro, {self.which}_micro or {self.which}_weighted"
            )

    def _score(self, xp: Any, tp: Any, pred: Any, true: Any) -> Any:
        if self.which == "precision":
            return _safe_div(xp, tp, pred)
        if self.which == "recall":
            return _safe_div(xp, tp, true)
        return _safe_div(xp, 2 * tp, pred + true)  # F1 = 2 tp / (2 tp + fp + fn)

    def result(self, xp: Any, state: Any) -> Any:
        matrix, seen = state
        k = int(matrix.shape[0])
        eye = xp.astype(xp.eye(k, dtype=matrix.dtype, device=matrix.device), matrix.dtype)
        tp = xp.sum(matrix * eye, axis=1)
        true = xp.sum(matrix, axis=1)
        pred = xp.sum(matrix, axis=0)
        if self.average == "binary":
            return self._score(xp, tp[1], pred[1], true[1])
        if self.average == "micro":
            return self._score(xp, xp.sum(tp), xp.sum(pred), xp.sum(true))
        scores = self._score(xp, tp, pred, true)
        present = xp.astype(seen > 0, matrix.dtype)
        if self.average == "macro":
            return xp.sum(scores * present) / xp.sum(present)
        return _safe_div(xp, xp.sum(scores * true * present), xp.sum(true * present))


class _TopK(Metric):
    needs_labels = True

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise XbpValueError(f"top_k_accuracy k={k!r}; pass an integer >= 1")
        self.k = int(k)
        self.name = f"top_{self.k}_accuracy"

    def init(self, xp: Any, n_out: int, like: Any) -> Any:
        zero = xp.zeros((), dtype=like.dtype, device=like.device)
        return (zero, zero)

    def update(self, xp: Any, state: Any, out: Any, y: Any, labels: Any, w: Any) -> Any:
        hits, total = state
        ww = _weights(xp, w, int(out.shape[0]), out)
        if out.shape[1] == 1:  # binary scores: k = 1 thresholds at 0.5, k >= 2 always hits
            if self.k == 1:
                hit = xp.astype(_predicted(xp, out, labels) == labels, out.dtype)
            else:
                hit = xp.ones_like(ww)
        else:
            k = int(out.shape[1])
            own = xp.sum(out * _onehot(xp, labels, k, out), axis=1)[:, None]
            cols = xp.arange(k, dtype=labels.dtype, device=labels.device)[None, :]
            # scikit-learn's rank: higher scores first, equal scores by the higher column
            ahead = (out > own) | ((out == own) & (cols > labels[:, None]))
            hit = xp.astype(xp.sum(xp.astype(ahead, out.dtype), axis=1) < self.k, out.dtype)
        return (hits + xp.sum(hit * ww), total + xp.sum(ww))

    def result(self, xp: Any, state: Any) -> Any:
        return _safe_div(xp, state[0], state[1])


def top_k_accuracy(k: int = 2) -> Metric:
    """The weighted share of rows whose class is among the ``k`` highest scores
    (``sklearn.metrics.top_k_accuracy_score``; ties ranked as scikit-learn does).
    Its name is ``f"top_{k}_accuracy"``.

    Examples
    --------
    >>> import xbp
    >>> xbp.metrics.top_k_accuracy(3).name
    'top_3_accuracy'
    """
    return _TopK(k)


class _LogLoss(Metric):
    name = "log_loss"
    mode = "min"
    needs_labels = True

    def init(self, xp: Any, n_out: int, like: Any) -> Any:
        zero = xp.zeros((), dtype=like.dtype, device=like.device)
        return (zero, zero)

    def update(self, xp: Any, state: Any, out: Any, y: Any, labels: Any, w: Any) -> Any:
        total, weight = state
        eps = float(xp.finfo(out.dtype).eps)
        ww = _weights(xp, w, int(out.shape[0]), out)
        if out.shape[1] == 1:
            p1 = xp.clip(out[:, 0], eps, 1 - eps)
            p0 = xp.clip(1 - out[:, 0], eps, 1 - eps)
            p = xp.where(labels == 1, p1, p0)
        else:
            clipped = xp.clip(out, eps, 1 - eps)
            p = xp.sum(clipped * _onehot(xp, labels, int(out.shape[1]), out), axis=1)
        return (total - xp.sum(xp.log(p) * ww), weight + xp.sum(ww))

    def result(self, xp: Any, state: Any) -> Any:
        return state[0] / state[1]


class _RocAuc(Metric):
    needs_labels = True

    def __init__(self, average: str | None) -> None:
        self.average = average  # None: binary
        self.name = {None: "roc_auc", "macro": "roc_auc_ovr", "weighted": "roc_auc_ovr_weighted"}[
            average
        ]

    def check(self, n_out: int) -> None:
        if self.average is None and _classes(n_out) != 2:
            raise XbpValueError(
                f"metric 'roc_auc' is for two classes but the network has {n_out} outputs; "
                "use roc_auc_ovr (one-vs-rest, macro average) or roc_auc_ovr_weighted"
            )

    def init(self, xp: Any, n_out: int, like: Any) -> Any:
        return ((), (), ())  # every batch's scores, labels and weights, kept on the device

    def update(self, xp: Any, state: Any, out: Any, y: Any, labels: Any, w: Any) -> Any:
        scores, labs, weights = state
        ww = _weights(xp, w, int(out.shape[0]), out)
        return (scores + (out,), labs + (labels,), weights + (ww,))

    @staticmethod
    def _binary(xp: Any, s: Any, positive: Any, w: Any) -> Any:
        """The exact weighted area: each positive row gains the weight of the negative
        rows scored below it, and half the weight of those scored equal."""
        wpos = xp.where(positive, w, xp.zeros_like(w))
        wneg = w - wpos
        order = xp.argsort(s)
        ordered = xp.take(s, order)
        cum = xp.cumulative_sum(xp.take(wneg, order), include_initial=True)
        below = xp.take(cum, xp.searchsorted(ordered, ordered, side="left"))
        upto = xp.take(cum, xp.searchsorted(ordered, ordered, side="right"))
        area = xp.sum(xp.take(wpos, order) * (below + 0.5 * (upto - below)))
        return area / (xp.sum(wpos) * xp.sum(wneg))  # NaN when a class has no weight

    def result(self, xp: Any, state: Any) -> Any:
        scores, labs, weights = state
        out = xp.concat(list(scores), axis=0)
        labels = xp.concat(list(labs), axis=0)
        w = xp.concat(list(weights), axis=0)
        if out.shape[1] == 1:
            return self._binary(xp, out[:, 0], labels == 1, w)
        if out.shape[1] == 2 and self.average is None:
            return self._binary(xp, out[:, 1], labels == 1, w)
        k = int(out.shape[1])
        areas = xp.stack([self._binary(xp, out[:, c], labels == c, w) for c in range(k)])
        if self.average == "macro":
            return xp.mean(areas)
        support = xp.sum(_onehot(xp, labels, k, out) * w[:, None], axis=0)
        return xp.sum(areas * support) / xp.sum(support)


class _Regression(Metric):
    """Per-output weighted sums of the targets and the residuals, centred on the first
    batch's weighted means so the variances are differences of small numbers."""

    def __init__(self, name: str, mode: str) -> None:
        self.name, self.mode = name, mode

    def init(self, xp: Any, n_out: int, like: Any) -> Any:
        return None  # made by the first batch, which fixes the centres

    def update(self, xp: Any, state: Any, out: Any, y: Any, labels: Any, w: Any) -> Any:
        ww = _weights(xp, w, int(out.shape[0]), out)[:, None]
        e = y - out
        if state is None:
            total = xp.sum(ww)
            den = xp.where(total == 0, xp.ones_like(total), total)
            cy = xp.sum(ww * y, axis=0) / den
            ce = xp.sum(ww * e, axis=0) / den
            zero = xp.zeros_like(cy)
            state = (cy, ce, xp.zeros_like(total), zero, zero, zero, zero, zero, zero)
        cy, ce, wsum, sy, syy, se, see, sae, sr = state
        dy, de = y - cy, e - ce
        return (
            cy,
            ce,
            wsum + xp.sum(ww),
            sy + xp.sum(ww * dy, axis=0),
            syy + xp.sum(ww * dy * dy, axis=0),
            se + xp.sum(ww * de, axis=0),
            see + xp.sum(ww * de * de, axis=0),
            sae + xp.sum(ww * xp.abs(e), axis=0),
            sr + xp.sum(ww * e * e, axis=0),
        )

    @staticmethod
    def _score(xp: Any, num: Any, den: Any) -> Any:
        """scikit-learn's ``1 - num/den`` with ``force_finite``: 1 where both are 0, 0
        where only the denominator is."""
        ok = den != 0
        ratio = num / xp.where(ok, den, xp.ones_like(den))
        fallback = xp.where(num == 0, xp.ones_like(num), xp.zeros_like(num))
        return xp.where(ok, 1 - ratio, fallback)

    def result(self, xp: Any, state: Any) -> Any:
        cy, ce, wsum, sy, syy, se, see, sae, sr = state
        if self.name == "mae":
            return xp.mean(sae / wsum)
        if self.name in ("mse", "rmse"):
            per = sr / wsum
            return xp.mean(xp.sqrt(per) if self.name == "rmse" else per)
        var_y = syy - sy * sy / wsum  # weighted sums of squares about the mean
        if self.name == "r2":
            return xp.mean(self._score(xp, sr, var_y))
        return xp.mean(self._score(xp, see - se * se / wsum, var_y))


_AVERAGES = ("macro", "micro", "weighted")


def get_metric(spec: str | Metric) -> Metric:
    """The metric named ``spec`` (see :data:`METRIC_NAMES`), or ``spec`` itself.

    Examples
    --------
    >>> import xbp
    >>> m = xbp.metrics.get_metric("f1_macro")
    >>> m.name, m.mode
    ('f1_macro', 'max')
    """
    if isinstance(spec, Metric):
        return spec
    if not isinstance(spec, str):
        raise XbpTypeError(
            f"metrics holds a {type(spec).__name__}; pass metric names such as 'f1_macro' "
            "or xbp.metrics.Metric objects"
        )
    if spec == "accuracy":
        return _Accuracy()
    if spec == "confusion_matrix":
        return _ConfusionMatrix()
    if spec == "log_loss":
        return _LogLoss()
    if spec == "top_k_accuracy":
        return _TopK(2)  # scikit-learn's default k
    top = re.fullmatch(r"top_(\d+)_accuracy", spec)
    if top:
        return _TopK(int(top.group(1)))
    for which in ("precision", "recall", "f1"):
        if spec == which:
            return _PRF(which, "binary")
        for average in _AVERAGES:
            if spec == f"{which}_{average}":
                return _PRF(which, average)
    if spec == "roc_auc":
        return _RocAuc(None)
    if spec == "roc_auc_ovr":
        return _RocAuc("macro")
    if spec == "roc_auc_ovr_weighted":
        return _RocAuc("weighted")
    if spec in ("r2", "explained_variance"):
        return _Regression(spec, "max")
    if spec in ("rmse", "mse", "mae"):
        return _Regression(spec, "min")
    raise XbpValueError(
        f"metrics: {spec!r} is not a metric xbp knows; use one of {list(METRIC_NAMES)} "
        "(top_<k>_accuracy for any k)"
    )


def metric_mode(name: str) -> str | None:
    """``"max"`` or ``"min"``: whether a larger value of the logged ``name`` is better
    (``val_`` prefixes allowed); None for a name that is not a metric or the loss.

    Examples
    --------
    >>> import xbp
    >>> xbp.metrics.metric_mode("val_r2"), xbp.metrics.metric_mode("val_loss")
    ('max', 'min')
    """
    base = name[4:] if name.startswith("val_") else name
    if base == "loss":
        return "min"
    try:
        mode = get_metric(base).mode
    except XbpValueError:
        return None
    return mode if mode in ("min", "max") else None


class MetricSet:
    """Several metrics accumulated together over one pass of the data.

    :meth:`start` makes the states, :meth:`update` adds a batch, :meth:`vector`
    is every value as one 1-D device array (for the pass's single host read) and
    :meth:`decode` turns that read into ``{name: float}`` (the confusion matrix as
    a list of rows).

    Examples
    --------
    >>> import numpy as np, xbp
    >>> net = xbp.mlp([2, 3], output="softmax", loss="cross_entropy", seed=0)
    >>> ms = xbp.metrics.MetricSet(["f1_macro", "confusion_matrix"])
    >>> acc = ms.start(net)
    >>> out = net.forward(np.eye(3)[:, :2])
    >>> acc = ms.update(net.xp, acc, out, None, np.array([0, 1, 2]), None)
    >>> sorted(ms.decode(net.backend.to_host(ms.vector(net.xp, acc))))
    ['confusion_matrix', 'f1_macro']
    """

    def __init__(self, metrics: Iterable[str | Metric]) -> None:
        if isinstance(metrics, (str, Metric)) or not hasattr(metrics, "__iter__"):
            raise XbpTypeError("metrics must be a list, e.g. metrics=['f1_macro', 'roc_auc_ovr']")
        self.metrics: list[Metric] = []
        for spec in metrics:
            m = get_metric(spec)
            if any(other.name == m.name for other in self.metrics):
                continue  # asked twice: logged once
            self.metrics.append(m)
        self._shapes: list[tuple[int, ...]] = []
        self._like: Any = None

    def __bool__(self) -> bool:
        return bool(self.metrics)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.metrics]

    def check(self, n_out: int) -> None:
        """Refuse metrics that cannot read a network of ``n_out`` outputs."""
        for m in self.metrics:
            m.check(n_out)

    def start(self, net: Any) -> list[Any]:
        like = net.xp.zeros((1,), dtype=net.dtype, device=net.device)
        self._like = like
        return [m.init(net.xp, net.n_out, like) for m in self.metrics]

    def update(
        self, xp: Any, states: list[Any], out: Any, y: Any, labels: Any, w: Any
    ) -> list[Any]:
        new = []
        for m, s in zip(self.metrics, states):
            if m.needs_labels and labels is None:
                raise XbpValueError(
                    f"metric {m.name!r} needs class labels, but these targets are not classes "
                    "(integer labels, one-hot rows or 0/1 for one output); for regression use "
                    "r2, rmse, mse, mae or explained_variance"
                )
            new.append(m.update(xp, s, out, y, labels, w))
        return new

    def vector(self, xp: Any, states: list[Any]) -> Any:
        """Every metric's value, flattened into one 1-D device array."""
        parts, self._shapes = [], []
        for m, s in zip(self.metrics, states):
            if s is None:  # no rows were seen
                r = xp.full((), math.nan, dtype=self._like.dtype, device=self._like.device)
            else:
                r = m.result(xp, s)
            self._shapes.append(tuple(r.shape))
            parts.append(xp.reshape(r, (-1,)))
        return xp.concat(parts) if parts else None

    def decode(self, values: Sequence[float] | np.ndarray) -> dict[str, Any]:
        """The host read of :meth:`vector` as ``{name: value}``."""
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
        out: dict[str, Any] = {}
        at = 0
        for m, shape in zip(self.metrics, self._shapes):
            size = int(np.prod(shape)) if shape else 1
            part = flat[at : at + size]
            at += size
            out[m.name] = float(part[0]) if not shape else part.reshape(shape).tolist()
        return out


def headline_metrics(task: str) -> list[str]:
    """The metrics ``xbp train`` and ``xbp evaluate`` report for a task: accuracy and
    macro F1 for ``"classification"``, R², RMSE and MAE for ``"regression"``.

    Examples
    --------
    >>> import xbp
    >>> xbp.metrics.headline_metrics("regression")
    ['r2', 'rmse', 'mae']
    """
    if task == "classification":
        return ["accuracy", "f1_macro", "confusion_matrix"]
    if task == "regression":
        return ["r2", "rmse", "mae"]
    raise XbpValueError(f"task={task!r}; use 'classification' or 'regression'")


def classification_report(
    confusion: Sequence[Sequence[float]] | np.ndarray,
    class_names: Sequence[Any] | None = None,
    digits: int = 4,
) -> str:
    """Per-class precision, recall, F1 and support from a confusion matrix (rows: true
    class), with accuracy and macro/weighted averages, laid out like
    ``sklearn.metrics.classification_report`` (classes that never occur are left out).

    Examples
    --------
    >>> import xbp
    >>> print(xbp.metrics.classification_report([[3, 1], [0, 4]], ["no", "yes"], digits=2))
                  precision  recall  f1-score  support
    <BLANKLINE>
              no       1.00    0.75      0.86        4
             yes       0.80    1.00      0.89        4
    <BLANKLINE>
        accuracy                         0.88        8
       macro avg       0.90    0.88      0.87        8
    weighted avg       0.90    0.88      0.87        8
    """
    c = np.asarray(confusion, dtype=np.float64)
    k = c.shape[0]
    names = [str(n) for n in (class_names if class_names is not None else range(k))]
    tp, true, pred = np.diag(c), c.sum(axis=1), c.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred > 0, tp / np.where(pred > 0, pred, 1), 0.0)
        recall = np.where(true > 0, tp / np.where(true > 0, true, 1), 0.0)
        f1 = np.where(true + pred > 0, 2 * tp / np.where(true + pred > 0, true + pred, 1), 0.0)
    present = (true + pred) > 0
    width = max(12, *(len(n) for n in names))
    head = f"{'':>{width}}  precision  recall  f1-score  support"
    lines = [head, ""]

    def row(name: str, p: float | None, r: float | None, f: float, s: float) -> str:
        cells = f"{p:>9.{digits}f}  {r:>6.{digits}f}" if p is not None else f"{'':>9}  {'':>6}"
        support = f"{s:.0f}" if float(s).is_integer() else f"{s:.{digits}g}"
        return f"{name:>{width}}  {cells}  {f:>8.{digits}f}  {support:>7}"

    for i in range(k):
        if present[i]:
            lines.append(row(names[i], precision[i], recall[i], f1[i], true[i]))
    total = float(true.sum())
    lines.append("")
    lines.append(row("accuracy", None, None, float(tp.sum()) / total if total else 0.0, total))
    m = present
    lines.append(row("macro avg", precision[m].mean(), recall[m].mean(), f1[m].mean(), total))
    w = true / total if total else true
    lines.append(
        row("weighted avg", (precision * w).sum(), (recall * w).sum(), (f1 * w).sum(), total)
    )
    return "\n".join(lines)


def regression_report(values: dict[str, Any], target_names: Sequence[str] | None = None) -> str:
    """One line: R², RMSE and MAE (and any other regression metric in ``values``).

    Examples
    --------
    >>> import xbp
    >>> xbp.metrics.regression_report({"r2": 0.5, "rmse": 2.0, "mae": 1.5, "loss": 2.0})
    'R² 0.5000  RMSE 2  MAE 1.5'
    """
    label = {"r2": "R²", "rmse": "RMSE", "mae": "MAE", "mse": "MSE", "explained_variance": "EV"}
    parts = []
    for key in ("r2", "rmse", "mae", "mse", "explained_variance"):
        if values.get(key) is not None:
            v = float(values[key])
            parts.append(
                f"{label[key]} {v:.4f}"
                if key in ("r2", "explained_variance")
                else f"{label[key]} {v:.6g}"
            )
    return "  ".join(parts)


def summary_line(values: dict[str, Any], task: str, prefix: str = "") -> str:
    """The headline of an evaluation in one line: ``accuracy``, ``F1 (macro)`` and the
    loss for classification, ``R²``, ``RMSE``, ``MAE`` and the loss for regression,
    then any other scalar metric in ``values``; each name after ``prefix``.

    Examples
    --------
    >>> import xbp
    >>> xbp.metrics.summary_line({"loss": 0.25, "accuracy": 0.9, "f1_macro": 0.88},
    ...                          "classification", "test ")
    'test accuracy 0.9000  test F1 (macro) 0.8800  test loss 0.2500'
    """
    shown = {"loss", "accuracy", "f1_macro", "r2", "rmse", "mae", "confusion_matrix"}
    parts = []
    if task == "classification":
        for key, label in (("accuracy", "accuracy"), ("f1_macro", "F1 (macro)")):
            if values.get(key) is not None:
                parts.append(f"{prefix}{label} {values[key]:.4f}")
    else:
        for key, label in (("r2", "R²"), ("rmse", "RMSE"), ("mae", "MAE")):
            if values.get(key) is not None:
                v = float(values[key])
                parts.append(
                    f"{prefix}{label} {v:.4f}" if key == "r2" else f"{prefix}{label} {v:.6g}"
                )
    if values.get("loss") is not None:
        parts.append(f"{prefix}loss {values['loss']:.4f}")
    for key, v in values.items():
        if key not in shown and isinstance(v, float):
            parts.append(f"{prefix}{key} {v:.4f}")
    return "  ".join(parts)


def output_names(
    n_out: int, task: str, classes: Sequence[Any] | None = None, targets: Any = None
) -> list[str]:
    """Names for a model's output columns (prediction files): for classification the
    class each probability belongs to, in the model's class order (one sigmoid output is
    the probability of the second class); for regression the target columns' names;
    ``out0, out1, ...`` where nothing names them.

    Examples
    --------
    >>> from xbp.metrics import output_names
    >>> output_names(3, "classification", ["setosa", "versicolor", "virginica"])
    ['setosa', 'versicolor', 'virginica']
    >>> output_names(1, "classification", ["no", "yes"]), output_names(1, "regression", None, "y")
    (['yes'], ['y'])
    """
    if task == "classification":
        names = [str(c) for c in classes] if classes else [str(i) for i in range(max(n_out, 2))]
        if n_out == 1 and len(names) == 2:
            return [names[1]]
        if len(names) == n_out:
            return names
    elif targets is not None:
        names = [str(targets)] if isinstance(targets, str) else [str(t) for t in targets]
        if len(names) == n_out:
            return names
    return [f"out{i}" for i in range(n_out)]


def trivial_warning(
    task: str, y_train: Any, y_eval: Any, values: dict[str, Any], where: str = "validation"
) -> str | None:
    """A warning when a model scores worse on ``y_eval`` than the trivial predictor fitted
    to ``y_train`` (host arrays, as the command line holds them), else None.

    The trivial predictor is the training targets' mean for ``"regression"``
    (compared by the quadratic loss, ``values["loss"]``, half the squared error
    summed over outputs) and the training rows' most frequent class for
    ``"classification"`` (compared by ``values["accuracy"]``).

    Examples
    --------
    >>> import numpy as np
    >>> from xbp.metrics import trivial_warning
    >>> w = trivial_warning("regression", np.array([1.0, 3.0]), np.array([2.0, 2.0]),
    ...                     {"loss": 0.5})
    >>> w.split(";")[0]
    'the validation loss 0.5 is worse than predicting the training mean (0)'
    >>> trivial_warning("classification", np.array([0, 0, 1]), np.array([0, 1]),
    ...                 {"accuracy": 0.5}) is None
    True
    """
    yt, ye = np.asarray(y_train), np.asarray(y_eval)
    if ye.shape[0] == 0 or yt.shape[0] == 0:
        return None
    if task == "regression" and values.get("loss") is not None:
        yt2 = yt.reshape(yt.shape[0], -1).astype(np.float64)
        ye2 = ye.reshape(ye.shape[0], -1).astype(np.float64)
        base = 0.5 * float(np.mean(np.sum((ye2 - yt2.mean(axis=0)) ** 2, axis=1)))
        if float(values["loss"]) > base:
            return (
                f"the {where} loss {float(values['loss']):.4g} is worse than predicting the "
                f"training mean ({base:.4g}); train longer, change the learning rate, or "
                "check the data"
            )
    if task == "classification" and values.get("accuracy") is not None and yt.ndim == 1:
        classes, counts = np.unique(yt, return_counts=True)
        majority = classes[np.argmax(counts)]
        base = float(np.mean(ye == majority))
        if float(values["accuracy"]) < base:
            return (
                f"the {where} accuracy {float(values['accuracy']):.4f} is below always "
                f"predicting the most frequent training class ({base:.4f}); train longer, "
                "change the learning rate, or check the labels"
            )
    return None
