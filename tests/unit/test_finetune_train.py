"""Training: two runs with the same pairs and params write identical weights on CPU; the model
folder records its base, pairs and fingerprint; a disabled stage records that it is off."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import load_config
from embedline.tasks.finetune.pairs import Pair
from embedline.tasks.finetune.train import (
    INFO_FILE,
    NotFineTunedError,
    model_fingerprint,
    require_trained,
    train_model,
)
from tests.finetunedata import TOPICS, build_tiny_model

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _pairs() -> list[Pair]:
    topics = list(TOPICS.items())
    return [
        Pair(anchor=q, positive=text, kind="train-split", docs=(t,), query_id=t,
             negative=topics[(i + 1) % len(topics)][1][1], negative_doc=topics[(i + 1) % len(topics)][0])
        for i, (t, (q, text)) in enumerate(topics)
    ]


def _weights(model_dir: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_two_tiny_runs_write_identical_weights(tiny_model: Path, tmp_path: Path) -> None:
    import torch

    ft = load_config(None, ["finetune.batch_size=3", "finetune.epochs=2", "finetune.learning_rate=1e-3",
                            "finetune.device=cpu", "finetune.max_seq_length=32"]).finetune
    info = {"fingerprint": model_fingerprint(str(tiny_model), "rev", "sha", ft)}
    a = train_model(_pairs(), str(tiny_model), tmp_path / "a", ft, info=info, progress=False)
    b = train_model(_pairs(), str(tiny_model), tmp_path / "b", ft, info=info, progress=False)
    assert a == b and a["train_steps"] == 4 and a["device"] == "cpu"
    wa, wb, w0 = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tiny_model)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # type: ignore[arg-type]
    assert any(not torch.equal(wa[k], w0[k]) for k in wa)  # type: ignore[arg-type]  (it did train)
    assert (tmp_path / "a" / INFO_FILE).read_bytes() == (tmp_path / "b" / INFO_FILE).read_bytes()
    record = require_trained(tmp_path / "a")
    assert record["fingerprint"] == info["fingerprint"] and record["pairs"] == 6
    assert record["columns"] == ["anchor", "positive", "negative"]
    assert len(record["train_query_hashes"]) == 6
    # the saved model keeps the base model's window, not the training truncation
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(tmp_path / "a"), device="cpu").max_seq_length == 64
    # a different seed gives different weights
    ft2 = ft.model_copy(update={"seed": 7})
    train_model(_pairs(), str(tiny_model), tmp_path / "c", ft2, info=info, progress=False)
    wc = _weights(tmp_path / "c")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)  # type: ignore[arg-type]


def test_matryoshka_training_and_widths_beyond_the_model(tiny_model: Path, tmp_path: Path) -> None:
    ft = load_config(None, ["finetune.batch_size=3", "finetune.device=cpu", "finetune.max_seq_length=32",
                            "finetune.matryoshka_dims=[32, 16, 8]"]).finetune
    stats = train_model(_pairs(), str(tiny_model), tmp_path / "m", ft, info={}, progress=False)
    assert stats["train_steps"] == 2 and stats["train_loss"] > 0
    too_wide = ft.model_copy(update={"matryoshka_dims": (512,)})
    with pytest.raises(ValueError, match="exceed the model's width 32"):
        train_model(_pairs(), str(tiny_model), tmp_path / "w", too_wide, info={}, progress=False)


def test_fingerprint_covers_base_pairs_and_training_params() -> None:
    ft = load_config(None).finetune
    fp = model_fingerprint("m", "rev", "sha", ft)
    assert fp == model_fingerprint("m", "rev", "sha", ft.model_copy(update={"output": "elsewhere"}))
    assert len({fp, model_fingerprint("m", "rev2", "sha", ft), model_fingerprint("m", "rev", "sha2", ft),
                model_fingerprint("m", "rev", "sha", ft.model_copy(update={"epochs": 2}))}) == 4


def test_disabled_stage_records_that_it_is_off(tmp_path: Path) -> None:
    from embedline.tasks.finetune.stage import pairs_path, run_finetune

    cfg = load_config(None)
    art = Artifacts(tmp_path)
    assert run_finetune(cfg, art) == {"enabled": False, "pairs": 0}
    assert pairs_path(art).read_bytes() == b""
    with pytest.raises(NotFineTunedError, match=r"finetune\.enabled is false"):
        require_trained(tmp_path / "models" / "finetuned")


def test_flow_comparison_table() -> None:
    from embedline.flows.finetune import comparison_markdown

    assert comparison_markdown({"pairs": 3}) == ""
    table = comparison_markdown({"base_ndcg@10": 0.3, "finetuned_ndcg@10": 0.35, "delta_ndcg@10": 0.05})
    assert table.splitlines()[2] == "| ndcg@10 | 0.3000 | 0.3500 | +0.0500 |"


def test_shadow_of_a_finetuned_model_embeds_on_torch_unless_a_backend_is_named(tmp_path: Path) -> None:
    from embedline.tasks.finetune.lifecycle import shadow_config

    art = Artifacts(tmp_path)
    auto = shadow_config(load_config(None, ["embed.backend=auto"]), art, tmp_path / "models" / "ft").embed
    assert (auto.model, auto.backend, auto.precision) == (str(tmp_path / "models" / "ft"), "torch", "fp32")
    named = shadow_config(load_config(None, ["embed.backend=onnx"]), art, tmp_path / "models" / "ft").embed
    assert named.backend == "onnx"  # the user's explicit choice is kept


def test_the_stage_does_not_calibrate_an_auto_backend(tmp_path: Path) -> None:
    from embedline.tasks.pipeline import run_stage

    cfg = load_config(None, ["embed.backend=auto", "embed.models_dir=models-dir"])
    assert run_stage("finetune", cfg, Artifacts(tmp_path))["enabled"] is False
    assert not (tmp_path / "models-dir").exists()  # no export, no calibration record


def test_a_finetuned_model_runs_on_the_onnx_backend_that_auto_calibrates(tiny_model: Path, tmp_path: Path) -> None:
    """sentence-transformers >= 6 saves ``pooling_mode``/``embedding_dimension`` (no
    ``pooling_mode_mean_tokens``) and no ``max_seq_length`` in ``sentence_bert_config.json``: the
    onnx/openvino pipeline reader rejected every fine-tuned model, so ``embed.backend=auto`` could
    never pick anything but torch for it."""
    from embedline.tasks.config import EmbedParams
    from embedline.tasks.embed import clear_embedders
    from embedline.tasks.embed.auto import measure
    from embedline.tasks.embed.providers.onnx_backend import read_pipeline

    ft = load_config(None, ["finetune.batch_size=3", "finetune.device=cpu", "finetune.max_seq_length=32"]).finetune
    out = tmp_path / "tuned"
    train_model(_pairs(), str(tiny_model), out, ft, info={}, progress=False)
    assert read_pipeline(str(out)) == {"pooling": "mean", "normalize": True, "max_seq_length": 64, "dims": 32}
    params = EmbedParams.model_validate({"provider": "sentence-transformers", "model": str(out), "backend": "auto",
                                         "models_dir": str(tmp_path / "exported")})
    try:
        trials = measure(params, [q + " " + text for q, text in TOPICS.values()], candidates=[("onnx", "fp32")])
    finally:
        clear_embedders()
    onnx = next(t for t in trials if t.backend == "onnx")
    assert onnx.error is None and onnx.min_cosine > 0.9999
