"""`embed.backend: auto`: keep a candidate only when it agrees with torch fp32; else torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import load_config
from embedline.tasks.embed import auto
from embedline.tasks.embed.auto import Trial, choose, resolve_auto

pytestmark = pytest.mark.unit

TORCH = Trial("torch", "fp32", 50.0, 1.0, 1.0)


def test_inaccurate_or_slow_candidates_fall_back_to_torch() -> None:
    trials = [TORCH,
              Trial("onnx", "int8", 120.0, 0.992, 0.958),    # fast, not accurate enough
              Trial("openvino", "fp32", 51.0, 0.99999, 0.9999),  # accurate, not faster than noise
              Trial("onnx", "fp32", 0.0, 0.0, 0.0, error="RuntimeError: export failed")]
    assert choose(trials) is TORCH


def test_the_fastest_accurate_candidate_wins() -> None:
    trials = [TORCH, Trial("onnx", "fp32", 70.0, 1.0, 0.99999), Trial("openvino", "fp32", 160.0, 0.99998, 0.9999),
              Trial("onnx", "int8", 200.0, 0.990, 0.95)]
    best = choose(trials)
    assert (best.backend, best.precision) == ("openvino", "fp32")


def test_resolve_auto_records_the_choice_once_and_names_it_in_the_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"embed:\n  backend: auto\n  models_dir: {tmp_path / 'models'}\n")
    cfg = load_config(params, [])
    calls: list[int] = []

    def fake_measure(p: object, texts: list[str]) -> list[Trial]:
        calls.append(len(texts))
        return [TORCH, Trial("onnx", "int8", 300.0, 0.95, 0.9)]  # no candidate is accurate enough

    monkeypatch.setattr(auto, "measure", fake_measure)
    resolved = resolve_auto(cfg, Artifacts(tmp_path))
    assert (resolved.embed.backend, resolved.embed.precision) == ("torch", "fp32")
    again = resolve_auto(cfg, Artifacts(tmp_path))
    assert again == resolved and calls == [auto.SAMPLE_TEXTS]  # calibrated once per model and machine
    record_file = next((tmp_path / "models").glob("*/calibration.json"))
    record = json.loads(record_file.read_text())[auto.machine_key()]
    assert record["backend"] == "torch" and record["trials"][1]["mean_cosine"] == 0.95
    # the resolved config, not "auto", is what fingerprints the vector set
    explicit = load_config(params, ["embed.backend=torch"])
    assert resolved.fingerprint("rev") == explicit.fingerprint("rev")


def test_api_providers_resolve_auto_without_calibrating(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("embed:\n  provider: fake\n  backend: auto\n")
    cfg = resolve_auto(load_config(params, []))
    assert cfg.embed.backend == "torch"
