"""
One code on every backend
=========================

xbp's backpropagation is written once against the Python array API standard.
This example runs the same network on every array library installed here
(NumPy, array-api-strict, PyTorch, JAX; CuPy where a CUDA GPU works), checks
that the gradients agree with NumPy's to rounding, trains each copy for a few
epochs from the same seed and compares the weights, and times one
forward-and-backward pass on each.
"""

import os
import time

import matplotlib.pyplot as plt
import numpy as np

import xbp

QUICK = os.environ.get("XBP_EXAMPLES_QUICK") == "1"  # the test suite's short run

# %%
# What is installed
# -----------------
# ``xbp.available_backends()`` lists every library xbp knows, whether it can
# run here and, if not, why. A missing library is simply skipped below.

for info in xbp.available_backends():
    state = "usable" if info.usable else "not usable"
    print(f"{info.name:17s} {state:11s} {info.devices} {info.reason or ''}")

# %%
# Two settings made once for the whole process, both outside xbp's control:
# JAX computes in float32 unless 64-bit mode is on (xbp refuses a float64
# network rather than silently losing precision), and PyTorch on the CPU
# starts one thread per core, which on a small, busy machine makes small
# matrix products many times slower (the ``xbp`` command uses one thread).

usable = [info for info in xbp.available_backends() if info.usable]
names = [info.name for info in usable]
if "jax" in names:
    import jax

    jax.config.update("jax_enable_x64", True)
if "torch" in names:
    import torch

    torch.set_num_threads(1)
for wanted in ("numpy", "array_api_strict", "torch", "jax"):
    if wanted not in names:
        print(f"{wanted} is not installed or not usable here: skipped")

# %%
# Gradients
# ---------
# One network, drawn once from seed 0 (on the host, so its weights are the
# same bits on every backend), then copied with ``net.to(backend)``. Each copy
# computes the cost and the gradients of 256 digits; the error is measured as
# in xbp's tests, ``max|g - g_numpy| / max|g_numpy|`` (float64).

x, y = xbp.data.load_digits()
x = x / 16.0  # pixel values 0..16 scaled to 0..1
xb, yb = x[:256], y[:256]
net = xbp.mlp([64, 128, 10], activation="tanh", loss="cross_entropy", dtype="float64", seed=0)
_, reference = net.backprop(xb, yb)
scale = max(float(np.max(np.abs(g["W"]))) for g in reference)

copies = {}
for info in usable:
    device = 0 if info.name == "cupy" else None
    copy = net.to(info.name, device=device)
    loss, grads = copy.backprop(xb, yb)
    worst = max(
        float(np.max(np.abs(np.asarray(copy.backend.to_host(g[k])) - r[k])))
        for g, r in zip(grads, reference)
        for k in ("W", "b")
    )
    copies[info.name] = copy
    print(
        f"{info.name:17s} cost {float(copy.backend.to_host(loss)):.15f}  "
        f"max gradient difference {worst / scale:.1e}"
    )

# %%
# Training
# --------
# The same seed also fixes the shuffling, so every backend takes the same
# batches and, in float64, ends with the same weights (to about 1e-12).

epochs = 1 if QUICK else 3
weights, fit_seconds = {}, {}
for name in names:
    run = net.to(name, device=0 if name == "cupy" else None)
    start = time.perf_counter()
    xbp.fit(
        run,
        x,
        y,
        epochs=epochs,
        batch_size=32,
        optimizer="adam",
        learning_rate=1e-3,
        seed=0,
        progress=False,
    )
    fit_seconds[name] = time.perf_counter() - start
    weights[name] = run.host_params()
for name in names:
    diff = max(
        float(np.max(np.abs(p["W"] - q["W"]))) for p, q in zip(weights[name], weights["numpy"])
    )
    print(
        f"{name:17s} {epochs} epochs in {fit_seconds[name]:.2f} s; "
        f"weights differ from NumPy's by at most {diff:.1e}"
    )

# %%
# Timing one step
# ---------------
# ``value_and_grad`` is the backprop kernel itself (inputs already on the
# device). Each backend's median of repeated calls; the host read of the cost
# waits for asynchronous libraries (JAX, CUDA) to finish. These are single
# runs on whatever machine built this page: see ``xbp bench`` for the
# benchmark.

repeats = 5 if QUICK else 30
median_ms = {}
for name, copy in copies.items():
    xd, yd = copy.check_inputs(xb), copy.check_targets(yb, len(xb))
    times = []
    for _ in range(repeats + 2):
        start = time.perf_counter()
        cost, _, _ = copy.value_and_grad(xd, yd)
        float(copy.backend.to_host(cost))
        times.append(time.perf_counter() - start)
    median_ms[name] = 1e3 * float(np.median(times[2:]))  # the first calls warm up
    print(f"{name:17s} value_and_grad (64-128-10, batch 256, float64): {median_ms[name]:.2f} ms")

fig, ax = plt.subplots(figsize=(6, 3))
ax.barh(list(median_ms), list(median_ms.values()), color="tab:blue")
ax.set_xlabel("ms per forward + backward pass (median)")
ax.set_title("the same xbp code on each array library")
fig.tight_layout()
plt.show()
