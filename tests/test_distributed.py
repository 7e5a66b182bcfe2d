"""Index builds under torchrun (`mbret.retrieval.distributed`): 2 CPU processes (gloo) build what one
process builds, a killed rank leaves the previous index as it was and `--resume` finishes the build."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mbret.retrieval import Retriever
from tests.conftest import REPO, SCIFACT_MINI, free_port

# every check here starts torchrun or other Python processes, each importing torch: the inner loop skips them
pytestmark = pytest.mark.slow

QUERIES = [json.loads(line)["text"] for line in (SCIFACT_MINI / "queries.jsonl").read_text().splitlines()[:20]]
CODEC_FILES = ("centroids.npy", "bucket_cutoffs.npy", "codebook.npy")


def torchrun(*args: str | Path, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    command += ["--master_addr", "127.0.0.1", "--master_port", str(free_port()), *map(str, args)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


# torchrun's 2 ranks of one thread each train k-means on rank 0 with both their threads (the node's)
NODE_THREADS = str(min(2, os.cpu_count() or 1))


def mbret(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`mbret ARGS` in a process of its own, on one thread as each rank runs, and k-means on the threads
    rank 0 trains it on: the thread count changes float sums (encoding, k-means), so builds compared for
    identical results must share it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MBRET_KMEANS_THREADS": NODE_THREADS}
    command = [sys.executable, "-m", "mbret", *map(str, args)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def ranked(retriever: Retriever) -> list[list[tuple[str, float]]]:
    return [[(h.doc_id, h.score) for h in hits] for hits in retriever.search(QUERIES, k=10)]


def assert_same_results(one: Path, two: Path) -> None:
    a, b = Retriever.load(one), Retriever.load(two)
    assert a.index.doc_ids == b.index.doc_ids
    for hits_a, hits_b in zip(ranked(a), ranked(b)):
        assert [d for d, _ in hits_a] == [d for d, _ in hits_b]
        assert np.allclose([s for _, s in hits_a], [s for _, s in hits_b], atol=1e-4)
    ids = a.index.doc_ids[::97]
    assert a.index.get_documents(ids) == b.index.get_documents(ids)


@pytest.mark.parametrize(("mode", "index_type"), [("colbert", "plaid"), ("dense", "flat")])
def test_two_processes_build_what_one_process_builds(
    tiny_model: str, tmp_path: Path, cli, mode: str, index_type: str
) -> None:
    common = ["index", SCIFACT_MINI / "corpus.jsonl", "--model", tiny_model, "--mode", mode]
    assert mbret(*common, "--output", tmp_path / "one").returncode == 0
    done = torchrun("-m", "mbret", *common, "--output", tmp_path / "two", "--report", tmp_path / "report.json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 processes" in done.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["world_size"] == 2 and [r["docs"] for r in report["ranks"]] and report["num_docs"] == 500
    assert sum(r["docs"] for r in report["ranks"]) == 500 and all(r["docs"] for r in report["ranks"])
    assert_same_results(tmp_path / "one", tmp_path / "two")
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["index_type"] == index_type and manifest["generation"] == 1
    result = cli("eval", SCIFACT_MINI, "--index", tmp_path / "two")  # an index like any other
    assert result.code == 0 and "ndcg@10" in result.out.lower(), result.err
    if mode == "colbert":
        for name in CODEC_FILES:
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert not list(tmp_path.glob(".two.staging"))


def test_fed_the_same_vectors_the_codec_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Apart from encoding: the same vectors give the same centroids, cut-offs and codes in 2 processes as
    in a plain single-process `Retriever.build` (k-means on as many threads)."""
    from mbret.data.datasets import load_corpus
    from mbret.indexes import load_index
    from tests.distributed_vectors import VectorEncoder, vectors_of

    corpus = SCIFACT_MINI / "corpus.jsonl"
    monkeypatch.setenv("MBRET_KMEANS_THREADS", NODE_THREADS)
    single = Retriever.build(
        load_corpus(corpus),
        VectorEncoder(model=None, name="vectors"),
        index_type="plaid",
        index_params={"nbits": 2, "seed": 7},
        show_progress=False,
    )
    single.save(tmp_path / "one")
    done = torchrun(REPO / "tests" / "distributed_vectors.py", corpus, tmp_path / "two")
    assert done.returncode == 0, done.stderr[-3000:]
    for name in CODEC_FILES:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    codes = np.concatenate([np.load(tmp_path / "two" / f"codes-0000{c}.npy") for c in (0, 1)])
    assert np.array_equal(np.load(tmp_path / "one" / "codes-00000.npy"), codes)
    (one, _), (two, _) = load_index(tmp_path / "one"), load_index(tmp_path / "two")
    assert one.doc_ids == two.doc_ids
    queries = [vectors_of(q) for q in QUERIES]
    assert one.search(queries, k=10) == two.search(queries, k=10)


def rank_pids(marker: str) -> dict[int, int]:
    """Rank -> pid of the torchrun workers whose command line holds `marker`."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = dict(item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0") if b"=" in item)
        except OSError:
            continue
        if marker.encode() in cmdline and b"LOCAL_RANK" in environ and b"torch.distributed.run" not in cmdline:
            found[int(environ[b"RANK"])] = int(proc.name)
    return found


def test_a_rank_killed_mid_build_leaves_the_index_and_resume_finishes(tiny_model: str, tmp_path: Path) -> None:
    """`--add` under torchrun; rank 0 is killed (SIGKILL) once rank 1 has written its part: the index is
    as it was (generation, documents, results), and `--resume` encodes only the missing shard."""
    lines = (SCIFACT_MINI / "corpus.jsonl").read_text().splitlines()
    (tmp_path / "base.jsonl").write_text("\n".join(lines[:100]) + "\n")
    # the first half of the bytes holds many short documents, the second a few long ones (cut at the
    # document length): rank 0 has far more to encode, so it is still encoding when rank 1 is done
    short = [
        json.dumps({"_id": f"s{i}", "text": f"short note {i} on " + json.loads(line)["text"][:60]})
        for i, line in enumerate(lines[100:] * 3)
    ]
    size = sum(len(s) + 1 for s in short)
    long = [json.dumps({"_id": f"l{i}", "text": (json.loads(lines[i])["text"] + " ") * 40}) for i in range(40)]
    while sum(len(s) + 1 for s in long) < size:
        long += long[:1]
        long[-1] = long[-1].replace('"_id": "l0"', f'"_id": "l{len(long)}"')
    (tmp_path / "add.jsonl").write_text("\n".join(short + long) + "\n")
    out, stage = tmp_path / "index", tmp_path / ".index.staging"
    common = ["--model", tiny_model, "--mode", "colbert"]
    assert mbret("index", tmp_path / "base.jsonl", *common, "--output", out).returncode == 0
    before = ranked(Retriever.load(out))
    shutil.copytree(out, tmp_path / "single")

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "mbret",
        "index",
        tmp_path / "add.jsonl",
        "--add",
        "--output",
        out,
        "--batch-size",
        "8",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(
        [str(c) for c in command], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline, killed = time.monotonic() + 240, False
    while time.monotonic() < deadline and launcher.poll() is None:
        if (stage / "shard-00001" / "part.json").is_file() and not (stage / "shard-00000" / "part.json").is_file():
            os.kill(rank_pids(str(tmp_path / "add.jsonl"))[0], signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    output = launcher.communicate(timeout=120)[0]
    assert killed, output[-3000:]
    assert launcher.returncode != 0

    index = Retriever.load(out)  # the previous generation, untouched
    assert json.loads((out / "manifest.json").read_text())["generation"] == 1 and len(index.index) == 100
    assert ranked(index) == before
    assert (stage / "shard-00001" / "part.json").is_file() and not (stage / "shard-00000" / "part.json").is_file()

    written = (stage / "shard-00001" / "part.json").stat().st_mtime_ns
    resumed = mbret("index", tmp_path / "add.jsonl", "--add", "--output", out, "--resume", "--batch-size", "8")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 of 2 shards were written already" in resumed.stdout
    assert not stage.exists() and written  # the written part was taken as it was, then the area removed
    final = Retriever.load(out)
    assert json.loads((out / "manifest.json").read_text())["generation"] == 2
    assert len(final.index) == 100 + len(short) + len(long)
    # the same as one process adding the same corpus to the same base
    assert mbret("index", tmp_path / "add.jsonl", "--add", "--output", tmp_path / "single").returncode == 0
    assert_same_results(tmp_path / "single", out)


def test_bad_input_on_one_rank_stops_every_rank_with_one_error(tiny_model: str, tmp_path: Path) -> None:
    """A doc id repeated across the two shards: both ranks exit 2 before encoding, the error (with both
    lines) is printed once, and nothing is written."""
    lines = (SCIFACT_MINI / "corpus.jsonl").read_text().splitlines()[:40]
    lines[-1] = lines[0]
    (tmp_path / "dup.jsonl").write_text("\n".join(lines) + "\n")
    done = torchrun("-m", "mbret", "index", tmp_path / "dup.jsonl", "--model", tiny_model, "--output", tmp_path / "x")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    first_id = json.loads(lines[0])["_id"]
    assert errors == [f"error: {tmp_path / 'dup.jsonl'}: duplicate doc id {first_id!r} (lines 1 and 40)"]
    assert not (tmp_path / "x").exists()


def test_several_devices_in_one_process_encode_what_one_device_does(tiny_model: str, tmp_path: Path, cli) -> None:
    """`--device cpu,cpu`: a sentence-transformers multi-process pool encodes the corpus (the stand-in for
    cuda:0,cuda:1 here); the index answers as one built on one device."""
    from mbret.data.datasets import doc_text, load_corpus
    from mbret.retrieval.retriever import load_encoder

    lines = (SCIFACT_MINI / "corpus.jsonl").read_text().splitlines()[:60]
    (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    common = ["index", tmp_path / "corpus.jsonl", "--model", tiny_model, "--mode", "colbert"]
    assert cli(*common, "--output", tmp_path / "one", "--device", "cpu").code == 0
    assert cli(*common, "--output", tmp_path / "two", "--device", "cpu,cpu").code == 0
    assert_same_results(tmp_path / "one", tmp_path / "two")

    texts = [doc_text(d) for d in load_corpus(tmp_path / "corpus.jsonl").values()]
    one, two = load_encoder(tiny_model, "dense", device="cpu"), load_encoder(tiny_model, "dense", device="cpu,cpu")
    assert two.pool is not None and str(two.device) == "cpu"
    assert np.allclose(
        one.encode_corpus(texts, show_progress=False), two.encode_corpus(texts, show_progress=False), atol=1e-5
    )
