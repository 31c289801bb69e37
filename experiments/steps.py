"""The jitted train and eval steps: pure functions of (train state, batch).

The model crosses the jit boundary as ``nnx.split`` pieces: a static graph definition
(closed over) and array states (arguments), merged back inside the traced function. Only
arrays enter the jitted call, so a step costs one dispatch and no Python graph walking.

Train state (a dict pytree; the first four entries are what checkpoints hold)::

    step            i32[]   updates applied so far (also the index of the next batch)
    params          nnx.State of nnx.Param
    opt_state       optax state
    model_state     nnx.State of everything that is neither a Param nor an RNG (e.g. batch
                    statistics; empty for most models)
    nonfinite_step  i32[]   -1, or the step whose loss/gradients were non-finite

Non-finite guard: a step whose loss or gradient norm is not finite leaves the state
untouched and records its index in ``nonfinite_step``; every later step is skipped too, so
the state stays the last good one until the host notices (at log points and before every
checkpoint) and stops the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from experiments.tasks.base import Task

TrainState = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class StepShardings:
    """Shardings of the jitted steps' inputs and outputs.

    Attributes:
      state: a pytree of shardings matching the train state.
      batch: the sharding of every batch array (leading axis split over devices).
      replicated: the sharding of the metrics and eval outputs.
    """

    state: Any
    batch: Any
    replicated: Any


CHECKPOINTED = ("step", "params", "opt_state", "model_state")
# Everything but parameters and RNG streams; RNG streams are reseeded every step instead.
MODEL_STATE = nnx.Not(nnx.Any(nnx.Param, nnx.RngState))


def split_model(model: nnx.Module):
    """``(graphdef, params, rng_state, model_state)`` of ``model`` in its current mode."""
    return nnx.split(model, nnx.Param, nnx.RngState, ...)


def init_train_state(
    params: nnx.State, model_state: nnx.State, tx: optax.GradientTransformation
) -> TrainState:
    """The train state at step 0."""
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": tx.init(params),
        "model_state": model_state,
        "nonfinite_step": jnp.full((), -1, jnp.int32),
    }


def make_train_step(
    task: Task,
    graphdef: nnx.GraphDef,
    rng_state: nnx.State,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    dropout_key: jax.Array,
    debug_nan_step: int = -1,
    shardings: StepShardings | None = None,
    total_steps: int | None = None,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """A jitted ``train_step(state, batch) -> (state, metrics)`` that donates ``state``.

    ``graphdef`` must come from the model in train mode. The dropout stream is reseeded
    with ``fold_in(dropout_key, step)``, so a resumed run draws the same masks.
    ``debug_nan_step >= 0`` multiplies that step's loss by NaN (tests the guard).
    ``shardings``: where the state and batch live (data parallelism); the state keeps its
    layout, the metrics come back replicated. None: no sharding annotations.
    ``total_steps``: the run's length; the task's loss gets ``progress = step /
    total_steps`` (None: progress 0).
    """

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        step = state["step"]

        def loss_fn(params):
            model = nnx.merge(graphdef, params, rng_state, state["model_state"], copy=True)
            nnx.reseed(model, dropout=jax.random.fold_in(dropout_key, step))
            progress = (step / total_steps if total_steps else jnp.zeros(())).astype(jnp.float32)
            loss, metrics = task.loss(model, batch, progress)
            if debug_nan_step >= 0:
                loss = loss * jnp.where(step == debug_nan_step, jnp.nan, 1.0)
            return loss, (metrics, nnx.state(model, MODEL_STATE))

        (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"]
        )
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        grad_norm = optax.global_norm(grads)
        params = optax.apply_updates(state["params"], updates)
        updated = {
            "step": step + 1,
            "params": params,
            "opt_state": opt_state,
            "model_state": model_state,
        }
        already_bad = state["nonfinite_step"] >= 0
        # Finite gradients can still overflow the parameters (a huge learning rate).
        finite_params = jax.tree.reduce(
            jnp.logical_and, jax.tree.map(lambda p: jnp.isfinite(p).all(), params), True
        )
        good = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & finite_params & ~already_bad
        new_state = {
            key: jax.tree.map(lambda new, old: jnp.where(good, new, old), updated[key], state[key])
            for key in CHECKPOINTED
        }
        new_state["nonfinite_step"] = jnp.where(
            already_bad | good, state["nonfinite_step"], step
        ).astype(jnp.int32)
        metrics = {
            **metrics,
            "loss": loss,
            "grad_norm": grad_norm,
            "learning_rate": jnp.asarray(schedule(step), jnp.float32),
        }
        return new_state, metrics

    if shardings is None:
        return jax.jit(train_step, donate_argnums=0)
    return jax.jit(
        train_step,
        donate_argnums=0,
        in_shardings=(shardings.state, shardings.batch),
        out_shardings=(shardings.state, shardings.replicated),
    )


def make_eval_step(
    task: Task,
    graphdef: nnx.GraphDef,
    rng_state: nnx.State,
    shardings: StepShardings | None = None,
) -> Callable[[nnx.State, nnx.State, dict], dict]:
    """A jitted ``eval_step(params, model_state, batch) -> per-example outputs``.
    ``graphdef`` must come from the model in eval mode. With ``shardings`` the outputs
    come back replicated (every process can read all of them)."""

    def eval_step(params: nnx.State, model_state: nnx.State, batch: dict) -> dict:
        model = nnx.merge(graphdef, params, rng_state, model_state, copy=True)
        return task.eval_outputs(model, batch)

    if shardings is None:
        return jax.jit(eval_step)
    state = shardings.state
    return jax.jit(
        eval_step,
        in_shardings=(state["params"], state["model_state"], shardings.batch),
        out_shardings=shardings.replicated,
    )
