"""The source walk under bad input: odd file names, symlink loops, special and unreadable entries.

The property test builds random trees (names of arbitrary bytes: any encoding, or none) and checks
that preprocess always terminates, loads every good file and reports every bad entry with a reason.
Tests run as root, which reads any file whatever its mode: there, "unreadable" is made real by
failing the very calls that would fail for another user (listing a folder, reading a file);
as any other user the modes alone do it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, PreprocessParams
from embedline.tasks.loaders.base import TRUNCATED_FIELDS, cap_metadata
from embedline.tasks.preprocess import run_preprocess, walk_source
from embedline.tasks.records import (
    Document,
    Rejection,
    display_path,
    doc_id_for,
    iter_records,
    read_rejections,
)

pytestmark = pytest.mark.unit
ROOT_USER = os.geteuid() == 0
UNREADABLE = b"UNREADABLE"


def preprocess(src: Path, out: Path, **pre: Any) -> tuple[dict[str, Any], list[Document], list[Rejection]]:
    cfg = Config.model_validate({"source": str(src), "preprocess": {"exclude": [], **pre}})
    art = Artifacts(out)
    stats = run_preprocess(cfg, art)
    return stats, list(iter_records(art.documents, Document)), read_rejections(art.rejected)


# ---- single cases (each failed the whole run before) -------------------------------------------
def test_non_utf8_file_name_is_ingested_and_reported_readably(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    good = os.path.join(os.fsencode(src), b"bad\xff\xfename.txt")
    with open(good, "wb") as fh:
        fh.write(b"A file whose name is not UTF-8 still has good text.\n")
    with open(os.path.join(os.fsencode(src), b"empty\xe9.txt"), "wb"):
        pass
    (src / "ok.txt").write_text("An ordinary file.\n")
    stats, docs, rejected = preprocess(src, tmp_path / "out")
    assert sorted(d.source for d in docs) == ["bad\\xff\\xfename.txt", "ok.txt"]
    bad = next(d for d in docs if d.source.startswith("bad"))
    assert bad.doc_id == doc_id_for(os.fsdecode(b"bad\xff\xfename.txt"))
    assert [(r.path, r.reason) for r in rejected] == [("empty\\xe9.txt", "empty")]
    assert stats["documents"] == 2 and stats["rejected"] == 1


def test_doc_ids_hash_the_raw_bytes_of_a_name() -> None:
    assert doc_id_for("a/b.txt") == hashlib.sha256(b"a/b.txt").hexdigest()[:32]  # unchanged for UTF-8
    latin, utf8 = os.fsdecode(b"caf\xe9.txt"), "café.txt"
    assert doc_id_for(latin) != doc_id_for(utf8)  # two files, two ids
    assert display_path(latin) == "caf\\xe9.txt" and display_path(utf8) == utf8


def test_file_symlink_loop_is_reported_not_fatal(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").symlink_to("b.txt")
    (src / "b.txt").symlink_to("a.txt")
    (src / "self.txt").symlink_to("self.txt")
    (src / "sub").mkdir()
    (src / "sub" / "up").symlink_to("..", target_is_directory=True)
    (src / "good.txt").write_text("Good text next to a symlink loop.\n")
    _, docs, rejected = preprocess(src, tmp_path / "out")
    assert [d.source for d in docs] == ["good.txt"]
    assert {(r.path, r.reason) for r in rejected} == {
        ("a.txt", "symlink_loop"), ("b.txt", "symlink_loop"), ("self.txt", "symlink_loop"),
        ("sub/up", "symlink_loop"),
    }


def test_lone_surrogates_in_json_do_not_stop_the_run(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "r.jsonl").write_text(
        '{"_id": "x\\ud800", "text": "text with a lone \\udc80 surrogate", "tag": "\\ud83d"}\n'
        '{"_id": "2", "text": "a clean record"}\n'
    )
    _, docs, rejected = preprocess(src, tmp_path / "out")
    assert rejected == [] and len(docs) == 2
    assert "\ufffd" in docs[0].text and docs[0].metadata["tag"] == "\ufffd"


# ---- payload metadata cap (issue 14 row 18) -------------------------------------------------------
def test_big_side_fields_are_capped_and_reported(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    big = "é" * 600_000  # 1.2 MB of UTF-8
    rec = {"_id": "1", "text": "A record with a huge side field.", "blob": big, "small": "kept",
           "nested": {"list": list(range(2000))}}
    (src / "r.jsonl").write_text(json.dumps(rec) + "\n")
    stats, docs, _ = preprocess(src, tmp_path / "out", max_metadata_bytes=1024)
    meta = docs[0].metadata
    assert meta["small"] == "kept" and meta["record"] == "1"
    assert len(meta["blob"].encode()) <= 1024 + 3 and meta["blob"].endswith("…")
    assert isinstance(meta["nested"], str) and len(meta["nested"].encode()) <= 1024 + 3
    assert meta[TRUNCATED_FIELDS] == {"blob": len(json.dumps(big, ensure_ascii=False).encode()),
                                     "nested": len(json.dumps(rec["nested"]).encode())}
    assert stats["metadata_truncated"] == 2
    assert len(json.dumps(meta, ensure_ascii=False).encode()) < 4096


def test_metadata_cap_default_off_switch_and_fingerprint() -> None:
    assert PreprocessParams().max_metadata_bytes == 4096
    assert cap_metadata({"a": "x" * 10_000}, 0) == {"a": "x" * 10_000}  # 0 = no cap
    base = Config()
    other = Config.model_validate({"preprocess": {"max_metadata_bytes": 100}})
    assert base.fingerprint("r") == other.fingerprint("r")  # payload-only: vectors do not change


# ---- the property: random trees ---------------------------------------------------------------------
KINDS = ("good", "good", "empty", "binary", "fifo", "dangling", "loop_pair", "self_loop",
         "dir_loop", "link_to_good", "escape", "unreadable_file")
ENCODINGS = ("utf-8", "latin-1", "cp1252", "shift_jis", "koi8-r", "utf-16-le", "big5")


def _clean(name: bytes) -> bytes:
    return name.replace(b"/", b"_").replace(b"\x00", b"_")


names = st.one_of(
    st.binary(max_size=10).map(_clean),  # any bytes at all
    st.tuples(st.text(max_size=6), st.sampled_from(ENCODINGS)).map(
        lambda t: _clean(t[0].encode(t[1], errors="replace"))
    ),
)
entries = st.lists(st.tuples(st.sampled_from(KINDS), names, st.integers(0, 3)), min_size=1, max_size=12)
folders = st.lists(st.tuples(names, st.integers(0, 3), st.booleans()), max_size=3)


@contextlib.contextmanager
def unreadable_as_root() -> Iterator[None]:
    """As root: listing a folder or reading a file whose name holds UNREADABLE fails with EACCES."""
    if not ROOT_USER:
        yield
        return
    real_scandir, real_read = os.scandir, Path.read_bytes

    def scandir(path: Any = ".") -> Any:
        if UNREADABLE in os.fsencode(path).rsplit(b"/", 1)[-1]:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    def read_bytes(self: Path) -> bytes:
        if UNREADABLE in os.fsencode(self.name):
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    with mock.patch("os.scandir", scandir), mock.patch.object(Path, "read_bytes", read_bytes):
        yield


def _write(path: bytes, body: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(body)


Made = list[tuple[bytes, str]]  # (path relative to the item's folder, "good" or the expected reason)


def _plain(kind: str) -> Any:
    body = {"good": b"good text\n", "empty": b"", "binary": b"\x00\x01\x02" * 8}[kind]

    def make(folder: bytes, name: bytes, up: bytes) -> Made:
        _write(os.path.join(folder, name), body)
        return [(name, {"good": "good"}.get(kind, kind))]

    return make


def _unreadable_file(folder: bytes, name: bytes, up: bytes) -> Made:
    name = name[: -len(b".txt")] + UNREADABLE + b".txt"
    _write(os.path.join(folder, name), b"secret text\n")
    os.chmod(os.path.join(folder, name), 0)
    return [(name, "unreadable")]


def _fifo(folder: bytes, name: bytes, up: bytes) -> Made:
    os.mkfifo(os.path.join(folder, name))
    return [(name, "not_a_file")]


def _dangling(folder: bytes, name: bytes, up: bytes) -> Made:
    os.symlink(b"missing-" + name, os.path.join(folder, name))
    return [(name, "broken_symlink")]


def _loop_pair(folder: bytes, name: bytes, up: bytes) -> Made:
    other = name[: -len(b".txt")] + b"-pair.txt"
    os.symlink(other, os.path.join(folder, name))
    os.symlink(name, os.path.join(folder, other))
    return [(name, "symlink_loop"), (other, "symlink_loop")]


def _self_loop(folder: bytes, name: bytes, up: bytes) -> Made:
    os.symlink(name, os.path.join(folder, name))
    return [(name, "symlink_loop")]


def _dir_loop(folder: bytes, name: bytes, up: bytes) -> Made:
    os.symlink(up or b".", os.path.join(folder, name))  # to the source root: already walked
    return [(name, "symlink_loop")]


def _link_to_good(folder: bytes, name: bytes, up: bytes) -> Made:
    target = b"target-" + name
    _write(os.path.join(folder, target), b"linked text\n")
    os.symlink(target, os.path.join(folder, name))
    return [(name, "good"), (target, "good")]


def _escape(folder: bytes, name: bytes, up: bytes) -> Made:
    os.symlink(up + b"../outside/secret.txt", os.path.join(folder, name))
    return [(name, "symlink_escape")]


MAKERS = {"good": _plain("good"), "empty": _plain("empty"), "binary": _plain("binary"),
          "unreadable_file": _unreadable_file, "fifo": _fifo, "dangling": _dangling,
          "loop_pair": _loop_pair, "self_loop": _self_loop, "dir_loop": _dir_loop,
          "link_to_good": _link_to_good, "escape": _escape}


def build_tree(top: bytes, dirs: list[tuple[bytes, int, bool]],
               items: list[tuple[str, bytes, int]]) -> tuple[set[str], set[tuple[str, str]]]:
    """Create the tree under ``top/src``; return (expected good rel paths, expected rejections)."""
    src = os.path.join(top, b"src")
    os.makedirs(os.path.join(top, b"outside"))
    _write(os.path.join(top, b"outside", b"secret.txt"), b"outside text\n")
    os.mkdir(src)
    folders_rel: list[tuple[bytes, bool]] = [(b"", True)]  # (rel, readable)
    locked: list[bytes] = []  # unreadable folders, locked once filled
    good: set[str] = set()
    bad: set[tuple[str, str]] = set()
    for i, (name, parent, unreadable) in enumerate(dirs):
        prel, preadable = folders_rel[parent % len(folders_rel)]
        rel = (prel + b"/" if prel else b"") + name + (UNREADABLE if unreadable else b"") + b"-d%d" % i
        os.mkdir(os.path.join(src, rel))
        if unreadable:
            locked.append(os.path.join(src, rel))
            if preadable:
                bad.add((os.fsdecode(rel), "unreadable"))
        folders_rel.append((rel, preadable and not unreadable))
    for i, (kind, name, where) in enumerate(items):
        frel, readable = folders_rel[where % len(folders_rel)]
        up = b"../" * (frel.count(b"/") + 1) if frel else b""
        made = MAKERS[kind](os.path.join(src, frel), name + b"-%d.txt" % i, up)
        for made_name, outcome in made if readable else ():
            rel = os.fsdecode((frel + b"/" if frel else b"") + made_name)
            good.add(rel) if outcome == "good" else bad.add((rel, outcome))
    for folder in locked:
        os.chmod(folder, 0)
    return good, bad


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dirs=folders, items=entries)
def test_walk_random_trees_terminates_loads_good_reports_bad(
    dirs: list[tuple[bytes, int, bool]], items: list[tuple[str, bytes, int]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        top = os.fsencode(tmp)
        try:
            good, bad = build_tree(top, dirs, items)
            src = Path(tmp) / "src"
            with unreadable_as_root():
                assert all(isinstance(x, tuple | Rejection) for x in walk_source(src, PreprocessParams()))
                if good:
                    _, docs, rejected = preprocess(src, Path(tmp) / "out")
                else:
                    docs, rejected = [], []
        finally:
            for folder, subdirs, _ in os.walk(top):  # give modes back so the folder can be removed
                for d in subdirs:
                    with contextlib.suppress(OSError):
                        os.chmod(os.path.join(folder, d), 0o755)
        if good:
            assert sorted(d.doc_id for d in docs) == sorted(doc_id_for(g) for g in good)
            assert sorted(d.source for d in docs) == sorted(display_path(g) for g in good)
            assert sorted((r.path, r.reason) for r in rejected) == sorted(
                (display_path(p), reason) for p, reason in bad
            )
            assert all(r.detail for r in rejected)
