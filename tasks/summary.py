"""Human-readable run summaries: one log line per stage, one markdown report per run."""

from __future__ import annotations

from typing import Any

from embedline.tasks.config import Config

# The numbers each stage's one-line log shows, in order (missing keys are skipped).
_LINE_KEYS: dict[str, tuple[str, ...]] = {
    "preprocess": ("documents", "rejected", "bytes_in"),
    "chunk": ("documents", "chunks", "tokens_mean", "tokens_max"),
    "embed": ("rows", "unique_texts", "cache_hits", "cache_misses", "texts_embedded", "texts_per_second"),
    "dedupe": ("input_rows", "exact_removed", "near_removed", "points"),
    "upsert": ("added", "updated", "deleted", "unchanged", "points_total", "swapped"),
    "evaluate": ("ndcg@10", "mrr@10", "recall@10", "queries"),
    "finetune": ("enabled", "pairs", "train_loss", "base_ndcg@10", "finetuned_ndcg@10", "model_fingerprint"),
}


def one_line(stage: str, stats: dict[str, Any]) -> str:
    parts = [f"{k}={stats[k]}" for k in _LINE_KEYS.get(stage, ()) if k in stats]
    if "seconds" in stats:
        parts.append(f"seconds={float(stats['seconds']):.2f}")
    return f"{stage}: " + (", ".join(parts) if parts else "done")


def summary_rows(stages: dict[str, dict[str, Any]]) -> list[tuple[str, Any]]:
    """The headline numbers of a run, in reading order."""
    pre = stages.get("preprocess", {})
    chk = stages.get("chunk", {})
    emb = stages.get("embed", {})
    ded = stages.get("dedupe", {})
    ups = stages.get("upsert", {})
    ev = stages.get("evaluate", {})
    rows: list[tuple[str, Any]] = [
        ("documents", pre.get("documents")),
        ("rejected inputs", pre.get("rejected")),
        ("chunks", chk.get("chunks")),
        ("texts embedded (cache misses)", emb.get("texts_embedded", emb.get("cache_misses"))),
        ("cache hits", emb.get("cache_hits")),
        ("exact duplicates removed", ded.get("exact_removed")),
        ("near duplicates removed", ded.get("near_removed")),
        ("points added", ups.get("added")),
        ("points updated", ups.get("updated")),
        ("points deleted", ups.get("deleted")),
        ("points in Qdrant", ups.get("points_total")),
        ("collection", ups.get("collection")),
        ("fingerprint", emb.get("fingerprint") or ups.get("fingerprint")),
        ("nDCG@10 (dense / bm25 / whole-doc)", _triple(ev, "ndcg@10")),
    ]
    seconds = {k: v.get("seconds") for k, v in stages.items() if isinstance(v, dict)}
    rows += [(f"{k} seconds", round(float(s), 2)) for k, s in seconds.items() if s is not None]
    return [(k, v) for k, v in rows if v is not None]


def _triple(ev: dict[str, Any], metric: str) -> str | None:
    vals = [ev.get(metric), ev.get(f"bm25_{metric}"), ev.get(f"wholedoc_{metric}")]
    if vals[0] is None:
        return None
    return " / ".join("-" if v is None else f"{float(v):.3f}" for v in vals)


def summary_markdown(cfg: Config, stages: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# embedline ingest",
        "",
        f"source `{cfg.source}` → model `{cfg.embed.model}` ({cfg.embed.provider}, "
        f"{cfg.embed.backend}/{cfg.embed.precision}) → collection alias `{cfg.qdrant.collection}`",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(stages)]
    return "\n".join(lines) + "\n"
