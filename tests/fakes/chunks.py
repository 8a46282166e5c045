"""Write a small chunks.parquet for embed tests (no preprocess/chunk stage needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from embedline.tasks.records import Chunk, ParquetSink, chunk_id_for, content_hash, doc_id_for


def write_chunks(path: Path, texts: Sequence[str], batch_rows: int = 4) -> list[Chunk]:
    """One chunk per text (doc = "doc<i // 3>.txt"); small row groups to exercise row-range reads."""
    chunks = []
    for i, text in enumerate(texts):
        source = f"doc{i // 3}.txt"
        doc = doc_id_for(source)
        th = content_hash(text)
        chunks.append(
            Chunk(
                chunk_id=chunk_id_for(doc, th, i % 3),
                doc_id=doc,
                source=source,
                title=source,
                text=text,
                embed_text=text,
                text_hash=th,
                chunk_index=i % 3,
                char_start=0,
                char_end=len(text),
                token_count=len(text.split()),
            )
        )
    with ParquetSink(path, Chunk, batch_rows=batch_rows) as sink:
        sink.write_all(chunks)
    return chunks


SAMPLE_TEXTS = [
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The French Revolution began in 1789 with the storming of the Bastille.",
    "Knead the dough for ten minutes, then let it rise for an hour.",
    "Photosynthesis converts light energy into chemical energy in plants.",  # exact duplicate
    "Jupiter is the largest planet in the solar system.",
    "Tomatoes need full sun and regular watering to ripen.",
    "Photosynthesis turns light energy into chemical energy within plants.",  # near duplicate
    "The Roman Empire split into eastern and western halves in 395 AD.",
    "Knead the dough for ten minutes, then let it rise for an hour.",  # exact duplicate
    "A neutron star is the collapsed core of a massive supergiant star.",
    "Prune roses in late winter before new growth begins.",
]
