"""Helpers shared by the converters: optional imports, shape checks, parameter writes."""

from __future__ import annotations

import importlib
from types import ModuleType

import jax.numpy as jnp
import numpy as np
from flax import nnx

INSTALL_HINT = 'pip install "gru_jax[dev]"'


def require(module_name: str, purpose: str) -> ModuleType:
    """Imports an optional dependency, or raises an ImportError that says how to get it."""
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs the optional package '{module_name}'; install it with {INSTALL_HINT}"
        ) from error


def placeholder_initializers(options: dict) -> dict:
    """Constructor options with zero initialisers (unless given): the converters overwrite
    every parameter, and the default orthogonal init costs a QR per layer (and has no
    bfloat16 implementation)."""
    zeros = nnx.initializers.zeros_init()
    return {"kernel_init": zeros, "recurrent_kernel_init": zeros, "bias_init": zeros, **options}


def check_shape(name: str, actual: tuple[int, ...], expected: tuple[int, ...]) -> None:
    """One-line ValueError naming the expected and the actual shape."""
    actual, expected = tuple(int(d) for d in actual), tuple(int(d) for d in expected)
    if actual != expected:
        raise ValueError(f"{name} must have shape {expected}; got shape {actual}")


def assign(param: nnx.Param, value, name: str) -> None:
    """Writes ``value`` into ``param`` after checking its shape; keeps the param's dtype."""
    value = jnp.asarray(value)
    check_shape(name, value.shape, param[...].shape)
    param[...] = value.astype(param[...].dtype)


def to_numpy(value) -> np.ndarray:
    """A host copy of a JAX array (bfloat16 widened to float32, which NumPy lacks)."""
    array = jnp.asarray(value)
    if array.dtype == jnp.bfloat16:
        array = array.astype(jnp.float32)
    return np.array(array)


def reorder_gates(fused, order: tuple[int, int, int]):
    """Permutes the three gate blocks of the last axis: block ``i`` of the result is
    block ``order[i]`` of ``fused``."""
    hidden = fused.shape[-1] // 3
    blocks = [fused[..., g * hidden : (g + 1) * hidden] for g in order]
    return np.concatenate(blocks, axis=-1)
