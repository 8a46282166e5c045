"""Stage 1, preprocess: walk the source folder, load every file into Documents, reject the rest.

``run_preprocess(cfg, art)`` walks ``cfg.source`` in sorted order (deterministic), skips paths
matching ``preprocess.exclude``, picks a loader per file from :mod:`embedline.tasks.loaders` and writes the
Documents to the shard folder ``art.documents`` (:mod:`embedline.tasks.shards`, rows sorted by
source) and every rejected input (path, reason, detail) to ``art.rejected`` (JSON lines). Bad input
never stops the run; a folder with no usable document at all does, with
:class:`NoUsableDocumentsError`.

Incremental: the file ledger (:mod:`embedline.tasks.ledger`) remembers each file's size, mtime,
byte hash and documents. A run stats every file, hashes only those whose stat changed, loads only
those whose bytes changed, drops the documents of deleted files and rewrites only the shards the
changed documents live in. ``run.full_rebuild`` (``--full``) ignores the ledger.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedline.tasks import ledger, progress
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, PreprocessParams
from embedline.tasks.loaders import LOADERS, RejectedInput, RejectReason, loader_for, reject
from embedline.tasks.loaders.base import TRUNCATED_FIELDS
from embedline.tasks.records import (
    DOCUMENT_SCHEMA,
    Document,
    ParquetSink,
    Rejection,
    display_path,
    rejection_json,
)
from embedline.tasks.shards import remove_shards, shard_name, shard_of, shard_sizes, write_shard

log = logging.getLogger(__name__)
_LOGGED_REJECTIONS = 20


class PreprocessError(RuntimeError):
    """The source folder cannot be ingested at all."""


class NoUsableDocumentsError(PreprocessError):
    """Every input under the source folder was rejected (or there was none)."""


# ---- walking ---------------------------------------------------------------------------------------
def is_excluded(rel: str, patterns: tuple[str, ...], is_dir: bool = False) -> bool:
    """Glob match on the posix path relative to the source; a leading ``**/`` also matches at the
    top level, and a directory matches when ``dir/`` (or ``dir``) does."""
    candidates = (rel, rel + "/") if is_dir else (rel,)
    for pat in patterns:
        pats = (pat, pat[3:]) if pat.startswith("**/") else (pat,)
        if any(fnmatchcase(c, p) for c in candidates for p in pats):
            return True
    return False


_DESCEND = object()  # _classify's answer for a folder to walk into


def walk_source(
    root: Path, params: PreprocessParams, counts: Counter[str] | None = None
) -> Iterator[tuple[str, Path] | Rejection]:
    """Yield (relative posix path, path) for each regular file to load, sorted, or a Rejection for
    entries that cannot be loaded (escaping, broken or looping symlinks, special files, unreadable
    entries). Never raises for what it finds under ``root`` and always terminates: each folder is
    entered through a symlink at most once, and a failing entry is reported and skipped. Names
    that are not valid UTF-8 come through as ``os.scandir`` gives them (surrogate escapes)."""
    counts = counts if counts is not None else Counter()
    root_real = root.resolve()
    seen_dirs = {root_real}

    def visit(directory: Path, rel_dir: str) -> Iterator[tuple[str, Path] | Rejection]:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield reject(
                rel_dir or ".", RejectReason.unreadable, f"cannot list folder: {_os_detail(exc)}"
            )
            return
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                item = _classify(entry, rel, root_real, seen_dirs, params)
            except (OSError, RuntimeError) as exc:  # RuntimeError: Path.resolve on a loop (3.11)
                item = _entry_error(rel, exc)
            if item is None:
                counts["excluded"] += 1
            elif item is _DESCEND:
                yield from visit(Path(entry.path), rel)
            else:
                yield item  # type: ignore[misc]

    yield from visit(root, "")


def _classify(
    entry: os.DirEntry[str], rel: str, root_real: Path, seen_dirs: set[Path], params: PreprocessParams
) -> object:
    """None (excluded), _DESCEND (a folder to walk), (rel, path) (a file to load) or a Rejection.
    May raise OSError / RuntimeError (looping or vanished entries): the caller reports those."""
    path = Path(entry.path)
    is_link = entry.is_symlink()
    is_dir = entry.is_dir(follow_symlinks=is_link)
    if is_excluded(rel, params.exclude, is_dir):
        return None
    if is_link:
        target = path.resolve()  # not strict: a dangling link still has a target path
        if not target.is_relative_to(root_real):
            return reject(rel, RejectReason.symlink_escape, "points outside the source folder")
        if not target.exists():
            return reject(rel, RejectReason.broken_symlink, f"points to missing {os.readlink(path)}")
        if not params.follow_symlinks:
            return reject(rel, RejectReason.not_a_file, "symlink (preprocess.follow_symlinks is off)")
        if is_dir and target in seen_dirs:
            return reject(rel, RejectReason.symlink_loop, "symlink to an already walked folder")
    if is_dir:
        seen_dirs.add(path.resolve())
        return _DESCEND
    if entry.is_file(follow_symlinks=True):
        return rel, path
    return reject(rel, RejectReason.not_a_file, "not a regular file (fifo, socket or device)")


def _os_detail(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _entry_error(rel: str, exc: BaseException) -> Rejection:
    """The Rejection for an entry whose inspection raised."""
    if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP:
        return reject(rel, RejectReason.symlink_loop, "symlink loop (too many levels of symbolic links)")
    if isinstance(exc, PermissionError):
        return reject(rel, RejectReason.unreadable, f"permission denied: {_os_detail(exc)}")
    if isinstance(exc, FileNotFoundError):
        return reject(rel, RejectReason.unreadable, "vanished while the folder was walked")
    return reject(rel, RejectReason.unreadable, f"{type(exc).__name__}: {_os_detail(exc)}")


def load_path(path: Path, rel: str, params: PreprocessParams) -> Iterator[Document | Rejection]:
    """Load one file through its loader; every failure becomes a Rejection naming the file."""
    try:
        size = path.stat().st_size
        if size > params.max_file_mb * 1024 * 1024:
            yield reject(
                rel,
                RejectReason.too_large,
                f"{size / 2**20:.1f} MB > preprocess.max_file_mb={params.max_file_mb:g}",
            )
            return
        loader = loader_for(path)
        if loader is None:
            yield reject(
                rel, RejectReason.unsupported_format, f"no loader for '{path.suffix}' files"
            )
            return
        yield from loader.load(path, rel, params)
    except RejectedInput as rej:
        yield reject(rel, rej.reason, rej.detail)
    except PermissionError as exc:
        yield reject(rel, RejectReason.unreadable, f"permission denied: {exc.strerror}")
    except Exception as exc:  # a loader bug or an exotic file must not stop the corpus
        log.exception("loading %s failed", rel)
        yield reject(rel, RejectReason.load_error, f"{type(exc).__name__}: {exc}")


class RejectionSink:
    """Streams rejections to a JSON-lines file (atomically: tmp file + rename on close)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = path.with_suffix(path.suffix + ".tmp")
        self._fh = self._tmp.open("w", encoding="utf-8")
        self.counts: Counter[str] = Counter()

    def write(self, rej: Rejection) -> None:
        self._fh.write(rejection_json(rej) + "\n")
        self.counts[rej.reason] += 1
        if sum(self.counts.values()) <= _LOGGED_REJECTIONS:
            log.warning("rejected %s: %s %s", display_path(rej.path), rej.reason, display_path(rej.detail))

    def close(self) -> None:
        self._fh.close()
        os.replace(self._tmp, self.path)


# ---- the stage ---------------------------------------------------------------------------------------
def preprocess_fingerprint(cfg: Config) -> str:
    """What every document depends on besides its file: preprocess params, shard count, code."""
    params = cfg.preprocess.model_dump(
        mode="json", exclude={"lowercase", "lemmatize", "stem", "strip_code_comments"}  # chunk's
    )
    code = ledger.code_fingerprint("loaders", "normalize.py", "records.py", "preprocess.py")
    # the source as written in params (relative to the project): a moved or cloned project keeps
    # its ledger; rows are keyed by paths relative to the source anyway
    return ledger.fingerprint({"preprocess": params, "source": cfg.source}, code)


@dataclass(frozen=True)
class _Inspected:
    rel: str
    key: str
    path: Path
    st: os.stat_result | None
    digest: str
    prev: ledger.FileEntry | None
    entry: ledger.FileEntry | None  # the ledger entry to reuse, None if the file must be loaded


FileBatch = list[tuple[str, str]]  # (relative path, absolute path) of files to load
LoadMany = Callable[[PreprocessParams, list[FileBatch]], list[list[list[Document | Rejection]]]]
LOAD_WINDOW_FILES = 512  # files walked before their loads are fanned out (bounds driver memory)
LOAD_BATCH_FILES = 32  # files per fan-out task
SPILL_CHARS = 1 << 20  # characters of document text buffered per spill shard before a row group is written


def load_files(params: PreprocessParams, batch: FileBatch) -> list[list[Document | Rejection]]:
    """Run the loaders over a batch of files (one unit of the preprocess fan-out: any process,
    same output): per file, its documents and rejections in loader order."""
    return [list(load_path(Path(path), rel, params)) for rel, path in batch]


def load_serially(params: PreprocessParams, batches: list[FileBatch]) -> list[list[list[Document | Rejection]]]:
    return [load_files(params, b) for b in batches]


class _Pass:
    """One preprocess run: replays unchanged files from the ledger, loads the rest into spill
    shards, then merges every touched shard (kept rows of the old shard + the new documents)."""

    def __init__(self, art: Artifacts, params: PreprocessParams, old: dict[str, ledger.FileEntry],
                 shards: int, staging: Path, rejections: RejectionSink):
        self.art, self.params, self.old, self.shards = art, params, old, shards
        self.staging, self.rejections = staging, rejections
        self.entries: dict[str, ledger.FileEntry] = {}
        self.removed: set[str] = set()  # doc ids of changed or deleted files (old rows to drop)
        self.seen: set[str] = set()
        self.spill: dict[int, ParquetSink] = {}
        self.counts: Counter[str] = Counter()

    def inspect(self, rel: str, path: Path) -> _Inspected:
        """Stat (and, if the stat changed, hash) one file: whether its ledger entry can be reused."""
        key = display_path(rel)  # the ledger's key: a non-UTF-8 name is stored escaped
        try:
            st = path.stat()
        except OSError:
            st = None
        prev = self.old.get(key)
        digest = self._digest(prev, path, st)
        return _Inspected(rel, key, path, st, digest, prev, self._reuse(prev, st, digest))

    def visit(self, rel: str, path: Path, seen_file: _Inspected | None = None,
              loaded: list[Document | Rejection] | None = None) -> None:
        """Replay or load one file (``loaded``: its loader's output, computed elsewhere)."""
        f = seen_file or self.inspect(rel, path)
        key, st, digest, prev, entry = f.key, f.st, f.digest, f.prev, f.entry
        if entry is not None and not self.seen.intersection(entry.doc_ids):
            self.counts["files_unchanged"] += 1
            self.entries[key] = entry
            self.seen.update(entry.doc_ids)
            for r in entry.rejections:
                self.rejections.write(Rejection(**r))
            return
        self.counts["files_changed" if prev else "files_new"] += 1
        if prev:
            self.removed.update(prev.doc_ids)
        self._load(rel, key, path, st, digest, loaded)

    def _digest(self, prev: ledger.FileEntry | None, path: Path, st: os.stat_result | None) -> str:
        """The file's byte hash, unless its stat matches the ledger (then the ledger's) or it is
        too large to load anyway or unreadable ("")."""
        if st is None or st.st_size > self.params.max_file_mb * 1024 * 1024:
            return ""
        if prev is not None and prev.size == st.st_size and prev.mtime_ns == st.st_mtime_ns:
            return prev.file_hash
        self.counts["files_hashed"] += 1
        try:
            return ledger.file_hash(path)
        except OSError:
            return ""

    @staticmethod
    def _reuse(prev: ledger.FileEntry | None, st: os.stat_result | None, digest: str
               ) -> ledger.FileEntry | None:
        if prev is None or st is None or not digest or digest != prev.file_hash:
            return None
        return ledger.FileEntry(prev.path, st.st_size, st.st_mtime_ns, digest, prev.doc_ids,
                                prev.formats, prev.chars, prev.rejections)

    def _load(self, rel: str, key: str, path: Path, st: os.stat_result | None, digest: str,
              loaded: list[Document | Rejection] | None = None) -> None:
        self.counts["files_loaded"] += 1
        ids: list[str] = []
        formats: list[str] = []
        chars = 0
        rejected: list[dict[str, str]] = []
        for out in load_path(path, rel, self.params) if loaded is None else loaded:
            if not isinstance(out, Rejection) and out.doc_id in self.seen:
                out = reject(out.source, RejectReason.duplicate_id,
                             "another input already produced this source id")
            if isinstance(out, Rejection):
                self.rejections.write(out)
                rejected.append(json.loads(rejection_json(out)))
                continue
            self.seen.add(out.doc_id)
            self.counts["metadata_truncated"] += len(out.metadata.get(TRUNCATED_FIELDS) or ())
            self._sink(shard_of(out.doc_id, self.shards)).write(out)
            ids.append(out.doc_id)
            formats.append(out.format)
            chars += len(out.text)
        self.counts["documents_loaded"] += len(ids)
        if digest and st is not None:  # an unreadable file has no entry: it is retried every run
            self.entries[key] = ledger.FileEntry(key, st.st_size, st.st_mtime_ns, digest, tuple(ids),
                                                 tuple(formats), chars, tuple(rejected))

    def _sink(self, shard: int) -> ParquetSink:
        if shard not in self.spill:
            # bounded by characters too: one buffer per shard, so rows alone would let the buffers
            # hold most of a corpus of large documents (shards x 256 documents) until the merge
            self.spill[shard] = ParquetSink(self.staging / shard_name(shard), Document, batch_rows=256,
                                            batch_chars=SPILL_CHARS)
        return self.spill[shard]

    def finish_deletions(self, visited: set[str]) -> None:
        for rel, prev in self.old.items():
            if rel not in visited:
                self.counts["files_deleted"] += 1
                self.removed.update(prev.doc_ids)

    def merge(self, full: bool) -> None:
        """Rewrite the touched shards; with ``full``, also drop every shard not written."""
        for sink in self.spill.values():
            sink.close()
        by_shard: dict[int, set[str]] = {}
        for doc_id in self.removed:
            by_shard.setdefault(shard_of(doc_id, self.shards), set()).add(doc_id)
        touched = sorted(set(by_shard) | set(self.spill))
        written = []
        for i in touched:
            parts = [] if full else _kept_rows(self.art.documents / shard_name(i), by_shard.get(i, set()))
            if i in self.spill:
                parts.append(pq.ParquetFile(self.spill[i].path).read().cast(DOCUMENT_SCHEMA))
            table = pa.concat_tables(parts) if parts else DOCUMENT_SCHEMA.empty_table()
            if write_shard(self.art.documents, i, table, ["source"]) is not None:
                written.append(i)
        self.counts["shards_written"] = len(touched)
        if full:
            self.counts["shards_removed"] = len(remove_shards(self.art.documents, written))


def _kept_rows(path: Path, drop: set[str]) -> list[pa.Table]:
    if not path.exists():
        return []
    table = pq.ParquetFile(path).read().cast(DOCUMENT_SCHEMA)  # read_table imports pandas
    if drop:
        table = table.filter(pc.invert(pc.is_in(table["doc_id"], value_set=pa.array(sorted(drop)))))
    return [table]


_Walked = tuple[tuple[str, Path] | Rejection, "_Inspected | None", "list[Document | Rejection] | None"]


def _with_loads(run: _Pass, walk: Iterator[tuple[str, Path] | Rejection], load_many: LoadMany | None
                ) -> Iterator[_Walked]:
    """The walk, in order; with ``load_many``, each window of files is inspected first and the
    files to load are loaded by ``load_many`` (in parallel elsewhere) before the window is replayed."""
    if load_many is None:
        for item in walk:
            yield item, None, None
        return
    window: list[tuple[str, Path] | Rejection] = []
    for item in walk:
        window.append(item)
        if len(window) >= LOAD_WINDOW_FILES:
            yield from _replay(run, window, load_many)
            window = []
    yield from _replay(run, window, load_many)


def _replay(run: _Pass, window: list[tuple[str, Path] | Rejection], load_many: LoadMany) -> Iterator[_Walked]:
    inspected: dict[int, _Inspected] = {}
    for i, item in enumerate(window):
        if not isinstance(item, Rejection):
            inspected[i] = run.inspect(*item)
    todo = [i for i, f in inspected.items() if f.entry is None]
    batches = [todo[k : k + LOAD_BATCH_FILES] for k in range(0, len(todo), LOAD_BATCH_FILES)]
    results = load_many(run.params, [[(inspected[i].rel, str(inspected[i].path)) for i in b] for b in batches])
    loaded = {i: out for b, res in zip(batches, results, strict=True) for i, out in zip(b, res, strict=True)}
    for i, item in enumerate(window):
        yield item, inspected.get(i), loaded.get(i)


def run_preprocess(cfg: Config, art: Artifacts, load_many: LoadMany | None = None) -> dict[str, Any]:
    """Load ``cfg.source`` into the ``art.documents`` shards (+ ``art.rejected``, ``art.ledger``);
    only files whose bytes changed since the ledger was written are loaded. Returns flat stats.

    ``load_many`` runs the loaders over batches of files elsewhere (a Dask cluster: the flow's
    preprocess fan-out); the walk, the ledger and the shard merge stay here, in walk order, so the
    artifacts are byte-identical to an in-process run."""
    t0 = time.perf_counter()
    params = cfg.preprocess
    root = art.resolve(cfg.source)
    if not root.is_dir():
        raise PreprocessError(
            f"source folder {root} does not exist or is not a folder (param 'source')"
        )
    header = ledger.LedgerHeader(preprocess_fingerprint(cfg), cfg.run.shards)
    why = "run.full_rebuild" if cfg.run.full_rebuild else ledger.usable(art.ledger, header, art.documents)
    old = {} if why else ledger.read_files(art.ledger)
    if why:
        log.info("preprocess: loading every file (%s)", why)
    walk_counts: Counter[str] = Counter()
    files = bytes_in = 0
    visited: set[str] = set()
    art.interim.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".preprocess-", dir=art.interim))
    rejections = RejectionSink(art.rejected)
    run = _Pass(art, params, old, cfg.run.shards, staging, rejections)
    bar = progress.shared("preprocess", unit="file")  # the walk streams: a count, no total
    try:
        for item, inspected, loaded in _with_loads(run, walk_source(root, params, walk_counts), load_many):
            if isinstance(item, Rejection):
                rejections.write(item)
                continue
            rel, path = item
            files += 1
            bar.advance()
            visited.add(display_path(rel))
            with contextlib.suppress(OSError):
                bytes_in += path.stat().st_size
            run.visit(rel, path, inspected, loaded)
        rejections.close()
        n_docs = sum(len(e.doc_ids) for e in run.entries.values())
        n_rej = sum(rejections.counts.values())
        if n_docs == 0:
            by_reason = ", ".join(f"{k}={v}" for k, v in sorted(rejections.counts.items())) or "none"
            raise NoUsableDocumentsError(
                f"no usable documents in {root}: {files} file(s) seen, {n_rej} rejected "
                f"({by_reason}), {walk_counts['excluded']} excluded; see {art.rejected}"
            )
        run.finish_deletions(visited)
        run.merge(full=bool(why))
        header.outputs = shard_sizes(art.documents)
        ledger.write_files(art.ledger, run.entries, header)
    finally:
        progress.close("preprocess")
        for sink in run.spill.values():
            with contextlib.suppress(OSError):
                sink.abort()
        shutil.rmtree(staging, ignore_errors=True)
        if not rejections._fh.closed:
            rejections.close()
    return _stats(run, rejections, files, walk_counts, bytes_in, t0)


def _stats(run: _Pass, rejections: RejectionSink, files: int, walk_counts: Counter[str],
           bytes_in: int, t0: float) -> dict[str, Any]:
    formats: Counter[str] = Counter(f for e in run.entries.values() for f in e.formats)
    n_docs = sum(len(e.doc_ids) for e in run.entries.values())
    n_rej = sum(rejections.counts.values())
    stats: dict[str, Any] = {
        "documents": n_docs,
        "files": files,
        "rejected": n_rej,
        "excluded": walk_counts["excluded"],
        "bytes_in": bytes_in,
        "chars_out": sum(e.chars for e in run.entries.values()),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    for key in ("files_new", "files_changed", "files_deleted", "files_unchanged", "files_hashed",
                "files_loaded", "documents_loaded", "shards_written", "shards_removed",
                "metadata_truncated"):
        stats[key] = run.counts.get(key, 0)
    stats.update({f"rejected_{r.value}": rejections.counts.get(r.value, 0) for r in RejectReason})
    known = sorted({ld.name for ld in LOADERS.values()} | set(formats))  # stable metric columns
    stats.update({f"docs_{fmt}": formats.get(fmt, 0) for fmt in known})
    log.info("preprocess: %d documents from %d files (%d loaded, %d deleted), %d rejected", n_docs,
             files, stats["files_loaded"], stats["files_deleted"], n_rej)
    return stats
