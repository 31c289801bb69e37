"""Orbax checkpoints of the train state: save every N steps, keep K, resume from the latest.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a
run killed mid-save (even by SIGKILL) leaves the previous checkpoints intact, and the
partial one is ignored on restart.

Checkpoints hold global arrays, not a device layout: ``restore`` reads them into the
shardings of the *current* mesh, so a run saved on 4 devices resumes on 1 (or on 8, or on
several processes) unchanged. With several processes every process calls ``save`` and
``restore`` (orbax coordinates them; each writes the shards it owns), and the checkpoint
directory must be on a file system that all hosts share.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from experiments.steps import CHECKPOINTED


def _copy(leaf: Any) -> Any:
    return leaf.copy() if isinstance(leaf, jax.Array) else np.array(leaf, copy=True)


class CheckpointMismatchError(ValueError):
    """A checkpoint whose arrays do not fit the train state built from the config;
    ``mismatches`` has one line per array (:func:`shape_mismatches`)."""

    def __init__(self, step: int, directory: str, mismatches: list[str]):
        self.step, self.directory, self.mismatches = step, directory, mismatches
        super().__init__(
            f"checkpoint {step} in {directory} does not match this config's model or "
            f"optimizer: {self.first()}; use a fresh --workdir"
        )

    def first(self) -> str:
        """The first mismatch, and how many more there are."""
        more = len(self.mismatches) - 1
        return self.mismatches[0] + (f" (and {more} more)" if more else "")


def _leaf_name(path: tuple) -> str:
    """``params.cell.input_bias.value`` for a pytree key path (dict, sequence or attribute
    keys alike, so a state and the checkpoint's metadata tree name a leaf the same way)."""
    parts = (getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))) for key in path)
    return ".".join(str(part) for part in parts)


def shape_mismatches(stored: Any, target: Any) -> list[str]:
    """One line per array whose shape differs between a checkpoint's metadata tree and
    ``target`` (or that only one of them has); empty when they fit."""
    have = {_leaf_name(p): tuple(leaf.shape) for p, leaf in jax.tree.leaves_with_path(stored)}
    want = {_leaf_name(p): tuple(np.shape(leaf)) for p, leaf in jax.tree.leaves_with_path(target)}
    lines = []
    for name in sorted(have.keys() | want.keys(), key=lambda n: (not n.startswith("params"), n)):
        if name not in want:
            lines.append(f"{name} is in the checkpoint but not in this config's state")
        elif name not in have:
            lines.append(f"{name} is in this config's state but not in the checkpoint")
        elif have[name] != want[name]:
            lines.append(f"{name} has shape {have[name]} in the checkpoint, {want[name]} here")
    return lines


class Checkpointer:
    """Saves and restores ``{step, params, opt_state, model_state}`` of the train state.

    Args:
      directory: where checkpoints live (``<workdir>/checkpoints``).
      keep: how many of the most recent checkpoints to keep.
    """

    def __init__(self, directory: str, keep: int):
        if keep < 1:
            raise ValueError(f"train.keep_checkpoints must be >= 1; got {keep}")
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def all_steps(self) -> list[int]:
        """The steps of the complete checkpoints, oldest first."""
        return sorted(self.manager.all_steps())

    def _shape_mismatches(self, step: int, part: dict[str, Any]) -> list[str]:
        """:func:`shape_mismatches` of checkpoint ``step`` (read from its metadata, no array
        is loaded) and ``part``, the checkpointed part of a train state."""
        path = epath.Path(self.directory) / str(step) / "default"
        return shape_mismatches(ocp.StandardCheckpointHandler().metadata(path), part)

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self.manager.latest_step()

    def save(self, state: dict[str, Any]) -> int:
        """Saves the checkpointed part of ``state`` (asynchronously); returns its step."""
        # Copies on the same devices and shardings: the train step donates its input
        # buffers, so the next step may reuse them while orbax is still writing in the
        # background. (Device copies, not host ones: orbax then writes each process's own
        # shards, which is what makes multi-process saving work.)
        copies = jax.tree.map(_copy, {k: state[k] for k in CHECKPOINTED})
        step = int(jax.device_get(copies["step"]))
        self.manager.save(step, args=ocp.args.StandardSave(copies))
        return step

    def restore(
        self, step: int, target: dict[str, Any], shardings: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Restores checkpoint ``step`` into the structure, shapes and dtypes of
        ``target`` (a train state built from the current config), placed with
        ``shardings`` (a matching pytree of shardings; default: where ``target`` lives)."""
        part = {k: target[k] for k in CHECKPOINTED}
        # Shapes are checked against the checkpoint's metadata first: a clear message, and
        # no failed restore left behind in orbax's background threads.
        mismatches = self._shape_mismatches(step, part)
        if mismatches:
            raise CheckpointMismatchError(step, self.directory, mismatches)
        if shardings is None:
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, part)
        else:
            abstract = jax.tree.map(
                lambda leaf, sharding: jax.ShapeDtypeStruct(
                    np.shape(leaf), leaf.dtype, sharding=sharding
                ),
                part,
                {k: shardings[k] for k in CHECKPOINTED},
            )
        try:
            restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError, TypeError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ValueError(
                f"checkpoint {step} in {self.directory} does not match this config's model "
                f"or optimizer ({first_line}); use a fresh --workdir"
            ) from error
        return {**target, **restored}

    def wait(self) -> None:
        """Blocks until pending saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
