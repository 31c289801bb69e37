"""A run's saved config (``<workdir>/config.json``) and what a rerun in the same workdir
may change.

A rerun resumes from the newest checkpoint, so it must be the same run: a different seed,
data split, learning rate or length would continue the old parameters under new settings
and then overwrite the run's record (``config.json``, ``results.json``) as if it had been
trained that way. Only the fields in ``RESUMABLE_FIELDS`` may differ; they change how a
run is watched, stored or evaluated, not what it trains.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

CONFIG_FILE = "config.json"
# Dotted fields (a trailing '.' means the whole group) a rerun may change: logging,
# evaluation and checkpoint periods, test-time decoding and plots, where TFDS data lives,
# how parameters are laid out on the devices, and the NaN-guard test hook.
RESUMABLE_FIELDS = (
    "train.log_every_steps",
    "train.eval_every_steps",
    "train.checkpoint_every_steps",
    "train.keep_checkpoints",
    "train.eval_batch_size",
    "train.debug_nan_step",
    "train.param_sharding",
    "dataset.data_dir",
    "plots.",
    "decode.",
)


class ConfigChangedError(ValueError):
    """A rerun whose config differs from the run saved in its workdir in a field that
    changes what is trained."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of a nested dict under dotted keys (lists and tuples are leaves)."""
    if isinstance(tree, dict):
        flat = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def as_json(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
    """``config`` as its ``config.json`` holds it (tuples as lists, placeholders as null)."""
    if isinstance(config, ml_collections.ConfigDict):
        return json.loads(config.to_json_best_effort())
    return config


def config_changes(
    trained: ml_collections.ConfigDict | dict, evaluated: ml_collections.ConfigDict | dict
) -> dict[str, list]:
    """``{dotted field: [trained value, evaluated value]}`` for every field that differs
    (a field only ``evaluated`` has appears with ``None`` as its trained value)."""
    before, after = flatten(as_json(trained)), flatten(as_json(evaluated))
    return {
        k: [before.get(k), after.get(k)] for k in sorted(after) if before.get(k) != after.get(k)
    }


def read_saved(workdir: str) -> dict[str, Any] | None:
    """The config a run saved in ``workdir`` (as JSON), or None if there is none."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        return json.load(file)


def rerun_changes(saved: dict[str, Any], config: ml_collections.ConfigDict) -> list[str]:
    """``'field: saved -> new'`` for each field that both configs have, that differs, and
    that a rerun may not change (fields only one side has come from another version of
    the code and are not compared)."""
    saved_fields = flatten(saved)
    return [
        f"{key}: {before!r} -> {after!r}"
        for key, (before, after) in config_changes(saved, config).items()
        if key in saved_fields and not _resumable(key)
    ]


def _resumable(key: str) -> bool:
    return any(
        key == field or (field.endswith(".") and key.startswith(field))
        for field in RESUMABLE_FIELDS
    )


def check_rerun(workdir: str, config: ml_collections.ConfigDict, what: str = "a rerun") -> None:
    """Raises :class:`ConfigChangedError` (one line) when ``workdir`` holds a saved config
    that ``config`` differs from in a field that changes what is trained."""
    saved = read_saved(workdir)
    if saved is None:
        return
    changes = rerun_changes(saved, config)
    if changes:
        more = f", and {len(changes) - 1} more" if len(changes) > 1 else ""
        raise ConfigChangedError(
            f"{workdir} holds a run with other settings ({changes[0]}{more}); {what} there "
            "would continue it under the new ones: rerun with the same settings or use a "
            "fresh --workdir"
        )
