"""Layers: every import inside ``src/ragd`` points down, and no module imports itself back.

The floors, top to bottom. A module may import any module of its own top-level package (as
long as no cycle forms) and anything on a lower floor; never a floor above, and never another
package on its own floor (packages that share a floor do not know each other).

::

    __main__                  ``python -m ragd``: calls the CLI
    cli/                      typer commands and their front-ends (ingest client, eval harness):
                              with app.py, the only code that may use the composition root
    app.py                    create_app(settings): the lifespan builds everything stateful
    api/                      HTTP only
    container.py              the composition root: picks implementations from settings
    generation/               answering: retrieve, prompt, route, verify
    ingestion/ retrieval/     use-case services (no HTTP, no container): uploads and the
                              pipeline; the one search path
    auth/ index/              domain services; the derived indexes
    stores/                   Protocols, SQL implementations and shared DTOs
    jobs/                     the durable job queue
    models/                   registry, embedders, reranker, keywords
    ops/                      memory, caches, metrics, logs, and low infrastructure (change
                              signals, atomic files, locks); models only through Protocols
    db/ settings.py           engine, tables, migrations; configuration
    errors.py hygiene.py      exceptions; pure checks of client input; and the package root,
    __init__.py               which holds only ``__version__``

Where this differs from the first sketch in ARCHITECTURE.md, the code showed the better shape:

* ``generation/`` sits above ``retrieval/``: answering builds on the search path
  (``generation/answer.py`` calls ``retrieval/search.py``), never the other way round.
* ``jobs/`` sits below ``stores/``: the queue is a store family of its own (SQL rows with
  leases, over ``db/`` only), and the catalog enqueues an ingestion job in the same
  transaction as the upload, so ``stores/`` builds on ``jobs/``.
* ``db/`` and ``settings`` share a floor above ``errors``/``hygiene``, which they both use.
* ``__main__`` has a floor of its own above ``cli/``, which it calls.

How imports are read (by ``ast``; nothing is imported):

* Every ``import`` statement counts, wherever it stands: at module level, inside a function
  (a lazy import is still a dependency), and under ``if TYPE_CHECKING:``. Type-only imports
  must point down too: an annotation naming a higher module is a dependency of the design,
  and it is exactly how the memory manager and the model registry once imported each other.
  A lower floor that needs something from above declares a small Protocol instead.
* ``from ragd.a import b`` is an import of the module ``ragd.a.b`` when that is a module,
  else of ``ragd.a``. Relative imports are resolved against the importing module.
* Importing ``ragd.a.b`` also runs ``ragd/a/__init__.py``; that implicit edge is not counted
  (a package ``__init__`` that re-exports its submodules would otherwise form a cycle with
  each of them). The explicit imports inside each ``__init__`` are counted like any other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "ragd"

#: Top to bottom. ``__init__`` stands for ``ragd/__init__.py`` itself.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("__main__",),
    ("cli",),
    ("app",),
    ("api",),
    ("container",),
    ("generation",),
    ("ingestion", "retrieval"),
    ("auth", "index"),
    ("stores",),
    ("jobs",),
    ("models",),
    ("ops",),
    ("db", "settings"),
    ("errors", "hygiene", "__init__"),
)
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}


@dataclass(frozen=True, slots=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module, dotted
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(SRC.parent)}:{self.line}"


def module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(src: Path = SRC) -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(path, src): path for path in sorted((src / ROOT).rglob("*.py"))}


def imports_of(
    name: str, path: Path, known: set[str], source: str | None = None
) -> Iterator[Import]:
    """The ``ragd`` modules that ``name`` imports, statement by statement (see the module
    docstring for the rules). ``source`` replaces the file's text (for the self-test)."""
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _ours(alias.name):
                    yield Import(name, alias.name, path, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # ``from .. import x``: up ``level - 1`` packages from here
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if not _ours(module):
                continue
            for alias in node.names:
                child = f"{module}.{alias.name}"
                yield Import(name, child if child in known else module, path, node.lineno)


def _ours(module: str) -> bool:
    return module == ROOT or module.startswith(ROOT + ".")


def top_level(module: str) -> str:
    """The floor key of a module: its top-level package or module under ``ragd``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def floor_of(module: str) -> int:
    key = top_level(module)
    if key not in FLOOR:
        raise AssertionError(
            f"{module}: the top-level {key!r} has no floor in tests/test_layers.py FLOORS; "
            "place it explicitly (and say why in the docstring)"
        )
    return FLOOR[key]


def all_imports() -> list[Import]:
    found = modules()
    known = set(found)
    edges = (edge for name, path in found.items() for edge in imports_of(name, path, known))
    return list(dict.fromkeys(edges))  # ``from x import a, b`` of one module: one edge


def offences(edges: list[Import]) -> list[str]:
    """Each import that points up, or sideways to another package on the same floor."""
    out = []
    for edge in edges:
        source, target = top_level(edge.source), top_level(edge.target)
        here, there = floor_of(edge.source), floor_of(edge.target)
        if there < here or (there == here and source != target):
            kind = "up" if there < here else "sideways"
            out.append(
                f"{edge.where()}: {edge.source} imports {edge.target}: {kind} "
                f"({source} is on floor {here}, {target} on floor {there})"
            )
    return out


def cycles(edges: list[Import]) -> list[list[str]]:
    """One cycle (as a closed path of modules) per strongly connected component with more
    than one module, or a module that imports itself (Tarjan's algorithm, iterative)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    found = []
    for component in components:
        start = min(component)
        if len(component) > 1 or start in graph[start]:
            found.append(_cycle_through(start, component, graph))
    return found


def _cycle_through(start: str, component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from ``start`` back to itself inside ``component`` (breadth first)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    back = [node]
                    while back[-1] != start:
                        back.append(parents[back[-1]])
                    return [*reversed(back), start]
                if child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


# -- the rules -------------------------------------------------------------------------------


def test_no_import_points_up_or_sideways() -> None:
    bad = offences(all_imports())
    assert not bad, "imports against the layers (see tests/test_layers.py):\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    edges = all_imports()
    found = cycles(edges)
    lines = {(edge.source, edge.target): edge.where() for edge in edges}
    report = [
        " -> ".join(cycle)
        + "\n    "
        + ", ".join(lines[a, b] for a, b in zip(cycle, cycle[1:], strict=False))
        for cycle in found
    ]
    assert not found, "import cycles:\n" + "\n".join(report)


def test_every_top_level_module_is_placed_on_a_floor() -> None:
    package = SRC / ROOT
    present = {  # modules, and folders holding Python (``stores/`` has no ``__init__.py``)
        path.stem if path.is_file() else path.name
        for path in package.iterdir()
        if (path.suffix == ".py" and path.is_file()) or (path.is_dir() and any(path.rglob("*.py")))
    }
    unplaced = sorted(present - set(FLOOR))
    assert not unplaced, f"place these on a floor in FLOORS (and say why): {unplaced}"
    stale = sorted(set(FLOOR) - present)
    assert not stale, f"FLOORS names what no longer exists: {stale}"
    assert len(FLOOR) == sum(len(names) for names in FLOORS), "a name is on two floors"
    with pytest.raises(AssertionError, match="has no floor"):
        floor_of("ragd.newcomer.module")


# -- the reader itself -----------------------------------------------------------------------


def test_reader_sees_every_form_of_import(tmp_path: Path) -> None:
    module = tmp_path / ROOT / "stores" / "example.py"
    source = "\n".join([
        "from __future__ import annotations",
        "import os",
        "import ragd.db.engine",
        "from typing import TYPE_CHECKING",
        "from ragd import errors, __version__",
        "from . import base",
        "from .base import Role",
        "from ..ops.files import fsync",
        "if TYPE_CHECKING:",
        "    from ragd.models.registry import ModelRegistry",
        "def late():",
        "    from ragd.jobs import queue",
    ])
    known = {
        "ragd", "ragd.errors", "ragd.db.engine", "ragd.stores.base", "ragd.ops.files",
        "ragd.models.registry", "ragd.jobs", "ragd.jobs.queue",
    }
    found = sorted(
        (edge.target, edge.line)
        for edge in imports_of("ragd.stores.example", module, known, source=source)
    )
    assert found == [
        ("ragd", 5),
        ("ragd.db.engine", 3),
        ("ragd.errors", 5),
        ("ragd.jobs.queue", 12),
        ("ragd.models.registry", 10),
        ("ragd.ops.files", 8),
        ("ragd.stores.base", 6),
        ("ragd.stores.base", 7),
    ]


def test_offences_name_the_line_and_the_direction() -> None:
    catalog = SRC / ROOT / "stores" / "catalog.py"
    manager = SRC / ROOT / "index" / "manager.py"
    edges = [
        Import("ragd.stores.catalog", "ragd.index.base", catalog, 28),
        Import("ragd.index.manager", "ragd.auth.revocation", manager, 27),
        Import("ragd.index.manager", "ragd.stores.catalog", manager, 30),  # down: fine
        Import("ragd.index.manager", "ragd.index.base", manager, 31),  # own package: fine
    ]
    floors = FLOOR["stores"], FLOOR["index"]
    assert offences(edges) == [
        "src/ragd/stores/catalog.py:28: ragd.stores.catalog imports ragd.index.base: up "
        f"(stores is on floor {floors[0]}, index on floor {floors[1]})",
        "src/ragd/index/manager.py:27: ragd.index.manager imports ragd.auth.revocation: "
        f"sideways (index is on floor {floors[1]}, auth on floor {floors[1]})",
    ]


def test_cycle_finder_reports_a_closed_path() -> None:
    path = Path("x.py")

    def edge(a: str, b: str) -> Import:
        return Import(a, b, path, 1)

    edges = [edge("a", "b"), edge("b", "c"), edge("c", "a"), edge("c", "d"), edge("e", "e")]
    assert sorted(cycles(edges)) == [["a", "b", "c", "a"], ["e", "e"]]
    assert cycles([edge("a", "b"), edge("b", "c")]) == []
