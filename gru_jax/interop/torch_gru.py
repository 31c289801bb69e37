"""Weights of ``torch.nn.GRU`` <-> :class:`gru_jax.StackedGRU`.

PyTorch stores, per layer ``k`` and direction (suffix ``""`` or ``"_reverse"``),
``weight_ih_l{k}: [3*hidden, in_features]`` and ``weight_hh_l{k}: [3*hidden, hidden]`` with
row blocks in gate order (r, z, n) -- the order gru_jax uses -- and ``bias_ih_l{k}``,
``bias_hh_l{k}: [3*hidden]``. gru_jax kernels are the transposes. torch's equations are the
reset_after form with separate input and recurrent biases, so the conversion is exact.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gru_jax.interop._common import assign, check_shape, placeholder_initializers, require, to_numpy
from gru_jax.stacked import StackedGRU


def _torch():
    return require("torch", "converting torch.nn.GRU weights")


def _suffix(direction: int) -> str:
    return "_reverse" if direction else ""


def _tensor_to_array(tensor) -> np.ndarray:
    torch = _torch()
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:  # NumPy has no bfloat16; widen, then narrow in JAX
        return tensor.float().numpy()
    return tensor.numpy()


def _param_dtype(tensor):
    torch = _torch()
    if tensor.dtype == torch.bfloat16:
        return jnp.bfloat16
    # float64 stays float64 only when JAX runs with x64 enabled.
    return jax.dtypes.canonicalize_dtype(_tensor_to_array(tensor).dtype)


def from_torch(module, *, rngs: nnx.Rngs | None = None, **layer_kwargs: Any) -> StackedGRU:
    """A :class:`gru_jax.StackedGRU` computing what ``module`` (a ``torch.nn.GRU``) computes.

    Every option of ``torch.nn.GRU`` maps: ``num_layers``, ``bidirectional``, ``dropout``
    (between layers, training mode only; the result is put in eval mode when ``module`` is),
    ``bias=False`` (zero biases) and ``batch_first`` (``time_major = not batch_first``). The
    carry has torch's ``h_n`` layout ``f32[num_layers*dirs, batch, hidden]``.

    Args:
      module: a ``torch.nn.GRU``.
      rngs: ``nnx.Rngs`` for the dropout stream (and the discarded initial parameters);
        default ``nnx.Rngs(0)``.
      **layer_kwargs: fast-path options forwarded to every :class:`gru_jax.GRU` layer
        (``chunk_size``, ``unroll``, ``hoist_inputs``, ``dtype``, ...).

    Returns:
      A StackedGRU with the module's parameters, dtype kept (bfloat16 stays bfloat16).

    Example::

        torch_gru = torch.nn.GRU(8, 16, num_layers=2, batch_first=True)
        stack = from_torch(torch_gru)
        carry, y = stack(jnp.ones((4, 10, 8)), return_carry=True)  # like torch_gru(x)
    """
    torch = _torch()
    if not isinstance(module, torch.nn.GRU):
        raise TypeError(f"from_torch expects a torch.nn.GRU; got {type(module).__name__}")
    proj_size = getattr(module, "proj_size", 0)
    if proj_size:
        raise ValueError(f"from_torch does not support proj_size > 0; got proj_size={proj_size}")
    dirs = 2 if module.bidirectional else 1
    hidden, in_features = module.hidden_size, module.input_size
    stack = StackedGRU(
        in_features,
        hidden,
        module.num_layers,
        bidirectional=module.bidirectional,
        dropout=float(module.dropout),
        reset_after=True,
        time_major=not module.batch_first,
        param_dtype=_param_dtype(module.weight_ih_l0),
        rngs=rngs if rngs is not None else nnx.Rngs(0),
        **placeholder_initializers(layer_kwargs),
    )
    for layer in range(module.num_layers):
        layer_in = in_features if layer == 0 else hidden * dirs
        for direction, gru in enumerate(stack.directions(layer)):
            key = f"l{layer}{_suffix(direction)}"
            w_ih = getattr(module, f"weight_ih_{key}")
            w_hh = getattr(module, f"weight_hh_{key}")
            check_shape(f"torch weight_ih_{key}", w_ih.shape, (3 * hidden, layer_in))
            check_shape(f"torch weight_hh_{key}", w_hh.shape, (3 * hidden, hidden))
            cell = gru.cell
            assign(cell.input_kernel, _tensor_to_array(w_ih).T, f"weight_ih_{key}.T")
            assign(cell.recurrent_kernel, _tensor_to_array(w_hh).T, f"weight_hh_{key}.T")
            for name, param in (("bias_ih", cell.input_bias), ("bias_hh", cell.recurrent_bias)):
                bias = getattr(module, f"{name}_{key}", None) if module.bias else None
                if bias is None:
                    value = np.zeros((3 * hidden,), np.float32)
                else:
                    check_shape(f"torch {name}_{key}", bias.shape, (3 * hidden,))
                    value = _tensor_to_array(bias)
                assign(param, value, f"{name}_{key}")
    if not module.training:
        stack.eval()
    return stack


def _array_to_tensor(value):
    torch = _torch()
    array = jnp.asarray(value)
    tensor = torch.from_numpy(np.ascontiguousarray(to_numpy(array)))
    return tensor.to(torch.bfloat16) if array.dtype == jnp.bfloat16 else tensor


def to_torch(stacked: StackedGRU, *, bias: bool = True) -> dict[str, Any]:
    """A ``state_dict`` for ``torch.nn.GRU(in_features, hidden_size, num_layers,
    bias=bias, bidirectional=..., batch_first=not stacked.time_major)``.

    Only the reset_after form exists in torch. With ``bias=False`` the stack's biases must be
    zero (torch has none to hold them).

    Returns:
      ``{"weight_ih_l0": Tensor[3*hidden, in_features], "weight_hh_l0": ..., "bias_ih_l0":
      Tensor[3*hidden], "bias_hh_l0": ..., "weight_ih_l0_reverse": ..., ...}``.
    """
    _torch()
    if not isinstance(stacked, StackedGRU):
        raise TypeError(f"to_torch expects a gru_jax.StackedGRU; got {type(stacked).__name__}")
    if not stacked.reset_after:
        raise ValueError(
            "to_torch needs reset_after=True (torch.nn.GRU's form); got reset_after=False"
        )
    state = {}
    for layer in range(stacked.num_layers):
        for direction, gru in enumerate(stacked.directions(layer)):
            key = f"l{layer}{_suffix(direction)}"
            weights = gru.cell.weights()
            state[f"weight_ih_{key}"] = _array_to_tensor(weights.input_kernel.T)
            state[f"weight_hh_{key}"] = _array_to_tensor(weights.recurrent_kernel.T)
            biases = {"bias_ih": weights.input_bias, "bias_hh": weights.recurrent_bias}
            for name, value in biases.items():
                if bias:
                    state[f"{name}_{key}"] = _array_to_tensor(value)
                elif np.any(to_numpy(value) != 0):
                    largest = float(np.max(np.abs(to_numpy(value))))
                    raise ValueError(
                        f"to_torch(bias=False) needs zero biases; {name}_{key} has max |value| "
                        f"{largest:g}"
                    )
    return state
