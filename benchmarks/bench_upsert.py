"""The upsert stage alone, side by side: a first upsert into a fresh store and an unchanged
re-upsert of an existing project (deduped + vector shards, e.g. ``bench_scale``'s ``proj``), run in
a child process by this checkout's Python and, with ``--baseline``, by another checkout's Python
(e.g. main's venv), alternately, so a loaded machine inflates both alike.

    python -m benchmarks.bench_upsert --project /tmp/up/proj [--baseline /work/main/.venv/bin/python]

Results: ``benchmarks/results/upsert.json`` (wall and CPU seconds, points, peak RSS per run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, WORK, child_env, stamp, write_result

CHILD = """
import json, resource, shutil, sys, time
from pathlib import Path
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import load_config
from embedline.tasks.vectorsets.build import run_build
root = Path(sys.argv[1])
shutil.rmtree(root / "data/qdrant", ignore_errors=True)
(root / "data/receipts/upsert.json").unlink(missing_ok=True)
cfg, art = load_config(root / "params.yaml"), Artifacts(root)
out = {}
for run in ("first", "unchanged"):
    c0, t0 = time.process_time(), time.perf_counter()
    st = run_build(cfg, art, allow_mass_delete=True)
    out[run] = {"wall_seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(time.process_time() - c0, 2),
                "added": st["added"], "points_total": st["points_total"], "seconds_index": st.get("seconds_index")}
out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print(json.dumps(out))
"""


def run_once(python: str, project: Path) -> dict[str, Any]:
    load = os.getloadavg()[0]
    proc = subprocess.run([python, "-c", CHILD, str(project)], capture_output=True, text=True, env=child_env())
    if proc.returncode != 0:
        raise RuntimeError(f"{python}: {proc.stderr[-2000:]}")
    res: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    res["loadavg_1m_before"] = round(load, 2)
    res["points_per_second_first"] = round(res["first"]["points_total"] / res["first"]["wall_seconds"], 1)
    res["points_per_cpu_second_first"] = round(res["first"]["points_total"] / res["first"]["cpu_seconds"], 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=WORK / "scale" / "proj")
    ap.add_argument("--baseline", default=None, help="another checkout's Python, run alternately")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "upsert.json")
    args = ap.parse_args()
    impls = {"this": sys.executable, **({"baseline": args.baseline} if args.baseline else {})}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in impls}
    for _ in range(args.reps):
        for name, python in impls.items():
            runs[name].append(run_once(python, args.project))
            print(name, json.dumps(runs[name][-1]), flush=True)
    doc: dict[str, Any] = {"benchmark": "upsert", "project": str(args.project), "pythons": impls, "runs": runs}
    best = {k: max(r["points_per_second_first"] for r in v) for k, v in runs.items()}
    doc["best_points_per_second_first"] = best
    if "baseline" in best:
        doc["speedup_wall_first"] = round(best["this"] / best["baseline"], 2)
        doc["speedup_cpu_first"] = round(max(r["points_per_cpu_second_first"] for r in runs["this"])
                                         / max(r["points_per_cpu_second_first"] for r in runs["baseline"]), 2)
    write_result(args.out, stamp(doc))
    print(json.dumps({k: v for k, v in doc.items() if k != "runs"}), flush=True)


if __name__ == "__main__":
    main()
