"""
Digits: metrics and a confusion matrix
======================================

A multilayer perceptron on the 8x8 handwritten digits bundled with xbp
(1,797 images, ten classes), with scikit-learn's metrics logged during
training and a full report on held-out images: accuracy, macro F1, one-vs-rest
ROC AUC, a per-class report and the confusion matrix. xbp computes the metrics
itself, on the device, batch by batch; scikit-learn (where installed) checks
them here.
"""

import os

import matplotlib.pyplot as plt
import numpy as np

import xbp

QUICK = os.environ.get("XBP_EXAMPLES_QUICK") == "1"  # the test suite's short run

# %%
# Data and network
# ----------------
# A stratified, seeded split into training, validation and test rows. The
# network standardises its own input (a ``Standardize`` layer adapted from
# the training rows), so it is given raw pixels.

x, y = xbp.data.load_digits()
(x_train, y_train), (x_val, y_val), (x_test, y_test) = xbp.data.train_val_test_split(x, y, seed=0)
print("rows: train", len(x_train), " validation", len(x_val), " test", len(x_test))
net = xbp.mlp([64, 128, 10], activation="relu", loss="cross_entropy", standardize=True, seed=0)
print(net.summary())

# %%
# Training with metrics
# ---------------------
# ``metrics=`` adds a column per metric to the history, for the training rows
# and (``val_`` prefix) the validation rows.

history = xbp.fit(
    net,
    x_train,
    y_train,
    epochs=5 if QUICK else 30,
    batch_size=32,
    optimizer="adam",
    learning_rate=1e-3,
    validation_data=(x_val, y_val),
    metrics=["f1_macro", "roc_auc_ovr"],
    seed=0,
    progress=False,
)
print("columns:", list(history.keys()))
print(
    f"last epoch: val accuracy {history['val_accuracy'][-1]:.4f}, "
    f"val F1 (macro) {history['val_f1_macro'][-1]:.4f}, "
    f"val ROC AUC (ovr) {history['val_roc_auc_ovr'][-1]:.4f}"
)

fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
ax[0].plot(history["epoch"], history["loss"], label="training")
ax[0].plot(history["epoch"], history["val_loss"], label="validation")
ax[0].set_ylabel("cross-entropy")
ax[1].plot(history["epoch"], history["f1_macro"], label="training")
ax[1].plot(history["epoch"], history["val_f1_macro"], label="validation")
ax[1].set_ylabel("F1 (macro)")
for a in ax:
    a.set_xlabel("epoch")
    a.legend()
fig.tight_layout()

# %%
# The test report
# ---------------
# ``xbp.evaluate`` returns the loss, the accuracy and every metric asked for;
# ``xbp.metrics.classification_report`` lays the confusion matrix out as
# scikit-learn's report does (the table ``xbp evaluate`` prints).

report = xbp.evaluate(net, x_test, y_test, metrics=["f1_macro", "roc_auc_ovr", "confusion_matrix"])
confusion = np.array(report["confusion_matrix"])
print(
    f"test: loss {report['loss']:.4f}  accuracy {report['accuracy']:.4f}  "
    f"F1 (macro) {report['f1_macro']:.4f}  ROC AUC (ovr) {report['roc_auc_ovr']:.4f}"
)
print(xbp.metrics.classification_report(confusion))

# %%
# The same numbers from scikit-learn, computed from the predictions:

try:
    from sklearn import metrics as skm
except ImportError:
    print("scikit-learn is not installed: the comparison is skipped")
else:
    labels, proba = net.predict_classes(x_test), net.predict_proba(x_test)
    checks = {
        "accuracy": (report["accuracy"], skm.accuracy_score(y_test, labels)),
        "f1_macro": (report["f1_macro"], skm.f1_score(y_test, labels, average="macro")),
        "roc_auc_ovr": (report["roc_auc_ovr"], skm.roc_auc_score(y_test, proba, multi_class="ovr")),
    }
    for name, (ours, theirs) in checks.items():
        print(f"{name:12s} xbp {ours:.12f}  scikit-learn {theirs:.12f}")
        assert abs(ours - theirs) < 1e-9
    assert (confusion == skm.confusion_matrix(y_test, labels, labels=range(10))).all()

# %%
# The confusion matrix: rows are the true digits, columns the predicted ones.

fig, ax = plt.subplots(figsize=(5, 4.5))
image = ax.imshow(confusion, cmap="Blues")
for i in range(10):
    for j in range(10):
        if confusion[i, j]:
            ax.text(
                j,
                i,
                int(confusion[i, j]),
                ha="center",
                va="center",
                color="white" if confusion[i, j] > confusion.max() / 2 else "black",
            )
ax.set_xticks(range(10))
ax.set_yticks(range(10))
ax.set_xlabel("predicted digit")
ax.set_ylabel("true digit")
ax.set_title(f"test accuracy {report['accuracy']:.3f}")
fig.colorbar(image)
fig.tight_layout()
plt.show()
