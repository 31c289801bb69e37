"""Input checks that run before XLA sees anything: each raises a one-line ValueError that
names the expected and the actual shape or value."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(value) -> bool:
    """True when ``value`` holds numbers now (not a tracer inside jit/vmap/grad)."""
    return not isinstance(value, jax.core.Tracer)


def check_sequence_input(x, in_features: int, time_major: bool, name: str = "inputs") -> None:
    if not hasattr(x, "shape") or len(x.shape) != 3:
        layout = "[time, batch, features]" if time_major else "[batch, time, features]"
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{name} must be rank 3 {layout}; got shape {shape}")
    if x.shape[-1] != in_features:
        raise ValueError(
            f"{name} feature size must equal in_features={in_features}; got shape {tuple(x.shape)}"
        )


def check_seq_lengths(seq_lengths, batch: int, steps: int) -> None:
    if seq_lengths is None:
        return
    shape = tuple(getattr(seq_lengths, "shape", ()))
    if shape != (batch,):
        raise ValueError(f"seq_lengths must have shape ({batch},) [batch]; got shape {shape}")
    dtype = getattr(seq_lengths, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"seq_lengths must have an integer dtype; got {dtype}")
    if is_concrete(seq_lengths):
        values = np.asarray(seq_lengths)
        if values.size and (values.min() < 0 or values.max() > steps):
            bad = values[(values < 0) | (values > steps)][0]
            raise ValueError(
                f"seq_lengths must lie in [0, {steps}] (the time length); got {int(bad)}"
            )


def check_carry(carry, expected: tuple[int, ...], name: str = "initial_carry") -> None:
    if carry is None:
        return
    shape = tuple(getattr(carry, "shape", ()))
    if shape != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}; got shape {shape}")
