"""Where each stage reads and writes its artifacts (the same paths dvc.yaml declares)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


# ---- atomic writes (the one implementation) ----------------------------------------------------------
def temp_path_for(path: Path) -> Path:
    """A unique hidden sibling of ``path`` with the same suffix (format sniffers still work), on the
    same filesystem so that ``os.replace`` is atomic."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Write to the yielded temporary path; on success it replaces ``path`` atomically (a reader
    sees the old file or the new one, never half of one), on error it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class Artifacts:
    """Artifact paths under one working directory (the project root by default)."""

    root: Path = Path(".")

    @property
    def interim(self) -> Path:
        return self.root / "data" / "interim"

    @property
    def documents(self) -> Path:
        return self.interim / "documents"  # shard folder (tasks/shards.py)

    @property
    def ledger(self) -> Path:
        return self.interim / "ledger.parquet"  # per-file state of the preprocess stage

    @property
    def chunk_ledger(self) -> Path:
        return self.interim / "chunk_ledger.parquet"  # per-document state of the chunk stage

    @property
    def rejected(self) -> Path:
        return self.interim / "rejected.jsonl"

    @property
    def chunks(self) -> Path:
        return self.interim / "chunks"  # shard folder

    @property
    def embeddings(self) -> Path:
        return self.root / "data" / "embeddings"

    @property
    def vectors(self) -> Path:
        return self.embeddings / "vectors"  # shard folder (tasks/vector_shards.py)

    @property
    def manifest(self) -> Path:
        return self.embeddings / "manifest.json"

    @property
    def deduped(self) -> Path:
        return self.interim / "deduped"  # shard folder

    @property
    def dedupe_report(self) -> Path:
        return self.interim / "dedupe_report.json"

    @property
    def receipt(self) -> Path:
        return self.root / "data" / "receipts" / "upsert.json"

    @property
    def metrics(self) -> Path:
        return self.root / "data" / "metrics"

    def metric(self, stage: str) -> Path:
        return self.metrics / f"{stage}.json"

    def resolve(self, p: str | Path) -> Path:
        """A params path (relative to the project) resolved against this root."""
        q = Path(p)
        return q if q.is_absolute() else self.root / q
