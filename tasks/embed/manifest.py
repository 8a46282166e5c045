"""The embedding manifest: what produced vectors.npy, from which corpus, and at what cost."""

from __future__ import annotations

import json
import os
from importlib import metadata
from typing import Any

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, stable_hash
from embedline.tasks.embed.registry import peek_embedder
from embedline.tasks.tokenize import resolve_model

_LIBS = ("numpy", "torch", "transformers", "sentence-transformers", "onnxruntime", "openvino", "openai")

STAT_KEYS = (
    "rows", "unique_texts", "cache_hits", "cache_misses", "texts_embedded", "seconds",
    "texts_per_second", "dims", "fingerprint", "provider", "model", "backend", "precision",
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


def build_manifest(
    cfg: Config, art: Artifacts, revision: str, dims: int, n: int, unique: int,
    corpus: str, stats: dict[str, int], seconds: float,
) -> dict[str, Any]:
    """The manifest: provenance (model, revision, prompts, libraries), corpus checksum, fingerprint,
    counts and timings. ``params_hash`` hashes the embed section of the params."""
    e = cfg.embed
    emb = peek_embedder(e)
    info: dict[str, Any] = dict(emb.info()) if emb is not None else {}
    return {
        "provider": e.provider,
        "model": e.model,
        "model_path": info.pop("model_path", None) or resolve_model(e.model),
        "revision": revision,
        "backend": e.backend,
        "precision": e.precision,
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
        **stats,
        "seconds": seconds,
        "texts_per_second": round(stats["texts_embedded"] / seconds, 2) if seconds > 0 else 0.0,
        "embedder": info,
    }
