"""Weights of ``keras.layers.GRU`` (Keras 3) <-> :class:`gru_jax.GRU`.

Keras stores ``kernel: [in_features, 3*hidden]`` and ``recurrent_kernel: [hidden,
3*hidden]`` with gate blocks in the order (z, r, h); gru_jax uses (r, z, n), so the first
two blocks swap. The bias is ``[2, 3*hidden]`` for ``reset_after=True`` (row 0 input bias,
row 1 recurrent bias) and ``[3*hidden]`` for ``reset_after=False``; Keras's two forms are
exactly gru_jax's two forms.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gru_jax.gru import GRU
from gru_jax.interop._common import (
    assign,
    check_shape,
    placeholder_initializers,
    reorder_gates,
    require,
    to_numpy,
)

# Block i of a gru_jax kernel is block KERAS_TO_GRU_JAX[i] of a Keras kernel (and back:
# the permutation swaps two blocks, so it is its own inverse).
KERAS_TO_GRU_JAX = (1, 0, 2)


def _keras():
    return require("keras", "converting Keras GRU weights")


def _function_name(function) -> str:
    return getattr(function, "__name__", repr(function))


def _check_layer(layer, caller: str) -> None:
    keras = _keras()
    if not isinstance(layer, keras.layers.GRU):
        raise TypeError(f"{caller} expects a keras.layers.GRU; got {type(layer).__name__}")
    cell = layer.cell
    if not layer.built:
        raise ValueError(
            f"{caller} needs a built Keras layer; call it on an input or layer.build(shape) first"
        )
    for what, expected, function in (
        ("activation", "tanh", cell.activation),
        ("recurrent_activation", "sigmoid", cell.recurrent_activation),
    ):
        if _function_name(function) != expected:
            raise ValueError(
                f"{caller} supports only {what}='{expected}'; got {_function_name(function)}"
            )


def _to_array(variable) -> np.ndarray:
    return np.asarray(_keras().ops.convert_to_numpy(variable.value))


def from_keras(layer, *, rngs: nnx.Rngs | None = None, **gru_kwargs: Any) -> GRU:
    """A :class:`gru_jax.GRU` computing what the built Keras ``layer`` computes.

    ``reset_after`` carries over (both forms), ``use_bias=False`` gives zero biases and
    ``go_backwards=True`` gives ``reverse=True``. Note the output order then: Keras returns
    ``go_backwards`` sequences in processing order (``y_keras[:, k]`` belongs to input step
    ``T - 1 - k``), gru_jax aligns outputs with inputs, so ``y_keras == y[:, ::-1]``. A
    mixed-precision policy (e.g. ``mixed_bfloat16``) becomes ``dtype=`` (the compute dtype).
    Dropout and recurrent dropout act only in training and are not carried over.

    Args:
      layer: a built ``keras.layers.GRU`` with ``activation='tanh'`` and
        ``recurrent_activation='sigmoid'``.
      rngs: ``nnx.Rngs`` for the (overwritten) initial parameters; default ``nnx.Rngs(0)``.
      **gru_kwargs: fast-path options of :class:`gru_jax.GRU` (``time_major``,
        ``chunk_size``, ``unroll``, ``hoist_inputs``, ``dtype``, ...).

    Returns:
      A GRU whose ``gru(x, return_carry=True)`` gives ``(h_n, y)`` for ``x:
      f32[batch, time, in_features]``, like ``layer(x)`` with ``return_sequences=True,
      return_state=True`` gives ``(y, h_n)``.
    """
    _check_layer(layer, "from_keras")
    cell = layer.cell
    kernel = _to_array(cell.kernel)
    recurrent_kernel = _to_array(cell.recurrent_kernel)
    hidden = int(cell.units)
    check_shape("Keras kernel", kernel.shape, (kernel.shape[0], 3 * hidden))
    check_shape("Keras recurrent_kernel", recurrent_kernel.shape, (hidden, 3 * hidden))
    in_features = kernel.shape[0]
    reset_after = bool(cell.reset_after)
    if cell.use_bias:
        bias = _to_array(cell.bias)
        expected = (2, 3 * hidden) if reset_after else (3 * hidden,)
        check_shape(f"Keras bias (reset_after={reset_after})", bias.shape, expected)
    else:
        bias = np.zeros((2, 3 * hidden) if reset_after else (3 * hidden,), kernel.dtype)
    if cell.dropout or cell.recurrent_dropout:
        warnings.warn(
            "from_keras: the Keras layer's dropout/recurrent_dropout apply only in training "
            "and are not converted",
            stacklevel=2,
        )
    policy = getattr(layer, "dtype_policy", None)
    compute_dtype = getattr(policy, "compute_dtype", None)
    if compute_dtype is not None and jnp.dtype(compute_dtype) != jnp.dtype(kernel.dtype):
        gru_kwargs.setdefault("dtype", jnp.dtype(compute_dtype))
    gru = GRU(
        in_features,
        hidden,
        reset_after=reset_after,
        reverse=bool(layer.go_backwards),
        param_dtype=jnp.dtype(kernel.dtype),
        rngs=rngs if rngs is not None else nnx.Rngs(0),
        **placeholder_initializers(gru_kwargs),
    )
    assign(gru.cell.input_kernel, reorder_gates(kernel, KERAS_TO_GRU_JAX), "kernel")
    assign(
        gru.cell.recurrent_kernel,
        reorder_gates(recurrent_kernel, KERAS_TO_GRU_JAX),
        "recurrent_kernel",
    )
    if reset_after:
        assign(gru.cell.input_bias, reorder_gates(bias[0], KERAS_TO_GRU_JAX), "bias[0]")
        assign(gru.cell.recurrent_bias, reorder_gates(bias[1], KERAS_TO_GRU_JAX), "bias[1]")
    else:
        assign(gru.cell.input_bias, reorder_gates(bias, KERAS_TO_GRU_JAX), "bias")
    return gru


def to_keras(gru: GRU, layer):
    """Writes ``gru``'s parameters into the built Keras GRU ``layer`` and returns it.

    The layer must match: ``units == hidden_size``, the same ``reset_after``,
    ``go_backwards == reverse``, the same input size; with ``use_bias=False`` the GRU's
    biases must be zero.
    """
    _check_layer(layer, "to_keras")
    if not isinstance(gru, GRU):
        raise TypeError(f"to_keras expects a gru_jax.GRU; got {type(gru).__name__}")
    cell = layer.cell
    if bool(cell.reset_after) != gru.reset_after:
        raise ValueError(
            f"to_keras: the Keras layer has reset_after={bool(cell.reset_after)}; "
            f"the GRU has reset_after={gru.reset_after}"
        )
    if bool(layer.go_backwards) != gru.reverse:
        raise ValueError(
            f"to_keras: the Keras layer has go_backwards={bool(layer.go_backwards)}; "
            f"the GRU has reverse={gru.reverse}"
        )
    weights = gru.cell.weights()
    kernel = reorder_gates(to_numpy(weights.input_kernel), KERAS_TO_GRU_JAX)
    recurrent = reorder_gates(to_numpy(weights.recurrent_kernel), KERAS_TO_GRU_JAX)
    check_shape("Keras kernel (from the GRU's input_kernel)", kernel.shape, cell.kernel.shape)
    check_shape(
        "Keras recurrent_kernel (from the GRU's recurrent_kernel)",
        recurrent.shape,
        cell.recurrent_kernel.shape,
    )
    biases = [to_numpy(weights.input_bias)]
    if gru.reset_after:
        biases.append(to_numpy(weights.recurrent_bias))
    biases = [reorder_gates(b, KERAS_TO_GRU_JAX) for b in biases]
    bias = np.stack(biases) if gru.reset_after else biases[0]
    values = [(cell.kernel, kernel), (cell.recurrent_kernel, recurrent)]
    if cell.use_bias:
        check_shape("Keras bias (from the GRU's biases)", bias.shape, cell.bias.shape)
        values.append((cell.bias, bias))
    elif np.any(bias != 0):
        raise ValueError(
            f"to_keras: the Keras layer has use_bias=False but the GRU's biases are nonzero "
            f"(max |bias| {float(np.max(np.abs(bias))):g})"
        )
    for variable, value in values:
        variable.assign(value.astype(jnp.dtype(variable.dtype)))
    return layer
