"""The ModernBERT paper's retrieval fine-tuning recipes, one name each.

Sources, cited per value below:
  [paper]  Warner et al., "Smarter, Better, Faster, Longer: A Modern Bidirectional Encoder ...",
           arXiv:2412.13663 (ACL 2025): section 3.1.2 and appendix E.2; Table 9 for the learning rates
           (chosen from the sweep [1e-5, 2e-5, 3e-5, 5e-5, 8e-5, 1e-4] on NFCorpus, SciFact, TREC-COVID, FiQA).
  [fix]    The batch sizes: the first arXiv version said 16 for every run; the authors corrected it in
           AnswerDotAI/ModernBERT issue #176 (NohTow, 2025-01-13: "batch_size = 64 accumulation_step = 8 for
           base sizes and batch_size = 16 accumulation_step = 32 for large sizes", on 8 GPUs, no gathering
           across devices) and in the revised appendix E.2, which also gives the ColBERT runs' values
           ("batch size is set to 8 and 4 and gradient accumulation to 2 and 4 for base and large sizes").
           Per device; with fewer than 8 devices multiply grad_accum by 8 / devices.
  [script] What the paper leaves unsaid, taken from the authors' training scripts (examples/train_st.py and
           examples/train_pylate.py in AnswerDotAI's repository): CachedMNRL with mini-batches of 16, bf16,
           one epoch; PyLate's defaults where those scripts set nothing (query 32 / document 180 tokens,
           32-way distillation).
"""

from __future__ import annotations

from typing import Any

from mbret.errors import ParameterError

_DPR_DATA = "hf:sentence-transformers/msmarco-co-condenser-margin-mse-sym-mnrl-mean-v1:triplet-hard"
_COLBERT_DATA = "hf:lightonai/ms-marco-en-bge"

PRESETS: dict[str, dict[str, Any]] = {
    "paper-dpr-base": {
        "mode": "dense",
        "model": "answerdotai/ModernBERT-base",
        "data": _DPR_DATA,  # [paper] MS MARCO with mined hard negatives (the hub dataset it links)
        "max_samples": 1_250_000,  # [paper] "1.25M samples"
        "loss": "cmnrl",  # [paper] contrastive; [script] CachedMultipleNegativesRankingLoss
        "mini_batch_size": 16,  # [script]
        "lr": 8e-5,  # [paper] Table 9, ModernBERT-base DPR
        "batch_size": 64,  # [fix]
        "grad_accum": 8,  # [fix] on 8 devices
        "warmup_ratio": 0.05,  # [paper] "learning rate warmup for 5% of the training"
        "epochs": 1.0,  # [script]
        "bf16": True,  # [script]
    },
    "paper-dpr-large": {
        "mode": "dense",
        "model": "answerdotai/ModernBERT-large",
        "data": _DPR_DATA,
        "max_samples": 1_250_000,  # [paper]
        "loss": "cmnrl",  # [paper] / [script]
        "mini_batch_size": 16,  # [script]
        "lr": 1e-4,  # [paper] Table 9, ModernBERT-large DPR
        "batch_size": 16,  # [fix]
        "grad_accum": 32,  # [fix] on 8 devices
        "warmup_ratio": 0.05,  # [paper]
        "epochs": 1.0,  # [script]
        "bf16": True,  # [script]
    },
    "paper-colbert-base": {
        "mode": "colbert",
        "model": "answerdotai/ModernBERT-base",
        "data": _COLBERT_DATA,  # [paper] MS MARCO with BGE-M3 teacher scores (JaColBERTv2.5 setup)
        "max_samples": 810_000,  # [paper] "810k samples from MS-Marco"
        "loss": "kl",  # [paper] "KL-Divergence between the normalized teacher and student scores"
        "n_ways": 32,  # [script] PyLate's default
        "lr": 1e-4,  # [paper] Table 9, ModernBERT-base ColBERT
        "batch_size": 8,  # [fix] revised appendix E.2
        "grad_accum": 2,  # [fix]
        "warmup_ratio": 0.05,  # [paper]
        "epochs": 1.0,  # [script]
        "bf16": True,  # [script]
        "query_expansion": True,  # [script] PyLate's default: queries padded with [MASK]
        "query_length": 32,  # [script] PyLate default
        "document_length": 180,  # [script] PyLate default (mbret indexes at 300)
    },
    "paper-colbert-large": {
        "mode": "colbert",
        "model": "answerdotai/ModernBERT-large",
        "data": _COLBERT_DATA,
        "max_samples": 810_000,  # [paper]
        "loss": "kl",  # [paper]
        "n_ways": 32,  # [script]
        "lr": 3e-5,  # [paper] Table 9, ModernBERT-large ColBERT
        "batch_size": 4,  # [fix] revised appendix E.2
        "grad_accum": 4,  # [fix]
        "warmup_ratio": 0.05,  # [paper]
        "epochs": 1.0,  # [script]
        "bf16": True,  # [script]
        "query_expansion": True,  # [script]
        "query_length": 32,  # [script]
        "document_length": 180,  # [script]
    },
}

_NOTES = [
    "preset from the ModernBERT paper (arXiv:2412.13663, appendix E.2, Table 9); batch sizes as corrected by "
    "its authors (ModernBERT issue #176 / revised appendix); see mbret/training/presets.py for each value's source",
    "batch_size and grad_accum are per device for 8 devices: with D devices multiply grad_accum by 8 / D",
]


def get_preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ParameterError("preset", f"{name}: choose one of {', '.join(PRESETS)}")
    return {**PRESETS[name], "notes": list(_NOTES)}
