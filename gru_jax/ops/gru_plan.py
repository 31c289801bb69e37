"""How the fast kernel runs a given problem: the static :class:`KernelPlan` and the
defaults picked by backend and size (each threshold measured; see benchmarks/README.md)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from gru_jax.ops.gru_kernel import KernelPlan

# Input feature sizes at or above this are projected for all steps at once (one large
# GEMM before the loop); smaller inputs are projected inside the step, which avoids three
# [time, batch, hidden] temporaries. Measured on XLA CPU; see benchmarks/README.md.
HOIST_MIN_FEATURES = 64
# On CPU, split the batch into groups of at least this many rows so the per-gate GEMMs of
# different groups run concurrently (see gru_kernel's docstring).
MIN_GROUP_ROWS = 32
MAX_LANES = 4
# Above this hidden size one step's GEMMs are large enough for XLA to multi-thread them.
MAX_GROUPED_HIDDEN = 256
# On CPU, forward-only calls at this hidden size and above project the inputs inside the
# step with one fused GEMM (concurrent with the recurrent GEMMs) instead of hoisting them.
IN_LOOP_INFERENCE_MIN_HIDDEN = 257
# On CPU, keep the gates from the forward (instead of recomputing them in the backward)
# from this hidden size up. Measured on an idle 2-core CPU, keeping them won at every
# benchmark shape (H = 128: 1.02-1.28x faster training steps; H = 512: 1.2x), so it is
# on for all sizes; ``save_gates=False`` trades that speed for 3*T*B*H floats of memory.
SAVE_GATES_MIN_HIDDEN = 0
# Off CPU, the default scan unroll factor. Measured on an H200 (benchmarks/README.md),
# unroll 8 against 1: training steps 1.2-1.3x faster at every benchmark shape, inference
# 1.3x (small) to 5.4x (T = 784) faster.
ACCELERATOR_UNROLL = 8


def default_batch_groups(
    batch: int, hidden: int, backend: str | None = None, num_directions: int = 1
) -> int:
    """How many independent batch groups the kernel's step uses (1 off CPU). Each direction
    of a bidirectional layer is already an independent lane, so it needs fewer groups."""
    backend = backend or jax.default_backend()
    if backend != "cpu" or hidden > MAX_GROUPED_HIDDEN:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if (cores or 1) < 2:
        return 1
    return max(1, min(MAX_LANES // num_directions, batch // MIN_GROUP_ROWS))


def default_save_gates(hidden: int, backend: str | None = None) -> bool:
    """Whether the forward keeps (r, z, hn) for the backward. Recomputing them costs
    ~6*B*H^2 FLOPs per step (batched GEMMs); keeping them costs ~12*B*H bytes written and
    read. Off CPU memory is cheap relative to compute; on CPU keeping them measured faster
    at every benchmark shape (``SAVE_GATES_MIN_HIDDEN``). Ignored with remat."""
    backend = backend or jax.default_backend()
    return backend != "cpu" or hidden >= SAVE_GATES_MIN_HIDDEN


def default_in_loop_inference(hidden: int, backend: str | None = None) -> bool:
    """Whether forward-only calls project inputs inside the step (fused), on CPU for large
    hidden sizes; only consulted when ``hoist_inputs`` is left to the default."""
    backend = backend or jax.default_backend()
    return backend == "cpu" and hidden >= IN_LOOP_INFERENCE_MIN_HIDDEN


def group_bounds(batch: int, groups: int) -> tuple[tuple[int, int], ...]:
    """``groups`` contiguous (start, size) batch slices of near-equal size."""
    groups = max(1, min(groups, batch)) if batch else 1
    base, extra = divmod(batch, groups)
    bounds, start = [], 0
    for g in range(groups):
        size = base + (1 if g < extra else 0)
        bounds.append((start, size))
        start += size
    return tuple(bounds)


def default_unroll(backend: str | None = None) -> int:
    """The scan unroll factor that ``unroll=None`` stands for: 1 on CPU, where XLA's
    while loop costs little per step and a longer body only compiles slower, and
    ``ACCELERATOR_UNROLL`` elsewhere, where every loop iteration launches its kernels
    separately."""
    backend = backend or jax.default_backend()
    return 1 if backend == "cpu" else ACCELERATOR_UNROLL


def resolve_unroll(unroll, steps: int) -> int:
    """``unroll=True`` means fully unrolled; False means 1; None picks by backend."""
    if unroll is None:
        return max(1, min(default_unroll(), steps))
    if isinstance(unroll, bool):
        return max(steps, 1) if unroll else 1
    return max(1, int(unroll))


def resolve_hoist(hoist_inputs: bool | None, in_features: int) -> bool:
    return in_features >= HOIST_MIN_FEATURES if hoist_inputs is None else bool(hoist_inputs)


def make_plan(
    inputs_shape: tuple[int, int, int],
    hidden: int,
    directions: tuple[bool, ...],
    *,
    reset_after,
    time_major,
    unroll,
    compute_dtype,
    hoist_inputs,
    chunk_size,
    batch_groups,
    remat,
    save_gates,
) -> KernelPlan:
    """The kernel's static plan for inputs of ``inputs_shape``, with defaults (None)
    picked by backend and size."""
    steps, batch = inputs_shape[:2] if time_major else inputs_shape[1::-1]
    if batch_groups is None:
        batch_groups = default_batch_groups(batch, hidden, num_directions=len(directions))
    return KernelPlan(
        reset_after=bool(reset_after),
        directions=tuple(bool(d) for d in directions),
        time_major=bool(time_major),
        unroll=resolve_unroll(unroll, steps),
        compute_dtype=jnp.dtype(compute_dtype).name,
        hoist_inputs=resolve_hoist(hoist_inputs, inputs_shape[-1]),
        chunk_size=max(1, int(chunk_size)),
        groups=group_bounds(batch, batch_groups),
        remat=bool(remat),
        save_gates=default_save_gates(hidden) if save_gates is None else bool(save_gates),
        in_loop_inference=hoist_inputs is None and default_in_loop_inference(hidden),
    )
