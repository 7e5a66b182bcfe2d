"""One training run's settings: a preset, then a YAML file, then command-line flags (each overriding the last)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbret.errors import InputError, MbretError, ParameterError

MODES = ("dense", "colbert")
# `mbret train --mode colbert` of a head built from a non-ColBERT model: whether its queries are expanded
# with [MASK] while it learns (and so after: the checkpoint records it). Measured both ways on SciFact
# (docs/benchmarks.md, "ColBERT defaults"); a ColBERT/PyLate checkpoint keeps its own setting.
NEW_HEAD_QUERY_EXPANSION = False
# each mode's losses; the first is the default (the paper's)
LOSSES = {
    "dense": ("cmnrl", "mnrl", "kl", "margin-mse"),
    "colbert": ("kl", "contrastive", "cached-contrastive", "margin-mse"),
}


@dataclass
class TrainConfig:
    """Everything `mbret train` needs; field names are the YAML keys and (with - for _) the CLI flags."""

    mode: str = "dense"
    model: str | None = None
    data: str | None = None
    output: str | None = None
    loss: str | None = None  # None: the mode's default
    lr: float = 5e-5
    batch_size: int = 32
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    max_samples: int | None = None  # use only the first N training examples
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    max_length: int | None = None  # dense: tokens per text (None: the model's own)
    query_length: int | None = None  # colbert
    query_expansion: bool | None = None  # colbert: None, the checkpoint's own (off for a new head)
    document_length: int | None = None  # colbert
    n_ways: int = 32  # documents per query for id-based distillation data (1 positive + n_ways-1)
    num_negatives: int | None = None  # cap hard negatives per query (None: all there are)
    mini_batch_size: int = 32  # cached losses: texts per forward inside a batch
    temperature: float = 1.0  # distillation losses: both sides' softmax temperature
    teacher_temperature: float | None = None  # override for the teacher's side (match its score spread)
    bf16: bool = False
    gradient_checkpointing: bool = False
    gather_across_devices: bool = False  # DDP: in-batch negatives from every device
    save_steps: int = 500
    save_total_limit: int | None = 2
    eval_data: str | None = None  # a BEIR directory evaluated during training
    eval_steps: int | None = None  # None: at save_steps
    eval_max_queries: int | None = 200
    logging_steps: int = 10
    seed: int = 0
    device: str | None = None
    resume: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def effective_batch_size(self) -> int:
        """Examples per optimizer step on one device (times the number of devices under DDP)."""
        return self.batch_size * self.grad_accum

    def resolved_loss(self) -> str:
        return self.loss or LOSSES[self.mode][0]

    def validate(self, require_paths: bool = True) -> None:
        if self.mode not in MODES:
            raise ParameterError("mode", f"{self.mode}: choose dense or colbert")
        if self.loss is not None and self.loss not in LOSSES[self.mode]:
            raise ParameterError(
                "loss", f"{self.loss}: for mode {self.mode} choose one of {', '.join(LOSSES[self.mode])}"
            )
        for name in ("batch_size", "grad_accum", "n_ways", "mini_batch_size", "save_steps", "logging_steps"):
            if getattr(self, name) <= 0:
                raise ParameterError(name, f"{getattr(self, name)}: must be a positive integer")
        if not self.lr > 0:
            raise ParameterError("lr", f"{self.lr}: must be positive")
        if self.max_steps <= 0 and not self.epochs > 0:
            raise ParameterError("epochs", f"{self.epochs}: give epochs > 0 or max_steps > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ParameterError("warmup_ratio", f"{self.warmup_ratio}: must be in [0, 1)")
        if self.mode != "colbert" and self.query_expansion is not None:
            raise ParameterError("query_expansion", "applies to mode colbert")
        if self.n_ways < 2:
            raise ParameterError("n_ways", f"{self.n_ways}: distillation needs at least 2 documents per query")
        if require_paths:
            for name in ("model", "data", "output"):
                if not getattr(self, name):
                    raise ParameterError(name, f"required (or set `{name}:` in the config file, or use a preset)")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def read_yaml_config(path: str | Path) -> dict[str, Any]:
    """A YAML mapping of TrainConfig fields (dashes or underscores); unknown keys are an error."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ParameterError("config", f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InputError(path, line, f"not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(path, None, "expected a mapping of settings (key: value)")
    out = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            line = _line_of(text, str(key))
            raise InputError(path, line, f"unknown setting {key!r}; known: {', '.join(sorted(FIELDS))}")
        out[name] = value
    return out


def _line_of(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith(f"{key}:"):
            return number
    return None


def resolve_config(
    preset: str | None = None, config_file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Preset < YAML file < flags. `overrides` holds only the flags the user gave (None means not given)."""
    from mbret.training.presets import get_preset

    values: dict[str, Any] = {}
    if preset:
        values.update(get_preset(preset))
    if config_file:
        values.update(read_yaml_config(config_file))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = set(values) - FIELDS
    if unknown:
        raise MbretError(f"unknown training settings: {', '.join(sorted(unknown))}")
    config = TrainConfig(**values)
    _coerce_types(config)
    return config


def _coerce_types(config: TrainConfig) -> None:
    """YAML gives `5e-5` as a string and `1` for a float field; make each field its declared type."""
    casts = {"float": float, "int": int, "bool": _as_bool}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        kind = str(f.type).split(" | ")[0]
        if value is None or kind not in casts:
            continue
        try:
            setattr(config, f.name, casts[kind](value))
        except (TypeError, ValueError):
            raise MbretError(f"setting {f.name}: {value!r} is not a valid {kind}") from None


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def describe(config: TrainConfig) -> str:
    """The resolved configuration as YAML, with the numbers a user checks before a long run."""
    import yaml

    body = {k: v for k, v in config.as_dict().items() if k != "notes"}
    body["loss"] = config.resolved_loss()
    lines = [yaml.safe_dump(body, sort_keys=False).rstrip()]
    lines.append(
        f"# effective batch size: {config.batch_size} per step x {config.grad_accum} accumulation "
        f"= {config.effective_batch_size} per device (x the number of devices under torchrun/accelerate)"
    )
    lines += [f"# {note}" for note in config.notes]
    return "\n".join(lines)
