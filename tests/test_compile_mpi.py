"""Compiled steps under MPI: N ranks equal one eager process (float64, within 1e-12)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("mpi4py")

SCRIPT = Path(__file__).parent / "mpi_compile" / "compiled_parallel.py"


def _run(args: list[str], timeout: int = 120) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.mpi
@pytest.mark.slow  # JAX ranks: each compiles its steps
@pytest.mark.parametrize("opt", ["adam", "sgd", "adam-weighted"])
def test_compiled_ranks_equal_one_eager_process(tmp_path: Path, opt: str) -> None:
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("mpiexec is not on PATH (pip install 'xbp[mpi]')")
    single, parallel = tmp_path / "single.npz", tmp_path / "parallel.npz"
    _run([sys.executable, str(SCRIPT), str(single), opt, "single"])
    _run([mpiexec, "-n", "2", sys.executable, str(SCRIPT), str(parallel), opt, "parallel"])
    a, b = np.load(single), np.load(parallel)
    for key in a.files:
        scale = float(np.max(np.abs(a[key]))) or 1.0
        assert float(np.max(np.abs(a[key] - b[key]))) / scale <= 1e-12, key
