"""Where people wait (issue 16): `embedline --help`, a cold `embedline search`, a first and a
no-change `embedline ingest` without a Prefect server, a first and a no-change `make run`
(`dvc repro` of a fresh copy of the repository), and evaluation's share of each.

Every figure is the wall time of a fresh `embedline` process (what a user waits for), run on a copy
of the sample corpus in ``benchmarks/work/speed`` with the project's params.yaml (evaluation on, no
``PREFECT_API_URL``: the DAG runs in-process). ``embed.models_dir`` points at the repository's
``data/models`` (exported graphs and the ``auto`` calibration are per model and machine, like a
user's); the embedding cache starts empty, so the first ingest embeds every chunk. The `make run`
figures come from ``benchmarks/work/speed-dvc``: the repository's tracked files without dvc.lock or
outputs, DVC without Git, the same ``embed.models_dir``; evaluate's seconds are those its stage
recorded. ``first_make_run_fresh_clone`` is the same on a copy with its own, empty ``models_dir``
(a fresh clone on a new machine: the run exports the ONNX graph and calibrates ``auto``). Every figure carries the 1-minute load average taken right after it (``load1``): on a
shared machine, figures taken at a load above the core count are inflated.

    .venv/bin/python -m benchmarks.bench_speed [--repeat 5] [--set embed.backend=auto] [--no-make-run]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, ROOT, WORK, stamp, write_result

EMBEDLINE = Path(sys.executable).with_name("embedline")
QUERY = "how does a black hole form"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


CPU: list[float] = []  # user+sys CPU seconds of each timed child (robust to a busy machine)


def timed(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run([str(EMBEDLINE), *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                         timeout=3600)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 3))
    if res.returncode != 0:
        raise RuntimeError(f"embedline {' '.join(args)} failed: {res.stderr[-2000:]}")
    return round(seconds, 3), res


def series(args: list[str], cwd: Path, repeat: int) -> dict[str, Any]:
    times, cpu = [], []
    for _ in range(repeat):
        times.append(timed(args, cwd)[0])
        cpu.append(CPU[-1])
    return {"runs": times, "min": min(times), "median": round(statistics.median(times), 3),
            "cpu_seconds": cpu, "cpu_min": min(cpu)}


def parse_hits(text: str) -> list[dict[str, Any]]:
    """The JSON values printed by `search --json` (one per hit, pretty-printed or not)."""
    dec, pos, hits = json.JSONDecoder(), 0, []
    text = text.strip()
    while pos < len(text):
        obj, end = dec.raw_decode(text, pos)
        hits.extend(obj if isinstance(obj, list) else [obj])
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return hits


def table_value(text: str, label: str) -> float | None:
    """A number from the `embedline ingest` summary table (the run's own figures: a stage that
    was not re-run keeps the metrics file of the run that built its outputs)."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.replace("│", "|").split("|") if c.strip()]
        if len(cells) >= 2 and cells[0] == label:
            try:
                return float(cells[1].split()[0])
            except ValueError:
                return None
    return None


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def dvc_project(work: Path, *, calibrated: bool = True) -> Path:
    """A fresh copy of the repository's tracked files (no dvc.lock, no outputs), DVC without Git.
    ``calibrated``: ``embed.models_dir`` is the repository's (exported graphs and the ``auto``
    calibration already there, as on a machine that ran embedline before); else the copy's own,
    empty, as in a fresh clone on a new machine (the first run exports and calibrates)."""
    shutil.rmtree(work, ignore_errors=True)
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in files.splitlines():
        if rel == "dvc.lock" or rel.startswith(("data/metrics/", "data/receipts/", "data/finetune/")):
            continue
        src, dst = ROOT / rel, work / rel
        if src.is_symlink() or src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)
    if calibrated:
        params = (work / "params.yaml").read_text()
        (work / "params.yaml").write_text(params.replace("models_dir: data/models", f"models_dir: {ROOT / 'data' / 'models'}"))
    with (work / ".dvc" / "config").open("a") as f:
        f.write("    no_scm = true\n")
    return work


def make_run(work: Path) -> dict[str, Any]:
    """`make run`'s command (`dvc repro`) in ``work``: wall seconds, evaluate's recorded seconds."""
    env = dict(_env(), PATH=f"{EMBEDLINE.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    t0 = time.perf_counter()
    res = subprocess.run([str(EMBEDLINE.with_name("dvc")), "repro"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=7200)
    seconds = round(time.perf_counter() - t0, 3)
    if res.returncode != 0:
        raise RuntimeError(f"dvc repro failed: {res.stderr[-2000:]}")
    ran_eval = "Running stage 'evaluate'" in res.stdout
    ev = metric(work, "evaluate").get("seconds") if ran_eval else 0.0
    return {"seconds": seconds, "evaluate_ran": ran_eval, "evaluate_seconds": ev,
            "evaluate_share": round(ev / seconds, 3) if ev is not None else None, "load1": load1()}


def metric(work: Path, stage: str) -> dict[str, Any]:
    path = work / "data" / "metrics" / f"{stage}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", type=Path, default=RESULTS / "speed.json")
    ap.add_argument("--no-make-run", dest="make_run", action="store_false",
                    help="skip the first / no-change `make run` (two full pipeline runs)")
    args = ap.parse_args(argv)
    # a DVC project like the repository (a no-change ingest takes unchanged stages from dvc.lock);
    # --set overrides make every run an experiment (nothing taken from or recorded in dvc.lock)
    work = dvc_project(WORK / "speed")
    sets = [f"--set={o}" for o in args.overrides]
    load_before = os.getloadavg()[0]

    out: dict[str, Any] = {"benchmark": "speed", "overrides": args.overrides}
    out["help"] = {**series(["--help"], ROOT, args.repeat), "load1": load1()}
    print("help", out["help"], flush=True)

    first_s, _ = timed(["ingest", *sets], work)
    first_eval = metric(work, "evaluate").get("seconds")
    out["first_ingest"] = {"seconds": first_s, "cpu_seconds": CPU[-1], "load1": load1(), "evaluate_seconds": first_eval,
                           "evaluate_share": round(first_eval / first_s, 3) if first_eval else None,
                           "embed": {k: metric(work, "embed").get(k) for k in
                                     ("backend", "precision", "texts_embedded", "texts_per_second", "seconds")}}
    print("first ingest", out["first_ingest"], flush=True)

    runs = []
    for _ in range(max(1, args.repeat // 2)):
        s, res = timed(["ingest", *sets], work)
        ev = table_value(res.stdout, "evaluate seconds")
        runs.append({"seconds": s, "cpu_seconds": CPU[-1], "load1": load1(), "evaluate_seconds": ev,
                     "evaluate_share": round(ev / s, 3) if ev is not None else None,
                     "texts_embedded": table_value(res.stdout, "texts embedded (cache misses)")})
    out["no_change_ingest"] = {"runs": runs, "min": min(r["seconds"] for r in runs),
                               "median": round(statistics.median(r["seconds"] for r in runs), 3)}
    print("no-change ingest", out["no_change_ingest"], flush=True)

    out["cold_search"] = {**series(["search", QUERY, "-k", "5", *sets], work, args.repeat), "load1": load1()}
    _, res = timed(["search", QUERY, "-k", "5", "--json", *sets], work)
    fast_hits = parse_hits(res.stdout)
    out["cold_search"]["top_hit"] = fast_hits[0] if fast_hits else None
    no_graph = dict(_env(), EMBEDLINE_QUERY_ONNX="0")
    t0 = time.perf_counter()
    ref = subprocess.run([str(EMBEDLINE), "search", QUERY, "-k", "5", "--json", *sets], cwd=work, env=no_graph,
                         capture_output=True, text=True, check=True, timeout=600)
    out["cold_search"]["torch_fallback_seconds"] = round(time.perf_counter() - t0, 3)
    ref_hits = parse_hits(ref.stdout)
    out["cold_search"]["same_results_as_torch"] = (
        [h.get("source") for h in fast_hits] == [h.get("source") for h in ref_hits]
        and all(abs(a.get("score", 0) - b.get("score", 0)) < 1e-4 for a, b in zip(fast_hits, ref_hits, strict=True)))
    print("cold search", out["cold_search"], flush=True)

    if args.make_run:
        dvc_work = dvc_project(WORK / "speed-dvc")
        out["first_make_run"] = make_run(dvc_work)
        print("first make run", out["first_make_run"], flush=True)
        out["no_change_make_run"] = make_run(dvc_work)
        print("no-change make run", out["no_change_make_run"], flush=True)
        # a newcomer's literal first `make run`: fresh clone, new machine (ONNX export + calibration)
        fresh = dvc_project(WORK / "speed-dvc-fresh", calibrated=False)
        out["first_make_run_fresh_clone"] = make_run(fresh)
        print("first make run, fresh clone", out["first_make_run_fresh_clone"], flush=True)
        shutil.rmtree(fresh, ignore_errors=True)

    out["loadavg_1m_before"] = load_before
    out["loadavg_1m_after"] = os.getloadavg()[0]
    doc = stamp(out)
    write_result(args.out, doc)
    print(f"wrote {args.out}")
    return doc


if __name__ == "__main__":
    main()
