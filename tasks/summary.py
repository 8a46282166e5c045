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
    "upsert": ("added", "updated", "deleted", "unchanged", "points_total", "new_vector_set"),
    "evaluate": ("ndcg@10", "mrr@10", "recall@10", "queries"),
    "finetune": ("enabled", "pairs", "train_loss", "base_ndcg@10", "finetuned_ndcg@10", "model_fingerprint"),
}


def one_line(stage: str, stats: dict[str, Any]) -> str:
    parts = [f"{k}={stats[k]}" for k in _LINE_KEYS.get(stage, ()) if k in stats]
    if "seconds" in stats:
        parts.append(f"seconds={float(stats['seconds']):.2f}")
    return f"{stage}: " + (", ".join(parts) if parts else "done")


def promote_line(stats: dict[str, Any]) -> str:
    """What the promote step did, in one line (with the command to serve a shadow set)."""
    alias, coll = stats.get("alias"), stats.get("collection")
    if stats.get("promoted"):
        return f"promote: alias {alias!r} now serves {coll!r} (gate: {stats.get('gate')})"
    if stats.get("served_collection") == coll:
        return f"promote: alias {alias!r} serves {coll!r} (unchanged)"
    return (f"promote: built {coll!r} as a shadow set, not served ({stats.get('reason')}); "
            f"the alias {alias!r} still serves {stats.get('served_collection')!r}. "
            f"Serve it with `{stats.get('hint')}`")


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
        ("points in the vector set", ups.get("points_total")),
        ("collection", ups.get("collection")),
        ("served by the alias", stages.get("promote", {}).get("served_collection")),
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


# ---- the headline metrics + the recall chart (end of the evaluate stage) -----------------------------
HEADLINE_FILE = "headline.json"
CURVE_CSV = "recall_curve.csv"
CURVE_PNG = "recall_curve.png"
METHOD_PREFIXES = {"dense": "", "bm25": "bm25_", "wholedoc": "wholedoc_", "hybrid": "hybrid_"}


def headline(stages: dict[str, dict[str, Any]], recall_at: int) -> dict[str, Any]:
    """The few numbers `dvc exp show` lists: nDCG@10 and recall@``recall_at`` per retrieval method,
    points, chunks, duplicates removed, texts embedded (pure counts; no timings)."""
    ev, chk, emb, ded = (stages.get(k, {}) for k in ("evaluate", "chunk", "embed", "dedupe"))
    out: dict[str, Any] = {}
    for metric in ("ndcg@10", f"recall@{recall_at}"):
        per = {m: ev[f"{p}{metric}"] for m, p in METHOD_PREFIXES.items() if f"{p}{metric}" in ev}
        if per:
            out[metric] = per
    counts = {
        "points": ded.get("points"),
        "chunks": chk.get("chunks"),
        "duplicates": (ded["input_rows"] - ded["points"]) if {"input_rows", "points"} <= ded.keys() else None,
        "texts_embedded": emb.get("texts_embedded"),
    }
    out.update({k: v for k, v in counts.items() if v is not None})
    return out


def save_curve_png(csv_path: Any, png_path: Any) -> None:
    """The recall@k chart (one line per method) as a PNG: renders offline, unlike DVC's Vega HTML."""
    import csv

    from embedline.tasks.charts import line_chart

    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    methods = [c for c in (rows[0] if rows else {}) if c != "k"]
    series = {m: [(float(r["k"]), float(r[m])) for r in rows if r.get(m)] for m in methods}
    line_chart(png_path, series, title="recall@k per retrieval method", xlabel="k", ylabel="recall@k")


def write_headline(cfg: Config, art: Any, evaluate: dict[str, Any]) -> dict[str, Any]:
    """data/metrics/headline.json (the one file dvc.yaml declares as metrics) and the recall chart.

    Written at the end of the evaluate stage from its own inputs (the dedupe report: chunks, points,
    duplicates) and results, plus ``texts_embedded`` from the embed stage's stats (a run fact: what
    that run paid for), so no extra DVC deps, and no timings."""
    from embedline.tasks.records import read_json, write_json

    stages: dict[str, dict[str, Any]] = {"evaluate": evaluate}
    if art.dedupe_report.exists():
        rep = read_json(art.dedupe_report)
        stages["dedupe"] = {k: rep[k] for k in ("input_rows", "points") if k in rep}
        stages["chunk"] = {"chunks": rep.get("input_rows")}
    if art.metric("embed").exists():
        stages["embed"] = read_json(art.metric("embed"))
    out = headline(stages, max(cfg.eval.k))
    write_json(art.metrics / HEADLINE_FILE, out)
    if (art.metrics / CURVE_CSV).exists():
        save_curve_png(art.metrics / CURVE_CSV, art.metrics / CURVE_PNG)
    return out
