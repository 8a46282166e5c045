"""Is a stage's dvc.lock entry still true of the workspace? The question `dvc status` answers, for
one stage, without starting DVC (3-17 s on a busy 2-core machine; `dvc commit` of every stage took
16 s of a 30 s no-change `embedline ingest`).

A stage is *current* when dvc.yaml still defines it as dvc.lock recorded it (command, dependency,
parameter and output lists), every recorded parameter has the recorded value in params.yaml, and
every recorded dependency and output has the recorded hash. Hashes are computed the way DVC 3
computes them (``hash: md5``): the md5 of a file's bytes; for a directory, the md5 of the JSON list
``[{"md5": ..., "relpath": ...}]`` sorted by path, plus ``.dir``; files matched by ``.dvcignore``
are left out. Anything this module does not understand (another hash kind, a ``!`` pattern, an
unresolved ``${...}``, a missing file) makes the answer "not current": the caller then does what it
did before (runs the stage, asks DVC), so a wrong answer can only cost time, never skip work.

Used by the in-process ingest (:mod:`embedline.flows.inprocess`): a stage whose entry is current
is not run again, and DVC is asked to record only stages whose entry is not.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

LOCK_FILE = "dvc.lock"
DVC_FILE = "dvc.yaml"
PARAMS = "params.yaml"
ALWAYS_IGNORED = {".git", ".dvc", ".hg"}
_VAR = re.compile(r"\$\{\s*([\w.\-]+)\s*\}")
_MISSING = object()


class _Unknown(Exception):
    """Something this module does not model: the stage is treated as not current."""


class LockView:
    """dvc.yaml, dvc.lock and params.yaml of one project, read once; file hashes memoised by stat."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.lock = _read_yaml(self.root / LOCK_FILE).get("stages") or {}
        self.dvc = _read_yaml(self.root / DVC_FILE).get("stages") or {}
        self.params = _read_yaml(self.root / PARAMS)
        self.ignore = _ignore_patterns(self.root / ".dvcignore")
        self._md5: dict[tuple[str, int, int, int], str] = {}

    # ---- the question ---------------------------------------------------------------------------
    def current(self, stage: str, skip_outs: Iterable[str] = ()) -> bool:
        """True when ``stage``'s dvc.lock entry holds for the workspace (outputs in ``skip_outs``
        are not compared)."""
        try:
            return self._current(stage, set(skip_outs))
        except (_Unknown, OSError, ValueError, TypeError, KeyError):
            return False

    def recorded(self, stage: str, path: str) -> str | None:
        """The md5 dvc.lock records for output ``path`` of ``stage`` (None if none)."""
        for entry in (self.lock.get(stage) or {}).get("outs") or []:
            if entry.get("path") == path:
                return str(entry.get("md5")) if entry.get("md5") else None
        return None

    def _current(self, stage: str, skip_outs: set[str]) -> bool:
        if self.ignore is None:
            raise _Unknown(".dvcignore pattern")
        locked, defined = self.lock.get(stage), self.dvc.get(stage)
        if not isinstance(locked, dict) or not isinstance(defined, dict) or "foreach" in defined:
            return False
        if self._interpolate(defined.get("cmd")) != locked.get("cmd"):
            return False
        if not self._same_lists(defined, locked):
            return False
        params = ((locked.get("params") or {}).get(PARAMS)) or {}
        if any(self._param(key) != value for key, value in params.items()):
            return False
        entries = [*(locked.get("deps") or []), *(e for e in locked.get("outs") or [] if e.get("path") not in skip_outs)]
        return all(self._matches(e) for e in entries)

    # ---- definition vs record ---------------------------------------------------------------------
    def _same_lists(self, defined: dict[str, Any], locked: dict[str, Any]) -> bool:
        deps = {self._interpolate(d) for d in defined.get("deps") or []}
        if deps != {e.get("path") for e in locked.get("deps") or []}:
            return False
        outs = {self._interpolate(_entry_path(o)) for key in ("outs", "metrics", "plots")
                for o in defined.get(key) or []}
        if outs != {e.get("path") for e in locked.get("outs") or []}:
            return False
        keys = set()
        for p in defined.get("params") or []:
            if not isinstance(p, str):
                raise _Unknown("params from another file")
            keys.add(p)
        return keys == set((locked.get("params") or {}).get(PARAMS) or {})

    def _interpolate(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise _Unknown("not a string")

        def sub(m: re.Match[str]) -> str:
            found = self._param(m.group(1))
            if found is _MISSING or isinstance(found, (dict, list)):
                raise _Unknown(m.group(0))
            return str(found)

        return _VAR.sub(sub, value)

    def _param(self, dotted: str) -> Any:
        node: Any = self.params
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return _MISSING
            node = node[part]
        return node

    # ---- hashes ------------------------------------------------------------------------------------
    def _matches(self, entry: dict[str, Any]) -> bool:
        if entry.get("hash") != "md5" or not entry.get("md5"):
            raise _Unknown("hash kind")
        path = self.root / str(entry["path"])
        want = str(entry["md5"])
        if want.endswith(".dir"):
            return path.is_dir() and self.dir_md5(path) == want
        if not path.is_file() or ("size" in entry and path.stat().st_size != entry["size"]):
            return False
        return self.file_md5(path) == want

    def file_md5(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        if key not in self._md5:
            h = hashlib.md5()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            self._md5[key] = h.hexdigest()
        return self._md5[key]

    def dir_md5(self, path: Path) -> str:
        entries = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not self._ignored(Path(dirpath) / d, is_dir=True))
            for name in filenames:
                file = Path(dirpath) / name
                if self._ignored(file, is_dir=False):
                    continue
                entries.append({"md5": self.file_md5(file), "relpath": file.relative_to(path).as_posix()})
        entries.sort(key=lambda e: e["relpath"])
        listing = json.dumps(entries, sort_keys=True).encode("utf-8")
        return hashlib.md5(listing).hexdigest() + ".dir"

    def _ignored(self, path: Path, *, is_dir: bool) -> bool:
        if is_dir and path.name in ALWAYS_IGNORED:
            return True
        rel = path.relative_to(self.root).as_posix()
        for pattern in self.ignore or []:
            dir_only = pattern.endswith("/")
            pat = pattern.rstrip("/")
            if dir_only and not is_dir:
                continue
            if "/" in pat:
                if fnmatch.fnmatchcase(rel, pat.lstrip("/")):
                    return True
            elif fnmatch.fnmatchcase(path.name, pat):
                return True
        return False


def _entry_path(entry: Any) -> Any:
    if isinstance(entry, dict):
        if len(entry) != 1:
            raise _Unknown("output entry")
        return next(iter(entry))
    return entry


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return data if isinstance(data, dict) else {}


def _ignore_patterns(path: Path) -> list[str] | None:
    """The ``.dvcignore`` lines; a pattern whose gitignore semantics this module does not implement
    (negation, ``**`` inside a path, escapes) makes every check answer "not current"."""
    if not path.is_file():
        return []
    patterns = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!") or "\\" in line or "**" in line.strip("*/"):
            return None
        patterns.append(line)
    return patterns
