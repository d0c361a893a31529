"""
The seed's network on XOR, written out
======================================

The network of the backpropagation literature: two inputs, three sigmoid
hidden units, one sigmoid output, the quadratic cost and plain gradient
descent, learning XOR. First one training step for one sample, every number
of it: each neuron's output ``A`` and error ``delta = dC/dZ`` drawn on the
network, next to the text ``xbp explain`` prints. Then the loss falling as the
same network trains.

The equations are those of the math page (``docs/math.md``):
``Z_l = A_{l-1} W_l + b_l``, ``A_l = phi(Z_l)``,
``delta_L = (A_L - y) * phi'(Z_L) / n``,
``delta_l = (delta_{l+1} W_{l+1}^T) * phi'(Z_l)``.
"""

import os

import matplotlib.pyplot as plt
import numpy as np

import xbp

QUICK = os.environ.get("XBP_EXAMPLES_QUICK") == "1"  # the test suite's short run

# %%
# The network and one sample
# --------------------------
# ``xbp.mlp`` keeps the literature's defaults: sigmoid hidden units and the
# quadratic cost; ``output="sigmoid"`` asks for the classic sigmoid output.
# The seed fixes the initial weights (the same on every backend).

x, y = xbp.data.make_xor()  # the four corners of the unit square, y = x1 XOR x2
net = xbp.mlp([2, 3, 1], output="sigmoid", seed=0)
print(net)
print("x =", x.tolist(), " y =", y.ravel().tolist())

# %%
# ``xbp.explain`` writes out one SGD step for one sample (here sample 2,
# ``x = (1, 0)``, ``y = 1``) with every intermediate number, exactly what
# ``xbp explain --sample 2`` prints; ``check=True`` adds central finite
# differences.

sample = 2
print(xbp.explain(net, x[sample : sample + 1], y[sample : sample + 1], check=True))

# %%
# The same numbers on the diagram
# -------------------------------
# ``net.layer_outputs`` gives every layer's ``(Z_l, A_l)``; for one sample the
# gradient of each bias is the neuron's error itself (``dC/db_l = delta_l``),
# so ``net.backprop`` gives the deltas.


def outputs_and_deltas(net, xs, ys):
    """Each layer's outputs A_l (inputs first) and errors delta_l, for one sample."""
    outputs = [xs[0]] + [np.asarray(a)[0] for _, a in net.layer_outputs(xs)]
    _, grads = net.backprop(xs, ys)
    deltas = [None] + [np.asarray(g["b"]) for g in grads]
    return outputs, deltas


def draw(ax, net, outputs, deltas, title):
    """Neurons as circles (output A and error delta written in), weights as lines."""
    widths = [len(a) for a in outputs]
    pos = [[(1.6 * layer, (w - 1) / 2 - i) for i in range(w)] for layer, w in enumerate(widths)]
    params = net.host_params()
    for l, p in enumerate(params):
        big = np.abs(p["W"]).max()
        for i, (x0, y0) in enumerate(pos[l]):
            for j, (x1, y1) in enumerate(pos[l + 1]):
                w = p["W"][i, j]
                ax.plot(
                    [x0, x1],
                    [y0, y1],
                    color="tab:red" if w < 0 else "tab:blue",
                    lw=0.5 + 3 * abs(w) / big,
                    alpha=0.6,
                    zorder=1,
                )
                ax.text(  # near the receiving neuron, where the labels do not collide
                    x0 + 0.72 * (x1 - x0),
                    y0 + 0.72 * (y1 - y0),
                    f"{w:.2f}",
                    fontsize=7,
                    ha="center",
                    va="center",
                    backgroundcolor="white",
                    zorder=2,
                )
    for l, column in enumerate(pos):
        for i, (cx, cy) in enumerate(column):
            ax.add_patch(plt.Circle((cx, cy), 0.3, color="0.92", ec="k", zorder=3))
            text = f"A={outputs[l][i]:.3f}"
            if deltas[l] is not None:
                text += f"\nδ={deltas[l][i]:.2e}"
            ax.text(cx, cy, text, ha="center", va="center", fontsize=7, zorder=4)
    ax.set_xlim(-0.4, 1.6 * (len(widths) - 1) + 0.4)
    ax.set_ylim(-1.5, 1.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=10)


xs, ys = x[sample : sample + 1], y[sample : sample + 1]
before = outputs_and_deltas(net, xs, ys)
for l, (a, d) in enumerate(zip(*before)):
    print(f"layer {l}: A = {np.round(a, 6).tolist()}" + (f"  delta = {d.tolist()}" if l else ""))

# %%
# Training
# --------
# Full-batch gradient descent (all four samples per step, ``batch_size=4``)
# with learning rate 2: the cost falls from 0.131 to about 1e-3 in 2,000
# steps, and the outputs approach 0, 1, 1, 0.

epochs = 200 if QUICK else 2000
history = xbp.fit(
    net, x, y, epochs=epochs, batch_size=4, learning_rate=2.0, shuffle=False, progress=False
)
print(f"loss: first epoch {history['loss'][0]:.6f}, last {history['loss'][-1]:.6f}")
print("outputs after training:", np.round(net.predict(x).ravel(), 4).tolist())
after = outputs_and_deltas(net, xs, ys)

fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
draw(axes[0], xbp.mlp([2, 3, 1], output="sigmoid", seed=0), *before, "sample (1, 0), before")
draw(axes[1], net, *after, f"the same sample after {epochs} steps")
fig.tight_layout()

# %%
# The cost per epoch (log scale): a plateau near 0.125, the cost of
# answering 0.5 for every sample, then a steep fall once the hidden units
# have found features that separate the corners.

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogy(history["epoch"], history["loss"])
ax.set_xlabel("epoch (one gradient step on all four samples)")
ax.set_ylabel("quadratic cost C")
ax.set_title("XOR: 2-3-1 sigmoid network, SGD, learning rate 2")
fig.tight_layout()
plt.show()
