"""scikit-learn's own MLP tests, run against xbp's estimators on NumPy, torch and JAX.

The test file is read from the installed scikit-learn at test time (not a frozen
copy: a new scikit-learn release is tested as it comes), its one import line of
the estimators becomes ``from xbp.sklearn import MLPClassifier, MLPRegressor``
and it runs under pytest with scikit-learn's own ``sklearn.conftest`` (its
``global_random_seed`` fixture), in a child process per backend, so JAX starts
with its 64-bit mode off as a user's JAX does. The backend is chosen by the
child's conftest, which changes the estimators' default ``backend``; nothing
else in the file changes.

Three tests read scikit-learn's private internals (``_loss_grad_lbfgs``,
``_optimizer``), which a drop-in need not have; they are deselected and their
intent is checked through public attributes in tests/test_sklearn.py
(``test_lbfgs_gradient_matches_finite_differences``,
``test_learning_rate_schedules_through_public_attributes``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import required_backends

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

IMPORT_LINE = "from sklearn.neural_network import MLPClassifier, MLPRegressor"
XBP_IMPORT = "from xbp.sklearn import MLPClassifier, MLPRegressor"

#: the tests that read scikit-learn's private attributes
PRIVATE = ("test_gradient", "test_learning_rate_warmstart", "test_adaptive_learning_rate")

CHILD_CONFTEST = """
import os

from xbp.sklearn import MLPClassifier, MLPRegressor

# the backend every estimator of the file trains on, as its default parameter
BACKEND = os.environ["XBP_UPSTREAM_BACKEND"]
for cls in (MLPClassifier, MLPRegressor):
    cls.__init__.__kwdefaults__["backend"] = BACKEND
assert MLPClassifier().backend == BACKEND == MLPRegressor().backend
"""


def upstream_source() -> str:
    """scikit-learn's test_mlp.py with its estimator import swapped for xbp's."""
    from sklearn.neural_network import tests as sk_tests

    path = Path(sk_tests.__file__).with_name("test_mlp.py")
    source = path.read_text(encoding="utf-8")
    if source.count(IMPORT_LINE) != 1:
        pytest.fail(
            f"{path} no longer imports the estimators as {IMPORT_LINE!r}; update IMPORT_LINE"
        )
    return source.replace(IMPORT_LINE, XBP_IMPORT)


# numpy in the default run; torch and JAX (minutes: JAX compiles every shape) in CI's
@pytest.mark.parametrize(
    "backend",
    [
        "numpy",
        pytest.param("torch", marks=pytest.mark.slow),
        pytest.param("jax", marks=pytest.mark.slow),
    ],
)
def test_sklearn_test_mlp_passes(backend: str, tmp_path: Path) -> None:
    try:
        __import__(backend)
    except ImportError:
        if backend in required_backends():
            pytest.fail(f"{backend} is required by XBP_REQUIRE_BACKENDS but not installed")
        pytest.skip(f"{backend} is not installed")
    (tmp_path / "test_mlp_xbp.py").write_text(upstream_source(), encoding="utf-8")
    (tmp_path / "conftest.py").write_text(CHILD_CONFTEST, encoding="utf-8")
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, XBP_UPSTREAM_BACKEND=backend)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    env.pop("JAX_ENABLE_X64", None)  # JAX as a user has it: 64-bit mode off
    deselect = [f"--deselect=test_mlp_xbp.py::{name}" for name in PRIVATE]
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "sklearn.conftest",
        # no third-party warning may reach the user (torch's read-only array warning,
        # NumPy's divide-by-zero in a log); scikit-learn's own ConvergenceWarning may
        "-W",
        "error::UserWarning",
        "-W",
        "error::RuntimeWarning",
        "-W",
        "default::sklearn.exceptions.ConvergenceWarning",
        *deselect,
        "test_mlp_xbp.py",
    ]
    run = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    tail = "\n".join((run.stdout + run.stderr).splitlines()[-40:])
    assert run.returncode == 0, f"scikit-learn's test_mlp.py on {backend}:\n{tail}"
    assert " passed" in run.stdout and "failed" not in run.stdout.splitlines()[-1], tail
