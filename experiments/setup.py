"""Everything a run needs before its first step, built from the config alone: the task, its
data, the model, the optimiser and the initial train state. Shared by the trainer and by
`restore_model` (for analysis of a finished or interrupted run)."""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import optax
from flax import nnx

from experiments import steps
from experiments.checkpoints import Checkpointer
from experiments.optim import make_optimizer
from experiments.tasks import Task, TaskData, get_task
from gru_jax import data as gru_data
from gru_jax.models import count_parameters


@dataclasses.dataclass
class RunSetup:
    """A run's pieces. ``graphdef``/``eval_graphdef``: the model's structure in train/eval
    mode (dropout on/off); ``state``: the train state at step 0 (see `experiments.steps`)."""

    task: Task
    data: TaskData
    model: nnx.Module
    num_params: int
    total_steps: int
    steps_per_epoch: int
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    graphdef: nnx.GraphDef
    eval_graphdef: nnx.GraphDef
    rng_state: nnx.State
    state: steps.TrainState
    root_key: jax.Array


def total_train_steps(config: ml_collections.ConfigDict, num_train: int) -> tuple[int, int]:
    """``(total_steps, steps_per_epoch)``: ``train.num_steps`` if positive, else
    ``train.num_epochs`` epochs of full batches (derived here, not in the config file)."""
    for field in ("batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps"):
        if config.train[field] < 1:
            raise ValueError(f"train.{field} must be >= 1; got {config.train[field]}")
    per_epoch = gru_data.steps_per_epoch(num_train, config.train.batch_size)
    if per_epoch == 0:
        raise ValueError(
            f"train.batch_size={config.train.batch_size} exceeds the {num_train} training examples"
        )
    if config.train.num_steps > 0:
        return config.train.num_steps, per_epoch
    if not config.train.num_epochs > 0:
        raise ValueError(
            f"train.num_epochs must be > 0 when train.num_steps <= 0; got {config.train.num_epochs}"
        )
    return max(1, int(round(config.train.num_epochs * per_epoch))), per_epoch


def build_run(config: ml_collections.ConfigDict) -> RunSetup:
    """Loads the data and builds the model, optimiser and step-0 train state.

    Keys: ``root = key(config.seed)``; parameters from ``fold_in(root, 0)``, the dropout
    stream from ``fold_in(root, 1)`` (reseeded per step from ``fold_in(root, 2)``).
    """
    task = get_task(config)
    data = task.load_data()
    num_train = len(next(iter(data.train.values())))
    total_steps, per_epoch = total_train_steps(config, num_train)
    root = jax.random.key(config.seed)
    rngs = nnx.Rngs(params=jax.random.fold_in(root, 0), dropout=jax.random.fold_in(root, 1))
    model = task.build_model(data, rngs)
    model.eval()
    eval_graphdef, *_ = steps.split_model(model)
    model.train()
    graphdef, params, rng_state, model_state = steps.split_model(model)
    tx, schedule = make_optimizer(config.optimizer, total_steps)
    return RunSetup(
        task=task,
        data=data,
        model=model,
        num_params=count_parameters(model),
        total_steps=total_steps,
        steps_per_epoch=per_epoch,
        tx=tx,
        schedule=schedule,
        graphdef=graphdef,
        eval_graphdef=eval_graphdef,
        rng_state=rng_state,
        state=steps.init_train_state(params, model_state, tx),
        root_key=root,
    )


def restore_model(
    config: ml_collections.ConfigDict, workdir: str, step: int | None = None
) -> tuple[nnx.Module, RunSetup]:
    """The model of checkpoint ``step`` (None: the newest) in ``workdir``, in eval mode.

    Example::

        import json, ml_collections
        with open("workdirs/seq_digits/config.json") as file:  # the run's resolved config
            config = ml_collections.ConfigDict(json.load(file))
        model, run = restore_model(config, "workdirs/seq_digits")
        logits = model(run.data.test["inputs"][:8])
    """
    run = build_run(config)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), config.train.keep_checkpoints)
    try:
        step = checkpointer.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"no checkpoint in {checkpointer.directory}")
        state = checkpointer.restore(step, run.state)
    finally:
        checkpointer.close()
    model = nnx.merge(run.eval_graphdef, state["params"], run.rng_state, state["model_state"])
    return model, run
