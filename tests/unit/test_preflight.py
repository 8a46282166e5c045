"""Bad values that validate fail before any work, in one line (issue 14 row 8)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedline.flows.cli import app
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, ConfigError, load_config
from embedline.tasks.preflight import PreflightError, check_ready

pytestmark = pytest.mark.unit


def ready(tmp_path: Path, **overrides: object) -> None:
    (tmp_path / "data" / "raw").mkdir(parents=True, exist_ok=True)
    check_ready(load_config(None, {"source": "data/raw", **overrides}), Artifacts(tmp_path))


def test_defaults_are_ready(tmp_path: Path) -> None:
    ready(tmp_path)  # the installed default model, writable folders, an existing source
    ready(tmp_path, **{"embed.provider": "fake", "embed.model": "anything"})


@pytest.mark.parametrize("name", ["bad name/with slash", "a/b", "", "../up", "x" * 300, "tab\there", ".hidden"])
def test_collection_name_is_checked_at_validation(name: str) -> None:
    with pytest.raises(ConfigError, match=r"qdrant\.collection.*collection name"):
        load_config(None, {"qdrant.collection": name})


def test_good_collection_names_pass() -> None:
    for name in ("embedline", "docs_v2", "team-a.vectors", "_x"):
        assert Config.model_validate({"qdrant": {"collection": name}}).qdrant.collection == name


def test_unwritable_store_path(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match=r"qdrant\.path.*/proc/nope.*cannot be written"):
        ready(tmp_path, **{"qdrant.path": "/proc/nope"})
    (tmp_path / "file").write_text("x")
    with pytest.raises(PreflightError, match=r"embed\.cache_path.*is not a folder"):
        ready(tmp_path, **{"embed.cache_path": str(tmp_path / "file" / "cache.sqlite")})


def test_unknown_model_fails_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PreflightError, match=r"embed\.model 'no-such-org/no-such-model'.*Hugging Face cache"):
        ready(tmp_path, **{"embed.model": "no-such-org/no-such-model"})
    with pytest.raises(PreflightError, match=r"embed\.model '/no/such/dir': no such folder"):
        ready(tmp_path, **{"embed.model": "/no/such/dir"})


def test_every_problem_in_one_error(tmp_path: Path) -> None:
    cfg = load_config(None, {"source": "nowhere", "qdrant.path": "/proc/nope", "embed.model": "/no/such/dir"})
    with pytest.raises(PreflightError) as info:
        check_ready(cfg, Artifacts(tmp_path))
    msg = str(info.value)
    assert "source folder" in msg and "qdrant.path" in msg and "embed.model" in msg and "\n" not in msg


def test_cli_ingest_missing_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["ingest", "/no/such/folder", "--set", "embed.provider=fake"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert "/no/such/folder does not exist (param 'source')" in " ".join(lines)
    assert "Traceback" not in res.output and len(lines) <= 2  # rich may wrap the one line


def test_cli_missing_params_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["ingest", "--params", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "nope.yaml: no such file" in " ".join(res.output.split())
