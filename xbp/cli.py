"""The ``xbp`` command line: train, evaluate, predict, backends, gradcheck, explain, bench.

Errors print one line on stderr and exit with status 2 (``--debug`` shows
the traceback). Every default is stated once, in :data:`DEFAULTS`: the ones
the CLI shares with :func:`xbp.fit` are read from :class:`xbp.TrainOptions`.
Before any work a command checks every file it reads and writes: no output
may replace an input or another output (see :mod:`xbp.paths`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from . import backends
from .errors import XbpError, XbpFileError, XbpValueError, spelled
from .init import output_bias_at_mean
from .metrics import (
    classification_report,
    headline_metrics,
    output_names,
    regression_report,
    summary_line,
    trivial_warning,
)

EXAMPLES = {
    "export": """examples:
  xbp export model.npz model.onnx               # ONNX opset 17: Gemm + activation per layer
  xbp export model.npz model.onnx --opset 13
""",
    "train": """examples:
  xbp train                                     # digits, NumPy on the CPU, a 64-256-10 MLP
  xbp train --backend torch --device cuda --dtype float32
  xbp train --data ~/mnist --layers 128,64 --epochs 10 --save mnist.npz --plot curves.png
  xbp train --data iris.csv --label-column species --save iris.npz
  xbp train --data houses.csv --loss quadratic   # regression: identity output
  xbp train --data xor --layers 2 --activation sigmoid --loss quadratic --optimizer sgd \\
            --lr 4 --schedule constant --epochs 3000 --batch-size 4 --val-split 0 --test-split 0
  xbp train --checkpoint run.npz --epochs 40   # then, after an interruption:
  xbp train --resume run.npz                    # the same run, to its 40 epochs
  xbp train --resume run.npz --epochs 60 --extend-schedule
""",
    "evaluate": """examples:
  xbp evaluate model.npz --data digits
  xbp evaluate iris.npz --data iris-test.csv    # the label column is found by name
  xbp evaluate model.npz --data ~/mnist --backend cupy
""",
    "predict": """examples:
  xbp predict iris.npz --data new-flowers.csv --out predictions.csv
  xbp predict model.npz --data features.csv --label-column none | head
""",
    "backends": "examples:\n  xbp backends\n",
    "gradcheck": """examples:
  xbp gradcheck --layers 5,4 --activation tanh --loss cross_entropy --backend torch
""",
    "explain": """examples:
  xbp explain                                   # a 2-3-1 sigmoid network on XOR sample 0
  xbp explain --sample 3 --lr 2 --digits 8 --check
  xbp explain --model model.npz --data digits --sample 3 --limit 4
""",
    "bench": "examples:\n  xbp bench --cases tiny,mid --json bench.json\n",
    "summary": """examples:
  xbp summary model.npz                         # layers, shapes, parameters, loss, dtype
""",
}


# -- defaults: one table ----------------------------------------------------------
class _Library:
    """Marks a default that is :func:`xbp.fit`'s own, read from :class:`xbp.TrainOptions`."""

    def __repr__(self) -> str:
        return "LIBRARY"


LIBRARY: Any = _Library()

# the training options xbp.fit had before xbp.TrainOptions (used only where it is absent)
_FIT_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 32,
    "optimizer": "sgd",
    "learning_rate": None,
    "validation_split": 0.0,
    "shuffle": True,
    "seed": 0,
    "progress": "auto",
    "checkpoint": None,
    "checkpoint_every": 1,
    "on_divergence": "raise",
    "max_retries": 3,
    "compile": None,
}


def library_defaults() -> dict[str, Any]:
    """:func:`xbp.fit`'s defaults, from the fields of :class:`xbp.TrainOptions`."""
    from . import training

    options = getattr(training, "TrainOptions", None)
    if options is None or not dataclasses.is_dataclass(options):
        return dict(_FIT_DEFAULTS)
    return {
        f.name: f.default
        for f in dataclasses.fields(options)
        if f.default is not dataclasses.MISSING
    }


# The CLI's own choices beside fit's: a 64-256-10 ReLU network with AdamW and a
# cosine schedule reaches 97% on digits out of the box. LIBRARY entries are fit's.
DEFAULTS: dict[str, dict[str, Any]] = {
    "export": {"opset": 17},
    "train": {
        "backend": "numpy",
        "device": None,
        "data": "digits",
        "format": None,
        "label_column": "-1",
        "delimiter": ",",
        "x_key": "x",
        "y_key": "y",
        "task": "auto",  # the library's rule: xbp.targets.infer_targets
        "layers": [256],
        "activation": "relu",
        "output": None,  # fits the task and loss (xbp.targets.infer_targets)
        "loss": None,  # the task's: cross_entropy for classes, quadratic for real targets
        "init": "auto",
        "dtype": "float64",
        "seed": LIBRARY,
        "optimizer": "adamw",
        "lr": None,  # 2e-3 for adam/adamw/rmsprop, 0.05 otherwise
        "schedule": "cosine",
        "warmup": 0,
        "weight_decay": None,  # 0.1 for adamw, 0 otherwise
        "clip_norm": None,
        "epochs": 40,
        "batch_size": 16,
        "val_split": 0.1,
        "test_split": 0.2,
        "no_standardize": False,
        "early_stopping": None,
        "save": None,
        "checkpoint": None,
        "checkpoint_every": LIBRARY,
        "resume": None,
        "extend_schedule": False,
        "on_divergence": LIBRARY,
        "plot": None,
        "log_csv": None,
        "distributed": False,
        "timeout": 300.0,  # xbp.distributed.DEFAULT_TIMEOUT (a test keeps them equal)
        "quiet": False,
        "progress": LIBRARY,
        "compile": LIBRARY,
        "precision": None,  # the model's own: "exact" for a new network
        "metrics": None,  # the task's headline metrics on the test rows
        "tensorboard": None,
    },
    "evaluate": {
        "backend": "numpy",
        "device": None,
        "format": None,
        "label_column": None,  # the model's label column, found by name or width
        "delimiter": None,  # the model's recorded layout (xbp train), else "," / "x" / "y"
        "x_key": None,
        "y_key": None,
        "batch_size": LIBRARY,  # xbp.evaluate's batch (EVAL_BATCH)
    },
    "predict": {
        "backend": "numpy",
        "device": None,
        "format": None,
        "label_column": None,
        "delimiter": None,
        "x_key": None,
        "y_key": None,
        "batch_size": LIBRARY,
        "out": None,
    },
    "gradcheck": {
        "backend": "numpy",
        "device": None,
        "layers": [5],
        "activation": "tanh",
        "output": None,
        "loss": "cross_entropy",
        "init": "auto",
        "dtype": "float64",
        "seed": LIBRARY,
        "inputs": 4,
        "outputs": 3,
        "samples": 8,
        "tol": 1e-6,
    },
    "explain": {
        "model": None,
        "backend": "numpy",
        "device": None,
        "data": "xor",
        "format": None,
        "label_column": "-1",
        "delimiter": ",",
        "x_key": "x",
        "y_key": "y",
        "task": "auto",
        "layers": [3],
        "activation": "sigmoid",
        "output": None,  # sigmoid: the quadratic cost keeps the hidden activation here
        "loss": "quadratic",
        "init": "auto",
        "dtype": "float64",
        "seed": LIBRARY,
        "index": 0,
        "lr": 0.5,
        "digits": 7,
        "limit": 8,
        "check": False,
    },
    "backends": {},
    "summary": {},
    "bench": {"cases": "tiny,mid,large", "backends": None, "repeat": None, "json": None},
}


def _eval_batch() -> int:
    from . import network

    return int(getattr(network, "EVAL_BATCH", 8192))


# the learning rate when --lr is not given, by optimizer family
DEFAULT_LR = {"adaptive": 2e-3, "other": 0.05}
ADAPTIVE = ("adam", "adamw", "rmsprop")
DEFAULT_WEIGHT_DECAY = {"adamw": 0.1}
# the library's name of a CLI option whose default is fit's
_LIBRARY_NAMES = {"seed": "seed", "checkpoint_every": "checkpoint_every"}
_COMPILE = {None: "auto", True: "on", False: "off"}
_PROGRESS = {"auto": "auto", "bar": "bar", "lines": "lines", False: "off", None: "off"}


def resolved_defaults(command: str) -> dict[str, Any]:
    """The defaults of one command with fit's own filled in from the library."""
    lib = library_defaults()
    out = {}
    for name, value in DEFAULTS[command].items():
        if value is LIBRARY:
            if command in ("evaluate", "predict") and name == "batch_size":
                value = _eval_batch()
            elif name == "compile":
                value = _COMPILE.get(lib.get("compile"), "auto")
            elif name == "progress":
                value = _PROGRESS.get(lib.get("progress"), "auto")
            else:
                value = lib[_LIBRARY_NAMES.get(name, name)]
        out[name] = value
    return out


class _Unset:
    """An option not given on the command line (its default is filled in after parsing)."""

    def __repr__(self) -> str:
        return "<default>"


UNSET: Any = _Unset()


class _Parser(argparse.ArgumentParser):
    """argparse prints usage plus the error; xbp prints one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- argument types -----------------------------------------------------------------
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


def _number(kind: type, low: float, inclusive: bool) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            name = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {name}") from None
        if kind is float and not np.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} must be finite")
        if value < low or (value == low and not inclusive):
            op = ">=" if inclusive else ">"
            raise argparse.ArgumentTypeError(f"{text!r} must be {op} {low:g}")
        return value

    parse.__name__ = kind.__name__
    return parse


_positive_int = _number(int, 0, False)
_nonneg_int = _number(int, 0, True)
_positive_float = _number(float, 0.0, False)
_nonneg_float = _number(float, 0.0, True)


def _metric_names(text: str) -> list[str]:
    from .metrics import get_metric

    names = [n.strip() for n in text.split(",") if n.strip()]
    try:
        for name in names:
            get_metric(name)
    except XbpError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return names


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


def _label_column(text: str | None) -> Any:
    """``-1`` -> -1 (an index), ``species`` -> a header name, ``none`` -> no label column,
    ``t1,t2`` -> several label columns (multi-output regression)."""
    if text is None or text.lower() == "none":
        return None
    if "," in text:
        return [_label_column(part.strip()) for part in text.split(",")]
    try:
        return int(text)
    except ValueError:
        return text


# -- the parser -------------------------------------------------------------------
def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "none"
    if isinstance(value, bool):
        return "off" if not value else "on"
    return str(value)


class _Options:
    """Adds options to one command's parser with their defaults from :data:`DEFAULTS`."""

    def __init__(self, parser: argparse.ArgumentParser, command: str) -> None:
        self.p = parser
        self.defaults = resolved_defaults(command)

    def add(self, flag: str, help: str, default_text: str | None = None, **kw: Any) -> None:
        dest = flag.lstrip("-").replace("-", "_")
        shown = default_text or _show(self.defaults[dest])
        self.p.add_argument(flag, default=UNSET, help=f"{help} (default: {shown})", **kw)


def _add_backend(o: _Options) -> None:
    from .backend import BACKEND_NAMES

    o.add("--backend", "array library", choices=BACKEND_NAMES)
    o.add("--device", "cpu, cuda, cuda:N or a GPU index N", "the backend's default")


def _add_data(o: _Options, *, required: bool = False, label_default: str | None = None) -> None:
    if required:
        o.p.add_argument(
            "--data",
            required=True,
            help="an MNIST directory, a .csv or .npz file, or digits, mnist1d, xor, spirals, "
            "moons, blobs (required)",
        )
    else:
        o.add(
            "--data",
            "digits, mnist1d, xor, spirals, moons, blobs, an MNIST directory, or a .csv/.npz path",
        )
    o.add("--format", "file format when the suffix does not tell", choices=["csv", "npz", "mnist"])
    o.add(
        "--label-column",
        "CSV label column: index (negative from the end), header name, none, or a comma "
        "list of several (multi-output regression)",
        label_default,
    )
    layout = "the model's, else " if label_default is not None else ""
    o.add("--delimiter", "CSV field separator (one character)", layout + "','"
          if layout else None)  # fmt: skip
    o.add("--x-key", "name of the features array in an .npz", layout + "x" if layout else None)
    o.add("--y-key", "name of the labels array in an .npz", layout + "y" if layout else None)


def _add_task(o: _Options) -> None:
    o.add(
        "--task",
        "classify or regress; auto: names are classes; whole numbers are classes when "
        "they are 2 values or 0..k-1/1..k with 2+ rows per class, otherwise one real target",
        choices=list(TASKS),
    )


def _add_model(o: _Options) -> None:
    from .activations import ACTIVATIONS
    from .init import INITS
    from .losses import LOSSES

    o.add("--layers", "hidden widths, comma-separated", type=_sizes)
    o.add(
        "--activation",
        "hidden activation",
        choices=sorted(set(ACTIVATIONS) - {"softmax"} | {"logistic"}),
    )
    o.add(
        "--output",
        "output activation",
        "fits the loss: softmax, sigmoid, or identity for real-valued targets",
        choices=sorted(ACTIVATIONS),
    )
    o.add(
        "--loss",
        "cost",
        "the task's: cross_entropy for class labels, quadratic for real-valued targets",
        choices=sorted(LOSSES) + ["mse"],
    )
    o.add("--init", "weight initialisation", choices=["auto", *INITS])
    o.add("--dtype", "floating-point type", choices=["float32", "float64"])
    o.add("--seed", "seeds weights, shuffling and splits (an integer >= 0)", type=_nonneg_int)


def build_parser() -> argparse.ArgumentParser:
    from .optim import OPTIMIZERS

    parser = _Parser(
        prog="xbp",
        description="Neural networks trained by explicit "
        "backpropagation on NumPy, CuPy, PyTorch, JAX or array-api-strict.",
        epilog="Run 'xbp COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"xbp {__version__}")
    parser.add_argument(
        "--import",
        dest="imports",
        metavar="MODULE",
        action="append",
        help="import MODULE first (repeatable): a module that registers its own activations "
        "and losses (xbp.register_activation/register_loss) so that they can be used by name",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def cmd(name: str, help_text: str) -> _Options:
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
        return _Options(p, name)

    t = cmd("train", "Train a network and report test accuracy.")
    _add_backend(t)
    _add_data(t)
    _add_task(t)
    _add_model(t)
    t.add("--optimizer", "update rule", choices=sorted(OPTIMIZERS))
    t.add(
        "--lr",
        "learning rate",
        f"{DEFAULT_LR['adaptive']:g} for {'/'.join(ADAPTIVE)}, {DEFAULT_LR['other']:g} otherwise",
        type=_positive_float,
    )
    t.add(
        "--schedule",
        "learning-rate schedule over the run",
        choices=["constant", "cosine", "step", "exponential"],
    )
    t.add("--warmup", "linear warm-up steps", type=_nonneg_int)
    t.add(
        "--weight-decay",
        "L2 (decoupled for adamw)",
        f"{DEFAULT_WEIGHT_DECAY['adamw']:g} for adamw, 0 otherwise",
        type=_nonneg_float,
    )
    t.add("--clip-norm", "clip gradients to this global norm", "no clipping", type=_positive_float)
    t.add("--epochs", "total epochs of the run", type=_positive_int)
    t.add("--batch-size", "rows per update", type=_positive_int)
    t.add("--val-split", "fraction held out for validation", type=_fraction)
    t.add("--test-split", "fraction held out for the final test", type=_fraction)
    t.add(
        "--no-standardize",
        "keep raw features instead of zero mean, unit variance from the training data",
        action="store_true",
    )
    t.add(
        "--early-stopping",
        "stop after PATIENCE epochs without val_loss improvement; keep the best",
        "off",
        type=_nonneg_int,
        metavar="PATIENCE",
    )
    t.add("--save", "write the trained model (.npz)", "not saved")
    t.add("--checkpoint", "write a resumable checkpoint (.npz)", "the --resume file, else none")
    t.add("--checkpoint-every", "epochs between checkpoints", type=_positive_int)
    t.add("--resume", "continue the run in this checkpoint (written by --checkpoint)")
    t.add(
        "--extend-schedule",
        "with --resume and more --epochs than planned: stretch the learning-rate schedule "
        "over the new total (otherwise an error: the schedule has ended)",
        action="store_true",
    )
    t.add("--on-divergence", "on NaN/Inf: stop, or halve the rate", choices=["raise", "halve"])
    t.add("--plot", "write training curves to a PNG (needs matplotlib)", "no plot")
    t.add(
        "--log-csv",
        "write one CSV row per epoch (a resumed run continues the file)",
        "not written",
        metavar="FILE",
    )
    t.add(
        "--distributed",
        "data-parallel over the ranks of mpiexec or torchrun (whichever launched it)",
        action="store_true",
    )
    t.add(
        "--timeout",
        "with --distributed: seconds a rank waits in one collective before it ends the job",
        type=_positive_float,
        metavar="SECONDS",
    )
    t.add(
        "--metrics",
        "comma list of metrics logged per epoch and reported on the test rows "
        "(e.g. f1_macro,roc_auc_ovr or r2,rmse; see docs/metrics.md)",
        "the task's headline: accuracy and f1_macro, or r2, rmse and mae",
        type=_metric_names,
    )
    t.add("--tensorboard", "write TensorBoard event files to DIR", "not written", metavar="DIR")
    t.add("--quiet", "print only the final result", action="store_true")
    t.add(
        "--progress",
        "a live bar on a terminal, one line per epoch, or nothing",
        choices=["auto", "bar", "lines", "off"],
    )
    t.add(
        "--compile",
        "compiled training steps: where supported, required, or never",
        choices=["auto", "on", "off"],
    )
    t.add(
        "--precision",
        "matrix products: IEEE float32, TF32 (NVIDIA GPUs), or bf16/fp16 mixed precision "
        "(torch, jax); saved with the model",
        "the model's own: exact for a new network",
        choices=["exact", "tf32", "bf16", "fp16"],
    )

    e = cmd("evaluate", "Loss and accuracy of a saved model on a labelled data set.")
    e.p.add_argument("model", help="a model file written by xbp train --save or xbp.save")
    _add_backend(e)
    _add_data(e, required=True, label_default="the model's label column, by name or width")
    e.add("--batch-size", "rows per forward pass (bounds memory)", type=_positive_int)

    pr = cmd("predict", "Predictions of a saved model on features (a label column is ignored).")
    pr.p.add_argument("model", help="a model file written by xbp train --save or xbp.save")
    _add_backend(pr)
    _add_data(pr, required=True, label_default="the model's label column if present, else none")
    pr.add("--batch-size", "rows per forward pass (bounds memory)", type=_positive_int)
    pr.add("--out", "write predictions to .csv, .npy or .npz", "print to standard output")

    x = cmd("export", "Write a saved model as an ONNX file (needs pip install 'xbp[onnx]').")
    x.p.add_argument("model", help="a model file written by xbp train --save or xbp.save")
    x.p.add_argument("onnx", help="the .onnx file to write (replaced atomically)")
    x.add("--opset", "ONNX opset the model declares (13 or later)", type=_positive_int)

    cmd("backends", "Which array libraries and devices xbp can use here, and why not.")

    sm = cmd("summary", "A saved model's layers, shapes, parameter counts and settings.")
    sm.p.add_argument("model", help="a model file written by xbp train --save or xbp.save")

    g = cmd("gradcheck", "Compare backprop with central finite differences (float64).")
    _add_backend(g)
    _add_model(g)
    g.add("--inputs", "input width", type=_positive_int)
    g.add("--outputs", "output width", type=_positive_int)
    g.add("--samples", "rows of random data", type=_positive_int)
    g.add("--tol", "largest relative error that passes", type=_positive_float)

    x = cmd(
        "explain",
        "Print one sample's forward pass, backward pass and SGD step, number by number.",
    )
    x.add("--model", "a saved model", "a fresh network")
    _add_backend(x)
    _add_data(x)
    _add_task(x)
    _add_model(x)
    x.p.add_argument(
        "--sample",
        "--index",
        dest="index",
        type=int,
        default=UNSET,
        help="which sample (negative from the end) (default: 0)",
    )
    x.add("--lr", "eta of the SGD step shown", type=_positive_float)
    x.add("--digits", "significant digits of every number", type=_positive_int)
    x.add("--limit", "rows and columns shown of larger arrays", type=_positive_int)
    x.add(
        "--check",
        "also compare the gradients with central finite differences",
        action="store_true",
    )

    b = cmd("bench", "Median step time of xbp against NumPy, GEMM-only, PyTorch, scikit-learn.")
    b.add("--cases", "comma list of cases")
    b.add("--backends", "comma list", "every usable one")
    b.add("--repeat", "timed steps per contender", "per case", type=_positive_int)
    b.add("--json", "write the results as JSON", "not written")
    b.p.add_argument(
        "--memory", action="store_true", help="also measure peak memory of fit (default: off)"
    )
    return parser


def _finish_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in defaults; ``args.given`` names the options given on the command line."""
    defaults = resolved_defaults(args.command)
    given = set()
    for name, value in vars(args).copy().items():
        if value is UNSET:
            setattr(args, name, defaults[name])
        elif name in defaults:
            given.add(name)
    args.given = given
    return args


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# -- files: what a command reads and writes, checked before any work -------------------
def _data_files(args: argparse.Namespace) -> tuple[str, list[Path]]:
    """The data's format and the files it is read from (checked: regular, readable)."""
    from .data import dataset_format, mnist_files
    from .paths import input_file

    fmt = dataset_format(args.data, args.format)
    if fmt == "builtin":
        return fmt, []
    p = Path(args.data)
    if fmt == "mnist":
        directory = p if p.is_dir() else p.parent
        files = list(mnist_files(directory, _mnist_kind(args)))
        return fmt, [input_file(f, "--data") for f in files]
    return fmt, [input_file(p, "--data", f"a .{fmt} file")]


def _mnist_kind(args: argparse.Namespace) -> str:
    """evaluate and predict read an MNIST directory's t10k files (the test set) when present."""
    from .data import mnist_files

    if args.command not in ("evaluate", "predict"):
        return "train"
    p = Path(args.data)
    try:
        mnist_files(p if p.is_dir() else p.parent, "t10k")
    except XbpError:
        return "train"
    return "t10k"


def _check_layout_options(args: argparse.Namespace, fmt: str) -> None:
    """--delimiter goes with CSV data, --x-key/--y-key with .npz data."""
    for name, wanted in (("delimiter", "csv"), ("x_key", "npz"), ("y_key", "npz")):
        if name in args.given and fmt != wanted:
            raise XbpValueError(
                f"{_flag(name)} applies to {wanted} data; --data {args.data!r} is {fmt} data: "
                f"drop {_flag(name)}"
            )


def _layout(args: argparse.Namespace, meta: dict[str, Any]) -> dict[str, Any]:
    """The data layout evaluate and predict read: the options given, else what the model
    file recorded at training (xbp train), else the defaults."""
    stored: dict[str, Any] = meta["layout"] if isinstance(meta.get("layout"), dict) else {}
    fallback = {"delimiter": ",", "x_key": "x", "y_key": "y"}
    out = {}
    for name, default in fallback.items():
        value = getattr(args, name, None)
        if value is None:
            value = stored.get(name) if isinstance(stored.get(name), str) else default
        out[name] = value
    return out


def _check_outputs(
    reads: dict[str, Any],
    writes: dict[str, Any],
    allowed: Sequence[tuple[str, str]] = (),
) -> None:
    """Every output's directory, name and kind, then no output may hit an input or another
    (the library's one rule, :func:`xbp.paths.check_files`, which ``fit`` applies too)."""
    from .paths import check_files

    check_files(reads, writes, allowed)


def _reads(files: list[Path], **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {f"--data ({f.name})" if len(files) > 1 else "--data": f for f in files}
    out.update({k: v for k, v in more.items() if v is not None})
    return out


def _use_jax_x64(args: argparse.Namespace) -> None:
    """float64 on JAX needs 64-bit mode, switched on before any array exists."""
    name = getattr(args, "backend", None)
    if name is None:
        return
    try:
        library = backends.lookup(name)
    except XbpError:
        return  # the backend check says what is known
    library.enable_float64()  # a no-op where float64 always works
    library.set_cpu_threads(cpu_threads())


def cpu_threads(environ: Any = None) -> int:
    """The CPU threads of xbp's own runs for libraries with a thread pool (torch): 1, or
    ``XBP_THREADS``. Tiny and mid MLP steps are dominated by per-operation overhead
    that a pool's synchronisation adds to: on a busy 2-core machine, 3 epochs of the
    digits network took 2.1-2.5 s with one torch thread and 37-43 s with torch's
    default (``scripts/bench_threads.py``)."""
    env = os.environ if environ is None else environ
    text = env.get("XBP_THREADS", "").strip()
    if not text:
        return 1
    if not text.isdigit() or int(text) < 1:
        raise XbpValueError(f"XBP_THREADS={text!r}; give a whole number of threads >= 1")
    return int(text)


# -- data ------------------------------------------------------------------------------
class _Loaded:
    """Training data with what the model file records about it."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        feature_names: list[str] | None = None,
        label_name: str | None = None,
        label_index: int | None = None,
        classes: list[str] | None = None,
        columns: int | None = None,
    ) -> None:
        self.x, self.y = x, y
        self.feature_names, self.label_name = feature_names, label_name
        self.label_index, self.classes, self.columns = label_index, classes, columns


def _load_training(args: argparse.Namespace, fmt: str) -> _Loaded:
    _check_layout_options(args, fmt)
    if fmt != "csv" and "label_column" in args.given:
        raise XbpValueError(
            f"--label-column applies to CSV data; --data {args.data!r} is {fmt} data with "
            "its labels stored apart: drop --label-column"
        )
    with _as_options():
        return _read_training(args, fmt)


def _read_training(args: argparse.Namespace, fmt: str) -> _Loaded:
    from .data import load_dataset, load_table

    if fmt == "csv":
        column = _label_column(args.label_column)
        if column is None:
            raise XbpValueError(
                f"--label-column none: xbp {args.command} needs a label column; give its index "
                "or name"
            )
        t = load_table(args.data, column, delimiter=args.delimiter)
        assert t.y is not None and t.label_index is not None
        width = t.x.shape[1] + (t.y.shape[1] if t.y.ndim == 2 else 1)
        return _Loaded(t.x, t.y, t.feature_names, t.label_name, t.label_index, t.classes, width)
    x, y = load_dataset(
        args.data, format=args.format, seed=args.seed, x_key=args.x_key, y_key=args.y_key
    )
    return _Loaded(np.asarray(x), np.asarray(y))


TASKS = {"auto": "auto", "classify": "classification", "regress": "regression"}

# The library's keywords as the command line spells them: library errors name the
# keyword through xbp.errors.arg, and read in these words under every command.
FLAGS: dict[str, tuple[str, dict[Any, str]]] = {
    "loss": ("--loss", {}),
    "task": ("--task", {v: k for k, v in TASKS.items()}),
    "x": ("--data", {}),
    "epochs": ("--epochs", {}),
    "batch_size": ("--batch-size", {}),
    "seed": ("--seed", {}),
}


def _targets(y: np.ndarray, loss: str | None, task: str = "auto") -> Any:
    """The library's task and target rules (:func:`xbp.targets.infer_targets`) for
    ``--data``'s labels under ``--loss`` and ``--task``."""
    from .targets import infer_targets

    return infer_targets(y, loss=loss, task=TASKS[task], argument="--data's labels")


def _task_choice(args: argparse.Namespace, ck: Any = None, classes: Any = None) -> str:
    """``--task``, or the checkpoint's task on a resume, or ``classify`` for class names."""
    if args.task != "auto":
        return str(args.task)
    stored = None if ck is None else ck.metadata.get("task")
    if stored in ("classification", "regression"):
        return "classify" if stored == "classification" else "regress"
    return "classify" if classes is not None else "auto"


def _scaled(x: np.ndarray, scaling: Any, argument: str = "--data") -> np.ndarray:
    """Apply a model's stored scaling; refuse values that are not finite afterwards."""
    if scaling is None:
        out = x if x.dtype.kind == "f" else x.astype(np.float64)
    else:
        mean, std = scaling
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = (x - mean) / std
    bad = ~np.isfinite(out)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise XbpValueError(
            f"{argument} row {row} column {col} is {x[row, col]!r}, which is not finite after "
            "scaling (NaN, Inf, or too large); clean or rescale the data"
            + ("" if scaling is None else " (or train with --no-standardize)")
        )
    return out


def _stored_scaling(meta: dict[str, Any], n_in: int, argument: str) -> Any:
    pre = meta.get("standardize")
    if not pre:
        return None
    try:
        mean = np.asarray(pre["mean"], dtype=np.float64)
        std = np.asarray(pre["std"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise XbpFileError(f"{argument} has a corrupt 'standardize' entry in its header") from None
    if mean.shape != (n_in,) or std.shape != (n_in,):
        raise XbpFileError(
            f"{argument} stores scaling for {mean.size} features but its network takes {n_in}"
        )
    return mean, std


# -- models --------------------------------------------------------------------------
def _build_network(args: argparse.Namespace, n_in: int, n_out: int, output: str | None) -> Any:
    from .network import mlp

    return mlp(
        [n_in, *args.layers, n_out],
        standardize=not getattr(args, "no_standardize", True),
        activation=args.activation,
        output=output,
        loss=args.loss,
        backend=args.backend,
        device=_device(args.device),
        dtype=args.dtype,
        seed=args.seed,
        init=args.init,
    )


def _make_optimizer(run: dict[str, Any], n_train: int) -> Any:
    """The optimizer and schedule of a run (steps counted from its epochs)."""
    from . import optim

    name = run["optimizer"]
    lr = run["lr"]
    if lr is None:
        lr = DEFAULT_LR["adaptive" if name in ADAPTIVE else "other"]
    steps = max(run["epochs"] * -(-n_train // run["batch_size"]), 1)
    sched: Any = {
        "constant": lambda: optim.constant(lr),
        "cosine": lambda: optim.cosine(lr, steps),
        "step": lambda: optim.step(lr, max(steps // 3, 1), 0.1),
        "exponential": lambda: optim.exponential(lr, 0.01, steps),
    }[run["schedule"]]()
    if run["warmup"]:
        sched = optim.warmup(sched, run["warmup"])
    wd = run["weight_decay"]
    if wd is None:
        wd = DEFAULT_WEIGHT_DECAY.get(name, 0.0)
    return optim.get_optimizer(name, sched, weight_decay=wd, clip_norm=run["clip_norm"])


# options that define a run: on --resume each must match the checkpoint
RUN_OPTIONS = (
    "data",
    "format",
    "label_column",
    "layers",
    "activation",
    "output",
    "loss",
    "init",
    "dtype",
    "seed",
    "optimizer",
    "lr",
    "schedule",
    "warmup",
    "weight_decay",
    "clip_norm",
    "batch_size",
    "val_split",
    "test_split",
    "no_standardize",
    "early_stopping",
    "on_divergence",
)


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    run = {name: getattr(args, name) for name in RUN_OPTIONS}
    run["loss"] = "quadratic" if run["loss"] == "mse" else run["loss"]
    run["activation"] = "sigmoid" if run["activation"] == "logistic" else run["activation"]
    run["epochs"] = args.epochs
    return run


def _effective(name: str, run: dict[str, Any]) -> Any:
    """An option's value as the run uses it (``--lr`` none -> the optimizer's default)."""
    value = run[name]
    if value is None and name == "lr":
        return DEFAULT_LR["adaptive" if run["optimizer"] in ADAPTIVE else "other"]
    if value is None and name == "weight_decay":
        return DEFAULT_WEIGHT_DECAY.get(run["optimizer"], 0.0)
    if name == "data" and isinstance(value, str):
        return os.path.realpath(os.path.expanduser(value)) if os.path.exists(value) else value
    return value


def _contradiction(name: str, current: dict[str, Any], stored: dict[str, Any], label: str) -> str:
    flag = _flag(name)
    if isinstance(current[name], bool):
        was = "without" if not stored[name] else "with"
        return (
            f"{flag if current[name] else 'leaving out ' + flag} contradicts {label}, which was "
            f"trained {was} {flag}; drop it to continue the same run, or start a new run "
            "without --resume"
        )
    return (
        f"{flag} {_show(current[name])} contradicts {label}, which was trained with {flag} "
        f"{_show(_effective(name, stored))}; drop {flag} to continue the same run, or start a "
        "new run without --resume"
    )


def _resume_run(args: argparse.Namespace, ck: Any) -> dict[str, Any]:
    """The run options of a resumed run: the checkpoint's, any contradiction refused."""
    label = f"--resume {args.resume!r}"
    done = int(ck.training["epoch"])
    stored = ck.metadata.get("cli")
    current = _run_options(args)
    if not isinstance(stored, dict):
        # written by xbp.fit or an older xbp: only the architecture can be compared
        config = ck.network.config()
        checkable = {
            "layers": [layer[1] for layer in config["layers"][:-1]],
            "loss": config["loss"],
            "dtype": config["dtype"],
            "optimizer": ck.optimizer.name,
        }
        for name in sorted(args.given & set(RUN_OPTIONS)):
            if name in checkable and current[name] == checkable[name]:
                continue
            if name in checkable:
                raise XbpValueError(
                    f"{_flag(name)} {_show(current[name])} contradicts {label}, which holds "
                    f"{_flag(name)} {_show(checkable[name])}; drop {_flag(name)} to continue "
                    "the same run, or start a new run without --resume"
                )
            raise XbpValueError(
                f"{_flag(name)} cannot be checked against {label}: it records no xbp train "
                f"options (written by xbp.fit or an older xbp); drop {_flag(name)} to continue "
                "the run as saved"
            )
        run = dict(current)
        if "epochs" not in args.given:
            raise XbpValueError(
                f"{label} records no planned number of epochs; pass --epochs N (N > {done})"
            )
        run["stored"] = False
    else:
        missing = [k for k in (*RUN_OPTIONS, "epochs") if k not in stored]
        if missing:
            raise XbpFileError(f"{label} has incomplete xbp train options (lacks {missing})")
        for name in RUN_OPTIONS:
            if name in args.given and _effective(name, current) != _effective(name, stored):
                raise XbpValueError(_contradiction(name, current, stored, label))
        run = {k: stored[k] for k in (*RUN_OPTIONS, "epochs")}
        run["stored"] = True
    planned = int(run["epochs"])
    epochs = args.epochs if "epochs" in args.given else planned
    if epochs <= done:
        if "epochs" in args.given:
            raise XbpValueError(
                f"--epochs {epochs} is not beyond the {done} epochs {label} has done; ask for "
                f"more (e.g. --epochs {done + planned if planned > done else done * 2})"
            )
        raise XbpValueError(
            f"{label} has finished all {planned} epochs of its run; pass --epochs N with "
            f"N > {done} to train further"
        )
    run["planned"] = planned
    run["epochs"] = epochs
    return run


def _check_schedule_extension(
    args: argparse.Namespace, ck: Any, run: dict[str, Any], n_train: int
) -> Any:
    """The optimizer to resume with: the checkpoint's, or its schedule stretched on request."""
    label = f"--resume {args.resume!r}"
    epochs, planned = run["epochs"], run["planned"]
    if not run["stored"]:
        steps = epochs * -(-n_train // run["batch_size"])
        sched = ck.optimizer.schedule
        first = sched(0) or sched(1)
        last = sched(max(steps - 1, 0))
        if first > 0 and last <= 1e-9 * first:
            raise XbpValueError(
                f"--epochs {epochs}: the learning-rate schedule of {label} reaches 0 before "
                "then, so the extra epochs would not train; start a new run"
            )
        return ck.optimizer
    if epochs <= planned or run["schedule"] == "constant":
        return ck.optimizer
    if not args.extend_schedule:
        raise XbpValueError(
            f"--epochs {epochs} goes beyond the {planned} epochs {label} planned its "
            f"{run['schedule']} learning-rate schedule for (it has ended: the rate would stay "
            f"at its final value); pass --extend-schedule to stretch it over {epochs} epochs, "
            "or start a new run"
        )
    return _make_optimizer(run, n_train)


def _stored_optimizer_matches(ck: Any, run: dict[str, Any], n_train: int) -> None:
    """The recorded options must rebuild the checkpoint's optimizer exactly."""
    again = _make_optimizer({**run, "epochs": run["planned"]}, n_train)
    if again.config() != ck.optimizer.config():
        raise XbpValueError(
            f"the checkpoint's optimizer {ck.optimizer.config()} does not follow from its "
            f"recorded options ({again.config()}); the training data changed size. Resume "
            "with the data it was trained on, or start a new run"
        )


# -- train --------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    import xbp

    from .io import load_checkpoint, save

    args.loss = "quadratic" if args.loss == "mse" else args.loss
    if args.extend_schedule and not args.resume:
        raise XbpValueError("--extend-schedule goes with --resume; drop it for a new run")
    checkpoint = args.checkpoint if args.checkpoint is not None else args.resume
    writes = {
        "--save": args.save,
        "--checkpoint": checkpoint,
        "--plot": args.plot,
        "--log-csv": args.log_csv,
    }
    allowed = [("--checkpoint", "--resume")]  # a resumed run keeps writing its checkpoint
    # 1. every file before any work: inputs exist and are regular, outputs can be written
    #    and destroy nothing
    if args.resume is not None:
        from .paths import input_file

        input_file(args.resume, "--resume", "a checkpoint written by --checkpoint")
        _check_outputs({"--resume": args.resume}, writes, allowed)
    else:
        fmt, files = _data_files(args)
        _check_outputs(_reads(files), writes, allowed)
    if args.plot is not None:
        _need_matplotlib()
    compile_flag = {"auto": None, "on": True, "off": False}[args.compile]
    if compile_flag is not None and "compile" not in library_defaults():
        raise XbpValueError(
            f"--compile {args.compile}: this xbp's fit has no compile option; use --compile auto"
        )
    _use_jax_x64(args)

    strategy = None
    if args.distributed:
        from .distributed import local_device, strategy_from_environment

        strategy = strategy_from_environment(timeout=args.timeout)  # mpiexec or torchrun
        if args.device in (None, "cuda"):
            device = local_device(args.backend)  # one GPU per rank where there are GPUs
            if device is not None:
                args.device = device
    root = strategy is None or strategy.is_root

    # 2. a resumed run takes its options from the checkpoint (read once)
    ck = None
    run = _run_options(args)
    if args.resume is not None:
        ck = load_checkpoint(
            args.resume, backend=args.backend, device=_device(args.device), argument="--resume"
        )
        if not ck.resumable:
            raise XbpValueError(
                f"--resume {args.resume!r} is a model file (written by --save or xbp.save), not "
                "a checkpoint: it holds no optimizer state or epoch. Resume from the file "
                "written by --checkpoint, or start a new run"
            )
        run = _resume_run(args, ck)
        for name in RUN_OPTIONS:
            setattr(args, name, run[name])
        args.epochs = run["epochs"]
        fmt, files = _data_files(args)
        _check_outputs(_reads(files, **{"--resume": args.resume}), writes, allowed)

    # 3. the data, checked against the loss before anything is built
    data = _load_training(args, fmt)
    x, y = data.x, data.y
    spec = _targets(y, args.loss, _task_choice(args, ck, data.classes))
    y, n_out, task, args.loss = spec.y, spec.n_out, spec.task, spec.loss
    classes = data.classes if data.classes is not None else spec.classes
    (xtr, ytr), (xva, yva), (xte, yte) = _split(args, x, y)
    # the model standardises its inputs itself (a Standardize layer adapted from the
    # training rows by fit); a checkpoint of an older xbp recorded the scaling instead
    scaling = None if ck is None else ck.metadata.get("standardize")
    if ck is not None and scaling:
        stored = _stored_scaling(ck.metadata, xtr.shape[1], "--resume")
        xtr, xva, xte = (_scaled(part, stored) for part in (xtr, xva, xte))
    if classes is not None:  # the model keeps its class labels: train on them
        names = np.asarray(classes)
        ytr, yva, yte = names[ytr], names[yva], names[yte]
    # 4. the network and optimizer: new, or the checkpoint's
    if ck is not None:
        net = ck.network
        if run["stored"]:
            _stored_optimizer_matches(ck, run, len(ytr))
        opt = _check_schedule_extension(args, ck, run, len(ytr))
        if opt is not ck.optimizer:
            ck = ck._replace(optimizer=opt)
        if net.classes is None and classes is not None:
            net.classes = classes  # a checkpoint written before models kept their classes
        if net.n_in != xtr.shape[1] or net.n_out != n_out:
            raise XbpValueError(
                f"--resume {args.resume!r} holds a {net.sizes} network but --data gives "
                f"{xtr.shape[1]} features and {n_out} outputs; resume with the same data"
            )
    else:
        net = _build_network(args, xtr.shape[1], n_out, args.output or spec.output)
        net.classes = classes
        if task == "regression" and net.layers[-1].activation == "identity":
            output_bias_at_mean(net, ytr)  # start at the mean: learn the variation, not the offset
        opt = _make_optimizer(run, len(ytr))
    meta: dict[str, Any] = {
        "data": args.data,
        "features": {"count": int(xtr.shape[1]), "names": data.feature_names},
        "label": {"name": data.label_name, "index": data.label_index, "columns": data.columns},
        "classes": data.classes,  # the label column's names (the model keeps its classes)
        "task": task,
        "standardize": scaling,
        "cli": _run_options(args),  # what a --resume compares its flags with
        # how evaluate and predict read the same kind of file
        "layout": {"delimiter": args.delimiter, "x_key": args.x_key, "y_key": args.y_key},
    }
    callbacks: list[Any] = []
    extra: dict[str, Any] = {}
    stopper = None
    if args.early_stopping is not None:
        stopper = xbp.EarlyStopping(patience=args.early_stopping)
        callbacks.append(stopper)
    if args.log_csv is not None:
        callbacks.append(xbp.CSVLogger(args.log_csv))
    if args.tensorboard is not None:
        callbacks.append(xbp.TensorBoard(args.tensorboard))
    if args.metrics and strategy is None:  # data-parallel runs report them on the test rows only
        extra["metrics"] = args.metrics
    quiet = args.quiet or not root
    if not quiet:
        resumed = "" if ck is None else f"; resuming at epoch {ck.training['epoch']}"
        print(
            f"xbp train: {net!r}\n  data {args.data}: {len(ytr)} train, {len(yva)} validation, "
            f"{len(yte)} test ({task}); optimizer {opt.name}, {args.epochs} epochs, batch "
            f"{args.batch_size}{resumed}",
            flush=True,
        )
    if compile_flag is not None:
        extra["compile"] = compile_flag
    if args.precision is not None:
        with _as_options(FIT_NAMES):
            net.precision = args.precision  # saved with the model and its checkpoints
    progress: Any = False if quiet or args.progress == "off" else args.progress
    t0 = time.perf_counter()
    with _as_options(FIT_NAMES):
        hist = xbp.fit(
            net,
            xtr,
            ytr,
            epochs=args.epochs,
            batch_size=args.batch_size,
            optimizer=opt,
            validation_data=(xva, yva) if len(yva) else None,
            seed=args.seed,
            callbacks=callbacks,
            progress=progress,
            checkpoint=checkpoint,
            checkpoint_every=args.checkpoint_every,
            resume=ck,
            on_divergence=args.on_divergence,
            strategy=strategy,
            metadata=meta,
            **extra,
        )
    seconds = time.perf_counter() - t0
    wanted = [*headline_metrics(task), *(args.metrics or [])]
    result = (
        xbp.evaluate(net, xte, yte, metrics=wanted)
        if len(yte)
        else {"loss": None, "accuracy": None}
    )
    if not root:
        return 0
    if stopper is not None and not args.quiet:
        _report_early_stopping(stopper, hist)
    held, where = ((xva, yva), "validation") if len(yva) else ((xte, yte), "test")
    if len(held[1]):
        scores = result if where == "test" else xbp.evaluate(net, *held)
        warning = trivial_warning(task, ytr, held[1], scores, where)
        if warning is not None:
            print(f"xbp train: warning: {warning}", file=sys.stderr)
    print(f"{summary_line(result, task, 'test ')}  ({len(hist)} epochs, {seconds:.1f} s)".strip())
    if args.save:
        save(net, args.save, optimizer=opt, training={"history": hist.to_dict()}, metadata=meta)
        print(f"saved {args.save}")
    if args.plot:
        plot_history(hist, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _split(args: argparse.Namespace, x: np.ndarray, y: np.ndarray) -> tuple[Any, ...]:
    """The (train, validation, test) pairs of ``--data``."""
    from .data import train_val_test_split

    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    split = train_val_test_split(x, y, val=args.val_split, test=args.test_split, seed=args.seed)
    if args.batch_size > len(split[0][1]):
        raise XbpValueError(
            f"--batch-size {args.batch_size} is larger than the {len(split[0][1])} training "
            f"rows; use --batch-size {len(split[0][1])} or less"
        )
    return split


def _report_early_stopping(stopper: Any, hist: Any) -> None:
    best = getattr(stopper, "best_epoch", None)
    last = len(hist)
    monitor = getattr(stopper, "monitor", "val_loss")
    if hist.stopped_early:
        print(
            f"early stopping: {monitor} did not improve for {_epochs(stopper.patience + 1)}; "
            f"stopped after epoch {last}, restored the weights of epoch {best} "
            f"({monitor} {stopper.best:.4f})"
        )
    elif best is not None and best != last and getattr(stopper, "restore_best", True):
        print(f"early stopping: restored the weights of epoch {best}, the best {monitor}")


def _need_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise XbpValueError("--plot needs matplotlib: pip install 'xbp[plot]'") from None


def plot_history(hist: Any, path: str) -> None:
    """Loss and accuracy curves, train and validation, to a PNG.

    Without accuracy (regression) only the loss panel is drawn.
    """
    _need_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_write

    epochs = [row["epoch"] for row in hist.epochs]
    metrics = ["loss"]
    if any(v is not None for key in ("accuracy", "val_accuracy") for v in hist[key]):
        metrics.append("accuracy")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            values = hist[key]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100), "--plot")
    finally:
        plt.close(fig)


# -- evaluate and predict: a saved model on new data -----------------------------------
def _model_option(args: argparse.Namespace) -> str:
    return "--model" if args.command == "explain" else "model"


def _load_model(args: argparse.Namespace, path: str, name: str) -> tuple[Any, dict[str, Any]]:
    from .io import load_checkpoint

    ck = load_checkpoint(path, backend=args.backend, device=_device(args.device), argument=name)
    return ck.network, ck.metadata


def _model_features(meta: dict[str, Any], net: Any) -> tuple[int, list[str] | None]:
    features = meta.get("features")
    names = features.get("names") if isinstance(features, dict) else None
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        names = None
    return net.n_in, names


def _width_error(have: int, want: int, what: str, hint: str = "") -> XbpValueError:
    return XbpValueError(
        f"--data has {have} feature columns but the model takes {want} features{what}; "
        f"give data with the model's {want} features{hint}"
    )


# the library's argument names in messages, and the CLI options they come from
DATA_NAMES = (("path=", "--data "), ("label_column=", "--label-column "))
FIT_NAMES = (
    ("compile=True", "--compile on"),
    ("compile=False", "--compile off"),
    ("compile=None", "--compile auto"),
    ("precision=", "--precision "),
    ("CSVLogger path=", "--log-csv "),
)


@contextlib.contextmanager
def _as_options(names: Sequence[tuple[str, str]] = DATA_NAMES) -> Iterator[None]:
    """Errors of the library name the CLI's options (``--data``), not its arguments."""
    try:
        yield
    except XbpError as exc:
        text = str(exc)
        for arg, option in names:
            text = text.replace(arg, option)
        if text == str(exc):
            raise
        raise type(exc)(text) from None


def _data_chunks(
    args: argparse.Namespace, fmt: str, net: Any, meta: dict[str, Any], need_labels: bool
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Chunks of (scaled features, labels or None) of at most ``--batch-size`` rows."""
    with _as_options():
        yield from _read_chunks(args, fmt, net, meta, need_labels)


def _read_chunks(
    args: argparse.Namespace, fmt: str, net: Any, meta: dict[str, Any], need_labels: bool
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    from .data import csv_columns, iter_table, load_dataset, load_npz
    from .hostrows import HostChunks

    n_in, names = _model_features(meta, net)
    scaling = _stored_scaling(meta, n_in, f"model {args.model!r}")
    classes = meta.get("classes") if isinstance(meta.get("classes"), list) else None
    label: dict[str, Any] = meta["label"] if isinstance(meta.get("label"), dict) else {}
    given = "label_column" in args.given
    bs = args.batch_size
    _check_layout_options(args, fmt)
    layout = _layout(args, meta)

    def finish(x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        if x.ndim != 2 or x.shape[1] != n_in:
            raise _width_error(x.shape[1] if x.ndim == 2 else 1, n_in, "")
        if x.dtype.kind not in "fiu":
            raise XbpValueError(f"--data has features of dtype {x.dtype}; need numbers")
        if y is not None and classes and net.classes is not None:
            y = np.asarray(classes)[y]  # the names iter_table coded, for the model's classes
        return _scaled(x, scaling), y

    if fmt == "csv":
        delimiter = layout["delimiter"]
        file_names, width = csv_columns(args.data, delimiter=delimiter)
        stored = label.get("name")
        stored_names = stored if isinstance(stored, list) else [stored]
        n_labels = len(stored) if isinstance(stored, list) else 1
        index = label.get("index")
        if given:
            column = _label_column(args.label_column)
        elif file_names is not None and all(n in file_names for n in stored_names):
            column = stored
        elif width == n_in:
            column = None
        elif width == n_in + n_labels:
            if isinstance(index, list) and all(isinstance(i, int) for i in index):
                column = index
            elif isinstance(index, int) and 0 <= index < width:
                column = index
            else:  # trained on arrays (.npz, a named dataset): any column could be the extra one
                raise XbpValueError(
                    f"--data has {width} columns, {n_labels} more than the model's {n_in} "
                    "features, and the model records no label column (it was not trained on a "
                    "CSV); name the extra column with --label-column (e.g. -1 or 0), or drop it"
                )
        else:
            raise XbpValueError(
                f"--data has {width} columns but the model takes {n_in} features (with "
                f"{'its label columns' if n_labels > 1 else 'a label column'}: "
                f"{n_in + n_labels}); give data with the model's features, or name the label "
                "column with --label-column"
            )
        if column is None and need_labels:
            raise XbpValueError(
                f"--data has no label column (its {width} columns are the model's features); "
                f"{args.command} needs labels: add them, or use xbp predict"
            )
        columns = [] if column is None else column if isinstance(column, list) else [column]
        positions = {
            file_names.index(c) if isinstance(c, str) and file_names and c in file_names else c
            for c in columns
        }
        positions = {c % width if isinstance(c, int) else c for c in positions}
        n_features = width - len(columns)
        if n_features != n_in:
            raise _width_error(
                n_features,
                n_in,
                " (after setting aside the label column)" if column is not None else "",
                "" if column is not None else "; name a label column with --label-column",
            )
        if file_names is not None and names is not None:
            keep = [n for i, n in enumerate(file_names) if i not in positions]
            if keep != names:
                raise XbpValueError(
                    f"--data's feature columns {keep[:4]}... differ from the model's "
                    f"{names[:4]}...; give the columns the model was trained on, in its order"
                )
        for t in iter_table(
            args.data,
            column,
            classes=classes if classes and column is not None else None,
            chunk_rows=bs,
            delimiter=delimiter,
        ):
            if t.y is not None and classes is None and t.classes is not None:
                raise XbpValueError(
                    f"--data's label column holds names ({t.classes[:3]}...) but the model was "
                    "trained on numeric labels; check --label-column"
                )
            yield finish(t.x, t.y if need_labels else None)
        return
    if fmt == "npz" and not need_labels:
        x, _ = load_npz(args.data, layout["x_key"], y_key=None, mmap=_stored_plain(args.data))
        y: Any = None
    elif fmt == "npz":
        x, y = load_npz(args.data, layout["x_key"], layout["y_key"], mmap=_stored_plain(args.data))
    else:
        x, y = load_dataset(args.data, format=args.format, seed=0, kind=_mnist_kind(args))
    if len(x.shape) != 2:
        raise XbpValueError(f"--data has features of shape {x.shape}; need (samples, features)")
    if x.shape[1] != n_in:
        raise _width_error(x.shape[1], n_in, "")
    # a memory map is read from its file a chunk at a time (HostChunks' pread), so its
    # pages never pile up in this process (peak RSS: a chunk, not the file)
    for xb, yb in HostChunks(x, y if need_labels else None, bs):
        yield finish(np.asarray(xb), None if yb is None else np.asarray(yb))


def _stored_plain(path: str) -> bool:
    """Whether an .npz's arrays are stored uncompressed (then they are read in place)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    except (OSError, zipfile.BadZipFile):
        return False  # load_npz says what is wrong with the file


def _task(net: Any, meta: dict[str, Any]) -> str:
    task = meta.get("task")
    if task in ("classification", "regression"):
        return str(task)
    return "regression" if net.loss.name in ("quadratic", "poisson") else "classification"


def cmd_evaluate(args: argparse.Namespace) -> int:
    import xbp

    from .paths import input_file

    fmt, files = _data_files(args)
    input_file(args.model, "model", "a model file written by xbp train --save")
    _use_jax_x64(args)
    net, meta = _load_model(args, args.model, _model_option(args))
    task = _task(net, meta)
    rows = 0

    def counted() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        nonlocal rows
        rows = 0
        for x, y in _data_chunks(args, fmt, net, meta, need_labels=True):
            rows += len(x)
            yield x, y

    try:
        try:
            result = xbp.run.evaluate_chunks(net, counted(), metrics=headline_metrics(task))
        except XbpValueError as exc:
            if "needs class labels" not in str(exc):
                raise
            # targets that are not classes (real values under a classifier's loss)
            result = xbp.run.evaluate_chunks(net, counted())
            task = "other"
    except XbpValueError as exc:
        if "has no rows" in str(exc):
            raise XbpValueError("--data has no rows; give at least one sample") from None
        raise
    print(
        f"loss {result['loss']:.6f}"
        + (f"  accuracy {result['accuracy']:.4f}" if result.get("accuracy") is not None else "")
        + f"  ({rows} samples{_test_set_note(args, fmt)}, {net.backend.name})"
    )
    if task == "classification":
        classes = meta.get("classes") if isinstance(meta.get("classes"), list) else None
        print(classification_report(result["confusion_matrix"], classes))
    elif task == "regression":
        print(regression_report(result))
    return 0


def _test_set_note(args: argparse.Namespace, fmt: str) -> str:
    return " of the t10k test set" if fmt == "mnist" and _mnist_kind(args) == "t10k" else ""


_OUT_SUFFIXES = (".csv", ".npy", ".npz")


def cmd_predict(args: argparse.Namespace) -> int:
    from .io import atomic_write
    from .paths import input_file

    fmt, files = _data_files(args)
    input_file(args.model, "model", "a model file written by xbp train --save")
    if args.out is not None:
        suffix = os.path.splitext(args.out)[1].lower()
        if suffix not in _OUT_SUFFIXES:
            raise XbpValueError(f"--out {args.out!r}: use a .csv, .npy or .npz file name")
    _check_outputs(_reads(files, model=args.model), {"--out": args.out})
    _use_jax_x64(args)
    net, meta = _load_model(args, args.model, _model_option(args))
    classify = _task(net, meta) == "classification"
    classes = meta.get("classes") if isinstance(meta.get("classes"), list) else None
    if net.classes is not None:
        classes = list(net.classes)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for x, _ in _data_chunks(args, fmt, net, meta, need_labels=False):
            out = np.asarray(net.predict(x))
            labels = None
            if classify:
                codes = out.argmax(axis=1) if out.shape[1] > 1 else (out[:, 0] > 0.5).astype(int)
                labels = np.asarray(classes)[codes] if classes else codes
            yield out, labels

    if args.out is None:
        for out, labels in batches():
            lines = (
                [str(v) for v in labels]
                if labels is not None
                else [",".join(f"{v:.6g}" for v in row) for row in out]
            )
            sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        return 0
    suffix = os.path.splitext(args.out)[1].lower()
    count = 0
    if suffix == ".csv":

        def write(f: Any) -> None:
            nonlocal count
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            table = csv.writer(text, lineterminator="\n")
            header = None
            for out, labels in batches():
                if header is None:
                    names = output_names(
                        out.shape[1],
                        "classification" if classify else "regression",
                        classes,
                        (meta.get("label") or {}).get("name"),
                    )
                    header = (["label"] if labels is not None else []) + names
                    table.writerow(header)
                values = [[f"{v:.8g}" for v in row] for row in out]
                if labels is not None:
                    values = [[str(lab), *row] for lab, row in zip(labels, values)]
                table.writerows(values)
                count += len(out)
            text.flush()
            text.detach()

        atomic_write(args.out, write, "--out")
    else:
        outs, labs = [], []
        for out, labels in batches():
            outs.append(out)
            if labels is not None:
                labs.append(labels)
        output = np.concatenate(outs)
        labels_all = np.concatenate(labs) if labs else None
        count = len(output)
        if suffix == ".npy":
            chosen = labels_all if labels_all is not None else output
            atomic_write(args.out, lambda f: np.save(f, chosen), "--out")
        else:
            arrays: dict[str, Any] = {"output": output}
            if labels_all is not None:
                arrays["labels"] = labels_all
            atomic_write(args.out, lambda f: np.savez(f, **arrays), "--out")
    print(f"wrote {count} predictions to {args.out}")
    return 0


# -- the other commands -------------------------------------------------------------------
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


def cmd_summary(args: argparse.Namespace) -> int:
    from .io import load_checkpoint
    from .paths import input_file

    input_file(args.model, "model", "a model file written by xbp train --save")
    ck = load_checkpoint(args.model, backend="numpy", argument="model")
    print(f"{args.model}\n{ck.network.summary()}")
    epochs = ck.training.get("history", {}).get("epochs") or []
    if ck.optimizer is not None:
        print(f"optimizer: {ck.optimizer.name}")
    if epochs:
        last = epochs[-1]
        done = ck.training.get("epoch", len(epochs))
        print(f"trained: {done} epochs, last loss {last.get('loss')}")
    return 0


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from .gradcheck import gradcheck

    _use_jax_x64(args)
    args.loss = "quadratic" if args.loss == "mse" else args.loss
    net = _build_network(args, args.inputs, args.outputs, args.output)
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


def _explain_model_data(args: argparse.Namespace, meta: dict[str, Any], fmt: str) -> str:
    """Without ``--data``, explain a model on the data its file records."""
    if "data" in args.given:
        return fmt
    stored = meta.get("data")
    if not isinstance(stored, str) or not stored:
        raise XbpValueError(
            f"--model {args.model!r} records no training data; pass --data with the data it "
            "was trained on"
        )
    args.data = stored
    try:
        return _data_files(args)[0]
    except XbpError as e:
        raise XbpValueError(
            f"--model {args.model!r} was trained on {stored!r}, which cannot be read here; pass "
            "--data"
        ) from e


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain

    if not 2 <= args.digits <= 17:
        raise XbpValueError(
            f"--digits {args.digits} must lie in 2..17 (a float64 holds 17 significant digits)"
        )
    args.loss = "quadratic" if args.loss == "mse" else args.loss
    fmt, _ = _data_files(args)
    if args.model:
        from .paths import input_file

        input_file(args.model, "--model", "a model file written by xbp train --save")
    _use_jax_x64(args)
    if args.model:
        net, meta = _load_model(args, args.model, "--model")
        fmt = _explain_model_data(args, meta, fmt)
        args.batch_size = 1 << 30
        chunks = list(_data_chunks(args, fmt, net, meta, need_labels=True))
        x = np.concatenate([c[0] for c in chunks])
        y = np.concatenate([c[1] for c in chunks if c[1] is not None])
    else:
        data = _load_training(args, fmt)
        x, y = data.x, data.y
        x = _scaled(np.asarray(x), None)
        spec = _targets(np.asarray(y), args.loss, _task_choice(args, None, data.classes))
        y, args.loss = spec.y, spec.loss
        net = _build_network(args, x.shape[1], spec.n_out, args.output or spec.output)
    if not -len(x) <= args.index < len(x):
        raise XbpValueError(
            f"--sample {args.index} is outside the {len(x)} samples; use -{len(x)}..{len(x) - 1}"
        )
    i = args.index % len(x)
    ys = np.asarray(y[i : i + 1])
    if ys.ndim == 1 and net.n_out == 1:
        ys = ys.reshape(-1, 1)  # one 0/1 target column
    title = f"xbp explain: sample {i} of --data {args.data} through {net!r}"
    text = explain(
        net,
        np.asarray(x[i : i + 1], dtype=np.float64),
        ys,
        learning_rate=args.lr,
        digits=args.digits,
        limit=args.limit,
        check=args.check,
        title=title,
    )
    print(text)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    _check_outputs({}, {"--json": args.json})
    return run_bench(
        cases=args.cases.split(","),
        backends=args.backends,
        repeat=args.repeat,
        json_path=args.json,
        memory=args.memory,
    )


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_file

    summary = export_file(
        args.model, args.onnx, opset=args.opset, model_argument="model", onnx_argument="onnx"
    )
    print(summary)
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "export": cmd_export,
    "backends": cmd_backends,
    "summary": cmd_summary,
    "gradcheck": cmd_gradcheck,
    "explain": cmd_explain,
    "bench": cmd_bench,
}


def _quiet_broken_pipe() -> None:
    """The reader went away (``xbp predict ... | head``): no traceback, no flush error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # stdout is not a file descriptor (captured in-process)


def interrupted_message(
    args: argparse.Namespace, what: str = "interrupted", status: int = 130
) -> str:
    """What Ctrl-C (or SIGTERM) leaves behind: the exit status, the checkpoint to resume
    from and the command that does it, or that nothing resumable was written."""
    head = f"{what} (exit status {status})"
    if args.command != "train":
        return f"{head}; files written before it are whole"
    path = args.checkpoint if args.checkpoint is not None else args.resume
    from .checkpoint import checkpoint_epoch

    epoch = None if path is None else checkpoint_epoch(path)
    if epoch is None:
        hint = " (pass --checkpoint FILE to make a run resumable)" if path is None else ""
        return f"{head}; no checkpoint was written{hint}"
    return (
        f"{head}; the checkpoint {path} holds epoch {epoch}: continue with "
        f"xbp train --resume {shlex.quote(str(path))}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``xbp`` command; returns the exit status (2 for a user error).

    Under ``--distributed`` the whole command, argument parsing included, runs
    through :func:`xbp.distributed.run_collectively`: a failure on one rank
    (a bad flag, missing data, an error after training) ends every rank.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    from .distributed import parallel_launch

    found = parallel_launch()
    if found is not None and "--distributed" not in words:
        name, size = found
        print(
            f"xbp: error: running under {name} with {size} processes but without "
            "--distributed: each process would run its own copy of the command; add "
            "--distributed (xbp train), or start one process",
            file=sys.stderr,
        )
        return 2
    if "--distributed" in words:
        from .distributed import run_collectively

        return run_collectively(_main, words)
    return _main(words)


def _import_plugins(argv: list[str]) -> list[str] | None:
    """Import every ``--import MODULE`` (anywhere in ``argv``) and return the other words.

    A module registers its own activations and losses on import
    (:func:`xbp.register_activation`, :func:`xbp.register_loss`), so a model
    built from them can be trained, saved and read from the shell. The current
    directory is searched first, as ``python -m`` does. None after a one-line
    error."""
    import importlib

    rest, modules = [], []
    words = iter(argv)
    for word in words:
        if word == "--import":
            module = next(words, None)
            if module is None or module.startswith("-"):
                print(
                    "xbp: error: --import needs a module name, e.g. --import myparts",
                    file=sys.stderr,
                )
                return None
            modules.append(module)
        elif word.startswith("--import="):
            modules.append(word.split("=", 1)[1])
        else:
            rest.append(word)
    if modules and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # the module's own failure, reported in one line
            print(
                f"xbp: error: --import {module}: {type(exc).__name__}: {' '.join(str(exc).split())}"
                " (give an importable module that registers your parts)",
                file=sys.stderr,
            )
            return None
    return rest


def _main(argv: list[str]) -> int:
    plain = _import_plugins(argv)
    if plain is None:
        return 2
    argv = plain
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _finish_args(args)
    from .errors import Terminated
    from .signals import terminate_as_interrupt

    try:
        # SIGTERM (a scheduler's preemption) takes Ctrl-C's clean-up path: a file being
        # written is left as it was, the last checkpoint stays whole and resumable
        with terminate_as_interrupt(), spelled(FLAGS):
            return COMMANDS[args.command](args)
    except XbpError as exc:
        if args.debug:
            raise
        # one line, even for multi-line reports
        print(f"xbp {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _quiet_broken_pipe()
        return 141  # as if killed by SIGPIPE, like other tools in a pipeline
    except Terminated:
        print(
            f"xbp {args.command}: {interrupted_message(args, 'terminated by SIGTERM', 143)}",
            file=sys.stderr,
        )
        return 143
    except KeyboardInterrupt:
        print(f"xbp {args.command}: {interrupted_message(args)}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
