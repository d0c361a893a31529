#!/usr/bin/env python
"""xbp.sklearn against scikit-learn's MLPClassifier: fit time and the same numbers.

CPU (default): digits, same hyper-parameters, same data split, float64,
several seeds, one process; prints accuracy, fit time, the ratio of the
median fit times and the largest relative difference of the fitted weights
(xbp.sklearn follows scikit-learn's random draws and update rules, so the two
train the same model).

``--large N``: a large synthetic problem (N x 784, 10 classes, float32,
``--large-epochs`` epochs, adam, batch 200 as scikit-learn's default) on each
backend of ``--backends`` (e.g. ``cupy,torch`` with ``--device cuda``),
against scikit-learn on the CPU (its time measured once; ``--no-sklearn``
skips it).

    python scripts/bench_sklearn.py [--seeds 5] [--json FILE]
    python scripts/bench_sklearn.py --large 200000 --backends cupy,torch --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLP

import xbp
from xbp.sklearn import MLPClassifier as XbpMLP


def max_rel(ours: Any, theirs: Any) -> float:
    return max(
        float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b)) / np.max(np.abs(b)))
        for a, b in zip(ours.coefs_, theirs.coefs_)
    )


def timed_fit(clf: Any, x: Any, y: Any) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        clf.fit(x, y)
        return time.perf_counter() - t0


def cpu(args: argparse.Namespace) -> dict[str, Any]:
    x, y = xbp.data.load_digits()
    (xtr, ytr), _, (xte, yte) = xbp.data.train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    params = dict(
        hidden_layer_sizes=(100,),
        activation="relu",
        solver="adam",
        alpha=1e-4,
        batch_size="auto",
        learning_rate_init=1e-3,
        max_iter=200,
        tol=1e-4,
    )
    rows: dict[str, dict[str, list[float]]] = {
        "sklearn": {"acc": [], "s": []},
        "xbp": {"acc": [], "s": []},
    }
    diffs = []
    for seed in range(args.seeds):
        fitted = {}
        for name, cls in (("sklearn", SkMLP), ("xbp", XbpMLP)):
            clf = fitted[name] = cls(random_state=seed, **params)
            rows[name]["s"].append(timed_fit(clf, xtr, ytr))
            rows[name]["acc"].append(clf.score(xte, yte))
            print(
                f"seed {seed} {name:<8} accuracy {rows[name]['acc'][-1]:.4f} "
                f"fit {rows[name]['s'][-1]:.2f} s ({clf.n_iter_} epochs)"
            )
        diffs.append(max_rel(fitted["xbp"], fitted["sklearn"]))
        print(f"seed {seed} largest relative weight difference {diffs[-1]:.1e}")
    summary = {
        k: {
            "accuracy_mean": statistics.mean(v["acc"]),
            "fit_seconds_median": statistics.median(v["s"]),
        }
        for k, v in rows.items()
    }
    ratio = summary["xbp"]["fit_seconds_median"] / summary["sklearn"]["fit_seconds_median"]
    diff = summary["xbp"]["accuracy_mean"] - summary["sklearn"]["accuracy_mean"]
    print(
        f"\nmean accuracy: xbp {summary['xbp']['accuracy_mean']:.4f}, "
        f"sklearn {summary['sklearn']['accuracy_mean']:.4f} (difference {100 * diff:+.2f} pp)"
    )
    print(
        f"median fit time: xbp {summary['xbp']['fit_seconds_median']:.2f} s, "
        f"sklearn {summary['sklearn']['fit_seconds_median']:.2f} s (ratio {ratio:.2f})"
    )
    print(f"largest relative weight difference over all seeds: {max(diffs):.1e}")
    return {
        "summary": summary,
        "time_ratio": ratio,
        "max_rel_weight_diff": max(diffs),
        "runs": rows,
    }


def large(args: argparse.Namespace) -> dict[str, Any]:
    x, y = xbp.data.make_blobs(args.large, centers=10, n_features=784, spread=4.0, seed=0)
    x = np.asarray(x, dtype=np.float32)
    params = dict(hidden_layer_sizes=(256,), max_iter=args.large_epochs, random_state=0)
    out: dict[str, Any] = {"n": args.large, "epochs": args.large_epochs, "seconds": {}}
    ref = None
    if not args.no_sklearn:
        ref = SkMLP(**params)
        out["seconds"]["sklearn-cpu"] = timed_fit(ref, x, y)
        print(f"sklearn (CPU): {out['seconds']['sklearn-cpu']:.1f} s")
    for name in args.backends.split(","):
        device = args.device if name == "torch" else None
        clf = XbpMLP(backend=name, device=device, **params)
        timed_fit(
            XbpMLP(backend=name, device=device, **dict(params, max_iter=1)), x[:2000], y[:2000]
        )
        key = f"xbp-{name}" + (f"-{device}" if device else "")
        out["seconds"][key] = timed_fit(clf, x, y)
        line = f"xbp {name} {device or ''}: {out['seconds'][key]:.1f} s"
        if ref is not None:
            line += f" ({out['seconds'][key] / out['seconds']['sklearn-cpu']:.3f}x sklearn), "
            line += f"largest relative weight difference {max_rel(clf, ref):.1e} (float32)"
        print(line)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--json", default=None)
    p.add_argument("--large", type=int, default=0, help="rows of the large problem (0: CPU bench)")
    p.add_argument("--large-epochs", type=int, default=2)
    p.add_argument("--backends", default="numpy")
    p.add_argument("--device", default="cuda", help="device for the torch backend")
    p.add_argument("--no-sklearn", action="store_true")
    args = p.parse_args()
    result = large(args) if args.large else cpu(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
