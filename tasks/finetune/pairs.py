"""Training pairs: labelled (a BEIR train split) or mined from the corpus, with hard negatives.

* :func:`beir_pairs`: one pair per (train query, relevant document), the positive being the
  document's text as the vector set holds it (its chunks joined in order).
* :func:`mined_pairs`: weak pairs from the corpus itself: a markdown heading path -> the text of
  the first chunk of its section (headings stripped), a document title (JSON ``title``, HTML
  ``<title>``, front matter) -> the start of its body (a leading copy of the title stripped).
* :func:`add_hard_negatives`: per pair, the nearest passage of the *current vector set* to the
  anchor that belongs to none of the anchor's positive documents (duplicates collapsed into one
  point count for every source they came from) and is not a near-duplicate of a positive
  (cosine >= ``near_duplicate`` to any of its passages, or the same text).
* :func:`check_no_leakage`: a query id in both the train and the held-out split is an error.

Everything here is pure (lists and numpy arrays in, lists out) and deterministic.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedline.tasks.vectors import l2_normalize


class LeakageError(ValueError):
    """Training and evaluation share queries: an evaluation on them would not be honest."""


@dataclass(frozen=True)
class Passage:
    """One point of a vector set: what a hard negative can be."""

    point_id: str
    docs: tuple[str, ...]  # every document (eval key) the point stands for: its source + duplicates'
    text: str
    title: str = ""
    heading_path: tuple[str, ...] = ()
    chunk_index: int = 0
    format: str = ""


@dataclass(frozen=True)
class Pair:
    anchor: str
    positive: str
    kind: str  # train-split | title | heading
    docs: tuple[str, ...]  # the positive's document(s); the anchor's other positives are excluded too
    query_id: str | None = None
    negative: str | None = None
    negative_doc: str | None = None

    def key(self) -> str:
        return hashlib.sha256(f"{self.anchor}\0{self.positive}".encode()).hexdigest()


@dataclass
class PairStats:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def text_hash(text: str) -> str:
    """Hash of a normalised text (whitespace and case folded): the leakage check compares these."""
    return hashlib.sha256(_norm(text).encode()).hexdigest()[:16]


# ---- documents as the vector set holds them ------------------------------------------------------
def document_texts(passages: Iterable[Passage]) -> dict[str, str]:
    """Document key -> its passages' texts in chunk order (a point collapsed from duplicates
    counts for every document it stands for)."""
    parts: dict[str, list[tuple[int, str]]] = {}
    for p in passages:
        for d in p.docs:
            parts.setdefault(d, []).append((p.chunk_index, p.text))
    return {d: "\n".join(t for _, t in sorted(v)) for d, v in sorted(parts.items())}


# ---- labelled pairs ------------------------------------------------------------------------------
def check_no_leakage(train: Iterable[str], held_out: Iterable[str], what: str = "query ids") -> None:
    """Raise :class:`LeakageError` when ``train`` and ``held_out`` share an element."""
    shared = sorted(set(train) & set(held_out))
    if shared:
        shown = ", ".join(repr(s) for s in shared[:10]) + (f" (+{len(shared) - 10} more)" if len(shared) > 10 else "")
        raise LeakageError(
            f"{len(shared)} {what} are in both the training and the held-out split: {shown}. "
            "Evaluating on training queries would overstate the model; split by query id "
            "(`embedline split-queries`)"
        )


def beir_pairs(
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    doc_texts: Mapping[str, str],
    stats: PairStats | None = None,
) -> list[Pair]:
    """One pair per (query, relevant document) of a train split; judged documents that the vector
    set does not hold are counted (``missing_docs``), never silently dropped."""
    stats = stats if stats is not None else PairStats()
    pairs: list[Pair] = []
    for qid in sorted(qrels):
        text = queries.get(qid)
        if not text:
            stats.add("missing_queries")
            continue
        relevant = tuple(sorted(d for d, g in qrels[qid].items() if g > 0))
        for did in relevant:
            body = doc_texts.get(did)
            if not body:
                stats.add("missing_docs")
                continue
            pairs.append(Pair(anchor=text, positive=body, kind="train-split", docs=relevant, query_id=qid))
    stats.add("train-split", len(pairs))
    return pairs


# ---- mined pairs ---------------------------------------------------------------------------------
_HEADING_LINE = re.compile(r"^\s{0,3}#{1,6}\s")


def _strip_headings(text: str, heading_path: Sequence[str]) -> str:
    """The text without its leading heading lines (markdown ``#`` lines, the ``A > B`` prefix)."""
    prefixes = {_norm(" > ".join(heading_path[i:])) for i in range(len(heading_path))}
    prefixes |= {_norm(h) for h in heading_path}
    lines = text.splitlines()
    while lines and (not lines[0].strip() or _HEADING_LINE.match(lines[0]) or _norm(lines[0]) in prefixes):
        lines.pop(0)
    return "\n".join(lines).strip()


def _strip_title(text: str, title: str) -> str:
    """The text without a leading copy of ``title`` (many corpora repeat it as the first line)."""
    body = text.lstrip()
    words_t, words_b = title.split(), body.split()
    if words_t and [w.casefold() for w in words_b[: len(words_t)]] == [w.casefold() for w in words_t]:
        # drop exactly the title's words from the front, keep the rest of the text as it was
        pattern = r"\s*" + r"\s+".join(re.escape(w) for w in words_t)
        body = re.sub("^" + pattern, "", body, count=1, flags=re.IGNORECASE).lstrip(" .:-\n")
    return _strip_headings(body, (title,))


def _is_filename(title: str, doc: str) -> bool:
    name = Path(doc.split("#")[0]).name
    return _norm(title) in {_norm(name), _norm(Path(name).stem)}


def _first_chunks(passages: Sequence[Passage]) -> tuple[dict[tuple[str, tuple[str, ...]], Passage], dict[str, Passage]]:
    """The first passage of each (document, heading path) section, and of each document."""
    first: dict[tuple[str, tuple[str, ...]], Passage] = {}
    first_of_doc: dict[str, Passage] = {}
    for p in passages:
        if not p.docs:
            continue
        doc = p.docs[0]
        k = (doc, p.heading_path)
        if p.heading_path and (k not in first or p.chunk_index < first[k].chunk_index):
            first[k] = p
        if doc not in first_of_doc or p.chunk_index < first_of_doc[doc].chunk_index:
            first_of_doc[doc] = p
    return first, first_of_doc


def mined_pairs(passages: Sequence[Passage], min_anchor_chars: int = 4, stats: PairStats | None = None) -> list[Pair]:
    """Weak pairs from the corpus (see module doc); anchors that are file names or too short, and
    positives that are empty once headings are stripped, are skipped (counted in ``stats``)."""
    stats = stats if stats is not None else PairStats()
    first, first_of_doc = _first_chunks(passages)
    pairs: list[Pair] = []
    seen: set[tuple[str, str]] = set()

    def add(anchor: str, positive: str, kind: str, p: Passage) -> None:
        anchor = " ".join(anchor.split())
        if len(anchor) < min_anchor_chars or (kind == "title" and _is_filename(anchor, p.docs[0])):
            stats.add(f"skipped_{kind}_anchor")
            return
        if len(positive.split()) < 3 or _norm(positive) == _norm(anchor):
            stats.add(f"skipped_{kind}_positive")
            return
        k = (_norm(anchor), _norm(positive))
        if k not in seen:
            seen.add(k)
            pairs.append(Pair(anchor=anchor, positive=positive, kind=kind, docs=p.docs))
            stats.add(kind)

    for (_doc, path), p in sorted(first.items()):
        add(" > ".join(path), _strip_headings(p.text, path), "heading", p)
    with_headings = {d for (d, _path) in first}  # a markdown title is its H1: a heading pair already
    for doc, p in sorted(first_of_doc.items()):
        if p.title and doc not in with_headings:
            add(p.title, _strip_title(p.text, p.title), "title", p)
    return pairs


def sample_pairs(pairs: Sequence[Pair], max_pairs: int, seed: int) -> list[Pair]:
    """At most ``max_pairs``, in a seeded order that does not depend on the input order."""
    ordered = sorted(pairs, key=Pair.key)
    random.Random(seed).shuffle(ordered)
    return ordered[:max_pairs]


# ---- hard negatives ------------------------------------------------------------------------------
def add_hard_negatives(
    pairs: Sequence[Pair],
    anchor_vectors: np.ndarray,
    passages: Sequence[Passage],
    vectors: np.ndarray,
    *,
    depth: int = 30,
    near_duplicate: float = 0.95,
    negative_text: Callable[[Passage], str] | None = None,
    stats: PairStats | None = None,
) -> list[Pair]:
    """Each pair with the nearest admissible passage as its negative (see module doc); pairs with
    none within ``depth`` keep ``negative=None`` (counted as ``no_hard_negative``)."""
    stats = stats if stats is not None else PairStats()
    if not pairs:
        return []
    vecs = l2_normalize(vectors)
    anchors = l2_normalize(anchor_vectors)
    by_doc: dict[str, list[int]] = {}
    for i, p in enumerate(passages):
        for d in p.docs:
            by_doc.setdefault(d, []).append(i)
    depth = min(depth, len(passages))
    scores = anchors @ vecs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    text_of = negative_text or (lambda p: p.text)
    out: list[Pair] = []
    for row, pair in enumerate(pairs):
        excluded = set(pair.docs)
        own = [i for d in pair.docs for i in by_doc.get(d, [])]
        pos_vecs = vecs[own] if own else np.zeros((0, vecs.shape[1]), dtype=np.float32)
        positive_norm = _norm(pair.positive)
        chosen: Passage | None = None
        for i in top[row]:
            cand = passages[int(i)]
            if excluded.intersection(cand.docs):
                stats.add("excluded_same_doc")
                continue
            if len(pos_vecs) and float(np.max(pos_vecs @ vecs[int(i)])) >= near_duplicate:
                stats.add("excluded_near_duplicate")
                continue
            text = text_of(cand)
            if _norm(text) == positive_norm or not text.strip():
                stats.add("excluded_same_text")
                continue
            chosen = cand
            break
        if chosen is None:
            stats.add("no_hard_negative")
            out.append(pair)
        else:
            stats.add("hard_negatives")
            out.append(Pair(**{**asdict(pair), "negative": text_of(chosen), "negative_doc": chosen.docs[0]}))
    return out


def fill_negatives(pairs: Sequence[Pair], seed: int, stats: PairStats | None = None) -> list[Pair]:
    """Pairs without a hard negative get a seeded random positive of another document (the loss
    needs the same columns on every row)."""
    stats = stats if stats is not None else PairStats()
    rng = random.Random(seed)
    out: list[Pair] = []
    for i, pair in enumerate(pairs):
        if pair.negative is not None:
            out.append(pair)
            continue
        others = [j for j, q in enumerate(pairs) if j != i and not set(q.docs) & set(pair.docs)]
        if not others:
            out.append(pair)
            continue
        q = pairs[rng.choice(others)]
        stats.add("random_negatives")
        out.append(Pair(**{**asdict(pair), "negative": q.positive, "negative_doc": q.docs[0]}))
    return out


# ---- the artifact --------------------------------------------------------------------------------
def write_pairs(path: Path, pairs: Sequence[Pair]) -> str:
    """JSON lines, one pair per line, byte-stable; returns the sha256 of the file's content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(asdict(p), ensure_ascii=False, sort_keys=True) for p in pairs]
    data = ("\n".join(lines) + "\n" if lines else "").encode("utf-8")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


def read_pairs(path: Path) -> list[Pair]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            d: dict[str, Any] = json.loads(line)
            d["docs"] = tuple(d.get("docs") or ())
            out.append(Pair(**d))
    return out
