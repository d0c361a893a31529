"""
Streaming a memory map larger than memory
=========================================

A data set bigger than the machine's memory cannot be loaded and then
trained on; it can be trained on in place. ``xbp.fit`` given a memory map
(``np.load(path, mmap_mode="r")``, ``xbp.data.load_npz(path, mmap=True)``,
``xbp.data.load_mnist(directory, mmap=True)``) streams it: each batch's rows
are read from the file, checked and copied to the device by a background
thread while the previous batch computes. Only a few batches are in memory
at a time, and the weights are the same as if the whole array had been in
memory (the same seeded shuffle, bit for bit in float64 on NumPy).

The full-size case is, say, a 40 GB float32 file on a machine with 16 GB:
it trains exactly like the small file below, with a peak memory of a few
hundred megabytes that does not depend on the file's size. To build in a few
seconds this page uses a 200 MB file and measures that the training
process's memory stays far below it, in a separate process so that nothing
else this Python process did counts.
"""

import os
import subprocess
import sys
import tempfile
import time
import tracemalloc

import matplotlib.pyplot as plt
import numpy as np

import xbp

QUICK = os.environ.get("XBP_EXAMPLES_QUICK") == "1"  # the test suite's short run
MB = 1e6

# %%
# A file to stream
# ----------------
# 1,000 float32 features per row (an image of 1,000 pixels, say); the class
# is the largest of the first ten features. The ``.npy`` file is written a
# block at a time, so making it needs no more memory than training on it.

rows, features = (5_000 if QUICK else 50_000), 1_000
workdir = tempfile.TemporaryDirectory()  # removed at the end, or at exit after an error
x_path, y_path = (os.path.join(workdir.name, name) for name in ("x.npy", "y.npy"))
y = np.empty(rows, dtype=np.int64)
rng = np.random.default_rng(0)
with open(x_path, "wb") as f:
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, features)}
    np.lib.format.write_array_header_1_0(f, header)
    for start in range(0, rows, 5_000):
        block = rng.standard_normal((min(5_000, rows - start), features), dtype=np.float32)
        block.tofile(f)
        y[start : start + len(block)] = np.argmax(block[:, :10], axis=1)
np.save(y_path, y)
file_mb = os.path.getsize(x_path) / MB
print(f"x.npy: {rows:,} rows x {features} features, {file_mb:.0f} MB")

# %%
# Training on the memory map
# --------------------------
# ``tracemalloc`` follows every allocation NumPy and Python make in this
# process; its peak is the most memory the training allocated at once.

x = np.load(x_path, mmap_mode="r")  # nothing is read yet
net = xbp.mlp([features, 64, 10], activation="relu", loss="cross_entropy", dtype="float32", seed=0)
tracemalloc.start()
start = time.perf_counter()
history = xbp.fit(
    net,
    x,
    y,
    epochs=1,
    batch_size=256,
    optimizer="adam",
    learning_rate=3e-3,
    seed=0,
    progress=False,
)
seconds = time.perf_counter() - start
_, traced_peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(
    f"1 epoch streamed in {seconds:.1f} s; running training accuracy {history['accuracy'][-1]:.3f}"
)
print(
    f"peak memory allocated during fit (tracemalloc): {traced_peak / MB:.1f} MB "
    f"for a {file_mb:.0f} MB file"
)
accuracy = xbp.evaluate(net, x, y, batch_size=8192)["accuracy"]  # read a batch at a time
print(f"accuracy on all rows, evaluated from the map: {accuracy:.3f}")

# %%
# The whole process, streamed or loaded
# -------------------------------------
# The operating system's view: the peak resident memory (``VmHWM`` on Linux)
# of a fresh Python process that imports xbp and trains one epoch, once on
# the memory map and once on the array read into memory first
# (``np.load(path)``), which is what a file larger than memory cannot do.
# Each prints a digest of its trained weights: the two runs train the same
# network.

CHILD = """
import hashlib, sys, numpy as np, xbp
def peak_mb():  # the process's peak resident memory
    try:
        with open("/proc/self/status") as f:
            return int(next(l for l in f if l.startswith("VmHWM")).split()[1]) / 1e3
    except OSError:  # not Linux: ru_maxrss (bytes on macOS, kilobytes elsewhere)
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1e6 if sys.platform == "darwin" else peak / 1e3
x_path, y_path, mode = sys.argv[1:]
before = peak_mb()
x = np.load(x_path, mmap_mode="r") if mode == "streamed" else np.load(x_path)
net = xbp.mlp([x.shape[1], 64, 10], activation="relu", loss="cross_entropy",
              dtype="float32", seed=0)
xbp.fit(net, x, np.load(y_path), epochs=1, batch_size=256, optimizer="adam",
        learning_rate=3e-3, seed=0, progress=False)
weights = hashlib.sha256(b"".join(p["W"].tobytes() for p in net.host_params()))
print(before, peak_mb(), weights.hexdigest()[:16])
"""
peaks, digests = {}, {}
for mode in ("streamed", "loaded"):
    done = subprocess.run(
        [sys.executable, "-c", CHILD, x_path, y_path, mode],
        capture_output=True,
        text=True,
        check=True,
    )
    after_imports, peak, digests[mode] = done.stdout.split()
    after_imports, peak = float(after_imports), float(peak)
    peaks[mode] = (after_imports, peak)
    print(
        f"{mode:9s} peak resident memory {peak:6.0f} MB "
        f"({after_imports:.0f} MB after importing xbp; file {file_mb:.0f} MB)"
    )
print("the same weights, bit for bit:", digests["streamed"] == digests["loaded"], digests)
assert digests["streamed"] == digests["loaded"]
del x  # close the memory map before its file is removed
workdir.cleanup()

# %%
# The streamed run's memory is the interpreter and its libraries plus a few
# batches; the loaded run's grows with the file. For a file ten times larger,
# only the second bar would grow.

fig, ax = plt.subplots(figsize=(6, 3))
labels = ["memory map (streamed)", "read into memory"]
base = [peaks[m][0] for m in ("streamed", "loaded")]
extra = [peaks[m][1] - peaks[m][0] for m in ("streamed", "loaded")]
ax.barh(labels, base, color="0.7", label="after importing xbp")
ax.barh(labels, extra, left=base, color="tab:blue", label="added by loading and training")
ax.axvline(file_mb, color="tab:red", ls="--", label=f"file size {file_mb:.0f} MB")
ax.set_xlabel("peak resident memory of the process (MB)")
ax.set_xlim(0, 1.6 * max(file_mb, max(p[1] for p in peaks.values())))
ax.legend(fontsize=8, loc="lower right")
fig.tight_layout()
plt.show()
