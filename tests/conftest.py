"""Shared fixtures: an isolated Prefect home, tiny projects, and the fake embedder config."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]

# Tests never touch the user's Prefect home, never phone home, never wait on heartbeats.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("PREFECT_API_URL", None)

TINY_DOCS = {
    "space/black_holes.md": "# Black holes\n\nA black hole forms when a massive star collapses under "
    "its own gravity. Nothing, not even light, escapes past the event horizon.\n\n## Observation\n\n"
    "Astronomers detect black holes by the X-rays of gas falling into them.\n",
    "kitchen/bread.txt": "Bread rises because yeast ferments sugars and releases carbon dioxide. "
    "Knead the dough for ten minutes. Bake at 220 degrees until the crust is brown.\n",
    "kitchen/bread_copy.txt": "Bread rises because yeast ferments sugars and releases carbon dioxide. "
    "Knead the dough for ten minutes. Bake at 220 degrees until the crust is brown.\n",
    "net/tcp.txt": "TCP provides reliable, ordered delivery of a byte stream between applications. "
    "It uses a three-way handshake to open a connection and retransmits lost segments.\n",
    "garden/tomatoes.md": "# Growing tomatoes\n\nTomatoes need six to eight hours of sun a day. "
    "Water them deeply at the base, and stake the plants early so the stems do not break.\n",
}


@pytest.fixture(scope="session", autouse=True)
def _prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    home = tmp_path_factory.mktemp("prefect-home")
    old = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(home)
    yield
    if old is None:
        os.environ.pop("PREFECT_HOME", None)
    else:
        os.environ["PREFECT_HOME"] = old


def write_corpus(root: Path, docs: dict[str, str]) -> Path:
    for rel, text in docs.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return root


def make_project(root: Path, overrides: dict | None = None, docs: dict[str, str] | None = None) -> Path:
    """A project folder: params.yaml (project defaults + overrides) and a corpus in data/raw."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    # the project default embed.backend=auto times backends on first use (tens of seconds, and the
    # choice depends on the machine): test projects pin torch fp32 unless a test asks otherwise
    # (tests/unit/test_embed_auto.py and tests/integration/test_embed_auto_real.py cover auto)
    params["embed"]["backend"] = "torch"
    for dotted, value in (overrides or {}).items():
        node = params
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "data" / "raw").mkdir(parents=True, exist_ok=True)
    write_corpus(root / "data" / "raw", TINY_DOCS if docs is None else docs)
    return root


FAKE = {"embed.provider": "fake", "embed.cache_path": "data/cache/embeddings.sqlite"}


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    """A tiny project on the fake embedder and the embedded Qdrant store."""
    return make_project(tmp_path / "proj", FAKE)


@pytest.fixture
def sample_project(tmp_path: Path) -> Path:
    """The bundled sample corpus and eval set in a temp project (real default model)."""
    root = tmp_path / "sample"
    make_project(root, {}, docs={})
    shutil.rmtree(root / "data" / "raw")
    shutil.copytree(PROJECT / "data" / "raw", root / "data" / "raw")
    if (PROJECT / "data" / "eval").exists():
        shutil.copytree(PROJECT / "data" / "eval", root / "data" / "eval")
    return root
