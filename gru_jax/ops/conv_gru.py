"""The convolutional GRU (Ballas et al. 2015) on plain arrays: the GRU's matmuls become
stride-1 ``SAME`` 2-D convolutions (``*`` below) over NHWC frames.

reset_after=True (cuDNN / PyTorch form, separate input and recurrent biases)::

    r = sigmoid(W_ir * x + b_ir + W_hr * h + b_hr)
    z = sigmoid(W_iz * x + b_iz + W_hz * h + b_hz)
    n = tanh(W_in * x + b_in + r ⊙ (W_hn * h + b_hn))
    h' = z ⊙ h + (1 - z) ⊙ n

reset_after=False (Cho et al. 2014: the reset gate is applied before the convolution)::

    z = sigmoid(W_xz * x + W_hz * h + b_z)
    r = sigmoid(W_xr * x + W_hr * h + b_r)
    n = tanh(W_xn * x + W_hn * (r ⊙ h) + b_n)
    h' = z ⊙ h + (1 - z) ⊙ n

Kernels are HWIO with the gates side by side in the last axis, order (r, z, n):
``input_kernel [kh, kw, C_in, 3*C_hidden]``, ``recurrent_kernel [kh', kw', C_hidden,
3*C_hidden]``. As in :mod:`gru_jax.ops.gru_math`, the kernels are split per gate once,
outside the scan: three ``C_hidden``-wide convolutions measured faster here than one
``3*C_hidden``-wide convolution whose output is sliced into gates (B=16, 16x16x32: about
1.5x for the three recurrent convolutions of one step).

Gradients (``gradient=`` of :func:`conv_gru_scan`); see :mod:`gru_jax.ops.conv_same` for
why autodiff of stock convolutions is pathological in a rolled scan on XLA CPU, and
:mod:`gru_jax.convgru` / ``benchmarks/bench_convgru.py`` for the numbers:

* ``"stepwise"`` (what ``"auto"`` picks): autodiff of the scan, with convolutions whose
  backward is written in the layout the CPU backend's fast convolution takes
  (:func:`gru_jax.ops.conv_same.conv2d`);
* ``"deferred"``: a custom VJP of the whole recurrence whose reverse scan runs only the
  sequential ``dh`` recurrence, stacks the per-step gate gradients and forms every kernel
  gradient after it (:mod:`gru_jax.ops.conv_gru_vjp`). Exact, but not faster here: once
  the layout is right, a per-step kernel gradient runs at full convolution speed;
* ``"xla"``: autodiff of the scan over stock ``lax.conv_general_dilated`` (the
  baseline: fine with ``unroll=True``, about 40x slower rolled);
* ``"im2col"``: autodiff of the scan with every convolution written as one GEMM over the
  frame's patches (:func:`gru_jax.ops.conv_same.conv2d_im2col`), the three gates fused
  into one GEMM for the input and one for the state
  (:class:`~gru_jax.ops.conv_gru_math.FusedConvStepWeights`). Matmuls have no layout
  pathology, rolled or not; the price is the patch copies (``kh·kw`` times the input),
  which small grids with many channels (the video predictor's 8×8×64 states) hardly
  notice and large grids with few channels do.

Defaults chosen by measurement (2-core CPU): the inputs are convolved inside each step
(``hoist_inputs=False``: one convolution over all ``time * batch`` frames measured
12-14% slower fwd+bwd and 18-26% slower forward, at 16x16x32 and 64x64x1 inputs), and
sequences of at most ``AUTO_UNROLL_MAX_STEPS`` steps are unrolled when ``unroll=None``
(13-16% less fwd+bwd time than rolled at T=10 and T=20, for a first call 1.4x longer).

Variable lengths: padding at the end; masked steps keep the carry and output zeros;
``reverse=True`` runs each sequence's valid part from its own end (PyTorch packed
semantics), exactly as :func:`gru_jax.ops.gru_scan.gru_scan`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gru_jax.ops.conv_gru_math import (
    ConvGRUWeights,
    ConvStepWeights,
    FusedConvStepWeights,
    ScanConfig,
    conv_gru_step,
    forward_scan,
    input_biases,
    lengths_to_mask,
    prepare_conv_step_weights,
    prepare_fused_conv_step_weights,
    project_frames,
)
from gru_jax.ops.conv_gru_vjp import deferred_conv_gru
from gru_jax.ops.conv_same import conv2d, conv2d_xla

Array = jax.Array
GRADIENT_MODES = ("auto", "stepwise", "deferred", "xla", "im2col")
# unroll=None unrolls sequences of at most this many steps (see the module docstring).
AUTO_UNROLL_MAX_STEPS = 20

__all__ = [
    "AUTO_UNROLL_MAX_STEPS",
    "GRADIENT_MODES",
    "ConvGRUWeights",
    "ConvStepWeights",
    "FusedConvStepWeights",
    "ScanConfig",
    "conv_gru_scan",
    "conv_gru_step",
    "forward_scan",
    "input_biases",
    "lengths_to_mask",
    "prepare_conv_step_weights",
    "prepare_fused_conv_step_weights",
    "project_frames",
    "resolve_gradient",
    "resolve_unroll",
    "step_conv",
    "step_weights",
]


def resolve_gradient(gradient: str) -> str:
    """The gradient mode that ``"auto"`` stands for (see the module docstring)."""
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient must be one of {GRADIENT_MODES}; got {gradient!r}")
    return "stepwise" if gradient == "auto" else gradient


def step_weights(
    weights: ConvGRUWeights, compute_dtype, gradient: str = "auto"
) -> ConvStepWeights | FusedConvStepWeights:
    """The weights as :func:`conv_gru_step` and :func:`project_frames` take them for
    ``gradient``: fused over the gates for ``"im2col"``, per gate otherwise."""
    if resolve_gradient(gradient) == "im2col":
        return prepare_fused_conv_step_weights(weights, jnp.dtype(compute_dtype))
    return prepare_conv_step_weights(weights, jnp.dtype(compute_dtype))


def step_conv(gradient: str = "auto"):
    """The convolution a step of ``gradient`` mode runs (stock for ``"xla"``, else the
    loop-safe one; ``"im2col"`` steps ignore it)."""
    return conv2d_xla if resolve_gradient(gradient) == "xla" else conv2d


def resolve_unroll(unroll: int | bool | None, steps: int) -> int:
    """``lax.scan``'s unroll factor for ``unroll`` (None: full unroll of sequences of at
    most ``AUTO_UNROLL_MAX_STEPS`` steps, else 1; True: full unroll)."""
    if unroll is None:
        unroll = steps <= AUTO_UNROLL_MAX_STEPS
    if isinstance(unroll, bool):
        unroll = steps if unroll else 1
    return max(1, min(int(unroll), steps))


def conv_gru_scan(
    weights: ConvGRUWeights,
    inputs: Array,
    initial_carry: Array,
    seq_lengths: Array | None = None,
    *,
    time_major: bool = False,
    reset_after: bool = True,
    reverse: bool = False,
    unroll: int | bool | None = None,
    compute_dtype=jnp.float32,
    hoist_inputs: bool = False,
    gradient: str = "auto",
    return_gates: bool = False,
):
    """Runs a ConvGRU over a sequence of frames.

    Args:
      weights: :class:`ConvGRUWeights` (gate order r, z, n; HWIO kernels).
      inputs: f32[batch, time, height, width, C_in] (``[time, batch, ...]`` if
        ``time_major``).
      initial_carry: f32[batch, height, width, C_hidden].
      seq_lengths: int[batch] valid lengths (padding at the end) or None.
      reset_after: cuDNN/PyTorch form (True) or the reset-before form (False).
      reverse: process each sequence's valid part from its end.
      unroll: ``lax.scan`` unroll factor; True unrolls the whole sequence; None unrolls
        sequences of at most ``AUTO_UNROLL_MAX_STEPS`` steps.
      compute_dtype: dtype of the convolution operands; gates, state and accumulation
        stay float32.
      hoist_inputs: convolve all frames' inputs at once (one convolution over
        ``[time * batch, H, W, C_in]``) before the scan, instead of inside each step
        (the ``"deferred"`` gradient always does).
      gradient: ``"stepwise"``, ``"deferred"``, ``"xla"``, ``"im2col"`` or ``"auto"``
        (see the module docstring). The forward result is the same for all.
      return_gates: also return the per-step (r, z, n), each f32[batch, time, H, W,
        C_hidden] (zero at padded steps); uses the stepwise gradient.

    Returns:
      ``(final_carry f32[batch, H, W, C_hidden], outputs f32[batch, time, H, W,
      C_hidden])`` (outputs time-major if ``time_major``), plus the gates when
      ``return_gates``. Outputs at padded steps are exactly zero and the final carry is
      the state after each sequence's last valid step.
    """
    if not time_major:
        inputs = jnp.swapaxes(inputs, 0, 1)
    steps = inputs.shape[0]
    mode = resolve_gradient(gradient)
    if return_gates and mode == "deferred":
        mode = "stepwise"
    cfg = ScanConfig(
        reset_after=bool(reset_after),
        reverse=bool(reverse),
        unroll=resolve_unroll(unroll, steps),
        compute_dtype=jnp.dtype(compute_dtype).name,
        hoist_inputs=bool(hoist_inputs),
        gradient=mode,
    )
    mask = None if seq_lengths is None else lengths_to_mask(seq_lengths, steps)
    initial_carry = initial_carry.astype(jnp.float32)

    def to_layout(y):
        return y if time_major else jnp.swapaxes(y, 0, 1)

    if mode == "deferred":
        carry, ys = deferred_conv_gru(weights, inputs, initial_carry, mask, cfg)
        return carry, to_layout(ys)
    sw = step_weights(weights, cfg.compute_dtype, mode)
    conv = step_conv(mode)
    carry, out = forward_scan(
        sw, inputs, initial_carry, mask, cfg, collect_gates=return_gates, conv=conv
    )
    if return_gates:
        ys, gates = out
        return carry, to_layout(ys), tuple(to_layout(g) for g in gates)
    return carry, to_layout(out)
