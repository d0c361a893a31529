"""Side-by-side step-time benchmark (``xbp bench`` / ``scripts/bench.py``).

For each case it times, in one process and interleaved round by round so
that machine noise hits every contender alike, the median of one mini-batch
step (forward + backward + SGD update) of:

* xbp on every usable backend (numpy, torch, jax; cupy and torch-cuda on a GPU),
* a plain hand-written NumPy step (the reference for abstraction overhead),
* "GEMM only": the step's matrix products alone on the same backend (the floor),
* PyTorch autograd + ``torch.optim.SGD`` (when installed),
* scikit-learn ``MLPClassifier.partial_fit`` on one batch (when installed),

and, without the update, the public checked ``net.backprop(x, y)`` (NumPy, and torch
on the CPU) against the same forward and backward pass by hand (NumPy) and by
PyTorch autograd.

``--memory`` also measures the peak resident memory of a full ``fit`` on the
large case, for xbp and for torch, each in a fresh process.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

CASES: dict[str, dict[str, Any]] = {
    "tiny": {
        "sizes": [2, 4, 1],
        "batch": 4,
        "dtype": "float64",
        "act": "sigmoid",
        "out": "sigmoid",
        "loss": "quadratic",
        "repeat": 2000,
    },
    "mid": {
        "sizes": [784, 512, 512, 10],
        "batch": 256,
        "dtype": "float32",
        "act": "sigmoid",
        "out": "softmax",
        "loss": "cross_entropy",
        "repeat": 60,
    },
    "large": {
        "sizes": [784, 4096, 4096, 10],
        "batch": 1024,
        "dtype": "float32",
        "act": "relu",
        "out": "softmax",
        "loss": "cross_entropy",
        "repeat": 7,
    },
    # GPU sizes (ci/gpu.sh): batch 4096, 4096-wide layers
    "gpu-large": {
        "sizes": [784, 4096, 4096, 10],
        "batch": 4096,
        "dtype": "float32",
        "act": "relu",
        "out": "softmax",
        "loss": "cross_entropy",
        "repeat": 30,
    },
}
LR = 0.01
#: the libraries ``--backends`` may name (xbp on each; the reference contenders always run)
BENCH_BACKENDS = ("numpy", "torch", "jax", "cupy")


@dataclass
class Contender:
    name: str
    step: Callable[[], Any]
    sync: Callable[[], None]
    steps: int = 1  # training steps per call of ``step`` (a compiled epoch runs several)


#: training steps per call for the compiled contenders (one epoch of this many batches)
COMPILED_STEPS = 8


def case_data(case: dict[str, Any], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(case["batch"], case["sizes"][0])).astype(case["dtype"])
    k = case["sizes"][-1]
    if case["loss"] == "cross_entropy":
        y = np.eye(k, dtype=case["dtype"])[rng.integers(0, k, case["batch"])]
    else:
        y = (rng.random((case["batch"], k)) > 0.5).astype(case["dtype"])
    return x, y


def _sync(net: Any) -> Callable[[], None]:
    """Wait until the network's last update is computed.

    Backends with immutable arrays run asynchronously (JAX dispatches and
    returns), and their device has no global wait: reading one updated value
    waits for the computation that produced all of them."""
    if net.backend.mutable:
        return net.backend.sync  # type: ignore[no-any-return]

    def wait() -> None:
        float(net.xp.sum(net.params[-1]["b"]))

    return wait


def _case_network(case: dict[str, Any], backend: str, device: Any) -> Any:
    """The case's network on ``backend``/``device``, seed 0."""
    import xbp

    return xbp.mlp(
        case["sizes"],
        activation=case["act"],
        output=case["out"],
        loss=case["loss"],
        backend=backend,
        device=device,
        dtype=case["dtype"],
        seed=0,
    )


def _trainer(case: dict[str, Any], backend: str, device: Any, compile: bool) -> Any:
    """A Trainer of the case's network (seed 0) with SGD, no shuffling."""
    import xbp

    net = _case_network(case, backend, device)
    options = xbp.TrainOptions(
        optimizer=xbp.optim.sgd(LR),
        batch_size=case["batch"],
        shuffle=False,
        max_retries=0,
        compile=compile,
    )
    return xbp.train.Trainer(net, options)


def xbp_contender(case: dict[str, Any], backend: str, device: Any = None) -> Contender:
    trainer = _trainer(case, backend, device, compile=False)
    net = trainer.net
    x, y = case_data(case)
    xd, yd = net.check_inputs(x), net.check_targets(y, x.shape[0])
    n = x.shape[0]
    label = backend if device is None else f"{backend}-{device}"
    return Contender(f"xbp {label}", lambda: trainer.train_step(xd, yd, n), _sync(net))


def xbp_compiled_contender(case: dict[str, Any], backend: str, device: Any = None) -> Contender:
    """xbp's own step compiled (``compile=True``): one call runs an epoch of
    COMPILED_STEPS batches through the compiled runner, reported per step."""
    from xbp.data.sources import DeviceData

    trainer = _trainer(case, backend, device, compile=True)
    net = trainer.net
    x, y = case_data(case)
    x, y = np.concatenate([x] * COMPILED_STEPS), np.concatenate([y] * COMPILED_STEPS)
    data = DeviceData(net.check_inputs(x), net.check_targets(y, x.shape[0]))
    runner = trainer.compiled_runner()
    perm = np.arange(x.shape[0])
    label = backend if device is None else f"{backend}-{device}"
    return Contender(
        f"xbp {label} compiled",
        lambda: runner.run_epoch(data, perm),
        _sync(net),
        COMPILED_STEPS,
    )


def torch_graph_contender(case: dict[str, Any], compiled: bool) -> Contender:
    """What a PyTorch expert does on a GPU: the autograd step captured in a CUDA graph
    by hand, or ``torch.compile(mode="reduce-overhead")``."""
    import torch

    torch.manual_seed(0)
    dt = getattr(torch, case["dtype"])
    sizes = case["sizes"]
    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b, dtype=dt, device="cuda"))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU() if case["act"] == "relu" else torch.nn.Sigmoid())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x, y = case_data(case)
    xt = torch.as_tensor(x, device="cuda")
    labels = torch.as_tensor(y, device="cuda").argmax(dim=1)

    def step() -> Any:
        opt.zero_grad(set_to_none=False)
        loss = torch.nn.functional.cross_entropy(model(xt), labels)
        loss.backward()
        opt.step()
        return loss

    if compiled:
        fn = torch.compile(step, mode="reduce-overhead")
        return Contender("torch.compile reduce-overhead", fn, torch.cuda.synchronize)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return Contender("torch CUDA graph by hand", graph.replay, torch.cuda.synchronize)


def jax_contender(case: dict[str, Any]) -> Contender:
    """A hand-written ``jax.jit`` step (jax.grad of the cost, SGD, donated buffers)."""
    import jax
    import jax.numpy as jnp

    x, y = case_data(case)
    rng = np.random.default_rng(0)
    sizes, dt = case["sizes"], case["dtype"]
    params = [
        (
            jnp.asarray((rng.standard_normal((a, b)) / np.sqrt(a)).astype(dt)),
            jnp.zeros(b, dt),
        )
        for a, b in zip(sizes, sizes[1:])
    ]
    act = jax.nn.relu if case["act"] == "relu" else jax.nn.sigmoid
    xd, yd = jnp.asarray(x), jnp.asarray(y)

    def cost(ps: Any) -> Any:
        a = xd
        for W, b in ps[:-1]:
            a = act(a @ W + b)
        z = a @ ps[-1][0] + ps[-1][1]
        return -jnp.sum(yd * jax.nn.log_softmax(z)) / z.shape[0]

    @jax.jit
    def update(ps: Any) -> Any:
        loss, grads = jax.value_and_grad(cost)(ps)
        return [(W - LR * gW, b - LR * gb) for (W, b), (gW, gb) in zip(ps, grads)], loss

    state = {"p": params}

    def step() -> Any:
        state["p"], loss = update(state["p"])
        return loss

    return Contender("jax.jit by hand", step, lambda: jax.block_until_ready(state["p"]))


def _numpy_by_hand(case: dict[str, Any]) -> tuple[Callable[[], Any], Callable[[], float]]:
    """``(backprop, step)`` of the case's network as a plain NumPy program: the forward
    and backward pass alone, and the training step (the same, then the SGD update)."""
    x, y = case_data(case)
    rng = np.random.default_rng(0)
    sizes, dt = case["sizes"], case["dtype"]
    Ws = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(dt) for a, b in zip(sizes, sizes[1:])]
    bs = [np.zeros(b, dt) for b in sizes[1:]]
    relu = case["act"] == "relu"
    n = x.shape[0]

    def backprop() -> tuple[Any, list[tuple[Any, Any]]]:
        acts = [x]
        a = x
        for W, b in zip(Ws[:-1], bs[:-1]):
            z = a @ W + b
            a = np.maximum(z, 0) if relu else 1 / (1 + np.exp(-z))
            acts.append(a)
        z = a @ Ws[-1] + bs[-1]
        if case["out"] == "softmax":
            s = z - z.max(axis=1, keepdims=True)
            e = np.exp(s)
            out = e / e.sum(axis=1, keepdims=True)
            loss = -np.sum(y * (s - np.log(e.sum(axis=1, keepdims=True)))) / n
            delta = (out - y) / n
        else:
            out = 1 / (1 + np.exp(-z))
            loss = np.sum((out - y) ** 2) / (2 * n)
            delta = (out - y) / n * out * (1 - out)
        grads = []
        for l in range(len(Ws) - 1, -1, -1):
            grads.append((acts[l].T @ delta, delta.sum(axis=0)))
            if l:
                a = acts[l]
                delta = (delta @ Ws[l].T) * ((a > 0) if relu else a * (1 - a))
        return loss, grads[::-1]

    def step() -> float:
        loss, grads = backprop()
        for l, (dW, db) in enumerate(grads):
            Ws[l] -= LR * dW
            bs[l] -= LR * db
        return float(loss)

    return backprop, step


def numpy_contender(case: dict[str, Any]) -> Contender:
    """The same step as a plain NumPy program: what one writes by hand."""
    return Contender("numpy by hand", _numpy_by_hand(case)[1], lambda: None)


def numpy_backprop_contender(case: dict[str, Any]) -> Contender:
    """The hand-written NumPy forward and backward pass alone (no update)."""
    return Contender("numpy by hand backprop", _numpy_by_hand(case)[0], lambda: None)


def xbp_backprop_contender(case: dict[str, Any], backend: str, device: Any = None) -> Contender:
    """The public, checked ``net.backprop(x, y)``: the caller's data (host NumPy, or arrays
    of the backend) checked on every call, then the forward and backward pass."""

    net = _case_network(case, backend, device)
    x, y = case_data(case)
    if not net.backend.is_host:  # a user of this backend passes its own arrays
        x, y = net.backend.asarray(x), net.backend.asarray(y)
    label = backend if device is None else f"{backend}-{device}"
    return Contender(f"xbp {label} backprop", lambda: net.backprop(x, y), _sync(net))


def gemm_contender(case: dict[str, Any], backend: str, device: Any = None) -> Contender:
    """Only the step's matrix products (forward, weight gradients, back-propagated deltas)."""
    import xbp

    be = xbp.backend(backend, device)
    x, _ = case_data(case)
    sizes, dt = case["sizes"], case["dtype"]
    rng = np.random.default_rng(0)
    Ws = [
        be.asarray(rng.standard_normal((a, b)).astype(dt) * 0.01) for a, b in zip(sizes, sizes[1:])
    ]
    xd = be.asarray(x)
    acts = [xd]
    for W in Ws:
        acts.append(acts[-1] @ W)
    deltas = [be.asarray(np.ones((x.shape[0], b), dt) * 0.01) for b in sizes[1:]]

    def step() -> None:
        a = xd
        for W in Ws:
            a = a @ W
        for l in range(len(Ws) - 1, -1, -1):
            acts[l].T @ deltas[l]
            if l:
                deltas[l] @ Ws[l].T

    label = backend if device is None else f"{backend}-{device}"
    return Contender(f"GEMM only {label}", step, be.sync)


def _torch_autograd(case: dict[str, Any], device: str) -> tuple[Callable[[], Any], Any]:
    """``(forward_backward, optimizer)``: PyTorch autograd's pass for the case's network
    (gradients left in ``.grad``) and its ``torch.optim.SGD``."""
    import torch

    torch.manual_seed(0)
    dt = getattr(torch, case["dtype"])
    sizes = case["sizes"]
    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b, dtype=dt, device=device))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU() if case["act"] == "relu" else torch.nn.Sigmoid())
    if case["out"] == "sigmoid":
        layers.append(torch.nn.Sigmoid())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x, y = case_data(case)
    xt = torch.as_tensor(x, device=device)
    yt = torch.as_tensor(y, device=device)
    labels = yt.argmax(dim=1)
    ce = torch.nn.CrossEntropyLoss()

    def forward_backward() -> Any:
        opt.zero_grad(set_to_none=True)
        out = model(xt)
        loss = (
            ce(out, labels)
            if case["loss"] == "cross_entropy"
            else 0.5 * ((out - yt) ** 2).sum() / len(xt)
        )
        loss.backward()
        return loss

    return forward_backward, opt


def _torch_sync(device: str) -> Callable[[], None]:
    import torch

    return (lambda: torch.cuda.synchronize()) if device != "cpu" else (lambda: None)


def torch_contender(case: dict[str, Any], device: str = "cpu") -> Contender:
    forward_backward, opt = _torch_autograd(case, device)

    def step() -> Any:
        loss = forward_backward()
        opt.step()
        return loss

    return Contender(f"torch autograd {device}", step, _torch_sync(device))


def torch_backprop_contender(case: dict[str, Any], device: str = "cpu") -> Contender:
    """PyTorch autograd's forward and backward pass alone (no optimizer step)."""
    forward_backward, _ = _torch_autograd(case, device)
    return Contender(f"torch autograd {device} backprop", forward_backward, _torch_sync(device))


def sklearn_contender(case: dict[str, Any]) -> Contender:
    from sklearn.neural_network import MLPClassifier

    x, y = case_data(case)
    labels = y.argmax(axis=1) if y.shape[1] > 1 else y[:, 0].astype(int)
    clf = MLPClassifier(
        hidden_layer_sizes=tuple(case["sizes"][1:-1]),
        activation="logistic" if case["act"] == "sigmoid" else case["act"],
        solver="sgd",
        learning_rate_init=LR,
        momentum=0.0,
        batch_size=case["batch"],
        random_state=0,
    )
    classes = np.arange(max(2, case["sizes"][-1]))
    clf.partial_fit(x, labels, classes=classes)
    return Contender("sklearn partial_fit", lambda: clf.partial_fit(x, labels), lambda: None)


def _usable(name: str, device: Any = None) -> bool:
    import xbp

    try:
        xbp.backend(name, device)
        return True
    except xbp.XbpError:
        return False


def contenders(case_name: str, backends: list[str] | None) -> list[Contender]:
    import importlib.util

    import xbp

    case = CASES[case_name]
    gpu_only = case_name.startswith("gpu")
    out: list[Contender] = []
    specs: list[tuple[str, Any]] = [("numpy", None), ("torch", "cpu"), ("jax", None)]
    if gpu_only:
        specs = []
    specs += [("cupy", None), ("torch", "cuda")]
    for name, device in specs:
        if backends is not None and name not in backends:
            continue
        if case["dtype"] == "float64" and name == "jax":
            import jax

            jax.config.update("jax_enable_x64", True)
        if _usable(name, device):
            out.append(xbp_contender(case, name, device))
            be = xbp.backend(name, device)
            if be.compiler() is not None:
                out.append(xbp_compiled_contender(case, name, device))
    if not gpu_only:
        out.append(numpy_contender(case))
        out.append(gemm_contender(case, "numpy"))
        # the public, checked backprop call against the same pass written by hand
        out.append(xbp_backprop_contender(case, "numpy"))
        out.append(numpy_backprop_contender(case))
    for name, device in (("cupy", None), ("torch", "cuda")):
        if _usable(name, device):
            out.append(gemm_contender(case, name, device))
    if importlib.util.find_spec("torch") is not None:
        if not gpu_only:
            out.append(torch_contender(case, "cpu"))
            if backends is None or "torch" in backends:
                out.append(xbp_backprop_contender(case, "torch", "cpu"))
                out.append(torch_backprop_contender(case, "cpu"))
                # the products both passes compute: the floor of their ratio
                out.append(gemm_contender(case, "torch", "cpu"))
        if _usable("torch", "cuda"):
            out.append(torch_contender(case, "cuda"))
            if case["loss"] == "cross_entropy":
                out.append(torch_graph_contender(case, compiled=False))
                try:
                    out.append(torch_graph_contender(case, compiled=True))
                except Exception as exc:  # torch.compile needs a working toolchain
                    print(f"torch.compile skipped: {exc}")
    if importlib.util.find_spec("jax") is not None and case["loss"] == "cross_entropy":
        if backends is None or "jax" in backends:
            out.append(jax_contender(case))
    if importlib.util.find_spec("sklearn") is not None and not gpu_only:
        out.append(sklearn_contender(case))
    return out


def measure(
    cands: list[Contender], repeat: int, warmup: int = 3, rounds: int = 5
) -> dict[str, float]:
    """Median seconds per step over ``repeat`` timed steps per contender.

    The contenders take turns in ``rounds`` blocks, so slow drifts of the
    machine hit all of them alike. Before each block the process pauses
    briefly and runs one untimed step: torch's and JAX's worker threads
    spin for a while after their work and would otherwise steal the next
    contender's cores.
    """
    for c in cands:
        for _ in range(warmup):
            c.step()
        c.sync()
    per_block = max(1, -(-repeat // rounds))
    times: dict[str, list[float]] = {c.name: [] for c in cands}
    steps = {c.name: c.steps for c in cands}
    for _ in range(rounds):
        for c in cands:
            time.sleep(0.05)
            c.step()
            c.sync()
            for _ in range(per_block):
                t0 = time.perf_counter()
                c.step()
                c.sync()
                times[c.name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) / steps[k] for k, v in times.items()}


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} us"
    return f"{seconds * 1e3:8.2f} ms"


def ratios(case_name: str, med: dict[str, float]) -> dict[str, float]:
    out = {}
    x = med.get("xbp numpy")
    if x is not None:
        for ref, key in (
            ("numpy by hand", "xbp/hand"),
            ("GEMM only numpy", "xbp/gemm"),
            ("torch autograd cpu", "xbp/torch"),
            ("sklearn partial_fit", "xbp/sklearn"),
        ):
            if ref in med:
                out[key] = x / med[ref]
    for key, num, den in (
        ("xbp-jax compiled/xbp numpy", "xbp jax compiled", "xbp numpy"),
        ("xbp-jax compiled/jax.jit by hand", "xbp jax compiled", "jax.jit by hand"),
        ("xbp-torch-cuda compiled/torch eager", "xbp torch-cuda compiled", "torch autograd cuda"),
        (
            "xbp-torch-cuda compiled/torch CUDA graph",
            "xbp torch-cuda compiled",
            "torch CUDA graph by hand",
        ),
        ("xbp-torch-cuda compiled/GEMM floor", "GEMM only torch-cuda", "xbp torch-cuda compiled"),
        ("xbp-torch-cpu/torch autograd cpu", "xbp torch-cpu", "torch autograd cpu"),
        ("xbp backprop/hand backprop", "xbp numpy backprop", "numpy by hand backprop"),
        (
            "xbp-torch-cpu backprop/torch autograd backprop",
            "xbp torch-cpu backprop",
            "torch autograd cpu backprop",
        ),
        # the smallest that ratio can be: both passes run these same matrix products
        (
            "GEMM floor torch-cpu/torch autograd backprop",
            "GEMM only torch-cpu",
            "torch autograd cpu backprop",
        ),
    ):
        if num in med and den in med:
            out[key] = med[num] / med[den]
    for dev, gemm in (("cupy", "GEMM only cupy"), ("torch-cuda", "GEMM only torch-cuda")):
        xg = med.get(f"xbp {dev}")
        if xg is not None and "torch autograd cuda" in med:
            out[f"xbp-{dev}/torch-cuda"] = xg / med["torch autograd cuda"]
        if xg is not None and gemm in med:
            out[f"xbp-{dev} GEMM share"] = med[gemm] / xg
    return out


MEMORY_SCRIPT = r"""
import resource, sys, numpy as np
which = sys.argv[1]
n, bs, epochs = 8192, 1024, 1
rng = np.random.default_rng(0)
x = rng.normal(size=(n, 784)).astype(np.float32)
y = rng.integers(0, 10, n)
if which == "xbp":
    import xbp
    net = xbp.mlp([784, 4096, 4096, 10], activation="relu", loss="cross_entropy", dtype="float32")
    xbp.fit(net, x, y, epochs=epochs, batch_size=bs, optimizer=xbp.optim.sgd(0.01), progress=False)
else:
    import torch
    nn = torch.nn
    model = nn.Sequential(nn.Linear(784, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                          nn.Linear(4096, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ds = torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
    for _ in range(epochs):
        for xb, yb in torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec
peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")]
print(int(peak[0].split()[1]) if peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_memory() -> dict[str, float]:
    """Peak RSS (MiB) of a full fit on the large case, each in a fresh process."""
    out = {}
    for which in ("xbp", "torch"):
        proc = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, which],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode == 0:
            out[which] = int(proc.stdout.strip().splitlines()[-1]) / 1024
        else:
            out[which] = float("nan")
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}"
    )


def run_bench(
    cases: list[str],
    backends: str | None = None,
    repeat: int | None = None,
    json_path: str | None = None,
    memory: bool = False,
) -> int:
    from ..errors import XbpValueError

    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise XbpValueError(f"--cases {unknown} not known; use {sorted(CASES)}")
    chosen = None if backends is None else [b.strip() for b in backends.split(",")]
    wrong = [b for b in chosen or () if b not in BENCH_BACKENDS]
    if wrong:  # an empty table would look like a benchmark that ran
        raise XbpValueError(
            f"--backends {wrong} not known; use a comma-separated list of {list(BENCH_BACKENDS)}"
        )
    report: dict[str, Any] = {"machine": machine(), "cases": {}}
    print(f"machine: {report['machine']}")
    for name in cases:
        case = CASES[name]
        cands = contenders(name, chosen)
        if not cands:
            print(f"\n{name}: nothing to run here (a GPU case without a GPU?)")
            continue
        reps = repeat or case["repeat"]
        med = measure(cands, reps)
        rat = ratios(name, med)
        report["cases"][name] = {
            "config": case,
            "median_seconds": med,
            "ratios": rat,
            "repeat": reps,
        }
        shape = "-".join(map(str, case["sizes"]))
        print(
            f"\n{name}: {shape}, batch {case['batch']}, {case['dtype']}, {case['act']} hidden, "
            f"{case['out']} + {case['loss']}; median of {reps} steps"
        )
        for k, v in med.items():
            print(f"  {k:<24} {_fmt(v)}")
        for k, v in rat.items():
            print(f"  ratio {k:<18} {v:6.3f}")
    if memory:
        mem = peak_memory()
        report["peak_rss_mib"] = mem
        print(
            f"\npeak RSS of fit, large case (8192 x 784, batch 1024, 1 epoch): "
            f"xbp {mem['xbp']:.0f} MiB, torch {mem['torch']:.0f} MiB"
        )
    if json_path:
        from ..io import atomic_write

        text = json.dumps(report, indent=2).encode()

        def write(f: Any) -> None:
            f.write(text)

        atomic_write(json_path, write, "--json")
        print(f"\nwrote {json_path}")
    return 0
