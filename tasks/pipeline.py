"""The stage registry: one name per DAG node, one pure function per name.

Both shells use it: `embedline stage NAME` (what dvc.yaml calls) and the Prefect `ingest` flow.
Neither re-implements a stage. Functions are imported on first use, so `embedline --help` and the
light stages do not pay for torch.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config
from embedline.tasks.memory import release_freed
from embedline.tasks.records import write_json

StageFn = Callable[..., dict[str, Any]]

# DAG order. Each value is "module:function" with the signature (cfg, art, **options) -> stats.
STAGES: dict[str, str] = {
    "preprocess": "embedline.tasks.preprocess:run_preprocess",
    "chunk": "embedline.tasks.chunk:run_chunk",
    "embed": "embedline.tasks.embed:run_embed",
    "dedupe": "embedline.tasks.dedupe:run_dedupe",
    "upsert": "embedline.tasks.vectorsets.build:run_build",
    "evaluate": "embedline.tasks.evaluate:run_evaluate_stage",
    "promote": "embedline.tasks.vectorsets.promote:run_promote",
    "finetune": "embedline.tasks.finetune.stage:run_finetune",  # off unless finetune.enabled
}
INGEST_STAGES = ("preprocess", "chunk", "embed", "dedupe", "upsert", "promote")
# Stages without a data/metrics/<name>.json: promote acts on the store on every run (dvc.yaml:
# always_changed), its stats are printed, never written to a Git-tracked file.
UNRECORDED = frozenset({"promote"})
# Stages whose stats file dvc.yaml declares as a metric (listed by `dvc exp show`): written without
# timings, so an experiment's row shows only what changed in the results.
DVC_METRICS = frozenset({"finetune"})


class UnknownStageError(KeyError):
    def __str__(self) -> str:
        return f"unknown stage {self.args[0]!r}; valid stages: {', '.join(STAGES)}"


def stage_function(name: str) -> StageFn:
    try:
        target = STAGES[name]
    except KeyError:
        raise UnknownStageError(name) from None
    module, func = target.split(":")
    fn: StageFn = getattr(importlib.import_module(module), func)
    return fn


# Heavy libraries a stage imports on first use, beyond its own module (see warm_later)
STAGE_LIBRARIES: dict[str, tuple[str, ...]] = {
    "dedupe": ("embedline.tasks.neardup", "scipy.sparse.csgraph", "faiss"),
    "evaluate": ("embedline.tasks.evaluation.stage", "bm25s"),
}
STORE_STAGES = frozenset({"upsert", "evaluate", "promote"})  # stages that open the vector store
# Stages whose work runs in native threads that release the GIL (the model's inference): while one
# runs, the imports of the stages after it are loaded in a background thread (warm_later)
WARM_DURING = frozenset({"embed"})


def stage_modules(name: str, cfg: Config) -> list[str]:
    """The modules ``name`` imports on first use under ``cfg``: its own, its heavy libraries, the store's."""
    from embedline.tasks.vectorsets.stores import STORE_MODULES

    mods = [STAGES[name].split(":")[0], *STAGE_LIBRARIES.get(name, ())]
    if name in STORE_STAGES:
        mods += STORE_MODULES.get(cfg.qdrant.backend, ())
    return mods


def _import_quietly(modules: Sequence[str]) -> None:
    for mod in modules:
        try:
            importlib.import_module(mod)
        except Exception:  # noqa: BLE001 not installed / broken: the stage itself reports it when it runs
            return


def warm_later(name: str, later: Sequence[str], cfg: Config) -> Callable[[], None]:
    """In a process that runs several stages, start importing the modules of the stages in ``later``
    while ``name`` runs, if ``name`` computes in native threads (:data:`WARM_DURING`); returns the
    call that waits for those imports (call it when ``name`` is done, before the next stage starts,
    so no two threads ever import the same modules at once). A first ingest of the sample corpus
    with the qdrant-client store imported ~1.5 s of dedupe/upsert libraries after its embed stage;
    loaded during the embed stage, they cost that stage a fraction of it (the inference threads
    keep both cores). Anything else: a no-op."""
    if name not in WARM_DURING or not later:
        return lambda: None
    modules = list(dict.fromkeys(m for stage in later for m in stage_modules(stage, cfg)))
    thread = threading.Thread(target=_import_quietly, args=(modules,), name="warm-imports", daemon=True)
    thread.start()
    return thread.join


def run_stage(name: str, cfg: Config, art: Artifacts, **options: Any) -> dict[str, Any]:
    """Run one stage and record its stats as data/metrics/<name>.json (a DVC metric)."""
    start = time.perf_counter()
    if name not in ("preprocess", "chunk", "finetune"):  # embed.backend=auto -> the calibrated backend
        # (finetune embeds its base and fine-tuned model on torch fp32 itself: nothing to calibrate)
        from embedline.tasks.embed.auto import resolve_auto

        cfg = resolve_auto(cfg, art)
    try:
        stats = dict(stage_function(name)(cfg, art, **options))
    finally:  # what the stage freed goes back to the OS: the next stage starts from the floor
        release_freed()
    if name in UNRECORDED:
        return stats
    stats.setdefault("seconds", round(time.perf_counter() - start, 3))
    if not options.get("dry_run"):
        recorded = stats
        if name in DVC_METRICS:  # `dvc exp show` lists it: scores only, no timings
            recorded = {k: v for k, v in stats.items() if not k.endswith("seconds")}
        write_json(art.metric(name), recorded)
    return stats
