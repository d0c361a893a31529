"""``xbp export``: a model file as ONNX."""

from __future__ import annotations

import argparse


def cmd_export(args: argparse.Namespace) -> int:
    from ..io.onnx import export_file

    summary = export_file(
        args.model, args.onnx, opset=args.opset, model_argument="model", onnx_argument="onnx"
    )
    print(summary)
    return 0
