"""The moving-digits training step, per model form, and the block matching inside it.

    python -m benchmarks.video_step [--windows 5] [--steps_per_window 20]

Builds each variant's run as ``experiments.train`` does (``configs/moving_digits.py``, the
layered default, or ``configs/moving_digits_cells.py`` for the ``cells`` variants, with the
variant's overrides; fewer training videos, which does not change a step) and times
its plain jitted train step (``jax.jit``, one device) in windows, alternating variant by
variant within each round so machine load hits all alike; prints the median ms per step
and the ratio to the default, and writes JSON to
``benchmarks/results/video_step_<device>.json``. Also, in the same process, the encoder's
block matching (``gru_jax.models.video_ops.matching_costs`` on one batch of context
frames) against :func:`matching_costs_unrolled`, the same costs written as the 81
unrolled offset slices it replaced (kept here as the reference it is timed against; the
values are checked equal before timing).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.run import cpu_info, device_name
from configs import moving_digits, moving_digits_cells
from experiments import steps
from experiments.setup import build_run
from experiments.trainer import place_batch
from gru_jax.models.video_ops import matching_costs

VARIANTS = {  # name: model (or "train.") overrides; "cells" variants start from the cells config
    "default": {},  # 8 rigid layers, squared + ramped absolute error (round 18)
    "default-bf16": {"dtype": "bfloat16"},  # convolution operands in bfloat16
    "layers-4": {"advection_motions": 4},
    "layers-8-fade": {"layer_fade": True},
    "cells": {},  # per-cell kernels, cross-entropy + ramped absolute error (rounds 15-17)
    "cells-mse": {"loss": "mse", "train.absolute_loss_weight": 0.0},
    "cells-no-absolute": {"train.absolute_loss_weight": 0.0},  # before round 17
}  # fmt: skip


def variant_config(name: str, num_videos: int = 400):
    """Variant ``name``'s config (its base config with :data:`VARIANTS`' overrides) with
    ``num_videos`` training videos (the step does not depend on how many exist)."""
    overrides = VARIANTS[name]
    base = moving_digits_cells if name.startswith("cells") else moving_digits
    config = base.get_config()
    config.dataset.num_train = num_videos
    config.dataset.num_test = num_videos // 4
    for key, value in overrides.items():
        if key == "loss":
            config.train.loss = value
        elif key.startswith("train."):
            config.train[key.removeprefix("train.")] = value
        else:
            config.model[key] = value
    return config


def make_step(config):
    run = build_run(config)
    step = steps.make_train_step(
        run.task, run.graphdef, run.rng_state, run.tx, run.schedule,
        jax.random.fold_in(run.root_key, 2), -1, None,
    )  # fmt: skip
    frames = run.data.train["frames"]
    batch_size = config.train.batch_size
    batches = [{"frames": frames[i : i + batch_size]} for i in range(0, 4 * batch_size, batch_size)]
    return step, jax.device_put(run.state), batches


def time_steps(names: list[str], windows: int, per_window: int) -> tuple[dict, dict]:
    """Seconds per step, one value per window, per variant (window 0: compile, warm-up),
    and the first call's seconds per variant (compilation and one step)."""
    built = {name: make_step(variant_config(name)) for name in names}
    states = {name: state for name, (_, state, _) in built.items()}
    times: dict[str, list[float]] = {name: [] for name in names}
    compile_s: dict[str, float] = {}
    for window in range(windows + 1):
        for name in names:
            step, _, batches = built[name]
            count = 3 if window == 0 else per_window
            started = time.perf_counter()
            for index in range(count):
                states[name], _ = step(states[name], place_batch(batches[index % len(batches)]))
                if window == 0 and index == 0:
                    jax.block_until_ready(states[name])
                    compile_s[name] = time.perf_counter() - started
            jax.block_until_ready(states[name])
            if window:
                times[name].append((time.perf_counter() - started) / count)
    return times, compile_s


def matching_costs_unrolled(frames, patch_size: int, radius: int):
    """:func:`matching_costs` as it was written before: the ``(2r+1)²`` offsets as
    unrolled slices of the padded previous frames (162 small fusions at r = 4)."""
    batch, steps_, height, width, channels = frames.shape
    p, window = patch_size, 2 * radius + 1
    current = jnp.moveaxis(frames, -1, 0)
    previous = jnp.concatenate([current[:, :, :1], current[:, :, :-1]], axis=2)
    padded = jnp.pad(previous, ((0, 0), (0, 0), (0, 0), (radius, radius), (radius, radius)))
    costs = []
    for dy in range(window):
        for dx in range(window):
            squared = (current - padded[..., dy : dy + height, dx : dx + width]) ** 2
            cells = squared.reshape(channels, batch, steps_, height // p, p, width // p, p)
            costs.append(cells.mean(axis=(0, 4, 6)))
    return jnp.stack(costs, axis=-1)


def time_matching(repeats: int = 30) -> dict[str, float]:
    """Median ms of both block-matching forms on 8 videos of 10 64×64 frames (p 8, r 4),
    interleaved call by call; raises if their values differ."""
    frames = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 10, 64, 64, 1)), jnp.float32)
    forms = {
        "scanned": jax.jit(functools.partial(matching_costs, patch_size=8, radius=4)),
        "unrolled": jax.jit(functools.partial(matching_costs_unrolled, patch_size=8, radius=4)),
    }
    values = {name: np.asarray(fn(frames)) for name, fn in forms.items()}
    np.testing.assert_allclose(values["scanned"], values["unrolled"], rtol=1e-6, atol=1e-7)
    times: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(repeats):
        for name, fn in forms.items():
            started = time.perf_counter()
            jax.block_until_ready(fn(frames))
            times[name].append(time.perf_counter() - started)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps_per_window", type=int, default=20)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    parser.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/)")
    args = parser.parse_args()
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: unknown variant {unknown[0]!r}; expected one of {list(VARIANTS)}")
    matching = time_matching()
    times, compile_s = time_steps(names, args.windows, args.steps_per_window)
    medians = {name: 1e3 * statistics.median(values) for name, values in times.items()}
    reference = medians.get("default", next(iter(medians.values())))
    print(f"device {device_name()}; median ms per training step (batch 8, 10 + 10 frames)")
    print("| variant | ms per step | vs default | compile s |\n|---|---|---|---|")
    for name, value in medians.items():
        print(f"| {name} | {value:.0f} | {value / reference:.2f}x | {compile_s[name]:.1f} |")
    print(
        f"block matching, 8 videos x 10 frames: scanned {matching['scanned']:.1f} ms, "
        f"unrolled {matching['unrolled']:.1f} ms "
        f"({matching['unrolled'] / matching['scanned']:.2f}x)"
    )
    result = {
        "device": device_name(),
        "cpu": cpu_info(),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "windows": args.windows,
        "steps_per_window": args.steps_per_window,
        "step_ms": {name: {"median": medians[name], "windows": [1e3 * t for t in times[name]]}
                    for name in names},
        "compile_s": compile_s,
        "matching_ms": matching,
        "variants": {name: VARIANTS[name] for name in names},
    }  # fmt: skip
    path = args.out or os.path.join(
        os.path.dirname(__file__), "results", f"video_step_{device_name()}.json"
    )
    with open(path, "w") as file:
        json.dump(result, file, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
