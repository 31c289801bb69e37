"""gru_jax: gated recurrent units for computer vision in JAX/Flax NNX.

Public API::

    GRUCell, GRU, GRUGates, Bidirectional, StackedGRU   # Flax NNX modules
    ConvGRUCell, ConvGRU                                # convolutional GRU (video, images)
    GRUWeights                                          # the parameter pytree ops take
    ops                                                 # pure functions (steps, scans)
    interop                                             # PyTorch / Keras / flax linen weights
    models                                              # model families of the experiments
    data                                                # datasets, views, generators, batching

``models`` and ``data`` are imported on first access (``gru_jax.data`` pulls in
scikit-learn and TensorFlow Datasets).
"""

import importlib

from gru_jax import interop as interop
from gru_jax import ops as ops
from gru_jax.convgru import ConvGRU, ConvGRUCell
from gru_jax.gru import GRU, GRUCell, GRUGates
from gru_jax.ops.gru_math import GRUWeights
from gru_jax.stacked import Bidirectional, StackedGRU

__version__ = "0.1.0"

_LAZY_SUBMODULES = ("data", "models")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"gru_jax.{name}")
    raise AttributeError(f"module 'gru_jax' has no attribute {name!r}")


__all__ = [
    "GRU",
    "GRUCell",
    "GRUGates",
    "GRUWeights",
    "Bidirectional",
    "StackedGRU",
    "ConvGRU",
    "ConvGRUCell",
    "data",
    "interop",
    "models",
    "ops",
]
