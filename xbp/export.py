"""ONNX export: hand a trained network to any runtime that reads ONNX.

A network becomes one ``Gemm`` node per layer (``y = x @ W + b``, with ``W``
stored as xbp keeps it, ``(n_in, n_out)``) followed by its activation node.
The graph takes ``x`` of shape ``[N, n_in]`` with a symbolic batch dimension
``N`` and returns ``y`` of shape ``[N, n_out]``: exactly :meth:`xbp.Network.predict`.

The model uses the default ONNX domain at opset :data:`OPSET` (17, which
current runtimes, converters and accelerators read) and the oldest IR
version that opset allows (8), so older runtimes read it too. Tested with
onnxruntime 1.17 to 1.32 in float32 and 1.18 to 1.32 in float64 (1.17's graph
optimizer fuses ``Gemm`` and its activation into a float-only kernel).

The ``onnx`` package is an optional dependency: ``pip install 'xbp[onnx]'``
(which also brings ``onnxruntime`` to run the exported model).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import XbpFileError, XbpTypeError, XbpValueError
from .network import Dense, Network
from .paths import as_path, check_distinct, label, output_file

__all__ = ["export_onnx", "export_file", "build_model", "OPSET", "ONNX_OPS"]

#: The ONNX opset every exported model declares (default domain).
OPSET = 17

#: The ONNX operator each activation becomes; identity adds no node.
ONNX_OPS: dict[str, str | None] = {
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "relu": "Relu",
    "leaky_relu": "LeakyRelu",
    "softplus": "Softplus",
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


def _activation_nodes(
    helper: Any, name: str, i: int, src: str, dst: str, dtype: np.dtype
) -> list[Any]:
    """The nodes computing activation ``name`` of layer ``i`` from ``src`` into ``dst``."""
    from .activations import LEAKY_SLOPE

    prefix = f"layer{i}"
    if name == "leaky_relu":
        return [helper.make_node("LeakyRelu", [src], [dst], name=prefix, alpha=LEAKY_SLOPE)]
    if name == "softmax":
        # opset >= 13: Softmax normalises along one axis, the classes of each row
        return [helper.make_node("Softmax", [src], [dst], name=prefix, axis=-1)]
    if name == "softplus" and dtype == np.float64:
        # onnxruntime has no double kernel for Softplus: spell it as xbp computes it,
        # max(z, 0) + log(1 + exp(-|z|)), which never overflows
        t = [f"{prefix}/softplus_{k}" for k in range(5)]
        return [
            helper.make_node("Abs", [src], [t[0]], name=f"{prefix}/abs"),
            helper.make_node("Neg", [t[0]], [t[1]], name=f"{prefix}/neg"),
            helper.make_node("Exp", [t[1]], [t[2]], name=f"{prefix}/exp"),
            helper.make_node("Add", [t[2], f"{prefix}/one"], [t[3]], name=f"{prefix}/add1"),
            helper.make_node("Log", [t[3]], [t[4]], name=f"{prefix}/log"),
            helper.make_node("Relu", [src], [f"{prefix}/relu"], name=f"{prefix}/relu"),
            helper.make_node("Add", [f"{prefix}/relu", t[4]], [dst], name=prefix),
        ]
    op = ONNX_OPS[name]
    assert op is not None
    return [helper.make_node(op, [src], [dst], name=prefix)]


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


def build_model(net: Network, *, opset: int = OPSET, standardize: Any = None) -> Any:
    """The ``onnx.ModelProto`` of ``net`` (checked by ``onnx.checker``), not written anywhere.

    See :func:`export_onnx` for the graph it holds and the arguments.
    """
    if not isinstance(net, Network):
        raise XbpTypeError(f"net is a {type(net).__name__}; pass an xbp.Network")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 13:
        # Softmax over one axis (not a flattened 2-D view) needs opset 13
        raise XbpValueError(f"opset={opset!r}; pass an integer >= 13 (default {OPSET})")
    scaling = _check_standardize(standardize, net.n_in, "standardize")
    for i, layer in enumerate(net.layers):
        if not isinstance(layer, Dense):
            raise XbpValueError(
                f"net.layers[{i}] is a {type(layer).__name__}, which xbp's exporter cannot "
                "write yet; export a network of Dense layers"
            )
        if layer.activation not in ONNX_OPS:
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
    params = net.host_params()
    size = sum(v.nbytes for p in params for v in p.values())
    if size > _MAX_WEIGHT_BYTES:
        raise XbpValueError(
            f"net has {size / 2**30:.2f} GiB of weights but an ONNX file holds under 2 GiB "
            "(protobuf's limit); export a smaller network or convert it to float32"
        )
    initializers, nodes = [], []
    src, last = "x", len(net.layers) - 1
    if scaling is not None:
        # the input scaling the CLI stores beside a model, as xbp predict applies it
        for key, value in zip(("mean", "std"), scaling):
            initializers.append(numpy_helper.from_array(value.astype(dtype), name=f"input.{key}"))
        nodes.append(helper.make_node("Sub", ["x", "input.mean"], ["x/centred"], name="input/sub"))
        nodes.append(
            helper.make_node("Div", ["x/centred", "input.std"], ["x/scaled"], name="input")
        )
        src = "x/scaled"
    dense = [d for d in net.layers if isinstance(d, Dense)]
    for i, (layer, p) in enumerate(zip(dense, params)):
        for key, value in p.items():
            if not np.isfinite(value).all():
                raise XbpValueError(
                    f"net.params[{i}]['{key}'] contains NaN or Inf; refusing to export broken "
                    "weights (restore a good checkpoint or lower the learning rate)"
                )
            array = np.ascontiguousarray(value, dtype=dtype)
            initializers.append(numpy_helper.from_array(array, name=f"layer{i}.{key}"))
        act = layer.activation
        z = "y" if i == last and act == "identity" else f"layer{i}/z"
        nodes.append(
            helper.make_node(
                "Gemm", [src, f"layer{i}.W", f"layer{i}.b"], [z], name=f"layer{i}/gemm"
            )
        )
        if act != "identity":
            a = "y" if i == last else f"layer{i}/a"
            if act == "softplus" and dtype == np.float64:
                one = numpy_helper.from_array(np.ones((), dtype), name=f"layer{i}/one")
                initializers.append(one)
            nodes.extend(_activation_nodes(helper, act, i, z, a, dtype))
            z = a
        src = z
    architecture = ", ".join(f"{d.n_in}->{d.n_out} {d.activation}" for d in dense)
    graph = helper.make_graph(
        nodes,
        "xbp_network",
        [helper.make_tensor_value_info("x", elem, ["N", net.n_in])],
        [helper.make_tensor_value_info("y", elem, ["N", net.n_out])],
        initializer=initializers,
        doc_string=f"xbp Network([{architecture}], loss={net.loss.name!r}, dtype={dtype_name})",
    )
    from . import __version__

    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="xbp",
        producer_version=__version__,
        # the oldest IR version the opset allows: runtimes older than this onnx read it
        ir_version=helper.find_min_ir_version_for(opsets),
    )
    helper.set_model_props(
        model,
        {
            "xbp_layers": ";".join(f"{d.n_in},{d.n_out},{d.activation}" for d in dense),
            "xbp_loss": net.loss.name,
            "xbp_dtype": dtype_name,
            "xbp_standardized_input": str(scaling is not None).lower(),
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(
    net: Network,
    path: str | os.PathLike[str],
    *,
    opset: int = OPSET,
    standardize: Any = None,
    argument: str = "path",
) -> Path:
    """Write ``net`` as an ONNX model to ``path`` (atomically) and return the path.

    The graph is one ``Gemm`` per layer followed by its activation: sigmoid ->
    ``Sigmoid``, tanh -> ``Tanh``, relu -> ``Relu``, leaky_relu ->
    ``LeakyRelu(alpha=0.01)``, softplus -> ``Softplus``, identity -> no node,
    softmax -> ``Softmax(axis=-1)``. Input ``x`` is ``[N, n_in]`` with a
    symbolic batch dimension, output ``y`` is ``[N, n_out]``, both of the
    network's dtype (float32 or float64); the loss, the layers and the dtype
    are kept in the model's metadata (``xbp_loss``, ``xbp_layers``,
    ``xbp_dtype``). The model declares ONNX opset 17 (``opset=``, 13 or
    later, overrides it). With ``standardize=(mean, std)`` the graph first
    computes ``(x - mean) / std`` (``Sub``, ``Div``), so it takes raw
    features as ``xbp predict`` does for a model trained by ``xbp train``.

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
        ``onnx`` is not installed, the weights are not finite, a layer's
        activation has no ONNX operator, ``standardize`` does not fit, or
        the path cannot be written.

    Examples
    --------
    >>> import os, tempfile, numpy as np, xbp
    >>> from xbp.export import export_onnx
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
    model = build_model(net, opset=opset, standardize=standardize)
    data = model.SerializeToString()

    from .io import atomic_write

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
    >>> from xbp.export import export_file
    >>> d = tempfile.mkdtemp()
    >>> _ = xbp.save(xbp.mlp([2, 3, 1], seed=0), os.path.join(d, "m.npz"))
    >>> summary = export_file(os.path.join(d, "m.npz"), os.path.join(d, "m.onnx"))
    >>> print(summary.split(": ", 1)[1].split(", inputs")[0])
    ONNX opset 17, float64, 2-3-1 (sigmoid, identity), loss quadratic, 13 parameters
    """
    from .io import load_checkpoint

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
    written = export_onnx(net, dst, opset=opset, standardize=scaling, argument=onnx_argument)
    n_params = sum(v.size for p in net.host_params() for v in p.values())
    size = os.path.getsize(written)
    acts = ", ".join(d.describe() for d in net.layers)
    widths = "-".join(str(s) for s in net.sizes)
    inputs = "standardised in the graph" if scaling is not None else "as given"
    return (
        f"wrote {str(written)!r}: ONNX opset {opset}, {net.config()['dtype']}, {widths} "
        f"({acts}), loss {net.loss.name}, {n_params} parameters, inputs {inputs}, {size} bytes"
    )
