"""gru_jax.initializers: bit-identical to JAX's initialisers, drawn over the flat shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gru_jax import initializers

# Small shapes: JAX's own draws over rank-4 shapes are what compiles slowly.
SHAPES = [(2, 1, 3, 4), (2, 3, 4), (1, 2, 1, 2, 3), (5, 7)]


@pytest.mark.parametrize("distribution", ["truncated_normal", "normal", "uniform"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg", "fan_geo_avg"])
def test_same_values_as_jax_variance_scaling(mode, distribution):
    key = jax.random.key(3)
    ours = initializers.variance_scaling(0.7, mode, distribution)
    theirs = jax.nn.initializers.variance_scaling(0.7, mode, distribution)
    for shape in SHAPES:
        for dtype in (jnp.float32, jnp.bfloat16) if shape == SHAPES[0] else (jnp.float32,):
            a, b = ours(key, shape, dtype), theirs(key, shape, dtype)
            assert a.shape == shape and a.dtype == dtype
            np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_named_initialisers_and_other_axes_match_jax():
    key = jax.random.key(0)
    shape = (3, 1, 2, 4)
    pairs = [
        (initializers.lecun_normal(), jax.nn.initializers.lecun_normal()),
        (initializers.glorot_uniform(), jax.nn.initializers.glorot_uniform()),
        (
            initializers.lecun_normal(in_axis=0, out_axis=1),
            jax.nn.initializers.lecun_normal(in_axis=0, out_axis=1),
        ),
    ]
    for ours, theirs in pairs:
        np.testing.assert_array_equal(ours(key, shape), theirs(key, shape))
    # Complex dtypes and 2-D shapes go to JAX's own initialiser unchanged.
    np.testing.assert_array_equal(
        initializers.lecun_normal()(key, shape, jnp.complex64),
        jax.nn.initializers.lecun_normal()(key, shape, jnp.complex64),
    )


def test_bad_mode_and_distribution_are_one_line_errors():
    with pytest.raises(ValueError, match="invalid mode for variance scaling initializer: fan"):
        initializers.variance_scaling(1.0, "fan", "normal")(jax.random.key(0), (2, 2, 2))
    with pytest.raises(ValueError, match="invalid distribution for variance scaling"):
        initializers.variance_scaling(1.0, "fan_in", "cauchy")(jax.random.key(0), (2, 2, 2))


def test_models_keep_the_parameters_of_flax_defaults():
    """The models pass these initialisers to their convolutions: same parameters as an
    ``nnx.Conv`` with Flax's default initialiser built from the same stream."""
    from gru_jax.models.video_classifier import FrameEncoder

    encoder = FrameEncoder((8, 8, 1), (4, 6), 8, rngs=nnx.Rngs(5))
    rngs = nnx.Rngs(5)
    reference = nnx.Conv(1, 4, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs)
    np.testing.assert_array_equal(encoder.convs[0].kernel[...], reference.kernel[...])
