"""Fine-tune a sentence-transformers model on pairs: MultipleNegativesRankingLoss (optionally
wrapped in MatryoshkaLoss), sentence-transformers' own trainer, deterministic on CPU.

Determinism: the seed is set for python, numpy and torch before the model loads; the data order
is the trainer's seeded no-duplicates batch sampler (``data_seed``), read in the main process
(``dataloader_num_workers=0``), so two runs with the same base model, pairs and params write
identical weights on one machine. GPU (cuda/mps) is used when present and ``finetune.device=auto``.

The output folder is a plain sentence-transformers model (``embed.model`` can name it) plus
``embedline_finetune.json``: the base model and its revision, the pairs' hash, the training
params, the hashes of the training queries (the gate refuses to evaluate on them) and the
model *fingerprint* = hash(base model + revision, pairs, params). No timings in there: the folder
is a DVC output and must be byte-stable; timings go to the stage's metrics.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedline.tasks.config import FinetuneParams, stable_hash
from embedline.tasks.finetune.pairs import Pair, text_hash

log = logging.getLogger(__name__)

INFO_FILE = "embedline_finetune.json"
# the params that decide the weights (output path, dataset path and enabled do not)
TRAINING_KEYS = (
    "base_model", "pairs", "epochs", "batch_size", "learning_rate", "warmup_ratio", "max_pairs", "max_seq_length",
    "hard_negatives", "negative_depth", "near_duplicate", "min_anchor_chars", "matryoshka_dims", "seed",
)


class NotFineTunedError(FileNotFoundError):
    """A folder named as a fine-tuned model holds none."""


def training_params(ft: FinetuneParams) -> dict[str, Any]:
    data = json.loads(ft.model_dump_json())
    return {k: data[k] for k in TRAINING_KEYS}


def model_fingerprint(base_model: str, base_revision: str, pairs_sha: str, ft: FinetuneParams) -> str:
    """hash(base model + its revision, the pairs, the training params), 16 hex digits."""
    return stable_hash(
        {"base_model": base_model, "base_revision": base_revision, "pairs": pairs_sha,
         "params": training_params(ft)}
    )[:16]


def read_model_info(model_dir: str | Path) -> dict[str, Any] | None:
    """The fine-tuning record of a model folder, or None when the folder is not a fine-tuned model."""
    p = Path(model_dir) / INFO_FILE
    if not p.is_file():
        return None
    info: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    return info


def require_trained(model_dir: str | Path) -> dict[str, Any]:
    info = read_model_info(model_dir)
    if info is None or not info.get("trained"):
        reason = (info or {}).get("reason", "no fine-tuned model there")
        raise NotFineTunedError(
            f"{model_dir} holds no fine-tuned model ({reason}): run `embedline finetune` first"
        )
    return info


def write_placeholder(out_dir: Path, reason: str) -> None:
    """The stage's output when it is switched off: a folder that says so (embedding with it fails)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / INFO_FILE).write_text(json.dumps({"trained": False, "reason": reason}, indent=2) + "\n")


def _device(requested: str) -> str:
    from embedline.tasks.embed.providers.sentence_transformers import pick_device

    return pick_device(requested)


def _dataset(pairs: Sequence[Pair]) -> Any:
    from datasets import Dataset

    cols: dict[str, list[str]] = {"anchor": [p.anchor for p in pairs], "positive": [p.positive for p in pairs]}
    if pairs and all(p.negative is not None for p in pairs):
        cols["negative"] = [str(p.negative) for p in pairs]
    return Dataset.from_dict(cols)


def _loss(model: Any, ft: FinetuneParams) -> Any:
    from sentence_transformers.sentence_transformer.losses import (
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
    )

    loss: Any = MultipleNegativesRankingLoss(model)
    if ft.matryoshka_dims:
        natural = model.get_embedding_dimension()
        dims = [d for d in ft.matryoshka_dims if d <= natural]
        if not dims:
            raise ValueError(f"finetune.matryoshka_dims {list(ft.matryoshka_dims)} exceed the model's width {natural}")
        loss = MatryoshkaLoss(model, loss, matryoshka_dims=dims)
    return loss


def train_model(
    pairs: Sequence[Pair],
    base_path: str,
    out_dir: Path,
    ft: FinetuneParams,
    *,
    info: dict[str, Any],
    progress: bool = True,
) -> dict[str, Any]:
    """Train on ``pairs`` starting from the model folder ``base_path``; write it to ``out_dir``
    (atomically: a sibling temp folder renamed into place) with ``info`` (+ training facts) as
    :data:`INFO_FILE`. Returns training stats (loss, steps, device)."""
    if len(pairs) < 2:
        raise ValueError(f"{len(pairs)} training pair(s): in-batch negatives need at least 2")
    import transformers
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers

    transformers.set_seed(ft.seed)
    device = _device(ft.device)
    model = SentenceTransformer(str(base_path), device=device)
    window = model.max_seq_length
    model.max_seq_length = min(window or ft.max_seq_length, ft.max_seq_length)
    dataset = _dataset(pairs)
    steps_per_epoch = -(-len(pairs) // ft.batch_size)
    with tempfile.TemporaryDirectory(prefix="embedline-finetune-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            num_train_epochs=ft.epochs,
            per_device_train_batch_size=ft.batch_size,
            learning_rate=ft.learning_rate,
            warmup_steps=ft.warmup_ratio,  # < 1: a fraction of the steps
            seed=ft.seed,
            data_seed=ft.seed,
            batch_sampler=BatchSamplers.NO_DUPLICATES,  # a duplicate text in a batch is a false negative
            dataloader_num_workers=0,
            save_strategy="no",
            report_to="none",
            logging_steps=max(1, steps_per_epoch * ft.epochs // 10),
            disable_tqdm=not progress,
            use_cpu=device == "cpu",
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=_loss(model, ft))
        result = trainer.train()
    model.max_seq_length = window  # the saved model keeps the base model's window
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        model.save(str(tmp), create_model_card=False)
        record = {
            **info,
            "trained": True,
            "pairs": len(pairs),
            "columns": list(dataset.column_names),
            "train_query_hashes": sorted({text_hash(p.anchor) for p in pairs if p.query_id is not None}),
        }
        (tmp / INFO_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {
        "train_loss": round(float(result.training_loss), 6),
        "train_steps": int(result.global_step),
        "device": device,
    }
