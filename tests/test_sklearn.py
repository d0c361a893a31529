"""xbp.sklearn against scikit-learn's own estimator checks and its tools."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

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
    assert clf.n_iter_ == 30 and clf.out_activation_ == "logistic"
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
