"""Dedupe stage time, peak RSS and near-duplicate pair recall on synthetic 384-d vectors.

    .venv/bin/python benchmarks/bench_dedupe.py            # 100 k and 1 M rows (targets: 1 M <= 10 min, <= 4 GiB)
    .venv/bin/python benchmarks/bench_dedupe.py --quick    # 20 k and 100 k rows

Each size runs the real stage (:func:`embedline.tasks.dedupe.run_dedupe`, ``method=auto``: exact blocked search
up to ``dedupe.exact_max_rows``, IVF range search above) in a fresh subprocess, so its peak RSS is
its own. The data: vectors around 2,000 cluster centres (realistic anisotropy: random pairs in a
cluster have cosine ~0.35), 4 % of rows planted as near-copies (cosine 0.96-0.995 to their
original, groups of 2-5), 1 % exact copies (same text). Recall/precision are over planted pairs.
Results: benchmarks/results/dedupe.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import stamp, write_result  # noqa: E402
from embedline.tasks.records import CHUNK_SCHEMA, chunk_id_for, content_hash, doc_id_for, write_json  # noqa: E402
from embedline.tasks.shards import shard_files, shard_index, shard_name  # noqa: E402
from embedline.tasks.vector_shards import write_vector_shard  # noqa: E402

DIMS = 384
THRESHOLD = 0.95


BLOCK = 100_000  # rows per chunk / vector shard

def _unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_dataset(root: Path, n: int, seed: int = 0) -> dict[str, Any]:
    """Write chunk shards, vector shards (``BLOCK`` rows each, in row order) and manifest.json;
    return the planted truth."""
    rng = np.random.default_rng(seed)
    n_near = int(n * 0.04)
    n_exact = int(n * 0.01)
    n_base = n - n_near - n_exact
    interim, emb = root / "data" / "interim", root / "data" / "embeddings"
    interim.mkdir(parents=True, exist_ok=True)
    emb.mkdir(parents=True, exist_ok=True)
    vectors = np.lib.format.open_memmap(root / "vectors.tmp.npy", mode="w+", dtype=np.float32, shape=(n, DIMS))
    centres = _unit_rows(rng.standard_normal((2000, DIMS)).astype(np.float32))
    block = BLOCK
    for s in range(0, n_base, block):
        e = min(n_base, s + block)
        c = centres[rng.integers(0, len(centres), e - s)]
        vectors[s:e] = _unit_rows(0.6 * c + 0.8 * _unit_rows(rng.standard_normal((e - s, DIMS)).astype(np.float32)))
    # near copies: groups of 1-4 copies around distinct originals
    group_of = np.full(n, -1, dtype=np.int64)
    originals = rng.choice(n_base, size=n_near, replace=False)
    row = n_base
    g = 0
    k = 0
    while row < n_base + n_near:
        size = min(int(rng.integers(1, 5)), n_base + n_near - row)
        orig = int(originals[k])
        k += 1
        group_of[orig] = g
        base = np.asarray(vectors[orig])
        for _ in range(size):
            noise = rng.standard_normal(DIMS).astype(np.float32)
            noise -= noise.dot(base) * base
            noise /= np.linalg.norm(noise)
            cos = rng.uniform(0.96, 0.995)
            vectors[row] = cos * base + np.sqrt(1 - cos**2) * noise
            group_of[row] = g
            row += 1
        g += 1
    exact_src = rng.choice(n_base, size=n_exact, replace=False)
    vectors[n_base + n_near :] = vectors[exact_src]
    group_of[n_base + n_near :] = group_of[exact_src]  # an exact copy belongs to its original's group
    vectors.flush()
    text_of = np.arange(n, dtype=np.int64)
    text_of[n_base + n_near :] = exact_src
    for s in range(0, n, block):
        rows = []
        for i in range(s, min(n, s + block)):
            text = f"synthetic chunk {int(text_of[i])}"
            doc = doc_id_for(f"doc{i // 10}.txt")
            th = content_hash(text)
            rows.append({
                "chunk_id": chunk_id_for(doc, th, i % 10), "doc_id": doc, "source": f"doc{i // 10}.txt",
                "title": "", "text": text, "embed_text": text, "text_hash": th, "chunk_index": i % 10,
                "char_start": 0, "char_end": len(text), "token_count": 4, "heading_path": [], "metadata": "{}",
            })
        (interim / "chunks").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=CHUNK_SCHEMA), interim / "chunks" / shard_name(s // block),
                       compression="zstd")
        write_vector_shard(emb / "vectors", s // block, [r["chunk_id"] for r in rows],
                           np.asarray(vectors[s : s + len(rows)]), {})
    del vectors
    (root / "vectors.tmp.npy").unlink()
    write_json(emb / "manifest.json", {"fingerprint": "bench", "dims": DIMS, "model": "synthetic", "provider": "none"})
    np.save(root / "group_of.npy", group_of)
    return {"rows": n, "near_copies": n_near, "exact_copies": n_exact, "groups": g}


def _pairs(sizes: np.ndarray) -> int:
    return int((sizes * (sizes - 1) // 2).sum())


def score(root: Path) -> dict[str, float]:
    """Pair recall/precision of planted near-dup groups, from canonical_id (keep_canonical)."""
    parts = []
    for f in shard_files(root / "data" / "interim" / "deduped"):  # row = row in its shard of BLOCK rows
        part = pq.read_table(f, columns=["row", "canonical_id"])
        parts.append(part.set_column(0, "row", pa.array(part["row"].to_numpy() + BLOCK * shard_index(f))))
    t = pa.concat_tables(parts)
    rows = t["row"].to_numpy()
    canon = t["canonical_id"].dictionary_encode().combine_chunks().indices.to_numpy().astype(np.int64)
    group = np.load(root / "group_of.npy")[rows]
    planted = group >= 0
    truth = _pairs(np.bincount(group[planted]))
    # pairs sharing both the planted group and the canonical
    key = group[planted] * (canon.max() + 1) + canon[planted]
    _, both = np.unique(key, return_counts=True)
    tp = _pairs(both)
    _, pred_sizes = np.unique(canon, return_counts=True)
    predicted = _pairs(pred_sizes)
    return {
        "pair_recall": round(tp / truth, 5) if truth else 1.0,
        "pair_precision": round(tp / predicted, 5) if predicted else 1.0,
        "planted_pairs": truth,
        "found_pairs": predicted,
    }


def worker(root: Path, method: str) -> None:
    from embedline.tasks.artifacts import Artifacts
    from embedline.tasks.config import load_config
    from embedline.tasks.dedupe import run_dedupe

    # texts are placeholders here ("synthetic chunk i"): the vector search is measured, not the text check
    cfg = load_config(None, {"dedupe.policy": "keep_canonical", "dedupe.threshold": THRESHOLD, "dedupe.confirm_text": False,
                             "dedupe.method": method})
    t0 = time.perf_counter()
    stats = run_dedupe(cfg, Artifacts(root))
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    print(json.dumps({"stats": stats, "seconds": round(wall, 2), "peak_rss_mib": round(peak, 1)}))


def _child(*args: str) -> str:
    out = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{args[0]} failed:\n{out.stderr[-4000:]}")
    return out.stdout.strip().splitlines()[-1]


def run_size(n: int, method: str) -> dict[str, Any]:
    """Generate in one subprocess, dedupe in another: this process stays small, so the worker's
    peak RSS (Linux keeps ru_maxrss across fork+exec) is its own."""
    with tempfile.TemporaryDirectory(prefix=f"bench-dedupe-{n}-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        planted = json.loads(_child("--generate", str(root), "--rows", str(n)))
        gen = time.perf_counter() - t0
        res = json.loads(_child("--worker", str(root), "--method", method))
        res.update(score(root))
        res.update(planted=planted, generate_seconds=round(gen, 1), rows=n)
        return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 k and 100 k rows instead of 100 k and 1 M")
    ap.add_argument("--sizes", type=int, nargs="*", help="explicit sizes")
    ap.add_argument("--method", default="auto", choices=["auto", "exact", "ivf"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dedupe.json")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.method)
        return
    if args.generate:
        print(json.dumps(make_dataset(args.generate, args.rows)))
        return
    sizes = args.sizes or ([20_000, 100_000] if args.quick else [100_000, 1_000_000])
    results = []
    for n in sizes:
        r = run_size(n, args.method)
        s = r["stats"]
        print(f"n={n:>9,}: {r['seconds']:7.1f} s  peak {r['peak_rss_mib']:7.0f} MiB  method={s['method']} "
              f"nlist={s['nlist']} nprobe={s['nprobe']}  recall={r['pair_recall']:.4f} "
              f"precision={r['pair_precision']:.4f}", flush=True)
        results.append(r)
    doc = {
        "benchmark": "dedupe",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "dims": DIMS,
        "threshold": THRESHOLD,
        "quick": args.quick,
        "targets": {"1M_seconds": 600, "1M_peak_rss_mib": 4096},
        "results": results,
    }
    big = [r for r in results if r["rows"] >= 1_000_000]
    if big:
        doc["meets_targets"] = all(r["seconds"] <= 600 and r["peak_rss_mib"] <= 4096 for r in big)
    write_result(args.out, stamp(doc))  # run id and date: the README table names the run
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
