"""Search that answers: chunk hits grouped by document, and dense + BM25 fusion, client-side.

Pure functions over :class:`~embedline.tasks.vectorsets.base.Hit` lists, the same for every store
(Qdrant Edge has no grouping API, so grouping is done here for all backends):

- :func:`group_by_document`: the best chunk per document (max score), documents in score order;
  a document's key is the payload's ``source`` (or any ``key`` function, e.g. the eval doc id).
- :func:`fuse`: **weighted reciprocal rank fusion at the document level**. Dense and sparse chunk
  lists are each grouped by document first (so five chunks of one page do not outvote the other
  list), then ``score(doc) = sum_i w_i / (k + rank_i(doc))``. Weights and ``k`` are
  :data:`FUSION_DEFAULTS`, tuned on Cranfield and the project's own sets
  (``benchmarks/tune_fusion.py``; never on held-out collections). The best chunk shown for a fused
  document is its best dense chunk (else its best sparse chunk).
- :func:`fuse_chunks`: the same fusion over chunk ids, for ``--chunks`` output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from embedline.tasks.vectorsets.base import Hit

# tuned on Cranfield + own sets (benchmarks/tune_fusion.py); dense weight, sparse weight, RRF k
# (Cranfield: a flat optimum, nDCG@10 0.404-0.411 for k in 5..100 and sparse weight 0.7..1.3;
# k = 10 sits in the middle of it: benchmarks/results/fusion_cranfield.json)
FUSION_DEFAULTS: dict[str, float] = {"dense": 1.0, "sparse": 1.0, "k": 10.0}
CANDIDATES_FACTOR = 5  # chunk hits fetched per wanted document from each list (a first guess:
DEEPEN = 4  # :func:`deepen` asks for DEEPEN x more hits while they name too few documents)


T = TypeVar("T")


def deepen(fetch: Callable[[int], Sequence[T]], enough: Callable[[Sequence[T]], bool], depth: int) -> Sequence[T]:
    """``fetch(depth)``, asked again for :data:`DEEPEN` x more hits while ``enough`` says the hits
    name too few documents and the set has more (a full answer). One long page can fill the first
    ``k x`` :data:`CANDIDATES_FACTOR` chunk hits, so a fixed depth could answer fewer than ``k``
    documents."""
    depth = max(1, depth)
    while True:
        hits = fetch(depth)
        if len(hits) < depth or enough(hits):
            return hits
        depth *= DEEPEN


def _source(hit: Hit) -> str | None:
    src = hit.payload.get("source")
    return str(src) if src is not None else None


@dataclass(frozen=True)
class DocHit:
    """One document of a grouped result: its score, its best chunk and how many of its chunks hit."""

    doc: str
    score: float
    best: Hit
    chunks: int = 1

    @property
    def heading_path(self) -> tuple[str, ...]:
        return tuple(self.best.payload.get("heading_path") or ())

    @property
    def snippet(self) -> str:
        """The best chunk's text without the heading lines the heading path already shows."""
        return snippet(str(self.best.payload.get("text", "")), self.heading_path)

    def as_dict(self) -> dict[str, Any]:
        p = self.best.payload
        return {
            "doc": self.doc, "score": self.score, "chunk": p.get("chunk_id"), "chunk_score": self.best.score,
            "heading_path": list(self.heading_path), "title": p.get("title"), "chunks": self.chunks,
            "text": p.get("text", ""), "snippet": self.snippet,
        }


def snippet(text: str, heading_path: Sequence[str] = ()) -> str:
    """``text`` without leading Markdown heading lines and the "A > B" heading prefix (the whole
    path, or only its parents, which the Markdown chunker puts before a section's own heading)."""
    prefixes = {" > ".join(heading_path[:i]) for i in range(1, len(heading_path) + 1)}
    lines = text.split("\n")
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("#")
                     or lines[0].strip() in prefixes):
        lines.pop(0)
    return "\n".join(lines) if lines else text


def group_by_document(
    hits: Iterable[Hit], limit: int | None = None, key: Callable[[Hit], str | None] = _source
) -> list[DocHit]:
    """Best chunk per document, documents by descending best score (ties: by document key)."""
    best: dict[str, DocHit] = {}
    for h in hits:
        doc = key(h)
        if doc is None:
            continue
        cur = best.get(doc)
        if cur is None:
            best[doc] = DocHit(doc, h.score, h)
        elif h.score > cur.score:
            best[doc] = DocHit(doc, h.score, h, cur.chunks + 1)
        else:
            best[doc] = DocHit(doc, cur.score, cur.best, cur.chunks + 1)
    out = sorted(best.values(), key=lambda d: (-d.score, d.doc))
    return out if limit is None else out[:limit]


def rrf(rankings: Sequence[Sequence[str]], weights: Sequence[float], k: float) -> dict[str, float]:
    """Weighted reciprocal rank fusion: ``sum_i w_i / (k + rank)`` (ranks start at 1)."""
    scores: dict[str, float] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        if w == 0:
            continue
        for r, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + w / (k + r)
    return scores


def fuse_rankings(
    dense: Mapping[str, float], sparse: Mapping[str, float], limit: int,
    params: Mapping[str, float] = FUSION_DEFAULTS,
) -> dict[str, float]:
    """Weighted RRF of two ``{doc: score}`` maps (each ranked by descending score, ties by doc)."""
    def ranking(m: Mapping[str, float]) -> list[str]:
        return [d for d, _ in sorted(m.items(), key=lambda kv: (-kv[1], kv[0]))]

    scores = rrf([ranking(dense), ranking(sparse)], [params["dense"], params["sparse"]], params["k"])
    return dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])


def fuse(
    dense: Sequence[Hit],
    sparse: Sequence[Hit],
    limit: int,
    *,
    params: Mapping[str, float] = FUSION_DEFAULTS,
    key: Callable[[Hit], str | None] = _source,
) -> list[DocHit]:
    """Documents ranked by weighted RRF of their dense and sparse document ranks (module doc)."""
    d_docs = group_by_document(dense, key=key)
    s_docs = group_by_document(sparse, key=key)
    scores = fuse_rankings({d.doc: d.score for d in d_docs}, {d.doc: d.score for d in s_docs}, limit, params)
    shown = {d.doc: d for d in s_docs} | {d.doc: d for d in d_docs}  # dense chunk preferred
    return [DocHit(doc, score, shown[doc].best, shown[doc].chunks) for doc, score in scores.items()]


def fuse_chunks(
    dense: Sequence[Hit], sparse: Sequence[Hit], limit: int, *, params: Mapping[str, float] = FUSION_DEFAULTS
) -> list[Hit]:
    """Chunks ranked by weighted RRF of their dense and sparse ranks; hit scores are the RRF scores."""
    scores = rrf(
        [[h.id for h in dense], [h.id for h in sparse]], [params["dense"], params["sparse"]], params["k"]
    )
    by_id = {h.id: h for h in sparse} | {h.id: h for h in dense}
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [Hit(id=i, score=s, payload=by_id[i].payload) for i, s in ranked]
