"""The house plan, checked: which modules import which (../shared/DESIGN.md).

Every import in every file of ``captioner/`` and ``service/`` counts: module level, inside
functions and under ``if TYPE_CHECKING:``, relative imports resolved. The checkers take a
root folder, and each is proven on a small fixture tree with the fault planted in it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("captioner", "service")
MAX_LINES = 450
#: Files allowed over MAX_LINES, each with its reason.
LONG_FILE_EXEMPTIONS = {
    "service/batching.py": "one cohesive class: the dynamic batcher, tested alone",
}


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``packages`` under ``root``."""
    names = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (``from ..x import y`` resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``module`` imports anywhere in its file (functions and
    ``TYPE_CHECKING`` blocks included).

    ``from a import b`` counts ``a.b`` when ``b`` is a module, else ``a`` (the names come from
    its ``__init__``); ``import a.b`` counts ``a.b``. A package's ``__init__`` that Python runs
    on the way to a submodule is not counted: what it imports is the package's own business.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            base = _absolute(module, path, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name in known and name != module}


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports, for every file under ``root``'s packages."""
    known = modules(root, packages)
    return {module: imported(module, path, known) for module, path in known.items()}


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of modules (each a circle of imports), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def room(module: str) -> str:
    """captioner.inference.caption -> captioner.inference (a room is a top-level module)."""
    return ".".join(module.split(".")[:2])


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph folded into rooms: an edge wherever a module of one imports another."""
    edges: dict[str, set[str]] = {}
    for module, deps in graph.items():
        for dep in deps:
            if room(dep) != room(module):
                edges.setdefault(room(module), set()).add(room(dep))
    return edges


def library_imports_of_service(root: Path) -> list[str]:
    """Files of ``captioner/`` that import ``service`` (anywhere in the file)."""
    bad = []
    for path in sorted((root / "captioner").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n == "service" or n.startswith("service.") for n in names):
                bad.append(path.relative_to(root).as_posix())
                break
    return bad


def long_files(
    root: Path, packages: tuple[str, ...] = PACKAGES, limit: int = MAX_LINES
) -> dict[str, int]:
    """Files over ``limit`` lines: relative path -> line count."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            lines = len(path.read_text().splitlines())
            if lines > limit:
                out[path.relative_to(root).as_posix()] = lines
    return out


# --------------------------------------------------------------------------- the real tree


def test_no_import_circles_anywhere() -> None:
    """No circle between modules, inside a room or across rooms."""
    assert find_circles(import_graph(REPO)) == []


def test_no_import_circles_between_rooms() -> None:
    assert find_circles(room_graph(import_graph(REPO))) == []


def test_the_library_never_imports_the_service() -> None:
    assert library_imports_of_service(REPO) == []


def test_no_file_is_too_long() -> None:
    found = long_files(REPO)
    assert {f: n for f, n in found.items() if f not in LONG_FILE_EXEMPTIONS} == {}
    # An exemption that is no longer needed goes, so the list says what is true.
    assert set(LONG_FILE_EXEMPTIONS) <= set(found), set(LONG_FILE_EXEMPTIONS) - set(found)


def test_training_does_not_import_evaluation_and_models_import_only_torch() -> None:
    graph = import_graph(REPO)
    for module, deps in graph.items():
        if module.startswith("captioner.training"):
            assert not any(d.startswith("captioner.evaluation") for d in deps), module
        if module.startswith("captioner.models"):
            assert all(d.startswith("captioner.models") for d in deps), (module, deps)


def test_only_the_pipeline_calls_beam_search() -> None:
    callers = set()
    root = REPO / "captioner"
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "captioner.decoding"
                and any(a.name == "decode" for a in node.names)
            ):
                callers.add(path.relative_to(root).as_posix())
    assert callers == {"inference/caption.py"}


# --------------------------------------------------------------------------- the checkers, proven


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


CLEAN = {
    "captioner/__init__.py": "",
    "captioner/low.py": "import os\n",
    "captioner/room/__init__.py": "from captioner.room.a import A\n",
    "captioner/room/a.py": "from captioner.low import x\nA = 1\n",
    "captioner/room/b.py": "from . import a\nfrom .a import A\n",
    "service/__init__.py": "",
    "service/app.py": "import captioner.room.b\n",
}


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    return _tree(tmp_path, CLEAN)


def test_the_clean_fixture_passes_every_check(clean: Path) -> None:
    graph = import_graph(clean)
    assert graph["captioner.room.b"] == {"captioner.room.a"}  # relative imports resolved
    assert graph["service.app"] == {"captioner.room.b"}
    assert find_circles(graph) == []
    assert find_circles(room_graph(graph)) == []
    assert library_imports_of_service(clean) == []
    assert long_files(clean) == {}


def test_a_circle_through_a_function_level_import_is_found(clean: Path) -> None:
    _tree(clean, {"captioner/low.py": "def f():\n    from captioner.room import b\n"})
    circles = find_circles(import_graph(clean))
    assert circles == [["captioner.low", "captioner.room.a", "captioner.room.b"]]
    assert find_circles(room_graph(import_graph(clean))) == [["captioner.low", "captioner.room"]]


def test_a_circle_through_a_type_checking_import_is_found(clean: Path) -> None:
    planted = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from .b import B\n"  # relative, inside the room: room.a <-> room.b
    )
    _tree(clean, {"captioner/room/a.py": planted})
    assert find_circles(import_graph(clean)) == [["captioner.room.a", "captioner.room.b"]]


def test_a_circle_in_the_service_is_found(clean: Path) -> None:
    _tree(
        clean,
        {
            "service/runtime.py": "from service import app\n",
            "service/app.py": "def f():\n    from service.runtime import g\n",
        },
    )
    assert find_circles(import_graph(clean)) == [["service.app", "service.runtime"]]


def test_a_library_import_of_the_service_is_found(clean: Path) -> None:
    _tree(clean, {"captioner/room/a.py": "def f():\n    import service.app\n"})
    assert library_imports_of_service(clean) == ["captioner/room/a.py"]


def test_a_long_file_is_found(clean: Path) -> None:
    _tree(clean, {"service/big.py": "x = 1\n" * (MAX_LINES + 1)})
    assert long_files(clean) == {"service/big.py": MAX_LINES + 1}
