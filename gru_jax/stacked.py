"""Bidirectional and multi-layer GRUs with PyTorch ``nn.GRU`` semantics."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gru_jax import validation
from gru_jax.gru import GRU
from gru_jax.ops.gru_scan import bidirectional_gru_scan

# GRU options that must agree for the two directions to share one fused loop.
_FUSABLE = (
    "in_features",
    "hidden_size",
    "reset_after",
    "time_major",
    "unroll",
    "hoist_inputs",
    "chunk_size",
    "batch_groups",
    "remat",
    "save_gates",
    "custom_gradient",
)

Array = jax.Array


class Bidirectional(nnx.Module):
    """Runs a forward and a backward (``reverse=True``) layer over the same sequence and
    concatenates their outputs on the feature axis.

    Both layers take ``(x, seq_lengths, initial_carry, return_carry=True)`` and return
    ``(carry, outputs)``, as :class:`gru_jax.GRU` does. With ``seq_lengths`` the backward
    layer starts at each sequence's last valid step. Returns ``outputs
    f32[batch, time, 2*hidden]``, or ``((forward_carry, backward_carry), outputs)`` with
    ``return_carry``.

    When both layers are :class:`gru_jax.GRU` with the same options, the two directions
    run in one fused loop (``gru_jax.ops.bidirectional_gru_scan``): identical results, and
    on CPU the directions' GEMMs run concurrently. ``fused=False`` calls the layers one
    after the other.
    """

    def __init__(
        self, forward_layer: nnx.Module, backward_layer: nnx.Module, *, fused: bool = True
    ):
        if getattr(backward_layer, "reverse", True) is not True:
            raise ValueError("backward_layer must process time in reverse; got reverse=False")
        if getattr(forward_layer, "reverse", False) is not False:
            raise ValueError("forward_layer must process time forwards; got reverse=True")
        for option in ("time_major", "in_features"):
            forward_value = getattr(forward_layer, option, None)
            backward_value = getattr(backward_layer, option, None)
            if forward_value != backward_value:
                raise ValueError(
                    f"forward_layer and backward_layer must agree on {option}; got "
                    f"{forward_value!r} and {backward_value!r}"
                )
        self.forward_layer = forward_layer
        self.backward_layer = backward_layer
        self.fused = (
            fused
            and all(isinstance(layer, GRU) for layer in (forward_layer, backward_layer))
            and all(getattr(forward_layer, k) == getattr(backward_layer, k) for k in _FUSABLE)
            and (forward_layer.cell.compute_dtype == backward_layer.cell.compute_dtype)
        )

    def __call__(self, x, seq_lengths=None, initial_carry=None, return_carry=False):
        validation.check_carry_pair(initial_carry)
        seq_lengths = validation.lengths_array(seq_lengths)
        carry_f, carry_b = (None, None) if initial_carry is None else initial_carry
        if self.fused:
            return self._fused_call(x, seq_lengths, carry_f, carry_b, return_carry)
        carry_f, y_f = self.forward_layer(x, seq_lengths, carry_f, return_carry=True)
        carry_b, y_b = self.backward_layer(x, seq_lengths, carry_b, return_carry=True)
        y = jnp.concatenate([y_f, y_b], axis=-1)
        return ((carry_f, carry_b), y) if return_carry else y

    def _fused_call(self, x, seq_lengths, carry_f, carry_b, return_carry):
        forward, backward = self.forward_layer, self.backward_layer
        validation.check_sequence_input(x, forward.in_features, forward.time_major)
        batch, steps = (x.shape[1], x.shape[0]) if forward.time_major else x.shape[:2]
        validation.check_seq_lengths(seq_lengths, batch, steps)
        carries = []
        for carry, layer in ((carry_f, forward), (carry_b, backward)):
            validation.check_carry(carry, (batch, layer.hidden_size))
            carries.append(layer.initialize_carry(batch) if carry is None else carry)
        carries, y = bidirectional_gru_scan(
            forward.cell.weights(),
            backward.cell.weights(),
            x,
            tuple(carries),
            seq_lengths,
            time_major=forward.time_major,
            reset_after=forward.reset_after,
            unroll=forward.unroll,
            compute_dtype=forward.cell.compute_dtype,
            hoist_inputs=forward.hoist_inputs,
            chunk_size=forward.chunk_size,
            batch_groups=forward.batch_groups,
            remat=forward.remat,
            save_gates=forward.save_gates,
            custom_gradient=forward.custom_gradient,
        )
        return (carries, y) if return_carry else y


class StackedGRU(nnx.Module):
    """A multi-layer, optionally bidirectional GRU with PyTorch ``nn.GRU`` semantics.

    Call ``stack(x, seq_lengths=None, initial_carry=None, return_carry=False)`` with
    ``x: f32[batch, time, in_features]``. Outputs are ``f32[batch, time, dirs*hidden]`` (the
    last layer's); the carry is ``f32[num_layers*dirs, batch, hidden]`` ordered like
    PyTorch's ``h_n`` (layer 0 forward, layer 0 backward, layer 1 forward, ...), and so is
    ``initial_carry``. Dropout is applied between layers only, in training mode
    (``model.train()``; ``model.eval()`` makes it deterministic).

    Example::

        stack = gru_jax.StackedGRU(28, 128, num_layers=2, bidirectional=True,
                                   rngs=nnx.Rngs(0))
        carry, y = stack(jnp.ones((8, 28, 28)), return_carry=True)  # y: (8, 28, 256)
        carry.shape                                                  # (4, 8, 128)
    """

    def __init__(
        self,
        in_features: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        dropout: float = 0.0,
        reset_after: bool = True,
        time_major: bool = False,
        rngs: nnx.Rngs,
        **layer_kwargs: Any,
    ):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1; got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1); got {dropout}")
        self.in_features = in_features
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.time_major = time_major
        self.reset_after = reset_after
        layers = []
        for index in range(num_layers):
            features = in_features if index == 0 else hidden_size * self.num_directions

            def make(reverse, features=features):
                return GRU(
                    features,
                    hidden_size,
                    reset_after=reset_after,
                    reverse=reverse,
                    time_major=time_major,
                    rngs=rngs,
                    **layer_kwargs,
                )

            layers.append(Bidirectional(make(False), make(True)) if bidirectional else make(False))
        self.layers = nnx.List(layers)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def directions(self, layer: int) -> list[GRU]:
        """The GRU layers of stack layer ``layer``: [forward] or [forward, backward]."""
        block = self.layers[layer]
        return [block.forward_layer, block.backward_layer] if self.bidirectional else [block]

    def __call__(
        self,
        x,
        seq_lengths=None,
        initial_carry=None,
        return_carry=False,
        deterministic: bool | None = None,
    ):
        validation.check_sequence_input(x, self.in_features, self.time_major)
        batch = x.shape[1] if self.time_major else x.shape[0]
        seq_lengths = validation.lengths_array(seq_lengths)
        dirs = self.num_directions
        validation.check_carry(initial_carry, (self.num_layers * dirs, batch, self.hidden_size))
        carries = []
        for index, block in enumerate(self.layers):
            if index > 0:
                x = self.dropout(x, deterministic=deterministic)
            layer_carry = None
            if initial_carry is not None:
                layer_carry = initial_carry[index * dirs : (index + 1) * dirs]
                layer_carry = tuple(layer_carry) if self.bidirectional else layer_carry[0]
            carry, x = block(x, seq_lengths, layer_carry, return_carry=True)
            carries.extend(carry if self.bidirectional else [carry])
        if return_carry:
            return jnp.stack(carries), x
        return x
