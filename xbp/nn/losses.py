"""Costs, averaged over the batch, with their output error delta_L.

Built in: ``quadratic``, ``cross_entropy`` (softmax), ``binary_cross_entropy``
(sigmoid) and ``poisson`` (half the Poisson deviance after an ``exp`` output).

Each loss returns ``(C, delta_L)`` where ``delta_L = dC/dZ_L`` for the whole
batch: the generic rule ``dC/dA * phi'(Z)``, or the fused ``(A - Y) / n`` for
softmax + cross-entropy and sigmoid + binary cross-entropy. Costs from
logits use log-sum-exp and ``log1p(exp(-|z|))``, so they never take the log
of zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ..errors import XbpValueError
from .activations import ACTIVATIONS, Activation, check_part_name, guard_rule, probe_rule

__all__ = [
    "Loss",
    "LOSSES",
    "get_loss",
    "check_pair",
    "check_targets",
    "check_target_range",
    "register_loss",
]


class Loss(NamedTuple):
    """A cost and the output activations it may follow.

    ``value_and_delta(xp, z, a, y, n, activation, w)`` returns the batch cost
    as a 0-d device array and delta_L; ``n`` is the divisor of the average
    (the global batch size when the batch is split across processes, the sum
    of the row weights when rows are weighted) and ``w`` is None or an
    ``(rows, 1)`` array of row weights: the cost is ``sum_i w_i C_i / n`` and
    row i of delta_L is scaled by ``w_i``. ``outputs`` lists the output
    activations it may follow; empty means any that is not output-only.
    ``reads_z=False`` says that ``value_and_delta`` reads ``z`` only through a
    ``from_z`` activation's derivative, so the output activation may compute
    in place in ``z`` (registered losses read it: True).
    """

    name: str
    value_and_delta: Callable[[Any, Any, Any, Any, Any, Activation, Any], tuple[Any, Any]]
    outputs: tuple[str, ...]
    # (xp, z, y, n, w) -> (a, cost, delta): the output activation and the cost from one
    # pass over z, used instead of activation.forward + value_and_delta when set
    fused_forward: Callable[[Any, Any, Any, Any, Any], tuple[Any, Any, Any]] | None = None
    # False: value_and_delta reads z only for an activation whose derivative takes Z_L
    # (``from_z``; such an activation never overwrites Z_L), so an output activation
    # that may overwrite it (sigmoid) needs no copy of Z_L
    reads_z: bool = True


def _weighted_sum(xp: Any, terms: Any, w: Any) -> Any:
    """sum over rows (and columns) of ``terms``, row i weighted by ``w[i]`` when given."""
    return xp.sum(terms) if w is None else xp.sum(terms * w)


def _scale_rows(delta: Any, w: Any, n: Any) -> Any:
    """delta_L divided by the average's divisor and, with row weights, row i times w_i."""
    if w is not None:
        delta = delta * w
    delta /= n
    return delta


def _quadratic(
    xp: Any, z: Any, a: Any, y: Any, n: Any, act: Activation, w: Any = None
) -> tuple[Any, Any]:
    diff = a - y
    if w is None:  # the common call, without the helpers' calls (tiny networks feel them)
        cost = xp.sum(diff * diff) / (2 * n)
        diff /= n
    else:
        cost = _weighted_sum(xp, diff * diff, w) / (2 * n)
        diff = _scale_rows(diff, w, n)
    if act.derivative is not None:
        diff *= act.derivative(xp, z if act.from_z else a)
    return cost, diff


def _cross_entropy(
    xp: Any, z: Any, a: Any, y: Any, n: Any, act: Activation, w: Any = None
) -> tuple[Any, Any]:
    shifted = z - xp.max(z, axis=1, keepdims=True)
    log_norm = xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    cost = -_weighted_sum(xp, y * (shifted - log_norm), w) / n
    return cost, _scale_rows(a - y, w, n)


def _softmax_cross_entropy(xp: Any, z: Any, y: Any, n: Any, w: Any = None) -> tuple[Any, Any, Any]:
    # one max, one exp and one sum serve both the softmax output and the cost
    shifted = z - xp.max(z, axis=1, keepdims=True)
    e = xp.exp(shifted)
    norm = xp.sum(e, axis=1, keepdims=True)
    cost = -_weighted_sum(xp, y * (shifted - xp.log(norm)), w) / n
    e /= norm
    return e, cost, _scale_rows(e - y, w, n)


def _binary_cross_entropy(
    xp: Any, z: Any, a: Any, y: Any, n: Any, act: Activation, w: Any = None
) -> tuple[Any, Any]:
    # -[y log s(z) + (1-y) log(1-s(z))] = max(z,0) - z*y + log1p(exp(-|z|))
    per = xp.maximum(z, 0.0) - z * y + xp.log1p(xp.exp(-xp.abs(z)))
    cost = _weighted_sum(xp, per, w) / n
    return cost, _scale_rows(a - y, w, n)


def _xlogx(xp: Any, y: Any) -> Any:
    """``y log y`` with ``0 log 0 = 0`` (scipy's ``xlogy(y, y)``)."""
    positive = y > 0
    return xp.where(positive, y * xp.log(xp.where(positive, y, 1.0)), 0.0)


def _poisson(
    xp: Any, z: Any, a: Any, y: Any, n: Any, act: Activation, w: Any = None
) -> tuple[Any, Any]:
    # half the Poisson deviance of the mean a = exp(z), from the log-mean z itself:
    # y log(y / a) - y + a = a - y z + (y log y - y); its gradient in z is a - y
    # (scikit-learn's MLPRegressor(loss="poisson") keeps the constant in its loss too)
    per = a - y * z + (_xlogx(xp, y) - y)
    cost = _weighted_sum(xp, per, w) / n
    return cost, _scale_rows(a - y, w, n)


LOSSES: dict[str, Loss] = {
    # any output activation but softmax (output-only, fused with cross-entropy)
    "quadratic": Loss("quadratic", _quadratic, (), reads_z=False),
    "cross_entropy": Loss(
        "cross_entropy", _cross_entropy, ("softmax",), fused_forward=_softmax_cross_entropy
    ),
    "binary_cross_entropy": Loss("binary_cross_entropy", _binary_cross_entropy, ("sigmoid",)),
    # counts and rates: the exponential output is the log link's inverse
    "poisson": Loss("poisson", _poisson, ("exp",)),
}
_ALIASES = {"mse": "quadratic", "binary_ce": "binary_cross_entropy", "log_loss": "cross_entropy"}


#: the built-in names (and aliases), which registration never replaces
BUILTIN = frozenset(LOSSES) | frozenset(_ALIASES)

_REGISTER_HOW = (
    "register it first with xbp.register_loss(name, value, grad) "
    "(see docs/custom.md, 'Your own activation and loss')"
)


def get_loss(name: str | Loss, *, argument: str = "loss") -> Loss:
    """Look a loss up by name (``"mse"`` is an alias of ``"quadratic"``).

    A :class:`Loss` object is accepted when it is the one registered under its
    name (models store the loss by name, so an unregistered one could not be
    saved and loaded).
    """
    if isinstance(name, Loss):
        if LOSSES.get(name.name) is name:
            return name
        raise XbpValueError(
            f"{argument}=Loss({name.name!r}) is not registered; {_REGISTER_HOW}, then pass its name"
        )
    if isinstance(name, str):
        key = _ALIASES.get(name.lower(), name.lower())
        if key in LOSSES:
            return LOSSES[key]
    raise XbpValueError(
        f"{argument}={name!r} is not known; use one of {sorted(LOSSES) + sorted(_ALIASES)}, "
        f"or {_REGISTER_HOW}"
    )


def default_output(loss: Loss) -> str:
    """The output activation that fits ``loss`` when none is named: softmax for
    cross-entropy, sigmoid for binary cross-entropy, identity for the quadratic
    loss and any loss that may follow any output, else the first it lists."""
    return loss.outputs[0] if loss.outputs else "identity"


def check_pair(loss: Loss, output: Activation) -> None:
    """Refuse an output activation the loss is not defined for."""
    if output.name not in loss.outputs and (loss.outputs or output.output_only):
        if output.name == "softmax":
            fix = "use loss='cross_entropy' with a softmax output"
        elif loss.name == "cross_entropy":
            fix = "use a softmax output layer (activation='softmax') with cross_entropy"
        elif output.output_only:
            fix = f"use an output activation that {loss.name} may follow"
        else:
            fix = f"use one of {list(loss.outputs)} as the output activation"
        raise XbpValueError(
            f"loss={loss.name!r} cannot follow output activation {output.name!r}; {fix}"
        )


def _rows(xp: Any, c: Any) -> Any:
    """A user's per-row ``(rows,)`` or per-element ``(rows, k)`` costs as a column or matrix
    whose rows ``_weighted_sum`` can weight."""
    return xp.reshape(c, (-1, 1)) if c.ndim == 1 else c


def _probe_loss(value: Any, grad: Any, delta: Any) -> None:
    """Try a registered loss's rules on small float64 arrays (shapes, finiteness)."""
    import array_api_compat.numpy as cnp
    import numpy as np

    a = np.asarray([[0.2, 0.5], [0.7, 0.4], [0.9, 0.1]])
    y = np.asarray([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    probe_rule(cnp, value, (a + 0, y + 0), a.shape, a.shape[:1])
    if grad is not None:
        probe_rule(cnp, grad, (a + 0, y + 0), a.shape)
    if delta is not None:
        probe_rule(cnp, delta, (a * 2 - 1, a + 0, y + 0), a.shape)


def register_loss(
    name: str,
    value: Callable[[Any, Any, Any], Any],
    grad: Callable[[Any, Any, Any], Any] | None = None,
    *,
    delta: Callable[[Any, Any, Any, Any], Any] | None = None,
    outputs: Sequence[str] | None = None,
) -> Loss:
    """Make your own cost usable by name everywhere xbp takes a loss.

    You write the cost of each sample and its derivative; xbp averages over
    the batch (``C = sum_i w_i C_i / n``, with row weights when given) and
    turns the derivative into the output error delta_L. Networks store the
    loss by name, so a model that uses it saves as usual and loads wherever the
    same name is registered again. Registering a name again replaces its rule;
    built-in names are never replaced.

    Parameters
    ----------
    name : str
        A lower-case identifier that is not a built-in name.
    value : callable
        ``value(xp, a, y)``: the cost of each sample, ``(rows,)``, or of each
        output, ``(rows, k)`` (summed per row), from the outputs ``a`` and
        targets ``y`` (both ``(rows, k)``), written with the namespace ``xp``.
        Not averaged: xbp divides by the batch size.
    grad : callable
        ``grad(xp, a, y) -> dC_i/dA`` of each sample's cost, ``(rows, k)``.
        xbp multiplies it by the output activation's derivative:
        ``delta_L = grad * phi_L'(Z_L) / n``.
    delta : callable, optional
        Instead of ``grad``: ``delta(xp, z, a, y) -> dC_i/dZ`` of each sample
        (a fused output error, e.g. ``a - y`` for a matching output
        activation); then ``outputs`` must name the activations it holds for.
    outputs : sequence of str, optional
        The output activations the loss may follow (default with ``grad``: any
        but softmax). :func:`xbp.mlp` picks the first as its default output;
        without ``outputs`` that is identity.

    Returns
    -------
    Loss
        The registered cost (also ``xbp.nn.losses.LOSSES[name]``).

    Examples
    --------
    >>> import xbp
    >>> _ = xbp.register_loss(
    ...     "half_abs_cubed", lambda xp, a, y: xp.abs(a - y) ** 3 / 2,
    ...     lambda xp, a, y: 1.5 * (a - y) * xp.abs(a - y))
    >>> xbp.mlp([2, 3, 1], loss="half_abs_cubed").loss.name
    'half_abs_cubed'
    """
    name = check_part_name(name, "loss", BUILTIN)
    if (grad is None) == (delta is None):
        raise XbpValueError(
            "pass exactly one of grad (dC/dA) and delta (dC/dZ) for a loss; grad is the usual "
            "one: grad(xp, a, y) -> dC/dA of each sample"
        )
    for arg, fn in (("value", value), ("grad", grad), ("delta", delta)):
        if fn is not None and not callable(fn):
            raise XbpValueError(f"{arg} is a {type(fn).__name__}; pass a function of (xp, ...)")
    if value is None:
        raise XbpValueError("value is None; pass value(xp, a, y) -> the cost of each sample")
    if delta is not None and not outputs:
        raise XbpValueError(
            "a loss given by its output error delta needs outputs=[...], the output "
            "activations that delta holds for (e.g. outputs=['sigmoid'])"
        )
    if isinstance(outputs, str):
        outputs = [outputs]
    allowed = tuple(outputs or ())
    for out in allowed:
        if out not in ACTIVATIONS:
            raise XbpValueError(
                f"outputs names {out!r}, which is not a registered activation; use one of "
                f"{sorted(ACTIVATIONS)}"
            )
        if grad is not None and ACTIVATIONS[out].output_only:
            raise XbpValueError(
                f"grad= (dC/dA) cannot follow the {out!r} output, which is not elementwise; "
                f"pass delta=(xp, z, a, y) -> dC/dZ instead"
            )
    _probe_loss(value, grad, delta)
    value = guard_rule("loss", name, value, per_row=True)
    grad = None if grad is None else guard_rule("loss", name, grad)
    delta = None if delta is None else guard_rule("loss", name, delta)

    def value_and_delta(
        xp: Any, z: Any, a: Any, y: Any, n: Any, act: Activation, w: Any = None
    ) -> tuple[Any, Any]:
        cost = _weighted_sum(xp, _rows(xp, value(xp, a, y)), w) / n
        if delta is not None:
            d = delta(xp, z, a, y)
        else:
            assert grad is not None
            d = grad(xp, a, y)
            if act.derivative is not None:
                d = d * act.derivative(xp, z if act.from_z else a)
        d = d * w if w is not None else d + 0  # a private array: it is scaled in place
        return cost, _scale_rows(d, None, n)

    loss = Loss(name, value_and_delta, allowed)
    LOSSES[name] = loss
    return loss


#: the losses whose targets :func:`check_targets` restricts (the others take any finite value)
TARGET_RULES = frozenset({"cross_entropy", "binary_cross_entropy", "poisson"})


def check_targets(loss: Loss, xp: Any, y: Any, argument: str = "y") -> None:
    """Refuse targets the loss is not defined for, so training never reports nonsense.

    * ``binary_cross_entropy`` needs every target in [0, 1] (0/1 labels or
      probabilities): labels 0..9 would give a negative "loss".
    * ``cross_entropy`` needs at least 2 outputs (a 1-unit softmax is the
      constant 1 and "trains" at loss 0) and non-negative targets.
    * ``poisson`` needs non-negative targets (counts or rates).
    * ``quadratic`` takes any finite target.

    Parameters
    ----------
    loss : Loss
    xp : array namespace of ``y``
    y : array (n, n_out)
        Float targets on the device, after integer labels were one-hot encoded.
    argument : str
        The name in the message (``"y"``, ``"y_val"``).

    Raises
    ------
    XbpValueError
        One line naming ``argument``, what is wrong and the fix.
    """
    if loss.name not in TARGET_RULES or y.ndim != 2:
        return  # quadratic and registered losses take any finite target
    if y.shape[0] == 0:
        check_target_range(loss, int(y.shape[1]), None, None, argument)
    else:
        check_target_range(loss, int(y.shape[1]), float(xp.min(y)), float(xp.max(y)), argument)


def check_target_range(
    loss: Loss, width: int, lo: float | None, hi: float | None, argument: str = "y"
) -> None:
    """:func:`check_targets` from what it reads: the targets' ``width`` (columns) and their
    smallest and largest values ``lo`` and ``hi`` (None: no rows, or one-hot rows xbp made
    from labels). A caller that reads the range anyway (to refuse NaN and Inf) passes it
    here, so the targets are read once for every rule."""
    if loss.name not in TARGET_RULES:
        return
    if loss.name == "cross_entropy" and width < 2:
        raise XbpValueError(
            f"{argument} has {width} column but cross_entropy needs at least 2 classes (a "
            "1-unit softmax always outputs 1); for one 0/1 target use "
            "loss='binary_cross_entropy' with a sigmoid output, or give labels of 2+ classes"
        )
    if lo is None or hi is None:
        return
    if loss.name == "poisson" and lo < 0:
        raise XbpValueError(
            f"{argument} holds negative targets (down to {lo:g}) but the poisson loss needs "
            "counts or rates >= 0; for signed targets use loss='quadratic'"
        )
    if loss.name == "binary_cross_entropy" and (lo < 0 or hi > 1):
        raise XbpValueError(
            f"{argument} holds targets from {lo:g} to {hi:g} but binary_cross_entropy needs "
            "targets in [0, 1] (0/1 labels or probabilities); for class labels 0..k-1 use "
            "loss='cross_entropy'"
        )
    if loss.name == "cross_entropy" and lo < 0:
        raise XbpValueError(
            f"{argument} holds negative targets (down to {lo:g}) but cross_entropy needs "
            "non-negative class probabilities; pass labels 0..k-1 or one-hot rows"
        )
