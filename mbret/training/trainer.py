"""`mbret train`: the model, the data, the loss and sentence-transformers' trainer, wired from one TrainConfig.

Checkpoints go to OUTPUT/checkpoints every `save_steps` (a killed run continues with `resume`); the final
model is written atomically to OUTPUT/final in the sentence-transformers format, so `mbret index`,
`mbret eval` and plain sentence-transformers load it. `torchrun` / `accelerate launch` run it under DDP.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from mbret.errors import ParameterError
from mbret.io import atomic_new_dir, write_json_atomic
from mbret.training.config import NEW_HEAD_QUERY_EXPANSION, TrainConfig, describe
from mbret.training.data import TrainingData, load_training_data
from mbret.training.losses import build_loss, check_loss_fits_data

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output: Path  # the final model directory
    steps: int
    seconds: float
    samples_per_second: float
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, training loss) as logged
    evals: list[dict[str, float]] = field(default_factory=list)  # eval metrics as logged, with "step"
    peak_memory_mb: float | None = None  # accelerator memory, where there is one


def prepare(config: TrainConfig) -> tuple[Any, TrainingData]:
    """Load data first (cheap, and where most mistakes are), check the loss can use it, then the model."""
    config.validate()
    data = load_training_data(
        config.data or "", n_ways=config.n_ways, num_negatives=config.num_negatives, max_samples=config.max_samples
    )
    check_loss_fits_data(config, data.has_scores, data.num_negatives)
    return _load_encoder(config), data


def _load_encoder(config: TrainConfig) -> Any:
    from mbret.retrieval.backbone import resolve_model_path
    from mbret.retrieval.colbert import is_multivector_checkpoint
    from mbret.retrieval.retriever import load_encoder

    expansion = config.query_expansion
    if (
        config.mode == "colbert"
        and expansion is None
        and not is_multivector_checkpoint(resolve_model_path(config.model or ""))
    ):
        expansion = NEW_HEAD_QUERY_EXPANSION
    return load_encoder(
        config.model or "",
        config.mode,
        device=config.device,
        dtype="float32",  # weights stay fp32; --bf16 trains under autocast
        query_length=config.query_length,
        # a training config's max_length is the old name of its document_length
        document_length=config.document_length if config.document_length is not None else config.max_length,
        seed=config.seed,
        query_expansion=expansion,
    )


def train(config: TrainConfig) -> TrainResult:
    """Run one training job; see the module docstring for what lands where."""
    encoder, data = prepare(config)
    output = Path(config.output or "")
    checkpoints = output / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*")) and not config.resume:
        raise ParameterError(
            "output", f"{output}: holds checkpoints of an earlier run; set resume to continue it, or choose another"
        )
    resume_from = last_complete_checkpoint(checkpoints) if config.resume else None
    if config.resume and resume_from is None:
        raise ParameterError("resume", f"no complete checkpoint in {checkpoints} to continue from")
    output.mkdir(parents=True, exist_ok=True)
    (output / "train_config.yaml").write_text(describe(config) + "\n", encoding="utf-8")

    model = encoder.model
    if config.gradient_checkpointing:
        model[0].auto_model.gradient_checkpointing_enable()
    loss = build_loss(config, model)
    args = _training_arguments(config, checkpoints, encoder)
    history = _History()
    callbacks: list[TrainerCallback] = [history]
    if config.eval_data:
        callbacks.append(_RetrievalEval(config, encoder, history))
    trainer_class = _trainer_class(config.mode)
    trainer = trainer_class(model=model, args=args, train_dataset=data.dataset, loss=loss, callbacks=callbacks)
    _reset_peak_memory()
    start = time.perf_counter()
    state = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - start
    final = output / "final"
    if trainer.is_world_process_zero():
        with atomic_new_dir(final) as tmp:
            encoder.save(tmp)
    result = TrainResult(
        output=final,
        steps=int(state.global_step),
        seconds=seconds,
        samples_per_second=float(state.metrics.get("train_samples_per_second", 0.0)),
        losses=history.losses,
        evals=history.evals,
        peak_memory_mb=_peak_memory_mb(),
    )
    if trainer.is_world_process_zero():
        write_json_atomic(
            output / "train_log.json",
            {
                "final_model": str(final),
                "steps": result.steps,
                "seconds": round(seconds, 2),
                "samples_per_second": result.samples_per_second,
                "effective_batch_size": config.effective_batch_size * trainer.args.world_size,
                "world_size": trainer.args.world_size,
                "loss": config.resolved_loss(),
                "losses": result.losses,
                "evals": result.evals,
                "peak_accelerator_memory_mb": result.peak_memory_mb,
                "examples": len(data),
            },
        )
    return result


def last_complete_checkpoint(checkpoints: Path) -> Path | None:
    """The newest checkpoint whose save finished. A kill during a save leaves a newer directory without its
    trainer state; the trainer would pick that one and fail, so it is moved aside (kept, renamed)."""
    found = sorted(
        (p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    for path in reversed(found):
        if (path / "trainer_state.json").is_file():
            return path
        logger.warning("%s was being written when the run stopped; moving it aside", path)
        path.rename(path.with_name(f"incomplete-{path.name}-{int(time.time())}"))
    return None


def _trainer_class(mode: str) -> Any:
    if mode == "dense":
        from sentence_transformers import SentenceTransformerTrainer

        return SentenceTransformerTrainer
    from sentence_transformers import MultiVectorEncoderTrainer

    return MultiVectorEncoderTrainer


def _training_arguments(config: TrainConfig, checkpoints: Path, encoder: Any) -> Any:
    from sentence_transformers.base.sampler import BatchSamplers

    if config.mode == "dense":
        from sentence_transformers import SentenceTransformerTrainingArguments as Arguments
    else:
        from sentence_transformers.multi_vector_encoder.training_args import (
            MultiVectorEncoderTrainingArguments as Arguments,
        )
    in_batch = config.resolved_loss() in ("cmnrl", "mnrl", "contrastive", "cached-contrastive")
    kwargs: dict[str, Any] = {
        "output_dir": str(checkpoints),
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "learning_rate": config.lr,
        "warmup_steps": config.warmup_ratio,  # a float in [0, 1) is a fraction of the run
        "weight_decay": config.weight_decay,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "bf16": config.bf16,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "seed": config.seed,
        "data_seed": config.seed,
        "report_to": "none",
        "disable_tqdm": False,
        "dataloader_drop_last": in_batch,  # a short last batch would change the in-batch task
        # in-batch negatives must not include a copy of the positive
        "batch_sampler": BatchSamplers.NO_DUPLICATES if in_batch else BatchSamplers.BATCH_SAMPLER,
    }
    if config.device == "cpu":
        kwargs["use_cpu"] = True
    prompts = _dense_prompts(encoder) if config.mode == "dense" else None
    if prompts:
        kwargs["prompts"] = prompts
    return Arguments(**kwargs)


def _dense_prompts(encoder: Any) -> dict[str, str] | None:
    """Column -> prompt, so a model with query/document prompts trains with them as it will be used."""
    if not (encoder.query_prompt or encoder.document_prompt):
        return None
    return {"query": encoder.query_prompt or "", "positive": encoder.document_prompt or ""} | {
        f"negative_{i}": encoder.document_prompt or "" for i in range(1, 257)
    }


class _History(TrainerCallback):
    """Collects the trainer's logs: training loss per step and retrieval metrics."""

    def __init__(self) -> None:
        self.losses: list[tuple[int, float]] = []
        self.evals: list[dict[str, float]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs and math.isfinite(float(logs["loss"])):
            self.losses.append((int(state.global_step), float(logs["loss"])))


class _RetrievalEval(TrainerCallback):
    """Evaluate on `eval_data` (a BEIR directory) every `eval_steps` with mbret's own eval, and log NDCG@10."""

    def __init__(self, config: TrainConfig, encoder: Any, history: _History) -> None:
        from mbret.data.datasets import load_dataset

        self.config, self.encoder, self.history = config, encoder, history
        dataset = load_dataset(config.eval_data or "", split="test")
        if config.eval_max_queries is not None and len(dataset.queries) > config.eval_max_queries:
            keep = sorted(dataset.qrels)[: config.eval_max_queries]
            dataset.queries = {q: dataset.queries[q] for q in keep if q in dataset.queries}
            dataset.qrels = {q: dataset.qrels[q] for q in keep}
        self.dataset = dataset
        self.every = config.eval_steps or config.save_steps

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step % self.every == 0 and state.is_world_process_zero:
            self.run(state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step % self.every != 0 and state.is_world_process_zero:
            self.run(state.global_step)

    def run(self, step: int) -> None:
        from mbret.eval.runner import evaluate
        from mbret.retrieval.retriever import Retriever

        model = self.encoder.model
        was_training = model.training
        model.eval()
        try:
            index_type = "flat" if self.config.mode == "dense" else "exact"
            retriever = Retriever.build(
                self.dataset.corpus, model=self.encoder, index_type=index_type, show_progress=False
            )
            result = evaluate(
                self.dataset, retriever, metrics=["ndcg@10", "recall@100"], show_progress=False, with_manifest=False
            )
        finally:
            model.train(was_training)
        entry = {"step": float(step), **{k: float(v) for k, v in result.metrics.items()}}
        self.history.evals.append(entry)
        logger.info("step %d: %s", step, json.dumps(entry))
        print(f"eval at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if k != "step"))


def _reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_memory_mb() -> float | None:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return None
