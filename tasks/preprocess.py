"""Stage 1, preprocess: walk the source folder, load every file into Documents, reject the rest.

``run_preprocess(cfg, art)`` walks ``cfg.source`` in sorted order (deterministic), skips paths
matching ``preprocess.exclude``, picks a loader per file from :mod:`embedline.tasks.loaders` and streams the
Documents to ``art.documents`` (Parquet, in batches) and every rejected input (path, reason,
detail) to ``art.rejected`` (JSON lines). Bad input never stops the run; a folder with no usable
document at all does, with :class:`NoUsableDocumentsError`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from embedline.tasks import progress
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, PreprocessParams
from embedline.tasks.loaders import LOADERS, RejectedInput, RejectReason, loader_for, reject
from embedline.tasks.loaders.base import TRUNCATED_FIELDS
from embedline.tasks.records import Document, ParquetSink, Rejection, display_path, rejection_json

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
def run_preprocess(cfg: Config, art: Artifacts) -> dict[str, Any]:
    """Load ``cfg.source`` into ``art.documents`` (+ ``art.rejected``); return flat stats."""
    t0 = time.perf_counter()
    params = cfg.preprocess
    root = art.resolve(cfg.source)
    if not root.is_dir():
        raise PreprocessError(
            f"source folder {root} does not exist or is not a folder (param 'source')"
        )
    walk_counts: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    seen_ids: set[str] = set()
    files = bytes_in = chars_out = truncated = 0
    rejections = RejectionSink(art.rejected)
    sink = ParquetSink(art.documents, Document)
    bar = progress.shared("preprocess", unit="file")  # the walk streams: a count, no total
    try:
        for item in walk_source(root, params, walk_counts):
            if isinstance(item, Rejection):
                rejections.write(item)
                continue
            rel, path = item
            files += 1
            bar.advance()
            with contextlib.suppress(OSError):
                bytes_in += path.stat().st_size
            for out in load_path(path, rel, params):
                if isinstance(out, Rejection):
                    rejections.write(out)
                elif out.doc_id in seen_ids:
                    rejections.write(
                        reject(
                            out.source,
                            RejectReason.duplicate_id,
                            "another input already produced this source id",
                        )
                    )
                else:
                    seen_ids.add(out.doc_id)
                    truncated += len(out.metadata.get(TRUNCATED_FIELDS) or ())
                    sink.write(out)
                    formats[out.format] += 1
                    chars_out += len(out.text)
    except BaseException:
        sink.abort()
        rejections.close()
        raise
    finally:
        progress.close("preprocess")
    rejections.close()
    n_rej = sum(rejections.counts.values())
    if sink.count == 0:
        sink.abort()
        by_reason = ", ".join(f"{k}={v}" for k, v in sorted(rejections.counts.items())) or "none"
        raise NoUsableDocumentsError(
            f"no usable documents in {root}: {files} file(s) seen, {n_rej} rejected "
            f"({by_reason}), {walk_counts['excluded']} excluded; see {art.rejected}"
        )
    sink.close()
    stats: dict[str, Any] = {
        "documents": sink.count,
        "files": files,
        "rejected": n_rej,
        "excluded": walk_counts["excluded"],
        "bytes_in": bytes_in,
        "chars_out": chars_out,
        "metadata_truncated": truncated,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    stats.update({f"rejected_{r.value}": rejections.counts.get(r.value, 0) for r in RejectReason})
    known = sorted({ld.name for ld in LOADERS.values()} | set(formats))  # stable metric columns
    stats.update({f"docs_{fmt}": formats.get(fmt, 0) for fmt in known})
    if truncated:
        log.warning(
            "preprocess: %d metadata field(s) cut to preprocess.max_metadata_bytes=%d (listed in each "
            "document's truncated_fields)", truncated, params.max_metadata_bytes,
        )
    log.info("preprocess: %d documents from %d files, %d rejected", sink.count, files, n_rej)
    return stats
