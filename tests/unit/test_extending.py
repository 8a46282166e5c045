"""The "add a provider" walk-through of docs/extending.md, run for real: a toy provider defined in
one module (tests/fakes/toy_provider.py) plus one registration, through config validation, the
token counter, the embed stage and the manifest. Also: the provider names live in one table."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import ConfigError, load_config
from embedline.tasks.embed import (
    PROVIDERS,
    clear_embedders,
    get_embedder,
    plan_embed,
    provider_spec,
    run_embed,
)
from embedline.tasks.embed.protocol import Capability
from embedline.tasks.tokenize import load_token_counter
from embedline.tasks.vector_shards import read_all
from tests.fakes import toy_provider
from tests.fakes.chunks import SAMPLE_TEXTS, write_chunks

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "extending.md"
TOY = "tests.fakes.toy_provider:SPEC"


@pytest.fixture(autouse=True)
def _fresh() -> None:
    clear_embedders()


def _cfg(tmp_path: Path, provider: str = "toy"):  # type: ignore[no-untyped-def]
    settings = {"provider": provider, "shard_rows": 4, "cache_path": str(tmp_path / "cache.sqlite")}
    return load_config(None, {"embed": settings})


def test_toy_provider_runs_the_embed_stage(tmp_path: Path) -> None:
    art = Artifacts(tmp_path)
    write_chunks(art.chunks, SAMPLE_TEXTS)
    with PROVIDERS.registered("toy", TOY):  # the registration line (tasks/plugins.py for real ones)
        cfg = _cfg(tmp_path)
        assert load_token_counter(cfg.embed).name == "toy"
        before = plan_embed(cfg, art)
        stats = run_embed(cfg, art)
        emb = get_embedder(cfg.embed)
        assert isinstance(emb, toy_provider.ToyEmbedder)
    unique = len(set(SAMPLE_TEXTS))
    assert before["texts_to_embed"] == unique and before["billed_by_token"] is False
    assert stats["provider"] == "toy" and stats["texts_embedded"] == unique and stats["dims"] == 26
    assert max(emb.requests) <= 2 and sum(emb.requests) == unique  # its own plan_groups was used
    vectors = read_all(art.vectors)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    manifest = json.loads(art.manifest.read_text())
    assert manifest["revision"] == "toy-letters-v1" and manifest["model_path"] == cfg.embed.model
    assert stats["embedder_model_path"] == "toy"  # the loaded embedder's own report: a stat (byte-stable manifest)
    # unregistered again: the config names the valid choices and no longer accepts it
    with pytest.raises(ConfigError, match=r"unknown embed.provider 'toy'; valid: fake, openai, sentence-transformers"):
        _cfg(tmp_path)


def test_a_declared_capability_must_be_implemented(tmp_path: Path) -> None:
    class NoPlanner(toy_provider.ToyEmbedder):
        plan_groups = None  # type: ignore[assignment]

    spec = replace(toy_provider.SPEC, factory=NoPlanner)
    with PROVIDERS.registered("toy", spec), pytest.raises(TypeError, match="no plan_groups"):
        get_embedder(_cfg(tmp_path).embed)


def test_declared_capabilities_of_the_shipped_providers() -> None:
    api = provider_spec("openai")
    assert api.has(Capability.PLANS_REQUESTS) and api.has(Capability.BILLED_BY_TOKEN)
    assert provider_spec("sentence-transformers").capabilities == frozenset({Capability.LOCAL_BACKENDS, Capability.PLANS_REQUESTS})
    assert {provider_spec(n).name for n in PROVIDERS.names()} == set(PROVIDERS.names())


def test_a_chunker_registers_with_one_line() -> None:
    from embedline.tasks.chunkers import SlidingChunker, chunker_for
    from embedline.tasks.plugins import CHUNKERS

    with pytest.raises(ConfigError, match=r"unknown chunk.strategy 'windows'; valid: auto, code, markdown"):
        load_config(None, ["chunk.strategy=windows"])
    with CHUNKERS.registered("windows", "embedline.tasks.chunkers.sliding:SlidingChunker"):
        cfg = load_config(None, ["chunk.strategy=windows"])
        assert isinstance(chunker_for(cfg.chunk.strategy), SlidingChunker)


def test_docs_show_the_toy_provider_verbatim() -> None:
    """The walk-through cannot drift from the file this test runs."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    source = (ROOT / "tests" / "fakes" / "toy_provider.py").read_text(encoding="utf-8")
    assert source in blocks


def test_provider_names_live_in_one_table() -> None:
    """No module but the registry table and each provider's own names a provider as a string."""
    names = {"sentence-transformers", "openai", "fake"}
    allowed = {
        ROOT / "tasks" / "plugins.py",  # the table
        ROOT / "tasks" / "config.py",  # the default value
        ROOT / "tasks" / "embed" / "manifest.py",  # distribution names of libraries, not providers
    }
    offenders = []
    for folder in (ROOT / "tasks", ROOT / "flows"):
        for path in folder.rglob("*.py"):
            if path in allowed or path.parent.name == "providers":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docstrings = {
                id(n.body[0].value)
                for n in ast.walk(tree)
                if isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
                and n.body and isinstance(n.body[0], ast.Expr)
            }
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not offenders, offenders
