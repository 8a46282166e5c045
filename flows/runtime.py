"""What the flow needs around the DAG: config resolution, the task runner, a run lock, DVC records."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from embedline.tasks.config import PARAMS_FILE, Config, load_config

log = logging.getLogger("embedline")


class RunInProgressError(RuntimeError):
    """Another ingest holds the project's run lock."""


def resolve_config(root: str, params: Config | None, overrides: list[str] | None) -> Config:
    """`params` (from the UI form or a caller) or params.yaml, plus `--set` style overrides."""
    if params is None:
        return load_config(Path(root) / PARAMS_FILE, overrides or [])
    if overrides:
        from embedline.tasks.config import apply_overrides, validate

        return validate(apply_overrides(params.model_dump(mode="json"), overrides))
    return params


def embed_runner(cfg: Config) -> Any:
    """The task runner of the embed fan-out: threads, or Dask (local cluster or an address)."""
    if cfg.run.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if cfg.run.dask_address:
            return DaskTaskRunner(address=cfg.run.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": cfg.run.dask_workers, "threads_per_worker": 1,
                            "processes": True, "dashboard_address": None}
        )
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=cfg.embed.concurrency)


@contextmanager
def ingest_lock(root: str, timeout: float = 6 * 3600) -> Iterator[None]:
    """One ingest at a time per project: a second concurrent run waits for the first."""
    lock_path = Path(root) / "data" / ".ingest.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(lock_path), timeout=timeout):
            yield
    except Timeout as exc:
        raise RunInProgressError(f"another ingest holds {lock_path}") from exc


class DvcRecordError(RuntimeError):
    """The flow's results could not be recorded in dvc.lock (DVC said why)."""


def dvc_record(root: str, cfg: Config, ran: list[str]) -> bool:
    """Record a flow run's outputs in dvc.lock so `dvc status` agrees with what Prefect built.

    The flow ran the very functions `dvc repro` would run (`embedline stage <name>`), on the same
    inputs and params, so `dvc commit --force <stages>` records the current deps, params and outs
    of the stages that ran (and caches the outs) exactly as a `dvc repro` would have. Only when the
    run used exactly params.yaml: an override run is an experiment, it is not recorded, and
    `dvc status` says so (track those with `dvc exp run -S`). Stages that did not run (evaluate
    with --no-eval) are not recorded either, so `dvc status` names them. Returns whether dvc.lock
    was updated; raises :class:`DvcRecordError` when DVC refuses (e.g. another DVC command holds
    the repo lock), naming the command to run afterwards.
    """
    rootp = Path(root)
    if not ran or not (rootp / "dvc.yaml").exists() or not (rootp / ".dvc").is_dir():
        return False
    if cfg != load_config(rootp / PARAMS_FILE):
        log.warning("run used overrides: dvc.lock not updated (use `dvc exp run -S` to track it)")
        return False
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    cmd = [dvc, "commit", "--force", "--quiet", *ran]
    try:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise DvcRecordError(f"cannot run DVC ({exc}); record this run with `{' '.join(cmd[1:])}`") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise DvcRecordError(
            f"`dvc {' '.join(cmd[1:])}` failed: {detail[-1] if detail else proc.returncode}. The "
            "vector set was built but dvc.lock does not record it yet: re-run that command once "
            "other DVC commands have finished"
        )
    log.info("dvc.lock records stages %s", ", ".join(ran))
    return True


def record_after_swap(root: str, cfg: Config, ran: list[str]) -> bool:
    """:func:`dvc_record` at the end of an ingest, after the alias swap: the new vector set is
    already live, so a DVC refusal must not mark the run Failed. It is logged as a WARNING (with
    the command to run) on the run's log, and False is returned."""
    try:
        return dvc_record(root, cfg, ran)
    except DvcRecordError as exc:
        try:
            from prefect import get_run_logger

            get_run_logger().warning("run completed, the new vector set is live; %s", exc)
        except Exception:  # noqa: BLE001 no Prefect run context (called outside a flow): any error of get_run_logger
            log.warning("run completed, the new vector set is live; %s", exc)
        return False


def failure_cause(state: Any) -> str:
    """`ExceptionType: first line of its message` for a Failed/Crashed state (else its message)."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 the result may not be retrievable (crash, no persistence): any reason means no cause to show
        exc = None
    from prefect.exceptions import CrashedRun, FailedRun

    if isinstance(exc, BaseException) and not isinstance(exc, (CrashedRun, FailedRun)):
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    return str(getattr(state, "message", "") or "unknown cause")


def _failed_tasks(flow_run_id: Any) -> list[str]:
    """Names of the run's Failed/Crashed task runs, oldest first (best effort)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import TaskRunSort

    failed = TaskRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED])
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=failed)),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=50,  # explicit: 3.8.8's client sends null, which its server rejects
        )
    # task run names are "<task name>-<short id>" (e.g. preprocess-1a2)
    return [r.name.rsplit("-", 1)[0] for r in runs]


def report_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow `on_failure` / `on_crashed` hook: one ERROR line with the failed stage and the cause.

    Prefect already logs the traceback; this line is what a person (or a notification built from
    the run's logs) reads first: `ingest FAILED at stage chunk: ValueError: ...`.
    """
    from prefect.logging.loggers import flow_run_logger

    logger = flow_run_logger(flow_run, flow)
    try:
        stages = _failed_tasks(flow_run.id)
    except Exception:  # noqa: BLE001 a failure hook must never raise: the API may be the thing that failed
        stages = []
    where = f" at stage {', '.join(dict.fromkeys(stages))}" if stages else ""
    logger.error("%s %s%s: %s", flow.name, str(state.name).upper(), where, failure_cause(state))
