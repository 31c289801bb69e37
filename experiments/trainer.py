"""The one training loop every experiment runs: ``train_and_evaluate(config, workdir)``.

What it does, in order: save the resolved config; load the task's data; build the model
and the optimiser; resume from the newest checkpoint in ``<workdir>/checkpoints`` if there
is one; run jitted train steps with periodic logging, evaluation and checkpoints; evaluate
on the whole test set; write ``results.json`` and the plots.

Determinism: the batch of step k is a pure function of (seed, k) (`gru_data.train_batches`)
and dropout at step k uses ``fold_in(key, k)``, so a run killed and resumed from a
checkpoint ends with the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from experiments import plots, steps
from experiments.checkpoints import Checkpointer
from experiments.optim import make_optimizer
from experiments.reporting import Reporter
from experiments.tasks import Task, TaskData, get_task
from gru_jax import data as gru_data
from gru_jax.models import count_parameters

TIMING_STEPS = 10  # steady-state steps timed after the first (compiling) call


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradients became NaN/inf; the run stopped before saving."""


def place_batch(batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Moves a host batch to the device(s). The one place that decides batch placement: data
    parallelism over a ``jax.sharding.Mesh`` would put the batch here with a
    ``NamedSharding(mesh, PartitionSpec('data'))`` on the leading axis."""
    return jax.device_put(batch)


def total_train_steps(config: ml_collections.ConfigDict, num_train: int) -> tuple[int, int]:
    """``(total_steps, steps_per_epoch)``: ``train.num_steps`` if positive, else
    ``train.num_epochs`` epochs of full batches (derived here, not in the config file)."""
    per_epoch = gru_data.steps_per_epoch(num_train, config.train.batch_size)
    if per_epoch == 0:
        raise ValueError(
            f"train.batch_size={config.train.batch_size} exceeds the {num_train} training examples"
        )
    if config.train.num_steps > 0:
        return config.train.num_steps, per_epoch
    return max(1, int(round(config.train.num_epochs * per_epoch))), per_epoch


def evaluate(task: Task, eval_step, state: steps.TrainState, test: dict, batch_size: int):
    """``(metrics, outputs)`` over the whole test set; padding rows are dropped here."""
    collected: dict[str, list[np.ndarray]] = {}
    for batch in gru_data.eval_batches(test, batch_size):
        mask = batch.pop("mask")
        outputs = jax.device_get(
            eval_step(state["params"], state["model_state"], place_batch(batch))
        )
        for key, value in outputs.items():
            collected.setdefault(key, []).append(np.asarray(value)[mask])
    outputs = {key: np.concatenate(parts) for key, parts in collected.items()}
    return task.summarize(outputs), outputs


def _mean_metrics(pending: list[dict[str, jax.Array]]) -> dict[str, float]:
    host = jax.device_get(pending)
    return {key: float(np.mean([entry[key] for entry in host])) for key in host[0]}


def _write_json(path: str, payload: Any) -> None:
    with open(path + ".tmp", "w") as file:
        json.dump(payload, file, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def _check_finite(state: steps.TrainState, checkpointer: Checkpointer) -> None:
    bad_step = int(state["nonfinite_step"])
    if bad_step >= 0:
        checkpointer.wait()
        last = checkpointer.latest_step()
        where = f"step {last} in {checkpointer.directory}" if last is not None else "none saved"
        raise NonFiniteLossError(
            f"non-finite loss or gradients at training step {bad_step}; stopped without "
            f"saving past it (last good checkpoint: {where})"
        )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains and evaluates ``config.task`` in ``workdir``; returns the results dict that
    is also written to ``<workdir>/results.json``."""
    wall_start = time.perf_counter()
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as file:
        file.write(config.to_json_best_effort(indent=2, sort_keys=True))
    task = get_task(config)
    data: TaskData = task.load_data()
    num_train = len(next(iter(data.train.values())))
    total_steps, per_epoch = total_train_steps(config, num_train)

    root = jax.random.key(config.seed)
    model = task.build_model(
        data, nnx.Rngs(params=jax.random.fold_in(root, 0), dropout=jax.random.fold_in(root, 1))
    )
    num_params = count_parameters(model)
    logging.info(
        "model: %s with %d parameters; %d steps (%d per epoch)",
        type(model).__name__,
        num_params,
        total_steps,
        per_epoch,
    )
    model.eval()
    eval_graphdef, *_ = steps.split_model(model)
    model.train()
    graphdef, params, rng_state, model_state = steps.split_model(model)
    tx, schedule = make_optimizer(config.optimizer, total_steps)
    state = steps.init_train_state(params, model_state, tx)

    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), config.train.keep_checkpoints)
    latest = checkpointer.latest_step()
    if latest is not None:
        state = checkpointer.restore(latest, state)
        logging.info("resumed from the checkpoint at step %d in %s", latest, checkpointer.directory)
    start_step = int(state["step"])

    train_step = steps.make_train_step(
        task,
        graphdef,
        rng_state,
        tx,
        schedule,
        jax.random.fold_in(root, 2),
        config.train.debug_nan_step,
    )
    eval_step = steps.make_eval_step(task, eval_graphdef, rng_state)
    reporter = Reporter(workdir, total_steps, start_step)
    stream: Iterator[dict] = gru_data.train_batches(
        data.train, config.train.batch_size, config.seed, start_step
    )
    cfg = config.train
    timing: dict[str, float] = {}
    pending: list[dict] = []
    train_start = time.perf_counter()
    try:
        # Compile time = first call - a steady step, timed over the next few steps.
        timed_until = min(start_step + TIMING_STEPS, total_steps - 1)
        for step in range(start_step, total_steps):
            if step == start_step + 1:
                timing["steady_start"] = time.perf_counter()
            state, metrics = train_step(state, place_batch(next(stream)))
            pending.append(metrics)
            done = step + 1
            if step == start_step:
                jax.block_until_ready(state)
                timing["first_call_s"] = time.perf_counter() - train_start
            elif step == timed_until:
                jax.block_until_ready(state)
                elapsed = time.perf_counter() - timing["steady_start"]
                timing["steady_step_s"] = elapsed / (timed_until - start_step)
            if done % cfg.log_every_steps == 0 or done == total_steps:
                _check_finite(state, checkpointer)
                reporter.log_train(done, _mean_metrics(pending))
                pending = []
            if cfg.eval_every_steps > 0 and done % cfg.eval_every_steps == 0 and done < total_steps:
                reporter.log_eval(
                    done, evaluate(task, eval_step, state, data.test, cfg.eval_batch_size)[0]
                )
            if done % cfg.checkpoint_every_steps == 0 or done == total_steps:
                _check_finite(state, checkpointer)
                checkpointer.save(state)
                reporter.save_history()
        jax.block_until_ready(state)
        train_time = time.perf_counter() - train_start
        test_metrics, outputs = evaluate(task, eval_step, state, data.test, cfg.eval_batch_size)
        reporter.log_eval(total_steps, test_metrics)
        reporter.save_history()
    finally:
        checkpointer.wait()
        checkpointer.close()
        reporter.close()

    plot_dir = os.path.join(workdir, "plots")
    model = nnx.merge(eval_graphdef, state["params"], rng_state, state["model_state"])
    plot_paths = [
        plots.learning_curve(reporter.history, os.path.join(plot_dir, "learning_curve.png"))
    ]
    plot_paths += task.plots(model, data, outputs, plot_dir)
    compile_time = None
    if "steady_step_s" in timing:
        compile_time = max(0.0, timing["first_call_s"] - timing["steady_step_s"])
    results = {
        "test": test_metrics,
        "train_steps": total_steps,
        "steps_per_epoch": per_epoch,
        "resumed_from_step": start_step or None,
        "num_params": num_params,
        "wall_time_s": time.perf_counter() - wall_start,
        "train_time_s": train_time,
        "compile_time_s": compile_time,
        "steady_step_time_s": timing.get("steady_step_s"),
        "plots": [os.path.relpath(path, workdir) for path in plot_paths],
    }
    _write_json(os.path.join(workdir, "results.json"), results)
    logging.info("test %s: %s", task.main_metric, test_metrics.get(task.main_metric))
    return results
