"""Video prediction with a ConvGRU encoder-forecaster (Shi et al. 2015, with GRU cells).

Frames are cut into ``patch_size × patch_size`` patches stacked on the channel axis
(space-to-depth: 64×64×1 → 8×8×64 for patches of 8), so every recurrent convolution
runs on a small grid with a receptive field ``patch_size`` times larger. Then::

    context frames ─► encoder ConvGRU 1 ─► encoder ConvGRU 2 ─► ...     (over the context)
                           │ final state        │ final state
                           ▼                    ▼
    forecaster input ─► forecaster 1 ─────► forecaster 2 ─► ...         (one step per frame)
                           └──── states of every layer, concatenated ────► conv ─► logits

Forecaster layer ``l`` starts from encoder layer ``l``'s final state (the per-level skip
connection) and reads, at each future step, the state of the forecaster layer below; the
first layer reads either nothing (``forecaster_input='zeros'``: the states carry all
information) or the previous frame (``'prediction'``: the last context frame at the first
step, then the model's own previous prediction, ``sigmoid(logits)``, so the forecaster runs
free at training time as at test time). A ``kernel_size`` convolution over the
concatenated states of all forecaster layers gives ``patch_size² · channels`` logits per
grid cell, put back in place by depth-to-space (``output='pixels'``: the head draws the
frame; ``head_hidden_channels`` makes it conv-GELU-conv).

With ``output='advection'`` (dynamic neural advection, Finn et al. 2016) the head's drawing
is only one of two sources: the states also give, per grid cell, a vertical and a
horizontal softmax kernel that move the pixels of the previous frame (the last context
frame, then the model's own prediction; :func:`~gru_jax.models.video_ops.advect`), and a
per-pixel mask that mixes the moved frame with the drawn one (or ``advection_motions``
kernel pairs shared by the whole frame; :mod:`gru_jax.models.advection`). Rigid motion
then costs the states only a kernel per cell instead of every pixel's value: on moving
digits this learned about twice as fast per training minute (``docs/video_experiments.md``).

The encoder's first layer can also read explicit motion (``motion_input``): frame
differences, or a block-matching cost volume against the previous frame
(:func:`matching_costs`).

With ``forecaster='shared'`` there is no second stack: the encoder's cells run on past the
context, each step reading the previous prediction, and the head reads the encoder's
states at every step (the classic next-frame predictor; ``return_context_logits`` then
gives the same head's guesses during the context, for ``train.context_loss_weight``).

The encoder scans with :class:`gru_jax.ConvGRU` (unrolled for short sequences); the
forecaster steps :class:`gru_jax.ConvGRUCell`'s functions in a Python loop (its input at
step t depends on its output at t-1), which XLA sees unrolled too. That rollout, the
output heads and the advection are in :mod:`gru_jax.models.video_forecast`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gru_jax.convgru import ConvGRU, ConvGRUCell, check_frames
from gru_jax.initializers import flax_kernel_init
from gru_jax.models.video_forecast import SPLAT_FEATURES, ForecastMixin
from gru_jax.models.video_ops import (
    INTENSITY_EPS,
    MATCHING_TEMPERATURE,
    depth_to_space,
    matching_costs,
    space_to_depth,
)
from gru_jax.models.video_options import check_options

Array = jax.Array
ADVECTION_EPS = INTENSITY_EPS  # predicted intensities are squeezed into [eps, 1 - eps]


class VideoPredictor(ForecastMixin, nnx.Module):
    """ConvGRU encoder-forecaster (see the module docstring).

    Call ``model(context, num_future)`` with ``context: f32[batch, T_in, H, W, channels]``
    in [0, 1] (H and W multiples of ``patch_size``); returns ``logits f32[batch,
    num_future, H, W, channels]`` (``sigmoid(logits)`` is the predicted intensity). With
    ``return_context_logits=True`` also the encoder's next-frame logits at each context
    step, f32[batch, T_in - 1, H, W, channels] (the guesses of frames 2..T_in; the head
    reads the encoder states as it reads the forecaster's), for an auxiliary loss. With
    ``teacher_future`` (the true future frames, f32[batch, num_future, H, W, channels];
    advected output only) also the *one-step* logits f32[batch, num_future - 1, H, W,
    channels]: at each predicted step t ≥ 1, the step's kernels and mask applied to the
    true frame t-1 instead of the model's own prediction. They supervise the motion the
    states produce at every step without the errors of earlier steps in the way, for an
    auxiliary loss; the rollout itself is unchanged. With ``return_assignment=True``
    (the layered form only: ``advection_source='splat'``, ``advection_motions=K``) also
    the split of the last context frame into its ``K`` layers, ``f32[batch, H, W, K]``
    (each pixel's shares, summing to 1), for a penalty on split pixels.

    Args:
      channels: image channels (1 for moving digits).
      patch_size: space-to-depth patch side.
      hidden_channels: state channels of each encoder (and forecaster) layer.
      kernel_size: ConvGRU state (recurrent) convolution window, and the input one's
        unless ``input_kernel_size`` is given.
      input_kernel_size: ConvGRU input convolution window (None: ``kernel_size``). 1 makes
        each cell read only its own patch (the state convolution still spreads it): about
        half the FLOPs of a 3×3 input convolution's layer at 64 channels.
      head_kernel_size: window of the convolution from the forecaster states to logits.
      head_hidden_channels: 0 for a single (linear) head convolution; else the channels of
        a hidden ``head_kernel_size`` convolution with a GELU before it (a nonlinear
        decoder, so the states need not hold the pixels' logits linearly).
      forecaster_input: ``'zeros'`` or ``'prediction'`` (see the module docstring).
      forecaster: ``'separate'`` (encoder-forecaster with their own weights) or
        ``'shared'`` (one ConvGRU stack that predicts the next frame at every step: it
        reads the context, then its own predictions; ``forecaster_input`` is unused).
      output: ``'pixels'`` (the head draws each predicted frame) or ``'advection'``
        (Finn et al. 2016's DNA: for every grid cell the states give a vertical and a
        horizontal ``advection_kernel_size`` kernel (``video_ops.advect``) that move the
        pixels of the previous frame, i.e. the last context frame at the first step and
        the model's own prediction after it; a per-pixel mask mixes the moved frame with
        the head's drawn frame: ``mask · moved + (1 - mask) · sigmoid(head)``, returned
        as the logits of that intensity squeezed into [1e-4, 1 - 1e-4]).
      advection_kernel_size: window of the advection kernels (odd; must span the motion
        they express: 9 reaches 4 pixels, 73 reaches 36).
      advection_cell_size: side in pixels of the cells that share one kernel pair (a
        divisor or a multiple of ``patch_size``; None: ``patch_size``). Smaller cells let
        neighbouring pixels of one patch move differently (a digit's edge and the
        background it enters) at the cost of a wider kernel head: ``(patch_size / cell)²``
        kernel pairs per patch. Larger cells average the kernel logits of their
        ``(cell / patch_size)²`` patches: one motion for a larger area.
      advection_temperature: the kernels are a softmax of their logits divided by this
        (> 0; 1: as trained). A test-time knob: below 1 each kernel concentrates on its
        likeliest offsets, so the moved frame keeps more of its edges, at a higher MSE
        (the per-pixel loss's optimum is the spread the model learned; on moving digits
        the extra edges are mostly texture, not digits: the docs' round 7). In training a
        constant temperature only rescales what the kernel head learns. Only with
        ``advection_source`` ``'previous'`` or ``'context'`` (``'flow'`` and ``'splat'``
        read a kernel as its mean offset, which a temperature would move).
      layer_temperature: the layered form's assignment (each pixel's share in the ``K``
        layers) is a softmax of the mask head's logits divided by this (> 0; 1: as
        trained). A test-time knob: below 1 each pixel goes more wholly into its likeliest
        layer, so a digit is no longer split between layers that move apart (the faint
        copies of the docs' round 10); near 0 every pixel is in one layer and each
        predicted frame is the last context frame's pixels rigidly rearranged. Only with
        ``advection_source='splat'`` and ``advection_motions > 0``.
      layer_fade: the layered form only: each layer also gets a gain in (0, 1) per
        predicted step (one more kernel-head logit per motion, pooled where the layer's
        content is; :func:`~gru_jax.models.advection.layer_gains`), and the prediction is
        the gain-weighted sum of the moved layers. Where the model is unsure where a digit
        goes it can dim it in one place (squared error's best intensity there is the
        chance the digit is there) instead of splitting it into faint copies that move
        apart. The forecaster still reads the layers at full intensity.
      layer_gate: the layered form with ``advection_prior='matching'`` only: the kernel
        head's logits only correct each layer's prior move, by a gate in (0, 1) per layer
        and step (one more kernel-head logit per motion, pooled where the layer's content
        is, starting at 0.12; :func:`~gru_jax.models.advection.layer_moves`), so a layer
        keeps the context's motion unless the head opens its gate (the docs' round 15
        found the learned corrections moving layers that neither bounce nor meet further
        off than the prior alone).
      layer_split_steps: the layered form with ``advection_prior='matching'`` only:
        rounds of sorting the split by motion before the rollout
        (:func:`~gru_jax.models.advection.refine_split`: each layer's motion is its
        content's pooled matching prior, and every cell's pixels move towards the layers
        whose motion its own matching agrees with, an EM step). 0: the mask head's split
        as it is. Meant for the layered runs whose split settled early on layers that mix
        digits moving apart (the docs' round 16).
      layer_split_weight: how strongly each of those rounds weighs a cell's agreement
        with a layer's motion (a log-likelihood, up to about 14 nats) against the mask
        head's logits (> 0). At 1 the sorting overrode the head early in training and the
        split collapsed into hard pieces that the model could not learn to move (round
        16); 0.25 nudges the head's split instead.
      advection_motions: 0 for kernels per cell (above); ``K > 0`` for ``K`` kernel
        pairs shared by the whole frame instead (Finn et al.'s CDNA,
        :mod:`gru_jax.models.advection`): each pools the patches' kernel logits with a
        learned attention over the grid, and a per-pixel softmax over the ``K`` moved
        frames and the drawn frame mixes them (``advection_cell_size`` is then unused).
        A motion is then estimated from every patch its content covers, not from one cell
        (on moving digits it learned more slowly than 16×16 cells: the docs' round 5).
        With ``advection_source='splat'``, ``K`` layers instead: a per-pixel softmax of
        the mask head on the encoder's final states splits the last context frame into
        ``K`` soft layers, each moved rigidly by its own motion per step (pooled where the
        layer's content is now, plus the matching prior pooled over its content) and
        splatted; the prediction is the layers' sum, and the forecaster reads the moved
        layers (:func:`~gru_jax.models.advection.layer_moves`; the docs' round 9).
      advection_source: which frame the kernels move: ``'previous'`` (the previous frame,
        as in Finn et al.: the kernels say one frame's motion, and the moves compound, so
        each imprecise step blurs the next) or ``'context'`` (always the last context
        frame: the kernels at step t say the whole displacement since then and errors do
        not compound; the window must span the motion over the whole horizon) or
        ``'flow'`` (each cell's kernel pair is read as its mean offset, one frame's
        displacement; the steps' displacements are composed into an offset field back to
        the last context frame, which is sampled once, bilinearly: the kernels say one
        frame's motion, as with ``'previous'``, but the content is not re-blurred by every
        step's kernel spread; :func:`~gru_jax.models.video_ops.compose_offsets`) or
        ``'splat'`` (the content carries its motion: the forecaster's grid stays the last
        context frame's, each cell's kernel pair is read as where its content moves this
        step (interpolated between cell centres), the moves add up per source pixel, and
        each predicted frame is the last context frame's pixels splatted once to there,
        :func:`~gru_jax.models.video_ops.splat`; no drawn frame, no mask, so the
        prediction cannot smear; the first forecaster layer reads each patch's move so
        far and position, ``forecaster_input`` is unused, and ``advection_prior`` is the
        last two context frames' matching at every step; with ``advection_motions=K``,
        ``K`` rigid layers instead of moves per cell, see above).
      advection_prior: ``'none'`` or ``'matching'``: add to the kernels' logits the motion
        block matching sees between the two frames before the predicted one (the last two
        context frames, then the model's own; :func:`matching_prior`), so the kernels
        start from "keep moving as before" and the states only correct it (bounces,
        overlaps). Needs ``advection_kernel_size == 2 * matching_radius + 1``; with
        ``advection_motions``, only in the layered form (``advection_source='splat'``).
      prior_frames: with ``advection_prior='matching'`` in the splat forms, the prior
        matches the last context frame against the one ``prior_frames`` before it and
        reads the displacement per frame (:func:`matching_prior`'s ``frames_apart``): a
        motion from positions rounded to whole pixels, known to ``1/prior_frames`` px per
        frame instead of ~1 px (a bounce in those frames is averaged in). Needs more
        context frames than that.
      prior_temperature: the prior's matching softmax temperature (default 0.02, lower is
        sharper: the broad default's mean falls short of the motion on smooth digits).
      prior_neighbourhood: average each cell's prior with its 8 neighbours', weighted by
        their content (default True; the layered form pools the prior over each layer's
        content anyway).
      motion_input: what the encoder reads besides each context frame's patches:
        ``'none'``; ``'differences'`` (the patches' change since the previous frame); or
        ``'matching'`` (block matching against the previous frame, :func:`matching_costs`
        over ``[-matching_radius, matching_radius]²``, turned into a distribution over
        offsets by a softmax of ``-cost / motion_temperature`` and projected by a learned
        1×1 convolution to ``motion_channels`` channels): motion made explicit for the
        first layer, which otherwise has to compare each frame with its own memory of the
        last.
      motion_temperature: that softmax's temperature (``motion_input='matching'``; default
        0.02). On smooth digits 0.02 spreads each cell's distribution over neighbouring
        offsets, whose mean then falls short of the motion; lower is sharper.
      forecaster_motion: the forecaster's first layer also reads, at every step, the block
        matching of the two frames before it (the last two context frames, then its own
        predictions), through the encoder's projection: the motion it has produced so far,
        as the encoder saw the context's. Needs ``motion_input='matching'``,
        ``output='advection'`` and ``forecaster_input='prediction'``.
      matching_radius: largest displacement (pixels per frame) block matching looks for
        (``motion_input='matching'`` and ``advection_prior='matching'``).
      motion_channels: channels of the projected matching distribution.
      dtype: convolution operand dtype (None: float32); states stay float32.
      convgru_gradient: how the ConvGRU layers' convolutions are written and
        differentiated (:mod:`gru_jax.ops.conv_gru`: ``"auto"``, ``"stepwise"``,
        ``"xla"``, ``"im2col"``, or ``"deferred"`` for the encoder); the same function
        for all, at different speeds.
      rngs: ``nnx.Rngs`` with a ``params`` stream.
    """

    def __init__(
        self,
        channels: int = 1,
        *,
        patch_size: int = 4,
        hidden_channels: tuple[int, ...] = (64, 64),
        kernel_size: int = 3,
        input_kernel_size: int | None = None,
        head_kernel_size: int = 1,
        head_hidden_channels: int = 0,
        forecaster_input: str = "zeros",
        forecaster: str = "separate",
        output: str = "pixels",
        advection_kernel_size: int = 9,
        advection_cell_size: int | None = None,
        advection_motions: int = 0,
        advection_temperature: float = 1.0,
        layer_temperature: float = 1.0,
        layer_fade: bool = False,
        layer_gate: bool = False,
        layer_split_steps: int = 0,
        layer_split_weight: float = 1.0,
        advection_source: str = "previous",
        advection_prior: str = "none",
        prior_frames: int = 1,
        prior_temperature: float = MATCHING_TEMPERATURE,
        prior_neighbourhood: bool = True,
        forecaster_motion: bool = False,
        motion_input: str = "none",
        motion_temperature: float = MATCHING_TEMPERATURE,
        matching_radius: int = 4,
        motion_channels: int = 16,
        dtype: Any = None,
        convgru_gradient: str = "auto",
        rngs: nnx.Rngs,
    ):
        cell = check_options(
            patch_size=patch_size,
            hidden_channels=hidden_channels,
            head_hidden_channels=head_hidden_channels,
            forecaster_input=forecaster_input,
            forecaster=forecaster,
            output=output,
            advection_kernel_size=advection_kernel_size,
            advection_cell_size=advection_cell_size,
            advection_motions=advection_motions,
            advection_temperature=advection_temperature,
            layer_temperature=layer_temperature,
            layer_fade=layer_fade,
            layer_gate=layer_gate,
            layer_split_steps=layer_split_steps,
            layer_split_weight=layer_split_weight,
            advection_source=advection_source,
            advection_prior=advection_prior,
            prior_frames=prior_frames,
            prior_temperature=prior_temperature,
            prior_neighbourhood=prior_neighbourhood,
            forecaster_motion=forecaster_motion,
            motion_input=motion_input,
            motion_temperature=motion_temperature,
            matching_radius=matching_radius,
            motion_channels=motion_channels,
        )
        self.channels = channels
        self.patch_size = patch_size
        self.advection = output == "advection"
        self.motions = advection_motions
        self.advection_temperature = float(advection_temperature)
        self.layer_temperature = float(layer_temperature)
        self.layer_fade = bool(layer_fade)
        self.layer_gate = bool(layer_gate)
        self.layer_split_steps = int(layer_split_steps)
        self.layer_split_weight = float(layer_split_weight)
        self.cells_per_side = max(1, patch_size // cell)  # kernel pairs per patch side
        self.patches_per_cell = max(1, cell // patch_size)  # patches per cell side
        self.advection_source = advection_source
        self.advection_prior = advection_prior
        self.prior_frames = int(prior_frames)
        self.prior_temperature = float(prior_temperature)
        self.prior_neighbourhood = bool(prior_neighbourhood)
        self.forecaster_motion = forecaster_motion
        self.forecaster_input = forecaster_input
        self.shared = forecaster == "shared"
        patch_features = patch_size * patch_size * channels
        first_input = patch_features + (motion_channels if forecaster_motion else 0)
        if advection_source == "splat":  # per patch: its content's displacement, position
            first_input = SPLAT_FEATURES
            if advection_motions:  # or the K moved layers' pixels
                first_input = patch_features * advection_motions
        inputs = (first_input, *hidden_channels[:-1])
        self.motion_input = motion_input
        self.motion_temperature = float(motion_temperature)
        self.matching_radius = matching_radius
        extra = {"none": 0, "differences": patch_features, "matching": motion_channels}
        encoder_inputs = (patch_features + extra[motion_input], *hidden_channels[:-1])
        self.motion_projection = (
            nnx.Conv(
                (2 * matching_radius + 1) ** 2,
                motion_channels,
                (1, 1),
                dtype=dtype,
                kernel_init=flax_kernel_init,
                rngs=rngs,
            )
            if motion_input == "matching"
            else None
        )
        input_window = kernel_size if input_kernel_size is None else input_kernel_size
        self.encoder = nnx.List(
            [
                ConvGRU(
                    i,
                    h,
                    input_window,
                    kernel_size,
                    dtype=dtype,
                    gradient=convgru_gradient,
                    rngs=rngs,
                )
                for i, h in zip(encoder_inputs, hidden_channels)
            ]
        )
        self.forecaster = nnx.List(
            []
            if self.shared
            else [
                ConvGRUCell(
                    i,
                    h,
                    input_window,
                    kernel_size,
                    dtype=dtype,
                    gradient=convgru_gradient,
                    rngs=rngs,
                )
                for i, h in zip(inputs, hidden_channels)
            ]
        )
        window = (head_kernel_size, head_kernel_size)
        conv = functools.partial(
            nnx.Conv,
            kernel_size=window,
            padding="SAME",
            dtype=dtype,
            kernel_init=flax_kernel_init,
        )
        states = sum(hidden_channels)  # the heads read all layers' states, concatenated
        hidden = head_hidden_channels
        self.head_hidden = conv(states, hidden, rngs=rngs) if hidden else None
        self.head = conv(hidden or states, patch_features, rngs=rngs)
        # Advection: per-cell kernels and per-pixel mask logits from the same states.
        # Shared motions: per patch, each motion's logits and its attention score.
        kernel_logits = (
            advection_motions
            * (2 * advection_kernel_size + 1 + int(bool(layer_fade)) + int(bool(layer_gate)))
            if advection_motions
            else 2 * advection_kernel_size * self.cells_per_side**2
        )
        # Shared motions: a softmax per pixel over the K moved frames and the drawn one;
        # layers (splat): each pixel's share of the K layers.
        sources = advection_motions + (0 if advection_source == "splat" else 1)
        mask_logits = patch_size**2 * sources if advection_motions else patch_features
        self.kernel_head = conv(states, kernel_logits, rngs=rngs) if self.advection else None
        self.mask_head = conv(states, mask_logits, rngs=rngs) if self.advection else None

    def encode(self, context: Array) -> tuple[list[Array], list[Array]]:
        """``(final states, outputs)`` of the encoder layers: per layer
        f32[batch, h, w, hidden_l] and f32[batch, T_in, h, w, hidden_l]."""
        x = space_to_depth(context, self.patch_size)
        if self.motion_input == "differences":  # zeros for the first frame
            x = jnp.concatenate([x, x - jnp.concatenate([x[:, :1], x[:, :-1]], axis=1)], -1)
        elif self.motion_input == "matching":
            x = jnp.concatenate([x, self._motion(context.astype(jnp.float32))], -1)
        states, outputs = [], []
        for layer in self.encoder:
            carry, x = layer(x, return_carry=True)
            states.append(carry)
            outputs.append(x)
        return states, outputs

    def _motion(self, frames: Array) -> Array:
        """Block matching of each frame against the one before (:func:`matching_costs`),
        as a softmax over the offsets projected to ``motion_channels``:
        f32[B, T, H, W, C] → f32[B, T, H/p, W/p, motion_channels]."""
        costs = matching_costs(frames, self.patch_size, self.matching_radius)
        offsets = jax.nn.softmax(-costs / self.motion_temperature, axis=-1)
        motion = self.motion_projection(offsets.reshape(-1, *offsets.shape[2:]))
        return motion.reshape(*offsets.shape[:2], *motion.shape[1:])

    def __call__(
        self,
        context: Array,
        num_future: int,
        return_context_logits: bool = False,
        teacher_future: Array | None = None,
        return_assignment: bool = False,
    ) -> Array | tuple[Array, Array]:
        check_frames(context, self.channels, time_major=False, name="context")
        height, width = context.shape[2:4]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"frame size {height}x{width} is not a multiple of patch_size={self.patch_size}"
            )
        cell = self.patch_size * self.patches_per_cell
        if self.advection and not self.motions and (height % cell or width % cell):
            raise ValueError(
                f"frame size {height}x{width} is not a multiple of advection_cell_size={cell}"
            )
        if return_assignment and not (self.advection_source == "splat" and self.motions):
            raise ValueError(
                "return_assignment needs the layered form: advection_source='splat' with "
                "advection_motions > 0"
            )
        if self.advection and return_context_logits:
            raise ValueError("return_context_logits is not available with output='advection'")
        if teacher_future is not None:
            if not self.advection or self.advection_source != "previous":
                raise ValueError(
                    "teacher_future needs output='advection' and advection_source='previous'"
                )
            expected = (context.shape[0], num_future, *context.shape[2:])
            if tuple(teacher_future.shape) != expected:
                raise ValueError(
                    f"teacher_future has shape {tuple(teacher_future.shape)}, expected {expected}"
                )
            teacher_future = teacher_future.astype(jnp.float32)
        states, encoder_outputs = self.encode(context)
        if return_assignment:
            return self._layer_forecast(context, states, num_future)
        if self.shared:
            future = self._continue(states, num_future)
        elif self.advection_source == "splat":
            future = self._splat_forecast(context, states, num_future)
        else:
            future = self._forecast(context, states, num_future, teacher_future)
        if not return_context_logits:
            return future
        # The encoder's guess of the next frame at every context step but the last (whose
        # next frame is the forecaster's first): deep supervision of the encoder.
        guesses = self._logits(jnp.concatenate(encoder_outputs, axis=-1)[:, :-1])
        return future, depth_to_space(guesses, self.patch_size)
