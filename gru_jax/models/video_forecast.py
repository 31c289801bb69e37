"""The forecaster side of :class:`gru_jax.models.VideoPredictor`: the rollout over the
predicted frames (``forecaster='separate'`` or ``'shared'``), the output heads on the
concatenated states, and the advection of the previous frame. A mixin: the methods read
the predictor's modules and options (see its docstring for what each option does)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gru_jax.models.advection import (
    cell_kernels,
    cell_offsets,
    layer_gains,
    layer_moves,
    mix_cells,
    mix_motions,
    mix_warped,
    motion_kernels,
    move_layers,
    pool_prior,
    refine_split,
)
from gru_jax.models.video_ops import (
    compose_offsets,
    depth_to_space,
    intensity_logits,
    kernel_offsets,
    matching_prior,
    space_to_depth,
    splat,
    unit_clip,
)
from gru_jax.ops.conv_gru import conv_gru_step, input_biases, project_frames, step_conv
from gru_jax.ops.conv_same import conv2d_im2col

Array = jax.Array
SPLAT_FEATURES = 4  # advection_source='splat': the forecaster reads, per patch, (dy, dx, y, x)


class ForecastMixin:
    """Methods of :class:`~gru_jax.models.VideoPredictor` that run after the encoder."""

    def _logits(self, states: Array) -> Array:
        """Head on concatenated states f32[..., h, w, sum(hidden)] → f32[..., h, w, p·p·C]."""
        lead = states.shape[:-3]
        grid = states.reshape(-1, *states.shape[-3:])
        if self.head_hidden is not None:
            grid = jax.nn.gelu(self.head_hidden(grid))
        grid = self.head(grid)
        return grid.reshape(*lead, *grid.shape[1:]).astype(jnp.float32)

    def _continue(self, states: list[Array], num_future: int) -> Array:
        """``forecaster='shared'``: the encoder's cells run on, fed their own predictions."""
        cells = [layer.cell for layer in self.encoder]
        weights = [c.step_weights() for c in cells]
        logits = [self._logits(jnp.concatenate(states, axis=-1))]
        convs = [step_conv(c.gradient) for c in cells]
        for _ in range(num_future - 1):
            _step_layers(jax.nn.sigmoid(logits[-1]), states, cells, weights, convs)
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
                    matching_prior(
                        before_last,
                        last_frame,
                        self.patch_size,
                        self.matching_radius,
                        temperature=self.prior_temperature,
                        neighbourhood=self.prior_neighbourhood,
                    )
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

    def _head_alone(self, head, states: Array) -> Array:
        """One head (the kernel or the mask head) alone on the concatenated states
        (``advection_source='splat'`` has no drawn frame), as :meth:`_head_outputs` runs it."""
        dtype = jnp.dtype(self.head.dtype or self.head.kernel.dtype)
        return conv2d_im2col(states, head.kernel[...].astype(dtype)) + head.bias[...]

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
            kernels, _ = motion_kernels(logits, self.motions, self.advection_temperature)
            return [mix_motions(frame, kernels, mask_logits, drawn, p) for frame in frames], flow
        kernels = cell_kernels(
            logits, self.cells_per_side, self.patches_per_cell, prior, self.advection_temperature
        )
        if self.advection_source != "flow":
            return [mix_cells(frame, kernels, mask_logits, drawn, p) for frame in frames], flow
        flow = compose_offsets(cell_offsets(kernels, *drawn.shape[1:3]), flow)
        return [mix_warped(frame, flow, mask_logits, drawn, p) for frame in frames], flow

    def _context_prior(self, context: Array) -> tuple[Array, Array]:
        """The splat forms' motion prior (:func:`matching_prior`, per patch): the last
        context frame matched against the one ``prior_frames`` before it (against itself
        for a one-frame context)."""
        steps, apart = context.shape[1], self.prior_frames
        if apart > 1 and steps <= apart:
            raise ValueError(
                f"prior_frames={apart} needs more than {apart} context frames, got {steps}"
            )
        frames = context.astype(jnp.float32)
        return matching_prior(
            frames[:, -min(apart + 1, steps)],
            frames[:, -1],
            self.patch_size,
            self.matching_radius,
            apart,
            self.prior_temperature,
            self.prior_neighbourhood,
        )

    def _splat_forecast(self, context: Array, states: list[Array], num_future: int) -> Array:
        """``advection_source='splat'``: the content of the last context frame carries its
        own motion. The forecaster's grid stays the last context frame's (where the
        encoder's final states are): each cell's kernel pair is read as its content's
        displacement this step (the kernel's mean offset, negated: where the content
        goes, not where a pixel's content comes from), interpolated linearly between the
        cells' centres (the content of one digit stretches rather than tears where
        neighbouring cells disagree); the moves add up per source pixel, and every
        predicted frame is the last context frame's pixels splatted once to where they
        have got to (:func:`~gru_jax.models.video_ops.splat`; overlaps summed, then
        clipped to 1). The first forecaster layer reads, per patch, its content's
        displacement so far and its current position (both over the frame height), so a
        cell can tell when its content meets a wall. There is no drawn frame and no mask:
        a prediction is always the context frame's pixels moved, so it cannot smear;
        where the model is unsure it can only stretch or misplace content
        (``docs/video_experiments.md``, round 8)."""
        if self.motions:
            return self._layer_forecast(context, states, num_future)[0]
        cells = list(self.forecaster)
        weights = [c.step_weights() for c in cells]
        convs = [step_conv(c.gradient) for c in cells]
        frame = context[:, -1].astype(jnp.float32)
        batch, height, width, _ = frame.shape
        p = self.patch_size
        centres = (
            np.stack(np.meshgrid(np.arange(height // p), np.arange(width // p), indexing="ij"), -1)
            * p
            + (p - 1) / 2
        ).astype(np.float32)
        prior = (  # "keep moving as in the last context frames", for every step
            self._context_prior(context) if self.advection_prior == "matching" else None
        )
        moved = jnp.zeros((batch, height, width, 2), jnp.float32)  # per source pixel
        logits = []
        for _ in range(num_future):
            per_patch = space_to_depth(moved, p).reshape(batch, height // p, width // p, -1, 2)
            per_patch = per_patch.mean(axis=3)  # [B, h, w, 2]: the patch's mean displacement
            x = jnp.concatenate([per_patch, per_patch + centres], axis=-1) / height
            _step_layers(x, states, cells, weights, convs)
            kernels = cell_kernels(
                self._head_alone(self.kernel_head, jnp.concatenate(states, axis=-1)),
                self.cells_per_side,
                self.patches_per_cell,
                prior,
                self.advection_temperature,
            )
            step_moves = -kernel_offsets(kernels)  # [B, rows, cols, 2]
            moved = moved + jax.image.resize(step_moves, (batch, height, width, 2), method="linear")
            predicted = unit_clip(splat(frame, moved))
            logits.append(space_to_depth(intensity_logits(predicted), p))
        return depth_to_space(jnp.stack(logits, axis=1), p)

    def _layer_forecast(
        self, context: Array, states: list[Array], num_future: int
    ) -> tuple[Array, Array]:
        """``advection_source='splat'`` with ``advection_motions=K``: the last context
        frame is split once into ``K`` soft layers (a per-pixel softmax over ``K`` of the
        mask head on the encoder's final states); at every step each layer moves rigidly
        by its own displacement (:func:`~gru_jax.models.advection.layer_moves`: the
        kernel head's per-patch logits for that motion, pooled where the layer's content
        is now, plus, with ``advection_prior='matching'``, the last two context frames'
        matching pooled over the layer's content in the last context frame), the moves
        add up, each layer is moved once, bilinearly, from the last context frame to
        where it has got to (:func:`~gru_jax.models.video_ops.shift`), and the prediction
        is the sum of the moved layers (clipped to 1; with ``layer_fade``, each layer
        first scaled by its gain this step, :func:`~gru_jax.models.advection.layer_gains`;
        with ``layer_gate``, the kernel head only corrects each layer's prior move by a
        gate that starts nearly shut; with ``layer_split_steps``, the split is first
        sorted by motion, :func:`~gru_jax.models.advection.refine_split`).
        The forecaster reads the moved layers
        (per patch, ``K`` images side by side) and runs on the current frame's grid.
        Returns ``(logits, assignment f32[B, H, W, K])``."""
        cells = list(self.forecaster)
        weights = [c.step_weights() for c in cells]
        convs = [step_conv(c.gradient) for c in cells]
        frame = context[:, -1].astype(jnp.float32)
        batch, height, width, _ = frame.shape
        p, motions = self.patch_size, self.motions
        cell_prior = self._context_prior(context) if self.advection_prior == "matching" else None
        split_logits = (
            depth_to_space(
                self._head_alone(self.mask_head, jnp.concatenate(states, axis=-1)), p
            ).astype(jnp.float32)
            / self.layer_temperature
        )
        assignment = (  # [B, H, W, K]: each pixel's share in each layer
            refine_split(
                split_logits, frame, cell_prior, p, self.layer_split_steps, self.layer_split_weight
            )
            if self.layer_split_steps
            else jax.nn.softmax(split_logits, axis=-1)
        )
        total = jnp.zeros((batch, motions, 2), jnp.float32)  # each layer's move so far
        moved = move_layers(frame, assignment, total)

        def patches(layers):  # [B, K, H, W, C] -> [B, h, w, K, p·p·C]
            grid = space_to_depth(layers.reshape(-1, *layers.shape[2:]), p)
            return jnp.moveaxis(grid.reshape(batch, motions, *grid.shape[1:]), 1, 3)

        grid = patches(moved)
        prior = None
        if cell_prior is not None:  # "keep moving as before", per layer
            prior = pool_prior(cell_prior, grid.mean(axis=-1))
        logits = []
        for _ in range(num_future):
            x = grid.reshape(batch, height // p, width // p, -1)
            _step_layers(x, states, cells, weights, convs)
            head = self._head_alone(self.kernel_head, jnp.concatenate(states, axis=-1))
            content = grid.mean(axis=-1)  # [B, h, w, K]: how much of each layer each patch holds
            total = total + layer_moves(
                head, motions, content, prior, self.layer_fade, self.layer_gate
            )
            moved = move_layers(frame, assignment, total)
            grid = patches(moved)  # the forecaster reads the layers at full intensity
            if self.layer_fade:  # each layer dimmed by its gain this step
                gains = layer_gains(head, motions, content, self.layer_gate)
                predicted = unit_clip(jnp.einsum("bk,bkhwc->bhwc", gains, moved))
            else:
                predicted = unit_clip(moved.sum(axis=1))
            logits.append(space_to_depth(intensity_logits(predicted), p))
        return depth_to_space(jnp.stack(logits, axis=1), p), assignment


def _step_layers(x: Array, states: list[Array], cells, weights, convs) -> None:
    """One step of a ConvGRU stack on input ``x``: each layer reads the new state of the
    one below; ``states`` (one per layer) is updated in place."""
    for index, (cell, sw, conv) in enumerate(zip(cells, weights, convs)):
        x_pre = project_frames(x, sw, conv)
        x, _, _ = conv_gru_step(states[index], x_pre, sw, cell.reset_after, conv)
        states[index] = x
