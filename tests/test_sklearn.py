"""xbp.sklearn against scikit-learn's own estimator checks and its tools."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from conftest import backend_or_skip, required_backends

sklearn = pytest.importorskip("sklearn")
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import xbp  # noqa: E402
from xbp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

# Checks xbp cannot pass, each with the reason. Kept to a minimum.
EXPECTED_FAILED: dict[str, str] = {}


def _expected(est):
    return EXPECTED_FAILED


@parametrize_with_checks(
    [
        MLPClassifier(hidden_layer_sizes=(16,), max_iter=200, random_state=0),
        MLPRegressor(hidden_layer_sizes=(16,), max_iter=200, random_state=0),
    ],
    expected_failed_checks=_expected,
)
def test_sklearn_estimator_checks(estimator, check) -> None:
    kwargs = getattr(check, "keywords", {})
    if kwargs.get("array_namespace") == "cupy" or "cupy" in str(kwargs.get("other_ns_and_device")):
        try:
            xbp.backend("cupy")
        except xbp.XbpError as exc:
            pytest.skip(f"scikit-learn's cupy input check needs a working GPU: {exc}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def digits():
    x, y = xbp.data.load_digits()
    return x, y


def test_pipeline_grid_search_and_cross_val() -> None:
    x, y = digits()
    x, y = x[:600], y[:600]
    pipe = make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(32,), max_iter=100, random_state=0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(pipe, x, y, cv=3)
        grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-2]}, cv=2).fit(x, y)
    assert scores.mean() > 0.75  # scikit-learn scores 0.84 with these settings
    assert grid.best_params_["mlpclassifier__alpha"] in (1e-4, 1e-2) and grid.best_score_ > 0.8


def test_fitted_attributes_and_pickle() -> None:
    x, y = digits()
    clf = MLPClassifier(
        hidden_layer_sizes=(24, 12),
        max_iter=15,
        random_state=1,
        early_stopping=True,
        n_iter_no_change=100,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    assert [c.shape for c in clf.coefs_] == [(64, 24), (24, 12), (12, 10)]
    assert [b.shape for b in clf.intercepts_] == [(24,), (12,), (10,)]
    assert clf.n_iter_ == 15 == len(clf.loss_curve_) == len(clf.validation_scores_)
    assert clf.classes_.tolist() == list(range(10)) and clf.n_features_in_ == 64
    assert (
        clf.best_validation_score_ == max(clf.validation_scores_)
        and clf.out_activation_ == "softmax"
    )
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(x), clf.predict_proba(x))


def test_string_labels_binary_and_partial_fit() -> None:
    x, y = xbp.data.make_moons(200, seed=0)
    labels = np.where(y == 1, "yes", "no")
    clf = MLPClassifier(
        hidden_layer_sizes=(16,), solver="sgd", learning_rate_init=0.1, random_state=0
    )
    for _ in range(30):
        clf.partial_fit(x, labels, classes=["no", "yes"])
    # as scikit-learn's: n_iter_ counts the epochs of the last call, loss_curve_ all of them
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 30 and clf.out_activation_ == "logistic"
    assert set(clf.predict(x)) <= {"no", "yes"} and clf.score(x, labels) > 0.85
    assert clf.predict_proba(x).shape == (200, 2)


def test_regressor_learns() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (300, 2))
    y = np.sin(3 * x[:, 0]) + x[:, 1] ** 2
    reg = MLPRegressor(
        hidden_layer_sizes=(32,),
        activation="tanh",
        max_iter=300,
        learning_rate_init=0.01,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(x, y)
    assert reg.score(x, y) > 0.95 and reg.predict(x).shape == (300,)


def test_everything_follows_x_torch() -> None:
    torch = pytest.importorskip("torch")
    x, y = digits()
    xt, yt = torch.asarray(x[:400]), torch.asarray(y[:400])
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(xt, yt)
    assert isinstance(clf.coefs_[0], torch.Tensor) and clf._net.backend.name == "torch"
    pred = clf.predict(xt)
    proba = clf.predict_proba(xt)
    assert isinstance(pred, torch.Tensor) and isinstance(proba, torch.Tensor)
    assert pred.shape == (400,)


def test_numpy_input_with_a_chosen_backend_returns_numpy() -> None:
    pytest.importorskip("torch")
    x, y = digits()
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0, backend="torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    assert clf._net.backend.name == "torch"
    assert isinstance(clf.coefs_[0], np.ndarray) and isinstance(clf.predict(x), np.ndarray)


def test_same_hyper_parameters_similar_accuracy_to_sklearn() -> None:
    from sklearn.neural_network import MLPClassifier as SkMLP

    x, y = digits()
    (xtr, ytr), _, (xte, yte) = xbp.data.train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    params = dict(hidden_layer_sizes=(100,), max_iter=100, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(**params).fit(xtr, ytr).score(xte, yte)
        theirs = SkMLP(**params).fit(xtr, ytr).score(xte, yte)
    assert ours >= theirs - 0.01, (ours, theirs)


# -- the same numbers as scikit-learn -----------------------------------------------------
# Every test below trains scikit-learn's own estimator and xbp's with the same arguments and
# compares the fitted attributes; nothing is compared against stored constants.
from sklearn.datasets import load_iris, make_classification, make_regression  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402

SMALL = dict(hidden_layer_sizes=(5, 4), max_iter=5, batch_size=32, learning_rate_init=0.02)
SMALL.update(alpha=1e-3, random_state=0)


def iris() -> tuple[np.ndarray, np.ndarray]:
    return load_iris(return_X_y=True)


def regression(n_targets: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_regression(90, 5, n_targets=n_targets, noise=0.1, random_state=0)
    return x, y / 100


def _rel(ours, theirs) -> float:
    return max(
        float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b)) / np.max(np.abs(b)))
        for a, b in zip(ours, theirs)
    )


def assert_same_model(ours, theirs, weights: float = 1e-10, values: float = 1e-12) -> None:
    """The trained attributes of xbp's estimator equal those of scikit-learn's."""
    assert [c.shape for c in ours.coefs_] == [c.shape for c in theirs.coefs_]
    assert _rel(ours.coefs_, theirs.coefs_) <= weights
    assert _rel(ours.intercepts_, theirs.intercepts_) <= weights
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.t_ == theirs.t_
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=values)
    if hasattr(theirs, "loss_curve_"):
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=values)
        for name in ("best_loss_", "best_validation_score_"):
            mine, ref = getattr(ours, name), getattr(theirs, name)
            assert (mine is None) == (ref is None)
            if ref is not None:
                np.testing.assert_allclose(mine, ref, rtol=values)
        if theirs.validation_scores_ is None:
            assert ours.validation_scores_ is None
        else:
            np.testing.assert_allclose(
                ours.validation_scores_, theirs.validation_scores_, rtol=values
            )


def _fit_both(sk_cls, xbp_cls, x, y, fit_kwargs=None, **params):
    """(xbp's, scikit-learn's) estimators fitted with the same arguments; the
    ConvergenceWarning must come from both or neither."""
    fit_kwargs = fit_kwargs or {}
    pair = []
    warned = []
    for cls in (xbp_cls, sk_cls):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            pair.append(cls(**params).fit(x, y, **fit_kwargs))
        warned.append(any(issubclass(w.category, ConvergenceWarning) for w in caught))
    assert warned[0] == warned[1]
    return pair


@pytest.mark.parametrize("warm_start", [False, True])
@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_classifier_equals_scikit_learn(solver, activation, early_stopping, warm_start) -> None:
    x, y = iris()
    params = dict(SMALL, solver=solver, activation=activation, early_stopping=early_stopping)
    ours, theirs = _fit_both(SkClassifier, MLPClassifier, x, y, warm_start=warm_start, **params)
    assert_same_model(ours, theirs)
    if warm_start:  # a second fit continues from the weights, the curve and the counters
        for est in (ours, theirs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                est.set_params(max_iter=3).fit(x, y)
        assert len(ours.loss_curve_) == 8
        assert_same_model(ours, theirs)
    np.testing.assert_array_equal(ours.predict(x), theirs.predict(x))
    np.testing.assert_allclose(ours.predict_proba(x), theirs.predict_proba(x), rtol=1e-9)


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_regressor_equals_scikit_learn(solver, activation) -> None:
    x, y = regression()
    params = dict(SMALL, solver=solver, activation=activation, early_stopping=True)
    ours, theirs = _fit_both(SkRegressor, MLPRegressor, x, y, **params)
    assert_same_model(ours, theirs)
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "params",
    [
        dict(solver="sgd", nesterovs_momentum=False),
        dict(solver="sgd", momentum=0.0),
        dict(solver="sgd", learning_rate="invscaling", power_t=0.3, learning_rate_init=0.2),
        # tol and patience small enough that the adaptive rate is divided and training stops
        dict(solver="sgd", learning_rate="adaptive", tol=0.05, n_iter_no_change=1, max_iter=30),
        dict(solver="adam", tol=0.05, n_iter_no_change=2, max_iter=40, batch_size="auto"),
        dict(solver="adam", early_stopping=True, validation_fraction=0.3, shuffle=False),
        dict(solver="sgd", alpha=0.0, batch_size=200),  # one batch larger than the data
        dict(solver="adam", beta_1=0.5, beta_2=0.9, epsilon=1e-6, random_state=7),
    ],
    ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()),
)
def test_update_rules_schedules_and_stopping_equal_scikit_learn(params) -> None:
    x, y = iris()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # batch_size clipped: both warn
        ours, theirs = _fit_both(SkClassifier, MLPClassifier, x, y, **dict(SMALL, **params))
    assert_same_model(ours, theirs)
    if params.get("learning_rate") == "adaptive":
        assert ours.n_iter_ < 30  # the rule was exercised: the rate fell below 1e-6


def test_binary_stratified_split_and_a_random_state_object() -> None:
    x, y = iris()
    x, y = x[:100], np.where(y[:100] == 1, "b", "a")
    # an int seed, and a RandomState object in the same state for each (draws continue)
    for make_state in (lambda: 0, lambda: np.random.RandomState(3)):
        params = dict(SMALL, early_stopping=True, solver="adam", max_iter=6)
        ours = MLPClassifier(**dict(params, random_state=make_state()))
        theirs = SkClassifier(**dict(params, random_state=make_state()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ours.fit(x, y)
            theirs.fit(x, y)
        assert_same_model(ours, theirs)
        assert ours.out_activation_ == theirs.out_activation_ == "logistic"


def test_sample_weight_fit_early_stopping_and_partial_fit_equal_scikit_learn() -> None:
    x, y = iris()
    w = np.random.default_rng(0).uniform(0.2, 3.0, len(y))
    for early_stopping in (False, True):
        params = dict(SMALL, solver="adam", early_stopping=early_stopping)
        ours, theirs = _fit_both(
            SkClassifier, MLPClassifier, x, y, fit_kwargs={"sample_weight": w}, **params
        )
        assert_same_model(ours, theirs)
    xr, yr = regression(1)
    wr = np.random.default_rng(1).integers(0, 4, len(yr)).astype(float)
    ours, theirs = MLPRegressor(**SMALL), SkRegressor(**SMALL)
    for est in (ours, theirs):
        for _ in range(3):
            est.partial_fit(xr, yr, sample_weight=wr)
    assert_same_model(ours, theirs)
    ours, theirs = MLPClassifier(**SMALL), SkClassifier(**SMALL)
    for est in (ours, theirs):
        est.partial_fit(x[:60], y[:60], sample_weight=w[:60], classes=[0, 1, 2])
        est.partial_fit(x[60:], y[60:], sample_weight=w[60:])
    assert_same_model(ours, theirs)


def test_partial_fit_grid_equals_scikit_learn() -> None:
    x, y = iris()
    for solver in ("sgd", "adam"):
        ours, theirs = (
            MLPClassifier(**dict(SMALL, solver=solver)),
            SkClassifier(**dict(SMALL, solver=solver)),
        )
        for est in (ours, theirs):
            for _ in range(4):
                est.partial_fit(x, y, classes=[0, 1, 2])
        assert_same_model(ours, theirs)


def test_warm_start_trains_from_user_set_weights_and_keeps_the_shapes() -> None:
    x, y = iris()
    params = dict(SMALL, solver="sgd", warm_start=True)
    ours, theirs = _fit_both(SkClassifier, MLPClassifier, x, y, **params)
    rng = np.random.default_rng(0)
    new = [rng.normal(0, 0.3, c.shape) for c in theirs.coefs_]
    for est in (ours, theirs):
        est.coefs_ = [c.copy() for c in new]  # set by the user before the next fit
        # ignored by a warm start, the shapes stay (scikit-learn fails on another depth)
        est.set_params(hidden_layer_sizes=(7, 2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(x, y)
    assert [c.shape for c in ours.coefs_] == [(4, 5), (5, 4), (4, 3)]
    assert_same_model(ours, theirs)


def test_lbfgs_matches_scikit_learn() -> None:
    from sklearn.preprocessing import StandardScaler

    x, y = iris()
    x = StandardScaler().fit_transform(x)
    xr, yr = regression(1)
    params = dict(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=100, alpha=1e-3)
    for sk_cls, cls, data in (
        (SkClassifier, MLPClassifier, (x, y)),
        (SkRegressor, MLPRegressor, (xr, yr)),
    ):
        ours, theirs = _fit_both(sk_cls, cls, *data, random_state=0, **params)
        # converged runs agree to ~1e-12 (L-BFGS amplifies last-bit gradient differences)
        assert ours.n_iter_ == theirs.n_iter_ < 100
        assert _rel(ours.coefs_, theirs.coefs_) <= 1e-10
        assert _rel(ours.intercepts_, theirs.intercepts_) <= 1e-10
        np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-10)
    with pytest.raises(AttributeError, match="partial_fit"):
        ours.partial_fit(x, y)


def test_float32_follows_scikit_learns_dtype_rule() -> None:
    x, y = iris()
    x32 = x.astype(np.float32)
    ours, theirs = _fit_both(SkClassifier, MLPClassifier, x32, y, **SMALL)
    assert ours.coefs_[0].dtype == theirs.coefs_[0].dtype == np.float32
    assert _rel(ours.coefs_, theirs.coefs_) <= 1e-4
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-5)
    ours, theirs = _fit_both(SkClassifier, MLPClassifier, x.astype(np.int64), y, **SMALL)
    assert ours.coefs_[0].dtype == theirs.coefs_[0].dtype == np.float64


def test_regressor_passes_check_regressors_train_with_20_iterations() -> None:
    from sklearn.utils.estimator_checks import check_regressors_train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check_regressors_train("MLPRegressor", MLPRegressor(max_iter=20, random_state=0))


def test_pickle_keeps_the_optimizer_state() -> None:
    x, y = iris()
    ours, theirs = MLPClassifier(**SMALL), SkClassifier(**SMALL)
    for est in (ours, theirs):
        est.partial_fit(x, y, classes=[0, 1, 2])
    ours = pickle.loads(pickle.dumps(ours))
    for est in (ours, theirs):
        est.partial_fit(x, y)
    assert_same_model(ours, theirs)


@pytest.mark.parametrize(
    "spec, compile",
    [
        (("array_api_strict", "array_api_strict", None), None),
        (("array_api_strict-device1", "array_api_strict", "device1"), None),
        (("torch-cpu", "torch", "cpu"), None),
        (("torch-cuda", "torch", "cuda"), None),
        (("jax-cpu", "jax", "cpu"), False),
        (("jax-cpu", "jax", "cpu"), True),
        (("cupy-cuda", "cupy", "cuda"), None),
    ],
    ids=[
        "array_api_strict",
        "array_api_strict-device1",
        "torch-cpu",
        "torch-cuda",
        "jax-cpu-eager",
        "jax-cpu-compiled",
        "cupy-cuda",
    ],
)
def test_other_backends_train_the_same_model(spec, compile) -> None:
    be = backend_or_skip(*spec, required_backends())
    x, y = iris()
    for solver in ("sgd", "adam"):
        params = dict(SMALL, solver=solver, early_stopping=True)
        ours = MLPClassifier(backend=be.name, device=be.device, compile=compile, **params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ours.fit(x, y)
            theirs = SkClassifier(**params).fit(x, y)
        assert ours._net.backend == be and isinstance(ours.coefs_[0], np.ndarray)
        # Adam's first steps divide by sqrt(v) of tiny gradients: the last bits of a
        # library's reductions grow to ~1e-12 there
        assert_same_model(ours, theirs, weights=1e-9, values=1e-10)


def test_readme_says_what_the_estimators_take_for_activation() -> None:
    """The estimators follow scikit-learn's activation set, registered activations
    included: the guide's page on registered parts says so and does not list them."""
    import re
    from pathlib import Path

    from xbp.sklearn import MLPClassifier

    xbp.register_activation("my_soft", lambda xp, z: z / (1 + xp.abs(z)), None)
    try:
        x = np.random.default_rng(0).normal(size=(20, 3))
        # scikit-learn's validator, with its message
        with pytest.raises(ValueError, match="'activation' parameter.*Got 'my_soft'"):
            MLPClassifier(hidden_layer_sizes=(4,), activation="my_soft", max_iter=1).fit(
                x, np.arange(20) % 2
            )
    finally:
        xbp.nn.activations.ACTIVATIONS.pop("my_soft")
    page = (Path(__file__).parents[1] / "docs" / "custom.md").read_text()
    section = page[page.index("## Your own activation and loss") :]
    section = " ".join(section[: section.index("\n* **Activation**")].split())
    assert not re.search(r"estimators'? networks", section)
    assert "scikit-learn estimators follow scikit-learn's own activation set" in section


def test_a_batch_of_zero_weights_leaves_no_nan() -> None:
    """Rows weighted 0 filling a whole batch: the batch divides by 1 (as xbp.fit), so its
    cost gradient is 0 and the weights stay finite (scikit-learn itself divides by 0)."""
    X, y = make_classification(n_samples=60, n_features=5, random_state=0)
    w = np.ones(len(y))
    w[:10] = 0.0
    est = MLPClassifier(hidden_layer_sizes=(4,), batch_size=10, shuffle=False, max_iter=3,
                        random_state=0)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y, sample_weight=w)
    assert all(np.isfinite(c).all() for c in est.coefs_)
    assert np.isfinite(est.loss_curve_).all()


def test_partial_fit_continues_the_optimizer_and_reads_alpha_each_call() -> None:
    """Successive partial_fit calls continue one optimizer state; alpha changed between
    calls takes effect at once (scikit-learn reads it at every step), and the model still
    equals scikit-learn's."""
    x, y = iris()
    ours, theirs = MLPClassifier(**SMALL), SkClassifier(**SMALL)
    for est in (ours, theirs):
        est.partial_fit(x, y, classes=[0, 1, 2])
        for _ in range(3):
            est.partial_fit(x, y)
        est.set_params(alpha=0.5)
        est.partial_fit(x, y)
    assert_same_model(ours, theirs)


@pytest.fixture
def jax_traces(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The JAX backend, with every trace of a compiled function counted (the Python body of
    a jitted function runs once per trace) and the compiled-step cache emptied."""
    from collections import OrderedDict

    from xbp.train.step import Step

    backend_or_skip("jax-cpu", "jax", "cpu", required_backends())
    traces: list[int] = []
    real = xbp.backends.select.Backend.jit

    def counting(self, fn, donate_argnums=()):  # type: ignore[no-untyped-def]
        def traced(*args):  # type: ignore[no-untyped-def]
            traces.append(1)
            return fn(*args)

        return real(self, traced, donate_argnums)

    monkeypatch.setattr(xbp.backends.select.Backend, "jit", counting)
    monkeypatch.setattr(Step, "_CACHE", OrderedDict())
    return traces


def test_jax_compiles_once_per_shape_across_fits_estimators_and_a_grid_search(
    jax_traces: list[int],
) -> None:
    """On JAX the compiled epoch is cached by what it computes (Step.compiled): a second
    fit, a new estimator and a 2x2 grid search over alpha and learning_rate_init (data to
    the compiled step) trace once per distinct training-set shape; a reused trace still
    trains with the new estimator's alpha and learning rates (equal to scikit-learn)."""
    x, y = iris()
    params = dict(SMALL, backend="jax", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPClassifier(**params).fit(x, y)
        est.fit(x, y)
        MLPClassifier(**params).fit(x, y)
        assert len(jax_traces) == 1  # 150 rows
        grid = {"alpha": [1e-4, 1e-2], "learning_rate_init": [0.01, 0.05]}
        GridSearchCV(MLPClassifier(**params), grid, cv=2).fit(x, y)
        assert len(jax_traces) == 2  # the folds' 75 rows; the refit on 150 reuses the first
        for other in (dict(alpha=0.5, learning_rate_init=0.05), dict(beta_1=0.8)):
            ours = MLPClassifier(**params | other).fit(x, y)
            assert_same_model(ours, SkClassifier(**SMALL | other).fit(x, y), 1e-9, 1e-10)
        assert len(jax_traces) == 3  # beta_1 is the rule itself: a trace of its own
        sgd = dict(solver="sgd", learning_rate="invscaling", power_t=0.3)
        MLPClassifier(**params | sgd).fit(x, y)
        n_sgd = len(jax_traces)
        # the rate changes every epoch, and differs here: data, no trace
        sgd["learning_rate_init"] = 0.2
        ours = MLPClassifier(**params | sgd).fit(x, y)
        assert_same_model(ours, SkClassifier(**SMALL | sgd).fit(x, y), 1e-9, 1e-10)
        assert len(jax_traces) == n_sgd == 4


def test_partial_fit_on_jax_traces_once(jax_traces: list[int]) -> None:
    """partial_fit calls on JAX reuse one trace, alpha changed between them included."""
    x, y = iris()
    ours = MLPClassifier(**SMALL, backend="jax", device="cpu")
    theirs = SkClassifier(**SMALL)
    for est in (ours, theirs):
        est.partial_fit(x, y, classes=[0, 1, 2])
        est.partial_fit(x, y)
        est.set_params(alpha=0.5)
        est.partial_fit(x, y)
    assert len(jax_traces) == 1
    assert_same_model(ours, theirs, weights=1e-9, values=1e-10)


def test_a_pickled_jax_estimator_comes_back_on_jax_and_trains_on() -> None:
    """The saved device (``str`` of a JAX CPU device, "cpu:0") resolves again, so the
    estimator is not silently moved to NumPy and a later partial_fit continues it,
    equal to scikit-learn's."""
    backend_or_skip("jax-cpu", "jax", "cpu", required_backends())
    x, y = iris()
    ours = MLPClassifier(**SMALL, backend="jax", device="cpu")
    theirs = SkClassifier(**SMALL)
    for est in (ours, theirs):
        est.partial_fit(x, y, classes=[0, 1, 2])
    back = pickle.loads(pickle.dumps(ours))
    for est in (back, theirs):
        est.partial_fit(x, y)
    assert_same_model(back, theirs)


# -- scikit-learn's own test file's cases, through public attributes (issue: drop-in) -------
import scipy.sparse  # noqa: E402
from scipy.special import expit  # noqa: E402
from sklearn.datasets import make_multilabel_classification  # noqa: E402

import xbp.sklearn as xsk  # noqa: E402


@pytest.mark.parametrize("target", ["binary", "multiclass", "multilabel", "regression", "poisson"])
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_lbfgs_gradient_intent_equals_scikit_learn(target, activation) -> None:
    """scikit-learn's test_gradient checks its private _loss_grad_lbfgs against finite
    differences; here the public outcome: L-BFGS driven by xbp's loss and gradient
    takes scikit-learn's iterates (a wrong gradient would take others) for every
    activation and output type."""
    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, (40, 5))
    sk_cls, cls, kwargs = SkClassifier, MLPClassifier, {}
    if target == "binary":
        y = (x[:, 0] > 0).astype(int)
    elif target == "multiclass":
        y = rng.randint(0, 3, 40)
    elif target == "multilabel":
        y = (x[:, :3] > 0).astype(int)
    else:
        sk_cls, cls = SkRegressor, MLPRegressor
        kwargs = {"loss": "squared_error" if target == "regression" else "poisson"}
        y = rng.poisson(np.exp(x[:, 0] + 0.5)).astype(float)
    params = dict(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=8, alpha=1e-3)
    ours, theirs = _fit_both(
        sk_cls, cls, x, y, random_state=0, activation=activation, **params, **kwargs
    )
    assert _rel(ours.coefs_, theirs.coefs_) <= 1e-9
    assert _rel(ours.intercepts_, theirs.intercepts_) <= 1e-9
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-10)


@pytest.mark.parametrize("schedule", ["constant", "invscaling", "adaptive"])
def test_learning_rate_schedules_through_public_attributes(schedule) -> None:
    """scikit-learn's test_learning_rate_warmstart and test_adaptive_learning_rate read
    its private _optimizer.learning_rate; here: warm-started fits (the rate at the start
    of each fit, t_-driven for invscaling) and the adaptive stop give scikit-learn's
    weights, counters and epochs."""
    x, y = iris()
    params = dict(
        SMALL, solver="sgd", learning_rate=schedule, warm_start=True, power_t=0.25, max_iter=4
    )
    if schedule == "adaptive":
        params.update(tol=0.5, n_iter_no_change=1, max_iter=60)
    ours, theirs = _fit_both(SkClassifier, MLPClassifier, x, y, **params)
    for _ in range(2):
        for est in (ours, theirs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                est.fit(x, y)
        assert_same_model(ours, theirs)
    if schedule == "adaptive":
        assert ours.n_iter_ < 60  # stopped by the learning rate falling below 1e-6


@pytest.mark.parametrize(
    "container", [scipy.sparse.csr_matrix, scipy.sparse.csc_matrix, scipy.sparse.csr_array]
)
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_sparse_input_equals_scikit_learn_a_batch_at_a_time(solver, container, monkeypatch) -> None:
    x, y = iris()
    x = np.where(x > np.median(x, axis=0), x, 0.0)  # half the entries are zeros
    xs = container(x)
    params = dict(SMALL, solver=solver, early_stopping=solver != "lbfgs")
    if solver == "lbfgs":
        params.update(max_iter=10)
    densified: list[int] = []
    rows = xsk._SparseRows.rows

    def spy(self, idx):
        out = rows(self, idx)
        densified.append(int(out.shape[0]))
        return out

    monkeypatch.setattr(xsk._SparseRows, "rows", spy)
    monkeypatch.setattr(xsk, "_SPARSE_CHUNK", 50)  # outside training: 50 rows at a time
    ours, theirs = _fit_both(SkClassifier, MLPClassifier, xs, y, **params)
    assert_same_model(ours, theirs)
    np.testing.assert_array_equal(ours.predict(xs), theirs.predict(xs))
    np.testing.assert_allclose(ours.predict_proba(xs), ours.predict_proba(x), rtol=1e-12)
    # bounded memory: never more than one batch (32) or one chunk (50) of dense rows
    assert densified and max(densified) <= 50


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_sparse_input_trains_on_other_backends(name) -> None:
    be = backend_or_skip(f"{name}-cpu", name, "cpu", required_backends())
    x, y = iris()
    xs = scipy.sparse.csr_matrix(np.where(x > 2, x, 0.0))
    ours = MLPClassifier(**SMALL, backend=be.name, device=be.device)
    theirs = SkClassifier(**SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(xs, y)
        theirs.fit(xs, y)
    assert_same_model(ours, theirs, weights=1e-9, values=1e-10)
    assert isinstance(ours.predict(xs), np.ndarray)


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_poisson_regressor_equals_scikit_learn(solver) -> None:
    rng = np.random.RandomState(0)
    x = rng.uniform(0, 1, (80, 3))
    # two outputs: the Poisson deviance sums over them (the squared error averages)
    y = rng.poisson(np.exp(x @ [[1.0, 0.2], [-0.5, 0.4], [0.3, -0.1]] + 0.2)).astype(float)
    params = dict(SMALL, solver=solver, activation="tanh", learning_rate_init=0.01)
    ours, theirs = _fit_both(SkRegressor, MLPRegressor, x, y, loss="poisson", **params)
    assert_same_model(ours, theirs)
    assert ours.out_activation_ == theirs.out_activation_ == "exp"
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x), rtol=1e-10)
    # scikit-learn's parameter order: loss is the first positional parameter
    assert MLPRegressor("poisson", (7,)).get_params()["hidden_layer_sizes"] == (7,)
    assert MLPRegressor("poisson").loss == "poisson"
    with pytest.raises(ValueError, match="negative targets.*squared_error"):
        MLPRegressor(loss="poisson").fit(x, -y)


def test_poisson_is_a_builtin_loss_of_the_library_and_the_cli(tmp_path) -> None:
    net = xbp.mlp([3, 4, 1], activation="tanh", loss="poisson", seed=0, dtype="float64")
    assert net.layers[-1].activation == "exp"
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (30, 3))
    y = rng.poisson(np.exp(x[:, :1] + 0.3)).astype(float)
    xbp.tools.gradcheck(net, x, y)  # backprop's gradient = central differences
    # the cost is half the Poisson deviance of exp(Z_L), as scikit-learn's
    from scipy.special import xlogy

    mu = np.asarray(net.forward(x))
    expected = np.mean(xlogy(y, y / mu) - y + mu)
    np.testing.assert_allclose(net.loss_value(x, y), expected, rtol=1e-12)
    with pytest.raises(xbp.errors.XbpValueError, match="negative targets"):
        net.check_targets(-y, 30)
    data = tmp_path / "counts.csv"
    np.savetxt(data, np.column_stack([x, y]), delimiter=",", header="a,b,c,y", comments="")
    from xbp.cli import main

    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--loss",
                "poisson",
                "--layers",
                "4",
                "--epochs",
                "2",
                "--save",
                str(tmp_path / "m.npz"),
            ]
        )
        == 0
    )
    assert xbp.load(str(tmp_path / "m.npz")).loss.name == "poisson"


def test_log_probabilities_are_finite_where_scikit_learns_are() -> None:
    x, y = make_multilabel_classification(n_samples=50, random_state=0, return_indicator=True)
    clf = MLPClassifier(solver="lbfgs", hidden_layer_sizes=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from a log of 0
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
        log_p = clf.predict_log_proba(x)
        proba = clf.predict_proba(x)
    # independent: the logits from the public weights, SciPy's log-sigmoid
    h = np.maximum(x @ clf.coefs_[0] + clf.intercepts_[0], 0)
    z = h @ clf.coefs_[1] + clf.intercepts_[1]
    assert z.min() < -40  # probabilities that (1 + tanh(z/2)) / 2 rounds to 0
    assert np.isfinite(log_p).all()
    # scikit-learn's log(predict_proba) where expit(z) > 0 (it is everywhere here)
    assert (expit(z) > 0).all()
    np.testing.assert_allclose(log_p, np.log(expit(z)), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(proba, expit(z), rtol=1e-12, atol=0)
    # binary and multiclass: log-softmax / log-sigmoid where a probability underflows
    xi, yi = iris()
    for labels in (yi, (yi == 1).astype(int)):
        clf = MLPClassifier(**SMALL).fit(xi, labels)
        # outputs far into the tails: probabilities that underflow to 0
        clf.intercepts_[-1] += np.array([0.0, 900.0, -900.0])[: clf.intercepts_[-1].shape[0]] - 900
        clf._load_params()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            lp = clf.predict_log_proba(xi)
        assert np.isfinite(lp).all() and lp.min() < -800
        p = clf.predict_proba(xi)
        assert (p == 0).any()
        np.testing.assert_allclose(lp[p > 0], np.log(p[p > 0]), rtol=1e-12)


def test_assigned_coefs_are_trained_by_partial_fit_as_scikit_learn() -> None:
    x, y = iris()
    rng = np.random.default_rng(1)
    coefs = [rng.normal(size=(4, 5)), rng.normal(size=(5, 3))]
    intercepts = [rng.normal(size=5), rng.normal(size=3)]
    pair = []
    for cls in (MLPClassifier, SkClassifier):
        est = cls(hidden_layer_sizes=(5,), solver="sgd", random_state=0)
        est.coefs_ = [c.copy() for c in coefs]
        est.intercepts_ = [b.copy() for b in intercepts]
        est.n_outputs_, est.n_layers_, est.out_activation_ = 3, 3, "softmax"
        est.t_, est.n_iter_, est.best_loss_, est.loss_curve_ = 0, 0, np.inf, []
        est._no_improvement_count = 0
        est.partial_fit(x, y, classes=[0, 1, 2])
        pair.append(est)
    ours, theirs = pair
    assert _rel(ours.coefs_, theirs.coefs_) <= 1e-12
    assert _rel(ours.intercepts_, theirs.intercepts_) <= 1e-12
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-12)
    assert ours.t_ == theirs.t_ == 150
    bad = MLPClassifier(hidden_layer_sizes=(5,), solver="sgd")
    bad.coefs_, bad.intercepts_ = [np.ones((3, 5)), np.ones((5, 3))], [np.ones(5), np.ones(3)]
    with pytest.raises(ValueError, match="do not chain from the 4 features"):
        bad.partial_fit(x, y, classes=[0, 1, 2])


@pytest.mark.parametrize("spec", [s for s in __import__("conftest").BACKEND_SPECS])
def test_pickling_round_trips_on_every_backend(spec) -> None:
    be = backend_or_skip(*spec, required_backends())
    x, y = iris()
    ours = MLPClassifier(**SMALL, backend=be.name, device=be.device)
    ours.partial_fit(x, y, classes=[0, 1, 2])
    back = pickle.loads(pickle.dumps(ours))
    assert back._net.backend == be
    np.testing.assert_array_equal(back.predict_proba(x), ours.predict_proba(x))
    for est in (ours, back):
        est.partial_fit(x, y)
    np.testing.assert_array_equal(back.coefs_[0], ours.coefs_[0])


def test_no_third_party_warning_on_pandas_input_on_torch() -> None:
    pd = pytest.importorskip("pandas")
    backend_or_skip("torch-cpu", "torch", "cpu", required_backends())
    x, y = iris()
    frame = pd.DataFrame(x, columns=list("abcd"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(**SMALL, backend="torch").fit(frame, y)
        clf.predict(frame)


def test_classes_named_as_scikit_learn_in_the_stratified_split_error() -> None:
    with pytest.raises(ValueError, match=r"too few members are: \['True'\]"):
        MLPClassifier(early_stopping=True).fit([[1, 2], [2, 3], [3, 4], [4, 5]], [0, 0, 0, 1])


def test_multilabel_and_sparse_declared_in_the_tags() -> None:
    tags = MLPClassifier().__sklearn_tags__()
    assert tags.classifier_tags.multi_label and tags.input_tags.sparse
    assert MLPRegressor().__sklearn_tags__().input_tags.sparse


def test_jax_float64_without_touching_jax_config(tmp_path) -> None:
    """A child process with JAX's 64-bit mode off (as a user's): the estimator trains in
    float64 inside its own scope, equal to scikit-learn, and leaves the setting off."""
    backend_or_skip("jax-cpu", "jax", "cpu", required_backends())
    script = """
import jax, numpy as np, warnings
from sklearn.datasets import load_iris
from sklearn.neural_network import MLPClassifier as Sk
from xbp.sklearn import MLPClassifier
x, y = load_iris(return_X_y=True)
p = dict(hidden_layer_sizes=(5,), max_iter=3, random_state=0)
warnings.simplefilter("ignore")
ours = MLPClassifier(backend="jax", **p).fit(x, y)
theirs = Sk(**p).fit(x, y)
assert jax.config.read("jax_enable_x64") is False
assert ours.coefs_[0].dtype == np.float64
assert ours.predict_proba(x).dtype == np.float64
d = max(np.max(np.abs(a - b)) for a, b in zip(ours.coefs_, theirs.coefs_))
assert d < 1e-12, d
print("ok")
"""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ)
    env.pop("JAX_ENABLE_X64", None)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p
    )
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-2000:]


# -- parameters: scikit-learn's constraints, and set_params after fitting ------------------
BAD_PARAMS = [
    ("shuffle", "False"),
    ("warm_start", 1),
    ("nesterovs_momentum", "yes"),
    ("early_stopping", None),
    ("alpha", -1.0),
    ("max_iter", 2.5),
    ("batch_size", 0),
    ("momentum", 1.5),
    ("validation_fraction", 1.0),
    ("beta_2", 1.0),
    ("epsilon", 0.0),
    ("n_iter_no_change", 0),
    ("activation", "gelu"),
    ("solver", "rmsprop"),
    ("learning_rate", "cosine"),
    ("hidden_layer_sizes", 0),
    ("verbose", "loud"),
    ("random_state", "seed"),
]


@pytest.mark.parametrize("name, value", BAD_PARAMS, ids=[f"{n}={v!r}" for n, v in BAD_PARAMS])
def test_parameters_are_refused_as_scikit_learn_refuses_them(name, value) -> None:
    x, y = iris()
    messages = []
    for cls in (SkClassifier, MLPClassifier):
        with pytest.raises((ValueError, TypeError)) as err:
            cls(**dict({"max_iter": 2}, **{name: value})).fit(x, y)
        messages.append(str(err.value).replace("MLPClassifier", "<est>"))
    assert messages[0] == messages[1]


def test_xbp_parameters_and_the_regressor_loss_are_validated() -> None:
    x, y = regression(1)
    for kwargs, match in (
        (dict(precision="half"), "'precision' parameter"),
        (dict(compile="yes"), "'compile' parameter"),
        (dict(loss="huber"), "'loss' parameter of MLPRegressor"),
    ):
        with pytest.raises(ValueError, match=match):
            MLPRegressor(**kwargs).fit(x, y)


def test_set_params_after_fitting_is_followed_by_predict_partial_fit_and_warm_start() -> None:
    x, y = iris()
    ours, theirs = MLPClassifier(**SMALL), SkClassifier(**SMALL)
    for est in (ours, theirs):
        est.partial_fit(x, y, classes=[0, 1, 2])
        est.set_params(activation="tanh")  # scikit-learn reads it at every call
    np.testing.assert_allclose(ours.predict_proba(x), theirs.predict_proba(x), rtol=1e-10)
    for est in (ours, theirs):
        est.partial_fit(x, y)
    assert_same_model(ours, theirs)
    for est in (ours, theirs):
        est.set_params(activation="logistic", warm_start=True, max_iter=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(x, y)
    assert_same_model(ours, theirs)
    np.testing.assert_allclose(ours.predict_proba(x), theirs.predict_proba(x), rtol=1e-10)


def test_the_convergence_warning_as_scikit_learn_at_max_iter_but_not_in_partial_fit() -> None:
    """The loop's callback warns at max_iter as scikit-learn does: fit with max_iter=1
    warns, partial_fit (one epoch, whatever max_iter) never does, for both libraries."""
    x, y = iris()
    for cls in (MLPClassifier, SkClassifier):
        est = cls(**dict(SMALL, max_iter=1))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            est.partial_fit(x, y, classes=[0, 1, 2])
            est.partial_fit(x, y)
        assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)], cls
        with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(1\) reached"):
            cls(**dict(SMALL, max_iter=1)).fit(x, y)


def test_the_estimators_run_the_one_training_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """sgd/adam keep no loop of their own: each fit or partial_fit is one Trainer.fit
    (max_iter epochs, or one), and every update one run of the Trainer's step."""
    from xbp.train.loop import Trainer

    fits: list[int] = []
    steps: list[int] = []
    real_fit, real_step = Trainer.fit, Trainer.run_step

    def fit(self, train, val, epochs):  # type: ignore[no-untyped-def]
        fits.append(epochs)
        return real_fit(self, train, val, epochs)

    def run_step(self, batch):  # type: ignore[no-untyped-def]
        steps.append(1)
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "fit", fit)
    monkeypatch.setattr(Trainer, "run_step", run_step)
    x, y = iris()
    est = MLPClassifier(**dict(SMALL, compile=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(x, y)
    est.partial_fit(x, y)
    assert fits == [5, 1] and len(steps) == 6 * 5  # 150 rows in batches of 32: 5 a epoch


@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("task", ["multiclass", "binary", "regression"])
def test_the_benchmarks_hand_written_floor_trains_scikit_learns_weights(
    library: str, task: str
) -> None:
    """``scripts/bench_sklearn.py`` times a plain loop (NumPy or torch) as the floor of
    what the same training can cost; it is a floor of *that* training only if it trains
    scikit-learn's weights."""
    import importlib.util
    import pathlib

    if library == "torch":
        pytest.importorskip("torch")
    path = pathlib.Path(__file__).parent.parent / "scripts" / "bench_sklearn.py"
    spec = importlib.util.spec_from_file_location("bench_sklearn", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    if task == "regression":
        x, y = make_regression(250, 6, noise=5.0, random_state=0)
        y = (y - y.mean()) / y.std()
        sk: type = SkRegressor
    else:
        x, y = make_classification(
            250, 6, n_informative=4, n_classes=3 if task == "multiclass" else 2, random_state=0
        )
        sk = SkClassifier
    ref = sk(hidden_layer_sizes=(100,), max_iter=4, random_state=0, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(x, y)
    hand = bench.HandMLP(task != "regression", ref.n_iter_, library).fit(x, y)
    assert _rel(hand.coefs_, ref.coefs_) < 1e-12
    assert _rel(hand.intercepts_, ref.intercepts_) < 1e-12
    assert hand.score(x, y) == pytest.approx(ref.score(x, y), abs=1e-9)
