"""Fine-tuning the embedding model on the corpus's own signal, and serving it only if it wins.

=============  ==================================================================================
``pairs``      training pairs: a BEIR train split, or mined (title/heading -> section); hard
               negatives from the vector set (own document and near-duplicates excluded); the
               leakage check; the pairs artifact (data/finetune/pairs.jsonl)
``split``      split a BEIR collection's queries into train / held-out by query id (deterministic)
``train``      sentence-transformers' trainer, MultipleNegativesRankingLoss (+ Matryoshka),
               deterministic on CPU; the model folder + its record and fingerprint
``stage``      the ``finetune`` stage: pairs -> model (-> base vs fine-tuned on the held-out split)
``lifecycle``  shadow vector set of the fine-tuned model -> leakage check + quality gate -> promote
=============  ==================================================================================
"""
