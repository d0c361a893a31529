"""Every public name has a numpydoc docstring with a runnable example, and every example runs.

The public names are the ``__all__`` of the modules a user imports (``MODULES``); the
API reference (docs/api/*.rst) renders exactly these, and a test here checks that it
names every one. Each example runs as a doctest in a fresh directory, with the
names its lines import; one that needs an optional library that is not installed is
skipped, unless CI requires that library through ``XBP_REQUIRE_BACKENDS``.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import re
from pathlib import Path

import pytest
from conftest import required_backends

MODULES = (
    "xbp",
    "xbp.nn",
    "xbp.train",
    "xbp.optim",
    "xbp.data",
    "xbp.metrics",
    "xbp.sklearn",
    "xbp.io",
    "xbp.tools",
    "xbp.parallel",
    "xbp.backends",
    "xbp.errors",
)
API = Path(__file__).resolve().parents[1] / "docs" / "api"


def public_names() -> dict[str, object]:
    """Full name -> object, each object once (under the first module that exports it)."""
    seen: set[int] = set()
    names: dict[str, object] = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            names[f"{module_name}.{name}"] = obj
    return names


PUBLIC = public_names()
# constants carry a ``#:`` comment in the source instead of a docstring
DOCUMENTED = {name: obj for name, obj in PUBLIC.items() if callable(obj)}


def _tests(name: str) -> list[doctest.DocTest]:
    obj = PUBLIC[name] if name in PUBLIC else importlib.import_module(name)
    finder = doctest.DocTestFinder(recurse=inspect.isclass(obj), exclude_empty=True)
    module = inspect.getmodule(obj)
    return [t for t in finder.find(obj, name, module=module, globs={}) if t.examples]


def test_every_public_name_has_an_example() -> None:
    missing = [
        name
        for name, obj in DOCUMENTED.items()
        if ">>>" not in (inspect.getdoc(obj) or "")
        or "Examples\n--------" not in (inspect.getdoc(obj) or "")
    ]
    assert not missing, f"no 'Examples' section with a >>> example: {missing}"


def test_the_api_reference_names_every_public_name() -> None:
    text = "\n".join(p.read_text() for p in sorted(API.glob("*.rst")))
    pages = {m: re.search(rf"\.\. currentmodule:: {re.escape(m)}\n", text) for m in MODULES}
    assert all(pages.values()), [m for m, page in pages.items() if not page]
    missing = []
    for module_name in MODULES:
        page = (API / f"{module_name.replace('.', '_')}.rst").read_text()
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if inspect.ismodule(getattr(module, name)):
                continue
            if not re.search(rf"(^   {name}$|autodata:: {name}$|`xbp\.{name}`)", page, re.M):
                missing.append(f"{module_name}.{name}")
    assert not missing, f"docs/api/*.rst does not name {missing}"


@pytest.mark.parametrize("name", [*MODULES, *DOCUMENTED])
def test_docstring_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    tests = _tests(name)
    if not tests:
        assert name in MODULES, f"{name} has no example"
        return
    for test in tests:
        out: list[str] = []
        try:
            result = runner.run(test, out=out.append, clear_globs=True)
        except ImportError as exc:  # raised only with doctest's raise_on_error
            raise AssertionError(exc) from exc
        report = "".join(out)
        missing = re.search(r"(ModuleNotFoundError|BackendUnavailableError): (.*)", report)
        if result.failed and missing:
            if any(lib in missing[2] for lib in required_backends()):
                pytest.fail(report)
            pytest.skip(f"{test.name} needs an optional library: {missing[2]}")
        assert not result.failed, report
