"""Activation functions, each beside its derivative.

Every derivative is computed from the layer's *output* ``a`` (exact for all of
these), so the backward pass never has to keep ``z`` for hidden layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import XbpError, XbpValueError

__all__ = ["Activation", "ACTIVATIONS", "get_activation", "register_activation"]

LEAKY_SLOPE = 0.01


class Activation(NamedTuple):
    """A forward rule ``a = phi(z)`` and its derivative ``phi'(z)`` written from ``a``.

    ``derivative`` is None when it is identically 1 (identity) or never
    materialised (softmax, whose output delta is fused with cross-entropy).
    ``backward(xp, delta, a)`` returns ``delta * phi'(a)`` for a hidden layer
    and may overwrite both of its (temporary) arguments, which saves two
    full-size temporaries per layer. ``forward`` may overwrite ``z`` when
    ``overwrites_z`` is set. With ``from_z`` the derivative (and ``backward``)
    take the net input ``Z`` instead of ``A``, for activations that cannot be
    inverted (GELU, swish); the network then keeps that layer's ``Z`` (so such
    an activation never overwrites it).
    """

    name: str
    forward: Callable[[Any, Any], Any]
    derivative: Callable[[Any, Any], Any] | None
    output_only: bool = False
    backward: Callable[[Any, Any, Any], Any] | None = None
    overwrites_z: bool = False
    from_z: bool = False


#: each namespace's own ``logistic`` or None, looked up once: a failed attribute look-up
#: on a module costs a tiny network's backprop about 3 us (Library.kernel_namespace)
_OWN_LOGISTIC: dict[int, Any] = {}


def _sigmoid(xp: Any, z: Any) -> Any:
    try:
        logistic = _OWN_LOGISTIC[id(xp)]
    except KeyError:
        logistic = _OWN_LOGISTIC[id(xp)] = getattr(xp, "logistic", None)
    if logistic is not None:  # a library's own, where much faster (torch)
        return logistic(z)
    # (1 + tanh(z/2)) / 2 cannot overflow and is faster than 1 / (1 + exp(-z));
    # z is a temporary: halving it in place saves an allocation (overwrites_z)
    z *= 0.5
    a = xp.tanh(z)
    a += 1
    a *= 0.5
    return a


def _sigmoid_prime(xp: Any, a: Any) -> Any:
    d = 1 - a
    d *= a
    return d


def _sigmoid_backward(xp: Any, delta: Any, a: Any) -> Any:
    delta *= a
    a *= -1
    a += 1
    delta *= a  # delta * a * (1 - a), with no temporary
    return delta


def _tanh(xp: Any, z: Any) -> Any:
    return xp.tanh(z)


def _tanh_prime(xp: Any, a: Any) -> Any:
    d = a * a
    d *= -1
    d += 1
    return d


def _tanh_backward(xp: Any, delta: Any, a: Any) -> Any:
    a *= a
    a *= -1
    a += 1
    delta *= a  # delta * (1 - a^2)
    return delta


def _relu(xp: Any, z: Any) -> Any:
    return xp.maximum(z, 0.0)


def _relu_prime(xp: Any, a: Any) -> Any:
    return xp.astype(a > 0, a.dtype)


def _relu_backward(xp: Any, delta: Any, a: Any) -> Any:
    # in place on delta; a cast + multiply measured 4x faster than xp.where here
    delta *= xp.astype(a > 0, a.dtype)
    return delta


def _leaky_relu(xp: Any, z: Any) -> Any:
    return xp.where(z > 0, z, z * LEAKY_SLOPE)


def _leaky_relu_prime(xp: Any, a: Any) -> Any:
    # a > 0 exactly where z > 0, so the output decides the branch
    d = xp.astype(a > 0, a.dtype)
    d *= 1 - LEAKY_SLOPE
    d += LEAKY_SLOPE
    return d


def _softplus(xp: Any, z: Any) -> Any:
    # log(1 + e^z) = max(z, 0) + log1p(e^-|z|): no overflow for large |z|
    return xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))


def _softplus_prime(xp: Any, a: Any) -> Any:
    # sigmoid(z) = 1 - e^-a, written without cancellation
    return -xp.expm1(-a)


def _exp(xp: Any, z: Any) -> Any:
    return xp.exp(z)


def _exp_prime(xp: Any, a: Any) -> Any:
    return a + 0  # d exp(z)/dz = exp(z), a private copy (callers scale it in place)


def _identity(xp: Any, z: Any) -> Any:
    return z


def _softmax(xp: Any, z: Any) -> Any:
    e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
    e /= xp.sum(e, axis=1, keepdims=True)
    return e


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(
        "sigmoid", _sigmoid, _sigmoid_prime, backward=_sigmoid_backward, overwrites_z=True
    ),
    "tanh": Activation("tanh", _tanh, _tanh_prime, backward=_tanh_backward),
    "relu": Activation("relu", _relu, _relu_prime, backward=_relu_backward),
    "leaky_relu": Activation("leaky_relu", _leaky_relu, _leaky_relu_prime),
    "softplus": Activation("softplus", _softplus, _softplus_prime),
    # the inverse of the Poisson loss's log link (its usual output)
    "exp": Activation("exp", _exp, _exp_prime),
    "identity": Activation("identity", _identity, None),
    "softmax": Activation("softmax", _softmax, None, output_only=True),
}
_ALIASES = {"logistic": "sigmoid", "linear": "identity"}


#: the built-in names (and aliases), which registration never replaces
BUILTIN = frozenset(ACTIVATIONS) | frozenset(_ALIASES)

_REGISTER_HOW = (
    "register it first with xbp.register_activation(name, forward, derivative) "
    "(see docs/custom.md, 'Your own activation and loss')"
)


def get_activation(name: str | Activation, *, argument: str = "activation") -> Activation:
    """Look an activation up by name (``"logistic"`` is an alias of ``"sigmoid"``).

    An :class:`Activation` object is accepted when it is the one registered
    under its name (models store activations by name, so an unregistered one
    could not be saved and loaded).
    """
    if isinstance(name, Activation):
        if ACTIVATIONS.get(name.name) is name:
            return name
        raise XbpValueError(
            f"{argument}=Activation({name.name!r}) is not registered; {_REGISTER_HOW}, "
            "then pass its name"
        )
    if isinstance(name, str):
        key = _ALIASES.get(name.lower(), name.lower())
        if key in ACTIVATIONS:
            return ACTIVATIONS[key]
    raise XbpValueError(
        f"{argument}={name!r} is not known; use one of "
        f"{sorted(ACTIVATIONS) + sorted(_ALIASES)}, or {_REGISTER_HOW}"
    )


def check_part_name(name: Any, kind: str, builtin: frozenset[str]) -> str:
    """A new part's name: a non-empty lower-case identifier that is not a built-in one."""
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise XbpValueError(
            f"name={name!r} is not a valid {kind} name; use a lower-case identifier such as "
            "'gelu' or 'huber'"
        )
    if name in builtin:
        raise XbpValueError(
            f"name={name!r} is a built-in {kind}; choose another name for your own {kind}"
        )
    return name


def probe_rule(
    xp: Any,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    shape: tuple[int, ...],
    *more: Any,
    may_write: bool = False,
) -> Any:
    """Call a user's rule on a small float64 array; one line when it misbehaves.

    The result must have ``shape`` (or one of the ``more`` shapes) and be finite,
    and the arguments must be left as they were: a rule that writes into its
    argument would corrupt arrays the backward pass still reads (``may_write``:
    a rule documented to overwrite its temporaries, as ``backward`` may).
    """
    before = [a + 0 for a in args]
    try:
        out = fn(xp, *args)
    except Exception as exc:
        raise XbpValueError(
            f"{fn.__name__} raised {type(exc).__name__}: {exc} on a {shape} float64 array; "
            "write it with the array namespace xp it receives (xp.exp, xp.tanh, ...)"
        ) from None
    for i, (old, new) in enumerate(zip(before, () if may_write else args)):
        if not bool(xp.all((old == new) | (old != old))):
            raise XbpValueError(
                f"{fn.__name__} modified its argument {i + 1} in place (e.g. z *= 2 or "
                "z[z < 0] = 0); xbp still reads it for the gradients: return a new array "
                "(z * 2, xp.where(z < 0, 0, z))"
            )
    if getattr(out, "shape", None) not in (shape, *more):
        raise XbpValueError(
            f"{fn.__name__} returned shape {getattr(out, 'shape', type(out).__name__)} for a "
            f"{shape} input; return an array of the input's shape"
        )
    if not bool(xp.all(xp.isfinite(out))):
        raise XbpValueError(
            f"{fn.__name__} returned NaN or Inf on a {shape} float64 array of moderate values; "
            "return finite numbers"
        )
    return out


def guard_rule(
    kind: str, name: str, fn: Callable[..., Any], *, copy: bool = True, per_row: bool = False
) -> Callable[..., Any]:
    """``fn`` with its failures on any backend turned into one line naming the part.

    ``copy``: the rule receives its own copies of the arrays (independent buffers), so
    one that writes into its argument anyway (on some values only, say) cannot corrupt
    what the backward pass reads. The result must keep the first argument's shape
    (``per_row``: or one value per row) and dtype.
    """
    rule = getattr(fn, "__name__", "rule")

    def guarded(xp: Any, *args: Any) -> Any:
        try:
            out = fn(xp, *(tuple(a + 0 for a in args) if copy else args))
        except XbpError:
            raise
        except Exception as exc:
            raise XbpValueError(
                f"{kind} {name!r} ({rule}) raised {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''} on the {xp.__name__} "
                "backend; write it with the array namespace xp it receives"
            ) from None
        lib = type(args[-1]).__module__.split(".")[0]
        if type(out).__module__.split(".")[0] != lib:
            raise XbpValueError(
                f"{kind} {name!r} ({rule}) returned a {type(out).__name__} for a "
                f"{lib} array on the {xp.__name__} backend; write it with the array namespace "
                "xp it receives"
            )
        like = args[0]
        if out.shape != like.shape and not (per_row and tuple(out.shape) == like.shape[:1]):
            raise XbpValueError(
                f"{kind} {name!r} ({rule}) returned shape {tuple(out.shape)} for inputs of "
                f"shape {tuple(like.shape)}; return an array of the input's shape"
                + (" (or one value per row)" if per_row else "")
            )
        if out.dtype != like.dtype:
            raise XbpValueError(
                f"{kind} {name!r} ({rule}) returned dtype {out.dtype} for {like.dtype} inputs; "
                "keep the input's dtype (build constants with xp.asarray(v, dtype=z.dtype) or "
                "use Python numbers)"
            )
        return out

    guarded.__name__ = rule
    return guarded


def register_activation(
    name: str,
    forward: Callable[[Any, Any], Any],
    derivative: Callable[[Any, Any], Any] | None,
    *,
    from_z: bool = False,
    backward: Callable[[Any, Any, Any], Any] | None = None,
) -> Activation:
    """Make your own activation usable by name everywhere xbp takes one.

    Networks store activations by name, so a model that uses it saves as usual
    and loads wherever the same name is registered again (loading it elsewhere
    is a one-line error naming the activation). Registering a name again
    replaces its rule (re-running a notebook cell works); built-in names are
    never replaced.

    Parameters
    ----------
    name : str
        A lower-case identifier that is not a built-in name.
    forward : callable
        ``forward(xp, z) -> a``, written with the array namespace ``xp`` it
        receives (so it runs on every backend); it must not modify ``z``.
    derivative : callable or None
        ``derivative(xp, a) -> phi'(z)`` written from the output ``a = phi(z)``
        (exact for invertible activations), or with ``from_z=True``
        ``derivative(xp, z)``. None means phi' = 1.
    from_z : bool
        The derivative needs ``z`` (GELU, swish): the network keeps the
        layer's ``Z`` for the backward pass.
    backward : callable, optional
        ``backward(xp, delta, a_or_z) -> delta * phi'``, which may overwrite
        both (temporary) arguments to save memory; used instead of
        ``derivative`` for hidden layers.

    Returns
    -------
    Activation
        The registered rule (also ``xbp.nn.activations.ACTIVATIONS[name]``).

    Examples
    --------
    softsign ``a = z / (1 + |z|)`` has ``phi' = (1 - |a|)^2``, exact from ``a``:

    >>> import xbp
    >>> _ = xbp.register_activation(
    ...     "softsign", lambda xp, z: z / (1 + xp.abs(z)), lambda xp, a: (1 - xp.abs(a)) ** 2
    ... )
    >>> xbp.nn.Dense(2, 3, "softsign").activation
    'softsign'
    """
    name = check_part_name(name, "activation", BUILTIN)
    for arg, fn in (("forward", forward), ("derivative", derivative), ("backward", backward)):
        if fn is not None and not callable(fn):
            raise XbpValueError(f"{arg} is a {type(fn).__name__}; pass a function of (xp, ...)")
    if forward is None:
        raise XbpValueError("forward is None; pass forward(xp, z) -> a")
    import array_api_compat.numpy as cnp  # the reference namespace for the check below
    import numpy as np

    z = np.asarray([[-2.0, -0.5, 0.0], [0.25, 1.0, 3.0]])
    a = probe_rule(cnp, forward, (z + 0,), z.shape)
    if derivative is not None:
        probe_rule(cnp, derivative, ((z if from_z else a) + 0,), z.shape)
        derivative = guard_rule("activation", name, derivative)
    if backward is not None:
        probe_rule(cnp, backward, (z * 0 + 0.5, (z if from_z else a) + 0), z.shape, may_write=True)
        backward = guard_rule("activation", name, backward, copy=False)  # may overwrite
    forward = guard_rule("activation", name, forward)
    act = Activation(name, forward, derivative, backward=backward, from_z=bool(from_z))
    ACTIVATIONS[name] = act
    return act
