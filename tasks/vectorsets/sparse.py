"""BM25 sparse vectors for hybrid search, computed by Qdrant's own BM25.

The encoder is ``qdrant_edge.Bm25`` (Rust, shipped in ``qdrant-edge-py``): the same model as Qdrant's
server-side ``qdrant/bm25`` inference, without fastembed (which needs a download) and without a
server. It lowercases, splits words, drops the language's stop words, Snowball-stems and hashes each
term to a 32-bit index (deterministic: the same term always gets the same index).

- document side, :meth:`Bm25Encoder.document`: BM25 term-frequency weights
  ``tf * (k + 1) / (tf + k * (1 - b + b * len / avg_len))`` with a fixed ``avg_len``, so a point's
  vector depends on its own text only (incremental sync never rewrites unchanged points);
- query side, :meth:`Bm25Encoder.query`: weight 1 per unique term;
- the IDF is *not* in the stored values: the collection's sparse vector is configured with Qdrant's
  ``IDF`` modifier, so Qdrant weighs query terms by the IDF of what the collection holds now.

What gets encoded is :func:`sparse_text`: the payload's ``title`` and ``text`` (BEIR's title + text).
The display text equals the embed text under default preprocessing; it is used rather than the embed
text because Qdrant's BM25 stems by itself (a stemmed/lemmatised embed text would be stemmed twice on
the document side and once on the query side) and because a pure function of the payload can be
recomputed wherever points travel (export/import, repair) without the chunk artifacts.

The recipe (:data:`embedline.tasks.config.SPARSE_BM25` + ``preprocess.language``) is part of the vector-set
fingerprint and is stored in the collection metadata (``sparse_encoder``), so queries are encoded
the way the collection was built.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from embedline.tasks.config import SPARSE_BM25, Config
from embedline.tasks.vectorsets.base import (
    SparseVector,
    SparseVectorMissingError,
    StoreError,
    VectorSetSpec,
)

RECIPE_KEY = "sparse_encoder"  # collection metadata key holding the recipe
_lock = threading.Lock()


class Bm25Encoder:
    """Text -> :class:`SparseVector` with Qdrant's BM25 (see module doc). Thread-safe."""

    def __init__(self, *, k: float, b: float, avg_len: float, language: str):
        import qdrant_edge as qe

        self.recipe = {"k": k, "b": b, "avg_len": avg_len, "language": language}
        try:
            self._model = qe.Bm25(qe.Bm25Config(k=k, b=b, avg_len=avg_len, language=language))
        except ValueError as exc:
            raise StoreError(
                f"cannot build the BM25 sparse encoder for preprocess.language={language!r}: {exc} "
                "(use an ISO code or English name of a Snowball language, e.g. en, de, fr)"
            ) from None

    def document(self, text: str) -> SparseVector:
        with _lock:
            sv = self._model.embed_document(text)
        return _sorted(sv.indices, sv.values)

    def documents(self, texts: Iterable[str]) -> list[SparseVector]:
        return [self.document(t) for t in texts]

    def query(self, text: str) -> SparseVector:
        with _lock:
            sv = self._model.embed_query(text)
        return _sorted(sv.indices, sv.values)


def _sorted(indices: Iterable[int], values: Iterable[float]) -> SparseVector:
    pairs = sorted(zip(indices, values, strict=True))
    return SparseVector(tuple(int(i) for i, _ in pairs), tuple(float(v) for _, v in pairs))


def recipe_for(cfg: Config) -> dict[str, Any]:
    """The sparse recipe of ``cfg`` (what the collection metadata records)."""
    return {**SPARSE_BM25, "language": cfg.preprocess.language, "library": _library()}


def _library() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"qdrant-edge-py {version('qdrant-edge-py')}"
    except PackageNotFoundError:  # pragma: no cover
        return "qdrant-edge-py"


@lru_cache(maxsize=8)
def _encoder(k: float, b: float, avg_len: float, language: str) -> Bm25Encoder:
    return Bm25Encoder(k=k, b=b, avg_len=avg_len, language=language)


def encoder(recipe: Mapping[str, Any]) -> Bm25Encoder:
    """The (cached) encoder of a recipe; missing keys take :data:`SPARSE_BM25`'s values."""
    r = {**SPARSE_BM25, "language": "en", **dict(recipe)}
    return _encoder(float(r["k"]), float(r["b"]), float(r["avg_len"]), str(r["language"]))


def encoder_for_config(cfg: Config) -> Bm25Encoder:
    return encoder(recipe_for(cfg))


def encoder_for(spec: VectorSetSpec) -> Bm25Encoder:
    """The encoder a collection was built with (its recorded recipe); raises
    :class:`SparseVectorMissingError` for a collection without the sparse vector."""
    if not spec.sparse:
        raise SparseVectorMissingError(spec.name)
    recipe = spec.metadata.get(RECIPE_KEY)
    return encoder(recipe if isinstance(recipe, Mapping) else {})


def sparse_text(payload: Mapping[str, Any]) -> str:
    """What a point's sparse vector encodes: its payload's title and text."""
    title = str(payload.get("title") or "").strip()
    text = str(payload.get("text") or "")
    return f"{title}\n\n{text}" if title else text


def sparse_for(payload: Mapping[str, Any], enc: Bm25Encoder) -> SparseVector:
    return enc.document(sparse_text(payload))
