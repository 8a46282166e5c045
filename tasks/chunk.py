"""Stage 2, chunk: documents -> chunks that fit the embedding model's window, never truncated.

``run_chunk(cfg, art)`` reads ``art.documents`` shard by shard, splits each document with the
chunker chosen by ``chunk.strategy`` (see :mod:`embedline.tasks.chunkers`) and writes the chunks to
the same shard of ``art.chunks`` (rows sorted by source, chunk index). The chunk ledger
(:mod:`embedline.tasks.ledger`) keeps each document's key and chunk ids: only documents whose key
changed are chunked, only shards holding such documents are rewritten, a shard with no change is
not read past its key columns. A change of any chunk param (or of the chunking code) re-chunks all.

Token counts come from the embedding model's own tokenizer (:func:`embedline.tasks.tokenize.load_token_counter`).
The budget for a chunk's embed text is::

    min(chunk.max_tokens, model window) - special tokens ([CLS]/[SEP]) - tokens of embed.passage_prompt

and every chunk is measured on its final embed text (after the per-chunk transform of
:class:`embedline.tasks.normalize.EmbedTransform`: lowercasing, lemmatising or stemming can change the
count), so the model never has to truncate.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedline.tasks import chunkers, ledger, progress
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.chunkers import Chunker, TokenBudget
from embedline.tasks.config import ChunkParams, Config, ConfigError, EmbedParams, PreprocessParams
from embedline.tasks.normalize import EmbedTransform
from embedline.tasks.records import CHUNK_SCHEMA, Chunk, Document, _from_row, records_table, sha256
from embedline.tasks.shards import (
    remove_shards,
    shard_files,
    shard_index,
    shard_name,
    shard_of,
    shard_sizes,
    write_shard,
)
from embedline.tasks.tokenize import TokenCounter, load_token_counter

log = logging.getLogger(__name__)


def make_budget(
    chunk: ChunkParams,
    embed: EmbedParams,
    preprocess: PreprocessParams | None = None,
    counter: TokenCounter | None = None,
) -> TokenBudget:
    """The token budget for chunks of this config (loads the model's tokenizer, not its weights)."""
    counter = counter or load_token_counter(embed)
    window = min(chunk.max_tokens, counter.max_tokens)
    prompt = counter.count(embed.passage_prompt) if embed.passage_prompt else 0
    max_tokens = window - counter.special_tokens - prompt
    if max_tokens < 4:
        raise ConfigError(
            f"chunk budget too small: min(chunk.max_tokens={chunk.max_tokens}, model window="
            f"{counter.max_tokens}) - {counter.special_tokens} special - {prompt} prompt tokens "
            f"= {max_tokens}"
        )
    return TokenBudget(
        counter=counter,
        max_tokens=max_tokens,
        overlap_tokens=min(chunk.overlap_tokens, max_tokens // 2),
        min_tokens=chunk.min_tokens,
        heading_prefix=chunk.heading_prefix,
        context_template=chunk.context_template,
        transform=EmbedTransform(preprocess or PreprocessParams.model_validate({})),
        window=window,
    )


def chunker_for(params: ChunkParams) -> Chunker:
    return chunkers.chunker_for(params.strategy)


def chunk_document(doc: Document, budget: TokenBudget, chunker: Chunker) -> list[Chunk]:
    return list(chunker.split(doc, budget))


def chunk_fingerprint(cfg: Config) -> str:
    """What every chunk depends on besides its document: the params the chunk stage reads (the
    same list as its dvc.yaml params), the shard count and the chunking code."""
    e, p = cfg.embed, cfg.preprocess
    params = {
        "chunk": cfg.chunk.model_dump(mode="json"),
        "transform": [p.lowercase, p.lemmatize, p.stem, p.strip_code_comments, p.language],
        "tokenizer": [e.provider, e.model, e.revision, e.tokenizer, e.max_seq_tokens, e.passage_prompt],
    }
    code = ledger.code_fingerprint("chunkers", "chunk.py", "normalize.py", "tokenize.py", "records.py")
    return ledger.fingerprint(params, code)


_KEY_COLS = ["doc_id", "source", "title", "content_hash", "format", "metadata"]


def _doc_keys(table: pa.Table) -> dict[str, str]:
    """doc id -> hash of every field the chunker reads (text via its content hash)."""
    cols = [table.column(c).to_pylist() for c in _KEY_COLS]
    return {row[0]: sha256(json.dumps(row, ensure_ascii=False))[:32] for row in zip(*cols, strict=True)}


Reader = Callable[[list[str] | None], pa.Table]


def _file_reader(f: Path) -> Reader:
    def read(cols: list[str] | None) -> pa.Table:
        return pq.ParquetFile(f).read(columns=cols)  # read_table imports pandas

    return read


def _rows_reader(whole: pa.Table, rows: list[int]) -> Reader:
    def read(cols: list[str] | None) -> pa.Table:
        return whole.take(pa.array(rows)).select(cols or whole.column_names)

    return read


def _document_shards(path: Path, shards: int) -> dict[int, Reader]:
    """shard index -> reader of that shard's documents (a single legacy file is split on the fly)."""
    if path.is_dir():
        return {shard_index(f): _file_reader(f) for f in shard_files(path)}
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the preprocess stage first")
    whole = pq.ParquetFile(path).read()
    by_shard: dict[int, list[int]] = {}
    for row, doc_id in enumerate(whole.column("doc_id").to_pylist()):
        by_shard.setdefault(shard_of(doc_id, shards), []).append(row)
    return {i: _rows_reader(whole, rows) for i, rows in sorted(by_shard.items())}


@dataclass
class ShardResult:
    """What chunking one shard produced: the documents' new state and the shard's totals."""

    states: dict[str, ledger.DocState]
    totals: dict[str, Any]
    chunked: int = 0
    reused: int = 0
    written: bool = False


def chunk_shard(
    index: int,
    read_docs: Reader,
    out: Path,
    old: dict[str, ledger.DocState],
    old_totals: dict[str, Any] | None,
    budget: Callable[[], tuple[TokenBudget, Chunker]],
) -> ShardResult:
    """Chunk one document shard into ``out/shard-N``, reusing the chunks of every document whose
    key is unchanged in ``old``; a shard with no change is not read past its key columns."""
    keys = _doc_keys(read_docs(_KEY_COLS))
    same = {d for d, k in keys.items() if d in old and old[d].doc_key == k}
    if old_totals is not None and len(same) == len(keys) == len(old):
        return ShardResult({d: old[d] for d in keys}, old_totals, reused=len(same))
    states = {d: old[d] for d in same}
    parts = _kept_chunks(out / shard_name(index), same)
    todo = [d for d in keys if d not in same]
    docs = read_docs(None)
    docs = docs.filter(pc.is_in(docs["doc_id"], value_set=pa.array(todo, pa.string())))
    chunks: list[Chunk] = []
    if todo:
        bud, chunker = budget()
        for row in docs.to_pylist():
            doc = _from_row(Document, row)
            mine = list(chunker.split(doc, bud))
            states[doc.doc_id] = ledger.DocState(doc.doc_id, keys[doc.doc_id], tuple(c.chunk_id for c in mine))
            chunks.extend(mine)
    parts.append(records_table(Chunk, chunks))
    table = pa.concat_tables(parts)
    write_shard(out, index, table, ["source", "chunk_index"])
    return ShardResult(states, _totals(table), chunked=len(todo), reused=len(same), written=True)


def _kept_chunks(path: Path, keep: set[str]) -> list[pa.Table]:
    if not keep or not path.exists():
        return []
    table = pq.ParquetFile(path).read().cast(CHUNK_SCHEMA)  # list child names differ once read back
    return [table.filter(pc.is_in(table["doc_id"], value_set=pa.array(sorted(keep), pa.string())))]


def _totals(table: pa.Table) -> dict[str, Any]:
    tokens = table.column("token_count")
    strategies: dict[str, int] = {}
    for meta in table.column("metadata").to_pylist():
        name = str(json.loads(meta or "{}").get("strategy", ""))
        strategies[name] = strategies.get(name, 0) + 1
    return {
        "chunks": table.num_rows,
        "tokens_total": int(pc.sum(tokens).as_py() or 0),
        "tokens_max": int(pc.max(tokens).as_py() or 0),
        "strategies": strategies,
    }


@dataclass(frozen=True)
class ChunkPlan:
    """The document shards to chunk (one fan-out unit each) and whether the ledger is ignored."""

    shards: tuple[int, ...]
    full: bool


_BUDGETS: dict[str, tuple[TokenBudget, Chunker]] = {}  # per process: the tokenizer loads once
_BUDGET_KEY = "token_budget"  # in the chunk ledger's header, next to the per-shard totals


def _budget(cfg: Config) -> tuple[TokenBudget, Chunker]:
    key = chunk_fingerprint(cfg)
    if key not in _BUDGETS:
        _BUDGETS[key] = (make_budget(cfg.chunk, cfg.embed, cfg.preprocess), chunker_for(cfg.chunk))
    return _BUDGETS[key]


def _header(cfg: Config) -> ledger.LedgerHeader:
    return ledger.LedgerHeader(chunk_fingerprint(cfg), cfg.run.shards)


def plan_chunk(cfg: Config, art: Artifacts) -> ChunkPlan:
    """Decide full vs incremental (the ledger must match params, code and the chunk shards)."""
    why = "run.full_rebuild" if cfg.run.full_rebuild else ledger.usable(art.chunk_ledger, _header(cfg), art.chunks)
    if why:
        log.info("chunk: chunking every document (%s)", why)
        if art.chunks.is_file():
            art.chunks.unlink()
    return ChunkPlan(tuple(_document_shards(art.documents, cfg.run.shards)), full=bool(why))


def chunk_one(cfg: Config, art: Artifacts, index: int, full: bool) -> dict[str, Any]:
    """Chunk document shard ``index`` (one unit of the fan-out; any process, same bytes)."""
    old = {} if full else ledger.read_docs(art.chunk_ledger, shard=index)
    extra = {} if full else (ledger.read_header(art.chunk_ledger) or _header(cfg)).extra
    reader = _document_shards(art.documents, cfg.run.shards)[index]
    split_before = [_budget(cfg)[0].stats["split_sentences"]] if chunk_fingerprint(cfg) in _BUDGETS else [0]
    res = chunk_shard(index, reader, art.chunks, old, extra.get(shard_name(index)), lambda: _budget(cfg))
    split = _budget(cfg)[0].stats["split_sentences"] - split_before[0] if res.chunked else 0
    return {
        "shard": index,
        "states": [[s.doc_id, s.doc_key, list(s.chunk_ids)] for s in res.states.values()],
        "totals": res.totals,
        "documents_chunked": res.chunked,
        "documents_reused": res.reused,
        "shards_written": int(res.written),
        "split_sentences": split,
        "token_budget": _budget(cfg)[0].max_tokens if res.chunked else None,
        "pid": os.getpid(),
    }


def finalize_chunk(cfg: Config, art: Artifacts, plan: ChunkPlan, results: list[dict[str, Any]],
                   t0: float | None = None) -> dict[str, Any]:
    """Drop chunk shards whose documents are gone, write the chunk ledger, return the stats."""
    t0 = time.perf_counter() if t0 is None else t0
    old_ids: set[str] = set() if plan.full or not art.chunk_ledger.exists() else set(
        pq.ParquetFile(art.chunk_ledger).read(columns=["doc_id"]).column("doc_id").to_pylist())
    states = {d: ledger.DocState(d, k, tuple(ids)) for r in results for d, k, ids in r["states"]}
    totals = {shard_name(r["shard"]): r["totals"] for r in results}
    removed = remove_shards(art.chunks, list(plan.shards))
    # the budget of whoever chunked now, else the one recorded last time: a run with nothing to
    # chunk never loads the tokenizer (seconds to a minute of imports)
    old_header = None if plan.full else ledger.read_header(art.chunk_ledger)
    budgets = [r["token_budget"] for r in results if r.get("token_budget")]
    token_budget = budgets[0] if budgets else (old_header.extra.get(_BUDGET_KEY) if old_header else None)
    if token_budget is None:
        token_budget = _budget(cfg)[0].max_tokens
    header = _header(cfg)
    header.outputs, header.extra = shard_sizes(art.chunks), {**totals, _BUDGET_KEY: token_budget}
    ledger.write_docs(art.chunk_ledger, states, header)
    counts = {k: sum(int(r[k]) for r in results) for k in ("documents_chunked", "documents_reused", "shards_written")}
    stats = _chunk_stats(states, totals, counts, t0)
    stats["split_sentences"] = sum(int(r["split_sentences"]) for r in results)
    stats["token_budget"] = token_budget
    stats["documents_deleted"] = len(old_ids - set(states))
    stats["shards_removed"] = len(removed)
    # processes other than this one that chunked shards (0 in-process, > 0 on a Dask cluster)
    stats["worker_processes"] = len({r.get("pid") for r in results} - {os.getpid()})
    return stats


def run_chunk(cfg: Config, art: Artifacts) -> dict[str, Any]:
    """Chunk the ``art.documents`` shards into ``art.chunks`` shards (+ ``art.chunk_ledger``);
    only documents whose content changed since the chunk ledger was written are chunked.
    ``plan_chunk`` + ``chunk_one`` per shard + ``finalize_chunk``: a fan-out runner calls them."""
    t0 = time.perf_counter()
    plan = plan_chunk(cfg, art)
    with progress.track("chunk", total=len(plan.shards), unit="shard") as bar:
        results = [chunk_one(cfg, art, i, plan.full) for i in progress.counted(plan.shards, bar)]
    return finalize_chunk(cfg, art, plan, results, t0)


def _chunk_stats(states: dict[str, ledger.DocState], totals: dict[str, Any], counts: dict[str, int],
                 t0: float) -> dict[str, Any]:
    chunks = sum(t["chunks"] for t in totals.values())
    tokens_total = sum(t["tokens_total"] for t in totals.values())
    by_strategy: dict[str, int] = {}
    for t in totals.values():
        for k, v in t["strategies"].items():
            by_strategy[k] = by_strategy.get(k, 0) + v
    stats: dict[str, Any] = {
        "documents": len(states),
        "chunks": chunks,
        "tokens_total": tokens_total,
        "tokens_max": max((t["tokens_max"] for t in totals.values()), default=0),
        "tokens_mean": round(tokens_total / chunks, 2) if chunks else 0.0,
        "token_budget": 0,
        "split_sentences": 0,
        **counts,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    stats.update({f"chunks_{k}": v for k, v in sorted(by_strategy.items())})
    log.info("chunk: %d documents -> %d chunks (%d chunked, %d reused)", len(states), chunks,
             counts["documents_chunked"], counts["documents_reused"])
    return stats
