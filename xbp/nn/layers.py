"""Layers as parts: each layer's backward rule sits beside its forward rule.

A layer is a small, immutable description (its widths and options; equal
descriptions compare and hash equal). Its values live in the network:
trainable parameters in ``net.params[l]`` and non-trainable state (running
statistics, adapted means) in ``net.state[l]``, both ``{name: array}``
mappings. :meth:`xbp.Network.value_and_grad` walks the chain forward and back
and is the one implementation of backpropagation (``docs/math.md``); each
layer only answers two questions:

``forward(ctx, p, s, a, l) -> (out, saved, new_state)``
    the layer's output for input ``a``; ``saved`` is what the backward rule
    needs, ``new_state`` the layer's updated non-trainable state in a training
    step (None when it has none to update).
``backward(ctx, p, saved, d, need_input) -> (d_in, grads)``
    from ``d = dC/d(out)``: ``dC/d(input)`` (None when ``need_input`` is
    False: the first layer's input is the data) and ``{name: dC/d(param)}``.

``ctx`` (:class:`Context`) says whether the pass trains (batch statistics,
dropout) or infers, the step's dropout key, the compute dtype, and how to sum
statistics over data-parallel processes.

A user's own layer is a subclass of :class:`Layer` with a ``kind`` name,
registered with :func:`register_layer`; it trains, saves and loads by name,
compiles and runs under MPI like the built-in ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import XbpError, XbpTypeError, XbpValueError
from .activations import Activation, get_activation
from .init import default_init, init_layer
from .rng import keep_mask
from .validate import check_int, check_number

__all__ = [
    "Context",
    "Layer",
    "Dense",
    "Dropout",
    "LayerNorm",
    "BatchNorm",
    "Standardize",
    "register_layer",
    "layer_from_config",
    "check_dropout",
]

Arrays = dict[str, Any]


@dataclass
class Context:
    """What a layer's rules may read during one pass.

    ``training``: batch statistics and dropout (a training step) or running
    statistics and no dropout (evaluation, prediction). ``key``: the step's
    dropout key, or None. ``dtype``: the network's dtype (parameters and their
    gradients); ``low``: the compute type under mixed precision (None: exact).
    ``ones(n)``: a ones vector of length n in the compute type (bias gradients
    as GEMVs). ``reduce``: sums a device array over data-parallel processes
    (global batch statistics), or None for one process. ``grad_ready``: the
    strategy's hook, called with each layer's fresh gradients.
    """

    xp: Any
    dtype: Any
    device: Any
    training: bool = False
    key: Any = None
    low: Any = None
    ones: Callable[[int], Any] = field(default=lambda n: None)
    reduce: Callable[[Any], Any] | None = None


def check_dropout(rate: Any, argument: str = "Dense.dropout") -> float:
    """A dropout rate (the probability of dropping an input) in [0, 1), or a one-line error."""
    rate = check_number(rate, argument, low=0.0, low_open=False, high=1.0, high_open=True)
    if round(rate * 2.0**32) >= 2**32:  # the mask's 32-bit threshold would keep nothing
        raise XbpValueError(
            f"{argument}={rate!r} drops every input (the keep probability rounds to 0); use a "
            "rate of at most 1 - 2**-31"
        )
    return rate


class Layer:
    """The base of every layer. Subclasses are frozen dataclasses with ``n_in``/``n_out``
    (or a width they share) and set ``kind``, the name files record.

    Override :meth:`param_shapes`, :meth:`state_shapes`, :meth:`init_params`,
    :meth:`init_state`, :meth:`forward`, :meth:`backward` and, for a layer whose
    width comes from the layer before it, :meth:`with_input`.

    ONNX export (:func:`xbp.io.onnx.export_onnx`) writes the built-in layers
    itself; a user's own layer exports when its class defines
    ``onnx(self, graph, src, params, state, index) -> str``, which adds the
    layer's inference nodes to ``graph`` (an :class:`xbp.io.onnx.OnnxGraph`:
    ``graph.constant(name, array)``, ``graph.node(op, inputs, **attributes)``)
    from the input tensor named ``src`` and the layer's parameters and state
    as NumPy arrays, and returns the output tensor's name. This module never
    imports onnx.

    Examples
    --------
    >>> import xbp
    >>> dense = xbp.nn.Dense(4, 3, "relu")
    >>> isinstance(dense, xbp.nn.Layer), dense.kind, dense.param_shapes()
    (True, 'dense', {'W': (4, 3), 'b': (3,)})
    >>> xbp.nn.BatchNorm(3).state_shapes()  # non-trainable state: running statistics
    {'mean': (3,), 'var': (3,)}

    :func:`xbp.register_layer` shows a complete layer of one's own.
    """

    kind: ClassVar[str] = ""
    #: the layer sums statistics over the whole (global) batch in training
    batch_statistics: ClassVar[bool] = False
    #: rate of the layer's dropout (0: none)
    dropout: float = 0.0

    n_in: int
    n_out: int

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Trainable parameters, ``{name: shape}`` (``"W"`` is weight-decayed)."""
        return {}

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Non-trainable state, ``{name: shape}`` (saved with the model)."""
        return {}

    def init_params(self, rng: np.random.Generator, init: str) -> dict[str, np.ndarray]:
        """Initial parameters on the host (float64), drawn from ``rng`` in layer order."""
        return {}

    def init_state(self) -> dict[str, np.ndarray]:
        """Initial state on the host (float64)."""
        return {}

    def with_input(self, n_in: int) -> Layer:
        """This layer placed after a layer of width ``n_in`` (checks, or infers, its width)."""
        if self.n_in != n_in:
            raise XbpValueError(
                f"{type(self).__name__}.n_in={self.n_in} does not match the width {n_in} "
                "before it; consecutive widths must chain"
            )
        return self

    def resolved(self) -> Layer:
        """A copy with its registered parts (activations) looked up now."""
        return self

    def forward(self, ctx: Context, p: Arrays, s: Arrays, a: Any, l: int) -> tuple[Any, Any, Any]:
        raise NotImplementedError

    def backward(
        self, ctx: Context, p: Arrays, saved: Any, d: Any, need_input: bool
    ) -> tuple[Any, Arrays]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-able description: ``{"kind": ..., **constructor arguments}``."""
        cfg = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return {"kind": self.kind, **cfg}

    def describe(self) -> str:
        """A short description for summaries."""
        return self.kind


def _cast(ctx: Context, a: Any, like: Any) -> Any:
    return a if a.dtype == like.dtype else ctx.xp.astype(a, like.dtype)


def _grads(ctx: Context, grads: Arrays) -> Arrays:
    """Gradients in the network's dtype (the optimizer and the reduction see it)."""
    if ctx.low is None:
        return grads
    return {k: ctx.xp.astype(g, ctx.dtype) for k, g in grads.items()}


@dataclass(frozen=True)
class Dense(Layer):
    """A fully connected layer ``a = phi(a_prev @ W + b)``.

    Parameters
    ----------
    n_in, n_out : int
        Input and output widths; ``W`` is ``(n_in, n_out)``.
    activation : str
        ``"sigmoid"`` (alias ``"logistic"``), ``"tanh"``, ``"relu"``,
        ``"leaky_relu"``, ``"softplus"``, ``"identity"``, ``"softmax"``
        (output layer only, with cross-entropy), or a name registered with
        :func:`xbp.register_activation`.
    dropout : float
        Inverted dropout on the layer's *input* during training (the same as a
        :class:`Dropout` layer just before it): each input value is zeroed with
        probability ``dropout`` and the others are scaled by ``1/(1 - dropout)``;
        backprop goes through the same mask. Evaluation and prediction never
        drop. In [0, 1); default 0 (off).

    Examples
    --------
    >>> import xbp
    >>> xbp.nn.Dense(2, 3, activation="tanh", dropout=0.5)
    Dense(n_in=2, n_out=3, activation='tanh', dropout=0.5)
    """

    kind: ClassVar[str] = "dense"

    n_in: int
    n_out: int
    activation: str = "sigmoid"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_in", check_int(self.n_in, "Dense.n_in"))
        object.__setattr__(self, "n_out", check_int(self.n_out, "Dense.n_out"))
        act = get_activation(self.activation)
        object.__setattr__(self, "activation", act.name)
        object.__setattr__(self, "dropout", check_dropout(self.dropout))
        object.__setattr__(self, "_act", act)

    @property
    def act(self) -> Activation:
        """The activation rule this layer was built with."""
        return self._act  # type: ignore[no-any-return,attr-defined]

    def resolved(self) -> Dense:
        return dataclasses.replace(self)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"W": (self.n_in, self.n_out), "b": (self.n_out,)}

    def init_params(self, rng: np.random.Generator, init: str) -> dict[str, np.ndarray]:
        scheme = default_init(self.activation) if init == "auto" else init
        w, b = init_layer(scheme, self.n_in, self.n_out, rng)
        return {"W": w, "b": b}

    def describe(self) -> str:
        return self.activation

    def affine(
        self, ctx: Context, p: Arrays, a: Any, l: int, last: bool = False
    ) -> tuple[Any, Any, Any]:
        """``(Z, A_in, mask)``: ``Z = (A_prev * mask) @ W + b``. Under mixed precision the
        product runs in the low type and the output layer's Z comes back in the
        network's dtype (the loss and softmax run there; docs/precision.md)."""
        xp = ctx.xp
        mask = None
        if self.dropout and ctx.key is not None:
            mask = keep_mask(
                xp, ctx.key, l, (a.shape[0], self.n_in), self.dropout, a.dtype, ctx.device
            )
            a = a * mask  # inverted dropout of the layer's input
        if ctx.low is None:
            z = a @ p["W"]
            z += p["b"]
        else:
            z = a @ xp.astype(p["W"], ctx.low)
            if last:
                z = xp.astype(z, ctx.dtype) + p["b"]
            else:
                z += xp.astype(p["b"], ctx.low)
        return z, a, mask

    def forward(self, ctx: Context, p: Arrays, s: Arrays, a: Any, l: int) -> tuple[Any, Any, Any]:
        z, a_in, mask = self.affine(ctx, p, a, l)
        act = self._act  # type: ignore[attr-defined]
        out = act.forward(ctx.xp, z)  # may overwrite z (overwrites_z): z is a temporary
        return out, (a_in, out, z if act.from_z else None, mask), None

    def backward(
        self, ctx: Context, p: Arrays, saved: Any, d: Any, need_input: bool
    ) -> tuple[Any, Arrays]:
        """From ``d = dC/dA``: ``delta = dC/dZ = d * phi'(Z)`` first."""
        a_in, out, z, mask = saved
        act = self._act  # type: ignore[attr-defined]
        src = z if act.from_z else out
        if act.backward is not None:
            d = act.backward(ctx.xp, d, src)  # A (Z) is not needed after this: reused
        elif act.derivative is not None:
            d *= act.derivative(ctx.xp, src)
        return self.backward_z(ctx, p, (a_in, mask), d, need_input)

    def backward_z(
        self, ctx: Context, p: Arrays, saved: Any, delta: Any, need_input: bool
    ) -> tuple[Any, Arrays]:
        """From ``delta = dC/dZ``: ``dC/dW = A_in^T delta``, ``dC/db = sum_rows delta``
        and ``dC/dA_prev = (delta W^T) * mask``."""
        a_in, mask = saved
        # dC/db = sum over rows of delta, as a GEMV with ones: BLAS beats a strided
        # reduction at every size measured (2.3 vs 2.6 us at 4x4, 0.43 vs 1.9 ms at 1024x4096)
        grads = {"W": a_in.T @ delta, "b": ctx.ones(delta.shape[0]) @ delta}
        if ctx.low is not None:
            grads = _grads(ctx, grads)
        if not need_input:
            return None, grads
        w = p["W"] if ctx.low is None else ctx.xp.astype(p["W"], ctx.low)
        d = delta @ w.T
        if mask is not None:
            d *= mask  # dC/dA = dC/d(A * m) * m: the same mask
        return d, grads


class _SameWidth(Layer):
    """A layer whose output has its input's width ``n`` (a dataclass field)."""

    n: int

    @property
    def n_in(self) -> int:  # type: ignore[override]
        return self.n

    @property
    def n_out(self) -> int:  # type: ignore[override]
        return self.n


class _ScaleShift(_SameWidth):
    """A normalisation with a learnable per-feature scale ``gamma`` (1) and shift
    ``beta`` (0)."""

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"gamma": (self.n,), "beta": (self.n,)}

    def init_params(self, rng: np.random.Generator, init: str) -> dict[str, np.ndarray]:
        return {"gamma": np.ones(self.n), "beta": np.zeros(self.n)}


@dataclass(frozen=True)
class Dropout(_SameWidth):
    """Inverted dropout: in training each value is zeroed with probability ``rate`` and
    the others scaled by ``1/(1 - rate)``; evaluation and prediction pass values through.

    The mask comes from :mod:`xbp.nn.rng` (a counter-based hash of the seed, the
    step, the layer's position and the element), so a seed gives the same
    masks on every backend. Its width is the previous layer's.

    Examples
    --------
    >>> import xbp
    >>> net = xbp.Network([xbp.nn.Dense(4, 8, "relu"), xbp.nn.Dropout(0.5),
    ...                    xbp.nn.Dense(8, 2, "softmax")],
    ...                   loss="cross_entropy")
    >>> net.layers[1]
    Dropout(rate=0.5, n=8)
    """

    kind: ClassVar[str] = "dropout"

    rate: float
    n: int = 0  # set from the layer before it

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", check_dropout(self.rate, "Dropout.rate"))
        if self.n:
            object.__setattr__(self, "n", check_int(self.n, "Dropout.n"))

    @property
    def dropout(self) -> float:  # type: ignore[override]
        return self.rate

    def with_input(self, n_in: int) -> Dropout:
        if self.n and self.n != n_in:
            return super().with_input(n_in)  # type: ignore[return-value]
        return dataclasses.replace(self, n=n_in)

    def describe(self) -> str:
        return f"dropout {self.rate:g}"

    def forward(self, ctx: Context, p: Arrays, s: Arrays, a: Any, l: int) -> tuple[Any, Any, Any]:
        if ctx.key is None or not self.rate:
            return a, None, None
        mask = keep_mask(ctx.xp, ctx.key, l, (a.shape[0], self.n), self.rate, a.dtype, ctx.device)
        return a * mask, mask, None

    def backward(
        self, ctx: Context, p: Arrays, saved: Any, d: Any, need_input: bool
    ) -> tuple[Any, Arrays]:
        if not need_input:
            return None, {}
        return (d if saved is None else d * saved), {}


def _row_stats(xp: Any, a: Any, axis: int) -> tuple[Any, Any]:
    mean = xp.mean(a, axis=axis, keepdims=True)
    c = a - mean
    return c, xp.mean(c * c, axis=axis, keepdims=True)


@dataclass(frozen=True)
class LayerNorm(_ScaleShift):
    """Per-row normalisation with a learnable scale and shift:
    ``y = gamma * (a - mean_row) / sqrt(var_row + eps) + beta`` (means over features).

    Examples
    --------
    >>> import xbp
    >>> xbp.nn.LayerNorm(16).param_shapes()
    {'gamma': (16,), 'beta': (16,)}
    """

    kind: ClassVar[str] = "layer_norm"

    n: int
    eps: float = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", check_int(self.n, "LayerNorm.n"))
        object.__setattr__(self, "eps", check_number(self.eps, "LayerNorm.eps"))

    def describe(self) -> str:
        return "layer norm"

    def forward(self, ctx: Context, p: Arrays, s: Arrays, a: Any, l: int) -> tuple[Any, Any, Any]:
        xp = ctx.xp
        c, var = _row_stats(xp, a, 1)
        inv = 1.0 / xp.sqrt(var + self.eps)
        x_hat = c * inv
        gamma = _cast(ctx, p["gamma"], a)
        return gamma * x_hat + _cast(ctx, p["beta"], a), (x_hat, inv, gamma), None

    def backward(
        self, ctx: Context, p: Arrays, saved: Any, d: Any, need_input: bool
    ) -> tuple[Any, Arrays]:
        xp = ctx.xp
        x_hat, inv, gamma = saved
        ones = ctx.ones(d.shape[0])
        grads = _grads(ctx, {"gamma": ones @ (d * x_hat), "beta": ones @ d})
        if not need_input:
            return None, grads
        g = d * gamma  # dC/dx_hat
        mean_g = xp.mean(g, axis=1, keepdims=True)
        mean_gx = xp.mean(g * x_hat, axis=1, keepdims=True)
        return inv * (g - mean_g - x_hat * mean_gx), grads


@dataclass(frozen=True)
class BatchNorm(_ScaleShift):
    """Batch normalisation: ``y = gamma * (a - mean) / sqrt(var + eps) + beta`` with
    the batch's per-feature mean and (biased) variance in training and the running
    statistics in inference (evaluation, prediction, validation).

    After each training step ``running = momentum * running + (1 - momentum) *
    batch`` (Keras' convention and defaults). Under data parallelism the
    statistics are those of the *global* batch (summed over processes), so N
    processes train exactly what one does. The running statistics are saved
    with the model and restored on resume. Row weights (``sample_weight``) weigh
    the loss, not the batch statistics (as in Keras and PyTorch).

    Examples
    --------
    >>> import xbp
    >>> xbp.nn.BatchNorm(16).state_shapes()
    {'mean': (16,), 'var': (16,)}
    """

    kind: ClassVar[str] = "batch_norm"
    batch_statistics: ClassVar[bool] = True

    n: int
    momentum: float = 0.99
    eps: float = 1e-3

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", check_int(self.n, "BatchNorm.n"))
        object.__setattr__(
            self,
            "momentum",
            check_number(self.momentum, "BatchNorm.momentum", low=0.0, low_open=False, high=1.0),
        )
        object.__setattr__(self, "eps", check_number(self.eps, "BatchNorm.eps"))

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"mean": (self.n,), "var": (self.n,)}

    def init_state(self) -> dict[str, np.ndarray]:
        return {"mean": np.zeros(self.n), "var": np.ones(self.n)}

    def describe(self) -> str:
        return "batch norm"

    def _global_mean(self, ctx: Context, total: Any, rows: int) -> Any:
        """``total / rows`` over the global batch: ``total`` (this process's column sums)
        and the row count summed over processes first, in one reduction.

        A process with no rows of the batch (an uneven share) sends zeros and divides
        by the global count like the others; the global batch is never empty. Alone,
        an empty batch has mean 0 (no division by zero)."""
        if ctx.reduce is None:
            return total / max(rows, 1)
        xp = ctx.xp
        count = xp.full((1,), float(rows), dtype=total.dtype, device=ctx.device)
        both = ctx.reduce(xp.concat([total, count]))
        return both[:-1] / both[-1]

    def forward(self, ctx: Context, p: Arrays, s: Arrays, a: Any, l: int) -> tuple[Any, Any, Any]:
        xp = ctx.xp
        gamma, beta = _cast(ctx, p["gamma"], a), _cast(ctx, p["beta"], a)
        if not ctx.training:  # the running statistics: constants of the pass
            inv = 1.0 / xp.sqrt(_cast(ctx, s["var"], a) + self.eps)
            x_hat = (a - _cast(ctx, s["mean"], a)) * inv
            return gamma * x_hat + beta, (x_hat, inv, gamma, False), None
        rows = int(a.shape[0])
        ones = ctx.ones(rows)
        mean = self._global_mean(ctx, ones @ a, rows)
        c = a - mean
        var = self._global_mean(ctx, ones @ (c * c), rows)
        inv = 1.0 / xp.sqrt(var + self.eps)
        x_hat = c * inv
        m = self.momentum
        new_state = {
            "mean": m * s["mean"] + (1 - m) * _cast(ctx, mean, s["mean"]),
            "var": m * s["var"] + (1 - m) * _cast(ctx, var, s["var"]),
        }
        return gamma * x_hat + beta, (x_hat, inv, gamma, True), new_state

    def backward(
        self, ctx: Context, p: Arrays, saved: Any, d: Any, need_input: bool
    ) -> tuple[Any, Arrays]:
        x_hat, inv, gamma, batch = saved
        rows = int(d.shape[0])
        ones = ctx.ones(rows)
        sum_d, sum_dx = ones @ d, ones @ (d * x_hat)
        # this process's sums: the strategy adds the processes' parameter gradients
        grads = _grads(ctx, {"gamma": sum_dx, "beta": sum_d})
        if not need_input:
            return None, grads
        if not batch:  # inference statistics do not depend on the input: dC/dx = gamma inv d
            return (gamma * inv) * d, grads
        # dC/dx = gamma inv (d - mean(d) - x_hat mean(d x_hat)), means over the global batch
        xp = ctx.xp
        both = self._global_mean(ctx, xp.concat([sum_d, sum_dx]), rows)
        n = self.n
        return (gamma * inv) * (d - both[:n] - x_hat * both[n:]), grads


@dataclass(frozen=True)
class Standardize(_SameWidth):
    """Input standardisation inside the model (Keras' ``Normalization``):
    ``y = (a - mean) / std``, with ``mean`` and ``std`` non-trainable state adapted
    from training data (:meth:`xbp.Network.adapt`; :func:`xbp.fit` adapts a layer that
    has not been adapted yet from the training rows). A feature with zero spread is
    divided by 1. Saved with the model, so ``predict`` takes raw data and an ONNX
    export keeps the scaling in its graph.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> net = xbp.Network([xbp.nn.Standardize(2), xbp.nn.Dense(2, 1, "identity")])
    >>> net.adapt(np.array([[0.0, 10.0], [2.0, 30.0]]))
    >>> net.host_state()[0]["mean"].tolist(), net.host_state()[0]["std"].tolist()
    ([1.0, 20.0], [1.0, 10.0])
    """

    kind: ClassVar[str] = "standardize"

    n: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", check_int(self.n, "Standardize.n"))

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"mean": (self.n,), "std": (self.n,), "count": (1,)}

    def init_state(self) -> dict[str, np.ndarray]:
        return {"mean": np.zeros(self.n), "std": np.ones(self.n), "count": np.zeros(1)}

    def describe(self) -> str:
        return "standardize"

    @staticmethod
    def statistics(x: Any) -> dict[str, np.ndarray]:
        """``mean``, ``std`` (1 where a feature does not vary) and ``count`` of host rows
        ``x``, accumulated in float64 a block at a time (memory maps stay bounded)."""
        n = int(x.shape[0])
        if n == 0:
            raise XbpValueError("Standardize: no rows to adapt from; pass training data")
        total = np.zeros(x.shape[1])
        for s in range(0, n, 65536):
            total += np.asarray(x[s : s + 65536], dtype=np.float64).sum(axis=0)
        mean = total / n
        sq = np.zeros(x.shape[1])
        for s in range(0, n, 65536):
            c = np.asarray(x[s : s + 65536], dtype=np.float64) - mean
            sq += (c * c).sum(axis=0)
        with np.errstate(over="ignore", invalid="ignore"):
            std = np.sqrt(sq / n)
        bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))
        if bad.size:
            raise XbpValueError(
                f"Standardize: feature column {int(bad[0])} cannot be standardised: its values "
                "overflow float64 when squared; rescale that column first (or build the "
                "network without standardize)"
            )
        std[std == 0] = 1.0
        return {"mean": mean, "std": std, "count": np.array([float(n)])}

    def forward(self, ctx: Context, p: Arrays, s: Arrays, a: Any, l: int) -> tuple[Any, Any, Any]:
        std = _cast(ctx, s["std"], a)
        return (a - _cast(ctx, s["mean"], a)) / std, std, None

    def backward(
        self, ctx: Context, p: Arrays, saved: Any, d: Any, need_input: bool
    ) -> tuple[Any, Arrays]:
        return (d / saved if need_input else None), {}


_BUILTIN: dict[str, type[Layer]] = {
    cls.kind: cls for cls in (Dense, Dropout, LayerNorm, BatchNorm, Standardize)
}
_REGISTERED: dict[str, type[Layer]] = {}


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Register a user's own layer class by its ``kind`` (usable as a decorator).

    The class subclasses :class:`Layer` as a frozen dataclass whose fields are
    JSON-able (they are its config), and implements ``forward`` and
    ``backward`` against the array API (``ctx.xp``). Registered, it trains,
    saves and loads by name (register it again before loading), compiles and
    runs under MPI. Registering a name again replaces the rule; networks built
    afterwards use the new one. It exports to ONNX when the class defines an
    ``onnx`` method (see :class:`Layer` and :class:`xbp.io.onnx.OnnxGraph`).

    Examples
    --------
    >>> import dataclasses, xbp
    >>> @xbp.register_layer
    ... @dataclasses.dataclass(frozen=True)
    ... class Scale(xbp.nn.Layer):
    ...     kind = "scale_by_two"
    ...     n: int
    ...     n_in = property(lambda self: self.n)
    ...     n_out = property(lambda self: self.n)
    ...     def forward(self, ctx, p, s, a, l):
    ...         return 2.0 * a, None, None
    ...     def backward(self, ctx, p, saved, d, need_input):
    ...         return (2.0 * d if need_input else None), {}
    >>> net = xbp.Network([Scale(2), xbp.nn.Dense(2, 1, "identity")])
    >>> Scale(2).config()
    {'kind': 'scale_by_two', 'n': 2}
    """
    if not isinstance(cls, type) or not issubclass(cls, Layer):
        raise XbpTypeError(
            f"register_layer takes a subclass of xbp.nn.Layer, not {cls!r}; subclass xbp.nn.Layer "
            "as a frozen dataclass"
        )
    kind = getattr(cls, "kind", "")
    if not isinstance(kind, str) or not kind.isidentifier():
        raise XbpValueError(
            f"{cls.__name__}.kind={kind!r}; give the class a kind name such as 'my_layer'"
        )
    if kind in _BUILTIN:
        raise XbpValueError(f"layer kind {kind!r} is built in; choose another kind name")
    if not dataclasses.is_dataclass(cls):
        raise XbpTypeError(
            f"{cls.__name__} is not a dataclass; decorate it with "
            "@dataclasses.dataclass(frozen=True) so its fields are its config"
        )
    if not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        # compiled steps are cached by the layers themselves: they must hash
        raise XbpTypeError(
            f"{cls.__name__} is a dataclass that is not frozen; decorate it with "
            "@dataclasses.dataclass(frozen=True) (a layer is an immutable description)"
        )
    _guard_layer(cls)
    _REGISTERED[kind] = cls
    return cls


#: the guarded forward/backward functions, so registering a class again wraps nothing twice
_GUARDED: set[Callable[..., Any]] = set()


def _guard_layer(cls: type[Layer]) -> None:
    """Wrap a registered class's ``forward``/``backward`` (once): each runs on its own copy
    of the incoming array (the first layer's input may be the user's own array, which a
    rule writing in place would change), and what they return is checked against the
    layer's widths and the batch's dtype, in one line naming the layer."""
    fwd, bwd = cls.forward, cls.backward
    if fwd in _GUARDED and bwd in _GUARDED:
        return

    def fail(self: Layer, rule: str, what: str) -> XbpValueError:
        return XbpValueError(f"layer {self.kind!r} ({type(self).__name__}.{rule}) {what}")

    def call(self: Layer, rule: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(self, *args)
        except XbpError:
            raise
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise fail(self, rule, f"raised {type(exc).__name__}: {first}") from None

    def check(self: Layer, rule: str, out: Any, shape: tuple[int, ...], like: Any) -> None:
        got = getattr(out, "shape", None)
        if got is None or tuple(got) != shape:
            raise fail(
                self,
                rule,
                f"returned {'shape ' + str(tuple(got)) if got is not None else type(out).__name__}"
                f" where {shape} was due; return an array of that shape",
            )
        if out.dtype != like.dtype:
            raise fail(
                self, rule, f"returned dtype {out.dtype} for {like.dtype} inputs; keep their dtype"
            )

    def forward(self: Layer, ctx: Context, p: Arrays, s: Arrays, a: Any, l: int) -> Any:
        result = call(self, "forward", fwd, ctx, p, s, a + 0, l)
        if not (isinstance(result, tuple) and len(result) == 3):
            raise fail(self, "forward", "must return (output, saved, new_state)")
        check(self, "forward", result[0], (a.shape[0], self.n_out), a)
        return result

    def backward(self: Layer, ctx: Context, p: Arrays, saved: Any, d: Any, need_input: bool) -> Any:
        result = call(self, "backward", bwd, ctx, p, saved, d, need_input)
        if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)):
            raise fail(self, "backward", "must return (dC/dinput or None, {param: gradient})")
        d_in, grads = result
        if need_input:
            check(self, "backward", d_in, (d.shape[0], self.n_in), d)
        if set(grads) != set(p):
            raise fail(
                self, "backward", f"returned gradients {sorted(grads)} for parameters {sorted(p)}"
            )
        for k, g in grads.items():
            check(self, "backward", g, tuple(p[k].shape), p[k])
        return result

    _GUARDED.update((forward, backward))
    forward.__doc__, backward.__doc__ = fwd.__doc__, bwd.__doc__
    cls.forward = forward  # type: ignore[method-assign]
    cls.backward = backward  # type: ignore[method-assign]


def unregister_layer(kind: str) -> None:
    """Forget a registered layer kind (tests; a built-in kind cannot be removed)."""
    _REGISTERED.pop(kind, None)


def layer_types() -> dict[str, type[Layer]]:
    """Every layer kind this process knows, built in and registered."""
    return {**_BUILTIN, **_REGISTERED}


def layer_from_config(cfg: Any, argument: str = "layer") -> Layer:
    """A layer from :meth:`Layer.config`'s dict, or a one-line error naming ``argument``."""
    if not isinstance(cfg, dict) or "kind" not in cfg:
        raise XbpValueError(f"{argument} is not a layer config {{'kind': ..., ...}}: {cfg!r}")
    args = dict(cfg)
    kind = args.pop("kind")
    cls = layer_types().get(kind)
    if cls is None:
        raise XbpValueError(
            f"{argument} needs the layer kind {kind!r}, which is not registered in this "
            "process; run xbp.register_layer(YourLayer) with the same class first"
        )
    try:
        return cls(**args)
    except TypeError as exc:
        raise XbpValueError(f"{argument}: {kind} does not take {args!r} ({exc})") from None
