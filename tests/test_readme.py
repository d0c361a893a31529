"""Every ```python block of README.md and of the guide's pages (docs/*.md) runs.

The blocks of one file run in order, in one namespace, in a fresh directory. A block
whose first line is ``# README test: skip (reason)`` is not run (blocks that need GPUs
or mpiexec); the reason is reported. Set-up a block needs is stated in its page. A
block that needs an optional library which is not installed is skipped, unless CI
requires that library through ``XBP_REQUIRE_BACKENDS``.
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

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: the README and every page of the documentation site written in Markdown
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
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
PAGE_BLOCKS = {page: python_blocks(page.read_text()) for page in PAGES}


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 1
    # the guide's pages hold the examples the README once did
    assert sum(len(blocks) for blocks in PAGE_BLOCKS.values()) >= 15


def test_skipped_blocks_say_why() -> None:
    for page, blocks in PAGE_BLOCKS.items():
        for line, source in blocks:
            first = source.splitlines()[0] if source.strip() else ""
            if first.startswith("# README test"):
                assert SKIP.match(first), (
                    f"{_name(page)}:{line}: write '# README test: skip (reason)'"
                )


@pytest.mark.parametrize("page", [p for p in PAGES if PAGE_BLOCKS[p]], ids=_name)
def test_readme_python_blocks_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    blocks, skipped = PAGE_BLOCKS[page], []
    for line, source in blocks:
        match = SKIP.match(source.splitlines()[0])
        if match:
            skipped.append(f"{_name(page)}:{line}: {match['reason']}")
            continue
        code = compile("\n" * (line - 1) + source, str(page), "exec")
        try:
            with redirect_stdout(io.StringIO()):
                exec(code, namespace)
        except (ImportError, xbp.errors.BackendUnavailableError) as exc:
            missing = str(exc)
            if any(name in missing for name in required_backends()):
                raise
            pytest.skip(f"{_name(page)}:{line} needs an optional library: {missing}")
    if len(skipped) == len(blocks):
        pytest.skip("; ".join(skipped))
