"""Optimizers as pure ``init``/``update`` pairs, composed from small transforms.

In the style of optax: a :class:`Transform` has ``init(params) -> state``
and ``update(grads, state, params) -> (updates, state)``; ``updates`` are
*added* to the parameters by :func:`apply_updates`. Named optimizers are
chains of transforms. State is nested tuples of device arrays plus a Python
step count (kept on the host, so schedules never force a device sync), so it
saves and loads with :func:`state_to_host` / :func:`state_from_host`.

:func:`sklearn_sgd` and :func:`sklearn_adam` are scikit-learn's own update
rules (its ``MLPClassifier``/``MLPRegressor`` solvers), written the same way;
the estimators of :mod:`xbp.sklearn` train with them.

Examples
--------
>>> import numpy as np, xbp
>>> opt = xbp.optim.adam(1e-3)
>>> params = [{"W": np.ones((2, 2)), "b": np.zeros(2)}]
>>> state = opt.init(params)
>>> updates, state = opt.update(params, state, params)
>>> params = xbp.optim.apply_updates(params, updates)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from ..errors import XbpFileError, XbpValueError
from ..nn.validate import check_int, check_number
from . import tree

__all__ = [
    "Schedule",
    "Transform",
    "Optimizer",
    "constant",
    "step",
    "exponential",
    "cosine",
    "warmup",
    "sgd",
    "momentum",
    "nesterov",
    "adam",
    "adamw",
    "rmsprop",
    "sklearn_sgd",
    "sklearn_adam",
    "apply_updates",
    "get_optimizer",
    "from_config",
    "state_to_host",
    "state_from_host",
    "OPTIMIZERS",
]

Params = list[dict[str, Any]]


# -- learning-rate schedules (host-side functions of the step count) --------
@dataclass(frozen=True)
class Schedule:
    """A learning rate as a function of the step count; ``config`` rebuilds it.

    Examples
    --------
    >>> from xbp import optim
    >>> sched = optim.step(0.1, step_size=2, gamma=0.5)
    >>> [sched(count) for count in range(5)]
    [0.1, 0.1, 0.05, 0.05, 0.025]
    >>> sched.config()
    {'kind': 'step', 'learning_rate': 0.1, 'step_size': 2, 'gamma': 0.5}
    """

    kind: str
    args: dict[str, Any]
    fn: Callable[[int], float] = field(compare=False, repr=False)

    def __call__(self, count: int) -> float:
        return self.fn(count)

    def config(self) -> dict[str, Any]:
        out = dict(self.args)
        if isinstance(out.get("base"), Schedule):
            out["base"] = out["base"].config()
        return {"kind": self.kind, **out}

    @property
    def in_epochs(self) -> bool:
        """Whether a length is given in epochs (``epochs=``), to be turned into steps by
        :meth:`in_steps` once the batches per epoch are known (``fit`` does it)."""
        return "epochs" in self.args or (
            isinstance(self.args.get("base"), Schedule) and self.args["base"].in_epochs
        )

    def in_steps(self, steps_per_epoch: int) -> Schedule:
        """This schedule with every length in epochs turned into steps
        (``epochs * steps_per_epoch``); a schedule in steps is returned as it is.

        Examples
        --------
        >>> from xbp import optim
        >>> optim.cosine(0.1, epochs=40).in_steps(81).config()["decay_steps"]
        3240
        """
        if not self.in_epochs:
            return self
        cfg = self.config()
        return as_schedule(_epochs_to_steps(cfg, check_int(steps_per_epoch, "steps_per_epoch")))


# the argument in steps that each schedule's ``epochs=`` stands for
_STEPS_ARGUMENT = {
    "step": "step_size",
    "exponential": "decay_steps",
    "cosine": "decay_steps",
    "warmup": "warmup_steps",
}


def _epochs_to_steps(cfg: dict[str, Any], per_epoch: int) -> dict[str, Any]:
    cfg = dict(cfg)
    if isinstance(cfg.get("base"), dict):
        cfg["base"] = _epochs_to_steps(cfg["base"], per_epoch)
    epochs = cfg.pop("epochs", None)
    if epochs is not None:
        cfg[_STEPS_ARGUMENT[cfg["kind"]]] = int(epochs) * per_epoch
    return cfg


def _steps_or_epochs(
    kind: str, steps: int | None, epochs: int | None, argument: str
) -> dict[str, int]:
    """Exactly one of a length in steps (``argument``) and in ``epochs``, checked."""
    if (steps is None) == (epochs is None):
        raise XbpValueError(
            f"{kind}: pass {argument}= (in steps) or epochs= (in epochs, turned into steps by "
            "fit from the batches per epoch), exactly one of them"
        )
    if epochs is not None:
        return {"epochs": check_int(epochs, "epochs")}
    assert steps is not None
    return {argument: check_int(steps, argument)}


def _unresolved(kind: str) -> Callable[[int], float]:
    def fn(count: int) -> float:
        raise XbpValueError(
            f"the {kind} schedule is given in epochs; it becomes a schedule in steps in fit "
            "(or call schedule.in_steps(steps_per_epoch) first)"
        )

    return fn


def constant(learning_rate: float) -> Schedule:
    """The same rate at every step.

    Examples
    --------
    >>> from xbp import optim
    >>> sched = optim.constant(0.01)
    >>> sched(0), sched(1000)
    (0.01, 0.01)
    """
    lr = check_number(learning_rate, "learning_rate")
    return Schedule("constant", {"learning_rate": lr}, lambda c: lr)


def step(
    learning_rate: float,
    step_size: int | None = None,
    gamma: float = 0.1,
    *,
    epochs: int | None = None,
) -> Schedule:
    """Multiply the rate by ``gamma`` every ``step_size`` steps (or every ``epochs``
    epochs).

    Examples
    --------
    >>> from xbp import optim
    >>> sched = optim.step(0.1, step_size=2, gamma=0.5)
    >>> [sched(count) for count in range(5)]
    [0.1, 0.1, 0.05, 0.05, 0.025]
    """
    lr = check_number(learning_rate, "learning_rate")
    length = _steps_or_epochs("step", step_size, epochs, "step_size")
    g = check_number(gamma, "gamma")
    args = {"learning_rate": lr, **length, "gamma": g}
    if epochs is not None:
        return Schedule("step", args, _unresolved("step"))
    every = length["step_size"]
    return Schedule("step", args, lambda c: lr * g ** (c // every))


def exponential(
    learning_rate: float,
    decay_rate: float,
    decay_steps: int | None = None,
    *,
    epochs: int | None = None,
) -> Schedule:
    """``lr * decay_rate ** (count / decay_steps)``: ``decay_rate`` per ``decay_steps``
    steps (default 1), or per ``epochs`` epochs.

    Examples
    --------
    >>> from xbp import optim
    >>> sched = optim.exponential(1.0, 0.5, decay_steps=2)  # halves every 2 steps
    >>> sched(0), sched(2), sched(4)
    (1.0, 0.5, 0.25)
    """
    lr = check_number(learning_rate, "learning_rate")
    d = check_number(decay_rate, "decay_rate")
    length = _steps_or_epochs(
        "exponential",
        1 if decay_steps is None and epochs is None else decay_steps,
        epochs,
        "decay_steps",
    )
    args = {"learning_rate": lr, "decay_rate": d, **length}
    if epochs is not None:
        return Schedule("exponential", args, _unresolved("exponential"))
    n = length["decay_steps"]
    return Schedule("exponential", args, lambda c: lr * d ** (c / n))


def cosine(
    learning_rate: float,
    decay_steps: int | None = None,
    alpha: float = 0.0,
    *,
    epochs: int | None = None,
) -> Schedule:
    """Cosine decay from ``lr`` to ``alpha * lr`` over ``decay_steps`` steps (or over
    ``epochs`` epochs: ``fit`` turns them into steps from its batches per epoch), then
    flat.

    Examples
    --------
    >>> from xbp import optim
    >>> sched = optim.cosine(0.1, epochs=40)  # no hand-computed step count
    >>> sched.in_steps(81)(40 * 81), optim.cosine(0.1, decay_steps=10)(5)
    (0.0, 0.05)
    """
    lr = check_number(learning_rate, "learning_rate")
    length = _steps_or_epochs("cosine", decay_steps, epochs, "decay_steps")
    a = check_number(alpha, "alpha", low=0.0, low_open=False, high=1.0)
    args = {"learning_rate": lr, **length, "alpha": a}
    if epochs is not None:
        return Schedule("cosine", args, _unresolved("cosine"))
    n = length["decay_steps"]

    def fn(c: int) -> float:
        t = min(c, n) / n
        return lr * ((1 - a) * 0.5 * (1 + math.cos(math.pi * t)) + a)

    return Schedule("cosine", args, fn)


def warmup(
    base: Schedule | float, warmup_steps: int | None = None, *, epochs: int | None = None
) -> Schedule:
    """Rise linearly from 0 to ``base`` over ``warmup_steps`` (or ``epochs`` epochs),
    then follow ``base``.

    Examples
    --------
    >>> from xbp import optim
    >>> sched = optim.warmup(0.1, 4)  # then constant 0.1
    >>> [round(sched(count), 3) for count in range(6)]
    [0.025, 0.05, 0.075, 0.1, 0.1, 0.1]
    """
    sched = as_schedule(base)
    length = _steps_or_epochs("warmup", warmup_steps, epochs, "warmup_steps")
    args = {"base": sched, **length}
    if epochs is not None or sched.in_epochs:
        return Schedule("warmup", args, _unresolved("warmup"))
    n = length["warmup_steps"]
    return Schedule("warmup", args, lambda c: sched(c) * min(1.0, (c + 1) / n))


_SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "step": step,
    "exponential": exponential,
    "cosine": cosine,
    "warmup": warmup,
}


def as_schedule(value: Schedule | float | dict[str, Any]) -> Schedule:
    """A number becomes a constant schedule; a config dict is rebuilt."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, dict):
        cfg = dict(value)
        kind = cfg.pop("kind", None)
        if kind not in _SCHEDULES:
            raise XbpValueError(f"schedule kind={kind!r} is not known; use {sorted(_SCHEDULES)}")
        if "base" in cfg:
            cfg["base"] = as_schedule(cfg["base"])
        return _SCHEDULES[kind](**cfg)
    return constant(value)


# -- transforms -------------------------------------------------------------
def _no_scalars(state: Any) -> tuple[Any, ...]:
    return ()


class Transform(NamedTuple):
    """``init(params) -> state``, ``update(grads, state, params, scalars) -> (updates,
    state)`` and ``scalars(state) -> tuple``.

    Every rule is written once, as a pure function: it never writes to its
    inputs. Whether the results then replace the old arrays in place is a
    property of how the training step applies them (:mod:`xbp.train.step`), not a
    second copy of the rule.

    Everything that depends on the host-side step count (the learning rate of
    a schedule, Adam's bias corrections) is computed by ``scalars(state)`` on
    the host, in Python floats, and handed to ``update``; ``update`` never
    reads a count for its arithmetic. A compiled step therefore receives these
    numbers as device scalars and is traced once, whatever the step
    (``scalars=None`` makes ``update`` compute them itself).

    Examples
    --------
    >>> import numpy as np
    >>> from xbp import optim
    >>> opt = optim.sgd(0.5)  # an Optimizer holds its Transform
    >>> params = [{"W": np.ones((2, 1)), "b": np.zeros(1)}]
    >>> grads = [{"W": np.full((2, 1), 0.2), "b": np.ones(1)}]
    >>> state = opt.transform.init(params)
    >>> updates, state = opt.update(grads, state, params)
    >>> updates[0]["b"]
    array([-0.5])
    """

    init: Callable[[Params], Any]
    update: Callable[..., tuple[Params, Any]]
    scalars: Callable[[Any], tuple[Any, ...]] = _no_scalars


_NAMESPACES: dict[type, Any] = {}


def _ns(params: Params) -> Any:
    # resolved once per array type, not on every step
    leaf = next(v for p in params for v in p.values())
    kind = type(leaf)
    xp = _NAMESPACES.get(kind)
    if xp is None:
        xp = _NAMESPACES[kind] = array_api_compat.array_namespace(leaf)
    return xp


def _map(fn: Callable[..., Any], *trees: Params) -> Params:
    if len(trees) == 2:  # the common case, without a generator per leaf (per-step cost)
        first, second = trees
        return [{k: fn(p[k], q[k]) for k in p} for p, q in zip(first, second)]
    return [{k: fn(*(t[i][k] for t in trees)) for k in trees[0][i]} for i in range(len(trees[0]))]


def _map_moments(fn: Callable[[Any, Any, Any], tuple[Any, Any, Any]], *trees: Params) -> Any:
    """``fn(m, v, g) -> (m', v', update)`` over the leaves of the three trees in one pass
    (an update and two moments from each leaf); the three result trees."""
    mus: Params = []
    nus: Params = []
    outs: Params = []
    for m_tree, v_tree, g_tree in zip(*trees):
        mu: dict[str, Any] = {}
        nu: dict[str, Any] = {}
        out: dict[str, Any] = {}
        for k, g in g_tree.items():
            mu[k], nu[k], out[k] = fn(m_tree[k], v_tree[k], g)
        mus.append(mu)
        nus.append(nu)
        outs.append(out)
    return mus, nus, outs


def _zeros_like(params: Params) -> Params:
    if not any(params):
        return [{} for _ in params]
    xp = _ns(params)
    return _map(xp.zeros_like, params)


def clip_by_global_norm(max_norm: float) -> Transform:
    """Scale all gradients by ``min(1, max_norm / ||g||)`` (norm over every array), on device."""
    limit = check_number(max_norm, "clip_norm")

    def update(
        grads: Params, state: Any, params: Params, scalars: Any = None
    ) -> tuple[Params, Any]:
        xp = _ns(grads)
        sq = [xp.sum(g[k] * g[k]) for g in grads for k in g]
        norm = xp.sqrt(sum(sq[1:], sq[0]))
        # max(norm, limit) without building a device scalar from the host (a CUDA graph
        # being captured may not copy host memory)
        factor = limit / xp.clip(norm, min=limit)
        return _map(lambda g: g * factor, grads), state

    return Transform(lambda p: (), update)


def _add_to_weight_grads(term: Callable[[Any, Any], Any]) -> Transform:
    """A transform adding ``term(xp, W)`` to each weight gradient (biases untouched)."""

    def update(
        grads: Params, state: Any, params: Params, scalars: Any = None
    ) -> tuple[Params, Any]:
        xp = _ns(params)
        return [_decayed(g, p, lambda w: term(xp, w)) for g, p in zip(grads, params)], state

    return Transform(lambda p: (), update)


#: The parameters that weight decay and L1 act on (a layer's weight matrices; never
#: biases, normalisation scales or shifts).
DECAYED = ("W",)


def _decayed(g: dict[str, Any], p: dict[str, Any], term: Callable[[Any], Any]) -> dict[str, Any]:
    return {k: g[k] + term(p[k]) if k in DECAYED else g[k] for k in g}


def add_weight_decay(weight_decay: float) -> Transform:
    """L2 regularisation: add ``weight_decay * W`` to each weight gradient (biases untouched)."""
    wd = check_number(weight_decay, "weight_decay", low_open=False)
    return _add_to_weight_grads(lambda xp, w: wd * w)


def add_l1(l1: float) -> Transform:
    """L1 regularisation: add ``l1 * sign(W)`` to each weight gradient (biases untouched).

    ``sign(W)`` is the subgradient of ``l1 * sum |W|`` with 0 at ``W = 0``
    (``docs/math.md``), so a weight that is exactly 0 is left where it is."""
    strength = check_number(l1, "l1", low_open=False)
    return _add_to_weight_grads(lambda xp, w: strength * xp.sign(w))


def scale_by_momentum(beta: float, nesterov: bool = False) -> Transform:
    b = check_number(beta, "momentum", low=0.0, low_open=False, high=1.0, high_open=True)

    def update(
        grads: Params, state: Any, params: Params, scalars: Any = None
    ) -> tuple[Params, Any]:
        velocity = _map(lambda v, g: b * v + g, state, grads)
        if nesterov:
            return _map(lambda v, g: g + b * v, velocity, grads), velocity
        return velocity, velocity

    return Transform(_zeros_like, update)


class AdamState(NamedTuple):
    steps: int
    mu: Params
    nu: Params


def scale_by_adam(b1: float, b2: float, eps: float) -> Transform:
    b1 = check_number(b1, "beta_1", low=0.0, low_open=False, high=1.0, high_open=True)
    b2 = check_number(b2, "beta_2", low=0.0, low_open=False, high=1.0, high_open=True)
    eps = check_number(eps, "epsilon")

    def init(params: Params) -> AdamState:
        return AdamState(0, _zeros_like(params), _zeros_like(params))

    def scalars(state: AdamState) -> tuple[float, float, float, float]:
        count = state.steps + 1
        c1, c2 = 1 - b1**count, 1 - b2**count
        return c1, c2, eps * math.sqrt(c2), math.sqrt(c2) / c1

    def update(
        grads: Params, state: AdamState, params: Params, scalars: Any = None
    ) -> tuple[Params, AdamState]:
        xp = _ns(grads)
        _, _, eps_hat, correction = _scalars(state) if scalars is None else scalars

        def leaf(m: Any, v: Any, g: Any) -> tuple[Any, Any, Any]:
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * (g * g)
            # m_hat / (sqrt(v_hat) + eps) == m / (sqrt(v) + eps sqrt(c2)) * sqrt(c2) / c1
            return m, v, m / (xp.sqrt(v) + eps_hat) * correction

        mu, nu, out = _map_moments(leaf, state.mu, state.nu, grads)
        return out, AdamState(state.steps + 1, mu, nu)

    _scalars = scalars
    return Transform(init, update, scalars)


def scale_by_rms(decay: float, eps: float) -> Transform:
    d = check_number(decay, "rho", low=0.0, low_open=False, high=1.0, high_open=True)
    eps = check_number(eps, "epsilon")

    def update(
        grads: Params, state: Params, params: Params, scalars: Any = None
    ) -> tuple[Params, Params]:
        xp = _ns(grads)
        s = _map(lambda s, g: d * s + (1 - d) * (g * g), state, grads)
        return _map(lambda g, v: g / (xp.sqrt(v) + eps), grads, s), s

    return Transform(_zeros_like, update)


def add_decoupled_weight_decay(weight_decay: float) -> Transform:
    """AdamW: add ``weight_decay * W`` to the already-scaled update (not the gradient)."""
    wd = check_number(weight_decay, "weight_decay", low_open=False)

    def update(u: Params, state: Any, params: Params, scalars: Any = None) -> tuple[Params, Any]:
        return [_decayed(g, p, lambda w: wd * w) for g, p in zip(u, params)], state

    return Transform(lambda p: (), update)


class ScaleState(NamedTuple):
    steps: int


def scale_by_learning_rate(schedule: Schedule) -> Transform:
    """Multiply by ``-lr(count)``; the count lives on the host."""

    def scalars(state: ScaleState) -> tuple[float]:
        return (-schedule(state.steps),)

    def update(
        u: Params, state: ScaleState, params: Params, scalars: Any = None
    ) -> tuple[Params, ScaleState]:
        (lr,) = _scalars(state) if scalars is None else scalars
        return _map(lambda g: g * lr, u), ScaleState(state.steps + 1)

    _scalars = scalars
    return Transform(lambda p: ScaleState(0), update, scalars)


def add_l2_per_step(alpha: float = 0.0) -> Transform:
    """L2 whose coefficient is a per-step scalar: add ``c * W`` to each weight gradient
    (biases untouched), where ``(c,)`` is the step's scalar.

    scikit-learn adds ``alpha/2 ||W||^2`` to each batch's summed loss before dividing by
    the batch's weight sum (its rows when unweighted), so the coefficient
    ``alpha / sum(w_batch)`` changes from batch to batch. The host scalar is ``alpha``
    (data, never a baked-in number; ``Optimizer.scalars(state, l2=...)`` overrides it) and
    the training step (:class:`xbp.train.step.Step`) divides it by the batch's divisor.
    Called directly with ``scalars=None`` ``c`` is 0: nothing is added."""
    a = check_number(alpha, "alpha", low=0.0, low_open=False)

    def scalars(state: Any) -> tuple[float]:
        return (a,)

    def update(
        grads: Params, state: Any, params: Params, scalars: Any = None
    ) -> tuple[Params, Any]:
        (c,) = (0.0,) if scalars is None else scalars
        return [_decayed(g, p, lambda w: c * w) for g, p in zip(grads, params)], state

    return Transform(lambda p: (), update, scalars)


class SGDState(NamedTuple):
    """scikit-learn's SGD: the update count and the velocities."""

    steps: int
    velocity: Params


def scale_by_sklearn_sgd(schedule: Schedule, momentum: float, nesterov: bool) -> Transform:
    """scikit-learn's SGD with the learning rate inside the momentum:
    ``v <- momentum v - lr g``; the update is ``momentum v - lr g`` (Nesterov) or ``v``.

    Its one scalar is ``-lr`` (the learning-rate scalar, so it ends a chain)."""
    b = check_number(momentum, "momentum", low=0.0, low_open=False, high=1.0)

    def init(params: Params) -> SGDState:
        return SGDState(0, _zeros_like(params))

    def scalars(state: SGDState) -> tuple[float]:
        return (-schedule(state.steps),)

    def update(
        grads: Params, state: SGDState, params: Params, scalars: Any = None
    ) -> tuple[Params, SGDState]:
        (neg_lr,) = _scalars(state) if scalars is None else scalars
        velocity = _map(lambda v, g: b * v + neg_lr * g, state.velocity, grads)
        out = _map(lambda v, g: b * v + neg_lr * g, velocity, grads) if nesterov else velocity
        return out, SGDState(state.steps + 1, velocity)

    _scalars = scalars
    return Transform(init, update, scalars)


def scale_by_sklearn_adam(schedule: Schedule, b1: float, b2: float, eps: float) -> Transform:
    """scikit-learn's Adam: the bias corrections folded into the step size,
    ``lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)``, the update ``-lr_t m / (sqrt(v) + eps)``
    (``eps`` added to the uncorrected ``sqrt(v)``, unlike :func:`adam`).

    Its one scalar is ``-lr_t`` (the learning-rate scalar, so it ends a chain)."""
    b1 = check_number(b1, "beta_1", low=0.0, low_open=False, high=1.0, high_open=True)
    b2 = check_number(b2, "beta_2", low=0.0, low_open=False, high=1.0, high_open=True)
    eps = check_number(eps, "epsilon")

    def init(params: Params) -> AdamState:
        return AdamState(0, _zeros_like(params), _zeros_like(params))

    def scalars(state: AdamState) -> tuple[float]:
        t = state.steps + 1
        return (-(schedule(state.steps) * math.sqrt(1 - b2**t) / (1 - b1**t)),)

    def update(
        grads: Params, state: AdamState, params: Params, scalars: Any = None
    ) -> tuple[Params, AdamState]:
        xp = _ns(grads)
        (neg_lr,) = _scalars(state) if scalars is None else scalars

        def leaf(m: Any, v: Any, g: Any) -> tuple[Any, Any, Any]:
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * (g * g)
            return m, v, neg_lr * m / (xp.sqrt(v) + eps)

        mu, nu, out = _map_moments(leaf, state.mu, state.nu, grads)
        return out, AdamState(state.steps + 1, mu, nu)

    _scalars = scalars
    return Transform(init, update, scalars)


def chain(*transforms: Transform) -> Transform:
    def init(params: Params) -> tuple[Any, ...]:
        return tuple(t.init(params) for t in transforms)

    def scalars(state: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(t.scalars(s) for t, s in zip(transforms, state))

    def update(
        grads: Params, state: tuple[Any, ...], params: Params, scalars: Any = None
    ) -> tuple[Params, Any]:
        new = []
        for i, (t, s) in enumerate(zip(transforms, state)):
            grads, s = t.update(grads, s, params, None if scalars is None else scalars[i])
            new.append(s)
        return grads, tuple(new)

    return Transform(init, update, scalars)


#: hyper-parameters every update reads as data (:meth:`Optimizer.scalars`), left out of
#: :attr:`Optimizer.key`: the learning rate and the per-step L2 term's ``alpha``
_DATA_HYPER = ("learning_rate", "alpha")


@dataclass(frozen=True)
class Optimizer:
    """A named optimizer: its transform, learning-rate schedule and hyper-parameters.

    Examples
    --------
    >>> from xbp import optim
    >>> opt = optim.adam(1e-3, weight_decay=1e-4)
    >>> opt.name, opt.config()["weight_decay"]
    ('adam', 0.0001)
    >>> optim.from_config(opt.config()) == opt
    True
    """

    name: str
    hyper: dict[str, Any]
    schedule: Schedule
    transform: Transform = field(repr=False, compare=False)
    # the chain is only the learning-rate scaling: the update is -lr(count) * grad
    scale_only: bool = field(default=False, repr=False, compare=False)
    # built by this module from its config alone (so the config says what it computes)
    builtin: bool = field(default=False, repr=False, compare=False)
    # the chain starts with add_l2_per_step: a per-step L2 coefficient (Optimizer.scalars' l2)
    per_step_l2: bool = field(default=False, repr=False, compare=False)

    @functools.cached_property
    def key(self) -> Any:
        """What the update computes, hashable: the config of an optimizer this module
        built (equal configs compute the same), less its learning rate, which every
        update reads as data (:meth:`scalars`), so optimizers that differ only in their
        rate (or per-step L2 ``alpha``) share a compiled step; else the transform object
        itself. Computed once (every compiled epoch looks its step up by it)."""
        if self.builtin:
            rule = {k: v for k, v in self.config().items() if k not in _DATA_HYPER}
            return (self.name, repr(rule))
        return (self.name, self.transform)

    def init(self, params: Params) -> Any:
        return self.transform.init(params)

    def update(
        self, grads: Params, state: Any, params: Params, *, scalars: Any = None
    ) -> tuple[Params, Any]:
        """``(updates, new_state)``, pure: no input is written to.

        ``scalars`` (from :meth:`scalars`) carries every number that depends on
        the step count; compiled steps pass them as device scalars."""
        return self.transform.update(grads, state, params, scalars)

    def scalars(
        self, state: Any, lr_scale: float = 1.0, *, l2: float | None = None
    ) -> tuple[Any, ...]:
        """The step-dependent numbers of the next update (host floats, nested per
        transform). ``lr_scale`` multiplies the learning rate: a run that halved it
        after a divergence passes 0.5, so every optimizer and every compiled step
        sees the halved rate through the same input.

        Two positions are fixed. The chain's *last* transform has one scalar, the
        learning-rate scalar ``lr_scale`` multiplies: ``-lr`` of
        :func:`scale_by_learning_rate`, or, for scikit-learn's rules, whose rate sits
        inside the momentum, ``-lr`` of :func:`sklearn_sgd` and the bias-corrected
        ``-lr_t`` of :func:`sklearn_adam`. An optimizer with a per-step L2 term
        (:func:`sklearn_sgd`, :func:`sklearn_adam`) starts with it, and ``l2`` is
        this step's coefficient (scikit-learn's ``alpha / sum(w_batch)``); without
        ``l2`` the term adds nothing.

        For plain SGD (:attr:`scale_only`) the only number is ``-lr * lr_scale``:
        the training step folds it into the backward pass
        (``Network.value_and_grad(grad_scale=...)``), which is exact because the
        gradients are linear in the output error."""
        scalars = self.transform.scalars(state)
        if lr_scale != 1.0:  # the learning-rate scalar is always the chain's last part
            (lr,) = scalars[-1]
            scalars = (*scalars[:-1], (lr * lr_scale,))
        if l2 is not None:
            if not self.per_step_l2:
                raise XbpValueError(
                    f"l2={l2!r}: the {self.name} optimizer has no per-step L2 term; pass "
                    "l2 only to sklearn_sgd or sklearn_adam (weight_decay= for the others)"
                )
            scalars = ((l2,), *scalars[1:])
        return scalars

    def advanced(self, state: Any, steps: int = 1) -> Any:
        """``state`` with every count advanced by ``steps`` (arrays kept)."""
        if self.scale_only:  # (ScaleState,): the one count, without a tree walk
            return (ScaleState(state[0].steps + steps),)
        return tree.rebuild(state, tree.arrays(state), steps)

    def in_steps(self, steps_per_epoch: int) -> Optimizer:
        """This optimizer with a schedule given in epochs (``cosine(0.1, epochs=40)``)
        turned into steps; itself when its schedule is in steps already. :func:`xbp.fit`
        calls it with its batches per epoch."""
        if not self.schedule.in_epochs:
            return self
        if not self.builtin:
            raise XbpValueError(
                f"the {self.name} optimizer was not built by xbp.optim, so its schedule in "
                "epochs cannot be rebuilt in steps; give the schedule's length in steps"
            )
        cfg = self.config()
        cfg["learning_rate"] = self.schedule.in_steps(steps_per_epoch).config()
        return from_config(cfg)

    def learning_rate(self, state: Any) -> float:
        """The rate the next update will use (the schedule at the current count)."""
        return self.schedule(state[-1].steps)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "learning_rate": self.schedule.config(), **self.hyper}


def _build(
    name: str,
    learning_rate: Schedule | float,
    core: list[Transform],
    hyper: dict[str, Any],
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    decoupled: bool = False,
    l1: float = 0.0,
) -> Optimizer:
    sched = as_schedule(learning_rate)
    parts: list[Transform] = []
    if clip_norm is not None:
        parts.append(clip_by_global_norm(clip_norm))
    if weight_decay and not decoupled:
        parts.append(add_weight_decay(weight_decay))
    if check_number(l1, "l1", low_open=False):  # beside L2: on the gradient
        parts.append(add_l1(l1))
    parts += core
    if weight_decay and decoupled:
        parts.append(add_decoupled_weight_decay(weight_decay))
    parts.append(scale_by_learning_rate(sched))
    hyper = {**hyper, "weight_decay": weight_decay, "clip_norm": clip_norm}
    if l1:  # written only when set, so older files and configs read the same
        hyper["l1"] = float(l1)
    return Optimizer(name, hyper, sched, chain(*parts), scale_only=len(parts) == 1, builtin=True)


def sgd(
    learning_rate: Schedule | float = 0.1,
    *,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    l1: float = 0.0,
) -> Optimizer:
    """Plain gradient descent ``w <- w - eta * grad`` (the seed algorithm).

    Every optimizer takes ``weight_decay`` (L2: ``+ weight_decay * W`` on the
    gradient), ``l1`` (``+ l1 * sign(W)`` on the gradient) and ``clip_norm``.

    Examples
    --------
    >>> import numpy as np
    >>> from xbp import optim
    >>> opt = optim.sgd(0.5)
    >>> params = [{"W": np.ones((2, 1)), "b": np.zeros(1)}]
    >>> grads = [{"W": np.full((2, 1), 0.2), "b": np.ones(1)}]
    >>> updates, state = opt.update(grads, opt.init(params), params)
    >>> optim.apply_updates(params, updates)[0]["W"].ravel()  # 1 - 0.5 * 0.2
    array([0.9, 0.9])
    """
    return _build("sgd", learning_rate, [], {}, weight_decay, clip_norm, l1=l1)


def momentum(
    learning_rate: Schedule | float = 0.01,
    beta: float = 0.9,
    *,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    l1: float = 0.0,
) -> Optimizer:
    """Heavy-ball momentum: ``v <- beta v + g``, ``w <- w - eta v``.

    Examples
    --------
    >>> import numpy as np
    >>> from xbp import optim
    >>> opt = optim.momentum(0.1, beta=0.9)
    >>> params = [{"b": np.zeros(1)}]
    >>> grads = [{"b": np.ones(1)}]  # the same gradient twice: v = 1, then 0.9 * 1 + 1
    >>> first, state = opt.update(grads, opt.init(params), params)
    >>> second, state = opt.update(grads, state, params)
    >>> first[0]["b"], second[0]["b"]
    (array([-0.1]), array([-0.19]))
    """
    return _build(
        "momentum",
        learning_rate,
        [scale_by_momentum(beta)],
        {"beta": beta},
        weight_decay,
        clip_norm,
        l1=l1,
    )


def nesterov(
    learning_rate: Schedule | float = 0.01,
    beta: float = 0.9,
    *,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    l1: float = 0.0,
) -> Optimizer:
    """Nesterov momentum: ``w <- w - eta (g + beta v)`` with ``v <- beta v + g``.

    Examples
    --------
    >>> import numpy as np
    >>> from xbp import optim
    >>> opt = optim.nesterov(0.1, beta=0.9)
    >>> params, grads = [{"b": np.zeros(1)}], [{"b": np.ones(1)}]
    >>> updates, state = opt.update(grads, opt.init(params), params)
    >>> updates[0]["b"]  # -eta (g + beta v) with v = g = 1
    array([-0.19])
    """
    return _build(
        "nesterov",
        learning_rate,
        [scale_by_momentum(beta, nesterov=True)],
        {"beta": beta},
        weight_decay,
        clip_norm,
        l1=l1,
    )


def adam(
    learning_rate: Schedule | float = 1e-3,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
    *,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    l1: float = 0.0,
    decoupled: bool = False,
) -> Optimizer:
    """Adam with bias correction; ``weight_decay`` is L2 added to the gradient
    (``decoupled=True``: added to the update instead, which is :func:`adamw`).

    Examples
    --------
    >>> import numpy as np
    >>> from xbp import optim
    >>> opt = optim.adam(0.01)
    >>> params = [{"W": np.ones((2, 1)), "b": np.zeros(1)}]
    >>> grads = [{"W": np.full((2, 1), 0.2), "b": np.ones(1)}]
    >>> updates, state = opt.update(grads, opt.init(params), params)
    >>> updates[0]["W"].ravel()  # the first step moves every weight by about the rate
    array([-0.01, -0.01])
    """
    return _build(
        "adamw" if decoupled else "adam",
        learning_rate,
        [scale_by_adam(beta_1, beta_2, epsilon)],
        {"beta_1": beta_1, "beta_2": beta_2, "epsilon": epsilon},
        weight_decay,
        clip_norm,
        decoupled=decoupled,
        l1=l1,
    )


def adamw(
    learning_rate: Schedule | float = 1e-3,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
    *,
    weight_decay: float = 0.01,
    clip_norm: float | None = None,
    l1: float = 0.0,
) -> Optimizer:
    """Adam with decoupled weight decay (Loshchilov and Hutter).

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.load_digits()
    >>> net = xbp.mlp([64, 32, 10], activation="relu", loss="cross_entropy", seed=0)
    >>> opt = xbp.optim.adamw(xbp.optim.cosine(2e-3, epochs=2), weight_decay=0.1)
    >>> history = xbp.fit(net, x[:256], y[:256], epochs=2, optimizer=opt, progress=False)
    >>> history["loss"][1] < history["loss"][0]
    True
    """
    return adam(
        learning_rate,
        beta_1,
        beta_2,
        epsilon,
        weight_decay=weight_decay,
        clip_norm=clip_norm,
        decoupled=True,
        l1=l1,
    )


def rmsprop(
    learning_rate: Schedule | float = 1e-3,
    rho: float = 0.9,
    epsilon: float = 1e-8,
    *,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    l1: float = 0.0,
) -> Optimizer:
    """RMSProp: divide by a running root-mean-square of the gradients.

    Examples
    --------
    >>> import numpy as np
    >>> from xbp import optim
    >>> opt = optim.rmsprop(0.1, rho=0.9)
    >>> params, grads = [{"b": np.zeros(1)}], [{"b": np.ones(1)}]
    >>> updates, state = opt.update(grads, opt.init(params), params)
    >>> updates[0]["b"].round(6)  # -eta g / sqrt((1 - rho) g^2): a first step of -0.1 / sqrt(0.1)
    array([-0.316228])
    """
    return _build(
        "rmsprop",
        learning_rate,
        [scale_by_rms(rho, epsilon)],
        {"rho": rho, "epsilon": epsilon},
        weight_decay,
        clip_norm,
        l1=l1,
    )


def sklearn_sgd(
    learning_rate: Schedule | float = 0.001,
    momentum: float = 0.9,
    nesterov: bool = True,
    alpha: float = 0.0,
) -> Optimizer:
    """scikit-learn's SGD solver (``MLPClassifier(solver="sgd")``), number for number.

    The gradient gets scikit-learn's L2 term, a per-step coefficient times ``W``
    (:func:`add_l2_per_step`: in a training step ``alpha / sum(w_batch)``; called
    directly, the coefficient ``c`` of ``Optimizer.scalars(state, l2=c)``), then
    ``v <- momentum v - lr g`` and the update ``momentum v - lr g`` (``nesterov``)
    or ``v``: the learning rate sits inside the momentum, so a changed rate leaves
    the velocity as it is. scikit-learn's ``invscaling`` and ``adaptive`` rates are
    host-side changes of the rate (the estimators of :mod:`xbp.sklearn` set the
    training loop's ``lr_scale``; a compiled step reads it as data).

    Examples
    --------
    >>> import numpy as np, xbp
    >>> opt = xbp.optim.sklearn_sgd(0.1, momentum=0.5)
    >>> params = [{"W": np.ones((2, 2)), "b": np.zeros(2)}]
    >>> state = opt.init(params)
    >>> grads = [{"W": np.ones((2, 2)), "b": np.ones(2)}]
    >>> updates, state = opt.update(grads, state, params, scalars=opt.scalars(state, l2=0.5))
    >>> # W: g = 1 + 0.5 * 1, v = -0.1 g = -0.15, update 0.5 v - 0.1 g; b: no L2 term
    >>> round(float(updates[0]["W"][0, 0]), 12), round(float(updates[0]["b"][0]), 12)
    (-0.225, -0.15)
    """
    sched = as_schedule(learning_rate)
    m = check_number(momentum, "momentum", low=0.0, low_open=False, high=1.0)
    transform = chain(add_l2_per_step(alpha), scale_by_sklearn_sgd(sched, m, bool(nesterov)))
    return Optimizer(
        "sklearn_sgd",
        {"momentum": m, "nesterov": bool(nesterov), "alpha": float(alpha)},
        sched,
        transform,
        builtin=True,
        per_step_l2=True,
    )


def sklearn_adam(
    learning_rate: Schedule | float = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
    alpha: float = 0.0,
) -> Optimizer:
    """scikit-learn's Adam solver (``MLPClassifier(solver="adam")``), number for number.

    The gradient gets scikit-learn's per-step L2 term (see :func:`sklearn_sgd`), then
    ``m``, ``v`` as in :func:`adam` and the update ``-lr_t m / (sqrt(v) + epsilon)``
    with ``lr_t = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)``: ``epsilon`` is added to the
    uncorrected ``sqrt(v)``, so the two Adams differ slightly where ``v`` is tiny.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> opt = xbp.optim.sklearn_adam(0.1)
    >>> params = [{"W": np.ones((1, 1)), "b": np.zeros(1)}]
    >>> state = opt.init(params)
    >>> grads = [{"W": np.full((1, 1), 2.0), "b": np.zeros(1)}]
    >>> updates, state = opt.update(grads, state, params, scalars=opt.scalars(state))
    >>> round(float(updates[0]["W"][0, 0]), 6)  # the first step moves by lr
    -0.1
    """
    sched = as_schedule(learning_rate)
    core = scale_by_sklearn_adam(sched, beta_1, beta_2, epsilon)
    return Optimizer(
        "sklearn_adam",
        {
            "beta_1": float(beta_1),
            "beta_2": float(beta_2),
            "epsilon": float(epsilon),
            "alpha": float(alpha),
        },
        sched,
        chain(add_l2_per_step(alpha), core),
        builtin=True,
        per_step_l2=True,
    )


#: the optimizers by name, as ``optimizer="adam"`` and ``xbp train --optimizer`` take them
OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": sgd,
    "momentum": momentum,
    "nesterov": nesterov,
    "adam": adam,
    "adamw": adamw,
    "rmsprop": rmsprop,
}


def get_optimizer(name: str | Optimizer, learning_rate: Any = None, **kwargs: Any) -> Optimizer:
    """An optimizer by name (``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"adam"``, ...).

    Examples
    --------
    >>> from xbp import optim
    >>> opt = optim.get_optimizer("nesterov", 0.05, beta=0.8)
    >>> opt.name, opt.schedule(0), opt.config()["beta"]
    ('nesterov', 0.05, 0.8)
    """
    if isinstance(name, Optimizer):
        return name
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise XbpValueError(f"optimizer={name!r} is not known; use one of {sorted(OPTIMIZERS)}")
    if learning_rate is not None:
        kwargs["learning_rate"] = learning_rate
    return OPTIMIZERS[name.lower()](**kwargs)


def from_config(cfg: dict[str, Any]) -> Optimizer:
    """Rebuild an optimizer from :meth:`Optimizer.config` (as stored in model files).

    Examples
    --------
    >>> from xbp import optim
    >>> opt = optim.rmsprop(optim.warmup(1e-3, 100))
    >>> again = optim.from_config(opt.config())
    >>> again == opt, again.schedule(50)
    (True, 0.00051)
    """
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name not in OPTIMIZERS:
        raise XbpFileError(f"optimizer {name!r} in the file is not known to this xbp")
    cfg["learning_rate"] = as_schedule(cfg["learning_rate"])
    if name == "adamw" or cfg.get("weight_decay") is not None:
        cfg["weight_decay"] = cfg.get("weight_decay") or 0.0
    return OPTIMIZERS[name](**cfg)


def apply_updates(params: Params, updates: Params) -> Params:
    """``params + updates``, in place where the arrays are writable (not on JAX).

    Examples
    --------
    >>> import numpy as np
    >>> from xbp import optim
    >>> params = [{"W": np.ones((2, 1)), "b": np.zeros(1)}]
    >>> updates = [{"W": np.full((2, 1), -0.25), "b": np.ones(1)}]
    >>> optim.apply_updates(params, updates)[0]["W"].ravel()
    array([0.75, 0.75])
    """
    for p, u in zip(params, updates):
        for k in p:
            p[k] += u[k]  # in place on NumPy/CuPy/torch; rebinds the entry on JAX
    return params


# -- saving optimizer state ------------------------------------------------------
def state_to_host(state: Any, to_host: Callable[[Any], np.ndarray]) -> list[np.ndarray]:
    """The state's leaves, in a fixed order (:func:`xbp.optim.tree.leaves`), as NumPy arrays
    (counts as 0-d int64).

    Examples
    --------
    >>> import numpy as np
    >>> from xbp import optim
    >>> opt = optim.momentum(0.1)
    >>> params = [{"W": np.ones((2, 1)), "b": np.zeros(1)}]
    >>> leaves = optim.state_to_host(opt.init(params), np.asarray)
    >>> [leaf.shape for leaf in leaves]  # the velocities of W and b, the step count
    [(2, 1), (1,), ()]
    """
    return [
        np.asarray(leaf, dtype=np.int64) if isinstance(leaf, int) else to_host(leaf)
        for leaf in tree.leaves(state)
    ]


def state_from_host(
    template: Any, leaves: list[np.ndarray], to_device: Callable[[np.ndarray, Any], Any]
) -> Any:
    """Fill a freshly built state (``opt.init(params)``) with saved leaves; refuse a mismatch.

    Examples
    --------
    >>> import numpy as np
    >>> from xbp import optim
    >>> opt = optim.momentum(0.1)
    >>> params = [{"W": np.ones((2, 1)), "b": np.zeros(1)}]
    >>> leaves = optim.state_to_host(opt.init(params), np.asarray)
    >>> leaves[0] = np.full((2, 1), 3.0)  # e.g. read back from a file
    >>> state = optim.state_from_host(opt.init(params), leaves, lambda a, dtype: a)
    >>> optim.state_to_host(state, np.asarray)[0].ravel()
    array([3., 3.])
    """
    it = iter(leaves)
    expected = len(tree.leaves(template))
    if len(leaves) != expected:
        raise XbpFileError(
            f"the saved optimizer state has {len(leaves)} arrays but this optimizer needs "
            f"{expected}; load it with the optimizer it was saved with"
        )

    def fill(t: Any) -> Any:
        saved = np.asarray(next(it))
        if isinstance(t, int):  # a count (Adam's steps): one whole number >= 0
            if saved.shape != () or saved.dtype.kind not in "iu" or int(saved) < 0:
                raise XbpFileError(
                    f"a saved optimizer count is {saved.dtype} {saved.shape} "
                    f"({saved.reshape(-1)[:3].tolist()}), not one whole number >= 0"
                )
            return int(saved)
        if tuple(saved.shape) != tuple(t.shape):
            raise XbpFileError(
                f"a saved optimizer array has shape {saved.shape}, expected {tuple(t.shape)}"
            )
        if saved.dtype.kind not in "fiu":
            raise XbpFileError(
                f"a saved optimizer array of shape {saved.shape} holds {saved.dtype} values, "
                "not numbers"
            )
        return to_device(saved, t.dtype)

    return tree.map(template, fill)
