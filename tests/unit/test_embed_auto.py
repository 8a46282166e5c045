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


def test_a_candidate_below_0999_needs_a_measured_ndcg_loss_within_0005() -> None:
    int8 = Trial("onnx", "int8", 120.0, 0.992, 0.958)
    assert choose([TORCH, int8]) is TORCH  # no labelled set: the 0.999 rule alone
    kept = Trial("onnx", "int8", 120.0, 0.992, 0.958, ndcg_loss=0.004)
    assert choose([TORCH, kept]) is kept
    assert choose([TORCH, Trial("onnx", "int8", 120.0, 0.992, 0.958, ndcg_loss=0.006)]) is TORCH
    assert choose([TORCH, Trial("onnx", "int8", 120.0, 0.985, 0.9, ndcg_loss=0.0)]) is TORCH  # < 0.99


def test_the_default_is_auto_and_the_manifest_records_the_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local model folder (as the finetune stage builds one) is calibrated under its own hash;
    the manifest names the rule and the agreement; the stats carry the cost."""
    import shutil

    from embedline.tasks.config import Config
    from embedline.tasks.embed.manifest import build_manifest, run_facts
    from embedline.tasks.embed.providers.sentence_transformers import local_model_revision
    from embedline.tasks.tokenize import resolve_model

    assert Config().embed.backend == "auto"
    model = tmp_path / "models" / "finetuned"
    shutil.copytree(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), model)
    params = tmp_path / "params.yaml"
    params.write_text(f"embed:\n  model: {model}\n  models_dir: {tmp_path / 'exports'}\n")
    cfg = load_config(params, [])
    monkeypatch.setattr(auto, "measure", lambda p, texts: [
        TORCH, Trial("openvino", "fp32", 92.0, 0.999995, 0.99998), Trial("onnx", "int8", 130.0, 0.991, 0.96)])
    resolved = resolve_auto(cfg, Artifacts(tmp_path))
    assert (resolved.embed.backend, resolved.embed.precision) == ("openvino", "fp32")
    record_file = tmp_path / "exports" / local_model_revision(model)[:16] / "calibration.json"
    assert record_file.is_file()
    manifest = build_manifest(resolved, Artifacts(tmp_path), "rev", 384, 0, 0, "c")
    choice = manifest["backend_choice"]
    assert choice["requested"] == "auto" and choice["mean_cosine"] == 0.999995 and choice["sample"] == "built-in"
    assert manifest["backend"] == "openvino" and "speedup" not in choice  # timings stay out of DVC outs
    facts = run_facts(resolved, {"texts_embedded": 0}, 1.0)
    assert facts["auto_speedup"] == pytest.approx(92.0 / 50.0, abs=1e-3) and "auto_calibration_seconds" in facts
    explicit = load_config(params, ["embed.backend=openvino"])
    assert build_manifest(explicit, Artifacts(tmp_path), "rev", 384, 0, 0, "c")["backend_choice"] == {
        "requested": "openvino"}
    assert resolved.fingerprint("rev") == explicit.fingerprint("rev") != cfg.fingerprint("rev")
    # the record survives copies of the config (the stages copy it for scratch workspaces)
    assert resolved.model_copy(update={"source": "x"}).embed.auto_choice == resolved.embed.auto_choice


def test_the_labelled_check_measures_the_ndcg_loss_on_a_beir_set(tmp_path: Path) -> None:
    import numpy as np

    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": "", "text": w}) + "\n" for i, w in enumerate(["apple", "bread", "cider"])))
    (tmp_path / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "apple?"}) + "\n" + json.dumps({"_id": "q2", "text": "cider?"}) + "\n")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\nq2\td2\t1\n")
    words = ["apple", "bread", "cider"]

    def exact(texts: list[str]) -> np.ndarray:
        return np.eye(3, dtype=np.float32)[[words.index(t.rstrip("?")) for t in texts]]

    def confused(texts: list[str]) -> np.ndarray:  # every query lands on "bread"
        return np.eye(3, dtype=np.float32)[[1 if t.endswith("?") else words.index(t) for t in texts]]

    check = auto._Labelled(str(tmp_path), exact)
    near = Trial("onnx", "int8", 100.0, 0.995, 0.97)
    assert check.loss(near, exact) == 0.0
    lost = check.loss(near, confused)
    assert lost is not None and lost > auto.MAX_NDCG_LOSS  # the right doc fell from rank 1 to 2
    assert check.loss(Trial("onnx", "fp32", 100.0, 0.9999, 0.999), confused) is None  # not needed
    assert check.loss(Trial("onnx", "int8", 100.0, 0.98, 0.9), confused) is None  # below 0.99 anyway
