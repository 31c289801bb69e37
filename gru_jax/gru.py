"""Flax NNX GRU cell and GRU layer."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from gru_jax import validation
from gru_jax.ops.gru_math import GRUWeights, gru_step, prepare_step_weights, project_inputs
from gru_jax.ops.gru_scan import gru_scan

Array = jax.Array
Initializer = Any

default_kernel_init = nnx.initializers.glorot_uniform()
default_bias_init = nnx.initializers.zeros_init()


def per_gate_orthogonal(key, shape, dtype=jnp.float32):
    """Orthogonal init of each ``[hidden, hidden]`` gate block of a ``[hidden, 3*hidden]``
    recurrent kernel (as flax linen and PyTorch-style recurrent inits do per gate)."""
    rows, cols = shape
    blocks = cols // rows if cols % rows == 0 else 1
    keys = jax.random.split(key, blocks)
    init = nnx.initializers.orthogonal()
    # QR has no bfloat16 kernel: build each block in float32, then cast.
    blocks_f32 = [init(k, (rows, cols // blocks), jnp.float32) for k in keys]
    return jnp.concatenate(blocks_f32, axis=-1).astype(dtype)


class GRUGates(NamedTuple):
    """Per-step gate activations in the outputs' layout: each ``f32[batch, time, hidden]``
    (``[time, batch, hidden]`` with ``time_major``; ``[batch, hidden]`` from
    ``GRUCell.step``), zero at padded steps."""

    reset: Array
    update: Array
    candidate: Array


class GRUCell(nnx.Module):
    """A GRU cell in either form. Gate order of the fused kernels: (r, z, n).

    reset_after=True (cuDNN / PyTorch / Keras default)::

        r = sigmoid(x W_ir + b_ir + h W_hr + b_hr)
        z = sigmoid(x W_iz + b_iz + h W_hz + b_hz)
        n = tanh(x W_in + b_in + r * (h W_hn + b_hn))
        h' = z * h + (1 - z) * n

    reset_after=False (Cho et al. 2014: reset applied before the recurrent matmul)::

        z = sigmoid(x W_xz + h W_hz + b_z)
        r = sigmoid(x W_xr + h W_hr + b_r)
        n = tanh(x W_xn + (r * h) W_hn + b_n)
        h' = z * h + (1 - z) * n

    Parameters: ``input_kernel f32[in_features, 3*hidden]``, ``recurrent_kernel
    f32[hidden, 3*hidden]``, ``input_bias f32[3*hidden]`` and, for reset_after only,
    ``recurrent_bias f32[3*hidden]``.

    Args:
      in_features: size of x.
      hidden_size: size of h.
      reset_after: which form (see above).
      dtype: dtype of the matmul operands (e.g. ``jnp.bfloat16``); gates and state stay
        float32. None: the parameter dtype.
      param_dtype: dtype the parameters are stored in.
      kernel_init / recurrent_kernel_init / bias_init: initialisers (Glorot-uniform,
        per-gate orthogonal, zeros: the Keras/Flax defaults).
      rngs: ``nnx.Rngs`` for the initialisers.
    """

    def __init__(
        self,
        in_features: int,
        hidden_size: int,
        *,
        reset_after: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        kernel_init: Initializer = default_kernel_init,
        recurrent_kernel_init: Initializer = per_gate_orthogonal,
        bias_init: Initializer = default_bias_init,
        rngs: nnx.Rngs,
    ):
        if in_features <= 0 or hidden_size <= 0:
            raise ValueError(
                f"in_features and hidden_size must be positive; got {in_features}, {hidden_size}"
            )
        self.in_features = in_features
        self.hidden_size = hidden_size
        self.reset_after = reset_after
        self.dtype = dtype
        self.param_dtype = param_dtype
        h3 = 3 * hidden_size
        self.input_kernel = nnx.Param(kernel_init(rngs.params(), (in_features, h3), param_dtype))
        self.recurrent_kernel = nnx.Param(
            recurrent_kernel_init(rngs.params(), (hidden_size, h3), param_dtype)
        )
        self.input_bias = nnx.Param(bias_init(rngs.params(), (h3,), param_dtype))
        self.recurrent_bias = (
            nnx.Param(bias_init(rngs.params(), (h3,), param_dtype)) if reset_after else None
        )

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype if self.dtype is not None else self.param_dtype)

    def weights(self) -> GRUWeights:
        """The parameters as a :class:`GRUWeights` pytree (what ``gru_jax.ops`` takes)."""
        return GRUWeights(
            self.input_kernel[...],
            self.recurrent_kernel[...],
            self.input_bias[...],
            None if self.recurrent_bias is None else self.recurrent_bias[...],
        )

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: nnx.Rngs | None = None):
        """Zero state ``f32[*batch, hidden]`` for inputs of shape ``(*batch, features)``."""
        del rngs
        return jnp.zeros((*input_shape[:-1], self.hidden_size), jnp.float32)

    def step(self, carry: Array, inputs: Array) -> tuple[Array, GRUGates]:
        """One step; returns ``(h_new, gates)``. carry: f32[batch, hidden];
        inputs: f32[batch, in_features]."""
        validation.check_carry(carry, (*inputs.shape[:-1], self.hidden_size), name="carry")
        if inputs.shape[-1] != self.in_features:
            raise ValueError(
                f"inputs feature size must equal in_features={self.in_features}; "
                f"got shape {tuple(inputs.shape)}"
            )
        sw = prepare_step_weights(self.weights(), self.compute_dtype)
        h_new, n, res = gru_step(
            carry.astype(jnp.float32), project_inputs(inputs, sw), sw, self.reset_after
        )
        return h_new, GRUGates(res.reset, res.update, n)

    def __call__(self, carry: Array, inputs: Array) -> tuple[Array, Array]:
        """``(new_carry, output)``, both ``f32[batch, hidden]`` (the same array), like
        ``nnx.GRUCell``."""
        h_new, _ = self.step(carry, inputs)
        return h_new, h_new

    @property
    def num_feature_axes(self) -> int:
        return 1


class GRU(nnx.Module):
    """A GRU layer: ``jax.lax.scan`` of :class:`GRUCell`'s equations over time.

    Call ``gru(x, seq_lengths=None, initial_carry=None, return_carry=False,
    return_gates=False)`` with ``x: f32[batch, time, in_features]`` (``[time, batch, ...]``
    if ``time_major``). Returns ``outputs f32[batch, time, hidden]``; with
    ``return_carry`` ``(carry, outputs)``; with ``return_gates`` a :class:`GRUGates` is
    appended. With ``seq_lengths`` (int[batch], padding at the end) outputs at
    ``t >= length`` are exactly zero and the carry is the state after the last valid step;
    ``reverse=True`` runs each sequence's valid part from its own end (PyTorch packed
    semantics). Length 0 gives zero outputs and the initial carry.

    Options of the fast path (results are identical either way; None picks by backend and
    size, see :func:`gru_jax.ops.gru_scan`): ``unroll`` (loop unroll factor),
    ``hoist_inputs`` (project all steps' inputs with one GEMM before the loop),
    ``chunk_size`` (steps per chunk of the custom backward pass), ``batch_groups``
    (independent batch groups per step, so XLA CPU runs their GEMMs concurrently),
    ``save_gates`` (keep the gates for the backward instead of recomputing them),
    ``remat`` (keep only every ``chunk_size``-th state for the backward: memory stops
    growing with time x batch x hidden when the outputs are not kept), and
    ``custom_gradient`` (False: plain autodiff of a reference ``lax.scan``).

    Example::

        import jax, jax.numpy as jnp
        from flax import nnx
        import gru_jax

        gru = gru_jax.GRU(in_features=8, hidden_size=32, rngs=nnx.Rngs(0))
        x = jnp.ones((4, 10, 8))                      # [batch, time, features]
        carry, y = gru(x, seq_lengths=jnp.array([10, 7, 3, 0]), return_carry=True)
        y.shape, carry.shape                          # (4, 10, 32), (4, 32)
    """

    def __init__(
        self,
        in_features: int,
        hidden_size: int,
        *,
        reset_after: bool = True,
        reverse: bool = False,
        unroll: int | bool | None = None,
        time_major: bool = False,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        kernel_init: Initializer = default_kernel_init,
        recurrent_kernel_init: Initializer = per_gate_orthogonal,
        bias_init: Initializer = default_bias_init,
        hoist_inputs: bool | None = None,
        chunk_size: int = 16,
        batch_groups: int | None = None,
        remat: bool = False,
        save_gates: bool | None = None,
        custom_gradient: bool = True,
        rngs: nnx.Rngs,
    ):
        validation.check_kernel_options(
            unroll=unroll, chunk_size=chunk_size, batch_groups=batch_groups
        )
        self.cell = GRUCell(
            in_features,
            hidden_size,
            reset_after=reset_after,
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=kernel_init,
            recurrent_kernel_init=recurrent_kernel_init,
            bias_init=bias_init,
            rngs=rngs,
        )
        self.in_features = in_features
        self.hidden_size = hidden_size
        self.reset_after = reset_after
        self.reverse = reverse
        self.unroll = unroll
        self.time_major = time_major
        self.hoist_inputs = hoist_inputs
        self.chunk_size = chunk_size
        self.batch_groups = batch_groups
        self.remat = remat
        self.save_gates = save_gates
        self.custom_gradient = custom_gradient

    def initialize_carry(self, batch_size: int) -> Array:
        return jnp.zeros((batch_size, self.hidden_size), jnp.float32)

    def __call__(
        self,
        x: Array,
        seq_lengths: Array | None = None,
        initial_carry: Array | None = None,
        return_carry: bool = False,
        return_gates: bool = False,
    ):
        validation.check_sequence_input(x, self.in_features, self.time_major)
        batch, steps = (x.shape[1], x.shape[0]) if self.time_major else x.shape[:2]
        seq_lengths = validation.lengths_array(seq_lengths)
        validation.check_seq_lengths(seq_lengths, batch, steps)
        validation.check_carry(initial_carry, (batch, self.hidden_size))
        if initial_carry is None:
            initial_carry = self.initialize_carry(batch)
        result = gru_scan(
            self.cell.weights(),
            x,
            initial_carry,
            seq_lengths,
            time_major=self.time_major,
            reset_after=self.reset_after,
            reverse=self.reverse,
            unroll=self.unroll,
            compute_dtype=self.cell.compute_dtype,
            hoist_inputs=self.hoist_inputs,
            chunk_size=self.chunk_size,
            batch_groups=self.batch_groups,
            remat=self.remat,
            save_gates=self.save_gates,
            return_gates=return_gates,
            custom_gradient=self.custom_gradient,
        )
        carry, outputs = result[0], result[1]
        out = (carry, outputs) if return_carry else (outputs,)
        if return_gates:
            out = (*out, GRUGates(*result[2]))
        return out[0] if len(out) == 1 else out
