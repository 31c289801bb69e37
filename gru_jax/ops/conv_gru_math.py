"""ConvGRU gate arithmetic on plain arrays: parameters, one step, the forward scan.

See :mod:`gru_jax.ops.conv_gru` for the equations and the choice of gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gru_jax.ops.conv_same import conv2d, conv2d_frames, conv2d_im2col
from gru_jax.ops.gru_math import StepResiduals, split_gates

Array = jax.Array
Gates3 = tuple[Array, Array, Array]


class ConvGRUWeights(NamedTuple):
    """Parameters of one ConvGRU direction, gate order (r, z, n) in the last axis.

    input_kernel: f32[kh, kw, C_in, 3 * C_hidden]
    recurrent_kernel: f32[kh', kw', C_hidden, 3 * C_hidden]
    input_bias: f32[3 * C_hidden]
    recurrent_bias: f32[3 * C_hidden] for reset_after=True (b_hr, b_hz, b_hn); None for the
      reset-before form (one bias per gate).
    """

    input_kernel: Array
    recurrent_kernel: Array
    input_bias: Array
    recurrent_bias: Array | None = None


class ConvStepWeights(NamedTuple):
    """Per-gate views of :class:`ConvGRUWeights`, prepared once outside the scan.

    input_biases fold b_hr and b_hz in (they enter the same sums); only b_hn stays
    separate, inside ``r ⊙ (W_hn * h + b_hn)``.
    """

    input_kernels: Gates3  # 3 x [kh, kw, C_in, C_hidden] in the compute dtype
    recurrent_kernels: Gates3  # 3 x [kh', kw', C_hidden, C_hidden] in the compute dtype
    input_biases: Gates3  # 3 x f32[C_hidden]
    candidate_bias: Array | None  # b_hn f32[C_hidden] (reset_after) or None


def prepare_conv_step_weights(weights: ConvGRUWeights, compute_dtype) -> ConvStepWeights:
    input_kernels = tuple(k.astype(compute_dtype) for k in split_gates(weights.input_kernel))
    recurrent_kernels = tuple(
        k.astype(compute_dtype) for k in split_gates(weights.recurrent_kernel)
    )
    b_ir, b_iz, b_in = split_gates(weights.input_bias.astype(jnp.float32))
    if weights.recurrent_bias is None:
        return ConvStepWeights(input_kernels, recurrent_kernels, (b_ir, b_iz, b_in), None)
    b_hr, b_hz, b_hn = split_gates(weights.recurrent_bias.astype(jnp.float32))
    return ConvStepWeights(input_kernels, recurrent_kernels, (b_ir + b_hr, b_iz + b_hz, b_in), b_hn)


class FusedConvStepWeights(NamedTuple):
    """:class:`ConvGRUWeights` prepared for the ``"im2col"`` step: one GEMM over the
    input's patches for all three gates, one over the state's for the gates that read
    ``h`` (all three with reset_after; r and z otherwise, the candidate's kernel then
    reads ``r ⊙ h``). Kernels stay HWIO (their windows are their shapes), gates side by
    side in the last axis; the biases as in :class:`ConvStepWeights`.
    """

    input_kernel: Array  # [kh, kw, C_in, 3 C] in the compute dtype
    recurrent_kernel: Array  # [kh', kw', C, 3 C] (reset_after) or [kh', kw', C, 2 C] (r, z)
    candidate_kernel: Array | None  # [kh', kw', C, C] (reset_before: W_hn on r ⊙ h) or None
    input_bias: Array  # f32[3 C]: b_ir + b_hr, b_iz + b_hz, b_in
    candidate_bias: Array | None  # b_hn f32[C] (reset_after) or None


def prepare_fused_conv_step_weights(weights: ConvGRUWeights, compute_dtype) -> FusedConvStepWeights:
    hidden = weights.recurrent_kernel.shape[-1] // 3
    input_kernel = weights.input_kernel.astype(compute_dtype)
    recurrent = weights.recurrent_kernel.astype(compute_dtype)
    bias = weights.input_bias.astype(jnp.float32)
    if weights.recurrent_bias is None:
        return FusedConvStepWeights(
            input_kernel, recurrent[..., : 2 * hidden], recurrent[..., 2 * hidden :], bias, None
        )
    recurrent_bias = weights.recurrent_bias.astype(jnp.float32)
    folded = bias + jnp.concatenate([recurrent_bias[: 2 * hidden], jnp.zeros(hidden)])
    return FusedConvStepWeights(input_kernel, recurrent, None, folded, recurrent_bias[2 * hidden :])


def input_biases(sw: ConvStepWeights | FusedConvStepWeights) -> Gates3:
    """The (r, z, n) input biases: the pre-activations of an all-zero input."""
    if isinstance(sw, FusedConvStepWeights):
        return split_gates(sw.input_bias)
    return sw.input_biases


def project_frames(x: Array, sw: ConvStepWeights | FusedConvStepWeights, conv=conv2d) -> Gates3:
    """Input pre-activations ``W_ig * x + b_ig`` for the three gates.

    x: [..., H, W, C_in] (any leading axes: all frames go through one convolution);
    returns 3 x f32[..., H, W, C_hidden]. With :class:`FusedConvStepWeights`, one patch
    GEMM for the three gates (``conv`` is then unused).
    """
    if isinstance(sw, FusedConvStepWeights):
        return split_gates(conv2d_frames(x, sw.input_kernel, conv2d_im2col) + sw.input_bias)
    return tuple(conv2d_frames(x, k, conv) + b for k, b in zip(sw.input_kernels, sw.input_biases))


def conv_gru_step(
    h: Array, x_pre: Gates3, sw: ConvStepWeights, reset_after: bool, conv=conv2d
) -> tuple[Array, Array, StepResiduals]:
    """One ConvGRU step from the input pre-activations ``x_pre`` (r, z, n).

    h: f32[B, H, W, C_hidden]; x_pre: 3 x f32[B, H, W, C_hidden]. Returns
    ``(h_new, candidate n, residuals)`` where residuals hold (r, z, aux) with aux =
    ``W_hn * h + b_hn`` (reset_after) or ``n`` (reset_before).
    """
    if isinstance(sw, FusedConvStepWeights):
        return _fused_step(h, x_pre, sw, reset_after)
    w_r, w_z, w_n = sw.recurrent_kernels
    x_r, x_z, x_n = x_pre
    r = jax.nn.sigmoid(x_r + conv(h, w_r))
    z = jax.nn.sigmoid(x_z + conv(h, w_z))
    if reset_after:
        hn = conv(h, w_n) + sw.candidate_bias
        n = jnp.tanh(x_n + r * hn)
        aux = hn
    else:
        n = jnp.tanh(x_n + conv(r * h, w_n))
        aux = n
    h_new = n + z * (h - n)
    return h_new, n, StepResiduals(r, z, aux)


def _fused_step(h: Array, x_pre: Gates3, sw: FusedConvStepWeights, reset_after: bool):
    """:func:`conv_gru_step` with the state's gate convolutions as one patch GEMM."""
    x_r, x_z, x_n = x_pre
    hidden = h.shape[-1]
    state = conv2d_im2col(h, sw.recurrent_kernel)  # [..., 3C] or [..., 2C]
    r = jax.nn.sigmoid(x_r + state[..., :hidden])
    z = jax.nn.sigmoid(x_z + state[..., hidden : 2 * hidden])
    if reset_after:
        hn = state[..., 2 * hidden :] + sw.candidate_bias
        n = jnp.tanh(x_n + r * hn)
        aux = hn
    else:
        n = jnp.tanh(x_n + conv2d_im2col(r * h, sw.candidate_kernel))
        aux = n
    h_new = n + z * (h - n)
    return h_new, n, StepResiduals(r, z, aux)


class ScanConfig(NamedTuple):
    """Static (hashable) options of one ConvGRU scan."""

    reset_after: bool = True
    reverse: bool = False
    unroll: int = 1
    compute_dtype: str = "float32"
    hoist_inputs: bool = False
    gradient: str = "stepwise"


def forward_scan(
    sw: ConvStepWeights,
    x: Array,
    h0: Array,
    mask: Array | None,
    cfg: ScanConfig,
    collect_gates: bool = False,
    conv=conv2d,
    x_pre: Gates3 | None = None,
):
    """Forward scan. x: [T, B, H, W, C_in] time-major; h0: f32[B, H, W, C_hidden];
    mask: bool[T, B] or None; x_pre: the inputs' pre-activations if already computed
    (3 x f32[T, B, H, W, C_hidden]). Returns ``(h_last, ys)`` or
    ``(h_last, (ys, gates))``."""
    hoisted = x_pre is not None or cfg.hoist_inputs
    if x_pre is None and cfg.hoist_inputs:
        x_pre = project_frames(x, sw, conv)
    x_in = x_pre if hoisted else x

    def step(h, inputs):
        x_t, m_t = inputs
        x_pre_t = x_t if hoisted else project_frames(x_t, sw, conv)
        h_new, n, res = conv_gru_step(h, x_pre_t, sw, cfg.reset_after, conv)
        if m_t is None:
            y, h_next = h_new, h_new
        else:
            keep = m_t[:, None, None, None]
            y = jnp.where(keep, h_new, 0.0)
            h_next = jnp.where(keep, h_new, h)
        if collect_gates:
            gates = (res.reset, res.update, n)
            if m_t is not None:
                gates = tuple(jnp.where(keep, g, 0.0) for g in gates)
            return h_next, (y, gates)
        return h_next, y

    return lax.scan(step, h0, (x_in, mask), reverse=cfg.reverse, unroll=cfg.unroll)


def lengths_to_mask(seq_lengths: Array, steps: int) -> Array:
    """bool[T, B]: True where ``t < seq_lengths[b]`` (time-major)."""
    return jnp.arange(steps)[:, None] < seq_lengths[None, :]
