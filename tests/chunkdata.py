"""Write chunks.parquet + a vector shard + manifest.json fixtures directly (no preprocess/chunk/embed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.records import (
    Chunk,
    chunk_id_for,
    content_hash,
    doc_id_for,
    write_json,
    write_records,
)
from embedline.tasks.vector_shards import write_vector_shard


@dataclass(frozen=True)
class Item:
    source: str
    index: int
    text: str
    vector: np.ndarray


def make_chunk(source: str, index: int, text: str) -> Chunk:
    doc = doc_id_for(source)
    th = content_hash(text)
    return Chunk(
        chunk_id=chunk_id_for(doc, th, index),
        doc_id=doc,
        source=source,
        title=source.rsplit("/", 1)[-1],
        text=text,
        embed_text=text,
        text_hash=th,
        chunk_index=index,
        char_start=index * 100,
        char_end=index * 100 + len(text),
        token_count=len(text.split()),
        heading_path=("H",),
    )


def write_artifacts(
    art: Artifacts,
    items: Sequence[Item],
    *,
    fingerprint: str = "fp0000000000000a",
    model: str = "test-model",
    dims: int | None = None,
) -> list[Chunk]:
    chunks = [make_chunk(it.source, it.index, it.text) for it in items]
    write_records(art.chunks, Chunk, chunks)
    d = dims if dims is not None else (len(items[0].vector) if items else 8)
    vecs = np.stack([np.asarray(it.vector, dtype=np.float32) for it in items]) if items else np.zeros((0, d), np.float32)
    write_vector_shard(art.vectors, 0, [c.chunk_id for c in chunks], vecs, {})
    write_json(art.manifest, {"fingerprint": fingerprint, "dims": d, "model": model, "provider": "fake",
                              "rows": len(items)})
    return chunks


def unit(rng: np.random.Generator, dims: int) -> np.ndarray:
    v = np.asarray(rng.standard_normal(dims), dtype=np.float32)
    return v / np.linalg.norm(v)


def near(rng: np.random.Generator, base: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector with (approximately) the given cosine to ``base``."""
    noise = np.asarray(rng.standard_normal(base.shape[0]), dtype=np.float32)
    noise -= noise.dot(base) * base
    noise /= np.linalg.norm(noise)
    sin = float(np.sqrt(max(0.0, 1 - cosine**2)))
    v = np.asarray(cosine * base + sin * noise, dtype=np.float32)
    return np.asarray(v / np.linalg.norm(v), dtype=np.float32)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """``{file name: bytes}`` of a shard folder (byte-identity checks)."""
    return {f.name: f.read_bytes() for f in sorted(Path(folder).iterdir()) if f.is_file()}
