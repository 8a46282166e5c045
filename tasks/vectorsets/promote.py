"""Promote a vector set: the quality gate, the alias swap, version retention.

Building (:mod:`embedline.tasks.vectorsets.build`) is always safe; *serving* is this explicit step.
The pipeline runs it as the ``promote`` stage (``always_changed`` in dvc.yaml, so DVC's run-cache
can never skip it), and it moves the alias only when the run is the *recorded* configuration:
params.yaml as it is in the workspace, no ``--set``/UI overrides, not inside ``dvc exp run``
(:func:`serving_decision`). Other runs leave their shadow set built and say how to promote it:
``embedline promote <fingerprint>``.

:func:`promote` (that command) serves one vector set:

1. the workspace's fingerprint by default: its collection is made complete first from the
   workspace's artifacts when it is missing or short (after ``dvc pull``, ``git checkout`` +
   ``dvc checkout``, or a dropped version; nothing is embedded), or any fingerprint whose
   collection the store holds (a shadow set an experiment built);
2. refuse a set much smaller than the served one (``qdrant.max_delete_fraction``) unless
   ``allow_mass_delete``;
3. the gate ``gate(shadow, live)``: by default the retrieval quality gate
   (:func:`embedline.tasks.evaluation.gate.make_gate`, on when ``eval.gate``); raising refuses;
   ``force`` skips it;
4. swap the alias, keep ``qdrant.keep_versions`` older collections.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import PARAMS_FILE, Config, load_config
from embedline.tasks.records import read_json
from embedline.tasks.vectorsets.lifecycle import (
    MassDeleteError,
    physical_name,
    retain_versions,
    store_for,
)
from embedline.tasks.vectorsets.stores import StoreError, VectorStore

# (shadow collection, live collection or None) -> None; raise to refuse the alias swap
Gate = Callable[[str, str | None], None]
EXPERIMENT_ENV = "DVC_EXP_NAME"  # set by `dvc exp run` for the commands of its stages


class VectorSetNotFoundError(StoreError):
    """The fingerprint to promote has no collection in the store."""


def serving_decision(cfg: Config, root: Path, *, overrides: bool = False) -> str | None:
    """None when this run is the recorded configuration (it may move the alias), else why not."""
    exp = os.environ.get(EXPERIMENT_ENV)
    if exp:
        return f"this is the DVC experiment {exp!r}"
    if overrides:
        return "the run has --set overrides"
    params = root / PARAMS_FILE
    if params.exists() and _recorded_part(cfg) != _recorded_part(load_config(params)):
        return "the run's parameters differ from params.yaml"
    return None


# how a run executes, not what it builds: `--full`, `--runner dask` still run the recorded configuration
_EXECUTION_ONLY = {"full_rebuild", "runner", "dask_address", "dask_workers"}


def _recorded_part(cfg: Config) -> dict[str, object]:
    data = cfg.model_dump(mode="json")
    data["run"] = {k: v for k, v in data["run"].items() if k not in _EXECUTION_ONLY}
    return data


def promote_hint(fingerprint: str) -> str:
    return f"embedline promote {fingerprint}"


def workspace_fingerprint(art: Artifacts) -> str | None:
    """The fingerprint the workspace records (manifest.json, a DVC output), if any."""
    if not art.manifest.exists():
        return None
    fp = read_json(art.manifest).get("fingerprint")
    return str(fp) if fp else None


def _complete(store: VectorStore, art: Artifacts, collection: str, fingerprint: str) -> bool:
    """Whether ``collection`` holds what the workspace's receipt says the build left in it."""
    if store.describe(collection) is None or not art.receipt.exists():
        return False
    receipt = read_json(art.receipt)
    return (receipt.get("collection") == collection and receipt.get("fingerprint") == fingerprint
            and store.count(collection) == receipt.get("points_total"))


def _target(cfg: Config, art: Artifacts, store: VectorStore, fingerprint: str | None) -> tuple[str, str, bool]:
    """(fingerprint, collection, built now) of the set to serve; builds the workspace's set if needed."""
    recorded = workspace_fingerprint(art)
    fp = fingerprint or recorded
    if fp is None:
        raise FileNotFoundError(f"{art.manifest} is missing: run the pipeline (`dvc repro`) or name a fingerprint")
    name = fp if fp.startswith(f"{cfg.qdrant.collection}-") else physical_name(cfg.qdrant, fp)
    fp = name.removeprefix(f"{cfg.qdrant.collection}-")
    if fp == recorded and not _complete(store, art, name, fp):
        from embedline.tasks.vectorsets.build import run_build

        run_build(cfg, art)
        return fp, name, True
    if store.describe(name) is None:
        raise VectorSetNotFoundError(
            f"no vector set {fp!r} in the store (collection {name!r}); built sets: "
            f"{', '.join(sorted(store.list_collections())) or 'none'}"
        )
    return fp, name, False


def _guard_shrink(store: VectorStore, cfg: Config, collection: str, live: str | None) -> None:
    frac = cfg.qdrant.max_delete_fraction
    if live is None or store.describe(live) is None:
        return
    live_count, count = store.count(live), store.count(collection)
    if live_count and (live_count - count) / live_count > frac:
        raise MassDeleteError(
            f"the vector set {collection!r} holds {count} points where the served {live!r} holds "
            f"{live_count} (more than qdrant.max_delete_fraction={frac:.0%} fewer); refusing to swap "
            "the alias. Re-run with --allow-mass-delete if this is intended."
        )


def swap_live(store: VectorStore, alias: str, collection: str, live: str | None, *, keep: int,
              gate: Gate | None) -> list[str]:
    """Run the gate, swap the alias, retain versions. Returns dropped collections."""
    if gate is not None:
        gate(collection, live)  # raises to refuse; the shadow stays for inspection
    store.swap_alias(alias, collection)
    return retain_versions(store, alias, keep)


def promote(
    cfg: Config,
    art: Artifacts,
    fingerprint: str | None = None,
    *,
    gate: Gate | None = None,
    force: bool = False,
    allow_mass_delete: bool = False,
) -> dict[str, Any]:
    """Serve the vector set ``fingerprint`` (default: the workspace's) under the alias ``qdrant.collection``."""
    t0 = time.perf_counter()
    store = store_for(cfg, art)
    alias = cfg.qdrant.collection
    fp, collection, built = _target(cfg, art, store, fingerprint)
    live = store.get_alias(alias)
    stats: dict[str, Any] = {"alias": alias, "collection": collection, "fingerprint": fp,
                             "previous_collection": live, "built": built, "promoted": False}
    if live == collection:
        return {**stats, "served_collection": live, "gate": "not needed: already served",
                "seconds": round(time.perf_counter() - t0, 3)}
    if not allow_mass_delete:
        _guard_shrink(store, cfg, collection, live)
    if gate is None and not force:
        from embedline.tasks.evaluation.gate import make_gate

        gate = make_gate(cfg, art)
    dropped = swap_live(store, alias, collection, live, keep=cfg.qdrant.keep_versions,
                        gate=None if force else gate)
    last = getattr(gate, "last", None)
    return {**stats, "promoted": True, "served_collection": collection, "dropped": len(dropped),
            "gate": "skipped (--force)" if force else (last or {}).get("gate", "passed"),
            "seconds": round(time.perf_counter() - t0, 3)}


def run_promote(cfg: Config, art: Artifacts, *, promote_now: bool = True, reason: str | None = None,
                **options: Any) -> dict[str, Any]:
    """The ``promote`` stage: :func:`promote` the workspace's set when ``promote_now``; else only
    report the shadow set and how to serve it (``reason`` says why it is not served)."""
    if promote_now:
        return promote(cfg, art, **options)
    fp = workspace_fingerprint(art) or "?"
    store = store_for(cfg, art)
    live = store.get_alias(cfg.qdrant.collection)
    collection = physical_name(cfg.qdrant, fp)
    return {"alias": cfg.qdrant.collection, "collection": collection, "fingerprint": fp,
            "served_collection": live, "promoted": False, "built": False,
            "reason": reason or "not the recorded configuration",
            "hint": None if live == collection else promote_hint(fp)}
