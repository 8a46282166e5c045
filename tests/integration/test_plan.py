"""`embedline plan` / `ingest --dry-run`: exact or estimated plans, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import load_config
from embedline.tasks.pipeline import INGEST_STAGES, run_stage
from embedline.tasks.plan import plan_ingest

pytestmark = pytest.mark.integration


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in (root / "data").rglob("*") if p.is_file()}


def _ingest(root: Path) -> None:
    cfg = load_config(root / "params.yaml")
    for name in INGEST_STAGES:
        run_stage(name, cfg, Artifacts(root))


def test_plan_before_first_ingest_counts_texts_and_writes_nothing(tiny_project: Path) -> None:
    before = _snapshot(tiny_project)
    plan = plan_ingest(load_config(tiny_project / "params.yaml"), Artifacts(tiny_project))
    assert plan["documents"] == 5 and plan["chunks"] >= 5
    assert plan["texts_to_embed"] == plan["chunks"] - 1  # bread_copy.txt is an exact duplicate
    assert plan["exact"] is False and plan["new_vector_set"] is True
    assert plan["adds"] == plan["texts_to_embed"] and plan["deletes"] == 0
    assert _snapshot(tiny_project) == before


def test_plan_after_ingest_is_exact_and_tracks_edits(tiny_project: Path) -> None:
    _ingest(tiny_project)
    cfg = load_config(tiny_project / "params.yaml")
    art = Artifacts(tiny_project)
    plan = plan_ingest(cfg, art)
    assert plan["exact"] is True and plan["texts_to_embed"] == 0
    assert plan["adds"] == plan["updates"] == plan["deletes"] == 0

    (tiny_project / "data/raw/net/tcp.txt").unlink()
    (tiny_project / "data/raw/garden/tomatoes.md").write_text("# Tomatoes\n\nPinch out side shoots weekly.\n")
    before = _snapshot(tiny_project)
    plan = plan_ingest(cfg, art)
    assert plan["texts_to_embed"] == 1 and plan["exact"] is False
    assert plan["adds"] == 1 and plan["deletes"] == 2  # tomatoes' old chunk and tcp's chunk
    assert _snapshot(tiny_project) == before
