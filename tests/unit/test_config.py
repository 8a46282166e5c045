"""params.yaml validation, overrides and fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedline.tasks.config import Config, ConfigError, load_config

pytestmark = pytest.mark.unit
PROJECT = Path(__file__).resolve().parents[2]


def test_project_params_validate_and_contract_names() -> None:
    cfg = load_config(PROJECT / "params.yaml")
    assert cfg.source == "data/raw"
    assert cfg.embed.provider in {"sentence-transformers", "openai"}
    for name in ("model", "batch_size"):
        assert hasattr(cfg.embed, name)
    assert cfg.chunk.max_tokens > cfg.chunk.overlap_tokens
    assert 0 < cfg.dedupe.threshold <= 1
    assert cfg.qdrant.path and cfg.qdrant.collection and cfg.qdrant.url is None


def test_params_yaml_lists_every_key() -> None:
    """params.yaml documents every knob: its keys equal the model's fields."""
    import yaml

    data = yaml.safe_load((PROJECT / "params.yaml").read_text())
    assert set(data) == set(Config.model_fields)
    for section, model in Config.model_fields.items():
        if isinstance(data[section], dict):
            assert set(data[section]) == set(model.annotation.model_fields), section  # type: ignore[union-attr]


def test_override_types_are_parsed() -> None:
    cfg = load_config(None, ["chunk.max_tokens=128", "embed.dimensions=64", "qdrant.url=null"])
    assert cfg.chunk.max_tokens == 128 and cfg.embed.dimensions == 64 and cfg.qdrant.url is None


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("embed.modle=x", "unknown key 'embed.modle'; valid keys here: "),
        ("nosuch.key=1", "unknown key 'nosuch'"),
        ("embed.provider=cohere", "unknown embed.provider 'cohere'; valid: fake, openai, sentence-transformers"),
        ("chunk.strategy=words", "chunk.strategy"),
        ("chunk.max_tokens=abc", "chunk.max_tokens"),
        ("chunk.overlap_tokens=999", "must be smaller than chunk.max_tokens"),
        ("dedupe.threshold=1.5", "dedupe.threshold"),
        ("source.x=1", "'source'"),
        ("nonsense", "section.key=value"),
        ("qdrant.payload_indexes=[doc_id,text]", "Input should be 'doc_id', 'source' or 'chunk_id'"),
        ("eval.baselines=[bm25,dense]", "Input should be 'bm25' or 'wholedoc'"),
    ],
)
def test_bad_overrides_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, [override])
    assert needle in str(exc.value)


def test_unknown_key_lists_valid_choices() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["embed.modle=x"])
    assert "model" in str(exc.value) and "provider" in str(exc.value)


def test_fingerprint_tracks_what_vectors_mean() -> None:
    base = load_config(None)
    same = load_config(None, ["embed.batch_size=7", "qdrant.collection=other", "dedupe.threshold=0.9"])
    assert base.fingerprint("rev") == same.fingerprint("rev")
    for change in ("embed.model=other", "embed.passage_prompt='passage: '", "embed.dimensions=128",
                   "embed.backend=onnx", "embed.precision=int8", "chunk.max_tokens=128",
                   "preprocess.lowercase=true", "qdrant.sparse=true"):
        assert load_config(None, [change]).fingerprint("rev") != base.fingerprint("rev"), change
    assert base.fingerprint("rev1") != base.fingerprint("rev2")


def test_url_selects_server_backend() -> None:
    cfg = load_config(None, ["qdrant.url=http://127.0.0.1:6333"])
    assert cfg.qdrant.backend == "server"
