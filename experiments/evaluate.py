"""Evaluate a run's checkpoint again, with test-time overrides, without touching the run.

    python -m experiments.evaluate --workdir workdirs/digit_strings \
        --outdir workdirs/digit_strings/eval_greedy --config.decode.beam_width=1 [--step N]

The config is the run's own (``<workdir>/config.json``, as training saved it), so every
override the run was trained with still holds; ``--config.<field>=value`` changes what
may change at test time: decoding (``decode.beam_width``), the test set
(``dataset.test_seed``, ``dataset.num_test``, ``dataset.test_set``), evaluation batch
size, plots, or a test-time model option such as ``model.advection_temperature`` or
``model.layer_temperature``. An override that changes the parameters' shapes is a
one-line error (the checkpoint does not fit), as is a field the run's config does not
have.

Writes ``<outdir>/config.json`` (the config evaluated), ``<outdir>/results.json``
(the metrics under ``"test"``, as training's results.json, plus the checkpoint step and
the overrides: ``{field: [trained, evaluated]}``) and the task's plots under
``<outdir>/plots``. The run's workdir is only read: ``--outdir`` may not be the workdir
or its checkpoints, and an ``<outdir>`` that already holds a results.json, a config.json
or checkpoints is refused. ``--defaults=configs/<name>.py`` fills in the fields a run
saved by an older version lacks."""

from __future__ import annotations

import os
import time
from typing import Any

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from experiments import steps
from experiments.checkpoints import Checkpointer, CheckpointMismatchError
from experiments.cli import first_message
from experiments.reporting import quiet_library_logs
from experiments.run_config import config_changes, read_saved
from experiments.setup import build_run
from experiments.sharding import DataParallel, params_rule
from experiments.sweep_grid import load_config_file
from experiments.trainer import evaluate, gather_model, write_json

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The run to evaluate (its config.json and checkpoints)."
)
_OUTDIR = flags.DEFINE_string("outdir", None, "Where results.json, config.json and plots go.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the newest).")
_DEFAULTS = flags.DEFINE_string(
    "defaults",
    None,
    "A config file (configs/<name>.py[:arg]) whose fields fill in those the run's "
    "config.json lacks (a run saved by an older version); the run's own values win.",
)
flags.mark_flags_as_required(["workdir", "outdir"])


def _tuples(tree: Any) -> Any:
    """JSON's lists back to the tuples the configs use (so ``--config.x='(4, 8)'`` parses)."""
    if isinstance(tree, dict):
        return {key: _tuples(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return tuple(_tuples(value) for value in tree)
    return tree


def _fill(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> list[str]:
    """Adds to ``config`` every field of ``defaults`` it lacks; returns their dotted names."""
    added = []
    for key, value in defaults.items():
        if key not in config:
            config[key] = value
            added.append(key)
        elif isinstance(value, ml_collections.ConfigDict) and isinstance(
            config[key], ml_collections.ConfigDict
        ):
            added += [f"{key}.{name}" for name in _fill(config[key], value)]
    return added


def saved_config(
    workdir: str, defaults: ml_collections.ConfigDict | None = None
) -> ml_collections.ConfigDict:
    """The resolved config a training run saved in ``<workdir>/config.json``; with
    ``defaults``, the fields it lacks (a run saved before they existed) are taken from
    there (the run's own values win)."""
    saved = read_saved(workdir)
    if saved is None:
        raise ValueError(f"no config.json in {workdir}: not a training run's workdir")
    config = ml_collections.ConfigDict(_tuples(saved))
    if defaults is not None:
        if defaults.get("task") != config.get("task"):
            raise ValueError(
                f"--defaults is a config of task {defaults.get('task')!r}, the run's is "
                f"{config.get('task')!r}"
            )
        added = _fill(config, defaults)
        if added:
            logging.info("fields the run's config lacks, from --defaults: %s", ", ".join(added))
    return config


def _check_dirs(workdir: str, outdir: str) -> None:
    work, out = os.path.realpath(workdir), os.path.realpath(outdir)
    checkpoints = os.path.join(work, "checkpoints")
    if out == work or out == checkpoints or out.startswith(checkpoints + os.sep):
        raise ValueError(
            f"--outdir {outdir} would write into the run's workdir or its checkpoints; "
            "give a directory of its own (e.g. <workdir>/eval_<name>)"
        )
    for name in ("results.json", "config.json", "checkpoints"):  # an evaluation's or a run's
        if os.path.exists(os.path.join(outdir, name)):
            raise ValueError(f"{outdir} already holds a {name}; choose another --outdir")
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise ValueError(f"no checkpoints directory in {workdir}")


def evaluate_checkpoint(
    config: ml_collections.ConfigDict,
    workdir: str,
    outdir: str,
    step: int | None = None,
    trained_config: ml_collections.ConfigDict | None = None,
) -> dict[str, Any]:
    """Evaluates checkpoint ``step`` (None: the newest) of the run in ``workdir`` with
    ``config`` (the run's config, possibly with test-time overrides) on the whole test
    set; writes config.json, results.json and the plots to ``outdir`` and returns the
    results. ``trained_config`` (default: the saved one) is what the overrides are
    reported against.

    Raises:
      ValueError: no such run or checkpoint, a checkpoint that does not fit the model
        built from ``config``, an ``outdir`` that would overwrite anything, or a bad
        config value (one-line messages).
    """
    start = time.perf_counter()
    _check_dirs(workdir, outdir)
    trained = saved_config(workdir) if trained_config is None else trained_config
    parallel = DataParallel.create(rule=params_rule(config))
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), config.train.keep_checkpoints)
    try:
        available = checkpointer.all_steps()
        if not available:
            raise ValueError(f"no checkpoint in {checkpointer.directory}")
        step = available[-1] if step is None else step
        if step not in available:
            listed = ", ".join(map(str, available))
            raise ValueError(f"no checkpoint at step {step} in {workdir} (there are: {listed})")
        run = build_run(config)
        state_shardings = parallel.state_shardings(run.state)
        shardings = steps.StepShardings(state_shardings, parallel.batch, parallel.replicated)
        try:
            state = checkpointer.restore(step, run.state, state_shardings)
        except CheckpointMismatchError as error:
            raise ValueError(
                f"checkpoint {step} of {workdir} does not fit the model built from this config "
                f"(an override that changes a shape?): {error.first()}"
            ) from None
    finally:
        checkpointer.close()
    eval_step = steps.make_eval_step(run.task, run.eval_graphdef, run.rng_state, shardings)
    batch_size = parallel.round_up(config.train.eval_batch_size)
    metrics, outputs = evaluate(run.task, eval_step, state, run.data.test, batch_size, parallel)
    os.makedirs(outdir, exist_ok=True)
    model = gather_model(run, parallel, state)
    plot_paths = run.task.plots(model, run.data, outputs, os.path.join(outdir, "plots"))
    results = {
        "test": metrics,
        "checkpoint_step": step,
        "workdir": os.path.abspath(workdir),
        "overrides": config_changes(trained, config),
        "num_test": len(next(iter(run.data.test.values()))),
        "wall_time_s": time.perf_counter() - start,
        "plots": [os.path.relpath(path, outdir) for path in plot_paths],
    }
    with open(os.path.join(outdir, "config.json"), "w") as file:
        file.write(config.to_json_best_effort(indent=2, sort_keys=True))
    write_json(os.path.join(outdir, "results.json"), results)
    logging.info(
        "checkpoint %d of %s, overrides %s: test %s = %s",
        step, workdir, results["overrides"] or "none", run.task.main_metric,
        metrics.get(run.task.main_metric),
    )  # fmt: skip
    return results


def _parse(argv: list[str]) -> list[str]:
    """Parses the flags in two passes: first all but ``--config`` (as absl reads them:
    ``-workdir``, ``--flagfile``, the last of repeated flags), then ``--config`` defined
    from the run's saved config, so ``--config.<field>`` overrides are parsed and
    type-checked as in training. Every error is one line."""
    try:
        flags.FLAGS(argv, known_only=True)
        config = saved_config(
            _WORKDIR.value,
            None if _DEFAULTS.value is None else load_config_file(_DEFAULTS.value)[1],
        )
        config_flags.DEFINE_config_dict("config", config, "The run's config.", lock_config=True)
    except (flags.Error, ValueError, OSError) as error:
        raise SystemExit(f"error: {first_message(error)}") from None
    except (AttributeError, KeyError) as error:  # an override of a field the config lacks
        raise SystemExit(_unknown_field(first_message(error))) from None
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:  # a value that does not parse as the field's type
        raise SystemExit(f"error: {first_message(error)}") from None
    except (AttributeError, KeyError) as error:  # raised by the locked config's override
        raise SystemExit(_unknown_field(first_message(error))) from None


def _unknown_field(message: str) -> str:
    hint = ""
    if _DEFAULTS.value is None:
        hint = "; a field newer than the run's config? add --defaults=configs/<name>.py"
    return f"error: unknown config field: {message}{hint}"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    quiet_library_logs()
    try:
        evaluate_checkpoint(flags.FLAGS.config, _WORKDIR.value, _OUTDIR.value, _STEP.value)
    except ValueError as error:  # user errors: one line, no traceback
        logging.debug("traceback of the error below", exc_info=True)
        raise SystemExit(f"error: {first_message(error)}") from None


if __name__ == "__main__":
    app.run(main, flags_parser=_parse)
