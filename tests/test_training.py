"""Training: settings resolution, the four data shapes, every mode x loss on the tiny ModernBERT, kill + resume,
mining and teacher scoring."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mbret.errors import InputError, MbretError
from mbret.training.config import LOSSES, NEW_HEAD_QUERY_EXPANSION, TrainConfig, resolve_config
from mbret.training.data import load_training_data
from mbret.training.presets import PRESETS

from .conftest import free_port
from .training_data import synthetic_beir, synthetic_rows, write_flag, write_id_directory, write_jsonl, write_triplets

REPO = Path(__file__).resolve().parents[1]


# -- settings ------------------------------------------------------------------------------------------------
def test_preset_then_yaml_then_flags(tmp_path: Path) -> None:
    config_file = tmp_path / "run.yaml"
    config_file.write_text("lr: 3e-5\nbatch-size: 4\ngrad_accum: 16\nbf16: false\n", encoding="utf-8")
    config = resolve_config("paper-colbert-base", config_file, {"batch_size": 2, "lr": None})
    assert config.mode == "colbert" and config.loss == "kl" and config.n_ways == 32
    assert config.lr == 3e-5  # YAML beats the preset (and "3e-5" is a float, not a string)
    assert config.batch_size == 2 and config.grad_accum == 16  # the flag beats YAML; YAML beats the preset
    assert config.bf16 is False and config.effective_batch_size == 32


def test_yaml_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 1e-4\nbatchsize: 3\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.yaml:2: unknown setting 'batchsize'"):
        resolve_config(None, bad, {})
    broken = tmp_path / "broken.yaml"
    broken.write_text("lr: [1\nmode: dense\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"broken\.yaml:\d+: not valid YAML"):
        resolve_config(None, broken, {})
    with pytest.raises(MbretError, match="loss: kl-div"):
        TrainConfig(mode="dense", loss="kl-div").validate(require_paths=False)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_dry_run(cli, preset: str) -> None:
    result = cli("train", "--preset", preset, "--dry-run")
    assert result.code == 0, result.err
    body = PRESETS[preset]
    shown = yaml.safe_load(result.out)  # the dry run prints YAML (and comments)
    assert shown["lr"] == body["lr"] and shown["batch_size"] == body["batch_size"] and shown["mode"] == body["mode"]
    assert f"= {body['batch_size'] * body['grad_accum']} per device" in result.out
    assert "arXiv:2412.13663" in result.out and "warmup_ratio: 0.05" in result.out


def test_dry_run_flags_win_and_bad_values_exit_2(cli) -> None:
    result = cli("train", "--preset", "paper-dpr-base", "--grad-accum", "32", "--dry-run")
    assert result.code == 0 and "grad_accum: 32" in result.out and "= 2048 per device" in result.out
    assert cli("train", "--mode", "dense", "--batch-size", "0", "--dry-run").code == 2
    assert cli("train", "--mode", "sparse", "--dry-run").code == 2


# -- data shapes -----------------------------------------------------------------------------------------------
def test_four_data_shapes_load(tmp_path: Path) -> None:
    flag = load_training_data(str(write_flag(tmp_path / "flag.jsonl", n=10)))
    assert flag.kind == "flag" and flag.has_scores and flag.num_negatives == 3 and len(flag) == 10
    assert flag.dataset.column_names == ["query", "positive", "negative_1", "negative_2", "negative_3", "label"]
    assert flag.dataset[0]["label"][0] == 10.0

    triplets = load_training_data(str(write_triplets(tmp_path / "triplets.jsonl", n=10)), num_negatives=2)
    assert triplets.kind == "triplets" and not triplets.has_scores and triplets.num_negatives == 2
    rows = [json.loads(line) for line in (tmp_path / "triplets.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "triplets.parquet")
    parquet = load_training_data(str(tmp_path / "triplets.parquet"))
    assert parquet.dataset[3]["negative_2"] == rows[3]["negative_2"]

    ids = load_training_data(str(write_id_directory(tmp_path / "kd", n=8)), n_ways=3)
    assert ids.kind == "ids" and ids.has_scores and ids.num_negatives == 2
    first = ids.dataset[0]  # resolved lazily from the id tables
    assert list(first) == ["query", "document_1", "document_2", "document_3", "scores"]
    assert first["query"] == synthetic_rows(8)[0]["query"] and len(first["scores"]) == 3

    beir = load_training_data(str(synthetic_beir(tmp_path / "beir")))
    assert beir.kind == "beir" and beir.num_negatives == 0 and len(beir) == 16


def test_bad_rows_name_file_and_row(tmp_path: Path) -> None:
    rows = synthetic_rows(3)
    rows[1]["neg_scores"] = [1.0]  # three negatives, one score
    with pytest.raises(InputError, match=r"bad\.jsonl:2: `neg_scores` must be a list of 3 numbers"):
        load_training_data(str(write_jsonl(tmp_path / "bad.jsonl", rows)))
    (tmp_path / "broken.jsonl").write_text('{"query": "a", "positive": "b"}\n{"query": \n', encoding="utf-8")
    with pytest.raises(InputError, match=r"broken\.jsonl:2: invalid JSON"):
        load_training_data(str(tmp_path / "broken.jsonl"))
    write_jsonl(tmp_path / "nopos.jsonl", [{"query": "a", "negative": "b"}])
    with pytest.raises(InputError, match=r"nopos\.jsonl:1: needs a query and a positive"):
        load_training_data(str(tmp_path / "nopos.jsonl"))


def test_distillation_without_scores_is_refused_before_loading_a_model(cli, tmp_path: Path) -> None:
    data = write_flag(tmp_path / "plain.jsonl", scores=False)
    result = cli("train", "--mode", "colbert", "--model", "no-such-model", "--data", data, "--output", tmp_path / "o")
    assert result.code == 2 and "loss: kl distils teacher scores" in result.err
    assert not (tmp_path / "o").exists()


# -- training runs ---------------------------------------------------------------------------------------------
TRAIN_CASES = [(mode, loss) for mode in ("dense", "colbert") for loss in LOSSES[mode]]


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "loss"), TRAIN_CASES)
def test_every_mode_and_loss_trains_reloads_and_evaluates(
    tiny_model: str, tmp_path: Path, cli, mode: str, loss: str
) -> None:
    from mbret.training.trainer import train

    data = write_flag(tmp_path / "train.jsonl", n=48)
    config = TrainConfig(
        mode=mode,
        model=tiny_model,
        data=str(data),
        output=str(tmp_path / "run"),
        loss=loss,
        lr=2e-3,
        batch_size=8,
        max_steps=12,
        save_steps=1000,
        logging_steps=1,
        warmup_ratio=0.0,
        device="cpu",
        mini_batch_size=4,
        query_length=8,
        document_length=16,
        query_expansion=True if loss == "contrastive" else None,  # one run overrides the default
    )
    result = train(config)
    losses = [value for _, value in result.losses]
    assert result.steps == 12 and len(losses) >= 10
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses  # it learns
    final = result.output
    assert (final / "config_sentence_transformers.json").is_file()
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    assert log["steps"] == 12 and log["loss"] == loss
    beir = synthetic_beir(tmp_path / "beir")
    args = ["--model", final, "--mode", mode] + (
        ["--query-length", "8", "--document-length", "16"] if mode == "colbert" else []
    )
    assert cli("index", beir / "corpus.jsonl", "--output", tmp_path / "idx", *args).code == 0
    # the run directory itself names its final model, as a user passes it straight after training
    run_args = [a if a != final else tmp_path / "run" for a in args]
    evaluated = cli("eval", beir, "--output", tmp_path / "eval", *run_args)
    assert evaluated.code == 0, evaluated.err
    assert f"an mbret training run; using its final model, {final}" in evaluated.err
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert 0.0 <= results["metrics"]["ndcg@10"] <= 1.0 and results["model"] == str(final.resolve())
    if mode == "colbert":  # the checkpoint keeps the query expansion it was trained with
        from mbret.retrieval.colbert import ColBERTEncoder

        trained_with = True if loss == "contrastive" else NEW_HEAD_QUERY_EXPANSION
        reloaded = ColBERTEncoder.load(str(final), device="cpu")
        assert reloaded.query_expansion is trained_with and results["settings"]["query_expansion"] is trained_with
        assert reloaded.query_length == 8  # the width or cap it was trained at


def test_plain_sentence_transformers_loads_the_trained_model(tiny_model: str, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from mbret.training.trainer import train

    config = TrainConfig(
        mode="dense",
        model=tiny_model,
        data=str(write_triplets(tmp_path / "t.jsonl", n=16)),
        output=str(tmp_path / "run"),
        batch_size=8,
        max_steps=2,
        save_steps=1000,
        device="cpu",
    )
    final = train(config).output
    vectors = SentenceTransformer(str(final), device="cpu").encode(["brain neurons", "virus cells"])
    assert vectors.shape == (2, 64)


def test_eval_data_is_evaluated_during_training(tiny_model: str, tmp_path: Path) -> None:
    from mbret.training.trainer import train

    beir = synthetic_beir(tmp_path / "beir")
    config = TrainConfig(
        mode="dense",
        model=tiny_model,
        data=str(beir),
        output=str(tmp_path / "run"),
        batch_size=8,
        max_steps=4,
        save_steps=1000,
        eval_data=str(beir),
        eval_steps=2,
        device="cpu",
        loss="mnrl",
    )
    result = train(config)
    assert [e["step"] for e in result.evals] == [2.0, 4.0]
    assert all(0.0 <= e["ndcg@10"] <= 1.0 for e in result.evals)


def _dense_train_args(model: str, data: Path, out: Path, max_steps: int, save_steps: int = 100) -> list[str]:
    """`mbret train` arguments for a small dense run of the tiny model on CPU (mnrl, batches of 4)."""
    return [
        "train", "--mode", "dense", "--model", model, "--data", str(data), "--output", str(out),
        "--batch-size", "4", "--max-steps", str(max_steps), "--save-steps", str(save_steps),
        "--device", "cpu", "--loss", "mnrl",
    ]  # fmt: skip


@pytest.mark.slow
def test_kill_and_resume(tiny_model: str, tmp_path: Path) -> None:
    """A run killed after its first checkpoints continues from the last one and ends where a clean run would."""
    data = write_flag(tmp_path / "train.jsonl", n=64)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "mbret.cli", *_dense_train_args(tiny_model, data, out, 400, save_steps=3)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240

    def complete_steps() -> list[int]:
        found = (out / "checkpoints").glob("checkpoint-*/trainer_state.json")
        return sorted(int(p.parent.name.split("-")[1]) for p in found)

    # any complete checkpoint at step 6 or later: older ones are rotated away, and on a fast machine
    # checkpoint-6 itself may be gone before it is seen
    while time.time() < deadline and not any(step >= 6 for step in complete_steps()):
        assert process.poll() is None, process.stderr.read().decode()[-2000:] if process.stderr else ""
        time.sleep(0.1)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "final").exists()
    saved = complete_steps()
    assert saved and saved[-1] >= 6  # complete checkpoints; a newer one may be half-written
    # continuing a run needs --resume; without it the directory is refused rather than overwritten
    target = saved[-1] + 10  # losses are logged every 10 steps: one falls inside the resumed part
    rerun = [sys.executable, "-m", "mbret.cli", *_dense_train_args(tiny_model, data, out, target, save_steps=3)]
    fresh = subprocess.run(rerun, cwd=REPO, env=env, capture_output=True, text=True)
    assert fresh.returncode == 2 and "--output: " in fresh.stderr and "set resume to continue it" in fresh.stderr
    resumed = subprocess.run(rerun + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = json.loads((out / "train_log.json").read_text())
    assert log["steps"] == target
    assert log["losses"] and min(step for step, _ in log["losses"]) > saved[-1]  # it did not start over
    assert (out / "final" / "model.safetensors").is_file()


# -- mining and scoring ------------------------------------------------------------------------------------------
def test_mine_filters_and_resumes_from_cache(tiny_model: str, tmp_path: Path, cli) -> None:
    from mbret.data.datasets import load_dataset
    from mbret.retrieval.dense import DenseEncoder
    from mbret.training.mining import MiningParams, mine_hard_negatives

    beir = synthetic_beir(tmp_path / "beir")
    dataset = load_dataset(beir, split="train")
    pairs = [(q, d) for q, judged in dataset.qrels.items() for d in judged]
    encoder = DenseEncoder.load(tiny_model, device="cpu")
    params = MiningParams(num_negatives=3, range_min=2, range_max=10, relative_margin=None, margin=None)
    examples, report = mine_hard_negatives(
        dataset.queries, pairs, dataset.corpus, encoder, params, cache_dir=tmp_path / "cache", show_progress=False
    )
    assert report.kept == len(examples) == len(pairs) and report.dropped == 0
    for e in examples:
        assert e.positive_id not in e.negative_ids and len(e.negative_ids) == 3
        assert e.negative_scores == sorted(e.negative_scores, reverse=True)
    # a margin no candidate can meet drops every pair; the cached corpus vectors are reused, not recomputed
    cached = sorted((tmp_path / "cache").rglob("chunk-*.npy"))
    assert cached
    stamp = cached[0].stat().st_mtime_ns
    strict = MiningParams(num_negatives=3, margin=10.0, relative_margin=None)
    none_kept, report = mine_hard_negatives(
        dataset.queries, pairs, dataset.corpus, encoder, strict, cache_dir=tmp_path / "cache", show_progress=False
    )
    assert none_kept == [] and report.dropped == len(pairs)
    assert cached[0].stat().st_mtime_ns == stamp
    # the command writes the FlagEmbedding format, which trains
    result = cli("mine", beir, "--model", tiny_model, "--output", tmp_path / "mined.jsonl", "--num-negatives", "2")
    assert result.code == 0, result.err
    mined = load_training_data(str(tmp_path / "mined.jsonl"))
    assert mined.kind == "flag" and mined.num_negatives == 2 and len(mined) == len(pairs)


def test_score_writes_flag_and_id_formats_and_resumes(tiny_model: str, tmp_path: Path, cli) -> None:
    from mbret.training.scoring import Teacher, score_training_file

    source = write_flag(tmp_path / "plain.jsonl", n=10, scores=False)
    teacher = Teacher.load(f"dense:{tiny_model}", device="cpu")
    out = tmp_path / "scored.jsonl"
    # a run killed after 4 rows (and mid-way through a fifth) leaves a partial file; the rerun keeps those rows
    full = tmp_path / "full.jsonl"
    score_training_file(str(source), teacher, full, show_progress=False, rows_per_flush=4)
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text("".join(lines[:4]) + lines[4][:20], encoding="utf-8")
    assert score_training_file(str(source), teacher, out, show_progress=False) == 10
    assert out.read_text(encoding="utf-8") == full.read_text(encoding="utf-8") and not partial.exists()
    data = load_training_data(str(out))
    assert data.has_scores and len(data.dataset[0]["label"]) == 4
    result = cli("score", source, "--teacher", f"dense:{tiny_model}", "--output", tmp_path / "kd", "--format", "ids")
    assert result.code == 0, result.err
    kd = load_training_data(str(tmp_path / "kd"), n_ways=4)
    assert kd.kind == "ids" and len(kd) == 10 and len(kd.dataset[0]["scores"]) == 4
    bad = cli("score", source, "--teacher", str(tmp_path / "nothing-here"), "--output", tmp_path / "x.jsonl")
    assert bad.code == 2 and "could not load a cross-encoder" in bad.err


@pytest.mark.slow
def test_runs_under_torchrun_with_negatives_gathered_across_processes(tiny_model: str, tmp_path: Path) -> None:
    """Two CPU processes (gloo DDP) train one model; only rank 0 writes the log and the final model."""
    data = write_flag(tmp_path / "train.jsonl", n=32)
    out = tmp_path / "ddp"
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
    ]
    command = [*launcher, "-m", "mbret.cli", *_dense_train_args(tiny_model, data, out, 3), "--gather-across-devices"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = json.loads((out / "train_log.json").read_text())
    assert log["world_size"] == 2 and log["steps"] == 3 and log["effective_batch_size"] == 8
    assert (out / "final" / "model.safetensors").is_file()


def test_hub_data_offline_is_a_clear_error() -> None:
    """`hf:` ids load through `datasets` when the hub is reachable; offline (as in CI) the error says so."""
    with pytest.raises(MbretError, match="could not load from the Hugging Face hub"):
        load_training_data("hf:sentence-transformers/msmarco-co-condenser-margin-mse-sym-mnrl-mean-v1:triplet-hard")
    with pytest.raises(MbretError, match="could not load from the Hugging Face hub"):
        load_training_data("hf:lightonai/ms-marco-en-bge")


def test_resume_skips_a_half_written_checkpoint(tmp_path: Path) -> None:
    from mbret.training.trainer import last_complete_checkpoint

    for step, complete in ((3, True), (6, True), (9, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-6"
    assert not (tmp_path / "checkpoint-9").exists() and list(tmp_path.glob("incomplete-checkpoint-9-*"))
    assert last_complete_checkpoint(tmp_path / "nothing") is None
