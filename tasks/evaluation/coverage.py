"""Does a labelled query set belong to the corpus at all?

A query set whose judged documents are not in the corpus scores nDCG 0.000 whatever the model,
and a quality gate fed that 0 would later compare new vector sets against nothing. Such a set is
skipped with a warning (by the evaluate stage and by the gate) instead of being scored.
"""

from __future__ import annotations

from collections.abc import Iterable

from embedline.tasks.evaluation.beir import BeirDataset

MIN_JUDGED_COVERAGE = 0.5  # at least half of the relevant judged documents must be in the corpus


def judged_documents(dataset: BeirDataset) -> set[str]:
    return {d for judgements in dataset.qrels.values() for d, grade in judgements.items() if grade > 0}


def mismatch(dataset: BeirDataset, corpus_ids: Iterable[str], where: str = "the query set") -> str | None:
    """Why ``dataset`` cannot be scored on a corpus holding ``corpus_ids`` (None when it can)."""
    judged = judged_documents(dataset)
    if not judged:
        return f"{where} has no relevant judgements: nothing to score"
    found = len(judged & set(corpus_ids))
    if found < MIN_JUDGED_COVERAGE * len(judged):
        return (f"{where} does not match the corpus: only {found} of its {len(judged)} judged documents "
                f"are in it (need {MIN_JUDGED_COVERAGE:.0%}); skipped, it does not feed the quality gate")
    return None
