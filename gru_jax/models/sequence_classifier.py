"""Sequence classifier: a recurrent stack read out into class logits.

The stack is either the project's :class:`gru_jax.StackedGRU` (``cell='gru'``) or Flax
NNX's LSTM (``cell='lstm'``: ``nnx.OptimizedLSTMCell`` inside ``nnx.RNN``), so GRU-vs-LSTM
comparisons share every other line of code. Both honour ``seq_lengths`` (padding at the
end) and run bidirectionally on request.

Readouts of the last layer:

* ``'last'`` — the state after each sequence's last valid step, per direction. For the
  backward direction the final carry is its state at t = 0 (it has then read the whole
  sequence from its end), so both directions have seen every valid step.
* ``'mean'`` — the mean of the outputs over the valid steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gru_jax.gru import GRUGates
from gru_jax.stacked import StackedGRU

Array = jax.Array
CELLS = ("gru", "lstm")
READOUTS = ("last", "mean")


def _valid_mask(seq_lengths: Array | None, batch: int, steps: int) -> Array:
    """bool[batch, time]: True at valid (non-padded) steps."""
    if seq_lengths is None:
        return jnp.ones((batch, steps), bool)
    return jnp.arange(steps)[None, :] < seq_lengths[:, None]


class StackedLSTM(nnx.Module):
    """A multi-layer, optionally bidirectional LSTM from Flax NNX parts, returning
    ``(final hidden states f32[num_layers*dirs, batch, hidden], outputs f32[batch, time,
    dirs*hidden])`` like ``StackedGRU(..., return_carry=True)``. Outputs at padded steps are
    zero; the backward direction reads each sequence's valid part from its own end."""

    def __init__(
        self,
        in_features: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        self.num_directions = 2 if bidirectional else 1
        layers = []
        for index in range(num_layers):
            features = in_features if index == 0 else hidden_size * self.num_directions
            layers.append(
                nnx.List(
                    nnx.RNN(
                        nnx.OptimizedLSTMCell(features, hidden_size, rngs=rngs),
                        return_carry=True,
                        reverse=reverse,
                        keep_order=True,
                    )
                    for reverse in (False, True)[: self.num_directions]
                )
            )
        self.layers = nnx.List(layers)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: Array, seq_lengths: Array | None = None) -> tuple[Array, Array]:
        mask = _valid_mask(seq_lengths, x.shape[0], x.shape[1])[..., None]
        finals = []
        for index, directions in enumerate(self.layers):
            if index > 0:
                x = self.dropout(x)
            outputs = []
            for rnn in directions:
                (_, hidden), y = rnn(x, seq_lengths=seq_lengths)
                if seq_lengths is not None:  # nnx.RNN returns the last carry for length 0
                    hidden = jnp.where((seq_lengths > 0)[:, None], hidden, 0.0)
                finals.append(hidden)
                outputs.append(jnp.where(mask, y, 0.0))
            x = jnp.concatenate(outputs, axis=-1)
        return jnp.stack(finals), x


class SequenceClassifier(nnx.Module):
    """Recurrent stack + readout + Dense to class logits.

    Call ``model(x, seq_lengths=None)`` with ``x: f32[batch, time, in_features]``; returns
    ``logits f32[batch, num_classes]``.

    Args:
      in_features: features per time step.
      num_classes: number of output classes.
      hidden_size: recurrent state size per direction.
      num_layers: stacked recurrent layers.
      cell: ``'gru'`` (:class:`gru_jax.StackedGRU`) or ``'lstm'`` (``nnx.OptimizedLSTMCell``).
      bidirectional: add a backward direction to every layer.
      dropout: dropout rate between recurrent layers and before the Dense readout.
      reset_after: GRU form (ignored by the LSTM).
      readout: ``'last'`` or ``'mean'`` (see the module docstring).
      rngs: ``nnx.Rngs`` with a ``params`` and a ``dropout`` stream.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        hidden_size: int = 128,
        num_layers: int = 1,
        cell: str = "gru",
        bidirectional: bool = False,
        dropout: float = 0.0,
        reset_after: bool = True,
        readout: str = "last",
        rngs: nnx.Rngs,
    ):
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}: expected one of {', '.join(CELLS)}")
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}: expected one of {', '.join(READOUTS)}")
        self.cell = cell
        self.readout = readout
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        if cell == "gru":
            self.rnn = StackedGRU(
                in_features,
                hidden_size,
                num_layers,
                bidirectional=bidirectional,
                dropout=dropout,
                reset_after=reset_after,
                rngs=rngs,
            )
        else:
            self.rnn = StackedLSTM(
                in_features,
                hidden_size,
                num_layers,
                bidirectional=bidirectional,
                dropout=dropout,
                rngs=rngs,
            )
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(hidden_size * self.num_directions, num_classes, rngs=rngs)

    def features(self, x: Array, seq_lengths: Array | None = None) -> Array:
        """The readout vector f32[batch, dirs*hidden] that the Dense head classifies."""
        if self.cell == "gru":
            finals, outputs = self.rnn(x, seq_lengths, return_carry=True)
        else:
            finals, outputs = self.rnn(x, seq_lengths)
        if self.readout == "last":
            # finals: [num_layers*dirs, batch, hidden] ordered layer-major (PyTorch h_n).
            last_layer = finals[-self.num_directions :]
            return jnp.concatenate(list(last_layer), axis=-1)
        mask = _valid_mask(seq_lengths, x.shape[0], x.shape[1])[..., None]
        count = jnp.maximum(mask.sum(axis=1), 1)
        return jnp.where(mask, outputs, 0.0).sum(axis=1) / count

    def __call__(self, x: Array, seq_lengths: Array | None = None) -> Array:
        return self.head(self.dropout(self.features(x, seq_lengths)))

    def first_layer_gates(self, x: Array, seq_lengths: Array | None = None) -> GRUGates:
        """Gate activations of the first GRU layer's forward direction, each
        f32[batch, time, hidden] (for plots of the update gate z over time)."""
        if self.cell != "gru":
            raise ValueError(
                f"gate activations are only available for cell='gru'; got {self.cell!r}"
            )
        forward = self.rnn.directions(0)[0]
        _, gates = forward(x, seq_lengths, return_gates=True)
        return gates


def count_parameters(model: nnx.Module) -> int:
    """Number of scalar parameters (``nnx.Param`` leaves) in ``model``."""
    return int(sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))))
