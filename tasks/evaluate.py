"""The ``evaluate`` stage (``embedline stage evaluate``): see :mod:`embedline.tasks.evaluation`."""

from embedline.tasks.evaluation import (
    QualityGateError,
    evaluate_dataset,
    load_beir,
    make_gate,
    run_evaluate,
)

__all__ = ["QualityGateError", "evaluate_dataset", "load_beir", "make_gate", "run_evaluate"]
