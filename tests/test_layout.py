"""The package layout's rules, read from the source (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("gan_core", "ablations", "reports")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code (``from a import b`` counts as a and a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    names = {module_name(p) for p in files}
    return {module_name(p): {m for m in imports(p) if m in names and m != module_name(p)} for p in files}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph as a path (a -> b -> a), or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def test_the_module_import_graph_has_no_cycle():
    assert find_cycle(graph()) is None


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_packages_point_one_way():
    for module, deps in graph().items():
        if module.startswith(("gan_core", "reports")):
            assert not [d for d in deps if d.startswith("ablations")], module
        if module.startswith("gan_core"):
            assert not [d for d in deps if d.startswith("reports")], module
        if module.startswith("gan_core.training"):
            assert not [d for d in deps if d.startswith("gan_core.judging")], module


def test_gan_core_imports_no_optuna_and_no_plotting():
    for path in (REPO / "gan_core").rglob("*.py"):
        bad = {m for m in imports(path) if m.split(".")[0] in ("optuna", "matplotlib", "seaborn", "reports")}
        assert not bad, (path, bad)
