"""The benchmark datasets and suites in one place: where each dataset comes from and how it is scored.

Every convention that moves NDCG@10 and that evaluators disagree on is a field here and is recorded in
each `results.json`: the split (MS MARCO is scored on dev), the identical-id policy (BEIR drops a hit whose
doc id equals the query id; this matters for ArguAna and Quora), title handling (BEIR, MTEB and CoIR join
`title + " " + text`), and the query/document lengths per mode (MLDR documents run to 8192 tokens). A
length is a ceiling: a model whose own limit is lower runs at its limit, and the result says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbret.errors import InputError, MbretError, ParameterError


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face dataset and the schema it is written in.

    Schemas (column names as on the hub):
    - `mteb`: one repo, configs `corpus` (`_id, title, text`), `queries` (`_id, text`) and `default`
      (qrels `query-id, corpus-id, score`, one split per qrels split), as `mteb/scifact`;
    - `mteb-subset`: the same with configs `<subset>-corpus`, `<subset>-queries`, `<subset>-qrels`, as
      `CoIR-Retrieval/CodeSearchNet` (subset = language) and `mteb/MultiLongDocRetrieval` (`en`);
    - `beir`: `BeIR/x` (configs `corpus`, `queries`) plus the repo `BeIR/x-qrels` (splits test/dev/train);
    - `coir`: CoIR's own layout, `<repo>-queries-corpus` (config `default`, splits `queries` and `corpus`,
      `_id, title, text`) plus `<repo>-qrels` (`query_id, corpus_id, score`);
    - `mldr`: `Shitao/MLDR`, config `<lang>` rows `query_id, query, positive_passages[{docid, text}]`,
      config `corpus-<lang>` rows `docid, text`.
    """

    repo: str
    schema: str
    subset: str | None = None  # `mteb-subset` subset, `mldr` language


@dataclass(frozen=True)
class Lengths:
    """Token ceilings per mode. Dense uses one length for queries and documents, as sentence-transformers
    does; None there means the model's own `max_seq_length` (what MTEB and CoIR evaluate with)."""

    dense: int | None = None
    # BEIR with ColBERT: documents 510, as the paper's evaluation script (AnswerDotAI/bert24,
    # examples/evaluate_pylate.py); queries None: the model's own (a ColBERT checkpoint's expansion width,
    # 32 for PyLate's and that script's; without expansion, the document length)
    colbert_query: int | None = None
    colbert_document: int = 510

    def to_json(self) -> dict[str, int | None]:
        return {"dense": self.dense, "colbert_query": self.colbert_query, "colbert_document": self.colbert_document}


@dataclass(frozen=True)
class DatasetSpec:
    """One benchmark dataset: its sources, in the order they are tried, and its scoring conventions."""

    name: str
    display: str
    family: str  # beir | mldr | coir
    split: str = "test"
    irds: str | None = None  # ir_datasets id (without the split suffix when it has one)
    hub: tuple[HubSource, ...] = ()
    keep_identical_ids: bool = False  # BEIR drops a hit whose doc id is the query id; a few datasets keep it
    join_title: bool = True
    lengths: Lengths = field(default_factory=Lengths)
    parts: tuple[str, ...] = ()  # a dataset scored as the mean of these (CQADupStack's 12 forums)
    expected: tuple[int, int] | None = None  # (documents, judged queries), checked after a download
    local: Path | None = None  # a local BEIR directory (custom suites)
    registry_name: str | None = None  # custom suites: the registry entry whose paper numbers apply

    @property
    def paper_key(self) -> str | None:
        """The name the paper's numbers are filed under: the entry's own, or a custom dataset's registry tie."""
        return self.registry_name if self.local is not None else self.name

    def conventions(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "split": self.split,
            "keep_identical_ids": self.keep_identical_ids,
            "join_title": self.join_title,
            "lengths": self.lengths.to_json(),
        }


def _beir(
    name: str,
    display: str,
    irds: str,
    expected: tuple[int, int] | None,
    split: str = "test",
    mteb_name: str | None = None,
) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        display=display,
        family="beir",
        split=split,
        irds=irds,
        hub=(HubSource(f"mteb/{mteb_name or name}", "mteb"), HubSource(f"BeIR/{name}", "beir")),
        expected=expected,
    )


CQADUPSTACK_FORUMS = (
    "android",
    "english",
    "gaming",
    "gis",
    "mathematica",
    "physics",
    "programmers",
    "stats",
    "tex",
    "unix",
    "webmasters",
    "wordpress",
)

# Sizes as in the BEIR paper (Thakur et al., 2021, Table 1): documents, and queries of the scored split.
_BEIR = [
    _beir("nfcorpus", "NFCorpus", "beir/nfcorpus", (3633, 323)),
    _beir("scifact", "SciFact", "beir/scifact", (5183, 300)),
    _beir("trec-covid", "TREC-COVID", "beir/trec-covid", (171332, 50)),
    _beir("fiqa", "FiQA", "beir/fiqa", (57638, 648)),
    _beir("arguana", "ArguAna", "beir/arguana", (8674, 1406)),
    _beir("climate-fever", "Climate-FEVER", "beir/climate-fever", (5416593, 1535)),
    _beir("dbpedia-entity", "DBPedia", "beir/dbpedia-entity", (4635922, 400), mteb_name="dbpedia"),
    _beir("fever", "FEVER", "beir/fever", (5416568, 6666)),
    _beir("hotpotqa", "HotpotQA", "beir/hotpotqa", (5233329, 7405)),
    _beir("msmarco", "MS MARCO", "beir/msmarco", (8841823, 6980), split="dev"),
    _beir("nq", "NQ", "beir/nq", (2681468, 3452)),
    _beir("quora", "Quora", "beir/quora", (522931, 10000)),
    _beir("scidocs", "SCIDOCS", "beir/scidocs", (25657, 1000)),
    _beir("webis-touche2020", "Touche-2020", "beir/webis-touche2020/v2", (382545, 49), mteb_name="touche2020"),
    DatasetSpec(
        name="cqadupstack",
        display="CQADupStack",
        family="beir",
        parts=tuple(f"cqadupstack-{forum}" for forum in CQADUPSTACK_FORUMS),
        expected=(457199, 13145),
    ),
]
_CQA_PARTS = [
    DatasetSpec(
        name=f"cqadupstack-{forum}",
        display=f"CQADupStack {forum}",
        family="beir",
        irds=f"beir/cqadupstack/{forum}",
        hub=(HubSource(f"mteb/cqadupstack-{forum}", "mteb"),),
    )
    for forum in CQADUPSTACK_FORUMS
]

_LONG = [
    DatasetSpec(
        name="mldr",
        display="MLDR (en)",
        family="mldr",
        # the paper does not name the split; FlagEmbedding's MLDR evaluation scores `test` (800 queries)
        split="test",
        hub=(HubSource("mteb/MultiLongDocRetrieval", "mteb-subset", "en"), HubSource("Shitao/MLDR", "mldr", "en")),
        # long context: documents up to 8192 tokens in both modes (the paper's ColBERT script: 8190)
        lengths=Lengths(dense=8192, colbert_document=8190),
        expected=(200000, 800),
    ),
]

CODESEARCHNET_LANGUAGES = ("go", "java", "javascript", "php", "python", "ruby")
_CSN_PARTS = [
    DatasetSpec(
        name=f"codesearchnet-{lang}",
        display=f"CodeSearchNet {lang}",
        family="coir",
        hub=(
            HubSource(f"CoIR-Retrieval/CodeSearchNet-{lang}", "coir"),
            HubSource("CoIR-Retrieval/CodeSearchNet", "mteb-subset", lang),
        ),
        lengths=Lengths(dense=None, colbert_query=256, colbert_document=510),
    )
    for lang in CODESEARCHNET_LANGUAGES
]
_CODE = [
    DatasetSpec(
        name="codesearchnet",
        display="CodeSearchNet",
        family="coir",
        # CoIR's code-to-text task: the query is code, the documents are docstrings; scored per language
        # and averaged over the six, as CoIR reports it
        parts=tuple(spec.name for spec in _CSN_PARTS),
        lengths=Lengths(dense=None, colbert_query=256, colbert_document=510),
        expected=(1003765, 52561),
    ),
    DatasetSpec(
        name="stackqa",
        display="StackOverflow-QA",
        family="coir",
        hub=(HubSource("CoIR-Retrieval/stackoverflow-qa", "coir"), HubSource("mteb/StackOverflowQA", "mteb")),
        lengths=Lengths(dense=None, colbert_query=256, colbert_document=510),
        expected=(19931, 1994),
    ),
]

REGISTRY: dict[str, DatasetSpec] = {spec.name: spec for spec in [*_BEIR, *_CQA_PARTS, *_LONG, *_CSN_PARTS, *_CODE]}

SUITES: dict[str, tuple[str, ...]] = {
    "beir": tuple(spec.name for spec in _BEIR),
    # the paper's model-selection subset (Warner et al., 2024, section 3.1.2)
    "beir-dev4": ("scifact", "nfcorpus", "fiqa", "trec-covid"),
    "mldr": ("mldr",),
    "codesearchnet": ("codesearchnet",),
    "stackqa": ("stackqa",),
}
SUITES["paper"] = SUITES["beir"] + SUITES["mldr"] + SUITES["codesearchnet"] + SUITES["stackqa"]


@dataclass(frozen=True)
class Suite:
    name: str
    datasets: tuple[DatasetSpec, ...]
    source: str  # a suite name or the YAML file it came from


def get_dataset(name: str) -> DatasetSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        parts = {p for spec in REGISTRY.values() for p in spec.parts}
        known = ", ".join(sorted(n for n in REGISTRY if n not in parts))
        raise MbretError(f"unknown dataset {name!r}; the registry has: {known}") from None


def resolve_suite(name_or_path: str | Path) -> Suite:
    """A named suite (`beir`, `beir-dev4`, `mldr`, `codesearchnet`, `stackqa`, `paper`) or a YAML file."""
    text = str(name_or_path)
    if text in SUITES:
        return Suite(text, tuple(get_dataset(n) for n in SUITES[text]), text)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return read_suite_yaml(path)
    raise ParameterError("suite", f"{text}: choose one of {', '.join(SUITES)}, or give a suite YAML file")


# ignore_identical_ids: the old name of keep_identical_ids (its opposite), still read
_LOCAL_KEYS = {
    "name", "path", "split", "keep_identical_ids", "ignore_identical_ids", "join_title", "lengths", "registry"
}  # fmt: skip


def _keep_identical_ids(item: dict[str, Any], default: bool) -> bool:
    """A suite YAML dataset's `keep_identical_ids`, or the opposite of its deprecated `ignore_identical_ids`."""
    if "ignore_identical_ids" in item:
        warnings.warn(
            "ignore_identical_ids: in a suite YAML is deprecated; use keep_identical_ids:", DeprecationWarning, 2
        )
        return not bool(item["ignore_identical_ids"])
    return bool(item.get("keep_identical_ids", default))


def read_suite_yaml(path: str | Path) -> Suite:
    """A custom suite: local BEIR directories (paths relative to the file), each optionally tied to a
    registry dataset whose conventions and paper numbers it takes, e.g.

        name: scifact-local
        datasets:
          - name: scifact                 # a registry name: its conventions and the paper's number apply
            path: ../shared/data/beir/scifact
          - name: my-corpus
            path: data/my-corpus
            split: dev
            keep_identical_ids: true
            lengths: {dense: 256, colbert_query: 32, colbert_document: 180}
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ParameterError("suite", f"{path}: file not found")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(
            path, mark.line + 1 if mark else None, f"invalid YAML ({getattr(exc, 'problem', exc)})"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("datasets"), list) or not doc["datasets"]:
        raise InputError(path, None, "a suite file needs a non-empty `datasets:` list")
    lines = _item_lines(path)
    specs: list[DatasetSpec] = []
    for i, item in enumerate(doc["datasets"]):
        line = lines[i] if i < len(lines) else None
        if not isinstance(item, dict) or "name" not in item or "path" not in item:
            raise InputError(path, line, "each dataset needs `name:` and `path:`")
        unknown = set(item) - _LOCAL_KEYS
        if unknown:
            raise InputError(
                path, line, f"unknown key(s) {', '.join(sorted(unknown))}; use {', '.join(sorted(_LOCAL_KEYS))}"
            )
        local = (path.parent / str(item["path"])).resolve()
        if not local.is_dir():
            raise InputError(path, line, f"{item['path']}: not a directory (paths are relative to the suite file)")
        base_name = str(item.get("registry", item["name"]))
        base = REGISTRY.get(base_name)
        if "registry" in item and base is None:
            raise InputError(path, line, f"registry: {base_name!r} is not a registry dataset")
        lengths = base.lengths if base else Lengths()
        if "lengths" in item:
            if not isinstance(item["lengths"], dict) or set(item["lengths"]) - set(Lengths().to_json()):
                raise InputError(path, line, "lengths: a mapping of dense, colbert_query, colbert_document")
            given = {k: None if v is None else int(v) for k, v in item["lengths"].items()}
            if given.get("colbert_document", 1) is None:
                raise InputError(path, line, "lengths: colbert_document needs a number of tokens")
            lengths = Lengths(**{**lengths.to_json(), **given})  # type: ignore[arg-type]
        specs.append(
            DatasetSpec(
                name=str(item["name"]),
                display=base.display if base else str(item["name"]),
                family=base.family if base else "local",
                split=str(item.get("split", base.split if base else "test")),
                keep_identical_ids=_keep_identical_ids(item, base.keep_identical_ids if base else False),
                join_title=bool(item.get("join_title", base.join_title if base else True)),
                lengths=lengths,
                local=local,
                registry_name=base.name if base else None,
            )
        )
    names = [s.name for s in specs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise InputError(path, None, f"dataset {duplicate!r} is listed twice")
    return Suite(str(doc.get("name", path.stem)), tuple(specs), str(path))


def _item_lines(path: Path) -> list[int]:
    """1-based line of each `datasets:` list item, for errors that point at the item."""
    lines, inside = [], False
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("datasets:"):
            inside = True
        elif inside and stripped.startswith("- "):
            lines.append(lineno)
    return lines


def conventions_markdown() -> str:
    """The registry as a markdown table (docs/evaluation.md embeds it; a test keeps the two in step)."""
    lines = [
        "| dataset | suites | split | sources (tried in order) | identical ids | titles "
        "| dense length | ColBERT query / document |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in SUITES["paper"]:
        spec = REGISTRY[name]
        suites = ", ".join(s for s, members in SUITES.items() if name in members and s != "paper")
        first = REGISTRY[spec.parts[0]] if spec.parts else spec
        sources = [f"`{h.repo}` ({h.schema}{', ' + h.subset if h.subset else ''})" for h in first.hub]
        if first.irds:
            sources.append(f"ir_datasets `{first.irds}`")
        where = ", ".join(sources)
        if spec.parts:
            where = f"mean of {len(spec.parts)} parts (`{spec.parts[0]}`, ...), each from {where}"
        lengths = spec.lengths
        lines.append(
            f"| {spec.display} | {suites} | {spec.split} | {where} "
            f"| {'kept' if spec.keep_identical_ids else 'dropped'} | {'joined' if spec.join_title else 'dropped'} "
            f"| {lengths.dense or 'model default'} | {lengths.colbert_query or 'model default'} / "
            f"{lengths.colbert_document} |"
        )
    return "\n".join(lines)
