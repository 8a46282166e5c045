"""Split a BEIR collection's judged queries into a train and a held-out split, by query id.

Deterministic: a query goes to ``train`` when ``sha256(f"{seed}:{query id}")`` ranks among the
first ``train_fraction`` of the judged queries; the corpus and queries files are linked (or copied)
unchanged, so the held-out queries are exactly the original judgements of the remaining ids.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from embedline.tasks.evaluation.beir import is_beir_dir, load_qrels, load_queries, qrels_path


def _rank(seed: int, qid: str) -> str:
    return hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest()


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_qrels(path: Path, qrels: dict[str, dict[str, int]], ids: list[str]) -> int:
    lines = ["query-id\tcorpus-id\tscore"]
    for qid in ids:
        lines += [f"{qid}\t{did}\t{score}" for did, score in sorted(qrels[qid].items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines) - 1


def split_queries(
    src: str | Path, out: str | Path, *, train_fraction: float = 0.6, seed: int = 0,
    split: str | None = None, train_name: str = "train", test_name: str = "test",
) -> dict[str, Any]:
    """Write ``out`` = ``src`` with ``qrels/<train_name>.tsv`` and ``qrels/<test_name>.tsv``."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be between 0 and 1, got {train_fraction}")
    src, out = Path(src), Path(out)
    if not is_beir_dir(src):
        raise FileNotFoundError(f"{src} is not a BEIR-layout folder (queries.jsonl + qrels/*.tsv)")
    if src.resolve() == out.resolve():
        raise ValueError("the split must be written to another folder than its source")
    qrels = load_qrels(qrels_path(src, split))
    queries = load_queries(src / "queries.jsonl")
    judged = sorted((q for q in qrels if q in queries), key=lambda q: _rank(seed, q))
    n_train = round(len(judged) * train_fraction)
    train, test = sorted(judged[:n_train]), sorted(judged[n_train:])
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("queries.jsonl", "corpus.jsonl"):
        if (src / name).is_file():
            _link_or_copy(src / name, out / name)
    return {
        "train_queries": len(train),
        "test_queries": len(test),
        "train_judgements": _write_qrels(out / "qrels" / f"{train_name}.tsv", qrels, train),
        "test_judgements": _write_qrels(out / "qrels" / f"{test_name}.tsv", qrels, test),
        "out": str(out),
    }
