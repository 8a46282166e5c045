"""The ``evaluate`` stage (``embedline stage evaluate``): see :mod:`tasks.evaluation`."""

from tasks.evaluation import (
    QualityGateError,
    evaluate_dataset,
    load_beir,
    make_gate,
    run_evaluate,
)

__all__ = ["QualityGateError", "evaluate_dataset", "load_beir", "make_gate", "run_evaluate"]
