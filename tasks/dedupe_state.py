"""What the dedupe stage remembers between runs, so a run costs what changed.

Kept in ``data/cache/dedupe/`` (a cache, not a DVC output: it records file stats; deleting it
only makes the next run a full one):

- ``_dedupe_state.json``: the code version, the dedupe params, the embedding identity
  (fingerprint, model), the input digest of every shard (SHA-256 of the chunk shard and of the
  vector shard, with the size and mtime they were hashed at, so an untouched file is not re-read),
  the digest of each deduped shard's *group payload* (the duplicate links of its grouped rows), the
  SHA-256 of each deduped shard and of the report, the chunk ids that were not near-duplicate
  search nodes (non-representative exact copies) and the stats of the run.
- ``_dedupe_rows.parquet``: per row, its shard, chunk id, a 64-bit key of its vector bytes and
  chunk columns, and a 64-bit hash of its duplicate fields (0 when in no group): a row with the
  same chunk id and key is not searched again, and when its group hash is the same too its
  deduped row is copied from the previous deduped shard (only ``row`` is renumbered).
- ``_dedupe_pairs.parquet``: every candidate pair the vector search found (chunk ids ``a < b``,
  their cosine, and ``verdict``: "" when merged, else why the text confirmation rejected it),
  sorted, so the same inputs give the same bytes.

A run whose inputs, params, identity and code version match the state, and whose outputs are
still the files it recorded, does no work. A run with a usable state searches only the nodes of
changed shards (and nodes that became exact representatives) against every node; the pairs
between untouched nodes are taken from the state (their vectors and texts did not change).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedline.tasks.vector_shards import file_digest

VERSION = "dedupe-state-3"  # bump when the stage's output for the same inputs changes
STATE_FILE = "_dedupe_state.json"
PAIRS_FILE = "_dedupe_pairs.parquet"
ROWS_FILE = "_dedupe_rows.parquet"
ROWS_SCHEMA = pa.schema([("shard", pa.int32()), ("chunk_id", pa.string()), ("key", pa.uint64()),
                         ("group", pa.uint64())])
PAIRS_SCHEMA = pa.schema([("a", pa.string()), ("b", pa.string()), ("cosine", pa.float32()),
                          ("verdict", pa.string())])


def stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def digest(path: Path, old: dict[str, Any] | None) -> dict[str, Any]:
    """``{"stat": [size, mtime_ns], "sha256": ...}``; the hash is reused when the stat is unchanged."""
    st = stat_key(path)
    if old and old.get("stat") == st and old.get("sha256"):
        return {"stat": st, "sha256": old["sha256"]}
    return {"stat": st, "sha256": file_digest(path)}


def same_file(path: Path, rec: dict[str, Any] | None) -> bool:
    """True when ``path`` still holds the bytes recorded in ``rec``."""
    if not rec or not path.exists():
        return False
    return digest(path, rec)["sha256"] == rec.get("sha256")


def payload_digest(entries: list[tuple[int, Any]]) -> str:
    """Digest of one shard's grouped rows: (row in shard, its sources/duplicates/flags)."""
    h = hashlib.sha256()
    for local, values in entries:
        h.update(json.dumps([local, values], ensure_ascii=False, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


@dataclass
class State:
    key: dict[str, Any]
    inputs: dict[str, dict[str, Any]]  # shard index -> {"chunks": digest, "vectors": digest}
    groups: dict[str, str]  # shard index -> payload digest of its grouped rows
    outputs: dict[str, dict[str, Any]]  # deduped shard name -> digest
    report: dict[str, Any]
    non_nodes: list[str]  # chunk ids that were not search nodes (non-representative exact copies)
    stats: dict[str, Any]
    pairs: pa.Table | None = field(default=None, repr=False)
    rows: pa.Table | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "key": self.key, "inputs": self.inputs, "groups": self.groups,
                "outputs": self.outputs, "report": self.report, "non_nodes": self.non_nodes,
                "stats": self.stats}


def read_state(folder: Path) -> State | None:
    path = folder / STATE_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if doc.get("version") != VERSION:
        return None
    try:
        return State(doc["key"], doc["inputs"], doc["groups"], doc["outputs"], doc["report"], doc["non_nodes"],
                     doc["stats"])
    except KeyError:
        return None


def _read(path: Path, schema: pa.Schema) -> pa.Table | None:
    if not path.exists():
        return None
    try:
        table = pq.ParquetFile(path).read()
    except (OSError, pa.ArrowInvalid):
        return None
    return table if table.schema.equals(schema) else None


def read_pairs(folder: Path) -> pa.Table | None:
    return _read(folder / PAIRS_FILE, PAIRS_SCHEMA)


def read_rows(folder: Path) -> pa.Table | None:
    return _read(folder / ROWS_FILE, ROWS_SCHEMA)


def pairs_table(a: list[str], b: list[str], cosine: np.ndarray, verdict: list[str]) -> pa.Table:
    """Pairs with ``a < b``, sorted by (a, b): byte-stable for the same pair set."""
    lo = [min(x, y) for x, y in zip(a, b, strict=True)]
    hi = [max(x, y) for x, y in zip(a, b, strict=True)]
    table = pa.table({"a": pa.array(lo, pa.string()), "b": pa.array(hi, pa.string()),
                      "cosine": pa.array(np.asarray(cosine, dtype=np.float32), pa.float32()),
                      "verdict": pa.array(verdict, pa.string())}, schema=PAIRS_SCHEMA)
    return table.sort_by([("a", "ascending"), ("b", "ascending")])


def write_state(folder: Path, state: State) -> None:
    import os

    folder.mkdir(parents=True, exist_ok=True)
    for name, table in ((PAIRS_FILE, state.pairs), (ROWS_FILE, state.rows)):
        if table is not None:
            tmp = folder / (name + ".tmp")
            pq.write_table(table.combine_chunks(), tmp, compression="zstd", row_group_size=65_536)
            os.replace(tmp, folder / name)
    tmp = folder / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state.to_json(), sort_keys=True, ensure_ascii=False, indent=1) + "\n",
                   encoding="utf-8")
    os.replace(tmp, folder / STATE_FILE)


def clear_state(folder: Path) -> None:
    for name in (STATE_FILE, PAIRS_FILE, ROWS_FILE):
        (folder / name).unlink(missing_ok=True)
