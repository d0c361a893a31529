"""The example gallery (``examples/plot_*.py``) runs, each script on its own.

The documentation build executes every example in full (sphinx-gallery). Here
each runs in a child process with ``XBP_EXAMPLES_QUICK=1``, which every script
honours by shrinking its work to a few seconds, so the test suite checks that
they run (their own asserts included: gradients, weights and outputs compared
with scikit-learn, onnxruntime, finite differences) without repeating the
build's cost. An example whose optional packages are missing is skipped,
naming them.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("plot_*.py"))
#: seconds one quick example may take before it counts as hung (a busy machine included)
TIMEOUT = 600
#: files libraries write into the temporary directory themselves (importing onnxruntime
#: writes ``$TMPDIR/.ses``)
THIRD_PARTY_TEMP = {".ses"}


def test_the_gallery_has_its_examples() -> None:
    # sphinx-gallery needs the folder's README.rst; the issue asks for eleven examples
    assert (ROOT / "examples" / "README.rst").is_file()
    assert len(EXAMPLES) >= 11, [p.name for p in EXAMPLES]


def imported_modules(node: ast.AST) -> set[str]:
    """The top-level packages that the ``import`` statements in ``node`` name."""
    names = set()
    for inner in ast.walk(node):
        if isinstance(inner, ast.Import):
            names.update(alias.name.split(".")[0] for alias in inner.names)
        elif isinstance(inner, ast.ImportFrom) and inner.module and not inner.level:
            names.add(inner.module.split(".")[0])
    return names


def missing_packages(path: Path) -> list[str]:
    """Packages a script imports that are not installed, except those imported inside a
    ``try`` (the script handles their absence itself) and xbp."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            for inner in node.body:
                guarded |= imported_modules(inner)
    needed = imported_modules(tree) - guarded - {"xbp"}
    return sorted(m for m in needed if importlib.util.find_spec(m) is None)


def test_missing_packages_skip_an_example_unless_guarded(tmp_path: Path) -> None:
    script = tmp_path / "plot_x.py"
    script.write_text(
        "import os\nimport no_such_package_a.sub\nfrom no_such_package_b import c\n"
        "import xbp\ntry:\n    import no_such_package_c\nexcept ImportError:\n    pass\n",
        encoding="utf-8",
    )
    assert missing_packages(script) == ["no_such_package_a", "no_such_package_b"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_a_gallery_script(path: Path) -> None:
    # sphinx-gallery takes the module docstring's first line, underlined, as the title
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False)
    assert doc is not None, f"{path.name} has no module docstring"
    lines = doc.strip("\n").splitlines()
    assert len(lines) >= 3 and set(lines[1]) == {"="} and len(lines[1]) == len(lines[0]), (
        f"{path.name}: the docstring must open with a title underlined by '=' of its length"
    )
    text = path.read_text(encoding="utf-8")
    assert "XBP_EXAMPLES_QUICK" in text, f"{path.name} does not honour XBP_EXAMPLES_QUICK"
    assert "# %%" in text, f"{path.name} has no '# %%' cells"


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(path: Path, tmp_path: Path) -> None:
    missing = missing_packages(path)
    if missing:
        pytest.skip(f"{path.name} needs {', '.join(missing)}")
    work, temp = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    temp.mkdir()
    env = dict(os.environ)
    env.update(
        MPLBACKEND="Agg",
        XBP_EXAMPLES_QUICK="1",
        # small products: one BLAS thread is faster, and the machine is shared
        OPENBLAS_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
        TMPDIR=str(temp),  # the examples' temporary files, to check they are removed
    )
    done = subprocess.run(
        [sys.executable, str(path)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, f"{path.name} failed:\n{done.stderr[-4000:]}"
    assert done.stdout.strip(), f"{path.name} printed nothing"
    # nothing is left where it ran, nor in the temporary directory (200 MB in the
    # streaming example at full size)
    assert sorted(p.name for p in work.iterdir()) == [], f"{path.name} left files behind"
    left = sorted(p.name for p in temp.iterdir() if p.name not in THIRD_PARTY_TEMP)
    assert left == [], f"{path.name} left temporary files"
