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
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
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
# Adam, dropout and row weights, and streamed from a memory map: BACKEND:MODE:EXCHANGE:VARIANT
CASES = {
    2: [
        "numpy:sgd:blocking:plain",
        "array_api_strict:adam:default:dropout-weighted",
        "torch:sgd:layers:dropout-weighted",
        "jax:adam:layers:dropout-weighted",
    ],
    3: [
        "numpy:adam:layers:dropout-weighted",
        "array_api_strict:sgd:layers:plain",
        "torch:adam:default:dropout-weighted",
        "jax:sgd:default:plain",
        "numpy:adam:layers:mapped",
    ],
}


@pytest.fixture(scope="module")
def singles(tmp_path_factory) -> Path:
    """The one-process reference of every case, in one process (no launcher)."""
    out = tmp_path_factory.mktemp("single")
    cases = sorted({c.replace(":", ":single-", 1) for cs in CASES.values() for c in cs})
    cmd = [sys.executable, str(SCRIPT), "--cases", str(out), *cases]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [2, 3])
def test_gloo_ranks_equal_one_process(tmp_path, singles: Path, ranks: int) -> None:
    """Every case of CASES[ranks] in one launch (one start of torch, JAX and the ranks)."""
    for backend in ("array_api_strict", "torch", "jax"):
        pytest.importorskip(backend)
    proc = launch(ranks, str(SCRIPT), "--cases", str(tmp_path), *CASES[ranks], limit=300)
    assert proc.returncode == 0, proc.stderr[-3000:]  # the script checks the ranks agree
    for case in CASES[ranks]:
        name = case.replace(":", "-")
        reference = singles / (case.replace(":", "-single-", 1).replace(":", "-") + ".npz")
        assert close(reference, tmp_path / f"{name}.npz") <= 1e-12, case


@pytest.mark.slow
def test_mpi_and_torch_distributed_runs_of_one_job_are_equal(tmp_path) -> None:
    pytest.importorskip("mpi4py")
    mpiexec = shutil.which("mpiexec") or str(Path(sys.executable).with_name("mpiexec"))
    if not Path(mpiexec).exists():
        pytest.skip("mpiexec not found (pip install 'xbp[mpi]')")
    job = [str(SCRIPT), "numpy", "", "adam", "layers", "dropout-weighted"]
    by_torch, by_mpi = tmp_path / "torch.npz", tmp_path / "mpi.npz"
    job[2] = str(by_torch)
    proc = launch(3, *job, limit=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job[2] = str(by_mpi)
    proc = launch(0, command=[mpiexec, "-n", "3", sys.executable, *job], limit=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert close(by_torch, by_mpi) <= 1e-12


# -- BatchNorm's global statistics and compiled steps, as under MPI ----------------------------
@pytest.mark.slow
def test_batchnorm_statistics_summed_over_gloo_ranks(tmp_path) -> None:
    script = MPI_DIR / "train_batchnorm.py"
    one, many = tmp_path / "single.npz", tmp_path / "multi.npz"
    cmd = [sys.executable, str(script), "numpy", str(one), "bn-dropout-weighted", "single"]
    assert subprocess.run(cmd, capture_output=True, timeout=120).returncode == 0
    proc = launch(3, str(script), "numpy", str(many), "bn-dropout-weighted", "parallel")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(one) as a:
        assert any(k.endswith("var") for k in a.files)  # the running statistics, compared
    assert close(one, many) <= 1e-12


@pytest.mark.slow
def test_compiled_jax_steps_over_gloo_ranks(tmp_path) -> None:
    pytest.importorskip("jax")
    script = Path(__file__).parent / "mpi_compile" / "compiled_parallel.py"
    one, many = tmp_path / "single.npz", tmp_path / "multi.npz"
    cmd = [sys.executable, str(script), str(one), "adam-weighted", "single"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = launch(2, str(script), str(many), "adam-weighted", "parallel", limit=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert close(one, many) <= 1e-12


# -- ranks that disagree: one launch, several fits ---------------------------------------------
@pytest.fixture(scope="module")
def disagree() -> dict[str, list[str]]:
    """Lines printed per fit of scenarios.py disagree (two gloo ranks)."""
    proc = launch(2, str(SCENARIOS), "disagree")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        name, _, rest = line.partition(": ")
        lines.setdefault(name, []).append(rest)
    return lines


def caught(lines: list[str]) -> str:
    """The message both ranks caught (asserting that both did, with the same message)."""
    assert len(lines) == 2 and all(" caught: " in line for line in lines), lines
    messages = {line.partition(" caught: ")[2] for line in lines}
    assert len(messages) == 1
    return messages.pop()


@pytest.mark.parametrize(
    "fit,field",
    [
        ("epochs", "epochs (rank 0: 2; rank 1: 3)"),
        ("layers", "architecture.layers (rank 0: [[3, 4"),
        ("several", "seed (rank 0: 0; rank 1: 1)"),
        ("data", "data.train (rank 0: "),
        ("sample_weight", "data.train_weights (rank 0: "),
        ("class_weight", "data.train_weights (rank 0: "),
    ],
)
def test_handshake_under_torchrun(disagree, fit: str, field: str) -> None:
    message = caught(disagree[fit])
    assert message.startswith("the ranks disagree on ") and field in message, message
    if fit.endswith("weight"):  # the same rows: only the weights differ
        assert "data.train (" not in message


def test_a_stop_on_one_gloo_rank_stops_all(disagree) -> None:
    assert sorted(disagree["stop"]) == ["rank 0 trained 2 epochs", "rank 1 trained 2 epochs"]
    assert sorted(disagree["agree"]) == ["rank 0 trained 2 epochs", "rank 1 trained 2 epochs"]


# -- failures and silence end every rank, naming the rank --------------------------------------
@pytest.mark.parametrize(
    "scenario,line",
    [
        ("before", "xbp: rank 1 of 2 failed: FileNotFoundError"),
        # "before" in the default run; the others (as under mpiexec there) in CI's
        pytest.param(
            "inside",
            "xbp: rank 1 of 2 failed: RuntimeError: callback failed on purpose",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "after", "xbp: rank 0 of 2 failed: OSError: disk full", marks=pytest.mark.slow
        ),
        pytest.param(
            "stuck",
            "xbp: rank 0 of 2 finished, but not every rank did within 2 s",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "sigstop",
            "xbp: rank 0 of 2 waited 2.0 s in the gradient exchange, but rank 1 did not respond "
            "(stopped, dead or stuck; the timeout is 2 s",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_failure_or_silence_ends_every_gloo_rank(scenario: str, line: str) -> None:
    proc = launch(2, str(SCENARIOS), scenario)
    assert proc.returncode != 0
    mine = ours(proc)
    assert len(mine) == 1 and mine[0].startswith(line), proc.stderr[-3000:]
    assert mine[0].endswith("; aborting all ranks")


@pytest.mark.slow
def test_a_killed_gloo_rank_ends_the_job() -> None:
    """SIGKILL leaves no line of its own: torchrun reports the dead rank and ends the rest."""
    proc = launch(2, str(SCENARIOS), "sigkill")
    assert proc.returncode != 0
    assert "rank      : 1 (local_rank: 1)" in proc.stderr and "Signal 9" in proc.stderr


# -- the command line: torchrun -m xbp train --distributed ----------------------------------
@pytest.mark.slow
def test_cli_distributed_under_torchrun(tmp_path) -> None:
    model = tmp_path / "m.npz"
    checkpoint = tmp_path / "ck.npz"
    args = ["--epochs", "2", "--layers", "16", "--save", str(model), "--timeout", "30"]
    args += ["--checkpoint", str(checkpoint)]
    proc = launch(2, "-m", "xbp", "train", "--distributed", *args, limit=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("test accuracy") == 1  # rank 0 alone reports
    assert proc.stdout.count("epoch   2") == 1 and model.exists()
    # rank 0's checkpoint resumes under torchrun: two more epochs, from epoch 3
    more = ["--epochs", "4", "--extend-schedule", "--resume", str(checkpoint), "--timeout", "30"]
    proc = launch(2, "-m", "xbp", "train", "--distributed", *more, limit=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch   3") == 1 and proc.stdout.count("epoch   1 ") == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "rank1,words",
    [
        (["--epochs", "0"], ["--epochs: '0' must be > 0", "rank 1 of 2 failed (exit status 2"]),
        (["--data", "/nonexistent/xbp.csv"], ["does not exist", "rank 1 of 2 failed"]),
        (["--epochs", "2"], ["the ranks disagree on epochs (rank 0: 1; rank 1: 2)"]),
        (["--seed", "3"], ["seed (rank 0: 0; rank 1: 3)"]),
    ],
    ids=["argparse", "missing-data", "epochs", "seed"],
)
def test_cli_ranks_that_fail_or_disagree_under_torchrun(rank1: list[str], words: list[str]):
    train = ["train", "--distributed", "--quiet", "--epochs", "1", "--timeout", "10"]
    proc = launch(2, str(MPI_DIR / "cli_ranks.py"), *train, "--", *train, *rank1)
    assert proc.returncode != 0
    for word in words:
        assert word in proc.stderr, (word, proc.stderr[-3000:])


# -- one process: what is refused ---------------------------------------------------------------
def test_without_a_launcher_the_strategy_says_how_to_launch(monkeypatch) -> None:
    from xbp.errors import XbpValueError
    from xbp.parallel.torchdist import TorchDistributedStrategy

    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(
        XbpValueError,
        match=r"RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not set; launch with torchrun",
    ):
        TorchDistributedStrategy()
    with pytest.raises(XbpValueError, match=r"^timeout=-1 must be a positive number"):
        TorchDistributedStrategy(timeout=-1)


def test_a_group_without_gloo_is_refused(monkeypatch) -> None:
    """A caller's NCCL-only group cannot sum host arrays: said before any collective."""
    import torch.distributed as dist

    from xbp.errors import XbpValueError
    from xbp.parallel.torchdist import TorchDistributedStrategy

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "nccl")
    with pytest.raises(XbpValueError, match=r"backend is 'nccl': xbp also sums host arrays"):
        TorchDistributedStrategy()
    monkeypatch.setattr(dist, "get_backend", lambda *a: "cpu:gloo,cuda:nccl")
    monkeypatch.setattr(dist, "get_rank", lambda *a: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 1)
    assert TorchDistributedStrategy(timeout=5).group_backend == "cpu:gloo,cuda:nccl"


def test_the_transport_reads_device_buffers_only_on_cuda_with_nccl() -> None:
    """Host (kDLCPU) arrays are staged through NumPy whatever the group; a layer without
    parameters first (Standardize) does not confuse the check."""
    from xbp.parallel.torchdist import TorchDistributedStrategy

    strategy = TorchDistributedStrategy.__new__(TorchDistributedStrategy)
    net = xbp_net()
    for backend in ("gloo", "cpu:gloo,cuda:nccl"):
        strategy.group_backend = backend
        assert strategy._device_buffers_for(net) is False  # noqa: SLF001

    class Cuda:
        def __dlpack_device__(self):
            return (2, 0)

    net.params[1] = {"W": Cuda()}
    strategy.group_backend = "gloo"
    assert strategy._device_buffers_for(net) is False  # noqa: SLF001
    strategy.group_backend = "cpu:gloo,cuda:nccl"
    net.params[:] = [{}, {"W": Cuda()}]
    assert strategy._device_buffers_for(net) is True  # noqa: SLF001


def xbp_net():
    import xbp

    return xbp.mlp([3, 4, 2], backend="torch", standardize=True, seed=0)
