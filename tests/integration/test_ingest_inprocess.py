"""`embedline ingest` without a Prefect server runs the DAG in-process (issue 14 row 17, issue 16)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def embedline(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("embedline")
    full = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    full.update({"PREFECT_HOME": str(cwd / ".prefect"), **env})
    return subprocess.run([str(exe), *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=600)


def test_ingest_without_server_never_starts_one(tiny_project: Path) -> None:
    # Prefect refuses to start a temporary server: the old CLI (always a flow run) failed here
    res = embedline("ingest", "--no-eval", "-v", cwd=tiny_project, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="false")
    assert res.returncode == 0, res.stderr
    assert "telemetry" not in (res.stdout + res.stderr).lower()
    assert "temporary server" not in res.stderr
    assert "stage upsert" in res.stderr  # -v shows the stage logs
    metrics = tiny_project / "data" / "metrics"
    assert {p.stem for p in metrics.glob("*.json")} >= {"preprocess", "chunk", "embed", "dedupe", "upsert"}
    upsert = json.loads((metrics / "upsert.json").read_text())
    assert upsert["added"] > 0
    again = embedline("ingest", "--no-eval", cwd=tiny_project, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="false")
    assert again.returncode == 0, again.stderr
    second = json.loads((metrics / "upsert.json").read_text())
    assert second["added"] == 0 and second["unchanged"] == upsert["added"]


def test_env_defaults_silence_telemetry_and_wait_patiently() -> None:
    code = ("import os; import embedline.flows.console; "
            "print(os.environ['PREFECT_SERVER_ANALYTICS_ENABLED'], "
            "os.environ['PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    analytics, timeout = res.stdout.split()
    assert analytics == "false" and int(timeout) >= 120
