"""ConvGRU input errors: one-line ValueErrors that name the problem, raised before XLA."""

from __future__ import annotations

import jax.numpy as jnp
import pytest
from flax import nnx

import gru_jax


@pytest.fixture(scope="module")
def layer():
    return gru_jax.ConvGRU(2, 3, kernel_size=3, rngs=nnx.Rngs(0))


X = jnp.zeros((2, 4, 5, 6, 2))  # [batch, time, height, width, channels]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m(jnp.zeros((2, 4, 5, 2))), r"rank 5 \[batch, time, height, width, "),
        (lambda m: m(jnp.zeros((2, 4, 5, 6, 3))), r"in_channels=2; got shape \(2, 4, 5, 6, 3\)"),
        (lambda m: m(X, jnp.array([4, 4, 4])), r"seq_lengths must have shape \(2,\)"),
        (lambda m: m(X, jnp.array([4.0, 1.0])), "seq_lengths must have an integer dtype"),
        (lambda m: m(X, jnp.array([4, 5])), r"seq_lengths must lie in \[0, 4\]"),
        (lambda m: m(X[:, :0]), r"at least one time step; got shape \(2, 0, 5, 6, 2\)"),
        (
            lambda m: m(X, initial_carry=jnp.zeros((2, 5, 5, 3))),
            r"initial_carry must have shape \(2, 5, 6, 3\); got shape \(2, 5, 5, 3\)",
        ),
        (
            lambda m: m.cell(jnp.zeros((2, 5, 6, 3)), jnp.zeros((2, 5, 6, 4))),
            r"inputs must have shape \[batch, height, width, 2\]",
        ),
        (
            lambda m: m.cell(jnp.zeros((2, 5, 5, 3)), jnp.zeros((2, 5, 6, 2))),
            r"carry must have shape \(2, 5, 6, 3\)",
        ),
    ],
)
def test_bad_inputs(layer, call, message):
    with pytest.raises(ValueError, match=message) as info:
        call(layer)
    assert "\n" not in str(info.value)


def test_time_major_layout_named():
    layer = gru_jax.ConvGRU(2, 3, time_major=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"rank 5 \[time, batch, height, width, channels\]"):
        layer(jnp.zeros((4, 2, 5, 2)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kernel_size=(3, 0)), r"kernel_size must be a positive int or a pair"),
        (dict(recurrent_kernel_size=(1, 2, 3)), r"recurrent_kernel_size must be a positive"),
        (dict(gradient="fast"), r"gradient must be one of \('auto', 'stepwise'"),
        (dict(hidden_channels=0), "in_channels and hidden_channels must be positive"),
    ],
)
def test_bad_construction(kwargs, message):
    options = dict(in_channels=2, hidden_channels=3, rngs=nnx.Rngs(0)) | kwargs
    with pytest.raises(ValueError, match=message):
        gru_jax.ConvGRU(**options)
