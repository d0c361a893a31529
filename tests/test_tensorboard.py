"""The TensorBoard callback, read back with TensorBoard's own event reader."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import xbp

pytest.importorskip("tensorboardX")
ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _read(logdir: Any) -> Any:
    acc = ea.EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


class _Keep(xbp.Callback):
    """Host weights and first-batch gradients at every epoch's end."""

    def __init__(self) -> None:
        self.weights: list[Any] = []
        self.grads: list[Any] = []

    def on_epoch_end(self, trainer: xbp.train.Trainer, logs: dict[str, Any]) -> None:
        self.weights.append(trainer.net.host_params())
        x, y = trainer.train_data.x, trainer.train_data.y  # type: ignore[union-attr]
        bs = trainer.options.batch_size
        g = trainer.net.value_and_grad(x[:bs], y[:bs]).grads
        self.grads.append([{k: np.asarray(v) for k, v in p.items()} for p in g])


def test_scalars_and_histograms_read_back(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    labels = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
    net = xbp.mlp([3, 5, 3], output="softmax", loss="cross_entropy", seed=0)
    keep = _Keep()
    hist = xbp.fit(
        net,
        x,
        labels,
        epochs=4,
        batch_size=8,
        shuffle=False,
        validation_split=0.25,
        metrics=["f1_macro"],
        callbacks=[keep, xbp.TensorBoard(tmp_path, histogram_freq=2)],
        progress=False,
    )
    acc = _read(tmp_path)
    tags = acc.Tags()
    for key in (
        "loss",
        "val_loss",
        "accuracy",
        "val_accuracy",
        "learning_rate",
        "f1_macro",
        "val_f1_macro",
        "seconds",
    ):
        events = acc.Scalars(key)
        assert [e.step for e in events] == [1, 2, 3, 4], key
        np.testing.assert_allclose([e.value for e in events], hist[key], rtol=1e-6, err_msg=key)
    hists = sorted(tags["histograms"])
    assert hists == sorted(
        f"{kind}/{i}.dense/{k}" for kind in ("weights", "gradients") for i in (0, 1) for k in "Wb"
    )
    for kind, seen in (("weights", keep.weights), ("gradients", keep.grads)):
        for i in (0, 1):
            events = acc.Histograms(f"{kind}/{i}.dense/W")
            assert [e.step for e in events] == [2, 4]  # histogram_freq=2
            for e in events:
                want = seen[e.step - 1][i]["W"]
                v = e.histogram_value
                assert v.num == want.size
                assert v.sum == pytest.approx(float(want.sum()), rel=1e-9, abs=1e-12)
                assert v.min == pytest.approx(float(want.min()))
                assert v.max == pytest.approx(float(want.max()))


def test_no_histograms_by_default_and_resume_continues(tmp_path) -> None:
    x, y = xbp.data.make_xor()
    logdir = tmp_path / "tb"
    ck = tmp_path / "ck.npz"
    net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    xbp.fit(
        net,
        x,
        y,
        epochs=2,
        batch_size=4,
        checkpoint=ck,
        callbacks=[xbp.TensorBoard(logdir)],
        progress=False,
    )
    net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    xbp.fit(
        net,
        x,
        y,
        epochs=4,
        batch_size=4,
        resume=ck,
        callbacks=[xbp.TensorBoard(logdir)],
        progress=False,
    )
    acc = _read(logdir)
    assert acc.Tags()["histograms"] == []
    assert [e.step for e in acc.Scalars("loss")] == [1, 2, 3, 4]


def test_tensorboard_bad_arguments(tmp_path) -> None:
    from xbp.errors import XbpFileError, XbpTypeError, XbpValueError

    with pytest.raises(XbpTypeError, match="log_dir is a int"):
        xbp.TensorBoard(3)  # type: ignore[arg-type]
    with pytest.raises(XbpValueError, match="histogram_freq"):
        xbp.TensorBoard(tmp_path, histogram_freq=-1)
    afile = tmp_path / "f"
    afile.write_text("x")
    x, y = xbp.data.make_xor()
    net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    with pytest.raises(XbpFileError, match="is a file; pass a directory"):
        xbp.fit(
            net, x, y, epochs=1, batch_size=4, callbacks=[xbp.TensorBoard(afile)], progress=False
        )
