"""The summary of a sweep: one row per run, ranked by a metric, written as
``sweep_results.csv`` and ``sweep_results.md``, and one ``sweep_<key>.png`` per swept key
(the metric against that key's values)."""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Row = dict[str, Any]
LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "cer", "wer", "perplexity", "distance", "time")
# Words that make a name higher-is-better even next to one of the above: 'mse_reduction'
# (1 - mse / baseline), 'error_reduction'.
HIGHER_IS_BETTER = ("accuracy", "reduction", "ssim", "psnr", "sharpness", "score", "f1", "auc")


def default_mode(metric: str) -> str:
    """``'max'`` for metrics whose name (its words, split at '.', '_' and '/') says higher is
    better (accuracy, mse_reduction, ...), ``'min'`` for those that say lower is better
    (loss, error, mse, ...), else ``'max'``."""
    words = set(re.split(r"[._/]", metric.lower()))
    if words & set(HIGHER_IS_BETTER):
        return "max"
    return "min" if words & set(LOWER_IS_BETTER) else "max"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict under dotted keys (``{'test': {'accuracy': a}}`` ->
    ``{'test.accuracy': a}``)."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def read_results(run_dir: str) -> dict[str, float] | None:
    """The flattened ``results.json`` of a finished run, or None."""
    try:
        with open(os.path.join(run_dir, "results.json")) as file:
            return flatten(json.load(file))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def sort_rows(rows: list[Row], metric: str, mode: str) -> list[Row]:
    """Best first by ``metric`` (``mode`` 'max' or 'min'); runs without it (failed, not
    finished, non-finite) last, in their original order."""

    def key(row: Row) -> tuple[int, float]:
        value = row.get(metric)
        if not isinstance(value, float) or not math.isfinite(value):
            return (1, 0.0)
        return (0, -value if mode == "max" else value)

    return sorted(rows, key=key)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def columns(rows: list[Row], keys: Sequence[str], metric: str) -> list[str]:
    """``run``, the swept keys, ``metric``, the other ``test.*`` metrics, wall time, status."""
    metrics = sorted({name for row in rows for name in row if name.startswith("test.")})
    metrics = [metric] + [name for name in metrics if name != metric]
    return ["run", *keys, *metrics, "wall_time_s", "status"]


def write_tables(
    rows: list[Row], keys: Sequence[str], metric: str, mode: str, directory: str
) -> list[str]:
    """Writes ``sweep_results.csv`` and ``sweep_results.md`` (rows already sorted)."""
    header = columns(rows, keys, metric)
    csv_path = os.path.join(directory, "sweep_results.csv")
    with open(csv_path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if row.get(name) is None else row[name] for name in header])
    md_path = os.path.join(directory, "sweep_results.md")
    lines = [
        f"Sweep results: {len(rows)} runs, best first by {metric} ({mode}).",
        "",
        "| rank | " + " | ".join(header) + " |",
        "|" + "---|" * (len(header) + 1),
    ]
    for rank, row in enumerate(rows, 1):
        cells = [_cell(row.get(name)).replace("|", "\\|") for name in header]
        lines.append(f"| {rank} | " + " | ".join(cells) + " |")
    with open(md_path, "w") as file:
        file.write("\n".join(lines) + "\n")
    return [csv_path, md_path]


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot_key(rows: list[Row], key: str, metric: str, mode: str, path: str) -> str | None:
    """``metric`` of every finished run against its value of ``key`` (a mean line through
    runs that share a value when other keys vary); None when no run has the metric."""
    done = [row for row in rows if isinstance(row.get(metric), float)]
    if not done:
        return None
    values = [row[key] for row in done]
    distinct = sorted(set(values), key=lambda v: (str(type(v)), v))
    if _numeric(distinct):
        positions = {value: value for value in distinct}
    else:
        positions = {value: index for index, value in enumerate(distinct)}
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    axis.scatter([positions[v] for v in values], [row[metric] for row in done], alpha=0.7)
    means = [
        sum(row[metric] for row in done if row[key] == value) / values.count(value)
        for value in distinct
    ]
    axis.plot([positions[v] for v in distinct], means, "-", color="gray", label="mean")
    best = sort_rows(done, metric, mode)[0]
    axis.scatter([positions[best[key]]], [best[metric]], s=120, facecolors="none",
                 edgecolors="red", label=f"best ({mode})")  # fmt: skip
    if _numeric(distinct):
        positive = [v for v in distinct if v > 0]
        if len(positive) == len(distinct) and max(distinct) >= 10 * min(distinct):
            axis.set_xscale("log")
    else:
        axis.set_xticks(list(positions.values()), [str(v) for v in distinct])
    axis.set(xlabel=key, ylabel=metric, title=f"{metric} vs {key}")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
