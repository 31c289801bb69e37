"""Data parallelism on every device of every process, with JAX's own sharding.

One `jax.sharding.Mesh` over ``jax.devices()`` (all processes' devices) with a single
``data`` axis. Batches are split along their leading axis over ``data``; the train state
is replicated (``train.param_sharding='replicated'``, the default) or, with ``'sharded'``,
each array is split along its largest axis that the device count divides (FSDP-like;
arrays with no such axis stay replicated). The steps are ordinary ``jax.jit`` functions
with these in/out shardings: XLA inserts the gradient all-reduce (or the parameter
all-gathers), so the update equals the single-device update on the same global batch up
to the order of floating-point reductions.

Several processes (`experiments.distributed`): each process feeds only the rows of the
global batch that live on its own devices (`local_rows`), and
``jax.make_array_from_process_local_data`` assembles the global array.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gru_jax import data as gru_data

DATA_AXIS = "data"
PARAM_RULES = ("replicated", "sharded")


def params_rule(config: ml_collections.ConfigDict) -> str:
    """``config.train.param_sharding`` if the config has that field, else ``'replicated'``."""
    train = config.get("train")
    rule = train.get("param_sharding", "replicated") if train is not None else "replicated"
    if rule not in PARAM_RULES:
        raise ValueError(
            f"unknown train.param_sharding {rule!r}: expected one of {', '.join(PARAM_RULES)}"
        )
    return rule


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """The mesh of a run and the shardings derived from it.

    Attributes:
      mesh: devices along the ``data`` axis.
      rule: how the train state is laid out, one of `PARAM_RULES`.
    """

    mesh: Mesh
    rule: str = "replicated"

    @classmethod
    def create(cls, devices: list | None = None, rule: str = "replicated") -> DataParallel:
        """A mesh over ``devices`` (default: ``jax.devices()``, every process's devices)."""
        devices = jax.devices() if devices is None else devices
        return cls(Mesh(np.asarray(devices), (DATA_AXIS,)), rule)

    @functools.cached_property
    def size(self) -> int:
        """Devices on the ``data`` axis."""
        return self.mesh.devices.size

    # Cached: building a NamedSharding per step would cost tens of microseconds.
    @functools.cached_property
    def batch(self) -> NamedSharding:
        """Leading (example) axis split over ``data``."""
        return NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))

    @functools.cached_property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def check_batch_size(self, batch_size: int, field: str = "train.batch_size") -> None:
        """Raises a one-line ValueError unless ``batch_size`` splits evenly over the mesh
        (sizes < 1 are left to the config validation of `experiments.setup`)."""
        if batch_size >= 1 and batch_size % self.size:
            raise ValueError(
                f"{field}={batch_size} is not divisible by the {self.size} devices of the "
                f"data-parallel mesh; use a multiple of {self.size}"
            )

    def round_up(self, batch_size: int) -> int:
        """The smallest multiple of the device count >= ``batch_size`` (eval batches are
        padded and masked anyway, so they may grow)."""
        return -(-batch_size // self.size) * self.size

    def leaf_sharding(self, leaf: Any) -> NamedSharding:
        """The sharding of one train-state array under `rule`."""
        shape = np.shape(leaf)
        if self.rule == "replicated" or self.size == 1:
            return self.replicated
        divisible = [axis for axis, size in enumerate(shape) if size % self.size == 0 and size]
        if not divisible:
            return self.replicated
        axis = max(divisible, key=lambda index: shape[index])
        spec = [None] * len(shape)
        spec[axis] = DATA_AXIS
        return NamedSharding(self.mesh, PartitionSpec(*spec))

    def state_shardings(self, tree: Any) -> Any:
        """A pytree of shardings matching ``tree`` (train state, params, ...)."""
        return jax.tree.map(self.leaf_sharding, tree)

    def put(self, tree: Any, shardings: Any) -> Any:
        """Places a host or single-device pytree, identical on every process, as global
        arrays with ``shardings``."""
        if jax.process_count() == 1:
            return jax.device_put(tree, shardings)

        def put_leaf(leaf: Any, sharding: NamedSharding) -> jax.Array:
            host = np.asarray(leaf)
            return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

        return jax.tree.map(put_leaf, tree, shardings)

    def local_rows(self, global_size: int) -> slice:
        """The rows of a ``[global_size, ...]`` batch that this process's devices hold."""
        indices = self.batch.addressable_devices_indices_map((global_size,)).values()
        starts = sorted(index[0].indices(global_size)[:2] for index in indices)
        begin, end = starts[0][0], starts[-1][1]
        if sum(stop - start for start, stop in starts) != end - begin:
            raise ValueError("this process's devices hold non-contiguous rows of the batch")
        return slice(begin, end)

    def place(self, local_batch: Mapping[str, np.ndarray], global_size: int) -> dict:
        """Global arrays split over ``data`` from this process's rows of the batch."""
        if jax.process_count() == 1:
            return jax.device_put(dict(local_batch), self.batch)
        shapes = {key: (global_size, *np.shape(value)[1:]) for key, value in local_batch.items()}
        return jax.make_array_from_process_local_data(self.batch, dict(local_batch), shapes)

    def to_host(self, tree: Any) -> Any:
        """NumPy copies of global arrays. Every process must call it (arrays sharded over
        several processes are all-gathered)."""

        def fetch(leaf: Any) -> np.ndarray:
            if isinstance(leaf, jax.Array) and not (
                leaf.is_fully_addressable or leaf.is_fully_replicated
            ):
                return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
            return np.asarray(jax.device_get(leaf))

        return jax.tree.map(fetch, tree)


def local_train_batches(
    arrays: Mapping[str, np.ndarray], batch_size: int, seed: int, start_step: int, rows: slice
) -> Iterator[dict[str, np.ndarray]]:
    """This process's ``rows`` of the global training batches of `gru_data.train_batches`
    (only those rows are gathered)."""
    if rows == slice(0, batch_size):
        yield from gru_data.train_batches(arrays, batch_size, seed, start_step)
        return
    order = {"index": np.arange(len(next(iter(arrays.values()))))}
    for global_batch in gru_data.train_batches(order, batch_size, seed, start_step):
        picked = global_batch["index"][rows]
        yield {key: np.asarray(value)[picked] for key, value in arrays.items()}


def local_eval_batches(
    arrays: Mapping[str, np.ndarray], batch_size: int, rows: slice
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """``(this process's rows, mask of the whole global batch)`` for every fixed-shape
    eval batch of `gru_data.eval_batches`."""
    if rows == slice(0, batch_size):
        for batch in gru_data.eval_batches(arrays, batch_size):
            mask = batch.pop("mask")
            yield batch, mask
        return
    order = {"index": np.arange(len(next(iter(arrays.values()))))}
    for global_batch in gru_data.eval_batches(order, batch_size):
        picked = global_batch["index"][rows]
        yield (
            {key: np.asarray(value)[picked] for key, value in arrays.items()},
            global_batch["mask"],
        )
