"""``xbp evaluate``: a saved model's loss and metrics on new data."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import numpy as np

from ..errors import XbpValueError
from ..metrics import classification_report, headline_metrics, regression_report
from .common import (
    data_chunks,
    data_files,
    load_model,
    mnist_kind,
    model_option,
    prepare_backend,
    task_of,
)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import xbp

    from ..io.paths import input_file

    fmt, files = data_files(args)
    input_file(args.model, "model", "a model file written by xbp train --save")
    prepare_backend(args)
    net, meta = load_model(args, args.model, model_option(args))
    task = task_of(net, meta)
    rows = 0

    def counted() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        nonlocal rows
        rows = 0
        for x, y in data_chunks(args, fmt, net, meta, need_labels=True):
            rows += len(x)
            yield x, y

    try:
        try:
            result = xbp.train.run.evaluate_chunks(net, counted(), metrics=headline_metrics(task))
        except XbpValueError as exc:
            if "needs class labels" not in str(exc):
                raise
            # targets that are not classes (real values under a classifier's loss)
            result = xbp.train.run.evaluate_chunks(net, counted())
            task = "other"
    except XbpValueError as exc:
        if "has no rows" in str(exc):
            raise XbpValueError("--data has no rows; give at least one sample") from None
        raise
    print(
        f"loss {result['loss']:.6f}"
        + (f"  accuracy {result['accuracy']:.4f}" if result.get("accuracy") is not None else "")
        + f"  ({rows} samples{_test_set_note(args, fmt)}, {net.backend.name})"
    )
    if task == "classification":
        classes = meta.get("classes") if isinstance(meta.get("classes"), list) else None
        print(classification_report(result["confusion_matrix"], classes))
    elif task == "regression":
        print(regression_report(result))
    return 0


def _test_set_note(args: argparse.Namespace, fmt: str) -> str:
    return " of the t10k test set" if fmt == "mnist" and mnist_kind(args) == "t10k" else ""
