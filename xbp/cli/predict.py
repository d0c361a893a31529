"""``xbp predict``: a saved model's predictions, written in batches."""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import XbpValueError
from ..metrics import output_names
from .common import (
    check_outputs,
    data_chunks,
    data_files,
    load_model,
    model_option,
    prepare_backend,
    reads_of,
    task_of,
)

_OUT_SUFFIXES = (".csv", ".npy", ".npz")


def cmd_predict(args: argparse.Namespace) -> int:
    from ..io import atomic_write
    from ..io.paths import input_file

    fmt, files = data_files(args)
    input_file(args.model, "model", "a model file written by xbp train --save")
    if args.out is not None:
        suffix = os.path.splitext(args.out)[1].lower()
        if suffix not in _OUT_SUFFIXES:
            raise XbpValueError(f"--out {args.out!r}: use a .csv, .npy or .npz file name")
    check_outputs(reads_of(files, model=args.model), {"--out": args.out})
    prepare_backend(args)
    net, meta = load_model(args, args.model, model_option(args))
    classify = task_of(net, meta) == "classification"
    classes = meta.get("classes") if isinstance(meta.get("classes"), list) else None
    if net.classes is not None:
        classes = list(net.classes)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for x, _ in data_chunks(args, fmt, net, meta, need_labels=False):
            out = np.asarray(net.predict(x))
            labels = None
            if classify:
                codes = out.argmax(axis=1) if out.shape[1] > 1 else (out[:, 0] > 0.5).astype(int)
                labels = np.asarray(classes)[codes] if classes else codes
            yield out, labels

    if args.out is None:
        for out, labels in batches():
            lines = (
                [str(v) for v in labels]
                if labels is not None
                else [",".join(f"{v:.6g}" for v in row) for row in out]
            )
            sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        return 0
    suffix = os.path.splitext(args.out)[1].lower()
    count = 0
    if suffix == ".csv":

        def write(f: Any) -> None:
            nonlocal count
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            table = csv.writer(text, lineterminator="\n")
            header = None
            for out, labels in batches():
                if header is None:
                    names = output_names(
                        out.shape[1],
                        "classification" if classify else "regression",
                        classes,
                        (meta.get("label") or {}).get("name"),
                    )
                    header = (["label"] if labels is not None else []) + names
                    table.writerow(header)
                values = [[f"{v:.8g}" for v in row] for row in out]
                if labels is not None:
                    values = [[str(lab), *row] for lab, row in zip(labels, values)]
                table.writerows(values)
                count += len(out)
            text.flush()
            text.detach()

        atomic_write(args.out, write, "--out")
    else:
        outs, labs = [], []
        for out, labels in batches():
            outs.append(out)
            if labels is not None:
                labs.append(labels)
        output = np.concatenate(outs)
        labels_all = np.concatenate(labs) if labs else None
        count = len(output)
        if suffix == ".npy":
            chosen = labels_all if labels_all is not None else output
            atomic_write(args.out, lambda f: np.save(f, chosen), "--out")
        else:
            arrays: dict[str, Any] = {"output": output}
            if labels_all is not None:
                arrays["labels"] = labels_all
            atomic_write(args.out, lambda f: np.savez(f, **arrays), "--out")
    print(f"wrote {count} predictions to {args.out}")
    return 0
