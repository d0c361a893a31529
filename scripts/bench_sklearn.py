#!/usr/bin/env python
"""xbp.sklearn against scikit-learn's MLP estimators: fit time, score, the same weights.

CPU (default): four data sets -- digits, breast cancer (classifiers), diabetes
(regressor), and a 20,000 x 50 synthetic classification set -- each fitted by
scikit-learn and by xbp on each backend of ``--backends`` (numpy, torch on the
CPU, jax), float64, same hyper-parameters and ``random_state``, 75/25 split,
features standardised. Fits are interleaved (one of each in turn, ``--repeats``
rounds) after one untimed warm-up fit each (JAX compiles there: the numbers are
"once compiled"); the table gives median fit times, their ratio to
scikit-learn's, the test score (accuracy or R^2) and the largest relative
difference of the fitted weights from scikit-learn's (xbp follows scikit-learn's
random draws and update rules, so it trains the same model). Quote numbers with
``OPENBLAS_NUM_THREADS=1`` on a quiet machine (check ``uptime``).

``--large N``: a large synthetic problem (N x 784, 10 classes, float32,
``--large-epochs`` epochs, adam, batch 200 as scikit-learn's default) on each
backend of ``--backends`` (e.g. ``cupy,torch`` with ``--device cuda``),
against scikit-learn on the CPU (its time measured once; ``--no-sklearn``
skips it).

    OPENBLAS_NUM_THREADS=1 python scripts/bench_sklearn.py [--repeats 5] [--json FILE]
    python scripts/bench_sklearn.py --large 200000 --backends cupy,torch --device cuda
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
import warnings
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SkMLP
from sklearn.neural_network import MLPRegressor as SkReg
from sklearn.preprocessing import StandardScaler

import xbp
from xbp.sklearn import MLPClassifier as XbpMLP
from xbp.sklearn import MLPRegressor as XbpReg


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


class HandMLP:
    """The floor: scikit-learn's training (adam, relu, its initialisation, batch order,
    L2 term and per-batch loss) written as one plain loop of array operations, in NumPy
    or torch (``library``), with none of either library's validation or bookkeeping; it
    runs ``epochs`` epochs (scikit-learn's ``n_iter_``). Its weights equal
    scikit-learn's, which shows it does the same work."""

    def __init__(
        self,
        classifier: bool,
        epochs: int,
        library: str = "numpy",
        hidden: int = 100,
        alpha: float = 1e-4,
    ):
        self.classifier, self.epochs, self.library = classifier, epochs, library
        self.hidden, self.alpha = hidden, alpha

    def fit(self, x: np.ndarray, y: np.ndarray) -> HandMLP:
        if self.library == "torch":
            import array_api_compat.torch as xp
            import torch

            dev = torch.asarray
        else:
            xp, dev = np, np.asarray
        rs = np.random.RandomState(0)
        if self.classifier:
            self.classes_ = np.unique(y)
            k = len(self.classes_)
            t = (y[:, None] == self.classes_[None, 1:]) if k == 2 else (y[:, None] == self.classes_)
            t = t.astype(np.float64)
        else:
            t = y.reshape(-1, 1).astype(np.float64)
        out = "identity" if not self.classifier else ("logistic" if t.shape[1] == 1 else "softmax")
        units = [x.shape[1], self.hidden, t.shape[1]]
        W, b = [], []
        for fan_in, fan_out in zip(units, units[1:]):
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            W.append(dev(rs.uniform(-bound, bound, (fan_in, fan_out))))
            b.append(dev(rs.uniform(-bound, bound, fan_out)))
        xd, td = dev(np.asarray(x, dtype=np.float64)), dev(t)
        params = W + b
        ms = [xp.zeros_like(p) for p in params]
        vs = [xp.zeros_like(p) for p in params]
        n = x.shape[0]
        bs, idx, step, alpha = min(200, n), np.arange(n), 0, self.alpha
        b1, b2, eps, lr0 = 0.9, 0.999, 1e-8, 1e-3
        tiny = float(np.finfo(np.float64).eps)
        for _ in range(self.epochs):
            idx = idx[rs.permutation(n)]
            order = dev(idx)
            for start in range(0, n, bs):
                rows = order[start : start + bs]
                xb, tb = xp.take(xd, rows, axis=0), xp.take(td, rows, axis=0)
                m = xb.shape[0]
                h = xb @ W[0]
                h += b[0]
                h = xp.maximum(h, 0.0)
                z = h @ W[1]
                z += b[1]
                if out == "softmax":
                    z -= xp.max(z, axis=1, keepdims=True)
                    z = xp.exp(z)
                    z /= xp.sum(z, axis=1, keepdims=True)
                elif out == "logistic":
                    z = 1 / (1 + xp.exp(-z))
                if out == "identity":
                    loss = 0.5 * xp.mean((tb - z) ** 2)
                else:
                    p = xp.clip(z, tiny, 1 - tiny)
                    loss = -xp.sum(tb * xp.log(p)) / m
                    if out == "logistic":
                        loss -= xp.sum((1 - tb) * xp.log(1 - p)) / m
                flat = [xp.reshape(w, (-1,)) for w in W]
                loss += 0.5 * alpha * sum(v @ v for v in flat) / m
                d = z - tb
                g1 = h.T @ d
                g1 += alpha * W[1]
                g1 /= m
                gb1 = xp.sum(d, axis=0) / m
                d = d @ W[1].T
                d *= xp.astype(h > 0, d.dtype)
                g0 = xb.T @ d
                g0 += alpha * W[0]
                g0 /= m
                gb0 = xp.sum(d, axis=0) / m
                grads = [g0, g1, gb0, gb1]
                step += 1
                lr = lr0 * np.sqrt(1 - b2**step) / (1 - b1**step)
                ms = [b1 * m_ + (1 - b1) * g for m_, g in zip(ms, grads)]
                vs = [b2 * v + (1 - b2) * g**2 for v, g in zip(vs, grads)]
                for p_, m_, v in zip(params, ms, vs):
                    p_ += -lr * m_ / (xp.sqrt(v) + eps)
        host = [np.asarray(v) for v in (*W, *b)]
        self.coefs_, self.intercepts_ = host[:2], host[2:]
        self.n_iter_, self._out = self.epochs, out
        return self

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        z = np.maximum(x @ self.coefs_[0] + self.intercepts_[0], 0) @ self.coefs_[1]
        z = z + self.intercepts_[1]
        if self._out == "identity":
            return 1 - float(np.sum((y - z[:, 0]) ** 2) / np.sum((y - y.mean()) ** 2))
        pick = (z[:, 0] > 0).astype(int) if self._out == "logistic" else z.argmax(axis=1)
        return float(np.mean(self.classes_[pick] == y))


def timed_fit_epochs(clf: Any, x: Any, y: Any) -> int:
    timed_fit(clf, x, y)
    return int(clf.n_iter_)


def datasets(epochs: int, synthetic_epochs: int) -> dict[str, tuple[Any, ...]]:
    """name -> (x, y, classifier?, max_iter)."""
    x, y = make_classification(20000, 50, n_informative=20, n_classes=5, random_state=0)
    return {
        "digits": (*load_digits(return_X_y=True), True, epochs),
        "breast_cancer": (*load_breast_cancer(return_X_y=True), True, epochs),
        "diabetes": (*load_diabetes(return_X_y=True, scaled=False), False, epochs),
        "synthetic_20000x50": (x, y, True, synthetic_epochs),
    }


def cpu(args: argparse.Namespace) -> dict[str, Any]:
    backends = [b for b in args.backends.split(",") if b]
    if "torch" in backends:
        import torch

        # one thread, as scikit-learn's BLAS under OPENBLAS_NUM_THREADS=1: torch's own
        # thread pool would otherwise compete for the cores (and spin on a busy machine)
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {}
    print(f"{'data':<20} {'estimator':<12} {'median s':>9} {'x sklearn':>9} {'score':>7} weights")
    for name, (x, y, classifier, max_iter) in datasets(args.epochs, args.synthetic_epochs).items():
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0)
        scaler = StandardScaler().fit(xtr)
        xtr, xte = scaler.transform(xtr), scaler.transform(xte)
        if not classifier:  # the regressor's target on a unit scale, as its features
            mean, std = ytr.mean(), ytr.std()
            ytr, yte = (ytr - mean) / std, (yte - mean) / std
        params = dict(hidden_layer_sizes=(100,), max_iter=max_iter, random_state=0, tol=0.0)
        sk_cls, xbp_cls = (SkMLP, XbpMLP) if classifier else (SkReg, XbpReg)
        makers: dict[str, Any] = {"sklearn": functools.partial(sk_cls, **params)}
        for b in backends:
            device = None if b == "numpy" else "cpu"
            makers[b] = functools.partial(xbp_cls, backend=b, device=device, **params)
        for make in makers.values():  # warm-up: imports, JAX's compilation
            timed_fit(make(), xtr, ytr)
        if args.hand:  # the floor, as many epochs as scikit-learn runs
            epochs = timed_fit_epochs(makers["sklearn"](), xtr, ytr)
            for lib in ("numpy", "torch"):
                if lib == "numpy" or lib in backends:
                    makers[f"{lib}-hand"] = functools.partial(HandMLP, classifier, epochs, lib)
        times: dict[str, list[float]] = {k: [] for k in makers}
        fitted: dict[str, Any] = {}
        for _ in range(args.repeats):  # interleaved
            for key, make in makers.items():
                fitted[key] = make()
                times[key].append(timed_fit(fitted[key], xtr, ytr))
        ref = statistics.median(times["sklearn"])
        rows = {}
        for key, est in fitted.items():
            med = statistics.median(times[key])
            rows[key] = {
                "fit_seconds_median": med,
                "ratio_to_sklearn": med / ref,
                "score": float(est.score(xte, yte)),
                "max_rel_weight_diff": max_rel(est, fitted["sklearn"]),
                "epochs": int(est.n_iter_),
            }
            r = rows[key]
            print(
                f"{name:<20} {key:<12} {med:>9.3f} {r['ratio_to_sklearn']:>9.2f} "
                f"{r['score']:>7.4f} {r['max_rel_weight_diff']:.1e}"
            )
        result[name] = rows
    return result


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
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds (medians)")
    p.add_argument("--epochs", type=int, default=100, help="max_iter of the small sets")
    p.add_argument("--synthetic-epochs", type=int, default=10, help="max_iter, 20000x50 set")
    p.add_argument("--json", default=None)
    p.add_argument("--large", type=int, default=0, help="rows of the large problem (0: CPU bench)")
    p.add_argument("--large-epochs", type=int, default=2)
    p.add_argument("--backends", default="numpy,torch,jax")
    p.add_argument("--threads", type=int, default=1, help="torch's CPU threads")
    p.add_argument("--device", default="cuda", help="device for the torch backend")
    p.add_argument("--no-sklearn", action="store_true")
    p.add_argument(
        "--no-hand",
        dest="hand",
        action="store_false",
        help="leave out numpy-hand/torch-hand: the same training as one plain loop (the floor)",
    )
    args = p.parse_args()
    result = large(args) if args.large else cpu(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
