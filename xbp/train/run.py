"""Public entry points of a training run: :func:`fit`, :func:`evaluate`, :func:`predict_classes`.

:func:`fit` assembles a run from its parts and hands it to the loop: the
options (:class:`xbp.TrainOptions`), the data on the device
(:mod:`xbp.data.sources`), the strategy (one process, or MPI through
``comm=``/``strategy=``), the checkpoint callback and resume
(:mod:`xbp.train.checkpoint`); then :meth:`xbp.train.Trainer.fit` trains.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..data.hostrows import HostChunks, MappedRows
from ..data.sources import (
    BatchSource,
    Source,
    as_stream,
    class_weight_table,
    split_validation,
    stream_predict,
    to_device,
    with_class_weight,
)
from ..errors import XbpTypeError, XbpValueError, arg
from ..io.paths import RunLock, backing_file, check_files
from ..io.signals import terminate_as_interrupt
from ..metrics import MetricSet
from ..nn.network import EVAL_BATCH, Network
from ..nn.targets import infer_targets
from ..nn.validate import check_int, host_array, is_host_array, is_rows
from ..optim import Optimizer
from ..parallel.mpi import data_fingerprint
from ..parallel.strategy import LocalStrategy, Strategy
from .checkpoint import ModelCheckpoint, check_resumed_run, run_record
from .checkpoint import resume as resume_run
from .loop import History, Trainer, TrainOptions, evaluate_metrics

__all__ = ["fit", "evaluate", "evaluate_chunks", "predict", "predict_classes"]


def fit(
    net: Network,
    x: Any,
    y: Any = None,
    *,
    options: TrainOptions | None = None,
    validation_data: tuple[Any, Any] | None = None,
    resume: Any = None,
    comm: Any = None,
    strategy: Strategy | None = None,
    sample_weight: Any = None,
    class_weight: Any = None,
    stream: bool | None = None,
    **option_values: Any,
) -> History:
    """Train ``net`` in place by mini-batch gradient descent and return the History.

    Parameters
    ----------
    net : Network
    x, y : arrays, a memory map, or a batch source
        Host NumPy data (any backend) or arrays of the network's backend on its
        device. ``y`` may be ``(n,)`` integer class labels (one-hot encoded for
        you) or ``(n, n_out)`` targets. A NumPy memory map (or
        :class:`xbp.data.MappedRows`) as ``x`` is streamed: its rows stay on
        the host and move a batch at a time, prefetched. ``x`` may also be a
        re-iterable source of ``(x, y)`` batches with ``y`` omitted
        (:class:`xbp.data.sources.BatchSource` states the contract).
    options : TrainOptions, optional
        The run's options; keyword arguments override single fields. Every
        field of :class:`xbp.TrainOptions` is accepted as a keyword:
        ``epochs`` (10), ``batch_size`` (32), ``optimizer`` ("sgd"),
        ``learning_rate``, ``validation_split`` (0.0), ``shuffle`` (True),
        ``sampler`` (None: ``sampler(n)`` gives each epoch's row order),
        ``seed`` (0), ``callbacks``, ``progress`` ("auto"), ``checkpoint``,
        ``checkpoint_every`` (1), ``on_divergence`` ("raise", "halve" or
        "continue"), ``max_retries``
        (3), ``compile`` (None: where supported), ``precision`` (None: the
        network's), ``metadata``, ``metrics`` (e.g. ``["f1_macro"]``, logged
        per epoch for training and validation; :mod:`xbp.metrics`).
    validation_data : (x_val, y_val) or (x_val, y_val, sample_weight_val), optional
        Validation rows; with a third element their loss and accuracy are
        weighted by it. With ``validation_split`` instead, the held-out rows
        keep their own ``sample_weight``. ``class_weight`` never applies to
        validation (it reweights the training objective, not the measurement).
    resume : path or Checkpoint, optional
        Continue from a checkpoint written by this run's ``checkpoint``:
        weights, optimizer state, schedule position, epoch, RNG state and
        history. An already loaded :class:`xbp.io.Checkpoint` is used as it is.
    comm : mpi4py communicator, optional
        Data-parallel training across ranks (shortcut for
        ``strategy=xbp.parallel.mpi.MPIStrategy(comm)``).
    strategy : Strategy, optional
        How the run is spread over processes (default: this process alone).
    sample_weight : array (n,), optional
        Non-negative row weights: each batch's cost is ``sum_i w_i C_i / sum_i
        w_i`` over its rows, so integer weights equal repeating rows; the
        logged loss and accuracy are weighted the same way.
    class_weight : "balanced" or dict, optional
        Multiplies each training row's weight by the weight of its class:
        ``{class: weight}`` (classes left out weigh 1) or ``"balanced"``,
        ``n / (k * n_c)`` from the rows passed to ``fit`` (scikit-learn's rule).
        Classification targets only.
    stream : bool or None
        None streams memory maps and sources and moves arrays to the device
        whole; True streams host arrays too (bounded device memory); False
        moves a memory map to the device whole. Streamed training runs eagerly
        (``compile=True`` is refused) and gives the weights the same data in
        memory gives (docs/data.md).

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.make_xor()
    >>> net = xbp.mlp([2, 4, 1], activation="tanh", loss="binary_cross_entropy", seed=0)
    >>> hist = xbp.fit(net, x, y, epochs=3, batch_size=4, progress=False)
    >>> len(hist)
    3
    """
    if options is None:
        options = TrainOptions().replace(**option_values)
    elif not isinstance(options, TrainOptions):
        raise XbpTypeError(f"options is a {type(options).__name__}; pass an xbp.TrainOptions")
    elif option_values:
        options = options.replace(**option_values)
    if comm is not None:
        if strategy is not None:
            raise XbpTypeError("pass comm= or strategy=, not both")
        from ..parallel.mpi import MPIStrategy  # only MPI runs import mpi4py

        strategy = MPIStrategy(comm)
    strategy = LocalStrategy() if strategy is None else strategy
    if not isinstance(strategy, Strategy):
        raise XbpTypeError(
            f"strategy is a {type(strategy).__name__}; pass an xbp.parallel.strategy.Strategy"
        )
    if stream not in (None, True, False):
        raise XbpValueError(f"stream={stream!r}; use None (memory maps), True or False")
    if options.checkpoint is not None:
        options = options.replace(
            callbacks=(
                *options.callbacks,
                ModelCheckpoint(options.checkpoint, every=options.checkpoint_every),
            )
        )
    try:
        # SIGTERM (a scheduler's preemption) ends the run as Ctrl-C does: the last
        # checkpoint stays whole, a file being written is left as it was
        with terminate_as_interrupt():
            writes = _check_run_files(options, x, y, validation_data, resume, sample_weight)
            # two runs started together on one checkpoint or log: the second stops here
            with RunLock(writes if strategy.is_root else {}):
                return _fit(
                    net,
                    x,
                    y,
                    options,
                    validation_data,
                    resume,
                    strategy,
                    sample_weight,
                    class_weight,
                    stream,
                )
    except BaseException as exc:
        strategy.abort(exc)  # never leave the other processes waiting in a collective
        raise


def _check_run_files(
    options: TrainOptions,
    x: Any,
    y: Any,
    validation_data: Any,
    resume: Any,
    sample_weight: Any,
) -> dict[str, Any]:
    """The files a run writes (its callbacks' outputs), checked with the CLI's one rule
    (:func:`xbp.io.paths.check_files`) against the files it reads: memory-mapped inputs and
    the ``resume`` file. A resumed run may keep writing the checkpoint it resumes from."""
    writes: dict[str, Any] = {}
    for cb in options.callbacks:
        for name, path in cb.outputs().items():
            key, n = name, 1
            while key in writes:  # two checkpoints: 'checkpoint', 'checkpoint (2)'
                n += 1
                key = f"{name} ({n})"
            writes[key] = path
    if not writes:
        return writes
    reads: dict[str, Any] = {"x": backing_file(x), "y": backing_file(y)}
    reads["sample_weight"] = backing_file(sample_weight)
    if isinstance(validation_data, (tuple, list)):
        for name, part in zip(("x_val", "y_val", "sample_weight_val"), validation_data):
            reads[name] = backing_file(part)
    if isinstance(resume, (str, os.PathLike)):
        reads["resume"] = resume
    allowed = [(key, "resume") for key in writes if key.startswith("checkpoint")]
    check_files(reads, writes, allowed)
    return writes


def _fit(
    net: Network,
    x: Any,
    y: Any,
    options: TrainOptions,
    validation_data: Any,
    resume: Any,
    strategy: Strategy,
    sample_weight: Any = None,
    class_weight: Any = None,
    stream: bool | None = None,
) -> History:
    if not isinstance(net, Network):
        raise XbpTypeError(f"net is a {type(net).__name__}; pass an xbp.Network")
    if resume is None:
        _record(net, x, y)
    train: Source | None = as_stream(net, x, y, "x", stream)
    if train is None:
        if y is None:
            raise XbpTypeError("y is None; pass the targets (or a source of (x, y) batches as x)")
        train = to_device(net, x, y, sample_weight=sample_weight)
    elif sample_weight is not None or class_weight is not None:
        raise XbpValueError(
            "sample_weight and class_weight need the data in memory; streamed data (a memory "
            "map, a batch source or stream=True) trains unweighted: pass stream=False"
        )
    _check_source(train, options, strategy)
    table = None if class_weight is None else class_weight_table(net, train, class_weight)
    val: Source | None = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise XbpTypeError(
                "validation_data must be a pair (x_val, y_val) or a triple "
                "(x_val, y_val, sample_weight_val)"
            )
        vx, vy = validation_data[0], validation_data[1]
        val_w = validation_data[2] if len(validation_data) == 3 else None
        val = None if val_w is not None else as_stream(net, vx, vy, "x_val", stream)
        if val is None:
            val = to_device(net, vx, vy, "x_val", val_w)
        _check_source(val, options, strategy, "validation_data")
    elif options.validation_split:
        train, val = split_validation(net, train, options.validation_split, options.seed)
        if val.weighted and not val.weight_total > 0:
            raise XbpValueError(
                "sample_weight is zero on every validation row of validation_split; weight "
                "some of them, or pass validation_data=(x_val, y_val, sample_weight_val)"
            )
    if table is not None:  # "balanced" counted every row passed to fit
        train = with_class_weight(net, train, table)
    if resume is None and not net.adapted:
        _adapt(net, train)
    trainer = Trainer(
        net, options, strategy=strategy, optimizer=_optimizer_in_steps(options, train)
    )
    trainer.run_record = run_record(trainer, options.epochs, data_fingerprint(net, train, val))
    ck = None
    if resume is not None:
        ck = resume_run(trainer, resume)
        where = (
            "resume" if not isinstance(resume, (str, os.PathLike)) else f"resume={str(resume)!r}"
        )
        check_resumed_run(ck, trainer.run_record, where)
    strategy.setup(net, run_config(trainer, train, val, ck))
    saved = net.precision
    if options.precision is not None:
        net.precision = options.precision  # for this run; the network keeps its own after
    try:
        return trainer.fit(train, val, options.epochs)
    finally:
        net.precision = saved


def _record(net: Network, x: Any, y: Any) -> None:
    """What the model keeps about its data: a DataFrame's column names, and the class
    names of named labels (strings, booleans) the first time it trains on them."""
    net.record_inputs(x)
    kind = getattr(getattr(y, "dtype", None), "kind", None)
    if isinstance(y, list) and y and isinstance(y[0], (str, bool)):
        kind = "U"
    if net.classes is not None or kind not in ("O", "U", "S", "b") or getattr(y, "ndim", 1) != 1:
        return
    spec = infer_targets(y, loss=net.loss.name, task="classification")
    if spec.classes is None or spec.n_out != net.n_out:
        raise XbpValueError(
            f"y holds {len(spec.classes or ())} classes {list(spec.classes or ())[:5]} but the "
            f"network has {net.n_out} output(s) for loss={net.loss.name!r}; build it with "
            f"{spec.n_out} outputs (xbp.infer_targets(y) says what fits)"
        )
    net.classes = spec.classes


def _optimizer_in_steps(options: TrainOptions, train: Source) -> Optimizer:
    """The run's optimizer, a schedule in epochs (``cosine(0.1, epochs=40)``) turned into
    steps: ``ceil(rows / batch_size)`` updates per epoch."""
    opt = options.make_optimizer()
    if not opt.schedule.in_epochs:
        return opt
    if train.n is None:
        raise XbpValueError(
            "the learning-rate schedule is given in epochs, but a batch source does not say "
            "how many batches an epoch has; give the schedule's length in steps"
        )
    return opt.in_steps(-(-train.n // options.batch_size))


def _adapt(net: Network, train: Source) -> None:
    """Adapt the network's :class:`~xbp.nn.layers.Standardize` layers to the training rows
    (never the validation rows) before the first epoch."""
    rows = train.adapt_rows()
    if rows is None:
        raise XbpValueError(
            "the network has a Standardize layer that is not adapted yet, and a batch source "
            "cannot be read ahead of training; call net.adapt(x_sample) on representative rows "
            "first"
        )
    net.adapt(rows)


def run_config(trainer: Trainer, train: Source, val: Source | None, ck: Any) -> dict[str, Any]:
    """What every process of a run must agree on (compared before the first step)."""
    o = trainer.options
    return {
        "architecture": trainer.net.config(),
        "optimizer": trainer.optimizer.config(),
        "batch_size": o.batch_size,
        "epochs": o.epochs,
        "seed": o.seed,
        "shuffle": o.shuffle,
        "validation_split": o.validation_split,
        "on_divergence": o.on_divergence,
        "compile": o.compile,
        "precision": o.precision or trainer.net.precision,
        "train_shape": [train.n, trainer.net.n_in],
        "validation_rows": None if val is None else val.n,
        "weighted": [train.weighted, val is not None and val.weighted],
        "resume": None if ck is None else {"epoch": trainer.epoch, "step": trainer.step},
        "callbacks": [type(cb).__name__ for cb in trainer.callbacks],
        # a cheap hash of sampled rows, only where there are other processes to compare with
        "data": data_fingerprint(trainer.net, train, val) if trainer.strategy.size > 1 else None,
    }


def _check_source(
    data: Source, options: TrainOptions, strategy: Strategy, argument: str = "x"
) -> None:
    """What a source cannot do, said before any work: compiled epochs need device
    arrays (training data only), MPI needs rows every process can take its share of."""
    if argument == "x" and options.compile is True and data.device_arrays() is None:
        raise XbpValueError(
            f"{arg('compile', True)} needs the data on the device; streamed data (a memory map, a "
            f"batch source or stream=True) trains eagerly: pass {arg('compile', None)} or "
            "stream=False"
        )
    if strategy.size > 1 and not data.shareable:
        where = "" if argument == "x" else f"{argument}: "
        raise XbpValueError(
            f"{where}a batch source cannot be shared between MPI processes (xbp does not know "
            "its rows); pass an array or a memory map, which every process reads its share of"
        )


def evaluate(
    net: Network,
    x: Any,
    y: Any = None,
    *,
    batch_size: int = EVAL_BATCH,
    sample_weight: Any = None,
    metrics: Any = None,
) -> dict[str, Any]:
    """Loss and (where it applies) accuracy of ``net`` on ``(x, y)``, ``batch_size`` rows
    at a time; see :meth:`xbp.Network.evaluate` (``sample_weight`` weights both).

    ``metrics`` (names or :class:`xbp.metrics.Metric` objects, e.g.
    ``["f1_macro", "roc_auc_ovr", "confusion_matrix"]`` or ``["r2", "rmse"]``)
    adds each metric's value, computed in the same pass and weighted by
    ``sample_weight`` (see :mod:`xbp.metrics`).

    Host data (NumPy arrays, memory maps, :class:`xbp.data.MappedRows`) moves to
    the device one batch at a time, so the extra memory does not grow with the
    rows; ``x`` may also be a source of ``(x, y)`` batches (``y`` omitted).
    With ``sample_weight`` the data moves to the device whole.

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.make_xor()
    >>> sorted(xbp.evaluate(xbp.mlp([2, 2, 1], loss="binary_cross_entropy"), x, y))
    ['accuracy', 'loss']
    """
    if not isinstance(net, Network):
        raise XbpTypeError(f"net is a {type(net).__name__}; pass an xbp.Network")
    batch_size = check_int(batch_size, "batch_size")
    if y is None and hasattr(x, "shape"):
        raise XbpTypeError("y is None; pass the targets (or a source of (x, y) batches as x)")
    if metrics is not None:
        return _evaluate_metrics(net, x, y, batch_size, sample_weight, metrics)
    if sample_weight is not None:
        return net.evaluate(x, y, batch_size=batch_size, sample_weight=sample_weight)
    data = x if isinstance(x, Source) else _eval_stream(net, x, y, batch_size)
    if data is None:
        return net.evaluate(x, y, batch_size=batch_size)
    cost, correct = data.evaluation_sums(net, 0, data.n or 0, batch_size)
    n = data.weight_total  # a batch source's rows are counted during the pass
    sums = net.backend.to_host(
        net.xp.stack([cost, cost if correct is None else net.xp.astype(correct, cost.dtype)])
    )
    return {"loss": float(sums[0]) / n, "accuracy": None if correct is None else float(sums[1]) / n}


def _evaluate_metrics(
    net: Network, x: Any, y: Any, batch_size: int, sample_weight: Any, metrics: Any
) -> dict[str, Any]:
    """:func:`evaluate` with metrics: one forward pass over any kind of data."""
    chosen = MetricSet(metrics)
    chosen.check(net.n_out)
    data: Source | None
    if sample_weight is not None:
        data = to_device(net, x, y, sample_weight=sample_weight)
    else:
        data = x if isinstance(x, Source) else _eval_stream(net, x, y, batch_size)
        if data is None:
            data = to_device(net, x, y)
    return evaluate_metrics(net, [data], chosen, batch_size)


def evaluate_chunks(
    net: Network,
    chunks: Any,
    *,
    metrics: Any = (),
    batch_size: int = EVAL_BATCH,
) -> dict[str, Any]:
    """:func:`evaluate` over ``(x, y)`` chunks read one after the other (a file too big
    to hold): each chunk moves to the device, is evaluated in batches and dropped; the
    loss, accuracy and ``metrics`` cover every row, read back once at the end.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> x, y = xbp.data.make_xor()
    >>> net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    >>> whole = xbp.evaluate(net, x, y, metrics=["f1"])
    >>> parts = xbp.train.run.evaluate_chunks(net, [(x[:2], y[:2]), (x[2:], y[2:])], metrics=["f1"])
    >>> bool(np.isclose(whole["f1"], parts["f1"]) and np.isclose(whole["loss"], parts["loss"]))
    True
    """
    chosen = MetricSet(metrics)
    chosen.check(net.n_out)
    batch_size = check_int(batch_size, "batch_size")
    sources = (to_device(net, x, y) for x, y in chunks)
    return evaluate_metrics(net, sources, chosen, batch_size)


def _eval_stream(net: Network, x: Any, y: Any, batch_size: int) -> BatchSource | None:
    """Evaluation and prediction stream host data; device arrays are used where they are."""
    if y is None and not hasattr(x, "shape") and not is_rows(x):
        return BatchSource(x)  # a list of rows is an array, not a source of batches
    if not (is_host_array(x) or isinstance(x, MappedRows)):
        return None
    host = x if hasattr(x, "shape") else host_array(x, "x")
    if len(host.shape) != 2 or host.shape[0] == 0:
        net.check_inputs(host)  # raises, naming the shape
    net.check_inputs(np.array(host[:1]))  # the width and dtype, naming x
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 0 or y.shape[0] != host.shape[0]:
            net.check_targets(y, int(host.shape[0]))  # raises, naming the rows
    return BatchSource(HostChunks(host, y, batch_size), rows=(batch_size, int(host.shape[0])))


def predict(net: Network, x: Any, *, batch_size: int = EVAL_BATCH) -> Any:
    """The network's outputs for ``x``, ``batch_size`` rows at a time.

    Host data (arrays, memory maps, :class:`xbp.data.MappedRows`, a source of
    batches) gives a NumPy result and moves to the device one batch at a time:
    the extra memory is the result plus a few batches, whatever the rows. An
    array of the network's backend gives an array on its device.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> net = xbp.mlp([2, 3, 1], seed=0)
    >>> x = np.random.default_rng(0).random((10, 2))
    >>> bool(np.allclose(xbp.predict(net, x, batch_size=4), net.predict(x)))
    True
    """
    if not isinstance(net, Network):
        raise XbpTypeError(f"net is a {type(net).__name__}; pass an xbp.Network")
    batch_size = check_int(batch_size, "batch_size")
    if isinstance(x, MappedRows) or not hasattr(x, "shape"):  # row readers, batch sources
        data = _eval_stream(net, x, None, batch_size)
        assert data is not None
        return stream_predict(net, data)
    return net.predict(x, batch_size=batch_size)  # arrays: one verb, one implementation


def predict_classes(net: Network, x: Any) -> Any:
    """Class labels: argmax of the outputs, or ``output > 0.5`` for one output.

    Returned where ``x`` came from (NumPy in, NumPy out).

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.load_digits()
    >>> net = xbp.mlp([64, 10], loss="cross_entropy", standardize=True, seed=0)
    >>> history = xbp.fit(net, x, y, epochs=2, optimizer="adam", learning_rate=0.01, progress=False)
    >>> labels = xbp.train.predict_classes(net, x[:5])
    >>> labels.shape, labels.dtype.kind
    ((5,), 'i')
    """
    if not isinstance(net, Network):
        raise XbpTypeError(f"net is a {type(net).__name__}; pass an xbp.Network")
    return net.predict_classes(x)
