"""The fast GRU sequence kernel: forward loop and exact chunked backward.

Design (each point measured on XLA CPU; numbers in ``benchmarks/README.md``):

* Batch groups. XLA CPU executes a loop body with at most 8 thunks sequentially, so one
  step's three small per-gate GEMMs run one after another on one core. Splitting the batch
  into ``len(plan.groups)`` independent groups gives the executor independent GEMMs to
  run concurrently on all cores. On GPU/TPU the plan uses one group.
* Separate buffers. A fusion that reads several slices of one buffer runs ~9x slower on
  XLA CPU than over separate buffers, so every gate and every group has its own arrays.
* No layout copies. Inputs are read and outputs written in the caller's layout
  (batch-major or time-major) with dynamic slices inside the loop; the output buffer is
  a loop carry updated in place.
* Minimal residuals. The forward keeps only its outputs (and, when inputs were projected
  before the loop, those projections). The backward walks the sequence in chunks: it
  recomputes a chunk's gates from the saved outputs with batched GEMMs (every ``h_prev``
  of the chunk is known), runs the sequential gradient recurrence over the chunk, and
  forms the weight gradients with one large GEMM per chunk instead of a small one per
  step. Chunk buffers are reused from chunk to chunk.
* Remat (``plan.remat``): the forward saves only every ``chunk_size``-th state; the
  backward re-runs each chunk's forward from its boundary state. Peak memory no longer
  grows with ``time x batch x hidden`` when the caller does not keep the outputs.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from gru_jax.ops.gru_math import (
    GRUWeights,
    StepResiduals,
    candidate_from_residuals,
    contract_leading,
    gru_step,
    gru_step_backward,
    matmul,
    matmul_transposed,
    prepare_step_weights,
    project_inputs,
)

Array = jax.Array


class KernelPlan(NamedTuple):
    """Static options of the kernel (hashable; part of the jit cache key)."""

    reset_after: bool
    reverse: bool
    time_major: bool
    unroll: int
    compute_dtype: str
    hoist_inputs: bool
    chunk_size: int
    groups: tuple[tuple[int, int], ...]  # (start, size) of each batch group
    remat: bool = False
    save_gates: bool = False  # keep r, z, aux from the forward instead of recomputing


# ----------------------------------------------------------------------------- layout


def _time_axis(plan: KernelPlan) -> int:
    return 0 if plan.time_major else 1


def _batch_slice(a: Array, start: int, size: int, plan: KernelPlan) -> Array:
    return lax.slice_in_dim(a, start, start + size, axis=1 - _time_axis(plan))


def _step_read(a: Array, t, start: int, size: int, plan: KernelPlan) -> Array:
    """``a[t, start:start+size]`` (time-major) or ``a[start:start+size, t]`` -> [size, F]."""
    if plan.time_major:
        return lax.dynamic_slice(a, (t, start, 0), (1, size, a.shape[2]))[0]
    return lax.dynamic_slice(a, (start, t, 0), (size, 1, a.shape[2]))[:, 0]


def _step_write(buf: Array, value: Array, t, start: int, plan: KernelPlan) -> Array:
    if plan.time_major:
        return lax.dynamic_update_slice(buf, value[None], (t, start, 0))
    return lax.dynamic_update_slice(buf, value[:, None], (start, t, 0))


def _chunk_read(a: Array, start, length: int, plan: KernelPlan) -> Array:
    """Times ``[start, start+length)`` of ``a`` as a time-major ``[length, B, F]`` array."""
    block = lax.dynamic_slice_in_dim(a, start, length, axis=_time_axis(plan))
    return block if plan.time_major else jnp.swapaxes(block, 0, 1)


def _chunk_write(buf: Array, block: Array, start, b0: int, plan: KernelPlan) -> Array:
    """Writes a time-major ``[length, size, F]`` block at (start, b0) into ``buf``."""
    if plan.time_major:
        return lax.dynamic_update_slice(buf, block, (start, b0, 0))
    return lax.dynamic_update_slice(buf, jnp.swapaxes(block, 0, 1), (b0, start, 0))


def _steps(x: Array, plan: KernelPlan) -> int:
    return x.shape[_time_axis(plan)]


# ---------------------------------------------------------------------------- forward


class Saved(NamedTuple):
    """What the forward keeps for the backward besides its outputs (None when unused).

    projections: per group, the (r, z, n) input pre-activations (``plan.hoist_inputs``).
    boundaries: f32[ceil(T / chunk), B, H] states before each chunk (``plan.remat``).
    gates: per group, time-major (r, z, aux) f32[T, size, H] (``plan.save_gates``).
    """

    projections: tuple | None = None
    boundaries: Array | None = None
    gates: tuple | None = None


def _forward(sw, x, h0, lengths, plan: KernelPlan, *, for_backward: bool = False):
    """Runs the recurrence; returns ``(h_last, outputs, saved)``. With ``for_backward`` it
    also keeps what ``plan`` says the backward needs (remat boundaries, gates)."""
    steps = _steps(x, plan)
    hidden = h0.shape[-1]
    batch = h0.shape[0]
    projections = None
    if plan.hoist_inputs:
        projections = tuple(
            project_inputs(_batch_slice(x, b0, bs, plan), sw) for b0, bs in plan.groups
        )
    out_shape = (steps, batch, hidden) if plan.time_major else (batch, steps, hidden)
    out = jnp.zeros(out_shape, jnp.float32)
    save_every = plan.chunk_size if (for_backward and plan.remat) else 0
    boundaries = None
    if save_every:
        slots = (steps + save_every - 1) // save_every
        boundaries = jnp.zeros((slots, batch, hidden), jnp.float32)
    gates = None
    if for_backward and plan.save_gates and not plan.remat:
        gates = tuple(
            tuple(jnp.zeros((steps, bs, hidden), jnp.float32) for _ in range(3))
            for _, bs in plan.groups
        )
    states = tuple(h0[b0 : b0 + bs] for b0, bs in plan.groups)
    lens = None if lengths is None else tuple(lengths[b0 : b0 + bs] for b0, bs in plan.groups)

    def body(i, carry):
        states, out, boundaries, gates = carry
        t = steps - 1 - i if plan.reverse else i
        if save_every:
            h_all = jnp.concatenate(states, axis=0) if len(states) > 1 else states[0]
            slot = lax.dynamic_index_in_dim(boundaries, i // save_every, 0, keepdims=False)
            slot = jnp.where(i % save_every == 0, h_all, slot)
            boundaries = lax.dynamic_update_index_in_dim(boundaries, slot, i // save_every, 0)
        new_states, new_gates = [], []
        for g, (b0, bs) in enumerate(plan.groups):
            if projections is not None:
                x_pre = tuple(_step_read(p, t, 0, bs, plan) for p in projections[g])
            else:
                x_pre = project_inputs(_step_read(x, t, b0, bs, plan), sw)
            h_new, _, res = gru_step(states[g], x_pre, sw, plan.reset_after)
            if gates is not None:
                new_gates.append(
                    tuple(
                        lax.dynamic_update_index_in_dim(buf, value, t, 0)
                        for buf, value in zip(gates[g], res)
                    )
                )
            y = h_new
            if lens is not None:
                keep = (t < lens[g])[:, None]
                y = jnp.where(keep, h_new, 0.0)
                h_new = jnp.where(keep, h_new, states[g])
            out = _step_write(out, y, t, b0, plan)
            new_states.append(h_new)
        return tuple(new_states), out, boundaries, (tuple(new_gates) if gates else None)

    states, out, boundaries, gates = lax.fori_loop(
        0, steps, body, (states, out, boundaries, gates), unroll=plan.unroll
    )
    h_last = jnp.concatenate(states, axis=0) if len(states) > 1 else states[0]
    return h_last, out, Saved(projections, boundaries, gates)


# --------------------------------------------------------------------------- backward


def _prev_positions(times: Array, plan: KernelPlan) -> Array:
    return times + (1 if plan.reverse else -1)


def _chunk_prev_outputs(ys, h0, start, length, is_first, plan):
    """Outputs at the previous processed step of each time in the chunk, time-major
    ``[length, B, H]``; the slot before the first processed step holds ``h0``."""
    if not is_first:
        return _chunk_read(ys, start + (1 if plan.reverse else -1), length, plan)
    steps = _steps(ys, plan)
    if plan.reverse:  # times [T - length, T): previous of T - 1 is the initial carry
        rest = _chunk_read(ys, steps - length + 1, length - 1, plan)
        return jnp.concatenate([rest, h0[None]], axis=0)
    return jnp.concatenate([h0[None], _chunk_read(ys, 0, length - 1, plan)], axis=0)


def _recompute_chunk(sw, x_pre, h_prev, plan):
    """Gates of a chunk from known ``h_prev`` (batched GEMMs over [length*batch])."""
    x_r, x_z, x_n = x_pre
    w_r, w_z, w_n = sw.recurrent_kernels
    r = jax.nn.sigmoid(x_r + matmul(h_prev, w_r))
    z = jax.nn.sigmoid(x_z + matmul(h_prev, w_z))
    if plan.reset_after:
        aux = matmul(h_prev, w_n) + sw.candidate_bias
        return r, z, aux, jnp.tanh(x_n + r * aux)
    n = jnp.tanh(x_n + matmul(r * h_prev, w_n))
    return r, z, n, n


def _replay_chunk(sw, x_pre_groups, h_start_groups, lens_groups, times, plan):
    """Remat: re-runs a chunk's forward from its boundary state, sequentially, and returns
    per-group time-major ``(h_prev, r, z, aux, n)`` stacks."""

    def step(states, inputs):
        t, x_pres = inputs
        new, saved = [], []
        for g, h in enumerate(states):
            h_new, n, res = gru_step(h, x_pres[g], sw, plan.reset_after)
            if lens_groups is not None:
                keep = (t < lens_groups[g])[:, None]
                h_new = jnp.where(keep, h_new, h)
            new.append(h_new)
            saved.append((h, res.reset, res.update, res.aux, n))
        return tuple(new), tuple(saved)

    _, saved = lax.scan(
        step, tuple(h_start_groups), (times, x_pre_groups), reverse=plan.reverse, unroll=plan.unroll
    )
    return saved


def _chunk_backward(sw, plan, x, h0, lengths, ys, saved_fwd, dys, carry, start, length, is_first):
    """Backward over times ``[start, start+length)``; returns the updated carry
    ``(dh_groups, grads, dx)``."""
    dh_groups, grads, dx = carry
    steps = _steps(x, plan)
    times = start + jnp.arange(length)
    groups = plan.groups
    x_c = _chunk_read(x, start, length, plan)  # [L, B, I]
    x_groups = [x_c[:, b0 : b0 + bs] for b0, bs in groups]
    if saved_fwd.projections is not None:
        x_pre = [
            tuple(_chunk_read(p, start, length, plan) for p in saved_fwd.projections[g])
            for g in range(len(groups))
        ]
    else:
        x_pre = [project_inputs(xg, sw) for xg in x_groups]
    lens = None if lengths is None else [lengths[b0 : b0 + bs] for b0, bs in groups]

    if plan.remat:
        # The boundary state saved before this chunk's first processed step.
        position = (steps - start - length) if plan.reverse else start
        h_start = lax.dynamic_index_in_dim(
            saved_fwd.boundaries, position // plan.chunk_size, 0, False
        )
        saved = _replay_chunk(
            sw, tuple(x_pre), [h_start[b0 : b0 + bs] for b0, bs in groups], lens, times, plan
        )
    else:
        y_prev = _chunk_prev_outputs(ys, h0, start, length, is_first, plan)
        saved = []
        for g, (b0, bs) in enumerate(groups):
            h_prev = y_prev[:, b0 : b0 + bs]
            if lens is not None:
                # Outputs are zero at padded steps; the state there is the initial carry.
                prev_t = _prev_positions(times, plan)[:, None]
                prev_valid = (prev_t >= 0) & (prev_t < steps) & (prev_t < lens[g][None])
                h_prev = jnp.where(prev_valid[..., None], h_prev, h0[None, b0 : b0 + bs])
            if saved_fwd.gates is not None:
                r, z, aux = (
                    lax.dynamic_slice_in_dim(buf, start, length, 0) for buf in saved_fwd.gates[g]
                )
                n = candidate_from_residuals(
                    x_pre[g][2], StepResiduals(r, z, aux), plan.reset_after
                )
                saved.append((h_prev, r, z, aux, n))
            else:
                saved.append((h_prev, *_recompute_chunk(sw, x_pre[g], h_prev, plan)))

    dy = None if dys is None else _chunk_read(dys, start, length, plan)
    dy_groups = None if dy is None else [dy[:, b0 : b0 + bs] for b0, bs in groups]

    def step(dhs, inputs):
        t, dy_t, saved_t = inputs
        new_dh, outs = [], []
        for g, dh in enumerate(dhs):
            h_prev, r, z, aux, n = saved_t[g]
            dh_new = dh if dy_t is None else dh + dy_t[g]
            if lens is not None:
                keep = (t < lens[g])[:, None]
                dh_new = jnp.where(keep, dh_new, 0.0)
            dh_prev, gg = gru_step_backward(
                dh_new, h_prev, n, StepResiduals(r, z, aux), sw, plan.reset_after
            )
            if lens is not None:
                dh_prev = jnp.where(keep, dh_prev, dh)
            new_dh.append(dh_prev)
            outs.append((gg.input_grads, gg.recurrent_grads[2] if plan.reset_after else None))
        return tuple(new_dh), tuple(outs)

    dh_groups, outs = lax.scan(
        step,
        dh_groups,
        (times, dy_groups, tuple(saved)),
        reverse=not plan.reverse,
        unroll=plan.unroll,
    )
    dwi, dbi, dwh, dbhn = grads
    for g, (b0, _) in enumerate(groups):
        (dr, dz, dn), dhn = outs[g]
        h_prev, r = saved[g][0], saved[g][1]
        n_input = h_prev if plan.reset_after else r * h_prev
        dwh = (
            dwh[0] + contract_leading(h_prev, dr),
            dwh[1] + contract_leading(h_prev, dz),
            dwh[2] + contract_leading(n_input, dhn if plan.reset_after else dn),
        )
        dwi = tuple(a + contract_leading(x_groups[g], d) for a, d in zip(dwi, (dr, dz, dn)))
        dbi = tuple(a + jnp.sum(d, axis=(0, 1)) for a, d in zip(dbi, (dr, dz, dn)))
        if plan.reset_after:
            dbhn = dbhn + jnp.sum(dhn, axis=(0, 1))
        dx_block = sum(matmul_transposed(d, k) for d, k in zip((dr, dz, dn), sw.input_kernels))
        dx = _chunk_write(dx, dx_block.astype(dx.dtype), start, b0, plan)
    return dh_groups, (dwi, dbi, dwh, dbhn), dx


def _backward(sw, plan, weights, x, h0, lengths, ys, saved_fwd, dh_last, dys):
    steps = _steps(x, plan)
    in_features, hidden = x.shape[-1], h0.shape[-1]
    chunk = max(1, min(plan.chunk_size, steps))
    if plan.remat:
        chunk = plan.chunk_size  # boundaries were saved every chunk_size steps
    n_full = (steps - 1) // chunk if not plan.remat else steps // chunk
    first_len = steps - n_full * chunk
    zeros3 = lambda shape: tuple(jnp.zeros(shape, jnp.float32) for _ in range(3))
    grads = (
        zeros3((in_features, hidden)),
        zeros3((hidden,)),
        zeros3((hidden, hidden)),
        jnp.zeros((hidden,), jnp.float32) if plan.reset_after else None,
    )
    dh = tuple(dh_last[b0 : b0 + bs] for b0, bs in plan.groups)
    carry = (dh, grads, jnp.zeros(x.shape, jnp.float32))
    run = functools.partial(_chunk_backward, sw, plan, x, h0, lengths, ys, saved_fwd, dys)
    if plan.remat:
        # Chunks aligned to the saved boundaries: processing positions [k*chunk, ...),
        # the last (partial) chunk first.
        if first_len:
            position = n_full * chunk
            start = 0 if plan.reverse else position
            carry = run(carry, start, first_len, False)

        if n_full:

            def body(i, carry):
                position = (n_full - 1 - i) * chunk
                start = steps - position - chunk if plan.reverse else position
                return run(carry, start, chunk, False)

            carry = lax.fori_loop(0, n_full, body, carry)
    else:
        if n_full:

            def body(i, carry):
                position = first_len + (n_full - 1 - i) * chunk
                start = steps - position - chunk if plan.reverse else position
                return run(carry, start, chunk, False)

            carry = lax.fori_loop(0, n_full, body, carry)
        carry = run(carry, steps - first_len if plan.reverse else 0, first_len, True)
    dh, (dwi, dbi, dwh, dbhn), dx = carry
    d_weights = GRUWeights(
        input_kernel=jnp.concatenate(dwi, axis=-1).astype(weights.input_kernel.dtype),
        recurrent_kernel=jnp.concatenate(dwh, axis=-1).astype(weights.recurrent_kernel.dtype),
        input_bias=jnp.concatenate(dbi, axis=-1).astype(weights.input_bias.dtype),
        recurrent_bias=None
        if weights.recurrent_bias is None
        else jnp.concatenate([dbi[0], dbi[1], dbhn]).astype(weights.recurrent_bias.dtype),
    )
    return d_weights, dx.astype(x.dtype), jnp.concatenate(dh, axis=0).astype(h0.dtype)


# ------------------------------------------------------------------------- custom VJP


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def gru_sequence(weights: GRUWeights, x: Array, h0: Array, lengths: Array | None, plan: KernelPlan):
    """``(h_last f32[B, H], outputs)`` with outputs in the layout of ``x``."""
    sw = prepare_step_weights(weights, jnp.dtype(plan.compute_dtype))
    h_last, out, _ = _forward(sw, x, h0, lengths, plan)
    return h_last, out


def _gru_sequence_fwd(weights, x, h0, lengths, plan):
    weights, x, h0, lengths = jax.tree.map(
        lambda p: p.value,
        (weights, x, h0, lengths),
        is_leaf=lambda p: isinstance(p, CustomVJPPrimal),
    )
    sw = prepare_step_weights(weights, jnp.dtype(plan.compute_dtype))
    h_last, out, saved = _forward(sw, x, h0, lengths, plan, for_backward=True)
    kept_outputs = None if plan.remat else out
    return (h_last, out), (weights, x, h0, lengths, kept_outputs, saved)


def _gru_sequence_bwd(plan, residuals, cotangents):
    weights, x, h0, lengths, ys, saved = residuals
    dh_last, dys = cotangents
    sw = prepare_step_weights(weights, jnp.dtype(plan.compute_dtype))
    dh_last = jnp.zeros_like(h0) if isinstance(dh_last, SymbolicZero) else dh_last
    dys = None if isinstance(dys, SymbolicZero) else dys
    d_weights, dx, dh0 = _backward(sw, plan, weights, x, h0, lengths, ys, saved, dh_last, dys)
    return d_weights, dx, dh0, None


gru_sequence.defvjp(_gru_sequence_fwd, _gru_sequence_bwd, symbolic_zeros=True)
