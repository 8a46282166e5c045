"""BEIR-layout test collections: ``queries.jsonl``, ``qrels/<split>.tsv`` and an optional ``corpus.jsonl``.

Layout (https://github.com/beir-cellar/beir)::

    DIR/corpus.jsonl        {"_id": "...", "title": "...", "text": "..."}   (optional here)
    DIR/queries.jsonl       {"_id": "...", "text": "..."}
    DIR/qrels/test.tsv      query-id <TAB> corpus-id <TAB> score   (a header line; graded scores)

Bad input is never skipped silently: a malformed line raises :class:`BeirFormatError` naming the
file, the line and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Qrels = dict[str, dict[str, int]]  # query id -> corpus id -> graded relevance


class BeirFormatError(ValueError):
    """A BEIR file that cannot be read as such (with file and line)."""


@dataclass(frozen=True)
class BeirDataset:
    """Queries and judgements of one split; the corpus is streamed on demand."""

    root: Path
    split: str
    queries: dict[str, str]
    qrels: Qrels
    unjudged_queries: int = 0  # queries with no qrels line (not evaluated)
    missing_queries: tuple[str, ...] = field(default=())  # qrels query ids absent from queries.jsonl

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def corpus_path(self) -> Path:
        return self.root / "corpus.jsonl"

    @property
    def has_corpus(self) -> bool:
        return self.corpus_path.exists()

    def evaluable(self) -> dict[str, str]:
        """Queries that have at least one relevant (score > 0) judgement."""
        return {q: t for q, t in self.queries.items() if any(g > 0 for g in self.qrels.get(q, {}).values())}


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BeirFormatError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise BeirFormatError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def _id(path: Path, lineno: int, obj: dict[str, Any]) -> str:
    value = obj.get("_id")
    if value is None or str(value) == "":
        raise BeirFormatError(f"{path}:{lineno}: record has no '_id'")
    return str(value)


def load_queries(path: str | Path) -> dict[str, str]:
    """``queries.jsonl`` as {query id: text}. Duplicate ids or empty texts are errors."""
    p = Path(path)
    out: dict[str, str] = {}
    for lineno, obj in _json_lines(p):
        qid = _id(p, lineno, obj)
        text = str(obj.get("text") or "").strip()
        if not text:
            raise BeirFormatError(f"{p}:{lineno}: query {qid!r} has no text")
        if qid in out:
            raise BeirFormatError(f"{p}:{lineno}: duplicate query id {qid!r}")
        out[qid] = text
    return out


def load_qrels(path: str | Path) -> Qrels:
    """A qrels TSV (``query-id  corpus-id  score``; header line optional) as nested dicts."""
    p = Path(path)
    qrels: Qrels = {}
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) == 1:
                parts = line.split()
            if len(parts) != 3:
                raise BeirFormatError(f"{p}:{lineno}: expected 3 tab-separated fields, got {len(parts)}")
            qid, did, raw = (x.strip() for x in parts)
            try:
                score = int(float(raw))
            except ValueError:
                if lineno == 1:  # the header: query-id corpus-id score
                    continue
                raise BeirFormatError(f"{p}:{lineno}: score {raw!r} is not a number") from None
            if not qid or not did:
                raise BeirFormatError(f"{p}:{lineno}: empty query or corpus id")
            qrels.setdefault(qid, {})[did] = score
    return qrels


def iter_corpus(path: str | Path) -> Iterator[tuple[str, str, str]]:
    """Stream ``corpus.jsonl`` as (id, title, text)."""
    p = Path(path)
    for lineno, obj in _json_lines(p):
        yield _id(p, lineno, obj), str(obj.get("title") or ""), str(obj.get("text") or "")


def qrels_path(root: Path, split: str | None = None) -> Path:
    """The qrels file of ``split`` (default: ``test`` if present, else the only file)."""
    folder = root / "qrels"
    if split is not None:
        p = folder / f"{split}.tsv"
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        return p
    files = sorted(folder.glob("*.tsv"))
    if not files:
        raise FileNotFoundError(f"{folder} has no qrels .tsv file")
    for f in files:
        if f.stem == "test":
            return f
    if len(files) == 1:
        return files[0]
    raise FileNotFoundError(
        f"{folder} has several qrels files ({', '.join(f.name for f in files)}) and no test.tsv: name a split"
    )


def is_beir_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / "queries.jsonl").is_file() and (p / "qrels").is_dir()


def load_beir(root: str | Path, split: str | None = None) -> BeirDataset:
    """Queries and qrels of a BEIR folder. Raises FileNotFoundError if it is not one."""
    r = Path(root)
    if not is_beir_dir(r):
        raise FileNotFoundError(f"{r} is not a BEIR-layout folder (queries.jsonl + qrels/*.tsv)")
    qpath = qrels_path(r, split)
    queries = load_queries(r / "queries.jsonl")
    qrels = load_qrels(qpath)
    missing = tuple(sorted(q for q in qrels if q not in queries))
    return BeirDataset(
        root=r,
        split=qpath.stem,
        queries=queries,
        qrels=qrels,
        unjudged_queries=sum(1 for q in queries if q not in qrels),
        missing_queries=missing,
    )
