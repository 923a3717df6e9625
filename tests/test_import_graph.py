"""No import cycle among the modules of ``cellblock/``.

The graph is read from the source with ``ast``, nothing is imported. Its nodes are the
modules of the package (a package is its ``__init__.py``, named like the package). Its
edges are every ``import`` statement in a module, at module level and inside functions
and classes alike (a function-level import that closes a cycle is a cycle postponed, not
avoided), with two exceptions: imports under ``if TYPE_CHECKING:`` (they never run), and
imports of anything outside ``cellblock``.

How a statement becomes an edge:
- ``import cellblock.a.b`` and ``from cellblock.a.b import name`` point at ``cellblock.a.b``;
  relative imports (``from .b import name``, ``from .. import b``) are resolved first;
- ``from cellblock.a import b`` points at the submodule ``cellblock.a.b`` when ``b`` is a
  module of the package, and at the package ``cellblock.a`` (its ``__init__``) when ``b`` is
  a name the package defines or re-exports.

The rule for packages: importing ``cellblock.a.b`` also runs ``cellblock/a/__init__.py``
first, but that implicit step is *not* an edge. Otherwise every ``__init__`` that
re-exports its submodules (``cluster/__init__`` imports ``cluster.grid``) would sit in a
cycle with each submodule that imports a sibling, a false cycle Python resolves by running
the ``__init__`` first. What *is* an edge, and so can close a cycle, is a submodule
importing a name through its own package (``from cellblock.cluster import TrainGrid``
inside ``cluster/``): that reads a half-initialised ``__init__``. Submodules import their
siblings directly.
"""

import ast
from pathlib import Path

PACKAGE = "cellblock"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """``{dotted name: file}`` for every module of the package under ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node of ``tree``, skipping ``if TYPE_CHECKING:`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` in module ``name`` (file ``path``) reads from."""
    if not node.level:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _owner(target: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``target`` that is a module of the package."""
    parts = target.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) or None


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: modules it imports}`` within the package (see the module docstring)."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _imports(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve(name, path, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                if target.split(".")[0] != PACKAGE:
                    continue
                owner = _owner(target, modules)
                if owner is not None and owner != name:
                    graph[name].add(owner)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (iterative DFS, three colours)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        iters = [iter(sorted(graph[start]))]
        state[start] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and any(graph.values())  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in cellblock: " + " -> ".join(cycle)


def test_the_walk_sees_function_level_relative_and_submodule_imports(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from cellblock.sub.b import B\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cellblock.sub import a\n"
        "B = 1\n"
    )
    (pkg / "c.py").write_text("from cellblock.sub import B\nimport cellblock.sub.a\n")
    graph = import_graph(pkg)
    assert graph["cellblock.sub.a"] == {"cellblock.sub.b"}
    assert graph["cellblock.sub.b"] == set()  # TYPE_CHECKING only
    assert graph["cellblock.sub"] == {"cellblock.sub.b"}
    assert graph["cellblock.c"] == {"cellblock.sub", "cellblock.sub.a"}
    assert find_cycle(graph) is None
    (pkg / "sub" / "b.py").write_text("def g():\n    from cellblock.sub.a import f\n")
    cycle = find_cycle(import_graph(pkg))
    assert cycle is not None and set(cycle) == {"cellblock.sub.a", "cellblock.sub.b"}
