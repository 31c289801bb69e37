"""The GRU over a sequence: the public entry point :func:`gru_scan`.

Two implementations compute the same function:

* the fast kernel (:mod:`gru_jax.ops.gru_kernel`): batch groups, in-place output writes in
  the caller's layout, and an exact chunked custom VJP — the default;
* a plain time-major ``jax.lax.scan`` differentiated by JAX (``custom_gradient=False``),
  which is also what ``return_gates=True`` uses. It is the straightforward reference the
  fast kernel is tested against.

Variable lengths use a prefix mask (padding at the end). Masked steps leave the carry
untouched and output zeros; with ``reverse=True`` each sequence's valid part is processed
from its own end (PyTorch PackedSequence semantics), because the scan starts at the padded
end, where the masked steps keep the initial carry.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gru_jax.ops.gru_kernel import KernelPlan
from gru_jax.ops.gru_kernel_vjp import gru_sequence
from gru_jax.ops.gru_math import (
    GRUWeights,
    StepWeights,
    gru_step,
    prepare_step_weights,
    project_inputs,
)

Array = jax.Array

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
# On CPU, keep the gates from the forward (instead of recomputing them in the backward)
# from this hidden size up.
SAVE_GATES_MIN_HIDDEN = 256


class ScanConfig(NamedTuple):
    """Static options of the reference scan."""

    reset_after: bool = True
    reverse: bool = False
    unroll: int = 1
    compute_dtype: str = "float32"
    hoist_inputs: bool = False


def _forward(
    sw: StepWeights,
    x: Array,
    h0: Array,
    mask: Array | None,
    cfg: ScanConfig,
    collect_gates: bool = False,
):
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


def lengths_to_mask(seq_lengths: Array, steps: int) -> Array:
    """bool[T, B]: True where ``t < seq_lengths[b]`` (time-major)."""
    return jnp.arange(steps)[:, None] < seq_lengths[None, :]


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
    read. Off CPU memory is cheap relative to compute; on CPU the break-even measured here
    is near ``SAVE_GATES_MIN_HIDDEN``."""
    backend = backend or jax.default_backend()
    return backend != "cpu" or hidden >= SAVE_GATES_MIN_HIDDEN


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
      unroll: loop unroll factor (forward and backward recurrences); True: fully.
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
        them there (None: by backend and hidden size; see ``default_save_gates``).
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
    batch = inputs.shape[1 if time_major else 0]
    hidden = initial_carry.shape[-1]
    if hoist_inputs is None:
        hoist_inputs = inputs.shape[-1] >= HOIST_MIN_FEATURES
    if isinstance(unroll, bool):
        unroll = max(steps, 1) if unroll else 1
    compute_dtype = jnp.dtype(compute_dtype)
    initial_carry = initial_carry.astype(jnp.float32)
    if return_gates or not custom_gradient:
        cfg = ScanConfig(
            bool(reset_after), bool(reverse), int(unroll), compute_dtype.name, bool(hoist_inputs)
        )
        x_tm = inputs if time_major else jnp.swapaxes(inputs, 0, 1)
        mask = None if seq_lengths is None else lengths_to_mask(seq_lengths, steps)
        sw = prepare_step_weights(weights, compute_dtype)
        carry, out = _forward(sw, x_tm, initial_carry, mask, cfg, collect_gates=return_gates)
        to_layout = (lambda y: y) if time_major else (lambda y: jnp.swapaxes(y, 0, 1))
        if return_gates:
            ys, gates = out
            return carry, to_layout(ys), tuple(to_layout(g) for g in gates)
        return carry, to_layout(out)
    plan = make_plan(
        batch,
        hidden,
        (bool(reverse),),
        reset_after=reset_after,
        time_major=time_major,
        unroll=unroll,
        compute_dtype=compute_dtype,
        hoist_inputs=hoist_inputs,
        chunk_size=chunk_size,
        batch_groups=batch_groups,
        remat=remat,
        save_gates=save_gates,
    )
    if seq_lengths is not None:
        seq_lengths = seq_lengths.astype(jnp.int32)
    h_last, outputs = gru_sequence((weights,), inputs, initial_carry[None], seq_lengths, plan)
    return h_last[0], outputs


def make_plan(
    batch: int,
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
    """The kernel's static plan, with defaults picked by backend and size."""
    if batch_groups is None:
        batch_groups = default_batch_groups(batch, hidden, num_directions=len(directions))
    return KernelPlan(
        reset_after=bool(reset_after),
        directions=tuple(bool(d) for d in directions),
        time_major=bool(time_major),
        unroll=int(unroll),
        compute_dtype=jnp.dtype(compute_dtype).name,
        hoist_inputs=bool(hoist_inputs),
        chunk_size=max(1, int(chunk_size)),
        groups=group_bounds(batch, batch_groups),
        remat=bool(remat),
        save_gates=default_save_gates(hidden) if save_gates is None else bool(save_gates),
    )


def bidirectional_gru_scan(
    forward_weights: GRUWeights,
    backward_weights: GRUWeights,
    inputs: Array,
    initial_carries: tuple[Array, Array],
    seq_lengths: Array | None = None,
    *,
    time_major: bool = False,
    reset_after: bool = True,
    unroll: int = 1,
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
    direction's features first; identical to two :func:`gru_scan` calls and a
    concatenation, but on CPU the two directions' GEMMs run concurrently and no
    concatenated copy is made.
    """
    options = dict(
        time_major=time_major,
        reset_after=reset_after,
        unroll=unroll,
        compute_dtype=compute_dtype,
        hoist_inputs=hoist_inputs,
    )
    if not custom_gradient:
        carry_f, y_f = gru_scan(
            forward_weights,
            inputs,
            initial_carries[0],
            seq_lengths,
            custom_gradient=False,
            **options,
        )
        carry_b, y_b = gru_scan(
            backward_weights,
            inputs,
            initial_carries[1],
            seq_lengths,
            reverse=True,
            custom_gradient=False,
            **options,
        )
        return (carry_f, carry_b), jnp.concatenate([y_f, y_b], axis=-1)
    batch = inputs.shape[1 if time_major else 0]
    hidden = initial_carries[0].shape[-1]
    if hoist_inputs is None:
        options["hoist_inputs"] = inputs.shape[-1] >= HOIST_MIN_FEATURES
    if isinstance(unroll, bool):
        options["unroll"] = max(inputs.shape[0 if time_major else 1], 1) if unroll else 1
    plan = make_plan(
        batch,
        hidden,
        (False, True),
        chunk_size=chunk_size,
        batch_groups=batch_groups,
        remat=remat,
        save_gates=save_gates,
        **options,
    )
    if seq_lengths is not None:
        seq_lengths = seq_lengths.astype(jnp.int32)
    h0 = jnp.stack([c.astype(jnp.float32) for c in initial_carries])
    h_last, outputs = gru_sequence(
        (forward_weights, backward_weights), inputs, h0, seq_lengths, plan
    )
    return (h_last[0], h_last[1]), outputs
