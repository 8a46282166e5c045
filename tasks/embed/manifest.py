"""The embedding manifest: what produced the vector shards and from which corpus.

The manifest is a DVC output, so it is a pure function of the stage's inputs and params on one
machine (byte-stable): no timings, no cache hit counts, no absolute paths, nothing that depends on
whether the model was loaded. Those run facts go to the stage's stats (data/metrics/embed.json)."""

from __future__ import annotations

import json
import os
from importlib import metadata
from typing import Any

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, stable_hash
from embedline.tasks.embed.auto import choice_for, run_facts_for
from embedline.tasks.embed.registry import peek_embedder
from embedline.tasks.tokenize import resolve_model

_LIBS = ("numpy", "torch", "transformers", "sentence-transformers", "onnxruntime", "openvino", "openai")

STAT_KEYS = (
    "rows", "unique_texts", "cache_hits", "cache_misses", "texts_embedded", "seconds",
    "texts_per_second", "dims", "fingerprint", "provider", "model", "backend", "precision",
    "auto_speedup", "auto_calibration_seconds",
)


def aggregate_shards(shard_stats: list[dict[str, Any]], unique: int) -> dict[str, int]:
    """Hit/miss/embedded counts over the shards of one run."""
    if not shard_stats:  # finalize alone: everything was already in the cache
        return {"cache_hits": unique, "cache_misses": 0, "texts_embedded": 0}
    return {k: int(sum(s.get(k, 0) for s in shard_stats)) for k in ("cache_hits", "cache_misses", "texts_embedded")}


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that can change a vector (read without importing)."""
    out: dict[str, str | None] = {}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def portable_path(path: str, root: Any) -> str:
    """``path`` relative to the project ``root`` when inside it; else its last two parts for a
    local absolute path (the folder name names the model, the rest is this machine's layout)."""
    from pathlib import Path

    p = Path(path)
    if not p.is_absolute():
        return path
    try:
        return p.relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return "/".join(p.parts[-2:])


def build_manifest(
    cfg: Config, art: Artifacts, revision: str, dims: int, n: int, unique: int, corpus: str,
) -> dict[str, Any]:
    """The manifest: provenance (model, revision, prompts, libraries), corpus checksum, fingerprint
    and shape. ``params_hash`` hashes the embed section of the params."""
    e = cfg.embed
    return {
        "provider": e.provider,
        "model": e.model,
        # the same whether or not this run loaded the model (a fully cached run does not)
        "model_path": portable_path(resolve_model(e.model), art.root) if e.provider == "sentence-transformers"
        else e.model,
        "revision": revision,
        "backend": e.backend,
        "precision": e.precision,
        # embed.backend=auto: the rule, the agreement with torch fp32 and the sample it was measured on
        "backend_choice": choice_for(e) or {"requested": e.backend},
        "dims": dims,
        "dimensions": e.dimensions,
        "normalize": e.normalize,
        "prompts": {"passage": e.passage_prompt, "query": e.query_prompt},
        "base_url": e.base_url,
        "dtype": "float32",
        "vectors": os.path.relpath(art.vectors, art.root),
        "shape": [n, dims],
        "libraries": library_versions(),
        "params_hash": stable_hash(json.loads(e.model_dump_json()))[:16],
        "corpus_checksum": corpus,
        "fingerprint": cfg.fingerprint(model_revision=revision),
        "rows": n,
        "unique_texts": unique,
    }


def run_facts(cfg: Config, stats: dict[str, int], seconds: float) -> dict[str, Any]:
    """What this run cost (stats, not part of the manifest): cache hits, texts embedded, seconds,
    throughput, and the embedder's own report when it was loaded (flat ``embedder_<key>`` scalars)."""
    emb = peek_embedder(cfg.embed)
    info: dict[str, Any] = dict(emb.info()) if emb is not None else {}
    return {
        **stats,
        **run_facts_for(cfg.embed),  # backend=auto: its speed-up over torch fp32, calibration cost
        "seconds": seconds,
        "texts_per_second": round(stats["texts_embedded"] / seconds, 2) if seconds > 0 else 0.0,
        **{f"embedder_{k}": v for k, v in info.items() if isinstance(v, str | int | float | bool) or v is None},
    }
