"""The ingest pipeline on the sample corpus: per-stage throughput, end-to-end vs raw encode, re-runs,
peak RSS at 1x and Nx corpus. Every figure comes from one invocation, each ingest in a fresh process.

Measured, in this order:

1. **first run, 1x** (fresh work dir, empty embedding cache and store): tokenizer and model are loaded
   first (timed as ``setup``), then the five stages run as ``embedline stage`` runs them
   (:func:`embedline.tasks.pipeline.run_stage`). Per-stage throughput = stage input / stage seconds.
2. **raw encode** of the same unique chunk texts with ``SentenceTransformer.encode`` in a fresh process
   (model load and encode timed apart, same batch size, normalised, no warm-up for either side).
   ``embed_stage_vs_raw_encode`` = pipeline embed texts/s / raw encode texts/s (issue 4 target >= 0.90);
   ``ingest_vs_raw_encode`` = chunks per second of the whole ingest (setup + five stages) / chunks per
   second of raw load + encode: what the rest of the pipeline costs on top of the model.
3. **no-change re-run** (same source, cache and store) and **1 %-changed re-run** (``~1 %`` of the
   documents of the temp copy edited: one line reworded, one sentence appended) as fresh processes;
   ratios = re-run seconds / first-run seconds (issue 4 target for no-change <= 0.05).
4. **Nx corpus** (default 10x): the corpus copied N times, every copy but the first with a tag woven
   into its lines (``benchmarks.common.replicate``) so the copies' chunks are new texts: the cache and
   exact dedupe cannot collapse them, embed pays N times; ``dedupe.policy=keep_canonical`` (all runs)
   stores every unique chunk although the copies are near-duplicates. First run, no-change and
   1 %-changed re-runs.
   ``peak_rss_ratio`` = peak RSS of the Nx first run / the 1x first run.

Usage::

    .venv/bin/python -m benchmarks.bench_ingest [--scale 10] [--quick] [--out benchmarks/results/ingest.json]

Timings are indicative (shared, noisy machines); nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    ROOT,
    WORK,
    change_fraction,
    child_env,
    module_cmd,
    peak_rss_mib,
    replicate,
    run_json,
    stamp,
    write_result,
)

MODULE = "benchmarks.bench_ingest"
# The copies of the Nx corpus are near-duplicates of each other by construction (a tag per line), so the
# default policy (link: store only representatives) would store ~1x points; keep_canonical stores every
# unique chunk and links near-duplicates, so every stage, upsert included, works on Nx. Applied to the 1x
# runs too, so 1x and Nx are like for like (on the sample corpus it stores 9 more points than `link`).
OVERRIDES = ["dedupe.policy=keep_canonical"]
STAGE_KEYS = {
    "preprocess": ("documents", "files", "rejected", "bytes_in"),
    "chunk": ("chunks", "documents", "tokens_total"),
    "embed": ("rows", "unique_texts", "cache_hits", "texts_embedded", "backend", "precision"),
    "dedupe": ("input_rows", "points", "exact_removed", "near_duplicates", "method"),
    "upsert": ("added", "updated", "deleted", "unchanged", "points_total", "backend"),
}


# ---- children ----------------------------------------------------------------------------------------
def child_ingest(source: Path, work: Path, preload: bool, overrides: list[str] | None = None) -> dict[str, Any]:
    """One ingest (five stages) in this fresh process; ``overrides`` as ``--set section.key=value``."""
    import json

    from embedline.tasks.artifacts import Artifacts
    from embedline.tasks.config import load_config
    from embedline.tasks.pipeline import INGEST_STAGES, run_stage, warm_later

    import_rss = peak_rss_mib()
    cfg = load_config(ROOT / "params.yaml", [f"source={json.dumps(str(source))}", *(overrides or [])])
    art = Artifacts(work)
    t0 = time.perf_counter()
    setup: dict[str, float] = {}
    if preload:  # what a first run pays once: tokenizer + model weights, timed apart from the stages
        from embedline.tasks.chunk import make_budget
        from embedline.tasks.embed import get_embedder

        t = time.perf_counter()
        make_budget(cfg.chunk, cfg.embed, cfg.preprocess)
        setup["tokenizer_load_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        get_embedder(cfg.embed).embed(["warm"])
        setup["model_load_s"] = round(time.perf_counter() - t, 3)
    stages: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(INGEST_STAGES):  # as `embedline ingest` runs them in-process (run_inprocess)
        t = time.perf_counter()
        imported = warm_later(name, INGEST_STAGES[i + 1 :], cfg)
        stats = run_stage(name, cfg, art)
        imported()
        wall = time.perf_counter() - t
        keep = {k: stats[k] for k in STAGE_KEYS.get(name, ()) if k in stats}
        stages[name] = {"seconds": round(wall, 3), **keep}
    total = time.perf_counter() - t0
    res = {"seconds": round(total, 3), "setup": setup, "stages": stages,
           "peak_rss_mib": peak_rss_mib(), "rss_after_imports_mib": import_rss}
    print(json.dumps(res))
    return res


def child_encode(chunks: Path, batch_size: int) -> dict[str, Any]:
    """Raw ``SentenceTransformer.encode`` of the unique embed texts of ``chunks``."""
    import json

    from sentence_transformers import SentenceTransformer

    from embedline.tasks.config import load_config
    from embedline.tasks.records import Chunk, iter_records
    from embedline.tasks.tokenize import resolve_model

    cfg = load_config(ROOT / "params.yaml")
    texts = list(dict.fromkeys(cfg.embed.passage_prompt + c.embed_text for c in iter_records(chunks, Chunk)))
    t = time.perf_counter()
    model = SentenceTransformer(str(resolve_model(cfg.embed.model)), device="cpu")
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    encode_s = time.perf_counter() - t
    res = {"texts": len(texts), "load_s": round(load_s, 3), "encode_s": round(encode_s, 3),
           "texts_per_second": round(len(texts) / encode_s, 2), "peak_rss_mib": peak_rss_mib()}
    print(json.dumps(res))
    return res


# ---- parent ------------------------------------------------------------------------------------------
def ingest(source: Path, work: Path, *, preload: bool = False, overrides: list[str] | None = None) -> dict[str, Any]:
    """One ingest in a fresh process (see :func:`child_ingest`); adds ``process_seconds``."""
    args = ["--child", "ingest", "--source", str(source), "--work", str(work)]
    for item in overrides or []:
        args += ["--set", item]
    return run_json(module_cmd(MODULE, *args, *(["--preload"] if preload else [])), env=child_env())


def throughput(run: dict[str, Any]) -> dict[str, Any]:
    """Per-stage rates of one run (input units per stage second)."""
    s = run["stages"]

    def rate(x: float, secs: float) -> float | None:
        return round(x / secs, 2) if secs > 0 else None

    pre, chk, emb, ded, ups = (s[k] for k in ("preprocess", "chunk", "embed", "dedupe", "upsert"))
    return {
        "preprocess_mb_per_s": rate(pre["bytes_in"] / 1e6, pre["seconds"]),
        "preprocess_docs_per_s": rate(pre["documents"], pre["seconds"]),
        "chunk_docs_per_s": rate(chk["documents"], chk["seconds"]),
        "chunk_chunks_per_s": rate(chk["chunks"], chk["seconds"]),
        "embed_texts_per_s": rate(emb["texts_embedded"], emb["seconds"]),
        "dedupe_chunks_per_s": rate(ded["input_rows"], ded["seconds"]),
        "upsert_points_per_s": rate(ups.get("added", 0) + ups.get("updated", 0), ups["seconds"]),
        "ingest_chunks_per_s": rate(chk["chunks"], run["seconds"]),
    }


def scenario(label: str, src: Path, work: Path, fraction: float) -> dict[str, Any]:
    """First run, no-change re-run, ``fraction``-changed re-run on ``src`` (edited in place)."""
    shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {}
    print(f"[{label}] first run ...", flush=True)
    out["first"] = ingest(src, work, preload=True, overrides=OVERRIDES)
    out["first"]["throughput"] = throughput(out["first"])
    print(f"[{label}] first run {out['first']['seconds']:.1f} s (process {out['first']['process_seconds']:.1f} s),"
          f" peak RSS {out['first']['peak_rss_mib']:.0f} MiB", flush=True)
    out["no_change"] = ingest(src, work, overrides=OVERRIDES)
    print(f"[{label}] no-change re-run {out['no_change']['seconds']:.2f} s", flush=True)
    out["edit"] = change_fraction(src, fraction)
    out["changed"] = ingest(src, work, overrides=OVERRIDES)
    print(f"[{label}] {out['edit']['files_changed']} file(s) changed ({out['edit']['fraction']:.1%}): re-run "
          f"{out['changed']['seconds']:.2f} s, embedded {out['changed']['stages']['embed']['texts_embedded']}",
          flush=True)
    first = out["first"]["seconds"]
    out["ratios"] = {
        "no_change_vs_first": round(out["no_change"]["seconds"] / first, 4),
        "changed_vs_first": round(out["changed"]["seconds"] / first, 4),
        "embed_stage_no_change_vs_first": round(
            out["no_change"]["stages"]["embed"]["seconds"] / out["first"]["stages"]["embed"]["seconds"], 4),
        "no_change_vs_first_process": round(out["no_change"]["process_seconds"] / out["first"]["process_seconds"], 4),
        "changed_vs_first_process": round(out["changed"]["process_seconds"] / out["first"]["process_seconds"], 4),
    }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=ROOT / "data" / "raw")
    ap.add_argument("--scale", type=int, default=None, help="copies for the large corpus (default 10; --quick 3)")
    ap.add_argument("--change", type=float, default=0.01, help="fraction of documents edited for the re-run")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "ingest.json")
    ap.add_argument("--work", type=Path, default=WORK / "ingest")
    ap.add_argument("--child", choices=["ingest", "encode"], help=argparse.SUPPRESS)
    ap.add_argument("--preload", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--chunks", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "ingest":
        from embedline.flows.entry import finish

        try:  # the process exits as an `embedline` command does
            return child_ingest(args.source, args.work, args.preload, args.overrides)
        finally:
            finish()
    if args.child == "encode":
        return child_encode(args.chunks, args.batch_size)

    from embedline.tasks.config import load_config

    scale = args.scale or (3 if args.quick else 10)
    batch = load_config(ROOT / "params.yaml").embed.batch_size
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    src1 = work / "src1"
    replicate(args.source, src1, 1, unique=False)
    one = scenario("1x", src1 / "copy000", work / "run1", args.change)
    chunks = work / "run1" / "data" / "interim" / "chunks"
    raw = run_json(module_cmd(MODULE, "--child", "encode", "--chunks", str(chunks), "--batch-size", str(batch)))
    print(f"raw encode {raw['texts']} texts: load {raw['load_s']:.1f} s, {raw['texts_per_second']:.1f} texts/s",
          flush=True)
    srcn = work / f"src{scale}"
    replication = replicate(args.source, srcn, scale, unique=True)
    many = scenario(f"{scale}x", srcn, work / f"run{scale}", args.change)

    first = one["first"]
    emb = first["stages"]["embed"]
    chunks_n = first["stages"]["chunk"]["chunks"]
    raw_total = raw["load_s"] + raw["encode_s"]
    ratios = {
        "embed_stage_vs_raw_encode": round(first["throughput"]["embed_texts_per_s"] / raw["texts_per_second"], 3),
        "ingest_vs_raw_encode": round((chunks_n / first["seconds"]) / (chunks_n / raw_total), 3),
        "no_change_vs_first": one["ratios"]["no_change_vs_first"],
        "embed_stage_no_change_vs_first": one["ratios"]["embed_stage_no_change_vs_first"],
        "changed_vs_first": one["ratios"]["changed_vs_first"],
        f"no_change_vs_first_{scale}x": many["ratios"]["no_change_vs_first"],
        f"changed_vs_first_{scale}x": many["ratios"]["changed_vs_first"],
        "peak_rss_ratio": round(many["first"]["peak_rss_mib"] / first["peak_rss_mib"], 3),
        "stage_time_ratio": round(many["first"]["seconds"] / first["seconds"], 3),
    }
    doc = stamp({
        "benchmark": "ingest",
        "source": str(args.source.relative_to(ROOT) if args.source.is_relative_to(ROOT) else args.source),
        "params": "params.yaml; source, cache and store in the work dir",
        "overrides": OVERRIDES,
        "scale": scale,
        "replication": replication,
        "embed_texts": emb["texts_embedded"],
        "raw_encode": raw,
        "runs": {"1x": one, f"{scale}x": many},
        "ratios": ratios,
        "targets": {"embed_stage_vs_raw_encode": ">= 0.90", "no_change_vs_first": "<= 0.05"},
    })
    write_result(args.out, doc)
    for k, v in ratios.items():
        print(f"{k:32s} {v}")
    print(f"wrote {args.out}")
    return doc


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
