"""
Export to ONNX and run with onnxruntime
=======================================

``xbp.export_onnx`` writes a trained network, of any backend, as an ONNX
model: one ``Gemm`` and activation per ``Dense`` layer, the layers between
them in their inference form (``Standardize`` as ``Sub``/``Div`` with its
adapted statistics, ``BatchNorm`` with its running statistics, ``Dropout`` as
nothing). Any ONNX runtime can then serve it without xbp. This example
exports a digits classifier, runs it with onnxruntime and compares the
outputs with xbp's own, in float32 and in float64.
"""

import os
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
import onnx
import onnxruntime as ort

import xbp

QUICK = os.environ.get("XBP_EXAMPLES_QUICK") == "1"  # the test suite's short run

# %%
# A trained network
# -----------------
# Raw pixels in (the network standardises them itself), a hidden ``BatchNorm``
# and ``Dropout``, a softmax out.

x, y = xbp.data.load_digits()
(x_train, y_train), (x_val, y_val), (x_test, y_test) = xbp.data.train_val_test_split(x, y, seed=0)
layers = [
    xbp.nn.Standardize(64),
    xbp.nn.Dense(64, 64, "relu"),
    xbp.nn.BatchNorm(64),
    xbp.nn.Dropout(0.2),
    xbp.nn.Dense(64, 10, "softmax"),
]
net = xbp.Network(layers, loss="cross_entropy", dtype="float32", seed=0)
xbp.fit(
    net,
    x_train,
    y_train,
    epochs=3 if QUICK else 20,
    batch_size=32,
    optimizer="adam",
    learning_rate=1e-3,
    validation_data=(x_val, y_val),
    seed=0,
    progress=False,
)
print(f"xbp test accuracy: {xbp.evaluate(net, x_test, y_test)['accuracy']:.4f}")

# %%
# The ONNX graph
# --------------
# The input ``x`` has a symbolic batch dimension; the output is ``y``.

workdir = tempfile.TemporaryDirectory()  # removed at the end, or at exit after an error
path = os.path.join(workdir.name, "digits.onnx")
xbp.export_onnx(net, path)
model = onnx.load(path)
onnx.checker.check_model(model)
print("nodes:", [node.op_type for node in model.graph.node])
print("input:", model.graph.input[0].name, " output:", model.graph.output[0].name)
print("metadata:", {p.key: p.value[:60] for p in model.metadata_props})

# %%
# onnxruntime against xbp
# -----------------------
# The same test images through both; the largest difference of any
# probability, and whether every predicted class agrees.

session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
start = time.perf_counter()
onnx_probs = session.run(["y"], {"x": x_test.astype(np.float32)})[0]
onnx_ms = 1e3 * (time.perf_counter() - start)
start = time.perf_counter()
xbp_probs = net.predict(x_test)
xbp_ms = 1e3 * (time.perf_counter() - start)
diff32 = np.abs(onnx_probs - xbp_probs)
print(
    f"float32: max |onnxruntime - xbp| = {diff32.max():.1e}; same classes: "
    f"{np.array_equal(onnx_probs.argmax(1), xbp_probs.argmax(1))}"
)
print(f"{len(x_test)} images: onnxruntime {onnx_ms:.2f} ms, xbp {xbp_ms:.2f} ms (one run each)")
assert diff32.max() < 1e-5

# %%
# A float64 network exports as a float64 graph. ONNX stores a normalisation's
# ``epsilon`` as a float32, so for float64 xbp writes ``BatchNorm`` out in
# plain operators and the numbers stay exact.

net64 = net.to(dtype="float64")  # the same weights and statistics, in float64
path64 = os.path.join(workdir.name, "digits64.onnx")
xbp.export_onnx(net64, path64)
session64 = ort.InferenceSession(path64, providers=["CPUExecutionProvider"])
onnx64 = session64.run(["y"], {"x": x_test.astype(np.float64)})[0]
diff64 = np.abs(onnx64 - net64.predict(x_test))
print("float64 nodes:", [node.op_type for node in onnx.load(path64).graph.node])
print(f"float64: max |onnxruntime - xbp| = {diff64.max():.1e}")
assert diff64.max() < 1e-10
workdir.cleanup()

# %%
# The differences, image by image (the largest over the ten probabilities).

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.semilogy(diff32.max(axis=1) + 1e-18, ".", label="float32")
ax.semilogy(diff64.max(axis=1) + 1e-18, ".", label="float64")
ax.set_xlabel("test image")
ax.set_ylabel("max |onnxruntime - xbp|")
ax.legend()
fig.tight_layout()
plt.show()
