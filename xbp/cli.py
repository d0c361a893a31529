"""The ``xbp`` command line: train, evaluate, predict, backends, gradcheck, explain, bench.

Errors print one line on stderr and exit with status 2 (``--debug`` shows
the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

from .errors import XbpError, XbpValueError

EXAMPLES = {
    "train": """examples:
  xbp train                                     # digits, NumPy on the CPU, a 64-256-10 MLP
  xbp train --backend torch --device cuda --dtype float32
  xbp train --data ~/mnist --layers 128,64 --epochs 10 --save mnist.npz --plot curves.png
  xbp train --data table.csv --label-column species --loss cross_entropy
  xbp train --data xor --layers 2 --activation sigmoid --loss quadratic --optimizer sgd \
            --lr 4 --schedule constant --epochs 3000 --batch-size 4 --val-split 0 --test-split 0
  xbp train --checkpoint run.npz --epochs 40   # then, after an interruption:
  xbp train --resume run.npz --epochs 40
""",
    "evaluate": """examples:
  xbp evaluate model.npz --data digits
  xbp evaluate model.npz --data ~/mnist --backend cupy
""",
    "predict": "examples:\n  xbp predict model.npz --data new.csv --out predictions.csv\n",
    "backends": "examples:\n  xbp backends\n",
    "gradcheck": """examples:
  xbp gradcheck --layers 5,4 --activation tanh --loss cross_entropy --backend torch
""",
    "explain": """examples:
  xbp explain --data xor --layers 2 --activation sigmoid --loss quadratic
  xbp explain --model model.npz --data digits --index 3
""",
    "bench": "examples:\n  xbp bench --cases tiny,mid --json bench.json\n",
}


class _Parser(argparse.ArgumentParser):
    """argparse prints usage plus the error; xbp prints one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _sizes(text: str) -> list[int]:
    if text.strip() in ("", "none"):
        return []
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--layers {text!r} must be comma-separated hidden widths, e.g. 128,64"
        ) from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"--layers {text!r}: every width must be >= 1")
    return sizes


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value > 0 or (kind is float and not np.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
        return value

    parse.__name__ = kind.__name__
    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must lie in [0, 1)")
    return value


def _device(text: str | None) -> Any:
    if text is None:
        return None
    return int(text) if text.isdigit() else text


def _add_backend(p: argparse.ArgumentParser) -> None:
    from .backend import BACKEND_NAMES

    p.add_argument("--backend", default="numpy", choices=BACKEND_NAMES, help="array library")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or a GPU index N")


def _add_data(p: argparse.ArgumentParser, default: str | None = "digits") -> None:
    p.add_argument(
        "--data",
        default=default,
        required=default is None,
        help="digits, xor, spirals, moons, blobs, an MNIST directory, or a .csv/.npz path",
    )
    p.add_argument(
        "--format",
        choices=["csv", "npz", "mnist"],
        default=None,
        help="file format when the suffix does not tell",
    )
    p.add_argument(
        "--label-column",
        default="-1",
        help="CSV label column: index (negative from the end) or header name",
    )


def _add_model(p: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    from .activations import ACTIVATIONS
    from .init import INITS
    from .losses import LOSSES

    p.add_argument(
        "--layers",
        type=_sizes,
        default=None,
        help=f"hidden widths, comma-separated (default {defaults['layers']})",
    )
    p.add_argument(
        "--activation",
        choices=sorted(set(ACTIVATIONS) - {"softmax"} | {"logistic"}),
        default=None,
        help=f"hidden activation (default {defaults['activation']})",
    )
    p.add_argument(
        "--output",
        choices=sorted(ACTIVATIONS),
        default=None,
        help="output activation (default: fits the loss)",
    )
    p.add_argument(
        "--loss",
        choices=sorted(LOSSES) + ["mse"],
        default=None,
        help=f"cost (default {defaults['loss']})",
    )
    p.add_argument("--init", choices=["auto", *INITS], default="auto")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, shuffling and splits")


def build_parser() -> argparse.ArgumentParser:
    from .optim import OPTIMIZERS

    parser = _Parser(
        prog="xbp",
        description="Neural networks trained by explicit "
        "backpropagation on NumPy, CuPy, PyTorch, JAX or array-api-strict.",
        epilog="Run 'xbp COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def cmd(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks on errors",
        )
        return p

    t = cmd("train", "Train a network and report test accuracy.")
    _add_backend(t)
    _add_data(t)
    _add_model(t, {"layers": "256", "activation": "relu", "loss": "cross_entropy"})
    t.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adamw")
    t.add_argument(
        "--lr",
        type=_positive(float),
        default=None,
        help="learning rate (default 2e-3 for adam/adamw/rmsprop, 0.05 otherwise)",
    )
    t.add_argument(
        "--schedule",
        choices=["constant", "cosine", "step", "exponential"],
        default="cosine",
        help="learning-rate schedule over the run",
    )
    t.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    t.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="L2 (decoupled for adamw; default 0.1 for adamw, 0 otherwise)",
    )
    t.add_argument("--clip-norm", type=_positive(float), default=None)
    t.add_argument("--epochs", type=_positive(int), default=40)
    t.add_argument("--batch-size", type=_positive(int), default=16)
    t.add_argument("--val-split", type=_fraction, default=0.1)
    t.add_argument("--test-split", type=_fraction, default=0.2)
    t.add_argument(
        "--no-standardize",
        action="store_true",
        help="keep raw features (default: zero mean, unit variance from training data)",
    )
    t.add_argument(
        "--early-stopping",
        type=int,
        default=None,
        metavar="PATIENCE",
        help="stop after PATIENCE epochs without val_loss improvement; keep the best",
    )
    t.add_argument("--save", default=None, help="write the trained model (.npz)")
    t.add_argument("--checkpoint", default=None, help="write a resumable checkpoint (.npz)")
    t.add_argument("--checkpoint-every", type=_positive(int), default=1)
    t.add_argument("--resume", default=None, help="continue from a checkpoint")
    t.add_argument("--on-divergence", choices=["raise", "halve"], default="raise")
    t.add_argument("--plot", default=None, help="write training curves to a PNG (needs matplotlib)")
    t.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over MPI ranks (run under mpiexec)",
    )
    t.add_argument("--quiet", action="store_true", help="print only the final result")

    e = cmd("evaluate", "Loss and accuracy of a saved model on a data set.")
    e.add_argument("model")
    _add_backend(e)
    _add_data(e, default=None)

    pr = cmd("predict", "Predictions of a saved model.")
    pr.add_argument("model")
    _add_backend(pr)
    _add_data(pr, default=None)
    pr.add_argument("--out", default=None, help="write predictions to .csv, .npy or .npz")

    cmd("backends", "Which array libraries and devices xbp can use here, and why not.")

    g = cmd("gradcheck", "Compare backprop with central finite differences (float64).")
    _add_backend(g)
    _add_model(g, {"layers": "5", "activation": "tanh", "loss": "cross_entropy"})
    g.add_argument("--inputs", type=_positive(int), default=4)
    g.add_argument("--outputs", type=_positive(int), default=3)
    g.add_argument("--samples", type=_positive(int), default=8)
    g.add_argument("--tol", type=_positive(float), default=1e-6)

    x = cmd("explain", "Print one sample's forward and backward pass, layer by layer.")
    x.add_argument("--model", default=None, help="a saved model (default: a fresh network)")
    _add_backend(x)
    _add_data(x, default="xor")
    _add_model(x, {"layers": "2", "activation": "sigmoid", "loss": "quadratic"})
    x.add_argument("--index", type=int, default=0, help="which sample")

    b = cmd("bench", "Median step time of xbp against NumPy, GEMM-only, PyTorch, scikit-learn.")
    b.add_argument("--cases", default="tiny,mid,large")
    b.add_argument("--backends", default=None, help="comma list (default: every usable one)")
    b.add_argument("--repeat", type=_positive(int), default=None)
    b.add_argument("--json", default=None)
    b.add_argument("--memory", action="store_true", help="also measure peak memory of fit")
    return parser


# -- commands ---------------------------------------------------------------
def _model_args(args: argparse.Namespace, defaults: dict[str, Any], n_in: int, n_out: int) -> Any:
    from .network import mlp

    hidden = defaults["layers"] if args.layers is None else args.layers
    loss = args.loss or defaults["loss"]
    return mlp(
        [n_in, *hidden, n_out],
        activation=args.activation or defaults["activation"],
        output=args.output,
        loss=loss,
        backend=args.backend,
        device=_device(args.device),
        dtype=args.dtype,
        seed=args.seed,
        init=args.init,
    )


def _label_column(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def _load(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    from .data import load_dataset

    return load_dataset(
        args.data,
        format=args.format,
        label_column=_label_column(args.label_column),
        seed=getattr(args, "seed", 0),
    )


def _n_outputs(y: np.ndarray, loss: str) -> int:
    if y.ndim == 2:
        return int(y.shape[1])
    if y.dtype.kind in "iu" and loss != "quadratic" and loss != "mse":
        if loss == "binary_cross_entropy":
            return 1
        return int(y.max()) + 1
    if y.dtype.kind in "iu" and int(y.max()) > 1:
        return int(y.max()) + 1
    return 1


def _scale(x: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    pre = meta.get("standardize")
    if not pre:
        return x.astype(np.float64) if x.dtype.kind != "f" else x
    return (x - np.asarray(pre["mean"])) / np.asarray(pre["std"])


def cmd_train(args: argparse.Namespace) -> int:
    from . import optim
    from .data import standardize, train_val_test_split
    from .io import load_checkpoint, save
    from .training import Callback, EarlyStopping, evaluate, fit

    comm = None
    if args.distributed:
        from .distributed import local_device, world

        comm = world()
        if args.backend in ("cupy", "torch") and args.device in (None, "cuda"):
            args.device = local_device(args.backend, comm)  # one GPU per rank
    root = comm is None or comm.Get_rank() == 0
    x, y = _load(args)
    if x.dtype.kind not in "f":
        x = x.astype(np.float64)
    split = train_val_test_split(x, y, val=args.val_split, test=args.test_split, seed=args.seed)
    (xtr, ytr), (xva, yva), (xte, yte) = split
    meta: dict[str, Any] = {"data": args.data}
    if not args.no_standardize:
        xtr, xva, xte, mean, std = standardize(xtr, xva, xte)
        meta["standardize"] = {"mean": mean.tolist(), "std": std.tolist()}
    defaults: dict[str, Any] = {"layers": [256], "activation": "relu", "loss": "cross_entropy"}
    checkpoint = args.checkpoint
    ck = None
    if args.resume:
        ck = load_checkpoint(args.resume, backend=args.backend, device=_device(args.device))
        checkpoint = checkpoint or args.resume
        net = ck.network
        if args.layers is not None or args.loss is not None:
            from .io import check_same_architecture

            check_same_architecture(
                _model_args(args, defaults, xtr.shape[1], net.n_out),
                net,
                f"--resume {args.resume!r}",
            )
        if ck.optimizer is None:
            raise XbpValueError(
                f"--resume {args.resume!r} holds no optimizer state; it is a "
                "model file, not a checkpoint (write one with --checkpoint)"
            )
        opt = ck.optimizer
    else:
        loss = args.loss or defaults["loss"]
        n_out = _n_outputs(ytr, loss)
        net = _model_args(args, defaults, xtr.shape[1], n_out)
        adaptive = args.optimizer in ("adam", "adamw", "rmsprop")
        lr = args.lr if args.lr is not None else (2e-3 if adaptive else 0.05)
        steps = args.epochs * -(-len(ytr) // args.batch_size)
        sched: Any = {
            "constant": lambda: optim.constant(lr),
            "cosine": lambda: optim.cosine(lr, max(steps, 1)),
            "step": lambda: optim.step(lr, max(steps // 3, 1), 0.1),
            "exponential": lambda: optim.exponential(lr, 0.01, max(steps, 1)),
        }[args.schedule]()
        if args.warmup:
            sched = optim.warmup(sched, args.warmup)
        wd = args.weight_decay
        if wd is None:
            wd = 0.1 if args.optimizer == "adamw" else 0.0
        opt = optim.get_optimizer(args.optimizer, sched, weight_decay=wd, clip_norm=args.clip_norm)
    callbacks: list[Callback] = []
    if args.early_stopping is not None:
        callbacks.append(EarlyStopping(patience=args.early_stopping))
    if root and not args.quiet:
        print(
            f"xbp train: {net!r}\n  data {args.data}: {len(ytr)} train, {len(yva)} validation, "
            f"{len(yte)} test; optimizer {opt.name}, {args.epochs} epochs, batch {args.batch_size}"
        )
    t0 = time.perf_counter()
    hist = fit(
        net,
        xtr,
        ytr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=opt,
        validation_data=(xva, yva) if len(yva) else None,
        seed=args.seed,
        callbacks=callbacks,
        progress=False if args.quiet or not root else "lines",
        checkpoint=checkpoint,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        on_divergence=args.on_divergence,
        comm=comm,
        metadata=meta,
    )
    seconds = time.perf_counter() - t0
    result = evaluate(net, xte, yte) if len(yte) else {"loss": None, "accuracy": None}
    if root:
        acc = result["accuracy"]
        acc_text = f"test accuracy {acc:.4f}" if acc is not None else ""
        loss_text = f"test loss {result['loss']:.4f}" if result["loss"] is not None else ""
        print(f"{acc_text}  {loss_text}  ({len(hist)} epochs, {seconds:.1f} s)".strip())
        if args.save:
            save(net, args.save, optimizer=opt, training={"history": hist.to_dict()}, metadata=meta)
            print(f"saved {args.save}")
        if args.plot:
            plot_history(hist, args.plot)
            print(f"wrote {args.plot}")
    return 0


def plot_history(hist: Any, path: str) -> None:
    """Loss and accuracy curves, train and validation, to a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise XbpValueError("--plot needs matplotlib: pip install 'xbp[plot]'") from None
    from .io import atomic_write

    epochs = [row["epoch"] for row in hist.epochs]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            values = hist[key]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100), "--plot")
    plt.close(fig)


def _load_model(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from .io import load_checkpoint

    ck = load_checkpoint(args.model, backend=args.backend, device=_device(args.device))
    return ck.network, ck.metadata


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .training import evaluate

    net, meta = _load_model(args)
    x, y = _load(args)
    result = evaluate(net, _scale(x, meta), y)
    acc = result["accuracy"]
    print(
        f"loss {result['loss']:.6f}"
        + (f"  accuracy {acc:.4f}" if acc is not None else "")
        + f"  ({len(x)} samples, {net.backend.name})"
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .io import atomic_write

    net, meta = _load_model(args)
    x, _ = _load(args)
    x = _scale(x, meta)
    out = net.predict(x)
    classify = net.loss.name != "quadratic"
    labels = net.predict_classes(x) if classify else None
    if args.out is None:
        rows = labels if labels is not None else out
        for row in rows:
            print(row if np.ndim(row) == 0 else ",".join(f"{v:.6g}" for v in np.atleast_1d(row)))
        return 0
    suffix = os.path.splitext(args.out)[1].lower()
    if suffix == ".npy":
        atomic_write(args.out, lambda f: np.save(f, labels if labels is not None else out), "--out")
    elif suffix == ".npz":
        arrays = {"output": out} if labels is None else {"labels": labels, "output": out}
        atomic_write(args.out, lambda f: np.savez(f, **arrays), "--out")
    elif suffix == ".csv":
        header = (["label"] if labels is not None else []) + [
            f"out{i}" for i in range(out.shape[1])
        ]
        table = out if labels is None else np.column_stack([labels, out])

        def write(f: Any) -> None:
            np.savetxt(f, table, delimiter=",", header=",".join(header), comments="", fmt="%.8g")

        atomic_write(args.out, write, "--out")
    else:
        raise XbpValueError(f"--out {args.out!r}: use a .csv, .npy or .npz file name")
    print(f"wrote {len(out)} predictions to {args.out}")
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    from .backend import available_backends

    rows = [("backend", "version", "installed", "usable", "devices", "notes")]
    for info in available_backends():
        rows.append(
            (
                info.name,
                info.version or "-",
                "yes" if info.installed else "no",
                "yes" if info.usable else "no",
                ", ".join(info.devices) or "-",
                info.reason or "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r[:5], widths)) + "  " + r[5])
    return 0


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from .gradcheck import gradcheck

    defaults = {"layers": [5], "activation": "tanh", "loss": "cross_entropy"}
    net = _model_args(args, defaults, args.inputs, args.outputs)
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


def _vec(a: np.ndarray, limit: int = 8) -> str:
    flat = np.asarray(a).ravel()
    body = ", ".join(f"{v:+.4f}" for v in flat[:limit])
    return f"[{body}{', ...' if flat.size > limit else ''}]  ({flat.size} values)"


def cmd_explain(args: argparse.Namespace) -> int:
    if args.model:
        net, meta = _load_model(args)
    else:
        meta = {}
        net = None
    x, y = _load(args)
    x = _scale(x, meta)
    if net is None:
        defaults = {"layers": [2], "activation": "sigmoid", "loss": "quadratic"}
        net = _model_args(args, defaults, x.shape[1], _n_outputs(y, args.loss or "quadratic"))
    if not -len(x) <= args.index < len(x):
        raise XbpValueError(f"--index {args.index} is outside the {len(x)} samples")
    i = args.index % len(x)
    xs, ys = x[i : i + 1], y[i : i + 1]  # xbp's target checks shape labels and columns
    be, xp = net.backend, net.xp
    xd, yd = net._x(xs), net._y(ys, 1)
    host = net.host_params()
    acts = [d.activation for d in net.layers]
    print(f"explain: one sample (index {args.index}) through {net!r}")
    print("notation (DESIGN.md section 1): Z_l = A_{l-1} W_l + b_l, A_l = phi_l(Z_l)\n")
    print(f"A_0 = x = {_vec(be.to_host(xd))}")
    print(f"y       = {_vec(be.to_host(yd))}\n-- forward --")
    a = xd
    for l, (p, act) in enumerate(zip(net.params, net._acts), start=1):
        z = a @ p["W"] + p["b"]
        print(f"Z_{l} = A_{l - 1} W_{l} + b_{l}  = {_vec(be.to_host(z))}")
        a = act.forward(xp, z)  # may overwrite z (a temporary) in place
        print(f"A_{l} = {acts[l - 1]}(Z_{l}) = {_vec(be.to_host(a))}")
    cost, grads = net._backprop(xd, yd)
    L = len(net.layers)
    print(f"\nC ({net.loss.name}) = {float(cost):.6g}\n-- backward --")
    fused = net.loss.name != "quadratic"
    # deltas are recovered from the gradients: dC/db_l = sum of delta_l over the one row
    for l in range(L, 0, -1):
        delta = be.to_host(grads[l - 1]["b"])
        if l == L:
            rule = "(A_L - y)/n (fused)" if fused else f"(A_L - y)/n * {acts[-1]}'(Z_L)"
        else:
            rule = f"(delta_{l + 1} W_{l + 1}^T) * {acts[l - 1]}'(Z_{l})"
        print(f"delta_{l} = {rule} = {_vec(delta)}")
        dw = be.to_host(grads[l - 1]["W"])
        print(f"dC/dW_{l} = A_{l - 1}^T delta_{l}: shape {dw.shape}, norm {np.linalg.norm(dw):.6g}")
    print(
        f"\nSGD with eta = 0.1 would change ||W_1|| from {np.linalg.norm(host[0]['W']):.6g} to "
        f"{np.linalg.norm(host[0]['W'] - 0.1 * be.to_host(grads[0]['W'])):.6g}"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    return run_bench(
        cases=args.cases.split(","),
        backends=args.backends,
        repeat=args.repeat,
        json_path=args.json,
        memory=args.memory,
    )


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "backends": cmd_backends,
    "gradcheck": cmd_gradcheck,
    "explain": cmd_explain,
    "bench": cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except XbpError as exc:
        if args.debug:
            raise
        # one line, even for multi-line reports
        print(f"xbp {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xbp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
