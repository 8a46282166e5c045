"""The BM25 sparse encoder (Qdrant's BM25 via qdrant-edge): deterministic term indices, BM25
term-frequency weights, query weights, the recipe and its place in the fingerprint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from embedline.tasks.config import SPARSE_BM25, load_config
from embedline.tasks.vectorsets.sparse import (
    RECIPE_KEY,
    Bm25Encoder,
    encoder,
    encoder_for,
    recipe_for,
    sparse_for,
    sparse_text,
)
from embedline.tasks.vectorsets.stores import (
    SparseVector,
    SparseVectorMissingError,
    StoreError,
    VectorSetSpec,
)

pytestmark = pytest.mark.unit
K, B, AVG = SPARSE_BM25["k"], SPARSE_BM25["b"], SPARSE_BM25["avg_len"]


def bm25_tf(tf: int, doc_len: int) -> float:
    return tf * (K + 1) / (tf + K * (1 - B + B * doc_len / AVG))


@pytest.fixture(scope="module")
def enc() -> Bm25Encoder:
    return encoder({"language": "en"})


def test_same_term_same_index_across_texts_cases_and_forms(enc: Bm25Encoder) -> None:
    (flutter,) = enc.document("flutter").indices
    assert enc.document("Flutter").indices == (flutter,)  # lowercased
    assert enc.document("fluttering").indices == (flutter,)  # stemmed
    assert flutter in enc.document("wing flutter at transonic speed").indices
    assert enc.query("FLUTTER").indices == (flutter,)  # queries hash terms the same way
    assert enc.document("boundary layers") == enc.document("layer boundary")


def test_indices_are_sorted_unique_and_stop_words_dropped(enc: Bm25Encoder) -> None:
    v = enc.document("the flow of the boundary layer and the flow over the plate")
    assert list(v.indices) == sorted(set(v.indices)) and len(v) == 4  # flow, boundary, layer, plate
    assert len(enc.document("the of and to")) == 0
    assert enc.query("the of and to") == SparseVector()


def test_document_weights_are_bm25_term_frequencies(enc: Bm25Encoder) -> None:
    assert enc.document("flutter").values == pytest.approx((bm25_tf(1, 1),), rel=1e-6)
    assert enc.document("flutter flutter").values == pytest.approx((bm25_tf(2, 2),), rel=1e-6)
    w = enc.document("flutter wing wing shell").as_dict()
    assert sorted(w.values()) == pytest.approx(sorted([bm25_tf(1, 4), bm25_tf(2, 4), bm25_tf(1, 4)]), rel=1e-6)
    # saturation: more occurrences weigh more, never more than k + 1
    assert bm25_tf(1, 4) < max(w.values()) < K + 1


def test_query_weights_are_one_per_unique_term(enc: Bm25Encoder) -> None:
    q = enc.query("boundary layer boundary layers of the wing")
    assert len(q) == 3 and set(q.values) == {1.0}


def test_encoding_is_deterministic_across_processes(enc: Bm25Encoder) -> None:
    text = "Shock waves interact with a turbulent boundary layer near the trailing edge."
    here = enc.document(text)
    code = (
        "from embedline.tasks.vectorsets.sparse import encoder; "
        f"v = encoder({{'language': 'en'}}).document({text!r}); print(list(v.indices), list(v.values))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.strip() == f"{list(here.indices)} {list(here.values)}"
    assert enc.document(text) == here


def test_sparse_text_is_title_and_text(enc: Bm25Encoder) -> None:
    assert sparse_text({"title": "Wing flutter", "text": "Measured at Mach 0.9."}) == (
        "Wing flutter\n\nMeasured at Mach 0.9."
    )
    assert sparse_text({"text": "only text", "title": "  "}) == "only text"
    titled = sparse_for({"title": "flutter", "text": "wing"}, enc)
    assert set(titled.indices) == set(enc.document("flutter wing").indices)


def test_sparse_vector_checks_its_shape() -> None:
    with pytest.raises(ValueError, match="2 indices but 1 values"):
        SparseVector((1, 2), (1.0,))
    assert SparseVector((3, 7), (0.5, 2.0)).as_dict() == {3: 0.5, 7: 2.0}


def test_recipe_language_and_collection_lookup() -> None:
    cfg = load_config(None, ["preprocess.language=de"])
    recipe = recipe_for(cfg)
    assert recipe["language"] == "de" and recipe["k"] == K and "qdrant-edge-py" in recipe["library"]
    de = encoder(recipe)
    assert de.recipe["language"] == "de"
    spec = VectorSetSpec(name="c", dims=4, sparse=True, metadata={RECIPE_KEY: recipe})
    assert encoder_for(spec) is de  # queries use the recipe the collection was built with
    with pytest.raises(SparseVectorMissingError, match=r"qdrant\.sparse=true"):
        encoder_for(VectorSetSpec(name="dense-only", dims=4))
    with pytest.raises(StoreError, match=r"preprocess\.language='xx'"):
        encoder({"language": "xx"})


def test_sparse_is_its_own_vector_set_and_leaves_dense_fingerprints_alone() -> None:
    off, on = load_config(None), load_config(None, ["qdrant.sparse=true"])
    assert "sparse" not in off.vector_params()  # dense-only fingerprints are what they always were
    assert on.vector_params()["sparse"] == SPARSE_BM25
    assert on.fingerprint("rev") != off.fingerprint("rev")
    lang = load_config(None, ["qdrant.sparse=true", "preprocess.language=de"])
    assert lang.fingerprint("rev") != on.fingerprint("rev")
