"""Hyperparameter sweeps: every point of a grid trained in its own process.

    python -m experiments.sweep --config configs/seq_digits.py --workdir workdirs/sweep \
        --sweep model.hidden_size=64,128 --sweep optimizer.learning_rate=1e-3,5e-3 \
        [--parallel 2] [--metric test.accuracy --mode max] [--config.train.num_epochs=20]

The grid is the product of the ``--sweep key=v1,v2`` flags, or else what the config
file's ``get_sweep()`` returns (`experiments.sweep_grid`). ``--config.<field>=<value>``
flags apply to every run. Each run trains in ``<workdir>/<name>`` (e.g.
``hidden_size=64,learning_rate=0.001``), which holds its resolved ``config.json``,
checkpoints, ``results.json`` and ``train.log``. Runs with a ``results.json`` are skipped,
so rerunning a sweep finishes what is missing (interrupted runs resume from their
checkpoints); a rerun whose settings differ from a run's saved config is refused. The
summary: ``sweep_results.csv``/``.md`` ranked by ``--metric`` and one ``sweep_<key>.png``
per swept key. Exit status 1 if any run failed.
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import run_config, sweep_report
from experiments.cli import first_message, parse_flags
from experiments.sweep_devices import make_slots
from experiments.sweep_grid import (
    SweepError,
    apply_overrides,
    check_grid,
    format_value,
    grid_from_flags,
    grid_from_function,
    load_config_file,
    override_flags,
    run_name,
)
from experiments.sweep_runner import Run, run_all

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Base config file (configs/<name>.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory: one subdirectory per run.")
_SWEEP = flags.DEFINE_multi_string(
    "sweep", [], "key=v1,v2,...: a swept field (repeat for a product). Default: get_sweep()."
)
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once, each in its own device slot.")
_DEVICES_PER_RUN = flags.DEFINE_integer("devices_per_run", 1, "Accelerators per run.")
_PLATFORM = flags.DEFINE_enum(
    "platform", "auto", ["auto", "gpu", "tpu", "cpu"], "How runs are pinned to devices."
)
_DEVICES = flags.DEFINE_list("devices", None, "Accelerator ids to use (default: all found).")
_PIN_CPUS = flags.DEFINE_bool("pin_cpus", True, "On CPU, give each run its own cores.")
_METRIC = flags.DEFINE_string(
    "metric", None, "Ranking metric, a results.json key (default: test.<task main metric>)."
)
_MODE = flags.DEFINE_enum("mode", None, ["max", "min"], "Whether higher or lower is better.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the runs and their commands; run nothing.")
flags.mark_flags_as_required(["config", "workdir"])


def resolve_grid(config_spec: str, config, sweep_flags: list[str], fixed: dict) -> list[dict]:
    """The checked grid: from ``--sweep`` flags, else from ``get_sweep()``."""
    module, _ = load_config_file(config_spec)
    _, _, arg = config_spec.partition(":")
    if sweep_flags:
        grid = grid_from_flags(sweep_flags, config)
    elif hasattr(module, "get_sweep"):
        grid = grid_from_function(module, arg, config)
    else:
        raise SweepError(f"no --sweep flags and {config_spec} has no get_sweep()")
    for key in {key for run in grid for key in run} & set(fixed):
        raise SweepError(f"{key} is both swept and fixed by --config.{key}")
    check_grid(grid, config)
    return grid


def ranking(config, metric: str | None, mode: str | None) -> tuple[str, str]:
    """``(metric, mode)``: the flags, else the task's main metric and its direction."""
    from experiments.tasks import get_task  # imports JAX (no backend): only when needed

    task = get_task(config)
    metric = metric or f"test.{task.main_metric}"
    task_mode = task.main_metric_mode if metric == f"test.{task.main_metric}" else None
    return metric, mode or task_mode or sweep_report.default_mode(metric)


def summarize(runs: list[Run], grid: list[dict], metric: str, mode: str, workdir: str) -> list[str]:
    """Writes the tables and plots; returns their paths."""
    keys = list(dict.fromkeys(key for run in grid for key in run))
    every = [sweep_report.read_results(run.directory) or {} for run in runs]
    if not any(metric in results for results in every):
        if any(f"test.{metric}" in results for results in every):
            metric = f"test.{metric}"  # '--metric accuracy' means the test metric
    rows = []
    for run, overrides, results in zip(runs, grid, every):
        row = {"run": run.name, **{key: overrides.get(key) for key in keys}}
        row.update({name: value for name, value in results.items() if name.startswith("test.")})
        if metric in results:
            row[metric] = results[metric]
        row["wall_time_s"] = results.get("wall_time_s", run.wall_time_s)
        row["status"] = run.status
        rows.append(row)
    if not any(metric in row for row in rows):
        logging.warning("no run reported %s; the table is unranked", metric)
    rows = sweep_report.sort_rows(rows, metric, mode)
    paths = sweep_report.write_tables(rows, keys, metric, mode, workdir)
    for key in keys:
        path = sweep_report.plot_key(
            rows, key, metric, mode, os.path.join(workdir, f"sweep_{key}.png")
        )
        paths += [path] if path else []
    return paths


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config_spec = config_flags.get_config_filename(flags.FLAGS["config"])
    path, sep, arg = config_spec.partition(":")
    config_file = os.path.abspath(path) + sep + arg
    fixed = config_flags.get_override_values(flags.FLAGS["config"])
    try:
        grid = resolve_grid(config_spec, _CONFIG.value, _SWEEP.value, fixed)
        metric, mode = ranking(_CONFIG.value, _METRIC.value, _MODE.value)
        slots = make_slots(_PARALLEL.value, _DEVICES_PER_RUN.value, _PLATFORM.value,
                           _DEVICES.value, _PIN_CPUS.value)  # fmt: skip
    except (SweepError, ValueError) as error:
        raise SystemExit(f"error: {first_message(error)}") from None
    fixed_flags = [f"--config.{key}={format_value(value)}" for key, value in fixed.items()]
    workdir = os.path.abspath(_WORKDIR.value)
    runs = [
        Run(run_name(overrides), os.path.join(workdir, run_name(overrides)),
            fixed_flags + override_flags(overrides))
        for overrides in grid
    ]  # fmt: skip
    for run, overrides in zip(runs, grid):  # a run dir from other settings is not reused
        try:
            run_config.check_rerun(
                run.directory, apply_overrides(_CONFIG.value, overrides), what="this sweep"
            )
        except ValueError as error:
            raise SystemExit(f"error: {first_message(error)}") from None
    logging.info(
        "sweep of %d runs (%d finished before), %d at a time on %s; ranked by %s (%s)",
        len(runs), sum(run.finished for run in runs), len(slots),
        ", ".join(sorted({slot.label for slot in slots})), metric, mode,
    )  # fmt: skip
    if _DRY_RUN.value:
        for run in runs:
            print(run.name, " ".join(run.flags))
        return
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "sweep.json"), "w") as file:
        json.dump({"config": config_file, "fixed": fixed_flags, "grid": grid,
                   "metric": metric, "mode": mode}, file, indent=2, default=str)  # fmt: skip
    run_all(config_file, runs, slots)
    paths = summarize(runs, grid, metric, mode, workdir)
    failed = [run for run in runs if run.status != "done"]
    logging.info("wrote %s", ", ".join(os.path.relpath(p, workdir) for p in paths))
    if failed:
        raise SystemExit(f"error: {len(failed)} of {len(runs)} runs failed: "
                         + ", ".join(f"{run.name} ({run.status})" for run in failed))  # fmt: skip


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
