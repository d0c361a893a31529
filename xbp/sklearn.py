"""scikit-learn compatible estimators: drop-in MLPClassifier and MLPRegressor.

The constructor parameters are those of
:class:`sklearn.neural_network.MLPClassifier` / ``MLPRegressor``, plus
``backend`` and ``device`` (where training runs), ``compile`` (None: the
training step is traced and compiled where the backend traces, i.e. JAX;
True: required; False: eager) and ``precision`` (``"exact"``, ``"tf32"``, ``"bf16"`` or ``"fp16"``,
see :class:`xbp.Network`).

With the same ``random_state`` the estimators train the same model as
scikit-learn: the initial weights, the batch order and the early-stopping
split are drawn from the estimator's ``RandomState`` in scikit-learn's order,
and the update rules are scikit-learn's: :func:`xbp.optim.sklearn_sgd` (momentum
or Nesterov) and :func:`xbp.optim.sklearn_adam`, each with its per-batch L2 term.
``solver="sgd"``/``"adam"`` run the training loop of :func:`xbp.fit`
(:class:`xbp.train.Trainer`, every update its one :class:`xbp.train.step.Step`):
scikit-learn's batch order is the loop's ``sampler``, its bookkeeping, schedules
and stopping rules a callback; the weights, the optimizer state and every
gradient stay on the backend's device. On JAX an epoch is one compiled
function, cached by :meth:`xbp.train.step.Step.compiled`, so later fits and other
estimators of the same shapes and solver settings reuse it. ``solver="lbfgs"``
runs SciPy's L-BFGS-B on the host with the gradient from the device (not a GPU
path). See ``docs/sklearn.md``.

Array-API inputs follow scikit-learn's rule "everything follows X": torch or
CuPy input trains on that library and device, and the fitted ``coefs_`` and
the predictions stay there. NumPy input with ``backend="cupy"`` trains on the
GPU and returns NumPy.

Examples
--------
>>> from xbp.sklearn import MLPClassifier
>>> import xbp
>>> X, y = xbp.data.load_digits()
>>> clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=5, random_state=0).fit(X, y)
>>> clf.predict(X[:3]).shape
(3,)
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import pickle
import warnings
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import array_api_compat
import numpy as np
import scipy.sparse

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as _SkClassifier
    from sklearn.neural_network import MLPRegressor as _SkRegressor
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_array, check_random_state
    from sklearn.utils._param_validation import StrOptions
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("xbp.sklearn needs scikit-learn: pip install 'xbp[sklearn]'") from exc

from . import optim
from .backends.select import Backend
from .backends.select import backend as resolve_backend
from .data.sources import Batch, DeviceData, Plan, Source
from .errors import XbpError, XbpValueError
from .nn.network import Dense, Network, Params
from .nn.weights import batch_weight_sum
from .train.loop import Callback, Trainer, TrainOptions

__all__ = ["MLPClassifier", "MLPRegressor"]

_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
#: MLPRegressor's loss: (xbp's loss, the output activation)
_REGRESSION_LOSSES = {"squared_error": ("quadratic", "identity"), "poisson": ("poisson", "exp")}
_SCHEDULES = ("constant", "invscaling", "adaptive")


class _Layout:
    """Every weight in one flat vector: all ``W`` (row-major) first, then all ``b``
    (``solver="lbfgs"``: SciPy's L-BFGS-B works on one vector; the network reads ``W``
    and ``b`` as slices of it)."""

    def __init__(self, sizes: list[int]) -> None:
        self.shapes = [(a, b) for a, b in pairwise(sizes)] + [(b,) for b in sizes[1:]]
        self.bounds = []
        start = 0
        for shape in self.shapes:
            stop = start + int(np.prod(shape))
            self.bounds.append((start, stop))
            start = stop
        self.n_layers = len(sizes) - 1
        self.n_coef = self.bounds[self.n_layers - 1][1]

    def split(self, xp: Any, flat: Any) -> Params:
        parts = [xp.reshape(flat[a:b], s) for (a, b), s in zip(self.bounds, self.shapes)]
        k = self.n_layers
        return [{"W": w, "b": b} for w, b in zip(parts[:k], parts[k:])]

    def pack(self, xp: Any, params: Params) -> Any:
        leaves = [p["W"] for p in params] + [p["b"] for p in params]
        return xp.concat([xp.reshape(a, (-1,)) for a in leaves])


def _say(verbose: Any, msg: str) -> None:
    if verbose:
        print(msg)


def _scoped(fitting: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run an estimator method inside its backend's
    :meth:`xbp.backends.select.Backend.float64_scope`
    (JAX: 64-bit mode for the estimator's own calls, the user's setting untouched).
    ``fitting``: the backend follows ``X`` (a fit may move the model); else the fitted one."""

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def run(self: _BaseMLP, X: Any, *args: Any, **kwargs: Any) -> Any:
            be = self.__dict__.get("_be")
            if fitting or be is None:
                try:
                    be = self._backend_for(X)[0]
                except XbpError:
                    be = None  # the method's own checks say what is wrong
            with contextlib.nullcontext() if be is None else be.float64_scope():
                return method(self, X, *args, **kwargs)

        return run

    return wrap


class _Solver:
    """scikit-learn's stochastic solver on the host: its settings, taken when the
    optimizer starts (as scikit-learn's optimizer object keeps them), and its learning
    rate: constant, ``invscaling`` (set after each epoch) or ``adaptive`` (divided by 5
    when training stalls), which reaches the loop as its ``lr_scale``. The update itself
    is :func:`xbp.optim.sklearn_sgd` / :func:`xbp.optim.sklearn_adam`, run by the loop's
    one step; this class holds no array and does no update arithmetic."""

    def __init__(self, est: _BaseMLP) -> None:
        self.adam = est.solver == "adam"
        self.lr_init = float(est.learning_rate_init)
        self.learning_rate = self.lr_init
        self.schedule = "constant" if self.adam else est.learning_rate
        self.power_t = est.power_t
        self.momentum, self.nesterov = est.momentum, bool(est.nesterovs_momentum)
        self.betas = (est.beta_1, est.beta_2, est.epsilon)

    def optimizer(self, alpha: float = 0.0) -> optim.Optimizer:
        """The update rule at the initial rate, with the L2 term's ``alpha`` (read at each
        call, as scikit-learn reads it at each step). The rate and ``alpha`` are data to
        a compiled step: :attr:`xbp.optim.Optimizer.key` leaves them out."""
        if self.adam:
            return optim.sklearn_adam(self.lr_init, *self.betas, alpha=alpha)
        return optim.sklearn_sgd(self.lr_init, self.momentum, self.nesterov, alpha=alpha)

    def scale(self) -> float:
        """The current rate over the initial one: the loop's ``lr_scale``."""
        return self.learning_rate / self.lr_init

    def iteration_ends(self, time_step: int) -> None:
        if self.schedule == "invscaling":
            self.learning_rate = self.lr_init / (time_step + 1) ** self.power_t

    def trigger_stopping(self, msg: str, verbose: bool) -> bool:
        if self.schedule != "adaptive":
            _say(verbose, msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            _say(verbose, msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        _say(verbose, msg + f" Setting learning rate to {self.learning_rate:f}")
        return False


#: rows of sparse input densified on the device at a time outside training (predict,
#: validation, lbfgs); training densifies one batch at a time
_SPARSE_CHUNK = 2048


class _SparseRows:
    """Sparse host rows (SciPy CSR) that reach the device one dense batch at a time, so
    memory stays bounded by a batch however many rows and columns the data has."""

    def __init__(self, csr: Any, be: Backend, dtype: Any) -> None:
        self.csr, self.be, self.dtype = csr, be, dtype
        self.shape = csr.shape

    def subset(self, idx: np.ndarray) -> _SparseRows:
        return _SparseRows(self.csr[idx], self.be, self.dtype)

    def rows(self, idx: Any) -> Any:
        """Rows ``idx`` (an index array or a slice) dense on the device."""
        return self.be.asarray(self.csr[idx].toarray(), self.dtype)

    def chunks(self) -> Iterator[tuple[slice, Any]]:
        size = _SPARSE_CHUNK
        for start in range(0, self.shape[0], size):
            sl = slice(start, min(start + size, self.shape[0]))
            yield sl, self.rows(sl)


def _by_chunks(xp: Any, fn: Callable[[Any], Any], x: Any) -> Any:
    """``fn(x)`` for device rows; for sparse rows ``fn`` of each dense chunk, joined."""
    if not isinstance(x, _SparseRows):
        return fn(x)
    return xp.concat([fn(chunk) for _, chunk in x.chunks()], axis=0)


def _take_rows(be: Backend, x: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of device or sparse rows (sparse rows stay sparse, on the host)."""
    if isinstance(x, _SparseRows):
        return x.subset(idx)
    return be.xp.take(x, be.asarray(idx), axis=0)


class _SparseSource(Source):
    """Sparse host rows as a data source of the training loop: each batch's rows are
    densified on their way to the device (memory bounded by a batch); targets and row
    weights are on the device already."""

    def __init__(self, x: _SparseRows, y: Any, w: Any, weight_total: float) -> None:
        self.x, self.y, self.w, self._total = x, y, w, weight_total
        self.n = int(x.shape[0])

    @property
    def weight_total(self) -> float:
        return self._total

    @property
    def weighted(self) -> bool:
        return self.w is not None

    def batches(self, net: Network, plan: Plan) -> Iterator[Batch]:
        xp = net.xp
        assert plan.perm is not None, "the estimators always order the rows"
        perm = net.backend.asarray(plan.perm)
        for s, e, lo, hi in plan.spans:
            idx = perm[lo:hi]
            yb = xp.take(self.y, idx, axis=0)
            wb = None if self.w is None else xp.take(self.w, idx, axis=0)
            total = e - s if wb is None else batch_weight_sum(xp, wb)
            yield Batch(self.x.rows(plan.perm[lo:hi]), yb, total, wb)


class _Order:
    """scikit-learn's batch order, as the loop's ``sampler``: every epoch shuffles the
    previous epoch's order with a permutation drawn from the estimator's ``RandomState``
    (the draw of ``sklearn.utils.shuffle``, without its per-call validation), or keeps
    ``arange(n)`` without ``shuffle``."""

    def __init__(self, rs: Any, n: int, shuffle: bool) -> None:
        self.rs, self.shuffle = rs, shuffle
        self.idx = np.arange(n, dtype=int)

    def __call__(self, n: int) -> np.ndarray:
        if self.shuffle:
            self.idx = self.idx[self.rs.permutation(n)]
        return self.idx


class _Rules(Callback):
    """scikit-learn's bookkeeping and stopping rules as a callback of the one training
    loop (:class:`xbp.train.Trainer`): after each epoch the estimator's ``_epoch_end``
    (its loss from the loop's per-step sums, ``n_iter_``, ``t_``, ``loss_curve_``, the
    no-improvement count on the training loss or the validation score, the
    ``invscaling`` / ``adaptive`` rate as the loop's ``lr_scale``, the stop, the
    ``ConvergenceWarning`` at ``max_iter``); at the end ``_train_end`` (the best weights
    of ``early_stopping`` come back). ``order``, ``w``, ``batch``, ``val`` and
    ``incremental`` describe the fit."""

    def __init__(
        self,
        epoch_end: Callable[[Trainer, _Rules], None],
        train_end: Callable[[Trainer], None],
        order: _Order,
        w: np.ndarray | None,
        batch: int,
        val: Any,
        incremental: bool,
    ) -> None:
        self.epoch_end, self.train_end = epoch_end, train_end
        self.order, self.w, self.batch = order, w, batch
        self.val, self.incremental = val, incremental

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        self.epoch_end(trainer, self)

    def on_train_end(self, trainer: Trainer) -> None:
        self.train_end(trainer)


#: xbp's own constructor parameters, in scikit-learn's constraint language
_XBP_CONSTRAINTS: dict[str, Any] = {
    "backend": "no_validation",  # a name or a Backend: xbp.backend() says what is wrong
    "device": "no_validation",
    "compile": [None, "boolean"],
    "precision": [StrOptions({"exact", "tf32", "bf16", "fp16"})],
}


class _BaseMLP(BaseEstimator):
    # scikit-learn's own constraints (read from its estimators, so a new release's
    # rules apply as they come) plus xbp's: types, intervals and options, checked by
    # scikit-learn's validator with its messages (``shuffle="False"`` is refused)
    _parameter_constraints: dict[str, Any] = {
        **_SkClassifier._parameter_constraints,
        **_XBP_CONSTRAINTS,
    }
    _classifier = False
    _multiclass: bool
    _be: Backend
    _host: bool
    _net: Network

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: Any = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        max_fun: int = 15000,
        backend: Any = None,
        device: Any = None,
        compile: bool | None = None,
        precision: str = "exact",
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.device = device
        self.compile = compile
        self.precision = precision

    # -- parameter checks ------------------------------------------------
    def _check_params(self) -> None:
        self._validate_params()  # scikit-learn's validator: types, intervals, options
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if np.isscalar(sizes) else list(sizes)
        if any(not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
            raise ValueError(
                f"hidden_layer_sizes={self.hidden_layer_sizes!r} must be positive integers"
            )
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r}; use one of {sorted(_ACTIVATIONS)}")
        if self.solver not in ("sgd", "adam", "lbfgs"):
            raise ValueError(f"solver={self.solver!r}; use 'sgd', 'adam' or 'lbfgs'")
        if self.learning_rate not in _SCHEDULES:
            raise ValueError(f"learning_rate={self.learning_rate!r}; use one of {list(_SCHEDULES)}")
        for name in ("learning_rate_init", "epsilon"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0")
        for name in ("alpha", "power_t", "tol"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 0")
        for name in ("max_iter", "max_fun"):
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if not 0 <= self.momentum <= 1:
            raise ValueError(f"momentum={self.momentum!r} must lie in [0, 1]")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction={self.validation_fraction!r} must lie in [0, 1)")
        for name in ("beta_1", "beta_2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must lie in [0, 1)")
        if not self.n_iter_no_change >= 1:
            raise ValueError(f"n_iter_no_change={self.n_iter_no_change!r} must be >= 1")
        if self.batch_size != "auto" and not (
            isinstance(self.batch_size, (int, np.integer)) and self.batch_size >= 1
        ):
            raise ValueError(f"batch_size={self.batch_size!r} must be 'auto' or an integer >= 1")
        if self.compile not in (None, True, False):
            raise ValueError(f"compile={self.compile!r}; use None, True or False")

    # -- data ----------------------------------------------------------------
    def _backend_for(self, X: Any) -> tuple[Backend, bool]:
        """(backend, host): array-API input decides; NumPy input uses ``backend``."""
        if not isinstance(X, np.ndarray) and array_api_compat.is_array_api_obj(X):
            return resolve_backend(X), False
        return resolve_backend(self.backend, self.device), True

    def _validate(
        self, X: Any, y: Any = None, reset: bool = True, fitting: bool = False
    ) -> tuple[Any, Any, Backend, bool]:
        if fitting and y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None"
            )
        be, host = self._backend_for(X)
        if host:
            # sparse rows stay sparse on the host and reach the device a batch at a time
            kwargs = {
                "dtype": [np.float64, np.float32],
                "reset": reset,
                "accept_sparse": ["csr", "csc"],
            }
            if y is None:
                X = validate_data(self, X, **kwargs)
            else:
                X, y = validate_data(
                    self, X, y, multi_output=True, y_numeric=not self._classifier, **kwargs
                )
            if scipy.sparse.issparse(X):
                X = X.tocsr()  # row slices for the batches
        else:
            xp = be.xp
            X = be.library.detach(X)  # the weights never join the caller's autograd graph
            if xp.isdtype(X.dtype, "complex floating"):
                raise ValueError("Complex data not supported")  # scikit-learn's own words
            if X.ndim != 2:
                raise ValueError(
                    f"X has shape {tuple(X.shape)}; expected 2-D (n_samples, n_features)"
                )
            if not xp.isdtype(X.dtype, "real floating"):
                X = xp.astype(X, xp.float64)
            if reset:
                self.n_features_in_ = int(X.shape[1])
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input"
                )
            if y is not None and y.shape[0] != X.shape[0]:
                raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
        return X, y, be, host

    def _dtype_name(self, X: Any, be: Backend) -> str:
        f32 = np.float32 if isinstance(X, np.ndarray) else be.xp.float32
        return "float32" if X.dtype == f32 else "float64"

    def _weights(self, sample_weight: Any, n: int, dtype: str) -> np.ndarray | None:
        """Row weights as a host ``(n,)`` array of the training dtype (None: unweighted)."""
        if sample_weight is None:
            return None
        if isinstance(sample_weight, numbers.Number):
            return np.full(n, sample_weight, dtype=dtype)
        if not isinstance(sample_weight, np.ndarray) and array_api_compat.is_array_api_obj(
            sample_weight
        ):
            sample_weight = resolve_backend(sample_weight).to_host(sample_weight)
        w = check_array(sample_weight, ensure_2d=False, dtype=dtype, input_name="sample_weight")
        if w.ndim != 1 or w.shape[0] != n:
            raise ValueError(
                f"sample_weight has shape {w.shape}; expected ({n},), one weight per row of X"
            )
        if not np.any(w):
            raise ValueError("sample_weight is all zero; pass at least one non-zero weight")
        return w

    # -- model ---------------------------------------------------------------
    def _build(self, sizes: list[int], be: Backend, dtype: str) -> Network:
        act = _ACTIVATIONS[self.activation]
        out_act, loss = self._output()
        layers = [Dense(a, b, act) for a, b in zip(sizes[:-2], sizes[1:-1])]
        layers.append(Dense(sizes[-2], sizes[-1], out_act))
        return Network(layers, loss=loss, backend=be, dtype=dtype, precision=self.precision)

    def _initialize(self, n_in: int, n_out: int, be: Backend, dtype: str, rs: Any) -> None:
        """A new network with scikit-learn's initial weights, drawn from ``rs`` in its order."""
        hidden = self.hidden_layer_sizes
        hidden = [hidden] if np.isscalar(hidden) else list(hidden)
        sizes = [n_in, *[int(h) for h in hidden], n_out]
        net = self._build(sizes, be, dtype)
        # Glorot uniform, bound sqrt(6 / (fan_in + fan_out)); 2 instead of 6 for logistic
        factor = 2.0 if self.activation == "logistic" else 6.0
        host = []
        for fan_in, fan_out in pairwise(sizes):
            bound = np.sqrt(factor / (fan_in + fan_out))
            w = rs.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype, copy=False)
            b = rs.uniform(-bound, bound, fan_out).astype(dtype, copy=False)
            host.append({"W": w, "b": b})
        net.params = host
        self._start(net, be, sizes, {})

    def _adopt_assigned(self, n_in: int, n_out: int, be: Backend, dtype: str) -> None:
        """A network from ``coefs_`` / ``intercepts_`` a user assigned to an unfitted
        estimator (scikit-learn trains on from them); the counters the user set stay."""
        coefs, intercepts = list(self.coefs_), list(self.intercepts_)
        shapes = [tuple(np.shape(c)) for c in coefs]
        sizes = [shapes[0][0], *[s[-1] for s in shapes]] if shapes else []
        if (
            len(coefs) != len(intercepts)
            or not sizes
            or any(len(s) != 2 for s in shapes)
            or any(a[1] != b[0] for a, b in pairwise(shapes))
            or [tuple(np.shape(b)) for b in intercepts] != [(s[1],) for s in shapes]
            or (sizes[0], sizes[-1]) != (n_in, n_out)
        ):
            raise ValueError(
                f"the assigned coefs_ {shapes} and intercepts_ "
                f"{[tuple(np.shape(b)) for b in intercepts]} do not chain from the "
                f"{n_in} features to the {n_out} outputs; assign (n_in, n_out) matrices "
                "and (n_out,) vectors layer by layer, or call fit"
            )
        net = self._build(sizes, be, dtype)
        net.params = [
            {"W": np.asarray(w, dtype=dtype), "b": np.asarray(b, dtype=dtype)}
            for w, b in zip(coefs, intercepts)
        ]
        keep = ("n_iter_", "t_", "loss_curve_", "best_loss_", "_no_improvement_count")
        self._start(net, be, sizes, {k: self.__dict__[k] for k in keep if k in self.__dict__})

    def _start(self, net: Network, be: Backend, sizes: list[int], kept: dict[str, Any]) -> None:
        """The fit's bookkeeping for a new network: scikit-learn's counters (those in
        ``kept`` as they are), no optimizer yet."""
        self._net, self._be = net, be
        self._layout = _Layout(sizes)  # lbfgs: SciPy's flat vector
        self._solver: _Solver | None = None
        self._opt_state: Any = None
        self.n_iter_ = 0
        self.t_ = 0
        self.n_layers_ = len(sizes)
        self.n_outputs_ = sizes[-1]
        self.out_activation_ = self._out_activation()
        # the weights early stopping restores (None: the current ones, which is what
        # scikit-learn's shared arrays mean after a restore)
        self._best: Params | None = self._copy_params() if self.early_stopping else None
        if self.solver != "lbfgs":
            self.loss_curve_: list[float] = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_: list[float] | None = []
                self.best_validation_score_: float | None = -np.inf
                self.best_loss_: float | None = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None
        self.__dict__.update(kept)

    def _out_activation(self) -> str:
        """scikit-learn's name of the output activation (``out_activation_``)."""
        names = {"sigmoid": "logistic", "softmax": "softmax", "exp": "exp"}
        return names.get(self._output()[0], "identity")

    def _sync_network(self) -> None:
        """The fitted network follows parameters changed by ``set_params`` after fitting
        (as scikit-learn reads ``activation`` at every predict and partial_fit): a new
        hidden activation rebuilds the network around the same weights; a new
        ``precision`` is the network's policy from now on."""
        self._check_params()
        net = self._net
        act = _ACTIVATIONS[self.activation]
        if any(getattr(layer, "activation", act) != act for layer in net.layers[:-1]):
            new = self._build(net.sizes, net.backend, net.backend.dtype_name(net.dtype))
            new.params = net.params
            self._net = net = new
        if net.precision != self.precision:
            net.precision = self.precision

    def _load_params(self) -> None:
        """The weights from ``coefs_`` / ``intercepts_`` (a user may have set them)."""
        self._net.params = [{"W": w, "b": b} for w, b in zip(self.coefs_, self.intercepts_)]

    def _copy_params(self) -> Params:
        """A copy of the network's weights (the step may update them in place)."""
        xp = self._net.xp
        return [{k: xp.asarray(v, copy=True) for k, v in p.items()} for p in self._net.params]

    def _loss_and_grad(self) -> Callable[..., tuple[Any, Any]]:
        """``f(flat, x, y, w, sw) -> (loss, grad)``: scikit-learn's objective on one batch.

        ``w`` are the batch's row weights (None: unweighted) and ``sw`` their
        sum (the number of rows when unweighted). The data term comes from
        :meth:`xbp.Network.value_and_grad` (sums, ``n_total=1``); the L2 term
        ``alpha/2 ||W||^2`` joins both, and both are divided by ``sw``."""
        net, layout = self._net, self._layout
        xp = net.xp
        alpha = float(self.alpha)
        per_output = self._per_output()
        scope, precision = net.backend.precision_scope, net.precision

        def loss_and_grad(flat: Any, x: Any, y: Any, w: Any, sw: Any) -> tuple[Any, Any]:
            with scope(precision):  # the L2 dot product too, not only value_and_grad's
                return _loss_and_grad(flat, x, y, w, sw)

        def _loss_and_grad(flat: Any, x: Any, y: Any, w: Any, sw: Any) -> tuple[Any, Any]:
            params = layout.split(xp, flat)
            if isinstance(x, _SparseRows):  # sums over dense chunks of the sparse rows
                cost: Any = 0.0
                grads: Params = []
                for sl, xb in x.chunks():
                    c, g, _ = net.value_and_grad(
                        xb,
                        y[sl],
                        params=params,
                        n_total=1,
                        sample_weight=None if w is None else w[sl],
                    )
                    cost = cost + c
                    if grads:
                        g = [{k: gl[k] + ga[k] for k in gl} for gl, ga in zip(g, grads)]
                    grads = g
            else:
                cost, grads, _ = net.value_and_grad(x, y, params=params, n_total=1, sample_weight=w)
            g_coef = xp.concat([xp.reshape(g["W"], (-1,)) for g in grads])
            loss = cost / sw if per_output == 1 else cost / (sw * per_output)
            if alpha:
                coef = flat[: layout.n_coef]
                g_coef = g_coef + alpha * coef
                loss = loss + (0.5 * alpha) * (coef @ coef) / sw
            g = xp.concat([g_coef, *[g["b"] for g in grads]])
            return loss, g / sw

        return loss_and_grad

    # -- fitting -------------------------------------------------------------
    def _fit(
        self,
        X: Any,
        y: Any,
        sample_weight: Any = None,
        incremental: bool = False,
        classes: Any = None,
    ) -> Any:
        self._check_params()
        # as scikit-learn: a first fit unless coefs_ exist (fitted or assigned by the
        # user) and the call continues them (warm_start or partial_fit)
        first = not hasattr(self, "coefs_") or not (self.warm_start or incremental)
        assigned = not first and "_net" not in self.__dict__
        X, y, be, host = self._validate(X, y, reset=first, fitting=True)
        if not first and not assigned and (self._be != be or self._host != host):
            raise ValueError(f"X is on {be!r} but the model was fitted on {self._be!r}")
        targets = self._encode(y, be, first, classes)
        if first or assigned:
            dtype = self._dtype_name(X, be)
        else:
            dtype = self._net.backend.dtype_name(self._net.dtype)
        sw = self._weights(sample_weight, X.shape[0], dtype)
        rs = check_random_state(self.random_state)
        if first:
            self._initialize(X.shape[1], targets.shape[1], be, dtype, rs)
            self._host = host
        elif assigned:
            self._adopt_assigned(X.shape[1], targets.shape[1], be, dtype)
            self._host = host
        else:
            self._sync_network()
            self._load_params()
        net = self._net
        xp = net.xp
        if scipy.sparse.issparse(X):
            xd: Any = _SparseRows(X, be, net.dtype)
        else:
            xd = be.asarray(X, net.dtype) if host else be.xp.astype(X, net.dtype)
        if self.solver == "lbfgs":
            layout = self._layout
            flat = self._fit_lbfgs(layout.pack(xp, net.params), xd, targets, sw)
            net.adopt_params(layout.split(xp, flat))
        else:
            self._fit_stochastic(xd, targets, sw, rs, incremental)
        if not all(bool(xp.all(xp.isfinite(v))) for p in net.params for v in p.values()):
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may contain "
                "large values and need to be preprocessed."
            )
        self._export()
        return self

    def _compiled(self) -> bool:
        """Whether the step runs compiled: ``compile=None`` where the backend traces
        (JAX), ``True`` there or an error, ``False`` never."""
        be = self._be
        if self.compile is False:
            return False
        if be.compiler() != "trace":
            if self.compile is True:
                raise XbpValueError(
                    f"compile=True, but {be!r} has no tracing compiler for the estimator's "
                    "step (JAX has one); use compile=None or False"
                )
            return False
        return True

    def _fit_stochastic(
        self,
        xd: Any,
        targets: np.ndarray,
        sw: np.ndarray | None,
        rs: Any,
        incremental: bool,
    ) -> None:
        """scikit-learn's epochs, run by the one training loop (:class:`xbp.train.Trainer`,
        every update its step with :func:`xbp.optim.sklearn_sgd` /
        :func:`xbp.optim.sklearn_adam`; one compiled epoch on JAX): scikit-learn's batch
        order is the loop's ``sampler`` (:class:`_Order`), its bookkeeping and stopping
        rules a callback (:class:`_Rules`)."""
        be, net = self._be, self._net
        compiled = self._compiled()
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        if not incremental or self._solver is None:
            self._solver = _Solver(self)
            self._opt_state = None
        solver = self._solver
        n_all = xd.shape[0]
        val = None
        idx_train = None
        if self.early_stopping:
            # stratified on binary labels only, as scikit-learn does
            # on the 0/1 column as booleans, as scikit-learn (its errors name `True`)
            binary = self._classifier and targets.shape[1] == 1
            stratify = targets.astype(bool) if binary else None
            idx_train, idx_val = train_test_split(
                np.arange(n_all),
                random_state=rs,
                test_size=self.validation_fraction,
                stratify=stratify,
            )
            if idx_val.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' "
                    "or the size of your dataset."
                )
            val = (
                _take_rows(be, xd, idx_val),
                targets[idx_val],
                None if sw is None else sw[idx_val],
            )
        n = n_all if idx_train is None else idx_train.shape[0]
        xt = xd if idx_train is None else _take_rows(be, xd, idx_train)
        yt_host = targets if idx_train is None else targets[idx_train]
        yt = be.asarray(yt_host, net.dtype)
        wt_host = None if sw is None else (sw if idx_train is None else sw[idx_train])
        wt = None if wt_host is None else be.asarray(wt_host, net.dtype)
        if self.batch_size == "auto":
            batch = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than sample size. It is going "
                    "to be clipped",
                    stacklevel=4,
                )
            batch = int(np.clip(self.batch_size, 1, n))
        weight_total = float(n) if wt_host is None else float(np.sum(wt_host))
        if isinstance(xt, _SparseRows):
            data: Source = _SparseSource(xt, yt, wt, weight_total)
        else:
            data = DeviceData(xt, yt)
            if wt is not None:
                data.weigh(wt, weight_total)
        order = _Order(rs, n, bool(self.shuffle))
        options = TrainOptions(
            epochs=1 if incremental else int(self.max_iter),
            batch_size=batch,
            optimizer=solver.optimizer(float(self.alpha)),
            sampler=order,
            callbacks=[
                _Rules(self._epoch_end, self._train_end, order, wt_host, batch, val, incremental)
            ],
            progress=False,
            # scikit-learn trains on through NaN; _fit refuses non-finite weights after
            on_divergence="continue",
            compile=compiled,
        )
        trainer = Trainer(net, options)
        if self._opt_state is not None:  # partial_fit continues the optimizer
            trainer.opt_state = self._opt_state
        trainer.lr_scale = solver.scale()
        self.n_iter_ = 0
        trainer.fit(data, None, options.epochs)
        self._opt_state = trainer.opt_state

    def _epoch_end(self, trainer: Trainer, rules: _Rules) -> None:
        """scikit-learn's end of an epoch (the body of its epoch loop after the batches),
        run by the training loop's callback :class:`_Rules`."""
        solver = self._solver
        assert solver is not None, "the solver starts before the loop"
        order = rules.order.idx
        n, bs, per_output = order.shape[0], rules.batch, self._per_output()
        costs, penalties = trainer.step_sums["costs"], trainer.step_sums["penalties"]
        # each batch's loss as scikit-learn's: its mean cost (over the outputs too for
        # the squared error) plus the L2 term, both divided by the batch's weight sum
        # (as the step divided them), summed in its order weighted by the batch's rows
        total = 0.0
        for j, start in enumerate(range(0, n, bs)):
            rows = min(start + bs, n) - start
            if rules.w is None:
                d = float(rows)
            else:
                d = float(batch_weight_sum(np, rules.w[order[start : start + bs]]))
            total += (costs[j] / d / per_output + penalties[j] / d) * rows
        self.n_iter_ += 1
        self.loss_ = float(total) / n
        self.t_ += n
        self.loss_curve_.append(self.loss_)
        _say(self.verbose, f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
        self._update_no_improvement_count(rules.val)
        solver.iteration_ends(self.t_)
        if self._no_improvement_count > self.n_iter_no_change:
            what = "Validation score" if self.early_stopping else "Training loss"
            msg = (
                f"{what} did not improve more than tol={self.tol:f} for "
                f"{self.n_iter_no_change} consecutive epochs."
            )
            if solver.trigger_stopping(msg, self.verbose):
                trainer.stop_training = True
                return
            self._no_improvement_count = 0
        trainer.lr_scale = solver.scale()
        if not rules.incremental and self.n_iter_ == self.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and "
                "the optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=2,
            )

    def _train_end(self, trainer: Trainer) -> None:
        if self.early_stopping and self._best is not None:
            # the best weights come back; until a better epoch they are also the
            # current ones (scikit-learn restores by sharing the arrays)
            trainer.set_params(self._best)
            self._best = None

    def _per_output(self) -> int:
        # scikit-learn's squared error averages over the outputs too (its gradient does
        # not); its log-losses and Poisson deviance sum them
        return self._net.n_out if self._output()[1] == "quadratic" else 1

    def _update_no_improvement_count(self, val: Any) -> None:
        if val is None:
            last = self.loss_curve_[-1]
            if last > self.best_loss_ - self.tol:  # type: ignore[operator]
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last < self.best_loss_:  # type: ignore[operator]
                self.best_loss_ = last
            return
        score = self._val_score(*val)
        assert self.validation_scores_ is not None
        self.validation_scores_.append(score)
        _say(self.verbose, f"Validation score: {score:f}")
        best = self.best_validation_score_
        if score < best + self.tol:  # type: ignore[operator]
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if score > best:  # type: ignore[operator]
            self.best_validation_score_ = score
            self._best = self._copy_params()

    def _fit_lbfgs(self, flat: Any, xd: Any, targets: np.ndarray, sw: np.ndarray | None) -> Any:
        """SciPy's L-BFGS-B on the host; every loss and gradient comes from the device."""
        import scipy.optimize

        be, net = self._be, self._net
        yd = be.asarray(targets, net.dtype)
        wd = None if sw is None else be.asarray(sw, net.dtype)
        divisor = xd.shape[0] if sw is None else float(sw.sum())
        loss_and_grad = self._loss_and_grad()

        def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
            loss, g = loss_and_grad(be.asarray(x, net.dtype), xd, yd, wd, divisor)
            return float(loss), np.asarray(be.to_host(g), dtype=np.float64)

        res = scipy.optimize.minimize(
            fun,
            np.asarray(be.to_host(flat), dtype=np.float64),
            method="L-BFGS-B",
            jac=True,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol},
        )
        if res.status != 0:
            warnings.warn(
                f"lbfgs failed to converge after {res.nit} iteration(s) (status={res.status}): "
                f"{res.message}. Increase max_iter or scale the data.",
                ConvergenceWarning,
                stacklevel=4,
            )
        self.n_iter_ = min(int(res.nit), int(self.max_iter))
        self.loss_ = float(res.fun)
        return be.asarray(np.asarray(res.x), net.dtype)

    def _export(self) -> None:
        """Fitted attributes in the namespace of the training input."""
        be = self._be
        conv = (lambda a: np.array(be.to_host(a))) if self._host else (lambda a: a)
        self.coefs_ = [conv(p["W"]) for p in self._net.params]
        self.intercepts_ = [conv(p["b"]) for p in self._net.params]

    def _outputs(self, x: Any, logits: bool = False) -> Any:
        """The network's outputs for device (or sparse) rows ``x``; with ``logits`` the
        output layer's net input ``Z_L`` instead (for log-probabilities)."""
        net = self._net
        if not logits:
            return _by_chunks(net.xp, net.forward, x)
        last = net.params[-1]
        stop = len(net.layers) - 1

        def z_out(xb: Any) -> Any:
            hidden = net.forward(xb, stop=stop)
            with net.backend.precision_scope(net.precision):
                return hidden @ last["W"] + last["b"]

        return _by_chunks(net.xp, z_out, x)

    def _forward(self, X: Any, method: str = "predict", logits: bool = False) -> tuple[Any, bool]:
        check_is_fitted(self, "coefs_")
        X, _, be, host = self._validate(X, reset=False)
        # everything follows X: predict takes what fit took (NumPy for a model fitted on
        # NumPy input, whatever backend it trained on; else the same namespace and device)
        if host != self._host or (not host and be != self._be):
            got = "NumPy" if host else repr(be)
            fitted = "NumPy" if self._host else repr(self._be)
            raise ValueError(
                f"{type(self).__name__}.{method}(): X must use the same namespace and device "
                f"as the data passed to fit ({fitted}), got {got}"
            )
        self._sync_network()
        net = self._net
        if scipy.sparse.issparse(X):
            xd: Any = _SparseRows(X, net.backend, net.dtype)
        else:
            xd = net.backend.asarray(X, net.dtype) if host else net.xp.astype(X, net.dtype)
        return self._outputs(xd, logits), host

    def _stochastic(self) -> bool:
        if self.solver not in ("sgd", "adam"):
            raise AttributeError(
                f"partial_fit is only available for stochastic optimizers. {self.solver} is "
                "not stochastic."
            )
        return True

    def __getstate__(self) -> dict[str, Any]:
        # xbp's own files never pickle; scikit-learn's convention is pickling, so the
        # network travels as its config, the weights (coefs_), the best weights and the
        # optimizer state as host arrays (the solver's settings and learning rate as they
        # are), and is rebuilt on load
        state = self.__dict__.copy()
        try:
            pickle.dumps(self.device)
        except (TypeError, pickle.PicklingError, AttributeError):
            # a device object that does not pickle (a JAX device) travels as its name,
            # which the backend resolves again
            state["device"] = str(self.device)
        net = state.pop("_net", None)
        be = state.pop("_be", None)
        opt_state = state.pop("_opt_state", None)
        best = state.pop("_best", None)
        if net is not None:

            def to_host(a: Any) -> np.ndarray:
                return np.array(be.to_host(a))

            state["_net_state"] = {
                "config": net.config(),
                "params": net.host_params(),
                "backend": be.name,
                "device": str(be.device),
                "best": None
                if best is None
                else [{k: to_host(v) for k, v in p.items()} for p in best],
                "opt": None if opt_state is None else optim.state_to_host(opt_state, to_host),
            }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        saved = state.pop("_net_state", None)
        self.__dict__.update(state)
        if saved is None:
            return
        try:
            be = resolve_backend(saved["backend"], saved["device"])
        except XbpValueError:
            be = resolve_backend("numpy")
            self._host = True
        with be.float64_scope():
            self._restore(be, saved)

    def _restore(self, be: Backend, saved: dict[str, Any]) -> None:
        net = self._net = Network.from_config(saved["config"], backend=be)
        net.params = saved["params"]
        self._be = be
        best = saved["best"]
        self._best = (
            None
            if best is None
            else [{k: be.asarray(v, net.dtype, copy=True) for k, v in p.items()} for p in best]
        )
        self._opt_state = None
        if saved["opt"] is not None and self._solver is not None:
            template = self._solver.optimizer().init(net.params)
            self._opt_state = optim.state_from_host(template, saved["opt"], be.asarray)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        tags.input_tags.sparse = True  # CSR/CSC rows, densified a batch at a time
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by xbp (drop-in for scikit-learn's).

    Binary targets use one logistic output and binary cross-entropy, several
    classes a softmax output and cross-entropy, multilabel indicator targets
    logistic outputs. See :class:`sklearn.neural_network.MLPClassifier` for
    the parameters; ``backend`` and ``device`` choose where training runs.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> from sklearn.neural_network import MLPClassifier as SklearnMLP
    >>> from xbp.sklearn import MLPClassifier
    >>> x, y = xbp.data.load_digits()
    >>> x = x[:500] / 16
    >>> kw = dict(hidden_layer_sizes=(16,), max_iter=5, random_state=0)
    >>> ours, theirs = MLPClassifier(**kw).fit(x, y[:500]), SklearnMLP(**kw).fit(x, y[:500])
    >>> max(float(np.abs(a - b).max()) for a, b in zip(ours.coefs_, theirs.coefs_)) < 1e-10
    True
    >>> bool((ours.predict(x) == theirs.predict(x)).all())
    True
    """

    _classifier = True

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True  # indicator targets: logistic outputs
        return tags

    def _output(self) -> tuple[str, str]:
        if self._multiclass:
            return "softmax", "cross_entropy"
        return "sigmoid", "binary_cross_entropy"

    def _encode(self, y: Any, be: Backend, first: bool, classes: Any) -> np.ndarray:
        if not isinstance(y, np.ndarray) and array_api_compat.is_array_api_obj(y):
            y = resolve_backend(y).to_host(y)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected.",
                _data_conversion_warning(),
                stacklevel=4,
            )
            y = y.ravel()
        check_classification_targets(y)
        if first or not hasattr(self, "_lb"):
            self._lb = LabelBinarizer()
            multilabel = type_of_target(y).startswith("multilabel")
            self._lb.fit(y if classes is None or multilabel else classes)
            self.classes_ = self._lb.classes_
            self._multilabel = self._lb.y_type_.startswith("multilabel")
            self._multiclass = len(self.classes_) > 2 and not self._multilabel
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes={classes!r} differ from the first call's {self.classes_!r}")
        if not self._multilabel:
            seen = np.unique(y)
            if self.warm_start and set(seen) != set(self.classes_) and not first:
                raise ValueError(
                    "warm_start can only be used where `y` has the same classes as in the "
                    f"previous call to fit. Previously got {self.classes_}, `y` has {seen}"
                )
            unknown = np.setdiff1d(seen, self.classes_)
            if unknown.size:
                raise ValueError(f"y contains previously unseen labels: {unknown!r}")
        out = self._lb.transform(y).astype(np.float64)
        if out.shape[1] == 1 and len(self.classes_) == 1:
            out = np.zeros((len(y), 1))
        return out

    @_scoped(fitting=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPClassifier:
        """Fit the model to X and class labels y (max_iter epochs, with the stopping rules).

        ``sample_weight`` weights the rows' losses, as in scikit-learn."""
        return self._fit(X, y, sample_weight)

    @available_if(_BaseMLP._stochastic)
    @_scoped(fitting=True)
    def partial_fit(
        self, X: Any, y: Any, sample_weight: Any = None, classes: Any = None
    ) -> MLPClassifier:
        """One epoch over (X, y); ``classes`` is required on the first call."""
        if not hasattr(self, "_net") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _val_score(self, x: Any, y: np.ndarray, w: np.ndarray | None) -> float:
        out = np.asarray(self._net.backend.to_host(self._outputs(x)))
        if out.shape[1] == 1:
            out, y = out.ravel(), y.ravel()
        pred = self._lb.inverse_transform(out)
        return float(accuracy_score(self._lb.inverse_transform(y), pred, sample_weight=w))

    def _proba(self, X: Any, method: str, log: bool) -> Any:
        """Probabilities (or their logs) from the output layer's net input ``Z_L``: the
        softmax, or the logistic function as ``exp(log s(z))`` (``s(z)`` to the last
        bit, ``3e-130`` where ``(1 + tanh(z/2)) / 2`` rounds to 0, as scikit-learn's
        ``expit``). The logs are scikit-learn's ``log(predict_proba)``, except where a
        probability underflows to 0: there the log-softmax / log-sigmoid of ``Z_L``
        (finite) instead of ``-inf``."""
        z, host = self._forward(X, method, logits=True)
        xp = self._net.xp
        if self._multiclass:
            shifted = z - xp.max(z, axis=1, keepdims=True)
            e = xp.exp(shifted)
            norm = xp.sum(e, axis=1, keepdims=True)
            p, log_p = e / norm, shifted - xp.log(norm)
        else:
            # log s(z) = -(max(-z, 0) + log1p(exp(-|z|))), log(1 - s(z)) = log s(-z)
            soft = xp.log1p(xp.exp(-xp.abs(z)))
            log_p = -(xp.maximum(-z, 0.0) + soft)
            p = xp.exp(log_p)
            if not self._multilabel:
                log_p = xp.concat([-(xp.maximum(z, 0.0) + soft), log_p], axis=1)
                p = xp.concat([1 - p, p], axis=1)
        if log:  # log(0) is never evaluated: no -inf, no RuntimeWarning
            positive = p > 0
            p = xp.where(positive, xp.log(xp.where(positive, p, 1.0)), log_p)
        return self._net.backend.to_host(p) if host else p

    @_scoped(fitting=False)
    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, in the namespace and on the device of X."""
        return self._proba(X, "predict_proba", log=False)

    @_scoped(fitting=False)
    def predict_log_proba(self, X: Any) -> Any:
        """Log of :meth:`predict_proba` as scikit-learn's, but finite where a probability
        underflows to 0 (then the log-softmax / log-sigmoid of the output's net input)."""
        return self._proba(X, "predict_log_proba", log=True)

    @_scoped(fitting=False)
    def predict(self, X: Any) -> Any:
        """Class labels, in the namespace and on the device of X (NumPy for NumPy input)."""
        out, host = self._forward(X)
        net = self._net
        xp = net.xp
        if self._multilabel:
            pred = xp.astype(out > 0.5, xp.int64)
            return net.backend.to_host(pred) if host else pred
        idx = xp.argmax(out, axis=1) if self._multiclass else xp.astype(out[:, 0] > 0.5, xp.int64)
        if host or not np.issubdtype(np.asarray(self.classes_).dtype, np.number):
            return self.classes_[net.backend.to_host(idx)]
        classes = net.backend.asarray(np.asarray(self.classes_))
        return xp.take(classes, idx, axis=0)


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by xbp (drop-in for scikit-learn's).

    ``loss="squared_error"``: identity output and scikit-learn's (half) squared
    error; ``loss="poisson"``: exponential output and half the Poisson deviance
    (counts and rates), as scikit-learn >= 1.7. ``loss`` is the first positional
    parameter there too. ``backend`` and ``device`` choose where training runs.

    Examples
    --------
    >>> import numpy as np
    >>> from xbp.sklearn import MLPRegressor
    >>> X = np.linspace(0, 1, 40).reshape(-1, 1)
    >>> y = np.random.default_rng(0).poisson(np.exp(X[:, 0] + 1))
    >>> reg = MLPRegressor("poisson", (4,), solver="lbfgs", random_state=0).fit(X, y)
    >>> bool((reg.predict(X) > 0).all()), reg.out_activation_
    (True, 'exp')
    """

    _multiclass = False
    _parameter_constraints: dict[str, Any] = {
        **_SkRegressor._parameter_constraints,
        **_XBP_CONSTRAINTS,
    }

    def __init__(
        self,
        loss: str = "squared_error",
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: Any = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        max_fun: int = 15000,
        backend: Any = None,
        device: Any = None,
        compile: bool | None = None,
        precision: str = "exact",
    ) -> None:
        # scikit-learn's order: loss first, so a positional argument means the same
        self.loss = loss
        super().__init__(
            hidden_layer_sizes,
            activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            backend=backend,
            device=device,
            compile=compile,
            precision=precision,
        )

    def _check_params(self) -> None:
        super()._check_params()
        if self.loss not in _REGRESSION_LOSSES:
            raise ValueError(f"loss={self.loss!r}; use one of {sorted(_REGRESSION_LOSSES)}")

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _output(self) -> tuple[str, str]:
        loss, out = _REGRESSION_LOSSES[self.loss]
        return out, loss

    def _encode(self, y: Any, be: Backend, first: bool, classes: Any) -> np.ndarray:
        if not isinstance(y, np.ndarray) and array_api_compat.is_array_api_obj(y):
            y = resolve_backend(y).to_host(y)
        y = np.asarray(y, dtype=np.float64)
        if self.loss == "poisson" and y.size and np.min(y) < 0:
            raise ValueError(
                f"y holds negative targets (down to {np.min(y):g}) but loss='poisson' needs "
                "counts or rates >= 0; use loss='squared_error' for signed targets"
            )
        if first or not hasattr(self, "_y_ndim"):
            self._y_ndim = y.ndim
        return y.reshape(-1, 1) if y.ndim == 1 else y

    @_scoped(fitting=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """Fit the model to X and continuous targets y (``sample_weight`` as scikit-learn)."""
        return self._fit(X, y, sample_weight)

    @available_if(_BaseMLP._stochastic)
    @_scoped(fitting=True)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """One epoch over (X, y), continuing from the current weights and optimizer state."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _val_score(self, x: Any, y: np.ndarray, w: np.ndarray | None) -> float:
        out = np.asarray(self._net.backend.to_host(self._outputs(x)))
        if out.shape[1] == 1:
            out = out.ravel()
        if not np.isfinite(out).all():
            return float("nan")
        return float(r2_score(y, out, sample_weight=w))

    @_scoped(fitting=False)
    def predict(self, X: Any) -> Any:
        """Predicted targets, in the namespace and on the device of X."""
        out, host = self._forward(X)
        net = self._net
        if self._y_ndim == 1:
            out = net.xp.reshape(out, (-1,))
        return net.backend.to_host(out) if host else out


def _data_conversion_warning() -> type[Warning]:
    from sklearn.exceptions import DataConversionWarning

    return DataConversionWarning
