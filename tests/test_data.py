from __future__ import annotations

import gzip
import struct
from typing import Any

import numpy as np
import pytest

import xbp
from xbp import data
from xbp.errors import XbpFileError, XbpFileNotFoundError, XbpValueError


def write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    code = {np.uint8: 0x08, np.float32: 0x0D}[array.dtype.type]
    raw = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
    # closed on leaving the block: an unclosed GzipFile loses its buffered data (Python 3.12)
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(raw)


def test_digits_bundled() -> None:
    x, y = data.load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float64 and 0 <= x.min() and x.max() == 1.0
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_round_trip(tmp_path, compress: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, 5).astype(np.uint8)
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, compress)
    x, y = data.load_mnist(tmp_path)
    assert x.shape == (5, 784) and x.dtype == np.float32
    np.testing.assert_array_equal(x * 255, images.reshape(5, -1))
    np.testing.assert_array_equal(y, labels)
    floats = rng.normal(size=(3, 2)).astype(np.float32)
    write_idx(tmp_path / "f.idx", floats)
    np.testing.assert_array_equal(data.load_idx(tmp_path / "f.idx"), floats)


def test_bad_idx_files(tmp_path) -> None:
    (tmp_path / "x.idx").write_bytes(b"PK\x03\x04 nonsense")
    with pytest.raises(XbpFileError, match="not an IDX file"):
        data.load_idx(tmp_path / "x.idx")
    write_idx(tmp_path / "y.idx", np.zeros((4, 4), np.uint8))
    raw = (tmp_path / "y.idx").read_bytes()
    (tmp_path / "y.idx").write_bytes(raw[:-3])
    with pytest.raises(XbpFileError, match="truncated"):
        data.load_idx(tmp_path / "y.idx")
    with pytest.raises(XbpFileNotFoundError, match="lacks train-images"):
        data.load_mnist(tmp_path)


def test_csv_label_column_by_index_and_name(tmp_path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("a,label,b\n1,0,2\n3,1,4\n5,2,6\n")
    x, y = data.load_csv(p, "label")
    np.testing.assert_array_equal(x, [[1, 2], [3, 4], [5, 6]])
    assert y.tolist() == [0, 1, 2] and y.dtype == np.int64
    x2, y2 = data.load_csv(p, 1)
    np.testing.assert_array_equal(x2, x)
    x3, y3 = data.load_csv(p)  # last column
    assert y3.tolist() == [2, 4, 6]


def test_csv_errors(tmp_path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("1,2,3\n4,5\n")
    with pytest.raises(XbpValueError, match="line 2 has 2 fields but the first data row has 3"):
        data.load_csv(p)
    p.write_text("a,b\n1,2\n")
    with pytest.raises(XbpValueError, match="label_column='c' is not a column name"):
        data.load_csv(p, "c")
    p.write_text("1,x\n")
    with pytest.raises(XbpValueError, match="non-numeric"):
        data.load_csv(p, header=False)


def test_npz_loader(tmp_path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((3, 2)), y=np.arange(3))
    x, y = data.load_npz(tmp_path / "d.npz")
    assert x.shape == (3, 2) and y.tolist() == [0, 1, 2]
    with pytest.raises(XbpValueError, match=r"lacks \['features'\]"):
        data.load_npz(tmp_path / "d.npz", x_key="features")


def test_generated_sets_are_seeded() -> None:
    for make in (data.make_spirals, data.make_moons, data.make_blobs):
        a, b = make(seed=5), make(seed=5)
        np.testing.assert_array_equal(a[0], b[0])
        assert not np.array_equal(make(seed=6)[0], a[0])
        assert a[0].shape[0] == a[1].shape[0] and set(np.unique(a[1])) <= {0, 1, 2}
    x, y = data.make_xor()
    assert x.shape == (4, 2) and y.ravel().tolist() == [0, 1, 1, 0]


def test_spirals_are_learnable() -> None:
    x, y = data.make_spirals(300, noise=0.1, seed=0)
    net = xbp.mlp([2, 32, 32, 2], activation="tanh", loss="cross_entropy", seed=0)
    xbp.fit(
        net, x, y, epochs=150, batch_size=32, optimizer="adam", learning_rate=0.01, progress=False
    )
    assert xbp.evaluate(net, x, y)["accuracy"] > 0.9


def test_helpers() -> None:
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    xs, other, mean, std = data.standardize(x, np.array([[2.0, 5.0]]))
    np.testing.assert_allclose(xs, [[-1, 0], [1, 0]])
    np.testing.assert_allclose(other, [[0, 0]])
    np.testing.assert_array_equal(data.one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(XbpValueError, match="outside 0..1"):
        data.one_hot(np.array([2]), 2)
    xd, yd = data.load_digits()
    (a, ya), (b, yb), (c, yc) = data.train_val_test_split(xd, yd, val=0.1, test=0.2, seed=0)
    assert len(ya) + len(yb) + len(yc) == 1797
    # stratified: every class keeps about its share in the test set
    share = np.bincount(yc, minlength=10) / len(yc)
    assert np.all(np.abs(share - 0.1) < 0.01)
    (a2, _), _, _ = data.train_val_test_split(xd, yd, seed=0)
    np.testing.assert_array_equal(a, a2)
    with pytest.raises(XbpValueError, match="must be below 1"):
        data.train_val_test_split(xd, yd, val=0.5, test=0.5)


# -- CSV through a real parser -------------------------------------------------------------
ENGINES = ["pandas", "numpy", "python"]


@pytest.fixture
def no_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    """pandas hidden: ``import pandas`` raises ImportError, as where it is not installed."""
    monkeypatch.setitem(__import__("sys").modules, "pandas", None)


@pytest.mark.parametrize("engine", ENGINES)
def test_csv_engines_read_what_was_written(tmp_path, engine: str) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 256, (500, 12))
    path = tmp_path / "m.csv"
    np.savetxt(path, values, delimiter=",", fmt="%d", header=",".join(f"c{i}" for i in range(12)),
               comments="")  # fmt: skip
    x, y = data.load_csv(path, 0, dtype="float32", engine=engine)
    assert x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x, values[:, 1:].astype(np.float32))
    np.testing.assert_array_equal(y, values[:, 0])
    chunks = list(data.iter_table(path, "c0", chunk_rows=128, engine=engine))
    assert [len(c.x) for c in chunks] == [128, 128, 128, 116]
    np.testing.assert_array_equal(np.concatenate([c.x for c in chunks]), values[:, 1:])


@pytest.mark.parametrize("engine", ENGINES)
def test_csv_bom_quotes_and_string_labels(tmp_path, engine: str) -> None:
    path = tmp_path / "iris.csv"
    text = (
        '\ufeff"petal","width","species"\n1.4,"0.2",setosa\n 4.7 ,1.4,"versi, color"\n5,2,setosa\n'
    )
    path.write_text(text, encoding="utf-8")
    t = data.load_table(path, "species", engine=engine)
    assert t.feature_names == ["petal", "width"] and t.label_name == "species"
    assert t.classes == ["setosa", "versi, color"] and t.y.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(t.x, [[1.4, 0.2], [4.7, 1.4], [5.0, 2.0]])


@pytest.mark.parametrize("engine", ENGINES)
def test_csv_ragged_rows_name_the_line(tmp_path, engine: str) -> None:
    path = tmp_path / "r.csv"
    path.write_text("a,b,c\n1,2,0\n3,4,1\n\n5,6,7,8\n")
    with pytest.raises(XbpValueError, match="line 5 has 4 fields but the first data row has 3"):
        data.load_csv(path, engine=engine)


def test_csv_default_engine_falls_back_to_numpy(tmp_path, no_pandas, monkeypatch) -> None:
    path = tmp_path / "m.csv"
    np.savetxt(path, np.arange(12).reshape(4, 3), delimiter=",", fmt="%d")
    used = []
    real = np.loadtxt
    monkeypatch.setattr(np, "loadtxt", lambda *a, **k: used.append(1) or real(*a, **k))
    x, y = data.load_csv(path)
    assert used and x.tolist() == [[0, 1], [3, 4], [6, 7], [9, 10]] and y.tolist() == [2, 5, 8, 11]


# -- CLI data options: the model file records the layout -------------------------------------
def _cli(argv: list) -> str:
    import contextlib
    import io

    from xbp import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main([str(a) for a in argv]) == 0
    return out.getvalue()


def _scaled(model: xbp.io.Checkpoint, x: np.ndarray) -> np.ndarray:
    assert model.network.layers[0].kind == "standardize"  # the model scales raw features
    return x


def test_cli_multi_output_csv_with_delimiter(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    t = np.column_stack([x @ [1.0, 2.0, 3.0], x[:, 0] - x[:, 1]])
    rows = ["a;b;c;t1;t2"] + [";".join(f"{v:.6f}" for v in (*r, *s)) for r, s in zip(x, t)]
    (tmp_path / "reg.csv").write_text("\n".join(rows) + "\n")
    model = tmp_path / "reg.npz"
    _cli(["train", "--data", tmp_path / "reg.csv", "--delimiter", ";", "--label-column",
          "t1,t2", "--loss", "quadratic", "--epochs", "3", "--quiet", "--save", model])  # fmt: skip
    ck = xbp.load_checkpoint(model)
    assert ck.network.sizes[-1] == 2 and ck.metadata["task"] == "regression"
    assert ck.metadata["layout"]["delimiter"] == ";"
    assert ck.metadata["label"]["name"] == ["t1", "t2"]
    # evaluate and predict read the recorded layout: no --delimiter, no --label-column
    xs, ts = np.round(x, 6), np.round(t, 6)
    expected = xbp.evaluate(ck.network, _scaled(ck, xs), ts)["loss"]
    line = _cli(["evaluate", model, "--data", tmp_path / "reg.csv"])
    assert float(line.split()[1]) == pytest.approx(expected, rel=1e-5)
    printed = _cli(["predict", model, "--data", tmp_path / "reg.csv"]).split()
    got = np.array([[float(v) for v in r.split(",")] for r in printed])
    np.testing.assert_allclose(got, ck.network.predict(_scaled(ck, xs)), rtol=1e-5, atol=1e-6)


def test_cli_npz_keys_are_recorded(tmp_path) -> None:
    x, y = data.make_blobs(150, centers=2, n_features=4, seed=0)
    np.savez(tmp_path / "d.npz", feats=x, classes=y)
    model = tmp_path / "m.npz"
    _cli(["train", "--data", tmp_path / "d.npz", "--x-key", "feats", "--y-key", "classes",
          "--epochs", "2", "--quiet", "--save", model])  # fmt: skip
    ck = xbp.load_checkpoint(model)
    assert ck.metadata["layout"] == {"delimiter": ",", "x_key": "feats", "y_key": "classes"}
    expected = xbp.evaluate(ck.network, _scaled(ck, x), y)
    line = _cli(["evaluate", model, "--data", tmp_path / "d.npz"])
    assert f"loss {expected['loss']:.6f}" in line and f"accuracy {expected['accuracy']:.4f}" in line


def test_cli_evaluate_uses_the_t10k_files(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for kind, n in (("train", 120), ("t10k", 30)):
        images = rng.integers(0, 256, (n, 4, 4)).astype(np.uint8)
        write_idx(tmp_path / f"{kind}-images-idx3-ubyte", images)
        write_idx(tmp_path / f"{kind}-labels-idx1-ubyte", rng.integers(0, 3, n).astype(np.uint8))
    model = tmp_path / "m.npz"
    _cli(["train", "--data", tmp_path, "--epochs", "1", "--layers", "4", "--quiet",
          "--save", model])  # fmt: skip
    ck = xbp.load_checkpoint(model)
    x, y = data.load_mnist(tmp_path, "t10k")
    expected = xbp.evaluate(ck.network, _scaled(ck, x), y)
    line = _cli(["evaluate", model, "--data", tmp_path])
    assert "(30 samples of the t10k test set" in line
    assert f"loss {expected['loss']:.6f}" in line


def test_write_idx_matches_an_independent_writer(tmp_path) -> None:
    a = np.random.default_rng(0).integers(0, 256, (3, 5, 2)).astype(np.uint8)
    write_idx(tmp_path / "ref", a)
    data.write_idx(tmp_path / "mine", a)
    assert (tmp_path / "ref").read_bytes() == (tmp_path / "mine").read_bytes()


def test_train_mnist_synthetic_runs_end_to_end(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "train_mnist.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--synthetic", "--epochs", "2", "--layers", "16",
         "--synthetic-rows", "1500,300", "--save", str(tmp_path / "m.npz")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "(t10k)" in proc.stdout
    accuracy = float(proc.stdout.split("'accuracy': ")[1].split("}")[0])
    assert accuracy > 0.5  # the classes are learnable: chance is 0.1
    assert xbp.load(tmp_path / "m.npz").sizes == [784, 16, 10]


def test_train_mnist_synthetic_never_writes_into_a_data_directory(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(b"the user's own MNIST file")
    script = Path(__file__).resolve().parent.parent / "scripts" / "train_mnist.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--synthetic", "--data", str(tmp_path), "--epochs", "1"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "drop --data" in proc.stderr, proc.stderr
    assert images.read_bytes() == b"the user's own MNIST file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-images-idx3-ubyte"]


def test_write_idx_follows_the_output_rules_and_replaces_atomically(tmp_path) -> None:
    folder = tmp_path / "pipe"  # (a FIFO would block a plain open: a directory cannot)
    folder.mkdir()
    with pytest.raises(XbpFileError, match="pipe"):
        data.write_idx(folder, np.zeros(3, dtype=np.uint8))
    target = tmp_path / "labels.gz"
    data.write_idx(target, np.array([1, 2], dtype=np.uint8))
    data.write_idx(target, np.array([3, 4, 5], dtype=np.uint8))
    assert data.load_idx(target).tolist() == [3, 4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.gz", "pipe"]


@pytest.mark.parametrize("engine", ENGINES)
def test_csv_quoted_labels_after_a_space(tmp_path, engine: str) -> None:
    """``x, "a, b"``: a space after the delimiter does not hide the quote from any
    engine (the file is written as people write CSV by hand), and a whole read by
    pandas gives the same rows as its chunked read (``chunk_rows``)."""
    path = tmp_path / "spaced.csv"
    rows = ['1, 2, "a, b"', "3, 4, c", '5,6,"a, b"', "7 , 8 ,c"]
    path.write_text("x1, x2, label\n" + "\n".join(rows) + "\n")
    t = data.load_table(path, "label", engine=engine)
    np.testing.assert_array_equal(t.x, [[1, 2], [3, 4], [5, 6], [7, 8]])
    assert t.classes == ["a, b", "c"] and t.y.tolist() == [0, 1, 0, 1]
    chunks = list(data.iter_table(path, "label", chunk_rows=3, engine=engine))
    assert [len(c.x) for c in chunks] == [3, 1]


def test_csv_header_and_rows_of_different_widths(tmp_path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text("x1,x2,label\n1,2,3,a\n")
    with pytest.raises(XbpValueError, match="the header has 3 columns but line 2 has 4"):
        data.load_table(path, "label")


def test_iter_table_bounded_parses_a_chunk_at_a_time(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    path = tmp_path / "t.csv"
    np.savetxt(
        path,
        np.column_stack([rng.standard_normal((70, 3)), rng.integers(0, 3, 70)]),
        delimiter=",",
        fmt=["%.17g"] * 3 + ["%d"],
    )
    calls: list[Any] = []
    real = pd.read_csv

    def read_csv(*a: Any, **kw: Any) -> Any:
        calls.append(kw.get("chunksize"))
        return real(*a, **kw)

    monkeypatch.setattr(pd, "read_csv", read_csv)
    whole = list(data.iter_table(path, -1, chunk_rows=30, engine="pandas"))
    bounded = list(data.iter_table(path, -1, chunk_rows=30, engine="pandas", bounded=True))
    assert calls == [None, 30]  # a small file is parsed in one read unless bounded
    assert [len(t.x) for t in bounded] == [30, 30, 10]
    for a, b in zip(whole, bounded):
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and a.y.dtype == b.y.dtype
