"""Intrinsic checks of a vector set: duplicate rate, silhouette over source folders, a 2-D map, and
the recall@k curve file (a DVC plot).

Vectors are read back from the store (what is served, whatever the backend) and sampled
deterministically: the ``map_sample`` points with the smallest hash of their id, so the same
collection always gives the same sample, without holding all of it in memory.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedline.tasks.artifacts import Artifacts, atomic_path
from embedline.tasks.records import read_json

log = logging.getLogger(__name__)
SEED = 0


def duplicate_rate(art: Artifacts) -> float | None:
    """Share of chunks that duplicate another chunk (exact copies + near-duplicates), from the
    dedupe report; None when the dedupe stage has not run."""
    if not art.dedupe_report.exists():
        return None
    r = read_json(art.dedupe_report)
    n = int(r.get("input_rows", 0))
    if n <= 0:
        return 0.0
    dups = (n - int(r.get("unique_texts", n))) + int(r.get("near_duplicates", 0))
    return round(dups / n, 6)


def source_label(source: str) -> str:
    """Top-level folder of a source path ("astronomy/black_holes.md" -> "astronomy"); "." at the root."""
    path = source.split("#", 1)[0]
    return path.split("/", 1)[0] if "/" in path else "."


def _hash_key(point_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(point_id.encode(), digest_size=8).digest(), "big")


def sample_vectors(store: Any, collection: str, n: int) -> tuple[np.ndarray, list[str]]:
    """Up to ``n`` (vector, source label) pairs from ``collection`` (deterministic sample)."""
    heap: list[tuple[int, str, np.ndarray, str]] = []  # max-heap on hash via negation
    for rec in store.scan(collection, with_vectors=True, with_payload=["source"]):
        if rec.vector is None:
            continue
        key = -_hash_key(rec.id)
        item = (key, rec.id, rec.vector, source_label(str((rec.payload or {}).get("source", ""))))
        if len(heap) < n:
            heapq.heappush(heap, item)
        elif key > heap[0][0]:
            heapq.heapreplace(heap, item)
    heap.sort(key=lambda t: t[1])
    if not heap:
        return np.zeros((0, 0), dtype=np.float32), []
    return np.stack([t[2] for t in heap]).astype(np.float32), [t[3] for t in heap]


def silhouette(vectors: np.ndarray, labels: Sequence[str]) -> float | None:
    """Cosine silhouette of the vectors grouped by label; None when undefined (< 2 labels, or as
    many labels as points)."""
    n_labels = len(set(labels))
    if len(labels) < 3 or not 2 <= n_labels <= len(labels) - 1:
        return None
    from sklearn.metrics import silhouette_score

    return round(float(silhouette_score(vectors, list(labels), metric="cosine")), 6)


def project_2d(vectors: np.ndarray) -> np.ndarray:
    """t-SNE to 2-D (scikit-learn, PCA init, fixed seed); perplexity adapted to small samples."""
    n = vectors.shape[0]
    if n < 4:
        return np.zeros((n, 2), dtype=np.float32)
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=SEED, metric="cosine")
    # One OpenMP thread: the Barnes-Hut gradient's threads busy-wait, and on a shared 2-core machine
    # 290 points took 67 s instead of 3 s (benchmarks/results/speed.json); one thread also makes the
    # map the same bits whatever the core count.
    with threadpool_limits(limits=1, user_api="openmp"):
        return np.asarray(tsne.fit_transform(vectors), dtype=np.float32)


def save_map(vectors: np.ndarray, labels: Sequence[str], path: Path, title: str = "") -> Path:
    """A scatter PNG of the 2-D projection, coloured by label (matplotlib, Agg, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if vectors.shape[0] >= 4:
        xy = project_2d(vectors)
        groups = sorted(set(labels))
        import matplotlib

        palette = "tab10" if len(groups) <= 10 else "tab20"
        cmap = matplotlib.colormaps[palette]
        size = 8 if len(labels) > 500 else 24
        lab = np.asarray(labels)
        for i, g in enumerate(groups):
            sel = lab == g
            ax.scatter(
                xy[sel, 0], xy[sel, 1], s=size, alpha=0.8, color=cmap(i % cmap.N), label=f"{g} ({int(sel.sum())})"
            )
        if len(groups) <= 20:
            ax.legend(loc="best", fontsize=7, markerscale=1.5)
    else:
        ax.text(0.5, 0.5, f"too few points to map ({vectors.shape[0]})", ha="center", va="center")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE of {vectors.shape[0]} chunk vectors by top-level folder", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def write_curve(path: Path, curves: Mapping[str, Sequence[float]]) -> Path:
    """``k,<method>,...`` rows for k = 1..K (recall@k per method): a DVC plot source."""
    names = list(curves)
    depth = max((len(v) for v in curves.values()), default=0)
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["k", *names])
        for i in range(depth):
            w.writerow([i + 1, *(f"{curves[m][i]:.6f}" if i < len(curves[m]) else "" for m in names)])
    return path


def intrinsic_checks(
    store: Any, collection: str, art: Artifacts, *, sample: int, map_path: Path | None
) -> dict[str, Any]:
    """duplicate_rate, silhouette (+ the sampled point count) and, if ``map_path``, the PNG map."""
    vectors, labels = sample_vectors(store, collection, sample)
    out: dict[str, Any] = {
        "duplicate_rate": duplicate_rate(art),
        "silhouette": silhouette(vectors, labels) if len(labels) else None,
        "map_points": len(labels),
        "map_labels": len(set(labels)),
    }
    if map_path is not None:
        save_map(vectors, labels, map_path)
    return out


def _vector_set_key(store: Any, collection: str, art: Artifacts, sample: int) -> str | None:
    """What the intrinsic checks depend on: the collection, its size, the sample size and the
    bytes of the deduplicated vector set (byte-stable across runs that change nothing)."""
    import hashlib
    import json

    from embedline.tasks.shards import shard_files

    files = shard_files(art.deduped)
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:  # the deduped shards, in shard order
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    key = {"collection": collection, "points": store.count(collection), "sample": sample, "deduped": h.hexdigest()}
    return json.dumps(key, sort_keys=True)


def cached_intrinsic_checks(
    store: Any, collection: str, art: Artifacts, *, sample: int, map_path: Path | None
) -> dict[str, Any]:
    """:func:`intrinsic_checks`, recomputed only when the vector set changed (t-SNE, silhouette and
    the PNG cost seconds to minutes; a run that changed nothing reuses the previous result)."""
    import json

    memo = art.root / "data" / "cache" / "eval-intrinsic.json"
    key = _vector_set_key(store, collection, art, sample)
    if key is not None and memo.is_file() and (map_path is None or map_path.is_file()):
        try:
            saved = json.loads(memo.read_text())
        except (OSError, ValueError):
            saved = {}
        if saved.get("key") == key:
            return dict(saved["result"])
    result = intrinsic_checks(store, collection, art, sample=sample, map_path=map_path)
    if key is not None:
        from embedline.tasks.artifacts import atomic_write_text

        atomic_write_text(memo, json.dumps({"key": key, "result": result}, sort_keys=True))
    return result
