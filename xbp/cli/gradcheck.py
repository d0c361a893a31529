"""``xbp gradcheck``: backprop against finite differences."""

from __future__ import annotations

import argparse

import numpy as np

from .common import build_network, prepare_backend


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from ..tools.gradcheck import gradcheck

    prepare_backend(args)
    args.loss = "quadratic" if args.loss == "mse" else args.loss
    net = build_network(args, args.inputs, args.outputs, args.output)
    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(args.samples, args.inputs))
    if net.loss.name == "cross_entropy":
        y: np.ndarray = rng.integers(0, args.outputs, args.samples)
    elif net.loss.name == "binary_cross_entropy":
        y = (rng.random((args.samples, args.outputs)) > 0.5).astype(float)
    else:
        y = rng.normal(size=(args.samples, args.outputs))
    errors = gradcheck(net, x, y, tol=args.tol, raise_on_failure=False)
    print(f"gradcheck {net!r}\n  central differences in float64, eps 1e-6, tol {args.tol:g}")
    for name, err in errors.items():
        print(f"  {name:<10} max relative error {err:.3e}  {'ok' if err <= args.tol else 'FAIL'}")
    worst = max(errors.values())
    print(f"{'passed' if worst <= args.tol else 'FAILED'}: worst {worst:.3e}")
    return 0 if worst <= args.tol else 1
