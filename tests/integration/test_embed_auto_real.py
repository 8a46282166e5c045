"""`embed.backend: auto` on the real default model: real exports, real agreement with torch fp32."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import load_config
from embedline.tasks.embed import auto
from embedline.tasks.embed.auto import (
    FALLBACK_TEXTS,
    MIN_MEAN_COSINE,
    choose,
    measure,
    resolve_auto,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_int8_alone_is_not_accurate_enough_so_auto_falls_back_to_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dynamic int8 quantisation of MiniLM agrees with torch fp32 at mean cosine ~0.99 (FACTS):
    below the 0.999 rule, and no labelled set is configured, so torch fp32 is kept."""
    params = tmp_path / "params.yaml"
    params.write_text(f"embed:\n  backend: auto\n  models_dir: {tmp_path / 'models'}\n")
    cfg = load_config(params, [])
    texts = FALLBACK_TEXTS[:24]
    trials = measure(cfg.embed, texts, candidates=[("onnx", "int8")])
    int8 = trials[1]
    assert int8.error is None and 0.9 < int8.mean_cosine < MIN_MEAN_COSINE, int8
    assert choose(trials).backend == "torch"
    # the same through resolve_auto (real measurements, int8 as the only candidate)
    monkeypatch.setattr(auto, "CANDIDATES", (("onnx", "int8"),))
    monkeypatch.setattr(auto, "measure", lambda p, t: measure(p, t[:24], candidates=auto.CANDIDATES))
    resolved = resolve_auto(cfg, Artifacts(tmp_path))
    assert (resolved.embed.backend, resolved.embed.precision) == ("torch", "fp32")
    assert resolved.embed.auto_choice is not None and resolved.embed.auto_choice["trials"][1]["backend"] == "onnx"
