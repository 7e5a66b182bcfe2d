"""Backbone choices (attention, dtype, length) and the offline tiny ModernBERT."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from mbret.errors import MbretError
from mbret.retrieval import backbone


def test_attention_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbone, "flash_attn_available", lambda: True)
    assert backbone.choose_attn_implementation("cuda") == "flash_attention_2"
    assert backbone.choose_attn_implementation("cuda:1") == "flash_attention_2"
    assert backbone.choose_attn_implementation("cpu") == "sdpa"
    monkeypatch.setattr(backbone, "flash_attn_available", lambda: False)
    assert backbone.choose_attn_implementation("cuda") == "sdpa"


def test_dtype_choice() -> None:
    assert backbone.choose_dtype("cuda") is torch.bfloat16
    assert backbone.choose_dtype("cpu") is torch.float32
    assert backbone.choose_dtype("cpu", "bfloat16") is torch.bfloat16
    assert backbone.choose_dtype("cuda", "float32") is torch.float32
    assert backbone.choose_dtype("cuda", "auto") is torch.bfloat16
    with pytest.raises(MbretError, match="dtype: int3"):
        backbone.choose_dtype("cpu", "int3")


def test_half_precision_the_cpu_lacks_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16/fp16 without native CPU kernels is many times slower than fp32: say so, only then."""
    monkeypatch.setattr(backbone, "cpu_has_native", lambda dtype: False)
    with pytest.warns(UserWarning, match="dtype bfloat16: this CPU has no native"):
        assert backbone.choose_dtype("cpu", "bfloat16") is torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backbone.choose_dtype("cpu", "float32") is torch.float32
        assert backbone.choose_dtype("cuda", "float16") is torch.float16
        monkeypatch.setattr(backbone, "cpu_has_native", lambda dtype: True)
        assert backbone.choose_dtype("cpu", "bf16") is torch.bfloat16
    assert backbone.cpu_has_native(torch.float32)


def test_cuda_device_refused_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert backbone.choose_device(None) == "cpu"
    with pytest.raises(MbretError, match="CUDA is not available"):
        backbone.choose_device("cuda")


def test_max_length_limits() -> None:
    backbone.check_max_length(8192)
    backbone.check_max_length(None)
    with pytest.raises(MbretError, match="between 1 and 8192"):
        backbone.check_max_length(8193)
    with pytest.raises(MbretError, match="between 1 and 512"):
        backbone.check_max_length(1024, model_limit=512)


def test_tiny_modernbert_is_a_real_modernbert(tiny_model: str) -> None:
    model, tokenizer = backbone.load_backbone(tiny_model, device="cpu")
    assert model.config.model_type == "modernbert"
    assert model.config._attn_implementation == "sdpa"
    assert model.dtype is torch.float32
    assert model.config.max_position_embeddings == 8192
    assert model.config.layer_types == ["full_attention", "sliding_attention", "full_attention"]
    assert tokenizer.model_input_names == ["input_ids", "attention_mask"]
    batch = tokenizer(["the cell protein", "unseen wörds ✓"], padding=True, return_tensors="pt")
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"][0, 0].item() == tokenizer.cls_token_id
    assert tokenizer.unk_token_id not in batch["input_ids"][1].tolist()  # byte-level: nothing is unknown
    hidden = model(**batch).last_hidden_state
    assert hidden.shape[:2] == batch["input_ids"].shape and hidden.shape[2] == 64


def test_tiny_modernbert_long_input_uses_local_and_global_layers(tiny_model: str) -> None:
    model, tokenizer = backbone.load_backbone(tiny_model, device="cpu")
    ids = tokenizer(" ".join(["protein"] * 3000), return_tensors="pt", truncation=True, max_length=4000)
    assert ids["input_ids"].shape[1] > 2000
    with torch.inference_mode():
        out = model(**ids).last_hidden_state
    assert torch.isfinite(out).all()


def test_tiny_modernbert_is_deterministic_and_cached(tmp_path: Path) -> None:
    a = backbone.build_tiny_modernbert(tmp_path / "a", seed=3)
    b = backbone.build_tiny_modernbert(tmp_path / "b", seed=3)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    mtime = (a / "config.json").stat().st_mtime_ns
    assert backbone.build_tiny_modernbert(a, seed=3) == a
    assert (a / "config.json").stat().st_mtime_ns == mtime
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_aliases_resolve_offline() -> None:
    assert Path(backbone.resolve_model_path("minilm"), "config.json").is_file()
    assert Path(backbone.resolve_model_path("tiny-modernbert"), "config.json").is_file()
    assert backbone.model_identity("minilm") == "minilm"
    assert backbone.resolve_model_path("org/not-local") == "org/not-local"
