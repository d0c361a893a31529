#!/usr/bin/env python
"""xbp.sklearn.MLPClassifier against scikit-learn's MLPClassifier on digits.

Same hyper-parameters, same data split, same dtype (float64), several seeds,
one process; prints accuracy and fit time for each and the ratios.

    python scripts/bench_sklearn.py [--seeds 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLP

import xbp
from xbp.sklearn import MLPClassifier as XbpMLP


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args()
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
    for seed in range(args.seeds):
        for name, cls in (("sklearn", SkMLP), ("xbp", XbpMLP)):
            clf = cls(random_state=seed, **params)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                t0 = time.perf_counter()
                clf.fit(xtr, ytr)
                rows[name]["s"].append(time.perf_counter() - t0)
            rows[name]["acc"].append(clf.score(xte, yte))
            print(
                f"seed {seed} {name:<8} accuracy {rows[name]['acc'][-1]:.4f} "
                f"fit {rows[name]['s'][-1]:.2f} s ({clf.n_iter_} epochs)"
            )
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
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "time_ratio": ratio, "runs": rows}, f, indent=2)


if __name__ == "__main__":
    main()
