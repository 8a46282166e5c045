"""The newcomer's maps match the code: README's annotated tree names every module of flows/ and
tasks/ (and nothing that does not exist); docs/architecture.md names every tasks/ module too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _layout_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def _entries(folder: str) -> set[str]:
    """Top-level modules and sub-packages of ``folder`` (what a map must mention)."""
    out = set()
    for p in (ROOT / folder).iterdir():
        if p.name.startswith(("_", ".")):
            continue
        if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()):
            out.add(p.name + ("/" if p.is_dir() else ""))
    return out


_NAME = re.compile(r"(?<![\w./])[a-z_]+(?:\.py\b|/)")


def _mentioned(block: str, folder: str) -> tuple[set[str], set[str]]:
    """Under ``folder/`` in the tree (indented lines until the next top-level entry): the names in
    the name column, and every module-like name on those lines (descriptions included)."""
    lines = block.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{folder}/"))
    named: set[str] = set()
    anywhere: set[str] = set()
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break
        if re.match(r"  \S", line):  # an entry (deeper lines continue a description)
            named.update(_NAME.findall(line.strip().split("  ")[0]))
        anywhere.update(_NAME.findall(line))
    return named, anywhere


@pytest.mark.parametrize("folder", ["flows", "tasks"])
def test_readme_tree_matches_the_code(folder: str) -> None:
    block = _layout_block()
    (listed, anywhere), actual = _mentioned(block, folder), _entries(folder)
    assert not actual - anywhere, f"README Layout does not mention {sorted(actual - anywhere)} under {folder}/"
    assert not listed - actual, f"README Layout names {sorted(listed - actual)} that {folder}/ does not have"


def test_architecture_map_names_every_tasks_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = sorted(e for e in _entries("tasks") if e.removesuffix("/").removesuffix(".py") not in text)
    assert not missing, f"docs/architecture.md does not place {missing}"
