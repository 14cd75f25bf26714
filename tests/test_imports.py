"""fedlr's imports point down only (DESIGN.md): no module reaches itself through its imports.

The graph is read from the source with ``ast``: every ``import`` and ``from ... import`` of a
module, at module level and inside functions (a lazy import still ties the two modules), with
relative imports resolved and ``from fedlr.x import y`` read as an import of ``fedlr.x.y`` when
``y`` is a module. Imports under ``if TYPE_CHECKING:`` never run and are left out. Importing a
submodule also runs its package's ``__init__``; that implicit edge is left out too, or every
package that re-exports its modules would be a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Edges that close a cycle today, each with why it is there. A cycle through one of these edges
# is not reported; remove the entry when its cycle is broken (test_known_cycle_edges_still_exist
# says when).
# None today: the config counts users' sites through fedlr.config.site_files, which fedlr.data
# reads its files with (the edge config.loading -> data.files is gone).
KNOWN_CYCLE_EDGES: dict[tuple[str, str], str] = {}


def _modules(package: Path = ROOT / "fedlr") -> dict[str, Path]:
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST):
    """Every import statement in ``node``, at any depth, except under ``if TYPE_CHECKING:``."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
        return
    if isinstance(node, ast.If) and _is_type_checking(node):
        children = list(node.orelse)  # the body runs only under a type checker
    else:
        children = list(ast.iter_child_nodes(node))
    for child in children:
        yield from _import_nodes(child)


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """Each fedlr module and the fedlr modules it imports."""
    modules = modules if modules is not None else _modules()

    def owner(name: str) -> str | None:  # the module a dotted name lives in
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                names = [
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                    for alias in node.names
                ]
            targets |= {target for name in names if (target := owner(name))}
        graph[module] = targets - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of ``graph``, or None when it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_reads_lazy_relative_and_submodule_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import leaf\n")
    (package / "sub" / "leaf.py").write_text("from ..top import X\n")
    (package / "top.py").write_text(
        "X = 1\ndef f():\n    from pkg.sub import leaf\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.other\n"
    )
    (package / "other.py").write_text("")
    graph = import_graph(_modules(package))
    assert graph["pkg.sub"] == {"pkg.sub.leaf"}
    assert graph["pkg.sub.leaf"] == {"pkg.top"}
    assert graph["pkg.top"] == {"pkg.sub.leaf"}  # the lazy import; not the TYPE_CHECKING one
    assert find_cycle(graph) == ["pkg.sub.leaf", "pkg.top", "pkg.sub.leaf"]


def test_no_import_cycle_in_fedlr():
    graph = import_graph()
    for source, target in KNOWN_CYCLE_EDGES:
        graph.get(source, set()).discard(target)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_config_imports_no_higher_layer():
    graph = import_graph()
    upward = {
        (source, target)
        for source, targets in graph.items()
        if source == "fedlr.config" or source.startswith("fedlr.config.")
        for target in targets
        if not (target == "fedlr.config" or target.startswith("fedlr.config."))
    }
    assert upward <= set(KNOWN_CYCLE_EDGES), sorted(upward)


def test_known_cycle_edges_still_exist():
    graph = import_graph()
    gone = [edge for edge in KNOWN_CYCLE_EDGES if edge[1] not in graph.get(edge[0], set())]
    assert not gone, f"these imports are gone; remove them from KNOWN_CYCLE_EDGES: {gone}"


MAX_MODULE_LINES = 600  # issue 16: one concept per module (STYLE 14)


def test_no_module_of_fedlr_is_over_600_lines():
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split by concept (at most {MAX_MODULE_LINES} lines each): {long}"
