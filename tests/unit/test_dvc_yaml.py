"""dvc.yaml stays true to the code: every dep exists, every stage depends on all the tasks/ code its
stage module imports (transitively), its params exist in params.yaml, and live stores are not outs."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from embedline.tasks.pipeline import STAGES

pytestmark = pytest.mark.unit

PROJECT = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((PROJECT / "params.yaml").read_text())


def _interpolate(value: str) -> str:
    def lookup(m: re.Match[str]) -> str:
        node: Any = PARAMS
        for part in m.group(1).split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", lookup, value)


def _module_file(module: str) -> Path | None:
    """The file of an ``embedline.tasks.*`` module (the folder tasks/ installs as embedline.tasks)."""
    if not module.startswith("embedline.tasks"):
        return None
    base = PROJECT.joinpath(*module.split(".")[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imports(path: Path, module: str) -> set[str]:
    """tasks.* modules imported anywhere in ``path`` (function-level imports included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("embedline.tasks."))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            if base.startswith("embedline.tasks"):
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}"))
    return found


def _closure(module: str) -> set[Path]:
    """Files of ``module`` and of every tasks/ module it imports, transitively."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = _module_file(mod)
        if path is not None:
            todo.extend(_imports(path, mod))
    files = {_module_file(m) for m in seen if m != "embedline.tasks"}
    return {f.relative_to(PROJECT) for f in files if f is not None}


def _covered(file: Path, deps: list[str]) -> bool:
    return any(file == Path(d) or Path(d) in file.parents for d in deps)


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_runs_its_cli_command(stage: str) -> None:
    assert DVC["stages"][stage]["cmd"] == f"embedline stage {stage}"


def test_stages_are_the_pipeline_stages() -> None:
    assert list(DVC["stages"]) == list(STAGES)


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_dep_exists(stage: str) -> None:
    for dep in DVC["stages"][stage]["deps"]:
        path = PROJECT / _interpolate(dep)
        produced = any(
            _interpolate(dep) == (next(iter(o)) if isinstance(o, dict) else o)
            for s in DVC["stages"].values()
            for o in [*s.get("outs", []), *s.get("metrics", []), *s.get("plots", [])]
        )
        assert produced or path.exists(), f"{stage}: dep {dep} does not exist"


def test_closure_follows_the_package_imports() -> None:
    """The dependency walk below must see the code (it once saw nothing after a rename)."""
    files = _closure("embedline.tasks.chunk")
    assert {Path("tasks/chunk.py"), Path("tasks/config.py"), Path("tasks/tokenize.py")} <= files


@pytest.mark.parametrize("stage", list(STAGES))
def test_code_deps_cover_every_imported_module(stage: str) -> None:
    module = STAGES[stage].split(":")[0]
    deps = [_interpolate(d) for d in DVC["stages"][stage]["deps"]]
    missing = sorted(str(f) for f in _closure(module) if not _covered(f, deps))
    assert not missing, f"stage {stage} imports code that is not a dep: {missing}"


@pytest.mark.parametrize("stage", list(STAGES))
def test_params_exist_in_params_yaml(stage: str) -> None:
    for key in DVC["stages"][stage].get("params", []):
        node: Any = PARAMS
        for part in str(key).split("."):
            assert isinstance(node, dict) and part in node, f"{stage}: param {key} not in params.yaml"
            node = node[part]


def test_live_stores_are_never_outputs() -> None:
    live = {PARAMS["qdrant"]["path"], str(Path(PARAMS["embed"]["cache_path"]).parent)}
    for name, stage in DVC["stages"].items():
        for section in ("outs", "metrics", "plots"):
            for out in stage.get(section, []):
                path = next(iter(out)) if isinstance(out, dict) else out
                assert not any(path == p or path.startswith(p + "/") for p in live), (name, path)


def test_metrics_live_in_git() -> None:
    for name, stage in DVC["stages"].items():
        for out in stage.get("metrics", []):
            assert isinstance(out, dict), f"{name}: metrics must be declared with cache: false"
            assert next(iter(out.values())).get("cache") is False, name


def test_dvcignore_hides_bytecode() -> None:
    patterns = (PROJECT / ".dvcignore").read_text().split()
    assert "__pycache__/" in patterns and "*.pyc" in patterns


# the embed keys the finetune stage does not depend on: replaced (the base and the fine-tuned model,
# embedded on torch fp32: tasks/finetune/stage.py ``with_model``) or changing no vector (API, cache,
# speed). A new embed key must be put on one side or the other.
FINETUNE_IGNORES_EMBED = {
    "provider", "model", "revision", "backend", "precision", "auto_labelled_set",  # replaced (torch fp32)
    "base_url", "api_key_env", "max_inputs_per_request", "max_tokens_per_request", "requests_per_minute",
    "tokens_per_minute", "max_retries", "retry_initial_s", "retry_max_s", "timeout_s",  # API providers
    "batch_size", "concurrency", "shard_rows", "cache", "cache_path", "models_dir",  # speed, storage
}


def test_finetune_depends_on_exactly_the_embed_keys_that_change_its_vectors() -> None:
    from embedline.tasks.config import EmbedParams

    params = [str(p) for p in DVC["stages"]["finetune"]["params"]]
    assert "embed" not in params  # the whole section would re-train on `embed.model: models/finetuned`
    listed = {p.removeprefix("embed.") for p in params if p.startswith("embed.")}
    fields = set(EmbedParams.model_fields)
    assert not listed & FINETUNE_IGNORES_EMBED
    assert listed | FINETUNE_IGNORES_EMBED == fields, sorted(fields - listed - FINETUNE_IGNORES_EMBED)
    # the pipeline's passages and the dataset's vector sets depend on these whole sections
    assert {"finetune", "preprocess", "chunk", "dedupe", "qdrant"} <= set(params)


def test_finetune_embeds_base_and_finetuned_model_on_torch_fp32() -> None:
    from embedline.tasks.config import load_config
    from embedline.tasks.finetune.stage import with_model

    cfg = load_config(PROJECT / "params.yaml", ["embed.backend=auto", "embed.model=models/finetuned"])
    tuned = with_model(cfg, "models/finetuned").embed
    assert (tuned.provider, tuned.model, tuned.backend, tuned.precision) == (
        "sentence-transformers", "models/finetuned", "torch", "fp32")
