"""Torch-free query vectors (tasks/embed/query.py) agree with the ingest model's torch vectors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedline.tasks.config import EmbedParams
from embedline.tasks.embed import clear_embedders, embed_query, get_embedder
from embedline.tasks.embed.query import (
    check_file,
    clear_encoders,
    graph_for,
    light_encoder,
    prepare_query_graph,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

QUERIES = [
    "what is the largest planet?",
    "Photosynthesis converts light energy",
    "Ünïcödé query — with punctuation, digits 2024 and émoji 🚀",
    " ".join(["a very long query about telescopes and distant galaxies"] * 60),  # > 256 tokens
]


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    clear_embedders()
    clear_encoders()
    yield
    clear_embedders()
    clear_encoders()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")  # one export (~10 s) shared by the tests


def st(models: Path, **kw: Any) -> EmbedParams:
    return EmbedParams.model_validate({"provider": "sentence-transformers", "backend": "torch", "models_dir": str(models), **kw})


def test_exported_graph_matches_torch_within_1e5(models: Path) -> None:
    params = st(models)
    assert light_encoder(params) is None  # no graph yet: search falls back to the embedder
    clear_encoders()
    torch_emb = get_embedder(params)
    check = prepare_query_graph(params, torch_emb)
    assert check is not None and check["ok"] is True and check["min_cosine"] >= 1 - 1e-5
    fast = light_encoder(params)
    assert fast is not None
    for q in QUERIES:
        ref = torch_emb.embed([q])[0]
        got = fast.encode([q])[0]
        assert float(ref @ got) >= 1 - 1e-5, q
    # the bulk encoder (evaluation: texts in parallel, one thread each) gives the same bits
    bulk = light_encoder(params, bulk=True)
    assert bulk is not None and bulk.workers >= 1
    bulk.workers = 2  # parallel even on a one-core runner
    assert np.array_equal(bulk.encode(QUERIES), np.stack([fast.encode([q])[0] for q in QUERIES]))
    # embed_query takes the fast path when no embedder is loaded in the process
    clear_embedders()
    v = embed_query(params, QUERIES[0])
    assert v.shape == (384,) and abs(float(np.linalg.norm(v)) - 1) < 1e-5


def test_failed_check_keeps_torch_and_search_never_imports_torch(models: Path) -> None:
    params = st(models)
    prepare_query_graph(params, get_embedder(params))
    model_dir = graph_for(params, _model_dir(params))
    assert model_dir is not None
    folder = model_dir.parent
    # a subprocess embeds a query on the fast path: torch and transformers are never imported
    code = (
        "import sys; from embedline.tasks.config import EmbedParams; "
        "from embedline.tasks.embed import embed_query; "
        f"p = EmbedParams.model_validate({{'provider': 'sentence-transformers', 'backend': 'torch', 'models_dir': {str(models)!r}}}); "
        "v = embed_query(p, 'largest planet'); "
        "print(len(v), 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["384", "False", "False"]
    # a recorded disagreement disables the graph for a torch ingest model
    check_file(folder, params).write_text(json.dumps({"ok": False, "min_cosine": 0.9}))
    clear_encoders()
    assert light_encoder(params) is None
    # no recorded check for OpenVINO yet: its ingest keeps its own embedder
    assert light_encoder(st(models, backend="openvino")) is None
    assert light_encoder(st(models, backend="openvino", precision="int8")) is None


def _model_dir(params: EmbedParams) -> str:
    from embedline.tasks.embed.query import _model_dir as md

    path = md(params)
    assert path is not None
    return path


def test_pre_optimised_copy_gives_the_same_vectors(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first session saves the optimised graph (weights in a side file); later ones load it with
    optimisation off: bit-identical vectors. A damaged copy is ignored (same vectors again)."""
    import shutil

    import onnxruntime as ort

    from embedline.tasks.embed.providers.onnx_backend import OPTIMISED_NAME, optimised_dir

    params = st(models)
    for old in models.rglob(check_file(Path(), params).name):  # a check another test falsified
        old.unlink()
    prepare_query_graph(params, get_embedder(params))
    graph = graph_for(params, _model_dir(params))
    assert graph is not None
    saved = optimised_dir(graph)
    shutil.rmtree(saved, ignore_errors=True)
    opened: list[str] = []
    real = ort.InferenceSession

    def recording(path: str, *args: Any, **kwargs: Any) -> Any:
        opened.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    clear_encoders()
    first = _encode(params)
    assert (saved / OPTIMISED_NAME).is_file() and (saved / f"{OPTIMISED_NAME}.data").is_file()
    clear_encoders()
    again = _encode(params)
    assert opened == [graph.name, OPTIMISED_NAME]
    np.testing.assert_array_equal(first, again)
    (saved / OPTIMISED_NAME).write_bytes(b"not a graph")
    clear_encoders()
    np.testing.assert_array_equal(_encode(params), first)
    assert opened[-2:] == [OPTIMISED_NAME, graph.name]


def _encode(params: EmbedParams) -> np.ndarray:
    enc = light_encoder(params)
    assert enc is not None
    return enc.encode(QUERIES)
