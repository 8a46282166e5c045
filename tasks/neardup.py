"""Near-duplicate search: which vectors (or texts) are near-copies of each other.

Pairs are found by *range search* (every neighbour with cosine >= threshold), never by a fixed
k nearest neighbours: a k = 10 cap misses pairs inside dense duplicate groups (FACTS.md). Two
engines, both memory-bounded and sub-quadratic in practice:

- ``exact``: faiss ``IndexFlatIP`` over all rows, queried in blocks of ``block_rows`` (a blocked
  matrix product: exact, O(n²·d) flops but BLAS-fast; the default up to ``dedupe.exact_max_rows``);
- ``ivf``: an IVF partition (faiss spherical k-means, ``nlist`` ≈ √(nprobe·n) cells) and exact
  blocked products of each row against the members of its ``nprobe`` nearest cells (BLAS GEMM per
  cell): ~O(n·√(nprobe·n)·d). Near-duplicates sit close together, so a few probed cells recover
  almost every pair (the benchmark reports the recall). Measured here, BLAS products within cells
  were ~5× faster than ``IndexIVFFlat.range_search``'s per-query scans at the same recall.

Vectors are read from a (memory-mapped) array block by block and L2-normalised on the fly; the
exact engine holds its flat index (n·d·4 bytes, n <= ``exact_max_rows``) plus one block, the IVF
engine keeps its cell-sorted copy in a temporary file and holds one cell at a time. Pairs are folded into connected
components (union-find semantics, single linkage) as they arrive, so a dense group of g copies
never holds its g² pairs in memory at once.

A lexical pass (MinHash LSH, datasketch) finds word-level copies from texts alone, before any
embedding is paid for. :func:`same_content` confirms vector pairs on the texts (near-identical
words, same heading, same code identifiers), so shared boilerplate never merges distinct entries.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from embedline.tasks.vectors import l2_normalize

Pairs = tuple[np.ndarray, np.ndarray]  # (i, j) int64 node indices, i < j
EPS = 1e-6  # float32 rounding slack around the threshold


def normalized(block: np.ndarray) -> np.ndarray:
    """Float32, C-contiguous, unit-norm rows (zero rows stay zero)."""
    return l2_normalize(block)


def drop_pages(vectors: np.ndarray) -> None:
    """Unmap the pages of a memmap already read (they stay in the page cache), so the stage's RSS
    does not grow by the size of the vectors."""
    mm = getattr(vectors, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise"):
        with contextlib.suppress(OSError, ValueError):
            mm.madvise(mmap.MADV_DONTNEED)


def _file_position(vectors: np.ndarray) -> int | None:
    """The byte offset in its file of the first row of a C-contiguous 2-D memmap (a view too)."""
    mm = getattr(vectors, "_mmap", None)
    if mm is None or vectors.ndim != 2 or not vectors.flags.c_contiguous:
        return None
    base = np.frombuffer(mm, dtype=np.uint8)  # the mapping starts at the granularity-aligned offset
    offset = int(getattr(vectors, "offset", 0))
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    return start + int(vectors.ctypes.data - base.ctypes.data)


def _runs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rows`` sorted (and the order that sorts them), cut into runs of consecutive rows."""
    order = np.argsort(rows, kind="stable")
    srt = rows[order]
    cuts = np.flatnonzero(np.diff(srt) != 1) + 1
    return order, srt, np.concatenate([[0], cuts, [len(srt)]]).astype(np.int64)


def gather(vectors: np.ndarray, rows: np.ndarray, fd: int | None = None) -> np.ndarray:
    """``vectors[rows]``; from a memmap, read with ``preadv`` (one call per run of consecutive
    rows) instead of through the mapping: this kernel maps whole cached folios (up to megabytes)
    into the process at every page fault, so rows scattered over a memmap map most of the file
    and the RSS grows by the size of the vectors, not by the size of the block. ``fd``: the
    file, when the memmap has no file name (a temporary file)."""
    at = _file_position(vectors)
    name = getattr(vectors, "filename", None)
    if at is None or (fd is None and name is None):
        return np.asarray(vectors[rows])
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), vectors.shape[1]), dtype=vectors.dtype)
    if not len(rows):
        return out
    order, srt, bounds = _runs(rows)
    tmp = np.empty_like(out)
    width = out.shape[1] * out.itemsize
    with contextlib.ExitStack() as stack:
        if fd is None:
            fd = stack.enter_context(open(str(name), "rb", buffering=0)).fileno()
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            view = tmp[a:b].data.cast("B")
            if os.preadv(fd, [view], at + int(srt[a]) * width) != len(view):
                raise OSError(f"short read of rows {srt[a]}..{srt[b - 1]} from {name or fd}")
    out[order] = tmp
    return out


def scatter(target: np.ndarray, rows: np.ndarray, values: np.ndarray, fd: int) -> None:
    """``target[rows] = values`` for a memmap of the file ``fd``, written with ``pwritev`` (one call
    per run of consecutive rows), not through the mapping (see :func:`gather`)."""
    at = _file_position(target)
    if at is None:
        target[rows] = values
        return
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return
    order, srt, bounds = _runs(rows)
    src = np.ascontiguousarray(values[order], dtype=target.dtype)
    width = target.shape[1] * target.itemsize
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        view = src[a:b].data.cast("B")
        if os.pwritev(fd, [view], at + int(srt[a]) * width) != len(view):
            raise OSError(f"short write of rows {srt[a]}..{srt[b - 1]}")


def _blocks(vectors: np.ndarray, rows: np.ndarray, block: int) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(rows), block):
        x = normalized(gather(vectors, rows[start : start + block]))
        drop_pages(vectors)
        yield start, x


@dataclass(frozen=True)
class SearchInfo:
    method: str
    nodes: int
    pairs: int
    nlist: int = 0
    nprobe: int = 0


def choose_method(n: int, method: str, exact_max_rows: int) -> str:
    if method == "auto":
        return "exact" if n <= exact_max_rows else "ivf"
    if method not in ("exact", "ivf"):
        raise ValueError(f"unknown dedupe.method {method!r}; valid: auto, exact, ivf")
    return method


def _exact_pairs(vectors: np.ndarray, idx: np.ndarray, radius: float, block: int) -> Iterator[Pairs]:
    """faiss IndexFlatIP over all rows, range-searched in query blocks (a blocked matrix product)."""
    import faiss

    flat = faiss.IndexFlatIP(int(vectors.shape[1]))
    for _, x in _blocks(vectors, idx, block):
        flat.add(x)
    for start, x in _blocks(vectors, idx, block):
        lims, sims, nbrs = flat.range_search(x, radius)
        q = np.repeat(np.arange(start, start + len(x), dtype=np.int64), np.diff(lims).astype(np.int64))
        j = nbrs.astype(np.int64)
        keep = (j > q) & (sims >= radius)  # symmetric: each pair once
        yield q[keep], j[keep]


def ivf_shape(n: int, nlist: int | None, nprobe: int) -> tuple[int, int]:
    """(cells, probes) of the IVF cell join over ``n`` rows."""
    probes = max(1, nprobe)
    cells = int(nlist or round(math.sqrt(probes * n)))  # balances assignment and join cost
    cells = max(1, min(cells, n // 16 or 1))
    return cells, min(probes, cells)


class _CellJoin:
    """IVF partition (faiss spherical k-means, ``nlist`` cells) + exact blocked products within the
    ``nprobe`` cells nearest each row. Every row lives in its nearest cell; a row is compared with
    the members of its ``nprobe`` nearest cells, so a pair is found when one of them lies in a cell
    the other probes. The normalised vectors (n·d·4 bytes, sorted by cell) live in a temporary
    file, read cell by cell."""

    QUERY_BLOCK = 2048
    DB_BLOCK = 8192

    def __init__(self, vectors: np.ndarray, idx: np.ndarray, *, nlist: int | None, nprobe: int,
                 block: int, seed: int):
        import faiss

        n, d = len(idx), int(vectors.shape[1])
        cells, self.nprobe = ivf_shape(n, nlist, nprobe)
        self.nlist = cells
        rng = np.random.default_rng(seed)
        n_train = min(n, max(cells * 24, 10_000))
        sample = np.sort(rng.choice(n, size=n_train, replace=False))
        km = faiss.Kmeans(d, cells, niter=8, seed=seed, spherical=True, max_points_per_centroid=24,
                          min_points_per_centroid=1, verbose=False)
        km.train(normalized(gather(vectors, idx[sample])))
        drop_pages(vectors)
        quantizer = faiss.IndexFlatIP(d)
        quantizer.add(np.asarray(km.centroids, dtype=np.float32))
        assign = np.empty((n, self.nprobe), dtype=np.int64)
        big = max(block, 16_384)
        for start, x in _blocks(vectors, idx, big):
            _, a = quantizer.search(x, self.nprobe)
            assign[start : start + len(x)] = a
        primary = assign[:, 0]
        self.order = np.argsort(primary, kind="stable")  # node at each sorted position
        self.pos = np.empty(n, dtype=np.int64)
        self.pos[self.order] = np.arange(n, dtype=np.int64)
        self.starts = np.searchsorted(primary[self.order], np.arange(cells + 1))
        # normalised vectors sorted by primary cell, in a temporary file mapped read/write: the
        # join reads one cell (+ its queries) at a time and unmaps what it read, so the RSS does
        # not hold the n·d·4 bytes (1 M x 384 dims = 1.5 GB); the page cache does
        self._file = tempfile.TemporaryFile(prefix="embedline-ivf-")  # noqa: SIM115 (closed by pairs())
        self._file.truncate(max(1, n * d * 4))
        self.xs = np.memmap(self._file, dtype=np.float32, mode="r+", shape=(n, d))
        for start, x in _blocks(vectors, idx, big):
            scatter(self.xs, self.pos[start : start + len(x)], x, self._file.fileno())
        cell_of_query = assign.reshape(-1)
        query_node = np.repeat(np.arange(n, dtype=np.int64), self.nprobe)
        qo = np.argsort(cell_of_query, kind="stable")
        self.query_node = query_node[qo]
        self.qstarts = np.searchsorted(cell_of_query[qo], np.arange(cells + 1))

    def pairs(self, radius: float) -> Iterator[Pairs]:
        try:
            yield from self._pairs(radius)
        finally:
            self._file.close()

    def _pairs(self, radius: float) -> Iterator[Pairs]:
        for c in range(self.nlist):
            d0, d1 = int(self.starts[c]), int(self.starts[c + 1])
            if d1 == d0:
                continue
            nodes = self.query_node[self.qstarts[c] : self.qstarts[c + 1]]
            for qb in range(0, len(nodes), self.QUERY_BLOCK):
                qn = nodes[qb : qb + self.QUERY_BLOCK]
                q = gather(self.xs, self.pos[qn], self._file.fileno())
                for db in range(d0, d1, self.DB_BLOCK):
                    de = min(d1, db + self.DB_BLOCK)
                    members = gather(self.xs, np.arange(db, de), self._file.fileno())
                    a, b = np.nonzero(q @ members.T >= radius)
                    i, j = qn[a], self.order[db + b]
                    keep = i != j  # asymmetric: a pair may come from either side (or both)
                    i, j = i[keep], j[keep]
                    yield np.minimum(i, j), np.maximum(i, j)


def range_pairs(
    vectors: np.ndarray,
    threshold: float,
    *,
    rows: np.ndarray | None = None,
    method: str = "auto",
    exact_max_rows: int = 20_000,
    block: int = 4096,
    nlist: int | None = None,
    nprobe: int = 6,
    seed: int = 0,
) -> tuple[Iterator[Pairs], SearchInfo]:
    """Pairs (i, j), i < j, of ``rows`` (node i = ``rows[i]``) with cosine >= ``threshold``.

    Returns a lazy iterator of pair blocks (the IVF engine may repeat a pair) and a description of
    the search. ``vectors`` may be a read-only memmap; it is read block by block.
    """
    idx = np.arange(vectors.shape[0], dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    n = len(idx)
    how = choose_method(n, method, exact_max_rows)
    radius = float(threshold) - EPS
    if n < 2:
        return iter(()), SearchInfo(how, n, 0)
    if how == "exact":
        return _exact_pairs(vectors, idx, radius, block), SearchInfo(how, n, 0)
    join = _CellJoin(vectors, idx, nlist=nlist, nprobe=nprobe, block=block, seed=seed)
    return join.pairs(radius), SearchInfo(how, n, 0, join.nlist, join.nprobe)


class Components:
    """Connected components over ``n`` nodes, fed with edge blocks (union-find semantics).

    Edges are buffered and periodically compacted to a spanning star per component, so memory is
    O(n + buffer) however dense the duplicate groups are. Labels are canonical: each component is
    labelled by its smallest member.
    """

    def __init__(self, n: int, buffer_edges: int = 4_000_000):
        self.n = n
        self.buffer_edges = buffer_edges
        self._src: list[np.ndarray] = []
        self._dst: list[np.ndarray] = []
        self._buffered = 0
        self.edges_seen = 0

    def add(self, i: np.ndarray, j: np.ndarray) -> None:
        if len(i) == 0:
            return
        self._src.append(np.asarray(i, dtype=np.int64))
        self._dst.append(np.asarray(j, dtype=np.int64))
        self._buffered += len(i)
        self.edges_seen += len(i)
        if self._buffered > self.buffer_edges:
            self._compact()

    def _labels_now(self) -> np.ndarray:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        if not self._src or self.n == 0:
            return np.arange(self.n, dtype=np.int64)
        src = np.concatenate(self._src)
        dst = np.concatenate(self._dst)
        graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(self.n, self.n))
        _, lab = connected_components(graph, directed=False)
        # canonical label = smallest node of each component
        smallest = np.full(lab.max() + 1, self.n, dtype=np.int64)
        np.minimum.at(smallest, lab, np.arange(self.n, dtype=np.int64))
        return smallest[lab]

    def _compact(self) -> None:
        labels = self._labels_now()
        members = np.flatnonzero(labels != np.arange(self.n))
        self._src = [members]
        self._dst = [labels[members]]
        self._buffered = len(members)

    def labels(self) -> np.ndarray:
        """Component label per node = the smallest node index in its component."""
        return self._labels_now()


def representatives(labels: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each node, the node of its component with the smallest ``rank`` (deterministic)."""
    n = len(labels)
    best = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, labels, rank.astype(np.int64))
    node_of_rank = np.empty(int(rank.max()) + 1 if n else 0, dtype=np.int64)
    node_of_rank[rank] = np.arange(n, dtype=np.int64)
    return node_of_rank[best[labels]]


# ---- lexical (MinHash) ---------------------------------------------------------------------------
def _shingles(text: str, ngram: int) -> set[bytes]:
    words = text.lower().split()
    if len(words) < ngram:
        return {" ".join(words).encode("utf-8")} if words else set()
    return {" ".join(words[k : k + ngram]).encode("utf-8") for k in range(len(words) - ngram + 1)}


def lexical_pairs(
    texts: Sequence[str], threshold: float = 0.9, *, num_perm: int = 128, ngram: int = 3, seed: int = 1
) -> Pairs:
    """Pairs (i, j), i < j, of texts whose word-``ngram`` Jaccard similarity is likely >= threshold
    (MinHash LSH: candidates are confirmed with the MinHash Jaccard estimate)."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    hashes: list[MinHash | None] = []
    for k, text in enumerate(texts):
        sh = _shingles(text, ngram)
        if not sh:
            hashes.append(None)
            continue
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch(list(sh))
        hashes.append(m)
        lsh.insert(k, m)
    src: list[int] = []
    dst: list[int] = []
    for k, m in enumerate(hashes):
        if m is None:
            continue
        for other in lsh.query(m):
            o = int(other)
            other_hash = hashes[o]
            if o > k and other_hash is not None and m.jaccard(other_hash) >= threshold:
                src.append(k)
                dst.append(o)
    return np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)


def lexical_groups(keys: Sequence[str], texts: Sequence[str], threshold: float = 0.9) -> dict[str, str]:
    """Map each lexical near-copy's key to its group's canonical key (the smallest key).

    Usable before embedding (``dedupe.lexical``): the caller may skip paying for the mapped keys.
    Keys that are their own canonical are left out.
    """
    i, j = lexical_pairs(texts, threshold)
    comps = Components(len(keys))
    comps.add(i, j)
    labels = comps.labels()
    order = np.argsort(np.asarray(keys, dtype=object), kind="stable")
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys))
    reps = representatives(labels, rank) if len(keys) else labels
    return {keys[k]: keys[int(r)] for k, r in enumerate(reps) if int(r) != k}


# ---- textual confirmation of vector pairs ----------------------------------------------------------
# Near-duplicates are chunks that *say the same thing*: a vector pair is kept only when the texts are
# nearly identical (word-level edit ratio) and name the same things (headings, code identifiers).
# Distinct API entries that share boilerplate ("buf.readDoubleLE" vs "buf.readUInt16LE") have close
# vectors but differ in their heading and identifiers: they are never merged.
_WORDS = re.compile(r"\w+", re.UNICODE)
_IDENT = re.compile(
    r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+(?:\(\))?"  # dotted names: buf.readDoubleLE, os.path.join()
    r"|\b[a-z]+(?:[A-Z][a-z0-9]*)+\b"  # camelCase: readDoubleLE
    r"|\b[A-Za-z]\w*_\w+\b"  # snake_case: max_tokens
)


@dataclass(frozen=True)
class TextKey:
    """What a chunk's textual identity is compared on."""

    words: tuple[str, ...]
    heading: str  # the last heading of the path, case-folded ("" when none)
    identifiers: frozenset[str]


def text_key(text: str, heading_path: Sequence[str] = ()) -> TextKey:
    leaf = " ".join(heading_path[-1].split()).casefold() if heading_path else ""
    # interned: a key is a tuple of pointers to one shared copy of each word (~8 bytes a word, not
    # ~55), so the keys the confirmation holds cost what their word count does, not their text
    words = tuple(sys.intern(w.casefold()) for w in _WORDS.findall(text))
    return TextKey(words, leaf, frozenset(_IDENT.findall(text)))


def edit_ratio(a: Sequence[str], b: Sequence[str], floor: float = 0.0) -> float:
    """difflib's similarity ratio of two word sequences (1.0 = identical); returns early with an
    upper bound below ``floor`` when the texts cannot reach it."""
    import difflib

    if a == b:
        return 1.0
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if sm.real_quick_ratio() < floor or sm.quick_ratio() < floor:
        return sm.quick_ratio()
    return sm.ratio()


def same_content(a: TextKey, b: TextKey, min_ratio: float) -> str | None:
    """None when ``a`` and ``b`` may be merged, else why not (``heading``, ``identifiers``, ``text``)."""
    if a.heading and b.heading and a.heading != b.heading:
        return "heading"
    if a.identifiers != b.identifiers:
        return "identifiers"
    if min_ratio > 0 and edit_ratio(a.words, b.words, min_ratio) < min_ratio:
        return "text"
    return None
