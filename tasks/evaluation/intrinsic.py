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
from collections.abc import Callable, Mapping, Sequence
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
    many labels as points). Numpy, step for step what ``sklearn.metrics.silhouette_score(...,
    metric="cosine")`` computes (same dtype, same reductions: equal on the tests), without
    scikit-learn's import (scipy.stats, pandas: ~2.7 CPU s)."""
    n_labels = len(set(labels))
    if len(labels) < 3 or not 2 <= n_labels <= len(labels) - 1:
        return None
    return round(float(np.mean(_silhouette_samples(vectors, labels))), 6)


def _silhouette_samples(vectors: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    x = np.asarray(vectors)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    codes = codes.reshape(-1)
    freqs = np.bincount(codes)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms == 0.0] = 1.0
    xn = x / norms[:, np.newaxis]
    dist = xn @ xn.T  # cosine distance = clip(1 - similarity, 0, 2), 0 on the diagonal
    dist *= -1
    dist += 1
    dist = np.clip(dist, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    sums = np.zeros((x.shape[0], freqs.shape[0]), dtype=dist.dtype)
    for i in range(x.shape[0]):
        sums[i] += np.bincount(codes, weights=dist[i], minlength=freqs.shape[0])
    own = (np.arange(x.shape[0]), codes)
    intra = sums[own]
    sums[own] = np.inf
    sums /= freqs
    inter = sums.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        intra /= (freqs - 1).take(codes, mode="clip")
        sil = inter - intra
        sil /= np.maximum(intra, inter)
    return np.nan_to_num(sil)


MAP_MAX_POINTS = 500  # the t-SNE map's bound (exact t-SNE is O(n^2) per iteration); silhouette uses the whole sample
TSNE_ITERATIONS = 750  # 250 with early exaggeration, then 500 (openTSNE's defaults)


def _pca_init(x: np.ndarray) -> np.ndarray:
    """First two principal components (signs fixed: largest loading positive), scaled so the first
    has standard deviation 1e-4 (scikit-learn's t-SNE ``init="pca"``)."""
    xc = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    comps = vt[:2]
    signs = np.sign(comps[np.arange(2), np.argmax(np.abs(comps), axis=1)])
    y = xc @ (comps * signs[:, None]).T
    return y / (np.std(y[:, 0]) or 1.0) * 1e-4


def _joint_p(dist: np.ndarray, perplexity: float) -> np.ndarray:
    """Symmetric t-SNE affinities: per-point Gaussian bandwidths by bisection to the perplexity
    (all rows at once), then P = (P + P^T) / sum."""
    n = dist.shape[0]
    target = np.log(perplexity)
    beta = np.ones(n)
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    off = ~np.eye(n, dtype=bool)
    for _ in range(100):
        p = np.exp(-dist * beta[:, None]) * off
        s = np.maximum(p.sum(axis=1), 1e-12)
        h = np.log(s) + beta * (dist * p).sum(axis=1) / s
        up = h > target  # entropy too high: narrower kernel
        lo = np.where(up, beta, lo)
        hi = np.where(up, hi, beta)
        beta = np.where(up, np.where(np.isinf(hi), beta * 2, (beta + hi) / 2),
                        np.where(np.isinf(lo), beta / 2, (beta + lo) / 2))
        if np.all(np.abs(h - target) < 1e-5):
            break
    p = p / s[:, None]
    p = p + p.T
    return np.maximum(p / p.sum(), np.finfo(np.float64).eps)


def _tsne(x: np.ndarray, perplexity: float, iterations: int = TSNE_ITERATIONS) -> np.ndarray:
    """Exact t-SNE (van der Maaten & Hinton 2008, as scikit-learn's ``method="exact"``: cosine input
    distances, PCA init, early exaggeration 12 for 250 steps, momentum 0.5 then 0.8, gains,
    learning rate max(n / 48, 50)). No randomness: the same input gives the same bits."""
    n = x.shape[0]
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    dist = np.clip(1.0 - xn @ xn.T, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    p = _joint_p(dist, perplexity).astype(np.float32)
    y = _pca_init(x).astype(np.float32)
    update, gains = np.zeros_like(y), np.ones_like(y)
    lr = max(n / 12.0 / 4.0, 50.0)
    eps = np.float32(np.finfo(np.float64).eps)
    for it in range(iterations):
        exaggerate, momentum = (12.0, 0.5) if it < 250 else (1.0, 0.8)
        sq = (y * y).sum(axis=1)
        num = y @ y.T
        num *= -2.0
        num += sq[:, None]
        num += sq[None, :]
        np.maximum(num, 0.0, out=num)
        num += 1.0
        np.reciprocal(num, out=num)
        np.fill_diagonal(num, 0.0)
        w = np.maximum(num / num.sum(), eps)  # q
        np.subtract(p * exaggerate if exaggerate != 1.0 else p, w, out=w)
        w *= num
        grad = 4.0 * (w.sum(axis=1)[:, None] * y - w @ y)
        inc = update * grad < 0.0
        gains = np.maximum(np.where(inc, gains + 0.2, gains * 0.8), 0.01).astype(np.float32)
        update = (momentum * update - lr * gains * grad).astype(np.float32)
        y = y + update
    return y


def map_subset(n: int, limit: int = MAP_MAX_POINTS) -> np.ndarray:
    """Indices of at most ``limit`` of ``n`` sampled points, evenly spaced (the sample is in id
    order, itself a hash order: the subset is as random as the sample, and deterministic)."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def project_2d(vectors: np.ndarray) -> np.ndarray:
    """Exact t-SNE to 2-D (:func:`_tsne`, PCA init, no randomness); perplexity adapted to small
    samples. numpy on one BLAS thread: the same bits on any core count, and no scikit-learn import
    (its Barnes-Hut t-SNE and import were ~7 CPU s for 290 points; this is ~0.7 s)."""
    n = vectors.shape[0]
    if n < 4:
        return np.zeros((n, 2), dtype=np.float32)
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    with threadpool_limits(limits=1):
        return np.asarray(_tsne(np.asarray(vectors, dtype=np.float64), perplexity), dtype=np.float32)


def save_map(vectors: np.ndarray, labels: Sequence[str], path: Path, title: str = "") -> Path:
    """A scatter PNG of the 2-D projection, coloured by label (:func:`embedline.tasks.charts.scatter_chart`)."""
    from embedline.tasks.charts import scatter_chart

    keep = map_subset(vectors.shape[0])
    vectors, labels = vectors[keep], [labels[i] for i in keep]
    groups: dict[str, np.ndarray] = {}
    note = ""
    if vectors.shape[0] >= 4:
        xy = project_2d(vectors)
        lab = np.asarray(labels)
        groups = {g: xy[lab == g] for g in sorted(set(labels))}
    else:
        note = f"too few points to map ({vectors.shape[0]})"
    title = title or f"t-SNE of {vectors.shape[0]} chunk vectors by top-level folder"
    return scatter_chart(path, groups, title=title, note=note)


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
    return checks_of_sample(vectors, labels, art, map_path)


def checks_of_sample(vectors: np.ndarray, labels: Sequence[str], art: Artifacts, map_path: Path | None) -> dict[str, Any]:
    """:func:`intrinsic_checks` on an already drawn sample (reads no store: may run in a thread)."""
    out: dict[str, Any] = {
        "duplicate_rate": duplicate_rate(art),
        "silhouette": silhouette(vectors, labels) if len(labels) else None,
        "map_points": min(len(labels), MAP_MAX_POINTS),
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
    key = {"collection": collection, "points": store.count(collection), "sample": sample, "deduped": h.hexdigest(),
           "map": f"exact-tsne/{MAP_MAX_POINTS}/{TSNE_ITERATIONS}"}
    return json.dumps(key, sort_keys=True)


def cached_intrinsic_checks(
    store: Any, collection: str, art: Artifacts, *, sample: int, map_path: Path | None
) -> dict[str, Any]:
    """:func:`intrinsic_checks`, recomputed only when the vector set changed (t-SNE, silhouette and
    the PNG cost seconds to minutes; a run that changed nothing reuses the previous result)."""
    return intrinsic_job(store, collection, art, sample=sample, map_path=map_path)()


def intrinsic_job(
    store: Any, collection: str, art: Artifacts, *, sample: int, map_path: Path | None
) -> Callable[[], dict[str, Any]]:
    """:func:`cached_intrinsic_checks` in two steps: what reads the store (the vector-set key, the
    memo, the sample) runs now, in the caller's thread; the returned function does the rest (t-SNE,
    silhouette, the PNG, the memo file) and touches no store, so the evaluate stage runs it in a
    thread while the retrieval methods embed and search (ONNX Runtime releases the GIL)."""
    import json

    memo = art.root / "data" / "cache" / "eval-intrinsic.json"
    key = _vector_set_key(store, collection, art, sample)
    if key is not None and memo.is_file() and (map_path is None or map_path.is_file()):
        try:
            saved = json.loads(memo.read_text())
        except (OSError, ValueError):
            saved = {}
        if saved.get("key") == key:
            result = dict(saved["result"])
            return lambda: result
    vectors, labels = sample_vectors(store, collection, sample)

    def finish() -> dict[str, Any]:
        result = checks_of_sample(vectors, labels, art, map_path)
        if key is not None:
            from embedline.tasks.artifacts import atomic_write_text

            atomic_write_text(memo, json.dumps({"key": key, "result": result}, sort_keys=True))
        return result

    return finish
