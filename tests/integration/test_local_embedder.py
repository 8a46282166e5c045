"""The sentence-transformers provider on the bundled all-MiniLM-L6-v2 (a handful of short texts)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import EmbedParams, load_config
from embedline.tasks.embed import (
    clear_embedders,
    embed_query,
    fingerprint_for,
    get_embedder,
    run_embed,
)
from embedline.tasks.embed.providers.sentence_transformers import local_model_revision
from embedline.tasks.tokenize import resolve_model
from tests.chunkdata import folder_bytes
from tests.fakes.chunks import write_chunks

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The French Revolution began in 1789.",
    "Knead the dough, then let it rise for an hour.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Jupiter is the largest planet in the solar system.",
]


@pytest.fixture(scope="module", autouse=True)
def _release_models() -> Iterator[None]:
    yield
    clear_embedders()


def st(**kw: Any) -> EmbedParams:
    return EmbedParams.model_validate({"provider": "sentence-transformers", "backend": "torch", **kw})


def test_unit_norm_semantics_and_revision() -> None:
    emb = get_embedder(st())
    v = emb.embed(TEXTS)
    assert v.shape == (5, 384) and v.dtype == np.float32 and emb.dims == 384
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 3] == pytest.approx(1.0, abs=1e-5)
    assert sims[0, 1] < 0.5
    assert emb.max_tokens == 256
    assert emb.revision == local_model_revision(resolve_model("all-MiniLM-L6-v2"))
    assert len(emb.revision) == 64


def test_prompts_change_vectors() -> None:
    plain = embed_query(st(), "how do plants make energy")
    prompted = embed_query(st(query_prompt="query: "), "how do plants make energy")
    assert 0.5 < float(plain @ prompted) < 0.9999
    direct = get_embedder(st()).embed(["query: how do plants make energy"])[0]
    np.testing.assert_allclose(prompted, direct, atol=1e-6)


def test_dimensions_truncate_then_renormalise() -> None:
    full = get_embedder(st()).embed(TEXTS)
    small = get_embedder(st(dimensions=128)).embed(TEXTS)
    assert small.shape == (5, 128)
    np.testing.assert_allclose(np.linalg.norm(small, axis=1), 1.0, atol=1e-5)
    head = full[:, :128] / np.linalg.norm(full[:, :128], axis=1, keepdims=True)
    np.testing.assert_allclose(small, head, atol=1e-5)
    raw = get_embedder(st(dimensions=128, normalize=False)).embed(TEXTS)
    np.testing.assert_allclose(raw, full[:, :128], atol=1e-5)
    assert np.all(np.linalg.norm(raw, axis=1) < 0.99)


def test_stage_cache_hits_on_rerun(tmp_path: Path) -> None:
    art = Artifacts(tmp_path)
    write_chunks(art.chunks, TEXTS)
    cfg = load_config(None, {"embed": {"cache_path": str(tmp_path / "c.sqlite"), "passage_prompt": "passage: "}})
    first = run_embed(cfg, art)
    assert (first["unique_texts"], first["texts_embedded"]) == (4, 4)
    vectors, manifest_bytes = folder_bytes(art.vectors), art.manifest.read_bytes()
    second = run_embed(cfg, art)
    assert (second["cache_hits"], second["texts_embedded"]) == (4, 0)
    assert folder_bytes(art.vectors) == vectors
    manifest = json.loads(art.manifest.read_text())
    assert manifest["fingerprint"] == fingerprint_for(cfg)
    # byte-stable (a DVC output): a second run, all from the cache, writes the same bytes, and
    # the manifest names the model without this machine's absolute paths
    assert art.manifest.read_bytes() == manifest_bytes
    assert manifest["model_path"] == "/".join(Path(resolve_model(cfg.embed.model)).parts[-2:])
    assert "seconds" not in manifest and "cache_hits" not in manifest and "embedder" not in manifest
    assert first["embedder_device"] == "cpu"  # the run facts are stats (data/metrics/embed.json)


def test_onnx_backend_agrees_with_torch(tmp_path: Path) -> None:
    ref = get_embedder(st()).embed(TEXTS)
    onnx = get_embedder(st(backend="onnx", models_dir=str(tmp_path / "models")))
    v = onnx.embed(TEXTS)
    cos = (v * ref).sum(axis=1)
    assert cos.min() > 0.9999
    assert onnx.revision == get_embedder(st()).revision
    exported = list((tmp_path / "models").glob("*/onnx-fp32.onnx"))
    assert len(exported) == 1


def test_onnx_on_the_cpu_gives_a_text_the_same_bits_in_any_company(tmp_path: Path) -> None:
    """On the CPU, ONNX Runtime embeds one text per call (no padding, texts in parallel): a text's
    vector is the same bits alone or among others, and the same as the search path's (the
    exported graph without the embedder); calls take 8 batches (each ends on a barrier)."""
    from embedline.tasks.embed.protocol import truncate_dims
    from embedline.tasks.embed.query import clear_encoders, light_encoder

    params = st(backend="onnx", models_dir=str(tmp_path / "models"), batch_size=4)
    onnx = get_embedder(params)
    together = onnx.embed(TEXTS)
    alone = np.stack([onnx.embed([t])[0] for t in TEXTS])
    assert np.array_equal(together, alone)
    assert [len(g) for g in onnx.plan_groups(["t"] * 35)] == [32, 3]
    clear_encoders()
    light = light_encoder(params, bulk=True)
    assert light is not None  # what search and evaluation embed with (dimensions, normalisation applied)
    assert np.array_equal(truncate_dims(light.encode(TEXTS), params.dimensions, params.normalize), together)


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "precision", "floor"),
                         [("onnx", "int8", 0.95), ("openvino", "fp32", 0.999)])
def test_accelerated_backends(tmp_path: Path, backend: str, precision: str, floor: float) -> None:
    ref = get_embedder(st()).embed(TEXTS)
    emb = get_embedder(st(backend=backend, precision=precision, models_dir=str(tmp_path / "m"), batch_size=4))
    v = emb.embed(TEXTS)
    assert (v * ref).sum(axis=1).min() > floor
    # 8 batches per call (OpenVINO's infer requests and ONNX's per-text workers idle at each call's barrier)
    per_call = 4 * 8
    assert [len(g) for g in emb.plan_groups(["t"] * (per_call + 3))] == [per_call, 3]
    if backend == "openvino":  # the compiled blob is cached next to the IR for later processes
        assert list((tmp_path / "m").glob("*/openvino-cache/*"))


@pytest.mark.slow
def test_an_openvino_vector_does_not_depend_on_its_batch(tmp_path: Path) -> None:
    """Each text is padded to a width of its own, so what the embedding cache hands back (vectors
    made in earlier batches) equals what a fresh run computes. With batches padded to their
    longest text, 16 of these 32 vectors differed from the same texts embedded alone."""
    base = ("Rivers carry water from the mountains to the sea, cutting valleys, moving sand and gravel, "
            "feeding wetlands and farms, and flooding their plains when snow melts or storms stall overhead. ")
    words = (base * 12).split()
    mixed = [" ".join(words[:n]) for n in range(40, 200, 5)]  # 32 texts of 50-245 tokens
    emb = get_embedder(st(backend="openvino", models_dir=str(tmp_path / "m"), batch_size=32))
    together = emb.embed(mixed)
    alone = np.concatenate([emb.embed([t]) for t in mixed])
    assert np.array_equal(together, alone)
    assert np.array_equal(emb.embed(mixed[::-1]), together[::-1])


def test_torch_backend_plans_one_batch_per_request() -> None:
    emb = get_embedder(st(batch_size=3))
    assert emb.plan_groups(["a"] * 7) == [[0, 1, 2], [3, 4, 5], [6]]


_CLEAN_RUN = """
import sys
from pathlib import Path
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import load_config
from embedline.tasks.embed import run_embed
from tests.fakes.chunks import write_chunks
root = Path(sys.argv[1])
art = Artifacts(root)
texts = [f"sentence {i} about topic {i % 5}, written at some length to vary padding " * (1 + i % 4)
         for i in range(40)]
write_chunks(art.chunks, texts)
run_embed(load_config(None, {"embed": {"cache_path": str(root / "c.sqlite"), "batch_size": 8}}), art)
"""


@pytest.mark.slow
def test_two_clean_runs_give_byte_identical_vectors(tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", _CLEAN_RUN, str(tmp_path / name)], check=True, cwd=ROOT)
        outs.append(folder_bytes(tmp_path / name / "data" / "embeddings" / "vectors"))
    assert outs[0] == outs[1]
