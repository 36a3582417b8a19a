"""The house plan, checked: which rooms import which (../shared/DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "captioner"


def imports() -> dict[str, set[str]]:
    """Module -> the captioner modules it imports at module level (type-only imports left out)."""
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for module, path in names.items():
        found: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module:
                candidates = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            found |= {c for c in candidates if c in names and c != module}
        graph[module] = found
    return graph


def room(module: str) -> str:
    """captioner.inference.caption -> captioner.inference (a room is a top-level module)."""
    return ".".join(module.split(".")[:2])


def test_no_import_circles_between_rooms() -> None:
    edges: dict[str, set[str]] = {}
    for module, deps in imports().items():
        for dep in deps:
            if room(dep) != room(module):
                edges.setdefault(room(module), set()).add(room(dep))

    def reaches(start: str, goal: str) -> bool:
        todo, seen = [start], set()
        while todo:
            node = todo.pop()
            for nxt in edges.get(node, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    circles = sorted((a, b) for a, deps in edges.items() for b in deps if reaches(b, a))
    assert not circles, circles


def test_training_does_not_import_evaluation_and_models_import_only_torch() -> None:
    graph = imports()
    for module, deps in graph.items():
        if module.startswith("captioner.training"):
            assert not any(d.startswith("captioner.evaluation") for d in deps), module
        if module.startswith("captioner.models"):
            assert all(d.startswith("captioner.models") for d in deps), (module, deps)


def test_only_the_pipeline_calls_beam_search() -> None:
    callers = set()
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "captioner.decoding":
                if any(a.name == "decode" for a in node.names):
                    callers.add(path.relative_to(ROOT).as_posix())
    assert callers == {"inference/caption.py"}
