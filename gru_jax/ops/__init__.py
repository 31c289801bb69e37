"""Pure functions on arrays and parameter pytrees (no Flax): the GRU hot path."""

from gru_jax.ops.gru_math import GRUWeights, gru_step, gru_step_backward, split_gates
from gru_jax.ops.gru_scan import bidirectional_gru_scan, gru_scan, lengths_to_mask

__all__ = [
    "GRUWeights",
    "bidirectional_gru_scan",
    "gru_scan",
    "gru_step",
    "gru_step_backward",
    "lengths_to_mask",
    "split_gates",
]
