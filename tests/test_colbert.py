"""ColBERT head: pipeline shape, seeded projection, PyLate checkpoints, exact MaxSim, CLI --mode colbert."""

from __future__ import annotations

import json
import platform
import string
from pathlib import Path

import numpy as np
import pytest
import torch

from mbret.errors import IndexFormatError, MbretError
from mbret.indexes import ExactMaxSimIndex, Manifest, load_index
from mbret.indexes.maxsim import SCREEN_ERROR, maxsim_scores, pad_queries
from mbret.retrieval.colbert import ColBERTEncoder


@pytest.fixture(scope="module")
def tiny_colbert(tiny_model: str) -> ColBERTEncoder:
    return ColBERTEncoder.load(tiny_model, device="cpu")


def test_pipeline_skips_punctuation_and_keeps_queries_unexpanded(tiny_colbert: ColBERTEncoder) -> None:
    assert tiny_colbert.dimension == 128 and not tiny_colbert.query_expansion
    assert tiny_colbert.query_length == tiny_colbert.document_length == 300  # the cap follows the documents
    texts = ["brain", "a much longer query about cancer risk in patients"]
    queries = tiny_colbert.encode_queries(texts)
    # no [MASK] expansion: each query keeps exactly its own tokens (marker and specials included)
    assert [len(q) for q in queries] == tiny_colbert.query_token_counts(texts).tolist()
    assert len(queries[0]) < len(queries[1]) < 32
    torch.testing.assert_close(queries[0].norm(dim=-1), torch.ones(len(queries[0])))
    plain, punctuated = tiny_colbert.encode_corpus(["cell protein gene", "cell, protein. gene!"], show_progress=False)
    assert len(plain) == len(punctuated)  # the three punctuation tokens are not scored
    tokens = tiny_colbert.model.tokenizer("cell, protein. gene!")["input_ids"]
    assert len(tokens) > len(punctuated)


def test_query_expansion_pads_to_the_width_and_the_cap_cuts(tiny_model: str) -> None:
    texts = ["brain", "cell " * 400]
    expanded = ColBERTEncoder.load(tiny_model, device="cpu", query_expansion=True)
    assert expanded.query_expansion and expanded.query_length == 32
    assert [tuple(q.shape) for q in expanded.encode_queries(texts)] == [(32, 128), (32, 128)]
    assert expanded.count_cut_queries(texts) == 1
    capped = ColBERTEncoder.load(tiny_model, device="cpu", query_length=8)
    assert [len(q) for q in capped.encode_queries(texts)] == [len(capped.encode_queries(["brain"])[0]), 8]
    assert capped.count_cut_queries(texts) == 1 and capped.count_cut_queries(["brain"]) == 0
    capped.set_query_expansion(True)  # each setting takes its own default length
    assert capped.query_length == 32 and len(capped.encode_queries(["brain"])[0]) == 32
    capped.set_query_expansion(False)
    assert capped.query_length == 300 and capped.count_cut_queries(texts) == 1  # 400 tokens > 300
    # a document length taken for a suite or index moves only the documents; the query cap is set on its own
    capped.set_lengths(document_length=64)
    assert capped.document_length == 64 and capped.default_query_length() == 64


def test_markers_for_heads_built_from_other_models(tiny_model: str) -> None:
    unused = ColBERTEncoder.load("minilm", device="cpu", markers="unused")
    tokenizer = unused.model.tokenizer
    assert unused.prompts == {"query": "[unused0] ", "document": "[unused1] "}
    # BERT's never-trained vocabulary entries stay one token each (ids 1 and 2), as PyLate uses them
    assert tokenizer.tokenize("[unused0] brain")[0] == "[unused0]"
    assert tokenizer("[unused1] brain")["input_ids"][:2] == [tokenizer.cls_token_id, 2]
    none = ColBERTEncoder.load(tiny_model, device="cpu", markers="none")
    assert none.prompts == {}
    assert len(none.encode_queries(["brain"])[0]) == len(none.model.tokenizer("brain")["input_ids"])
    text = ColBERTEncoder.load(tiny_model, device="cpu", markers="text")
    assert text.prompts == {"query": "[Q] ", "document": "[D] "}
    assert ColBERTEncoder.load(tiny_model, device="cpu").prompts == {}  # the default: none (docs/benchmarks.md)
    with pytest.raises(MbretError, match="markers 'unused': this tokenizer's vocabulary has no \\[unused0\\]"):
        ColBERTEncoder.load(tiny_model, device="cpu", markers="unused")
    with pytest.raises(MbretError, match="markers 'fancy'"):
        ColBERTEncoder.load(tiny_model, device="cpu", markers="fancy")


def test_document_length_cuts_documents(tiny_model: str) -> None:
    short = ColBERTEncoder.load(tiny_model, device="cpu", document_length=8)
    (doc,) = short.encode_corpus(["protein " * 50], show_progress=False)
    assert len(doc) <= 8


def test_token_budget_batches_match_plain_encode_document(tiny_colbert: ColBERTEncoder) -> None:
    docs = ["cell", "protein " * 40, "a gene, a virus.", "", "brain " * 7 + "tumour", "cell protein gene " * 3]
    ours = tiny_colbert.encode_corpus(docs, batch_size=4, show_progress=False, max_tokens=48)
    plain = tiny_colbert.model.encode_document(docs, batch_size=len(docs), convert_to_numpy=False)
    assert len(ours) == len(docs)
    for mine, theirs in zip(ours, plain):  # same tokens, same order; values agree up to padding noise
        assert mine.shape == theirs.shape
        torch.testing.assert_close(mine, theirs.float(), atol=1e-5, rtol=1e-4)
    lengths = tiny_colbert.token_lengths(docs)
    assert lengths[1] > lengths[0] and tiny_colbert.count_tokens(docs) == int(lengths.sum())


def test_encoded_documents_share_one_buffer_and_survive_undercounted_lengths(
    tiny_colbert: ColBERTEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-document tensors are views of one buffer (so small allocations do not pin freed memory), and
    a model producing more tokens than `token_lengths` counted still gets every vector, past the buffer."""
    docs = ["cell", "protein " * 40, "a gene, a virus.", "brain " * 7 + "tumour", "cell protein gene " * 3]
    reference = tiny_colbert.encode_corpus(docs, batch_size=2, show_progress=False, max_tokens=48)
    bases = {t.untyped_storage().data_ptr() for t in reference if len(t)}
    assert len(bases) == 1
    trims: list[bool] = []
    monkeypatch.setattr("mbret.retrieval.colbert.TRIM_EVERY", 1)
    monkeypatch.setattr("mbret.retrieval.colbert.release_freed_memory", lambda: trims.append(True) or True)
    counted = tiny_colbert.token_lengths(docs)
    monkeypatch.setattr(type(tiny_colbert), "token_lengths", lambda self, d: counted // 2)
    short = tiny_colbert.encode_corpus(docs, batch_size=2, show_progress=False, max_tokens=48)
    assert len(trims) >= 3  # one per batch here
    assert len({t.untyped_storage().data_ptr() for t in short if len(t)}) > 1  # some went past the buffer
    for mine, theirs in zip(short, reference):  # batches differ with the counts: values up to padding noise
        assert mine.shape == theirs.shape
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)


def test_projection_is_seeded(tiny_model: str) -> None:
    a = ColBERTEncoder.load(tiny_model, device="cpu", seed=1).encode_queries(["virus"])[0]
    b = ColBERTEncoder.load(tiny_model, device="cpu", seed=1).encode_queries(["virus"])[0]
    c = ColBERTEncoder.load(tiny_model, device="cpu", seed=2).encode_queries(["virus"])[0]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def _write_pylate_checkpoint(tiny_model: str, path: Path) -> Path:
    """A checkpoint in PyLate's on-disk layout: [Transformer, pylate Dense], prefixes as added tokens."""
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.add_tokens(["[Q] ", "[D] "])
    model = AutoModel.from_pretrained(tiny_model)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
            ]
        )
    )
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 100, "do_lower_case": False}))
    (path / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "__version__": {"sentence_transformers": "5.1.1", "transformers": "4.56.2", "pytorch": "2.8.0"},
                "model_type": "ColBERT",
                "prompts": {},
                "default_prompt_name": None,
                "similarity_fn_name": "MaxSim",
                "query_prefix": "[Q] ",
                "document_prefix": "[D] ",
                "query_length": 24,
                "document_length": 100,
                "attend_to_expansion_tokens": False,
                "skiplist_words": list(string.punctuation),
            }
        )
    )
    (path / "1_Dense").mkdir()
    (path / "1_Dense" / "config.json").write_text(
        json.dumps(
            {
                "in_features": 64,
                "out_features": 96,
                "bias": False,
                "activation_function": "torch.nn.modules.linear.Identity",
                "use_residual": False,
            }
        )
    )
    weight = torch.randn(96, 64, generator=torch.Generator().manual_seed(7))
    save_file({"linear.weight": weight}, str(path / "1_Dense" / "model.safetensors"))
    return path


def test_loads_pylate_checkpoint(tiny_model: str, tmp_path: Path) -> None:
    path = _write_pylate_checkpoint(tiny_model, tmp_path / "pylate")
    encoder = ColBERTEncoder.load(str(path), device="cpu")
    assert encoder.dimension == 96  # the checkpoint's own projection, not a fresh 128-d one
    assert encoder.query_length == 24 and encoder.document_length == 100
    assert encoder.query_expansion  # PyLate expands unless its config says do_query_expansion: false
    (query,) = encoder.encode_queries(["brain activity"])
    assert tuple(query.shape) == (24, 96)
    unexpanded = ColBERTEncoder.load(str(path), device="cpu", query_expansion=False)
    assert not unexpanded.query_expansion and unexpanded.query_length == 100  # the cap: the document length
    assert len(unexpanded.encode_queries(["brain activity"])[0]) < 24
    tokenizer = encoder.model.tokenizer
    assert tokenizer.tokenize("[Q] brain")[0] == "[Q] "  # the prefix stays one token, as PyLate trained it
    # the projection applied is the saved one: recompute a document's vectors by hand
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(str(path)).eval()
    ids = tokenizer("[D] cell protein", return_tensors="pt")
    with torch.no_grad():
        hidden = backbone(**ids).last_hidden_state[0]
    weight = torch.randn(96, 64, generator=torch.Generator().manual_seed(7))
    expected = torch.nn.functional.normalize(hidden @ weight.T, dim=-1)
    (doc,) = encoder.encode_corpus(["cell protein"], show_progress=False)
    torch.testing.assert_close(doc, expected, atol=1e-4, rtol=1e-4)


def _random_docs(n: int, dim: int = 16, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 40, (n,), generator=g)
    return [torch.nn.functional.normalize(torch.randn(int(m), dim, generator=g), dim=-1) for m in lengths]


@pytest.mark.parametrize("screen", [False, True])
@pytest.mark.parametrize("window", [4096, 7])
def test_exact_maxsim_matches_brute_force(window: int, screen: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents are scored shortest first within windows of SORT_WINDOW; ids must map back whatever the
    window, and the chunks must cover every document once, each within the token budget. With or without
    the bfloat16 screen, the hits and scores are float32 MaxSim's. Queries of different lengths (searched
    shortest first, each block padded to its own longest) come back in the order given."""
    monkeypatch.setattr("mbret.indexes.maxsim.SORT_WINDOW", window)
    docs = _random_docs(300)
    queries = [torch.nn.functional.normalize(torch.randn(n, 16), dim=-1) for n in (8, 3, 20, 1, 8, 12, 5)]
    index = ExactMaxSimIndex(16)
    index.add([f"d{i}" for i in range(300)], docs)
    hits = index.search(queries, k=5, chunk_tokens=500, query_block=3, screen=screen)
    order, bounds = index._plan(index._flat()[1], 500)
    assert sorted(order.tolist()) == list(range(300)) and bounds[0][0] == 0 and bounds[-1][1] == 300
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    lengths = index._flat()[1][order]
    assert all((e - s) * int(lengths[s:e].max()) <= 500 or e - s == 1 for s, e in bounds)
    if window == 7:  # sorted within each window, not across
        assert all(lengths[w : w + 7].tolist() == sorted(lengths[w : w + 7].tolist()) for w in range(0, 300, 7))
    truth = torch.stack([torch.stack([(q @ d.half().float().T).max(1).values.sum() for d in docs]) for q in queries])
    top = torch.topk(truth, 5, dim=1)
    for row, idx, val in zip(hits, top.indices, top.values):
        assert [h[0] for h in row] == [f"d{i}" for i in idx.tolist()]
        np.testing.assert_allclose([h[1] for h in row], val.numpy(), rtol=1e-5)


def test_exact_resident_copy_ranks_as_streamed_chunks_and_follows_updates() -> None:
    """`resident` takes the GPU's path on the CPU: one in-memory copy gathered in place. It must rank as
    the streamed chunks do, and an add or delete must not leave search reading a stale copy."""
    docs = _random_docs(300, seed=3)
    queries = [torch.nn.functional.normalize(torch.randn(8, 16), dim=-1) for _ in range(5)]
    streamed, resident = ExactMaxSimIndex(16), ExactMaxSimIndex(16)
    resident.resident = True
    for index in (streamed, resident):
        index.add([f"d{i}" for i in range(250)], docs[:250])
    assert resident.search(queries, k=7, chunk_tokens=400) == streamed.search(queries, k=7, chunk_tokens=400)
    assert resident._resident is not None and streamed._resident is None
    top = resident.search(queries[:1], k=1)[0][0][0]
    for index in (streamed, resident):
        index.delete([top])
        index.add([f"d{i}" for i in range(250, 300)], docs[250:])
    after = resident.search(queries, k=7, chunk_tokens=400)
    assert after == streamed.search(queries, k=7, chunk_tokens=400)
    assert all(hit[0] != top for row in after for hit in row)
    assert resident.search([docs[299]], k=1)[0][0][0] == "d299"


def _near_ties(n: int = 200, seed: int = 5) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Documents that differ from one another by less than bfloat16's rounding, plus unrelated ones, one
    of them empty: the screen has to keep enough candidates to rank them in float32."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(30, 16, generator=g)
    close = [torch.nn.functional.normalize(base + 3e-3 * torch.randn(30, 16, generator=g), dim=-1) for _ in range(n)]
    far = [torch.nn.functional.normalize(torch.randn(20, 16, generator=g), dim=-1) for _ in range(n)]
    queries = [
        torch.nn.functional.normalize(base[:8] + 0.5 * torch.randn(8, 16, generator=g), dim=-1) for _ in range(6)
    ]
    return close + far + [torch.zeros(0, 16)], queries


def _assert_float32_top_k(hits: list[list[tuple[str, float]]], every: list[list[tuple[str, float]]], k: int) -> None:
    """Each hit list is a float32 top k: its j-th document's float32 score is the j-th best one (to 1e-5,
    so documents tied to rounding may swap) and its score is that score."""
    for row, ranked in zip(hits, every):
        truth = dict(ranked)
        assert len(row) == min(k, len(ranked)) and len({doc for doc, _ in row}) == len(row)
        for (doc, score), (_, best) in zip(row, ranked):
            assert abs(truth[doc] - best) <= 1e-5 and abs(score - best) <= 1e-5


def test_bfloat16_screen_ranks_near_ties_as_float32() -> None:
    """Plain bfloat16 scores put these near-ties in another order (checked below, so the test has teeth);
    the screen with its error margin must still return float32 MaxSim's hits and scores, after deletes."""
    docs, queries = _near_ties()
    index = ExactMaxSimIndex(16)
    index.add([f"d{i}" for i in range(len(docs))], docs)
    index.delete(["d3", "d250"])
    every = index.search(queries, k=len(docs), screen=False)
    for k in (1, 10, 100):
        screened = index.search(queries, k=k, screen=True)
        _assert_float32_top_k(screened, every, k)
        _assert_float32_top_k(index.search(queries, k=k, screen=False), every, k)
        assert all("d3" not in {h[0] for h in row} for row in screened)
    stacked, lengths = torch.stack(docs[:200]), torch.full((200,), 30)
    half = torch.cat([maxsim_scores(pad_queries([q], 16).bfloat16(), stacked.bfloat16(), lengths) for q in queries])
    exact = torch.cat([maxsim_scores(pad_queries([q], 16), stacked.half().float(), lengths) for q in queries])
    assert (half.topk(10).indices != exact.topk(10).indices).any()
    assert (half - exact).abs().max() > 1e-3  # bfloat16 alone is far coarser than the gaps it must rank


@pytest.mark.parametrize("dim", [16, 128, 768])
def test_bfloat16_similarity_error_stays_inside_the_screen_bound(dim: int) -> None:
    """The screen's margin rests on this: a bfloat16 similarity (inputs rounded, float32 accumulation, output
    rounded) is within SCREEN_ERROR |q| |d| of the float32 one, for vectors of any norm."""
    g = torch.Generator().manual_seed(dim)
    q = torch.randn(64, dim, generator=g) * torch.logspace(-2, 2, 64)[:, None]
    d = (torch.randn(4096, dim, generator=g) * torch.logspace(-1, 1, 4096)[:, None]).half().float()
    d[:64] = q  # aligned pairs: the largest products, where rounding errors add up
    error = ((q.bfloat16() @ d.bfloat16().T).float() - q @ d.T).abs()
    bound = SCREEN_ERROR * q.norm(dim=1)[:, None] * d.norm(dim=1)[None, :]
    assert (error <= bound).all()
    assert (error > bound / 20).any()  # and the bound is not loose by orders of magnitude


def test_bfloat16_screen_keeps_every_document_when_k_exceeds_the_live_ones() -> None:
    docs, queries = _near_ties(n=5)
    index = ExactMaxSimIndex(16)
    index.add([f"d{i}" for i in range(len(docs))], docs)
    index.delete(["d0"])
    screened = index.search(queries, k=50, screen=True)
    assert index.search([], k=5, screen=True) == index.search([], k=5, screen=False) == []
    assert [len(row) for row in screened] == [len(docs) - 1] * len(queries)
    _assert_float32_top_k(screened, index.search(queries, k=50, screen=False), 50)
    assert {h[1] for row in screened for h in row if h[0] == f"d{len(docs) - 1}"} == {0.0}  # the empty one


def test_bfloat16_screen_is_the_default_only_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    original = ExactMaxSimIndex._rescore

    def spy(self: ExactMaxSimIndex, *args: object, **kwargs: object) -> object:
        calls.append(True)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ExactMaxSimIndex, "_rescore", spy)
    index = ExactMaxSimIndex(16)
    index.add(["a", "b"], _random_docs(2))
    for native, expected in ((True, [True]), (False, [])):
        calls.clear()
        monkeypatch.setattr("mbret.indexes.maxsim.cpu_has_native", lambda dtype, unknown=True, native=native: native)
        index.search([torch.ones(2, 16)], k=1)
        assert calls == expected


def _manifest(dim: int = 16) -> Manifest:
    return Manifest(
        kind="maxsim",
        mode="colbert",
        model="m",
        dimension=dim,
        normalized=True,
        max_length=300,
        num_docs=0,
        index_type="exact",
    )


def test_exact_add_delete_reload_mmap(tmp_path: Path) -> None:
    docs = _random_docs(50)
    index = ExactMaxSimIndex(16)
    index.add([f"d{i}" for i in range(40)], docs[:40])
    index.delete(["d3"])
    index.add(["new"], docs[40:41])
    assert index.doc_ids[3] is None and index.doc_ids[40] == "new"
    hits = index.search([docs[40], docs[3], docs[4]], k=3)
    assert hits[0][0][0] == "new" and hits[2][0][0] == "d4"
    assert all(h[0] != "d3" for row in hits for h in row)
    index.save(tmp_path / "idx", _manifest())
    loaded, manifest = load_index(tmp_path / "idx")
    assert isinstance(loaded, ExactMaxSimIndex) and manifest.num_docs == 40
    assert isinstance(loaded._chunks[0], np.memmap)  # memory-mapped, not read into RAM
    assert loaded.search([docs[40], docs[3], docs[4]], k=3) == hits
    loaded.add(["later"], docs[45:46])
    loaded.save(tmp_path / "idx", _manifest())
    again, _ = load_index(tmp_path / "idx")
    assert again.search([docs[45]], k=1)[0][0][0] == "later"
    with pytest.raises(MbretError, match="'d4' is already in the index"):
        again.add(["d4"], docs[:1])


def test_exact_corrupted_chunk_is_a_clear_error(tmp_path: Path) -> None:
    index = ExactMaxSimIndex(16)
    index.add(["a", "b"], _random_docs(2))
    index.save(tmp_path / "idx", _manifest())
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    emb = tmp_path / "idx" / manifest["files"]["embeddings"]
    data = emb.read_bytes()
    emb.write_bytes(data[: len(data) - 100])
    with pytest.raises(IndexFormatError, match="truncated or corrupt"):
        load_index(tmp_path / "idx")
    emb.write_bytes(data)
    lens = tmp_path / "idx" / manifest["files"]["doclens"]
    lens.write_bytes(np.array([1, 1], dtype=np.int64).tobytes())
    with pytest.raises(IndexFormatError, match="files do not match"):
        load_index(tmp_path / "idx")


def test_cli_colbert_index_search_delete_eval(tmp_path: Path, cli, tiny_model: str, small_beir: Path) -> None:
    out = tmp_path / "idx"
    result = cli(
        "index",
        small_beir,
        "--model",
        tiny_model,
        "--mode",
        "colbert",
        "--index-type",
        "exact",
        "--output",
        out,
        "--query-length",
        "16",
        "--document-length",
        "64",
    )
    assert result.code == 0, result.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mode"] == "colbert" and manifest["index_type"] == "exact" and manifest["dimension"] == 128
    assert manifest["query_length"] == 16 and manifest["document_length"] == 64 and manifest["seed"] == 0
    payload = json.loads(cli("search", out, "dense vector search over a corpus of documents", "--json").out)
    assert payload[0]["hits"][0]["doc_id"] == "d5"
    assert cli("delete", out, "d5").code == 0
    payload = json.loads(cli("search", out, "dense vector search over a corpus of documents", "--json").out)
    assert "d5" not in [h["doc_id"] for h in payload[0]["hits"]]
    result = cli(
        "eval",
        small_beir,
        "--model",
        tiny_model,
        "--mode",
        "colbert",
        "--index-type",
        "exact",
        "--output",
        tmp_path / "res",
    )
    assert result.code == 0, result.err
    results = json.loads((tmp_path / "res" / "results.json").read_text())
    assert results["mode"] == "colbert" and results["settings"]["index_type"] == "exact"
    assert results["settings"]["query_length"] == 300 and results["settings"]["query_expansion"] is False
    assert results["settings"]["queries_cut"] == 0


def test_query_expansion_is_recorded_and_overridable(tmp_path: Path, cli, tiny_model: str, small_beir: Path) -> None:
    from mbret.retrieval import Retriever

    out = tmp_path / "idx"
    build = ["index", small_beir, "--model", tiny_model, "--mode", "colbert", "--index-type", "exact", "--output", out]
    assert cli(*build, "--query-expansion", "--query-length", "16").code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["query_expansion"] is True and manifest["query_length"] == 16
    loaded = Retriever.load(out)
    assert loaded.encoder.query_expansion and loaded.encoder.query_length == 16
    assert len(loaded.encoder.encode_queries(["brain"])[0]) == 16
    # a search may turn it off (queries only: the documents do not change); the width does not carry over
    plain = Retriever.load(out, query_expansion=False)
    assert not plain.encoder.query_expansion and plain.encoder.query_length == 300
    hits = json.loads(cli("search", out, "virus immune response", "--no-query-expansion", "--json").out)
    assert hits[0]["hits"][0]["doc_id"] == "d6"
    # an index written before mbret recorded the choice expanded its queries, and keeps doing so, with the
    # markers its manifest names (then always ColBERT's text ones)
    del manifest["query_expansion"]
    manifest |= {"query_prompt": "[Q] ", "document_prompt": "[D] "}
    (out / "manifest.json").write_text(json.dumps(manifest))
    legacy = Retriever.load(out)
    assert legacy.encoder.query_expansion and legacy.encoder.query_length == 16
    assert legacy.encoder.prompts == {"query": "[Q] ", "document": "[D] "}
    # queries longer than the cap are counted and named on stderr, and in results.json
    result = cli("eval", small_beir, "--index", out, "--no-query-expansion", "--query-length", "4",
                 "--output", tmp_path / "res")  # fmt: skip
    assert result.code == 0, result.err
    note = "note: 3 of 3 queries are longer than 4 tokens and were cut (a longer query length keeps them whole)"
    assert note in result.err
    settings = json.loads((tmp_path / "res" / "results.json").read_text())["settings"]
    assert settings["queries_cut"] == 3 and settings["query_expansion"] is False and settings["query_length"] == 4
    searched = cli("search", out, "virus immune response in human cells", "--query-length", "4")
    assert "note: 1 of 1 queries are longer than 4 tokens" in searched.err


def test_cli_colbert_rejects_dense_index_types(cli, small_beir: Path) -> None:
    result = cli("eval", small_beir, "--model", "tiny-modernbert", "--mode", "colbert", "--index-type", "hnsw")
    assert result.code == 2 and "--index-type: hnsw: mode colbert takes plaid, exact" in result.err
    result = cli("eval", small_beir, "--model", "tiny-modernbert", "--mode", "colbert", "--nbits", "3")
    assert result.code == 2 and "--nbits: 3" in result.err


def test_chunked_build_equals_one_shot(tiny_model: str, small_corpus: dict) -> None:
    from mbret.retrieval import Retriever

    encoder = ColBERTEncoder.load(tiny_model, device="cpu")
    one = Retriever.build(small_corpus, encoder, index_type="exact", show_progress=False)
    many = Retriever(encoder=encoder, index=ExactMaxSimIndex(encoder.dimension))
    many.add(small_corpus, show_progress=False, chunk_docs=2)
    assert len(many.index._chunks) == 3
    queries = ["immune response to virus", "heart disease"]
    assert [[h.doc_id for h in r] for r in many.search(queries, k=6)] == [
        [h.doc_id for h in r] for r in one.search(queries, k=6)
    ]
    plaid = Retriever.build(small_corpus, encoder, index_type="plaid", show_progress=False)
    chunked = Retriever(encoder=encoder, index=type(plaid.index)(encoder.dimension))
    chunked.add(small_corpus, show_progress=False, chunk_docs=4)
    assert chunked.index.num_tokens == plaid.index.num_tokens and len(chunked.index) == 6
    assert chunked.search(["immune response to virus in human cells"], k=1)[0][0].doc_id == "d6"


def test_indexing_keeps_the_float16_of_the_float32_vectors(tiny_model: str, small_corpus: dict) -> None:
    """Indexing asks the encoder for float16 (half the memory per chunk); the index must hold exactly the
    float16 rounding of the float32 vectors, as it did when it rounded them itself."""
    from mbret.data.datasets import doc_text
    from mbret.hardware import release_freed_memory
    from mbret.retrieval import Retriever

    encoder = ColBERTEncoder.load(tiny_model, device="cpu")
    texts = [doc_text(d) for d in small_corpus.values()]
    full = encoder.encode_corpus(texts, show_progress=False)
    half = encoder.encode_corpus(texts, show_progress=False, dtype=torch.float16)
    assert all(f.dtype == torch.float32 and h.dtype == torch.float16 for f, h in zip(full, half))
    assert all(torch.equal(h, f.half()) for f, h in zip(full, half))
    built = Retriever.build(small_corpus, encoder, index_type="exact", show_progress=False)
    assert np.array_equal(built.index._chunks[0], torch.cat(full).half().numpy())
    assert release_freed_memory() is (platform.libc_ver()[0] == "glibc")


def test_prompts_are_refused_for_colbert(tmp_path: Path, cli, small_beir: Path) -> None:
    result = cli(
        "index",
        small_beir,
        "--model",
        "tiny-modernbert",
        "--mode",
        "colbert",
        "--output",
        tmp_path / "i",
        "--query-prompt",
        "query: ",
    )
    assert result.code == 2 and "--query-prompt: applies to mode dense" in result.err
    assert not (tmp_path / "i").exists()
