"""`embedline serve` / `deploy` helpers that need no running server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from embedline.flows.deploy import PullSteps
from embedline.flows.serve import (
    PID_FILE,
    STATE_FILE,
    ServerInfo,
    api_url_for,
    free_port,
    port_free,
    project_root,
    read_state,
    server_command,
    server_env,
    stop_server,
)

pytestmark = pytest.mark.unit
PROJECT = Path(__file__).resolve().parents[2]


def test_server_settings_agree_with_the_port(tmp_path: Path) -> None:
    info = ServerInfo("127.0.0.1", 4301, tmp_path)
    env = server_env(info, base={"PREFECT_API_URL": "http://elsewhere:4200/api"})
    assert env["PREFECT_SERVER_API_PORT"] == "4301"
    assert env["PREFECT_SERVER_API_HOST"] == "127.0.0.1"
    assert env["PREFECT_UI_API_URL"] == env["PREFECT_API_URL"] == "http://127.0.0.1:4301/api"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["PREFECT_HOME"] == str(tmp_path)
    assert str(tmp_path / "prefect.db") in env["PREFECT_API_DATABASE_CONNECTION_URL"]
    cmd = server_command(info)
    assert cmd[cmd.index("--port") + 1] == "4301" and "--analytics-off" in cmd


def test_project_root_walks_up(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("source: data/raw\n")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    assert project_root(sub) == tmp_path.resolve()


def test_stop_without_server_and_stale_state(tmp_path: Path) -> None:
    assert stop_server(tmp_path) is False
    # a record left by a server that died: cleaned, not trusted
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / PID_FILE).write_text(f"{dead.pid}\n")
    (tmp_path / STATE_FILE).write_text(json.dumps({"pid": dead.pid, "api_url": "http://x/api"}))
    assert read_state(tmp_path) is None
    assert not (tmp_path / PID_FILE).exists() and not (tmp_path / STATE_FILE).exists()


def test_stop_ends_the_process_group(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)
    (tmp_path / PID_FILE).write_text(f"{proc.pid}\n")
    started = time.monotonic()
    assert stop_server(tmp_path, timeout=10) is True
    proc.wait(timeout=5)  # (its status may have been reaped by stop_server already)
    assert time.monotonic() - started < 10  # ended by SIGTERM, not by its own 60 s sleep
    assert not (tmp_path / PID_FILE).exists()


def test_api_url_needs_a_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from embedline.flows.serve import ServeError

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(ServeError, match="make serve"):
        api_url_for(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    assert api_url_for(tmp_path) == "http://127.0.0.1:1/api"


def test_free_port_is_free() -> None:
    assert port_free("127.0.0.1", free_port())


def test_prefect_yaml_nightly_ingest() -> None:
    spec = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    (dep,) = [d for d in spec["deployments"] if d["name"] == "nightly-ingest"]
    assert dep["entrypoint"] == "flows/ingest.py:ingest"
    assert dep["work_pool"]["name"] == "embedline-process"
    assert dep["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    assert dep["schedules"][0]["cron"] and dep["schedules"][0]["timezone"] == "UTC"
    assert "params" not in (dep.get("parameters") or {})  # params.yaml is read at run time
    (step,) = spec["pull"]
    assert "prefect.deployments.steps.set_working_directory" in step
    assert PullSteps(spec["pull"], PROJECT).to_pull_step() == spec["pull"]


def test_cli_registers_commands() -> None:
    from embedline.flows import commands  # noqa: F401
    from embedline.flows.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0 and "--stop" in result.output
    result = CliRunner().invoke(app, ["serve", "--stop", "--home", "/nonexistent-embedline-home"])
    assert result.exit_code == 0 and "no server running" in result.output
    for command in ("deploy", "notify"):
        assert CliRunner().invoke(app, [command, "--help"]).exit_code == 0


@pytest.mark.integration
def test_stop_ends_the_worker_that_serve_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make worker` = `serve --worker`: a real worker with no server behind it (it loops on connection
    errors) is ended by `make stop` = `serve --stop`, even with no server running."""
    import os

    from embedline.flows.cli import app
    from embedline.flows.serve import WORKER_LOG_FILE, WORKER_PID_FILE

    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")  # nothing listens
    runner = CliRunner()
    started = runner.invoke(app, ["serve", "--worker", "some-pool", "--home", str(tmp_path)])
    assert started.exit_code == 0, started.output
    pid = int((tmp_path / WORKER_PID_FILE).read_text())
    log = tmp_path / WORKER_LOG_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not log.read_text(errors="replace").strip():
        time.sleep(0.5)  # wait until the worker runs (and fails to reach its server)
    os.kill(pid, 0)  # still running
    stopped = runner.invoke(app, ["serve", "--stop", "--home", str(tmp_path)])
    assert stopped.exit_code == 0 and "stopped" in stopped.output
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (tmp_path / WORKER_PID_FILE).exists()
