"""The advection output of :class:`gru_jax.models.VideoPredictor`: kernel logits from the
forecaster states become softmax kernels, which move the previous frame
(:func:`gru_jax.models.video_ops.advect`), and a per-pixel mask mixes the moved frame(s)
with the drawn one. Two forms (Finn et al. 2016):

* **per cell** (DNA): one vertical and one horizontal kernel per cell of the frame, from
  the head's logits at that cell (averaged over the patches of cells larger than a patch);
  a sigmoid mask per pixel mixes the moved frame with the drawn frame.
* **per cell, as a flow** (``advection_source='flow'``): each cell's kernel pair is read
  as its mean offset, a displacement per frame; the displacements of the predicted frames
  are composed into one offset field back to the last context frame, which is sampled
  once, bilinearly (:func:`gru_jax.models.video_ops.warp`), so the moves do not compound
  the kernels' spread into blur.
* **shared motions** (CDNA): ``K`` kernel pairs for the whole frame. Each pools the
  per-patch logits with a learned attention over the patches (a softmax over the grid of a
  per-patch score), so a motion is estimated from all the patches its content covers; a
  per-pixel softmax over ``K + 1`` sources picks, for each pixel, one of the ``K`` moved
  frames or the drawn frame.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gru_jax.models.video_ops import advect, depth_to_space, kernel_offsets, shift, warp

Array = jax.Array


def cell_kernels(
    logits: Array,
    cells_per_side: int,
    patches_per_cell: int,
    prior: tuple | None = None,
    temperature: float = 1.0,
) -> Array:
    """Per-cell kernels from the kernel head's output.

    ``logits f32[B, h, w, cells_per_side² · 2k]`` (per patch: its ``cells_per_side²``
    cells side by side, laid out like a space-to-depth patch, each ``[vertical k |
    horizontal k]``) → ``f32[B, rows, cols, 2, k]`` softmax kernels, one pair per cell:
    ``rows = h · cells_per_side / patches_per_cell``. ``prior`` (per patch, two
    ``f32[B, h, w, k]`` logits) is added to every cell of its patch before the cells of
    several patches average their logits. The softmax reads ``logits / temperature``
    (below 1: sharper kernels; see ``VideoPredictor``'s ``advection_temperature``)."""
    logits = depth_to_space(logits, cells_per_side)
    logits = logits.reshape(*logits.shape[:-1], 2, -1)
    if prior is not None:
        prior = jnp.stack(prior, axis=-2)
        for axis in (1, 2):
            prior = jnp.repeat(prior, cells_per_side, axis=axis)
        logits = logits + prior
    if patches_per_cell > 1:
        m = patches_per_cell
        batch, rows, cols = logits.shape[:3]
        logits = logits.reshape(batch, rows // m, m, cols // m, m, *logits.shape[3:])
        logits = logits.mean(axis=(2, 4))
    return jax.nn.softmax(logits / temperature, axis=-1)


def motion_kernels(logits: Array, motions: int, temperature: float = 1.0) -> tuple[Array, Array]:
    """Shared motion kernels from the kernel head's output.

    ``logits f32[B, h, w, K · (2k + 1)]`` (per motion: ``[vertical k | horizontal k |
    score]``) → ``(kernels f32[B, K, 2, k], attention f32[B, h, w, K])``: motion ``m``'s
    logits are the mean of the patches' logits weighted by ``attention[..., m] =
    softmax over the grid of score_m``, then a softmax over the taps of the pooled logits
    ``/ temperature`` (the attention is not tempered)."""
    batch, rows, cols, width = logits.shape
    logits = logits.reshape(batch, rows * cols, motions, width // motions)
    attention = jax.nn.softmax(logits[..., -1], axis=1)  # [B, h·w, K]
    pooled = jnp.einsum("bnm,bnmk->bmk", attention, logits[..., :-1])
    kernels = jax.nn.softmax(pooled.reshape(batch, motions, 2, -1) / temperature, axis=-1)
    return kernels, attention.reshape(batch, rows, cols, motions)


def pool_prior(prior: tuple, content: Array) -> Array:
    """The per-patch prior (two ``f32[B, h, w, k]`` logits, vertical and horizontal)
    averaged over each layer's patches, weighted by the layer's content there
    (``content f32[B, h, w, K]``; a layer with no content gets the plain mean) →
    ``f32[B, K, 2, k]``."""
    prior = jnp.stack(prior, axis=-2)  # [B, h, w, 2, k]
    weight = content + 1e-6
    weight = weight / weight.sum(axis=(1, 2), keepdims=True)
    return jnp.einsum("bhwm,bhwck->bmck", weight, prior)


FADE_BIAS = 4.0  # a layer's gain is sigmoid(pooled fade logit + 4): 0.98 at a zero logit
GATE_BIAS = -2.0  # a layer's gate is sigmoid(pooled gate logit - 2): 0.12 at a zero logit


def _pool_layers(logits: Array, motions: int, content: Array) -> Array:
    """Each motion's per-patch logits ``f32[B, h, w, K · width]`` (per motion: ``width - 1``
    values, then a score) pooled over the patches with a softmax of ``score_m +
    log(content_m + 1e-3)`` (``content f32[B, h, w, K]``: how much of layer ``m`` each
    patch holds now, so a layer's logits are read where its content is):
    ``f32[B, K, width - 1]``."""
    batch, rows, cols, width = logits.shape
    logits = logits.reshape(batch, rows * cols, motions, width // motions)
    score = logits[..., -1] + jnp.log(content.reshape(batch, rows * cols, motions) + 1e-3)
    attention = jax.nn.softmax(score, axis=1)  # [B, h·w, K]
    return jnp.einsum("bnm,bnmk->bmk", attention, logits[..., :-1])


def layer_moves(
    logits: Array,
    motions: int,
    content: Array,
    prior: Array | None = None,
    fade: bool = False,
    gate: bool = False,
) -> Array:
    """Each layer's displacement this step, ``f32[B, K, 2]`` (vertical, horizontal, in
    pixels: where its content goes) from the kernel head's ``logits f32[B, h, w,
    K · (2k + 1)]`` (per motion ``[vertical k | horizontal k | score]``, as
    :func:`motion_kernels`; with ``fade``, ``K · (2k + 2)``: ``[vertical k | horizontal k
    | fade | score]``, the fade logit read by :func:`layer_gains`). Motion ``m``'s logits
    are pooled over the patches with a softmax of ``score_m + log(content_m + 1e-3)``
    (``content f32[B, h, w, K]``: how much of layer ``m`` each patch holds now, so a
    layer's motion is read where its content is), plus the layer's ``prior f32[B, K, 2,
    k]`` (:func:`pool_prior`); the kernels are their softmax, and a move is minus a
    kernel's mean offset (a kernel says where a pixel's content comes from).

    With ``gate`` (needs ``prior``; one more logit per motion after the fade logit, if
    any: ``[vertical k | horizontal k | fade? | gate | score]``), the head's logits only
    correct the prior's move by a pooled gate ``g = sigmoid(gate logit + GATE_BIAS)``:
    ``move = prior's move + g · (move with the head's logits - prior's move)``. The gate
    starts at 0.12, so a layer keeps the context's motion unless the head opens it (at a
    wall, where digits meet)."""
    pooled = _pool_layers(logits, motions, content)
    extra = int(fade) + int(gate)
    taps = pooled[..., : pooled.shape[-1] - extra].reshape(*pooled.shape[:2], 2, -1)
    if prior is not None:
        taps = taps + prior
    moves = -kernel_offsets(jax.nn.softmax(taps, axis=-1))
    if not gate:
        return moves
    if prior is None:
        raise ValueError("layer_moves(gate=True) needs a prior: the gate corrects its move")
    base = -kernel_offsets(jax.nn.softmax(prior, axis=-1))
    opened = jax.nn.sigmoid(pooled[..., -1] + GATE_BIAS)[..., None]
    return base + opened * (moves - base)


def refine_split(
    logits: Array,
    frame: Array,
    prior: tuple,
    patch_size: int,
    steps: int,
    weight: float = 1.0,
) -> Array:
    """The layered form's split of ``frame f32[B, H, W, C]`` into ``K`` layers, sorted by
    motion: ``steps`` rounds of expectation-maximisation on the mask head's assignment
    ``logits f32[B, H, W, K]`` (Wang & Adelson's layers, with the matching prior as the
    evidence) → ``f32[B, H, W, K]``, each pixel's share in each layer (summing to 1).

    Each round pools the per-cell matching ``prior`` (two ``f32[B, h, w, k]`` log
    marginals, :func:`~gru_jax.models.video_ops.matching_prior`) over each layer's content
    as :func:`pool_prior` does, giving each layer a motion distribution ``q_m`` per axis,
    and scores every cell by how well its own matching agrees with each layer's motion,
    ``log Σ_k q_m[k] · p_cell[k]`` summed over the two axes (about 0 where they agree;
    where they disagree, down to the prior's floor); the assignment is then
    ``softmax(logits + weight · score)`` (the score repeated over the cell's pixels). A layer that
    holds parts of two digits that move apart loses the part whose cells disagree with its
    pooled motion to a layer that agrees, so the layers follow the motions rather than
    whatever split the head settled on early in training. The mask head still splits what
    matching cannot tell apart (content with one motion, or two digits in one cell).
    ``steps = 0`` is the plain ``softmax(logits)``."""
    assignment = jax.nn.softmax(logits, axis=-1)
    if steps == 0:
        return assignment
    batch, height, width, _ = frame.shape
    rows, cols = height // patch_size, width // patch_size
    cell_probs = jnp.exp(jnp.stack(prior, axis=-2))  # [B, h, w, 2, k]
    intensity = frame.mean(axis=-1, keepdims=True)  # [B, H, W, 1]
    for _ in range(steps):
        content = (
            (intensity * assignment)
            .reshape(batch, rows, patch_size, cols, patch_size, -1)
            .mean(axis=(2, 4))
        )  # [B, h, w, K]
        motion = jax.nn.softmax(pool_prior(prior, content), axis=-1)  # [B, K, 2, k]
        agree = jnp.einsum("bhwck,bmck->bhwmc", cell_probs, motion)
        score = jnp.log(agree).sum(axis=-1)  # [B, h, w, K]
        score = jnp.repeat(jnp.repeat(score, patch_size, axis=1), patch_size, axis=2)
        assignment = jax.nn.softmax(logits + weight * score, axis=-1)
    return assignment


def layer_gains(logits: Array, motions: int, content: Array, gate: bool = False) -> Array:
    """Each layer's gain this step, ``f32[B, K]`` in (0, 1): the sigmoid of its fade logit
    (the kernel head's ``[vertical k | horizontal k | fade | score]`` layout of
    :func:`layer_moves` with ``fade``), pooled where the layer's content is, plus
    ``FADE_BIAS`` (a layer starts at nearly full intensity). A layer whose place the
    model is unsure of can dim instead of being split into faint copies or smeared: under
    squared error the best intensity of a digit drawn in one place is the chance that it
    is there. (With ``gate``, the gate logit follows the fade logit.)"""
    pooled = _pool_layers(logits, motions, content)
    return jax.nn.sigmoid(pooled[..., -1 - int(gate)] + FADE_BIAS)


def move_layers(frame: Array, assignment: Array, displacements: Array) -> Array:
    """The layers of ``frame f32[B, H, W, C]`` (``assignment f32[B, H, W, K]``: each
    pixel's share in each layer, summing to 1), each moved rigidly by its own
    ``displacements f32[B, K, 2]`` (vertical, horizontal, in pixels; bilinear, as
    :func:`~gru_jax.models.video_ops.splat` with that displacement at every pixel):
    ``f32[B, K, H, W, C]``, whose sum over ``K`` is the prediction."""
    batch, height, width, channels = frame.shape
    motions = assignment.shape[-1]
    layers = jnp.moveaxis(frame[..., None, :] * assignment[..., None], 3, 1)  # [B, K, H, W, C]
    moved = shift(layers.reshape(-1, height, width, channels), displacements.reshape(-1, 2))
    return moved.reshape(batch, motions, height, width, channels)


def mix_cells(frame: Array, kernels: Array, mask_logits: Array, drawn: Array, p: int) -> Array:
    """``sigmoid(mask) · advect(frame) + (1 - sigmoid(mask)) · drawn``, per pixel:
    ``frame``, ``drawn`` f32[B, H, W, C]; ``kernels`` from :func:`cell_kernels`;
    ``mask_logits`` f32[B, h, w, p·p·C] (a patch's pixels in its channels)."""
    mask = jax.nn.sigmoid(depth_to_space(mask_logits, p))
    return mask * advect(frame, kernels[..., 0, :], kernels[..., 1, :]) + (1 - mask) * drawn


def mix_motions(frame: Array, kernels: Array, mask_logits: Array, drawn: Array, p: int) -> Array:
    """``Σ_m weight_m · advect(frame, motion m) + weight_K · drawn``, per pixel, with
    ``weight = softmax(mask)`` over the ``K + 1`` sources (shared by the channels):
    ``kernels f32[B, K, 2, k]`` from :func:`motion_kernels`, ``mask_logits f32[B, h, w,
    p·p·(K + 1)]``."""
    weights = jax.nn.softmax(depth_to_space(mask_logits, p), axis=-1)  # [B, H, W, K + 1]
    mixed = weights[..., -1:] * drawn
    for m in range(kernels.shape[1]):
        ky = kernels[:, m, 0, None, None, :]  # one cell: the whole frame
        kx = kernels[:, m, 1, None, None, :]
        mixed = mixed + weights[..., m : m + 1] * advect(frame, ky, kx)
    return mixed


def cell_offsets(kernels: Array, height: int, width: int) -> Array:
    """Per-pixel offsets ``f32[B, height, width, 2]`` (vertical, horizontal) from per-cell
    kernels ``f32[B, rows, cols, 2, k]`` (:func:`cell_kernels`): each kernel's mean offset
    (:func:`~gru_jax.models.video_ops.kernel_offsets`), repeated over its cell's pixels."""
    offsets = kernel_offsets(kernels)  # [B, rows, cols, 2]
    rows, cols = offsets.shape[1:3]
    offsets = jnp.repeat(offsets, height // rows, axis=1)
    return jnp.repeat(offsets, width // cols, axis=2)


def mix_warped(frame: Array, offsets: Array, mask_logits: Array, drawn: Array, p: int) -> Array:
    """``sigmoid(mask) · warp(frame, offsets) + (1 - sigmoid(mask)) · drawn``, per pixel
    (the flow form of :func:`mix_cells`; ``offsets f32[B, H, W, 2]``)."""
    mask = jax.nn.sigmoid(depth_to_space(mask_logits, p))
    return mask * warp(frame, offsets) + (1 - mask) * drawn
