"""The exact chunked backward pass of the fast GRU kernel and the ``custom_vjp`` that ties
it to the forward (:mod:`gru_jax.ops.gru_kernel`). Works in process order for all lanes
(directions x batch groups) at once; see the kernel module's docstring for the design."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from gru_jax.ops.gru_kernel import (
    KernelPlan,
    _chunk_accumulate,
    _chunk_read,
    _forward,
    _lane_slices,
    _steps,
    _time_of,
)
from gru_jax.ops.gru_math import (
    GRUWeights,
    StepResiduals,
    candidate_from_residuals,
    contract_leading,
    gru_step,
    gru_step_backward,
    matmul_transposed,
    prepare_step_weights,
    project_inputs,
    recompute_gates,
)

Array = jax.Array


def _replay(sws, plan, x_pres, h_starts, keeps, lanes):
    """Remat: re-runs a chunk's forward from its boundary states (process order) and
    returns per lane ``(h_prev, r, z, aux, n)`` stacks."""

    def step(states, inputs):
        new, out = [], []
        for lane, (d, *_rest) in enumerate(lanes):
            x_pre, keep = inputs[lane]
            h = states[lane]
            h_new, n, res = gru_step(h, x_pre, sws[d], plan.reset_after)
            if keep is not None:
                h_new = jnp.where(keep[:, None], h_new, h)
            new.append(h_new)
            out.append((h, res.reset, res.update, res.aux, n))
        return tuple(new), tuple(out)

    inputs = tuple(zip(x_pres, keeps))
    return lax.scan(step, tuple(h_starts), inputs, unroll=plan.unroll)[1]


def _chunk_backward(sws, plan, x, h0, lengths, ys, saved, dys, carry, position, length, is_first):
    """Backward over process positions ``[position, position+length)`` of every lane;
    returns the updated carry ``(dh per lane, grads per direction, dx)``."""
    dh_lanes, grads, dx = carry
    steps = _steps(x, plan)
    hidden = h0.shape[-1]
    lanes = _lane_slices(plan, hidden)
    positions = position + jnp.arange(length)
    x_chunks, y_prev_chunks = {}, {}
    x_pres, keeps, per_lane = [], [], []
    for d, rev, g, b0, bs, feature in lanes:
        if d not in x_chunks:
            x_chunks[d] = _chunk_read(x, position, length, rev, plan)
        if saved.projections is not None:
            x_pre = tuple(
                _chunk_read(p, position, length, rev, plan) for p in saved.projections[d][g]
            )
        else:
            x_pre = project_inputs(x_chunks[d][:, b0 : b0 + bs], sws[d])
        keep = None
        if lengths is not None:
            keep = _time_of(positions, rev, steps)[:, None] < lengths[None, b0 : b0 + bs]
        x_pres.append(x_pre)
        keeps.append(keep)
        if plan.remat:
            continue
        if d not in y_prev_chunks:
            cols = (feature, hidden)
            if is_first:  # position 0's previous state is the initial carry
                rest = _chunk_read(ys, 0, length - 1, rev, plan, cols)
                y_prev_chunks[d] = jnp.concatenate([h0[d][None], rest], axis=0)
            else:
                y_prev_chunks[d] = _chunk_read(ys, position - 1, length, rev, plan, cols)
        h_prev = y_prev_chunks[d][:, b0 : b0 + bs]
        if lengths is not None:
            # Outputs are zero at padded steps; the state there is still the initial carry.
            prev_time = _time_of(positions - 1, rev, steps)[:, None]
            prev_valid = (positions[:, None] >= 1) & (prev_time < lengths[None, b0 : b0 + bs])
            h_prev = jnp.where(prev_valid[..., None], h_prev, h0[d, b0 : b0 + bs][None])
        if saved.gates is not None:
            lane = len(per_lane)
            r, z, aux = (
                lax.dynamic_slice_in_dim(buf, position, length, 0) for buf in saved.gates[lane]
            )
            n = candidate_from_residuals(x_pre[2], StepResiduals(r, z, aux), plan.reset_after)
            per_lane.append((h_prev, r, z, aux, n))
        else:
            per_lane.append((h_prev, *recompute_gates(x_pre, h_prev, sws[d], plan.reset_after)))
    if plan.remat:
        slot = lax.dynamic_index_in_dim(saved.boundaries, position // plan.chunk_size, 0, False)
        h_starts = [slot[d, b0 : b0 + bs] for d, _, _, b0, bs, _ in lanes]
        per_lane = list(_replay(sws, plan, x_pres, h_starts, keeps, lanes))

    dys_lanes = [
        None
        if dys is None
        else _chunk_read(dys, position, length, rev, plan, (feature, hidden))[:, b0 : b0 + bs]
        for _, rev, _, b0, bs, feature in lanes
    ]

    def step(dhs, inputs):
        new_dh, outs = [], []
        for lane, (d, *_rest) in enumerate(lanes):
            keep, dy, (h_prev, r, z, aux, n) = inputs[lane]
            dh = dhs[lane]
            dh_new = dh if dy is None else dh + dy
            if keep is not None:
                dh_new = jnp.where(keep[:, None], dh_new, 0.0)
            dh_prev, gg = gru_step_backward(
                dh_new, h_prev, n, StepResiduals(r, z, aux), sws[d], plan.reset_after
            )
            if keep is not None:
                dh_prev = jnp.where(keep[:, None], dh_prev, dh)
            new_dh.append(dh_prev)
            outs.append((gg.input_grads, gg.recurrent_grads[2] if plan.reset_after else None))
        return tuple(new_dh), tuple(outs)

    inputs = tuple(zip(keeps, dys_lanes, per_lane))
    dh_lanes, outs = lax.scan(step, dh_lanes, inputs, reverse=True, unroll=plan.unroll)
    grads = list(grads)
    for lane, (d, rev, _, b0, bs, _) in enumerate(lanes):
        (dr, dz, dn), dhn = outs[lane]
        h_prev, r = per_lane[lane][0], per_lane[lane][1]
        n_input, d_n = (h_prev, dhn) if plan.reset_after else (r * h_prev, dn)
        x_c = x_chunks[d][:, b0 : b0 + bs]
        dwi, dbi, dwh, dbhn = grads[d]
        cd = plan.compute_dtype  # weight gradients: operands in the GEMMs' dtype
        dwh = (
            dwh[0] + contract_leading(h_prev, dr, cd),
            dwh[1] + contract_leading(h_prev, dz, cd),
            dwh[2] + contract_leading(n_input, d_n, cd),
        )
        dwi = tuple(a + contract_leading(x_c, v, cd) for a, v in zip(dwi, (dr, dz, dn)))
        dbi = tuple(a + jnp.sum(v, axis=(0, 1)) for a, v in zip(dbi, (dr, dz, dn)))
        if plan.reset_after:
            dbhn = dbhn + jnp.sum(dhn, axis=(0, 1))
        grads[d] = (dwi, dbi, dwh, dbhn)
        dx_block = sum(matmul_transposed(v, k) for v, k in zip((dr, dz, dn), sws[d].input_kernels))
        dx = _chunk_accumulate(dx, dx_block.astype(dx.dtype), position, rev, b0, plan)
    return dh_lanes, tuple(grads), dx


def _backward(sws, plan, weights, x, h0, lengths, ys, saved, dh_last, dys):
    steps = _steps(x, plan)
    num_dirs, _, hidden = h0.shape
    in_features = x.shape[-1]
    zeros3 = lambda shape: tuple(jnp.zeros(shape, jnp.float32) for _ in range(3))
    grads = tuple(
        (
            zeros3((in_features, hidden)),
            zeros3((hidden,)),
            zeros3((hidden, hidden)),
            jnp.zeros((hidden,), jnp.float32) if plan.reset_after else None,
        )
        for _ in range(num_dirs)
    )
    dh = tuple(dh_last[d, b0 : b0 + bs] for d, _, _, b0, bs, _ in _lane_slices(plan, hidden))
    carry = (dh, grads, jnp.zeros(x.shape, jnp.float32))
    run = functools.partial(_chunk_backward, sws, plan, x, h0, lengths, ys, saved, dys)
    chunk = plan.chunk_size if plan.remat else max(1, min(plan.chunk_size, steps))
    if plan.remat:  # chunks start at multiples of chunk (where boundaries were saved)
        n_full, tail = divmod(steps, chunk)
        if tail:
            carry = run(carry, n_full * chunk, tail, False)
        first_len, offset = 0, 0
    else:  # a first chunk [0, first_len) holding position 0, then full chunks
        n_full = (steps - 1) // chunk
        first_len = steps - n_full * chunk
        offset = first_len
    if n_full:

        def body(i, carry):
            return run(carry, offset + (n_full - 1 - i) * chunk, chunk, False)

        carry = lax.fori_loop(0, n_full, body, carry)
    if first_len:
        carry = run(carry, 0, first_len, True)
    dh, grads, dx = carry
    groups = len(plan.groups)
    dh0 = jnp.stack([jnp.concatenate(dh[d * groups : (d + 1) * groups]) for d in range(num_dirs)])
    d_weights = []
    for w, (dwi, dbi, dwh, dbhn) in zip(weights, grads):
        d_weights.append(
            GRUWeights(
                input_kernel=jnp.concatenate(dwi, axis=-1).astype(w.input_kernel.dtype),
                recurrent_kernel=jnp.concatenate(dwh, axis=-1).astype(w.recurrent_kernel.dtype),
                input_bias=jnp.concatenate(dbi, axis=-1).astype(w.input_bias.dtype),
                recurrent_bias=None
                if w.recurrent_bias is None
                else jnp.concatenate([dbi[0], dbi[1], dbhn]).astype(w.recurrent_bias.dtype),
            )
        )
    return tuple(d_weights), dx.astype(x.dtype), dh0.astype(h0.dtype)


def _prepare(weights, plan):
    return tuple(prepare_step_weights(w, jnp.dtype(plan.compute_dtype)) for w in weights)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def gru_sequence(
    weights: tuple[GRUWeights, ...], x: Array, h0: Array, lengths: Array | None, plan: KernelPlan
):
    """All directions of a (bi)directional GRU layer.

    weights: one :class:`GRUWeights` per direction; x: f32[B, T, I] (or [T, B, I] if
    ``plan.time_major``); h0: f32[D, B, H]; lengths: int32[B] or None. Returns
    ``(h_last f32[D, B, H], outputs f32[B, T, D*H])`` (outputs in the layout of x).
    """
    if plan.in_loop_inference:  # no gradient will be taken: no projections to keep
        plan = plan._replace(hoist_inputs=False, fuse_step_inputs=True)
    h_last, out, _ = _forward(_prepare(weights, plan), x, h0, lengths, plan)
    return h_last, out


def _gru_sequence_fwd(weights, x, h0, lengths, plan):
    weights, x, h0, lengths = jax.tree.map(
        lambda p: p.value,
        (weights, x, h0, lengths),
        is_leaf=lambda p: isinstance(p, CustomVJPPrimal),
    )
    h_last, out, saved = _forward(_prepare(weights, plan), x, h0, lengths, plan, for_backward=True)
    kept_outputs = None if plan.remat else out
    return (h_last, out), (weights, x, h0, lengths, kept_outputs, saved)


def _gru_sequence_bwd(plan, residuals, cotangents):
    weights, x, h0, lengths, ys, saved = residuals
    dh_last, dys = cotangents
    dh_last = jnp.zeros_like(h0) if isinstance(dh_last, SymbolicZero) else dh_last
    dys = None if isinstance(dys, SymbolicZero) else dys
    d_weights, dx, dh0 = _backward(
        _prepare(weights, plan), plan, weights, x, h0, lengths, ys, saved, dh_last, dys
    )
    return d_weights, dx, dh0, None


gru_sequence.defvjp(_gru_sequence_fwd, _gru_sequence_bwd, symbolic_zeros=True)
