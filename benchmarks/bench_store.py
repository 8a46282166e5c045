"""Embedded-store upsert throughput, search latency and reopen time: Qdrant Edge vs qdrant-client local.

    .venv/bin/python benchmarks/bench_store.py           # edge 100 k, local 10 k points × 384-d (target edge >= 5,000 points/s)
    .venv/bin/python benchmarks/bench_store.py --quick   # edge 10 k, local 2 k

Points carry ~0.8 KB payloads (text, source, doc_id, ...) and go through the stage's own batching
(:func:`embedline.tasks.vectorsets.lifecycle.write_points`, ``qdrant.batch_points``/``batch_mb``). qdrant-client's local mode
is run on fewer points because it is slow (it warns above 20 k points). Edge's HNSW build
(``optimize()``) is timed separately (``--optimize``; ~1 min per 100 k points).
Results: benchmarks/results/store.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedline.tasks.config import load_config  # noqa: E402
from embedline.tasks.vectorsets.lifecycle import write_points  # noqa: E402
from embedline.tasks.vectorsets.stores import PointRecord, VectorSetSpec, close_stores, open_store  # noqa: E402

DIMS = 384
TARGET = 5_000


def points(n: int, seed: int = 0) -> tuple[list[PointRecord], np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, DIMS)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    filler = "lorem ipsum dolor sit amet consectetur adipiscing elit " * 13  # ~700 chars
    pts = [
        PointRecord(
            id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"bench-{i}")),
            vector=vecs[i],
            payload={"text": filler, "source": f"docs/file{i // 20}.md", "doc_id": f"d{i // 20}",
                     "chunk_id": f"c{i}", "chunk_index": i % 20, "fingerprint": "bench", "payload_hash": f"{i:016x}"},
        )
        for i in range(n)
    ]
    return pts, vecs


def bench(backend: str, n: int, optimize: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"bench-store-{backend}-"))
    try:
        cfg = load_config(None, {"qdrant.backend": backend, "qdrant.path": str(work / "q")})
        store = open_store(cfg.qdrant, work)
        pts, vecs = points(n)
        store.ensure(VectorSetSpec(name="bench", dims=DIMS, metadata={"fingerprint": "bench"}))
        t0 = time.perf_counter()
        written = write_points(store, "bench", pts, params=cfg.qdrant, dims=DIMS)
        upsert_s = time.perf_counter() - t0
        assert written == n and store.count("bench") == n
        rng = np.random.default_rng(1)
        queries = vecs[rng.choice(n, 20, replace=False)]

        def latency(flt: dict[str, Any] | None = None) -> float:
            times = []
            for q in queries:
                t = time.perf_counter()
                store.search("bench", q, k=10, filter=flt)
                times.append(time.perf_counter() - t)
            return round(statistics.median(times) * 1000, 2)

        res: dict[str, Any] = {
            "backend": backend, "points": n, "upsert_seconds": round(upsert_s, 2),
            "points_per_second": round(n / upsert_s, 1), "search_ms_median": latency(),
            "filtered_search_ms_median": latency({"doc_id": "d7"}),
        }
        if optimize and backend == "edge":
            t = time.perf_counter()
            store.optimize("bench")
            res["optimize_seconds"] = round(time.perf_counter() - t, 2)
            res["search_ms_after_optimize"] = latency()
        close_stores()
        t = time.perf_counter()
        store = open_store(cfg.qdrant, work)
        assert store.count("bench") == n
        res["reopen_seconds"] = round(time.perf_counter() - t, 3)
        close_stores()
        return res
    finally:
        close_stores()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="edge 10 k and local 2 k points")
    ap.add_argument("--edge-n", type=int)
    ap.add_argument("--local-n", type=int)
    ap.add_argument("--optimize", action="store_true", help="also time Edge's HNSW build")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "store.json")
    args = ap.parse_args()
    edge_n = args.edge_n or (10_000 if args.quick else 100_000)
    local_n = args.local_n or (2_000 if args.quick else 10_000)
    results = []
    for backend, n in (("edge", edge_n), ("local", local_n)):
        r = bench(backend, n, args.optimize)
        print(f"{backend:>5}: {n:>7,} points  {r['points_per_second']:>9,.0f} points/s  "
              f"search {r['search_ms_median']} ms (filtered {r['filtered_search_ms_median']} ms)  "
              f"reopen {r['reopen_seconds']} s", flush=True)
        results.append(r)
    edge = results[0]
    doc = {
        "benchmark": "store",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "dims": DIMS,
        "quick": args.quick,
        "target_points_per_second": TARGET,
        "edge_meets_target": edge["points_per_second"] >= TARGET,
        "edge_vs_local_speedup": round(edge["points_per_second"] / results[1]["points_per_second"], 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
