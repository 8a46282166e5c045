"""tasks/dvclock.py against real DVC: a stage is "current" exactly when `dvc status` says it is
unchanged, and a no-change in-process `embedline ingest` in a DVC project re-runs nothing that
dvc.lock records, leaves dvc.lock and data/metrics byte for byte, and does not ask DVC to record."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedline.tasks.dvclock import LockView
from tests.conftest import FAKE, make_project

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _dvc(root: Path, *args: str) -> str:
    res = subprocess.run([DVC, *args], cwd=root, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _init(root: Path) -> None:
    _dvc(root, "init", "--no-scm", "-q")
    _dvc(root, "config", "core.analytics", "false")


@pytest.fixture
def small(tmp_path: Path) -> Path:
    root = tmp_path / "small"
    (root / "in" / "__pycache__").mkdir(parents=True)
    (root / "in" / "a.txt").write_text("alpha\n")
    (root / "in" / "sub").mkdir()
    (root / "in" / "sub" / "b.txt").write_text("beta\n")
    (root / "in" / "__pycache__" / "x.pyc").write_bytes(b"\x00")
    (root / "code.py").write_text("print('hi')\n")
    (root / "params.yaml").write_text("src: in\nsec:\n  x: 1\n  y: [1, 2]\n")
    (root / ".dvcignore").write_text("# bytecode\n__pycache__/\n*.pyc\n")
    (root / "dvc.yaml").write_text(
        "stages:\n"
        "  s:\n"
        "    cmd: cat in/a.txt in/sub/b.txt > out.txt && echo '{\"n\":1}' > m.json\n"
        "    deps:\n      - code.py\n      - ${src}\n"
        "    params:\n      - sec.x\n      - sec.y\n"
        "    outs:\n      - out.txt\n"
        "    metrics:\n      - m.json:\n          cache: false\n"
    )
    _init(root)
    _dvc(root, "repro", "-q")
    return root


def _status_clean(root: Path) -> bool:
    return "up to date" in _dvc(root, "status").lower()


def test_current_agrees_with_dvc_status(small: Path) -> None:
    assert LockView(small).current("s") and _status_clean(small)
    assert LockView(small).recorded("s", "out.txt") == hashlib.md5((small / "out.txt").read_bytes()).hexdigest()

    (small / "in" / "__pycache__" / "x.pyc").write_bytes(b"\x01\x02")  # .dvcignore'd: no change
    assert LockView(small).current("s") and _status_clean(small)

    (small / "params.yaml").write_text("src: in\nsec:\n  x: 2\n  y: [1, 2]\n")  # a recorded param
    assert not LockView(small).current("s") and not _status_clean(small)
    (small / "params.yaml").write_text("src: in\nsec:\n  x: 1\n  y: [1, 2]\n  z: 9\n")  # one nobody reads
    assert LockView(small).current("s") and _status_clean(small)

    (small / "in" / "sub" / "b.txt").write_text("beta 2\n")  # a file inside a dependency folder
    assert not LockView(small).current("s") and not _status_clean(small)
    (small / "in" / "sub" / "b.txt").write_text("beta\n")
    assert LockView(small).current("s")

    (small / "m.json").write_text('{"n": 1, "seconds": 0.5}\n')  # an output
    view = LockView(small)
    assert not view.current("s") and view.current("s", skip_outs=["m.json"]) and not _status_clean(small)
    assert not view.current("no-such-stage")


def test_a_changed_stage_definition_is_not_current(small: Path) -> None:
    text = (small / "dvc.yaml").read_text()
    (small / "dvc.yaml").write_text(text.replace("      - sec.y\n", ""))
    assert not LockView(small).current("s")


def _hashes(root: Path) -> dict[str, str]:
    files = [root / "dvc.lock", *(root / "data" / "metrics" / f"{s}.json" for s in ("preprocess", "chunk"))]
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in files}


INGEST_DVC_YAML = """stages:
  preprocess:
    cmd: embedline stage preprocess
    deps: [data/raw]
    params: [preprocess, run.shards]
    outs:
      - data/interim/documents: {persist: true}
      - data/interim/ledger.parquet: {persist: true}
      - data/interim/rejected.jsonl
      - data/metrics/preprocess.json: {cache: false}
  chunk:
    cmd: embedline stage chunk
    deps: [data/interim/documents]
    params: [chunk, run.shards]
    outs:
      - data/interim/chunks: {persist: true}
      - data/interim/chunk_ledger.parquet: {persist: true}
      - data/metrics/chunk.json: {cache: false}
"""


@pytest.mark.slow  # three ingests and a `dvc commit`: ~1-5 min on a shared 2-core machine
def test_no_change_inprocess_ingest_reuses_what_dvc_lock_records(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj", FAKE)
    (root / "dvc.yaml").write_text(INGEST_DVC_YAML)
    _init(root)
    exe = str(BIN / "embedline")
    first = subprocess.run([exe, "ingest", "--no-eval", "--no-prefect", "-v"], cwd=root, env=_env(),
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert (root / "dvc.lock").is_file()  # recorded by `dvc commit` at the end of the run
    view = LockView(root)
    assert view.current("preprocess") and view.current("chunk")
    before = _hashes(root)

    again = subprocess.run([exe, "ingest", "--no-eval", "--no-prefect", "-v"], cwd=root, env=_env(),
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    logs = again.stdout + again.stderr
    for stage in ("preprocess", "chunk"):
        assert f"{stage}: unchanged since dvc.lock recorded it" in " ".join(logs.split()), stage
    assert "dvc.lock records stages" not in logs  # DVC was not asked to record anything
    assert _hashes(root) == before  # dvc.lock and the recorded stages' metrics, byte for byte

    (root / "data" / "raw" / "notes" / "new.md").parent.mkdir(parents=True, exist_ok=True)
    (root / "data" / "raw" / "notes" / "new.md").write_text("# New\n\nA new document about tide pools.\n")
    changed = subprocess.run([exe, "ingest", "--no-eval", "--no-prefect", "-v"], cwd=root, env=_env(),
                             capture_output=True, text=True, timeout=600)
    assert changed.returncode == 0, changed.stderr
    logs = " ".join((changed.stdout + changed.stderr).split())
    assert "preprocess: unchanged" not in logs and "chunk: unchanged" not in logs
    assert LockView(root).current("preprocess") and LockView(root).current("chunk")  # recorded again
