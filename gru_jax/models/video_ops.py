"""Pure array functions of the video predictor: space-to-depth and back, separable
per-cell advection (dynamic neural advection), block matching of consecutive frames, and
the motion prior that block matching gives the advection kernels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
MATCHING_TEMPERATURE = 0.02  # softmax temperature over the matching costs (mean sq. diff.)
PRIOR_FLOOR = 1e-3  # added to the prior's probabilities before the log (no -inf logits)
INTENSITY_EPS = 1e-4  # intensities are squeezed into [eps, 1 - eps] before their logits


def unit_clip(frames: Array) -> Array:
    """``frames`` clipped into [0, 1] in value, with the gradient of the identity.

    Intensities built as convex combinations of pixels in [0, 1] (advection, masks) can
    leave that range by rounding: by ~1e-7 in float32, by ~1e-3 where matrix products run
    in TF32 or bfloat16 (GPU and TPU defaults), which is enough to make a log-odds NaN."""
    return frames + jax.lax.stop_gradient(jnp.clip(frames, 0.0, 1.0) - frames)


def intensity_logits(frames: Array, eps: float = INTENSITY_EPS) -> Array:
    """Log-odds of intensities ``frames`` in [0, 1] (clipped there by :func:`unit_clip`),
    squeezed into [eps, 1 - eps] so that they stay finite: ``sigmoid`` of the result is
    ``eps + (1 - 2 eps) · frames``."""
    p = eps + (1 - 2 * eps) * unit_clip(frames)
    return jnp.log(p) - jnp.log1p(-p)


def _band(cells: int, cell: int, size: int, window: int) -> np.ndarray:
    """One-hot ``f32[cells, cell, size, window]``: ``[q, j, i, d] = 1`` where input pixel
    ``i`` is offset ``d`` (of ``window``, centred) from output pixel ``q·cell + j``."""
    q, j, i, d = np.ogrid[:cells, :cell, :size, :window]
    return (i == q * cell + j + d - window // 2).astype(np.float32)


def advect(frames: Array, kernels_y: Array, kernels_x: Array) -> Array:
    """Move pixels by per-cell separable kernels (dynamic neural advection, Finn et al.
    2016, with the 2-D kernel factored into a vertical and a horizontal 1-D kernel, as a
    sub-pixel translation is: bilinear interpolation is separable).

    ``frames f32[B, H, W, C]``; ``kernels_y``, ``kernels_x`` ``f32[B, h, w, k]`` (each
    sums to 1; offsets ``-(k//2) .. k//2``), one pair per cell of ``H/h × W/w`` pixels.
    A vertical pass then a horizontal pass, zeros outside the frame::

        v[b, y, x, c]   = Σ_d kernels_y[b, cell(y, x), d] · frames[b, y + d - k//2, x, c]
        out[b, y, x, c] = Σ_d kernels_x[b, cell(y, x), d] · v[b, y, x + d - k//2, c]

    Each pass is a matrix product: the kernels are spread into one banded matrix per
    cell (``[cell rows, H]``, by a product with a constant one-hot band), which multiplies
    the cell's column of the frame. The cost then barely grows with ``k`` (fwd+bwd of 8
    frames of 64×64 on 2 CPU cores: 2.0 ms at k = 9 and 3.7 ms at k = 73, against 2.2
    and 10.2 ms for k shifted multiply-adds per pass; a full k×k kernel measured 2.5×
    slower than separable at k = 9).
    """
    batch, height, width, channels = frames.shape
    cells_y, cells_x, window = kernels_y.shape[1:]
    if kernels_x.shape != kernels_y.shape or height % cells_y or width % cells_x:
        raise ValueError(
            f"kernels {kernels_y.shape} / {kernels_x.shape} do not tile frames {frames.shape}"
        )
    cell_h, cell_w = height // cells_y, width // cells_x
    band_y = jnp.asarray(_band(cells_y, cell_h, height, window))
    band_x = jnp.asarray(_band(cells_x, cell_w, width, window))
    # Vertical: rows[b, q, x, j, i] weighs input row i for output row q·cell_h + j.
    rows = jnp.einsum("bqxd,qjid->bqxji", kernels_y, band_y)
    columns = frames.reshape(batch, height, cells_x, cell_w, channels)
    vertical = jnp.einsum("bqxji,bixlc->bqjxlc", rows, columns)
    vertical = vertical.reshape(batch, cells_y, cell_h, width, channels)
    # Horizontal: cols[b, q, x, l, i] weighs input column i for output column x·cell_w + l.
    cols = jnp.einsum("bqxd,xlid->bqxli", kernels_x, band_x)
    out = jnp.einsum("bqxli,bqjic->bqjxlc", cols, vertical)
    return out.reshape(frames.shape)


def matching_costs(frames: Array, patch_size: int, radius: int) -> Array:
    """Block matching of consecutive frames (a cost volume, as in optical-flow networks).

    ``frames f32[B, T, H, W, C]`` → ``f32[B, T, H/p, W/p, (2r+1)²]``: for every
    ``p × p`` cell of frame ``t`` and every offset ``(oy, ox)`` in ``[-r, r]²``
    (row-major), the mean over the cell's pixels and channels of
    ``(frame_t[y, x] - frame_(t-1)[y + oy, x + ox])²`` (zeros outside the frame; frame 0
    is matched against itself). A digit that moved by ``(vy, vx)`` costs ~0 at offset
    ``(-vy, -vx)``.
    """
    batch, steps, height, width, channels = frames.shape
    p, window = patch_size, 2 * radius + 1
    # Channels first: with C = 1 trailing, XLA CPU's fusions ran 2x slower (93 vs 47 ms
    # for 8 videos of 10 frames of 64x64 at p = 8, r = 4 on 2 cores).
    current = jnp.moveaxis(frames, -1, 0)  # [C, B, T, H, W]
    previous = jnp.concatenate([current[:, :, :1], current[:, :, :-1]], axis=2)
    padded = jnp.pad(previous, ((0, 0), (0, 0), (0, 0), (radius, radius), (radius, radius)))

    def offset_cost(carry, index):
        # One offset per iteration: a scan over the (2r+1)² offsets compiles to one
        # fused slice-square-mean body, where 81 unrolled offsets were 162 small fusions
        # (35 against 86 ms for the shape above on 2 cores).
        start = (0, 0, 0, index // window, index % window)
        squared = (current - jax.lax.dynamic_slice(padded, start, current.shape)) ** 2
        cells = squared.reshape(channels, batch, steps, height // p, p, width // p, p)
        return carry, cells.mean(axis=(0, 4, 6))

    _, costs = jax.lax.scan(offset_cost, None, jnp.arange(window * window))
    return jnp.moveaxis(costs, 0, -1)


def space_to_depth(frames: Array, patch_size: int) -> Array:
    """f32[..., H, W, C] → f32[..., H/p, W/p, p·p·C]; channel index (row in patch, column
    in patch, channel), the inverse of :func:`depth_to_space`."""
    *lead, height, width, channels = frames.shape
    p = patch_size
    x = frames.reshape(*lead, height // p, p, width // p, p, channels)
    x = jnp.moveaxis(x, -4, -3)  # [..., H/p, W/p, p_row, p_col, C]
    return x.reshape(*lead, height // p, width // p, p * p * channels)


def depth_to_space(grid: Array, patch_size: int) -> Array:
    """f32[..., h, w, p·p·C] → f32[..., h·p, w·p, C] (inverse of :func:`space_to_depth`)."""
    *lead, rows, cols, depth = grid.shape
    p = patch_size
    x = grid.reshape(*lead, rows, cols, p, p, depth // (p * p))
    x = jnp.moveaxis(x, -3, -4)  # [..., h, p_row, w, p_col, C]
    return x.reshape(*lead, rows * p, cols * p, depth // (p * p))


def _neighbourhood_sum(a: Array) -> Array:
    """Sum over each cell's 3×3 neighbourhood (zeros outside): a [B, h, w, ...]."""
    h, w = a.shape[1:3]
    padded = jnp.pad(a, [(0, 0), (1, 1), (1, 1)] + [(0, 0)] * (a.ndim - 3))
    return sum(padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))


def matching_prior(
    previous: Array,
    current: Array,
    patch_size: int,
    radius: int,
    frames_apart: int = 1,
    temperature: float = MATCHING_TEMPERATURE,
    neighbourhood: bool = True,
) -> tuple[Array, Array]:
    """The motion seen between two frames, as advection-kernel logits for the next frame.

    ``previous``, ``current`` f32[B, H, W, C] → ``(log_y, log_x)``, each
    f32[B, H/p, W/p, 2r+1]: per cell, the log-probability of each vertical and horizontal
    kernel tap under "content keeps moving as it just did". Block matching
    (:func:`matching_costs`) of ``current`` against ``previous`` gives each cell a
    distribution over displacements (``softmax(-cost / temperature)``; content that
    moved by ``(vy, vx)`` peaks at offset ``(-vy, -vx)``, which is also the advection tap
    that pulls content from ``(vy, vx)`` back); with ``neighbourhood``, the distributions
    of the cell and its eight neighbours are averaged, weighted by their content (mean
    intensity of ``current``), so a cell the content is about to enter inherits the
    content's motion and an empty neighbourhood gets a uniform prior; the 2-D
    distribution's marginals, plus ``PRIOR_FLOOR``, are returned as logs. No gradient
    flows through the prior. On moving digits (smooth, upsampled strokes) the default
    temperature leaves the distribution broad, so its mean offset falls short of the
    motion (by ~0.5 px per frame at 3.6); a lower one (0.003) sharpens it.

    With ``frames_apart = n > 1``, ``previous`` is the frame ``n`` frames before
    ``current``: the matching searches ``n · radius`` pixels each way and each offset
    ``o`` is read as ``o / n`` per frame, its probability split linearly between the two
    taps around it (:func:`_per_frame_taps`; the mean displacement is kept). Positions
    rounded to whole pixels make one frame's displacement off by up to a pixel; over
    ``n`` frames that error is ``n`` times smaller per frame (a bounce within those
    frames is averaged in, which the learned logits have to correct).
    """
    if frames_apart < 1 or int(frames_apart) != frames_apart:
        raise ValueError(f"frames_apart must be a positive int, got {frames_apart!r}")
    search = radius * int(frames_apart)
    frames = jax.lax.stop_gradient(jnp.stack([previous, current], axis=1))
    costs = matching_costs(frames, patch_size, search)[:, 1]  # [B, h, w, K²]
    probs = jax.nn.softmax(-costs / temperature, axis=-1)
    batch, rows, cols, _ = current.shape
    cells = frames[:, 1].reshape(batch, rows // patch_size, patch_size, cols // patch_size, -1)
    weight = cells.mean(axis=(2, 4))[..., None]  # [B, h, w, 1]: content per cell
    empty = 1e-3  # weight of a uniform distribution: only felt where nothing is near
    window = 2 * search + 1
    spread = probs
    if neighbourhood:
        spread = (_neighbourhood_sum(weight * probs) + empty / window**2) / (
            _neighbourhood_sum(weight) + empty
        )
    spread = spread.reshape(*spread.shape[:3], window, window)  # [..., dy, dx]
    marginals = spread.sum(axis=-1), spread.sum(axis=-2)
    if frames_apart > 1:  # offsets over n frames -> per-frame taps (the identity for n = 1)
        taps = jnp.asarray(_per_frame_taps(radius, int(frames_apart)))  # [window, 2r + 1]
        marginals = tuple(m @ taps for m in marginals)
    return tuple(jnp.log(m + PRIOR_FLOOR) for m in marginals)


def _per_frame_taps(radius: int, frames_apart: int) -> np.ndarray:
    """``f32[2·n·r + 1, 2r + 1]``: row ``o`` (offsets ``-n·r .. n·r`` over ``n`` frames)
    puts weight ``1 - f`` on tap ``floor(o / n)`` and ``f`` on the next one (``f`` the
    fractional part of ``o / n``; taps ``-r .. r``), so a distribution over the
    ``n``-frame offsets becomes one over the per-frame taps with ``1/n`` of its mean.
    The identity for ``n = 1``."""
    offsets = np.arange(-frames_apart * radius, frames_apart * radius + 1) / frames_apart
    lower = np.floor(offsets)
    frac = offsets - lower
    taps = np.zeros((offsets.size, 2 * radius + 1), np.float32)
    rows = np.arange(offsets.size)
    taps[rows, (lower + radius).astype(int)] += 1 - frac
    upper = np.minimum(lower + 1, radius).astype(int) + radius  # frac is 0 at the last row
    taps[rows, upper] += frac
    return taps


def kernel_offsets(kernels: Array) -> Array:
    """The mean offset of softmax kernels ``f32[..., k]`` (taps ``-(k//2) .. k//2``) →
    ``f32[...]``: where, on average, a kernel pulls its output pixel's content from."""
    window = kernels.shape[-1]
    taps = jnp.arange(window, dtype=kernels.dtype) - window // 2
    return jnp.sum(kernels * taps, axis=-1)


def _bilinear_taps(vectors: Array):
    """The four pixels around each point ``(y, x) + vectors[b, y, x]`` (``vectors
    f32[B, H, W, 2]``, in pixels) as ``(flat index i32[B, H, W], weight f32[B, H, W])``
    pairs; the weight is 0 for a pixel outside the frame (whose index is clipped into it).
    Weights from the fractional parts (not 1 - |distance|): their gradient is the same on
    both sides of an integer offset, where |.| would have none."""
    height, width = vectors.shape[1:3]
    rows = jnp.arange(height, dtype=vectors.dtype)[None, :, None] + vectors[..., 0]
    cols = jnp.arange(width, dtype=vectors.dtype)[None, None, :] + vectors[..., 1]
    row0, col0 = jnp.floor(rows), jnp.floor(cols)
    row_weights = (1 - (rows - row0), rows - row0)
    col_weights = (1 - (cols - col0), cols - col0)
    for dy in (0, 1):
        for dx in (0, 1):
            r, c = row0 + dy, col0 + dx
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            index = jnp.clip(r, 0, height - 1) * width + jnp.clip(c, 0, width - 1)
            weight = jnp.where(inside, row_weights[dy] * col_weights[dx], 0.0)
            yield index.astype(jnp.int32), weight


def warp(frames: Array, offsets: Array) -> Array:
    """Backward warp with bilinear interpolation: ``out[b, y, x] = frames[b, y + oy, x + ox]``
    for ``offsets[b, y, x] = (oy, ox)`` in pixels (fractional), zeros outside the frame.

    ``frames f32[B, H, W, C]``, ``offsets f32[B, H, W, 2]`` → ``f32[B, H, W, C]``. The
    gradient reaches the offsets through the interpolation weights (one pixel either side of
    the sampled point), as in spatial transformer networks."""
    batch, height, width, channels = frames.shape
    flat = frames.reshape(batch, height * width, channels)
    out = jnp.zeros_like(frames)
    for index, weight in _bilinear_taps(offsets):
        picked = jnp.take_along_axis(flat, index.reshape(batch, -1, 1), axis=1)
        out = out + weight[..., None] * picked.reshape(frames.shape)
    return out


def compose_offsets(step: Array, total: Array) -> Array:
    """Offsets from frame k back to a fixed source frame, given frame k's offsets to frame
    k - 1 (``step``) and frame k - 1's to the source (``total``), both ``f32[B, H, W, 2]``:
    ``step(p) + total(p + step(p))`` (``total`` sampled bilinearly, zero outside)."""
    return step + warp(total, step)


def splat(frames: Array, displacements: Array) -> Array:
    """Forward warp (bilinear splatting): every pixel of ``frames`` is moved by its own
    displacement and shared among the four pixels around where it lands, which sum what
    they receive (content moved off the frame is dropped).

    ``frames f32[B, H, W, C]``, ``displacements f32[B, H, W, 2]`` (vertical, horizontal,
    in pixels, fractional; given at the *source* pixel) → ``f32[B, H, W, C]``. The
    transpose of :func:`warp`: ``Σ splat(f, d) · g = Σ f · warp(g, d)`` for every ``g``.
    Where :func:`warp` asks each output pixel where its content comes from, this says
    where each input pixel's content goes, so a displacement field attached to the
    content (one per source cell) moves it without resampling it at every step."""
    batch, height, width, channels = frames.shape
    taps = list(_bilinear_taps(displacements))
    targets = jnp.concatenate([index.reshape(batch, -1) for index, _ in taps], axis=1)
    values = jnp.concatenate(  # [B, 4·H·W, C], one value per (source pixel, neighbour)
        [(weight[..., None] * frames).reshape(batch, -1, channels) for _, weight in taps], axis=1
    )
    out = jnp.zeros((batch, height * width, channels), frames.dtype)
    out = jax.vmap(lambda o, i, v: o.at[i].add(v))(out, targets, values)
    return out.reshape(frames.shape)


def _shift_matrices(moves: Array, size: int) -> Array:
    """``f32[N, size, size]`` matrices ``A`` with ``(A @ v)[i] = v`` moved by ``moves
    f32[N]`` (pixels, fractional), bilinearly: ``A[i, j]`` is the weight of source ``j`` at
    ``i``, ``1 - f`` for ``i - j = floor(move)`` and ``f`` for ``i - j = floor(move) + 1``
    (``f`` the fractional part, as :func:`splat` weighs it)."""
    whole = jnp.floor(moves)
    frac = (moves - whole)[:, None, None]
    gap = (jnp.arange(size)[:, None] - jnp.arange(size)[None, :])[None].astype(moves.dtype)
    whole = whole[:, None, None]
    return jnp.where(gap == whole, 1 - frac, 0.0) + jnp.where(gap == whole + 1, frac, 0.0)


def shift(frames: Array, moves: Array) -> Array:
    """Every pixel of each frame moved by the same displacement: ``frames f32[N, H, W, C]``,
    ``moves f32[N, 2]`` (vertical, horizontal, in pixels, fractional) → ``f32[N, H, W,
    C]``, equal to :func:`splat` with that displacement at every pixel (content moved off
    the frame is dropped), gradients included, written as two small matrix products per
    frame (rows, then columns) instead of a scatter."""
    rows = _shift_matrices(moves[:, 0], frames.shape[1])
    cols = _shift_matrices(moves[:, 1], frames.shape[2])
    out = jnp.einsum("nij,njwc->niwc", rows, frames)
    return jnp.einsum("nkw,niwc->nikc", cols, out)
