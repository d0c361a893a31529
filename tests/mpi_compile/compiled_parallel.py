"""Run under mpiexec or torchrun: compiled (JAX) data-parallel training; rank 0 saves."""

import sys

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import xbp  # noqa: E402

out, opt_name, parallel = sys.argv[1], sys.argv[2], sys.argv[3] == "parallel"
rng = np.random.default_rng(0)
x = rng.normal(size=(61, 5))  # 61 rows, batches of 16: uneven shares and a short batch
y = (x[:, 0] * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 0.5)
net = xbp.mlp([5, 7, 3], activation="tanh", loss="cross_entropy", backend="jax", seed=1)
weights: dict = {}
if opt_name.endswith("-weighted"):  # row and class weights, and dropout on the hidden layer
    layers = [xbp.nn.Dense(5, 7, "tanh", dropout=0.3), xbp.nn.Dense(7, 3, "softmax")]
    net = xbp.Network(layers, loss="cross_entropy", backend="jax", seed=1)
    weights = {"sample_weight": rng.integers(0, 4, size=61) * 1.0, "class_weight": "balanced"}
    opt_name = opt_name.removesuffix("-weighted")
strategy = None
if parallel:  # compiled on every rank; the reference is one eager process
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "mpi"))
    import engine

    strategy = engine.strategy()
opt = xbp.optim.adam(0.02) if opt_name == "adam" else xbp.optim.sgd(0.3)
hist = xbp.fit(
    net,
    x,
    y,
    epochs=3,
    batch_size=16,
    optimizer=opt,
    seed=2,
    progress=False,
    compile=parallel,
    strategy=strategy,
    **weights,
)
if strategy is None or strategy.is_root:
    arrays = {f"{i}{k}": v for i, p in enumerate(net.host_params()) for k, v in p.items()}
    arrays["loss"] = np.array(hist["loss"])
    np.savez(out, **arrays)
