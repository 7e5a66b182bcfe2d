"""`mbret report`: runs side by side as a markdown table and a bar chart (PNG), with the paper's numbers.

A run is a results directory: a suite's (its `results.json` has `datasets`) or a single `mbret eval`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbret.errors import InputError, MbretError
from mbret.io import atomic_file

METRIC = "ndcg@10"


@dataclass
class RunRows:
    """One run: a label and, per dataset (display name), our NDCG@10 and the paper's (or None)."""

    label: str
    paper_label: str | None
    rows: dict[str, tuple[float | None, float | None]]
    directory: Path


def load_run(directory: str | Path) -> RunRows:
    directory = Path(directory)
    path = directory / "results.json"
    if not path.is_file():
        raise MbretError(f"{directory}: no results.json (give directories written by `mbret eval --output`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(path, getattr(exc, "lineno", None), f"invalid JSON ({exc})") from None
    try:
        model, mode = str(data["model"]), str(data["mode"])
        if "datasets" in data:  # a suite
            paper = data["paper"]
            rows = {r["dataset"]: (r["ndcg@10"], r["paper"]) for r in paper["rows"]}
            paper_label = f"paper: {paper['paper_model']} {paper['mode']}"
            index_type = data["settings"]["index_type"]
        else:  # one dataset
            rows = {str(data["dataset"]): (data["metrics"].get(METRIC), None)}
            paper_label = None
            index_type = data["settings"]["index_type"]
    except (KeyError, TypeError) as exc:
        raise InputError(path, None, f"not an mbret results file (missing {exc})") from None
    name = Path(model).name or model
    label = f"{name} {mode}" + (f" ({index_type})" if mode == "colbert" else "")
    return RunRows(label=label, paper_label=paper_label, rows=rows, directory=directory)


def _unique_labels(runs: list[RunRows]) -> None:
    labels = [r.label for r in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label = f"{run.label} [{run.directory.name}]"


def _datasets(runs: list[RunRows]) -> list[str]:
    order: list[str] = []
    for run in runs:
        order.extend(d for d in run.rows if d not in order)
    return order


def _paper_columns(runs: list[RunRows]) -> dict[str, dict[str, float]]:
    """One column per distinct paper row among the runs: display name -> value."""
    columns: dict[str, dict[str, float]] = {}
    for run in runs:
        if run.paper_label is None:
            continue
        column = columns.setdefault(run.paper_label, {})
        for dataset, (_, paper) in run.rows.items():
            if paper is not None:
                column[dataset] = paper
    return {label: values for label, values in columns.items() if values}


def markdown_table(runs: list[RunRows]) -> str:
    """Datasets down, runs and the paper's rows across; NDCG@10."""
    papers = _paper_columns(runs)
    header = ["dataset", *(r.label for r in runs), *papers]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for dataset in _datasets(runs):
        cells = [dataset]
        cells += [_cell(r.rows.get(dataset, (None, None))[0]) for r in runs]
        cells += [_cell(values.get(dataset)) for values in papers.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def bar_chart(runs: list[RunRows], path: str | Path, title: str = "NDCG@10") -> None:
    """Grouped bars: one group per dataset, one bar per run, and a hatched bar per paper row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = _datasets(runs)
    papers = _paper_columns(runs)
    series: list[tuple[str, list[float | None], dict[str, Any]]] = []
    colors = plt.get_cmap("tab10").colors
    for i, run in enumerate(runs):
        values = [run.rows.get(d, (None, None))[0] for d in datasets]
        series.append((run.label, values, {"color": colors[i % 10]}))
    for j, (label, values) in enumerate(papers.items()):
        style = {"color": "white", "edgecolor": colors[(len(runs) + j) % 10], "hatch": "///", "linewidth": 1.2}
        series.append((label, [values.get(d) for d in datasets], style))
    width = 0.8 / len(series)
    fig_width = max(6.0, 0.9 * len(datasets) * len(series) + 2.0)
    fig, ax = plt.subplots(figsize=(min(fig_width, 40.0), 4.8), dpi=120)
    for k, (label, values, style) in enumerate(series):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(datasets))]
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(xs, heights, width=width * 0.95, label=label, **style)
        for bar, value in zip(bars, values):
            if value is not None:
                ax.annotate(
                    f"{value:.3f}",
                    (bar.get_x() + bar.get_width() / 2, value),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90 if len(series) > 3 else 0,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
    ax.set_xticks(range(len(datasets)))
    ax.set_xticklabels(datasets, rotation=30 if len(datasets) > 4 else 0, ha="right" if len(datasets) > 4 else "center")
    ax.set_ylabel(title)
    top = max((v for _, values, _ in series for v in values if v is not None), default=1.0)
    ax.set_ylim(0, min(1.0, top * 1.2) if top > 0 else 1.0)
    ax.set_title(f"{title} by dataset")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18 if len(datasets) > 4 else -0.1), ncol=min(len(series), 3),
              fontsize=8, frameon=False)  # fmt: skip
    fig.tight_layout()
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", bbox_inches="tight")
    plt.close(fig)


def write_report(directories: list[str | Path], out: str | Path) -> tuple[Path, Path, str]:
    """Write `report.md` and `report.png` into `out`; returns their paths and the markdown."""
    if not directories:
        raise MbretError("give at least one results directory")
    runs = [load_run(d) for d in directories]
    _unique_labels(runs)
    out = Path(out)
    table = markdown_table(runs)
    sources = "\n".join(f"- {r.label}: `{r.directory}`" for r in runs)
    markdown = f"# NDCG@10\n\n{table}\n\nRuns:\n{sources}\n\n![NDCG@10 by dataset](report.png)\n"
    if any(r.paper_label for r in runs):
        from mbret.eval.paper import citation

        markdown += f"\nPaper numbers: {citation()}\n"
    png = out / "report.png"
    bar_chart(runs, png)
    md = out / "report.md"
    with atomic_file(md) as fh:
        fh.write(markdown)
    return md, png, table
