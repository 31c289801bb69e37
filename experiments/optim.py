"""Optimiser and learning-rate schedule from ``config.optimizer`` (all optax)."""

from __future__ import annotations

import ml_collections
import optax

SCHEDULES = ("cosine", "constant")
OPTIMIZERS = ("adamw", "adam", "sgd")


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup over ``warmup_fraction`` of the run, then cosine decay to
    ``learning_rate * end_learning_rate_factor`` at ``total_steps`` (``cosine``), or a
    flat rate (``constant``, warmup still applies)."""
    if not 0.0 <= config.warmup_fraction <= 1.0:
        raise ValueError(
            f"optimizer.warmup_fraction must lie in [0, 1]; got {config.warmup_fraction}"
        )
    peak = config.learning_rate
    warmup_steps = int(round(config.warmup_fraction * total_steps))
    if config.schedule == "cosine":
        if warmup_steps == 0:
            return optax.cosine_decay_schedule(
                peak, max(total_steps, 1), alpha=config.end_learning_rate_factor
            )
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=peak,
            warmup_steps=warmup_steps,
            decay_steps=max(total_steps, warmup_steps + 1),
            end_value=peak * config.end_learning_rate_factor,
        )
    if config.schedule == "constant":
        if warmup_steps == 0:
            return optax.constant_schedule(peak)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup_steps), optax.constant_schedule(peak)],
            [warmup_steps],
        )
    raise ValueError(
        f"unknown optimizer.schedule {config.schedule!r}: expected one of {', '.join(SCHEDULES)}"
    )


def make_optimizer(
    config: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(optax transformation, schedule)``: global-norm clipping (if
    ``grad_clip_norm > 0``) followed by the chosen optimiser."""
    schedule = learning_rate_schedule(config, total_steps)
    if config.name == "adamw":
        update = optax.adamw(
            schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay
        )
    elif config.name == "adam":
        update = optax.adam(schedule, b1=config.b1, b2=config.b2, eps=config.eps)
    elif config.name == "sgd":
        update = optax.sgd(schedule, momentum=config.b1 or None)
    else:
        raise ValueError(
            f"unknown optimizer.name {config.name!r}: expected one of {', '.join(OPTIMIZERS)}"
        )
    parts = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm > 0 else []
    return optax.chain(*parts, update), schedule
