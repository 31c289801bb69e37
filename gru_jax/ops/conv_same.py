"""A stride-1, ``SAME``-padded 2-D convolution (NHWC images, HWIO kernels) whose backward
pass stays fast inside a rolled ``lax.scan`` on XLA CPU.

Why a custom VJP: autodiff of ``lax.conv_general_dilated`` emits the kernel gradient as a
convolution with dimension labels ``f01b_i01o->01bf`` and the input gradient with a
``01oi`` kernel. Outside loops XLA's layout assignment turns these into the canonical
``b01f_01io->b01f`` form that the CPU backend hands to its Eigen convolution; inside a
``while`` body (a rolled scan) it does not, and the CPU backend falls back to a naive
loop nest. Measured on a 2-core CPU: ten kernel-gradient convolutions of
``[16, 16, 16, 32] x [16, 16, 16, 96]`` took 3,572 ms in a rolled scan and 72 ms unrolled;
written as below (explicit transposes into the canonical form) the rolled scan took
90 ms. The same applies to the input gradient (about 2x).

The backward here writes both gradients as canonical NHWC/HWIO forward convolutions:

* input gradient: the cotangent convolved with the spatially flipped kernel whose
  in/out axes are swapped (``[kh, kw, C_out, C_in]``), padding mirrored;
* kernel gradient: ``dW[i, j, c, o] = sum_{n,y,x} x_pad[n, y+i, x+j, c] g[n, y, x, o]``,
  i.e. a convolution of ``x`` transposed to ``[C_in, H, W, N]`` (channels as the batch,
  images as the features) with ``g`` transposed to ``[H, W, N, C_out]`` as the kernel.
  Its cost grows faster than linearly in ``N`` (a long contraction that Eigen tiles
  poorly), so it runs over groups of at most ``KERNEL_GRAD_IMAGES`` images in a loop and
  sums (CPU time, 3x3 kernels to 32 channels: 320 frames of 64x64x1 took 132 ms as one
  convolution, 26 ms in groups of 16 and 140 ms one image at a time; 160 frames of
  16x16x32 took 14 ms as one and 11 ms in groups of 16).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

# At most this many images per kernel-gradient convolution (see the module docstring).
KERNEL_GRAD_IMAGES = 16


def same_padding(kernel_size: tuple[int, int]) -> list[tuple[int, int]]:
    """``SAME`` padding for stride 1: ``(k - 1) // 2`` before, the rest after (as XLA/TF)."""
    return [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_size]


def conv2d_xla(x: Array, kernel: Array) -> Array:
    """Stock ``lax.conv_general_dilated`` (autodiff through XLA's own transpose rules).

    x: [N, H, W, C_in]; kernel: [kh, kw, C_in, C_out] (its dtype is the operand dtype);
    returns f32[N, H, W, C_out].
    """
    return lax.conv_general_dilated(
        x.astype(kernel.dtype),
        kernel,
        (1, 1),
        same_padding(kernel.shape[:2]),
        dimension_numbers=DIMENSION_NUMBERS,
        preferred_element_type=jnp.float32,
    )


def flip_kernel(kernel: Array) -> Array:
    """The kernel of the input-gradient convolution: spatially flipped, in/out swapped,
    ``[kh, kw, C_in, C_out] -> [kh, kw, C_out, C_in]``."""
    return jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)


def conv2d_input_grad(
    cotangent: Array, kernel: Array, flipped_kernel: Array | None = None
) -> Array:
    """Gradient of ``conv2d(x, kernel)`` w.r.t. ``x``: f32[N, H, W, C_in].

    ``flipped_kernel`` (``flip_kernel(kernel)``) may be passed when it is loop-invariant.
    """
    flipped = flip_kernel(kernel) if flipped_kernel is None else flipped_kernel
    mirrored = [(hi, lo) for lo, hi in same_padding(kernel.shape[:2])]
    return lax.conv_general_dilated(
        cotangent.astype(flipped.dtype),
        flipped,
        (1, 1),
        mirrored,
        dimension_numbers=DIMENSION_NUMBERS,
        preferred_element_type=jnp.float32,
    )


def _kernel_grad_once(x: Array, cotangent: Array, kernel_size: tuple[int, int]) -> Array:
    images_as_features = x.transpose(3, 1, 2, 0)  # [C_in, H, W, N]
    cotangent_as_kernel = cotangent.astype(x.dtype).transpose(1, 2, 0, 3)  # [H, W, N, C_out]
    out = lax.conv_general_dilated(
        images_as_features,
        cotangent_as_kernel,
        (1, 1),
        same_padding(kernel_size),
        dimension_numbers=DIMENSION_NUMBERS,
        preferred_element_type=jnp.float32,
    )  # [C_in, kh, kw, C_out]
    return out.transpose(1, 2, 0, 3)


def conv2d_kernel_grad(
    x: Array, cotangent: Array, kernel_size: tuple[int, int], images_per_conv: int | None = None
) -> Array:
    """Gradient of ``conv2d(x, kernel)`` w.r.t. the kernel: f32[kh, kw, C_in, C_out].

    x: [N, H, W, C_in] (in the operand dtype); cotangent: f32[N, H, W, C_out]. More than
    ``images_per_conv`` (default ``KERNEL_GRAD_IMAGES``) images are split into groups
    whose kernel gradients are summed in a ``lax.scan`` (a loop, so the program does not
    grow with ``N``).
    """
    images = x.shape[0]
    group = min(images, images_per_conv or KERNEL_GRAD_IMAGES)
    groups, rest = divmod(images, group)
    if groups == 1 and not rest:
        return _kernel_grad_once(x, cotangent, kernel_size)
    body = groups * group
    xs = x[:body].reshape(groups, group, *x.shape[1:])
    gs = cotangent[:body].reshape(groups, group, *cotangent.shape[1:])
    zero = jnp.zeros((*kernel_size, x.shape[-1], cotangent.shape[-1]), jnp.float32)

    def add_group(total, pair):
        return total + _kernel_grad_once(pair[0], pair[1], kernel_size), None

    total = lax.scan(add_group, zero, (xs, gs))[0]
    if rest:
        total = total + _kernel_grad_once(x[body:], cotangent[body:], kernel_size)
    return total


def patches(x: Array, kernel_size: tuple[int, int]) -> Array:
    """im2col: the ``SAME``-padded ``kh × kw`` neighbourhood of every pixel, stacked on the
    channel axis: ``[N, H, W, C] -> [N, H, W, kh·kw·C]``, index ``(dy, dx, c)`` (the row
    order of ``kernel.reshape(kh·kw·C, C_out)`` for an HWIO kernel). 1×1: ``x`` itself."""
    kh, kw = kernel_size
    if (kh, kw) == (1, 1):
        return x
    (top, bottom), (left, right) = same_padding(kernel_size)
    padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    height, width = x.shape[1:3]
    shifted = [padded[:, dy : dy + height, dx : dx + width] for dy in range(kh) for dx in range(kw)]
    return jnp.concatenate(shifted, axis=-1)


def conv2d_im2col(x: Array, kernel: Array) -> Array:
    """The stride-1 ``SAME`` convolution as one GEMM over :func:`patches`: x [N, H, W,
    C_in], kernel [kh, kw, C_in, C_out] (its dtype is the operand dtype) -> f32[N, H, W,
    C_out]. Autodiff gives GEMMs and pads/slices for the backward, which XLA CPU runs at
    GEMM speed inside rolled loops as well (no convolution layout question)."""
    kh, kw, c_in, c_out = kernel.shape
    cols = patches(x.astype(kernel.dtype), (kh, kw))
    return lax.dot_general(
        cols,
        kernel.reshape(kh * kw * c_in, c_out),
        (((cols.ndim - 1,), (0,)), ((), ())),
        preferred_element_type=jnp.float32,
    )


@jax.custom_vjp
def conv2d(x: Array, kernel: Array) -> Array:
    """Stride-1 ``SAME`` convolution with a loop-safe backward (see the module docstring).

    x: [N, H, W, C_in]; kernel: [kh, kw, C_in, C_out] (both in the operand dtype);
    returns f32[N, H, W, C_out].
    """
    return conv2d_xla(x, kernel)


def _conv2d_fwd(x, kernel):
    return conv2d_xla(x, kernel), (x, kernel)


def _conv2d_bwd(residuals, cotangent):
    x, kernel = residuals
    dx = conv2d_input_grad(cotangent, kernel).astype(x.dtype)
    dkernel = conv2d_kernel_grad(x, cotangent, kernel.shape[:2]).astype(kernel.dtype)
    return dx, dkernel


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv2d_frames(x: Array, kernel: Array, conv=conv2d) -> Array:
    """``conv`` over any number of leading axes: x [..., H, W, C_in] -> f32[..., H, W, C_out]
    (one convolution over all the images, e.g. all frames of all sequences at once)."""
    lead = x.shape[:-3]
    flat = x.reshape((-1, *x.shape[-3:]))
    out = conv(flat, kernel)
    return out.reshape((*lead, *out.shape[1:]))


__all__ = [
    "KERNEL_GRAD_IMAGES",
    "conv2d",
    "conv2d_frames",
    "conv2d_input_grad",
    "conv2d_im2col",
    "conv2d_kernel_grad",
    "conv2d_xla",
    "flip_kernel",
    "patches",
    "same_padding",
]
