"""The package's shape: one import name, layers that point down, no import cycles.

The import graph is read from the source with :mod:`ast` (no tool, nothing imported): every
``import``/``from ... import`` inside ``embedline`` is an edge, at module level or inside a function
(a lazy import still ties the two modules together), except imports under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MAPPING = {"embedline": ROOT / "embedline", "embedline.flows": ROOT / "flows", "embedline.tasks": ROOT / "tasks"}


def _modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    mods: dict[str, Path] = {}
    for prefix, folder in MAPPING.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if (prefix == "embedline" and parts) or prefix != "embedline":
                mods[".".join([prefix, *parts])] = path
    mods["embedline"] = ROOT / "embedline" / "__init__.py"
    return mods


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                for n in ast.walk(sub):
                    if hasattr(n, "lineno"):
                        lines.add(n.lineno)
    return lines


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_ancestor_edge(a: str, b: str) -> bool:
    """A package and its own submodule: ``pkg/__init__`` re-exporting ``pkg.sub`` is not a layer edge."""
    return b.startswith(a + ".") or a.startswith(b + ".")


def test_no_import_cycles() -> None:
    graph = _graph()
    # A package's __init__ re-exporting its submodules, and those submodules importing siblings
    # through the package, is one unit: drop parent<->child edges before looking for cycles.
    pruned = {a: {b for b in bs if not _is_ancestor_edge(a, b)} for a, bs in graph.items()}
    assert _cycles(pruned) == []


def test_tasks_never_import_flows() -> None:
    """The pure core does not know the Prefect shell exists."""
    bad = {a: sorted(b for b in bs if b.startswith("embedline.flows"))
           for a, bs in _graph().items() if a.startswith("embedline.tasks")}
    assert {a: bs for a, bs in bad.items() if bs} == {}


def test_cycle_detector_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_pyproject_lists_every_package() -> None:
    """The package-dir mapping installs every folder with an __init__.py under embedline.*."""
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {name for name, path in _modules().items() if path.name == "__init__.py"}
    assert declared == on_disk


@pytest.mark.integration
def test_wheel_installs_one_top_level_package(tmp_path: Path) -> None:
    """The built wheel (what ``pip install .`` puts in site-packages) has only ``embedline/``."""
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("embedline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"embedline"}
    assert "embedline/tasks/config.py" in names and "embedline/flows/cli.py" in names


def test_import_embedline() -> None:
    import embedline
    import embedline.flows.cli
    import embedline.tasks.config

    assert embedline.__version__
    assert embedline.flows.cli.app.registered_commands
