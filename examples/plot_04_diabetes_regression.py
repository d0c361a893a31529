"""
Regression on the diabetes data, against a linear fit
=====================================================

scikit-learn's diabetes data: ten measurements of 442 patients (age, sex,
body mass index, blood pressure, six blood serum values) and a measure of
disease progression one year later. A small network is trained on the raw
values (it standardises its own input) with early stopping on validation
rows, and compared on held-out rows with ordinary least squares
(``numpy.linalg.lstsq``) fitted to the same training rows. This data is
known to be nearly linear: the point is an honest baseline, not a win.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_diabetes

import xbp

QUICK = os.environ.get("XBP_EXAMPLES_QUICK") == "1"  # the test suite's short run

# %%
# Data
# ----
# ``scaled=False`` gives the original units (scikit-learn ships this data;
# nothing is downloaded). ``xbp.infer_targets`` confirms what the target is.

x, y = load_diabetes(return_X_y=True, scaled=False)
spec = xbp.infer_targets(y)
print(f"task {spec.task}, {spec.n_out} output, loss {spec.loss}")
(x_train, y_train), (x_val, y_val), (x_test, y_test) = xbp.data.train_val_test_split(x, y, seed=0)
print("rows: train", len(x_train), " validation", len(x_val), " test", len(x_test))


def r2(target, prediction):
    """The coefficient of determination, 1 - SS_res / SS_tot."""
    return 1 - np.sum((target - prediction) ** 2) / np.sum((target - target.mean()) ** 2)


# %%
# The linear baseline
# -------------------
# Least squares with an intercept column, on the training rows.

design = np.column_stack([x_train, np.ones(len(x_train))])
coef, *_ = np.linalg.lstsq(design, y_train, rcond=None)
linear_test = np.column_stack([x_test, np.ones(len(x_test))]) @ coef
print(f"linear fit: test R² {r2(y_test, linear_test):.4f}")

# %%
# The network
# -----------
# One hidden layer of 8 ReLU units, the quadratic loss with an identity output
# (``mlp``'s default for ``loss="quadratic"``), Adam, and early stopping that
# keeps the epoch with the best validation loss. The output bias starts at
# the training targets' mean (``output_bias_at_mean``, what ``xbp train`` does
# for a new regression network), so training learns the targets' variation
# rather than their offset of about 150.

seeds = [0] if QUICK else [0, 1, 2, 3, 4]
scores, nets, histories = [], [], []
for seed in seeds:
    net = xbp.mlp([10, 8, 1], activation="relu", loss="quadratic", standardize=True, seed=seed)
    xbp.nn.init.output_bias_at_mean(net, y_train)
    history = xbp.fit(
        net,
        x_train,
        y_train,
        epochs=20 if QUICK else 300,
        batch_size=32,
        optimizer="adam",
        learning_rate=1e-2,
        validation_data=(x_val, y_val),
        seed=seed,
        progress=False,
        callbacks=[xbp.EarlyStopping(patience=30)],
    )
    report = xbp.evaluate(net, x_test, y_test, metrics=["r2", "rmse", "mae"])
    scores.append(report["r2"])
    nets.append(net)
    histories.append(history)
    print(f"seed {seed}: {len(history)} epochs, test {xbp.metrics.regression_report(report)}")
print(
    f"network: test R² {np.mean(scores):.4f} on average over {len(seeds)} seed(s), "
    f"linear fit {r2(y_test, linear_test):.4f}"
)

# %%
# xbp's ``r2`` metric is the same number as the formula above:

network_test = nets[0].predict(x_test).ravel()
assert abs(r2(y_test, network_test) - scores[0]) < 1e-9

# %%
# Both models explain about half of the variance of the held-out rows and
# the network does not beat the straight line here: with ten features and 310
# rows there is little non-linear structure to find. Predictions against the
# truth on the test rows, and the first seed's learning curves (the
# quadratic cost ``C = 1/(2n) sum (y - a)^2``).

fig, ax = plt.subplots(1, 2, figsize=(10, 4))
lims = [y.min(), y.max()]
ax[0].plot(lims, lims, color="0.6", lw=1)
ax[0].scatter(y_test, linear_test, s=12, label=f"linear (R² {r2(y_test, linear_test):.3f})")
ax[0].scatter(y_test, network_test, s=12, label=f"network (R² {scores[0]:.3f})")
ax[0].set_xlabel("true progression")
ax[0].set_ylabel("predicted")
ax[0].legend()
ax[1].plot(histories[0]["epoch"], histories[0]["loss"], label="training")
ax[1].plot(histories[0]["epoch"], histories[0]["val_loss"], label="validation")
ax[1].set_yscale("log")
ax[1].set_xlabel("epoch")
ax[1].set_ylabel("quadratic cost")
ax[1].legend()
fig.tight_layout()
plt.show()
