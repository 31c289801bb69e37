"""The GRU over a sequence: :func:`gru_scan` (one direction) and
:func:`bidirectional_gru_scan` (both directions in one loop).

Two implementations compute the same function:

* the fast kernel (:mod:`gru_jax.ops.gru_kernel`, backward in
  :mod:`gru_jax.ops.gru_kernel_vjp`): lanes of independent GEMMs, in-place output writes in
  the caller's layout, and an exact chunked custom VJP — the default;
* the reference ``lax.scan`` differentiated by JAX (:mod:`gru_jax.ops.gru_reference`),
  used with ``custom_gradient=False`` and ``return_gates=True``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gru_jax.ops.gru_kernel_vjp import gru_sequence
from gru_jax.ops.gru_math import GRUWeights
from gru_jax.ops.gru_plan import make_plan, resolve_hoist, resolve_unroll
from gru_jax.ops.gru_reference import lengths_to_mask, reference_gru_scan

Array = jax.Array

__all__ = ["bidirectional_gru_scan", "gru_scan", "lengths_to_mask"]


def gru_scan(
    weights: GRUWeights,
    inputs: Array,
    initial_carry: Array,
    seq_lengths: Array | None = None,
    *,
    time_major: bool = False,
    reset_after: bool = True,
    reverse: bool = False,
    unroll: int | bool | None = None,
    compute_dtype=jnp.float32,
    hoist_inputs: bool | None = None,
    chunk_size: int = 16,
    batch_groups: int | None = None,
    remat: bool = False,
    save_gates: bool | None = None,
    return_gates: bool = False,
    custom_gradient: bool = True,
):
    """Runs a GRU over a sequence.

    Args:
      weights: :class:`GRUWeights` (gate order r, z, n).
      inputs: f32[batch, time, in_features] (f32[time, batch, in_features] if
        ``time_major``).
      initial_carry: f32[batch, hidden].
      seq_lengths: int[batch] valid lengths (padding at the end) or None.
      reset_after: cuDNN/PyTorch form (True) or the reset-before form (False).
      reverse: process each sequence's valid part from its end.
      unroll: loop unroll factor (forward and backward recurrences); True: fully; None:
        1 on CPU, 8 on accelerators (``gru_plan.default_unroll``).
      compute_dtype: dtype of the GEMM operands (e.g. bfloat16); gates, state and
        accumulation stay float32.
      hoist_inputs: project all steps' inputs before the loop (None: when
        ``in_features >= HOIST_MIN_FEATURES``).
      chunk_size: steps per chunk of the custom backward pass.
      batch_groups: independent batch groups per step (None: by backend and size).
      remat: keep only every ``chunk_size``-th state for the backward pass and recompute
        the rest (memory no longer grows with time x batch x hidden when the outputs are
        not otherwise kept).
      save_gates: keep the gates from the forward for the backward instead of recomputing
        them there (None: by backend and hidden size; see ``gru_plan.default_save_gates``).
      return_gates: also return the per-step (r, z, n) (zero at padded steps); uses the
        reference scan.
      custom_gradient: use the fast kernel and its custom backward (True) or the reference
        scan differentiated by JAX (False).

    Returns:
      ``(final_carry f32[batch, hidden], outputs f32[batch, time, hidden])`` (outputs
      time-major if ``time_major``), plus the gates (r, z, n) in the outputs' layout when
      ``return_gates``. Outputs at padded steps are exactly zero and the final carry is the
      state after each sequence's last valid step.
    """
    steps = inputs.shape[0 if time_major else 1]
    initial_carry = initial_carry.astype(jnp.float32)
    if return_gates or not custom_gradient:
        return reference_gru_scan(
            weights,
            inputs,
            initial_carry,
            seq_lengths,
            time_major=time_major,
            reset_after=reset_after,
            reverse=reverse,
            unroll=resolve_unroll(unroll, steps),
            compute_dtype=compute_dtype,
            hoist_inputs=resolve_hoist(hoist_inputs, inputs.shape[-1]),
            return_gates=return_gates,
        )
    h_last, outputs = _run_kernel(
        (weights,), inputs, initial_carry[None], seq_lengths, (bool(reverse),),
        reset_after=reset_after, time_major=time_major, unroll=unroll,
        compute_dtype=compute_dtype, hoist_inputs=hoist_inputs, chunk_size=chunk_size,
        batch_groups=batch_groups, remat=remat, save_gates=save_gates,
    )  # fmt: skip
    return h_last[0], outputs


def bidirectional_gru_scan(
    forward_weights: GRUWeights,
    backward_weights: GRUWeights,
    inputs: Array,
    initial_carries: tuple[Array, Array],
    seq_lengths: Array | None = None,
    *,
    time_major: bool = False,
    reset_after: bool = True,
    unroll: int | bool | None = None,
    compute_dtype=jnp.float32,
    hoist_inputs: bool | None = None,
    chunk_size: int = 16,
    batch_groups: int | None = None,
    remat: bool = False,
    save_gates: bool | None = None,
    custom_gradient: bool = True,
):
    """Both directions of a bidirectional GRU layer in one loop.

    The backward direction processes each sequence's valid part from its end (PyTorch
    packed semantics). Same options as :func:`gru_scan`. Returns
    ``((forward_carry, backward_carry), outputs f32[batch, time, 2*hidden])``, the forward
    direction's features first: identical to two :func:`gru_scan` calls and a
    concatenation, but on CPU the two directions' GEMMs run concurrently and no
    concatenated copy is made.
    """
    if not custom_gradient:
        options = dict(
            time_major=time_major,
            reset_after=reset_after,
            unroll=unroll,
            compute_dtype=compute_dtype,
            hoist_inputs=hoist_inputs,
            custom_gradient=False,
        )
        carry_f, y_f = gru_scan(forward_weights, inputs, initial_carries[0], seq_lengths, **options)
        carry_b, y_b = gru_scan(
            backward_weights, inputs, initial_carries[1], seq_lengths, reverse=True, **options
        )
        return (carry_f, carry_b), jnp.concatenate([y_f, y_b], axis=-1)
    h0 = jnp.stack([c.astype(jnp.float32) for c in initial_carries])
    h_last, outputs = _run_kernel(
        (forward_weights, backward_weights), inputs, h0, seq_lengths, (False, True),
        reset_after=reset_after, time_major=time_major, unroll=unroll,
        compute_dtype=compute_dtype, hoist_inputs=hoist_inputs, chunk_size=chunk_size,
        batch_groups=batch_groups, remat=remat, save_gates=save_gates,
    )  # fmt: skip
    return (h_last[0], h_last[1]), outputs


def _run_kernel(weights, inputs, h0, seq_lengths, directions, **options):
    """The fast kernel over ``directions`` (one reverse flag per direction, one
    ``GRUWeights`` each) from states ``h0 f32[D, B, H]``; ``options`` are the plan's."""
    plan = make_plan(inputs.shape, h0.shape[-1], directions, **options)
    lengths = None if seq_lengths is None else seq_lengths.astype(jnp.int32)
    return gru_sequence(weights, inputs, h0, lengths, plan)
