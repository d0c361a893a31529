"""Fully connected networks and the explicit backpropagation pass.

The forward and backward passes are written once against the array API
standard, in the notation of ``docs/math.md``::

    Z_l = A_{l-1} @ W_l + b_l,       A_l = phi_l(Z_l)
    delta_L = dC/dA_L * phi_L'(Z_L)  (or (A_L - Y)/n when fused)
    delta_l = (delta_{l+1} @ W_{l+1}^T) * phi_l'(Z_l)
    dC/dW_l = A_{l-1}^T @ delta_l,   dC/db_l = sum_rows(delta_l)
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..backends import MIXED_PRECISIONS
from ..backends.select import Backend
from ..backends.select import backend as resolve_backend
from ..errors import XbpTypeError, XbpValueError, arg
from .activations import get_activation
from .init import INITS
from .layers import (
    BatchNorm,
    Context,
    Dense,
    Dropout,
    Layer,
    LayerNorm,
    Standardize,
    check_dropout,
    layer_from_config,
)
from .losses import TARGET_RULES, Loss, check_pair, check_target_range, default_output, get_loss
from .summary import summarize
from .targets import encode_labels
from .validate import (
    as_features,
    as_targets,
    check_int,
    check_memory,
    dtype_limit,
    is_host_array,
)
from .weights import check_sample_weight

__all__ = [
    "Dense",
    "Layer",
    "Network",
    "check_dropout",
    "StepResult",
    "count_correct",
    "epoch_summary",
    "mlp",
    "no_caches",
]

Params = list[dict[str, Any]]

#: Rows per forward pass when evaluating (bounded memory on large inputs).
EVAL_BATCH = 8192

#: Mixed precision policies: products in bfloat16/float16, float32 master weights.
MIXED = tuple(MIXED_PRECISIONS)  # the mixed-precision policies the seam knows
#: Matrix-product policies (see Network's ``precision``).
PRECISIONS = ("exact", "tf32", *MIXED)
#: Policies whose training steps scale the loss (see :class:`xbp.train.loop.LossScaler`).
LOSS_SCALED = ("fp16",)

_NO_CACHES: contextvars.ContextVar[bool] = contextvars.ContextVar("xbp_no_caches", default=False)


@contextlib.contextmanager
def no_caches() -> Iterator[None]:
    """Within this block the network caches nothing (compiled steps trace under it)."""
    token = _NO_CACHES.set(True)
    try:
        yield
    finally:
        _NO_CACHES.reset(token)


def count_correct(xp: Any, out: Any, labels: Any, w: Any = None) -> Any:
    """How many rows of the output ``out`` predict their class label (a 0-d device array);
    with row weights ``w`` ``(rows,)``, the sum of the weights of those rows."""
    if out.shape[1] == 1:
        pred = xp.astype(out[:, 0] > 0.5, labels.dtype)
    else:
        pred = xp.astype(xp.argmax(out, axis=1), labels.dtype)
    hit = xp.astype(pred == labels, out.dtype)
    return xp.sum(hit) if w is None else xp.sum(hit * w)


def epoch_summary(xp: Any, params: Params, out: dict[str, Any]) -> Any:
    """One vector for the epoch's single read: per-step costs, correct counts (when
    labels apply) and a sum over all weights (``params``; the trainer passes the layers'
    state too), so NaN/Inf anywhere makes it non-finite.

    An eager epoch stacks it in one call and a compiled epoch builds it inside its own
    graph (``out["summary"]``, returned as it is)."""
    if out.get("summary") is not None:
        return out["summary"]
    parts = [out["costs"]]
    if out["corrects"] is not None:
        parts.append(out["corrects"])
    parts.append(xp.reshape(weight_sum(xp, params), (1,)))
    return xp.concat(parts)


def weight_sum(xp: Any, params: Params) -> Any:
    """The sum of every value of ``params`` (0-d): finite only when all of them are."""
    sums = [xp.sum(v) for p in params for v in p.values()]
    return sum(sums[1:], sums[0])


class StepResult(NamedTuple):
    """What :meth:`Network.value_and_grad` returns.

    Examples
    --------
    >>> import xbp
    >>> net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    >>> x, y = xbp.data.make_xor()
    >>> result = net.value_and_grad(net.check_inputs(x), net.check_targets(y, 4))
    >>> round(float(result.loss), 4), len(result.grads), result.output.shape
    (0.7186, 2, (4, 1))
    """

    loss: Any
    grads: Params
    output: Any


class Network:
    """A chain of layers, a loss, and the layers' parameters and state on one backend.

    Parameters
    ----------
    layers : sequence of Layer
        :class:`Dense` layers, and between them any of :class:`Dropout`,
        :class:`LayerNorm`, :class:`BatchNorm`, :class:`Standardize` or a layer
        registered with :func:`xbp.register_layer`. Consecutive widths must
        chain (``layers[i].n_out == layers[i+1].n_in``; a :class:`Dropout` takes
        the width before it); the last layer is a :class:`Dense` (its activation
        pairs with the loss).
    loss : str
        ``"quadratic"`` (alias ``"mse"``), ``"cross_entropy"`` (softmax output),
        ``"binary_cross_entropy"`` (sigmoid output), or a name registered with
        :func:`xbp.register_loss`.
    backend, device
        Where the parameters live; see :func:`xbp.backends.select`. Default: the
        current default backend (NumPy on the CPU).
    dtype : str or dtype
        ``"float32"`` or ``"float64"`` (default).
    seed : int
        Seeds the host generator that draws the initial weights, so the same
        seed gives bit-identical weights on every backend.
    init : str
        ``"auto"`` (He for rectifiers, Glorot uniform otherwise), ``"nielsen"``,
        ``"glorot_uniform"``, ``"glorot_normal"``, ``"he_normal"``, ``"lecun_normal"``.
    precision : str
        How matrix products run: ``"exact"`` (default: IEEE products in the
        network's dtype on every backend, whatever the library's global
        settings, e.g. JAX's TF32 default on NVIDIA GPUs) or ``"tf32"``
        (TensorFloat-32 products on NVIDIA GPUs with torch or JAX; an error
        elsewhere), or mixed precision ``"bf16"``/``"fp16"``: matrix products
        and hidden activations in bfloat16/float16, while the parameters, the
        optimizer state, the gradients handed to the optimizer, the output
        layer, softmax and the loss stay in ``dtype`` (torch and JAX; CuPy
        fp16 only; an error naming the alternatives elsewhere). ``"fp16"``
        training scales the loss dynamically. Saved with the model; see
        ``docs/precision.md``.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> net = xbp.Network([xbp.nn.Dense(2, 3, "tanh"), xbp.nn.Dense(3, 1, "sigmoid")],
    ...                   loss="binary_cross_entropy", seed=0)
    >>> loss, grads = net.backprop(np.zeros((4, 2)), np.ones((4, 1)))
    >>> grads[0]["W"].shape, grads[1]["b"].shape
    ((2, 3), (1,))
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        loss: str = "quadratic",
        *,
        backend: Any = None,
        device: Any = None,
        dtype: Any = "float64",
        seed: int | None = 0,
        init: str = "auto",
        precision: str = "exact",
        classes: Sequence[Any] | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> None:
        layers = list(layers) if not isinstance(layers, Layer) else [layers]
        if not layers:
            raise XbpValueError("layers is empty; pass at least one xbp.nn.Dense layer")
        chained: list[Layer] = []
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise XbpTypeError(
                    f"layers[{i}] is a {type(layer).__name__}; pass xbp.nn.Dense(n_in, n_out, ...) "
                    "or another xbp.nn.Layer"
                )
            try:  # compiled steps are cached by the layers themselves (Network.parts)
                hash(layer)
            except TypeError:
                raise XbpTypeError(
                    f"layers[{i}] is a {type(layer).__name__} that cannot be hashed; make it a "
                    "@dataclasses.dataclass(frozen=True), as every xbp.nn.Layer is"
                ) from None
            if i:
                try:
                    layer = layer.with_input(chained[-1].n_out)
                except XbpValueError:
                    raise XbpValueError(
                        f"layers[{i}].n_in={layer.n_in} does not match layers[{i - 1}].n_out="
                        f"{chained[-1].n_out}; consecutive widths must chain"
                    ) from None
            elif not layer.n_in:
                raise XbpValueError(
                    f"layers[0] is a {type(layer).__name__} without a width; put a layer with "
                    "n_in first, or give it its width"
                )
            if isinstance(layer, Dense) and layer.activation == "softmax" and i != len(layers) - 1:
                raise XbpValueError(
                    f"layers[{i}] uses softmax, which is an output activation only; "
                    "use it on the last layer with loss='cross_entropy'"
                )
            chained.append(layer.resolved())
        if not isinstance(chained[-1], Dense):
            raise XbpValueError(
                f"the last layer is a {type(chained[-1]).__name__}; end the network with an "
                "xbp.nn.Dense layer (its activation pairs with the loss)"
            )
        self.layers: tuple[Layer, ...] = tuple(chained)
        self._dropout = tuple(d.dropout for d in chained)
        self.loss: Loss = get_loss(loss)
        self._output: Dense = chained[-1]
        check_pair(self.loss, self._output.act)
        if self._output.act.name == "softmax" and self._output.n_out < 2:
            raise XbpValueError(
                "a softmax output layer with 1 unit always outputs 1.0; use 2 or more units "
                "(one per class), or a sigmoid output with loss='binary_cross_entropy'"
            )
        if init != "auto" and init not in INITS:
            raise XbpValueError(f"init={init!r} is not known; use 'auto' or one of {list(INITS)}")
        self.init = init
        self.classes = classes  # checked against the output width by the setter
        self.feature_names = feature_names
        self.backend: Backend = resolve_backend(backend, device)
        self.precision = precision  # checked against the backend by the setter
        self.seed = None if seed is None else check_int(seed, "seed", low=0)
        self.dtype = self.backend.dtype(dtype)
        # the weights are drawn on the host in float64: refuse sizes no memory could hold
        # before drawing (Python integers: no overflow)
        count = sum(
            math.prod(shape)
            for layer in chained
            for shape in (*layer.param_shapes().values(), *layer.state_shapes().values())
        )
        check_memory(
            8 * count,
            f"a network of {count:,} parameters ({' -> '.join(str(d.n_in) for d in chained)} "
            f"-> {chained[-1].n_out})",
            "use smaller layers",
        )
        rng = np.random.default_rng(seed)
        host = [layer.init_params(rng, init) for layer in chained]
        self._params: Params = self._to_device(host, "params")
        self._state: Params = self._to_device(
            [layer.init_state() for layer in chained], "state", "state_shapes"
        )

    # -- structure -----------------------------------------------------
    @property
    def precision(self) -> str:
        """The matrix-product policy (``"exact"``, ``"tf32"``, ``"bf16"``, ``"fp16"``);
        see the class docstring."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in PRECISIONS:
            raise XbpValueError(
                f"{arg('precision', value)} is not known; use one of {list(PRECISIONS)}"
            )
        self.backend.precision_scope(value)  # refuses a policy the device cannot run
        # the low-precision dtype of a mixed policy (refused where the library has none);
        # None keeps the exact path free of casts
        low = None
        if value in MIXED:
            low = self.backend.library.mixed_dtype(value, self.backend.device)
        self._precision = value
        self._low = low
        self._contexts: dict[bool, Context] = {}  # the common contexts of this policy
        # inputs beyond the low type's range would enter the first product as Inf
        self._low_limit: tuple[float, str] | None = (
            None
            if low is None
            else (float(self.backend.xp.finfo(low).max), f"{value} ({MIXED_PRECISIONS[value]})")
        )

    @property
    def xp(self) -> Any:
        return self.backend.xp

    @property
    def device(self) -> Any:
        return self.backend.device

    @property
    def sizes(self) -> list[int]:
        return [self.layers[0].n_in] + [d.n_out for d in self.layers]

    @property
    def n_in(self) -> int:
        return self.layers[0].n_in

    @property
    def dropout(self) -> tuple[float, ...]:
        """Each layer's dropout rate (0 where it does not drop): a :class:`Dense`
        layer's input dropout or a :class:`Dropout` layer's rate."""
        return self._dropout

    @property
    def plain(self) -> bool:
        """Whether every layer is a :class:`Dense` (the classic multilayer perceptron)."""
        return all(isinstance(d, Dense) for d in self.layers)

    @property
    def batch_statistics(self) -> bool:
        """Whether a layer normalises by batch statistics in training (BatchNorm)."""
        return any(d.batch_statistics for d in self.layers)

    @property
    def n_out(self) -> int:
        return self.layers[-1].n_out

    def parts(self) -> tuple[Any, ...]:
        """What the kernel computes from, as the objects themselves (hashable): the
        layers, the activation and loss objects (a part registered again under the
        same name is a different object), dtype, precision, backend and device.
        Compiled steps are cached by it (:class:`xbp.train.step.Step`)."""
        return (
            self.layers,
            tuple(d.act for d in self.layers if isinstance(d, Dense)),
            self.loss,
            self.backend.dtype_name(self.dtype),
            self._precision,
            self.backend.name,
            str(self.device),
        )

    def config(self) -> dict[str, Any]:
        """The architecture as plain JSON-able data (saved beside the weights).

        A network of :class:`Dense` layers only is written as ``[[n_in, n_out,
        activation], ...]`` (with ``"dropout"`` rates where a layer drops), as
        every xbp so far wrote it; any other is a list of :meth:`Layer.config`
        dicts."""
        if self.plain:
            layers: list[Any] = [[d.n_in, d.n_out, d.activation] for d in self.layers]  # type: ignore[attr-defined]
            extra = {"dropout": list(self.dropout)} if any(self.dropout) else {}
        else:
            layers, extra = [d.config() for d in self.layers], {}
        return {
            "layers": layers,
            "loss": self.loss.name,
            "dtype": self.backend.dtype_name(self.dtype),
            "init": self.init,
            "precision": self.precision,
            "seed": self.seed,
            **extra,
            **({"classes": list(self.classes)} if self.classes is not None else {}),
            **({"feature_names": list(self.feature_names)} if self.feature_names else {}),
        }

    @staticmethod
    def layers_from_config(config: dict[str, Any], argument: str = "config") -> list[Layer]:
        """The layers a :meth:`config` dict describes (both of its forms)."""
        try:
            spec = config["layers"]
            if spec and all(isinstance(item, dict) for item in spec):
                return [layer_from_config(item, f"{argument}['layers'][{i}]")
                        for i, item in enumerate(spec)]  # fmt: skip
            layers = [Dense(int(a), int(b), str(act)) for a, b, act in spec]
            rates = config.get("dropout")
            if rates is not None:  # written only when a layer drops its input
                if len(rates) != len(layers):
                    raise ValueError(f"{len(rates)} dropout rates for {len(layers)} layers")
                layers = [Dense(d.n_in, d.n_out, d.activation, r) for d, r in zip(layers, rates)]
            return list(layers)
        except KeyError as exc:
            raise XbpValueError(
                f"{argument} lacks the key {exc}; pass Network.config()'s dict"
            ) from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, XbpValueError):
                raise
            raise XbpValueError(
                f"{argument}['layers'] is not [[n_in, n_out, activation], ...] ({exc})"
            ) from None

    @classmethod
    def from_config(
        cls, config: dict[str, Any], *, backend: Any = None, device: Any = None
    ) -> Network:
        """Build a network (freshly initialised) from :meth:`config`'s output.

        Examples
        --------
        >>> import xbp
        >>> net = xbp.mlp([2, 3, 1], seed=4)
        >>> xbp.Network.from_config(net.config()).config() == net.config()
        True
        """
        if not isinstance(config, dict):
            raise XbpTypeError(
                f"config is a {type(config).__name__}; pass the dict of Network.config()"
            )
        layers = cls.layers_from_config(config)
        if "loss" not in config:
            raise XbpValueError("config lacks the key 'loss'; pass Network.config()'s dict")
        net = cls(
            layers,
            loss=config["loss"],
            backend=backend,
            device=device,
            dtype=config.get("dtype", "float64"),
            seed=config.get("seed"),
            init=config.get("init", "auto"),
        )
        net.restore_precision(config.get("precision", "exact"))
        return net

    def restore_precision(self, policy: str) -> None:
        """Set a saved model's ``policy``; where this backend cannot run it (a bf16 or
        tf32 model read on NumPy), warn and keep ``"exact"``: the weights are the same
        float32 numbers. An unknown policy is an error."""
        if policy not in PRECISIONS:
            raise XbpValueError(
                f"{arg('precision', policy)} is not known; use one of {list(PRECISIONS)}"
            )
        try:
            self.precision = policy
        except XbpValueError as exc:
            warnings.warn(
                f"xbp: the model's {arg('precision', policy)} cannot run here ({exc}); it runs "
                "with precision='exact' (set net.precision on a backend that has it)",
                stacklevel=3,
            )

    def summary(self) -> str:
        """A table of the layers (widths, activation, dropout, shapes of ``W`` and ``b``,
        parameter counts), the total, loss, dtype, backend, device and precision.

        It is returned as a string that a prompt shows as the table itself
        (``print(net.summary())`` in a script; ``xbp summary model.npz`` for a file).

        Examples
        --------
        >>> import xbp
        >>> print(xbp.mlp([2, 3, 1], seed=0).summary().splitlines()[-5])
        parameters: 13 (104 bytes of float64)
        """
        return summarize(self)

    def __repr__(self) -> str:
        body = ", ".join(f"{d.n_in}->{d.n_out} {d.describe()}" for d in self.layers)
        return (
            f"Network([{body}], loss={self.loss.name!r}, backend={self.backend.name!r}, "
            f"device={str(self.device)!r}, dtype={self.backend.dtype_name(self.dtype)!r})"
        )

    # -- parameters and state -----------------------------------------
    def _to_device(self, params: Any, argument: str, shapes: str = "param_shapes") -> Params:
        """Host or device arrays checked against every layer's declared shapes
        (``shapes`` names the declaration: parameters or state) and copied in."""
        if not isinstance(params, (list, tuple)) or len(params) != len(self.layers):
            what = "{'W': (n_in, n_out), 'b': (n_out,)}" if self.plain else "{name: array}"
            raise XbpValueError(
                f"{argument} must be a list of {len(self.layers)} mappings {what}, one per layer"
            )
        out = []
        for i, (p, d) in enumerate(zip(params, self.layers)):
            want = getattr(d, shapes)()
            if not hasattr(p, "keys") or set(p.keys()) != set(want):
                names = "keys " + " and ".join(repr(k) for k in want) if want else "no keys"
                raise XbpValueError(f"{argument}[{i}] must be a mapping with {names}")
            entry = {}
            for key, shape in want.items():
                arr = p[key]
                if not is_host_array(arr) and self.backend.owns(arr):
                    if not self.backend.same_device(arr):
                        raise XbpValueError(
                            f"{argument}[{i}]['{key}'] is on another device than the network "
                            f"({self.device!s}); move it first"
                        )
                    arr = self.backend.to_host(arr)
                host = np.asarray(arr if is_host_array(arr) else self.backend.to_host(arr))
                if tuple(host.shape) != shape:
                    raise XbpValueError(
                        f"{argument}[{i}]['{key}'] has shape {tuple(host.shape)}; layer {i} "
                        f"needs {shape}"
                    )
                if host.dtype.kind not in "fiu":
                    raise XbpTypeError(f"{argument}[{i}]['{key}'] has dtype {host.dtype}")
                if not np.isfinite(host).all():
                    raise XbpValueError(f"{argument}[{i}]['{key}'] contains NaN or Inf")
                # a private copy: xbp updates parameters in place
                entry[key] = self.backend.asarray(host, self.dtype, copy=True)
            out.append(entry)
        return out

    @property
    def params(self) -> Params:
        """Each layer's trainable parameters, ``{name: array}`` on the device
        (``{"W": (n_in, n_out), "b": (n_out,)}`` for a :class:`Dense` layer, ``{}`` for a
        layer without parameters).

        Assigning a list of the same structure (NumPy or this backend's arrays)
        copies it in; the network never updates a caller's arrays in place.
        """
        return self._params

    @params.setter
    def params(self, value: Params) -> None:
        self._params = self._to_device(value, "params")

    def adopt_params(self, params: Params) -> None:
        """Take ``params`` (arrays of this backend and device, owned by xbp) as the
        weights without copying; the training loop uses it to restore snapshots.
        Use the ``params`` setter for arrays you keep using yourself."""
        self._params = [dict(p) for p in params]

    def host_params(self) -> list[dict[str, np.ndarray]]:
        """The parameters as NumPy arrays on the host (copies)."""
        return [{k: np.array(self.backend.to_host(v)) for k, v in p.items()} for p in self._params]

    @property
    def state(self) -> Params:
        """Each layer's non-trainable state on the device: running statistics
        (:class:`BatchNorm`), adapted means and spreads (:class:`Standardize`);
        ``{}`` for most layers. Assigning copies in, as for :attr:`params`."""
        return self._state

    @state.setter
    def state(self, value: Params) -> None:
        self._state = self._to_device(value, "state", "state_shapes")

    def adopt_state(self, state: Params) -> None:
        """:meth:`adopt_params` for the state."""
        self._state = [dict(s) for s in state]

    def host_state(self) -> list[dict[str, np.ndarray]]:
        """The state as NumPy arrays on the host (copies)."""
        return [{k: np.array(self.backend.to_host(v)) for k, v in s.items()} for s in self._state]

    @property
    def adapted(self) -> bool:
        """Whether every :class:`Standardize` layer has been adapted to data."""
        return all(
            float(self.backend.to_host(s["count"])[0]) > 0
            for d, s in zip(self.layers, self._state)
            if isinstance(d, Standardize)
        )

    def adapt(self, x: Any) -> None:
        """Adapt every :class:`Standardize` layer to the rows ``x`` (host arrays, memory
        maps or arrays of this backend): its ``mean`` and ``std`` become those of the
        values that reach it (the layers before it run in inference mode).

        Examples
        --------
        >>> import numpy as np, xbp
        >>> net = xbp.Network([xbp.nn.Standardize(1), xbp.nn.Dense(1, 1, "identity")])
        >>> net.adapt(np.array([[1.0], [3.0]]))
        >>> net.predict(np.array([[3.0]])).shape, net.adapted
        ((1, 1), True)
        """
        if not any(isinstance(d, Standardize) for d in self.layers):
            return
        if not hasattr(x, "shape"):  # nested lists, as predict takes them
            x = np.asarray(x)
        shape = tuple(x.shape)
        if len(shape) != 2 or (shape[0] and int(shape[1]) != self.n_in):
            raise XbpValueError(f"adapt: x has shape {shape}; pass (rows, {self.n_in})")
        host = x if is_host_array(x) or not self.backend.owns(x) else self.backend.to_host(x)
        state = self.host_state()
        for l, d in enumerate(self.layers):
            if not isinstance(d, Standardize):
                continue
            if l == 0:
                stats = d.statistics(host)
            else:  # the values that reach it, a bounded block at a time, on the device
                blocks = []
                for s in range(0, int(host.shape[0]), EVAL_BATCH):
                    block = self.check_inputs(np.asarray(host[s : s + EVAL_BATCH]))
                    blocks.append(np.asarray(self.backend.to_host(self._run(block, stop=l))))
                stats = d.statistics(np.concatenate(blocks) if blocks else np.zeros((0, d.n)))
            state[l] = stats
            self.state = state

    def to(self, backend: Any = None, device: Any = None, dtype: Any = None) -> Network:
        """Return a copy of the network on another backend, device or dtype.

        The weights (and the layers' state) travel through host memory, so the
        move is bit-exact (a dtype change rounds once).

        Examples
        --------
        >>> import xbp
        >>> net = xbp.mlp([2, 3, 1], seed=1)
        >>> net.to("numpy").params[0]["W"].tolist() == net.params[0]["W"].tolist()
        True
        """
        if backend is None and device is None:
            be = self.backend  # keep the device too
        else:
            be = resolve_backend(self.backend.name if backend is None else backend, device)
        config = self.config()
        if dtype is not None:
            config["dtype"] = be.dtype(dtype)
        new = Network.from_config(config, backend=be)
        new.params = self.host_params()
        new.state = self.host_state()
        return new

    # -- the math: the one code path (docs/math.md) -------------------------
    def _context(
        self, training: bool, key: Any = None, reduce: Callable[[Any], Any] | None = None
    ) -> Context:
        if key is None and reduce is None and not _NO_CACHES.get():
            # the common case, built once per policy; its ones() keeps the vectors it made
            ctx = self._contexts.get(training)
            if ctx is None:
                ctx = self._contexts[training] = self._new_context(training)
            return ctx
        return self._new_context(training, key, reduce)

    def _new_context(
        self, training: bool, key: Any = None, reduce: Callable[[Any], Any] | None = None
    ) -> Context:
        low = self._low
        return Context(
            xp=self.backend.kernel_xp,
            dtype=self.dtype,
            device=self.device,
            training=training,
            key=key,
            low=low,
            ones=self._ones_maker(low),
            reduce=reduce,
        )

    def _run(
        self,
        x: Any,
        params: Params | None = None,
        state: Params | None = None,
        stop: int | None = None,
    ) -> Any:
        """Inference forward pass: the output of layer ``stop - 1`` (default: A_L)."""
        params = self._params if params is None else params
        state = self._state if state is None else state
        ctx = self._context(False)
        xp = ctx.xp
        a = x if self._low is None else xp.astype(x, self._low, copy=False)
        layers = self.layers if stop is None else self.layers[:stop]
        last = len(self.layers) - 1
        with self.backend.precision_scope(self._precision):
            for l, layer in enumerate(layers):
                if l == last:
                    z = self._output.affine(ctx, params[l], a, l, last=True)[0]
                    return self._output.act.forward(xp, z)  # z is a temporary: may be overwritten
                a = layer.forward(ctx, params[l], state[l], a, l)[0]
        return a

    def value_and_grad(
        self,
        x: Any,
        y: Any,
        *,
        params: Params | None = None,
        n_total: int | None = None,
        grad_scale: Any = None,
        forward_only: bool = False,
        grad_ready: Callable[[int, dict[str, Any]], None] | None = None,
        sample_weight: Any = None,
        dropout_key: Any = None,
        state: Params | None = None,
        state_out: list[Any] | None = None,
        training: bool | None = None,
        reduce_stats: Callable[[Any], Any] | None = None,
    ) -> StepResult:
        """The cost, its gradients and the output A_L: the explicit backprop kernel.

        This is the one implementation of the equations in ``docs/math.md``; the
        training loop, compiled steps, gradcheck, the benchmarks, the
        scikit-learn adapter and ``xbp explain`` all call it. It does not check
        its input: ``x`` ``(n, n_in)`` and ``y`` ``(n, n_out)`` must already be
        arrays of the network's backend, device and dtype (:meth:`backprop` is
        the checked form for any input).

        Parameters
        ----------
        x, y : arrays on the network's device
        params : list of {"W", "b"}, optional
            Weights to differentiate at (default: the network's own). Compiled
            steps pass traced arrays here.
        n_total : int, optional
            Divisor of the batch average (default: rows of ``x``); data-parallel
            shards pass the global batch size so their gradients add up.
        grad_scale : scalar, optional
            Multiplies delta_L and so, by linearity, every delta_l and every
            gradient. Plain SGD passes ``-learning_rate`` and receives its updates
            without a pass over full-size gradients.
        forward_only : bool
            Cost and output only (``grads`` is empty).
        grad_ready : callable, optional
            Called as ``grad_ready(l, {"W": dW_l, "b": db_l})`` as soon as the
            backward pass has produced layer ``l``'s gradients (last layer
            first), so a data-parallel strategy can start exchanging them while
            the earlier layers are still being computed. It may sum them in place (the
            backward pass does not read them again) but must not replace them.
        sample_weight : array, optional
            Row weights ``w`` of shape ``(n,)`` on the device (non-negative; not
            checked here). The cost becomes ``sum_i w_i C_i / n_total`` and
            row i of delta_L is scaled by ``w_i``; ``n_total`` then defaults to
            ``sum_i w_i``, so integer weights equal repeating rows.
        dropout_key : array, optional
            The step's dropout key, an int64 device array ``[seed, step,
            row_offset]`` (see :mod:`xbp.nn.rng`). With it, every layer whose
            ``dropout`` is above 0 multiplies its input by that step's mask and
            the backward pass goes through the same mask; without it (the
            default, and in evaluation) nothing is dropped. A fixed key gives a
            fixed mask, so the cost is a smooth function of the weights again.

        Returns
        -------
        StepResult
            ``(loss, grads, output)``: a 0-d array, one ``{"W", "b"}`` mapping per
            layer shaped like ``params``, and A_L.

        Examples
        --------
        >>> import numpy as np, xbp
        >>> net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
        >>> loss, grads, out = net.value_and_grad(np.zeros((4, 2)), np.ones((4, 1)))
        >>> grads[0]["W"].shape, out.shape
        ((2, 3), (4, 1))
        """
        with self.backend.precision_scope(self._precision):
            xp = self.backend.kernel_xp
            params = self._params if params is None else params
            state = self._state if state is None else state
            training = not forward_only if training is None else training
            ctx = self._context(training, dropout_key, reduce_stats)
            low = self._low  # mixed precision: the backward products run in it too
            a = x if low is None else xp.astype(x, low)
            w = None
            if sample_weight is None:
                n = x.shape[0] if n_total is None else n_total
            else:
                w = xp.reshape(sample_weight, (-1, 1))
                n = xp.sum(sample_weight) if n_total is None else n_total
            layers = self.layers
            last = len(layers) - 1
            out_layer = self._output
            # forward: every layer but the output keeps what its backward rule needs
            saved = []
            for l in range(last):
                a, keep, new = layers[l].forward(ctx, params[l], state[l], a, l)
                saved.append(keep)
                if state_out is not None and new is not None:
                    state_out[l] = new
            z, a_in, mask = out_layer.affine(ctx, params[last], a, last, last=True)
            act = out_layer.act
            fused = self.loss.fused_forward
            if fused is not None:  # softmax + cross-entropy from one pass over Z_L
                a, cost, delta = fused(xp, z, y, n, w)
            else:
                # an activation that overwrites Z_L works on a copy when the loss reads Z_L
                loss = self.loss
                a = act.forward(xp, z + 0 if act.overwrites_z and loss.reads_z else z)
                cost, delta = loss.value_and_delta(xp, z, a, y, n, act, w)
            del z
            if forward_only:
                return StepResult(cost, [], a)
            # output error delta_L above; each layer's backward rule turns dC/d(output)
            # into dC/d(input) and its parameter gradients (docs/math.md)
            if grad_scale is not None:
                delta *= grad_scale
            if low is not None:  # scaled first: fp16's loss scale keeps small errors representable
                delta = xp.astype(delta, low)
            grads: Params = [{}] * len(params)
            d, grads[last] = out_layer.backward_z(ctx, params[last], (a_in, mask), delta, last > 0)
            if grad_ready is not None:
                grad_ready(last, grads[last])
            for l in range(last - 1, -1, -1):
                d, grads[l] = layers[l].backward(ctx, params[l], saved[l], d, l > 0)
                if grad_ready is not None and grads[l]:
                    grad_ready(l, grads[l])
            return StepResult(cost, grads, a)

    def _ones_maker(self, low: Any = None) -> Callable[[int], Any]:
        """``ones(n)``: a ones vector of length n (bias gradients as GEMVs), never written
        to, in the network's dtype or in ``low`` under mixed precision.

        Outside a compiled step the vectors are kept per length (a few batch sizes at
        most: the last batch, evaluation), shared by the network's contexts. Inside one
        (see :func:`no_caches`) each call makes a fresh vector: a cached traced value
        would leak out of the trace."""
        xp, device = self.backend.xp, self.device
        dtype = self.dtype if low is None else low
        if _NO_CACHES.get():
            return lambda n: xp.ones(n, dtype=dtype, device=device)
        cache = self.__dict__.setdefault("_ones_cache", {}).setdefault(self._precision, {})

        def ones(n: int) -> Any:
            found = cache.get(n)
            if found is None:
                if len(cache) > 8:
                    cache.clear()
                found = cache[n] = xp.ones(n, dtype=dtype, device=device)
            return found

        return ones

    # -- public API ----------------------------------------------------
    @property
    def classes(self) -> tuple[Any, ...] | None:
        """The class labels the outputs stand for, in output order, or None.

        Set when the network trains on class names (``fit(net, x, ["cat", "dog",
        ...])``) or on whole numbers other than ``0..k-1``; saved with the model.
        With classes, targets are given as those labels and
        :meth:`predict_classes` returns them.
        """
        return self._classes

    @classes.setter
    def classes(self, value: Sequence[Any] | None) -> None:
        if value is None:
            self._classes: tuple[Any, ...] | None = None
            return
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
            raise XbpTypeError(f"classes={value!r} must be a list of class labels, e.g. ['a', 'b']")
        labels = tuple(v.item() if hasattr(v, "item") else v for v in value)
        width = 2 if self.n_out == 1 else self.n_out
        if len(labels) != width or len(set(labels)) != len(labels):
            raise XbpValueError(
                f"classes={list(labels)[:10]} must name {width} distinct labels, one per output "
                f"class of this {self.n_out}-output network"
            )
        self._classes = labels

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        """The input columns' names, recorded from a pandas DataFrame by :func:`xbp.fit`
        and checked on every DataFrame given later (same names, same order); None when
        the network trained on plain arrays. Saved with the model."""
        return self._feature_names

    @feature_names.setter
    def feature_names(self, value: Sequence[str] | None) -> None:
        if value is None:
            self._feature_names: tuple[str, ...] | None = None
            return
        names = tuple(str(v) for v in value)
        if len(names) != self.n_in:
            raise XbpValueError(
                f"feature_names lists {len(names)} names but the network takes {self.n_in} "
                "features; give one name per input column"
            )
        self._feature_names = names

    def record_inputs(self, x: Any, argument: str = "x") -> None:
        """Record a DataFrame's column names as :attr:`feature_names` (first fit), or
        check them against the recorded ones."""
        columns = getattr(x, "columns", None)
        if columns is None or not hasattr(x, "iloc"):
            return
        if self._feature_names is None:
            self.feature_names = [str(c) for c in columns]
        else:
            self._check_names(columns, argument)

    def _check_names(self, columns: Any, argument: str) -> None:
        names = tuple(str(c) for c in columns)
        if names != self._feature_names:
            want = list(self._feature_names or ())
            missing = [n for n in want if n not in names][:3]
            extra = [n for n in names if n not in want][:3]
            what = f"lacks {missing} and has {extra}" if missing or extra else "reorders them"
            raise XbpValueError(
                f"{argument}'s columns do not match the features the network was trained on: "
                f"it {what}; select the training columns in their order ({want[:5]}...)"
            )

    def check_inputs(self, x: Any, argument: str = "x") -> Any:
        """``x`` checked (2-D, ``n_in`` columns, floating, finite) and on this device and dtype.

        Host data is moved; an array of this backend on this device is used as
        it is (cast when its dtype differs); anything else is a one-line error
        naming ``argument``. A pandas DataFrame's columns must match
        :attr:`feature_names` when the network recorded them.
        """
        if type(x) is not np.ndarray and hasattr(x, "columns") and hasattr(x, "iloc"):
            if self._feature_names is not None:  # a pandas DataFrame
                self._check_names(x.columns, argument)
            x = x.to_numpy()
        n_in = self.layers[0].n_in
        return as_features(self.backend, x, self.dtype, n_in, argument, self._low_limit)

    def input_limit(self) -> tuple[float, str]:
        """``(largest finite value, type name)`` of the type inputs are computed in: the
        network's dtype, or float16 under ``precision='fp16'``. Larger inputs are refused."""
        limit = self._low_limit
        return dtype_limit(self.backend, self.dtype) if limit is None else limit

    def check_targets(self, y: Any, n_rows: int, argument: str = "y") -> Any:
        """``y`` as ``(n_rows, n_out)`` targets on this device; ``(n,)`` integer labels
        are one-hot encoded (class labels of :attr:`classes` first become their codes).
        The loss's own rule on target values is applied."""
        if type(y) is not np.ndarray and hasattr(y, "iloc") and hasattr(y, "to_numpy"):
            y = y.to_numpy()  # a pandas Series / DataFrame
        if self._classes is not None and getattr(y, "ndim", 1) == 1:
            y = encode_labels(y, self._classes, argument)
        # the loss's rule on the targets' range reads them once, with the NaN/Inf check
        rule = self._target_rule if self.loss.name in TARGET_RULES else None
        n_out = self._output.n_out
        return as_targets(self.backend, y, self.dtype, n_out, n_rows, argument, rule)

    def _target_rule(self, width: int, lo: float | None, hi: float | None, argument: str) -> None:
        check_target_range(self.loss, width, lo, hi, argument)

    def forward(self, x: Any, *, stop: int | None = None) -> Any:
        """The network's output ``A_L`` for ``x`` of shape ``(n, n_in)``, on the device.

        ``x`` may be host NumPy data or an array of this backend on its device.
        ``stop=k`` returns the output of the first ``k`` layers instead (inference
        mode), e.g. the last hidden layer's activations with ``stop=len(net.layers) - 1``.
        """
        return self._run(self.check_inputs(x), stop=stop)

    def predict(self, x: Any, *, batch_size: int = EVAL_BATCH) -> Any:
        """The output for ``x``, returned where ``x`` came from, ``batch_size`` rows at a
        time.

        NumPy input (arrays, memory maps, a pandas DataFrame) gives a NumPy
        result on every backend and moves to the device one batch at a time: the
        extra memory is the result plus one batch's layers, whatever the rows.
        An array of the network's backend gives an array on the same device.
        :func:`xbp.predict` is the same call (it also takes batch sources).
        """
        batch_size = check_int(batch_size, "batch_size")
        if hasattr(x, "columns") and hasattr(x, "iloc"):  # a pandas DataFrame
            if self._feature_names is not None:
                self._check_names(x.columns, "x")
            x = x.to_numpy()
        n = int(getattr(x, "shape", (0,))[0]) if getattr(x, "ndim", 0) >= 1 else 0
        if n <= batch_size:
            out = self.forward(x)
            return self.backend.to_host(out) if is_host_array(x) else out
        if not is_host_array(x):
            xd = self.check_inputs(x)
            parts = [
                self._run(xd[s : min(s + batch_size, n), ...]) for s in range(0, n, batch_size)
            ]
            return self.xp.concat(parts, axis=0)
        result = None
        for s in range(0, n, batch_size):
            e = min(s + batch_size, n)  # errors name the caller's rows
            part = self.backend.to_host(self._run(self.check_inputs(x[s:e], f"x[{s}:{e}]")))
            if result is None:
                result = np.empty((n, part.shape[1]), dtype=part.dtype)
            result[s : s + part.shape[0]] = part
        return result

    def layer_outputs(self, x: Any) -> list[tuple[Any, Any]]:
        """``[(Z_1, A_1), ..., (Z_L, A_L)]`` for ``x``: every layer's net input and output.

        For inspection (``xbp explain``) of a network of :class:`Dense` layers;
        training never keeps the Z_l.
        """
        if not self.plain:
            raise XbpValueError(
                "layer_outputs lists (Z_l, A_l) of Dense layers only; this network has "
                f"{', '.join(sorted({d.kind for d in self.layers} - {'dense'}))} layers"
            )
        xd = self.check_inputs(x)
        xp = self.backend.xp
        out = []
        a = xd
        for p, act in zip(self._params, (d.act for d in self.layers)):  # type: ignore[attr-defined]
            with self.backend.precision_scope(self._precision):
                z = a @ p["W"]
            z += p["b"]
            a = act.forward(xp, z + 0)  # some activations overwrite their input
            out.append((z, a))
        return out

    def backprop(self, x: Any, y: Any) -> tuple[Any, Params]:
        """The batch cost and its gradients, by the explicit backpropagation equations.

        Parameters
        ----------
        x : array, shape (n, n_in)
        y : array, shape (n, n_out), or (n,) integer class labels

        Returns
        -------
        loss : 0-d array on the device (``float(loss)`` reads it)
        grads : list of ``{"W", "b"}`` mappings shaped exactly like ``params``
        """
        xd = self.check_inputs(x)
        cost, grads, _ = self.value_and_grad(xd, self.check_targets(y, xd.shape[0]))
        return cost, grads

    def predict_proba(self, x: Any) -> Any:
        """Class probabilities: the softmax or sigmoid output (NumPy in, NumPy out)."""
        if self._output.act.name not in ("softmax", "sigmoid"):
            raise XbpValueError(
                f"predict_proba needs a softmax or sigmoid output layer, not "
                f"{self._output.act.name!r}; use predict() for raw outputs"
            )
        return self.predict(x)

    def predict_classes(self, x: Any) -> Any:
        """Class labels: argmax of the outputs, or ``output > 0.5`` for one output.

        Returned where ``x`` came from (NumPy in, NumPy out); a network with
        :attr:`classes` returns those labels, as a NumPy array.
        """
        host = is_host_array(x) or hasattr(x, "iloc")
        out = self.predict(x)
        xp = np if host else self.backend.xp
        if out.shape[1] > 1:
            labels = xp.argmax(out, axis=1)
        else:
            labels = xp.astype(out[:, 0] > 0.5, xp.int64)
        if self._classes is not None:  # names live on the host
            return np.asarray(self._classes)[labels if host else self.backend.to_host(labels)]
        return labels

    def class_labels(self, y_in: Any, y_dev: Any) -> Any:
        """Class labels of checked targets ``y_dev`` when accuracy applies, else None.

        ``y_in`` is what the caller passed: ``(n,)`` integer labels were one-hot
        encoded; one-hot rows and 0/1 single outputs count as classes too.
        """
        xp = self.backend.xp
        if self.n_out > 1 and y_in is not None and getattr(y_in, "ndim", 0) == 1:
            return xp.argmax(y_dev, axis=1)
        if self.loss.name == "cross_entropy" or (self.loss.name == "quadratic" and self.n_out > 1):
            onehot = bool(xp.all(xp.sum(y_dev, axis=1) == 1)) and bool(
                xp.all((y_dev == 0) | (y_dev == 1))
            )
            return xp.argmax(y_dev, axis=1) if onehot else None
        if self.n_out == 1 and bool(xp.all((y_dev == 0) | (y_dev == 1))):
            return xp.astype(y_dev[:, 0] > 0.5, xp.int64)  # 0/1 targets: binary accuracy
        return None

    def evaluation_sums(
        self,
        x: Any,
        y: Any,
        labels: Any,
        start: int,
        stop: int,
        batch_size: int,
        weights: Any = None,
    ) -> tuple[Any, Any]:
        """Summed cost and correct predictions over rows ``[start, stop)`` of device data,
        ``batch_size`` rows at a time (bounded memory); 0-d device arrays (the
        correct count is None without labels). With row ``weights`` ``(n,)``, row
        i counts ``w_i`` times in both sums."""
        xp = self.backend.xp
        cost_sum = correct = None
        for s in range(start, stop, batch_size):
            e = min(s + batch_size, stop)  # out-of-bounds slice stops are not standard
            wb = None if weights is None else weights[s:e]
            if wb is None:
                cost, _, out = self.value_and_grad(x[s:e, ...], y[s:e, ...], forward_only=True)
                part = cost * (e - s)
            else:  # divisor 1: the weighted sum itself
                part, _, out = self.value_and_grad(
                    x[s:e, ...], y[s:e, ...], forward_only=True, sample_weight=wb, n_total=1
                )
            cost_sum = part if cost_sum is None else cost_sum + part
            if labels is not None:
                c = count_correct(xp, out, labels[s:e], wb)
                correct = c if correct is None else correct + c
        if cost_sum is None:  # an empty share (more processes than rows)
            cost_sum = xp.zeros((), dtype=self.dtype, device=self.device)
            if labels is not None:
                correct = xp.zeros((), dtype=self.dtype, device=self.device)
        return cost_sum, correct

    def evaluate(
        self, x: Any, y: Any, *, batch_size: int = EVAL_BATCH, sample_weight: Any = None
    ) -> dict[str, float | None]:
        """Loss and (where it applies) accuracy on ``(x, y)``, in batches of ``batch_size``.

        Host data moves to the device one batch at a time, so the memory does not
        grow with the rows (:func:`xbp.evaluate` is the same and adds ``metrics=``
        and batch sources).

        ``sample_weight`` ``(n,)`` (non-negative, not all zero) weights the rows:
        the loss is ``sum_i w_i C_i / sum_i w_i`` and the accuracy the weight
        share of the correctly predicted rows.

        Examples
        --------
        >>> import xbp
        >>> x, y = xbp.data.make_xor()
        >>> sorted(xbp.mlp([2, 2, 1], loss="binary_cross_entropy").evaluate(x, y))
        ['accuracy', 'loss']
        """
        batch_size = check_int(batch_size, "batch_size")
        if hasattr(x, "columns") and hasattr(x, "iloc"):  # a pandas DataFrame
            if self._feature_names is not None:
                self._check_names(x.columns, "x")
            x = x.to_numpy()
        if hasattr(y, "iloc") and hasattr(y, "to_numpy"):
            y = y.to_numpy()
        n = int(x.shape[0]) if getattr(x, "ndim", 0) == 2 else 0
        if not (is_host_array(x) and n > batch_size):
            xd = self.check_inputs(x)
            n = int(xd.shape[0])
            yd = self.check_targets(y, n)
            labels = self.class_labels(y, yd)
            wd, total = None, float(n)
            if sample_weight is not None:
                wd, total = check_sample_weight(self.backend, sample_weight, n, self.dtype)
            cost, correct = self.evaluation_sums(xd, yd, labels, 0, n, batch_size, wd)
            acc = None if correct is None else float(correct) / total
            return {"loss": float(cost) / total, "accuracy": acc}
        # host rows: checked and moved to the device one batch at a time (bounded memory)
        if getattr(y, "shape", (None,))[0] != n:
            self.check_targets(y, n)  # raises, naming the rows
        wd, total = None, float(n)
        if sample_weight is not None:
            wd, total = check_sample_weight(self.backend, sample_weight, n, self.dtype)
        cost_sum: Any = None
        correct_sum: Any = None
        counted = True
        for s in range(0, n, batch_size):
            e = min(s + batch_size, n)
            xd = self.check_inputs(x[s:e], f"x[{s}:{e}]")
            yd = self.check_targets(y[s:e], e - s, f"y[{s}:{e}]")
            labels = self.class_labels(y[s:e], yd)
            cost, correct = self.evaluation_sums(
                xd, yd, labels, 0, e - s, batch_size, None if wd is None else wd[s:e]
            )
            cost_sum = cost if cost_sum is None else cost_sum + cost
            counted = counted and correct is not None
            if counted:
                correct_sum = correct if correct_sum is None else correct_sum + correct
        acc = float(correct_sum) / total if counted and correct_sum is not None else None
        return {"loss": float(cost_sum) / total, "accuracy": acc}

    def loss_value(self, x: Any, y: Any) -> float:
        """The cost C on (x, y) as a Python float."""
        xd = self.check_inputs(x)
        return float(
            self.value_and_grad(xd, self.check_targets(y, xd.shape[0]), forward_only=True).loss
        )


def mlp(
    sizes: Sequence[int],
    activation: str = "sigmoid",
    output: str | None = None,
    loss: str = "quadratic",
    *,
    norm: str | None = None,
    dropout: float = 0.0,
    standardize: bool = False,
    **kwargs: Any,
) -> Network:
    """A plain multilayer perceptron from a list of widths.

    ``activation`` is every hidden layer's; ``output`` is the last layer's and
    defaults to what fits the loss: softmax for cross-entropy, sigmoid for
    binary cross-entropy and identity for the quadratic loss (regression
    targets of any sign and size). A registered loss defaults to the first
    output activation it lists. Name ``output`` to choose otherwise, e.g.
    ``output="sigmoid"`` for the classic sigmoid-everywhere network of the
    backpropagation literature.

    Between layers: ``norm="layer"`` or ``"batch"`` puts a :class:`LayerNorm` or
    :class:`BatchNorm` after every hidden layer, ``dropout=p`` a :class:`Dropout`
    after every hidden layer (after its normalisation), and ``standardize=True``
    puts a :class:`Standardize` layer first (adapted from the training data by
    :func:`xbp.fit`, or by :meth:`Network.adapt`). Other keyword arguments go to
    :class:`Network`.

    Examples
    --------
    >>> import xbp
    >>> xbp.mlp([784, 30, 10], loss="cross_entropy").sizes
    [784, 30, 10]
    >>> [d.activation for d in xbp.mlp([2, 3, 1], activation="tanh").layers]
    ['tanh', 'identity']
    >>> [d.activation for d in xbp.mlp([2, 3, 1], output="sigmoid").layers]
    ['sigmoid', 'sigmoid']
    >>> [d.kind for d in xbp.mlp([2, 3, 1], norm="batch", dropout=0.1, standardize=True).layers]
    ['standardize', 'dense', 'batch_norm', 'dropout', 'dense']
    """
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) < 2:
        raise XbpValueError(f"sizes={sizes!r} must list at least two widths, e.g. [784, 30, 10]")
    get_activation(activation)  # checked even when there is no hidden layer to use it
    if norm not in (None, "layer", "batch"):
        raise XbpValueError(f"norm={norm!r}; use None, 'layer' or 'batch'")
    rate = check_dropout(dropout, "dropout")
    if output is None:
        output = default_output(get_loss(loss))
    acts = [activation] * (len(sizes) - 2) + [output]
    layers: list[Layer] = [Standardize(sizes[0])] if standardize else []
    for i in range(len(sizes) - 1):
        layers.append(Dense(sizes[i], sizes[i + 1], acts[i]))
        if i < len(sizes) - 2:
            if norm is not None:
                kind = LayerNorm if norm == "layer" else BatchNorm
                layers.append(kind(sizes[i + 1]))
            if rate:
                layers.append(Dropout(rate))
    return Network(layers, loss=loss, **kwargs)
