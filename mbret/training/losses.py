"""The losses `mbret train --loss` names, per mode, built on sentence-transformers' loss classes.

dense:   cmnrl (cached multiple-negatives ranking: in-batch + hard negatives, GradCache; the paper's),
         mnrl (the same without caching), kl (distillation from teacher scores), margin-mse.
colbert: kl (distillation from teacher scores; the paper's), contrastive (in-batch + hard negatives),
         cached-contrastive (the same with GradCache), margin-mse.
"""

from __future__ import annotations

from typing import Any

from mbret.errors import ParameterError
from mbret.training.config import LOSSES, TrainConfig

NEEDS_SCORES = {"kl", "margin-mse"}
NEEDS_NEGATIVES = {"kl", "margin-mse"}


def check_loss_fits_data(config: TrainConfig, has_scores: bool, num_negatives: int) -> None:
    """Refuse, before any model loads, a loss the data cannot feed."""
    loss = config.resolved_loss()
    if loss in NEEDS_SCORES and not has_scores:
        raise ParameterError(
            "loss",
            f"{loss} distils teacher scores, and {config.data} has none: add them with `mbret score`, "
            f"or choose loss {LOSSES[config.mode][0] if config.mode == 'dense' else 'contrastive'}",
        )
    if loss in NEEDS_NEGATIVES and num_negatives < 1:
        raise ParameterError(
            "loss", f"{loss} needs at least one negative per query in {config.data} (see `mbret mine`)"
        )


def build_loss(config: TrainConfig, model: Any) -> Any:
    """The loss object for `config.mode` / `config.resolved_loss()` around a SentenceTransformer or
    MultiVectorEncoder `model`."""
    loss = config.resolved_loss()
    if config.mode == "dense":
        from sentence_transformers.sentence_transformer import losses as st

        if loss == "cmnrl":
            return st.CachedMultipleNegativesRankingLoss(
                model, mini_batch_size=config.mini_batch_size, gather_across_devices=config.gather_across_devices
            )
        if loss == "mnrl":
            return st.MultipleNegativesRankingLoss(model, gather_across_devices=config.gather_across_devices)
        if loss == "kl":
            return st.DistillKLDivLoss(
                model, temperature=config.temperature, teacher_temperature=config.teacher_temperature
            )
        if loss == "margin-mse":
            return st.MarginMSELoss(model)
    else:
        from sentence_transformers.multi_vector_encoder import losses as mv

        if loss == "kl":
            return mv.MultiVectorDistillKLDivLoss(
                model,
                temperature=config.temperature,
                teacher_temperature=config.teacher_temperature,
                mini_batch_size=config.mini_batch_size,
            )
        if loss == "contrastive":
            return mv.MultiVectorMultipleNegativesRankingLoss(model, gather_across_devices=config.gather_across_devices)
        if loss == "cached-contrastive":
            return mv.CachedMultiVectorMultipleNegativesRankingLoss(
                model, mini_batch_size=config.mini_batch_size, gather_across_devices=config.gather_across_devices
            )
        if loss == "margin-mse":
            return mv.MultiVectorMarginMSELoss(model)
    raise ParameterError("loss", f"{loss}: for mode {config.mode} choose one of {', '.join(LOSSES[config.mode])}")
