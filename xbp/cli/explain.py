"""``xbp explain``: one training step written out in the notation of docs/math.md."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from ..errors import XbpError, XbpValueError
from .common import (
    build_network,
    data_chunks,
    data_files,
    load_model,
    load_training,
    prepare_backend,
    scaled_features,
    targets_of,
    task_choice,
)


def _explain_model_data(args: argparse.Namespace, meta: dict[str, Any], fmt: str) -> str:
    """Without ``--data``, explain a model on the data its file records."""
    if "data" in args.given:
        return fmt
    stored = meta.get("data")
    if not isinstance(stored, str) or not stored:
        raise XbpValueError(
            f"--model {args.model!r} records no training data; pass --data with the data it "
            "was trained on"
        )
    args.data = stored
    try:
        return data_files(args)[0]
    except XbpError as e:
        raise XbpValueError(
            f"--model {args.model!r} was trained on {stored!r}, which cannot be read here; pass "
            "--data"
        ) from e


def cmd_explain(args: argparse.Namespace) -> int:
    from ..tools.explain import explain

    if not 2 <= args.digits <= 17:
        raise XbpValueError(
            f"--digits {args.digits} must lie in 2..17 (a float64 holds 17 significant digits)"
        )
    args.loss = "quadratic" if args.loss == "mse" else args.loss
    fmt, _ = data_files(args)
    if args.model:
        from ..io.paths import input_file

        input_file(args.model, "--model", "a model file written by xbp train --save")
    prepare_backend(args)
    if args.model:
        net, meta = load_model(args, args.model, "--model")
        fmt = _explain_model_data(args, meta, fmt)
        args.batch_size = 1 << 30
        chunks = list(data_chunks(args, fmt, net, meta, need_labels=True))
        x = np.concatenate([c[0] for c in chunks])
        y = np.concatenate([c[1] for c in chunks if c[1] is not None])
    else:
        data = load_training(args, fmt)
        x, y = data.x, data.y
        x = scaled_features(np.asarray(x), None)
        spec = targets_of(np.asarray(y), args.loss, task_choice(args, None, data.classes))
        y, args.loss = spec.y, spec.loss
        net = build_network(args, x.shape[1], spec.n_out, args.output or spec.output)
    if not -len(x) <= args.index < len(x):
        raise XbpValueError(
            f"--sample {args.index} is outside the {len(x)} samples; use -{len(x)}..{len(x) - 1}"
        )
    i = args.index % len(x)
    ys = np.asarray(y[i : i + 1])
    if ys.ndim == 1 and net.n_out == 1:
        ys = ys.reshape(-1, 1)  # one 0/1 target column
    title = f"xbp explain: sample {i} of --data {args.data} through {net!r}"
    text = explain(
        net,
        np.asarray(x[i : i + 1], dtype=np.float64),
        ys,
        learning_rate=args.lr,
        digits=args.digits,
        limit=args.limit,
        check=args.check,
        title=title,
    )
    print(text)
    return 0
