"""Preprocess + chunk benchmark: throughput next to embedding, and peak memory at 1x vs 10x corpus.

Measured in one run, side by side:

* preprocess+chunk throughput (MB of source per second) on the corpus;
* embed throughput on the *same chunks*: raw ``SentenceTransformer.encode`` of an evenly spaced
  sample of them, extrapolated to all chunks (MB of source per second of embedding);
  ``speed_ratio`` = chunking MB/s / embedding MB/s (target >= 10);
* peak RSS of a fresh process running preprocess+chunk on the corpus replicated 1x and 10x
  (``resource.getrusage`` in the child); ``memory_ratio`` = peak(10x) / peak(1x) (target <= 1.5).
  The child also reports its RSS before the stages ran (interpreter + tokenizer), so growth is visible.

Usage::

    .venv/bin/python benchmarks/bench_chunk.py [--source data/raw] [--scale 10] [--embed-sample 64]
                                               [--out benchmarks/results/chunk.json]

Timings are indicative (shared, noisy machines); nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORK = ROOT / "benchmarks" / "work" / "chunk"


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---- child: one preprocess+chunk run in a fresh process ---------------------------------------------
def child(source: Path, work: Path, params: Path | None) -> dict[str, Any]:
    from embedline.tasks.artifacts import Artifacts
    from embedline.tasks.chunk import make_budget, run_chunk
    from embedline.tasks.config import load_config
    from embedline.tasks.preprocess import run_preprocess

    cfg = load_config(params, {"source": str(source)})
    t0 = time.perf_counter()
    # one-off setup, timed apart like the model load + warm-up on the embedding side: the
    # tokenizer and the sentence splitter (NLTK's import alone is ~1 s)
    make_budget(cfg.chunk, cfg.embed, cfg.preprocess)
    from embedline.tasks.chunkers import sentence_spans

    sentence_spans("Warm up. Dr. Smith arrived.")
    load_s = time.perf_counter() - t0
    baseline = _rss_mb()
    art = Artifacts(work)
    pre = run_preprocess(cfg, art)
    chk = run_chunk(cfg, art)
    return {
        "tokenizer_load_s": round(load_s, 3),
        "rss_before_stages_mb": round(baseline, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "preprocess_s": pre["seconds"],
        "chunk_s": chk["seconds"],
        "bytes_in": pre["bytes_in"],
        "documents": pre["documents"],
        "rejected": pre["rejected"],
        "chunks": chk["chunks"],
        "tokens_total": chk["tokens_total"],
        "tokens_mean": chk["tokens_mean"],
    }


def run_child(source: Path, work: Path, params: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--source", str(source), "--work", str(work)]
    if params is not None:
        cmd += ["--params", str(params)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def replicate(source: Path, dest: Path, times: int) -> Path:
    """``times`` copies of the source tree side by side (symlinks copied as links)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for i in range(times):
        shutil.copytree(source, dest / f"copy{i:03d}", symlinks=True)
    return dest


# ---- embedding the same chunks -----------------------------------------------------------------------
def embed_rate(chunks_path: Path, sample: int, params: Path | None) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    from embedline.tasks.config import load_config
    from embedline.tasks.records import Chunk, iter_records
    from embedline.tasks.tokenize import resolve_model

    cfg = load_config(params)
    texts = [c.embed_text for c in iter_records(chunks_path, Chunk)]
    step = max(1, len(texts) // sample)
    picked = texts[::step][:sample]
    prompt = cfg.embed.passage_prompt
    model = SentenceTransformer(resolve_model(cfg.embed.model), device="cpu")
    model.encode([prompt + t for t in picked[:8]], batch_size=cfg.embed.batch_size)  # warm-up
    t0 = time.perf_counter()
    model.encode([prompt + t for t in picked], batch_size=cfg.embed.batch_size)
    secs = time.perf_counter() - t0
    return {
        "embed_sample": len(picked),
        "embed_sample_s": round(secs, 3),
        "embed_chunks_per_s": round(len(picked) / secs, 2),
        "all_chunks": len(texts),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--source", type=Path, default=ROOT / "data" / "raw")
    ap.add_argument(
        "--params", type=Path, default=None, help="params.yaml (default: project's, if any)"
    )
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--embed-sample", type=int, default=64)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "chunk.json")
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    params = args.params or (ROOT / "params.yaml" if (ROOT / "params.yaml").exists() else None)
    if args.child:
        res = child(args.source.resolve(), args.work, params)
        print(json.dumps(res))
        return res

    source = args.source.resolve()
    one = run_child(replicate(source, args.work / "src1", 1), args.work / "run1", params)
    many = run_child(
        replicate(source, args.work / f"src{args.scale}", args.scale),
        args.work / f"run{args.scale}",
        params,
    )
    emb = embed_rate(
        args.work / "run1" / "data" / "interim" / "chunks", args.embed_sample, params
    )

    mb = one["bytes_in"] / 1e6
    chunk_s = one["preprocess_s"] + one["chunk_s"]
    embed_s = emb["all_chunks"] / emb["embed_chunks_per_s"]
    chunk_mbps, embed_mbps = mb / chunk_s, mb / embed_s
    many_mbps = many["bytes_in"] / 1e6 / (many["preprocess_s"] + many["chunk_s"])
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "source": str(args.source),
        "corpus_mb": round(mb, 4),
        "run_1x": one,
        f"run_{args.scale}x": many,
        "embed": emb,
        "preprocess_chunk_mb_per_s": round(chunk_mbps, 4),
        f"preprocess_chunk_mb_per_s_{args.scale}x": round(many_mbps, 4),
        "embed_mb_per_s": round(embed_mbps, 4),
        "embed_seconds_estimated": round(embed_s, 2),
        "speed_ratio": round(chunk_mbps / embed_mbps, 2),
        # the 1x run pays one-off costs (first imports, tokenizer warm-up); at 10x they are amortised
        f"speed_ratio_{args.scale}x": round(many_mbps / embed_mbps, 2),
        "speed_target": ">= 10",
        "memory_ratio": round(many["peak_rss_mb"] / one["peak_rss_mb"], 3),
        "memory_growth_mb_1x": round(one["peak_rss_mb"] - one["rss_before_stages_mb"], 1),
        f"memory_growth_mb_{args.scale}x": round(
            many["peak_rss_mb"] - many["rss_before_stages_mb"], 1
        ),
        "memory_target": "<= 1.5",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"corpus {mb:.3f} MB, {one['documents']} documents -> {one['chunks']} chunks")
    print(
        f"preprocess+chunk: {chunk_mbps:.3f} MB/s ({chunk_s:.2f} s); {args.scale}x: {many_mbps:.3f} MB/s"
    )
    print(
        f"embed (raw encode, {emb['embed_sample']} sampled chunks): {embed_mbps:.4f} MB/s "
        f"(~{embed_s:.1f} s for all chunks)"
    )
    print(
        f"speed ratio chunk/embed: {result['speed_ratio']:.1f}x (target >= 10); "
        f"{args.scale}x corpus: {result[f'speed_ratio_{args.scale}x']:.1f}x"
    )
    print(
        f"peak RSS 1x {one['peak_rss_mb']:.0f} MB, {args.scale}x {many['peak_rss_mb']:.0f} MB: "
        f"memory ratio {result['memory_ratio']:.2f} (target <= 1.5)"
    )
    print(f"results: {args.out}")
    return result


if __name__ == "__main__":
    main()
