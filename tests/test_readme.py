"""Every ```python block of README.md runs, in order, in one namespace, in a fresh directory.

A block whose first line is ``# README test: skip (reason)`` is not run (blocks that
need GPUs or mpiexec); the reason is reported. Set-up a block needs is stated in
the README itself (e.g. "continues the Training example above"). A block that
needs an optional library which is not installed is skipped, unless CI requires
that library through ``XBP_REQUIRE_BACKENDS``.
"""

from __future__ import annotations

import io
import re
import textwrap
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from conftest import required_backends

import xbp

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP = re.compile(r"^# README test: skip \((?P<reason>.+)\)$")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, source) of every ```python block, indented ones too."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start, body = i + 2, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            # a block inside a list item is indented like its fence
            blocks.append((start, textwrap.dedent("\n".join(body)) + "\n"))
        i += 1
    return blocks


BLOCKS = python_blocks(README.read_text())


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 5


def test_skipped_blocks_say_why() -> None:
    for line, source in BLOCKS:
        first = source.splitlines()[0] if source.strip() else ""
        if first.startswith("# README test"):
            assert SKIP.match(first), f"README.md:{line}: write '# README test: skip (reason)'"


def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    skipped = []
    for line, source in BLOCKS:
        match = SKIP.match(source.splitlines()[0])
        if match:
            skipped.append(f"README.md:{line}: {match['reason']}")
            continue
        code = compile("\n" * (line - 1) + source, str(README), "exec")
        try:
            with redirect_stdout(io.StringIO()):
                exec(code, namespace)
        except (ImportError, xbp.errors.BackendUnavailableError) as exc:
            missing = str(exc)
            if any(name in missing for name in required_backends()):
                raise
            pytest.skip(f"README.md:{line} needs an optional library: {missing}")
    assert len(skipped) < len(BLOCKS), "every block is skipped"
