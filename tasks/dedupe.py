"""The dedupe stage: chunks.parquet + vectors.npy -> deduped.parquet + dedupe_report.json.

1. **Exact**: rows with the same ``text_hash`` (hash of the normalised embed text) collapse to one
   record, represented by the row with the smallest ``chunk_id``. Its ``sources`` lists every
   (source, doc_id, chunk_id) holding that text, so no provenance is lost. Always applied.
2. **Near**: among the exact representatives, vectors with cosine >= ``dedupe.threshold`` are joined
   (range search, :mod:`embedline.tasks.neardup`; single linkage over the pairs, i.e. union-find), and each
   group is represented by its member with the smallest ``chunk_id``: deterministic, independent of
   row order and of the search engine. ``dedupe.lexical`` adds MinHash (word 3-gram Jaccard >=
   ``dedupe.lexical_threshold``) pairs to the same groups.

:class:`~embedline.tasks.config.DuplicatePolicy` decides what the near-duplicates become:

- ``drop``: only representatives are stored; ``duplicates`` on the representative lists the
  dropped chunk ids with their cosine to it. ``sources`` keeps exact provenance only.
- ``link`` (default): only representatives are stored; ``duplicates`` lists each near-duplicate
  (chunk_id, doc_id, source, similarity) and ``sources`` also carries the near-duplicates'
  provenance (``match: "near"``), so a document whose chunk was absorbed can still be traced.
- ``keep_canonical``: every exact representative is stored; near-duplicates carry
  ``is_duplicate: true`` and ``canonical_id`` (the representative's chunk id), the representative
  lists them in ``duplicates``. Search can filter ``is_duplicate`` out or keep it.

``canonical_id`` is the chunk id of the group representative (a representative's own id for
itself); ``row`` indexes vectors.npy. Memory: only id/hash columns are held in full; text is
streamed in batches; the vector search holds one faiss index plus a block.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedline.tasks import progress, shards
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, DuplicatePolicy
from embedline.tasks.neardup import (
    Components,
    lexical_pairs,
    normalized,
    range_pairs,
    representatives,
)
from embedline.tasks.records import point_id_for, read_json, write_json

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
    ]
)
_STREAM_COLS = ["chunk_id", "doc_id", "source", "text", "title", "chunk_index", "heading_path", "char_start", "char_end",
                "token_count", "text_hash", "metadata"]


class DedupeInputError(ValueError):
    """chunks.parquet, vectors.npy and manifest.json do not agree."""


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


def _load_inputs(art: Artifacts) -> tuple[pa.Table, np.ndarray]:
    ids = shards.read_table(art.chunks, columns=["chunk_id", "doc_id", "source", "text_hash"])
    vectors = np.load(art.vectors, mmap_mode="r")
    manifest = read_json(art.manifest)
    n = ids.num_rows
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise DedupeInputError(
            f"{art.vectors} has shape {vectors.shape} but {art.chunks} has {n} rows: "
            "vectors must align row-for-row with chunks (re-run the embed stage)"
        )
    dims = manifest.get("dims")
    if n and dims is not None and int(dims) != vectors.shape[1]:
        raise DedupeInputError(f"{art.manifest} says dims={dims} but {art.vectors} has {vectors.shape[1]}")
    if pc.count_distinct(ids["chunk_id"]).as_py() != n:
        raise DedupeInputError(f"{art.chunks} has repeated chunk_id values; chunk ids must be unique")
    return ids, vectors


def _similarities(vectors: np.ndarray, rows: np.ndarray, canon_rows: np.ndarray, block: int) -> np.ndarray:
    sims = np.ones(len(rows), dtype=np.float32)
    todo = np.flatnonzero(rows != canon_rows)
    for s in range(0, len(todo), block):
        sel = todo[s : s + block]
        a = normalized(vectors[rows[sel]])
        b = normalized(vectors[canon_rows[sel]])
        sims[sel] = np.einsum("ij,ij->i", a, b)
    return sims


def run_dedupe(cfg: Config, art: Artifacts) -> dict[str, Any]:  # noqa: C901 being split by the `quality` branch (exact groups, near groups, payloads, report)
    t0 = time.perf_counter()
    p = cfg.dedupe
    ids, vectors = _load_inputs(art)
    n = ids.num_rows
    rank = np.empty(n, dtype=np.int64)
    rank[pc.sort_indices(ids["chunk_id"]).to_numpy()] = np.arange(n, dtype=np.int64)

    # 1. exact: one representative row per text_hash (smallest chunk_id)
    enc = pc.dictionary_encode(ids["text_hash"].combine_chunks()) if n else None
    exact_label = enc.indices.to_numpy().astype(np.int64) if enc is not None else np.zeros(0, np.int64)
    n_exact = len(enc.dictionary) if enc is not None else 0
    exact_rep = representatives(exact_label, rank) if n else exact_label
    uniq = np.flatnonzero(exact_rep == np.arange(n))
    m = len(uniq)
    ex_perm, ex_starts = _csr(exact_label, rank, n_exact)
    exact_sizes = np.diff(ex_starts)

    # 2. near: range search among unique texts (+ optional lexical pairs), grouped deterministically
    t_search = time.perf_counter()
    pairs, info = range_pairs(
        vectors, p.threshold, rows=uniq, method=p.method, exact_max_rows=p.exact_max_rows,
        block=p.block_rows, nlist=p.ivf_nlist, nprobe=p.ivf_nprobe,
    )
    comps = Components(m)
    with progress.track("dedupe", unit="block") as bar:
        for i, j in progress.counted(pairs, bar):
            comps.add(i, j)
    if p.lexical and m > 1:
        texts = shards.read_table(art.chunks, columns=["embed_text"])["embed_text"].take(pa.array(uniq))
        comps.add(*lexical_pairs(texts.to_pylist(), p.lexical_threshold))
    canon_node = representatives(comps.labels(), rank[uniq]) if m else np.zeros(0, np.int64)
    seconds_search = time.perf_counter() - t_search
    canon_row = uniq[canon_node]
    sims = _similarities(vectors, uniq, canon_row, p.block_rows)
    is_canon = canon_node == np.arange(m)
    near_perm, near_starts = _csr(canon_node, rank[uniq], m)
    near_sizes = np.diff(near_starts)

    stored_nodes = np.arange(m) if p.policy is DuplicatePolicy.keep_canonical else np.flatnonzero(is_canon)
    stored = np.zeros(n, dtype=bool)
    stored[uniq[stored_nodes]] = True
    node_of_row = np.full(n, -1, dtype=np.int64)
    node_of_row[uniq] = np.arange(m)

    # ids of rows in multi-row groups (the only rows another row's payload refers to)
    grouped = exact_sizes[exact_label] > 1 if n else np.zeros(0, bool)
    grouped[uniq[near_sizes[canon_node] > 1]] = True
    need = np.flatnonzero(grouped)
    picked = ids.select(["chunk_id", "doc_id", "source"]).take(pa.array(need)).to_pylist()
    lookup: dict[int, dict[str, str]] = dict(zip(need.tolist(), picked, strict=True))
    del ids, picked, grouped, need

    def ident(r: int, current: dict[str, str]) -> dict[str, str]:
        return lookup.get(r) or current

    def exact_sources(row: int, current: dict[str, str], match: str = "exact", sim: float = 1.0) -> list[dict[str, Any]]:
        lab = exact_label[row]
        return [
            {**ident(int(r), current), "match": match, "similarity": round(sim, 6)}
            for r in ex_perm[ex_starts[lab] : ex_starts[lab + 1]]
        ]

    def payload_json(row: int, current: dict[str, str]) -> tuple[str, str, bool, str]:
        node = int(node_of_row[row])
        canon = int(canon_node[node])
        srcs = exact_sources(row, current)
        dups: list[dict[str, Any]] = []
        if canon == node:
            for u in near_perm[near_starts[node] : near_starts[node + 1]]:
                if u == node:
                    continue
                r, s = int(uniq[u]), float(sims[u])
                other = lookup[r]
                d: dict[str, Any] = {"chunk_id": other["chunk_id"], "similarity": round(s, 6)}
                if p.policy is DuplicatePolicy.link:
                    d.update(doc_id=other["doc_id"], source=other["source"])
                    srcs.extend(exact_sources(r, other, "near", s))
                dups.append(d)
        dumps = json.dumps
        return (dumps(srcs, ensure_ascii=False), dumps(dups, ensure_ascii=False), canon != node,
                ident(int(uniq[canon]), current)["chunk_id"])

    # report examples: the largest groups (near first by size, then exact), rows whose text we need
    near_groups = np.flatnonzero(is_canon & (near_sizes > 1))
    exact_groups = np.flatnonzero(exact_sizes > 1)
    candidates = [("near", int(c), int(near_sizes[c])) for c in near_groups]
    candidates += [("exact", int(g), int(exact_sizes[g])) for g in exact_groups]
    candidates.sort(key=lambda t: (-t[2], t[0] != "near", t[1]))
    examples_spec = []
    want_text: set[int] = set()
    for kind, key, size in candidates[:MAX_EXAMPLES]:
        if kind == "near":
            members = [int(uniq[u]) for u in near_perm[near_starts[key] : near_starts[key + 1]]]
        else:
            members = [int(r) for r in ex_perm[ex_starts[key] : ex_starts[key + 1]]]
        members = members[: MAX_EXAMPLE_MEMBERS + 1]
        examples_spec.append((kind, size, members))
        want_text.update(members)
    snippets: dict[int, str] = {}

    # 3. stream chunks once more, writing the stored rows
    tmp = art.deduped.with_suffix(".parquet.tmp")
    art.deduped.parent.mkdir(parents=True, exist_ok=True)
    writer = pq.ParquetWriter(tmp, DEDUPED_SCHEMA, compression="zstd")
    try:
        offset = 0
        for batch in shards.iter_batches(art.chunks, columns=_STREAM_COLS, batch_rows=4096):
            cols = batch.to_pydict()
            rows_out: list[dict[str, Any]] = []
            for k in range(batch.num_rows):
                row = offset + k
                if row in want_text:
                    snippets[row] = cols["text"][k]
                if not stored[row]:
                    continue
                current = {"chunk_id": cols["chunk_id"][k], "doc_id": cols["doc_id"][k], "source": cols["source"][k]}
                srcs, dups, is_dup, canonical = payload_json(row, current)
                rows_out.append({
                    "point_id": point_id_for(cols["chunk_id"][k]), "row": row, "sources": srcs,
                    "duplicates": dups, "is_duplicate": is_dup, "canonical_id": canonical,
                    **{c: cols[c][k] for c in _STREAM_COLS},
                })
            if rows_out:
                writer.write_table(pa.Table.from_pylist(rows_out, schema=DEDUPED_SCHEMA))
            offset += batch.num_rows
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, art.deduped)

    points = int(stored.sum())
    near_dups = int(m - is_canon.sum())
    near_removed = near_dups if p.policy is not DuplicatePolicy.keep_canonical else 0
    examples = []
    for kind, size, members in examples_spec:
        rep = members[0]
        examples.append({
            "kind": kind, "size": size, "representative": lookup[rep]["chunk_id"], "source": lookup[rep]["source"],
            "example": snippets.get(rep, "")[:SNIPPET_CHARS],
            "members": [
                {"chunk_id": lookup[r]["chunk_id"], "source": lookup[r]["source"],
                 "similarity": round(float(sims[node_of_row[r]]), 4) if kind == "near" else 1.0,
                 "text": snippets.get(r, "")[:SNIPPET_CHARS]}
                for r in members[1:]
            ],
        })
    stats: dict[str, Any] = {
        "input_rows": n,
        "unique_texts": m,
        "exact_groups": len(exact_groups),
        "exact_removed": n - m,
        "near_groups": len(near_groups),
        "near_duplicates": near_dups,
        "near_removed": near_removed,
        "points": points,
        "ratio": round(1 - points / n, 6) if n else 0.0,
        "threshold": p.threshold,
        "policy": str(p.policy),
        "method": info.method,
        "nlist": info.nlist,
        "nprobe": info.nprobe,
        "pairs": comps.edges_seen,
        "seconds_search": round(seconds_search, 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    report = {  # a DVC output: byte-stable, so no timings (they are in the stats, a metric)
        **{k: v for k, v in stats.items() if not k.startswith("seconds")},
        "exact_sizes": _histogram(exact_sizes),
        "near_sizes": _histogram(near_sizes[is_canon]) if m else _histogram(np.zeros(0)),
        "examples": examples,
        "group_sizes_top": dict(Counter(int(s) for s in near_sizes[near_groups]).most_common(10)),
    }
    write_json(art.dedupe_report, report)
    return stats
