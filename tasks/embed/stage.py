"""The embed stage: chunks/ shards -> (cache) -> vectors/ shards + manifest.json.

``run_embed`` = :func:`plan_shards` + :func:`embed_shard` for each shard + :func:`finalize_embed`;
a fan-out runner (Prefect threads or Dask) calls the three itself. Properties:

* **Pay once per text.** Only unique ``text_hash`` values are embedded (exact duplicates once), and
  only those the cache does not hold. Every unique text is *owned* by the shard of its first
  occurrence, so shards never embed the same text twice and the batches (hence the bits of every
  vector) are the same whether shards run one after another or in parallel.
* **Resumable.** Each finished batch is committed to the cache; a crashed run re-run pays only for
  what was not committed.
* **Memory bounded.** Shards read only their row groups; the vectors are written one vector
  shard per chunk shard (:mod:`embedline.tasks.vector_shards`), atomically; a shard whose chunk
  shard did not change is not rewritten.
* **Checked.** Empty texts are a clear error naming the chunk; vectors with the wrong shape, NaN or
  all zeros are refused before they reach the cache.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, EmbedParams
from embedline.tasks.embed.cache import EmbeddingCache, namespace_for, namespace_spec
from embedline.tasks.embed.manifest import STAT_KEYS, aggregate_shards, build_manifest, run_facts
from embedline.tasks.embed.protocol import (
    Capability,
    EmbedError,
    EmbedInputError,
    paid_for,
    validate_vectors,
    with_prompt,
)
from embedline.tasks.embed.query import embed_query  # re-exported: it lived here
from embedline.tasks.embed.registry import (
    get_embedder,
    provider_spec,
    request_groups,
    request_workers,
    revision_for,
)
from embedline.tasks.embed.rows import ChunkRows
from embedline.tasks.records import write_json
from embedline.tasks.shards import shard_name
from embedline.tasks.tokenize import load_token_counter

Progress = Callable[[int, int], None]
_COLS = ["chunk_id", "source", "text_hash", "embed_text"]


@dataclass(frozen=True)
class Shard:
    """Rows ``[row_start, row_stop)`` of the chunks, embedded as one unit of the fan-out; rows are
    numbered across the chunk shards ``sources`` (None: all of them)."""

    index: int
    row_start: int
    row_stop: int
    sources: tuple[int, ...] | None = None


# ---- shared helpers --------------------------------------------------------------------------------
def fingerprint_for(cfg: Config) -> str:
    """The vector-set fingerprint (hashes model files at most; loads no weights)."""
    return cfg.fingerprint(model_revision=revision_for(cfg.embed))


def cache_path(cfg: Config, art: Artifacts) -> Path:
    """The cache file; with ``embed.cache=false`` a per-run file, deleted after a successful run."""
    path = art.resolve(cfg.embed.cache_path)
    return path if cfg.embed.cache else path.with_name("run-" + path.name)


def _namespace(params: EmbedParams) -> tuple[str, str]:
    revision = revision_for(params)
    return namespace_for(params, revision), revision


# ---- plan ------------------------------------------------------------------------------------------
_DIGESTS: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime_ns) -> SHA-256 of the bytes


def _chunk_digest(f: Path) -> str:
    """SHA-256 of a chunk shard's bytes, hashed once per process and file version."""
    from embedline.tasks.vector_shards import file_digest

    st = f.stat()
    key = (str(f), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_digest(f)
    return _DIGESTS[key]


def _up_to_date(target: Path, chunk_shard: Path, ns: str) -> bool:
    """Whether vector shard ``target`` records this chunk shard's bytes and the namespace."""
    from embedline.tasks.vector_shards import shard_meta

    if not target.exists():
        return False
    meta = shard_meta(target)
    return "dims" in meta and meta.get("namespace") == ns and meta.get("chunks") == _chunk_digest(chunk_shard)


def stale_chunk_shards(cfg: Config, art: Artifacts) -> list[int]:
    """Chunk shards whose vector shard is missing or was built from other bytes or another
    namespace: the only ones the embed stage reads texts of. Found by hashing the chunk shard
    files and reading the vector shards' schema metadata (no texts, no cache, no model)."""
    from embedline.tasks.vector_shards import source_shards

    sources = source_shards(art.chunks)
    if cfg.run.full_rebuild:
        return [i for i, _ in sources]
    ns, _ = _namespace(cfg.embed)
    return [i for i, f in sources if not _up_to_date(art.vectors / shard_name(i), f, ns)]


def plan_shards(cfg: Config, art: Artifacts) -> list[Shard]:
    """Deterministic row ranges of ``embed.shard_rows`` chunks each, over the chunk shards whose
    vector shard is not up to date (:func:`stale_chunk_shards`): none when nothing changed."""
    from embedline.tasks.vector_shards import source_shards

    stale = stale_chunk_shards(cfg, art)
    sources = None if len(stale) == len(source_shards(art.chunks)) else tuple(stale)
    n = ChunkRows(art.chunks, sources).num_rows
    size = cfg.embed.shard_rows
    return [Shard(i, start, min(start + size, n), sources) for i, start in enumerate(range(0, n, size))]


def plan_embed(cfg: Config, art: Artifacts) -> dict[str, Any]:
    """What embedding would cost now, without embedding: rows, unique texts, uncached texts and
    their tokens (the token count uses the provider's tokenizer; no model weights are loaded), and
    whether the provider bills by token (``Capability.BILLED_BY_TOKEN``)."""
    rows = ChunkRows(art.chunks)
    ns, _ = _namespace(cfg.embed)
    path = cache_path(cfg, art)
    seen: set[str] = set()
    todo = tokens = 0
    counter = load_token_counter(cfg.embed)
    cache = EmbeddingCache(path) if path.exists() else None
    try:
        for batch in rows.iter_batches(["text_hash", "embed_text"]):
            hashes = batch.column(0).to_pylist()
            texts = batch.column(1).to_pylist()
            fresh = {h: t for h, t in zip(hashes, texts, strict=True) if h not in seen}
            seen.update(fresh)
            missing = cache.missing(ns, list(fresh)) if cache else list(fresh)
            todo += len(missing)
            prompt = cfg.embed.passage_prompt
            tokens += sum(counter.count(prompt + fresh[h]) + counter.special_tokens for h in missing)
    finally:
        if cache:
            cache.close()
    billed = provider_spec(cfg.embed.provider).has(Capability.BILLED_BY_TOKEN)
    return {"rows": rows.num_rows, "unique_texts": len(seen), "texts_to_embed": todo,
            "tokens_to_embed": tokens, "billed_by_token": billed}


# ---- one shard -------------------------------------------------------------------------------------
def _owned_texts(rows: ChunkRows, shard: Shard) -> dict[str, str]:
    """text_hash -> embed_text for texts whose first occurrence lies in this shard."""
    table = rows.read(shard.row_start, shard.row_stop, _COLS)
    hashes = table.column("text_hash")
    if shard.row_start > 0:
        before = rows.read(0, shard.row_start, ["text_hash"]).column("text_hash")
        earlier = pc.is_in(hashes, value_set=before.combine_chunks()).to_pylist()
    else:
        earlier = [False] * table.num_rows
    owned: dict[str, str] = {}
    for i, (h, text, seen) in enumerate(
        zip(hashes.to_pylist(), table.column("embed_text").to_pylist(), earlier, strict=True)
    ):
        if seen or h in owned:
            continue
        if not text or not text.strip():
            chunk = table.column("chunk_id")[i].as_py()
            source = table.column("source")[i].as_py()
            raise EmbedInputError(
                f"{source}: chunk {chunk} (row {shard.row_start + i}) has an empty embed_text; "
                "empty texts are never embedded (fix the chunker or the input)"
            )
        owned[h] = text
    return owned


_KEPT: dict[tuple[Any, ...], pa.Array] = {}
_KEPT_LOCK = threading.Lock()


def _kept_hashes(art: Artifacts, sources: tuple[int, ...] | None, ns: str) -> pa.Array:
    """Text hashes the rebuild of the stale chunk shards ``sources`` keeps from their previous
    vector shards (:func:`_fill_vector_shard`): those that every stale chunk shard holding them
    finds in its own previous vector shard of namespace ``ns``. They need neither the model nor a
    cache lookup. Arrow string arrays and hash joins, not Python sets (a first run, with no
    previous shards, reads nothing more); computed once per process and file versions (the
    fan-out's shards share it)."""
    from embedline.tasks.vector_shards import reusable_hashes, source_shards

    wanted = None if sources is None else set(sources)
    files = [(i, f) for i, f in source_shards(art.chunks) if wanted is None or i in wanted]

    def stamp(p: Path) -> tuple[str, int, int] | None:
        try:
            st = p.stat()
        except FileNotFoundError:
            return None
        return (str(p), st.st_size, st.st_mtime_ns)

    key = (ns, tuple((stamp(f), stamp(art.vectors / shard_name(i))) for i, f in files))
    with _KEPT_LOCK:
        if key not in _KEPT:
            _KEPT.clear()
            _KEPT[key] = _kept_of(files, art.vectors, ns, reusable_hashes)
        return _KEPT[key]


def _kept_of(files: list[tuple[int, Path]], vectors: Path, ns: str,
             previous: Callable[[Path, str], pa.Array | None]) -> pa.Array:
    def texts(f: Path) -> pa.Array:
        return pq.ParquetFile(f).read(columns=["text_hash"]).column(0).combine_chunks()

    prev = {i: previous(vectors / shard_name(i), ns) for i, _ in files}
    covered = [h.filter(pc.is_in(h, value_set=prev[i])) for i, f in files if prev[i] is not None
               for h in [texts(f)]]
    kept = pc.unique(pa.concat_arrays(covered)) if covered else pa.array([], pa.string())
    for i, f in files if len(kept) else []:  # drop those another stale shard cannot take from its own
        h = texts(f)
        elsewhere = h if prev[i] is None else h.filter(pc.invert(pc.is_in(h, value_set=prev[i])))
        if len(elsewhere):
            kept = kept.filter(pc.invert(pc.is_in(kept, value_set=elsewhere)))
    return kept


def embed_shard(
    cfg: Config, art: Artifacts, shard: Shard, progress: Progress | None = None
) -> dict[str, Any]:
    """Embed the uncached texts first seen in ``shard`` into the cache. Writes nothing else."""
    t0 = time.time()
    params = cfg.embed
    rows = ChunkRows(art.chunks, shard.sources)
    owned = _owned_texts(rows, shard)
    ns, revision = _namespace(params)
    embedded = 0
    with EmbeddingCache(cache_path(cfg, art)) as cache:
        cache.register(ns, namespace_spec(params, revision))
        ask = list(owned)
        kept = _kept_hashes(art, shard.sources, ns) if not cfg.run.full_rebuild else None
        if kept is not None and len(kept) and ask:  # kept: finalize takes them from the old vector shards
            inside = pc.is_in(pa.array(ask, pa.string()), value_set=kept).to_pylist()
            ask = [h for h, k in zip(ask, inside, strict=True) if not k]
        cached = cache.have(ns, ask)  # keys only: the vectors are read when shards are written
        todo = [h for h in ask if h not in cached]
        if todo:
            report = (lambda done: progress(done, rows.num_rows)) if progress else None
            embedded = _embed_into_cache(params, cache, ns, todo, owned, shard, report)
    if progress:
        progress(shard.row_stop, rows.num_rows)
    return {
        "shard": shard.index,
        "rows": shard.row_stop - shard.row_start,
        "unique_texts": len(owned),
        "cache_hits": len(owned) - len(todo),
        "cache_misses": len(todo),
        "texts_embedded": embedded,
        "started_at": t0,
        "seconds": round(time.time() - t0, 3),
    }


def _embed_into_cache(
    params: EmbedParams,
    cache: EmbeddingCache,
    ns: str,
    todo: list[str],
    owned: dict[str, str],
    shard: Shard,
    progress: Callable[[int], None] | None,
) -> int:
    emb = get_embedder(params)
    # longest first, as sentence-transformers orders one call: per-batch groups pad little
    todo = sorted(todo, key=lambda h: (-len(owned[h]), h))
    texts = with_prompt([owned[h] for h in todo], params.passage_prompt)
    groups = request_groups(emb, params, texts, params.batch_size)  # local: batch_size x the backend's group_batches per commit
    workers = request_workers(params)
    width = cache.dims(ns)
    done = 0

    def run(group: list[int]) -> tuple[list[int], np.ndarray]:
        try:
            vecs = emb.embed([texts[i] for i in group])
        except EmbedError as exc:  # requests of this group that succeeded before it failed
            paid = paid_for(exc, width, emb.name)
            if paid:
                exc.salvage = ([group[j] for j in paid[0]], paid[1])  # type: ignore[attr-defined]
            raise
        return group, validate_vectors(vecs, len(group), width, emb.name)

    def commit(group: list[int], vecs: np.ndarray) -> None:
        nonlocal done, width
        width = width or int(vecs.shape[1])
        cache.put_many(ns, ((todo[i], vecs[j]) for j, i in enumerate(group)))
        done += len(group)
        if progress:
            span = shard.row_stop - shard.row_start
            progress(shard.row_start + (span * done) // len(todo))

    try:
        if workers == 1 or len(groups) == 1:
            for g in groups:
                commit(*run(g))
        else:
            _run_parallel(groups, run, commit, workers)
    except EmbedError as exc:
        _salvage(exc, commit)
        raise
    return done


def _salvage(exc: BaseException, commit: Callable[[list[int], np.ndarray], None]) -> None:
    """Commit the vectors a failed group had already been paid for (once)."""
    salvage = getattr(exc, "salvage", None)
    if salvage:
        exc.salvage = None  # type: ignore[attr-defined]
        commit(*salvage)


def _run_parallel(
    groups: list[list[int]],
    run: Callable[[list[int]], tuple[list[int], np.ndarray]],
    commit: Callable[[list[int], np.ndarray], None],
    workers: int,
) -> None:
    """Run groups on a thread pool; commit each result on this thread (it owns the cache
    connection). When one group fails, groups not started are cancelled, but every request
    already in flight is awaited and, if it succeeds, committed: paid-for vectors are never
    dropped. Then the first failure is raised."""
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embed") as pool:
        futures = [pool.submit(run, g) for g in groups]
        try:
            for fut in as_completed(futures):
                if fut.cancelled():
                    continue
                exc = fut.exception()
                if exc is None:
                    commit(*fut.result())
                    continue
                _salvage(exc, commit)
                if failure is None:
                    failure = exc
                    for f in futures:
                        f.cancel()
        except BaseException:  # Ctrl-C or a failing commit: stop starting new requests, then re-raise
            for f in futures:
                f.cancel()
            raise
    if failure is not None:
        raise failure


# ---- finalize --------------------------------------------------------------------------------------
def _fill_vector_shard(
    cache: EmbeddingCache, ns: str, table: Any, out: Path, index: int, meta: dict[str, str], dims: int,
    *, reuse: bool = True,
) -> None:
    """Write the vector shard of one chunk shard (``table``: chunk_id, source, text_hash): the
    vectors of texts the shard's previous version holds (same namespace) are kept from it, the
    rest are read from the cache (``reuse=False``: all from the cache)."""
    from embedline.tasks.vector_shards import reusable_vectors, write_vector_shard

    n = table.num_rows
    vecs = np.empty((n, dims), dtype=np.float32)
    hashes_col = table.column("text_hash").combine_chunks()
    need = np.arange(n)
    old = reusable_vectors(out / shard_name(index), ns) if reuse and n else None
    if old is not None and old[1].shape[1] == dims:
        pos = pc.index_in(hashes_col, value_set=old[0])
        found = pos.is_valid().to_numpy(zero_copy_only=False)
        if found.any():
            at = np.nonzero(found)[0]
            vecs[at] = old[1][pos.filter(pos.is_valid()).to_numpy(zero_copy_only=False)]
            need = np.nonzero(~found)[0]
    hashes = hashes_col.take(pa.array(need)).to_pylist() if len(need) < n else hashes_col.to_pylist()
    for s in range(0, len(need), 8192):
        part = hashes[s : s + 8192]
        found_c = cache.get_many(ns, part, count=False)
        missing = [i for i, h in enumerate(part) if h not in found_c]
        if missing:
            i = int(need[s + missing[0]])
            raise EmbedError(
                f"{len(missing)} chunk(s) have no cached vector, e.g. {table.column('chunk_id')[i].as_py()} "
                f"from {table.column('source')[i].as_py()}: embed every shard before finalize_embed"
            )
        if part:
            vecs[need[s : s + len(part)]] = np.stack([found_c[h] for h in part])
    write_vector_shard(out, index, table.column("chunk_id"), vecs, meta, hashes_col)


def _dims(cfg: Config, cache: EmbeddingCache, ns: str, n: int, path: Path) -> int:
    dims = cache.dims(ns) if n else None
    if dims is not None:
        return int(dims)
    if n:
        raise EmbedError(f"no cached vectors for this model/params in {path}: run embed_shard first")
    try:
        return int(get_embedder(cfg.embed).dims)
    except EmbedError:  # an API model of unknown width: no request is spent on an empty set
        return int(cfg.embed.dimensions or 0)


def plan_vector_shards(art: Artifacts) -> list[int]:
    """The chunk shard indexes: one vector shard each (the units of the vector fan-out)."""
    from embedline.tasks.vector_shards import source_shards

    return [i for i, _ in source_shards(art.chunks)]


def write_vector_shard_for(cfg: Config, art: Artifacts, index: int) -> dict[str, Any]:
    """Write the vector shard of chunk shard ``index`` from the cache, unless the shard on disk
    records this chunk shard and namespace already (then it is left byte-identical, and neither
    the cache nor the chunk texts are read). A pure function of the chunk shard and the cache:
    the same bytes on a thread or a Dask worker."""
    from embedline.tasks.vector_shards import source_shards

    f = dict(source_shards(art.chunks))[index]
    ns, _ = _namespace(cfg.embed)
    target = art.vectors / shard_name(index)
    if _up_to_date(target, f, ns):
        return {"shard": index, "written": False, "rows": pq.ParquetFile(f).metadata.num_rows}
    path = cache_path(cfg, art)
    table = pq.ParquetFile(f).read(columns=["chunk_id", "source", "text_hash"])
    meta = {"chunks": _chunk_digest(f), "namespace": ns}
    with EmbeddingCache(path) as cache:
        dims = _dims(cfg, cache, ns, table.num_rows, path)
        _fill_vector_shard(cache, ns, table, art.vectors, index, meta, dims, reuse=not cfg.run.full_rebuild)
    return {"shard": index, "written": True, "rows": table.num_rows}


def write_vector_shards(
    cfg: Config, art: Artifacts, results: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """One vector shard per chunk shard (``data/embeddings/vectors/``), from the cache: each by
    :func:`write_vector_shard_for` here, or already done by a fan-out (``results``). Removes shards
    of chunk shards that no longer exist. Returns rows, unique texts, dims, the corpus checksum and
    the shards written / kept."""
    from embedline.tasks.vector_shards import dims_of, remove_stale, source_shards

    sources = source_shards(art.chunks)
    if results is None:
        results = [write_vector_shard_for(cfg, art, i) for i, _ in sources]
    art.vectors.mkdir(parents=True, exist_ok=True)
    remove_stale(art.vectors, {i for i, _ in sources})
    corpus = hashlib.sha256()
    seen: list[Any] = []
    n = 0
    for _, f in sources:
        hashes = pq.ParquetFile(f).read(columns=["text_hash"]).column("text_hash")
        n += len(hashes)
        for h in hashes.to_pylist():
            corpus.update(h.encode() + b"\n")
        seen.append(pc.unique(hashes.combine_chunks()))
    dims = dims_of(art.vectors)
    if dims is None:
        ns, _ = _namespace(cfg.embed)
        with EmbeddingCache(cache_path(cfg, art)) as cache:
            dims = _dims(cfg, cache, ns, n, cache_path(cfg, art))
    unique = len(pc.unique(pa.chunked_array(seen, pa.string()).combine_chunks())) if seen else 0
    written = sum(1 for r in results if r["written"])
    return {"rows": n, "unique": unique, "dims": dims, "corpus": corpus.hexdigest(),
            "vector_shards_written": written, "vector_shards_kept": len(results) - written}


def finalize_embed(
    cfg: Config,
    art: Artifacts,
    shard_stats: list[dict[str, Any]] | None = None,
    *,
    started_at: float | None = None,
    vector_results: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write the vector shards (row-aligned with the chunk shards) and manifest.json from the cache.

    ``shard_stats`` (what :func:`embed_shard` returned) feed the hit/miss counts and timings;
    ``vector_results``: the vector shards were written by a fan-out (:func:`write_vector_shard_for`).
    """
    t0 = time.time()
    params = cfg.embed
    _, revision = _namespace(params)
    path = cache_path(cfg, art)
    built = write_vector_shards(cfg, art, vector_results)
    if not cfg.embed.cache:
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)

    stats = aggregate_shards(shard_stats or [], built["unique"])
    begin = started_at or min((s.get("started_at", t0) for s in shard_stats or []), default=t0)
    seconds = round(time.time() - begin, 3)
    manifest = build_manifest(cfg, art, revision, built["dims"], built["rows"], built["unique"], built["corpus"])
    write_json(art.manifest, manifest)
    _prepare_fast_search(params)
    facts = {**manifest, **run_facts(cfg, stats, seconds)}
    out = {k: v for k, v in facts.items() if k in STAT_KEYS or k.startswith("embedder_")}
    out.update(vector_shards_written=built["vector_shards_written"], vector_shards_kept=built["vector_shards_kept"])
    return out


def _prepare_fast_search(params: EmbedParams) -> None:
    """After a run that loaded a torch model: export its ONNX graph once for torch-free search."""
    from embedline.tasks.embed.query import prepare_query_graph
    from embedline.tasks.embed.registry import peek_embedder

    loaded = peek_embedder(params)
    if loaded is not None:  # never load a model only for this (a no-change run stays cheap)
        prepare_query_graph(params, loaded)


# ---- the whole stage -------------------------------------------------------------------------------
def run_embed(cfg: Config, art: Artifacts, progress: Progress | None = None) -> dict[str, Any]:
    """Embed every chunk (via the cache) and write the vector shards + manifest.json; returns flat stats."""
    t0 = time.time()
    shards = plan_shards(cfg, art)
    total = shards[-1].row_stop if shards else 0
    from embedline.tasks import progress as stage_progress

    stats = []
    with stage_progress.track("embed", total=total, unit="chunk") as bar:
        for s in shards:
            advance = stage_progress.row_reporter(bar, s.row_start)

            def report(done: int, _of: int, advance: Callable[[int, int], None] = advance) -> None:
                advance(done, total)
                if progress:
                    progress(done, total)

            stats.append(embed_shard(cfg, art, s, report))
    result = finalize_embed(cfg, art, stats, started_at=t0)
    result["shards"] = len(shards)
    result["chunk_shards_read"] = chunk_shards_read(art, shards)
    return result


def chunk_shards_read(art: Artifacts, shards: list[Shard]) -> int:
    """How many chunk shards the planned ``shards`` read texts of (0 when nothing changed)."""
    from embedline.tasks.vector_shards import source_shards

    if not shards:
        return 0
    sources = shards[0].sources
    return len(source_shards(art.chunks)) if sources is None else len(sources)


__all__ = [
    "Shard",
    "cache_path",
    "embed_query",
    "embed_shard",
    "finalize_embed",
    "fingerprint_for",
    "plan_embed",
    "plan_shards",
    "plan_vector_shards",
    "run_embed",
    "stale_chunk_shards",
    "write_vector_shard_for",
    "write_vector_shards",
]
