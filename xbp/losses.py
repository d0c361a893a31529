"""Costs, averaged over the batch, with their output error delta_L.

Each loss returns ``(C, delta_L)`` where ``delta_L = dC/dZ_L`` for the whole
batch: the generic rule ``dC/dA * phi'(Z)``, or the fused ``(A - Y) / n`` for
softmax + cross-entropy and sigmoid + binary cross-entropy. Costs from
logits use log-sum-exp and ``log1p(exp(-|z|))``, so they never take the log
of zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from .activations import Activation
from .errors import XbpValueError

__all__ = ["Loss", "LOSSES", "get_loss", "check_pair"]


class Loss(NamedTuple):
    """A cost and the output activations it may follow.

    ``value_and_delta(xp, z, a, y, n, activation)`` returns the batch cost as
    a 0-d device array and delta_L; ``n`` is the divisor of the average
    (the global batch size when the batch is split across processes).
    """

    name: str
    value_and_delta: Callable[[Any, Any, Any, Any, int, Activation], tuple[Any, Any]]
    outputs: tuple[str, ...]
    # (xp, z, y, n) -> (a, cost, delta): the output activation and the cost from one
    # pass over z, used instead of activation.forward + value_and_delta when set
    fused_forward: Callable[[Any, Any, Any, int], tuple[Any, Any, Any]] | None = None


def _quadratic(xp: Any, z: Any, a: Any, y: Any, n: int, act: Activation) -> tuple[Any, Any]:
    diff = a - y
    cost = xp.sum(diff * diff) / (2 * n)
    diff /= n
    if act.derivative is not None:
        diff *= act.derivative(xp, a)
    return cost, diff


def _cross_entropy(xp: Any, z: Any, a: Any, y: Any, n: int, act: Activation) -> tuple[Any, Any]:
    shifted = z - xp.max(z, axis=1, keepdims=True)
    log_norm = xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    cost = -xp.sum(y * (shifted - log_norm)) / n
    delta = a - y
    delta /= n
    return cost, delta


def _softmax_cross_entropy(xp: Any, z: Any, y: Any, n: int) -> tuple[Any, Any, Any]:
    # one max, one exp and one sum serve both the softmax output and the cost
    shifted = z - xp.max(z, axis=1, keepdims=True)
    e = xp.exp(shifted)
    norm = xp.sum(e, axis=1, keepdims=True)
    cost = -xp.sum(y * (shifted - xp.log(norm))) / n
    e /= norm
    delta = e - y
    delta /= n
    return e, cost, delta


def _binary_cross_entropy(
    xp: Any, z: Any, a: Any, y: Any, n: int, act: Activation
) -> tuple[Any, Any]:
    # -[y log s(z) + (1-y) log(1-s(z))] = max(z,0) - z*y + log1p(exp(-|z|))
    per = xp.maximum(z, 0.0) - z * y + xp.log1p(xp.exp(-xp.abs(z)))
    cost = xp.sum(per) / n
    delta = a - y
    delta /= n
    return cost, delta


_HIDDEN = ("sigmoid", "tanh", "relu", "leaky_relu", "softplus", "identity")

LOSSES: dict[str, Loss] = {
    "quadratic": Loss("quadratic", _quadratic, _HIDDEN),
    "cross_entropy": Loss(
        "cross_entropy", _cross_entropy, ("softmax",), fused_forward=_softmax_cross_entropy
    ),
    "binary_cross_entropy": Loss("binary_cross_entropy", _binary_cross_entropy, ("sigmoid",)),
}
_ALIASES = {"mse": "quadratic", "binary_ce": "binary_cross_entropy", "log_loss": "cross_entropy"}


def get_loss(name: str | Loss, *, argument: str = "loss") -> Loss:
    """Look a loss up by name (``"mse"`` is an alias of ``"quadratic"``)."""
    if isinstance(name, Loss):
        return name
    if isinstance(name, str):
        key = _ALIASES.get(name.lower(), name.lower())
        if key in LOSSES:
            return LOSSES[key]
    raise XbpValueError(
        f"{argument}={name!r} is not known; use one of {sorted(LOSSES) + sorted(_ALIASES)}"
    )


def check_pair(loss: Loss, output: Activation) -> None:
    """Refuse an output activation the loss is not defined for."""
    if output.name not in loss.outputs:
        if output.name == "softmax":
            fix = "use loss='cross_entropy' with a softmax output"
        elif loss.name == "cross_entropy":
            fix = "use a softmax output layer (activation='softmax') with cross_entropy"
        else:
            fix = f"use one of {list(loss.outputs)} as the output activation"
        raise XbpValueError(
            f"loss={loss.name!r} cannot follow output activation {output.name!r}; {fix}"
        )
