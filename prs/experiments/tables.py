"""Tables and statistics of run results: one flat row per run, mean ± sample std over seeds, Markdown."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Sequence

from prs.schedule import ScheduleSpec


def results_table(results: Iterable[Mapping]) -> list[dict]:
    """One flat row per run: label, model, family, ratio, seed, schedule, top1, top5, sizes, timings,
    parameters, and the measured mean attention distance (px) when the run's last history row has
    `mean_attention_distance_px` (else None; the data-scale verdict orders models by it).

    Fields of the run's grid key (e.g. switch_epoch) are added; the label defaults to the model name.
    """
    rows = []
    for r in results:
        cfg = r["config"]
        row = {
            "label": cfg["model"]["name"],
            "model": cfg["model"]["name"],
            "family": r["model"]["family"],
            "ratio": cfg["data"]["ratio"],
            "seed": cfg["train"]["seed"],
            "schedule": ScheduleSpec.from_dict(r["schedule"]).label,
            "top1": r["final"]["test_top1"],
            "top5": r["final"]["test_top5"],
            "train_size": r["data"]["train_size"],
            "epochs": cfg["train"]["epochs"],
            "wall_time_s": r["wall_time_s"],
            "img_per_s": r["throughput_img_s"],
            "parameters": r["model"].get("parameters"),
            "attention_distance_px": (r.get("history") or [{}])[-1].get("mean_attention_distance_px"),
            "switchable_stages": cfg["model"].get("switchable_stages"),
            "attention_layers": sorted({layer for event in r.get("switch_events", []) for layer in event["layers"]}),
            "run_dir": r["run_dir"],
            "commit": r["commit"],
        }
        row.update(r.get("key", {}))
        rows.append(row)
    return rows


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the std is None for a single value."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std: no values")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(rows: Iterable[Mapping], by: Sequence[str] = ("label",), value: str = "top1") -> list[dict]:
    """Group rows by the `by` fields (first-seen order): {by..., mean, std, n, values} per group."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(float(row[value]))
    out = []
    for key, values in groups.items():
        mean, std = mean_std(values)
        out.append({**dict(zip(by, key)), "mean": mean, "std": std, "n": len(values), "values": values})
    return out


def format_mean_std(mean: float | None, std: float | None, digits: int = 1) -> str:
    if mean is None:
        return "unknown"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(rows: Sequence[Mapping], columns: Mapping[str, str] | Sequence[str]) -> str:
    """A Markdown table; `columns` maps row keys to headers. Floats are shown with 2 decimals."""
    columns = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}

    def cell(v) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(k)) for k in columns) + " |" for row in rows]
    return "\n".join(lines)


def pivot_markdown(summary: Sequence[Mapping], row: str = "label", column: str = "ratio", corner: str = "model",
                   column_header: Callable[[object], str] = str, digits: int = 1) -> str:
    """A Markdown table of `summarize` output: one line per `row` value, one column per `column`
    value, cells mean ± std (missing cells "—")."""
    rows_, cols = [], []
    cells = {}
    for s in summary:
        rows_ += [s[row]] if s[row] not in rows_ else []
        cols += [s[column]] if s[column] not in cols else []
        cells[(s[row], s[column])] = format_mean_std(s["mean"], s["std"], digits)
    header = {"_row": corner, **{f"c{i}": column_header(c) for i, c in enumerate(cols)}}
    lines = [{"_row": r, **{f"c{i}": cells.get((r, c)) for i, c in enumerate(cols)}} for r in rows_]
    return markdown_table(lines, header)
