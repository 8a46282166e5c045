"""The dedupe stage: chunks/ + vectors/ shards -> deduped/ shards + dedupe_report.json.

1. **Exact**: rows with the same ``text_hash`` (hash of the normalised embed text) collapse to one
   record, represented by the row with the smallest ``chunk_id``. Its ``sources`` lists every
   (source, doc_id, chunk_id) holding that text, so no provenance is lost. Always applied.
2. **Near**: among the exact representatives, vectors with cosine >= ``dedupe.threshold`` are joined
   (range search, :mod:`embedline.tasks.neardup`; single linkage over the pairs, i.e. union-find), and each
   group is represented by its member with the smallest ``chunk_id``: deterministic, independent of
   row order and of the search engine. ``dedupe.lexical`` adds MinHash (word 3-gram Jaccard >=
   ``dedupe.lexical_threshold``) pairs to the same groups.
   With ``dedupe.confirm_text`` (default) a pair is joined only when the chunks *say the same
   thing*: word-level edit ratio >= ``dedupe.text_similarity``, the same last heading and the same
   code identifiers (:func:`embedline.tasks.neardup.same_content`). Shared boilerplate never merges
   two API entries; rejected pairs are counted by reason in the report.

:class:`~embedline.tasks.config.DuplicatePolicy` decides what the near-duplicates become:

- ``drop``: only representatives are stored; ``duplicates`` on the representative lists the
  dropped chunk ids with their cosine to it. ``sources`` keeps exact provenance only.
- ``link`` (default): only representatives are stored; ``duplicates`` lists each near-duplicate
  (chunk_id, doc_id, source, similarity and its own ``text``, so search still returns it) and ``sources`` also carries the near-duplicates'
  provenance (``match: "near"``), so a document whose chunk was absorbed can still be traced.
- ``keep_canonical``: every exact representative is stored; near-duplicates carry
  ``is_duplicate: true`` and ``canonical_id`` (the representative's chunk id), the representative
  lists them in ``duplicates``. Search can filter ``is_duplicate`` out or keep it.

``canonical_id`` is the chunk id of the group representative (a representative's own id for
itself); ``row`` indexes the vector shard of the same index (deduped shard N holds the stored rows
of chunk shard N, so a one-document change rewrites only the shards whose rows or duplicate
links changed; an unchanged shard file is not touched). Memory: only id/hash columns are held in
full; text is streamed shard by shard; the vectors are assembled into a temporary memmap that the
search reads block by block (it holds one faiss index plus a block); the text confirmation of
candidate pairs spills their texts to a temporary SQLite file and reads them back per block.
"""

from __future__ import annotations

import filecmp
import itertools
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedline.tasks import dedupe_state as dstate
from embedline.tasks import progress, shards
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, DuplicatePolicy
from embedline.tasks.memory import release_freed
from embedline.tasks.neardup import (
    EPS,
    Components,
    Pairs,
    SearchInfo,
    choose_method,
    drop_pages,
    gather,
    ivf_shape,
    lexical_pairs,
    normalized,
    range_pairs,
    representatives,
    same_content,
    text_key,
)
from embedline.tasks.payloads import PAYLOAD_HASH, build_payloads
from embedline.tasks.records import point_id_for, read_json, write_json
from embedline.tasks.rowhash import row_keys
from embedline.tasks.vector_shards import (
    META_KEY,
    dims_of,
    read_vector_shard,
    source_shards,
    vector_files,
)

SNIPPET_CHARS = 240
MAX_EXAMPLES = 20
MAX_EXAMPLE_MEMBERS = 5

DEDUPED_SCHEMA = pa.schema(
    [
        ("point_id", pa.string()),
        ("chunk_id", pa.string()),
        ("row", pa.int64()),
        ("doc_id", pa.string()),
        ("source", pa.string()),
        ("sources", pa.large_string()),  # JSON list of {source, doc_id, chunk_id, match, similarity}
        ("duplicates", pa.large_string()),  # JSON list of near-duplicates of this representative
        ("is_duplicate", pa.bool_()),
        ("canonical_id", pa.string()),
        ("text", pa.large_string()),
        ("title", pa.string()),
        ("chunk_index", pa.int32()),
        ("heading_path", pa.list_(pa.string())),
        ("char_start", pa.int64()),
        ("char_end", pa.int64()),
        ("token_count", pa.int32()),
        ("text_hash", pa.string()),
        ("metadata", pa.string()),  # JSON
        (PAYLOAD_HASH, pa.string()),  # of the Qdrant payload (tasks/payloads.py), for the manifest's set
    ]
)
_STREAM_COLS = ["chunk_id", "doc_id", "source", "text", "title", "chunk_index", "heading_path", "char_start", "char_end",
                "token_count", "text_hash", "metadata"]


class DedupeInputError(ValueError):
    """The chunk shards, the vector shards and manifest.json do not agree."""


def _csr(labels: np.ndarray, rank: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Members of each label sorted by rank: ``perm[starts[l]:starts[l + 1]]``."""
    perm = np.lexsort((rank, labels))
    starts = np.zeros(n_labels + 1, dtype=np.int64)
    np.cumsum(np.bincount(labels, minlength=n_labels), out=starts[1:])
    return perm, starts


def _histogram(sizes: np.ndarray) -> dict[str, int]:
    bins = [(2, 2, "2"), (3, 3, "3"), (4, 4, "4"), (5, 9, "5-9"), (10, 99, "10-99"), (100, None, "100+")]
    out = {}
    for lo, hi, name in bins:
        sel = sizes >= lo if hi is None else (sizes >= lo) & (sizes <= hi)
        out[name] = int(sel.sum())
    return out


@dataclass(frozen=True)
class ShardSpan:
    index: int
    file: Path
    offset: int  # global row of the shard's first row
    rows: int


def _load_inputs(art: Artifacts, tmp: Path) -> tuple[pa.Table, np.ndarray, list[ShardSpan]]:
    """The id columns of every chunk (global row order = shard order), the vectors as one
    read-only memmap in that order (assembled shard by shard into ``tmp``: the search reads it block
    by block), and where each chunk shard's rows are."""
    ids = shards.read_table(art.chunks, columns=["chunk_id", "doc_id", "source", "text_hash"])
    manifest = read_json(art.manifest)
    n = ids.num_rows
    files = vector_files(art.vectors)
    sources = source_shards(art.chunks)
    dims = int(manifest.get("dims") or dims_of(art.vectors) or 0)
    path = tmp / "vectors.f32"
    offsets, row = [], 0
    with path.open("wb") as fh:
        for index, f in sources:
            chunk_ids = pq.ParquetFile(f).read(columns=["chunk_id"]).column("chunk_id").to_pylist()
            offsets.append(ShardSpan(index, f, row, len(chunk_ids)))
            if not chunk_ids:
                continue
            vf = files.get(index)
            shard = read_vector_shard(vf, index) if vf is not None else None
            if shard is None or shard.chunk_ids != chunk_ids:
                raise DedupeInputError(
                    f"{art.vectors} shard {index} does not align row-for-row with {f} "
                    "(re-run the embed stage)"
                )
            if shard.vectors.shape[1] != dims:
                raise DedupeInputError(f"{art.manifest} says dims={dims} but {vf} has {shard.vectors.shape[1]}")
            fh.write(np.ascontiguousarray(shard.vectors, dtype=np.float32).tobytes())
            row += len(chunk_ids)
    if row != n or set(files) - {i for i, _ in sources}:
        raise DedupeInputError(f"{art.vectors} and {art.chunks} disagree: re-run the embed stage")
    vectors = np.memmap(path, dtype=np.float32, mode="r", shape=(n, dims)) if n else np.zeros((0, dims), np.float32)
    if pc.count_distinct(ids["chunk_id"]).as_py() != n:
        raise DedupeInputError(f"{art.chunks} has repeated chunk_id values; chunk ids must be unique")
    return ids, vectors, offsets


def _take_rows(art: Artifacts, rows: np.ndarray, columns: list[str]) -> Iterator[tuple[np.ndarray, pa.Table]]:
    """The ``columns`` of the given global rows, streamed one row group of a chunk shard at a time
    (a shard grows with the corpus, a row group does not): ``(global rows, table)`` per row group
    that holds any of them."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    start = 0
    for _, f in source_shards(art.chunks):
        pf = pq.ParquetFile(f)
        for g in range(pf.metadata.num_row_groups):
            n = int(pf.metadata.row_group(g).num_rows)
            lo, hi = np.searchsorted(rows, [start, start + n])
            if hi > lo:
                sel = rows[lo:hi]
                yield sel, pf.read_row_group(g, columns=columns).take(pa.array(sel - start))
            start += n


def _similarities(vectors: np.ndarray, rows: np.ndarray, canon_rows: np.ndarray, block: int) -> np.ndarray:
    sims = np.ones(len(rows), dtype=np.float32)
    todo = np.flatnonzero(rows != canon_rows)
    for s in range(0, len(todo), block):
        sel = todo[s : s + block]
        a = normalized(gather(vectors, rows[sel]))
        b = normalized(gather(vectors, canon_rows[sel]))
        sims[sel] = np.einsum("ij,ij->i", a, b)
    return sims


@dataclass
class ExactGroups:
    """Rows grouped by ``text_hash``; ``uniq`` are the representative rows (smallest chunk_id)."""

    label: np.ndarray  # group per row
    uniq: np.ndarray  # representative rows, ascending
    perm: np.ndarray  # members of group g: perm[starts[g]:starts[g + 1]] (by chunk id)
    starts: np.ndarray
    sizes: np.ndarray


@dataclass
class NearGroups:
    """Near-duplicate groups over the exact representatives (nodes 0..m-1 = ``ExactGroups.uniq``)."""

    canon: np.ndarray  # representative node per node
    sims: np.ndarray  # cosine of each node to its representative
    is_canon: np.ndarray
    perm: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    info: SearchInfo
    pairs: int  # vector (and lexical) pairs found
    rejected: Counter[str]  # pairs not merged, by reason (heading, identifiers, text)
    seconds: float


def exact_groups(ids: pa.Table, rank: np.ndarray) -> ExactGroups:
    n = ids.num_rows
    if not n:
        z = np.zeros(0, np.int64)
        return ExactGroups(z, z, z, np.zeros(1, np.int64), z)
    enc = pc.dictionary_encode(ids["text_hash"].combine_chunks())
    label = enc.indices.to_numpy().astype(np.int64)
    rep = representatives(label, rank)
    uniq = np.flatnonzero(rep == np.arange(n))
    perm, starts = _csr(label, rank, len(enc.dictionary))
    return ExactGroups(label, uniq, perm, starts, np.diff(starts))


class _TextKeys:
    """Text keys (:func:`neardup.text_key`) of the candidate nodes, spilled to a temporary SQLite
    file and read back per pair block through a bounded cache: the confirmation never holds every
    candidate's text at once."""

    CACHE = 4096  # keys held at most (beyond one pair block's own nodes)
    PAIR_BLOCK = 1024  # pairs confirmed per block: at most 2 x this many keys are needed at once

    def __init__(self, art: Artifacts, uniq: np.ndarray, nodes: np.ndarray, tmp: Path):
        import sqlite3

        self.db = sqlite3.connect(tmp / "texts.sqlite")
        self.db.execute("CREATE TABLE t (node INTEGER PRIMARY KEY, text TEXT, heading TEXT)")
        node_of = dict(zip(uniq[nodes].tolist(), nodes.tolist(), strict=True))
        for rows, table in _take_rows(art, uniq[nodes], ["text", "heading_path"]):
            self.db.executemany("INSERT INTO t VALUES (?, ?, ?)", (
                (node_of[r], t or "", json.dumps(list(hp or ())))
                for r, t, hp in zip(rows.tolist(), table["text"].to_pylist(), table["heading_path"].to_pylist(),
                                    strict=True)))
        self.db.commit()
        self.cache: dict[int, Any] = {}

    def get(self, nodes: Iterable[int]) -> dict[int, Any]:
        want = sorted(set(nodes))
        todo = [x for x in want if x not in self.cache]
        if len(self.cache) + len(todo) > self.CACHE:
            self.cache.clear()
            todo = want
        for s in range(0, len(todo), 500):
            part = todo[s : s + 500]
            q = f"SELECT node, text, heading FROM t WHERE node IN ({','.join('?' * len(part))})"
            for node, text, heading in self.db.execute(q, part):
                self.cache[node] = text_key(text, json.loads(heading))
        return {x: self.cache[x] for x in want}

    def close(self) -> None:
        self.db.close()


def _verdicts(art: Artifacts, uniq: np.ndarray, i: np.ndarray, j: np.ndarray, min_ratio: float,
              tmp: Path) -> list[str]:
    """Per vector pair, "" when the chunks also say the same thing (:func:`neardup.same_content`),
    else why not (heading, identifiers, text)."""
    if not len(i):
        return []
    keys = _TextKeys(art, uniq, np.unique(np.concatenate([i, j])), tmp)
    out: list[str] = []
    try:
        step = _TextKeys.PAIR_BLOCK
        for s in range(0, len(i), step):
            bi, bj = i[s : s + step].tolist(), j[s : s + step].tolist()
            got = keys.get(itertools.chain(bi, bj))
            out.extend(same_content(got[a], got[b], min_ratio) or "" for a, b in zip(bi, bj, strict=True))
    finally:
        keys.close()
    return out


def _unique_pairs(blocks: Iterable[Pairs]) -> Pairs:
    """Each pair once, (i < j), sorted (the IVF engine and a new-vs-all search may repeat one)."""
    parts = [(np.asarray(a, np.int64), np.asarray(b, np.int64)) for a, b in blocks if len(a)]
    if not parts:
        z = np.zeros(0, np.int64)
        return z, z
    i = np.concatenate([a for a, _ in parts])
    j = np.concatenate([b for _, b in parts])
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    code = np.unique(lo * (int(hi.max()) + 1) + hi)
    width = int(hi.max()) + 1
    return code // width, code % width


def _cosines(vectors: np.ndarray, uniq: np.ndarray, i: np.ndarray, j: np.ndarray, block: int) -> np.ndarray:
    out = np.empty(len(i), dtype=np.float32)
    for s in range(0, len(i), block):
        a = normalized(gather(vectors, uniq[i[s : s + block]]))
        b = normalized(gather(vectors, uniq[j[s : s + block]]))
        out[s : s + block] = np.einsum("ij,ij->i", a, b)
    return out


@dataclass
class Prior:
    """What an incremental run reuses: pairs between untouched nodes (node indexes of this run)."""

    i: np.ndarray
    j: np.ndarray
    cosine: np.ndarray
    verdict: list[str]
    new_nodes: np.ndarray  # nodes to search against every node


@dataclass
class Candidates:
    i: np.ndarray
    j: np.ndarray
    cosine: np.ndarray
    verdict: list[str]  # "" = merged
    info: SearchInfo
    searched: int  # nodes searched (all on a full run)


def _new_vs_all(vectors: np.ndarray, uniq: np.ndarray, new_nodes: np.ndarray, radius: float,
                block: int) -> Iterator[Pairs]:
    """Exact pairs between ``new_nodes`` and every node: a flat index of the new nodes only,
    range-searched by every node block (memory: the new nodes + one block)."""
    import faiss

    if not len(new_nodes) or len(uniq) < 2:
        return
    flat = faiss.IndexFlatIP(int(vectors.shape[1]))
    for s in range(0, len(new_nodes), block):
        flat.add(normalized(gather(vectors, uniq[new_nodes[s : s + block]])))
    for start in range(0, len(uniq), block):
        x = normalized(gather(vectors, uniq[start : start + block]))
        drop_pages(vectors)
        lims, sims, nbrs = flat.range_search(x, radius)
        q = np.repeat(np.arange(start, start + len(x), dtype=np.int64), np.diff(lims).astype(np.int64))
        other = new_nodes[nbrs.astype(np.int64)]
        keep = (other != q) & (sims >= radius)
        yield q[keep], other[keep]


def _full_info(cfg: Config, m: int) -> SearchInfo:
    """The search a full run over ``m`` nodes would report (the report does not depend on how the
    pairs were found)."""
    p = cfg.dedupe
    how = choose_method(m, p.method, p.exact_max_rows)
    if how == "exact" or m < 2:
        return SearchInfo(how, m, 0)
    cells, probes = ivf_shape(m, p.ivf_nlist, p.ivf_nprobe)
    return SearchInfo(how, m, 0, cells, probes)


def candidates(cfg: Config, art: Artifacts, vectors: np.ndarray, uniq: np.ndarray, tmp: Path,
               prior: Prior | None) -> Candidates:
    """Every candidate pair among the nodes (cosine >= threshold, + lexical pairs) with its text
    verdict. With ``prior``, only the new nodes are searched (exactly) against all nodes; the
    other pairs and their verdicts come from the prior run."""
    p = cfg.dedupe
    m = len(uniq)
    radius = float(p.threshold) - EPS
    if prior is None:
        blocks, info = range_pairs(
            vectors, p.threshold, rows=uniq, method=p.method, exact_max_rows=p.exact_max_rows,
            block=p.block_rows, nlist=p.ivf_nlist, nprobe=p.ivf_nprobe,
        )
        if p.lexical and m > 1:
            texts = [t for _, table in _take_rows(art, uniq, ["embed_text"]) for t in table["embed_text"].to_pylist()]
            blocks = itertools.chain(blocks, [lexical_pairs(texts, p.lexical_threshold)])
        searched = m
    else:
        blocks = _new_vs_all(vectors, uniq, prior.new_nodes, radius, p.block_rows)
        info, searched = _full_info(cfg, m), len(prior.new_nodes)
    with progress.track("dedupe", unit="block") as bar:
        i, j = _unique_pairs(progress.counted(blocks, bar))
    cos = _cosines(vectors, uniq, i, j, p.block_rows)
    verdict = _verdicts(art, uniq, i, j, p.text_similarity, tmp) if p.confirm_text else [""] * len(i)
    if prior is not None and len(prior.i):
        i, j = np.concatenate([prior.i, i]), np.concatenate([prior.j, j])
        cos = np.concatenate([prior.cosine, cos])
        verdict = prior.verdict + verdict
    return Candidates(i, j, cos, verdict, info, searched)


def near_groups(
    cfg: Config, art: Artifacts, vectors: np.ndarray, ex: ExactGroups, rank: np.ndarray, tmp: Path,
    prior: Prior | None = None,
) -> tuple[NearGroups, Candidates]:
    """Range search among the unique texts (+ optional lexical pairs), each pair confirmed on the
    texts (``dedupe.text_similarity``, same heading and identifiers), grouped deterministically."""
    p = cfg.dedupe
    t0 = time.perf_counter()
    uniq = ex.uniq
    m = len(uniq)
    cand = candidates(cfg, art, vectors, uniq, tmp, prior)
    ok = np.asarray([v == "" for v in cand.verdict], dtype=bool)
    rejected: Counter[str] = Counter(v for v in cand.verdict if v)
    comps = Components(m)
    comps.add(cand.i[ok], cand.j[ok])
    canon = representatives(comps.labels(), rank[uniq]) if m else np.zeros(0, np.int64)
    seconds = time.perf_counter() - t0
    sims = _similarities(vectors, uniq, uniq[canon], p.block_rows)
    perm, starts = _csr(canon, rank[uniq], m)
    near = NearGroups(
        canon, sims, canon == np.arange(m), perm, starts, np.diff(starts), cand.info, int(ok.sum()),
        rejected, seconds,
    )
    return near, cand


class _Payloads:
    """Builds each stored row's ``sources`` / ``duplicates`` / ``is_duplicate`` / ``canonical_id``."""

    def __init__(self, policy: DuplicatePolicy, ex: ExactGroups, near: NearGroups,
                 lookup: dict[int, dict[str, str]], dup_text: dict[int, str]):
        self.policy, self.ex, self.near, self.lookup, self.dup_text = policy, ex, near, lookup, dup_text
        n = len(ex.label)
        self.node_of_row = np.full(n, -1, dtype=np.int64)
        self.node_of_row[ex.uniq] = np.arange(len(ex.uniq))

    def ident(self, r: int, current: dict[str, str]) -> dict[str, str]:
        return self.lookup.get(r) or current

    def exact_sources(self, row: int, current: dict[str, str], match: str = "exact",
                      sim: float = 1.0) -> list[dict[str, Any]]:
        ex = self.ex
        lab = ex.label[row]
        return [
            {**self.ident(int(r), current), "match": match, "similarity": round(sim, 6)}
            for r in ex.perm[ex.starts[lab] : ex.starts[lab + 1]]
        ]

    def row(self, row: int, current: dict[str, str]) -> tuple[str, str, bool, str]:
        near, uniq = self.near, self.ex.uniq
        node = int(self.node_of_row[row])
        canon = int(near.canon[node])
        srcs = self.exact_sources(row, current)
        dups: list[dict[str, Any]] = []
        if canon == node:
            for u in near.perm[near.starts[node] : near.starts[node + 1]]:
                if u == node:
                    continue
                r, s = int(uniq[u]), float(near.sims[u])
                other = self.lookup[r]
                d: dict[str, Any] = {"chunk_id": other["chunk_id"], "similarity": round(s, 6)}
                if self.policy is DuplicatePolicy.link:
                    # the duplicate's own text travels with its representative: still findable
                    d.update(doc_id=other["doc_id"], source=other["source"], text=self.dup_text.get(r, ""))
                    srcs.extend(self.exact_sources(r, other, "near", s))
                dups.append(d)
        dumps = json.dumps
        return (dumps(srcs, ensure_ascii=False), dumps(dups, ensure_ascii=False), canon != node,
                self.ident(int(uniq[canon]), current)["chunk_id"])


def _examples_spec(ex: ExactGroups, near: NearGroups) -> list[tuple[str, int, list[int]]]:
    """The largest groups (near first by size, then exact) and the rows shown for each."""
    uniq = ex.uniq
    near_ids = np.flatnonzero(near.is_canon & (near.sizes > 1))
    candidates = [("near", int(c), int(near.sizes[c])) for c in near_ids]
    candidates += [("exact", int(g), int(ex.sizes[g])) for g in np.flatnonzero(ex.sizes > 1)]
    candidates.sort(key=lambda t: (-t[2], t[0] != "near", t[1]))
    spec = []
    for kind, key, size in candidates[:MAX_EXAMPLES]:
        if kind == "near":
            members = [int(uniq[u]) for u in near.perm[near.starts[key] : near.starts[key + 1]]]
        else:
            members = [int(r) for r in ex.perm[ex.starts[key] : ex.starts[key + 1]]]
        spec.append((kind, size, members[: MAX_EXAMPLE_MEMBERS + 1]))
    return spec


def write_if_changed(folder: Path, index: int, table: pa.Table) -> bool:
    """Write one shard (rows as given) atomically, leaving the file untouched (same bytes, same
    mtime) when its content would not change; an empty table removes it. True when written."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / shards.shard_name(index)
    if table.num_rows == 0:
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table.combine_chunks(), tmp, compression="zstd", row_group_size=shards.ROW_GROUP_ROWS)
    if path.exists() and filecmp.cmp(tmp, path, shallow=False):
        tmp.unlink()
        return False
    os.replace(tmp, path)
    return True


@dataclass
class Reuse:
    """Rows whose deduped row is the previous run's (same chunk id, key and group hash), and the
    deduped shards that are still the files the previous run wrote."""

    same: np.ndarray
    intact: set[int]


def _old_rows(art: Artifacts, index: int, reuse: Reuse | None) -> tuple[pa.Table | None, dict[str, int]]:
    if reuse is None or index not in reuse.intact:
        return None, {}
    path = art.deduped / shards.shard_name(index)
    if not path.exists():
        return None, {}
    table = pq.ParquetFile(path).read()
    return table, {c: k for k, c in enumerate(table["chunk_id"].to_pylist())}


def _shard_table(art: Artifacts, span: ShardSpan, stored: np.ndarray, payloads: _Payloads, ident: dict[str, str],
                 schema: pa.Schema, reuse: Reuse | None) -> tuple[pa.Table, int]:
    """The deduped rows of one chunk shard: rows that did not change are copied from the previous
    deduped shard (``row`` renumbered), the others are built (payload hash included)."""
    old, old_pos = _old_rows(art, span.index, reuse)
    rows_out: list[dict[str, Any]] = []
    kept_local: list[int] = []
    kept_old: list[int] = []
    local = 0
    for batch in pq.ParquetFile(span.file).iter_batches(batch_size=4096, columns=_STREAM_COLS):
        base = span.offset + local
        chunk_ids = batch.column(0).to_pylist()  # _STREAM_COLS[0]: only the ids of copied rows
        build: list[int] = []
        for k in np.flatnonzero(stored[base : base + batch.num_rows]).tolist():
            at = old_pos.get(chunk_ids[k]) if reuse is not None and reuse.same[base + k] else None
            if at is None:
                build.append(k)
                continue
            kept_local.append(local + k)
            kept_old.append(at)
        cols = batch.take(pa.array(build, pa.int64())).to_pydict() if build else {}  # rows built anew only
        for j, k in enumerate(build):
            current = {"chunk_id": cols["chunk_id"][j], "doc_id": cols["doc_id"][j], "source": cols["source"][j]}
            srcs, dups, is_dup, canonical = payloads.row(base + k, current)
            rows_out.append({
                "point_id": point_id_for(cols["chunk_id"][j]), "row": local + k, "sources": srcs,
                "duplicates": dups, "is_duplicate": is_dup, "canonical_id": canonical,
                **{c: cols[c][j] for c in _STREAM_COLS},
            })
        local += batch.num_rows
    if rows_out:
        as_cols = {name: [r[name] for r in rows_out] for name in rows_out[0]}
        for r, pl in zip(rows_out, build_payloads(as_cols, **ident), strict=True):
            r[PAYLOAD_HASH] = pl[PAYLOAD_HASH]
    table = pa.Table.from_pylist(rows_out, schema=schema)
    if old is None or not kept_old:
        return table, 0
    kept = old.take(pa.array(kept_old, pa.int64())).replace_schema_metadata(schema.metadata)
    kept = kept.set_column(kept.schema.get_field_index("row"), schema.field("row"), pa.array(kept_local, pa.int64()))
    both = pa.concat_tables([kept.cast(schema), table])
    return both.take(pc.sort_indices(both["row"])), len(kept_old)


def _write_deduped(art: Artifacts, stored: np.ndarray, payloads: _Payloads, ident: dict[str, str],
                   layout: list[ShardSpan], dirty: set[int], reuse: Reuse | None = None) -> tuple[int, int]:
    """Write the deduped shard of each ``dirty`` chunk shard, one at a time, (``row`` = the row in
    that shard and in its vector shard, ``payload_hash`` = the hash of the Qdrant payload for
    ``ident``'s fingerprint and model); the other deduped shards are not read. Returns the number
    of shard files rewritten and of rows copied from the previous deduped shards."""
    schema = DEDUPED_SCHEMA.with_metadata({META_KEY: json.dumps(ident, sort_keys=True)})
    written = copied = 0
    for span in layout:
        if span.index in dirty:
            table, n_copied = _shard_table(art, span, stored, payloads, ident, schema, reuse)
            written += write_if_changed(art.deduped, span.index, table)
            copied += n_copied
            del table
            release_freed()  # one shard's rows at a time: the next shard does not stack on this one's
    if art.deduped.is_dir():
        shards.remove_shards(art.deduped, [s.index for s in layout])
    else:
        art.deduped.mkdir(parents=True, exist_ok=True)
    return written, copied


def _texts_of(art: Artifacts, rows: np.ndarray) -> dict[int, str]:
    out: dict[int, str] = {}
    for sel, table in _take_rows(art, rows, ["text"]):
        out.update(zip(sel.tolist(), table["text"].to_pylist(), strict=True))
    return out


def _report(cfg: Config, ex: ExactGroups, near: NearGroups, stored: np.ndarray,
            lookup: dict[int, dict[str, str]], spec: list[tuple[str, int, list[int]]],
            snippets: dict[int, str], node_of_row: np.ndarray, t0: float) -> tuple[dict[str, Any], dict[str, Any]]:
    p = cfg.dedupe
    n, m = len(ex.label), len(ex.uniq)
    points = int(stored.sum())
    near_dups = int(m - near.is_canon.sum())
    near_ids = np.flatnonzero(near.is_canon & (near.sizes > 1))
    examples = []
    for kind, size, members in spec:
        rep = members[0]
        examples.append({
            "kind": kind, "size": size, "representative": lookup[rep]["chunk_id"], "source": lookup[rep]["source"],
            "example": snippets.get(rep, "")[:SNIPPET_CHARS],
            "members": [
                {"chunk_id": lookup[r]["chunk_id"], "source": lookup[r]["source"],
                 "similarity": round(float(near.sims[node_of_row[r]]), 4) if kind == "near" else 1.0,
                 "text": snippets.get(r, "")[:SNIPPET_CHARS]}
                for r in members[1:]
            ],
        })
    stats: dict[str, Any] = {
        "input_rows": n,
        "unique_texts": m,
        "exact_groups": int((ex.sizes > 1).sum()),
        "exact_removed": n - m,
        "near_groups": len(near_ids),
        "near_duplicates": near_dups,
        "near_removed": near_dups if p.policy is not DuplicatePolicy.keep_canonical else 0,
        "points": points,
        "ratio": round(1 - points / n, 6) if n else 0.0,
        "threshold": p.threshold,
        "policy": str(p.policy),
        "method": near.info.method,
        "nlist": near.info.nlist,
        "nprobe": near.info.nprobe,
        "pairs": near.pairs,
        "pairs_rejected": sum(near.rejected.values()),
        "seconds_search": round(near.seconds, 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    report = {
        # a DVC output: byte-stable, so no timings (they are in the stats)
        **{k: v for k, v in stats.items() if not k.startswith("seconds")},
        "pairs_rejected_by": dict(sorted(near.rejected.items())),
        "exact_sizes": _histogram(ex.sizes),
        "near_sizes": _histogram(near.sizes[near.is_canon]) if m else _histogram(np.zeros(0)),
        "examples": examples,
        "group_sizes_top": dict(Counter(int(s) for s in near.sizes[near_ids]).most_common(10)),
    }
    return stats, report


def run_dedupe(cfg: Config, art: Artifacts) -> dict[str, Any]:
    """chunks + vectors -> deduped/ shards + dedupe_report.json: exact groups, near groups, payloads,
    report (see module doc); returns the flat stats."""
    with tempfile.TemporaryDirectory(prefix="embedline-dedupe-") as tmp:
        return _run(cfg, art, Path(tmp))


def _state_dir(art: Artifacts) -> Path:
    return art.root / "data" / "cache" / "dedupe"


def _state_key(cfg: Config, art: Artifacts) -> dict[str, Any]:
    manifest = read_json(art.manifest) if art.manifest.exists() else {}
    ident = {"fingerprint": str(manifest.get("fingerprint", "")), "model": str(manifest.get("model", ""))}
    return {"params": cfg.dedupe.model_dump(mode="json"), "ident": ident}


def _input_digests(art: Artifacts, old: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per chunk shard: the digests of it and of its vector shard (re-hashed only when the stat moved)."""
    vfiles = vector_files(art.vectors)
    out: dict[str, dict[str, Any]] = {}
    for index, f in source_shards(art.chunks):
        prev = old.get(str(index), {})
        vf = vfiles.get(index)
        out[str(index)] = {"chunks": dstate.digest(f, prev.get("chunks")),
                           "vectors": dstate.digest(vf, prev.get("vectors")) if vf is not None else None}
    for index in set(vfiles) - {int(k) for k in out}:  # a vector shard without chunks: not aligned
        out[f"vectors-only-{index}"] = {"vectors": dstate.digest(vfiles[index], None)}
    return out


def _shas(inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {k: {name: (d or {}).get("sha256") for name, d in v.items()} for k, v in inputs.items()}


def _outputs_intact(art: Artifacts, state: dstate.State) -> bool:
    names = {f.name for f in shards.shard_files(art.deduped)} if art.deduped.is_dir() else set()
    if names != set(state.outputs):
        return False
    if not dstate.same_file(art.dedupe_report, state.report):
        return False
    return all(dstate.same_file(art.deduped / name, rec) for name, rec in state.outputs.items())


def _usable_state(cfg: Config, art: Artifacts, key: dict[str, Any]) -> tuple[dstate.State | None, str]:
    if cfg.run.full_rebuild:
        return None, "run.full_rebuild"
    if cfg.dedupe.lexical:
        return None, "dedupe.lexical (MinHash pairs are searched globally)"
    old = dstate.read_state(_state_dir(art))
    if old is None:
        return None, "no dedupe state"
    if old.key != key:
        return None, "dedupe params or embedding identity changed"
    old.pairs, old.rows = dstate.read_pairs(_state_dir(art)), dstate.read_rows(_state_dir(art))
    if old.pairs is None or old.rows is None:
        return None, "no dedupe pairs"
    return old, ""


def _run(cfg: Config, art: Artifacts, tmp: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    key = _state_key(cfg, art)
    old, why_full = _usable_state(cfg, art, key)
    inputs = _input_digests(art, old.inputs if old else {})
    if old is not None and _shas(inputs) == _shas(old.inputs) and _outputs_intact(art, old):
        # nothing changed: the outputs on disk are what this run would write
        dstate.write_state(_state_dir(art), dstate.State(key, inputs, old.groups, old.outputs, old.report,
                                                         old.non_nodes, old.stats))
        return {**old.stats, "search": "skipped", "skipped": True, "shards_changed": 0, "nodes_searched": 0,
                "deduped_shards_written": 0, "rows_copied": 0, "seconds": round(time.perf_counter() - t0, 3)}
    changed = None
    if old is not None:
        olds, news = _shas(old.inputs), _shas(inputs)
        changed = {k for k in set(olds) | set(news) if olds.get(k) != news.get(k)}
    return _compute(cfg, art, tmp, key, inputs, old, changed, why_full, t0)


def _row_keys(vectors: np.ndarray, span: ShardSpan) -> np.ndarray:
    """Per row of a chunk shard, a 64-bit key of everything its deduped row and its search read:
    the vector bytes and every chunk column that is copied (:func:`embedline.tasks.rowhash.row_keys`:
    column-wise numpy, one row batch at a time)."""
    out = np.empty(span.rows, dtype=np.uint64)
    at = 0
    for batch in pq.ParquetFile(span.file).iter_batches(batch_size=shards.ROW_GROUP_ROWS, columns=_STREAM_COLS):
        lo = span.offset + at
        vecs = np.asarray(gather(vectors, np.arange(lo, lo + batch.num_rows)), dtype=np.float32)
        out[at : at + batch.num_rows] = row_keys(batch, vecs)
        at += batch.num_rows
    return out


@dataclass
class RowKeys:
    """Per global row: its key, and where the previous run's rows state has its chunk id."""

    key: np.ndarray  # uint64
    old_at: np.ndarray  # index into the old rows table, -1 when absent
    same: np.ndarray  # chunk id known with the same key


def _row_state(vectors: np.ndarray, ids: pa.Table, layout: list[ShardSpan], old: pa.Table | None,
               changed: set[str] | None) -> RowKeys:
    n = ids.num_rows
    old_at = np.full(n, -1, dtype=np.int64)
    if old is not None and n:
        at = pc.index_in(ids["chunk_id"], value_set=old["chunk_id"])
        old_at = pc.fill_null(at, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    old_keys = old["key"].to_numpy() if old is not None else np.zeros(0, np.uint64)
    key = np.zeros(n, dtype=np.uint64)
    for span in layout:
        sl = slice(span.offset, span.offset + span.rows)
        if changed is None or old is None or str(span.index) in changed:
            key[sl] = _row_keys(vectors, span)
        else:  # an unchanged shard: same bytes, same keys
            key[sl] = old_keys[old_at[sl]]
    same = (old_at >= 0) & (old_keys[np.maximum(old_at, 0)] == key) if len(old_keys) else np.zeros(n, bool)
    return RowKeys(key, old_at, same)


def _rows_table(chunk_ids: pa.Array, layout: list[ShardSpan], rk: RowKeys, group: np.ndarray) -> pa.Table:
    shard = np.zeros(len(chunk_ids), dtype=np.int32)
    for span in layout:
        shard[span.offset : span.offset + span.rows] = span.index
    table = pa.table({"shard": pa.array(shard), "chunk_id": chunk_ids,
                      "key": pa.array(rk.key), "group": pa.array(group)}, schema=dstate.ROWS_SCHEMA)
    return table.sort_by([("shard", "ascending"), ("chunk_id", "ascending")])


def _prior(old: dstate.State, ids: pa.Table, uniq: np.ndarray, rk: RowKeys) -> Prior:
    """The pairs of ``old`` between nodes that did not change, and the nodes to search anew: rows
    whose chunk id and key are new, and rows that became exact representatives."""
    chunk_ids = ids["chunk_id"].combine_chunks()
    node_ids = chunk_ids.take(pa.array(uniq))
    was_not_node = pc.is_in(node_ids, value_set=pa.array(old.non_nodes, pa.string())).to_numpy(zero_copy_only=False)
    new = ~rk.same[uniq] | was_not_node
    pairs = old.pairs if old.pairs is not None else dstate.pairs_table([], [], np.zeros(0), [])
    ia = pc.index_in(pairs["a"], value_set=node_ids).to_numpy(zero_copy_only=False)
    ib = pc.index_in(pairs["b"], value_set=node_ids).to_numpy(zero_copy_only=False)
    ok = ~(np.isnan(ia) | np.isnan(ib)) if ia.dtype.kind == "f" else np.ones(len(ia), bool)
    ia = np.nan_to_num(ia).astype(np.int64)
    ib = np.nan_to_num(ib).astype(np.int64)
    ok &= ~(new[ia] | new[ib]) if len(ia) else ok
    verdict = pairs["verdict"].to_numpy(zero_copy_only=False)
    cos = pairs["cosine"].to_numpy(zero_copy_only=False)
    lo, hi = np.minimum(ia[ok], ib[ok]), np.maximum(ia[ok], ib[ok])
    return Prior(lo, hi, cos[ok].astype(np.float32), [str(v) for v in verdict[ok]], np.flatnonzero(new))


def _group_digests(layout: list[ShardSpan], stored: np.ndarray, payloads: _Payloads,
                   lookup: dict[int, dict[str, str]]) -> tuple[dict[str, str], np.ndarray]:
    """Per chunk shard, the digest of its grouped rows' duplicate fields (a shard whose inputs and
    digest did not change writes the same deduped shard), and per row a 64-bit hash of them (0 for
    a row in no group: its deduped row depends on its own columns only)."""
    import hashlib

    group = np.zeros(len(stored), dtype=np.uint64)
    rows = np.asarray(sorted(lookup), dtype=np.int64)
    offsets = np.asarray([s.offset for s in layout], dtype=np.int64)
    where = np.searchsorted(offsets, rows, side="right") - 1 if len(layout) else rows
    entries: dict[int, list[tuple[int, Any]]] = {}
    for r, k in zip(rows.tolist(), where.tolist(), strict=True):
        span = layout[k]
        values: list[Any] = [bool(stored[r])]
        if payloads.node_of_row[r] >= 0:
            values.extend(payloads.row(r, lookup[r]))
        entries.setdefault(span.index, []).append((r - span.offset, values))
        h = hashlib.blake2b(json.dumps(values, ensure_ascii=False).encode(), digest_size=8).digest()
        group[r] = int.from_bytes(h, "little") | 1  # never 0
    return {str(s.index): dstate.payload_digest(entries.get(s.index, [])) for s in layout}, group


def _compute(cfg: Config, art: Artifacts, tmp: Path, key: dict[str, Any], inputs: dict[str, dict[str, Any]],
             old: dstate.State | None, changed: set[str] | None, why_full: str, t0: float) -> dict[str, Any]:
    p = cfg.dedupe
    ids, vectors, layout = _load_inputs(art, tmp)
    release_freed()  # the shards decoded to build the inputs: their buffers go back, not into the peak
    t_load = time.perf_counter()
    ident = key["ident"]
    n = ids.num_rows
    rank = np.empty(n, dtype=np.int64)
    rank[pc.sort_indices(ids["chunk_id"]).to_numpy()] = np.arange(n, dtype=np.int64)

    ex = exact_groups(ids, rank)
    uniq = ex.uniq
    rk = _row_state(vectors, ids, layout, old.rows if old else None, changed)
    release_freed()  # the chunk batches the row keys were computed from
    t_keys = time.perf_counter()
    prior = _prior(old, ids, uniq, rk) if old is not None and changed is not None else None
    near, cand = near_groups(cfg, art, vectors, ex, rank, tmp, prior)
    release_freed()  # the search's blocks and the confirmation's texts
    chunk_ids = ids["chunk_id"].combine_chunks()
    node_ids = chunk_ids.take(pa.array(uniq))
    pairs = dstate.pairs_table(node_ids.take(pa.array(cand.i)).to_pylist(), node_ids.take(pa.array(cand.j)).to_pylist(),
                               cand.cosine, cand.verdict)
    non_node = np.ones(n, dtype=bool)
    non_node[uniq] = False
    non_nodes = sorted(chunk_ids.filter(pa.array(non_node)).to_pylist())

    stored_nodes = np.arange(len(uniq)) if p.policy is DuplicatePolicy.keep_canonical else np.flatnonzero(near.is_canon)
    stored = np.zeros(n, dtype=bool)
    stored[uniq[stored_nodes]] = True

    # ids of rows in multi-row groups (the only rows another row's payload refers to)
    grouped = ex.sizes[ex.label] > 1 if n else np.zeros(0, bool)
    grouped[uniq[near.sizes[near.canon] > 1]] = True
    need = np.flatnonzero(grouped)
    picked = ids.select(["chunk_id", "doc_id", "source"]).take(pa.array(need)).to_pylist()
    lookup: dict[int, dict[str, str]] = dict(zip(need.tolist(), picked, strict=True))
    del ids, picked, grouped, need
    linked = uniq[~near.is_canon] if p.policy is DuplicatePolicy.link else np.zeros(0, np.int64)
    payloads = _Payloads(p.policy, ex, near, lookup, _texts_of(art, linked))

    groups, group = _group_digests(layout, stored, payloads, lookup)
    rows_state = _rows_table(chunk_ids, layout, rk, group)
    all_shards = {s.index for s in layout}
    reuse = None
    if old is None or changed is None or old.rows is None:
        dirty = all_shards
    else:
        intact = {i for i in all_shards if _output_matches(art, old, i)}
        dirty = {i for i in all_shards if str(i) in changed or groups[str(i)] != old.groups.get(str(i))
                 or i not in intact}
        old_group = old.rows["group"].to_numpy()
        same = rk.same & (old_group[np.maximum(rk.old_at, 0)] == group) if len(old_group) else rk.same
        reuse = Reuse(same, intact)
    t_write = time.perf_counter()
    written, copied = _write_deduped(art, stored, payloads, ident, layout, dirty, reuse)
    t_write = time.perf_counter() - t_write
    spec = _examples_spec(ex, near)
    snippets = _texts_of(art, np.asarray(sorted({r for _, _, members in spec for r in members}), dtype=np.int64))
    del vectors
    stats, report = _report(cfg, ex, near, stored, lookup, spec, snippets, payloads.node_of_row, t0)
    write_json(art.dedupe_report, report)
    outputs = {}
    for f in shards.shard_files(art.deduped) if art.deduped.is_dir() else []:
        outputs[f.name] = dstate.digest(f, old.outputs.get(f.name) if old and shards.shard_index(f) not in dirty else None)
    recorded = {k: v for k, v in stats.items() if not k.startswith("seconds")}
    dstate.write_state(_state_dir(art), dstate.State(key, inputs, groups, outputs,
                                                     dstate.digest(art.dedupe_report, None), non_nodes, recorded, pairs,
                                                     rows_state))
    stats.update(search="full" if prior is None else "incremental", skipped=False,
                 shards_changed=len(all_shards) if changed is None else len(changed),
                 nodes_searched=cand.searched, deduped_shards_written=written, rows_copied=copied,
                 seconds_load=round(t_load - t0, 3), seconds_keys=round(t_keys - t_load, 3),
                 seconds_write=round(t_write, 3))
    if prior is None:
        stats["full_reason"] = why_full or "inputs"
    return stats


def _output_matches(art: Artifacts, old: dstate.State, index: int) -> bool:
    name = shards.shard_name(index)
    rec = old.outputs.get(name)
    path = art.deduped / name
    return dstate.same_file(path, rec) if rec else not path.exists()
