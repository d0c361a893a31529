"""Data-parallel training over MPI: equal to one process, and never a hang.

Every launch runs under a time limit that kills the whole process group:
a scenario that hangs fails its test (in 30 s) instead of the suite.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec") or str(Path(sys.executable).with_name("mpiexec"))
if not Path(MPIEXEC).exists():
    pytest.skip("mpiexec not found (pip install 'xbp[mpi]')", allow_module_level=True)


MPI_DIR = Path(__file__).with_name("mpi")
SCRIPT = MPI_DIR / "train_parallel.py"
SCENARIOS = MPI_DIR / "scenarios.py"
LIMIT = 30.0  # seconds: a scenario that has not ended by then hangs
pytestmark = pytest.mark.mpi


class Launch(NamedTuple):
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def launch(*args: str, limit: float = LIMIT) -> Launch:
    """Run ``mpiexec args`` and return what it did; kill every process of it after ``limit``."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [MPIEXEC, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # mpiexec and its ranks form one group to kill
    )
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpiexec {' '.join(args)} hung (killed after {limit:g} s):\n{err[-2000:]}")
    return Launch(proc.returncode, out, err, time.monotonic() - t0)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def xbp_train(*args: str) -> list[str]:
    return [sys.executable, "-m", "xbp", "train", "--distributed", "--quiet", *args]


# -- exactness: N ranks equal one process ----------------------------------------------------
def run(n: int, backend: str, out: Path, mode: str = "momentum", exchange: str = "default"):
    cmd = [sys.executable, str(SCRIPT), backend, str(out), mode, exchange]
    if not n:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    return launch("-n", str(n), *cmd, limit=90)


# numpy with 2 (one blocking exchange) and 3 ranks (a bucket per layer, uneven shares);
# torch and jax (staged through the host) with 2, a bucket per layer
@pytest.mark.parametrize(
    "backend,ranks,exchange",
    [
        ("numpy", 2, "blocking"),
        ("numpy", 3, "layers"),
        # torch and JAX ranks start for seconds each (JAX compiles in each): CI's run
        pytest.param("torch", 2, "layers", marks=pytest.mark.slow),
        pytest.param("jax", 2, "layers", marks=pytest.mark.slow),
    ],
)
def test_ranks_equal_one_process(tmp_path, backend: str, ranks: int, exchange: str) -> None:
    pytest.importorskip(backend)
    single, multi = tmp_path / "single.npz", tmp_path / "multi.npz"
    proc = run(0, backend, single, "single")
    assert proc.returncode == 0, proc.stderr
    proc = run(ranks, backend, multi, exchange=exchange)
    assert proc.returncode == 0, proc.stderr  # the script also checks the ranks agree bitwise
    with np.load(single) as a, np.load(multi) as b:
        for key in a.files:
            scale = np.max(np.abs(a[key]))
            assert np.max(np.abs(a[key] - b[key])) <= 1e-12 * scale, key


def test_fused_sgd_path_too(tmp_path) -> None:
    single, multi = tmp_path / "s.npz", tmp_path / "m.npz"
    assert run(0, "numpy", single, "sgd").returncode == 0
    # "sgd" mode runs with comm too (only "single" runs without); default buckets
    proc = run(3, "numpy", multi, "sgd")
    assert proc.returncode == 0, proc.stderr
    with np.load(single) as a, np.load(multi) as b:
        for key in a.files:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-12, atol=1e-15)


# -- BatchNorm: global batch statistics, N ranks equal one process -----------------------------
BATCHNORM = MPI_DIR / "train_batchnorm.py"


@pytest.fixture(scope="module")
def batchnorm_single(tmp_path_factory) -> Callable[[str, str], Path]:
    """The one-process result of train_batchnorm.py per (backend, case), made once."""
    made: dict[tuple[str, str], Path] = {}

    def single(backend: str, case: str) -> Path:
        if (backend, case) not in made:
            out = tmp_path_factory.mktemp("bn") / f"{backend}-{case}.npz"
            cmd = [sys.executable, str(BATCHNORM), backend, str(out), case, "single"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr[-2000:]
            made[(backend, case)] = out
        return made[(backend, case)]

    return single


# uneven shares, the last batch's one row on rank 0 only, validation and evaluation on the
# running statistics; rank 0's weights and running statistics broadcast to ranks built
# otherwise. JAX: compile=None under MPI runs eagerly (one process compiles)
@pytest.mark.parametrize(
    "backend,case,ranks",
    [
        ("numpy", "bn", 2),
        ("numpy", "bn", 3),
        ("numpy", "bn-dropout-weighted", 2),
        ("numpy", "bn-dropout-weighted", 3),
        pytest.param("torch", "bn-dropout-weighted", 3, marks=pytest.mark.slow),
        pytest.param("jax", "bn", 2, marks=pytest.mark.slow),
    ],
)
def test_batchnorm_ranks_equal_one_process(
    tmp_path, batchnorm_single, backend: str, case: str, ranks: int
) -> None:
    pytest.importorskip(backend)
    single = batchnorm_single(backend, case)
    multi = tmp_path / "multi.npz"
    cmd = [sys.executable, str(BATCHNORM), backend, str(multi), case, "parallel"]
    proc = launch("-n", str(ranks), *cmd, limit=150)
    assert proc.returncode == 0, proc.stderr[-2000:]  # the script checks the ranks agree bitwise
    with np.load(single) as a, np.load(multi) as b:
        assert any(k.endswith("var") for k in a.files)  # the running statistics, compared
        for key in a.files:  # weights, running statistics, history, evaluate, predict
            scale = max(float(np.max(np.abs(a[key]))), 1.0)
            assert np.max(np.abs(a[key] - b[key])) <= 1e-12 * scale, key


@pytest.mark.slow  # torch ranks
def test_batchnorm_in_low_precision_sums_statistics_across_ranks(tmp_path) -> None:
    """bf16 sums cross the host in the network's dtype; the ranks stay bitwise equal."""
    pytest.importorskip("torch")
    out = tmp_path / "bf16.npz"
    cmd = [sys.executable, str(BATCHNORM), "torch", str(out), "bn-bf16", "parallel"]
    proc = launch("-n", "2", *cmd, limit=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with np.load(out) as b:
        assert all(np.isfinite(b[key]).all() for key in b.files)


@pytest.mark.slow  # JAX ranks
def test_batchnorm_compile_true_is_one_line_on_every_rank(tmp_path) -> None:
    """compile=True with BatchNorm under MPI: every rank raises the same one-line error
    (a CollectiveError: nothing is aborted, a script can catch it)."""
    pytest.importorskip("jax")
    cmd = [sys.executable, str(BATCHNORM), "jax", str(tmp_path / "x.npz"), "bn", "compile"]
    proc = launch("-n", "2", *cmd, limit=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "aborting" not in proc.stderr
    lines = sorted(proc.stdout.splitlines())
    assert [line.partition(" caught: ")[0] for line in lines] == ["rank 0", "rank 1"]
    messages = {line.partition(" caught: ")[2] for line in lines}
    assert len(messages) == 1
    (message,) = messages
    assert message.startswith(
        "compile=True: batch statistics over processes (BatchNorm under MPI) are summed on "
        "the host in the middle of the forward pass"
    )


# -- ranks that disagree: one launch, several fits ---------------------------------------------
@pytest.fixture(scope="module")
def disagree() -> dict[str, list[str]]:
    """Lines printed per fit of scenarios.py disagree (two ranks)."""
    proc = launch("-n", "2", *python(str(SCENARIOS), "disagree"))
    assert proc.returncode == 0, proc.stderr
    lines: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        name, _, rest = line.partition(": ")
        lines.setdefault(name, []).append(rest)
    return lines


def caught(lines: list[str]) -> list[str]:
    """The message every rank caught (asserting that both did, with the same message)."""
    assert len(lines) == 2 and all(" caught: " in line for line in lines), lines
    messages = sorted(line.partition(" caught: ")[2] for line in lines)
    assert messages[0] == messages[1]
    return messages


def test_handshake_names_the_field_and_ranks(disagree) -> None:
    (message, _) = caught(disagree["epochs"])
    assert message.startswith("the ranks disagree on epochs (rank 0: 2; rank 1: 3);")
    assert "same configuration on the same data" in message


def test_handshake_names_every_differing_field(disagree) -> None:
    (message, _) = caught(disagree["several"])
    for field in (
        'architecture.dtype (rank 0: "float64"; rank 1: "float32")',
        "batch_size (rank 0: 8; rank 1: 9)",
        "seed (rank 0: 0; rank 1: 1)",
        "validation_split (rank 0: 0.1; rank 1: 0.2)",
        "train_shape",
        "validation_rows (rank 0: 4; rank 1: 8)",
    ):
        assert field in message, field
    assert "\n" not in message and "architecture.seed" not in message


def test_handshake_compares_a_data_fingerprint(disagree) -> None:
    (message, _) = caught(disagree["data"])
    assert message.startswith("the ranks disagree on data.train (rank 0: ")


@pytest.mark.parametrize("fit", ["sample_weight", "class_weight"])
def test_handshake_compares_row_and_class_weights(disagree, fit: str) -> None:
    (message, _) = caught(disagree[fit])
    assert message.startswith("the ranks disagree on data.train_weights (rank 0: "), message
    assert "data.train (" not in message  # the same rows: only the weights differ


def test_a_stop_on_one_rank_stops_all(disagree) -> None:
    # EarlyStopping stops rank 1 after epoch 2; the decision is collective
    assert sorted(disagree["stop"]) == ["rank 0 trained 2 epochs", "rank 1 trained 2 epochs"]
    assert sorted(disagree["agree"]) == ["rank 0 trained 2 epochs", "rank 1 trained 2 epochs"]


# -- failures end every rank, naming the failing one -------------------------------------------
def ended(proc: Launch, rank: int, *words: str) -> None:
    assert proc.returncode != 0, proc.stderr
    assert proc.seconds < LIMIT
    assert f"xbp: rank {rank} of 2 " in proc.stderr
    assert proc.stderr.count("aborting all ranks") == 1, proc.stderr  # one line, one rank
    for word in words:
        assert word in proc.stderr, (word, proc.stderr[-2000:])


def test_error_on_one_rank_aborts_all(tmp_path) -> None:
    proc = run(2, "numpy", tmp_path / "x.npz", "fail")
    ended(proc, 1, "rank 1 of 2 failed", "y holds class labels")


@pytest.mark.parametrize(
    "scenario,rank,words",
    [
        ("before", 1, ["rank 1 of 2 failed: FileNotFoundError", "xbp-data.csv"]),
        ("inside", 1, ["rank 1 of 2 failed: RuntimeError: callback failed on purpose"]),
        ("after", 0, ["rank 0 of 2 failed: OSError: disk full"]),
        ("stuck", 0, ["rank 0 of 2 finished, but not every rank did within 2 s"]),
        (
            "sigstop",
            0,
            [
                "rank 0 of 2 waited 2.0 s in the gradient exchange, but rank 1 did not respond "
                "(stopped, dead or stuck; the timeout is 2 s"
            ],
        ),
    ],
)
def test_failure_anywhere_ends_every_rank(scenario: str, rank: int, words: list[str]) -> None:
    ended(launch("-n", "2", *python(str(SCENARIOS), scenario)), rank, *words)


def test_one_line_when_several_ranks_wait_for_a_stopped_one() -> None:
    """Ranks 0 and 2 both time out waiting for the stopped rank 1: the lowest responding
    rank reports, naming rank 1 alone (rank 2 answered the probe), and ends the job."""
    proc = launch("-n", "3", *python(str(SCENARIOS), "sigstop"))
    assert proc.returncode != 0 and proc.seconds < LIMIT
    assert proc.stderr.count("aborting all ranks") == 1, proc.stderr
    assert "xbp: rank 0 of 3 waited 2.0 s in the gradient exchange, but rank 1 did not " in (
        proc.stderr
    )


def test_a_killed_rank_ends_the_job() -> None:
    """SIGKILL leaves no line of its own: MPI's process manager reports it and ends the rest."""
    proc = launch("-n", "2", *python(str(SCENARIOS), "sigkill"))
    assert proc.returncode != 0 and proc.seconds < LIMIT
    assert "BAD TERMINATION" in proc.stdout and "signal 9" in proc.stdout  # Hydra prints there


# -- the command line ---------------------------------------------------------------------------
def test_cli_distributed(tmp_path) -> None:
    model = tmp_path / "m.npz"
    args = ["--epochs", "3", "--layers", "16", "--save", str(model)]
    proc = launch(
        "-n", "2", sys.executable, "-m", "xbp", "train", "--distributed", *args, limit=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("test accuracy") == 1  # rank 0 alone reports
    assert proc.stdout.count("epoch   3") == 1 and model.exists()


def test_cli_ranks_that_disagree_all_exit_with_the_fields() -> None:
    rank0 = xbp_train("--epochs", "1", "--layers", "8")
    rank1 = xbp_train(
        *("--epochs", "2", "--layers", "8,4", "--batch-size", "8"),
        *("--dtype", "float32", "--seed", "1", "--val-split", "0.2"),
    )
    proc = launch("-n", "1", *rank0, ":", "-n", "1", *rank1)
    assert proc.returncode != 0 and proc.seconds < LIMIT
    # one report on every rank (mpiexec merges the ranks' streams: lines may run together)
    assert proc.stderr.count("xbp train: error: the ranks disagree on") == 2, proc.stderr
    for field in (
        "architecture.layers",
        "architecture.dtype",
        "optimizer",
        "batch_size (rank 0: 16; rank 1: 8)",
        "epochs (rank 0: 1; rank 1: 2)",
        "seed (rank 0: 0; rank 1: 1)",
        "train_shape",
        "validation_rows",
    ):
        assert field in proc.stderr, field
    assert "aborting" not in proc.stderr  # every rank found it: none needed aborting


@pytest.mark.parametrize(
    "rank1,words",
    [
        (["--epochs", "0"], ["--epochs: '0' must be > 0", "rank 1 of 2 failed (exit status 2"]),
        (["--data", "/nonexistent/xbp.csv"], ["does not exist", "rank 1 of 2 failed"]),
        (["--device", "cuda:3"], ["device='cuda:3'", "rank 1 of 2 failed"]),
    ],
    ids=["argparse", "missing-data", "device"],
)
def test_cli_failure_before_fit_on_one_rank(rank1: list[str], words: list[str]) -> None:
    proc = launch(
        "-n", "1", *xbp_train("--epochs", "1"), ":", "-n", "1", *xbp_train("--epochs", "1", *rank1)
    )
    ended(proc, 1, *words)


def test_launcher_is_read_from_the_environment() -> None:
    from xbp.parallel.mpi import launcher

    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
    assert launcher(torchrun) == "torchrun"
    assert launcher({"TORCHELASTIC_RUN_ID": "x"}) == "torchrun"
    assert launcher({**torchrun, "PMI_RANK": "1"}) == "torchrun"  # torchrun wins
    for mpi in ("PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"):
        assert launcher({mpi: "1"}) == "mpiexec"
    assert launcher({"RANK": "1", "WORLD_SIZE": "2"}) is None  # no rendezvous address
    assert launcher({}) is None


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), "60", True, None])
def test_timeout_must_be_positive_seconds(bad) -> None:
    from mpi4py import MPI

    from xbp.errors import XbpValueError
    from xbp.parallel.mpi import MPIStrategy

    with pytest.raises(XbpValueError, match=r"^timeout=.* must be a positive number of sec"):
        MPIStrategy(MPI.COMM_WORLD, timeout=bad)
    assert MPIStrategy(MPI.COMM_WORLD, timeout=0.5).timeout == 0.5


def test_default_timeout_is_the_clis() -> None:
    from xbp.cli.options import DEFAULTS
    from xbp.parallel.mpi import DEFAULT_TIMEOUT, MPIStrategy

    assert DEFAULTS["train"]["timeout"] == DEFAULT_TIMEOUT == 300.0
    from mpi4py import MPI

    assert MPIStrategy(MPI.COMM_WORLD).timeout == DEFAULT_TIMEOUT


def test_cli_timeout_flag_is_checked() -> None:
    proc = subprocess.run(xbp_train("--timeout", "0"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--timeout: '0' must be > 0" in proc.stderr, proc.stderr


def test_handshake_report_is_one_line_per_field() -> None:
    from xbp.parallel.collective import _disagreement, _ranks

    assert _ranks([0, 1, 2, 5]) == "ranks 0-2,5" and _ranks([3]) == "rank 3"
    same = {"epochs": 3, "architecture": {"seed": 0, "dtype": "float64"}}
    assert _disagreement([same, same]) is None
    seeds = [{**same, "architecture": {"seed": r, "dtype": "float64"}} for r in range(3)]
    assert _disagreement(seeds) is None  # rank 0's weights are broadcast
    other = {"epochs": 4, "architecture": {"seed": 0, "dtype": "float32"}, "extra": 1}
    message = _disagreement([same, same, other])
    assert message is not None and message.startswith(
        "the ranks disagree on epochs (ranks 0,1: 3; rank 2: 4), architecture.dtype (ranks 0,1: "
        '"float64"; rank 2: "float32"), extra (ranks 0,1: null; rank 2: 1);'
    )
