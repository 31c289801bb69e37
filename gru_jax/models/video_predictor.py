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
step t depends on its output at t-1), which XLA sees unrolled too.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gru_jax.convgru import ConvGRU, ConvGRUCell, check_frames
from gru_jax.initializers import default_kernel_init
from gru_jax.models.advection import (
    cell_kernels,
    cell_offsets,
    mix_cells,
    mix_motions,
    mix_warped,
    motion_kernels,
)
from gru_jax.models.video_ops import (
    INTENSITY_EPS,
    MATCHING_TEMPERATURE,
    compose_offsets,
    depth_to_space,
    intensity_logits,
    matching_costs,
    matching_prior,
    space_to_depth,
    unit_clip,
)
from gru_jax.models.video_options import check_options
from gru_jax.ops.conv_gru import conv_gru_step, input_biases, project_frames, step_conv
from gru_jax.ops.conv_same import conv2d_im2col

Array = jax.Array
ADVECTION_EPS = INTENSITY_EPS  # predicted intensities are squeezed into [eps, 1 - eps]


class VideoPredictor(nnx.Module):
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
    auxiliary loss; the rollout itself is unchanged.

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
      advection_motions: 0 for kernels per cell (above); ``K > 0`` for ``K`` kernel
        pairs shared by the whole frame instead (Finn et al.'s CDNA,
        :mod:`gru_jax.models.advection`): each pools the patches' kernel logits with a
        learned attention over the grid, and a per-pixel softmax over the ``K`` moved
        frames and the drawn frame mixes them (``advection_cell_size`` is then unused).
        A motion is then estimated from every patch its content covers, not from one cell
        (on moving digits it learned more slowly than 16×16 cells: the docs' round 5).
      advection_source: which frame the kernels move: ``'previous'`` (the previous frame,
        as in Finn et al.: the kernels say one frame's motion, and the moves compound, so
        each imprecise step blurs the next) or ``'context'`` (always the last context
        frame: the kernels at step t say the whole displacement since then and errors do
        not compound; the window must span the motion over the whole horizon) or
        ``'flow'`` (each cell's kernel pair is read as its mean offset, one frame's
        displacement; the steps' displacements are composed into an offset field back to
        the last context frame, which is sampled once, bilinearly: the kernels say one
        frame's motion, as with ``'previous'``, but the content is not re-blurred by every
        step's kernel spread; :func:`~gru_jax.models.video_ops.compose_offsets`).
      advection_prior: ``'none'`` or ``'matching'``: add to the kernels' logits the motion
        block matching sees between the two frames before the predicted one (the last two
        context frames, then the model's own; :func:`matching_prior`), so the kernels
        start from "keep moving as before" and the states only correct it (bounces,
        overlaps). Needs ``advection_kernel_size == 2 * matching_radius + 1``.
      motion_input: what the encoder reads besides each context frame's patches:
        ``'none'``; ``'differences'`` (the patches' change since the previous frame); or
        ``'matching'`` (block matching against the previous frame, :func:`matching_costs`
        over ``[-matching_radius, matching_radius]²``, turned into a distribution over
        offsets by a softmax of ``-cost / 0.02`` and projected by a learned 1×1
        convolution to ``motion_channels`` channels): motion made explicit for the first
        layer, which otherwise has to compare each frame with its own memory of the last.
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
        advection_source: str = "previous",
        advection_prior: str = "none",
        forecaster_motion: bool = False,
        motion_input: str = "none",
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
            advection_source=advection_source,
            advection_prior=advection_prior,
            forecaster_motion=forecaster_motion,
            motion_input=motion_input,
            matching_radius=matching_radius,
            motion_channels=motion_channels,
        )
        self.channels = channels
        self.patch_size = patch_size
        self.advection = output == "advection"
        self.motions = advection_motions
        self.cells_per_side = max(1, patch_size // cell)  # kernel pairs per patch side
        self.patches_per_cell = max(1, cell // patch_size)  # patches per cell side
        self.advection_source = advection_source
        self.advection_prior = advection_prior
        self.forecaster_motion = forecaster_motion
        self.forecaster_input = forecaster_input
        self.shared = forecaster == "shared"
        patch_features = patch_size * patch_size * channels
        first_input = patch_features + (motion_channels if forecaster_motion else 0)
        inputs = (first_input, *hidden_channels[:-1])
        self.motion_input = motion_input
        self.matching_radius = matching_radius
        extra = {"none": 0, "differences": patch_features, "matching": motion_channels}
        encoder_inputs = (patch_features + extra[motion_input], *hidden_channels[:-1])
        self.motion_projection = (
            nnx.Conv(
                (2 * matching_radius + 1) ** 2,
                motion_channels,
                (1, 1),
                dtype=dtype,
                kernel_init=default_kernel_init,
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
            kernel_init=default_kernel_init,
        )
        states = sum(hidden_channels)  # the heads read all layers' states, concatenated
        hidden = head_hidden_channels
        self.head_hidden = conv(states, hidden, rngs=rngs) if hidden else None
        self.head = conv(hidden or states, patch_features, rngs=rngs)
        # Advection: per-cell kernels and per-pixel mask logits from the same states.
        # Shared motions: per patch, each motion's logits and its attention score.
        kernel_logits = (
            advection_motions * (2 * advection_kernel_size + 1)
            if advection_motions
            else 2 * advection_kernel_size * self.cells_per_side**2
        )
        mask_logits = (
            patch_size**2 * (advection_motions + 1) if advection_motions else patch_features
        )
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
        offsets = jax.nn.softmax(-costs / MATCHING_TEMPERATURE, axis=-1)
        motion = self.motion_projection(offsets.reshape(-1, *offsets.shape[2:]))
        return motion.reshape(*offsets.shape[:2], *motion.shape[1:])

    def _logits(self, states: Array) -> Array:
        """Head on concatenated states f32[..., h, w, sum(hidden)] → f32[..., h, w, p·p·C]."""
        lead = states.shape[:-3]
        grid = states.reshape(-1, *states.shape[-3:])
        if self.head_hidden is not None:
            grid = jax.nn.gelu(self.head_hidden(grid))
        grid = self.head(grid)
        return grid.reshape(*lead, *grid.shape[1:]).astype(jnp.float32)

    def __call__(
        self,
        context: Array,
        num_future: int,
        return_context_logits: bool = False,
        teacher_future: Array | None = None,
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
        if self.shared:
            future = self._continue(states, num_future)
        else:
            future = self._forecast(context, states, num_future, teacher_future)
        if not return_context_logits:
            return future
        # The encoder's guess of the next frame at every context step but the last (whose
        # next frame is the forecaster's first): deep supervision of the encoder.
        guesses = self._logits(jnp.concatenate(encoder_outputs, axis=-1)[:, :-1])
        return future, depth_to_space(guesses, self.patch_size)

    def _continue(self, states: list[Array], num_future: int) -> Array:
        """``forecaster='shared'``: the encoder's cells run on, fed their own predictions."""
        cells = [layer.cell for layer in self.encoder]
        weights = [c.step_weights() for c in cells]
        logits = [self._logits(jnp.concatenate(states, axis=-1))]
        for _ in range(num_future - 1):
            x = jax.nn.sigmoid(logits[-1])
            for index, (cell, sw) in enumerate(zip(cells, weights)):
                conv = step_conv(cell.gradient)
                x_pre = project_frames(x, sw, conv)
                x, _, _ = conv_gru_step(states[index], x_pre, sw, cell.reset_after, conv)
                states[index] = x
            logits.append(self._logits(jnp.concatenate(states, axis=-1)))
        return depth_to_space(jnp.stack(logits, axis=1), self.patch_size)

    def _forecast(self, context: Array, states: list[Array], num_future: int, teacher_future=None):
        """``forecaster='separate'``: the forecaster cells, started from the encoder's states
        (with ``teacher_future``, also the one-step logits: see ``__call__``)."""
        cells = list(self.forecaster)
        weights = [c.step_weights() for c in cells]
        convs = [step_conv(c.gradient) for c in cells]
        last_frame = context_frame = context[:, -1].astype(jnp.float32)
        before_last = context[:, -2 if context.shape[1] > 1 else -1].astype(jnp.float32)
        previous = space_to_depth(last_frame, self.patch_size)
        if self.forecaster_input == "zeros":
            previous = jnp.zeros_like(previous)
        logits, one_step = [], []
        teacher = None if teacher_future is None else jnp.moveaxis(teacher_future, 1, 0)
        # advection_source='flow': offsets from the current frame back to the context frame.
        flow = jnp.zeros((*context_frame.shape[:-1], 2), jnp.float32)
        for step in range(num_future):
            x = previous
            if self.forecaster_motion:  # the motion of the last two frames, as observed
                pair = jax.lax.stop_gradient(jnp.stack([before_last, last_frame], axis=1))
                x = jnp.concatenate([x, self._motion(pair)[:, 1]], axis=-1)
            for index, (cell, sw, conv) in enumerate(zip(cells, weights, convs)):
                if index == 0 and self.forecaster_input == "zeros":
                    # W * 0 + b = b: skip the input convolution of an all-zero input.
                    shape = (*x.shape[:-1], cell.hidden_channels)
                    x_pre = tuple(jnp.broadcast_to(b, shape) for b in input_biases(sw))
                else:
                    x_pre = project_frames(x, sw, conv)
                x, _, _ = conv_gru_step(states[index], x_pre, sw, cell.reset_after, conv)
                states[index] = x
            step_logits, kernel_logits, mask_logits = self._head_outputs(
                jnp.concatenate(states, axis=-1)
            )
            if self.advection:
                source = last_frame if self.advection_source == "previous" else context_frame
                prior = (
                    matching_prior(before_last, last_frame, self.patch_size, self.matching_radius)
                    if self.advection_prior == "matching"
                    else None
                )
                before_last = last_frame
                # In [0, 1] up to rounding, which TF32 / bfloat16 products make large enough
                # to leave it (a NaN log-odds on GPU otherwise): clipped, identity gradient.
                sources = [source] if teacher is None or step == 0 else [source, teacher[step - 1]]
                moved, flow = self._advect(
                    kernel_logits, mask_logits, step_logits, sources, prior, flow
                )
                moved = [unit_clip(f) for f in moved]
                last_frame = moved[0]
                if len(moved) > 1:  # the same kernels and mask applied to the true frame
                    one_step.append(space_to_depth(intensity_logits(moved[1]), self.patch_size))
                step_logits = space_to_depth(intensity_logits(last_frame), self.patch_size)
                if self.forecaster_input == "prediction":
                    previous = space_to_depth(last_frame, self.patch_size)
            elif self.forecaster_input == "prediction":
                previous = jax.nn.sigmoid(step_logits)
            logits.append(step_logits)
        future = depth_to_space(jnp.stack(logits, axis=1), self.patch_size)
        if teacher is None:
            return future
        if not one_step:  # a single predicted frame: nothing to teacher-force
            return future, jnp.zeros((future.shape[0], 0, *future.shape[2:]), future.dtype)
        return future, depth_to_space(jnp.stack(one_step, axis=1), self.patch_size)

    def _head_outputs(self, states: Array) -> tuple[Array, Array | None, Array | None]:
        """``(drawn logits, kernel logits, mask logits)`` from the concatenated states
        f32[B, h, w, sum(hidden)] (the last two None without advection). With advection
        the three convolutions that read the states (the drawing head, or its hidden
        layer, and the kernel and mask heads) run as one GEMM over the states' patches:
        the same convolutions as calling each module, one GEMM instead of three."""
        if not self.advection:
            return self._logits(states), None, None
        convs = (self.head_hidden or self.head, self.kernel_head, self.mask_head)
        dtype = jnp.dtype(self.head.dtype or self.head.kernel.dtype)
        kernel = jnp.concatenate([c.kernel[...] for c in convs], axis=-1).astype(dtype)
        bias = jnp.concatenate([c.bias[...] for c in convs]).astype(jnp.float32)
        out = conv2d_im2col(states, kernel) + bias
        first, kernel_logits, mask_logits = jnp.split(
            out, np.cumsum([c.out_features for c in convs])[:-1].tolist(), axis=-1
        )
        if self.head_hidden is not None:
            first = self.head(jax.nn.gelu(first.astype(dtype))).astype(jnp.float32)
        return first, kernel_logits, mask_logits

    def _advect(
        self,
        kernel_logits: Array,
        mask_logits: Array,
        drawn_logits: Array,
        frames: list[Array],
        prior: tuple | None,
        flow: Array,
    ) -> tuple[list[Array], Array]:
        """Predicted frames f32[B, H, W, C] in [0, 1], one per source in ``frames``: each
        moved by the kernels of ``kernel_logits`` (the kernel head's output; per cell, plus
        ``prior``'s logits if given; or the shared motions) and mixed per pixel, by
        ``mask_logits`` (the mask head's), with the drawn frame
        ``sigmoid(drawn_logits)`` (:mod:`gru_jax.models.advection`). Also returns the
        offsets back to the context frame, ``flow f32[B, H, W, 2]``: with
        ``advection_source='flow'``, this step's kernel offsets composed with ``flow``
        (then the frames are warped by them); otherwise ``flow`` unchanged."""
        p = self.patch_size
        logits = kernel_logits
        drawn = jax.nn.sigmoid(depth_to_space(drawn_logits, p))
        if self.motions:
            kernels, _ = motion_kernels(logits, self.motions)
            return [mix_motions(frame, kernels, mask_logits, drawn, p) for frame in frames], flow
        kernels = cell_kernels(logits, self.cells_per_side, self.patches_per_cell, prior)
        if self.advection_source != "flow":
            return [mix_cells(frame, kernels, mask_logits, drawn, p) for frame in frames], flow
        flow = compose_offsets(cell_offsets(kernels, *drawn.shape[1:3]), flow)
        return [mix_warped(frame, flow, mask_logits, drawn, p) for frame in frames], flow
