"""Weight initialisers that compile fast on CPU: the same values as
``jax.nn.initializers.variance_scaling`` (and so ``lecun_normal``, ``glorot_uniform``, ...),
with the random draws made over the flattened shape.

Why: with JAX's default (partitionable) threefry, XLA CPU (jax 0.10) takes ~13 s to
compile the random bits of one 4-D convolution kernel such as ``[3, 3, 8, 9]`` and ~2 s
for a 3-D one, against 0.25 s for the same 648 values drawn as a vector; eager parameter
initialisation compiles one such program per kernel shape, so a model of a few convolution
layers spent tens of seconds being constructed. The draws of a shape and of its flattening
are the same numbers (threefry counts over the flat index), so drawing flat and reshaping
gives bit-identical parameters (``tests/test_initializers.py`` checks it against JAX).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Initializer = jax.nn.initializers.Initializer


def variance_scaling(
    scale: float,
    mode: str,
    distribution: str,
    in_axis: int = -2,
    out_axis: int = -1,
) -> Initializer:
    """``jax.nn.initializers.variance_scaling(scale, mode, distribution, in_axis,
    out_axis)``, drawing over the flattened shape for real dtypes and kernels of rank 3 or
    more (others are passed to JAX's as they are)."""
    reference = jax.nn.initializers.variance_scaling(scale, mode, distribution, in_axis, out_axis)

    def init(key, shape, dtype=None):
        shape = tuple(int(s) for s in shape)
        dtype = jnp.float32 if dtype is None else dtype
        if len(shape) < 3 or not jnp.issubdtype(dtype, jnp.floating):
            return reference(key, shape, dtype)
        size = math.prod(shape)
        receptive = size / shape[in_axis] / shape[out_axis]
        fan_in, fan_out = shape[in_axis] * receptive, shape[out_axis] * receptive
        denominators = {
            "fan_in": fan_in,
            "fan_out": fan_out,
            "fan_avg": (fan_in + fan_out) / 2,
            "fan_geo_avg": (fan_in * fan_out) ** 0.5,
        }
        if mode not in denominators:
            raise ValueError(f"invalid mode for variance scaling initializer: {mode}")
        variance = jnp.array(scale / denominators[mode], dtype=dtype)
        flat = (size,)
        if distribution == "truncated_normal":
            stddev = jnp.sqrt(variance) / jnp.array(0.87962566103423978, dtype)
            values = jax.random.truncated_normal(key, -2, 2, flat, dtype) * stddev
        elif distribution == "normal":
            values = jax.random.normal(key, flat, dtype) * jnp.sqrt(variance)
        elif distribution == "uniform":
            values = jax.random.uniform(key, flat, dtype, -1) * jnp.sqrt(3 * variance)
        else:
            raise ValueError(
                f"invalid distribution for variance scaling initializer: {distribution}"
            )
        return values.reshape(shape)

    return init


def lecun_normal(in_axis: int = -2, out_axis: int = -1) -> Initializer:
    """``jax.nn.initializers.lecun_normal`` (Flax's default kernel initialiser), fast to
    compile for convolution kernels."""
    return variance_scaling(1.0, "fan_in", "truncated_normal", in_axis, out_axis)


def glorot_uniform(in_axis: int = -2, out_axis: int = -1) -> Initializer:
    """``jax.nn.initializers.glorot_uniform``, fast to compile for convolution kernels."""
    return variance_scaling(1.0, "fan_avg", "uniform", in_axis, out_axis)


# Flax's default kernel initialiser (nnx.Conv, nnx.Linear: LeCun normal), drawn flat; the
# models pass it to their convolutions. (The GRU and ConvGRU layers' own default,
# ``default_kernel_init`` in their modules, is Glorot-uniform.)
flax_kernel_init = lecun_normal()

__all__ = ["flax_kernel_init", "glorot_uniform", "lecun_normal", "variance_scaling"]
