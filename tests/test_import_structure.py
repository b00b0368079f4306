"""The package's import graph: no cycles (lazy function-level imports included), and every module sits in a layer
that imports only from its own layer and the layers below (`LAYERS`); a model loads without the dataset code, the
library never imports the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "src" / "egtr"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.AST, modules: set[str], package: str) -> set[str]:
    """egtr modules imported anywhere in `tree` (functions included), except under `if TYPE_CHECKING:`."""
    found: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking_block(node):
            stack.extend(node.orelse)  # type: ignore[attr-defined]
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            if base in modules:
                found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules)
        stack.extend(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE_ROOT.rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    graph = {}
    for path in paths:
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = _imports(ast.parse(path.read_text(), str(path)), modules, package) - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (lazy imports count): " + "; ".join(" <-> ".join(c) for c in cycles)


# Lowest first. A module may import its own package, and any module of a lower layer. In an `independent` layer the
# packages do not import each other either (a detector loads without the losses, evaluation without the service).
LAYERS: list[tuple[str, tuple[str, ...], bool]] = [
    (
        "foundation",
        (
            "egtr.version",
            "egtr.errors",
            "egtr.extras",
            "egtr._deprecated",
            "egtr.fileio",
            "egtr.console",
            "egtr.allocator",
            "egtr.runtime",
            "egtr.stopping",
            "egtr.runlock",
            "egtr.box_ops",
            "egtr.names",
            "egtr.images",
            "egtr.config",
            "egtr.preprocessing",
            "egtr.schemas",
        ),
        False,
    ),
    ("model parts", ("egtr.models", "egtr.losses", "egtr.metrics", "egtr.data"), True),
    ("inference", ("egtr.inference",), False),
    (
        "applications",
        (
            "egtr.model_evaluation",
            "egtr.video",
            "egtr.serve",
            "egtr.bulk",
            "egtr.model_summary",
            "egtr.benchmark",
        ),
        True,
    ),
    ("training", ("egtr.training",), False),
    ("demo", ("egtr.demo",), False),
    ("package facade", ("egtr",), False),  # egtr/__init__.py: `from egtr import Predictor, EGTR`
    ("command line", ("egtr.cli",), False),
    # Old flat module paths: each only calls `egtr._deprecated.alias_module` with the new path.
    (
        "deprecated paths",
        (
            "egtr.postprocess",
            "egtr.predict_files",
            "egtr.scene_graph",
            "egtr.visualize",
            "egtr.given_boxes",
            "egtr.boxes_file",
            "egtr.evaluation",
            "egtr.summary",
        ),
        False,
    ),
]


def _unit(module: str) -> tuple[int, str]:
    """(layer index, the package or module of `LAYERS` that `module` belongs to); the longest prefix wins."""
    best: tuple[int, str] | None = None
    for index, (_, units, _) in enumerate(LAYERS):
        for unit in units:
            if (module == unit or module.startswith(unit + ".")) and (best is None or len(unit) > len(best[1])):
                best = (index, unit)
    if best is None:
        raise KeyError(module)
    return best


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a higher layer, and every import between packages of one independent layer."""
    found = []
    for module, targets in sorted(graph.items()):
        layer, unit = _unit(module)
        for target in sorted(targets):
            target_layer, target_unit = _unit(target)
            if target_layer > layer:
                found.append(f"{module} ({LAYERS[layer][0]}) imports {target} ({LAYERS[target_layer][0]})")
            elif target_layer == layer and target_unit != unit and LAYERS[layer][2]:
                found.append(f"{module} imports {target}: both {LAYERS[layer][0]}, which do not import each other")
    return found


def test_the_layer_check_finds_an_upward_import():
    graph = {
        "egtr.models.egtr": {"egtr.fileio"},
        "egtr.data.base": {"egtr.inference.predictor"},
        "egtr.losses.matcher": {"egtr.models.egtr"},
        "egtr.serve.app": {"egtr.cli.options"},
        "egtr.cli.predict": {"egtr.serve.app"},
    }
    assert layer_violations(graph) == [
        "egtr.data.base (model parts) imports egtr.inference.predictor (inference)",
        "egtr.losses.matcher imports egtr.models.egtr: both model parts, which do not import each other",
        "egtr.serve.app (applications) imports egtr.cli.options (command line)",
    ]


def test_every_module_has_a_layer():
    unplaced = []
    for module in import_graph():
        try:
            _unit(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"add these to LAYERS: {unplaced}"


def test_layers_do_not_reach_up():
    violations = layer_violations(import_graph())
    assert not violations, "\n".join(violations)


def test_no_package_but_the_command_line_imports_it():
    graph = import_graph()
    offending = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if not (module == "egtr.cli" or module.startswith("egtr.cli."))
        for target in targets
        if target == "egtr.cli" or target.startswith("egtr.cli.")
    )
    assert not offending, offending


@pytest.mark.parametrize(
    "old, new",
    [
        ("egtr.evaluation", "egtr.model_evaluation"),
        ("egtr.summary", "egtr.model_summary"),
        ("egtr.video.commandline", "egtr.cli.video"),
    ],
)
def test_renamed_modules_still_import_from_their_old_path_with_a_warning(old, new):
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
