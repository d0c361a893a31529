"""Data-parallel training over torch.distributed (gloo) under torchrun: equal to one
process and to MPI, and never a hang.

Every launch runs under a time limit that kills the whole process group (a
stopped rank included): a scenario that hangs fails its test instead of the
suite. The scenario scripts are tests/mpi/'s, which run under either launcher.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():
    pytest.skip("this PyTorch has no torch.distributed", allow_module_level=True)
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
if not Path(TORCHRUN).exists():
    pytest.skip("torchrun not found (it comes with PyTorch)", allow_module_level=True)

MPI_DIR = Path(__file__).with_name("mpi")
SCRIPT = MPI_DIR / "train_parallel.py"
SCENARIOS = MPI_DIR / "scenarios.py"
LIMIT = 60.0  # seconds: a launch that has not ended by then hangs
pytestmark = pytest.mark.mpi


class Launch(NamedTuple):
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def launch(n: int, *args: str, limit: float = LIMIT, command: list[str] | None = None) -> Launch:
    """``torchrun --nproc_per_node n args``; every process of it is killed afterwards."""
    t0 = time.monotonic()
    cmd = command or [TORCHRUN, "--standalone", "--nproc_per_node", str(n), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,  # torchrun and its ranks form one group to kill
    )
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} hung (killed after {limit:g} s):\n{err[-3000:]}")
    finally:
        try:  # nothing outlives the test (a stopped rank that torchrun left behind)
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    return Launch(proc.returncode, out, err, time.monotonic() - t0)


def ours(proc: Launch) -> list[str]:
    """xbp's own lines on stderr (torchrun adds its warnings and its failure report)."""
    return [line for line in proc.stderr.splitlines() if line.startswith("xbp")]


# -- exactness: N gloo ranks equal one process, and equal MPI -------------------------------
def single(backend: str, out: Path, mode: str, variant: str) -> None:
    """The one-process reference (no launcher)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), backend, str(out), f"single-{mode}", "default", variant]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


def close(a_path: Path, b_path: Path) -> float:
    """Largest difference relative to each array's largest value."""
    worst = 0.0
    with np.load(a_path) as a, np.load(b_path) as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            scale = max(float(np.max(np.abs(a[key]))), 1e-300)
            worst = max(worst, float(np.max(np.abs(a[key] - b[key]))) / scale)
    return worst


# every CPU backend with 2 and 3 ranks (103 rows, batches of 16: uneven shares), SGD and
# Adam, dropout and row weights
@pytest.mark.parametrize(
    "backend,ranks,mode,variant,exchange",
    [
        ("numpy", 2, "sgd", "plain", "blocking"),
        ("numpy", 3, "adam", "dropout-weighted", "layers"),
        ("array_api_strict", 2, "adam", "dropout-weighted", "default"),
        ("array_api_strict", 3, "sgd", "plain", "layers"),
        ("torch", 2, "sgd", "dropout-weighted", "layers"),
        ("torch", 3, "adam", "dropout-weighted", "default"),
        ("jax", 2, "adam", "dropout-weighted", "layers"),
        ("jax", 3, "sgd", "plain", "default"),
    ],
)
def test_gloo_ranks_equal_one_process(
    tmp_path, backend: str, ranks: int, mode: str, variant: str, exchange: str
) -> None:
    pytest.importorskip(backend)
    one, many = tmp_path / "single.npz", tmp_path / "multi.npz"
    single(backend, one, mode, variant)
    proc = launch(ranks, str(SCRIPT), backend, str(many), mode, exchange, variant, limit=150)
    assert proc.returncode == 0, proc.stderr[-3000:]  # the script checks the ranks agree
    assert close(one, many) <= 1e-12
