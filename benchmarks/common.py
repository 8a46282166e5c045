"""Helpers shared by the benchmarks: machine facts, child processes, peak RSS, corpus copies.

Nothing here imports torch or the pipeline: the runner and the children import what they need.
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "work"
PEERS_VENV = ROOT / "benchmarks" / ".venv-peers"

# the run that produced a result file: set by benchmarks.run for all its children
RUN_ID_ENV = "EMBEDLINE_BENCH_RUN_ID"


# ---- machine ---------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python and key library versions, load average, date (UTC)."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "sentence_transformers": _version("sentence-transformers"),
        "qdrant_client": _version("qdrant-client"),
        "qdrant_edge_py": _version("qdrant-edge-py"),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "date": now_iso(),
    }


def speed_index(seconds: float = 1.0) -> float:
    """Millions of iterations per second of a fixed pure-Python loop: how fast this machine's CPU
    is right now. A shared host's speed drifts (here ~2x within minutes, with no steal time
    reported), so results that compare runs taken minutes apart carry it for each run."""
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds:
        n += 1
    return round(n / (time.perf_counter() - t0) / 1e6, 2)


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def run_id() -> str:
    """The id of the `benchmarks.run` invocation (or a standalone run's own timestamp)."""
    return os.environ.get(RUN_ID_ENV) or "standalone-" + now_iso()


def stamp(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the provenance every result file carries: run id, date, machine."""
    return {"run_id": run_id(), "date": now_iso(), "machine": machine_info(), **doc}


def write_result(path: Path, doc: dict[str, Any]) -> None:
    """Atomic JSON write (a crashed benchmark never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


# ---- processes -------------------------------------------------------------------------------------
def peak_rss_mib() -> float:
    """This process's peak RSS (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


def run_json(cmd: Sequence[str], *, timeout: float | None = None, env: dict[str, str] | None = None,
             cwd: Path = ROOT) -> dict[str, Any]:
    """Run ``cmd``; its last stdout line is a JSON object. Wall seconds (process start to exit,
    imports included) are added as ``process_seconds`` and the CPU seconds it used (user + system,
    from this process's children rusage: children run one at a time) as ``process_cpu_seconds``,
    which a loaded machine inflates less than wall time. Failures raise with the stderr tail."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(list(cmd), cwd=cwd, env=env or child_env(), capture_output=True, text=True,
                         timeout=timeout, check=False)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if out.returncode != 0:
        raise ChildError(f"{' '.join(map(str, cmd[:4]))} ... exited {out.returncode}:\n{out.stderr[-3000:]}")
    lines = [ln for ln in out.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise ChildError(f"{cmd[:4]} printed no JSON result:\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}")
    res = dict(json.loads(lines[-1]))
    res["process_seconds"] = round(wall, 3)
    res["process_cpu_seconds"] = round(cpu, 3)
    return res


class ChildError(RuntimeError):
    pass


def module_cmd(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# ---- corpora ---------------------------------------------------------------------------------------
PROSE = {".txt", ".md", ".markdown", ".rst"}
HTML = {".html", ".htm"}
CODE_COMMENT = {".py": "#", ".sh": "#", ".js": "//", ".ts": "//"}
_TEXT_NODE = re.compile(r">([^<]*[A-Za-z]{3}[^<]*)<")


def _tag_prose(text: str, tag: str) -> str:
    """Append ``tag`` to every line with words, outside code fences and Markdown table rows."""
    out, fenced = [], False
    for line in text.split("\n"):
        s = line.strip()
        if s.startswith("```"):
            fenced = not fenced
        elif not fenced and not s.startswith("|") and len(s.split()) >= 2:
            line = f"{line} ({tag})"
        out.append(line)
    return "\n".join(out)


def _tag_code(text: str, tag: str, mark: str) -> str:
    """A trailing comment on block openers (``:`` / ``{``) and on existing comment lines."""
    out = []
    for line in text.split("\n"):
        s = line.rstrip()
        if s.lstrip().startswith(mark):
            line = f"{s} {tag}"
        elif s.endswith(":" if mark == "#" else "{"):
            line = f"{s} {mark} {tag}"
        out.append(line)
    return "\n".join(out)


def _tag_jsonl(text: str, tag: str, field: str = "text") -> str:
    out = []
    for line in text.split("\n"):
        try:
            rec = json.loads(line)
        except ValueError:
            out.append(line)  # malformed lines stay malformed (they are rejected either way)
            continue
        if isinstance(rec, dict) and isinstance(rec.get(field), str):
            rec[field] = _tag_prose(rec[field], tag)
        out.append(json.dumps(rec, ensure_ascii=False))
    return "\n".join(out)


def tag_text(name: str, text: str, tag: str) -> str:
    """``text`` (of file ``name``) with ``tag`` woven into (nearly) every chunk's text."""
    suffix = Path(name).suffix.lower()
    if name.endswith(".jsonl"):
        return _tag_jsonl(text, tag)
    if suffix in HTML:
        return _TEXT_NODE.sub(lambda m: f">{m.group(1).rstrip()} ({tag})<", text)
    if suffix in CODE_COMMENT:
        return _tag_code(text, tag, CODE_COMMENT[suffix])
    if suffix in PROSE:
        return _tag_prose(text, tag)
    return text


def _edit_file(path: Path, edit: Any) -> bool:
    """Apply ``edit(text) -> text`` to a UTF-8 file; other encodings/binaries stay as they are."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return False
    new = edit(text)
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


def replicate(source: Path, dest: Path, times: int, *, unique: bool = True) -> dict[str, int]:
    """``times`` copies of ``source`` under ``dest/copyNNN``. With ``unique``, copy i > 0 has
    ``(cI)`` woven into its lines (see :func:`tag_text`), so its chunks are new texts and neither
    the cache nor exact dedupe collapses the copies; copy 0 is the original."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    edited = 0
    for i in range(times):
        d = dest / f"copy{i:03d}"
        shutil.copytree(source, d, symlinks=True)
        if unique and i > 0:
            for f in sorted(d.rglob("*")):
                edited += _edit_file(f, lambda t, f=f, i=i: tag_text(f.name, t, f"c{i}"))
    return {"copies": times, "files_edited": edited}


def change_fraction(root: Path, fraction: float, seed: int = 1) -> dict[str, Any]:
    """Edit ``fraction`` of the files under ``root`` in place (at least one; chosen among prose and
    Markdown documents over 1 KB): one line reworded in the middle, one sentence appended."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    candidates = [p for p in files if p.suffix in PROSE and p.stat().st_size > 1000]
    k = max(1, round(fraction * len(files)))
    picked = random.Random(seed).sample(candidates, min(k, len(candidates)))

    def edit(text: str) -> str:
        lines = text.split("\n")
        for j in range(len(lines) // 2, len(lines)):
            if len(lines[j].split()) > 4:
                lines[j] = lines[j] + " This sentence was revised for the benchmark."
                break
        return "\n".join(lines) + "\nAn added closing note: revisit this page next season.\n"

    changed = [str(p.relative_to(root)) for p in picked if _edit_file(p, edit)]
    return {"files": len(files), "files_changed": len(changed), "changed": changed,
            "fraction": round(len(changed) / len(files), 4) if files else 0.0}
