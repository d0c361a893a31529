"""Central finite differences against backprop, computed in float64."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import GradcheckError
from ..nn.network import Network
from ..nn.validate import check_int, check_number

__all__ = ["gradcheck"]


def gradcheck(
    net: Network,
    x: Any,
    y: Any,
    *,
    eps: float = 1e-6,
    tol: float = 1e-6,
    max_checks: int | None = 200,
    seed: int = 0,
    raise_on_failure: bool = True,
) -> dict[str, float]:
    """Compare backprop's gradients with central finite differences.

    The check runs in float64 on the network's own backend and device (a
    float32 network is copied to float64 first). For each parameter array the
    error is ``max|g_fd - g_bp|`` divided by the largest gradient entry of the
    whole network (the same normalisation as the cross-backend fidelity
    targets): a layer whose gradients are all tiny is then not judged by the
    rounding noise of the finite differences (about 1e-16 * C / eps).

    Parameters
    ----------
    net : Network
    x, y : arrays
        A small batch (NumPy or the network's backend).
    eps : float
        Step of the central difference ``(C(w + eps) - C(w - eps)) / (2 eps)``.
    tol : float
        Largest accepted relative error.
    max_checks : int or None
        Entries checked per array, drawn at random (seeded) when an array is
        larger; None checks every entry.
    raise_on_failure : bool
        Raise :class:`xbp.errors.GradcheckError` with a report when any array
        fails; otherwise just return the errors.

    Returns
    -------
    dict
        ``{"layer0.W": err, "layer0.b": err, ...}``

    Examples
    --------
    >>> import numpy as np, xbp
    >>> net = xbp.mlp([3, 4, 2], activation="tanh", loss="cross_entropy", seed=0)
    >>> rng = np.random.default_rng(0)
    >>> errs = xbp.tools.gradcheck(net, rng.normal(size=(5, 3)), np.array([0, 1, 1, 0, 1]))
    >>> max(errs.values()) < 1e-6
    True
    """
    check_number(eps, "eps")
    check_number(tol, "tol")
    if max_checks is not None:
        check_int(max_checks, "max_checks")
    net64 = net.to(dtype="float64")
    be = net64.backend
    xd = net64.check_inputs(x)
    yd = net64.check_targets(y, xd.shape[0])
    _, grads, _ = net64.value_and_grad(xd, yd)
    host = net64.host_params()
    rng = np.random.default_rng(seed)
    diffs: dict[str, float] = {}
    scale = 0.0
    for i, p in enumerate(host):
        for key in p:
            g_bp = be.to_host(grads[i][key]).ravel()
            flat = p[key].ravel()
            idx = np.arange(flat.size)
            if max_checks is not None and flat.size > max_checks:
                idx = np.sort(rng.choice(flat.size, max_checks, replace=False))
            g_fd = np.empty(idx.size)
            trial = [dict(q) for q in net64.params]  # device arrays, all but one reused
            for j, k in enumerate(idx):
                costs = []
                for sign in (1.0, -1.0):
                    t = flat.copy()
                    t[k] += sign * eps
                    trial[i][key] = be.asarray(t.reshape(p[key].shape), net64.dtype)
                    # training=True: the function differentiated (batch statistics)
                    cost = net64.value_and_grad(
                        xd, yd, params=trial, forward_only=True, training=True
                    )[0]
                    costs.append(float(cost))
                g_fd[j] = (costs[0] - costs[1]) / (2 * eps)
            g_ref = g_bp[idx]
            scale = max(scale, float(np.max(np.abs(g_bp))), float(np.max(np.abs(g_fd))))
            diffs[f"layer{i}.{key}"] = float(np.max(np.abs(g_fd - g_ref), initial=0.0))
    errors = {k: (d / scale if scale > 0 else d) for k, d in diffs.items()}
    failed = {k: v for k, v in errors.items() if v > tol}
    if failed and raise_on_failure:
        lines = "\n".join(
            f"  {k:<12} {v:.3e}{'  FAIL' if k in failed else ''}" for k, v in errors.items()
        )
        raise GradcheckError(
            f"gradcheck failed on {net!r}: relative error above tol={tol:g} in "
            f"{sorted(failed)}\n{lines}"
        )
    return errors
