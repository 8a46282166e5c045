"""Run every benchmark on the sample corpus, each in its own process, and write the results.

    python -m benchmarks.run                  # the full default set (< 15 min on a 2-core machine)
    python -m benchmarks.run --quick          # smaller sizes, a few minutes
    python -m benchmarks.run --large          # + dedupe on 1 M vectors (~2 more minutes)
    python -m benchmarks.run --only ingest --only peers
    python -m benchmarks.run --report-only    # rebuild summary.json + README.md from the result files

Writes ``benchmarks/results/<name>.json`` (one per benchmark, by the benchmark itself),
``benchmarks/results/summary.json`` (machine, this run's id, per-benchmark status, wall time and peak
RSS of its process tree) and ``benchmarks/results/README.md`` (the table; also spliced into
``docs/benchmarks.md``). Every figure in the table names the run that measured it: a result file
left from an earlier run (say a ``--large`` run) is shown with that run's date, never as this run's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    RUN_ID_ENV,
    WORK,
    child_env,
    machine_info,
    now_iso,
    write_result,
)


@dataclass(frozen=True)
class Bench:
    """One benchmark: its module, arguments for the default and ``--quick`` sets, what it measures."""

    module: str
    what: str
    args: tuple[str, ...] = ()
    quick: tuple[str, ...] | None = None  # None: same as args
    large_only: bool = False  # runs only with --large (or --only NAME)
    peers: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)


def _out(name: str) -> tuple[str, str]:
    return ("--out", str(RESULTS / f"{name}.json"))


BENCHMARKS: dict[str, Bench] = {
    "chunk": Bench(
        "benchmarks.bench_chunk", "preprocess+chunk MB/s vs embed MB/s; preprocess+chunk peak RSS 1x vs 10x",
        (*_out("chunk"), "--work", str(WORK / "chunk")),
        (*_out("chunk"), "--work", str(WORK / "chunk"), "--scale", "3", "--embed-sample", "32"),
    ),
    "ingest": Bench(
        "benchmarks.bench_ingest", "per-stage throughput, ingest vs raw encode, re-runs, peak RSS 1x vs 10x",
        _out("ingest"), (*_out("ingest"), "--quick"),
    ),
    "embed": Bench(
        "benchmarks.bench_embed", "backends torch/onnx/openvino fp32/int8: texts/s and cosine vs torch fp32",
        (*_out("embed"), "--limit", "128", "--repeats", "2"), (*_out("embed"), "--limit", "48", "--repeats", "1"),
    ),
    "dedupe": Bench(
        "benchmarks.bench_dedupe", "dedupe stage on 100 k synthetic 384-d vectors: time, peak RSS, pair recall",
        (*_out("dedupe"), "--sizes", "100000"), (*_out("dedupe"), "--sizes", "20000"),
    ),
    "dedupe_1m": Bench(
        "benchmarks.bench_dedupe", "dedupe stage on 1 M synthetic 384-d vectors (target <= 10 min, <= 4 GiB)",
        (*_out("dedupe_1m"), "--sizes", "1000000"), large_only=True,
    ),
    "million": Bench(
        "benchmarks.bench_million", "synthetic 1 M chunks: embed (fake), dedupe, upsert, re-upsert, verify; peak RSS per stage",
        ("--chunks", "1000000"), large_only=True,
    ),
    "store": Bench(
        "benchmarks.bench_store", "embedded-store upsert: Qdrant Edge 100 k points vs qdrant-client local 5 k",
        (*_out("store"), "--edge-n", "100000", "--local-n", "5000"),
        (*_out("store"), "--edge-n", "10000", "--local-n", "1000"),
    ),
    "peers": Bench(
        "benchmarks.bench_peers", "embedline vs LlamaIndex IngestionPipeline vs LangChain index(): wall-time ratios",
        _out("peers"), peers=True,
    ),
}


def selected(args: argparse.Namespace) -> list[str]:
    only = [n for item in args.only for n in item.split(",") if n]
    unknown = [n for n in [*only, *args.skip] if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; valid: {', '.join(BENCHMARKS)}")
    if only:
        return [n for n in BENCHMARKS if n in only]
    return [n for n, b in BENCHMARKS.items()
            if n not in args.skip and (args.large or not b.large_only) and not (b.peers and args.no_peers)]


def _pump(stream: Any, name: str, log: Any) -> None:
    for line in iter(stream.readline, ""):
        log.write(line)
        log.flush()
        sys.stdout.write(f"[{name}] {line}")
        sys.stdout.flush()


def run_one(name: str, bench: Bench, quick: bool, run_id: str, timeout: float) -> dict[str, Any]:
    """Run one benchmark process; its stdout is shown prefixed and kept in benchmarks/work/logs/."""
    args = bench.quick if quick and bench.quick is not None else bench.args
    cmd = [sys.executable, "-m", bench.module, *args]
    logs = WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = child_env(**{RUN_ID_ENV: run_id}, **bench.extra_env)
    started, load0 = now_iso(), os.getloadavg()[0]
    t0 = time.perf_counter()
    with (logs / f"{name}.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
        pump = threading.Thread(target=_pump, args=(proc.stdout, name, log), daemon=True)
        pump.start()
        status, usage, timed_out = 0, None, False
        while True:  # wait4: the exit status AND the rusage of this child (peak RSS of its process tree)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout and not timed_out:
                proc.kill()
                timed_out = True
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        pump.join(timeout=5)
    seconds = time.perf_counter() - t0
    ok = proc.returncode == 0 and not timed_out
    res: dict[str, Any] = {
        "status": "ok" if ok else ("timeout" if timed_out else f"failed (exit {proc.returncode})"),
        "module": bench.module, "args": list(args), "started": started, "seconds": round(seconds, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1) if usage else None,
        "loadavg_1m_before": round(load0, 2), "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "log": str((logs / f"{name}.log").relative_to(WORK.parent.parent)),
    }
    out = Path(args[args.index("--out") + 1]) if "--out" in args else None
    if ok and out is not None and out.exists():
        res["result"] = str(out.relative_to(RESULTS.parent.parent))
        doc = json.loads(out.read_text())
        if doc.get("run_id") != run_id:  # benchmarks that do not stamp themselves
            doc = {"run_id": run_id, **doc}
        doc["machine"] = {**(doc.get("machine") or {}), **machine_info(), "loadavg_1m_before": res["loadavg_1m_before"]}
        doc["runner"] = {**{k: res[k] for k in ("started", "seconds", "peak_rss_mib", "args")}, "quick": quick}
        write_result(out, doc)
    elif ok:
        res["status"] = "failed (no result file)"
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    ap.add_argument("--large", action="store_true", help="also dedupe 1 M vectors (dedupe_1m.json)")
    ap.add_argument("--only", action="append", default=[], metavar="NAME", help=f"one of {', '.join(BENCHMARKS)}")
    ap.add_argument("--skip", action="append", default=[], metavar="NAME")
    ap.add_argument("--no-peers", action="store_true", help="skip the LlamaIndex/LangChain comparison")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark")
    ap.add_argument("--report-only", action="store_true", help="only rebuild summary.json and README.md")
    args = ap.parse_args(argv)
    from benchmarks.report import write_report

    if args.report_only:
        summary_path = RESULTS / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        write_report(summary)
        print(f"wrote {RESULTS / 'README.md'}")
        return 0

    names = selected(args)
    run_id = now_iso()
    machine = machine_info()
    print(f"run {run_id}: {', '.join(names)}{' (quick)' if args.quick else ''}")
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB, "
          f"load {machine['loadavg_1m']} (1 min)", flush=True)
    t0 = time.perf_counter()
    ran: dict[str, Any] = {}
    for name in names:
        print(f"=== {name}: {BENCHMARKS[name].what}", flush=True)
        ran[name] = run_one(name, BENCHMARKS[name], args.quick, run_id, args.timeout)
        r = ran[name]
        print(f"=== {name}: {r['status']} in {r['seconds']:.0f} s, peak RSS {r['peak_rss_mib']} MiB", flush=True)
    total = time.perf_counter() - t0
    previous = json.loads((RESULTS / "summary.json").read_text()) if (RESULTS / "summary.json").exists() else {}
    this = {"finished": now_iso(), "seconds": round(total, 1), "benchmarks": names,
            "options": {"quick": args.quick, "large": args.large, "only": args.only, "skip": args.skip,
                        "no_peers": args.no_peers},
            "loadavg_1m_before": machine["loadavg_1m"], "loadavg_1m_after": round(os.getloadavg()[0], 2)}
    summary = {
        "run_id": run_id,
        "finished": now_iso(),
        "seconds": round(total, 1),
        "options": {"quick": args.quick, "large": args.large, "only": args.only, "skip": args.skip,
                    "no_peers": args.no_peers},
        "machine": machine,
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "benchmarks": {**previous.get("benchmarks", {}), **ran},
        "runs": {**previous.get("runs", {}), run_id: this},  # every run whose results may still be shown
    }
    write_result(RESULTS / "summary.json", summary)
    write_report(summary)
    failed = [n for n, r in ran.items() if r["status"] != "ok"]
    print(f"all done in {total / 60:.1f} min; results in {RESULTS}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
