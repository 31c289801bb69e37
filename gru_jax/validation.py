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
    if x.shape[0 if time_major else 1] == 0:
        raise ValueError(f"{name} must have at least one time step; got shape {tuple(x.shape)}")
    dtype = getattr(x, "dtype", None)
    if dtype is not None and not (
        jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    ):
        raise ValueError(f"{name} must have a real (float or integer) dtype; got {dtype}")


def lengths_array(seq_lengths):
    """A list or tuple of lengths (what torch's ``pack_padded_sequence`` takes) as an int32
    array; arrays and None unchanged."""
    if isinstance(seq_lengths, (list, tuple)):
        return jnp.asarray(seq_lengths, jnp.int32)
    return seq_lengths


def check_kernel_options(*, unroll, chunk_size: int, batch_groups) -> None:
    """The fast kernel's options: ``unroll`` None, a bool or an int >= 1, ``chunk_size`` an
    int >= 1, ``batch_groups`` None or an int >= 1."""
    if not (unroll is None or isinstance(unroll, bool) or _positive_int(unroll)):
        raise ValueError(f"unroll must be None, True/False or an int >= 1; got {unroll!r}")
    if not _positive_int(chunk_size):
        raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}")
    if not (batch_groups is None or _positive_int(batch_groups)):
        raise ValueError(f"batch_groups must be None or an int >= 1; got {batch_groups!r}")


def _positive_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def check_seq_lengths(seq_lengths, batch: int, steps: int) -> None:
    if seq_lengths is None:
        return
    shape = np.shape(seq_lengths)
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
    shape = np.shape(carry)
    if shape != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}; got shape {shape}")


def check_carry_pair(carry, name: str = "initial_carry") -> None:
    """A bidirectional layer's carry: None or a ``(forward_carry, backward_carry)`` pair."""
    if carry is None or (isinstance(carry, (tuple, list)) and len(carry) == 2):
        return
    what = (
        f"a {len(carry)}-tuple" if isinstance(carry, (tuple, list)) else f"shape {np.shape(carry)}"
    )
    raise ValueError(f"{name} must be a pair (forward_carry, backward_carry); got {what}")
