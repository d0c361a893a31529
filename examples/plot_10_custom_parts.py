"""
Your own activation, loss and layer
===================================

xbp's backward pass is written out by hand, so a part of your own brings its
own derivative: an activation its ``phi'``, a loss its ``dC/dA``, a layer its
backward rule. Registered by name, they work wherever a built-in one does
(``Dense``, ``mlp``, ``fit``, saving and loading, every backend). This
example adds the GELU activation, the Huber loss and a layer with a learnable
gain per feature, checks every gradient against central finite differences
with ``xbp.tools.gradcheck``, and shows what the Huber loss buys on data with
outliers.
"""

import dataclasses
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np

import xbp

QUICK = os.environ.get("XBP_EXAMPLES_QUICK") == "1"  # the test suite's short run

# %%
# An activation: GELU
# -------------------
# ``forward(xp, z)`` and its derivative, written with the array namespace
# ``xp`` they are handed, so they run on every backend. GELU cannot be
# inverted, so its derivative is computed from ``z`` (``from_z=True``; the
# built-in activations compute it from their output).

C = (2 / np.pi) ** 0.5  # a Python float: no NumPy array enters the rule


def gelu(xp, z):  # 0.5 z (1 + tanh(c (z + 0.044715 z^3)))
    return 0.5 * z * (1 + xp.tanh(C * (z + 0.044715 * z**3)))


def gelu_prime(xp, z):
    t = xp.tanh(C * (z + 0.044715 * z**3))
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * C * (1 + 3 * 0.044715 * z * z)


xbp.register_activation("gelu", gelu, gelu_prime, from_z=True)

# %%
# A loss: Huber
# -------------
# ``value(xp, a, y)`` is each sample's (or each output's) cost, not averaged;
# ``grad(xp, a, y)`` is ``dC/dA``. Quadratic near zero, linear beyond
# ``delta``: a large residual pulls with a bounded force.

DELTA = 1.0


def huber(xp, a, y):
    r = xp.abs(a - y)
    return xp.where(r <= DELTA, 0.5 * r * r, DELTA * (r - 0.5 * DELTA))


def huber_grad(xp, a, y):
    return xp.clip(a - y, -DELTA, DELTA)


xbp.register_loss("huber", huber, huber_grad)

# %%
# A layer: a learnable gain per feature
# -------------------------------------
# A frozen dataclass subclassing ``xbp.nn.Layer`` with a ``kind`` name, its
# parameters' shapes and initial values, and the two rules side by side:
# ``forward`` returns the output and what the backward rule needs, and
# ``backward`` returns ``dC/dinput`` and the parameters' gradients.
# ``out = a * g`` gives ``dC/da = d * g`` and ``dC/dg = sum over rows of d * a``.


@xbp.register_layer
@dataclasses.dataclass(frozen=True)
class Gain(xbp.nn.Layer):
    kind = "gain"
    n: int
    n_in = property(lambda self: self.n)
    n_out = property(lambda self: self.n)

    def param_shapes(self):
        return {"g": (self.n,)}

    def init_params(self, rng, init):
        return {"g": np.ones(self.n)}

    def forward(self, ctx, p, s, a, l):
        return a * p["g"], a, None  # output, saved for backward, new state

    def backward(self, ctx, p, saved, d, need_input):
        grads = {"g": ctx.xp.sum(d * saved, axis=0)}
        return (d * p["g"] if need_input else None), grads


# %%
# Gradients checked
# -----------------
# A network that uses all three, and central finite differences of every
# weight, bias and gain against backprop (float64; the error is relative to
# the largest gradient).

rng = np.random.default_rng(0)
x = rng.uniform(-3, 3, size=(100 if QUICK else 400, 1))
y = np.sin(x) + 0.1 * rng.normal(size=x.shape)
outliers = rng.random(len(x)) < 0.1  # one sample in ten is corrupted
y[outliers] += rng.choice([-6.0, 6.0], size=(outliers.sum(), 1))


def network(loss):
    return xbp.Network(
        [
            xbp.nn.Dense(1, 32, "gelu"),
            Gain(32),
            xbp.nn.Dense(32, 32, "gelu"),
            xbp.nn.Dense(32, 1, "identity"),
        ],
        loss=loss,
        seed=0,
    )


net = network("huber")
print(net.summary())
errors = xbp.tools.gradcheck(net, x[:16], y[:16], max_checks=None)
for name, error in errors.items():
    print(f"{name:9s} max |finite difference - backprop| / max |gradient| = {error:.1e}")
assert max(errors.values()) < 1e-6

# %%
# They also run on the other backends installed (the rules receive each
# library's namespace):

_, reference = net.backprop(x[:16], y[:16])
for info in xbp.available_backends():
    if info.usable and info.name in ("torch", "array_api_strict"):
        copy = net.to(info.name)
        _, grads = copy.backprop(x[:16], y[:16])
        diff = max(
            float(np.max(np.abs(np.asarray(copy.backend.to_host(g[k])) - r[k])))
            for g, r in zip(grads, reference)
            for k in r
        )
        print(f"{info.name}: gradients equal NumPy's within {diff:.1e}")

# %%
# What Huber buys
# ---------------
# The same network trained with the quadratic loss and with Huber on the data
# with outliers. The quadratic cost lets the corrupted samples pull the fit
# towards them; Huber bounds their pull.

fits = {}
for loss in ("quadratic", "huber"):
    model = network(loss)
    xbp.fit(
        model,
        x,
        y,
        epochs=20 if QUICK else 300,
        batch_size=32,
        optimizer="adam",
        learning_rate=3e-3,
        seed=0,
        progress=False,
    )
    grid = np.linspace(-3, 3, 200).reshape(-1, 1)
    fits[loss] = (model, model.predict(grid).ravel())
    clean = ~outliers
    rmse = float(np.sqrt(np.mean((model.predict(x[clean]) - np.sin(x[clean])) ** 2)))
    print(f"{loss:9s} RMSE against sin(x) on the clean samples: {rmse:.3f}")

# %%
# Saved models store their parts by name and load wherever the same names are
# registered:

with tempfile.TemporaryDirectory() as workdir:
    path = os.path.join(workdir, "huber.npz")
    xbp.save(fits["huber"][0], path)
    again = xbp.load(path)
assert np.array_equal(again.predict(x), fits["huber"][0].predict(x))
print("reloaded:", again)

fig, ax = plt.subplots(figsize=(7, 4))
ax.scatter(x[~outliers], y[~outliers], s=6, color="0.6", label="data")
ax.scatter(x[outliers], y[outliers], s=10, color="tab:red", label="outliers")
ax.plot(grid, np.sin(grid), color="k", lw=1, label="sin(x)")
for loss, (_, curve) in fits.items():
    ax.plot(grid, curve, lw=2, label=f"fit, {loss} loss")
ax.set_ylim(-3, 3)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
