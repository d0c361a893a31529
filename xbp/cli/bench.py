"""``xbp bench``: the step benchmark."""

from __future__ import annotations

import argparse

from .common import check_outputs


def cmd_bench(args: argparse.Namespace) -> int:
    from ..tools.bench import run_bench

    check_outputs({}, {"--json": args.json})
    return run_bench(
        cases=args.cases.split(","),
        backends=args.backends,
        repeat=args.repeat,
        json_path=args.json,
        memory=args.memory,
    )
