"""Flax NNX convolutional GRU cell and layer (Ballas et al. 2015).

The GRU's matmuls become stride-1 ``SAME`` 2-D convolutions over NHWC frames; both reset
forms are exactly those of :class:`gru_jax.GRUCell`. The pure functions live in
:mod:`gru_jax.ops.conv_gru`.

Speed on XLA CPU (``python -m benchmarks.bench_convgru --video``; 2-core CPU shared with
other jobs, one process, medians; one training step = fwd+bwd of ``sum(outputs**2)``
w.r.t. the parameters; 3x3 kernels, 32 hidden channels)::

                                        B=16 T=10 16x16x32   B=16 T=20 64x64x1
    variant                             fwd+bwd ms  x base   fwd+bwd ms  x base
    xla autodiff, rolled (baseline)         6,670     1.0       155,507     1.0
    xla autodiff, unroll=True                 158    42.2         3,625    42.9
    stepwise, rolled                          174    38.4         4,311    36.1
    stepwise, rolled, hoisted input conv      196    34.1         4,910    31.7
    stepwise, unroll=True (the default)       152    43.9         3,634    42.8
    deferred custom VJP, rolled               185    36.0         4,412    35.2
    deferred custom VJP, unroll=True          198    33.8         6,236    24.9
    forward only (default)                     52                 1,321

Autodiff of a rolled ``lax.scan`` over stock convolutions is slow because XLA CPU leaves
the kernel-gradient convolution inside the loop in a layout its fast convolution
routine does not take (see :mod:`gru_jax.ops.conv_same`); writing the backward
convolutions in the canonical layout removes the pathology without unrolling, so long
sequences (rolled: compile time independent of T) take only 15-19% longer than unrolled.
The deferred custom VJP (per-step gate gradients stacked, kernel gradients formed after
the reverse scan) is exact but brings nothing more on this backend once the layout is
right. Defaults: ``gradient="auto"`` (stepwise), ``unroll=None`` (unroll when T <= 20),
``hoist_inputs=False``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gru_jax import initializers, validation
from gru_jax.gru import GRUGates
from gru_jax.ops.conv_gru import (
    GRADIENT_MODES,
    ConvGRUWeights,
    conv_gru_scan,
    conv_gru_step,
    project_frames,
    step_conv,
    step_weights,
)

Array = jax.Array
Initializer = Any

default_kernel_init = initializers.glorot_uniform()  # drawn flat: fast to compile
default_bias_init = nnx.initializers.zeros_init()


def conv_per_gate_orthogonal(key, shape, dtype=jnp.float32):
    """Orthogonal init of each gate block of a recurrent kernel ``[kh, kw, C, 3*C]``,
    with the block flattened to ``[kh*kw*C, C]`` (its fan-in by its fan-out)."""
    *window, channels, out = shape
    gates = 3 if out % 3 == 0 else 1
    rows = math.prod(window) * channels
    init = nnx.initializers.orthogonal()
    keys = jax.random.split(key, gates)
    blocks = [init(k, (rows, out // gates), dtype) for k in keys]
    return jnp.concatenate(blocks, axis=-1).reshape(shape)


def _as_pair(size, name: str) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(k, int) and k > 0 for k in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them; got {size!r}")
    return pair


def check_frames(x, in_channels: int, time_major: bool, name: str = "inputs") -> None:
    """Rank-5 video input with ``in_channels`` channels, else a one-line ValueError."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 5:
        layout = (
            "[time, batch, height, width, channels]"
            if time_major
            else ("[batch, time, height, width, channels]")
        )
        raise ValueError(f"{name} must be rank 5 {layout}; got shape {shape}")
    if shape[-1] != in_channels:
        raise ValueError(
            f"{name} channel size must equal in_channels={in_channels}; got shape {shape}"
        )
    if shape[0 if time_major else 1] == 0:
        raise ValueError(f"{name} must have at least one time step; got shape {shape}")


class ConvGRUCell(nnx.Module):
    """A convolutional GRU cell (``*``: stride-1 ``SAME`` 2-D convolution, gate order
    r, z, n in the last kernel axis).

    reset_after=True (cuDNN / PyTorch form)::

        r = sigmoid(W_ir * x + b_ir + W_hr * h + b_hr)
        z = sigmoid(W_iz * x + b_iz + W_hz * h + b_hz)
        n = tanh(W_in * x + b_in + r ⊙ (W_hn * h + b_hn))
        h' = z ⊙ h + (1 - z) ⊙ n

    reset_after=False (Cho et al. 2014)::

        z = sigmoid(W_xz * x + W_hz * h + b_z)
        r = sigmoid(W_xr * x + W_hr * h + b_r)
        n = tanh(W_xn * x + W_hn * (r ⊙ h) + b_n)
        h' = z ⊙ h + (1 - z) ⊙ n

    Parameters (HWIO): ``input_kernel f32[kh, kw, in_channels, 3*hidden_channels]``,
    ``recurrent_kernel f32[kh', kw', hidden_channels, 3*hidden_channels]``,
    ``input_bias f32[3*hidden_channels]`` and, for reset_after only, ``recurrent_bias``.

    Args:
      in_channels: channels of each input frame x ``[batch, height, width, in_channels]``.
      hidden_channels: channels of the state h ``[batch, height, width, hidden_channels]``.
      kernel_size: input convolution window (int or pair).
      recurrent_kernel_size: state convolution window (default: ``kernel_size``).
      reset_after: which form (see above).
      dtype: convolution operand dtype (None: the parameter dtype); state stays float32.
      param_dtype: dtype the parameters are stored in.
      kernel_init / recurrent_kernel_init / bias_init: initialisers (Glorot-uniform,
        per-gate orthogonal over the flattened window, zeros).
      gradient: how a step's convolutions are written (``"auto"``, ``"stepwise"``,
        ``"deferred"`` (a cell steps like ``"stepwise"``), ``"xla"``, ``"im2col"``; see
        :mod:`gru_jax.ops.conv_gru`); the result is the same for all. ``"im2col"``: one
        patch GEMM for the three gates of the input and one for the state's, faster on
        small grids with many channels.
      rngs: ``nnx.Rngs`` for the initialisers.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int | tuple[int, int] = (3, 3),
        recurrent_kernel_size: int | tuple[int, int] | None = None,
        *,
        reset_after: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        kernel_init: Initializer = default_kernel_init,
        recurrent_kernel_init: Initializer = conv_per_gate_orthogonal,
        bias_init: Initializer = default_bias_init,
        gradient: str = "auto",
        rngs: nnx.Rngs,
    ):
        if gradient not in GRADIENT_MODES:
            raise ValueError(f"gradient must be one of {GRADIENT_MODES}; got {gradient!r}")
        if in_channels <= 0 or hidden_channels <= 0:
            raise ValueError(
                "in_channels and hidden_channels must be positive; "
                f"got {in_channels}, {hidden_channels}"
            )
        self.kernel_size = _as_pair(kernel_size, "kernel_size")
        self.recurrent_kernel_size = (
            self.kernel_size
            if recurrent_kernel_size is None
            else _as_pair(recurrent_kernel_size, "recurrent_kernel_size")
        )
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.reset_after = reset_after
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.gradient = gradient
        h3 = 3 * hidden_channels
        self.input_kernel = nnx.Param(
            kernel_init(rngs.params(), (*self.kernel_size, in_channels, h3), param_dtype)
        )
        self.recurrent_kernel = nnx.Param(
            recurrent_kernel_init(
                rngs.params(), (*self.recurrent_kernel_size, hidden_channels, h3), param_dtype
            )
        )
        self.input_bias = nnx.Param(bias_init(rngs.params(), (h3,), param_dtype))
        self.recurrent_bias = (
            nnx.Param(bias_init(rngs.params(), (h3,), param_dtype)) if reset_after else None
        )

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype if self.dtype is not None else self.param_dtype)

    def weights(self) -> ConvGRUWeights:
        """The parameters as a :class:`ConvGRUWeights` pytree (what the ops take)."""
        return ConvGRUWeights(
            self.input_kernel[...],
            self.recurrent_kernel[...],
            self.input_bias[...],
            None if self.recurrent_bias is None else self.recurrent_bias[...],
        )

    def step_weights(self):
        """The weights prepared once for a run of steps (:func:`conv_gru_step`,
        :func:`project_frames`): per gate, or fused for ``gradient="im2col"``."""
        return step_weights(self.weights(), self.compute_dtype, self.gradient)

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: nnx.Rngs | None = None):
        """Zero state ``f32[*batch, height, width, hidden_channels]`` for frames of shape
        ``(*batch, height, width, in_channels)``."""
        del rngs
        return jnp.zeros((*input_shape[:-1], self.hidden_channels), jnp.float32)

    def step(self, carry: Array, inputs: Array) -> tuple[Array, GRUGates]:
        """One step; returns ``(h_new, gates)``. carry: f32[batch, height, width,
        hidden_channels]; inputs: f32[batch, height, width, in_channels]."""
        shape = tuple(getattr(inputs, "shape", ()))
        if len(shape) != 4 or shape[-1] != self.in_channels:
            raise ValueError(
                f"inputs must have shape [batch, height, width, {self.in_channels}]; "
                f"got shape {shape}"
            )
        validation.check_carry(carry, (*shape[:-1], self.hidden_channels), name="carry")
        sw = self.step_weights()
        conv = step_conv(self.gradient)
        x_pre = project_frames(inputs, sw, conv)
        h_new, n, res = conv_gru_step(carry.astype(jnp.float32), x_pre, sw, self.reset_after, conv)
        return h_new, GRUGates(res.reset, res.update, n)

    def __call__(self, carry: Array, inputs: Array) -> tuple[Array, Array]:
        """``(new_carry, output)``, the same ``f32[batch, height, width, hidden_channels]``
        array twice, like ``nnx.GRUCell``."""
        h_new, _ = self.step(carry, inputs)
        return h_new, h_new

    @property
    def num_feature_axes(self) -> int:
        return 3


class ConvGRU(nnx.Module):
    """A ConvGRU layer: ``jax.lax.scan`` of :class:`ConvGRUCell`'s equations over frames.

    Call ``layer(x, seq_lengths=None, initial_carry=None, return_carry=False,
    return_gates=False)`` with ``x: f32[batch, time, height, width, in_channels]``
    (``[time, batch, ...]`` if ``time_major``). Returns ``outputs f32[batch, time, height,
    width, hidden_channels]``; with ``return_carry`` ``(carry, outputs)``; with
    ``return_gates`` a :class:`gru_jax.GRUGates` of per-step (r, z, n) is appended. With
    ``seq_lengths`` (int[batch], padding at the end) outputs at ``t >= length`` are exactly
    zero and the carry is the state after the last valid step; ``reverse=True`` runs each
    sequence's valid part from its own end (PyTorch packed semantics).

    Speed options (results identical up to float rounding; defaults chosen by measurement,
    see the module docstring): ``unroll`` (scan unroll; True: the whole sequence; None:
    the whole sequence when it has at most 20 steps, else 1), ``hoist_inputs`` (one input
    convolution over all ``batch * time`` frames before the scan instead of one per
    step), ``gradient`` (``"auto"``, ``"stepwise"``, ``"deferred"``, ``"xla"``,
    ``"im2col"``; see :mod:`gru_jax.ops.conv_gru`).

    Example::

        import jax.numpy as jnp
        from flax import nnx
        import gru_jax

        layer = gru_jax.ConvGRU(in_channels=1, hidden_channels=16, kernel_size=(3, 3),
                                rngs=nnx.Rngs(0))
        x = jnp.ones((2, 5, 8, 8, 1))          # [batch, time, height, width, channels]
        carry, y = layer(x, seq_lengths=jnp.array([5, 3]), return_carry=True)
        y.shape, carry.shape                   # (2, 5, 8, 8, 16), (2, 8, 8, 16)
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int | tuple[int, int] = (3, 3),
        recurrent_kernel_size: int | tuple[int, int] | None = None,
        *,
        reset_after: bool = True,
        reverse: bool = False,
        unroll: int | bool | None = None,
        time_major: bool = False,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        kernel_init: Initializer = default_kernel_init,
        recurrent_kernel_init: Initializer = conv_per_gate_orthogonal,
        bias_init: Initializer = default_bias_init,
        hoist_inputs: bool = False,
        gradient: str = "auto",
        rngs: nnx.Rngs,
    ):
        self.cell = ConvGRUCell(
            in_channels,
            hidden_channels,
            kernel_size,
            recurrent_kernel_size,
            reset_after=reset_after,
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=kernel_init,
            recurrent_kernel_init=recurrent_kernel_init,
            bias_init=bias_init,
            gradient=gradient,
            rngs=rngs,
        )
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.reset_after = reset_after
        self.reverse = reverse
        self.unroll = unroll
        self.time_major = time_major
        self.hoist_inputs = hoist_inputs
        self.gradient = gradient

    def initialize_carry(self, batch_size: int, spatial_shape: tuple[int, int]) -> Array:
        """Zero state ``f32[batch_size, height, width, hidden_channels]``."""
        return jnp.zeros((batch_size, *spatial_shape, self.hidden_channels), jnp.float32)

    def __call__(
        self,
        x: Array,
        seq_lengths: Array | None = None,
        initial_carry: Array | None = None,
        return_carry: bool = False,
        return_gates: bool = False,
    ):
        check_frames(x, self.in_channels, self.time_major)
        batch, steps = (x.shape[1], x.shape[0]) if self.time_major else x.shape[:2]
        spatial = tuple(x.shape[2:4])
        seq_lengths = validation.lengths_array(seq_lengths)
        validation.check_seq_lengths(seq_lengths, batch, steps)
        validation.check_carry(initial_carry, (batch, *spatial, self.hidden_channels))
        if initial_carry is None:
            initial_carry = self.initialize_carry(batch, spatial)
        result = conv_gru_scan(
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
            gradient=self.gradient,
            return_gates=return_gates,
        )
        carry, outputs = result[0], result[1]
        out = (carry, outputs) if return_carry else (outputs,)
        if return_gates:
            out = (*out, GRUGates(*result[2]))
        return out[0] if len(out) == 1 else out
