"""How `embedline ingest` is started: a Prefect flow run, or the same DAG in-process.

* ``PREFECT_API_URL`` set (a running server; ``make serve``): the ``ingest`` flow, visible in the UI.
* No server configured: the DAG runs in this process, stage by stage, through the very functions
  the flow's tasks and ``dvc repro`` call (:func:`embedline.tasks.pipeline.run_stage`), under the
  same run lock, with the same ``data/metrics`` and the same dvc.lock record. It reaches the first
  stage in about a second instead of waiting 10-27 s for Prefect's temporary server (which gives up
  at 20 s on a busy machine, issue 14 row 17).
* ``--prefect`` forces a flow run without a server: Prefect's temporary server is started with a
  patient, explicit timeout (:data:`EPHEMERAL_TIMEOUT_S`) and a message saying so.

Prefect's telemetry is switched off either way (:func:`embedline.flows.console.quiet_prefect`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from embedline.flows.console import EPHEMERAL_TIMEOUT_S, quiet_prefect
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config

log = logging.getLogger("embedline")

__all__ = ["EPHEMERAL_TIMEOUT_S", "quiet_prefect", "run_inprocess", "use_prefect"]

def use_prefect(cfg: Config, forced: bool | None) -> bool:
    """Run as a Prefect flow? Explicit flag > a configured API > Dask runner (needs Prefect)."""
    if forced is not None:
        return forced
    return bool(os.environ.get("PREFECT_API_URL")) or cfg.run.runner == "dask"


# Stages a no-change run may take from dvc.lock instead of re-running: their outputs are all files
# DVC hashes. upsert and promote always run: the live store is not a DVC output (a deleted
# data/qdrant must be rebuilt), and both are a fraction of a second when nothing changed.
REUSABLE = frozenset({"preprocess", "chunk", "embed", "dedupe", "evaluate"})


PER_RUN_COUNTS = {"embed": ("texts_embedded", "cache_misses", "cache_hits")}


def recorded_state(cfg: Config, root: str) -> Any:
    """A :class:`~embedline.tasks.dvclock.LockView` when this run can be compared with dvc.lock (the
    project has one and the run uses params.yaml as is: no overrides, no --full), else None."""
    rootp = Path(root)
    if not (rootp / "dvc.lock").is_file() or not (rootp / ".dvc").is_dir():
        return None
    from embedline.tasks.config import PARAMS_FILE, load_config
    from embedline.tasks.dvclock import LockView

    if cfg != load_config(rootp / PARAMS_FILE):
        return None
    return LockView(rootp)


def reuse(name: str, art: Artifacts) -> dict[str, Any]:
    """The stats of a stage taken from dvc.lock: what its recorded metrics file says, marked reused."""
    from embedline.tasks.records import read_json

    path = art.metric(name)
    stats = read_json(path) if path.is_file() else {}
    stats = stats if isinstance(stats, dict) else {}
    # this run did no work: per-run counts are zero (what the outputs hold stays as recorded)
    done = {k: 0 for k in PER_RUN_COUNTS.get(name, ()) if k in stats}
    return {**stats, **done, "reused": True, "seconds": 0.0}


def _metrics_bytes(art: Artifacts, name: str) -> bytes | None:
    path = art.metric(name)
    return path.read_bytes() if path.is_file() else None


def keep_recorded_metrics(lock: Any, name: str, art: Artifacts, previous: bytes | None) -> None:
    """A stage that re-ran and rebuilt exactly what dvc.lock records keeps the metrics file of the
    run that built it: only the timings would differ, and rewriting them would make dvc.lock (and
    Git) disagree with the workspace after a run that changed nothing."""
    if previous is None:
        return
    path = art.metric(name)
    rel = path.relative_to(art.root).as_posix() if path.is_relative_to(art.root) else str(path)
    recorded = lock.recorded(name, rel)
    if recorded is None or hashlib.md5(previous).hexdigest() != recorded:
        return
    if lock.current(name, skip_outs=[rel]):
        from embedline.tasks.artifacts import atomic_write_text

        atomic_write_text(path, previous.decode("utf-8"))


def run_inprocess(
    cfg: Config,
    root: str,
    *,
    dry_run: bool = False,
    allow_mass_delete: bool = False,
    evaluate: bool = True,
    promote: bool = False,
) -> dict[str, dict[str, Any]]:
    """The ingest DAG without Prefect: same stage functions, lock, metrics and DVC record; the
    alias moves only for the recorded configuration (or ``promote``), as in the flow."""
    from embedline.flows.runtime import ingest_lock, record_after_swap
    from embedline.tasks.pipeline import INGEST_STAGES, run_stage, warm_later
    from embedline.tasks.summary import one_line
    from embedline.tasks.vectorsets.promote import serving_decision

    root = str(Path(root).resolve())
    art = Artifacts(Path(root))
    if dry_run:
        from embedline.tasks.plan import plan_ingest

        return {"plan": plan_ingest(cfg, art)}
    build = [s for s in INGEST_STAGES if s != "promote"]  # promote runs last, after evaluate
    names = [*build, "evaluate"] if evaluate else build
    run: dict[str, dict[str, Any]] = {}
    with ingest_lock(root):
        lock = recorded_state(cfg, root)
        for i, name in enumerate(names):
            if lock is not None and name in REUSABLE and lock.current(name):
                run[name] = reuse(name, art)
                log.info("%s: unchanged since dvc.lock recorded it, not re-run", name)
                continue
            log.info("stage %s ...", name)
            options = {"allow_mass_delete": allow_mass_delete} if name == "upsert" else {}
            previous = _metrics_bytes(art, name)
            imported = warm_later(name, [*names[i + 1 :], "promote"], cfg)
            try:
                run[name] = run_stage(name, cfg, art, **options)
            finally:
                imported()
            if lock is not None:
                keep_recorded_metrics(lock, name, art, previous)
            log.info(one_line(name, run[name]))
        reason = serving_decision(cfg, Path(root))
        run["promote"] = run_stage("promote", cfg, art, promote_now=promote or reason is None, reason=reason,
                                   allow_mass_delete=allow_mass_delete)
        ran = list(run) if lock is None else [s for s in run if not lock.current(s)]
        if ran:
            record_after_swap(root, cfg, ran=ran)  # never fails a run whose set is live
    return run
