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
    from embedline.tasks.pipeline import INGEST_STAGES, run_stage
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
        for name in names:
            log.info("stage %s ...", name)
            options = {"allow_mass_delete": allow_mass_delete} if name == "upsert" else {}
            run[name] = run_stage(name, cfg, art, **options)
            log.info(one_line(name, run[name]))
        reason = serving_decision(cfg, Path(root))
        run["promote"] = run_stage("promote", cfg, art, promote_now=promote or reason is None, reason=reason,
                                   allow_mass_delete=allow_mass_delete)
        record_after_swap(root, cfg, ran=list(run))  # never fails a run whose set is live
    return run
