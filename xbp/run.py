"""Public entry points of a training run: :func:`fit`, :func:`evaluate`, :func:`predict_classes`.

:func:`fit` assembles a run from its parts and hands it to the loop: the
options (:class:`xbp.TrainOptions`), the data on the device
(:mod:`xbp.dataset`), the strategy (one process, or MPI through
``comm=``/``strategy=``), the checkpoint callback and resume
(:mod:`xbp.checkpoint`); then :meth:`xbp.Trainer.fit` trains.
"""

from __future__ import annotations

from typing import Any

from .checkpoint import ModelCheckpoint
from .checkpoint import resume as resume_run
from .dataset import (
    DeviceData,
    class_weight_table,
    split_validation,
    to_device,
    with_class_weight,
)
from .distributed import data_fingerprint
from .errors import XbpTypeError, XbpValueError
from .network import EVAL_BATCH, Network
from .strategy import LocalStrategy, Strategy
from .training import History, Trainer, TrainOptions

__all__ = ["fit", "evaluate", "predict_classes"]


def fit(
    net: Network,
    x: Any,
    y: Any,
    *,
    options: TrainOptions | None = None,
    validation_data: tuple[Any, Any] | None = None,
    resume: Any = None,
    comm: Any = None,
    strategy: Strategy | None = None,
    sample_weight: Any = None,
    class_weight: Any = None,
    **option_values: Any,
) -> History:
    """Train ``net`` in place by mini-batch gradient descent and return the History.

    Parameters
    ----------
    net : Network
    x, y : arrays
        Host NumPy data (any backend) or arrays of the network's backend on its
        device. ``y`` may be ``(n,)`` integer class labels (one-hot encoded for
        you) or ``(n, n_out)`` targets.
    options : TrainOptions, optional
        The run's options; keyword arguments override single fields. Every
        field of :class:`xbp.TrainOptions` is accepted as a keyword:
        ``epochs`` (10), ``batch_size`` (32), ``optimizer`` ("sgd"),
        ``learning_rate``, ``validation_split`` (0.0), ``shuffle`` (True),
        ``seed`` (0), ``callbacks``, ``progress`` ("auto"), ``checkpoint``,
        ``checkpoint_every`` (1), ``on_divergence`` ("raise"), ``max_retries``
        (3), ``compile`` (None: where supported), ``precision`` (None: the
        network's), ``metadata``.
    validation_data : (x_val, y_val) or (x_val, y_val, sample_weight_val), optional
        Validation rows; with a third element their loss and accuracy are
        weighted by it. With ``validation_split`` instead, the held-out rows
        keep their own ``sample_weight``. ``class_weight`` never applies to
        validation (it reweights the training objective, not the measurement).
    resume : path or Checkpoint, optional
        Continue from a checkpoint written by this run's ``checkpoint``:
        weights, optimizer state, schedule position, epoch, RNG state and
        history. An already loaded :class:`xbp.Checkpoint` is used as it is.
    comm : mpi4py communicator, optional
        Data-parallel training across ranks (shortcut for
        ``strategy=xbp.distributed.MPIStrategy(comm)``).
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
        from .distributed import MPIStrategy  # only MPI runs import mpi4py

        strategy = MPIStrategy(comm)
    strategy = LocalStrategy() if strategy is None else strategy
    if not isinstance(strategy, Strategy):
        raise XbpTypeError(
            f"strategy is a {type(strategy).__name__}; pass an xbp.strategy.Strategy"
        )
    try:
        return _fit(
            net, x, y, options, validation_data, resume, strategy, sample_weight, class_weight
        )
    except BaseException as exc:
        strategy.abort(exc)  # never leave the other processes waiting in a collective
        raise


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
) -> History:
    if not isinstance(net, Network):
        raise XbpTypeError(f"net is a {type(net).__name__}; pass an xbp.Network")
    if options.checkpoint is not None:
        options = options.replace(
            callbacks=(
                *options.callbacks,
                ModelCheckpoint(options.checkpoint, every=options.checkpoint_every),
            )
        )
    train = to_device(net, x, y, sample_weight=sample_weight)
    table = None if class_weight is None else class_weight_table(net, train, class_weight)
    val: DeviceData | None = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise XbpTypeError(
                "validation_data must be a pair (x_val, y_val) or a triple "
                "(x_val, y_val, sample_weight_val)"
            )
        val_w = validation_data[2] if len(validation_data) == 3 else None
        val = to_device(net, validation_data[0], validation_data[1], "x_val", val_w)
    elif options.validation_split:
        train, val = split_validation(net, train, options.validation_split, options.seed)
        if val.w is not None and not val.weight_total > 0:
            raise XbpValueError(
                "sample_weight is zero on every validation row of validation_split; weight "
                "some of them, or pass validation_data=(x_val, y_val, sample_weight_val)"
            )
    if table is not None:  # "balanced" counted every row passed to fit
        train = with_class_weight(net, train, table)
    trainer = Trainer(net, options, strategy=strategy)
    ck = None
    if resume is not None:
        ck = resume_run(trainer, resume)
    strategy.setup(net, run_config(trainer, train, val, ck))
    saved = net.precision
    if options.precision is not None:
        net.precision = options.precision  # for this run; the network keeps its own after
    try:
        return trainer.fit(train, val, options.epochs)
    finally:
        net.precision = saved


def run_config(
    trainer: Trainer, train: DeviceData, val: DeviceData | None, ck: Any
) -> dict[str, Any]:
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
        "weighted": [train.w is not None, val is not None and val.w is not None],
        "resume": None if ck is None else {"epoch": trainer.epoch, "step": trainer.step},
        "callbacks": [type(cb).__name__ for cb in trainer.callbacks],
        # a cheap hash of sampled rows, only where there are other processes to compare with
        "data": data_fingerprint(trainer.net, train, val) if trainer.strategy.size > 1 else None,
    }


def evaluate(
    net: Network, x: Any, y: Any, *, batch_size: int = EVAL_BATCH, sample_weight: Any = None
) -> dict[str, float | None]:
    """Loss and (where it applies) accuracy of ``net`` on ``(x, y)``; see
    :meth:`xbp.Network.evaluate` (``sample_weight`` weights both).

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.make_xor()
    >>> sorted(xbp.evaluate(xbp.mlp([2, 2, 1], loss="binary_cross_entropy"), x, y))
    ['accuracy', 'loss']
    """
    if not isinstance(net, Network):
        raise XbpTypeError(f"net is a {type(net).__name__}; pass an xbp.Network")
    return net.evaluate(x, y, batch_size=batch_size, sample_weight=sample_weight)


def predict_classes(net: Network, x: Any) -> Any:
    """Class labels: argmax of the outputs, or ``output > 0.5`` for one output.

    Returned where ``x`` came from (NumPy in, NumPy out)."""
    if not isinstance(net, Network):
        raise XbpTypeError(f"net is a {type(net).__name__}; pass an xbp.Network")
    return net.predict_classes(x)
