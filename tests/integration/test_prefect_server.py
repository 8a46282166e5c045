"""Prefect in production: a real server, the nightly-ingest deployment, a worker, the UI.

One module-scoped server on a free loopback port (tmp PREFECT_HOME); the deployment comes from the
project's prefect.yaml (code = this checkout) and runs are pointed at a tiny tmp project through the
flow's `root` parameter. Runs are executed by `prefect worker start --run-once` subprocesses. The UI
check drives Debian's Chromium through Playwright (never `playwright install`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from embedline.flows.deploy import WORK_POOL, create_failure_automation, deploy_project
from embedline.flows.serve import ServerInfo, free_port, start_server, stop_server
from tests.conftest import FAKE, TINY_DOCS, make_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = PROJECT / "tests" / "artifacts" / "flow-run.png"
STAGES = ("preprocess", "chunk", "embed", "dedupe", "upsert")
DEPLOYMENT = "ingest/nightly-ingest"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# a document plus two bad inputs the preprocess stage must report (rejected-files table)
# Prefect 3.8.8's client sends `limit: null` / `sort: null` unless given, which its server rejects
def page_of_runs() -> dict[str, Any]:
    from prefect.client.schemas.sorting import FlowRunSort

    return {"limit": 100, "sort": FlowRunSort.EXPECTED_START_TIME_ASC}
BAD_DOCS = {"bad/blob.txt": "\x00\x01\x02binary\x00" * 20, "bad/empty.md": "   \n\n"}


# ---- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    home = tmp_path_factory.mktemp("prefect-server")
    info = ServerInfo("127.0.0.1", free_port(), home)
    # the scheduler loop is shortened so the schedule's runs appear within seconds
    start_server(info, timeout=180,
                 extra_env={"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"})
    try:
        yield info
    finally:
        stop_server(home)


@pytest.fixture(scope="module")
def api(server: ServerInfo) -> Iterator[Any]:
    """A sync Prefect client bound to the test server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as c:
        yield c


@pytest.fixture(scope="module")
def deployment(server: ServerInfo, api: Any) -> Any:
    deploy_project(PROJECT, server.api_url)
    return api.read_deployment_by_name(DEPLOYMENT)


def run_worker(server: ServerInfo, home: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`prefect worker start --run-once`: executes the due runs of the pool, then exits."""
    env = {**os.environ, "PREFECT_API_URL": server.api_url, "PREFECT_HOME": str(home),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--run-once",
           "--type", "process"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def trigger(server: ServerInfo, **parameters: Any) -> Any:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api_url}):
        return run_deployment(DEPLOYMENT, parameters=parameters, timeout=0)


def query(server: ServerInfo, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST /api/<path>/filter. Plain REST: Prefect 3.8.8's client sends `null` for unset
    `limit` / `offset` / `sort`, which its server (with fastapi 0.154) rejects with 422."""
    import httpx

    r = httpx.post(f"{server.api_url}/{path}/filter", json={"limit": 200, "offset": 0, **body},
                   timeout=30)
    r.raise_for_status()
    result: list[dict[str, Any]] = r.json()
    return result


def run_ids(server: ServerInfo, flow_run_id: Any) -> list[str]:
    """The run and its subflow runs (the embed fan-out)."""
    children = query(server, "flow_runs",
                     {"flow_runs": {"parent_flow_run_id": {"any_": [str(flow_run_id)]}}})
    return [str(flow_run_id), *(c["id"] for c in children)]


def logs_of(server: ServerInfo, flow_run_id: Any) -> list[str]:
    logs = query(server, "logs", {"logs": {"flow_run_id": {"any_": [str(flow_run_id)]}},
                                  "sort": "TIMESTAMP_ASC"})
    return [f"{lg['level']} {lg['message']}" for lg in logs]


@pytest.fixture(scope="module")
def completed_run(server: ServerInfo, api: Any, deployment: Any,
                  tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = make_project(tmp_path_factory.mktemp("tiny") / "proj",
                        {**FAKE, "embed.shard_rows": 4}, docs={**TINY_DOCS, **BAD_DOCS})
    run = trigger(server, root=str(root), evaluate=False)
    result = run_worker(server, tmp_path_factory.mktemp("worker-home"))
    state = api.read_flow_run(run.id).state
    assert state is not None and state.is_completed(), (
        f"run ended {state!r}\nworker output:\n{result.stdout[-4000:]}\nlogs:\n"
        + "\n".join(logs_of(server, run.id)[-40:]))
    return api.read_flow_run(run.id)


# ---- tests -------------------------------------------------------------------------------------
def test_server_ui_agrees_with_port(server: ServerInfo) -> None:
    import httpx

    settings = httpx.get(f"{server.ui_url}/ui-settings", timeout=10).json()
    assert settings["api_url"] == server.api_url  # not the default :4200
    assert (server.home / "prefect.db").exists()  # SQLite in the given PREFECT_HOME


def test_deployment_from_prefect_yaml(deployment: Any) -> None:
    assert deployment.work_pool_name == WORK_POOL
    assert deployment.entrypoint == "flows/ingest.py:ingest"
    assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]
    assert deployment.schedules[0].schedule.timezone == "UTC"
    assert deployment.concurrency_options.collision_strategy == "ENQUEUE"
    assert deployment.global_concurrency_limit.limit == 1
    step = deployment.pull_steps[0]["prefect.deployments.steps.set_working_directory"]
    assert step["directory"] == "{{ $EMBEDLINE_ROOT }}"
    assert deployment.job_variables["env"]["EMBEDLINE_ROOT"] == str(PROJECT)
    # the UI form renders the pydantic Config (every params.yaml section)
    schema = deployment.parameter_openapi_schema
    assert {"params", "overrides", "root", "dry_run"} <= set(schema["properties"])
    assert {"embed", "chunk", "qdrant"} <= set(schema["definitions"]["Config"]["properties"])


def test_schedule_produces_scheduled_runs(server: ServerInfo, deployment: Any) -> None:
    body = {"deployments": {"id": {"any_": [str(deployment.id)]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            "sort": "EXPECTED_START_TIME_ASC"}
    deadline = time.monotonic() + 60
    runs = query(server, "flow_runs", body)
    while time.monotonic() < deadline and not runs:
        time.sleep(1)
        runs = query(server, "flow_runs", body)
    assert runs, "the scheduler created no runs for the cron schedule"
    for r in runs:
        assert r["auto_scheduled"]
        assert r["expected_start_time"][11:19] == "02:00:00", r["expected_start_time"]


def test_prefect_cli_lists_deployments_and_flow_runs(server: ServerInfo, deployment: Any,
                                                     tmp_path: Path) -> None:
    """Prefect's own CLI works against the project's server (3.8.8's `flow-run ls` got a 422:
    its client sent `limit`/`sort` as null and the server rejected them)."""
    env = {**os.environ, "PREFECT_API_URL": server.api_url, "PREFECT_HOME": str(tmp_path),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200"}
    deadline = time.monotonic() + 120
    while not query(server, "flow_runs", {"flow_runs": {"deployment_id": {"any_": [str(deployment.id)]}}}):
        assert time.monotonic() < deadline, "the scheduler created no run"
        time.sleep(2)
    for args, expect in ((["deployment", "ls"], "nightly-ingest"), (["flow-run", "ls"], "SCHEDULED")):
        proc = subprocess.run([sys.executable, "-m", "prefect", *args], env=env, capture_output=True,
                              text=True, timeout=180, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert expect in proc.stdout, proc.stdout


def test_triggered_run_completes_with_artifacts(server: ServerInfo, completed_run: Any) -> None:
    ids = run_ids(server, completed_run.id)
    arts = query(server, "artifacts", {"artifacts": {"flow_run_id": {"any_": ids}},
                                       "sort": "UPDATED_DESC"})
    by_key = {a["key"]: a for a in arts if a["key"]}
    assert by_key["ingest-summary"]["type"] == "markdown"
    assert "documents" in by_key["ingest-summary"]["data"]
    assert by_key["rejected-files"]["type"] == "table"
    rejected = json.loads(by_key["rejected-files"]["data"])
    assert any("blob.txt" in row["path"] for row in rejected), rejected
    assert by_key["dedupe-report"]["type"] == "table"
    assert json.loads(by_key["dedupe-report"]["data"])  # the planted exact duplicate
    assert by_key["embed-progress"]["type"] == "progress"
    assert float(by_key["embed-progress"]["data"]) == pytest.approx(100.0)

    tasks = query(server, "task_runs", {"flow_runs": {"id": {"any_": ids}}})
    names = {t["name"] for t in tasks}
    for stage in STAGES:
        assert any(re.fullmatch(rf"{stage}-\w+", n) for n in names), (stage, sorted(names))
    # each stage said what it did in one log line
    lines = "\n".join(logs_of(server, completed_run.id))
    for stage in STAGES:
        assert f"{stage}: " in lines, stage


def test_failed_run_shows_cause_and_notifies(server: ServerInfo, api: Any, deployment: Any,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            received.append(json.loads(body or b"{}"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        create_failure_automation(server.api_url, f"http://127.0.0.1:{hook.server_port}/hook")
        # a source with no usable document: preprocess must fail the run, clearly
        root = make_project(tmp_path_factory.mktemp("empty") / "proj", FAKE, docs=BAD_DOCS)
        run = trigger(server, root=str(root), evaluate=False)
        run_worker(server, tmp_path_factory.mktemp("worker-home-2"))
        state = api.read_flow_run(run.id).state
        assert state is not None and state.is_failed(), state
        lines = logs_of(server, run.id)
        errors = [ln for ln in lines if ln.startswith("40 ingest FAILED")]
        assert errors, "\n".join(lines)
        assert "at stage preprocess: NoUsableDocumentsError" in errors[0], errors[0]
        assert errors[0].count("\n") == 0
        # and the first ERROR line of the run already names the cause (the failing stage's)
        first_error = next(ln for ln in lines if ln.startswith("40 "))
        assert "NoUsableDocumentsError" in first_error.splitlines()[0], first_error
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not received:
            time.sleep(0.5)
        assert received, "the failure automation sent no notification"
        assert "Failed" in json.dumps(received[0])
    finally:
        hook.shutdown()


def test_overlapping_runs_wait_for_each_other(server: ServerInfo, api: Any, deployment: Any,
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two runs due at once (different projects, so no file lock is involved): the deployment's
    concurrency limit lets one run and holds the other; they never run at the same time."""
    import httpx

    roots = [make_project(tmp_path_factory.mktemp(f"overlap{i}") / "proj", FAKE) for i in range(2)]
    runs = [trigger(server, root=str(r), evaluate=False) for r in roots]
    run_worker(server, tmp_path_factory.mktemp("worker-home-3"))
    after = [api.read_flow_run(r.id) for r in runs]
    try:
        done = [r for r in after if r.state and r.state.is_completed()]
        assert done, [r.state for r in after]
        waiting = [r for r in after if r not in done]
        for r in waiting:  # held back by the limit, never started
            assert r.state.name == "AwaitingConcurrencySlot" and r.start_time is None, r.state
        if len(done) == 2:  # both ran: strictly one after the other
            first, second = sorted(done, key=lambda r: r.start_time)
            assert second.start_time >= first.end_time
    finally:
        for r in after:  # leave nothing queued for later tests
            if r.state and not r.state.is_final():
                httpx.post(f"{server.api_url}/flow_runs/{r.id}/set_state", timeout=30, json={
                    "state": {"type": "CANCELLED", "name": "Cancelled"}, "force": True})


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                    "(apt-get install -y chromium); Playwright's own browsers are never downloaded")
def test_flow_run_page_in_chromium(server: ServerInfo, completed_run: Any) -> None:
    pytest.importorskip("playwright", reason="pip install playwright (no browser download needed)")
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1100})
            page.goto(f"{server.ui_url}/runs/flow-run/{completed_run.id}", timeout=60_000)
            expect(page.get_by_text(completed_run.name).first).to_be_visible(timeout=60_000)
            # the graph is a canvas: the stage names are read from the Task Runs tab's list
            page.get_by_text("Task Runs", exact=True).first.click()
            for stage in STAGES:
                name = page.get_by_text(re.compile(rf"^{stage}-\w+$")).first
                expect(name).to_be_visible(timeout=30_000)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
