"""The code's shape (issue 27): function lengths and the import graph of src/dicc.

    python benchmarks/code_shape.py            # counts, the functions over 50 lines, any cycle

A function's length is end_lineno - lineno + 1 of every FunctionDef / AsyncFunctionDef, methods
and nested functions included (its decorators not counted). The import graph has an edge from a
module to every dicc module it imports, at module level, inside a function or under
``TYPE_CHECKING``; a cycle is a strongly connected component of more than one module (those
that vanish without the ``TYPE_CHECKING`` imports are marked).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def modules(src: Path = SRC) -> dict[str, Path]:
    out = {}
    for p in sorted((src / "dicc").rglob("*.py")):
        parts = list(p.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def function_lengths(mods: dict[str, Path]) -> list[tuple[int, str]]:
    rows = []
    for name, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                rows.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}:{node.lineno}"))
    return sorted(rows, reverse=True)


def _target(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def import_graph(mods: dict[str, Path], runtime_only: bool = False) -> dict[str, set[str]]:
    """Module -> the dicc modules it imports (``runtime_only``: leaving out ``TYPE_CHECKING`` imports)."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, p in mods.items():
        is_pkg = p.name == "__init__.py"
        tree = ast.parse(p.read_text(), str(p))
        skip = _type_checking_only(tree) if runtime_only else set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                t = _target(mod, is_pkg, node)
                names = [f"{t}.{a.name}" for a in node.names] + [t]
            else:
                continue
            for n in names:
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                # a package's own __init__ is not an edge of its submodules' `from . import x`
                if n and n != mod and not mod.startswith(n + "."):
                    graph[mod].add(n)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    mods = modules()
    rows = function_lengths(mods)
    over80 = [r for r in rows if r[0] > 80]
    over50 = [r for r in rows if r[0] > 50]
    print(f"functions: {len(rows)}  over 50 lines: {len(over50)}  over 80 lines: {len(over80)}")
    for n, where in over50:
        print(f"  {n:4d}  {where}")
    cyc = cycles(import_graph(mods))
    runtime = cycles(import_graph(mods, runtime_only=True))
    print(f"import cycles: {len(cyc)} ({len(runtime)} without the imports under TYPE_CHECKING)")
    for c in cyc:
        print("  " + " <-> ".join(c) + ("" if c in runtime else "  (through TYPE_CHECKING imports only)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
