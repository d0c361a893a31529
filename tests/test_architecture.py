"""The module map holds: imports flow one way, no module reaches into another's privates.

Both rules are read from the source with ``ast`` (docs/architecture.md states them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "xbp"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, ast.Module]:
    return {
        _module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))
    }


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> list[str]:
    """The xbp modules an ``from ... import ...`` names (relative imports resolved)."""
    if node.level:
        base = module.split(".")
        if not is_package:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("xbp"):
        return []
    # `from . import optim` imports the submodule xbp.optim
    return [f"{target}.{a.name}" for a in node.names] + [target]


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, tree in mods.items():
        is_package = (PACKAGE / Path(*name.split(".")[1:]) / "__init__.py").exists()
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                targets = _resolve(name, node, is_package)
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("xbp")]
            for t in targets:
                if t in mods and t != name:
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules, or None (depth-first search with colours)."""
    colour = {m: 0 for m in graph}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if colour[n] == 1:
                return stack[stack.index(n) :] + [n]
            if colour[n] == 0:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        colour[m] = 2
        return None

    for m in sorted(graph):
        if colour[m] == 0:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle_among_xbp_modules() -> None:
    graph = import_graph()
    # the package's __init__ re-exports everything: it is the top, not part of the flow
    graph = {m: {n for n in deps if n != "xbp"} for m, deps in graph.items() if m != "xbp"}
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    # the check above can fail: a graph with a cycle is reported
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_training_flows_one_way() -> None:
    graph = import_graph()
    assert "xbp.parallel.mpi" not in graph["xbp.train.loop"]
    assert "xbp.io" not in graph["xbp.train.loop"]
    assert not {"xbp.train.loop", "xbp.train.run", "xbp.train.checkpoint"} & graph["xbp.nn.network"]
    assert "xbp.train.loop" not in graph["xbp.parallel.mpi"]


def _private_uses(tree: ast.Module, own_classes: set[str]) -> list[tuple[int, str]]:
    """``obj._name`` accesses where obj is not self/cls/super() (dunders allowed)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or (attr.startswith("__") and attr.endswith("__")):
            continue
        base = node.value
        if isinstance(base, ast.Name) and base.id in ({"self", "cls"} | own_classes):
            continue
        if isinstance(base, ast.Call) and getattr(base.func, "id", None) == "super":
            continue
        found.append((node.lineno, ast.unparse(node)))
    return found


def _private_imports(tree: ast.Module, in_package: bool = False) -> list[tuple[int, str]]:
    """``from .module import _name``: a private name of another xbp module (a module of
    the same sub-package, ``from .sibling import _name``, shares its package's privates)."""
    found = []
    for node in ast.walk(tree):
        if in_package and isinstance(node, ast.ImportFrom) and node.level == 1:
            continue
        if isinstance(node, ast.ImportFrom) and (
            node.level or (node.module or "").startswith("xbp")
        ):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append((node.lineno, f"from {node.module} import {a.name}"))
    return found


# attribute names of third-party objects that happen to start with "_" (not xbp's privates)
THIRD_PARTY = {"_fields", "_asdict", "_replace", "_device", "_exit", "_parameter_constraints"}


def _scripts() -> list[Path]:
    root = PACKAGE.parent
    return sorted(PACKAGE.rglob("*.py")) + sorted((root / "scripts").glob("*.py"))


@pytest.mark.parametrize("path", _scripts(), ids=lambda p: p.name)
def test_no_private_attribute_of_another_module_is_used(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    own = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    bad = [
        (line, text)
        for line, text in _private_uses(tree, own)
        + _private_imports(tree, path.parent not in (PACKAGE, PACKAGE.parent / "scripts"))
        if text.rsplit(".", 1)[-1] not in THIRD_PARTY
    ]
    assert not bad, f"{path.name} uses private names of other objects: {bad}"


def test_the_private_use_check_flags_a_private_access() -> None:
    tree = ast.parse("net._params[0]\nself._ok = 1\nfrom .io import _read\n")
    assert [t for _, t in _private_uses(tree, set())] == ["net._params"]
    assert [t for _, t in _private_imports(tree)] == ["from io import _read"]


# -- the training loop reads data through one protocol (xbp/data/sources.py) ------------------
#: the data types of xbp.data.sources and xbp.data.hostrows, and what they wrap
DATA_TYPES = {"Source", "DeviceData", "HostData", "BatchSource", "MappedRows", "memmap", "ndarray"}
#: attributes a loop would ask about to tell data sources apart
DATA_ATTRS = {"streamed", "source", "rows", "x", "y", "w", "labels", "n", "shape", "gather"}


def _names(node: ast.AST) -> set[str]:
    """Every name and attribute name mentioned in an expression."""
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            found.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            found.add(sub.attr)
    return found


def data_type_checks(tree: ast.Module) -> list[tuple[int, str]]:
    """``isinstance``/``issubclass`` checks and ``type(...) is`` comparisons naming a data
    type, and
    ``getattr``/``hasattr`` probes of a data attribute (``"streamed"``, ``"source"``, ...)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and _names(node) & DATA_TYPES:
            if any(
                isinstance(c, ast.Call) and getattr(c.func, "id", None) == "type"
                for c in [node.left, *node.comparators]
            ):
                found.append((node.lineno, ast.unparse(node)))  # type(data) is HostData
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        name, args = node.func.id, node.args
        if name in ("isinstance", "issubclass") and len(args) == 2:
            if _names(args[1]) & DATA_TYPES:
                found.append((node.lineno, ast.unparse(node)))
        elif name in ("getattr", "hasattr") and len(args) >= 2:
            attr = args[1]
            if isinstance(attr, ast.Constant) and attr.value in DATA_ATTRS:
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_training_loop_does_not_tell_data_sources_apart() -> None:
    """train/loop.py consumes every kind of data through the protocol of xbp.data.sources: no
    ``getattr(data, "streamed")``/``"source"`` probes, no isinstance checks on data types,
    no import of a concrete data type, and one epoch runner."""
    path = PACKAGE / "train" / "loop.py"
    tree = ast.parse(path.read_text(), str(path))
    bad = data_type_checks(tree)
    assert not bad, f"training.py tells data sources apart: {bad}"
    imported = {
        a.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("sources")
        for a in node.names
    }
    assert imported and not imported & (DATA_TYPES - {"Source"}), imported
    trainer = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Trainer")
    epoch_runners = [
        f.name for f in trainer.body if isinstance(f, ast.FunctionDef) and "epoch" in f.name
    ]
    assert epoch_runners == ["run_epoch"], epoch_runners


def test_the_data_type_check_finder_finds_checks() -> None:
    tree = ast.parse(
        'if getattr(train, "streamed", False): pass\n'
        'if getattr(train, "source", None) is not None: pass\n'
        "isinstance(data, (HostData, BatchSource))\n"
        "isinstance(x, np.memmap)\n"
        "if type(data) is DeviceData: pass\n"
        'isinstance(cb, Callback)\ngetattr(net, "dropout")\nf"{type(cb).__name__}"\n'
    )
    assert sorted(line for line, _ in data_type_checks(tree)) == [1, 2, 3, 4, 5]


def weight_updates(tree: ast.Module) -> list[int]:
    """Lines that update weights: a call of ``apply_updates`` or of an optimizer's
    ``update(...)`` with the gradients (``.update(grads, ...)``/``scalars=``)."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else None
        if isinstance(node.func, ast.Name):
            name = node.func.id
        if name == "apply_updates":
            lines.append(node.lineno)
        elif name == "update" and isinstance(node.func, ast.Attribute):
            owner = ast.unparse(node.func.value)
            if "optim" in owner or owner in ("opt", "self.transform"):
                lines.append(node.lineno)
    return lines


def test_weights_change_in_one_place() -> None:
    """The one training step (xbp/train/step.py) is the only caller of an optimizer's update
    and of apply_updates outside xbp/optim/__init__.py: no loop keeps an update of its own."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).as_posix() in ("optim/__init__.py", "train/step.py"):
            continue
        lines = weight_updates(ast.parse(path.read_text(), str(path)))
        if lines:
            found[str(path.relative_to(PACKAGE))] = lines
    assert not found, f"weights are updated outside xbp/train/step.py: {found}"
    step = ast.parse((PACKAGE / "train" / "step.py").read_text())
    assert len(weight_updates(step)) == 2  # the optimizer's update, then apply_updates


def test_the_weight_update_finder_finds_updates() -> None:
    tree = ast.parse(
        "params = apply_updates(params, u)\n"
        "u, s = self.optimizer.update(g, s, params)\n"
        "u, s = opt.update(g, s, p, scalars=x)\n"
        "d.update(other)\n"
        "logs.update(epoch=1)\n"
    )
    assert weight_updates(tree) == [1, 2, 3]


# -- the package layout is the architecture: each sub-package imports only from below --
LAYERS = ["errors", "metrics", "backends", "nn", "optim", "io", "data", "parallel", "train",
          "tools", "sklearn", "cli"]  # fmt: skip


def _layer_imports() -> list[tuple[str, str, str, str]]:
    """(module, its layer, imported module, its layer) for every relative import in xbp."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["xbp", *path.relative_to(PACKAGE).with_suffix("").parts]
        package = parts[:-1]
        if parts[-1] == "__init__":
            parts = package
        if len(parts) < 2 or parts[1] not in LAYERS:
            continue  # xbp/__init__.py and __main__.py sit on top and re-export
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level):
                continue
            base = package[: len(package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            for name in names:
                layer = name.split(".")[1] if "." in name else None
                if layer in LAYERS:
                    found.append((".".join(parts), parts[1], name, layer))
    return found


def test_each_sub_package_imports_only_from_the_layers_below_it() -> None:
    imports = _layer_imports()
    assert len(imports) > 100  # the walk sees the package
    upward = [
        f"{mod} ({layer}) imports {name} ({target})"
        for mod, layer, name, target in imports
        if LAYERS.index(target) > LAYERS.index(layer)
    ]
    assert not upward, upward


def test_the_layout_and_the_architecture_table_are_one_picture() -> None:
    table = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    on_disk = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert on_disk == set(LAYERS) - {"errors", "metrics", "sklearn"}, on_disk
    for layer in LAYERS:
        assert f"`{layer}" in table, f"docs/architecture.md does not name the {layer} layer"


def test_the_top_level_holds_what_a_script_writes() -> None:
    import xbp

    assert len(xbp.__all__) <= 30, len(xbp.__all__)
    assert all(hasattr(xbp, name) for name in xbp.__all__)
    guide = (PACKAGE.parent / "docs" / "guide.md").read_text()
    section = guide.split("## The package", 1)[1].split("\n## ", 1)[0]
    assert f"`xbp.__all__`, {len(xbp.__all__)} names" in section
    missing = [name for name in xbp.__all__ if f"`{name}`" not in section]
    assert not missing, f"docs/guide.md's package section does not name {missing}"
    # no mutable registry at the top level: parts are added through functions
    assert not [n for n in dir(xbp) if n.isupper() and not n.startswith("_")]


def test_the_cli_guide_defaults_table_is_the_codes() -> None:
    import inspect

    import xbp
    from xbp.cli.options import DEFAULT_LR, DEFAULTS
    from xbp.sklearn import MLPClassifier

    page = (PACKAGE.parent / "docs" / "cli.md").read_text()
    table = page.split("| setting | `xbp.mlp` / `xbp.fit` |", 1)[1].split("\n\n", 1)[0]
    rows = {
        r.split("|")[1].strip(): [c.strip().strip("`") for c in r.split("|")[2:5]]
        for r in table.strip().splitlines()[1:]
    }
    mlp = inspect.signature(xbp.mlp).parameters
    opts, cli, sk = xbp.TrainOptions(), DEFAULTS["train"], MLPClassifier()
    lr = xbp.optim.get_optimizer(opts.optimizer, opts.learning_rate).config()["learning_rate"]
    assert rows["hidden activation"] == [
        mlp["activation"].default,
        cli["activation"],
        sk.activation,
    ]
    assert rows["loss"][0] == mlp["loss"].default and cli["loss"] is None
    assert rows["optimizer"] == [opts.optimizer, cli["optimizer"], sk.solver]
    assert rows["learning rate"] == [
        str(lr["learning_rate"]),
        str(DEFAULT_LR["adaptive"]),
        str(sk.learning_rate_init),
    ]
    assert rows["schedule"][:2] == [lr["kind"], cli["schedule"]]
    assert rows["epochs"] == [str(opts.epochs), str(cli["epochs"]), str(sk.max_iter)]
    assert rows["batch size"][:2] == [str(opts.batch_size), str(cli["batch_size"])]
    assert rows["inputs standardised"][0].startswith("no") and not mlp["standardize"].default
    assert rows["inputs standardised"][1].startswith("yes") and not cli["no_standardize"]
