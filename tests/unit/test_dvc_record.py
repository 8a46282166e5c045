"""flows.runtime.dvc_record: a flow run on params.yaml is recorded with `dvc commit --force <stages>`;
an override run, a dry project or a missing DVC repo is not; a DVC refusal is a clear error."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from embedline.flows import runtime
from embedline.flows.runtime import DvcRecordError, dvc_record
from embedline.tasks.config import load_config

pytestmark = pytest.mark.unit


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text("chunk:\n  max_tokens: 128\n")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / ".dvc").mkdir()
    return tmp_path


class Recorder:
    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.calls: list[tuple[list[str], str]] = []
        self.returncode, self.stderr = returncode, stderr

    def __call__(self, cmd: list[str], cwd: str, **_: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((cmd, cwd))
        return subprocess.CompletedProcess(cmd, self.returncode, "", self.stderr)


def test_run_on_params_yaml_commits_the_stages_that_ran(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(runtime.subprocess, "run", rec)
    cfg = load_config(project / "params.yaml")
    assert dvc_record(str(project), cfg, ran=["preprocess", "chunk", "embed"]) is True
    [(cmd, cwd)] = rec.calls
    assert cmd[1:] == ["commit", "--force", "--quiet", "preprocess", "chunk", "embed"]
    assert Path(cmd[0]).name == "dvc" and cwd == str(project)


def test_override_run_is_not_recorded(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(runtime.subprocess, "run", rec)
    cfg = load_config(project / "params.yaml", ["chunk.max_tokens=64"])
    assert dvc_record(str(project), cfg, ran=["chunk"]) is False
    assert rec.calls == []


@pytest.mark.parametrize("missing", ["dvc.yaml", ".dvc"])
def test_not_a_dvc_project(project: Path, monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    rec = Recorder()
    monkeypatch.setattr(runtime.subprocess, "run", rec)
    target = project / missing
    target.rmdir() if target.is_dir() else target.unlink()
    assert dvc_record(str(project), load_config(project / "params.yaml"), ran=["chunk"]) is False
    assert rec.calls == []


def test_dvc_refusal_is_a_clear_error(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(returncode=1, stderr="ERROR: Unable to acquire lock. Most likely another DVC process is running")
    monkeypatch.setattr(runtime.subprocess, "run", rec)
    with pytest.raises(DvcRecordError, match=r"Unable to acquire lock.*dvc\.lock does not record it"):
        dvc_record(str(project), load_config(project / "params.yaml"), ran=["upsert"])
