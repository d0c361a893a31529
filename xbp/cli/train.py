"""``xbp train``: build or resume a run, call :func:`xbp.fit`, report and save."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np

from ..errors import XbpFileError, XbpValueError
from ..metrics import headline_metrics, summary_line, trivial_warning
from ..nn.init import output_bias_at_mean
from .common import (
    build_network,
    check_outputs,
    data_files,
    load_training,
    prepare_backend,
    reads_of,
    remove_temporary,
    scaled_features,
    stored_scaling,
    targets_of,
    task_choice,
)
from .options import (
    ADAPTIVE,
    DEFAULT_LR,
    DEFAULT_WEIGHT_DECAY,
    device_option,
    flag_of,
    library_defaults,
    show_value,
)


def _make_optimizer(run: dict[str, Any], n_train: int) -> Any:
    """The optimizer and schedule of a run (steps counted from its epochs)."""
    from .. import optim

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
    flag = flag_of(name)
    if isinstance(current[name], bool):
        was = "without" if not stored[name] else "with"
        return (
            f"{flag if current[name] else 'leaving out ' + flag} contradicts {label}, which was "
            f"trained {was} {flag}; drop it to continue the same run, or start a new run "
            "without --resume"
        )
    return (
        f"{flag} {show_value(current[name])} contradicts {label}, which was trained with {flag} "
        f"{show_value(_effective(name, stored))}; drop {flag} to continue the same run, or start a "
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
                    f"{flag_of(name)} {show_value(current[name])} contradicts {label}, which holds "
                    f"{flag_of(name)} {show_value(checkable[name])}; drop {flag_of(name)} to "
                    "continue the same run, or start a new run without --resume"
                )
            raise XbpValueError(
                f"{flag_of(name)} cannot be checked against {label}: it records no xbp train "
                f"options (written by xbp.fit or an older xbp); drop {flag_of(name)} to continue "
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
    """``xbp train``; a temporary file it makes (a big CSV's features) is removed however
    the run ends: an error, Ctrl-C, or SIGTERM (which :func:`xbp.cli.main` raises as
    :class:`xbp.errors.Terminated`)."""
    try:
        return _train(args)
    finally:
        remove_temporary()


def _train(args: argparse.Namespace) -> int:
    import xbp

    from ..io import load_checkpoint, save

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
        from ..io.paths import input_file

        input_file(args.resume, "--resume", "a checkpoint written by --checkpoint")
        check_outputs({"--resume": args.resume}, writes, allowed)
    else:
        fmt, files = data_files(args)
        check_outputs(reads_of(files), writes, allowed)
    if args.plot is not None:
        _need_matplotlib()
    compile_flag = {"auto": None, "on": True, "off": False}[args.compile]
    if compile_flag is not None and "compile" not in library_defaults():
        raise XbpValueError(
            f"--compile {args.compile}: this xbp's fit has no compile option; use --compile auto"
        )
    prepare_backend(args)

    strategy = None
    if args.distributed:
        from ..parallel.mpi import local_device, strategy_from_environment

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
            args.resume,
            backend=args.backend,
            device=device_option(args.device),
            argument="--resume",
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
        fmt, files = data_files(args)
        check_outputs(reads_of(files, **{"--resume": args.resume}), writes, allowed)

    # 3. the data, checked against the loss before anything is built
    # a big uncompressed .npz or IDX file stays in the file (a big CSV goes to a temporary
    # file of floats): fit and evaluate stream its rows
    # (--compile on needs the data on the device: read whole)
    data = load_training(args, fmt, mapped=args.compile != "on")
    x, y = data.x, data.y
    spec = targets_of(y, args.loss, task_choice(args, ck, data.classes))
    y, n_out, task, args.loss = spec.y, spec.n_out, spec.task, spec.loss
    classes = data.classes if data.classes is not None else spec.classes
    (xtr, ytr), (xva, yva), (xte, yte) = _split(args, x, y)
    # the model standardises its inputs itself (a Standardize layer adapted from the
    # training rows by fit); a checkpoint of an older xbp recorded the scaling instead
    scaling = None if ck is None else ck.metadata.get("standardize")
    if ck is not None and scaling:
        stored = stored_scaling(ck.metadata, xtr.shape[1], "--resume")
        xtr, xva, xte = (scaled_features(np.asarray(part), stored) for part in (xtr, xva, xte))
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
        net = build_network(args, xtr.shape[1], n_out, args.output or spec.output)
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
        net.precision = args.precision  # saved with the model and its checkpoints
    progress: Any = False if quiet or args.progress == "off" else args.progress
    t0 = time.perf_counter()
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


def _split(args: argparse.Namespace, x: Any, y: np.ndarray) -> tuple[Any, ...]:
    """The (train, validation, test) pairs of ``--data``: :func:`xbp.data.split_indices`'
    rows, of features in memory or of :class:`~xbp.data.MappedRows` left in the file (views
    of the same rows in the same order, read a batch at a time by fit and evaluate)."""
    from ..data import split_indices, train_val_test_split
    from ..data.hostrows import MappedRows

    split: tuple[Any, ...]
    if isinstance(x, MappedRows):
        if x.shape[0] != y.shape[0]:
            raise XbpValueError(f"--data has {x.shape[0]} rows of features but {len(y)} labels")
        parts = split_indices(y, val=args.val_split, test=args.test_split, seed=args.seed)
        split = tuple((MappedRows(x.raw, x.dtype, x.divisor, rows=idx), y[idx]) for idx in parts)
    else:
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

    from ..io import atomic_write

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
