"""The GRU over a sequence: ``jax.lax.scan`` over :func:`gru_step`, with an exact custom
backward pass.

Why a custom VJP (measured, see ``benchmarks/README.md``): autodiff of ``lax.scan`` saves
several per-step residual arrays and forms the weight gradients with a small GEMM every
step. Here the forward saves nothing but its outputs (which it must return anyway): the
backward walks the sequence in chunks of ``chunk_size`` steps, recomputes the chunk's gates
from the saved outputs with a few large batched GEMMs (all ``h_prev`` of a chunk are known,
so this is parallel, not sequential), runs the sequential gradient recurrence over the
chunk, and forms the chunk's weight gradients with one large GEMM. Chunk buffers are
reused across chunks, so the backward allocates no ``[time, batch, hidden]`` temporaries
besides the input gradient.

Variable lengths use a prefix mask (padding at the end). Masked steps leave the carry
untouched and output zeros; with ``reverse=True`` each sequence's valid part is processed
from its own end (PyTorch PackedSequence semantics), because the scan starts at the padded
end, where the masked steps keep the initial carry.
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
    StepWeights,
    contract_leading,
    gru_step,
    gru_step_backward,
    matmul,
    matmul_transposed,
    prepare_step_weights,
    project_inputs,
)

Array = jax.Array

# Input feature sizes at or above this are projected for all steps at once (one large
# GEMM before the scan); smaller inputs are projected inside the step, which avoids three
# [time, batch, hidden] temporaries. Measured on XLA CPU; see benchmarks/README.md.
HOIST_MIN_FEATURES = 64


class ScanConfig(NamedTuple):
    """Static (hashable) options of one scan."""

    reset_after: bool = True
    reverse: bool = False
    unroll: int = 1
    compute_dtype: str = "float32"
    hoist_inputs: bool = False
    chunk_size: int = 16


def _prev_time_slice(
    seq: Array, start, length: int, boundary: Array, reverse: bool, is_first: bool
) -> Array:
    """``seq`` shifted by one step against the processing direction, for times
    ``[start, start + length)``; the position before the first processed step is
    ``boundary`` (e.g. the initial carry). ``is_first`` chunks contain that position."""
    if not is_first:
        shift = 1 if reverse else -1
        return lax.dynamic_slice_in_dim(seq, start + shift, length, axis=0)
    if reverse:  # times [T - length, T): previous of t is t + 1, previous of T - 1 is boundary
        return jnp.concatenate([seq[seq.shape[0] - length + 1 :], boundary[None]], axis=0)
    return jnp.concatenate([boundary[None], seq[: length - 1]], axis=0)


def _forward(sw: StepWeights, x: Array, h0: Array, mask: Array | None, cfg: ScanConfig,
             collect_gates: bool = False):
    """Plain forward scan. x: [T, B, I] time-major; mask: bool[T, B] or None."""
    x_in = project_inputs(x, sw) if cfg.hoist_inputs else x

    def step(h, inputs):
        x_t, m_t = inputs
        x_pre = x_t if cfg.hoist_inputs else project_inputs(x_t, sw)
        h_new, n, res = gru_step(h, x_pre, sw, cfg.reset_after)
        if m_t is None:
            y, h_next = h_new, h_new
        else:
            keep = m_t[:, None]
            y = jnp.where(keep, h_new, 0.0)
            h_next = jnp.where(keep, h_new, h)
        if collect_gates:
            gates = (res.reset, res.update, n)
            if m_t is not None:
                gates = tuple(jnp.where(m_t[:, None], g, 0.0) for g in gates)
            return h_next, (y, gates)
        return h_next, y

    return lax.scan(step, h0, (x_in, mask), reverse=cfg.reverse, unroll=cfg.unroll)


def _chunk_backward(sw, cfg, x, h0, mask, ys, dys, dh, start, length, is_first):
    """Backward over times ``[start, start + length)``. Returns
    ``(dh, weight_grads, dx_chunk)``; weight_grads = (dWi[3], dbi[3], dWh[3], dbhn)."""
    reverse, reset_after = cfg.reverse, cfg.reset_after
    x_c = lax.dynamic_slice_in_dim(x, start, length, axis=0)
    h_prev = _prev_time_slice(ys, start, length, h0, reverse, is_first)
    m_c = None
    if mask is not None:
        m_c = lax.dynamic_slice_in_dim(mask, start, length, axis=0)
        prev_valid = _prev_time_slice(mask, start, length, jnp.zeros_like(mask[0]), reverse,
                                      is_first)
        # Outputs are zero at padded steps; the state there is still the initial carry.
        h_prev = jnp.where(prev_valid[..., None], h_prev, h0[None])
    dy_c = None if dys is None else lax.dynamic_slice_in_dim(dys, start, length, axis=0)

    # Recompute the chunk's gates with batched GEMMs: every h_prev of the chunk is known.
    x_r, x_z, x_n = project_inputs(x_c, sw)
    w_r, w_z, w_n = sw.recurrent_kernels
    r = jax.nn.sigmoid(x_r + matmul(h_prev, w_r))
    z = jax.nn.sigmoid(x_z + matmul(h_prev, w_z))
    if reset_after:
        aux = matmul(h_prev, w_n) + sw.candidate_bias
        n = jnp.tanh(x_n + r * aux)
    else:
        n = jnp.tanh(x_n + matmul(r * h_prev, w_n))
        aux = n

    def step(dh, inputs):
        dy_t, m_t, hp, r_t, z_t, aux_t, n_t = inputs
        dh_new = dh if dy_t is None else dh + dy_t
        if m_t is not None:
            dh_new = jnp.where(m_t[:, None], dh_new, 0.0)
        dh_prev, grads = gru_step_backward(
            dh_new, hp, n_t, StepResiduals(r_t, z_t, aux_t), sw, reset_after
        )
        if m_t is not None:
            dh_prev = jnp.where(m_t[:, None], dh_prev, dh)
        extra = grads.recurrent_grads[2] if reset_after else None
        return dh_prev, (grads.input_grads, extra)

    dh, (d_in, d_hn) = lax.scan(
        step, dh, (dy_c, m_c, h_prev, r, z, aux, n), reverse=not reverse, unroll=cfg.unroll
    )
    dr, dz, dn = d_in
    n_gate_input = h_prev if reset_after else r * h_prev
    d_rec_n = d_hn if reset_after else dn
    dwh = (
        contract_leading(h_prev, dr),
        contract_leading(h_prev, dz),
        contract_leading(n_gate_input, d_rec_n),
    )
    dwi = tuple(contract_leading(x_c, d) for d in d_in)
    dbi = tuple(jnp.sum(d, axis=(0, 1)) for d in d_in)
    dbhn = jnp.sum(d_hn, axis=(0, 1)) if reset_after else None
    dx_c = sum(matmul_transposed(d, k) for d, k in zip(d_in, sw.input_kernels))
    return dh, (dwi, dbi, dwh, dbhn), dx_c


def _tree_add(a, b):
    return jax.tree.map(lambda u, v: u + v, a, b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _gru_core(weights: GRUWeights, x: Array, h0: Array, mask: Array | None, cfg: ScanConfig):
    sw = prepare_step_weights(weights, jnp.dtype(cfg.compute_dtype))
    return _forward(sw, x, h0, mask, cfg)


def _gru_core_fwd(weights, x, h0, mask, cfg):
    weights, x, h0, mask = jax.tree.map(
        lambda p: p.value, (weights, x, h0, mask), is_leaf=lambda p: isinstance(p, CustomVJPPrimal)
    )
    h_last, ys = _gru_core(weights, x, h0, mask, cfg)
    return (h_last, ys), (weights, x, h0, mask, ys)


def _gru_core_bwd(cfg, residuals, cotangents):
    weights, x, h0, mask, ys = residuals
    dh_last, dys = cotangents
    sw = prepare_step_weights(weights, jnp.dtype(cfg.compute_dtype))
    steps = x.shape[0]
    dh = jnp.zeros_like(h0) if isinstance(dh_last, SymbolicZero) else dh_last
    dys = None if isinstance(dys, SymbolicZero) else dys
    chunk = max(1, min(cfg.chunk_size, steps))
    n_full = (steps - 1) // chunk  # full chunks after the first (in processing order)
    first_len = steps - n_full * chunk
    run = functools.partial(_chunk_backward, sw, cfg, x, h0, mask, ys, dys)

    def zeros_like_grads():
        h = h0.shape[-1]
        z3 = lambda shape: tuple(jnp.zeros(shape, jnp.float32) for _ in range(3))
        bhn = jnp.zeros((h,), jnp.float32) if cfg.reset_after else None
        return (z3((x.shape[-1], h)), z3((h,)), z3((h, h)), bhn)

    grads = zeros_like_grads()
    dx = jnp.zeros(x.shape, jnp.float32)
    if n_full:

        def body(i, carry):
            dh, grads, dx = carry
            # Processing positions [first_len + k*chunk, ...), walked backwards.
            position = first_len + (n_full - 1 - i) * chunk
            start = steps - position - chunk if cfg.reverse else position
            dh, g, dx_c = run(dh, start, chunk, False)
            dx = lax.dynamic_update_slice_in_dim(dx, dx_c, start, axis=0)
            return dh, _tree_add(grads, g), dx

        dh, grads, dx = lax.fori_loop(0, n_full, body, (dh, grads, dx))
    start = steps - first_len if cfg.reverse else 0
    dh, g, dx_c = run(dh, start, first_len, True)
    grads = _tree_add(grads, g)
    dx = lax.dynamic_update_slice_in_dim(dx, dx_c, start, axis=0)

    dwi, dbi, dwh, dbhn = grads
    d_weights = GRUWeights(
        input_kernel=jnp.concatenate(dwi, axis=-1).astype(weights.input_kernel.dtype),
        recurrent_kernel=jnp.concatenate(dwh, axis=-1).astype(weights.recurrent_kernel.dtype),
        input_bias=jnp.concatenate(dbi, axis=-1).astype(weights.input_bias.dtype),
        recurrent_bias=None
        if weights.recurrent_bias is None
        else jnp.concatenate([dbi[0], dbi[1], dbhn]).astype(weights.recurrent_bias.dtype),
    )
    return d_weights, dx.astype(x.dtype), dh.astype(h0.dtype), None


_gru_core.defvjp(_gru_core_fwd, _gru_core_bwd, symbolic_zeros=True)


def lengths_to_mask(seq_lengths: Array, steps: int) -> Array:
    """bool[T, B]: True where ``t < seq_lengths[b]`` (time-major)."""
    return jnp.arange(steps)[:, None] < seq_lengths[None, :]


def gru_scan(
    weights: GRUWeights,
    inputs: Array,
    initial_carry: Array,
    seq_lengths: Array | None = None,
    *,
    time_major: bool = False,
    reset_after: bool = True,
    reverse: bool = False,
    unroll: int = 1,
    compute_dtype=jnp.float32,
    hoist_inputs: bool | None = None,
    chunk_size: int = 16,
    return_gates: bool = False,
    custom_gradient: bool = True,
):
    """Runs a GRU over a time-major sequence.

    Args:
      weights: :class:`GRUWeights` (gate order r, z, n).
      inputs: f32[batch, time, in_features] (f32[time, batch, in_features] if
        ``time_major``).
      initial_carry: f32[batch, hidden].
      seq_lengths: int[batch] valid lengths (padding at the end) or None.
      reset_after: cuDNN/PyTorch form (True) or the reset-before form (False).
      reverse: process each sequence's valid part from its end.
      unroll: ``lax.scan`` unroll factor (forward and backward recurrences).
      compute_dtype: dtype of the GEMM operands (e.g. bfloat16); gates, state and
        accumulation stay float32.
      hoist_inputs: project all steps' inputs before the scan (None: when
        ``in_features >= HOIST_MIN_FEATURES``).
      chunk_size: steps per chunk of the custom backward pass.
      return_gates: also return the per-step (r, z, n), each f32[time, batch, hidden]
        (zero at padded steps). Uses plain autodiff.
      custom_gradient: use the chunked custom backward (True) or autodiff of the scan.

    Returns:
      ``(final_carry f32[batch, hidden], outputs f32[batch, time, hidden])`` (outputs
      time-major if ``time_major``), plus ``gates`` (r, z, n) in the outputs' layout when
      ``return_gates``. Outputs at padded steps are exactly zero and the
      final carry is the state after each sequence's last valid step.
    """
    if not time_major:
        inputs = jnp.swapaxes(inputs, 0, 1)
    steps = inputs.shape[0]
    if hoist_inputs is None:
        hoist_inputs = inputs.shape[-1] >= HOIST_MIN_FEATURES
    cfg = ScanConfig(
        reset_after=bool(reset_after),
        reverse=bool(reverse),
        unroll=int(unroll) if not isinstance(unroll, bool) else (steps if unroll else 1),
        compute_dtype=jnp.dtype(compute_dtype).name,
        hoist_inputs=bool(hoist_inputs),
        chunk_size=int(chunk_size),
    )
    mask = None if seq_lengths is None else lengths_to_mask(seq_lengths, steps)

    def to_layout(y):
        return y if time_major else jnp.swapaxes(y, 0, 1)

    initial_carry = initial_carry.astype(jnp.float32)
    if return_gates or not custom_gradient:
        sw = prepare_step_weights(weights, jnp.dtype(cfg.compute_dtype))
        carry, out = _forward(sw, inputs, initial_carry, mask, cfg, collect_gates=return_gates)
        if return_gates:
            ys, gates = out
            return carry, to_layout(ys), tuple(to_layout(g) for g in gates)
        return carry, to_layout(out)
    carry, ys = _gru_core(weights, inputs, initial_carry, mask, cfg)
    return carry, to_layout(ys)
