"""The interface between the one generic trainer and an experiment.

A task supplies what differs between experiments; the trainer owns everything else (the
optimiser, jit, checkpoints, resume, logging, the non-finite guard, results.json and the
learning curve). Adding an experiment = a model file + a ``Task`` subclass registered in
``experiments/tasks/__init__.py`` + a config whose ``task`` field names it.

Call order in the trainer::

    task = TaskClass(config)
    data = task.load_data()                       # host arrays, once
    model = task.build_model(rngs)                # nnx.Module, once
    # jitted train step, every step (model in train mode, dropout stream reseeded per step):
    loss, metrics = task.loss(model, batch, progress)
    # jitted eval step, every test batch (model in eval mode; padded rows are dropped after):
    outputs = task.eval_outputs(model, batch)
    metrics = task.summarize(outputs)             # host, once per evaluation
    task.plots(model, data, outputs, plot_dir)    # host, after the final evaluation

Batches are dicts of arrays sharing the leading batch axis. Eval batches come from
``gru_jax.data.eval_batches`` and carry ``mask: bool[batch]`` (False on padding rows); the
trainer removes those rows from ``eval_outputs`` before ``summarize`` sees them, so tasks
never handle padding themselves.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

Array = jax.Array
Batch = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class TaskData:
    """What a task's ``load_data`` returns.

    Attributes:
      train: example arrays for training, ``{key: np.ndarray[num_train, ...]}``.
      test: example arrays for evaluation, ``{key: np.ndarray[num_test, ...]}`` (no 'mask').
      info: anything the task wants to keep (class count, shapes, names).
    """

    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


class Task(abc.ABC):
    """One experiment: data, model, loss, eval metrics and plots.

    ``loss`` and ``eval_outputs`` run inside ``jax.jit`` and must be pure functions of the
    model and the batch (randomness comes from the model's ``dropout`` RNG stream, which
    the trainer reseeds every step from ``fold_in(key, step)``). The other methods run on
    the host.
    """

    #: The key of ``summarize``'s result written as the headline metric in logs.
    main_metric: str = "loss"
    #: 'max' or 'min': which way ``main_metric`` improves (ranks sweeps). None: guessed
    #: from its name ('min' for loss, error, mse, cer, ...; else 'max').
    main_metric_mode: str | None = None

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    @abc.abstractmethod
    def load_data(self) -> TaskData:
        """Loads (or generates) the train and test arrays on the host."""

    @abc.abstractmethod
    def build_model(self, data: TaskData, rngs: nnx.Rngs) -> nnx.Module:
        """Builds the model; ``rngs`` has ``params`` and ``dropout`` streams."""

    @abc.abstractmethod
    def loss(
        self, model: nnx.Module, batch: Batch, progress: Array | None = None
    ) -> tuple[Array, dict[str, Array]]:
        """Training objective on one batch: ``(scalar loss, {name: scalar metric})``.
        The metrics are averaged between log points and written to TensorBoard as
        ``train/<name>``. ``progress``: the fraction of the run's steps done before this
        one (an f32 scalar in [0, 1), traced; None outside the trainer), for terms whose
        weight follows the run."""

    @abc.abstractmethod
    def eval_outputs(self, model: nnx.Module, batch: Batch) -> dict[str, Array]:
        """Per-example evaluation outputs, each ``[batch, ...]`` (e.g. loss, prediction)."""

    def summarize(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        """Test-set metrics from the concatenated per-example outputs (padding removed).
        Default: the mean of every per-example scalar output."""
        return {key: float(np.mean(value)) for key, value in outputs.items() if value.ndim == 1}

    def plots(
        self, model: nnx.Module, data: TaskData, outputs: dict[str, np.ndarray], plot_dir: str
    ) -> list[str]:
        """Writes task-specific figures (PNG/GIF) under ``plot_dir``; returns their paths.
        The trainer draws the learning curve itself."""
        del model, data, outputs, plot_dir
        return []
