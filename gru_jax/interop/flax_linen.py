"""Parameters of flax linen ``nn.RNN(nn.GRUCell(hidden))`` <-> :class:`gru_jax.GRU`.

linen's GRUCell is the reset_after form built from six Dense layers: ``ir``, ``iz``, ``in``
(kernel ``[in_features, hidden]`` and bias), ``hr``, ``hz`` (kernel ``[hidden, hidden]``,
no bias) and ``hn`` (kernel and bias). So it is gru_jax's reset_after GRU with
``b_hr = b_hz = 0``; its default ``gate_fn=sigmoid`` and ``activation_fn=tanh`` are assumed
(they are not part of the parameters).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gru_jax.gru import GRU, GRUCell
from gru_jax.interop._common import assign, check_shape, placeholder_initializers
from gru_jax.ops.gru_math import split_gates

INPUT_DENSES = ("ir", "iz", "in")
RECURRENT_DENSES = ("hr", "hz", "hn")


def _cell_params(params: Mapping) -> Mapping:
    """The GRUCell subtree of full linen variables, ``{'params': ...}``, or the cell itself."""
    tree = params
    for key in ("params", "cell"):
        if isinstance(tree, Mapping) and key in tree and "ir" not in tree:
            tree = tree[key]
    if not isinstance(tree, Mapping):
        raise ValueError(f"flax linen GRUCell params must be a mapping; got {type(tree).__name__}")
    required = {name: ("kernel", "bias") for name in INPUT_DENSES}
    required.update({"hr": ("kernel",), "hz": ("kernel",), "hn": ("kernel", "bias")})
    for name, leaves in required.items():
        entry = tree.get(name)
        if not isinstance(entry, Mapping) or any(leaf not in entry for leaf in leaves):
            raise ValueError(
                f"flax linen GRUCell params need '{name}' with {list(leaves)}; "
                f"got keys {sorted(tree)}"
            )
    return tree


def from_flax_linen(
    params: Mapping,
    *,
    in_features: int | None = None,
    rngs: nnx.Rngs | None = None,
    **gru_kwargs: Any,
) -> GRU:
    """A :class:`gru_jax.GRU` computing what ``nn.RNN(nn.GRUCell(hidden))`` computes.

    Args:
      params: the linen variables ``{'params': {'cell': {...}}}``, their ``'params'``
        entry, or the GRUCell's own subtree ``{'ir': ..., 'iz': ..., ..., 'hn': ...}``.
      in_features: if given, checked against the ``ir`` kernel's input size.
      rngs: ``nnx.Rngs`` for the (overwritten) initial parameters; default ``nnx.Rngs(0)``.
      **gru_kwargs: options of :class:`gru_jax.GRU` (``reverse`` to match
        ``nn.RNN(..., reverse=True, keep_order=True)``, ``time_major``, ``chunk_size``, ...).

    Returns:
      A reset_after GRU with ``b_hr = b_hz = 0``, parameter dtype kept.
    """
    cell = _cell_params(params)
    ir_kernel = jnp.asarray(cell["ir"]["kernel"])
    if ir_kernel.ndim != 2:
        raise ValueError(
            f"flax linen 'ir' kernel must be [in_features, hidden]; got shape {ir_kernel.shape}"
        )
    features, hidden = ir_kernel.shape
    if in_features is not None and in_features != features:
        raise ValueError(
            f"flax linen 'ir' kernel must have shape ({in_features}, {hidden}) for "
            f"in_features={in_features}; got shape {tuple(ir_kernel.shape)}"
        )
    for name in INPUT_DENSES:
        check_shape(
            f"flax linen '{name}' kernel", np.shape(cell[name]["kernel"]), (features, hidden)
        )
        check_shape(f"flax linen '{name}' bias", np.shape(cell[name]["bias"]), (hidden,))
    for name in RECURRENT_DENSES:
        check_shape(f"flax linen '{name}' kernel", np.shape(cell[name]["kernel"]), (hidden, hidden))
    check_shape("flax linen 'hn' bias", np.shape(cell["hn"]["bias"]), (hidden,))

    gru = GRU(
        features,
        hidden,
        reset_after=True,
        param_dtype=ir_kernel.dtype,
        rngs=rngs if rngs is not None else nnx.Rngs(0),
        **placeholder_initializers(gru_kwargs),
    )
    stack = lambda names, leaf: jnp.concatenate([jnp.asarray(cell[n][leaf]) for n in names], -1)
    hn_bias = jnp.asarray(cell["hn"]["bias"])
    zeros = jnp.zeros_like(hn_bias)
    assign(gru.cell.input_kernel, stack(INPUT_DENSES, "kernel"), "input kernels (ir|iz|in)")
    assign(gru.cell.recurrent_kernel, stack(RECURRENT_DENSES, "kernel"), "kernels (hr|hz|hn)")
    assign(gru.cell.input_bias, stack(INPUT_DENSES, "bias"), "input biases (ir|iz|in)")
    assign(gru.cell.recurrent_bias, jnp.concatenate([zeros, zeros, hn_bias]), "hn bias")
    return gru


def to_flax_linen(gru: GRU | GRUCell) -> dict[str, Any]:
    """linen variables ``{'params': {'cell': {...}}}`` for ``nn.RNN(nn.GRUCell(hidden))``.

    linen has no recurrent biases ``b_hr``, ``b_hz``; they are added to the same
    pre-activation as ``b_ir``, ``b_iz``, so they are folded into the ``ir`` / ``iz`` biases
    (the same function; a round trip through linen moves them there). The reset_before form
    has no linen equivalent.

    Example::

        variables = to_flax_linen(gru)
        y = flax.linen.RNN(flax.linen.GRUCell(gru.hidden_size)).apply(variables, x)
    """
    cell = gru.cell if isinstance(gru, GRU) else gru
    if not isinstance(cell, GRUCell):
        raise TypeError(f"to_flax_linen expects a gru_jax.GRU or GRUCell; got {type(gru).__name__}")
    if not cell.reset_after:
        raise ValueError(
            "to_flax_linen needs reset_after=True (flax linen GRUCell's form); "
            "got reset_after=False"
        )
    weights = cell.weights()
    input_kernels = split_gates(weights.input_kernel)
    recurrent_kernels = split_gates(weights.recurrent_kernel)
    b_ir, b_iz, b_in = split_gates(weights.input_bias)
    b_hr, b_hz, b_hn = split_gates(weights.recurrent_bias)
    input_biases = (b_ir + b_hr, b_iz + b_hz, b_in)
    tree: dict[str, Any] = {}
    for name, kernel, bias in zip(INPUT_DENSES, input_kernels, input_biases):
        tree[name] = {"kernel": jnp.array(kernel), "bias": jnp.array(bias)}
    for name, kernel in zip(RECURRENT_DENSES, recurrent_kernels):
        tree[name] = {"kernel": jnp.array(kernel)}
    tree["hn"]["bias"] = jnp.array(b_hn)
    return {"params": {"cell": tree}}
