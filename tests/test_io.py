from __future__ import annotations

import numpy as np
import pytest

import xbp
from xbp import optim
from xbp.errors import XbpFileError, XbpFileNotFoundError, XbpValueError


def trained(backend: xbp.backends.select.Backend | None = None):
    x, y = xbp.data.make_blobs(60, centers=3, seed=0)
    net = xbp.mlp([2, 6, 3], activation="tanh", loss="cross_entropy", backend=backend, seed=3)
    xbp.fit(net, x, y, epochs=3, batch_size=10, optimizer=optim.adam(0.01), progress=False)
    return net, x


def test_save_on_each_backend_load_on_every_other(
    backend: xbp.backends.select.Backend, target_backend: xbp.backends.select.Backend, tmp_path
) -> None:
    net, x = trained(backend)
    path = tmp_path / "m.npz"
    xbp.save(net, path)
    expected = net.predict(x)
    if target_backend == backend:
        same = xbp.load(path, backend=backend)
        assert same.backend == backend
        np.testing.assert_array_equal(same.predict(x), expected)  # same backend: bit-identical
    loaded = xbp.load(path, backend=target_backend)
    assert loaded.backend == target_backend
    assert loaded.config() == net.config()
    # weights are bit-identical; libraries' tanh/exp may differ in the last bit
    for p, q in zip(loaded.host_params(), net.host_params()):
        for key in "Wb":
            np.testing.assert_array_equal(p[key], q[key])
    np.testing.assert_allclose(loaded.predict(x), expected, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(loaded.predict_classes(x), net.predict_classes(x))


def test_optimizer_state_round_trip(backend: xbp.backends.select.Backend, tmp_path) -> None:
    net, _ = trained()
    opt = optim.adam(0.01)
    state = opt.init(net.params)
    g = [{k: np.ones_like(v) for k, v in p.items()} for p in net.params]
    _, state = opt.update(g, state, net.params)
    xbp.save(net, tmp_path / "c.npz", optimizer=opt, optimizer_state=state, training={"epoch": 3})
    ck = xbp.load_checkpoint(tmp_path / "c.npz", backend=backend)
    assert ck.network.backend == backend
    assert ck.optimizer.config() == opt.config() and ck.training == {"epoch": 3}
    assert ck.optimizer_state[0].steps == 1
    moment = ck.optimizer_state[0].mu[1]["W"]
    assert backend.owns(moment) and backend.same_device(moment)
    np.testing.assert_array_equal(backend.to_host(moment), state[0].mu[1]["W"])


def test_file_is_plain_npz_with_json_header(tmp_path) -> None:
    net, _ = trained()
    xbp.save(net, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["meta", "param.0.W", "param.0.b", "param.1.W", "param.1.b"]
        import json

        meta = json.loads(z["meta"].tobytes())
    assert meta["format_version"] == 1 and meta["architecture"]["layers"] == [
        [2, 6, "tanh"],
        [6, 3, "softmax"],
    ]
    assert meta["xbp_version"] == xbp.__version__


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch) -> None:
    net, x = trained()
    path = tmp_path / "m.npz"
    xbp.save(net, path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(XbpFileError, match="disk full"):
        xbp.save(net, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary left behind


def test_an_interrupt_just_after_the_temporary_is_created_leaves_nothing(
    tmp_path, monkeypatch
) -> None:
    """Ctrl-C or SIGTERM (both raise KeyboardInterrupt in a write) can arrive the moment
    the temporary file exists, before its name is known to the caller of a
    create-then-return-the-name function: the write still removes it."""
    import os

    path = tmp_path / "m.bin"
    path.write_bytes(b"old")
    real_open = os.open

    def open_then_interrupt(name, flags, *args, **kwargs):
        fd = real_open(name, flags, *args, **kwargs)
        if str(name).endswith(".tmp"):
            os.close(fd)
            raise KeyboardInterrupt  # as a signal handler raises it after the system call
        return fd

    monkeypatch.setattr(os, "open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        xbp.io.atomic_write(path, lambda f: f.write(b"new"))
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.bin"]


def test_refuses_to_save_nan_weights(tmp_path) -> None:
    net, _ = trained()
    path = tmp_path / "m.npz"
    xbp.save(net, path)
    before = path.read_bytes()
    net.params[0]["W"][0, 0] = np.nan  # in place, as a diverged run would leave it
    with pytest.raises(XbpValueError, match="NaN or Inf; refusing to save"):
        xbp.save(net, path)
    assert path.read_bytes() == before


def test_bad_model_files(tmp_path) -> None:
    with pytest.raises(XbpFileNotFoundError, match="does not exist"):
        xbp.load(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(XbpFileError, match="not a readable xbp model file|pickled"):
        xbp.load(tmp_path / "text.npz")
    net, _ = trained()
    xbp.save(net, tmp_path / "m.npz")
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(XbpFileError, match="truncated"):
        xbp.load(tmp_path / "cut.npz")
    np.savez(tmp_path / "plain.npz", a=np.ones(3))
    with pytest.raises(XbpFileError, match="no xbp header"):
        xbp.load(tmp_path / "plain.npz")
    np.savez(tmp_path / "obj.npz", meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(XbpFileError, match="pickled Python objects"):
        xbp.load(tmp_path / "obj.npz")
