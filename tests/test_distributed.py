"""Data-parallel training over MPI equals one process on the same global batches."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec") or str(Path(sys.executable).with_name("mpiexec"))
if not Path(MPIEXEC).exists():
    pytest.skip("mpiexec not found (pip install 'xbp[mpi]')", allow_module_level=True)

SCRIPT = Path(__file__).with_name("mpi") / "train_parallel.py"
pytestmark = pytest.mark.mpi


def run(n: int, backend: str, out: Path, mode: str = "momentum") -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), backend, str(out), mode]
    if n:
        cmd = [MPIEXEC, "-n", str(n), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


# numpy with 2 and 3 ranks; torch and jax (staged through the host) with 2
@pytest.mark.parametrize("backend,ranks", [("numpy", 2), ("numpy", 3), ("torch", 2), ("jax", 2)])
def test_ranks_equal_one_process(tmp_path, backend: str, ranks: int) -> None:
    pytest.importorskip(backend)
    single, multi = tmp_path / "single.npz", tmp_path / "multi.npz"
    proc = run(0, backend, single, "single")
    assert proc.returncode == 0, proc.stderr
    proc = run(ranks, backend, multi)
    assert proc.returncode == 0, proc.stderr
    with np.load(single) as a, np.load(multi) as b:
        for key in a.files:
            scale = np.max(np.abs(a[key]))
            assert np.max(np.abs(a[key] - b[key])) <= 1e-12 * scale, key


def test_fused_sgd_path_too(tmp_path) -> None:
    single, multi = tmp_path / "s.npz", tmp_path / "m.npz"
    assert run(0, "numpy", single, "sgd").returncode == 0
    # "sgd" mode runs with comm too (only "single" runs without)
    proc = run(3, "numpy", multi, "sgd")
    assert proc.returncode == 0, proc.stderr
    with np.load(single) as a, np.load(multi) as b:
        for key in a.files:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-12, atol=1e-15)


def test_error_on_one_rank_aborts_all(tmp_path) -> None:
    proc = run(2, "numpy", tmp_path / "x.npz", "fail")
    assert proc.returncode != 0
    assert "rank 1 of 2 failed" in proc.stderr and "aborting all ranks" in proc.stderr
    assert "y holds class labels" in proc.stderr


def test_cli_distributed(tmp_path) -> None:
    model = tmp_path / "m.npz"
    proc = subprocess.run(
        [
            MPIEXEC,
            "-n",
            "2",
            sys.executable,
            "-m",
            "xbp",
            "train",
            "--distributed",
            "--epochs",
            "3",
            "--layers",
            "16",
            "--save",
            str(model),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("test accuracy") == 1  # rank 0 alone reports
    assert proc.stdout.count("epoch   3") == 1 and model.exists()
