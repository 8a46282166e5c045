"""The ``evaluate`` stage (``embedline stage evaluate``): see :mod:`embedline.tasks.evaluation`.

:func:`run_evaluate_stage` scores the built vector set, then writes the headline metrics file and
the recall chart (:func:`embedline.tasks.summary.write_headline`).
"""

import time
from typing import Any

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config
from embedline.tasks.evaluation import (
    QualityGateError,
    evaluate_dataset,
    load_beir,
    make_gate,
    run_evaluate,
)
from embedline.tasks.summary import write_headline

__all__ = ["QualityGateError", "evaluate_dataset", "load_beir", "make_gate", "run_evaluate", "run_evaluate_stage"]


def run_evaluate_stage(cfg: Config, art: Artifacts, **options: Any) -> dict[str, Any]:
    """The DVC ``evaluate`` stage: :func:`run_evaluate`, then data/metrics/headline.json + recall PNG."""
    t0 = time.perf_counter()
    stats = run_evaluate(cfg, art, **options)
    write_headline(cfg, art, stats)
    if "seconds" in stats:  # the whole stage, headline chart included (what evaluation costs a run)
        stats["seconds"] = round(time.perf_counter() - t0, 3)
    return stats
