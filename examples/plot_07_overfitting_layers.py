"""
Dropout and normalisation layers on an overfitting problem
==========================================================

A wide network trained on only 100 digits memorises them: the training loss
goes to zero while the validation loss turns back up. This example trains
the same network four ways — plain, with ``Dropout``, with ``LayerNorm`` and
with ``BatchNorm`` after each hidden layer — from the same seed and batches,
and draws the training and validation curves of each.
"""

import os

import matplotlib.pyplot as plt
import numpy as np

import xbp

QUICK = os.environ.get("XBP_EXAMPLES_QUICK") == "1"  # the test suite's short run

# %%
# A small training set
# --------------------
# 100 training digits (10 of each), 600 other digits for validation, pixel
# values scaled to [0, 1].

x, y = xbp.data.load_digits()
x = x / 16.0
rng = np.random.default_rng(0)
train = np.concatenate([rng.choice(np.flatnonzero(y == k), 10, replace=False) for k in range(10)])
val = rng.choice(np.setdiff1d(np.arange(len(x)), train), 600, replace=False)
x_train, y_train, x_val, y_val = x[train], y[train], x[val], y[val]
print("training rows", len(train), " validation rows", len(val))

# %%
# Four networks
# -------------
# The same widths (64-256-256-10, ReLU); the layers between the ``Dense``
# layers differ. ``Dropout(0.5)`` zeroes half of the hidden values in each
# training step (never in evaluation); ``LayerNorm`` normalises each row,
# ``BatchNorm`` each feature over the batch (its running statistics in
# evaluation), both with a learnable scale and shift.


def network(between):
    """64-256-256-10 with the layers that ``between(width)`` returns after each hidden one."""
    layers = [
        xbp.nn.Dense(64, 256, "relu"),
        *between(256),
        xbp.nn.Dense(256, 256, "relu"),
        *between(256),
        xbp.nn.Dense(256, 10, "softmax"),
    ]
    return xbp.Network(layers, loss="cross_entropy", seed=0)


variants = {
    "plain": lambda n: [],
    "Dropout(0.5)": lambda n: [xbp.nn.Dropout(0.5)],
    "LayerNorm": lambda n: [xbp.nn.LayerNorm(n)],
    "BatchNorm": lambda n: [xbp.nn.BatchNorm(n)],
}
epochs = 10 if QUICK else 150
histories = {}
for name, between in variants.items():
    net = network(between)
    histories[name] = xbp.fit(
        net,
        x_train,
        y_train,
        epochs=epochs,
        batch_size=20,
        optimizer="adam",
        learning_rate=3e-3,
        validation_data=(x_val, y_val),
        seed=0,
        progress=False,
    )
    h = histories[name]
    best = int(np.argmin(h["val_loss"]))
    print(
        f"{name:13s} final: train loss {h['loss'][-1]:.4f}, val loss {h['val_loss'][-1]:.4f}, "
        f"val accuracy {h['val_accuracy'][-1]:.3f}; best val loss {h['val_loss'][best]:.4f} "
        f"at epoch {best + 1}"
    )

# %%
# What the curves show
# --------------------
# Solid lines are the training loss (the running average over each epoch's
# steps, with dropout active), dashed lines the validation loss. The plain
# network drives its training loss towards zero while its validation loss
# reaches its minimum early and then climbs: it memorises the 100 digits.
# Dropout keeps the training loss from collapsing and the validation loss
# from climbing as far; the normalisation layers fit the training set just
# as completely, but from a better-conditioned start, and their validation
# loss stays lower here (the numbers printed above).
#
# BatchNorm's validation curve lags far behind its training curve: evaluation
# uses the running statistics, which move towards each batch's by
# ``1 - momentum`` per step. With Keras' default ``momentum=0.99`` and only 5
# steps per epoch, the initial statistics (mean 0, variance 1) still weigh
# ``0.99**250 = 8%`` after 50 epochs. On a small data set, a lower momentum
# (``BatchNorm(n, momentum=0.9)``) lets evaluation catch up ten times sooner.

fig, ax = plt.subplots(1, 2, figsize=(11, 4.5))
for (name, h), color in zip(histories.items(), ["k", "tab:blue", "tab:orange", "tab:green"]):
    ax[0].plot(h["epoch"], h["loss"], color=color, label=f"{name}, training")
    ax[0].plot(h["epoch"], h["val_loss"], color=color, ls="--", label=f"{name}, validation")
    ax[1].plot(h["epoch"], h["val_accuracy"], color=color, label=name)
ax[0].set_yscale("log")
ax[0].set_ylabel("cross-entropy")
ax[0].legend(fontsize=7, ncol=2)
ax[1].set_ylabel("validation accuracy")
ax[1].legend(fontsize=8)
for a in ax:
    a.set_xlabel("epoch (5 steps of 20 digits)")
fig.tight_layout()
plt.show()
