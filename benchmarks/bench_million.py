"""A synthetic N-chunk run (default 1 M) after the chunk stage: embed (fake embedder) -> dedupe ->
upsert (embedded Qdrant Edge) -> an unchanged re-upsert -> verify, each stage in its own child
process, with the wall time and the child's own peak RSS (``os.wait4``) per stage.

The chunk shards are generated directly (``--docs``-many documents of ~10 chunks, short texts so the
pure-Python fake embedder finishes in minutes; 1 % exact copies across documents, 0.5 % one-word
variants), in the chunk stage's format and shard layout, so every later stage runs its real code on
real shard folders. Stages whose outputs exist are skipped unless ``--fresh`` (a long run can be
resumed). Results: ``benchmarks/results/million.json``.

    .venv/bin/python -m benchmarks.bench_million [--chunks 1000000] [--shards 64] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, ROOT, WORK, child_env, stamp, write_result

STAGES = ("embed", "dedupe", "upsert", "upsert_again", "verify")
CHUNKS_PER_DOC = 10
VOCAB = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "ve", "zu") for b in
         ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "x", "z")]


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(VOCAB) + str(rng.randrange(400)) for _ in range(n))


def generate(root: Path, chunks: int, shards: int, seed: int = 0) -> dict[str, Any]:
    """Chunk shards of ``chunks`` chunks (the chunk stage's schema, sort order and shard layout)."""
    import pyarrow as pa

    from embedline.tasks.records import CHUNK_SCHEMA, chunk_id_for, content_hash, doc_id_for
    from embedline.tasks.shards import shard_of, write_shard

    rng = random.Random(seed)
    docs = max(1, chunks // CHUNKS_PER_DOC)
    by_shard: dict[int, list[int]] = {}
    for d in range(docs):
        by_shard.setdefault(shard_of(doc_id_for(f"doc{d:07d}.txt"), shards), []).append(d)
    pool: list[str] = []
    out = root / "data" / "interim" / "chunks"
    copies = variants = 0
    for index in sorted(by_shard):
        cols: dict[str, list[Any]] = {f.name: [] for f in CHUNK_SCHEMA}
        for d in by_shard[index]:
            source = f"doc{d:07d}.txt"
            doc = doc_id_for(source)
            for k in range(CHUNKS_PER_DOC if d < docs - 1 else chunks - CHUNKS_PER_DOC * (docs - 1)):
                roll = rng.random()
                if pool and roll < 0.01:
                    text = rng.choice(pool)
                    copies += 1
                elif pool and roll < 0.015:
                    words = rng.choice(pool).split()
                    words[rng.randrange(len(words))] = rng.choice(VOCAB)
                    text = " ".join(words)
                    variants += 1
                else:
                    text = f"Section {k} of {source}: " + _words(rng, 9)
                    if len(pool) < 50_000:
                        pool.append(text)
                th = content_hash(text)
                row = {"chunk_id": chunk_id_for(doc, th, k), "doc_id": doc, "source": source, "title": source,
                       "text": text, "embed_text": text, "text_hash": th, "chunk_index": k,
                       "char_start": 0, "char_end": len(text), "token_count": len(text.split()),
                       "heading_path": ["Section"], "metadata": "{}"}
                for name, value in row.items():
                    cols[name].append(value)
        write_shard(out, index, pa.table(cols, schema=CHUNK_SCHEMA), ["source", "chunk_index"])
    return {"chunks": chunks, "documents": docs, "shards": len(by_shard), "exact_copies": copies,
            "one_word_variants": variants}


def make_project(root: Path, shards: int, chunks: int) -> None:
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["embed"].update({"provider": "fake", "cache_path": "data/cache/embeddings.sqlite"})
    params["run"] = {**params.get("run", {}), "shards": shards}
    # vectors on disk (memory-mapped): what a set of this size on a 2 GiB budget is configured with.
    # index_threshold above the chunk count: the upsert stage is timed without Edge's HNSW build
    # (EdgeShard.optimize, the store's own job: ~60 s per 100 k points on 2 cores and superlinear;
    # below the threshold searches are exact). Set it back to measure the index build separately.
    params["qdrant"].update({"backend": "edge", "path": "data/qdrant", "url": None, "on_disk": True,
                             "index_threshold": max(int(params["qdrant"].get("index_threshold", 0)), 2 * chunks)})
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def child(root: Path, stage: str) -> None:
    """One stage in this process; prints its stats as JSON."""
    from embedline.tasks.artifacts import Artifacts
    from embedline.tasks.config import load_config
    from embedline.tasks.pipeline import run_stage

    cfg, art = load_config(root / "params.yaml"), Artifacts(root)
    if stage == "verify":
        from embedline.tasks.vectorsets.verify import verify

        report = verify(cfg, art)
        stats: dict[str, Any] = {k: v for k, v in report.summary().items() if not isinstance(v, dict | list)}
    else:
        name = "upsert" if stage == "upsert_again" else stage
        stats = run_stage(name, cfg, art, **({"allow_mass_delete": True} if name == "upsert" else {}))
    print(json.dumps({k: v for k, v in stats.items() if isinstance(v, int | float | str | bool) or v is None}))


def run_child(root: Path, stage: str, log: Path) -> dict[str, Any]:
    """A stage in a child process: wall seconds, the child's own peak RSS and CPU seconds."""
    t0 = time.perf_counter()
    with log.open("a") as err:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_million", "--child", stage, str(root)],
                                stdout=subprocess.PIPE, stderr=err, env=child_env(), text=True, cwd=ROOT)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"stage {stage} failed: see {log}")
    stats = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    return {"wall_seconds": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2), "loadavg_1m": round(os.getloadavg()[0], 2),
            "stats": stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--chunks", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=64)
    ap.add_argument("--fresh", action="store_true", help="start over (delete the work folder)")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--child", nargs=2, metavar=("STAGE", "ROOT"))
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[1]), args.child[0])
        return
    root = WORK / f"million-{args.chunks}"
    result_path = RESULTS / ("million.json" if args.chunks == 1_000_000 else f"million-{args.chunks}.json")
    if args.fresh and root.exists():
        shutil.rmtree(root)
    doc: dict[str, Any] = json.loads(result_path.read_text()) if result_path.exists() and not args.fresh else {}
    doc.setdefault("stages", {})
    log = root / "stderr.log"
    if not (root / "data" / "interim" / "chunks").exists():
        make_project(root, args.shards, args.chunks)
        t0 = time.perf_counter()
        doc["corpus"] = {**generate(root, args.chunks, args.shards), "seconds": round(time.perf_counter() - t0, 1)}
        doc["stages"] = {}
    for stage in args.stages.split(","):
        if stage in doc["stages"] and not args.fresh:
            continue
        print(f"{stage} ...", flush=True)
        doc["stages"][stage] = run_child(root, stage, log)
        doc["peak_rss_mib"] = max(s["peak_rss_mib"] for s in doc["stages"].values())
        doc["wall_seconds"] = round(sum(s["wall_seconds"] for s in doc["stages"].values()), 1)
        write_result(result_path, stamp(doc))
        print(stage, json.dumps({k: v for k, v in doc["stages"][stage].items() if k != "stats"}), flush=True)


if __name__ == "__main__":
    main()
