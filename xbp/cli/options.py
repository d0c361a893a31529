"""The command line's defaults (one table) and its argument parser."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from ..errors import XbpError

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
    from ..train import loop as training

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
        "task": "auto",  # the library's rule: xbp.nn.targets.infer_targets
        "layers": [256],
        "activation": "relu",
        "output": None,  # fits the task and loss (xbp.nn.targets.infer_targets)
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
        "timeout": 300.0,  # xbp.parallel.mpi.DEFAULT_TIMEOUT (a test keeps them equal)
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
    from ..nn import network

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
    from ..metrics import get_metric

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


def device_option(text: str | None) -> Any:
    if text is None:
        return None
    return int(text) if text.isdigit() else text


def label_column_option(text: str | None) -> Any:
    """``-1`` -> -1 (an index), ``species`` -> a header name, ``none`` -> no label column,
    ``t1,t2`` -> several label columns (multi-output regression)."""
    if text is None or text.lower() == "none":
        return None
    if "," in text:
        return [label_column_option(part.strip()) for part in text.split(",")]
    try:
        return int(text)
    except ValueError:
        return text


# -- the parser -------------------------------------------------------------------
def show_value(value: Any) -> str:
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
        shown = default_text or show_value(self.defaults[dest])
        self.p.add_argument(flag, default=UNSET, help=f"{help} (default: {shown})", **kw)


def _add_backend(o: _Options) -> None:
    from ..backends.select import BACKEND_NAMES

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
    from ..nn.activations import ACTIVATIONS
    from ..nn.init import INITS
    from ..nn.losses import LOSSES

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
    from ..optim import OPTIMIZERS

    parser = _Parser(
        prog="xbp",
        description="Neural networks trained by explicit "
        "backpropagation on NumPy, CuPy, PyTorch, JAX or array-api-strict.",
        epilog="Run 'xbp COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    from .. import __version__

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


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
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


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


TASKS = {"auto": "auto", "classify": "classification", "regress": "regression"}


# The library's keywords as the command line spells them: library errors name the
# keyword through xbp.errors.arg, and read in these words under every command.
FLAGS: dict[str, tuple[str, Any]] = {
    "loss": ("--loss", {}),
    "task": ("--task", {v: k for k, v in TASKS.items()}),
    "x": ("--data", {}),
    "path": ("--data", repr),  # the data loaders' file
    "label_column": ("--label-column", repr),
    "epochs": ("--epochs", {}),
    "batch_size": ("--batch-size", {}),
    "seed": ("--seed", {}),
    "compile": ("--compile", {True: "on", False: "off", None: "auto"}),
    "precision": ("--precision", repr),
    "CSVLogger path": ("--log-csv", repr),
}
