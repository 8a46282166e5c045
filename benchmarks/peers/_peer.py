"""Shared by the peer scripts (they run in benchmarks/.venv-peers: standard library + the peer only)."""

from __future__ import annotations

import argparse
import json
import resource
import time
from importlib import metadata
from pathlib import Path
from typing import Any

T_START = time.perf_counter()  # as early as the peer script's first import of this module


def args(description: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--docs", type=Path, required=True, help="documents.jsonl: {id, source, text} per line")
    ap.add_argument("--work", type=Path, required=True, help="peer state: vector store, docstore/record manager")
    ap.add_argument("--model", required=True, help="local sentence-transformers model folder")
    ap.add_argument("--chunk-tokens", type=int, default=256)
    ap.add_argument("--overlap-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    return ap.parse_args()


def read_docs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def versions(*dists: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for d in dists:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            out[d] = None
    return out


def finish(result: dict[str, Any]) -> None:
    """Print the result as the last stdout line (what bench_peers reads)."""
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))
