"""A run costs what changed: first ingest, unchanged re-run and a 1 %-changed re-run on a corpus of
real documentation nobody on the team wrote, plus peak RSS at 10 % and 100 % of it.

Corpus: Debian documentation packages fetched with ``apt-get download`` into
``benchmarks/work/scale/debs`` and unpacked with ``dpkg-deb -x`` (Sphinx HTML of the Python docs,
git's HTML/AsciiDoc text, the Debian reference and developer guides, bash docs, man pages gunzipped
to ``.txt``, the Python standard library sources). Only files the loaders read are kept.

Every ingest runs in a child process (``python -m benchmarks.bench_scale --child ROOT``) through
the stage functions (no Prefect server), on the fake embedder (the model is not the subject) and the
embedded Qdrant store; the parent takes wall time and the child's peak RSS from ``os.wait4``.

    python -m benchmarks.bench_scale            # -> benchmarks/results/scale.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, WORK, child_env, speed_index, stamp, write_result

PACKAGES = ["python3.11-doc", "git-doc", "debian-reference-en", "developers-reference", "maint-guide",
            "bash-doc", "manpages", "manpages-dev", "libpython3.11-stdlib",
            "postgresql-doc-15", "glibc-doc"]
KEEP = {".html", ".htm", ".txt", ".md", ".rst", ".py"}
FAKE = {"embed": {"provider": "fake", "model": "fake-hash", "cache_path": "data/cache/embeddings.sqlite"}}


# ---- corpus ----------------------------------------------------------------------------------------
def build_corpus(work: Path) -> dict[str, Any]:
    corpus = work / "corpus"
    if corpus.exists() and any(corpus.iterdir()):
        return _measure(corpus)
    debs, extract = work / "debs", work / "extract"
    debs.mkdir(parents=True, exist_ok=True)
    have = {d.name.split("_")[0] for d in debs.glob("*.deb")}
    if missing := [p for p in PACKAGES if p not in have]:
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True, capture_output=True)
    for deb in sorted(debs.glob("*.deb")):
        (extract / deb.name.split("_")[0]).mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(extract / deb.name.split("_")[0])], check=True)
    for f in sorted(extract.rglob("*")):
        if not f.is_file() or f.is_symlink():
            continue
        rel = f.relative_to(extract)
        if f.suffix == ".gz" and "/man/" in f.as_posix():  # man pages: roff source as text
            dst = corpus / rel.with_suffix(".txt")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(gzip.decompress(f.read_bytes()))
        elif f.suffix in KEEP:
            dst = corpus / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)
    return _measure(corpus)


def _measure(corpus: Path) -> dict[str, Any]:
    files = [p for p in corpus.rglob("*") if p.is_file()]
    by_ext: dict[str, int] = {}
    for p in files:
        by_ext[p.suffix] = by_ext.get(p.suffix, 0) + 1
    return {"files": len(files), "mb": round(sum(p.stat().st_size for p in files) / 1e6, 1),
            "by_extension": dict(sorted(by_ext.items(), key=lambda kv: -kv[1])[:8]),
            "packages": PACKAGES}


def subset(corpus: Path, dest: Path, every: int) -> dict[str, Any]:
    """Every ``every``-th file (sorted) of the corpus (the 10 % RSS point)."""
    if dest.exists():
        shutil.rmtree(dest)
    for i, f in enumerate(sorted(p for p in corpus.rglob("*") if p.is_file())):
        if i % every == 0:
            dst = dest / f.relative_to(corpus)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)
    return _measure(dest)


def change_one_percent(corpus: Path, seed: int = 7) -> dict[str, int]:
    """0.5 % of the files edited, 0.25 % deleted, 0.25 % added (edited copies under new names)."""
    files = sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix in {".html", ".txt", ".rst"})
    rng = random.Random(seed)
    picked = rng.sample(files, max(4, len(files) // 100))
    k = len(picked) // 4
    edit, delete, add = picked[: 2 * k], picked[2 * k : 3 * k], picked[3 * k :]
    for f in edit:
        f.write_bytes(f.read_bytes() + b"\nA closing note added for the benchmark run.\n")
    for f in delete:
        f.unlink()
    for f in add:
        f.with_name("added-" + f.name).write_bytes(f.read_bytes() + b"\nAn added copy for the benchmark.\n")
    return {"edited": len(edit), "deleted": len(delete), "added": len(add)}


# ---- runs ------------------------------------------------------------------------------------------
def make_project(root: Path, source: Path) -> None:
    import yaml

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["source"] = str(source)
    for section, values in FAKE.items():
        params[section].update(values)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def ingest(root: Path) -> dict[str, Any]:
    """One ingest in a child process: wall seconds, the child's peak RSS and the stage stats."""
    speed = speed_index()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_scale", "--child", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), text=True,
                            cwd=Path(__file__).resolve().parents[1])
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"ingest of {root} failed:\n{err[-3000:]}")
    res = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    res["wall_seconds"] = round(wall, 2)
    res["speed_index_before"], res["speed_index_after"] = speed, speed_index()
    res["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    # CPU seconds (user + system) of the child: what a loaded, shared machine inflates least
    res["cpu_seconds"] = round(usage.ru_utime - before.ru_utime + usage.ru_stime - before.ru_stime, 2)
    return res


def child(root: Path) -> None:
    from embedline.tasks.artifacts import Artifacts
    from embedline.tasks.config import load_config
    from embedline.tasks.pipeline import INGEST_STAGES, run_stage

    cfg, art = load_config(root / "params.yaml"), Artifacts(root)
    stages: dict[str, Any] = {}
    for name in INGEST_STAGES:
        t0, c0 = time.perf_counter(), time.process_time()
        stats = run_stage(name, cfg, art, **({"allow_mass_delete": True} if name == "upsert" else {}))
        stages[name] = {"seconds": round(time.perf_counter() - t0, 2),
                        "cpu_seconds": round(time.process_time() - c0, 2),
                        **{k: v for k, v in stats.items() if isinstance(v, int | float) and not k.startswith(
                            ("rejected_", "docs_"))}}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": round(rss, 1), "stages": stages}))


def _ratios(runs: dict[str, Any], corpus: dict[str, Any]) -> dict[str, Any]:
    first = runs["first"]
    pc_s = first["stages"]["preprocess"]["seconds"] + first["stages"]["chunk"]["seconds"]
    pc_cpu = first["stages"]["preprocess"]["cpu_seconds"] + first["stages"]["chunk"]["cpu_seconds"]
    pc_cpu_share = first["cpu_seconds"] / first["wall_seconds"]  # < 1 on a loaded machine
    out = {
        "unchanged_vs_first_wall": round(runs["unchanged"]["wall_seconds"] / first["wall_seconds"], 3),
        "changed_1pct_vs_first_wall": round(runs["changed_1pct"]["wall_seconds"] / first["wall_seconds"], 3),
        "unchanged_vs_first_cpu": round(runs["unchanged"]["cpu_seconds"] / first["cpu_seconds"], 3),
        "changed_1pct_vs_first_cpu": round(runs["changed_1pct"]["cpu_seconds"] / first["cpu_seconds"], 3),
        "preprocess_chunk_mb_per_wall_s": round(corpus["mb"] / pc_s, 3),
        # the stages run in one process: MB per CPU second is MB/s per core, what load inflates least
        "preprocess_chunk_mb_per_cpu_s": round(corpus["mb"] / pc_cpu, 3),
        "first_run_cpu_share_of_wall": round(pc_cpu_share, 3),
        "upsert_points_per_s_first": round(
            first["stages"]["upsert"].get("points_total", 0) / first["stages"]["upsert"]["seconds"], 1),
        "load_average_1min_at_end": round(os.getloadavg()[0], 1),
        # the CPU's speed around each run (common.speed_index): a ratio of runs is only as good as these agree
        **{f"speed_index_{name}": round((runs[name]["speed_index_before"] + runs[name]["speed_index_after"]) / 2, 2)
           for name in ("first", "unchanged", "changed_1pct")},
    }
    if "first_10pct" in runs:
        out["rss_100_vs_10"] = round(first["peak_rss_mib"] / runs["first_10pct"]["peak_rss_mib"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=WORK / "scale")
    ap.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    ap.add_argument("--child", type=Path, default=None)
    ap.add_argument("--corpus-only", action="store_true")
    ap.add_argument("--fraction", type=float, default=1.0,
                    help="run the first/unchanged/1%%-changed scenario on this fraction of the corpus")
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    corpus_info = build_corpus(args.work)
    print("corpus:", json.dumps(corpus_info), flush=True)
    if args.corpus_only:
        return
    every = round(1 / args.fraction)
    live = args.work / "live"
    if live.exists():
        shutil.rmtree(live)
    if every > 1:  # the scenario on a subset (a loaded machine); no separate 10 % RSS point then
        scenario_corpus = subset(args.work / "corpus", live, every)
    else:
        shutil.copytree(args.work / "corpus", live)
        scenario_corpus = corpus_info
    for d in ("proj", "proj10"):
        shutil.rmtree(args.work / d, ignore_errors=True)
    make_project(args.work / "proj", live)
    runs: dict[str, Any] = {}
    if every == 1:
        small = subset(args.work / "corpus", args.work / "small", 10)
        make_project(args.work / "proj10", args.work / "small")
        runs["first_10pct"] = ingest(args.work / "proj10")
        runs["first_10pct"]["corpus"] = small
        print("10 %:", runs["first_10pct"]["wall_seconds"], "s", runs["first_10pct"]["peak_rss_mib"], "MiB",
              json.dumps(runs["first_10pct"]), flush=True)
    partial = args.out.with_name(args.out.stem + ".partial.json")  # what a cut-short run measured
    runs["first"] = ingest(args.work / "proj")
    print("first:", runs["first"]["wall_seconds"], "s", flush=True)
    write_result(partial, stamp({"benchmark": "scale", "corpus": corpus_info, "runs": runs}))
    runs["unchanged"] = ingest(args.work / "proj")
    print("unchanged:", runs["unchanged"]["wall_seconds"], "s", flush=True)
    write_result(partial, stamp({"benchmark": "scale", "corpus": corpus_info, "runs": runs}))
    change = change_one_percent(live)
    runs["changed_1pct"] = ingest(args.work / "proj")
    runs["changed_1pct"]["change"] = change
    print("1 %:", runs["changed_1pct"]["wall_seconds"], "s", flush=True)
    partial.unlink(missing_ok=True)
    doc = stamp({
        "benchmark": "scale",
        "corpus": corpus_info,
        "scenario_fraction": args.fraction,
        "scenario_corpus": scenario_corpus,
        "embedder": "fake",
        "runs": runs,
        "ratios": _ratios(runs, scenario_corpus),
    })
    write_result(args.out, doc)
    print(json.dumps(doc["ratios"]), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
