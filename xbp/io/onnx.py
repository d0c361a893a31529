"""ONNX export: hand a trained network to any runtime that reads ONNX.

Each layer becomes its inference form: a :class:`~xbp.nn.Dense` layer one ``Gemm``
node (``y = x @ W + b``, with ``W`` stored as xbp keeps it, ``(n_in, n_out)``)
followed by its activation node; :class:`~xbp.nn.Dropout` nothing;
:class:`~xbp.nn.Standardize` ``Sub`` and ``Div`` with its adapted mean and std;
:class:`~xbp.nn.LayerNorm` ``LayerNormalization``; :class:`~xbp.nn.BatchNorm`
``BatchNormalization`` with its running statistics (the float64 exceptions are
in :func:`export_onnx`); a user's own layer what its ``onnx`` hook writes
(:class:`OnnxGraph`). The graph takes ``x`` of shape ``[N, n_in]`` with a
symbolic batch dimension ``N`` and returns ``y`` of shape ``[N, n_out]``:
exactly :meth:`xbp.Network.predict`.

The model uses the default ONNX domain at opset :data:`OPSET` (17, which
current runtimes, converters and accelerators read) and the oldest IR
version that opset allows (8), so older runtimes read it too. Tested with
onnxruntime 1.17 to 1.32 in float32 and 1.18 to 1.32 in float64 (1.17's graph
optimizer fuses ``Gemm`` and its activation into a float-only kernel); the
layers between the Dense layers and the ``onnx`` hook with onnxruntime 1.32.

The ``onnx`` package is an optional dependency: ``pip install 'xbp[onnx]'``
(which also brings ``onnxruntime`` to run the exported model).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import XbpFileError, XbpTypeError, XbpValueError
from ..nn.layers import BatchNorm, Dense, Dropout, Layer, LayerNorm, Standardize
from ..nn.network import Network
from .paths import as_path, check_distinct, label, output_file

__all__ = ["export_onnx", "export_file", "build_model", "OnnxGraph", "OPSET", "ONNX_OPS"]

Arrays = dict[str, np.ndarray]

#: The ONNX opset every exported model declares (default domain).
OPSET = 17

#: The ONNX operator each activation becomes; identity adds no node.
ONNX_OPS: dict[str, str | None] = {
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "relu": "Relu",
    "leaky_relu": "LeakyRelu",
    "softplus": "Softplus",
    "exp": "Exp",
    "identity": None,
    "softmax": "Softmax",
}

# protobuf refuses to serialise a message of 2 GiB or more; stay clear of it with
# room for the graph itself, so a huge network fails before any work, not inside onnx
_MAX_WEIGHT_BYTES = 2**31 - 2**24


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise XbpValueError(
            "ONNX export needs the onnx package: pip install 'xbp[onnx]' (it brings onnx "
            "and onnxruntime)"
        ) from None
    return onnx


class OnnxGraph:
    """The graph a layer's ONNX form is written into: what an ``onnx`` hook receives.

    A user's own layer (:func:`xbp.register_layer`) exports when its class
    defines the hook ::

        def onnx(self, graph, src, params, state, index) -> str:
            ...

    ``graph`` is this object, ``src`` the name of the tensor entering the
    layer (``[N, n_in]``, the model's dtype), ``params`` and ``state`` the
    layer's parameters and state as NumPy host arrays of the model's dtype,
    ``index`` its position in ``net.layers``. The hook adds initializers with
    :meth:`constant` and nodes with :meth:`node` and returns the name of the
    tensor leaving the layer (``[N, n_out]``; ``src`` itself for a layer that
    is the identity in inference). Names are made unique and prefixed with
    ``layer{index}``, so a hook chooses them freely. The nodes are ONNX
    operators of the default domain at opset :attr:`opset` (compute in
    :attr:`dtype`); the model is checked by ``onnx.checker`` afterwards.
    The built-in layers are written through the same methods. The hook
    needs no ``import onnx``: :mod:`xbp.nn.layers` and a user's layer module
    stay free of it.

    Attributes
    ----------
    dtype : numpy.dtype
        The model's dtype (float32 or float64).
    opset : int
        The opset the model declares (13 or later).
    index : int
        The position of the layer being written in ``net.layers``.
    prefix : str
        What the names it makes start with: ``layer{index}``.

    Examples
    --------
    A layer computing ``2 a + shift`` with a trainable ``shift``:

    >>> import dataclasses, os, tempfile, numpy as np, xbp
    >>> from xbp.io.onnx import export_onnx
    >>> @xbp.register_layer
    ... @dataclasses.dataclass(frozen=True)
    ... class TwiceShift(xbp.nn.Layer):
    ...     kind = "twice_shift"
    ...     n: int
    ...     n_in = property(lambda self: self.n)
    ...     n_out = property(lambda self: self.n)
    ...     def param_shapes(self):
    ...         return {"shift": (self.n,)}
    ...     def init_params(self, rng, init):
    ...         return {"shift": np.linspace(-1.0, 1.0, self.n)}
    ...     def forward(self, ctx, p, s, a, l):
    ...         return 2.0 * a + p["shift"], None, None
    ...     def backward(self, ctx, p, saved, d, need_input):
    ...         return (2.0 * d if need_input else None), {"shift": ctx.ones(d.shape[0]) @ d}
    ...     def onnx(self, graph, src, params, state, index):
    ...         two = graph.constant("two", 2.0)
    ...         doubled = graph.node("Mul", [src, two])
    ...         return graph.node("Add", [doubled, graph.constant("shift", params["shift"])])
    >>> net = xbp.Network([TwiceShift(3), xbp.nn.Dense(3, 2, "tanh")], seed=0)
    >>> path = export_onnx(net, os.path.join(tempfile.mkdtemp(), "net.onnx"))
    >>> import onnx
    >>> [n.op_type for n in onnx.load(str(path)).graph.node]
    ['Mul', 'Add', 'Gemm', 'Tanh']
    >>> import onnxruntime as ort
    >>> session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    >>> x = np.random.default_rng(0).normal(size=(4, 3))
    >>> bool(np.allclose(session.run(["y"], {"x": x})[0], net.predict(x), rtol=1e-12))
    True
    """

    def __init__(self, helper: Any, numpy_helper: Any, dtype: np.dtype, opset: int) -> None:
        self._helper, self._numpy_helper = helper, numpy_helper
        self.dtype, self.opset, self.index, self.prefix = dtype, opset, -1, "graph"
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: set[str] = {"x", "y"}

    def view(self, prefix: str, index: int = -1) -> OnnxGraph:
        """This graph, making names that start with ``prefix`` (``layer{index}`` for the
        layer at ``index``: what the exporter hands each layer's hook)."""
        view = copy.copy(self)  # shares the node and initializer lists and the names
        view.prefix, view.index = prefix, index
        return view

    def _fresh(self, name: str) -> str:
        if name not in self._names:
            self._names.add(name)
            return name
        k = 2
        while f"{name}_{k}" in self._names:
            k += 1
        self._names.add(f"{name}_{k}")
        return f"{name}_{k}"

    def known(self, name: Any) -> bool:
        """Whether ``name`` is a tensor of the graph so far (the input, an initializer
        or a node's output)."""
        return isinstance(name, str) and name in self._names and name != "y"

    def constant(self, name: str, value: Any, dtype: Any = None) -> str:
        """Add an initializer holding ``value`` (an array or a number) as ``dtype``
        (default: the model's dtype; e.g. ``np.int64`` for a shape or axes) and
        return its name, ``{prefix}.{name}`` (made unique)."""
        array = np.ascontiguousarray(np.asarray(value, dtype=dtype or self.dtype))
        full = self._fresh(f"{self.prefix}.{name}")
        self.initializers.append(self._numpy_helper.from_array(array, name=full))
        return full

    def node(self, op: str, inputs: list[str], *, name: str = "", **attributes: Any) -> str:
        """Add one node of ONNX operator ``op`` (default domain) on the tensors named
        ``inputs`` and return the name of its (single) output. ``attributes`` are the
        operator's attributes (``axis=-1``, ``epsilon=1e-5``, ...); ``name`` (default:
        ``op`` in lower case) names the node and its output, ``{prefix}/{name}``."""
        for src in inputs:
            if not self.known(src):
                where = f"net.layers[{self.index}]" if self.index >= 0 else self.prefix
                raise XbpValueError(
                    f"{where}: node {op} takes {src!r}, which is no tensor of the graph "
                    "yet; pass the layer's src or names constant()/node() returned"
                )
        out = self._fresh(f"{self.prefix}/{name or op.lower()}")
        self.nodes.append(self._helper.make_node(op, list(inputs), [out], name=out, **attributes))
        return out


def _dense_onnx(
    layer: Dense, graph: OnnxGraph, src: str, params: Arrays, state: Arrays, index: int
) -> str:
    """``Gemm`` (``x @ W + b``) and the activation's node(s); inference ignores dropout."""
    w, b = graph.constant("W", params["W"]), graph.constant("b", params["b"])
    z = graph.node("Gemm", [src, w, b], name="gemm")
    act = layer.activation
    if act == "identity":
        return z
    if act == "leaky_relu":
        from ..nn.activations import LEAKY_SLOPE

        return graph.node("LeakyRelu", [z], name="a", alpha=LEAKY_SLOPE)
    if act == "softmax":
        # opset >= 13: Softmax normalises along one axis, the classes of each row
        return graph.node("Softmax", [z], name="a", axis=-1)
    if act == "softplus" and graph.dtype == np.float64:
        # onnxruntime has no double kernel for Softplus: spell it as xbp computes it,
        # max(z, 0) + log(1 + exp(-|z|)), which never overflows
        t = graph.node("Exp", [graph.node("Neg", [graph.node("Abs", [z])])])
        log1p = graph.node("Log", [graph.node("Add", [t, graph.constant("one", 1.0)])])
        return graph.node("Add", [graph.node("Relu", [z]), log1p], name="a")
    op = ONNX_OPS[act]
    assert op is not None
    return graph.node(op, [z], name="a")


def _dropout_onnx(
    layer: Dropout, graph: OnnxGraph, src: str, params: Arrays, state: Arrays, index: int
) -> str:
    """Nothing: dropout is the identity in inference."""
    return src


def _standardize_onnx(
    layer: Standardize, graph: OnnxGraph, src: str, params: Arrays, state: Arrays, index: int
) -> str:
    """``(x - mean) / std`` with the adapted mean and std (``Sub``, ``Div``)."""
    centred = graph.node("Sub", [src, graph.constant("mean", state["mean"])])
    return graph.node("Div", [centred, graph.constant("std", state["std"])])


def _layer_norm_onnx(
    layer: LayerNorm, graph: OnnxGraph, src: str, params: Arrays, state: Arrays, index: int
) -> str:
    """``LayerNormalization`` over the features in float32 (opset 17 or later); in
    float64, and before opset 17, the same equations in primitive operators in the
    order xbp computes them: ONNX's ``epsilon`` attribute is a float32, which would
    move a float64 model's eps (1e-3 by 5e-11)."""
    gamma, beta = graph.constant("gamma", params["gamma"]), graph.constant("beta", params["beta"])
    if graph.opset >= 17 and graph.dtype == np.float32:
        return graph.node(
            "LayerNormalization", [src, gamma, beta], axis=-1, epsilon=float(layer.eps)
        )
    # ReduceMean's axes: an attribute up to opset 17, an input from opset 18
    axes = graph.constant("axes", [-1], dtype=np.int64) if graph.opset >= 18 else ""

    def row_mean(a: str, name: str) -> str:
        if axes:
            return graph.node("ReduceMean", [a, axes], name=name, keepdims=1)
        return graph.node("ReduceMean", [a], name=name, keepdims=1, axes=[-1])

    c = graph.node("Sub", [src, row_mean(src, "mean")], name="centred")
    var = row_mean(graph.node("Mul", [c, c]), "var")
    std = graph.node("Sqrt", [graph.node("Add", [var, graph.constant("eps", layer.eps)])])
    x_hat = graph.node("Mul", [c, graph.node("Reciprocal", [std])], name="x_hat")
    return graph.node("Add", [graph.node("Mul", [gamma, x_hat]), beta])


def _batch_norm_onnx(
    layer: BatchNorm, graph: OnnxGraph, src: str, params: Arrays, state: Arrays, index: int
) -> str:
    """Inference form with the running statistics: ``BatchNormalization`` in float32;
    in float64 ``(x - mean) * scale + beta`` (``Sub``, ``Mul``, ``Add``) with
    ``scale = gamma / sqrt(var + eps)`` computed here as xbp computes it, because
    ONNX's ``epsilon`` attribute is a float32 (1e-3 would move by 5e-11)."""
    if graph.dtype == np.float32:
        names = [
            graph.constant(k, v)
            for k, v in (
                ("gamma", params["gamma"]),
                ("beta", params["beta"]),
                ("mean", state["mean"]),
                ("var", state["var"]),
            )
        ]
        return graph.node("BatchNormalization", [src, *names], epsilon=float(layer.eps))
    # xbp's inference rule, term by term: (a - mean) * (inv * gamma) + beta
    inv = 1.0 / np.sqrt(state["var"] + layer.eps)
    centred = graph.node("Sub", [src, graph.constant("mean", state["mean"])])
    scaled = graph.node("Mul", [centred, graph.constant("scale", inv * params["gamma"])])
    return graph.node("Add", [scaled, graph.constant("beta", params["beta"])])


#: The ONNX form of each built-in layer (exact types: a subclass is a new layer).
_BUILT_IN: dict[type, Callable[..., str]] = {
    Dense: _dense_onnx,
    Dropout: _dropout_onnx,
    Standardize: _standardize_onnx,
    LayerNorm: _layer_norm_onnx,
    BatchNorm: _batch_norm_onnx,
}


def _writer(layer: Layer, i: int) -> Callable[[OnnxGraph, str, Arrays, Arrays, int], str]:
    """The function writing ``layer``'s ONNX form, or a one-line error."""
    hook = getattr(layer, "onnx", None)
    if callable(hook):
        return hook  # type: ignore[no-any-return]
    built_in = _BUILT_IN.get(type(layer))
    if built_in is not None:
        return lambda *args: built_in(layer, *args)
    name = type(layer).__name__
    raise XbpValueError(
        f"net.layers[{i}] is a {name} (kind {layer.kind!r}) with no ONNX form; give "
        f"{name} a method onnx(self, graph, src, params, state, index) that adds its "
        "inference nodes and returns the output's name (see xbp.io.onnx.OnnxGraph)"
    )


def _layers_metadata(net: Network) -> str:
    """``xbp_layers``: ``n_in,n_out,activation`` per layer joined by ``;`` for a network
    of Dense layers (the format of xbp's first exports); otherwise the JSON list of
    the layers' configs, as xbp's model files hold them."""
    if net.plain:
        return ";".join(f"{d.n_in},{d.n_out},{d.activation}" for d in net.layers)  # type: ignore[attr-defined]
    return json.dumps([d.config() for d in net.layers])


def _check_standardize(standardize: Any, n_in: int, argument: str) -> Any:
    """``(mean, std)`` as float64 vectors of ``n_in`` finite values, std > 0; or None."""
    if standardize is None:
        return None
    try:
        mean, std = (np.asarray(v, dtype=np.float64) for v in standardize)
    except (TypeError, ValueError):
        raise XbpValueError(
            f"{argument} is not a pair (mean, std) of numeric vectors; pass (mean, std) or None"
        ) from None
    if mean.shape != (n_in,) or std.shape != (n_in,):
        raise XbpValueError(
            f"{argument} holds mean {mean.shape} and std {std.shape} but the network takes "
            f"{n_in} features; pass one value per feature"
        )
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise XbpValueError(f"{argument} holds NaN, Inf or a std <= 0; pass finite values, std > 0")
    return mean, std


def build_model(
    net: Network,
    *,
    opset: int = OPSET,
    standardize: Any = None,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """The ``onnx.ModelProto`` of ``net`` (checked by ``onnx.checker``), not written anywhere.

    See :func:`export_onnx` for the graph it holds and the arguments.
    """
    if not isinstance(net, Network):
        raise XbpTypeError(f"net is a {type(net).__name__}; pass an xbp.Network")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 13:
        # Softmax over one axis (not a flattened 2-D view) needs opset 13
        raise XbpValueError(f"opset={opset!r}; pass an integer >= 13 (default {OPSET})")
    scaling = _check_standardize(standardize, net.n_in, "standardize")
    writers = [_writer(layer, i) for i, layer in enumerate(net.layers)]
    for i, layer in enumerate(net.layers):
        if type(layer) is Dense and layer.activation not in ONNX_OPS:
            raise XbpValueError(
                f"net.layers[{i}] uses activation {layer.activation!r}, which has no ONNX "
                f"operator in xbp's exporter (it knows {sorted(ONNX_OPS)}); this network "
                "cannot be exported to ONNX"
            )
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    if opset > onnx.defs.onnx_opset_version():
        raise XbpValueError(
            f"opset={opset} is newer than the installed onnx {onnx.__version__} knows "
            f"({onnx.defs.onnx_opset_version()}); pass a lower opset or upgrade onnx"
        )
    dtype_name = net.config()["dtype"]
    kinds = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}
    if dtype_name not in kinds:
        raise XbpValueError(f"net has dtype {dtype_name}; ONNX export takes float32 or float64")
    dtype, elem = np.dtype(dtype_name), kinds[dtype_name]
    params, state = net.host_params(), net.host_state()
    size = sum(v.nbytes for arrays in (*params, *state) for v in arrays.values())
    if size > _MAX_WEIGHT_BYTES:
        raise XbpValueError(
            f"net has {size / 2**30:.2f} GiB of weights but an ONNX file holds under 2 GiB "
            "(protobuf's limit); export a smaller network or convert it to float32"
        )
    for what, arrays in (("params", params), ("state", state)):
        for i, entry in enumerate(arrays):
            for key, value in entry.items():
                if not np.isfinite(value).all():
                    raise XbpValueError(
                        f"net.{what}[{i}]['{key}'] contains NaN or Inf; refusing to export "
                        "broken weights (restore a good checkpoint or lower the learning rate)"
                    )
    graph = OnnxGraph(helper, numpy_helper, dtype, opset)
    src = "x"
    if scaling is not None:
        # the input scaling the CLI stores beside a model, as xbp predict applies it
        scale = graph.view("input")
        centred = scale.node("Sub", ["x", scale.constant("mean", scaling[0])])
        src = scale.node("Div", [centred, scale.constant("std", scaling[1])])
    for i, write in enumerate(writers):
        out = write(graph.view(f"layer{i}", i), src, params[i], state[i], i)
        if not graph.known(out):
            raise XbpValueError(
                f"net.layers[{i}]'s onnx hook returned {out!r}, which is no tensor of the "
                "graph; return the name node() gave the layer's output (or src)"
            )
        src = out
    _name_output(graph, helper, src)
    architecture = ", ".join(
        f"{d.n_in}->{d.n_out} {d.activation}" if type(d) is Dense else d.describe()
        for d in net.layers
    )
    model_graph = helper.make_graph(
        graph.nodes,
        "xbp_network",
        [helper.make_tensor_value_info("x", elem, ["N", net.n_in])],
        [helper.make_tensor_value_info("y", elem, ["N", net.n_out])],
        initializer=graph.initializers,
        doc_string=f"xbp Network([{architecture}], loss={net.loss.name!r}, dtype={dtype_name})",
    )
    from .. import __version__

    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        model_graph,
        opset_imports=opsets,
        producer_name="xbp",
        producer_version=__version__,
        # the oldest IR version the opset allows: runtimes older than this onnx read it
        ir_version=helper.find_min_ir_version_for(opsets),
    )
    helper.set_model_props(
        model,
        {
            "xbp_layers": _layers_metadata(net),
            "xbp_loss": net.loss.name,
            "xbp_dtype": dtype_name,
            "xbp_standardized_input": str(_standardizes_input(net, scaling)).lower(),
            **{str(k): json.dumps(v) for k, v in _names_of(net).items()},
            **{str(k): json.dumps(v) for k, v in (metadata or {}).items()},
        },
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        # only a user's onnx hook can write an invalid node: say so in one line
        first = " ".join(str(exc).split())[:300]
        raise XbpValueError(
            f"the ONNX graph of net fails onnx.checker ({first}); check the onnx hooks of "
            "the network's own layers"
        ) from None
    return model


def _standardizes_input(net: Network, scaling: Any) -> bool:
    """Whether the graph standardises its raw input: the CLI's scaling or a first
    Standardize layer (``xbp_standardized_input``)."""
    return scaling is not None or type(net.layers[0]) is Standardize


def _name_output(graph: OnnxGraph, helper: Any, src: str) -> None:
    """Make the tensor ``src`` the graph's output ``y``: its node writes ``y`` directly
    (an ``Identity`` only where no node makes it, e.g. a network of dropouts)."""
    producer = [n for n in graph.nodes if src in n.output]
    if not producer:
        graph.nodes.append(helper.make_node("Identity", [src], ["y"], name="output"))
        return
    for node in graph.nodes:
        for names in (node.input, node.output):
            for k, name in enumerate(names):
                if name == src:
                    names[k] = "y"


def _names_of(net: Network) -> dict[str, Any]:
    """The class and feature names the network keeps, as ONNX metadata entries."""
    out: dict[str, Any] = {}
    if net.classes is not None:
        out["xbp_classes"] = [str(c) for c in net.classes]
    if net.feature_names is not None:
        out["xbp_feature_names"] = list(net.feature_names)
    return out


def _names_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The names ``xbp train`` recorded beside a model, as ONNX metadata entries."""
    out: dict[str, Any] = {}
    if isinstance(meta.get("classes"), list):
        out["xbp_classes"] = [str(c) for c in meta["classes"]]
    features = meta.get("features")
    if isinstance(features, dict) and isinstance(features.get("names"), list):
        out["xbp_feature_names"] = [str(n) for n in features["names"]]
    label = meta.get("label")
    if (
        isinstance(label, dict)
        and label.get("name") is not None
        and meta.get("task") == "regression"
    ):
        name = label["name"]
        out["xbp_target_names"] = [str(name)] if isinstance(name, str) else [str(n) for n in name]
    return out


def export_onnx(
    net: Network,
    path: str | os.PathLike[str],
    *,
    opset: int = OPSET,
    standardize: Any = None,
    argument: str = "path",
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``net`` as an ONNX model to ``path`` (atomically) and return the path.

    Each layer is written in its inference form (what ``net.predict`` computes):

    * :class:`~xbp.nn.Dense`: one ``Gemm`` followed by its activation: sigmoid ->
      ``Sigmoid``, tanh -> ``Tanh``, relu -> ``Relu``, leaky_relu ->
      ``LeakyRelu(alpha=0.01)``, softplus -> ``Softplus``, identity -> no node,
      softmax -> ``Softmax(axis=-1)``. Its input dropout adds nothing.
    * :class:`~xbp.nn.Dropout`: nothing (the identity in inference).
    * :class:`~xbp.nn.Standardize`: ``(x - mean) / std`` (``Sub``, ``Div``) with the
      adapted mean and std as initializers.
    * :class:`~xbp.nn.LayerNorm`: ``LayerNormalization(axis=-1, epsilon=eps)``
      (an opset 17 operator); before opset 17, and in float64, the same
      equations in ``ReduceMean``, ``Sub``, ``Mul``, ``Add``, ``Sqrt``,
      ``Reciprocal``.
    * :class:`~xbp.nn.BatchNorm`: ``BatchNormalization(epsilon=eps)`` with the running
      mean and variance (inference mode, never the batch's statistics); in
      float64 ``(x - mean) * scale + beta`` (``Sub``, ``Mul``, ``Add``) with
      ``scale = gamma / sqrt(var + eps)`` computed in float64.
    * a user's own layer (:func:`xbp.register_layer`): what its
      ``onnx(self, graph, src, params, state, index)`` method writes (see
      :class:`OnnxGraph`); a layer without it is refused with a one-line error.

    ONNX's ``epsilon`` attributes are float32, which would move a float64
    model's eps (1e-3 by 5e-11): float64 norms are spelled out so the model
    keeps xbp's numbers. Input ``x`` is ``[N, n_in]`` with a symbolic batch
    dimension, output ``y`` is ``[N, n_out]``, both of the network's dtype
    (float32 or float64). The model's metadata keeps the loss
    (``xbp_loss``), the dtype (``xbp_dtype``), whether the graph standardises
    its raw input (``xbp_standardized_input``: the ``standardize=`` scaling or
    a first Standardize layer) and the layers (``xbp_layers``: for a network
    of Dense layers ``n_in,n_out,activation`` per layer joined by ``;``,
    otherwise the JSON list of the layers' configs, as xbp's model files hold
    them). The model declares ONNX opset 17 (``opset=``, 13 or later,
    overrides it). With ``standardize=(mean, std)`` the graph first computes
    ``(x - mean) / std`` (``Sub``, ``Div``), so it takes raw features as
    ``xbp predict`` does for a model trained by ``xbp train``.
    ``metadata`` adds JSON-able entries to the model's metadata (JSON text per
    key); :func:`export_file` (``xbp export``) writes the class names
    (``xbp_classes``, in the order of the output columns), the feature names
    (``xbp_feature_names``) and the target names (``xbp_target_names``) that
    ``xbp train`` recorded.

    onnxruntime has no double-precision ``Softplus``, so a float64 softplus
    layer is written as ``Relu(z) + Log(1 + Exp(-Abs(z)))``, the formula xbp
    computes. ``LeakyRelu``'s ``alpha`` is a float32 attribute in ONNX: in
    float64 models negative inputs are scaled by 0.01 rounded to float32
    (a relative difference of 2e-8).

    Parameters
    ----------
    net : Network
        Any backend and device: the weights are copied to the host.
    path : str or Path
        The ``.onnx`` file to write; an existing regular file is replaced.
    opset : int
        The ONNX opset to declare (default :data:`OPSET`, 17).
    standardize : (mean, std), optional
        Per-feature input scaling to put in front of the first layer.
    argument : str
        The name error messages give ``path``.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    XbpValueError
        ``onnx`` is not installed, the weights or a layer's state are not
        finite, a layer's activation has no ONNX operator, a user's layer
        has no ``onnx`` hook (or its hook writes an invalid graph),
        ``standardize`` does not fit, or the path cannot be written.

    Examples
    --------
    >>> import os, tempfile, numpy as np, xbp
    >>> from xbp.io.onnx import export_onnx
    >>> net = xbp.mlp([4, 8, 3], activation="relu", loss="cross_entropy", seed=0)
    >>> path = export_onnx(net, os.path.join(tempfile.mkdtemp(), "net.onnx"))
    >>> import onnxruntime as ort
    >>> session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    >>> x = np.random.default_rng(0).normal(size=(5, 4))
    >>> y = session.run(["y"], {"x": x})[0]
    >>> bool(np.allclose(y, net.predict(x), atol=1e-12))
    True
    """
    if not isinstance(net, Network):
        raise XbpTypeError(f"net is a {type(net).__name__}; pass an xbp.Network")
    given = as_path(path, argument)
    # before any work: a bad directory or name fails at once, not after building the model
    output_file(given, argument)
    model = build_model(net, opset=opset, standardize=standardize, metadata=metadata)
    data = model.SerializeToString()

    from . import atomic_write

    return atomic_write(given, lambda f: f.write(data), argument)


def export_file(
    model_path: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str],
    *,
    opset: int = OPSET,
    model_argument: str = "model_path",
    onnx_argument: str = "onnx_path",
) -> str:
    """Export the xbp model file ``model_path`` (written by :func:`xbp.save`) to ONNX.

    What ``xbp export model.npz model.onnx`` runs. The ONNX file may not be the
    model file itself (nor a link to it): that would destroy the model. A
    model trained by ``xbp train`` keeps its input scaling in its header;
    the ONNX graph then standardises its input the same way, so it takes
    raw features and predicts what ``xbp predict`` does.

    Parameters
    ----------
    model_path : str or Path
        An ``.npz`` written by :func:`xbp.save` (or a checkpoint).
    onnx_path : str or Path
        The ONNX file to write.
    opset : int
        The ONNX opset (default 17).
    model_argument, onnx_argument : str
        The names error messages give the two paths (the CLI passes its own).

    Returns
    -------
    str
        A one-line summary: the file written, opset, dtype, layers, loss,
        parameters, whether the input is standardised, size.

    Examples
    --------
    >>> import os, tempfile, xbp
    >>> from xbp.io.onnx import export_file
    >>> d = tempfile.mkdtemp()
    >>> _ = xbp.save(xbp.mlp([2, 3, 1], seed=0), os.path.join(d, "m.npz"))
    >>> summary = export_file(os.path.join(d, "m.npz"), os.path.join(d, "m.onnx"))
    >>> print(summary.split(": ", 1)[1].split(", inputs")[0])
    ONNX opset 17, float64, 2-3-1 (sigmoid, identity), loss quadratic, 13 parameters
    """
    from . import load_checkpoint

    src = as_path(model_path, model_argument)
    dst = as_path(onnx_path, onnx_argument)
    output_file(dst, onnx_argument)
    check_distinct({model_argument: src}, {onnx_argument: dst})
    loaded = load_checkpoint(src, "numpy", argument=model_argument)
    net, scaling = loaded.network, loaded.metadata.get("standardize") or None
    if scaling is not None:
        where = f"{label(model_argument, src)}'s 'standardize' header entry"
        if not isinstance(scaling, dict) or not {"mean", "std"} <= set(scaling):
            raise XbpFileError(f"{where} is corrupt: it is not {{'mean': [...], 'std': [...]}}")
        try:
            scaling = _check_standardize((scaling["mean"], scaling["std"]), net.n_in, where)
        except XbpValueError as exc:
            raise XbpFileError(str(exc)) from None
    written = export_onnx(
        net,
        dst,
        opset=opset,
        standardize=scaling,
        argument=onnx_argument,
        metadata=_names_metadata(loaded.metadata),
    )
    n_params = sum(v.size for p in net.host_params() for v in p.values())
    size = os.path.getsize(written)
    acts = ", ".join(d.describe() for d in net.layers)
    widths = "-".join(str(s) for s in net.sizes)
    inputs = "standardised in the graph" if _standardizes_input(net, scaling) else "as given"
    return (
        f"wrote {str(written)!r}: ONNX opset {opset}, {net.config()['dtype']}, {widths} "
        f"({acts}), loss {net.loss.name}, {n_params} parameters, inputs {inputs}, {size} bytes"
    )
