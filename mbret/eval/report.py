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
        raise MbretError(f"{directory}: no results.json (give the output directories of evaluations)")
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
    horizontal = len(datasets) > 6  # many datasets read better down the page
    per_group = 0.28 * len(series) + 0.3
    if horizontal:
        fig, ax = plt.subplots(figsize=(9.0, min(per_group * len(datasets) + 1.5, 60.0)), dpi=110, layout="constrained")
    else:
        fig, ax = plt.subplots(
            figsize=(max(6.0, per_group * len(datasets) * 1.6 + 2.0), 4.8), dpi=120, layout="constrained"
        )
    for k, (label, values, style) in enumerate(series):
        offset = width * (k + 0.5) - 0.4
        positions = [i + offset for i in range(len(datasets))]  # first series on the left / on top
        sizes = [v if v is not None else 0.0 for v in values]
        if horizontal:
            bars = ax.barh(positions, sizes, height=width * 0.95, label=label, **style)
        else:
            bars = ax.bar(positions, sizes, width=width * 0.95, label=label, **style)
        for bar, value in zip(bars, values):
            if value is None:
                continue
            if horizontal:
                xy, offset_pts, align = (value, bar.get_y() + bar.get_height() / 2), (3, 0), {"va": "center"}
            else:
                xy, offset_pts, align = (bar.get_x() + bar.get_width() / 2, value), (0, 2), {"ha": "center"}
            ax.annotate(
                f"{value:.3f}",
                xy,
                xytext=offset_pts,
                textcoords="offset points",
                fontsize=7,
                rotation=90 if not horizontal and len(series) > 3 else 0,
                **({"ha": "left", **align} if horizontal else {"va": "bottom", **align}),
            )
    top = max((v for _, values, _ in series for v in values if v is not None), default=1.0)
    limit = min(1.0, top * 1.15) if top > 0 else 1.0
    if horizontal:
        ax.set_yticks(range(len(datasets)))
        ax.set_yticklabels(datasets)
        ax.set_ylim(len(datasets) - 0.5, -0.5)  # first dataset on top, no empty margin
        ax.set_xlabel(title)
        ax.set_xlim(0, limit)
        ax.grid(axis="x", alpha=0.3)
    else:
        ax.set_xticks(range(len(datasets)))
        ax.set_xticklabels(
            datasets, rotation=20 if len(datasets) > 3 else 0, ha="right" if len(datasets) > 3 else "center"
        )
        ax.set_ylabel(title)
        ax.set_ylim(0, limit)
        ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{title} by dataset")
    ax.set_axisbelow(True)
    fig.legend(loc="outside lower center", ncol=2, fontsize=8, frameon=False)
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
