"""The markdown table of the benchmark results (benchmarks/results/README.md, docs/benchmarks.md).

Only figures present in the result files are shown; a missing or failed benchmark shows as "not
measured", never as a number. Each row names the run that measured it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, ROOT

DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
Row = tuple[str, str, str, str]  # figure, measured, target, run


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    doc: dict[str, Any] = json.loads(path.read_text())
    if "date" not in doc:  # older result files: when they were committed (a clone resets mtimes)
        doc.setdefault("_mtime", _committed(path) or datetime.fromtimestamp(
            path.stat().st_mtime, UTC).replace(microsecond=0).isoformat())
    return doc


def _committed(path: Path) -> str | None:
    """The last commit date of ``path`` when it is tracked and unchanged, else None."""
    import subprocess

    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--", str(path)], cwd=path.parent,
                               capture_output=True, text=True, timeout=10)
        if dirty.returncode != 0 or dirty.stdout.strip():
            return None
        out = subprocess.run(["git", "log", "-1", "--format=%ct", "--", str(path)], cwd=path.parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    stamp = out.stdout.strip()
    return datetime.fromtimestamp(int(stamp), UTC).isoformat() if stamp.isdigit() else None  # UTC, as stamped dates


def _run_label(doc: dict[str, Any]) -> str:
    """Which run measured a result file: the run id's time (listed under the table), or its date."""
    rid = doc.get("run_id")
    quick = " (--quick)" if _get(doc, "runner.quick") else ""
    if rid and not str(rid).startswith("standalone"):
        return f"run {rid[:16].replace('T', ' ')}{quick}"
    when = str(doc.get("date") or doc["_mtime"])[:16].replace("T", " ")
    return f"standalone script, {when}"


def _get(doc: dict[str, Any] | None, path: str) -> Any:
    cur: Any = doc
    for key in path.split("."):
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "n/a"


def _rows_ingest(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    scale = d.get("scale", 10)
    one, many = _get(d, "runs.1x"), _get(d, f"runs.{scale}x")
    t = _get(one, "first.throughput") or {}
    st = _get(one, "first.stages") or {}
    r = d.get("ratios", {})
    raw = d.get("raw_encode", {})
    edit1, editn = _get(one, "edit") or {}, _get(many, "edit") or {}
    return [
        ("Preprocess (1x, first run)", f"{_fmt(t.get('preprocess_mb_per_s'), '.2f')} MB/s, "
         f"{_fmt(t.get('preprocess_docs_per_s'), '.0f')} docs/s", ""),
        ("Chunk (model tokenizer)", f"{_fmt(t.get('chunk_chunks_per_s'), ',.0f')} chunks/s", ""),
        (f"Embed stage ({_get(st, 'embed.backend') or 'torch'} {_get(st, 'embed.precision') or 'fp32'}, CPU)",
         f"{_fmt(t.get('embed_texts_per_s'), '.1f')} texts/s "
         f"({_get(st, 'embed.texts_embedded')} texts)", ""),
        ("Dedupe stage", f"{_fmt(t.get('dedupe_chunks_per_s'), ',.0f')} chunks/s", ""),
        ("Upsert stage (Qdrant Edge)", f"{_fmt(t.get('upsert_points_per_s'), ',.0f')} points/s "
         f"({_get(st, 'upsert.points_total')} points)", ""),
        (f"Ingest wall time, first run: 1x / {scale}x",
         f"{_fmt(_get(one, 'first.seconds'), '.1f')} s ({_get(st, 'chunk.chunks')} chunks, "
         f"{_get(st, 'upsert.points_total')} points) / {_fmt(_get(many, 'first.seconds'), '.1f')} s "
         f"({_get(many, 'first.stages.chunk.chunks')} chunks, {_get(many, 'first.stages.upsert.points_total')} points)",
         ""),
        ("Embed stage / raw `SentenceTransformer.encode` (same texts)",
         f"{_fmt(r.get('embed_stage_vs_raw_encode'), '.2f')} (raw {_fmt(raw.get('texts_per_second'), '.1f')} texts/s)",
         ">= 0.90"),
        ("Whole ingest / raw load + encode (chunks/s)", _fmt(r.get("ingest_vs_raw_encode"), ".2f"), ""),
        ("Whole ingest: no-change re-run / first run", f"{_fmt(r.get('no_change_vs_first'), '.3f')} (1x), "
         f"{_fmt(r.get(f'no_change_vs_first_{scale}x'), '.3f')} ({scale}x)", ""),
        ("Embed stage alone: no-change re-run / first run", _fmt(r.get("embed_stage_no_change_vs_first"), ".4f"),
         "<= 0.05"),
        ("1 %-changed re-run / first run",
         f"{_fmt(r.get('changed_vs_first'), '.3f')} (1x: {edit1.get('files_changed')} of {edit1.get('files')} files), "
         f"{_fmt(r.get(f'changed_vs_first_{scale}x'), '.3f')} ({scale}x: {editn.get('files_changed')} of "
         f"{editn.get('files')})", ""),
        (f"Peak RSS of the ingest, 1x -> {scale}x corpus",
         f"{_fmt(_get(one, 'first.peak_rss_mib'), '.0f')} -> {_fmt(_get(many, 'first.peak_rss_mib'), '.0f')} MiB "
         f"(x{_fmt(r.get('peak_rss_ratio'), '.2f')})", ""),
    ]


def _rows_chunk(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        ("Preprocess+chunk MB/s / embed MB/s", f"{_fmt(d.get('speed_ratio'), '.0f')}x "
         f"({_fmt(d.get('speed_ratio_10x'), '.0f')}x on 10x corpus)", ">= 10"),
        ("Preprocess+chunk peak RSS, 10x / 1x corpus", f"{_fmt(d.get('memory_ratio'), '.2f')} "
         f"({_fmt(_get(d, 'run_1x.peak_rss_mb'), '.0f')} -> {_fmt(_get(d, 'run_10x.peak_rss_mb'), '.0f')} MB)",
         "<= 1.5"),
    ]


def _rows_embed(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for name, b in (d.get("backends") or {}).items():
        if "error" in b:
            rows.append((f"Backend {name}", f"not measured: {b['error'][:80]}", ""))
            continue
        rows.append((f"Backend {name} ({d.get('texts')} texts)",
                     f"{_fmt(b.get('texts_per_second'), '.1f')} texts/s, x{_fmt(b.get('vs_torch_fp32'), '.2f')} vs "
                     f"torch, cosine mean {_fmt(b.get('mean_cosine'), '.4f')} / min {_fmt(b.get('min_cosine'), '.3f')}",
                     ""))
    r = d.get("ratios", {})
    rows.append(("Best accurate accelerated backend / torch fp32",
                 f"{r.get('best_accelerated_backend')}: x{_fmt(r.get('best_accelerated_vs_torch'), '.2f')}",
                 ">= 3x at mean cosine >= 0.99"))
    return rows


def _rows_dedupe(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for x in d.get("results", []):
        n = x.get("rows", 0)
        rows.append((f"Dedupe {n:,} x 384-d vectors ({_get(x, 'stats.method')})",
                     f"{_fmt(x.get('seconds'), '.1f')} s, peak {_fmt(x.get('peak_rss_mib'), ',.0f')} MiB, "
                     f"pair recall {_fmt(x.get('pair_recall'), '.3f')}",
                     "1 M: <= 600 s, <= 4096 MiB" if n >= 1_000_000 else ""))
    return rows


def _rows_store(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for x in d.get("results", []):
        label = {"edge": "Qdrant Edge (default)", "local": "qdrant-client local mode"}.get(x.get("backend"), x.get("backend"))
        rows.append((f"Store upsert, {label}, {x.get('points', 0):,} points",
                     f"{_fmt(x.get('points_per_second'), ',.0f')} points/s; search {x.get('search_ms_median')} ms; "
                     f"reopen {x.get('reopen_seconds')} s", ">= 5,000 points/s" if x.get("backend") == "edge" else ""))
    return rows


def _rows_peers(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    res, ratios = d.get("results", {}), d.get("ratios", {})
    base = res.get("embedline", {})
    rows = [("embedline (qdrant-client local store): first / no-change re-run",
             f"{_fmt(_get(base, 'first.process_seconds'), '.1f')} s / {_fmt(_get(base, 'rerun.process_seconds'), '.1f')} s "
             f"({_get(base, 'first.chunks_embedded')} chunks, {_get(base, 'first.tokens_chunked')} tokens chunked)", "")]
    cal = d.get("calibration")
    if cal:
        rows.append(("embedline embed.backend=auto: backend chosen (once per model and machine)",
                     f"{cal.get('backend')}/{cal.get('precision')}: x{_fmt(cal.get('speedup'), '.2f')} torch fp32 on "
                     f"{cal.get('texts')} {cal.get('sample')} texts, mean cosine {_fmt(cal.get('mean_cosine'), '.6f')} "
                     f"(min {_fmt(cal.get('min_cosine'), '.6f')}); calibration {_fmt(cal.get('calibration_seconds'), '.0f')} s "
                     "(exports included)", "mean cosine >= 0.999"))
    names = {"llamaindex": "LlamaIndex IngestionPipeline", "langchain": "LangChain index()"}
    for p, label in names.items():
        r = res.get(p)
        if r is None:
            continue
        if p not in ratios:
            rows.append((f"{label} / embedline", f"not measured: {str(r.get('error', 'no result'))[:120]}", ""))
            continue
        q = ratios[p]
        rows.append((f"{label} / embedline, first run", f"x{q['first_run']:.2f} wall, x{_fmt(q.get('first_run_cpu'), '.2f')} "
                     f"CPU ({r['first']['process_seconds']:.1f} s, {r['first'].get('chunks_embedded')} chunks, "
                     f"{r['first'].get('tokens_embedded')} tokens)"
                     + _with_calibration(d, q), ">= 2x"))
        rows.append((f"{label} / embedline, no-change re-run", f"x{q['no_change_rerun']:.2f} wall, "
                     f"x{_fmt(q.get('no_change_rerun_cpu'), '.2f')} CPU ({r['rerun']['process_seconds']:.1f} s)", ""))
    return rows


def _with_calibration(d: dict[str, Any], q: dict[str, Any]) -> str:
    """The ratio when embedline's one-time calibration counts too: only when this run calibrated
    (``--fresh-calibration``); a reused record costs a file read and would say nothing."""
    if not q.get("first_run_with_calibration"):
        return ""
    if not _get(d, "calibration.fresh"):
        return "; calibration record reused (a fresh one: `--fresh-calibration`)"
    return f"; x{q['first_run_with_calibration']:.2f} if embedline also calibrates"


def _rows_scale(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    r, runs, c = d.get("ratios", {}), d.get("runs", {}), d.get("scenario_corpus", {})
    corpus = f"{c.get('files')} files / {c.get('mb')} MB ({_fmt(d.get('scenario_fraction'), '.0%')} of the corpus)"
    rows = [
        (f"First ingest, fake embedder, {corpus}", f"{_fmt(_get(runs, 'first.wall_seconds'), '.1f')} s wall, "
         f"{_fmt(_get(runs, 'first.cpu_seconds'), '.1f')} s CPU, peak {_fmt(_get(runs, 'first.peak_rss_mib'), ',.0f')} MiB", ""),
        ("Unchanged re-run / first run", f"{_fmt(r.get('unchanged_vs_first_wall'), '.3f')} wall, "
         f"{_fmt(r.get('unchanged_vs_first_cpu'), '.3f')} CPU", "<= 0.05"),
        ("1 %-changed re-run / first run", f"{_fmt(r.get('changed_1pct_vs_first_wall'), '.3f')} wall, "
         f"{_fmt(r.get('changed_1pct_vs_first_cpu'), '.3f')} CPU", "<= 0.10"),
        ("Preprocess + chunk, first run", f"{_fmt(r.get('preprocess_chunk_mb_per_wall_s'), '.2f')} MB/s wall "
         f"(load average {_fmt(r.get('load_average_1min_at_end'), '.1f')})", ">= 1 MB/s per core"),
    ]
    if "rss_100_vs_10" in r:
        rows.append(("Peak RSS 100 % / 10 %", f"x{r['rss_100_vs_10']:.2f}", "<= 1.3"))
    return rows


def _rows_upsert(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    runs = d.get("runs", {})
    this = runs.get("this") or [{}]
    pts = _get(this[0], "first.points_total")
    rows = [(f"Upsert stage, first upsert into a fresh Qdrant Edge ({_fmt(pts, ',')} points)",
             f"{_fmt(_get(d, 'best_points_per_second_first.this'), ',.0f')} points/s wall, "
             f"{_fmt(max(r.get('points_per_cpu_second_first', 0) for r in this), ',.0f')} points per CPU-s "
             f"(load {_fmt(this[0].get('loadavg_1m_before'), '.1f')})", ">= 5,000 points/s")]
    if "speedup_wall_first" in d:
        rows.append(("Upsert stage, this branch / baseline, side by side",
                     f"x{d['speedup_wall_first']:.2f} wall, x{_fmt(d.get('speedup_cpu_first'), '.2f')} CPU", ""))
    rows.append(("Unchanged re-upsert (diff skipped)",
                 " / ".join(f"{_fmt(_get(r, 'unchanged.wall_seconds'), '.2f')} s" for r in this), ""))
    return rows


def _rows_million(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    stages, c = d.get("stages", {}), d.get("corpus", {})
    rows = []
    for name, st in stages.items():
        stats = st.get("stats", {})
        extra = ""
        if name.startswith("upsert"):
            extra = (f", {_fmt(stats.get('points_per_second_write'), ',.0f')} points/s written"
                     + (", diff skipped" if stats.get("diff_skipped") else ""))
        rows.append((f"{_fmt(c.get('chunks'), ',')} chunks: {name}",
                     f"{_fmt(st.get('wall_seconds'), ',.1f')} s wall, {_fmt(st.get('cpu_seconds'), ',.1f')} s CPU, "
                     f"peak {_fmt(st.get('peak_rss_mib'), ',.0f')} MiB (load {_fmt(st.get('loadavg_1m'), '.1f')}){extra}",
                     "<= 2048 MiB"))
    return rows


SECTIONS: list[tuple[str, str, Callable[[dict[str, Any]], list[tuple[str, str, str]]]]] = [
    ("ingest", "Pipeline on the sample corpus", _rows_ingest),
    ("chunk", "Preprocess + chunk", _rows_chunk),
    ("embed", "Embedding backends", _rows_embed),
    ("dedupe", "Near-duplicate dedupe", _rows_dedupe),
    ("dedupe_1m", "Near-duplicate dedupe (--large)", _rows_dedupe),
    ("store", "Embedded vector store", _rows_store),
    ("peers", "Peers (process wall time ratio; > 1 = embedline faster)", _rows_peers),
    ("scale", "Incremental runs on Debian docs (bench_scale)", _rows_scale),
    ("upsert", "Upsert stage (bench_upsert)", _rows_upsert),
    ("million", "Synthetic 1 M chunks, fake embedder (bench_million)", _rows_million),
]


def machine_line(summary: dict[str, Any], used: set[str]) -> str:
    """The machine, then each run whose figures appear in the table (wall time, load average)."""
    m = summary.get("machine") or {}
    if not m:
        return "Machine: unknown (no summary.json)."
    out = (f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('ram_gib')} GiB RAM, {m.get('platform')}, "
           f"Python {m.get('python')}, torch {m.get('torch')}. The machine is shared: absolute figures are "
           f"indicative, ratios measured side by side hold better.")
    runs = summary.get("runs") or {}
    for rid in sorted(used):
        r = runs.get(rid)
        if r is None:
            continue
        what = "the default set" if not r["options"].get("only") else ", ".join(r["benchmarks"])
        flags = " ".join(f"--{k}" for k in ("quick", "large") if r["options"].get(k))
        out += (f"\n\n- Run `{rid}`: {what}{f' ({flags})' if flags else ''}, {_fmt(r['seconds'] / 60, '.1f')} min; "
                f"1-min load average {r.get('loadavg_1m_before')} at the start, {r.get('loadavg_1m_after')} at the end.")
    return out


def table(summary: dict[str, Any]) -> str:
    lines = ["| Area | Figure | Measured | Target | Measured in |", "|---|---|---|---|---|"]
    used: set[str] = set()
    for name, area, rows in SECTIONS:
        doc = _load(name)
        status = _get(summary, f"benchmarks.{name}.status")
        if doc is None:
            if name != "dedupe_1m":
                lines.append(f"| {area} | `{name}` | not measured{f' ({status})' if status else ''} | | |")
            continue
        label = _run_label(doc)
        used.add(str(doc.get("run_id")))
        if status and status != "ok":
            lines.append(f"| {area} | `{name}` in run {_get(summary, f'benchmarks.{name}.started')} | {status} | | |")
        for fig, val, target in rows(doc):
            lines.append(f"| {area} | {fig} | {val} | {target} | {label} |")
    return machine_line(summary, used) + "\n\n" + "\n".join(lines) + "\n"


def write_report(summary: dict[str, Any]) -> str:
    """Write benchmarks/results/README.md and refresh the table in docs/benchmarks.md (if it has markers)."""
    md = table(summary)
    (RESULTS / "README.md").write_text(
        "# Benchmark results\n\nWritten by `python -m benchmarks.run` (`make bench`); what each figure means: "
        "[docs/benchmarks.md](../../docs/benchmarks.md).\n\n" + md)
    if DOC.exists():
        text = DOC.read_text()
        if START in text and END in text:
            new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _m: f"{START}\n{md}{END}", text,
                         flags=re.S)
            DOC.write_text(new)
    return md


__all__ = ["table", "write_report"]
