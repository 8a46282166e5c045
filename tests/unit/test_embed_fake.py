"""The deterministic fake embedder and the registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedline.tasks.config import EmbedParams
from embedline.tasks.embed import (
    Embedder,
    EmbedInputError,
    clear_embedders,
    get_embedder,
    l2_normalize,
    truncate_dims,
)
from embedline.tasks.embed.providers.fake import FakeEmbedder

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FAKE = EmbedParams.model_validate({"provider": "fake"})


def test_shape_dtype_unit_norm_and_protocol() -> None:
    emb = FakeEmbedder(FAKE)
    v = emb.embed(["hello world", "another text"])
    assert v.shape == (2, 256) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-6)
    assert isinstance(emb, Embedder)
    assert emb.embed([]).shape == (0, 256)


def test_dimensions_param() -> None:
    emb = FakeEmbedder(EmbedParams.model_validate({"provider": "fake", "dimensions": 64}))
    assert emb.dims == 64 and emb.embed(["x y z"]).shape == (1, 64)


def test_near_duplicates_close_unrelated_far() -> None:
    emb = FakeEmbedder(FAKE)
    a, b, c, d = emb.embed([
        "The quick brown fox jumps over the lazy dog near the river bank.",
        "The quick brown fox jumped over the lazy dog near the river bank!",
        "Quarterly revenue grew twelve percent in European markets.",
        "def parse(path): return json.loads(open(path).read())",
    ])
    assert float(a @ b) > 0.85
    assert float(a @ c) < 0.3 and float(a @ d) < 0.3 and float(c @ d) < 0.3


def test_deterministic_across_processes() -> None:
    here = FakeEmbedder(FAKE).embed(["stable across processes"])
    code = (
        "import sys, numpy as np;"
        "from embedline.tasks.config import EmbedParams;"
        "from embedline.tasks.embed.providers.fake import FakeEmbedder;"
        "v = FakeEmbedder(EmbedParams.model_validate({'provider': 'fake'})).embed(['stable across processes']);"
        "sys.stdout.write(v.tobytes().hex())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=ROOT)
    assert bytes.fromhex(out.stdout) == here.tobytes()


def test_empty_text_is_an_error() -> None:
    with pytest.raises(EmbedInputError):
        FakeEmbedder(FAKE).embed(["ok", "   "])


def test_registry_caches_one_instance_per_config() -> None:
    clear_embedders()
    a = get_embedder(FAKE)
    assert get_embedder(EmbedParams.model_validate({"provider": "fake", "cache_path": "x"})) is a
    assert get_embedder(EmbedParams.model_validate({"provider": "fake", "dimensions": 32})) is not a
    clear_embedders()


def test_importing_the_package_loads_no_model() -> None:
    code = "import sys, embedline.tasks.embed; print('torch' in sys.modules, 'openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "False"]


def test_truncate_and_normalize_helpers() -> None:
    v = np.array([[3.0, 4.0, 12.0]], dtype=np.float32)
    t = truncate_dims(v, 2, normalize=True)
    np.testing.assert_allclose(t, [[0.6, 0.8]], rtol=1e-6)
    assert truncate_dims(v, None, normalize=False) is not None
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(v)), 1.0, rtol=1e-6)


def test_vectors_are_bit_identical_to_v1_whatever_the_batching() -> None:
    """The batched (bincount) implementation gives the per-feature loop's vectors bit for bit
    (the digest was taken from fake-hash-v1's loop), in one batch or one text at a time: the
    revision did not change, so cached vectors stay valid."""
    import hashlib

    texts = ["The quick brown fox jumps over the lazy dog.", "the the the THE  the", "Ünïcødé straße ΣΑΣ — ‐",
             "x" * 50, "def f(a, b):\n    return a + b\n"]
    emb = FakeEmbedder(FAKE)
    batch = emb.embed(texts)
    one_by_one = np.concatenate([emb.embed([t]) for t in texts])
    assert hashlib.sha256(batch.tobytes()).hexdigest() == (
        "3ffe518464040c5545b59f29b6d1ebb4c5f4470b12fbc5ea0904efb34293af8b")
    assert np.array_equal(batch, one_by_one)
    assert np.array_equal(emb.vector(texts[1]), emb.embed([texts[1]])[0] * np.linalg.norm(emb.vector(texts[1])))
