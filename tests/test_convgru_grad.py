"""ConvGRU gradients: the layout-safe convolution VJP, the stepwise and deferred
gradients against plain autodiff (rolled and unrolled), and jit / grad / vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gru_jax
from gru_jax.ops.conv_gru import ConvGRUWeights, conv_gru_scan
from gru_jax.ops.conv_same import conv2d, conv2d_kernel_grad, conv2d_xla

BATCH, STEPS, HEIGHT, WIDTH, CHANNELS, HIDDEN = 3, 4, 4, 5, 2, 3


def random_weights(seed, reset_after, kernel=(3, 3), recurrent_kernel=(3, 3)):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    return ConvGRUWeights(
        0.4 * jax.random.normal(keys[0], (*kernel, CHANNELS, 3 * HIDDEN)),
        0.4 * jax.random.normal(keys[1], (*recurrent_kernel, HIDDEN, 3 * HIDDEN)),
        0.1 * jax.random.normal(keys[2], (3 * HIDDEN,)),
        0.1 * jax.random.normal(keys[3], (3 * HIDDEN,)) if reset_after else None,
    )


def assert_trees_close(got, want, rtol=1e-5):
    """Each leaf within ``rtol`` of the leaf's largest magnitude."""
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        scale = max(float(jnp.max(jnp.abs(w))), 1e-6)
        np.testing.assert_allclose(g, w, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("kernel_shape", [(3, 3, 2, 4), (2, 4, 2, 4), (1, 1, 2, 4)])
def test_conv2d_vjp_matches_autodiff(kernel_shape):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(keys[0], (5, 4, 5, 2))
    kernel = jax.random.normal(keys[1], kernel_shape)
    cotangent = jax.random.normal(keys[2], (5, 4, 5, 4))
    want = jax.vjp(conv2d_xla, x, kernel)[1](cotangent)
    got = jax.vjp(conv2d, x, kernel)[1](cotangent)
    assert_trees_close(got, want)
    np.testing.assert_allclose(conv2d(x, kernel), conv2d_xla(x, kernel))
    # The kernel gradient summed over groups of images equals the one-shot gradient.
    grouped = conv2d_kernel_grad(x, cotangent, kernel_shape[:2], images_per_conv=2)
    assert_trees_close(grouped, want[1])


ROLLED_STEPWISE = dict(gradient="stepwise", unroll=1)
ROLLED_DEFERRED = dict(gradient="deferred", unroll=1)
ROLLED_IM2COL = dict(gradient="im2col", unroll=1)

# (reset_after, reverse, seq_lengths, input kernel, recurrent kernel, variants)
CASES = [
    (True, True, [4, 2, 0], (3, 3), (3, 3), [ROLLED_STEPWISE, ROLLED_DEFERRED, ROLLED_IM2COL]),
    (
        False,
        False,
        [4, 1, 3],
        (2, 4),
        (1, 3),
        [
            dict(gradient="xla", unroll=1),
            dict(gradient="deferred", unroll=2),
            dict(gradient="stepwise", unroll=1, hoist_inputs=True),
            dict(gradient="im2col", unroll=2, hoist_inputs=True),
        ],
    ),
    (False, True, None, (3, 3), (3, 3), [ROLLED_STEPWISE, ROLLED_DEFERRED, ROLLED_IM2COL]),
]


@pytest.mark.parametrize("reset_after, reverse, lengths, kernel, recurrent_kernel, variants", CASES)
def test_gradients_match_autodiff(
    reset_after, reverse, lengths, kernel, recurrent_kernel, variants
):
    """Stepwise and deferred gradients (rolled and unrolled) against autodiff of the
    unrolled scan over stock convolutions, w.r.t. weights, inputs and initial carry."""
    weights = random_weights(1, reset_after, kernel, recurrent_kernel)
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    x = jax.random.normal(keys[0], (BATCH, STEPS, HEIGHT, WIDTH, CHANNELS))
    h0 = jax.random.normal(keys[1], (BATCH, HEIGHT, WIDTH, HIDDEN))
    seq_lengths = None if lengths is None else jnp.array(lengths, jnp.int32)

    def loss(weights, x, h0, **options):
        carry, y = conv_gru_scan(
            weights, x, h0, seq_lengths, reset_after=reset_after, reverse=reverse, **options
        )
        # Weights on the outputs and the carry make every cotangent non-trivial.
        return jnp.sum(jnp.sin(1.3 * y)) + jnp.sum(carry**2)

    def grads(**options):
        return jax.jit(jax.grad(lambda *a: loss(*a, **options), argnums=(0, 1, 2)))(weights, x, h0)

    want = grads(gradient="xla", unroll=True)
    for options in variants:
        got = grads(**options)
        assert_trees_close(got, want)
        if seq_lengths is not None:  # nothing flows into padded frames
            for b, length in enumerate(lengths):
                assert float(jnp.max(jnp.abs(got[1][b, length:]), initial=0.0)) == 0.0


def test_module_jit_grad_vmap():
    layer = gru_jax.ConvGRU(CHANNELS, HIDDEN, kernel_size=3, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
    x = jax.random.normal(jax.random.PRNGKey(3), (BATCH, STEPS, HEIGHT, WIDTH, CHANNELS))
    lengths = jnp.array([4, 2, 1], jnp.int32)

    @jax.jit
    def loss(params, x):
        y = nnx.merge(graphdef, params, rest)(x, lengths)
        return jnp.mean(y**2)

    value, grad = jax.value_and_grad(loss)(params, x)
    np.testing.assert_allclose(value, jnp.mean(layer(x, lengths) ** 2), rtol=1e-6)
    eager = jax.grad(lambda p: jnp.mean(nnx.merge(graphdef, p, rest)(x, lengths) ** 2))(params)
    assert_trees_close(grad, eager)
    assert float(jnp.max(jnp.abs(grad["cell"]["recurrent_kernel"].value))) > 0.0

    # vmap over an extra leading axis equals a Python loop over it.
    weights = layer.cell.weights()
    h0 = jnp.zeros((BATCH, HEIGHT, WIDTH, HIDDEN))
    xs = jnp.stack([x, 2.0 * x])
    batched = jax.vmap(lambda v: conv_gru_scan(weights, v, h0, lengths)[1])(xs)
    for i in range(2):
        np.testing.assert_allclose(
            batched[i], conv_gru_scan(weights, xs[i], h0, lengths)[1], rtol=1e-5, atol=1e-6
        )
