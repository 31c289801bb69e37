"""gru_jax: gated recurrent units for computer vision in JAX/Flax NNX.

Public API::

    GRUCell, GRU, GRUGates, Bidirectional, StackedGRU   # Flax NNX modules
    ops                                                 # pure functions (scan, steps)
    interop                                             # PyTorch / Keras / flax linen weights
"""

from gru_jax import interop as interop
from gru_jax.convgru import ConvGRU, ConvGRUCell
from gru_jax.gru import GRU, GRUCell, GRUGates
from gru_jax.ops.gru_math import GRUWeights
from gru_jax.stacked import Bidirectional, StackedGRU

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "GRUCell",
    "GRUGates",
    "GRUWeights",
    "Bidirectional",
    "StackedGRU",
    "ConvGRU",
    "ConvGRUCell",
]
