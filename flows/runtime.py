"""What the flow needs around the DAG: config resolution, the task runner, a run lock, DVC records."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from tasks.config import PARAMS_FILE, Config, load_config

log = logging.getLogger("embedline")


class RunInProgressError(RuntimeError):
    """Another ingest holds the project's run lock."""


def resolve_config(root: str, params: Config | None, overrides: list[str] | None) -> Config:
    """`params` (from the UI form or a caller) or params.yaml, plus `--set` style overrides."""
    if params is None:
        return load_config(Path(root) / PARAMS_FILE, overrides or [])
    if overrides:
        from tasks.config import apply_overrides, validate

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


def dvc_record(root: str, cfg: Config, ran: list[str]) -> bool:
    """Record a flow run's outputs in dvc.lock so `dvc status` agrees with what Prefect built.

    Only when the run used exactly params.yaml (an override run is an experiment: it is not
    committed, and `dvc status` will say so). Returns whether dvc.lock was updated.
    """
    rootp = Path(root)
    if not (rootp / "dvc.yaml").exists() or not (rootp / ".dvc").exists():
        return False
    if cfg != load_config(rootp / PARAMS_FILE):
        log.warning("run used overrides: dvc.lock not updated (use `dvc exp run -S` to track it)")
        return False
    dvc = shutil.which("dvc") or str(Path(__import__("sys").executable).with_name("dvc"))
    subprocess.run([dvc, "commit", "--force", "--quiet", *ran], cwd=root, check=True)
    return True
