"""`embedline deploy` / `embedline notify`: the nightly-ingest deployment and failure alerts.

- `deploy` creates the `embedline-process` work pool when missing and applies `prefect.yaml` (the
  deployments, cron schedules, concurrency limit, job variables and pull steps defined there).
- `notify` stores a webhook notification block and an automation that fires on every Failed or
  Crashed `ingest` flow run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

import typer

from embedline.flows.console import err, out
from embedline.flows.serve import HomeOpt, ServeError, api_url_for, default_home, project_root

WORK_POOL = "embedline-process"
AUTOMATION_NAME = "embedline: ingest failed"
NOTIFY_BLOCK = "embedline-failures"


def deploy(
    name: Annotated[str | None, typer.Option(help="Deploy only this deployment of prefect.yaml.")] = None,
    pool: Annotated[str, typer.Option(help="Process work pool to create if missing.")] = WORK_POOL,
    home: HomeOpt = None,
) -> None:
    """Create the process work pool if missing and apply the deployments in prefect.yaml."""
    root = project_root()
    try:
        api_url = api_url_for((home or default_home(root)).resolve())
        deploy_project(root, api_url, pool=pool, name=name)
    except ServeError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    ui = api_url.removesuffix("/api")
    out.print(f"deployed; watch runs at {ui}/runs and start a worker with `make worker`",
              soft_wrap=True)


def ensure_work_pool(api_url: str, pool: str = WORK_POOL) -> bool:
    """Create a `process` work pool named `pool` unless it exists; returns whether it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.workers.process import ProcessWorker

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
            return False
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(name=pool, type="process",
                               base_job_template=ProcessWorker.get_default_base_job_template())
            )
            return True


class PullSteps:
    """Pull steps from prefect.yaml handed to a `RunnerDeployment` verbatim (RunnerStorage shape).

    They are stored untemplated: `{{ $EMBEDLINE_ROOT }}` is resolved by the flow-run process from
    its environment (the deployment's job variables), like `prefect deploy` does.
    """

    def __init__(self, steps: list[dict[str, Any]], base: Path) -> None:
        self.steps = steps
        self._base = base

    def set_base_path(self, path: Path) -> None:
        self._base = path

    @property
    def destination(self) -> Path:
        return self._base

    @property
    def pull_interval(self) -> int | None:
        return None

    async def pull_code(self) -> None:
        return None

    def to_pull_step(self) -> list[dict[str, Any]]:
        return self.steps

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PullSteps) and other.steps == self.steps

    __hash__ = None  # type: ignore[assignment]


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def deploy_project(root: Path, api_url: str, *, pool: str = WORK_POOL, name: str | None = None,
                   extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """Apply the deployments of `root`/prefect.yaml to the server at `api_url`.

    Reads the same prefect.yaml `prefect deploy --all` does (entrypoint, parameters, cron schedules,
    concurrency limit, work pool and job variables, pull steps) and applies it with Prefect's Python
    API: `prefect deploy` 3.8.8 exits 1 after applying, on its own follow-up worker query (its client
    sends `limit: null`, which the 3.8.8 server rejects with 422). `{{ $VAR }}` placeholders are filled
    from the environment with EMBEDLINE_ROOT = `root`. Returns {deployment name: id}.
    """
    import contextlib

    import yaml
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.deployments.runner import RunnerDeployment
    from prefect.schedules import Cron
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.utilities.templating import apply_values

    root = root.resolve()
    spec_path = root / "prefect.yaml"
    if not spec_path.exists():
        raise ServeError(f"no prefect.yaml in {root}")
    spec: dict[str, Any] = yaml.safe_load(spec_path.read_text()) or {}
    env = {"EMBEDLINE_ROOT": str(root), **(extra_env or {})}
    created = ensure_work_pool(api_url, pool)
    out.print(f"work pool {pool!r} " + ("created" if created else "exists"))
    ids: dict[str, str] = {}
    wanted = [d for d in spec.get("deployments") or [] if name in (None, d.get("name"))]
    if not wanted:
        raise ServeError(f"no deployment {name!r} in {spec_path}" if name else f"no deployments in {spec_path}")
    with temporary_settings({PREFECT_API_URL: api_url}), contextlib.chdir(root), _environ(env):
        for raw in wanted:
            pull = raw.get("pull", spec.get("pull")) or []
            # `{{ $VAR }}` placeholders read os.environ (see _environ above)
            body: dict[str, Any] = {k: v for k, v in raw.items() if k != "pull"}
            d: dict[str, Any] = apply_values(body, {}, remove_notset=True)
            wp = d.get("work_pool") or {}
            limit = d.get("concurrency_limit")
            if isinstance(limit, dict):
                limit = ConcurrencyLimitConfig(**limit)
            schedules = [
                Cron(s["cron"], timezone=s.get("timezone"), active=s.get("active", True),
                     day_or=s.get("day_or", True))
                for s in d.get("schedules") or [] if "cron" in s
            ]
            dep = RunnerDeployment.from_entrypoint(
                d["entrypoint"], d["name"], schedules=schedules, concurrency_limit=limit,
                parameters=d.get("parameters") or {}, description=d.get("description"),
                tags=d.get("tags") or [], paused=d.get("paused"),
                work_pool_name=wp.get("name", pool), work_queue_name=wp.get("work_queue_name"),
                job_variables=wp.get("job_variables") or {},
            )
            dep.storage = PullSteps(pull, root)  # type: ignore[assignment]
            ids[d["name"]] = str(dep.apply())
            out.print(f"deployment {dep.flow_name}/{d['name']}: "
                      f"{api_url.removesuffix('/api')}/deployments/deployment/{ids[d['name']]}",
                      soft_wrap=True)
    return ids


def notify(
    webhook: Annotated[str, typer.Option(help="URL that receives a JSON POST per failed run.")],
    home: HomeOpt = None,
) -> None:
    """Alert on failure: a webhook notification block + an automation on Failed/Crashed ingest runs."""
    try:
        api_url = api_url_for((home or default_home(project_root())).resolve())
        automation_id = create_failure_automation(api_url, webhook)
    except ServeError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    out.print(f"automation {AUTOMATION_NAME!r} ({automation_id}) posts failed ingest runs to {webhook}",
              soft_wrap=True)


def create_failure_automation(api_url: str, webhook: str) -> str:
    """(Re)create the failure automation; returns its id. Works offline against a local server."""
    import asyncio

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        return asyncio.run(_create_failure_automation(webhook))


async def _create_failure_automation(webhook: str) -> str:
    from prefect.automations import Automation, EventTrigger, Posture, SendNotification
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name=NOTIFY_BLOCK, url=webhook, method="POST", headers=None, cookies=None,
        json_data={"subject": "{{subject}}", "text": "{{body}}"},
    )
    block_id = await block.asave(NOTIFY_BLOCK, overwrite=True)
    with suppress(ValueError):
        await (await Automation.aread(name=AUTOMATION_NAME)).adelete()
    automation = await Automation(
        name=AUTOMATION_NAME,
        description="Notify when an embedline ingest flow run fails or crashes.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": "ingest"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="embedline ingest {{ flow_run.state.name }}: {{ flow_run.name }}",
                body=(
                    "Flow run {{ flow_run.name }} of {{ flow.name }} entered "
                    "{{ flow_run.state.name }}: {{ flow_run.state.message }}\n"
                    "{{ flow_run|ui_url }}"
                ),
            )
        ],
    ).acreate()
    return str(automation.id)
