"""The ``"deferred"`` ConvGRU gradient: a custom VJP of the whole recurrence.

Forward: the scan over the inputs' pre-activations (all frames convolved at once), which
also stacks each step's gates (r, z and ``W_hn * h + b_hn`` or n).

Backward:

1. rebuild every step's previous state from the outputs (padded steps and the sequence
   start read the initial carry);
2. run only the sequential part in a reverse scan: per step, elementwise gate gradients
   and the state gradient ``dh_prev = z ⊙ dh + sum_g W_hg^T * d_g`` (input-gradient
   convolutions only); the per-step gate gradients are stacked;
3. after the scan, form every kernel gradient (recurrent and input), the biases' and the
   input gradient from the stacked gate gradients, with convolutions over all
   ``time * batch`` frames.

Recomputing the gates in the backward with batched convolutions (as
:mod:`gru_jax.ops.gru_scan` does for the GRU) instead of saving them measured 10-25%
slower here: one more convolution per gate and frame costs more than the saved stacks.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from gru_jax.ops.conv_gru_math import (
    ConvGRUWeights,
    ScanConfig,
    conv_gru_step,
    forward_scan,
    prepare_conv_step_weights,
    project_frames,
)
from gru_jax.ops.conv_same import (
    conv2d_input_grad,
    conv2d_kernel_grad,
    conv2d_xla,
    flip_kernel,
)

Array = jax.Array


def previous_states(ys: Array, h0: Array, mask: Array | None, reverse: bool) -> Array:
    """The state each step starts from, f32[T, B, H, W, C] (time-major): the previous
    output in processing order, or ``h0`` at the sequence start and where the previous
    step is padding (outputs are zero there; the state is still the initial carry)."""
    if reverse:
        shifted = jnp.concatenate([ys[1:], h0[None]], axis=0)
    else:
        shifted = jnp.concatenate([h0[None], ys[:-1]], axis=0)
    if mask is None:
        return shifted
    edge = jnp.zeros_like(mask[:1])
    prev_valid = (
        jnp.concatenate([mask[1:], edge], axis=0)
        if reverse
        else jnp.concatenate([edge, mask[:-1]], axis=0)
    )
    return jnp.where(prev_valid[..., None, None, None], shifted, h0[None])


def _step_backward(dh_new, h_prev, r, z, aux, n, flipped: tuple, reset_after: bool):
    """Exact backward of :func:`gru_jax.ops.conv_gru.conv_gru_step` for ``dh_new``:
    returns ``(dh_prev, (dr_pre, dz_pre, dn_pre))``. ``flipped``: the recurrent kernels
    (r, z, n) as :func:`flip_kernel` returns them."""
    w_r, w_z, w_n = flipped
    dz = dh_new * (h_prev - n) * z * (1.0 - z)
    dn = dh_new * (1.0 - z) * (1.0 - n * n)
    dh_prev = dh_new * z
    if reset_after:
        dr = dn * aux * r * (1.0 - r)
        dh_prev = dh_prev + conv2d_input_grad(dn * r, w_n, w_n)
    else:
        d_reset_state = conv2d_input_grad(dn, w_n, w_n)
        dr = d_reset_state * h_prev * r * (1.0 - r)
        dh_prev = dh_prev + d_reset_state * r
    dh_prev = dh_prev + conv2d_input_grad(dr, w_r, w_r) + conv2d_input_grad(dz, w_z, w_z)
    return dh_prev, (dr, dz, dn)


def _forward_saving_gates(sw, x_pre, h0, mask, cfg):
    """The forward scan that also stacks each step's (r, z, aux)."""

    def step(h, inputs):
        x_t, m_t = inputs
        h_new, _, res = conv_gru_step(h, x_t, sw, cfg.reset_after, conv2d_xla)
        if m_t is None:
            return h_new, (h_new, res)
        keep = m_t[:, None, None, None]
        return jnp.where(keep, h_new, h), (jnp.where(keep, h_new, 0.0), res)

    return lax.scan(step, h0, (x_pre, mask), reverse=cfg.reverse, unroll=cfg.unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def deferred_conv_gru(
    weights: ConvGRUWeights, x: Array, h0: Array, mask: Array | None, cfg: ScanConfig
):
    """``(h_last, ys)`` of the ConvGRU over time-major ``x`` [T, B, H, W, C_in] with the
    deferred custom backward. mask: bool[T, B] or None; ``cfg`` is static."""
    sw = prepare_conv_step_weights(weights, jnp.dtype(cfg.compute_dtype))
    x_pre = project_frames(x, sw, conv2d_xla)
    return forward_scan(sw, x, h0, mask, cfg, conv=conv2d_xla, x_pre=x_pre)


def _fwd(weights, x, h0, mask, cfg):
    weights, x, h0, mask = jax.tree.map(
        lambda p: p.value,
        (weights, x, h0, mask),
        is_leaf=lambda p: isinstance(p, CustomVJPPrimal),
    )
    sw = prepare_conv_step_weights(weights, jnp.dtype(cfg.compute_dtype))
    # The projection is materialised for the scan anyway: keep it for the backward.
    x_pre = project_frames(x, sw, conv2d_xla)
    h_last, (ys, gates) = _forward_saving_gates(sw, x_pre, h0, mask, cfg)
    # reset_after rebuilds n = tanh(x_n + r * hn) elementwise; reset_before saved n.
    x_n = x_pre[2] if cfg.reset_after else None
    return (h_last, ys), (weights, x, h0, mask, x_n, ys, gates)


def _bwd(cfg, residuals, cotangents):
    weights, x, h0, mask, x_n, ys, gates = residuals
    dh_last, dys = cotangents
    reset_after = cfg.reset_after
    sw = prepare_conv_step_weights(weights, jnp.dtype(cfg.compute_dtype))
    dh = jnp.zeros_like(h0) if isinstance(dh_last, SymbolicZero) else dh_last
    dys = None if isinstance(dys, SymbolicZero) else dys

    # 1. Every step's previous state and gates, as [T, B, H, W, C_hidden] stacks.
    h_prev = previous_states(ys, h0, mask, cfg.reverse)
    r, z, aux = gates
    n = jnp.tanh(x_n + r * aux) if reset_after else aux
    flipped = tuple(flip_kernel(k) for k in sw.recurrent_kernels)

    # 2. The sequential part: only the state gradient.
    def step(dh, inputs):
        dy_t, m_t, hp, r_t, z_t, aux_t, n_t = inputs
        dh_new = dh if dy_t is None else dh + dy_t
        if m_t is not None:
            keep = m_t[:, None, None, None]
            dh_new = jnp.where(keep, dh_new, 0.0)
        dh_prev, gate_grads = _step_backward(dh_new, hp, r_t, z_t, aux_t, n_t, flipped, reset_after)
        if m_t is not None:
            dh_prev = jnp.where(keep, dh_prev, dh)
        return dh_prev, gate_grads

    dh, (dr, dz, dn) = lax.scan(
        step, dh, (dys, mask, h_prev, r, z, aux, n), reverse=not cfg.reverse, unroll=cfg.unroll
    )

    # 3. Kernel, bias and input gradients from the stacked gate gradients.
    def flat(a):
        return a.reshape((-1, *a.shape[2:]))

    compute_dtype = jnp.dtype(cfg.compute_dtype)
    h_flat = flat(h_prev).astype(compute_dtype)
    rec_kernel_size = weights.recurrent_kernel.shape[:2]
    in_kernel_size = weights.input_kernel.shape[:2]
    d_in = (dr, dz, dn)
    if reset_after:
        d_candidate = dn * r
        n_input = h_flat
    else:
        d_candidate = dn
        n_input = flat(r * h_prev).astype(compute_dtype)
    d_recurrent = (
        conv2d_kernel_grad(h_flat, flat(dr), rec_kernel_size),
        conv2d_kernel_grad(h_flat, flat(dz), rec_kernel_size),
        conv2d_kernel_grad(n_input, flat(d_candidate), rec_kernel_size),
    )
    x_flat = flat(x).astype(compute_dtype)
    d_input = tuple(conv2d_kernel_grad(x_flat, flat(d), in_kernel_size) for d in d_in)
    d_bias = tuple(jnp.sum(d, axis=(0, 1, 2, 3)) for d in d_in)
    dx = sum(conv2d_input_grad(flat(d), k) for d, k in zip(d_in, sw.input_kernels))

    d_weights = ConvGRUWeights(
        input_kernel=jnp.concatenate(d_input, axis=-1).astype(weights.input_kernel.dtype),
        recurrent_kernel=jnp.concatenate(d_recurrent, axis=-1).astype(
            weights.recurrent_kernel.dtype
        ),
        input_bias=jnp.concatenate(d_bias).astype(weights.input_bias.dtype),
        recurrent_bias=None
        if weights.recurrent_bias is None
        else jnp.concatenate(
            [d_bias[0], d_bias[1], jnp.sum(d_candidate, axis=(0, 1, 2, 3))]
        ).astype(weights.recurrent_bias.dtype),
    )
    return d_weights, dx.reshape(x.shape).astype(x.dtype), dh.astype(h0.dtype), None


deferred_conv_gru.defvjp(_fwd, _bwd, symbolic_zeros=True)
