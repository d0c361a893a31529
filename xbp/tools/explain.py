"""One sample's forward pass, backward pass and SGD update, written out number by number.

:func:`explain` prints, layer by layer and in the notation of
``docs/math.md``: ``W_l``, ``b_l``, ``Z_l = A_{l-1} W_l + b_l``,
``A_l = phi(Z_l)``, the output error ``delta_L``, each hidden error
``delta_l = (delta_{l+1} W_{l+1}^T) * phi'(Z_l)``, ``dC/dW_l = A_{l-1}^T delta_l``,
``dC/db_l = delta_l`` and the weights after one SGD step, in scientific
notation with enough digits to redo every product by hand.

Every number comes from the network itself: ``Z_l`` and ``A_l`` from
:meth:`Network.layer_outputs`, the cost and the gradients from
:meth:`Network.value_and_grad` (the one backprop kernel). The errors
``delta_l`` are computed here from the printed equations, on the host, and
checked against the kernel: with one sample ``dC/db_l = delta_l`` exactly, so
the two must agree to rounding.
"""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as cnp
import numpy as np

from ..errors import XbpTypeError, XbpValueError
from ..nn.activations import get_activation
from ..nn.layers import Standardize
from ..nn.network import Network
from ..nn.targets import encode_labels
from ..nn.validate import check_int, check_number
from .gradcheck import gradcheck

__all__ = ["explain", "DERIVATIVES"]

#: How each built-in activation's derivative is written (from A, exact).
DERIVATIVES = {
    "sigmoid": "A (1 - A)",
    "tanh": "1 - A^2",
    "relu": "1 where A > 0, else 0",
    "leaky_relu": "1 where A > 0, else 0.01",
    "softplus": "1 - exp(-A)",
    "identity": "1",
}

#: ``value_and_grad`` vs the equations here: float64 rounding, with room for deep nets.
AGREEMENT = {"float64": 1e-12, "float32": 1e-5}


def _fmt(v: float, digits: int) -> str:
    return f"{v: .{digits - 1}e}"


def _array(a: np.ndarray, digits: int, limit: int, indent: int) -> str:
    """A vector on one line, a matrix one row per line; ``limit`` rows/columns at most."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 1:
        cells = [_fmt(v, digits) for v in a[:limit]]
        more = " ..." if a.size > limit else ""
        return "[" + " ".join(cells) + more + "]"
    rows = []
    for r in a[:limit]:
        cells = [_fmt(v, digits) for v in r[:limit]]
        rows.append("[" + " ".join(cells) + (" ..." if a.shape[1] > limit else "") + "]")
    if a.shape[0] > limit:
        rows.append(" ...")
    pad = "\n" + " " * (indent + 1)
    return "[" + pad.join(rows) + "]"


def _derivative_text(name: str, l: int, from_z: bool) -> str:
    if name in DERIVATIVES:
        return DERIVATIVES[name].replace("A", f"A_{l}")
    return f"{name}'(Z_{l})" + (" from Z" if from_z else f" from A_{l}")


def explain(
    net: Network,
    x: Any,
    y: Any,
    *,
    learning_rate: float = 0.5,
    digits: int = 7,
    limit: int = 8,
    check: bool = False,
    title: str | None = None,
) -> str:
    """One sample's forward pass, backward pass and SGD step, in numbers.

    Parameters
    ----------
    net : Network
    x : array, shape (1, n_in)
        One sample (NumPy or the network's backend).
    y : array, shape (1, n_out), or (1,) integer class label
    learning_rate : float
        eta of the SGD step shown at the end.
    digits : int
        Significant digits of every number (scientific notation).
    limit : int
        Rows and columns shown of larger arrays.
    check : bool
        Also compare the gradients with central finite differences
        (:func:`xbp.tools.gradcheck`, every entry) and print the largest error.
    title : str, optional
        The first line (default: the network's ``repr``).

    Returns
    -------
    str
        The text ``xbp explain`` prints.

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.make_xor()
    >>> net = xbp.mlp([2, 3, 1], output="sigmoid", seed=0)
    >>> print(xbp.explain(net, x[2:3], y[2:3]).splitlines()[-1])
      b_2 = [ 4.858081e-02]
    """
    if not isinstance(net, Network):
        raise XbpTypeError(f"net is a {type(net).__name__}; pass an xbp.Network")
    check_number(learning_rate, "learning_rate")
    digits = check_int(digits, "digits")
    limit = check_int(limit, "limit")
    if not 2 <= digits <= 17:
        raise XbpValueError(f"digits={digits} must lie in 2..17 (float64 holds 17 digits)")
    if len(net.layers) > 1 and isinstance(net.layers[0], Standardize):
        tail, xs, ys = _after_standardize(net, x, y)
        text = explain(
            tail, xs, ys, learning_rate=learning_rate, digits=digits, limit=limit, check=check
        )
        return (
            "x is first standardised by the model's Standardize layer, x <- (x - mean) / std "
            "(no parameters, so no gradient); the steps below start from that x\n" + text
        )
    if not net.plain:
        raise XbpValueError(
            "explain writes out the equations of Dense layers only; this network has "
            f"{', '.join(sorted({d.kind for d in net.layers} - {'dense'}))} layers "
            "(docs/math.md gives their equations)"
        )
    if net.precision != "exact":
        # the equations are written out in the network's own dtype; products rounded to
        # bfloat16/float16 (or TF32) would not match them: explain the exact arithmetic
        policy = net.precision
        net.precision = "exact"
        try:
            text = explain(
                net,
                x,
                y,
                learning_rate=learning_rate,
                digits=digits,
                limit=limit,
                check=check,
                title=title,
            )
        finally:
            net.precision = policy
        lines = text.split("\n")
        lines.insert(
            3,
            f"precision: this network trains with precision={policy!r} (products rounded to "
            f"{_ROUNDED.get(policy, policy)}); shown here in exact "
            f"{net.backend.dtype_name(net.dtype)} arithmetic, "
            "by the same equations",
        )
        return "\n".join(lines)
    be = net.backend
    xd = net.check_inputs(x)
    if xd.shape[0] != 1:
        raise XbpValueError(
            f"x has {xd.shape[0]} rows; explain shows one sample: pass x[i:i+1] and y[i:i+1]"
        )
    yd = net.check_targets(y, 1)
    host = net.host_params()
    layers = [
        (np.asarray(be.to_host(z)), np.asarray(be.to_host(a))) for z, a in net.layer_outputs(xd)
    ]
    cost, grads, _ = net.value_and_grad(xd, yd)
    g = [{k: np.asarray(be.to_host(v)) for k, v in p.items()} for p in grads]
    x0 = np.asarray(be.to_host(xd))
    yh = np.asarray(be.to_host(yd))
    acts = [get_activation(d.activation) for d in net.layers]  # type: ignore[attr-defined]
    L = len(net.layers)

    def show(label: str, value: np.ndarray, note: str = "") -> str:
        text = _array(value, digits, limit, len(label) + 3)
        return f"{label} = {text}{('   ' + note) if note else ''}"

    out = [title or f"explain: one sample through {net!r}"]
    out.append(
        "notation (docs/math.md): rows are samples, here n = 1; Z_l = A_{l-1} W_l + b_l, "
        "A_l = phi_l(Z_l), delta_l = dC/dZ_l"
    )
    out.append(
        f"numbers: {digits} significant digits; arrays of more than {limit} rows or "
        "columns are cut with ..."
    )
    dropped = [f"layer {l + 1}: {d.dropout:g}" for l, d in enumerate(net.layers) if d.dropout]
    if dropped:
        out.append(
            f"dropout ({', '.join(dropped)}): training zeroes inputs at random; this step is "
            "shown without dropout, as evaluation and prediction run"
        )
    out.append("")
    out.append(show("A_0 = x", x0))
    out.append(show("y      ", yh))
    out.append("")
    out.append("-- forward pass --")
    for l in range(1, L + 1):
        z, a = layers[l - 1]
        w, b = host[l - 1]["W"], host[l - 1]["b"]
        out.append(
            f"layer {l}: {net.layers[l - 1].n_in} -> {net.layers[l - 1].n_out}, {acts[l - 1].name}"
        )
        out.append(show(f"  W_{l}", w, f"shape {w.shape}"))
        out.append(show(f"  b_{l}", b))
        out.append(show(f"  Z_{l} = A_{l - 1} W_{l} + b_{l}", z))
        out.append(show(f"  A_{l} = {acts[l - 1].name}(Z_{l})", a))
    out.append("")
    out.append(f"C ({net.loss.name}) = {_fmt(float(cost), digits).strip()}")
    out.append("")
    out.append("-- backward pass --")
    deltas: dict[int, np.ndarray] = {}
    zL, aL = layers[-1]
    act = acts[-1]
    if net.loss.fused_forward is not None or (
        net.loss.name == "binary_cross_entropy" and act.name == "sigmoid"
    ):
        delta = aL - yh
        out.append(
            f"delta_{L} = (A_{L} - y) / n   ({act.name} + {net.loss.name}: phi' cancels against "
            "dC/dA, docs/math.md)"
        )
        out.append(show(f"  delta_{L}", delta))
    elif net.loss.name == "quadratic":
        diff = aL - yh
        dphi = _phi_prime(act, zL, aL)
        delta = diff * dphi
        out.append(f"delta_{L} = (A_{L} - y) * {act.name}'(Z_{L}) / n")
        out.append(show(f"  A_{L} - y", diff))
        out.append(
            show(f"  {act.name}'(Z_{L}) = {_derivative_text(act.name, L, act.from_z)}", dphi)
        )
        out.append(show(f"  delta_{L}", delta))
    else:  # a registered loss: its own output error, through the loss seam
        _, delta = net.loss.value_and_delta(cnp, zL + 0, aL + 0, yh, 1, act, None)
        delta = np.asarray(delta)
        out.append(
            f"delta_{L} = the output error of loss {net.loss.name!r} / n   (its registered "
            f"dC/dA times {act.name}'(Z_{L}), or its own dC/dZ)"
        )
        out.append(show(f"  delta_{L}", delta))
    deltas[L] = delta
    for l in range(L, 0, -1):
        if l < L:
            back = deltas[l + 1] @ host[l]["W"].T
            z, a = layers[l - 1]
            dphi = _phi_prime(acts[l - 1], z, a)
            deltas[l] = back * dphi
            name = acts[l - 1].name
            out.append(f"delta_{l} = (delta_{l + 1} W_{l + 1}^T) * {name}'(Z_{l})")
            out.append(show(f"  delta_{l + 1} W_{l + 1}^T", back))
            out.append(
                show(f"  {name}'(Z_{l}) = {_derivative_text(name, l, acts[l - 1].from_z)}", dphi)
            )
            out.append(show(f"  delta_{l}", deltas[l]))
        out.append(show(f"  dC/db_{l} = delta_{l}", g[l - 1]["b"]))
        out.append(show(f"  dC/dW_{l} = A_{l - 1}^T delta_{l}", g[l - 1]["W"]))
    out.append("")
    out.append(f"-- one SGD step, eta = {learning_rate:g}: W_l - eta dC/dW_l, b_l - eta dC/db_l --")
    for l in range(1, L + 1):
        out.append(show(f"  W_{l}", host[l - 1]["W"] - learning_rate * g[l - 1]["W"]))
        out.append(show(f"  b_{l}", host[l - 1]["b"] - learning_rate * g[l - 1]["b"]))
    # the equations above against the kernel: with n = 1, dC/db_l is delta_l itself
    scale = max(float(np.max(np.abs(d))) for d in deltas.values()) or 1.0
    worst = max(float(np.max(np.abs(deltas[l] - g[l - 1]["b"]))) for l in deltas) / scale
    tol = AGREEMENT.get(be.dtype_name(net.dtype), 1e-5)
    if not worst <= tol:
        raise AssertionError(
            f"the deltas of the equations differ from value_and_grad's by {worst:.3e}"
        )
    if check:
        out.append("")
        out.append(
            "-- check: central finite differences (xbp.tools.gradcheck, float64, eps 1e-6) --"
        )
        errors = gradcheck(net, x0, yh, max_checks=None, raise_on_failure=False)
        for key, err in errors.items():
            i, kind = key[len("layer") :].split(".")
            out.append(
                f"  dC/d{kind}_{int(i) + 1}: max |finite difference - backprop| / "
                f"max|gradient| = {err:.2e}"
            )
        out.append(
            f"  max error {max(errors.values()):.2e}; the equations' deltas agree with "
            f"value_and_grad within {worst:.1e}"
        )
        out.extend(_kink_notes(acts, layers))
    return "\n".join(out)


#: activations whose derivative jumps at Z = 0
KINKS = ("relu", "leaky_relu")
#: what each policy rounds matrix products to (the ``precision`` note)
_ROUNDED = {"bf16": "bfloat16", "fp16": "float16", "tf32": "TensorFloat-32"}
KINK_WIDTH = 1e-4  # |Z| this close to a kink: a finite difference may straddle it


def _kink_notes(acts: list[Any], layers: list[tuple[np.ndarray, np.ndarray]]) -> list[str]:
    """A warning for each layer whose ``Z`` sits at its activation's kink."""
    notes = []
    for l, (act, (z, _)) in enumerate(zip(acts, layers), start=1):
        if act.name in KINKS and bool(np.any(np.abs(z) < KINK_WIDTH)):
            notes.append(
                f"  warning: Z_{l} has entries within {KINK_WIDTH:g} of {act.name}'s kink at 0, "
                "where phi' jumps: the finite-difference check is not meaningful there (a large "
                "error is expected); pick another --sample, or non-zero inputs and biases"
            )
    return notes


def _phi_prime(act: Any, z: np.ndarray, a: np.ndarray) -> np.ndarray:
    """phi'(Z) on the host, by the activation's own derivative rule."""
    if act.derivative is None:
        return np.ones_like(a)
    return np.asarray(act.derivative(cnp, (z if act.from_z else a) + 0))


def _after_standardize(net: Network, x: Any, y: Any) -> tuple[Network, np.ndarray, Any]:
    """The network after its leading Standardize layer (sharing its parameters), the
    standardised sample, and the targets as that network takes them."""
    state = net.host_state()[0]
    xs = np.asarray(net.backend.to_host(net.check_inputs(x)), dtype=np.float64) - state["mean"]
    xs = xs / state["std"]
    tail = Network(
        net.layers[1:],
        loss=net.loss.name,
        backend=net.backend,
        dtype=net.backend.dtype_name(net.dtype),
        seed=net.seed,
        init=net.init,
    )
    tail.params = [dict(p) for p in net.host_params()[1:]]
    if net.classes is not None and getattr(y, "ndim", 1) == 1:
        y = encode_labels(y, net.classes)
    return tail, xs, y
