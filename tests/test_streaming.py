"""Streamed data: memory maps, MappedRows and batch sources train, evaluate and predict
exactly as the same arrays in memory do; prefetch overlaps and stops cleanly."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xbp
from xbp.data.hostrows import prefetch, row_reader
from xbp.data.sources import Batch, BatchSource, HostData, Plan, Source

X, Y = xbp.data.make_blobs(230, centers=3, n_features=6, seed=3)


def mlp(be: xbp.backends.select.Backend | str = "numpy", dtype: str = "float64") -> xbp.Network:
    return xbp.mlp(
        [6, 9, 3], activation="tanh", loss="cross_entropy", backend=be, dtype=dtype, seed=5
    )


def params(net: xbp.Network) -> list[np.ndarray]:
    return [p[k] for p in net.host_params() for k in sorted(p)]


def max_diff(a: xbp.Network, b: xbp.Network) -> float:
    return max(float(np.max(np.abs(u - v))) for u, v in zip(params(a), params(b)))


def memmap(tmp_path: Path, a: np.ndarray, name: str = "x.npy") -> np.memmap:
    np.save(tmp_path / name, a)
    m = np.load(tmp_path / name, mmap_mode="r")
    assert isinstance(m, np.memmap)
    return m


OPTS = {"epochs": 3, "batch_size": 17, "optimizer": "adam", "learning_rate": 0.01}


def test_memmap_gives_the_weights_of_the_array(
    backend: xbp.backends.select.Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xm = memmap(tmp_path, X)
    kw = {**OPTS, "validation_split": 0.2, "progress": False}
    a, b = mlp(backend), mlp(backend)
    ha = xbp.fit(a, X, Y, **kw)
    copied: list[int] = []
    original = backend.library.copy_in

    def spy(xp, host, dtype, device):  # type: ignore[no-untyped-def]
        copied.append(int(host.shape[0]))
        return original(xp, host, dtype, device)

    monkeypatch.setattr(backend.library, "copy_in", spy)
    hb = xbp.fit(b, xm, Y, **kw)
    assert max_diff(a, b) <= 1e-12
    assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-12)
    assert ha["val_accuracy"] == hb["val_accuracy"]
    # the data really streamed: the features reached the device a training batch (or
    # one evaluation batch of the validation rows) at a time, never the whole set
    assert copied.count(OPTS["batch_size"]) >= 3 * (len(X) * 4 // 5 // OPTS["batch_size"])
    assert max(copied) <= len(X) // 5 + 1, copied


def test_stream_true_and_memmap_validation_data(tmp_path: Path) -> None:
    xv = memmap(tmp_path, X[:50], "v.npy")
    a, b = mlp(), mlp()
    ha = xbp.fit(a, X, Y, validation_data=(X[:50], Y[:50]), progress=False, **OPTS)
    hb = xbp.fit(b, X, Y, validation_data=(xv, Y[:50]), stream=True, progress=False, **OPTS)
    assert max_diff(a, b) <= 1e-12
    assert ha["val_loss"] == pytest.approx(hb["val_loss"], rel=1e-12)


def test_stream_false_moves_a_memmap_whole(tmp_path: Path) -> None:
    a, b = mlp(), mlp()
    xbp.fit(a, X, Y, progress=False, **OPTS)
    xbp.fit(b, memmap(tmp_path, X), Y, stream=False, progress=False, **OPTS)
    assert max_diff(a, b) == 0.0


def test_mapped_idx_rows_train_like_load_mnist(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (120, 4, 4)).astype(np.uint8)
    labels = (images.reshape(120, -1).mean(axis=1) > 127).astype(np.uint8)
    xbp.data.write_idx(tmp_path / "train-images-idx3-ubyte", images)
    xbp.data.write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    x, y = xbp.data.load_mnist(tmp_path)
    xm, ym = xbp.data.load_mnist(tmp_path, mmap=True)
    assert isinstance(xm, xbp.data.MappedRows) and isinstance(xm.raw, np.memmap)
    # the same float32 values as the in-memory loader (uint8 / 255)
    np.testing.assert_array_equal(xm[np.arange(120)], x)
    np.testing.assert_array_equal(x * 255, images.reshape(120, -1))
    nets = []
    for features in (x, xm):
        net = xbp.mlp([16, 5, 2], loss="cross_entropy", dtype="float32", seed=1)
        xbp.fit(net, features, ym, epochs=2, batch_size=32, progress=False)
        nets.append(net)
    assert max_diff(*nets) == 0.0


def test_batch_source_equals_unshuffled_batches() -> None:
    """A source of consecutive batches trains like fit(shuffle=False) with that batch size."""
    source = [(X[s : s + 20], Y[s : s + 20]) for s in range(0, 230, 20)]
    a, b = mlp(), mlp()
    ha = xbp.fit(a, X, Y, epochs=2, batch_size=20, shuffle=False, progress=False)
    hb = xbp.fit(b, source, epochs=2, progress=False)
    assert max_diff(a, b) == 0.0
    assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-12)
    assert ha["accuracy"] == hb["accuracy"]


def test_batch_source_is_reiterated_each_epoch() -> None:
    class Counting:
        passes = 0

        def __iter__(self):
            Counting.passes += 1
            for s in range(0, 230, 50):
                yield X[s : s + 50], Y[s : s + 50]

    hist = xbp.fit(mlp(), Counting(), epochs=3, progress=False)
    assert Counting.passes == 3 and len(hist) == 3


def test_evaluate_and_predict_in_batches(tmp_path: Path) -> None:
    net = mlp()
    xbp.fit(net, X, Y, progress=False, **OPTS)
    # independent: one forward pass over everything by hand
    a = X
    for p, act in zip(net.host_params(), ("tanh", "softmax")):
        z = a @ p["W"] + p["b"]
        a = np.tanh(z) if act == "tanh" else np.exp(z - z.max(1, keepdims=True))
    probs = a / a.sum(1, keepdims=True)
    loss = float(-np.mean(np.log(probs[np.arange(230), Y])))
    acc = float(np.mean(probs.argmax(1) == Y))
    xm = memmap(tmp_path, X)
    for x in (X, xm):
        for bs in (1, 7, 230, 1000):
            out = xbp.evaluate(net, x, Y, batch_size=bs)
            assert out["loss"] == pytest.approx(loss, rel=1e-12)
            assert out["accuracy"] == pytest.approx(acc, rel=1e-12)
            np.testing.assert_allclose(xbp.predict(net, x, batch_size=bs), probs, rtol=1e-12)
    source = [(X[s : s + 40], Y[s : s + 40]) for s in range(0, 230, 40)]
    assert xbp.evaluate(net, source)["loss"] == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(xbp.predict(net, [b[0] for b in source]), probs, rtol=1e-12)


def test_predict_device_array_stays_on_the_device(backend: xbp.backends.select.Backend) -> None:
    net = mlp(backend)
    xd = backend.asarray(X)
    out = xbp.predict(net, xd, batch_size=50)
    assert backend.owns(out) and backend.same_device(out)
    np.testing.assert_allclose(backend.to_host(out), net.predict(X), rtol=1e-12)


def test_accuracy_applies_only_when_every_batch_has_classes() -> None:
    net = xbp.mlp([6, 4, 3], loss="quadratic", seed=0)
    y = np.eye(3)[Y]
    y[200] = [0.5, 0.5, 0.0]  # one soft row: accuracy no longer applies
    assert net.evaluate(X, y)["accuracy"] is None
    assert xbp.evaluate(net, X, y, batch_size=16)["accuracy"] is None
    assert xbp.evaluate(net, X, np.eye(3)[Y], batch_size=16)["accuracy"] is not None


def test_divergence_replay_on_a_memmap(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)) * 10
    y = x @ np.array([[1.0], [2.0], [3.0]])
    errors, nets = [], []
    with np.errstate(all="ignore"):
        for features in (x, memmap(tmp_path, x)):
            net = xbp.Network([xbp.nn.Dense(3, 1, "identity")], loss="mse", seed=0)
            with pytest.raises(xbp.errors.DivergenceError) as info:
                xbp.fit(net, features, y, epochs=3, batch_size=4,
                        optimizer=xbp.optim.sgd(20.0), progress=False)  # fmt: skip
            errors.append(str(info.value))
            nets.append(net)
    assert "training diverged at epoch 1, step" in errors[0]
    assert errors[0] == errors[1]
    assert max_diff(*nets) == 0.0  # the same last good weights, all finite
    assert all(np.isfinite(p).all() for p in params(nets[1]))


def test_resume_on_a_memmap(tmp_path: Path) -> None:
    xm = memmap(tmp_path, X)
    full = mlp()
    xbp.fit(full, X, Y, progress=False, **{**OPTS, "epochs": 4})
    part = mlp()
    xbp.fit(part, xm, Y, progress=False, checkpoint=tmp_path / "ck.npz", **{**OPTS, "epochs": 2})
    resumed = mlp()
    xbp.fit(resumed, xm, Y, progress=False, resume=tmp_path / "ck.npz", **{**OPTS, "epochs": 4})
    assert max_diff(full, resumed) <= 1e-12


def test_gather_keeps_the_batch_order(tmp_path: Path) -> None:
    xm = memmap(tmp_path, X)
    data = HostData(xm, None)
    pos = np.array([9, 2, 7, 2, 0, 150])
    np.testing.assert_array_equal(data.gather(pos), X[pos])
    sub = HostData(xm, None, rows=np.array([5, 6, 100, 200]))
    np.testing.assert_array_equal(sub.gather(np.array([3, 0, 2])), X[[200, 5, 100]])
    # read from the file (one pread per run of consecutive rows), not through the mapping
    reader = row_reader(xm)
    assert reader is not None and row_reader(xm[1:]) is None  # a view: through the mapping
    try:
        np.testing.assert_array_equal(data.gather(pos, reader), X[pos])
        np.testing.assert_array_equal(data.gather(np.arange(40, 90), reader), X[40:90])
        np.testing.assert_array_equal(sub.gather(np.array([3, 0, 2]), reader), X[[200, 5, 100]])
    finally:
        reader.close()


def test_batches_go_through_the_library_copy_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = mlp()
    library = net.backend.library
    seen = []
    original = library.copy_in

    def spy(xp, host, dtype, device):
        seen.append((threading.current_thread().name, host.shape))
        return original(xp, host, dtype, device)

    monkeypatch.setattr(library, "copy_in", spy)
    xbp.fit(net, memmap(tmp_path, X), Y, epochs=1, batch_size=100, progress=False)
    # one copy per batch, started on the prefetch thread
    assert seen == [("xbp-prefetch", (100, 6)), ("xbp-prefetch", (100, 6)),
                    ("xbp-prefetch", (30, 6))]  # fmt: skip


def test_prefetch_runs_ahead_of_the_consumer() -> None:
    produced_second = threading.Event()

    def items():
        yield 0
        produced_second.set()
        yield 1

    it = prefetch(items())
    assert next(it) == 0
    # while the consumer holds item 0, the producer has already made item 1
    assert produced_second.wait(timeout=5)
    assert list(it) == [1]


def test_prefetch_raises_the_producers_error_and_stops_on_close() -> None:
    def failing():
        yield 1
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        list(prefetch(failing()))
    stopped = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            stopped.set()

    it = prefetch(endless())
    assert next(it) == 0
    it.close()
    assert stopped.wait(timeout=5)
    assert not any(t.name == "xbp-prefetch" and t.is_alive() for t in threading.enumerate())


def test_npz_memmap_reads_the_archive_in_place(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", features=X, labels=Y, fortran=np.asfortranarray(X))
    x, y = xbp.data.load_npz(tmp_path / "d.npz", "features", "labels", mmap=True)
    assert isinstance(x, np.memmap) and isinstance(y, np.memmap)
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, Y)
    f, _ = xbp.data.load_npz(tmp_path / "d.npz", "fortran", None, mmap=True)
    np.testing.assert_array_equal(f, X)


def test_idx_memmap_matches_the_loader(tmp_path: Path) -> None:
    a = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    xbp.data.write_idx(tmp_path / "f.idx", a)
    m = xbp.data.load_idx(tmp_path / "f.idx", mmap=True)
    assert isinstance(m, np.memmap)
    np.testing.assert_array_equal(m, a)
    np.testing.assert_array_equal(xbp.data.load_idx(tmp_path / "f.idx"), a)


def test_batch_source_contract_is_documented() -> None:
    assert "re-iterable" in (BatchSource.__doc__ or "")


class HostRows(Source):
    """A user's own data source: host arrays, moved to the device a batch at a time by
    hand, in xbp's permutation and each process's share of it (the protocol, nothing
    of xbp's own sources)."""

    shareable = True

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y, self.n = x, y, len(x)
        self.passes = 0

    def permutation(self, rng: np.random.Generator, shuffle: bool) -> np.ndarray:
        return rng.permutation(self.n) if shuffle else np.arange(self.n)

    def batches(self, net: xbp.Network, plan: Plan):  # type: ignore[no-untyped-def]
        self.passes += 1
        assert plan.perm is not None
        for s, e, lo, hi in plan.spans:
            rows = plan.perm[lo:hi]
            xb = net.check_inputs(self.x[rows])
            yb = net.check_targets(self.y[rows], len(rows))
            yield Batch(xb, yb, e - s, labels=net.class_labels(self.y[rows], yb))


class Reversed(Source):
    """A source of its own batches in its own order (no permutation), counting its rows."""

    def __init__(self, x: np.ndarray, y: np.ndarray, size: int) -> None:
        self.x, self.y, self.size = x, y, size

    def batches(self, net: xbp.Network, plan: Plan):  # type: ignore[no-untyped-def]
        assert plan.perm is None  # its own order: xbp planned nothing
        starts = list(range(0, len(self.x), self.size))[::-1]
        for s in starts:
            xb, yb = self.x[s : s + self.size], self.y[s : s + self.size]
            yield Batch(net.check_inputs(xb), net.check_targets(yb, len(xb)), len(xb))
        self.n = len(self.x)


def test_a_users_own_source_trains_like_the_arrays(backend: xbp.backends.select.Backend) -> None:
    """The protocol is the loop's only way in: a source written here trains (shuffled,
    with dropout, validated on a second source) to the weights of the same arrays."""
    kw = {**OPTS, "progress": False}
    a = xbp.mlp([6, 9, 3], "tanh", loss="cross_entropy", backend=backend, seed=5, dropout=0.3)
    b = xbp.mlp([6, 9, 3], "tanh", loss="cross_entropy", backend=backend, seed=5, dropout=0.3)
    ha = xbp.fit(a, X, Y, validation_data=(X[:50], Y[:50]), **kw)
    train = HostRows(X, Y)
    hb = xbp.fit(b, train, validation_data=(HostRows(X[:50], Y[:50]), None), **kw)
    assert train.passes == OPTS["epochs"]
    assert max_diff(a, b) <= 1e-12
    assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-12)
    assert ha["accuracy"] == pytest.approx(hb["accuracy"], rel=1e-12)
    assert ha["val_loss"] == pytest.approx(hb["val_loss"], rel=1e-12)
    assert xbp.evaluate(b, HostRows(X, Y)) == pytest.approx(xbp.evaluate(b, X, Y), rel=1e-12)


def test_a_source_of_its_own_order_trains_and_is_refused_what_it_cannot_do() -> None:
    source = [(X[s : s + 23], np.eye(3)[Y[s : s + 23]]) for s in range(0, 230, 23)][::-1]
    a, b = mlp(), mlp()
    ha = xbp.fit(a, source, epochs=2, progress=False)
    hb = xbp.fit(b, Reversed(X, np.eye(3)[Y], 23), epochs=2, progress=False)
    assert max_diff(a, b) == 0.0
    assert ha["loss"] == hb["loss"] and hb["accuracy"] == [None, None]  # no labels given
    with pytest.raises(xbp.errors.XbpValueError, match="compile=True needs the data on the device"):
        xbp.fit(mlp(), Reversed(X, Y, 23), compile=True, progress=False)
    with pytest.raises(xbp.errors.XbpValueError, match="validation_split with a batch source"):
        xbp.fit(mlp(), Reversed(X, Y, 23), validation_split=0.2, progress=False)
    with pytest.raises(xbp.errors.XbpTypeError, match="omit y"):
        xbp.fit(mlp(), HostRows(X, Y), Y, progress=False)
    with pytest.raises(xbp.errors.XbpValueError, match="cannot take rows"):
        xbp.fit(mlp(), HostRows(X, Y), validation_split=0.2, progress=False)


MPI_SCRIPT = """
import sys, numpy as np, xbp
from mpi4py import MPI
comm = MPI.COMM_WORLD
x, y = xbp.data.make_blobs(230, centers=3, n_features=6, seed=3)
if comm.Get_rank() == 0:
    np.save(sys.argv[1], x)
comm.Barrier()
net = xbp.mlp([6, 9, 3], activation="tanh", loss="cross_entropy", seed=5)
xbp.fit(net, np.load(sys.argv[1], mmap_mode="r"), y, epochs=3, batch_size=17, optimizer="adam",
        learning_rate=0.01, validation_split=0.2, progress=False, comm=comm)
if comm.Get_rank() == 0:
    np.savez(sys.argv[2], *[p[k] for p in net.host_params() for k in sorted(p)])
"""


@pytest.mark.mpi
def test_mpi_ranks_read_their_share_of_a_memmap(tmp_path: Path) -> None:
    import sys

    # the MPI tests' launcher: skips without mpi4py/mpiexec, kills every rank of a hang
    from test_distributed import launch

    script = tmp_path / "run.py"
    script.write_text(MPI_SCRIPT)
    out = tmp_path / "w.npz"
    proc = launch(
        "-n", "2", sys.executable, str(script), str(tmp_path / "x.npy"), str(out), limit=120
    )
    assert proc.returncode == 0, proc.stderr
    ref = mlp()
    xbp.fit(ref, X, Y, progress=False, validation_split=0.2, **OPTS)
    with np.load(out) as z:
        got = [z[f"arr_{i}"] for i in range(len(z.files))]
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(got, params(ref))) <= 1e-12


def test_split_indices_are_the_rows_of_train_val_test_split() -> None:
    x, y = xbp.data.load_digits()
    for stratify in (True, False):
        parts = xbp.data.split_indices(y, val=0.15, test=0.25, seed=4, stratify=stratify)
        split = xbp.data.train_val_test_split(x, y, val=0.15, test=0.25, seed=4, stratify=stratify)
        for idx, (xp_, yp) in zip(parts, split):
            assert np.array_equal(x[idx], xp_) and np.array_equal(y[idx], yp)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))
    # stratified: each class is split in the fractions (here the rule flips on stratify)
    test_rows = xbp.data.split_indices(y, val=0.15, test=0.25, seed=4)[2]
    want = [int(round(np.sum(y == c) * 0.25)) for c in np.unique(y)]
    assert np.bincount(y[test_rows]).tolist() == want
    assert np.bincount(y[parts[2]]).tolist() != want  # stratify=False (the last loop)


def test_mapped_rows_view_reads_its_rows_in_order(tmp_path: Path) -> None:
    raw = memmap(tmp_path, np.arange(40, dtype=np.float32).reshape(10, 4))
    rows = np.array([7, 2, 9, 0])
    view = xbp.data.MappedRows(raw, np.float32, rows=rows)
    want = np.asarray(raw)[rows]
    assert view.shape == (4, 4) and np.array_equal(view[:], want)
    assert np.array_equal(view[np.array([3, 1])], want[[3, 1]])
    reader = row_reader(view)
    assert reader is not None  # read from the file, not through the mapping
    try:
        got = xbp.data.hostrows.gather(view, np.array([2, 0, 3]), reader)
    finally:
        reader.close()
    assert np.array_equal(got, want[[2, 0, 3]])
    assert np.array_equal(xbp.data.hostrows.gather(view, np.array([1, 3])), want[[1, 3]])


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_cli_train_streams_a_mapped_npz_with_the_weights_of_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], dtype: str
) -> None:
    import xbp.cli.common
    from xbp.cli import main

    x = (X * 10).astype(dtype)
    np.savez(tmp_path / "d.npz", x=x, y=Y)
    seen: dict[str, list[Any]] = {"fit": [], "evaluate": []}
    real_fit, real_evaluate = xbp.fit, xbp.evaluate

    def fit(net: Any, xtr: Any, ytr: Any, **kw: Any) -> Any:
        seen["fit"].append((xtr, kw["validation_data"][0]))
        return real_fit(net, xtr, ytr, **kw)

    def evaluate(net: Any, xte: Any, yte: Any, **kw: Any) -> Any:
        seen["evaluate"].append(xte)
        return real_evaluate(net, xte, yte, **kw)

    monkeypatch.setattr(xbp, "fit", fit)
    monkeypatch.setattr(xbp, "evaluate", evaluate)
    outputs = []
    for name, limit in (("memory", 2**62), ("stream", 0)):
        monkeypatch.setattr(xbp.cli.common, "STREAM_BYTES", limit)
        model = tmp_path / f"{name}.npz"
        argv = ["train", "--data", str(tmp_path / "d.npz"), "--epochs", "2", "--batch-size"]
        argv += ["16", "--layers", "7", "--backend", "numpy", "--seed", "3", "--save", str(model)]
        assert main(argv) == 0
        outputs.append(capsys.readouterr().out.splitlines()[-2])  # the test scores
    (mem_tr, mem_va), (st_tr, st_va) = seen["fit"]
    calls = seen["evaluate"]  # per run: the test rows, then the validation rows (a warning's)
    mem_te, st_te = calls[0], calls[len(calls) // 2]
    assert isinstance(mem_tr, np.ndarray) and not isinstance(mem_tr, np.memmap)
    for part in (st_tr, st_va, st_te):  # row views of the file, never read whole
        assert isinstance(part, xbp.data.MappedRows) and isinstance(part.raw, np.memmap)
    for mem, st in ((mem_tr, st_tr), (mem_va, st_va), (mem_te, st_te)):
        assert np.array_equal(np.asarray(st), mem) and np.asarray(st).dtype == mem.dtype
    a, b = xbp.load(tmp_path / "memory.npz"), xbp.load(tmp_path / "stream.npz")
    assert all(np.array_equal(u, v) for u, v in zip(params(a), params(b)))
    assert outputs[0].split("(")[0] == outputs[1].split("(")[0]


def test_fingerprint_of_a_memmap_reads_the_file_not_the_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xbp.data import hostrows
    from xbp.data.sources import to_stream

    net = mlp()
    whole = to_stream(net, X, Y).fingerprint(net)

    def through_the_mapping(x: Any, src: np.ndarray) -> np.ndarray:
        raise AssertionError("rows read through the memory map")

    monkeypatch.setattr(hostrows, "_in_order", through_the_mapping)
    assert to_stream(net, memmap(tmp_path, X), Y).fingerprint(net) == whole


def fitted_on(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The training features of every ``xbp.fit`` call from here on (the CLI's)."""
    seen: list[Any] = []
    real_fit = xbp.fit

    def fit(net: Any, xtr: Any, ytr: Any, **kw: Any) -> Any:
        seen.append(xtr)
        return real_fit(net, xtr, ytr, **kw)

    monkeypatch.setattr(xbp, "fit", fit)
    return seen


@pytest.mark.parametrize("gz", [False, True])
def test_cli_train_streams_uncompressed_idx_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool
) -> None:
    import xbp.cli.common
    from xbp.cli import main

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120).astype(np.uint8)
    images = (rng.integers(0, 60, (120, 4, 4)) + 60 * labels[:, None, None]).astype(np.uint8)
    end = ".gz" if gz else ""
    xbp.data.write_idx(tmp_path / f"train-images-idx3-ubyte{end}", images)
    xbp.data.write_idx(tmp_path / f"train-labels-idx1-ubyte{end}", labels)
    seen = fitted_on(monkeypatch)
    for name, limit in (("memory", 2**62), ("stream", 0)):
        monkeypatch.setattr(xbp.cli.common, "STREAM_BYTES", limit)
        argv = ["train", "--data", str(tmp_path), "--epochs", "2", "--batch-size", "8"]
        argv += ["--layers", "5", "--backend", "numpy", "--quiet", "--save"]
        assert main([*argv, str(tmp_path / f"{name}.npz")]) == 0
    # a gzip-compressed file cannot be mapped: it is read whole, as before
    assert isinstance(seen[1], xbp.data.MappedRows) != gz
    assert np.array_equal(np.asarray(seen[1]), seen[0])
    a, b = xbp.load(tmp_path / "memory.npz"), xbp.load(tmp_path / "stream.npz")
    assert all(np.array_equal(u, v) for u, v in zip(params(a), params(b)))


def test_row_reader_names_a_file_truncated_while_read(tmp_path: Path) -> None:
    xm = memmap(tmp_path, np.arange(40, dtype=np.float64).reshape(10, 4))
    reader = row_reader(xm)
    assert reader is not None
    try:
        assert np.array_equal(reader.read(np.array([9, 1])), np.asarray(xm)[[9, 1]])
        with open(tmp_path / "x.npy", "r+b") as f:
            f.truncate(f.seek(0, 2) - 8)  # the last row loses a value
        with pytest.raises(xbp.XbpError, match="ended early"):
            reader.read(np.array([8, 9]))
    finally:
        reader.close()


def test_standardize_adapts_to_a_memmap_read_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xbp.data import hostrows

    def through_the_mapping(x: Any, src: np.ndarray) -> np.ndarray:
        raise AssertionError("rows read through the memory map")

    nets = [xbp.mlp([6, 9, 3], loss="cross_entropy", seed=5, standardize=True) for _ in "ab"]
    xbp.fit(nets[0], X, Y, progress=False, **OPTS)
    xm = memmap(tmp_path, X)
    monkeypatch.setattr(hostrows, "_in_order", through_the_mapping)
    real = np.memmap.__getitem__

    def one_row_at_most(self: np.memmap, key: Any) -> Any:
        out = real(self, key)
        assert getattr(out, "ndim", 0) < 2 or out.shape[0] <= 1, "rows read through the map"
        return out

    monkeypatch.setattr(np.memmap, "__getitem__", one_row_at_most)
    xbp.fit(nets[1], xm, Y, progress=False, **OPTS)
    for a, b in zip(nets[0].host_state(), nets[1].host_state()):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert max_diff(*nets) == 0.0


def test_cli_train_compile_on_reads_a_big_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("jax")
    import xbp.cli.common
    from xbp.cli import main

    np.savez(tmp_path / "d.npz", x=X.astype(np.float32), y=Y)
    seen = fitted_on(monkeypatch)
    monkeypatch.setattr(xbp.cli.common, "STREAM_BYTES", 0)
    argv = ["train", "--data", str(tmp_path / "d.npz"), "--epochs", "1", "--batch-size", "16"]
    argv += ["--layers", "4", "--backend", "jax", "--quiet", "--compile"]
    for compile_flag in ("on", "auto"):
        assert main([*argv, compile_flag]) == 0
    # compiled epochs need the data on the device: read whole; auto streams
    assert isinstance(seen[0], np.ndarray) and isinstance(seen[1], xbp.data.MappedRows)


def write_csv(path: Path, labels: Any) -> None:
    with open(path, "w") as f:
        f.write("a,b,c,d,e,f,label\n")
        for row, label in zip(X, labels):
            f.write(",".join(repr(float(v)) for v in row) + f",{label}\n")


def csv_run(tmp_path: Path, name: str, *more: str) -> int:
    from xbp.cli import main

    argv = ["train", "--data", str(tmp_path / "d.csv"), "--epochs", "2", "--batch-size", "16"]
    argv += ["--layers", "7", "--backend", "numpy", "--seed", "3", *more]
    return main([*argv, "--save", str(tmp_path / f"{name}.npz")])


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp directory, for this test only (a big CSV's temporary file goes there)."""
    import tempfile

    import xbp.cli.common

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setattr(xbp.cli.common, "CSV_CHUNK_ROWS", 50)  # several chunks
    return folder


def test_cli_train_streams_a_big_csv_with_the_weights_of_memory(
    tmp_path: Path,
    temp_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import xbp.cli.common

    write_csv(tmp_path / "d.csv", Y)
    seen = fitted_on(monkeypatch)
    files: list[list[Path]] = []
    rows: list[np.ndarray] = []  # read while the temporary file is there
    real = xbp.fit

    def fit(net: Any, xtr: Any, ytr: Any, **kw: Any) -> Any:
        files.append(sorted(temp_dir.iterdir()))
        rows.append(np.array(xtr))
        return real(net, xtr, ytr, **kw)

    monkeypatch.setattr(xbp, "fit", fit)
    outputs = []
    # the features as float64: 230 rows and a header line, 6 features, 8 bytes each
    for name, limit in (("memory", 231 * 6 * 8 + 1), ("stream", 231 * 6 * 8)):
        monkeypatch.setattr(xbp.cli.common, "STREAM_BYTES", limit)
        assert csv_run(tmp_path, name) == 0
        outputs.append(capsys.readouterr().out.splitlines()[-2])  # the test scores
    assert isinstance(seen[0], np.ndarray) and isinstance(seen[1], xbp.data.MappedRows)
    assert isinstance(seen[1].raw, np.memmap) and files[0] == []
    assert [p.parent for p in files[1]] == [temp_dir]  # the temporary file, while training
    assert list(temp_dir.iterdir()) == []  # removed at the end
    assert np.array_equal(rows[1], rows[0]) and rows[1].dtype == rows[0].dtype
    a, b = xbp.load(tmp_path / "memory.npz"), xbp.load(tmp_path / "stream.npz")
    assert all(np.array_equal(u, v) for u, v in zip(params(a), params(b)))
    assert outputs[0].split("(")[0] == outputs[1].split("(")[0]
    meta = [np.load(tmp_path / f"{n}.npz")["meta"].tobytes() for n in ("memory", "stream")]
    assert (
        b'"names": ["a", "b", "c", "d", "e", "f"]}, "label": {"name": "label", "index": 6'
        in meta[1]
    )  # what the model records
    assert [m[m.index(b'"metadata"') :] for m in meta] == [
        meta[0][meta[0].index(b'"metadata"') :]
    ] * 2


def test_cli_train_csv_temporary_file_is_removed_on_error(
    tmp_path: Path,
    temp_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import xbp.cli.common

    write_csv(tmp_path / "d.csv", Y)
    monkeypatch.setattr(xbp.cli.common, "STREAM_BYTES", 0)
    seen = fitted_on(monkeypatch)

    def interrupted(*a: Any, **kw: Any) -> Any:
        assert len(list(temp_dir.iterdir())) == 1
        raise KeyboardInterrupt

    monkeypatch.setattr(xbp, "fit", interrupted)
    assert csv_run(tmp_path, "m") == 130  # Ctrl-C while training
    assert list(temp_dir.iterdir()) == []

    def terminated(*a: Any, **kw: Any) -> Any:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's preemption

    monkeypatch.setattr(xbp, "fit", terminated)
    assert csv_run(tmp_path, "m") == 143
    assert list(temp_dir.iterdir()) == [] and seen == []
    assert csv_run(tmp_path, "m", "--batch-size", "999") == 2  # an error after the copy
    assert "--batch-size 999" in capsys.readouterr().err

    import os

    real_open = os.open

    def open_then_interrupt(name: Any, flags: int, *args: Any, **kw: Any) -> int:
        fd = real_open(name, flags, *args, **kw)
        if str(name).endswith(".f64"):  # Ctrl-C the moment the temporary exists
            os.close(fd)
            raise KeyboardInterrupt
        return fd

    monkeypatch.setattr(os, "open", open_then_interrupt)
    assert csv_run(tmp_path, "m") == 130
    monkeypatch.undo()
    assert list(temp_dir.iterdir()) == []
    assert list(temp_dir.iterdir()) == []


def test_cli_train_csv_with_class_names_is_read_whole(
    tmp_path: Path, temp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import xbp.cli.common

    write_csv(tmp_path / "d.csv", np.array(["ant", "bee", "cat"])[Y])
    monkeypatch.setattr(xbp.cli.common, "STREAM_BYTES", 0)
    seen = fitted_on(monkeypatch)
    assert csv_run(tmp_path, "m", "--quiet") == 0
    assert isinstance(seen[0], np.ndarray) and list(temp_dir.iterdir()) == []


def test_cli_train_csv_refuses_a_full_temp_directory(
    tmp_path: Path,
    temp_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    import xbp.cli.common

    write_csv(tmp_path / "d.csv", Y)
    monkeypatch.setattr(xbp.cli.common, "STREAM_BYTES", 0)
    monkeypatch.setattr(
        shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(9, 9, 231 * 48 - 1)
    )  # type: ignore[attr-defined]
    assert csv_run(tmp_path, "m") == 2
    err = capsys.readouterr().err.strip()
    assert "TMPDIR" in err and str(temp_dir) in err and len(err.splitlines()) == 1
    assert list(temp_dir.iterdir()) == []
