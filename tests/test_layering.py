"""The import structure of ``python/listy``: no import circle and no import
that runs upward through the layers below.

Read from the source with ``ast`` (nothing is imported), so a circle hidden
in a function-level import or under ``TYPE_CHECKING`` is found too. A new
module must be placed in :data:`LAYERS`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "listy"
ROOT = Path(__file__).resolve().parents[1] / "python" / PACKAGE

#: Lowest first. A module may import modules of its own layer or below; the
#: circle check keeps imports inside one layer acyclic. ``*`` ends a prefix.
LAYERS: list[list[str]] = [
    # leaves: no import of another listy module (the registry and the
    # recorder know clients by protocol only)
    [
        "listy.events",
        "listy.exceptions",
        "listy.inspection",
        "listy.middleware",
        "listy.models",
        "listy.recorder",
        "listy.registry",
        "listy.origin",
        "listy.migrations*",
        "listy.management",
        "listy.management.commands",
    ],
    ["listy.conf"],
    ["listy.store", "listy.outage", "listy.shared_stats"],
    ["listy.schema", "listy.fetch"],  # fetch: many rows read fast (the state reads)
    ["listy.source"],
    ["listy.repair"],  # talks to engines through the registry's protocol
    ["listy.intents"],  # a dead writer's intent starts its model afresh
    ["listy.worker"],  # the background look: intents, repairs
    ["listy.declaration"],
    # mixins of the facade (``listy.aio``: the awaitable twins) and its lists
    ["listy.periods", "listy.records", "listy.writes", "listy.aio"],
    ["listy.bulk"],  # the batched write paths, on top of writes
    ["listy.cache"],  # the facade
    ["listy.rawsql", "listy.manager", "listy.signals", "listy.checks", "listy.panels", "listy.sync"],
    ["listy.adopt"],  # a model you do not own: ListCache + its managers + FK hooks
    ["listy.apps", "listy.management.commands.*", "listy", "listy.testing"],
]


def modules(root: Path, package: str) -> dict[str, Path]:
    """Module name → file, for every ``.py`` file under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join([package, *parts])] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file
    (module level, inside functions, under ``TYPE_CHECKING``). ``from listy
    import x`` counts as an import of ``listy.x`` when that is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names]
            if module != name.split(".")[0]:  # ``from listy import x``: only x
                targets.append(module)
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def graph(root: Path, package: str) -> dict[str, set[str]]:
    mods = modules(root, package)
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a
    module importing itself): each is an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def layer_of(name: str) -> int | None:
    for level, names in enumerate(LAYERS):
        for pattern in names:
            if name == pattern or (pattern.endswith("*") and name.startswith(pattern[:-1])):
                return level
    return None


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Imports of a module from a higher layer than the importer's, and
    modules placed in no layer."""
    problems = []
    for name, targets in sorted(edges.items()):
        level = layer_of(name)
        if level is None:
            problems.append(f"{name} is in no layer of LAYERS (tests/test_layering.py): place it")
            continue
        for target in sorted(targets):
            target_level = layer_of(target)
            if target_level is not None and target_level > level:
                problems.append(f"{name} (layer {level}) imports {target} (layer {target_level})")
    return problems


def test_python_listy_has_no_import_circle() -> None:
    assert circles(graph(ROOT, PACKAGE)) == []


def test_python_listy_imports_only_downward() -> None:
    assert upward(graph(ROOT, PACKAGE)) == []


def test_the_cache_facade_stays_a_facade() -> None:
    lines = (ROOT / "cache.py").read_text().count("\n")
    assert lines <= 400, f"listy/cache.py has {lines} lines: move the new work to the module it belongs to"


@pytest.fixture
def package(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("from pkg.low import x\n")
    (root / "sub" / "__init__.py").write_text("")
    (root / "low.py").write_text("x = 1\n")
    (root / "high.py").write_text("from pkg import low\n")
    return root


def test_the_checks_see_a_function_level_circle(package: Path) -> None:
    (package / "low.py").write_text("def f():\n    from pkg import high\n")
    assert circles(graph(package, "pkg")) == [["pkg.high", "pkg.low"]]


def test_the_checks_see_a_type_checking_and_relative_circle(package: Path) -> None:
    (package / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
    )
    (package / "sub" / "b.py").write_text("from pkg.sub import a\n")
    assert circles(graph(package, "pkg")) == [["pkg.sub.a", "pkg.sub.b"]]


def test_the_checks_see_an_upward_import() -> None:
    edges = {"listy.registry": {"listy.cache"}, "listy.cache": set(), "listy.newthing": set()}
    assert upward(edges) == [
        "listy.newthing is in no layer of LAYERS (tests/test_layering.py): place it",
        "listy.registry (layer 0) imports listy.cache (layer 11)",
    ]
