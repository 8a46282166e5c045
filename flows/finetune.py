"""The ``finetune`` Prefect flow: a thin shell around :mod:`embedline.tasks.finetune`.

train (the ``finetune`` stage, always on here) -> optionally build the fine-tuned model's shadow
vector set and promote it through the leakage check + quality gate. Inputs are a validated
``Config`` and the project root, as for every flow (tasks/finetune holds the logic).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config
from embedline.tasks.pipeline import run_stage

METRICS = ("ndcg@10", "mrr@10", "recall@100")


def comparison_markdown(stats: dict[str, Any]) -> str:
    """Base vs fine-tuned on the held-out split, as a markdown table (empty without scores)."""
    rows = [m for m in METRICS if f"finetuned_{m}" in stats]
    if not rows:
        return ""
    lines = ["| metric | base | fine-tuned | delta |", "|---|---|---|---|"]
    lines += [f"| {m} | {stats.get(f'base_{m}', 0):.4f} | {stats[f'finetuned_{m}']:.4f} | "
              f"{stats.get(f'delta_{m}', 0):+.4f} |" for m in rows]
    return "\n".join(lines)


@task(name="finetune", cache_policy=NONE, timeout_seconds=6 * 3600)
def train(cfg: Config, root: str) -> dict[str, Any]:
    stats = run_stage("finetune", cfg, Artifacts(Path(root)), force=True)
    table = comparison_markdown(stats)
    if table:
        create_markdown_artifact(key="finetune-comparison", markdown=table,
                                 description="held-out queries: base vs fine-tuned")
    get_run_logger().info("finetune: %s pairs, loss %s", stats.get("pairs"), stats.get("train_loss"))
    return stats


@task(name="promote-finetuned", cache_policy=NONE, timeout_seconds=6 * 3600)
def promote(cfg: Config, root: str) -> dict[str, Any]:
    from embedline.tasks.finetune.lifecycle import serve_finetuned

    result = serve_finetuned(cfg, Artifacts(Path(root)))
    get_run_logger().info("fine-tuned vector set %s: %s", result.get("collection"),
                          "promoted" if result["promoted"] else "refused by the gate")
    return result


@flow(name="finetune", log_prints=True)
def finetune_flow(params: Config, root: str = ".", train_model: bool = True,
                  promote_model: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if train_model:
        out["finetune"] = train(params, root)
    if promote_model:
        out["promote"] = promote(params, root)
    return out
