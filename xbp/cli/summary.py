"""``xbp summary``: a model file's layers, shapes and parameter counts."""

from __future__ import annotations

import argparse


def cmd_summary(args: argparse.Namespace) -> int:
    from ..io import load_checkpoint
    from ..io.paths import input_file

    input_file(args.model, "model", "a model file written by xbp train --save")
    ck = load_checkpoint(args.model, backend="numpy", argument="model")
    print(f"{args.model}\n{ck.network.summary()}")
    epochs = ck.training.get("history", {}).get("epochs") or []
    if ck.optimizer is not None:
        print(f"optimizer: {ck.optimizer.name}")
    if epochs:
        last = epochs[-1]
        done = ck.training.get("epoch", len(epochs))
        print(f"trained: {done} epochs, last loss {last.get('loss')}")
    return 0
