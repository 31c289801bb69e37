"""Parity with Keras 3 ``keras.layers.GRU`` (weights copied by ``gru_jax.interop.from_keras``)
for both ``reset_after`` forms and ``go_backwards``."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # must precede the first keras import

import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gru_jax import interop  # noqa: E402

BATCH, STEPS, FEATURES, HIDDEN = 3, 6, 4, 5


def make_layer(seed=0, **options):
    """A built Keras GRU with random (nonzero) biases, returning (sequences, state)."""
    keras.utils.set_random_seed(seed)
    layer = keras.layers.GRU(HIDDEN, return_sequences=True, return_state=True, **options)
    layer.build((BATCH, STEPS, FEATURES))
    rng = np.random.default_rng(seed)
    if layer.cell.use_bias:
        layer.cell.bias.assign(rng.normal(0.0, 0.5, layer.cell.bias.shape).astype("float32"))
    return layer


def inputs(seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)
    h0 = rng.normal(0.0, 0.5, size=(BATCH, HIDDEN)).astype(np.float32)
    return x, h0


def assert_close(actual, expected, atol=1e-5):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "go_backwards"])
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
def test_outputs_and_state_match_keras(reset_after, go_backwards, use_bias):
    layer = make_layer(reset_after=reset_after, go_backwards=go_backwards, use_bias=use_bias)
    gru = interop.from_keras(layer)
    assert gru.reset_after == reset_after and gru.reverse == go_backwards
    x, h0 = inputs()
    y_keras, h_keras = layer(x, initial_state=[h0])
    carry, y = gru(jnp.asarray(x), initial_carry=jnp.asarray(h0), return_carry=True)
    # Keras returns go_backwards sequences in processing order; gru_jax aligns them with
    # the inputs.
    y = np.asarray(y)[:, ::-1] if go_backwards else y
    assert_close(y, keras.ops.convert_to_numpy(y_keras))
    assert_close(carry, keras.ops.convert_to_numpy(h_keras))


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_round_trip_through_keras(reset_after):
    layer = make_layer(seed=2, reset_after=reset_after)
    gru = interop.from_keras(layer)
    target = make_layer(seed=3, reset_after=reset_after)
    assert interop.to_keras(gru, target) is target
    for a, b in zip(layer.get_weights(), target.get_weights()):
        assert np.array_equal(a, b)
    back = interop.from_keras(target)
    for name in ("input_kernel", "recurrent_kernel", "input_bias"):
        assert np.array_equal(getattr(back.cell, name)[...], getattr(gru.cell, name)[...])
    x, _ = inputs(4)
    assert_close(keras.ops.convert_to_numpy(target(x)[0]), back(jnp.asarray(x)))


def test_gate_order_is_reordered():
    # Keras's kernel blocks are (z, r, h); gru_jax's are (r, z, n).
    layer = make_layer(seed=5)
    gru = interop.from_keras(layer)
    kernel = layer.cell.kernel.numpy()
    z, r, h = np.split(kernel, 3, axis=-1)
    assert np.array_equal(gru.cell.input_kernel[...], np.concatenate([r, z, h], axis=-1))
    bias = layer.cell.bias.numpy()
    assert np.array_equal(gru.cell.recurrent_bias[...][:HIDDEN], bias[1, HIDDEN : 2 * HIDDEN])


def test_unsupported_activation_is_rejected():
    layer = make_layer(seed=6, activation="relu")
    with pytest.raises(ValueError, match=r"activation='tanh'; got relu"):
        interop.from_keras(layer)
    layer = make_layer(seed=7, recurrent_activation="hard_sigmoid")
    with pytest.raises(ValueError, match=r"recurrent_activation='sigmoid'; got hard_sigmoid"):
        interop.from_keras(layer)


def test_unbuilt_layer_and_mismatched_target_are_rejected():
    with pytest.raises(ValueError, match="needs a built Keras layer"):
        interop.from_keras(keras.layers.GRU(HIDDEN))
    gru = interop.from_keras(make_layer(seed=8))
    with pytest.raises(ValueError, match=r"reset_after=False; the GRU has reset_after=True"):
        interop.to_keras(gru, make_layer(seed=9, reset_after=False))
    with pytest.raises(ValueError, match=r"go_backwards=True; the GRU has reverse=False"):
        interop.to_keras(gru, make_layer(seed=9, go_backwards=True))
    wider = keras.layers.GRU(HIDDEN + 1)
    wider.build((BATCH, STEPS, FEATURES))
    with pytest.raises(ValueError, match=r"must have shape \(4, 18\); got shape \(4, 15\)"):
        interop.to_keras(gru, wider)
    no_bias = make_layer(seed=10, use_bias=False)
    with pytest.raises(ValueError, match="use_bias=False but the GRU's biases are nonzero"):
        interop.to_keras(gru, no_bias)
