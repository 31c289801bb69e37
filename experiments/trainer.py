"""The one training loop every experiment runs: ``train_and_evaluate(config, workdir)``.

What it does, in order: save the resolved config; build the run (`experiments.setup`);
resume from the newest checkpoint in ``<workdir>/checkpoints`` if there is one; run jitted
train steps with periodic logging, evaluation and checkpoints; evaluate on the whole test
set; write ``results.json`` and the plots.

Determinism: the batch of step k is a pure function of (seed, k) (`gru_data.train_batches`)
and dropout at step k uses ``fold_in(key, k)``, so a run killed and resumed from a
checkpoint ends with the same parameters as an uninterrupted run.

Devices: the run is data-parallel over every device of every process
(`experiments.sharding`): the batch is split over a ``data`` mesh axis, the state is
replicated (or sharded by ``config.train.param_sharding``), and one jitted step does the rest.
On one device this is the plain single-device program. With several processes
(`experiments.distributed`) each process feeds its own rows of every batch, all of them
save and restore checkpoints together, and only process 0 writes the config, TensorBoard
events, history, plots and ``results.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from experiments import plots, run_config, steps
from experiments.checkpoints import Checkpointer
from experiments.reporting import Reporter
from experiments.setup import RunSetup, build_run
from experiments.sharding import DataParallel, local_eval_batches, local_train_batches, params_rule
from experiments.tasks import Task

TIMING_STEPS = 10  # steady-state steps timed after the first (compiling) call


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradients became NaN/inf; the run stopped before saving."""


def place_batch(
    batch: dict[str, np.ndarray], parallel: DataParallel | None = None, global_size: int = 0
) -> dict[str, jax.Array]:
    """Moves this process's rows of a batch to the device(s): the one place that decides
    batch placement. With ``parallel`` the leading axis is split over the mesh's ``data``
    axis (``global_size`` rows in all, over every process); without it, the default device.
    """
    if parallel is None:
        return jax.device_put(batch)
    return parallel.place(batch, global_size)


def evaluate(
    task: Task,
    eval_step: Callable,
    state: steps.TrainState,
    test: dict,
    batch_size: int,
    parallel: DataParallel | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """``(metrics, per-example outputs)`` over the whole test set, in fixed-shape batches;
    the padding rows of the last batch are dropped here, before ``task.summarize``.
    ``eval_step`` must return replicated outputs when ``parallel`` spans processes."""
    rows = parallel.local_rows(batch_size) if parallel is not None else slice(0, batch_size)
    collected: dict[str, list[np.ndarray]] = {}
    for batch, mask in local_eval_batches(test, batch_size, rows):
        placed = place_batch(batch, parallel, batch_size)
        outputs = eval_step(state["params"], state["model_state"], placed)
        for key, value in jax.device_get(outputs).items():
            collected.setdefault(key, []).append(np.asarray(value)[mask])
    outputs = {key: np.concatenate(parts) for key, parts in collected.items()}
    return task.summarize(outputs), outputs


def _mean_metrics(pending: list[dict[str, jax.Array]]) -> dict[str, float]:
    host = jax.device_get(pending)
    return {key: float(np.mean([entry[key] for entry in host])) for key in host[0]}


def _check_finite(state: steps.TrainState, checkpointer: Checkpointer) -> None:
    bad_step = int(state["nonfinite_step"])
    if bad_step >= 0:
        checkpointer.wait()
        last = checkpointer.latest_step()
        where = f"step {last} in {checkpointer.directory}" if last is not None else "none saved"
        raise NonFiniteLossError(
            f"non-finite loss, gradients or parameters at training step {bad_step}; stopped "
            f"without saving past it (last good checkpoint: {where})"
        )


TRAIN_TIME_FILE = "train_time.json"  # the training time of the steps a checkpoint holds


def _earlier_train_time(workdir: str, start_step: int) -> float | None:
    """The training time of the steps before ``start_step`` (0 for a fresh run): what the
    run that saved the checkpoint at ``start_step`` recorded in ``train_time.json``. None
    when no record matches that step (a run saved before the record existed)."""
    if start_step == 0:
        return 0.0
    try:
        with open(os.path.join(workdir, TRAIN_TIME_FILE)) as file:
            record = json.load(file)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("step") != start_step:
        return None
    earlier = record.get("train_time_s")
    return float(earlier) if isinstance(earlier, (int, float)) else None


def _train(config, run: RunSetup, state, parallel, shardings, checkpointer, reporter, timing):
    """Steps from ``state['step']`` to the end; returns ``(final state, eval_step)``.

    With ``timing['earlier_train_s']`` (the earlier segments' training time, known), every
    checkpoint also records the training time of the steps it holds in
    ``<workdir>/train_time.json``, so a resumed run can report its total."""
    cfg = config.train
    start_step, total_steps = int(state["step"]), run.total_steps
    eval_batch_size = parallel.round_up(cfg.eval_batch_size)
    train_step = steps.make_train_step(
        run.task, run.graphdef, run.rng_state, run.tx, run.schedule,
        jax.random.fold_in(run.root_key, 2), cfg.debug_nan_step, shardings, total_steps,
    )  # fmt: skip
    eval_step = steps.make_eval_step(run.task, run.eval_graphdef, run.rng_state, shardings)
    stream = local_train_batches(
        run.data.train, cfg.batch_size, config.seed, start_step,
        parallel.local_rows(cfg.batch_size),
    )  # fmt: skip
    pending: list[dict] = []
    # Compile time = first call - a steady step, timed over the next few calls.
    timed_until = min(start_step + TIMING_STEPS, total_steps - 1)
    started = time.perf_counter()
    for step in range(start_step, total_steps):
        if step == start_step + 1:
            steady_start = time.perf_counter()
        state, metrics = train_step(state, place_batch(next(stream), parallel, cfg.batch_size))
        pending.append(metrics)
        done = step + 1
        if step == start_step:
            jax.block_until_ready(state)
            timing["first_call_s"] = time.perf_counter() - started
        elif step == timed_until:
            jax.block_until_ready(state)
            elapsed = time.perf_counter() - steady_start
            timing["steady_step_s"] = elapsed / (timed_until - start_step)
        if done % cfg.log_every_steps == 0 or done == total_steps:
            _check_finite(state, checkpointer)
            reporter.log_train(done, _mean_metrics(pending))
            pending = []
        if cfg.eval_every_steps > 0 and done % cfg.eval_every_steps == 0 and done < total_steps:
            eval_metrics, _ = evaluate(
                run.task, eval_step, state, run.data.test, eval_batch_size, parallel
            )
            reporter.log_eval(done, eval_metrics)
        if done % cfg.checkpoint_every_steps == 0 or done == total_steps:
            _check_finite(state, checkpointer)
            checkpointer.save(state)
            reporter.save_history()
            earlier = timing.get("earlier_train_s")
            if earlier is not None and reporter.enabled:
                elapsed = earlier + time.perf_counter() - started
                record = {"step": done, "train_time_s": elapsed}
                write_json(os.path.join(reporter.workdir, TRAIN_TIME_FILE), record)
    jax.block_until_ready(state)
    timing["train_time_s"] = time.perf_counter() - started
    return state, eval_step


def _prepare(run: RunSetup, parallel: DataParallel, checkpointer: Checkpointer):
    """``(step shardings, train state)``: the state restored from the newest checkpoint
    (onto this mesh, whatever mesh saved it) or placed fresh."""
    state_shardings = parallel.state_shardings(run.state)
    shardings = steps.StepShardings(state_shardings, parallel.batch, parallel.replicated)
    latest = checkpointer.latest_step()
    if latest is None:
        return shardings, parallel.put(run.state, state_shardings)
    if latest > run.total_steps:
        raise ValueError(
            f"the newest checkpoint in {checkpointer.directory} is at step {latest}, past this "
            f"run's {run.total_steps} training steps; use a fresh --workdir"
        )
    state = checkpointer.restore(latest, run.state, state_shardings)
    logging.info("resumed from the checkpoint at step %d in %s", latest, checkpointer.directory)
    return shardings, state


def gather_model(run: RunSetup, parallel: DataParallel, state) -> nnx.Module | None:
    """The model of ``state`` in eval mode, on one local device of process 0 (None on the
    other processes). Every process must call it: the gather spans them (arrays may be
    sharded across processes)."""
    final = parallel.to_host({"params": state["params"], "model_state": state["model_state"]})
    if jax.process_index() != 0:
        return None
    final = jax.device_put(final, jax.local_devices()[0])
    return nnx.merge(run.eval_graphdef, final["params"], run.rng_state, final["model_state"])


def write_json(path: str, content: Any) -> None:
    with open(path + ".tmp", "w") as file:
        json.dump(content, file, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains and evaluates ``config.task`` in ``workdir``; returns the results dict that
    is also written to ``<workdir>/results.json`` (by process 0).

    Raises:
      ValueError: a bad config value or dataset (one-line message).
      NonFiniteLossError: the loss became NaN/inf; checkpoints before that step are kept.
    """
    wall_start = time.perf_counter()
    primary = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    # The mesh spans every device of every process; checked before the data is loaded.
    parallel = DataParallel.create(rule=params_rule(config))
    parallel.check_batch_size(config.train.batch_size)
    run = build_run(config)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), config.train.keep_checkpoints)
    try:
        if checkpointer.latest_step() is not None:  # resuming: it must be the same run
            run_config.check_rerun(workdir, config)
        shardings, state = _prepare(run, parallel, checkpointer)
    except BaseException:
        checkpointer.close()
        raise
    # Written once the state fits: a resume with a config that does not fit the
    # checkpoints (an error above) leaves the run's saved config as it was.
    if primary:
        with open(os.path.join(workdir, run_config.CONFIG_FILE), "w") as file:
            file.write(config.to_json_best_effort(indent=2, sort_keys=True))
    logging.info(
        "model %s: %d parameters; %d steps (%d per epoch); data-parallel over %d device(s) "
        "in %d process(es), state %s",
        type(run.model).__name__, run.num_params, run.total_steps, run.steps_per_epoch,
        parallel.size, jax.process_count(), parallel.rule,
    )  # fmt: skip
    start_step = int(state["step"])
    reporter = Reporter(workdir, run.total_steps, start_step, enabled=primary)
    timing: dict[str, float | None] = {
        "earlier_train_s": _earlier_train_time(workdir, start_step) if primary else None
    }
    stale = os.path.join(workdir, TRAIN_TIME_FILE)
    if primary and timing["earlier_train_s"] is None and os.path.exists(stale):
        os.remove(stale)  # another step's record: the total of this run is unknown
    try:
        state, eval_step = _train(
            config, run, state, parallel, shardings, checkpointer, reporter, timing
        )
        test_metrics, outputs = evaluate(
            run.task, eval_step, state, run.data.test,
            parallel.round_up(config.train.eval_batch_size), parallel,
        )  # fmt: skip
        reporter.log_eval(run.total_steps, test_metrics)
        reporter.save_history()
    finally:
        checkpointer.wait()
        checkpointer.close()
        reporter.close()

    model = gather_model(run, parallel, state)
    plot_paths: list[str] = []
    if primary:
        plot_dir = os.path.join(workdir, "plots")
        plot_paths = [
            plots.learning_curve(reporter.history, os.path.join(plot_dir, "learning_curve.png"))
        ]
        plot_paths += run.task.plots(model, run.data, outputs, plot_dir)
    compile_time = None
    if "steady_step_s" in timing:
        compile_time = max(0.0, timing["first_call_s"] - timing["steady_step_s"])
    results_path = os.path.join(workdir, "results.json")
    before = timing["earlier_train_s"]
    trained = {
        "train_time_s": timing["train_time_s"],
        # all the segments of a resumed run (None: an earlier segment's time is unknown)
        "total_train_time_s": None if before is None else before + timing["train_time_s"],
        "compile_time_s": compile_time,
        "steady_step_time_s": timing.get("steady_step_s"),
    }
    if start_step == run.total_steps and os.path.isfile(results_path):
        # A rerun of a finished run trains nothing: keep the timings of the training.
        with open(results_path) as file:
            earlier = json.load(file)
        trained = {key: earlier.get(key, value) for key, value in trained.items()}
    results = {
        "test": test_metrics,
        "train_steps": run.total_steps,
        "steps_per_epoch": run.steps_per_epoch,
        "resumed_from_step": start_step or None,
        "num_params": run.num_params,
        "num_devices": parallel.size,
        "num_processes": jax.process_count(),
        "wall_time_s": time.perf_counter() - wall_start,
        **trained,
        "plots": [os.path.relpath(path, workdir) for path in plot_paths],
    }
    if primary:
        write_json(results_path, results)
    logging.info("test %s: %s", run.task.main_metric, test_metrics.get(run.task.main_metric))
    return results
