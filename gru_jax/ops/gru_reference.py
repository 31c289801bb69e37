"""The reference GRU scan: a plain time-major ``jax.lax.scan`` over :func:`gru_step`,
differentiated by JAX. It is the straightforward implementation the fast kernel
(:mod:`gru_jax.ops.gru_kernel`) is tested against, and what ``return_gates=True`` and
``custom_gradient=False`` use.

Variable lengths use a prefix mask (padding at the end). Masked steps leave the carry
untouched and output zeros; with ``reverse=True`` each sequence's valid part is processed
from its own end (PyTorch PackedSequence semantics), because the scan starts at the padded
end, where the masked steps keep the initial carry.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gru_jax.ops.gru_math import (
    GRUWeights,
    StepWeights,
    gru_step,
    prepare_step_weights,
    project_inputs,
)

Array = jax.Array


class ScanConfig(NamedTuple):
    """Static options of the reference scan."""

    reset_after: bool = True
    reverse: bool = False
    unroll: int = 1
    compute_dtype: str = "float32"
    hoist_inputs: bool = False


def _scan(
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


def reference_gru_scan(
    weights: GRUWeights,
    inputs: Array,
    initial_carry: Array,
    seq_lengths: Array | None,
    *,
    time_major: bool,
    reset_after: bool,
    reverse: bool,
    unroll: int,
    compute_dtype,
    hoist_inputs: bool,
    return_gates: bool = False,
):
    """Same contract as :func:`gru_jax.ops.gru_scan` (options already resolved)."""
    steps = inputs.shape[0 if time_major else 1]
    cfg = ScanConfig(
        bool(reset_after),
        bool(reverse),
        int(unroll),
        jnp.dtype(compute_dtype).name,
        bool(hoist_inputs),
    )
    x_tm = inputs if time_major else jnp.swapaxes(inputs, 0, 1)
    mask = None if seq_lengths is None else lengths_to_mask(seq_lengths, steps)
    sw = prepare_step_weights(weights, jnp.dtype(compute_dtype))
    carry, out = _scan(sw, x_tm, initial_carry, mask, cfg, collect_gates=return_gates)
    to_layout = (lambda y: y) if time_major else (lambda y: jnp.swapaxes(y, 0, 1))
    if return_gates:
        ys, gates = out
        return carry, to_layout(ys), tuple(to_layout(g) for g in gates)
    return carry, to_layout(out)
