#!/usr/bin/env python
"""Data at scale: streamed epochs, bounded-memory predict/evaluate, CSV parsing.

Every measurement runs in a fresh Python process (``--child``), so its peak
memory is its own: ``VmHWM`` (peak resident set) and the peak of ``RssAnon``
(anonymous memory, sampled every 2 ms) from ``/proc/self/status``. Pages of a
memory-mapped file count in VmHWM while they are mapped but belong to the
kernel's page cache (clean, dropped under pressure); ``RssAnon`` is what the
process itself holds. Timings are medians of ``--repeat`` runs.

    python scripts/bench_data.py                      # all three parts
    python scripts/bench_data.py --parts stream --cap-mib 256
    python scripts/bench_data.py --parts predict --rows 100000,1000000
    python scripts/bench_data.py --parts csv --old-tree /path/to/older/xbp

Parts:
  stream   one epoch over a float32 memory-mapped .npy at least 3x --cap-mib,
           against the same array in memory (rows/s, peak memory)
  predict  xbp.predict / xbp.evaluate on 100k and 1M rows: peak memory growth
           (and the old whole-set net.predict for comparison)
  csv      an MNIST-shaped CSV (60000 x 785 integers) read by xbp.data.load_csv
           (pandas engine, numpy fallback), pandas.read_csv itself and, with
           --old-tree, the previous xbp
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

WORK = Path(os.environ.get("XBP_BENCH_DIR", "/tmp/xbp_bench_data"))


# -- measuring a child process ------------------------------------------------------------
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class _AnonPeak:
    """Samples RssAnon in a thread; ``peak`` is the largest value seen."""

    def __init__(self) -> None:
        self.peak = _status("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _status("RssAnon"))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _status("RssAnon"))


def _child(kind: str, args: list[str]) -> dict[str, float]:
    import xbp

    sampler = _AnonPeak()
    out: dict[str, float] = {"baseline_hwm": _status("VmHWM")}  # the interpreter, numpy, xbp
    if kind in ("stream", "memory"):
        path, batch = args[0], int(args[1])
        y = np.load(path.replace("x.npy", "y.npy"))
        x = np.load(path, mmap_mode="r") if kind == "stream" else np.load(path)
        net = xbp.mlp([x.shape[1], 64, 10], activation="relu", loss="cross_entropy",
                      dtype="float32", seed=0)  # fmt: skip
        hist = xbp.fit(net, x, y, epochs=1, batch_size=batch, progress=False, optimizer="sgd",
                       learning_rate=0.05)  # fmt: skip
        out["seconds"] = hist["seconds"][0]
        out["rows_per_s"] = x.shape[0] / out["seconds"]
        out["loss"] = hist["loss"][0]
    elif kind in ("predict", "evaluate", "predict-whole"):
        rows = int(args[0])
        x = np.random.default_rng(0).random((rows, 32))  # float64, the input itself
        y = np.arange(rows) % 10
        net = xbp.mlp([32, 256, 256, 10], activation="relu", loss="cross_entropy", seed=0)
        base_hwm, base_anon = _status("VmHWM"), _status("RssAnon")
        t0 = time.perf_counter()
        if kind == "predict":
            result = xbp.predict(net, x, batch_size=8192)
            out["output_bytes"] = result.nbytes
        elif kind == "evaluate":
            xbp.evaluate(net, x, y, batch_size=8192)
            out["output_bytes"] = 0
        else:
            result = net.predict(x)
            out["output_bytes"] = result.nbytes
        out["seconds"] = time.perf_counter() - t0
        out["growth_hwm"] = _status("VmHWM") - base_hwm
        out["growth_anon"] = sampler.stop() - base_anon
    elif kind.startswith("csv-"):
        path = args[0]
        t0 = time.perf_counter()
        if kind == "csv-pandas":
            import pandas as pd

            frame = pd.read_csv(path, header=None)
            out["rows"] = len(frame)
        elif kind == "csv-old":
            x, y = xbp.data.load_csv(path, 0)
            out["rows"] = len(x)
        else:
            engine = kind.split("-")[1]  # csv-pandas32 -> pandas
            engine = engine.rstrip("0123456789")
            dtype = "float32" if kind.endswith("32") else "float64"
            x, y = xbp.data.load_csv(path, 0, dtype=dtype, engine=engine)
            out["rows"] = len(x)
        out["seconds"] = time.perf_counter() - t0
    out["vm_hwm"] = _status("VmHWM")
    out["anon_peak"] = max(sampler.stop(), out.get("anon_peak", 0))
    return out


def run_child(kind: str, *args: str, tree: str | None = None) -> dict[str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = tree or str(Path(__file__).resolve().parent.parent)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {kind} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_of(repeat: int, kind: str, *args: str, tree: str | None = None) -> dict[str, float]:
    runs = [run_child(kind, *args, tree=tree) for _ in range(repeat)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def mib(n: float) -> str:
    return f"{n / 2**20:8.1f} MiB"


# -- the parts ----------------------------------------------------------------------------------
def part_stream(cap_mib: int, repeat: int, batch: int) -> dict[str, object]:
    WORK.mkdir(parents=True, exist_ok=True)
    width = 784
    rows = -(-3 * cap_mib * 2**20 // (width * 4)) + 1  # strictly more than 3x the cap
    path = WORK / "x.npy"
    if not path.exists() or np.load(path, mmap_mode="r").shape != (rows, width):
        x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, width))
        rng = np.random.default_rng(0)
        for s in range(0, rows, 65536):  # written in pieces: never all in memory
            e = min(s + 65536, rows)
            x[s:e] = rng.random((e - s, width), dtype=np.float32)
        x.flush()
        del x
        np.save(WORK / "y.npy", np.random.default_rng(1).integers(0, 10, rows))
    size = path.stat().st_size
    run_child("stream", str(path), str(batch))  # warm the page cache once
    runs: dict[str, list[dict[str, float]]] = {"stream": [], "memory": []}
    for _ in range(repeat):  # interleaved: a busy machine slows both alike
        for kind in runs:
            runs[kind].append(run_child(kind, str(path), str(batch)))
    streamed, memory = (
        {k: statistics.median(r[k] for r in runs[kind]) for k in runs[kind][0]}
        for kind in ("stream", "memory")
    )
    ratio = memory["rows_per_s"] / streamed["rows_per_s"]
    print(f"stream: {rows} rows x {width} float32 = {mib(size)} on disk; cap {cap_mib} MiB "
          f"(file / cap = {size / (cap_mib * 2**20):.2f})")  # fmt: skip
    for name, r in (("memory map", streamed), ("in memory", memory)):
        print(f"  {name:10s} {r['seconds']:7.2f} s/epoch  {r['rows_per_s']:10.0f} rows/s  "
              f"VmHWM {mib(r['vm_hwm'])}  peak RssAnon {mib(r['anon_peak'])}")  # fmt: skip
    print(f"  in-memory throughput / streamed throughput = {ratio:.2f} (target <= 1.3)")
    print(f"  streamed VmHWM {mib(streamed['vm_hwm'])} (after imports "
          f"{mib(streamed['baseline_hwm'])}) vs cap {cap_mib} MiB: "
          f"{'under' if streamed['vm_hwm'] < cap_mib * 2**20 else 'OVER'}")  # fmt: skip
    return {"rows": rows, "file_bytes": size, "cap_mib": cap_mib, "streamed": streamed,
            "in_memory": memory, "slowdown": ratio}  # fmt: skip


def part_predict(rows_list: list[int], repeat: int) -> dict[str, object]:
    results: dict[str, object] = {}
    print("predict/evaluate: growth of peak memory during the call (input already in memory)")
    for rows in rows_list:
        for kind in ("predict", "evaluate", "predict-whole"):
            if kind == "predict-whole" and rows > 200_000:
                continue  # the old path holds every layer's output: GBs at 1M rows
            r = median_of(repeat, kind, str(rows))
            results[f"{kind}-{rows}"] = r
            extra = r["growth_anon"] - r["output_bytes"]
            print(
                f"  {kind:13s} {rows:>8} rows  {r['seconds']:6.2f} s  "
                f"VmHWM +{mib(r['growth_hwm'])}  RssAnon peak +{mib(r['growth_anon'])}  "
                f"beyond the result {mib(extra)}"
            )
    return results


def part_csv(repeat: int, old_tree: str | None) -> dict[str, object]:
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "mnist_shaped.csv"
    if not path.exists():
        rng = np.random.default_rng(0)
        values = rng.integers(0, 256, (60000, 785))
        values[:, 0] %= 10
        np.savetxt(path, values, delimiter=",", fmt="%d")
    print(f"csv: {path} ({mib(path.stat().st_size)}, 60000 x 785 integers)")
    kinds = ["csv-pandas", "csv-pandas64", "csv-pandas32", "csv-numpy64", "csv-numpy32"]
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for _ in range(repeat):  # interleaved: a busy machine slows every parser alike
        for kind in kinds:
            runs[kind].append(run_child(kind, str(path)))
    results: dict[str, object] = {
        kind: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for kind, rs in runs.items()
    }
    if old_tree:
        results["csv-old"] = median_of(1, "csv-old", str(path), tree=old_tree)
    ref = results["csv-pandas"]["seconds"]  # type: ignore[index]
    names = {
        "csv-pandas": "pandas.read_csv",
        "csv-pandas64": "load_csv pandas float64",
        "csv-pandas32": "load_csv pandas float32",
        "csv-numpy64": "load_csv numpy float64",
        "csv-numpy32": "load_csv numpy float32",
        "csv-old": "load_csv before (old tree)",
    }
    for kind, r in results.items():
        seconds, hwm = r["seconds"], r["vm_hwm"]  # type: ignore[index]
        print(
            f"  {names[kind]:28s} {seconds:7.2f} s  ({seconds / ref:4.2f}x pandas)  "
            f"VmHWM {mib(hwm)}"
        )
    return results


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2], sys.argv[3:])))
        return
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--parts", default="stream,predict,csv")
    p.add_argument("--cap-mib", type=int, default=256, help="memory cap for the stream part")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--rows", default="100000,1000000", help="predict part: row counts")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--old-tree", default=None, help="a checkout of an older xbp (csv part)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    report: dict[str, object] = {}
    parts = args.parts.split(",")
    if "stream" in parts:
        report["stream"] = part_stream(args.cap_mib, args.repeat, args.batch_size)
    if "predict" in parts:
        report["predict"] = part_predict([int(r) for r in args.rows.split(",")], args.repeat)
    if "csv" in parts:
        report["csv"] = part_csv(args.repeat, args.old_tree)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
