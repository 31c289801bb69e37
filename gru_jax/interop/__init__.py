"""Weight conversion between gru_jax and torch ``nn.GRU``, Keras ``GRU`` and flax linen
``GRUCell``.

=========================  ============================================  =================
source                     gru_jax                                       back
=========================  ============================================  =================
``torch.nn.GRU``           :func:`from_torch` -> ``StackedGRU``          :func:`to_torch`
``keras.layers.GRU``       :func:`from_keras` -> ``GRU``                 :func:`to_keras`
linen ``RNN(GRUCell)``     :func:`from_flax_linen` -> ``GRU``            :func:`to_flax_linen`
=========================  ============================================  =================

gru_jax fuses kernels as ``[features, 3*hidden]`` in gate order (r, z, n): torch's order
transposed, Keras's (z, r, h) with the first two blocks swapped, linen's six Dense layers
concatenated. torch and Keras are imported only when a converter for them is called;
without them the call raises an ImportError naming ``pip install "gru_jax[dev]"``.
Incompatible weights raise a one-line ValueError naming the expected and the actual shape.

Example::

    import jax.numpy as jnp
    import numpy as np
    import torch
    from gru_jax import interop

    torch.manual_seed(0)
    torch_gru = torch.nn.GRU(8, 16, num_layers=2, bidirectional=True, batch_first=True)
    stack = interop.from_torch(torch_gru)            # gru_jax.StackedGRU
    x = torch.randn(4, 10, 8)                        # [batch, time, features]
    y_torch, h_torch = torch_gru(x)                  # [4, 10, 32], [4, 4, 16]
    h, y = stack(jnp.asarray(x.numpy()), return_carry=True)
    np.testing.assert_allclose(y, y_torch.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(h, h_torch.detach().numpy(), atol=1e-5)
    torch_gru.load_state_dict(interop.to_torch(stack))  # and back
"""

from gru_jax.interop.flax_linen import from_flax_linen, to_flax_linen
from gru_jax.interop.keras_gru import from_keras, to_keras
from gru_jax.interop.torch_gru import from_torch, to_torch

__all__ = [
    "from_flax_linen",
    "from_keras",
    "from_torch",
    "to_flax_linen",
    "to_keras",
    "to_torch",
]
