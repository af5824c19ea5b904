"""The package has no import cycles (issue 15).

Every module of ``medseg`` is found with :func:`pkgutil.walk_packages` and parsed (not imported)
with :mod:`ast`; every ``import medseg...`` / ``from medseg... import ...`` anywhere in the file
(module level, inside functions, under ``TYPE_CHECKING``) is an edge, because a lazy import only
hides a cycle from the interpreter, not from the reader. ``from medseg.a import b`` is an edge to
``medseg.a.b`` when that is a module, else to ``medseg.a``; relative imports are resolved. Importing
a submodule does not add an edge to its parent package (``medseg.io`` is not a dependency of every
module that imports ``medseg.io.atomic``).
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import medseg

PACKAGE = "medseg"


def _modules() -> dict[str, Path]:
    """Module name → source file, for every module and package of medseg."""
    root = Path(medseg.__file__).parent
    out = {PACKAGE: root / "__init__.py"}
    for info in pkgutil.walk_packages([str(root)], prefix=f"{PACKAGE}."):
        rel = Path(*info.name.split(".")[1:])
        path = root / rel / "__init__.py" if info.ispkg else root / rel.with_suffix(".py")
        out[info.name] = path
    return out


def _resolve(name: str, module: str, is_package: bool, level: int) -> str:
    """Absolute name of ``from <level dots><name> import ...`` written in ``module``."""
    if level == 0:
        return name
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def import_graph() -> dict[str, set[str]]:
    """medseg → medseg import edges of every module, from the AST of its source."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", name, is_package, node.level)
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            else:
                continue
            for named in targets:
                target = named  # `import medseg.a.b` names the deepest module that exists
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the package is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_path(graph, comp) for comp in components]


def _cycle_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest closed path through the first module of ``component`` (breadth-first)."""
    start, members = component[0], set(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {component}")  # pragma: no cover


def test_the_graph_sees_known_edges() -> None:
    graph = import_graph()
    assert len(graph) > 40  # every module was found
    assert "medseg.errors" in graph["medseg.export.seg"]  # module level
    assert "medseg.export" in graph["medseg.commands.export"]  # inside a function
    assert "medseg.io.atomic" in graph["medseg.export.seg"]
    assert "medseg.io" not in graph["medseg.export.seg"]  # a submodule is not its package


def test_find_cycles_reports_the_path() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles in medseg:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_cycles_between_subpackages() -> None:
    # e.g. medseg.io -> medseg.export -> medseg.io: io reading RTSTRUCT used export's raster fill
    graph: dict[str, set[str]] = {}
    for module, edges in import_graph().items():
        top = ".".join(module.split(".")[:2])
        graph.setdefault(top, set()).update(
            t for e in edges if (t := ".".join(e.split(".")[:2])) != top
        )
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles between subpackages:\n" + "\n".join(
        " -> ".join(c) for c in cycles
    )
