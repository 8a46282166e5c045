"""The `embedline` console script: help, config errors, stage names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parents[2]


def embedline(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("embedline")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_help_lists_commands() -> None:
    res = embedline("--help", cwd=PROJECT)
    assert res.returncode == 0
    for cmd in ("ingest", "stage", "search", "plan", "verify", "export", "import", "eval", "serve"):
        assert cmd in res.stdout


@pytest.mark.parametrize("command", [["ingest"], ["stage", "preprocess"], ["plan"]])
def test_bad_set_key_fails_before_work(command: list[str], tiny_project: Path) -> None:
    res = embedline(*command, "--set", "chunk.max_tokenz=64", cwd=tiny_project)
    assert res.returncode == 2
    assert "chunk.max_tokenz" in res.stderr and "max_tokens" in res.stderr
    assert not (tiny_project / "data" / "interim").exists()  # no work was done


def test_bad_value_names_choices(tiny_project: Path) -> None:
    res = embedline("stage", "embed", "--set", "embed.provider=cohere", cwd=tiny_project)
    assert res.returncode == 2
    assert "embed.provider" in res.stderr and "sentence-transformers" in res.stderr


def test_unknown_stage(tiny_project: Path) -> None:
    res = embedline("stage", "nosuch", cwd=tiny_project)
    assert res.returncode == 2 and "preprocess" in res.stderr


def test_stage_full_flag_ignores_the_ledger(tiny_project: Path) -> None:
    import json

    metric = tiny_project / "data" / "metrics" / "preprocess.json"
    assert embedline("stage", "preprocess", cwd=tiny_project).returncode == 0
    assert embedline("stage", "preprocess", cwd=tiny_project).returncode == 0
    assert json.loads(metric.read_text())["files_loaded"] == 0  # nothing changed: nothing loaded
    res = embedline("stage", "preprocess", "--full", cwd=tiny_project)
    assert res.returncode == 0, res.stderr
    stats = json.loads(metric.read_text())
    assert stats["files_loaded"] == stats["files"] > 0
