"""How an `embedline` process ends and what it loads ahead: the store handles are closed while the
interpreter still works, the heap is frozen for a quick shutdown, and a multi-stage run imports
the later stages' libraries while the model computes. Each case runs in a fresh interpreter: what
is imported, and what shutdown prints, are per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


LOCAL_STORE = """
    import numpy as np
    from embedline.tasks.vectorsets.qdrant import local_store
    from embedline.tasks.vectorsets.stores import PointRecord, VectorSetSpec
    store = local_store("qd")
    store.ensure(VectorSetSpec(name="c", dims=4, distance="Cosine"))
    store.upsert("c", [PointRecord(id="00000000-0000-0000-0000-000000000001",
                                   vector=np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32), payload={"doc_id": "a"})])
"""


def test_a_finished_command_closes_the_local_store_before_shutdown(tmp_path: Path) -> None:
    # without finish(), qdrant-client's local mode closes its storage from __del__ during the
    # interpreter's shutdown and prints "Exception ignored ... sys.meta_path is None"
    bare = _python(LOCAL_STORE, tmp_path)
    assert bare.returncode == 0, bare.stderr
    (tmp_path / "b").mkdir()
    finished = _python(LOCAL_STORE + """
    import gc
    from embedline.flows.entry import finish
    finish()
    import embedline.tasks.vectorsets.qdrant as qd
    assert not qd._clients, "the client is still open"
    assert gc.get_freeze_count() > 0
    print("FINISHED")
    """, tmp_path / "b")
    assert finished.returncode == 0, finished.stderr
    assert "FINISHED" in finished.stdout
    assert "Exception ignored" not in finished.stderr, finished.stderr
    # the store is readable afterwards: nothing was lost by closing it that way
    again = _python("""
    from embedline.tasks.vectorsets.qdrant import local_store
    print("POINTS", local_store("qd").count("c"))
    """, tmp_path / "b")
    assert "POINTS 1" in again.stdout, again.stderr


def test_the_embed_stage_warms_the_imports_of_the_stages_after_it(tmp_path: Path) -> None:
    res = _python("""
    import sys
    from embedline.tasks.config import load_config
    from embedline.tasks.pipeline import stage_modules, warm_later
    cfg = load_config(None, {"qdrant.backend": "local"})
    wanted = stage_modules("dedupe", cfg) + stage_modules("upsert", cfg)
    assert "qdrant_client" in wanted and "scipy.sparse.csgraph" in wanted, wanted
    assert not [m for m in wanted if m in sys.modules], [m for m in wanted if m in sys.modules]
    warm_later("chunk", ["embed", "dedupe"], cfg)()  # a stage that holds the GIL warms nothing
    assert "scipy.sparse.csgraph" not in sys.modules
    wait = warm_later("embed", ["dedupe", "upsert"], cfg)
    wait()
    missing = [m for m in wanted if m not in sys.modules]
    assert not missing, missing
    print("WARMED", len(wanted))
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "WARMED" in res.stdout
