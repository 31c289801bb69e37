"""The fast GRU sequence kernel: forward loop and exact chunked backward, for one direction
or both directions of a bidirectional layer fused into one loop.

Design (each point measured on XLA CPU; numbers in ``benchmarks/README.md``):

* Lanes. XLA CPU executes a loop body with at most 8 thunks sequentially, so one step's
  three small per-gate GEMMs run one after another on one core. The kernel runs several
  independent *lanes* per step: each direction of a bidirectional layer, times batch
  groups (``plan.groups``). Their GEMMs are independent, so the executor runs them
  concurrently on all cores. Off CPU the plan uses one batch group.
* Separate buffers. A fusion that reads several slices of one buffer runs ~9x slower on
  XLA CPU than over separate buffers, so every gate and every lane has its own arrays.
* No layout copies. Inputs are read and outputs written in the caller's layout
  (batch-major or time-major) with dynamic slices inside the loop; the output buffer
  ``[..., directions * hidden]`` is a loop carry updated in place (no concatenation).
* Minimal residuals. The forward keeps only its outputs (plus, when inputs were projected
  before the loop, those projections). The backward walks the sequence in chunks: it
  recomputes a chunk's gates from the saved outputs with batched GEMMs (every ``h_prev``
  of the chunk is known), runs the sequential gradient recurrence over the chunk, and
  forms the weight gradients with one large GEMM per chunk instead of a small one per
  step. ``plan.save_gates`` keeps the gates from the forward instead (cheaper when the
  hidden size is large). Chunk buffers are reused from chunk to chunk.
* Forward-only calls at large hidden sizes (``plan.in_loop_inference``): with no backward
  to feed, the inputs are projected inside the step by one fused GEMM, which runs
  concurrently with the step's recurrent GEMMs instead of as one large GEMM before the
  loop (1.16x faster at B=64, I=256, H=512 on 2 CPU cores).
* Remat (``plan.remat``): the forward saves only the state before every ``chunk_size``-th
  step; the backward re-runs each chunk's forward from it. Memory no longer grows with
  ``time x batch x hidden`` when the caller does not keep the outputs.

Everything below works in *process order*: position ``p`` of direction ``d`` is time
``p`` (forward) or ``T - 1 - p`` (reverse), so both directions share one loop.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gru_jax.ops.gru_math import (
    gru_step,
    matmul,
    project_inputs,
    split_gates,
)

Array = jax.Array


class KernelPlan(NamedTuple):
    """Static options of the kernel (hashable; part of the jit cache key)."""

    reset_after: bool
    directions: tuple[bool, ...]  # the reverse flag of each direction: (False,), (False, True)
    time_major: bool
    unroll: int
    compute_dtype: str
    hoist_inputs: bool
    chunk_size: int
    groups: tuple[tuple[int, int], ...]  # (start, size) of each batch group
    remat: bool = False
    save_gates: bool = False  # keep r, z, aux from the forward instead of recomputing
    # Forward-only calls (no gradient) project the inputs inside the step with one fused
    # [I, 3H] GEMM instead of hoisting them: the step's x- and h-GEMMs are independent
    # and run concurrently (benchmarks/README.md, "Wide inference").
    in_loop_inference: bool = False
    fuse_step_inputs: bool = False  # in-step projection: one fused GEMM, not one per gate


class Saved(NamedTuple):
    """What the forward keeps for the backward besides its outputs (None when unused).

    projections: [direction][group] the (r, z, n) input pre-activations (hoisted inputs).
    boundaries: f32[ceil(T / chunk), D, B, H] states before each chunk (remat).
    gates: [direction][group] (r, z, aux), each f32[T, size, H] in process order.
    """

    projections: tuple | None = None
    boundaries: Array | None = None
    gates: tuple | None = None


# ----------------------------------------------------------------------------- layout


def _time_axis(plan: KernelPlan) -> int:
    return 0 if plan.time_major else 1


def _steps(x: Array, plan: KernelPlan) -> int:
    return x.shape[_time_axis(plan)]


def _time_of(position, reverse: bool, steps: int):
    return steps - 1 - position if reverse else position


def _step_read(a: Array, t, start: int, size: int, plan: KernelPlan) -> Array:
    """``a[t, start:start+size]`` (time-major) or ``a[start:start+size, t]`` -> [size, F]."""
    if plan.time_major:
        return lax.dynamic_slice(a, (t, start, 0), (1, size, a.shape[2]))[0]
    return lax.dynamic_slice(a, (start, t, 0), (size, 1, a.shape[2]))[:, 0]


def _step_write(buf: Array, value: Array, t, start: int, feature: int, plan) -> Array:
    if plan.time_major:
        return lax.dynamic_update_slice(buf, value[None], (t, start, feature))
    return lax.dynamic_update_slice(buf, value[:, None], (start, t, feature))


def _chunk_read(a, position, length: int, reverse: bool, plan, feature=None) -> Array:
    """Process positions ``[position, position+length)`` of ``a`` (caller's layout) as a
    ``[length, B, F]`` array in process order; ``feature=(offset, size)`` selects
    features."""
    steps = _steps(a, plan)
    start = steps - position - length if reverse else position
    offset, size = feature if feature is not None else (0, a.shape[2])
    if plan.time_major:
        block = lax.dynamic_slice(a, (start, 0, offset), (length, a.shape[1], size))
    else:
        block = lax.dynamic_slice(a, (0, start, offset), (a.shape[0], length, size))
        block = jnp.swapaxes(block, 0, 1)
    return block[::-1] if reverse else block


def _chunk_accumulate(buf: Array, block: Array, position, reverse: bool, b0: int, plan):
    """``buf[times of the chunk, b0:b0+size] += block`` (block in process order)."""
    length = block.shape[0]
    start = _steps(buf, plan) - position - length if reverse else position
    block = block[::-1] if reverse else block
    if not plan.time_major:
        block = jnp.swapaxes(block, 0, 1)
    index = (start, b0, 0) if plan.time_major else (b0, start, 0)
    current = lax.dynamic_slice(buf, index, block.shape)
    return lax.dynamic_update_slice(buf, current + block, index)


def _lane_slices(plan: KernelPlan, hidden: int):
    """(direction, reverse, group, b0, size, feature offset) for every lane."""
    return [
        (d, rev, g, b0, bs, d * hidden)
        for d, rev in enumerate(plan.directions)
        for g, (b0, bs) in enumerate(plan.groups)
    ]


# ---------------------------------------------------------------------------- forward


def _forward(sws, x, h0, lengths, plan: KernelPlan, *, for_backward: bool = False):
    """Runs the recurrence. ``sws``: StepWeights per direction; ``h0``: f32[D, B, H].
    Returns ``(h_last [D, B, H], outputs [..., D*H], saved)``."""
    steps = _steps(x, plan)
    num_dirs, batch, hidden = h0.shape
    lanes = _lane_slices(plan, hidden)
    projections = None
    if plan.hoist_inputs:
        projections = tuple(
            tuple(
                project_inputs(lax.slice_in_dim(x, b0, b0 + bs, axis=1 - _time_axis(plan)), sws[d])
                for b0, bs in plan.groups
            )
            for d in range(num_dirs)
        )
    width = num_dirs * hidden
    out = jnp.zeros((steps, batch, width) if plan.time_major else (batch, steps, width))
    save_every = plan.chunk_size if (for_backward and plan.remat) else 0
    boundaries = None
    if save_every:
        slots = (steps + save_every - 1) // save_every
        boundaries = jnp.zeros((slots, num_dirs, batch, hidden), jnp.float32)
    gates = None
    if for_backward and plan.save_gates and not plan.remat:
        gates = tuple(
            tuple(jnp.zeros((steps, bs, hidden)) for _ in range(3)) for *_, bs, _ in lanes
        )
    states = tuple(h0[d, b0 : b0 + bs] for d, _, _, b0, bs, _ in lanes)
    lens = None if lengths is None else tuple(lengths[b0 : b0 + bs] for *_, b0, bs, _ in lanes)

    fused_inputs = None
    if plan.fuse_step_inputs and not plan.hoist_inputs:
        fused_inputs = tuple(
            (jnp.concatenate(sw.input_kernels, axis=1), jnp.concatenate(sw.input_biases))
            for sw in sws
        )

    def body(i, carry):
        states, out, boundaries, gates = carry
        if save_every:
            h_all = jnp.stack(
                [
                    jnp.concatenate(states[d * len(plan.groups) : (d + 1) * len(plan.groups)])
                    for d in range(num_dirs)
                ]
            )
            slot = lax.dynamic_index_in_dim(boundaries, i // save_every, 0, keepdims=False)
            slot = jnp.where(i % save_every == 0, h_all, slot)
            boundaries = lax.dynamic_update_index_in_dim(boundaries, slot, i // save_every, 0)
        new_states, new_gates = [], []
        for lane, (d, rev, g, b0, bs, feature) in enumerate(lanes):
            t = _time_of(i, rev, steps)
            if projections is not None:
                x_pre = tuple(_step_read(p, t, 0, bs, plan) for p in projections[d][g])
            elif fused_inputs is not None:
                kernel, bias = fused_inputs[d]
                x_pre = split_gates(matmul(_step_read(x, t, b0, bs, plan), kernel) + bias)
            else:
                x_pre = project_inputs(_step_read(x, t, b0, bs, plan), sws[d])
            h_new, _, res = gru_step(states[lane], x_pre, sws[d], plan.reset_after)
            if gates is not None:
                new_gates.append(
                    tuple(
                        lax.dynamic_update_index_in_dim(buf, value, i, 0)
                        for buf, value in zip(gates[lane], res)
                    )
                )
            y = h_new
            if lens is not None:
                keep = (t < lens[lane])[:, None]
                y = jnp.where(keep, h_new, 0.0)
                h_new = jnp.where(keep, h_new, states[lane])
            out = _step_write(out, y, t, b0, feature, plan)
            new_states.append(h_new)
        return tuple(new_states), out, boundaries, (tuple(new_gates) if gates else None)

    states, out, boundaries, gates = lax.fori_loop(
        0, steps, body, (states, out, boundaries, gates), unroll=plan.unroll
    )
    groups = len(plan.groups)
    h_last = jnp.stack(
        [jnp.concatenate(states[d * groups : (d + 1) * groups]) for d in range(num_dirs)]
    )
    return h_last, out, Saved(projections, boundaries, gates)
