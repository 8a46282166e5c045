"""What a vector set is built from: the workspace's artifacts (deduped rows + their vectors).

The only module of the package that reads ``deduped.parquet`` and ``vectors.npy``: build, verify
and promote go through these functions, so a change of artifact layout (e.g. sharded artifacts)
changes this file only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow.parquet as pq

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.vectorsets.sync import DesiredPoint, desired_hashes, iter_desired


def require_rows(art: Artifacts) -> None:
    """Fail clearly when the dedupe stage has not run."""
    if not art.deduped.exists():
        raise FileNotFoundError(f"{art.deduped} is missing: run the dedupe stage first")


def desired_state(art: Artifacts, *, fingerprint: str, model: str) -> dict[str, str]:
    """``point id -> payload hash`` of every point the vector set should hold."""
    return desired_hashes(art.deduped, fingerprint=fingerprint, model=model)


def desired_points(art: Artifacts, *, fingerprint: str, model: str) -> Iterator[list[DesiredPoint]]:
    """The desired points (id, vector row, payload), streamed in batches."""
    return iter_desired(art.deduped, fingerprint=fingerprint, model=model)


def open_vectors(art: Artifacts, dims: int) -> np.ndarray:
    """The vectors, memory-mapped, row ``i`` = the vector of ``DesiredPoint.row == i``."""
    vectors = np.load(art.vectors, mmap_mode="r")
    if vectors.ndim != 2 or vectors.shape[1] != dims:
        raise ValueError(f"{art.vectors} has shape {vectors.shape}; the manifest says dims={dims}")
    return vectors


def vector_rows(art: Artifacts, ids: Iterable[str]) -> dict[str, int]:
    """``point id -> row of vectors.npy`` for ``ids`` (those present)."""
    wanted = set(ids)
    t = pq.ParquetFile(art.deduped).read(columns=["point_id", "row"])  # read_table imports pandas (1.6 s)
    return {pid: int(row) for pid, row in zip(t["point_id"].to_pylist(), t["row"].to_pylist(), strict=True)
            if pid in wanted}
