"""gru_jax.ConvGRU against references: a float64 NumPy implementation of the equations
written as plainly as possible (explicit loops over output pixels and kernel taps, zero
padding, one sequence at a time, PyTorch packed semantics for lengths and reverse),
gru_jax.GRU when kernels are 1x1, and a PyTorch ``F.conv2d`` ConvGRU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gru_jax
from gru_jax.ops.conv_gru import conv_gru_scan


def conv_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Stride-1 SAME cross-correlation. x: [B, H, W, C]; kernel: [kh, kw, C, O]."""
    batch, height, width, _ = x.shape
    kh, kw, _, out_channels = kernel.shape
    top, left = (kh - 1) // 2, (kw - 1) // 2  # SAME: the odd pixel of padding goes after
    out = np.zeros((batch, height, width, out_channels))
    for y in range(height):
        for x_pos in range(width):
            for i in range(kh):
                for j in range(kw):
                    src_y, src_x = y + i - top, x_pos + j - left
                    if 0 <= src_y < height and 0 <= src_x < width:  # zero padding
                        out[:, y, x_pos, :] += x[:, src_y, src_x, :] @ kernel[i, j]
    return out


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def gates(a: np.ndarray, hidden: int):
    return a[..., :hidden], a[..., hidden : 2 * hidden], a[..., 2 * hidden :]


def step(x, h, input_kernel, recurrent_kernel, input_bias, recurrent_bias, reset_after):
    """One ConvGRU step on float64 arrays; returns (h_new, (r, z, n))."""
    hidden = h.shape[-1]
    w_ir, w_iz, w_in = gates(input_kernel, hidden)
    w_hr, w_hz, w_hn = gates(recurrent_kernel, hidden)
    if reset_after:
        b_ir, b_iz, b_in = gates(input_bias, hidden)
        b_hr, b_hz, b_hn = gates(recurrent_bias, hidden)
        r = sigmoid(conv_same(x, w_ir) + b_ir + conv_same(h, w_hr) + b_hr)
        z = sigmoid(conv_same(x, w_iz) + b_iz + conv_same(h, w_hz) + b_hz)
        n = np.tanh(conv_same(x, w_in) + b_in + r * (conv_same(h, w_hn) + b_hn))
    else:
        b_r, b_z, b_n = gates(input_bias, hidden)
        z = sigmoid(conv_same(x, w_iz) + conv_same(h, w_hz) + b_z)
        r = sigmoid(conv_same(x, w_ir) + conv_same(h, w_hr) + b_r)
        n = np.tanh(conv_same(x, w_in) + conv_same(r * h, w_hn) + b_n)
    return z * h + (1.0 - z) * n, (r, z, n)


def conv_gru(x, h0, weights, reset_after, seq_lengths=None, reverse=False):
    """x: [B, T, H, W, C]; h0: [B, H, W, hidden]; weights: (input_kernel, recurrent_kernel,
    input_bias, recurrent_bias or None). Returns (final carry, outputs, (r, z, n)); outputs
    and gates are zero at padded steps; reverse runs each valid part from its own end."""
    x, h0 = np.asarray(x, np.float64), np.asarray(h0, np.float64)
    weights = [None if w is None else np.asarray(w, np.float64) for w in weights]
    batch, steps = x.shape[:2]
    lengths = [steps] * batch if seq_lengths is None else [int(v) for v in seq_lengths]
    outputs = np.zeros((*x.shape[:-1], h0.shape[-1]))
    all_gates = [np.zeros_like(outputs) for _ in range(3)]
    carry = h0.copy()
    for b in range(batch):
        h = h0[b : b + 1]
        order = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
        for t in order:
            h, g = step(x[b : b + 1, t], h, *weights, reset_after)
            outputs[b, t] = h[0]
            for stack, value in zip(all_gates, g):
                stack[b, t] = value[0]
        carry[b] = h[0]
    return carry, outputs, tuple(all_gates)


BATCH, STEPS, HEIGHT, WIDTH, CHANNELS, HIDDEN = 3, 4, 4, 5, 2, 3
LENGTHS = np.array([4, 2, 0], np.int32)  # full, partial, empty


def randomize(module, seed: int, scale: float = 0.5):
    """Random values for every parameter (zero biases would hide bias bugs)."""
    rng = np.random.default_rng(seed)
    for _, param in nnx.iter_graph(module):
        if isinstance(param, nnx.Param):
            param.value = jnp.asarray(rng.normal(0.0, scale, param.value.shape), jnp.float32)
    return module


def cell_weights(cell):
    return (
        cell.input_kernel.value,
        cell.recurrent_kernel.value,
        cell.input_bias.value,
        None if cell.recurrent_bias is None else cell.recurrent_bias.value,
    )


def test_conv_same_reference_matches_lax():
    """The loop reference's padding convention is XLA's SAME (odd pixel after)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 5, 3))
    for shape in [(3, 3, 3, 2), (2, 4, 3, 2)]:
        kernel = rng.normal(size=shape)
        expected = jax.lax.conv_general_dilated(
            jnp.asarray(x, jnp.float32),
            jnp.asarray(kernel, jnp.float32),
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        np.testing.assert_allclose(conv_same(x, kernel), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 3, 3, 2), (2, 4, 3, 5), (1, 1, 3, 4), (5, 1, 3, 2)])
def test_im2col_convolution_matches_the_loop_reference(shape):
    """conv2d_im2col (patches + one GEMM) is the same SAME convolution, odd and even
    windows, and its autodiff gradient matches stock convolution's."""
    from gru_jax.ops.conv_same import conv2d_im2col, conv2d_xla, patches

    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 5, 3))
    kernel = rng.normal(size=shape)
    got = conv2d_im2col(jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32))
    np.testing.assert_allclose(got, conv_same(x, kernel), rtol=1e-5, atol=1e-5)
    assert patches(jnp.zeros((2, 4, 5, 3)), shape[:2]).shape == (2, 4, 5, shape[0] * shape[1] * 3)
    probe = jnp.asarray(rng.normal(size=(2, 4, 5, shape[-1])), jnp.float32)
    grads = [
        jax.grad(lambda a, k, conv=conv: jnp.sum(conv(a, k) * probe), argnums=(0, 1))(
            jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32)
        )
        for conv in (conv2d_im2col, conv2d_xla)
    ]
    for got_grad, want_grad in zip(*grads):
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_numpy_reference(reset_after, reverse):
    layer = randomize(
        gru_jax.ConvGRU(
            CHANNELS,
            HIDDEN,
            kernel_size=(3, 3),
            recurrent_kernel_size=(2, 3),
            reset_after=reset_after,
            reverse=reverse,
            rngs=nnx.Rngs(0),
        ),
        seed=1,
    )
    rng = np.random.default_rng(2)
    x = rng.normal(size=(BATCH, STEPS, HEIGHT, WIDTH, CHANNELS)).astype(np.float32)
    h0 = rng.normal(size=(BATCH, HEIGHT, WIDTH, HIDDEN)).astype(np.float32)
    want_carry, want_y, want_gates = conv_gru(
        x, h0, cell_weights(layer.cell), reset_after, LENGTHS, reverse
    )
    carry, y, gates = layer(
        jnp.asarray(x),
        jnp.asarray(LENGTHS),
        jnp.asarray(h0),
        return_carry=True,
        return_gates=True,
    )
    tol = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, want_y, **tol)
    np.testing.assert_allclose(carry, want_carry, **tol)
    for got, want in zip(gates, want_gates):
        np.testing.assert_allclose(got, want, **tol)
    assert np.all(np.asarray(y)[1, 2:] == 0.0) and np.all(np.asarray(y)[2] == 0.0)
    np.testing.assert_array_equal(carry[2], h0[2])  # length 0 keeps the initial carry
    # The fast paths (no gates, each gradient mode, unrolled, inputs convolved per step).
    for options in [
        dict(gradient="stepwise", unroll=1, hoist_inputs=True),
        dict(gradient="deferred", unroll=2),
        dict(gradient="xla", unroll=1),
        dict(gradient="im2col", unroll=1),
        dict(gradient="im2col", unroll=2, hoist_inputs=True),
    ]:
        carry_fast, y_fast = conv_gru_scan(
            layer.cell.weights(),
            jnp.asarray(x),
            jnp.asarray(h0),
            jnp.asarray(LENGTHS),
            reset_after=reset_after,
            reverse=reverse,
            **options,
        )
        np.testing.assert_allclose(y_fast, want_y, **tol)
        np.testing.assert_allclose(carry_fast, want_carry, **tol)


@pytest.mark.parametrize("reset_after", [True, False])
def test_one_by_one_kernels_match_gru(reset_after):
    """1x1 kernels make the ConvGRU a GRU applied to every pixel: copy the weights
    ([1, 1, C, 3H] <-> [C, 3H]) and compare on 1x1 frames and on 2x3 frames."""
    conv = randomize(
        gru_jax.ConvGRU(
            CHANNELS, HIDDEN, kernel_size=1, reset_after=reset_after, reverse=True, rngs=nnx.Rngs(0)
        ),
        seed=3,
    )
    gru = gru_jax.GRU(CHANNELS, HIDDEN, reset_after=reset_after, reverse=True, rngs=nnx.Rngs(1))
    gru.cell.input_kernel.value = conv.cell.input_kernel.value[0, 0]
    gru.cell.recurrent_kernel.value = conv.cell.recurrent_kernel.value[0, 0]
    gru.cell.input_bias.value = conv.cell.input_bias.value
    if reset_after:
        gru.cell.recurrent_bias.value = conv.cell.recurrent_bias.value
    rng = np.random.default_rng(4)
    lengths = jnp.asarray(LENGTHS)
    for height, width in [(1, 1), (2, 3)]:
        x = jnp.asarray(rng.normal(size=(BATCH, STEPS, height, width, CHANNELS)), jnp.float32)
        carry, y = conv(x, lengths, return_carry=True)
        # Pixels become extra sequences of the GRU: [B, T, H, W, C] -> [B*H*W, T, C].
        pixels = x.transpose(0, 2, 3, 1, 4).reshape(-1, STEPS, CHANNELS)
        gru_carry, gru_y = gru(pixels, jnp.repeat(lengths, height * width), return_carry=True)
        gru_y = gru_y.reshape(BATCH, height, width, STEPS, HIDDEN).transpose(0, 3, 1, 2, 4)
        np.testing.assert_allclose(y, gru_y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            carry, gru_carry.reshape(BATCH, height, width, HIDDEN), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("gradient", ["auto", "im2col", "xla"])
def test_cell_step_matches_layer_and_reference(gradient, reset_after):
    layer = randomize(
        gru_jax.ConvGRU(
            CHANNELS, HIDDEN, kernel_size=(3, 3), recurrent_kernel_size=(1, 3),
            reset_after=reset_after, gradient=gradient, rngs=nnx.Rngs(0),
        ),
        seed=5,
    )  # fmt: skip
    assert layer.cell.gradient == gradient
    x = np.random.default_rng(6).normal(size=(2, 3, 4, 4, CHANNELS))
    carry = layer.cell.initialize_carry(x[:, 0].shape)
    outputs = []
    for t in range(3):
        carry, y = layer.cell(carry, jnp.asarray(x[:, t], jnp.float32))
        outputs.append(y)
    h0 = np.zeros((2, 4, 4, HIDDEN))
    _, want, _ = conv_gru(x, h0, cell_weights(layer.cell), reset_after, None, False)
    np.testing.assert_allclose(jnp.stack(outputs, 1), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jnp.stack(outputs, 1), layer(jnp.asarray(x)), rtol=1e-5, atol=1e-6)
    assert layer.initialize_carry(2, (4, 4)).shape == (2, 4, 4, HIDDEN)


def torch_conv_gru(x, h, weights):
    """A PyTorch ConvGRU (reset_after form) with ``F.conv2d``; x: [B, T, C, H, W]."""
    import torch
    import torch.nn.functional as F

    input_kernel, recurrent_kernel, input_bias, recurrent_bias = weights
    pad = (input_kernel.shape[-1] // 2, recurrent_kernel.shape[-1] // 2)
    outputs = []
    for t in range(x.shape[1]):
        x_r, x_z, x_n = F.conv2d(x[:, t], input_kernel, input_bias, padding=pad[0]).chunk(3, 1)
        h_r, h_z, h_n = F.conv2d(h, recurrent_kernel, recurrent_bias, padding=pad[1]).chunk(3, 1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        h = (1 - z) * n + z * h
        outputs.append(h)
    return h, torch.stack(outputs, 1)


def test_matches_torch_conv2d():
    import torch  # a dev dependency: missing torch must fail, not skip

    layer = randomize(
        gru_jax.ConvGRU(CHANNELS, HIDDEN, kernel_size=3, recurrent_kernel_size=5, rngs=nnx.Rngs(0)),
        seed=7,
    )
    rng = np.random.default_rng(8)
    x = rng.normal(size=(BATCH, STEPS, HEIGHT, WIDTH, CHANNELS)).astype(np.float32)
    h0 = rng.normal(size=(BATCH, HEIGHT, WIDTH, HIDDEN)).astype(np.float32)
    weights = [
        torch.tensor(np.asarray(w).transpose(3, 2, 0, 1).copy())  # HWIO -> OIHW
        if w.ndim == 4
        else torch.tensor(np.asarray(w))
        for w in cell_weights(layer.cell)
    ]
    with torch.no_grad():
        want_h, want_y = torch_conv_gru(
            torch.tensor(x.transpose(0, 1, 4, 2, 3)),
            torch.tensor(h0.transpose(0, 3, 1, 2)),
            weights,
        )
    carry, y = layer(jnp.asarray(x), initial_carry=jnp.asarray(h0), return_carry=True)
    np.testing.assert_allclose(y, want_y.numpy().transpose(0, 1, 3, 4, 2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(carry, want_h.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


def test_parameter_shapes_and_init():
    cell = gru_jax.ConvGRUCell(
        2, 4, kernel_size=3, recurrent_kernel_size=(1, 5), reset_after=False, rngs=nnx.Rngs(0)
    )
    assert cell.input_kernel.value.shape == (3, 3, 2, 12)
    assert cell.recurrent_kernel.value.shape == (1, 5, 4, 12)
    assert cell.input_bias.value.shape == (12,) and cell.recurrent_bias is None
    # Each gate block of the recurrent kernel, flattened to [kh*kw*C, C], is orthonormal.
    for gate in range(3):
        block = np.asarray(cell.recurrent_kernel.value[..., 4 * gate : 4 * gate + 4])
        block = block.reshape(-1, 4)
        np.testing.assert_allclose(block.T @ block, np.eye(4), atol=1e-5)
