"""Task registry: ``config.task`` names the `Task` subclass that the trainer runs.

Register a new experiment by adding ``'<name>': '<module>:<class>'`` here; modules are
imported only when their task is used.
"""

from __future__ import annotations

import importlib

import ml_collections

from experiments.tasks.base import Task, TaskData

TASKS: dict[str, str] = {
    "sequence_classification": (
        "experiments.tasks.sequence_classification:SequenceClassificationTask"
    ),
    "video_prediction": "experiments.tasks.video_prediction:VideoPredictionTask",
    "video_classification": "experiments.tasks.video_classification:VideoClassificationTask",
    "digit_strings": "experiments.tasks.digit_strings:DigitStringsTask",
}


def get_task(config: ml_collections.ConfigDict) -> Task:
    """Instantiates the task named by ``config.task``."""
    if config.task not in TASKS:
        raise ValueError(
            f"unknown task {config.task!r}: expected one of {', '.join(sorted(TASKS))}"
        )
    module_name, class_name = TASKS[config.task].split(":")
    task_class = getattr(importlib.import_module(module_name), class_name)
    return task_class(config)


__all__ = ["TASKS", "Task", "TaskData", "get_task"]
