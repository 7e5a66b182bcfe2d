"""PLAID engine: codec, fidelity to exact MaxSim, k-dependent defaults, updates, storage, determinism."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mbret.errors import IndexFormatError
from mbret.indexes import ExactMaxSimIndex, Manifest, PlaidIndex, load_index
from mbret.indexes.plaid import ResidualCodec, full_scores, pack_bits, resolve_budgets, unpack_bits
from mbret.indexes.plaid.codec import QUANTIZERS
from mbret.types import SearchParams


def _corpus(n_docs: int = 1500, dim: int = 128, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Documents drawn from a few topics each, and queries made from the tokens of known documents."""
    g = torch.Generator().manual_seed(seed)
    topics = torch.nn.functional.normalize(torch.randn(60, dim, generator=g), dim=-1)
    docs = []
    for _ in range(n_docs):
        mix = topics[torch.randint(0, 60, (3,), generator=g)]
        n = int(torch.randint(10, 60, (1,), generator=g))
        tokens = mix[torch.randint(0, 3, (n,), generator=g)] + 0.06 * torch.randn(n, dim, generator=g)
        docs.append(torch.nn.functional.normalize(tokens, dim=-1))
    queries = []
    for i in range(40):
        d = docs[(i * 31) % n_docs]
        q = d[torch.randint(0, len(d), (32,), generator=g)] + 0.05 * torch.randn(32, dim, generator=g)
        queries.append(torch.nn.functional.normalize(q, dim=-1))
    return docs, queries


@pytest.fixture(scope="module")
def corpus() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return _corpus()


def _manifest() -> Manifest:
    return Manifest(
        kind="plaid",
        mode="colbert",
        model="m",
        dimension=128,
        normalized=True,
        max_length=300,
        num_docs=0,
        index_type="plaid",
    )


@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_bit_packing_round_trips(nbits: int) -> None:
    values = torch.randint(0, 1 << nbits, (7, 128))
    packed = pack_bits(values, nbits)
    assert packed.dtype == torch.uint8 and packed.shape == (7, 128 * nbits // 8)
    assert torch.equal(unpack_bits(packed, nbits), values)


@pytest.mark.parametrize("quantizer", ["pq", "scalar"])
def test_more_bits_reconstruct_better(corpus: tuple[list[torch.Tensor], list[torch.Tensor]], quantizer: str) -> None:
    vectors = torch.cat(corpus[0][:300])
    errors = []
    for nbits in (1, 2, 4, 8):
        codec = ResidualCodec.train(vectors, nbits, 64, seed=0, quantizer=quantizer)
        codes, packed, _ = codec.compress(vectors)
        errors.append(float((codec.decompress(codes, packed) - vectors).norm(dim=-1).mean()))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.5 * errors[0]


@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_residual_codebooks_leave_less_error_than_scalar_buckets(
    corpus: tuple[list[torch.Tensor], list[torch.Tensor]], nbits: int
) -> None:
    """The default quantizer ("pq": a 256-word codebook per byte of residual) against ColBERTv2's buckets at
    the same bytes and centroids; and each stored byte is its position's nearest codeword."""
    vectors = torch.cat(corpus[0][:600])
    errors, codecs = {}, {}
    for quantizer in ("pq", "scalar"):
        codec = codecs[quantizer] = ResidualCodec.train(vectors, nbits, 64, seed=0, quantizer=quantizer)
        assert codec.quantizer == quantizer
        codes, packed, _ = codec.compress(vectors)
        assert packed.shape == (len(vectors), 128 * nbits // 8) and packed.dtype == torch.uint8
        errors[quantizer] = float(((codec.decompress(codes, packed) - vectors) ** 2).sum(dim=1).mean())
    assert errors["pq"] < (0.8 if nbits < 8 else 1.0) * errors["scalar"], errors
    assert QUANTIZERS[0] == "pq"  # the default, whose codebooks the rest reads
    pq = codecs["pq"]
    residuals = vectors - pq.centroids[codes]  # k-means is the quantizers' shared first step: same centroids
    books = pq.weights  # (bytes, 256, dims per byte)
    pieces = residuals[:50].view(50, books.shape[0], 1, books.shape[2])
    nearest = ((pieces - books[None]) ** 2).sum(dim=3).argmin(dim=2)
    torch.testing.assert_close(pq.encode_residuals(residuals[:50]).long(), nearest)


def test_buckets_decode_to_the_mean_of_their_training_residuals(
    corpus: tuple[list[torch.Tensor], list[torch.Tensor]],
) -> None:
    """Lloyd's condition for the given cut-offs: each bucket's value is the mean of the residual values in it,
    which no other value beats on squared error (the middle quantile, ColBERTv2's, does worse)."""
    vectors = torch.cat(corpus[0][:300])
    codec = ResidualCodec.train(vectors, 2, 64, seed=0, quantizer="scalar")
    residuals = (vectors - codec.centroids[codec.assign(codec.centroids, vectors)]).flatten()
    buckets = torch.bucketize(residuals, codec.cutoffs, right=True)
    means = torch.stack([residuals[buckets == b].mean() for b in range(4)])
    torch.testing.assert_close(codec.weights, means, atol=1e-6, rtol=1e-5)
    midpoints = torch.quantile(residuals, (torch.arange(4) + 0.5) / 4)
    assert ((means[buckets] - residuals) ** 2).sum() < ((midpoints[buckets] - residuals) ** 2).sum()


def test_chunked_build_samples_the_whole_corpus(corpus: tuple[list[torch.Tensor], list[torch.Tensor]]) -> None:
    """`add_in_chunks` trains on documents drawn from the whole corpus (SAMPLE_SPREAD times as many as the
    k-means sample needs, a share of each one's tokens), with centroids sized for the whole corpus."""
    from mbret.indexes.plaid import SAMPLE_SPREAD, TRAIN_PER_CENTROID, default_num_centroids

    docs, queries = corpus
    ids = [f"d{i}" for i in range(len(docs))]
    total = sum(len(d) for d in docs)
    index = PlaidIndex(128, nbits=2, seed=1)
    picks = index.sample_documents(len(docs), total / len(docs))
    k = default_num_centroids(total)
    needed = TRAIN_PER_CENTROID * k / (total / len(docs))
    assert len(picks) == min(len(docs), SAMPLE_SPREAD * int(np.ceil(needed)))
    assert list(picks) == sorted(set(picks.tolist())) and picks[-1] > len(docs) // 2  # spread over the corpus
    index.add_in_chunks(ids, docs, chunk_docs=400)
    assert index.num_tokens == total and len(index.codec.centroids) == k and len(index) == len(docs)
    found = index.search(queries, k=1)
    assert all(row[0][0] == f"d{i * 31}" for i, row in enumerate(found))


@pytest.mark.parametrize("quantizer", ["pq", "scalar"])
@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_scoring_without_decompressing_equals_decompressed_cosines(
    nbits: int, quantizer: str, corpus: tuple[list[torch.Tensor], list[torch.Tensor]]
) -> None:
    """Stage 4 scores tokens as (centroid score + residual table product) / stored norm; that must be the
    cosine of the query with the decompressed vector, for every byte layout and both quantizers."""
    vectors, query = torch.cat(corpus[0][:200]), corpus[1][0]
    codec = ResidualCodec.train(vectors, nbits, 64, seed=0, quantizer=quantizer)
    codes, packed, _ = codec.compress(vectors)
    if quantizer == "scalar":  # each dimension's bucket value
        decoded = codec.weights[unpack_bits(packed, nbits).long()]
    else:  # each byte position's codeword
        decoded = codec.weights[torch.arange(packed.shape[1]), packed.long()].flatten(1)
    raw = codec.centroids[codes] + decoded
    torch.testing.assert_close(codec.norms(codes, packed, block=333), raw.norm(dim=1))
    torch.testing.assert_close(
        codec.residual_similarities(query, packed, block=333), (raw - codec.centroids[codes]) @ query.T
    )
    scores = (query @ codec.centroids.T).T[codes] + codec.residual_similarities(query, packed)
    cosines = codec.decompress(codes, packed) @ query.T
    torch.testing.assert_close(scores / codec.norms(codes, packed)[:, None], cosines, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("nbits", "min_recall"), [(2, 0.9), (4, 0.95)])
def test_plaid_finds_what_exact_maxsim_finds(
    corpus: tuple[list[torch.Tensor], list[torch.Tensor]], nbits: int, min_recall: float
) -> None:
    docs, queries = corpus
    ids = [f"d{i}" for i in range(len(docs))]
    exact = ExactMaxSimIndex(128)
    exact.add(ids, docs)
    plaid = PlaidIndex(128, nbits=nbits)
    plaid.add(ids, docs)
    truth, found = exact.search(queries, k=10), plaid.search(queries, k=10)
    recall = np.mean([len({h[0] for h in a} & {h[0] for h in b}) / 10 for a, b in zip(found, truth)])
    assert recall >= min_recall
    assert all(row[0][0] == f"d{i * 31}" for i, row in enumerate(found))  # the source document comes first
    assert plaid.bytes_per_token() == 2 + 128 * nbits / 8 + 4  # centroid id, residual, norm


def test_search_defaults_follow_k() -> None:
    small, mid, large = (resolve_budgets(None, k) for k in (10, 100, 1000))
    assert (small.n_ivf_probe, small.centroid_score_threshold, small.n_candidates) == (1, 0.5, 256)
    assert (mid.n_ivf_probe, mid.centroid_score_threshold, mid.n_candidates) == (2, 0.45, 1024)
    assert (large.n_ivf_probe, large.centroid_score_threshold, large.n_candidates) == (4, 0.4, 4096)
    # fully scored documents: a budget of query tokens x documents, so short queries get more of them
    assert [full_scores(small, 10, n) for n in (4, 9, 21, 116)] == [256, 227, 97, 64]
    assert [full_scores(mid, 100, n) for n in (9, 21, 116)] == [455, 195, 100]
    assert full_scores(large, 1000, 21) == 1950 and full_scores(large, 1000, 1) == 4096
    custom = resolve_budgets(SearchParams(n_ivf_probe=8, n_full_scores=7, nprobe=3), 10)
    assert custom.n_ivf_probe == 8 and custom.n_candidates == 256 and full_scores(custom, 10, 3) == 7
    assert custom.nprobe is None  # another index type's setting is not PLAID's
    # at nbits 4 and 8 a k <= 10 search takes the k <= 100 budgets (stages 2-3 decide there, not the codec)
    fine = resolve_budgets(SearchParams(), 10, nbits=4)
    assert (fine.n_ivf_probe, fine.centroid_score_threshold, fine.n_candidates) == (2, 0.45, 1024)
    assert [full_scores(fine, 10, n, nbits=4) for n in (9, 21, 116)] == [455, 195, 64]
    assert resolve_budgets(None, 10, nbits=2) == small and resolve_budgets(None, 100, 8) == mid


def test_build_is_deterministic(corpus: tuple[list[torch.Tensor], list[torch.Tensor]]) -> None:
    docs = corpus[0][:400]
    a, b = PlaidIndex(128, nbits=2, seed=3), PlaidIndex(128, nbits=2, seed=3)
    a.add([str(i) for i in range(400)], docs)
    b.add([str(i) for i in range(400)], docs)
    (ca,), (cb,) = a.search_state().chunks, b.search_state().chunks  # trains on all that was added
    assert torch.equal(a.codec.centroids, b.codec.centroids)
    assert torch.equal(ca.codes, cb.codes) and torch.equal(ca.residuals, cb.residuals)


@pytest.mark.parametrize("path", ["one-shot", "streaming"])
def test_given_centroids_build_the_index_training_would(
    path: str, corpus: tuple[list[torch.Tensor], list[torch.Tensor]]
) -> None:
    """An index at nbits 2 given an nbits-4 index's centroids (no k-means) is the nbits-2 index a build
    from scratch makes: same codec, same codes and residuals, on either build path."""
    docs, queries = corpus[0][:400], corpus[1]  # 400 documents: three trainings, one check
    ids = [str(i) for i in range(len(docs))]

    def build(nbits: int, centroids: torch.Tensor | None = None) -> PlaidIndex:
        index = PlaidIndex(128, nbits=nbits, seed=5, centroids=centroids)
        if path == "one-shot":
            index.add(ids, docs)
        else:
            index.add_in_chunks(ids, docs, chunk_docs=128)
        index.search_state()
        return index

    fine = build(4)
    fresh, given = build(2), build(2, centroids=fine.codec.centroids)
    assert torch.equal(given.codec.centroids, fine.codec.centroids)
    assert given.codec.fingerprint() == fresh.codec.fingerprint() and given.params == fresh.params
    for a, b in zip(given.search_state().chunks, fresh.search_state().chunks):
        assert torch.equal(a.codes, b.codes) and torch.equal(a.residuals, b.residuals)
    assert given.search(queries[:5], k=10) == fresh.search(queries[:5], k=10)


def test_given_centroids_must_fit_the_index() -> None:
    from mbret.errors import ParameterError

    with pytest.raises(ParameterError, match="centroids"):
        PlaidIndex(128, centroids=torch.zeros(16, 64))
    with pytest.raises(ParameterError, match="num_centroids"):
        PlaidIndex(128, num_centroids=32, centroids=torch.zeros(16, 128))


def test_add_delete_reload_keep_ids_and_chunks(
    corpus: tuple[list[torch.Tensor], list[torch.Tensor]], tmp_path: Path
) -> None:
    docs, queries = corpus
    index = PlaidIndex(128, nbits=2)
    index.add([f"d{i}" for i in range(1000)], docs[:1000])
    index.save(tmp_path / "idx", _manifest())
    first_chunk = tmp_path / "idx" / "codes-00000.npy"
    stamp = first_chunk.stat().st_mtime_ns
    loaded, _ = load_index(tmp_path / "idx")
    assert isinstance(loaded, PlaidIndex) and not loaded.resident
    assert loaded.search(queries[:5], k=5) == index.search(queries[:5], k=5)
    loaded.add(["late"], docs[1200:1201])
    loaded.delete(["d31", "d62"])
    loaded.save(tmp_path / "idx", _manifest())
    assert first_chunk.stat().st_mtime_ns == stamp  # adding writes a new chunk, never rewrites old ones
    again, manifest = load_index(tmp_path / "idx")
    assert manifest.num_docs == 999 and "drift" in manifest.index_params
    assert again.doc_ids[31] is None and again.doc_ids[1000] == "late"
    hits = again.search([docs[1200], queries[1], queries[2]], k=5)
    assert hits[0][0][0] == "late"
    assert all(h[0] not in {"d31", "d62"} for row in hits for h in row)


def test_drift_grows_for_documents_unlike_the_training_data(tmp_path: Path) -> None:
    docs, _ = _corpus(400, seed=0)
    other, _ = _corpus(50, seed=9)  # other topics: far from the trained centroids
    index = PlaidIndex(128, nbits=2)
    index.train(torch.cat(docs))
    index.add([f"a{i}" for i in range(400)], docs)
    index.add([f"b{i}" for i in range(50)], other)
    assert index.drift > 0.5


def test_corrupted_chunk_is_a_clear_error(
    corpus: tuple[list[torch.Tensor], list[torch.Tensor]], tmp_path: Path
) -> None:
    index = PlaidIndex(128, nbits=2)
    index.add([f"d{i}" for i in range(300)], corpus[0][:300])
    index.save(tmp_path / "idx", _manifest())
    residuals = tmp_path / "idx" / "residuals-00000.npy"
    data = residuals.read_bytes()
    residuals.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match="residuals-00000.npy: truncated or corrupt"):
        load_index(tmp_path / "idx")
    residuals.write_bytes(data)
    np.save(tmp_path / "idx" / "doclens-00000.npy", np.full(300, 3, dtype=np.int32))
    with pytest.raises(IndexFormatError, match="chunk 0 holds"):
        load_index(tmp_path / "idx")
    os.unlink(tmp_path / "idx" / "centroids.npy")
    with pytest.raises(IndexFormatError, match="centroids file named in the manifest is missing"):
        load_index(tmp_path / "idx")


def test_each_quantizer_survives_save_and_load_and_older_indexes_stay_scalar(
    corpus: tuple[list[torch.Tensor], list[torch.Tensor]], tmp_path: Path
) -> None:
    docs, queries = corpus
    ids = [f"d{i}" for i in range(300)]
    for quantizer in ("pq", "scalar"):
        index = PlaidIndex(128, nbits=2, residual_quantizer=quantizer)
        index.add(ids, docs[:300])
        before = index.search(queries[:5], k=5)
        index.save(tmp_path / quantizer, _manifest())
        loaded, manifest = load_index(tmp_path / quantizer)
        assert loaded.codec.quantizer == quantizer and manifest.index_params["residual_quantizer"] == quantizer
        assert loaded.search(queries[:5], k=5) == before
    assert PlaidIndex(128).params["residual_quantizer"] == "pq"
    # an index written before the quantizer was recorded holds scalar buckets, and says so once loaded
    path = tmp_path / "scalar" / "manifest.json"
    data = json.loads(path.read_text())
    del data["index_params"]["residual_quantizer"]
    path.write_text(json.dumps(data))
    loaded, _ = load_index(tmp_path / "scalar")
    assert loaded.params["residual_quantizer"] == "scalar" and loaded.search(queries[:5], k=5) == before
    np.save(tmp_path / "pq" / "codebook.npy", np.zeros((3, 256, 4), dtype=np.float32))
    with pytest.raises(IndexFormatError, match=r"codebook.npy: residual codebooks of shape \(3, 256, 4\)"):
        load_index(tmp_path / "pq")
    with pytest.raises(Exception, match="residual_quantizer: 'opq': choose one of pq, scalar"):
        PlaidIndex(128, residual_quantizer="opq")


def test_cli_plaid_index_search_eval(tmp_path: Path, cli, tiny_model: str, small_beir: Path) -> None:
    out = tmp_path / "idx"
    result = cli(
        "index",
        small_beir,
        "--model",
        tiny_model,
        "--mode",
        "colbert",
        "--output",
        out,
        "--nbits",
        "4",
        "--n-full-scores",
        "3",
    )
    assert result.code == 0, result.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "plaid" and manifest["index_type"] == "plaid"
    assert manifest["index_params"]["nbits"] == 4 and manifest["index_params"]["n_full_scores"] == 3
    assert manifest["index_params"]["residual_quantizer"] == "pq"
    payload = json.loads(cli("search", out, "dense vector search over a corpus of documents", "--json").out)
    assert payload[0]["hits"][0]["doc_id"] == "d5" and len(payload[0]["hits"]) <= 3
    payload = json.loads(cli("search", out, "dense vector search", "--json", "--n-full-scores", "6", "-k", "6").out)
    assert len(payload[0]["hits"]) == 6
    result = cli(
        "eval", small_beir, "--model", tiny_model, "--mode", "colbert", "--nbits", "1", "--output", tmp_path / "res"
    )
    assert result.code == 0, result.err
    results = json.loads((tmp_path / "res" / "results.json").read_text())
    assert results["settings"]["index_type"] == "plaid" and results["settings"]["index_params"]["nbits"] == 1
    assert cli("search", out, "x", "--n-ivf-probe", "2").code == 0
    scalar = tmp_path / "scalar"
    options = ("--mode", "colbert", "--output", scalar, "--index-param", "residual_quantizer=scalar")
    assert cli("index", small_beir, "--model", tiny_model, *options).code == 0
    assert json.loads((scalar / "manifest.json").read_text())["index_params"]["residual_quantizer"] == "scalar"
    bad = ("--mode", "colbert", "--output", tmp_path / "bad", "--index-param", "residual_quantizer=opq")
    result = cli("index", small_beir, "--model", tiny_model, *bad)
    assert result.code != 0 and "residual_quantizer: 'opq': choose one of pq, scalar" in result.err


@pytest.mark.parametrize("kind", ["faiss", "exact", "plaid"])
def test_duplicate_add_leaves_the_index_untouched(kind: str) -> None:
    from mbret.errors import MbretError
    from mbret.indexes import FaissIndex

    docs, _ = _corpus(300)
    if kind == "faiss":
        index = FaissIndex(128)
        index.add([f"d{i}" for i in range(300)], torch.stack([d.mean(0) for d in docs]).numpy())
        extra = torch.stack([docs[0].mean(0), docs[1].mean(0)]).numpy()
    else:
        index = ExactMaxSimIndex(128) if kind == "exact" else PlaidIndex(128, nbits=2)
        index.add([f"d{i}" for i in range(300)], docs)
        extra = docs[:2]
    with pytest.raises(MbretError, match="'d1' is already in the index"):
        index.add(["fresh", "d1"], extra)
    assert len(index) == 300 and "fresh" not in index and len(index.doc_ids) == 300


def test_compact_and_recluster(tmp_path: Path) -> None:
    docs, queries = _corpus(600)
    other, _ = _corpus(200, seed=9)
    index = PlaidIndex(128, nbits=2)
    index.train(torch.cat(docs))
    index.add([f"d{i}" for i in range(600)], docs)
    index.add([f"o{i}" for i in range(200)], other)
    drift = index.drift
    index.delete([f"d{i}" for i in range(0, 600, 2)])
    before = index.search(queries[1:4], k=3)
    freed = index.compact()
    assert freed == sum(len(docs[i]) for i in range(0, 600, 2))
    assert len(index) == 500 and None not in index.doc_ids and index.num_chunks == 1
    assert index.search(queries[1:4], k=3) == before  # same documents, same scores
    index.save(tmp_path / "idx", _manifest())
    index.recluster()
    assert index.drift == 0.0 and drift > 0.5
    found = index.search([other[5], docs[31]], k=1)
    assert found[0][0][0] == "o5" and found[1][0][0] == "d31"
    index.save(tmp_path / "idx", _manifest())
    reloaded, manifest = load_index(tmp_path / "idx")
    assert manifest.num_docs == 500 and reloaded.search([other[5]], k=1)[0][0][0] == "o5"


def test_cli_compact_and_recluster(tmp_path: Path, cli, tiny_model: str, small_beir: Path) -> None:
    out = tmp_path / "idx"
    assert cli("index", small_beir, "--model", tiny_model, "--mode", "colbert", "--output", out).code == 0
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"_id": "x1", "text": "an added document about liver tumors"}) + "\n")
    result = cli("index", extra, "--output", out, "--add", "--recluster")
    assert result.code == 0 and "drift" in result.out and "reclustered" in result.out, result.err
    assert cli("delete", out, "d1", "d2").code == 0
    result = cli("compact", out)
    assert result.code == 0 and "5 documents" in result.out, result.err
    payload = json.loads(cli("search", out, "an added document about liver tumors", "--json").out)
    assert payload[0]["hits"][0]["doc_id"] == "x1"


def test_resident_search_equals_memory_mapped_chunks(
    corpus: tuple[list[torch.Tensor], list[torch.Tensor]], tmp_path: Path
) -> None:
    """`mmap=False` reads every array into memory; it must rank exactly as the memory-mapped index of three
    chunks (three saves) does, and as one compacted chunk does."""
    docs, queries = corpus
    index = PlaidIndex(128, nbits=2)
    for begin in range(0, 900, 300):  # three chunk files
        index.add([f"d{i}" for i in range(begin, begin + 300)], docs[begin : begin + 300])
        index.save(tmp_path / "idx", _manifest())
    index.delete(["d5"])
    index.save(tmp_path / "idx", _manifest())
    mapped, _ = PlaidIndex.load(tmp_path / "idx")
    resident, _ = PlaidIndex.load(tmp_path / "idx", mmap=False)
    assert mapped.num_chunks == resident.num_chunks == 3 and resident.resident and not mapped.resident
    index.compact()
    assert index.num_chunks == 1
    for k in (10, 100):
        a, b, c = mapped.search(queries, k=k), resident.search(queries, k=k), index.search(queries, k=k)
        assert [[h[0] for h in row] for row in a] == [[h[0] for h in row] for row in b]
        assert [[h[0] for h in row] for row in a] == [[h[0] for h in row] for row in c]
        assert np.allclose([h[1] for row in a for h in row], [h[1] for row in b for h in row], atol=1e-5)
    assert resident.to("cpu").search(queries[:3], k=5) == resident.search(queries[:3], k=5)


def test_query_parallel_search_equals_one_by_one(corpus: tuple[list[torch.Tensor], list[torch.Tensor]]) -> None:
    """On CPU queries run `workers` at a time on single-threaded torch; results must be those of the
    one-by-one search, in query order, and torch's thread count must come back as it was."""
    docs, queries = corpus
    index = PlaidIndex(128, nbits=2)
    index.add([f"d{i}" for i in range(600)], docs[:600])
    threads = torch.get_num_threads()
    for k in (10, 100):
        parallel, serial = index.search(queries, k=k, workers=3), index.search(queries, k=k, workers=1)
        assert [[h[0] for h in row] for row in parallel] == [[h[0] for h in row] for row in serial]
        assert np.allclose([h[1] for row in parallel for h in row], [h[1] for row in serial for h in row], atol=1e-5)
    assert torch.get_num_threads() == threads
    assert index.search(queries[:1], k=5, workers=4) == index.search(queries[:1], k=5, workers=1)


@pytest.mark.parametrize("block_floats", [None, 256])
@pytest.mark.parametrize("nbits", [2, 4])
def test_stage_scores_equal_their_plain_definitions(
    nbits: int, block_floats: int | None, corpus: tuple[list[torch.Tensor], list[torch.Tensor]], monkeypatch
) -> None:
    """Stages 2-4 reduce per document by scatters over index_select'ed rows of each chunk; their scores must
    equal the plain definitions: the max of each query token's centroid scores over a document's tokens
    (stage 3; stage 2 the same over the centroids kept, at least 0) and MaxSim over the decompressed vectors
    (stage 4), an empty document scoring 0, across chunks and whatever the order stage 4 is asked in; for
    short queries (a narrower reduction) as for long ones, and in blocks of any size."""
    from mbret.indexes.plaid import search
    from mbret.indexes.plaid.search import centroid_interaction, exact_scores, pruned_interaction

    if block_floats is not None:  # blocks of a few rows: a document spans a block or has one of its own
        monkeypatch.setattr(search, "BLOCK_FLOATS", block_floats)

    docs, queries = corpus
    index = PlaidIndex(128, nbits=nbits)
    chosen = [docs[i] for i in range(40)]
    chosen[7] = torch.empty(0, 128)
    index.train(torch.cat(chosen))
    index.add([f"d{i}" for i in range(20)], chosen[:20])
    index.search_state()  # the first 20 become a chunk of their own
    index.add([f"d{i}" for i in range(20, 40)], chosen[20:])
    state = index.search_state()
    assert len(state.chunks) == 2 and index.num_chunks == 2
    codes = torch.cat([c.widen(c.codes) for c in state.chunks])
    packed = torch.cat([c.residuals.view(torch.uint8).view(c.codes.shape[0], -1) for c in state.chunks])
    vectors = index.codec.decompress(codes, packed)
    offsets = np.cumsum([0] + [len(d) for d in chosen])
    asked = torch.tensor([12, 7, 3, 39, 0, 25, 21])
    ascending = torch.sort(asked).values
    for query in [*queries[:4], queries[4][:5], queries[5][:12]]:
        scores_t = index.codec.centroids @ query.T
        kept = scores_t.amax(dim=1) >= 0.3
        stage2 = pruned_interaction(state, scores_t, ascending, kept)
        stage3 = centroid_interaction(state, scores_t, ascending)
        stage4 = dict(zip(asked.tolist(), exact_scores(state, query, scores_t, asked).tolist()))
        for score2, score3, d in zip(stage2.tolist(), stage3.tolist(), ascending.tolist()):
            rows = slice(int(offsets[d]), int(offsets[d + 1]))
            if d == 7:
                assert score2 == score3 == stage4[d] == 0.0
                continue
            table = scores_t[codes[rows]]
            plain2 = float((table * kept[codes[rows], None]).amax(dim=0).clamp_min(0).sum())
            plain3 = float(table.amax(dim=0).sum())
            plain4 = float((vectors[rows] @ query.T).amax(dim=0).sum())
            assert score2 == pytest.approx(plain2, abs=1e-5) and score3 == pytest.approx(plain3, abs=1e-5)
            assert stage4[d] == pytest.approx(plain4, abs=1e-4)


def test_kmeans_threads_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """$MBRET_KMEANS_THREADS sets k-means' threads for the training alone (what a torchrun build's rank 0
    trains on, to compare like with like); a bad value is refused by name."""
    from mbret.errors import MbretError
    from mbret.hardware import cpu_threads

    sample = torch.nn.functional.normalize(torch.randn(4000, 16, generator=torch.Generator().manual_seed(3)), dim=1)
    monkeypatch.setenv("MBRET_KMEANS_THREADS", "two")
    with pytest.raises(MbretError, match=r"\$MBRET_KMEANS_THREADS='two'"):
        ResidualCodec.train(sample, 2, 32)
    import faiss

    seen = []
    train = faiss.Kmeans.train
    monkeypatch.setattr(
        faiss.Kmeans,
        "train",
        lambda self, x, *a, **k: seen.append(faiss.omp_get_max_threads()) or train(self, x, *a, **k),
    )
    monkeypatch.setenv("MBRET_KMEANS_THREADS", "1")
    before = torch.get_num_threads()
    from_env = ResidualCodec.train(sample, 2, 32)
    assert seen == [1]  # k-means ran on the thread count the variable gave
    assert torch.get_num_threads() == before  # set back after training
    monkeypatch.delenv("MBRET_KMEANS_THREADS")
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
        by_hand = ResidualCodec.train(sample, 2, 32)
    assert torch.get_num_threads() == before
    assert from_env.fingerprint() == by_hand.fingerprint()
