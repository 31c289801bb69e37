"""GRU gate arithmetic on plain arrays: one forward step, its exact backward, and the
weight container shared by every layer.

Gate order everywhere in gru_jax is PyTorch's: reset ``r``, update ``z``, candidate ``n``.
Fused kernels are stored ``[features, 3 * hidden]`` with the three gate blocks side by side;
the hot loops never slice a fused buffer, though. On XLA CPU a fusion that reads several
slices of one operand runs ~9x slower than the same fusion over separate operands (see
``benchmarks/README.md``), so the kernels are split into per-gate ``[features, hidden]``
arrays once, outside the scan, and every per-step quantity lives in its own buffer.

reset_after=True (cuDNN / PyTorch / Keras default)::

    r = sigmoid(x W_ir + b_ir + h W_hr + b_hr)
    z = sigmoid(x W_iz + b_iz + h W_hz + b_hz)
    n = tanh(x W_in + b_in + r * (h W_hn + b_hn))
    h' = z * h + (1 - z) * n

reset_after=False (Cho et al. 2014, Keras ``reset_after=False``)::

    z = sigmoid(x W_xz + h W_hz + b_z)
    r = sigmoid(x W_xr + h W_hr + b_r)
    n = tanh(x W_xn + (r * h) W_hn + b_n)
    h' = z * h + (1 - z) * n
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
Gates3 = tuple[Array, Array, Array]


class GRUWeights(NamedTuple):
    """Parameters of one GRU direction, gate order (r, z, n).

    input_kernel: f32[in_features, 3 * hidden]
    recurrent_kernel: f32[hidden, 3 * hidden]
    input_bias: f32[3 * hidden]
    recurrent_bias: f32[3 * hidden] for reset_after=True (b_hr, b_hz, b_hn); None for the
      reset-before form, which has a single bias per gate.
    """

    input_kernel: Array
    recurrent_kernel: Array
    input_bias: Array
    recurrent_bias: Array | None = None


def split_gates(fused: Array) -> Gates3:
    """Splits the last axis ``3 * hidden`` into the (r, z, n) blocks."""
    hidden = fused.shape[-1] // 3
    return tuple(fused[..., g * hidden : (g + 1) * hidden] for g in range(3))


class StepWeights(NamedTuple):
    """Per-gate views of GRUWeights, prepared once outside the scan.

    input_bias folds the recurrent r and z biases in (they are added to the same sum), so
    only b_hn is applied inside the step, and only in the reset_after form.
    """

    input_kernels: Gates3  # 3 x [in_features, hidden], already in the compute dtype
    recurrent_kernels: Gates3  # 3 x [hidden, hidden], already in the compute dtype
    input_biases: Gates3  # 3 x [hidden], float32
    candidate_bias: Array | None  # b_hn: [hidden] (reset_after) or None


def prepare_step_weights(weights: GRUWeights, compute_dtype) -> StepWeights:
    input_kernels = tuple(k.astype(compute_dtype) for k in split_gates(weights.input_kernel))
    recurrent_kernels = tuple(
        k.astype(compute_dtype) for k in split_gates(weights.recurrent_kernel)
    )
    b_ir, b_iz, b_in = split_gates(weights.input_bias.astype(jnp.float32))
    if weights.recurrent_bias is None:
        return StepWeights(input_kernels, recurrent_kernels, (b_ir, b_iz, b_in), None)
    b_hr, b_hz, b_hn = split_gates(weights.recurrent_bias.astype(jnp.float32))
    return StepWeights(input_kernels, recurrent_kernels, (b_ir + b_hr, b_iz + b_hz, b_in), b_hn)


def matmul(a: Array, kernel: Array) -> Array:
    """``a @ kernel`` over the last axis of ``a``, operands in the kernel's dtype, f32 result."""
    return jax.lax.dot_general(
        a.astype(kernel.dtype),
        kernel,
        (((a.ndim - 1,), (0,)), ((), ())),
        preferred_element_type=jnp.float32,
    )


def matmul_transposed(a: Array, kernel: Array) -> Array:
    """``a @ kernel.T`` over the last axis of ``a`` (backward through ``matmul``)."""
    return jax.lax.dot_general(
        a.astype(kernel.dtype),
        kernel,
        (((a.ndim - 1,), (1,)), ((), ())),
        preferred_element_type=jnp.float32,
    )


def contract_leading(a: Array, b: Array, operand_dtype=None) -> Array:
    """``sum over all leading axes of a[..., i] * b[..., j]`` -> ``[i, j]``, f32 accumulate.

    Deferred weight gradients: one large GEMM over (time, batch) instead of a small one per
    step. ``operand_dtype`` (None: ``b``'s): both operands are rounded to it, as every other
    GEMM of the layer rounds its operands to the compute dtype (bfloat16 weight gradients
    run at the bfloat16 GEMM rate; the sum stays float32).
    """
    operand_dtype = b.dtype if operand_dtype is None else jnp.dtype(operand_dtype)
    axes = tuple(range(a.ndim - 1))
    return jax.lax.dot_general(
        a.astype(operand_dtype),
        b.astype(operand_dtype),
        ((axes, axes), ((), ())),
        preferred_element_type=jnp.float32,
    )


def project_inputs(x: Array, sw: StepWeights) -> Gates3:
    """Input pre-activations ``x W_ig + b_ig`` for the three gates (any leading axes)."""
    return tuple(matmul(x, k) + b for k, b in zip(sw.input_kernels, sw.input_biases))


class StepResiduals(NamedTuple):
    """What one step's backward needs besides ``h_prev``: the gates and, for reset_after,
    ``hn = h W_hn + b_hn`` (for reset_before the slot holds the candidate ``n``)."""

    reset: Array
    update: Array
    aux: Array


def gru_step(
    h: Array, x_pre: Gates3, sw: StepWeights, reset_after: bool
) -> tuple[Array, Array, StepResiduals]:
    """One GRU step from input pre-activations ``x_pre`` (r, z, n), each ``[batch, hidden]``.

    Returns ``(h_new, candidate, residuals)``.
    """
    w_r, w_z, w_n = sw.recurrent_kernels
    x_r, x_z, x_n = x_pre
    r = jax.nn.sigmoid(x_r + matmul(h, w_r))
    z = jax.nn.sigmoid(x_z + matmul(h, w_z))
    if reset_after:
        hn = matmul(h, w_n) + sw.candidate_bias
        n = jnp.tanh(x_n + r * hn)
        aux = hn
    else:
        n = jnp.tanh(x_n + matmul(r * h, w_n))
        aux = n
    h_new = n + z * (h - n)
    return h_new, n, StepResiduals(r, z, aux)


def candidate_from_residuals(x_n: Array, res: StepResiduals, reset_after: bool) -> Array:
    """Recomputes the candidate ``n`` cheaply (elementwise) from the saved residuals."""
    return jnp.tanh(x_n + res.reset * res.aux) if reset_after else res.aux


def recompute_gates(
    x_pre: Gates3, h_prev: Array, sw: StepWeights, reset_after: bool
) -> tuple[Array, Array, Array, Array]:
    """``(r, z, aux, n)`` of many steps at once from known ``h_prev`` (any leading axes):
    the backward pass's batched recomputation of the forward's gates."""
    x_r, x_z, x_n = x_pre
    w_r, w_z, w_n = sw.recurrent_kernels
    r = jax.nn.sigmoid(x_r + matmul(h_prev, w_r))
    z = jax.nn.sigmoid(x_z + matmul(h_prev, w_z))
    if reset_after:
        aux = matmul(h_prev, w_n) + sw.candidate_bias
        return r, z, aux, jnp.tanh(x_n + r * aux)
    n = jnp.tanh(x_n + matmul(r * h_prev, w_n))
    return r, z, n, n


class GateGrads(NamedTuple):
    """Gradients w.r.t. the pre-activations of one step.

    input_grads: (d r_pre, d z_pre, d n_pre), the gradients of ``x W_ig + b_ig``.
    recurrent_grads: the gradients of ``h W_hg`` (reset_after: (dr, dz, dn * r); reset_before:
      (dr, dz, dn) with the n-gate GEMM input being ``r * h``).
    """

    input_grads: Gates3
    recurrent_grads: Gates3


def gru_step_backward(
    dh_new: Array,
    h_prev: Array,
    n: Array,
    res: StepResiduals,
    sw: StepWeights,
    reset_after: bool,
) -> tuple[Array, GateGrads]:
    """Exact backward of :func:`gru_step` for the cotangent ``dh_new``; returns
    ``(dh_prev, gate_grads)``. Weight gradients are formed by the caller from the stacked
    gate gradients (one large GEMM per chunk of steps)."""
    r, z = res.reset, res.update
    w_r, w_z, w_n = sw.recurrent_kernels
    dz_pre = dh_new * (h_prev - n) * z * (1.0 - z)
    dn_pre = dh_new * (1.0 - z) * (1.0 - n * n)
    dh_prev = dh_new * z
    if reset_after:
        dr_pre = dn_pre * res.aux * r * (1.0 - r)
        dhn = dn_pre * r
        dh_prev = dh_prev + matmul_transposed(dhn, w_n)
        recurrent = (dr_pre, dz_pre, dhn)
    else:
        d_rh = matmul_transposed(dn_pre, w_n)
        dr_pre = d_rh * h_prev * r * (1.0 - r)
        dh_prev = dh_prev + d_rh * r
        recurrent = (dr_pre, dz_pre, dn_pre)
    dh_prev = dh_prev + matmul_transposed(dr_pre, w_r) + matmul_transposed(dz_pre, w_z)
    return dh_prev, GateGrads((dr_pre, dz_pre, dn_pre), recurrent)
