"""scikit-learn compatible estimators: drop-in MLPClassifier and MLPRegressor.

The constructor parameters follow :class:`sklearn.neural_network.MLPClassifier`
where they make sense, plus ``backend`` and ``device`` (where training runs),
``compile`` (None: a compiled training step where the backend has one, True:
required, False: eager; see :func:`xbp.fit`) and ``precision`` (``"exact"``,
``"tf32"``, ``"bf16"`` or ``"fp16"``, see :class:`xbp.Network`). Training runs on xbp's explicit
backpropagation on any array library.

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

import warnings
from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("xbp.sklearn needs scikit-learn: pip install 'xbp[sklearn]'") from exc

from . import optim
from .backend import Backend
from .backend import backend as resolve_backend
from .dataset import DeviceData, split_validation
from .errors import XbpValueError
from .network import Dense, Network
from .training import Callback, EarlyStopping, Trainer, TrainOptions

__all__ = ["MLPClassifier", "MLPRegressor"]

_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}


class _ScoreEachEpoch(Callback):
    """Record the validation score (accuracy or R^2) after each epoch, as scikit-learn does."""

    def __init__(
        self, score: Callable[[DeviceData], float], val: DeviceData | None, scores: Any
    ) -> None:
        self.score, self.val, self.scores = score, val, scores

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self.val is not None:
            logs["val_score"] = self.score(self.val)
            self.scores.append(logs["val_score"])


class _BaseMLP(BaseEstimator):
    _classifier = False
    _multiclass: bool
    _be: Backend
    _host: bool
    _net: Network
    _trainer: Trainer

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: Any = "auto",
        learning_rate_init: float = 0.001,
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
        self.learning_rate_init = learning_rate_init
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
        self.backend = backend
        self.device = device
        self.compile = compile
        self.precision = precision

    # -- parameter checks ------------------------------------------------
    def _check_params(self) -> None:
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if np.isscalar(sizes) else list(sizes)
        if any(not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
            raise ValueError(
                f"hidden_layer_sizes={self.hidden_layer_sizes!r} must be positive integers"
            )
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r}; use one of {sorted(_ACTIVATIONS)}")
        if self.solver not in ("sgd", "adam"):
            raise ValueError(f"solver={self.solver!r}; xbp supports 'sgd' and 'adam'")
        for name in ("learning_rate_init", "epsilon"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0")
        if self.alpha < 0:
            raise ValueError(f"alpha={self.alpha!r} must be >= 0")
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise ValueError(f"max_iter={self.max_iter!r} must be an integer >= 1")
        if not 0 <= self.momentum <= 1:
            raise ValueError(f"momentum={self.momentum!r} must lie in [0, 1]")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction={self.validation_fraction!r} must lie in (0, 1)")
        for name in ("beta_1", "beta_2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must lie in [0, 1)")
        if not self.n_iter_no_change >= 1:
            raise ValueError(f"n_iter_no_change={self.n_iter_no_change!r} must be >= 1")

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
            kwargs = {"dtype": [np.float64, np.float32], "reset": reset}
            if y is None:
                X = validate_data(self, X, **kwargs)
            else:
                X, y = validate_data(
                    self, X, y, multi_output=True, y_numeric=not self._classifier, **kwargs
                )
        else:
            xp = be.xp
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
        return "float32" if X.dtype == be.xp.float32 or X.dtype == np.float32 else "float64"

    # -- model ---------------------------------------------------------------
    def _build(self, n_in: int, n_out: int, be: Backend, dtype: str, seed: int) -> Network:
        hidden = self.hidden_layer_sizes
        hidden = [hidden] if np.isscalar(hidden) else list(hidden)
        act = _ACTIVATIONS[self.activation]
        sizes = [n_in, *[int(h) for h in hidden], n_out]
        out_act, loss = self._output()
        layers = [Dense(a, b, act) for a, b in zip(sizes[:-2], sizes[1:-1])]
        layers.append(Dense(sizes[-2], sizes[-1], out_act))
        return Network(
            layers,
            loss=loss,
            backend=be,
            dtype=dtype,
            seed=seed,
            init="glorot_uniform",
            precision=self.precision,
        )

    def _optimizer(self, batch: int) -> optim.Optimizer:
        # scikit-learn adds alpha * W to the *summed* gradient before dividing by the batch
        wd = self.alpha / batch
        if self.solver == "adam":
            return optim.adam(
                self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon, weight_decay=wd
            )
        if self.momentum == 0:
            return optim.sgd(self.learning_rate_init, weight_decay=wd)
        make = optim.nesterov if self.nesterovs_momentum else optim.momentum
        return make(self.learning_rate_init, self.momentum, weight_decay=wd)

    def _make_trainer(self, batch: int, seed: int) -> Trainer:
        options = TrainOptions(
            batch_size=batch,
            optimizer=self._optimizer(batch),
            shuffle=bool(self.shuffle),
            seed=seed,
            on_divergence="raise",
            max_retries=0,
            progress=False,
            compile=self.compile,
        )
        return Trainer(self._net, options)

    def _seed(self) -> int:
        if isinstance(self.random_state, (int, np.integer)):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(2**31 - 1))

    def _fit(self, X: Any, y: Any, incremental: bool = False, classes: Any = None) -> Any:
        self._check_params()
        first = not (incremental or self.warm_start) or not hasattr(self, "_net")
        X, y, be, host = self._validate(X, y, reset=first, fitting=True)
        if not first and self._be != be:
            raise ValueError(f"X is on {be!r} but the model was fitted on {self._be!r}")
        targets = self._encode(y, be, first, classes)
        n = X.shape[0]
        batch = min(200, n) if self.batch_size == "auto" else int(np.clip(self.batch_size, 1, n))
        if self.batch_size != "auto" and not (
            isinstance(self.batch_size, (int, np.integer)) and self.batch_size >= 1
        ):
            raise ValueError(f"batch_size={self.batch_size!r} must be 'auto' or an integer >= 1")
        if first:
            seed = self._seed()
            self._net = self._build(X.shape[1], targets.shape[1], be, self._dtype_name(X, be), seed)
            self._be, self._host = be, host
            self._trainer = self._make_trainer(batch, seed)
            self.loss_curve_: list[float] = []
            self.validation_scores_: list[float] | None = [] if self.early_stopping else None
            self.best_loss_: float | None = np.inf
            self.best_validation_score_: float | None = None
            self.t_ = 0
        net = self._net
        xd = be.asarray(X, net.dtype) if host else be.xp.astype(X, net.dtype)
        yd = be.asarray(targets, net.dtype)
        # no training accuracy: scikit-learn reports the loss only, and skipping it
        # saves an argmax and a comparison per batch
        data = DeviceData(xd, yd, None)
        val = None
        if self.early_stopping and not incremental:
            data, val = split_validation(net, data, self.validation_fraction, self._seed())
        trainer = self._trainer
        trainer.history.stopped_early = False
        callbacks: list[Callback] = []
        if not incremental:
            # scikit-learn stops after n_iter_no_change epochs without a tol improvement:
            # of the training loss, or of the validation score with early stopping
            stop = EarlyStopping(
                patience=self.n_iter_no_change,
                min_delta=self.tol,
                monitor="val_score" if self.early_stopping else "loss",
                mode="max" if self.early_stopping else "min",
                restore_best=self.early_stopping,
            )
            callbacks = [_ScoreEachEpoch(self._val_score, val, self.validation_scores_), stop]
        # what may change between calls: the batch (a smaller X), the stopping rule
        trainer.options = trainer.options.replace(
            batch_size=min(batch, data.n),
            progress="lines" if self.verbose else False,
            compile=self.compile,
        )
        trainer.callbacks = callbacks
        trainer.stop_training = False
        start = trainer.epoch
        epochs = start + (1 if incremental else self.max_iter)
        hist = trainer.fit(data, val, epochs)
        new = hist.epochs[len(hist.epochs) - (trainer.epoch - start) :]
        self.loss_curve_ += [row["loss"] for row in new]
        self.n_iter_ = len(self.loss_curve_) if not self.warm_start else trainer.epoch
        self.t_ = trainer.step
        if self.loss_curve_:
            self.loss_ = self.loss_curve_[-1]
        if self.early_stopping and self.validation_scores_:
            self.best_validation_score_ = max(self.validation_scores_)
            self.best_loss_ = None
        elif self.loss_curve_:
            self.best_loss_ = min(self.loss_curve_)
        if not incremental and not trainer.history.stopped_early and self.max_iter > 1:
            warnings.warn(
                f"Stochastic optimizer: maximum iterations ({self.max_iter}) reached and the "
                "optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )
        self._export()
        return self

    def _export(self) -> None:
        """Fitted attributes in the namespace of the training input."""
        be = self._be
        conv = (lambda a: np.array(be.to_host(a))) if self._host else (lambda a: a)
        self.coefs_ = [conv(p["W"]) for p in self._net.params]
        self.intercepts_ = [conv(p["b"]) for p in self._net.params]
        self.n_layers_ = len(self._net.layers) + 1
        self.n_outputs_ = self._net.n_out
        self.out_activation_ = {
            "sigmoid": "logistic",
            "softmax": "softmax",
            "identity": "identity",
        }[self._net.layers[-1].activation]

    def _forward(self, X: Any, method: str = "predict") -> tuple[Any, bool]:
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
        net = self._net
        xd = net.backend.asarray(X, net.dtype) if host else net.xp.astype(X, net.dtype)
        return net.forward(xd), host

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> Any:
        """One epoch over (X, y), continuing from the current weights and optimizer state."""
        return self._fit(X, y, incremental=True, classes=classes)

    def __getstate__(self) -> dict[str, Any]:
        # xbp's own files never pickle; scikit-learn's convention is pickling, so the
        # network travels as host arrays and is rebuilt on load
        state = self.__dict__.copy()
        net = state.pop("_net", None)
        state.pop("_trainer", None)
        be = state.pop("_be", None)
        if net is not None:
            state["_net_state"] = {
                "config": net.config(),
                "params": net.host_params(),
                "backend": be.name,
                "device": str(be.device),
            }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        saved = state.pop("_net_state", None)
        self.__dict__.update(state)
        if saved is not None:
            cfg = saved["config"]
            try:
                be = resolve_backend(saved["backend"], saved["device"])
            except XbpValueError:
                be = resolve_backend("numpy")
                self._host = True
            self._net = Network.from_config(cfg, backend=be)
            self._net.params = saved["params"]
            self._be = be
            # the weights come back; the optimizer state starts afresh (as after warm_start)
            batch = 200 if self.batch_size == "auto" else int(self.batch_size)
            self._trainer = self._make_trainer(batch, self._seed())
            self._trainer.epoch = len(getattr(self, "loss_curve_", []))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by xbp (drop-in for scikit-learn's).

    Binary targets use one logistic output and binary cross-entropy, several
    classes a softmax output and cross-entropy, multilabel indicator targets
    logistic outputs. See :class:`sklearn.neural_network.MLPClassifier` for
    the parameters; ``backend`` and ``device`` choose where training runs.
    """

    _classifier = True

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
        if first:
            self._lb = LabelBinarizer()
            if classes is not None:
                self._lb.fit(classes)
            elif type_of_target(y) == "multilabel-indicator":
                self._lb.fit(y)
            else:
                self._lb.fit(y)
            self.classes_ = self._lb.classes_
            self._multilabel = self._lb.y_type_.startswith("multilabel")
            self._multiclass = len(self.classes_) > 2 and not self._multilabel
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes={classes!r} differ from the first call's {self.classes_!r}")
        if not self._multilabel:
            unknown = np.setdiff1d(np.unique(y), self.classes_)
            if unknown.size:
                raise ValueError(f"y contains previously unseen labels: {unknown!r}")
        out = self._lb.transform(y).astype(np.float64)
        if out.shape[1] == 1 and len(self.classes_) == 1:
            out = np.zeros((len(y), 1))
        return out

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Fit the model to X and class labels y (max_iter epochs, with the stopping rules)."""
        return self._fit(X, y)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MLPClassifier:
        """One epoch over (X, y); ``classes`` is required on the first call."""
        if not hasattr(self, "_net") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        return self._fit(X, y, incremental=True, classes=classes)

    def _val_score(self, val: DeviceData) -> float:
        net = self._net
        out = net.forward(val.x)
        xp = net.xp
        if self._multiclass:
            pred = xp.argmax(out, axis=1)
            truth = xp.argmax(val.y, axis=1)
            return float(xp.mean(xp.astype(pred == truth, out.dtype)))
        pred = xp.astype(out > 0.5, out.dtype)
        return float(xp.mean(xp.astype(xp.all(pred == val.y, axis=1), out.dtype)))

    def _proba(self, X: Any, method: str) -> Any:
        out, host = self._forward(X, method)
        net = self._net
        xp = net.xp
        if not self._multiclass and not self._multilabel:
            p1 = out[:, 0]
            out = xp.stack([1 - p1, p1], axis=1)
        return out, host

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, in the namespace and on the device of X."""
        out, host = self._proba(X, "predict_proba")
        return self._net.backend.to_host(out) if host else out

    def predict_log_proba(self, X: Any) -> Any:
        """Log of :meth:`predict_proba`."""
        out, host = self._proba(X, "predict_log_proba")
        out = self._net.xp.log(out)
        return self._net.backend.to_host(out) if host else out

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

    Identity output and the squared error ``1/(2n) sum ||y - a||^2``, as in
    scikit-learn. ``backend`` and ``device`` choose where training runs.
    """

    _multiclass = False

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _output(self) -> tuple[str, str]:
        return "identity", "quadratic"

    def _encode(self, y: Any, be: Backend, first: bool, classes: Any) -> np.ndarray:
        if not isinstance(y, np.ndarray) and array_api_compat.is_array_api_obj(y):
            y = resolve_backend(y).to_host(y)
        y = np.asarray(y, dtype=np.float64)
        if first:
            self._y_ndim = y.ndim
        return y.reshape(-1, 1) if y.ndim == 1 else y

    def fit(self, X: Any, y: Any) -> MLPRegressor:
        """Fit the model to X and continuous targets y."""
        return self._fit(X, y)

    def _val_score(self, val: DeviceData) -> float:
        net = self._net
        xp = net.xp
        out = net.forward(val.x)
        ss_res = xp.sum((val.y - out) ** 2, axis=0)
        ss_tot = xp.sum((val.y - xp.mean(val.y, axis=0)) ** 2, axis=0)
        r2 = 1 - ss_res / xp.where(ss_tot == 0, xp.ones_like(ss_tot), ss_tot)
        return float(xp.mean(r2))

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
