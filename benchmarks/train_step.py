"""Steady-state time of the trainer's jitted train step, batch placement included.

    python -m benchmarks.train_step [--config configs/seq_digits.py] [--windows 7]

Builds the run exactly as `experiments.trainer` does (mesh over every local device,
sharded step, `place_batch`), warms up, then times windows of 100 steps and prints the
median and the fastest window per step. Alongside, in the same process and alternating
window by window (so machine load hits both alike), it times the plain single-device step
without sharding annotations (``jax.jit`` + ``jax.device_put``, the trainer's step before
data parallelism). Run it with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` to
time the data-parallel step on N CPU devices.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import statistics
import time

import jax

from experiments import steps
from experiments.setup import build_run
from experiments.sharding import DataParallel, local_train_batches, params_rule
from experiments.trainer import place_batch

STEPS_PER_WINDOW = 100
WARMUP_STEPS = 30


def _load_config(config_path: str):
    spec = importlib.util.spec_from_file_location("bench_config", config_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def time_train_step(
    config_path: str, windows: int, steps_per_window: int = STEPS_PER_WINDOW
) -> dict[str, float]:
    """Per-step times in ms of the trainer's step (``sharded_*``) and of the unannotated
    single-device step (``plain_*``), medians and minima over alternating windows."""
    config = _load_config(config_path)
    run = build_run(config)
    parallel = DataParallel.create(rule=params_rule(config))
    batch_size = config.train.batch_size
    parallel.check_batch_size(batch_size)
    state_shardings = parallel.state_shardings(run.state)
    shardings = steps.StepShardings(state_shardings, parallel.batch, parallel.replicated)
    make = functools.partial(
        steps.make_train_step, run.task, run.graphdef, run.rng_state, run.tx, run.schedule,
        jax.random.fold_in(run.root_key, 2), -1,
    )  # fmt: skip
    rows = parallel.local_rows(batch_size)
    variants = {
        "sharded": (make(shardings), lambda batch: place_batch(batch, parallel, batch_size)),
        "plain": (make(None), place_batch),
    }
    states = {
        "sharded": parallel.put(run.state, state_shardings),
        "plain": jax.device_put(jax.tree.map(lambda x: x.copy(), run.state)),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for window in range(windows + 1):  # window 0: warm-up and compilation
        for name, (train_step, place) in variants.items():
            if parallel.size > 1 and name == "plain":
                continue
            stream = local_train_batches(run.data.train, batch_size, config.seed, 0, rows)
            count = WARMUP_STEPS if window == 0 else steps_per_window
            started = time.perf_counter()
            for _ in range(count):
                states[name], _ = train_step(states[name], place(next(stream)))
            jax.block_until_ready(states[name])
            if window:
                times[name].append((time.perf_counter() - started) / count)
    result: dict[str, float] = {"devices": parallel.size}
    for name, values in times.items():
        if values:
            result[f"{name}_median_ms"] = 1e3 * statistics.median(values)
            result[f"{name}_min_ms"] = 1e3 * min(values)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/seq_digits.py")
    parser.add_argument("--windows", type=int, default=15)
    parser.add_argument("--steps_per_window", type=int, default=STEPS_PER_WINDOW)
    args = parser.parse_args()
    print(json.dumps(time_train_step(args.config, args.windows, args.steps_per_window)))


if __name__ == "__main__":
    main()
