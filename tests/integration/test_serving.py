"""What Qdrant serves is what DVC recorded (issue 13): build vs promote, on real DVC + Qdrant Edge.

A throw-away git + DVC copy of the project (tiny corpus, fake embedder; fixtures in conftest.py).
After each step of the sequences people actually type (`--set` runs, `dvc exp run`, `dvc exp
apply`, `git checkout` + `dvc checkout`, `dvc repro`, `embedline promote`), either the alias serves
the fingerprint the workspace records, or `embedline verify` exits 1 and says so in one line with
the command that fixes it. Building is always safe: override runs and experiments never move the
alias; `embedline promote` moves it only after the quality gate passes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from embedline.tasks.config import load_config
from embedline.tasks.vectorsets.stores import close_stores, open_store
from tests.dvcrepo import Repo, clone

pytestmark = pytest.mark.integration
BUILD = ("preprocess", "chunk", "embed", "dedupe", "upsert")


def _served(repo: Repo) -> str | None:
    cfg = load_config(repo.path / "params.yaml")
    store = open_store(cfg.qdrant, repo.path)
    try:
        spec = store.describe(cfg.qdrant.collection)
        return None if spec is None else str(spec.metadata["fingerprint"])
    finally:
        close_stores()


def _recorded(repo: Repo) -> str:
    return str(repo.json("data/embeddings/manifest.json")["fingerprint"])


def _verify(repo: Repo) -> dict[str, Any]:
    proc = repo.embedline("verify", "--json", check=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == (0 if report["ok"] else 1), proc.stderr
    return report


def _agree(repo: Repo) -> str:
    """Served == recorded, by the store itself and by `embedline verify --json`."""
    report = _verify(repo)
    assert report["ok"], report
    assert report["served_fingerprint"] == report["recorded_fingerprint"] == _recorded(repo) == _served(repo)
    assert report["served_collection"] == report["collection"] and report["alias"] == "embedline"
    assert report["collections"][report["collection"]] == report["expected"] > 0
    return _recorded(repo)


def _mismatch_reported(repo: Repo, served: str) -> None:
    """Served != recorded, and verify says so in one line naming the fix."""
    report = _verify(repo)
    assert not report["ok"] and report["served_fingerprint"] == served != report["recorded_fingerprint"]
    proc = repo.embedline("verify", check=False)
    assert proc.returncode == 1
    line = " ".join(proc.stderr.split())
    assert f"serves {served}" in line and "embedline promote" in line, proc.stderr


@pytest.mark.slow
def test_set_runs_and_experiments_build_shadows_and_dvc_repro_serves_the_recorded_set(work: Repo) -> None:
    work.commit_all("baseline")
    base = _agree(work)

    # a --set run (the stages DVC would run, with an override): a shadow set, the alias untouched
    for stage in (*BUILD, "promote"):
        proc = work.embedline("stage", stage, "--set", "chunk.max_tokens=64")
    shadow = _recorded(work)
    assert shadow != base and _served(work) == base
    assert f"embedline promote {shadow}" in " ".join(proc.stdout.split())
    _mismatch_reported(work, served=base)

    # dvc repro rebuilds params.yaml's outputs (stages with a `cache: false` stats output are never
    # restored from the run-cache; every vector comes from the embedding cache) and the promote
    # stage, which always runs, finds the alias already on the recorded set
    ran = work.repro()
    assert ran[-1] == "promote" and "embed" in ran
    assert work.json("data/metrics/embed.json")["texts_embedded"] == 0
    assert _agree(work) == base

    # dvc exp run builds the experiment's set and leaves the served one alone
    work.dvc("exp", "run", "-n", "small", "-S", "chunk.max_tokens=64", timeout=600)
    assert _served(work) == base and _recorded(work) == shadow
    _mismatch_reported(work, served=base)

    # dvc exp apply + dvc repro: the workspace records the experiment; repro serves it (gate passed)
    work.dvc("exp", "apply", "small")
    _mismatch_reported(work, served=base)
    assert work.repro() == ["promote"]
    assert _agree(work) == shadow

    # git checkout + dvc checkout: back to the commit; repro serves its set again
    work.git("checkout", "--", "params.yaml", "dvc.lock", "data/metrics")
    work.dvc("checkout")
    _mismatch_reported(work, served=shadow)
    assert work.repro() == ["promote"]
    assert _agree(work) == base
    assert work.git("status", "--porcelain") == ""


@pytest.mark.slow
def test_promote_moves_the_alias_only_after_the_gate_passes(work: Repo) -> None:
    base = _agree(work)
    # a much worse set: 2-d vectors (Matryoshka truncation of the fake embedder)
    for stage in (*BUILD, "promote"):
        proc = work.embedline("stage", stage, "--set", "embed.dimensions=2")
    worse = _recorded(work)
    assert "not served" in proc.stdout and _served(work) == base

    refused = work.embedline("promote", worse, check=False)
    assert refused.returncode == 1 and "quality gate" in refused.stderr, refused.stderr
    assert _served(work) == base  # the gate refused: nothing moved
    _mismatch_reported(work, served=base)

    work.embedline("promote", worse, "--force")  # the operator overrides the gate
    assert _served(work) == worse
    # the pipeline on params.yaml serves the recorded (better) set again, through the gate
    ran = work.repro()
    assert ran[-1] == "promote"
    assert _agree(work) == base


@pytest.mark.slow
def test_ingest_with_set_builds_a_shadow_and_promote_serves_it(work: Repo) -> None:
    base = _agree(work)
    work.env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
    proc = work.embedline("ingest", "--set", "chunk.max_tokens=64", "--no-eval", timeout=600)
    shadow = _recorded(work)
    assert shadow != base and _served(work) == base
    assert f"embedline promote {shadow}" in " ".join(proc.stdout.split())
    work.embedline("promote", shadow)
    assert _agree(work) == shadow


def test_byte_stable_outputs_and_summary_without_a_store(
    built: tuple[Repo, list[str]], tmp_path: Path, scratch: Path
) -> None:
    """The manifest and dedupe report carry no timings or absolute paths; a fresh clone's summary
    says no store exists instead of printing committed numbers."""
    repo, _ = built
    manifest = repo.json("data/embeddings/manifest.json")
    report = repo.json("data/interim/dedupe_report.json")
    text = json.dumps([manifest, report])
    assert not any(k.startswith("seconds") or k in ("cache_hits", "texts_per_second", "embedder")
                   for d in (manifest, report) for k in d)
    assert str(repo.path) not in text and "/site-packages/" not in text and "/.venv/" not in text

    fresh = clone(repo, tmp_path / "fresh", scratch)
    proc = fresh.embedline("summary")
    assert "no vector set is served" in " ".join(proc.stderr.split())
    assert not (fresh.path / "data" / "qdrant").exists()  # reading did not create a store
