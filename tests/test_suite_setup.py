"""How the suite runs: ``python -m pytest`` leaves out the slow tests and says how to run
them; CI runs every test (docs/architecture.md, "Running the tests")."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import DEFAULT_MARKEXPR

ROOT = Path(__file__).resolve().parents[1]


def addopts() -> list[str]:
    """pyproject.toml's [tool.pytest.ini_options] addopts, split as pytest splits it."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r"^addopts = \"(.*)\"$", text, flags=re.MULTILINE)
    assert match, 'pyproject.toml: addopts = "..." not found'
    return shlex.split(match.group(1))


def test_the_default_leaves_out_what_conftest_counts() -> None:
    opts = addopts()
    assert opts[opts.index("-m") + 1] == DEFAULT_MARKEXPR == "not slow"
    assert opts[opts.index("-n") + 1] == "auto" and "loadgroup" in opts


def test_ci_runs_every_test() -> None:
    script = (ROOT / "ci" / "cpu.sh").read_text(encoding="utf-8")
    runs = [line for line in script.splitlines() if line.startswith("python -m pytest")]
    assert runs == ['python -m pytest -m ""'], runs


def test_the_run_says_how_many_slow_tests_it_left_out_and_how_to_run_them() -> None:
    # one process (-n 0), collection only: the count and the line, not the tests
    cmd = [sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "--co", "-q"]
    cmd.append("tests/test_reliability.py")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    slow = "test_sigkill_at_random_moments_always_leaves_a_resumable_checkpoint"
    assert slow not in proc.stdout
    line = (
        "xbp: 1 test marked slow was not run (multi-process and end-to-end runs); run every"
        ' test, as CI does, with: python -m pytest -m ""'
    )
    assert line in proc.stdout.splitlines(), proc.stdout[-2000:]


def test_m_empty_runs_every_test() -> None:
    cmd = [sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "--co", "-q"]
    cmd += ["-m", "", "tests/test_reliability.py"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "test_sigkill_at_random_moments_always_leaves_a_resumable_checkpoint" in proc.stdout
    assert "marked slow" not in proc.stdout
