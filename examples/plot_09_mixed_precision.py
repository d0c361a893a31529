"""
Mixed precision: bfloat16 and float16 on the CPU
================================================

``precision=`` says how xbp's matrix products run. ``"exact"`` (the default)
is IEEE arithmetic in the network's dtype; ``"bf16"`` and ``"fp16"`` are
mixed precision: products and hidden activations in bfloat16 or float16,
with float32 master weights, optimizer state, output layer, softmax and
loss, and for float16 dynamic loss scaling. On the CPU they run on PyTorch
and JAX (NumPy has neither type's fast products and refuses them). This
example measures what they cost in gradient accuracy and in test accuracy,
and what a step costs in time on this machine.
"""

import os
import time

import matplotlib.pyplot as plt
import numpy as np

import xbp

QUICK = os.environ.get("XBP_EXAMPLES_QUICK") == "1"  # the test suite's short run

# %%
# Which backend
# -------------
# NumPy refuses the low-precision policies in one line, naming the
# alternatives:

try:
    xbp.mlp([64, 32, 10], loss="cross_entropy", dtype="float32", precision="bf16")
except xbp.XbpError as error:
    print(f"{type(error).__name__}: {error}")

usable = {info.name for info in xbp.available_backends() if info.usable}
backend = next((name for name in ("torch", "jax") if name in usable), None)
print("mixed precision runs here on:", backend or "nothing (install torch or jax)")
if backend == "torch":
    import torch

    torch.set_num_threads(1)  # small products on a shared CPU: see the backends example

# %%
# Gradients against float64
# -------------------------
# One batch of 256 digits through a 64-256-256-10 tanh network: the
# gradients of each policy against NumPy's float64 ones, as the norm of the
# difference over the norm of the reference, per weight matrix (the
# tolerances in ``docs/precision.md`` are measured the same way). One
# rounding to bfloat16 is ``2**-8 = 3.9e-3``, to float16 ``2**-11 = 4.9e-4``.

x, y = xbp.data.load_digits()
x = x / 16.0
(x_train, y_train), (x_val, y_val), (x_test, y_test) = xbp.data.train_val_test_split(x, y, seed=0)
sizes = [64, 256, 256, 10]
policies = ["exact", "bf16", "fp16"]
reference = xbp.mlp(sizes, activation="tanh", loss="cross_entropy", dtype="float64", seed=0)


def network(policy):
    """The float32 network on the mixed-precision backend, with ``policy``."""
    return xbp.mlp(
        sizes,
        activation="tanh",
        loss="cross_entropy",
        dtype="float32",
        seed=0,
        backend=backend,
        precision=policy,
    )


_, grads64 = reference.backprop(x_train[:256], y_train[:256])
errors = {}
if backend:
    for policy in policies:
        net = network(policy)
        _, grads = net.backprop(x_train[:256], y_train[:256])
        errors[policy] = [
            float(
                np.linalg.norm(np.asarray(net.backend.to_host(g["W"]), dtype=np.float64) - r["W"])
                / np.linalg.norm(r["W"])
            )
            for g, r in zip(grads, grads64)
        ]
        print(
            f"{policy:6s} relative gradient error per layer: "
            + "  ".join(f"{e:.1e}" for e in errors[policy])
        )

# %%
# Training
# --------
# The same initial weights and batches for each policy (seed 0), Adam, then
# the test accuracy and the median time of one training step. ``fp16`` adds
# two columns to the history: the loss scale and the steps skipped because
# float16 overflowed.

results = {}
if backend:
    for policy in policies:
        net = network(policy)
        history = xbp.fit(
            net,
            x_train,
            y_train,
            epochs=2 if QUICK else 15,
            batch_size=32,
            optimizer="adam",
            learning_rate=1e-3,
            validation_data=(x_val, y_val),
            seed=0,
            progress=False,
        )
        accuracy = xbp.evaluate(net, x_test, y_test)["accuracy"]
        # time single steps on a copy (a step changes the weights it is timed on)
        timed = net.to(backend)
        trainer = xbp.train.Trainer(timed, xbp.TrainOptions(optimizer="adam", learning_rate=1e-3))
        xb, yb = timed.check_inputs(x_train[:32]), timed.check_targets(y_train[:32], 32)
        times = []
        for _ in range(5 if QUICK else 30):
            start = time.perf_counter()
            loss, _, _ = trainer.train_step(xb, yb)
            float(timed.backend.to_host(loss))
            times.append(time.perf_counter() - start)
        results[policy] = (history, accuracy, 1e3 * float(np.median(times)))
        extra = ""
        if "skipped_steps" in history:
            extra = (
                f"; loss scale {history['loss_scale'][-1]:g}, "
                f"{int(sum(history['skipped_steps']))} steps skipped"
            )
        print(f"{policy:6s} test accuracy {accuracy:.4f}; step {results[policy][2]:.2f} ms{extra}")

# %%
# On this page's machine the low-precision policies cost little or no
# accuracy. They are not faster on a CPU without bfloat16/float16 matrix
# instructions: the casts are extra work and the products are emulated
# (``fp16`` also reads one number back per step, to decide whether to skip
# it, where the other policies read once per epoch). On
# GPUs with tensor cores (and CPUs with AMX or AVX512-BF16) the products are
# where the time goes, and there ``bf16`` pays; ``docs/precision.md`` says
# which policy to choose on which GPU.

if results:
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for policy, (history, accuracy, _) in results.items():
        ax[0].plot(
            history["epoch"], history["val_accuracy"], label=f"{policy} (test {accuracy:.3f})"
        )
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("validation accuracy")
    ax[0].legend()
    ax[1].bar(list(results), [r[2] for r in results.values()], color="tab:blue")
    ax[1].set_ylabel(f"ms per training step ({backend}, CPU)")
    fig.tight_layout()
    plt.show()
