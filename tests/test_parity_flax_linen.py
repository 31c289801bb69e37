"""Parity with flax linen ``nn.RNN(nn.GRUCell(hidden))`` (parameters copied by
``gru_jax.interop.from_flax_linen``) and the way back."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gru_jax
from gru_jax import interop

BATCH, STEPS, FEATURES, HIDDEN = 3, 6, 4, 5
LENGTHS = np.array([6, 2, 4], np.int32)


def linen_rnn(**options):
    return nn.RNN(nn.GRUCell(HIDDEN), return_carry=True, **options)


def linen_variables(seed=0):
    """linen variables with random (nonzero) biases."""
    variables = linen_rnn().init(jax.random.key(seed), jnp.zeros((BATCH, STEPS, FEATURES)))
    keys = iter(jax.random.split(jax.random.key(seed + 100), 16))
    return jax.tree.map(
        lambda v: v + 0.3 * jax.random.normal(next(keys), v.shape) if v.ndim == 1 else v,
        variables,
    )


def inputs(seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)
    h0 = rng.normal(0.0, 0.5, size=(BATCH, HIDDEN)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(h0)


def assert_close(actual, expected, atol=1e-5):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("subtree", ["variables", "params", "cell"])
def test_outputs_and_carry_match_linen(subtree):
    variables = linen_variables()
    given = {
        "variables": variables,
        "params": variables["params"],
        "cell": variables["params"]["cell"],
    }[subtree]
    gru = interop.from_flax_linen(given, in_features=FEATURES)
    x, h0 = inputs()
    carry_linen, y_linen = linen_rnn().apply(variables, x, initial_carry=h0)
    carry, y = gru(x, initial_carry=h0, return_carry=True)
    assert_close(y, y_linen)
    assert_close(carry, carry_linen)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_variable_lengths_match_linen(reverse):
    variables = linen_variables(2)
    gru = interop.from_flax_linen(variables, reverse=reverse)
    x, _ = inputs(3)
    carry_linen, y_linen = linen_rnn(reverse=reverse, keep_order=True).apply(
        variables, x, seq_lengths=jnp.asarray(LENGTHS)
    )
    carry, y = gru(x, jnp.asarray(LENGTHS), return_carry=True)
    assert_close(carry, carry_linen)
    # linen leaves the padded outputs unspecified; gru_jax zeroes them.
    valid = np.arange(STEPS)[None, :] < LENGTHS[:, None]
    assert_close(np.asarray(y)[valid], np.asarray(y_linen)[valid])
    assert np.all(np.asarray(y)[~valid] == 0.0)


def test_round_trip_is_exact_for_linen_parameters():
    variables = linen_variables(4)
    back = interop.to_flax_linen(interop.from_flax_linen(variables))
    assert jax.tree.structure(back) == jax.tree.structure(jax.tree.map(np.asarray, variables))
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(variables)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_recurrent_biases_are_folded_into_linen_input_biases():
    # A gru_jax GRU has b_hr and b_hz, which linen lacks; they add to the same
    # pre-activation as b_ir and b_iz, so to_flax_linen folds them there.
    gru = gru_jax.GRU(FEATURES, HIDDEN, bias_init=nnx.initializers.normal(0.5), rngs=nnx.Rngs(5))
    assert np.all(np.asarray(gru.cell.recurrent_bias[...]) != 0.0)
    variables = interop.to_flax_linen(gru)
    x, h0 = inputs(6)
    carry_linen, y_linen = linen_rnn().apply(variables, x, initial_carry=h0)
    carry, y = gru(x, initial_carry=h0, return_carry=True)
    assert_close(y, y_linen)
    assert_close(carry, carry_linen)
    # The same function after a round trip, with b_hr = b_hz = 0.
    back = interop.from_flax_linen(variables)
    assert_close(back(x, initial_carry=h0), y)
    assert np.all(np.asarray(back.cell.recurrent_bias[...])[: 2 * HIDDEN] == 0.0)


def test_reset_before_and_bad_parameters_are_rejected():
    gru = gru_jax.GRU(FEATURES, HIDDEN, reset_after=False, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="needs reset_after=True.*got reset_after=False"):
        interop.to_flax_linen(gru)
    variables = linen_variables()
    with pytest.raises(ValueError, match=r"must have shape \(7, 5\) for in_features=7"):
        interop.from_flax_linen(variables, in_features=7)
    cell = dict(variables["params"]["cell"])
    cell["hz"] = {"kernel": jnp.zeros((HIDDEN, HIDDEN + 1))}
    with pytest.raises(ValueError, match=r"'hz' kernel must have shape \(5, 5\); got shape"):
        interop.from_flax_linen(cell)
    del cell["hn"]
    with pytest.raises(ValueError, match=r"need 'hn' with \['kernel', 'bias'\]; got keys"):
        interop.from_flax_linen(cell)
