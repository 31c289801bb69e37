"""Video classification: a per-frame CNN encoder followed by a GRU over the frames.

    frames [B, T, H, W, C] ─fold time into batch─► [B·T, H, W, C]
        ─► conv 3×3 stride 2 + ReLU (× len(conv_channels)) ─► flatten ─► Linear + ReLU
        ─► [B, T, frame_features] ─► SequenceClassifier (StackedGRU + readout + Linear)
        ─► logits [B, num_classes]

The encoder sees every frame alone (all ``B·T`` frames in one batched convolution), so
anything about motion must come from the GRU reading the frame features in order. The
encoder flattens its last feature map instead of pooling it: the position of the content
in each frame is what the GRU compares across frames.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gru_jax.initializers import flax_kernel_init
from gru_jax.models.sequence_classifier import SequenceClassifier

Array = jax.Array


def _strided_size(size: int, layers: int) -> int:
    for _ in range(layers):
        size = -(-size // 2)  # SAME padding, stride 2
    return size


class FrameEncoder(nnx.Module):
    """Stride-2 3×3 convolutions with ReLU, flattened and projected to ``features``.

    Call ``encoder(frames)`` with ``frames: f32[N, H, W, C]``; returns f32[N, features].
    """

    def __init__(
        self,
        frame_shape: tuple[int, int, int],
        conv_channels: tuple[int, ...],
        features: int,
        *,
        rngs: nnx.Rngs,
    ):
        height, width, channels = frame_shape
        widths = (channels, *conv_channels)
        self.convs = nnx.List(
            [
                nnx.Conv(
                    i,
                    o,
                    (3, 3),
                    strides=(2, 2),
                    padding="SAME",
                    kernel_init=flax_kernel_init,
                    rngs=rngs,
                )
                for i, o in zip(widths[:-1], widths[1:])
            ]
        )
        layers = len(conv_channels)
        flat = _strided_size(height, layers) * _strided_size(width, layers) * widths[-1]
        self.project = nnx.Linear(flat, features, rngs=rngs)

    def __call__(self, frames: Array) -> Array:
        x = frames
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        return jax.nn.relu(self.project(x.reshape(x.shape[0], -1)))


class VideoClassifier(nnx.Module):
    """Per-frame CNN + GRU classifier (see the module docstring).

    Call ``model(videos)`` with ``videos: f32[batch, time, H, W, C]``; returns ``logits
    f32[batch, num_classes]``.

    Args:
      frame_shape: (H, W, C) of one frame.
      num_classes: number of output classes.
      conv_channels: output channels of each stride-2 convolution.
      frame_features: size of the per-frame feature vector the GRU reads.
      hidden_size: GRU state size per direction.
      num_layers: stacked GRU layers.
      bidirectional: add a backward direction to every GRU layer.
      dropout: dropout between GRU layers and before the classifier.
      readout: ``'last'`` (final state per direction) or ``'mean'`` over time.
      rngs: ``nnx.Rngs`` with ``params`` and ``dropout`` streams.
    """

    def __init__(
        self,
        frame_shape: tuple[int, int, int],
        num_classes: int,
        *,
        conv_channels: tuple[int, ...] = (16, 32, 64),
        frame_features: int = 128,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        readout: str = "last",
        rngs: nnx.Rngs,
    ):
        if len(frame_shape) != 3 or not conv_channels:
            raise ValueError(
                "frame_shape must be (height, width, channels) and conv_channels non-empty; "
                f"got {frame_shape}, {conv_channels}"
            )
        self.frame_shape = tuple(frame_shape)
        self.encoder = FrameEncoder(
            self.frame_shape, tuple(conv_channels), frame_features, rngs=rngs
        )
        self.temporal = SequenceClassifier(
            frame_features,
            num_classes,
            hidden_size=hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            readout=readout,
            rngs=rngs,
        )

    def frame_features(self, videos: Array) -> Array:
        """f32[batch, time, frame_features]: every frame encoded on its own."""
        shape = tuple(getattr(videos, "shape", ()))
        if len(shape) != 5 or shape[2:] != self.frame_shape:
            raise ValueError(
                f"videos must have shape [batch, time, {', '.join(map(str, self.frame_shape))}]; "
                f"got {shape}"
            )
        batch, steps = shape[:2]
        features = self.encoder(jnp.reshape(videos, (batch * steps, *self.frame_shape)))
        return features.reshape(batch, steps, -1)

    def __call__(self, videos: Array) -> Array:
        return self.temporal(self.frame_features(videos))
