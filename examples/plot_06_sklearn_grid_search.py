"""
The scikit-learn drop-in in a grid search
=========================================

``xbp.sklearn.MLPClassifier`` takes scikit-learn's parameters and, with the
same ``random_state``, draws the same initial weights, shuffles the same
batches and applies the same update rules as
``sklearn.neural_network.MLPClassifier``. So a grid search over either finds
the same scores and the same best model. This example runs one
``GridSearchCV`` over a pipeline with each and compares them number by number.
"""

import os
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn import neural_network
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import xbp
import xbp.sklearn

QUICK = os.environ.get("XBP_EXAMPLES_QUICK") == "1"  # the test suite's short run

# %%
# The search
# ----------
# Digits, standardised inside the pipeline; a grid over the hidden width and
# the L2 penalty ``alpha``, 3-fold cross-validation. ``max_iter`` is kept short
# for this page, so both libraries warn that the optimizer has not converged;
# the warning is silenced here.

x, y = xbp.data.load_digits()
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
grid = {
    "mlpclassifier__hidden_layer_sizes": [(32,)] if QUICK else [(16,), (64,)],
    "mlpclassifier__alpha": [1e-4, 1e-1],
}
max_iter = 3 if QUICK else 30


def search(estimator_class):
    pipeline = make_pipeline(StandardScaler(), estimator_class(max_iter=max_iter, random_state=0))
    searcher = GridSearchCV(pipeline, grid, cv=3)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        searcher.fit(x_train, y_train)
    return searcher, time.perf_counter() - start


ours, our_seconds = search(xbp.sklearn.MLPClassifier)
theirs, their_seconds = search(neural_network.MLPClassifier)
print(
    f"xbp.sklearn:  best {ours.best_params_}  cv score {ours.best_score_:.6f}  "
    f"({our_seconds:.1f} s)"
)
print(
    f"scikit-learn: best {theirs.best_params_}  cv score {theirs.best_score_:.6f}  "
    f"({their_seconds:.1f} s)"
)

# %%
# Identical, number by number
# ---------------------------
# Every cross-validation score, the choice of the best parameters, the refit
# model's weights (the largest difference, relative to the largest weight),
# its loss curve and its test predictions.

scores_ours = ours.cv_results_["mean_test_score"]
scores_theirs = theirs.cv_results_["mean_test_score"]
print("mean cv scores, xbp:         ", np.round(scores_ours, 6).tolist())
print("mean cv scores, scikit-learn:", np.round(scores_theirs, 6).tolist())
assert np.array_equal(scores_ours, scores_theirs)
assert ours.best_params_ == theirs.best_params_

best_ours = ours.best_estimator_[-1]
best_theirs = theirs.best_estimator_[-1]
weights = list(
    zip(best_ours.coefs_ + best_ours.intercepts_, best_theirs.coefs_ + best_theirs.intercepts_)
)
largest = max(np.abs(b).max() for _, b in weights)
difference = max(np.abs(a - b).max() for a, b in weights) / largest
curve = np.max(np.abs(np.subtract(best_ours.loss_curve_, best_theirs.loss_curve_)))
print(
    f"refit model: max weight difference {difference:.1e} (relative), "
    f"max loss-curve difference {curve:.1e}, n_iter_ {best_ours.n_iter_} and "
    f"{best_theirs.n_iter_}"
)
assert difference < 1e-10
same = np.mean(ours.predict(x_test) == theirs.predict(x_test))
print(
    f"test accuracy: xbp {ours.score(x_test, y_test):.4f}, "
    f"scikit-learn {theirs.score(x_test, y_test):.4f}; same predictions on {same:.0%}"
)

# %%
# The two loss curves of the refit model lie on top of each other.

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(best_theirs.loss_curve_, lw=4, alpha=0.4, label="scikit-learn")
ax.plot(best_ours.loss_curve_, ls="--", label="xbp.sklearn")
ax.set_xlabel("epoch")
ax.set_ylabel("loss_ (log-loss + L2 term)")
ax.set_title(f"refit with {ours.best_params_}", fontsize=8)
ax.legend()
fig.tight_layout()
plt.show()
