"""The package's shape, checked from the source with ``ast``: no import circles between modules
(lazy imports inside functions count), and no stage importing a stage above it in the loop."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "curate"

# lowest first; a module may import its own stage and the stages before it, never one after
STAGES = [
    ("errors", "files", "hashing", "arrays", "metrics", "params"),  # pure shared helpers
    ("catalog", "groups"),  # DuckDB plumbing under the views; images and captions
    ("workspace", "lock", "integrity", "images", "parallel", "cluster"),  # layout, writer, bytes
    ("ann",),  # nearest-neighbour indexes over stored embeddings
    ("synth",),  # the synthetic pool (tiny-clip trains on it)
    ("models",),
    ("ingest",),
    ("passes",),
    ("select",),
    ("maps", "evaluate"),
    ("cards",),
    ("export",),
    ("sql", "info", "verify"),
    ("demo", "cli"),
]
RANK = {name: i for i, names in enumerate(STAGES) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """The curate modules ``path`` imports anywhere in its body (``from a import b`` names
    ``a``, and module ``a.b`` too when that is a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("curate."))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "curate" or node.module.startswith("curate.")):
            out.add(node.module)  # its package's __init__ runs first, submodule or not
            out.update(f"{node.module}.{a.name}" for a in node.names
                       if f"{node.module}.{a.name}" in known)
    return out - {"curate"}  # the root only re-exports the verbs


@cache
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, set(mods)) & set(mods) - {m} for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def stage(module: str) -> str:
    return module.split(".")[1]


def test_cycle_finder_finds_a_planted_cycle() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_every_module_belongs_to_a_stage() -> None:
    assert sorted({stage(m) for m in modules() if m != "curate"} - set(RANK)) == []


@pytest.mark.parametrize("module", sorted(m for m in modules() if m != "curate"))
def test_no_upward_imports(module: str) -> None:
    up = sorted(d for d in graph()[module] if RANK[stage(d)] > RANK[stage(module)])
    assert up == [], f"{module} imports stages after its own ({stage(module)}): {up}"
