"""Blur in video prediction: the sharpness metric and the gradient difference loss by
hand; the flow form of the predictor's advection (``advection_source='flow'``): the
bilinear warp against a loop over pixels, its gradient against finite differences, the
composition of per-frame offsets, and whole rollouts whose kernels are pinned by hand;
and the splatting form (``advection_source='splat'``): the forward warp against a loop,
as the warp's transpose, its gradients, and rollouts that move the context frame once
by the summed moves (pinned kernels) or keep the context's motion (the matching prior)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import moving_digits
from experiments.tasks import video_prediction
from experiments.tasks.video_prediction import (
    contrast_energy,
    frame_errors,
    gradient_difference,
    gradient_energy,
    summarize_frames,
)
from gru_jax.models import VideoPredictor
from gru_jax.models.advection import cell_offsets
from gru_jax.models.video_forecast import SPLAT_FEATURES
from gru_jax.models.video_ops import compose_offsets, kernel_offsets, splat, warp
from gru_jax.models.video_predictor import ADVECTION_EPS


def test_gradient_energy_and_difference_by_hand():
    frames = np.zeros((1, 2, 3, 4, 1), np.float32)
    frames[0, 0, :, 2:] = 1.0  # frame 1: a vertical edge of height 1, 3 px long
    frames[0, 1, :, 1:3] = 0.5  # frame 2: a stripe of 0.5 two columns wide: 2 edges
    np.testing.assert_allclose(gradient_energy(jnp.asarray(frames)), [[3.0, 6 * 0.25]])
    blurred = frames.copy()
    blurred[0, 0, :, 1:3, 0] = [0.25, 0.75]  # frame 1's edge as steps of 0.25, 0.5, 0.25
    energy = np.asarray(gradient_energy(jnp.asarray(blurred)))[0, 0]
    np.testing.assert_allclose(energy, 3 * (0.25**2 + 0.5**2 + 0.25**2))
    # GDL: mean over pixels of the |gradient| mismatch, vertical plus horizontal terms.
    # Frame 1: horizontal |gradients| per row (0, 1, 0) vs (0.25, 0.5, 0.25): sum 1.0 per
    # row over 3x3 horizontal pairs; vertical gradients are zero in both.
    gdl = np.asarray(gradient_difference(jnp.asarray(blurred[:, :1]), jnp.asarray(frames[:, :1])))
    np.testing.assert_allclose(gdl, [3 * 1.0 / 9])
    np.testing.assert_allclose(
        gradient_difference(jnp.asarray(frames), jnp.asarray(frames)), [0.0], atol=0
    )


def summary_of(prediction: np.ndarray, truth: np.ndarray) -> dict:
    """:func:`summarize_frames` of :func:`frame_errors` (``[batch, T, H, W, C]`` frames),
    with placeholder losses and baselines."""
    outputs = {
        key: np.asarray(value)
        for key, value in frame_errors(jnp.asarray(prediction), jnp.asarray(truth)).items()
    }
    ones = np.ones(prediction.shape[:2])
    outputs.update(
        loss=np.zeros(len(prediction)), baseline_zeros=ones, baseline_mean=ones,
        baseline_copy_last=ones,
    )  # fmt: skip
    return summarize_frames(outputs)


def test_relative_sharpness_sees_blur_and_not_contrast():
    """Contrast energy by hand; a digit-sized square dimmed to 30% keeps relative
    sharpness 1 (its plain sharpness falls to 0.09), the same square blurred by a 3x3 box
    falls below 0.6 on both."""
    frame = np.zeros((1, 1, 2, 2, 1), np.float32)
    frame[0, 0, 0, 0] = 1.0  # mean 1/4: deviations 3/4 once and -1/4 three times
    np.testing.assert_allclose(contrast_energy(jnp.asarray(frame)), [[0.75]])
    truth = np.zeros((1, 2, 12, 12, 1), np.float32)
    truth[:, :, 3:9, 3:9] = 1.0
    padded = np.pad(truth[0, 0, :, :, 0], 1)
    box = sum(padded[i : i + 12, j : j + 12] for i in range(3) for j in range(3)) / 9
    prediction = np.stack([0.3 * truth[0, 0], box[..., None]])[None]
    metrics = summary_of(prediction, truth)
    assert metrics["sharpness_frame_1"] == pytest.approx(0.09, rel=1e-5)
    assert metrics["relative_sharpness_frame_1"] == pytest.approx(1.0, rel=1e-5)
    assert metrics["sharpness_frame_2"] < 0.6 and metrics["relative_sharpness_frame_2"] < 0.6


def test_summary_reports_sharpness_and_ssim_per_frame():
    truth = np.zeros((2, 2, 8, 8, 1), np.float32)
    truth[:, :, 2:6, 2:6] = 1.0  # a white square in every frame
    prediction = truth.copy()
    prediction[:, 1] = 0.5 * truth[:, 1] + 0.125  # frame 2: half the contrast
    metrics = summary_of(prediction, truth)
    # Half the contrast is a quarter of the gradient energy; the contrast-blind
    # relative sharpness does not see it.
    assert metrics["sharpness_frame_1"] == pytest.approx(1.0)
    assert metrics["sharpness_frame_2"] == pytest.approx(0.25)
    assert metrics["sharpness"] == pytest.approx(0.625)
    assert metrics["relative_sharpness_frame_2"] == pytest.approx(1.0, rel=1e-5)
    assert metrics["relative_sharpness"] == pytest.approx(1.0, rel=1e-5)
    assert metrics["ssim_frame_1"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["ssim_frame_2"] < 0.99
    assert metrics["ssim"] == pytest.approx(
        (metrics["ssim_frame_1"] + metrics["ssim_frame_2"]) / 2, rel=1e-6
    )


def test_gradient_loss_weight_adds_the_gradient_difference():
    model = VideoPredictor(1, patch_size=4, hidden_channels=(4,), rngs=nnx.Rngs(0))
    config = moving_digits.get_config("smoke")
    config.train.gradient_loss_weight = 0.5
    config.train.absolute_loss_weight = 0.0  # the default's other added term: off here
    task = video_prediction.VideoPredictionTask(config)
    steps = config.dataset.context_frames + config.dataset.future_frames
    frames = np.random.default_rng(0).integers(0, 256, (2, steps, 16, 16, 1), dtype=np.uint8)
    loss, metrics = task.loss(model, {"frames": jnp.asarray(frames)})
    video = jnp.asarray(frames.astype(np.float32) / 255.0)
    context = video[:, : config.dataset.context_frames]
    future = video[:, config.dataset.context_frames :]
    predicted = jax.nn.sigmoid(model(context, future.shape[1]))
    expected = float(gradient_difference(predicted, future).mean())
    assert expected > 0
    np.testing.assert_allclose(float(metrics["gradient_loss"]), expected, rtol=1e-5)
    np.testing.assert_allclose(
        float(loss), float(metrics["future_loss"]) + 0.5 * expected, rtol=1e-5
    )


def bilinear_by_loop(frames: np.ndarray, vectors: np.ndarray, forward: bool) -> np.ndarray:
    """Bilinear warp, one pixel and one neighbour at a time, in float64: backward
    (``forward=False``, :func:`warp`: each output pixel reads the four pixels around its
    own position plus its offset) or forward (:func:`splat`: each input pixel adds itself
    to the four pixels around where its move lands)."""
    batch, height, width, _ = frames.shape
    out = np.zeros(frames.shape, np.float64)
    for b, y, x in np.ndindex(batch, height, width):
        sy, sx = y + vectors[b, y, x, 0], x + vectors[b, y, x, 1]
        y0, x0 = int(np.floor(sy)), int(np.floor(sx))
        for r, c in ((y0, x0), (y0 + 1, x0), (y0, x0 + 1), (y0 + 1, x0 + 1)):
            if 0 <= r < height and 0 <= c < width:
                weight = (1 - abs(sy - r)) * (1 - abs(sx - c))
                if forward:
                    out[b, r, c] += weight * frames[b, y, x]
                else:
                    out[b, y, x] += weight * frames[b, r, c]
    return out


def warp_by_loop(frames: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return bilinear_by_loop(frames, offsets, forward=False)


def splat_by_loop(frames: np.ndarray, moves: np.ndarray) -> np.ndarray:
    return bilinear_by_loop(frames, moves, forward=True)


def test_warp_matches_a_loop_and_shifts_by_whole_pixels():
    rng = np.random.default_rng(0)
    frames = rng.uniform(size=(2, 5, 7, 2)).astype(np.float32)
    offsets = rng.uniform(-2.5, 2.5, size=(2, 5, 7, 2)).astype(np.float32)  # some point out
    warped = np.asarray(warp(jnp.asarray(frames), jnp.asarray(offsets)))
    np.testing.assert_allclose(warped, warp_by_loop(frames, offsets), atol=1e-6)
    # A whole-pixel offset (+1 row, -2 columns) pulls content from there: a shift.
    whole = np.broadcast_to(np.float32([1.0, -2.0]), (2, 5, 7, 2))
    shifted = np.asarray(warp(jnp.asarray(frames), jnp.asarray(whole)))
    np.testing.assert_allclose(shifted[:, :-1, 2:], frames[:, 1:, :-2], atol=1e-6)
    np.testing.assert_array_equal(shifted[:, -1], 0.0)  # pulled from below the frame
    np.testing.assert_array_equal(shifted[:, :, :2], 0.0)


def test_warp_gradient_reaches_the_offsets_also_at_whole_pixels():
    rng = np.random.default_rng(1)
    frames = jnp.asarray(rng.uniform(size=(1, 6, 6, 1)), jnp.float32)
    probe = jnp.asarray(rng.standard_normal((1, 6, 6, 1)), jnp.float32)
    loss = lambda offsets: jnp.sum(warp(frames, offsets) * probe)
    fractional = jnp.asarray(rng.uniform(-1.4, 1.4, size=(1, 6, 6, 2)), jnp.float32)
    for offsets in (fractional, jnp.round(fractional)):  # at integers, one-sided slopes
        grad = np.asarray(jax.grad(loss)(offsets))
        assert np.abs(grad).max() > 0.1
        index, step = (0, 2, 3, 1), 1e-2
        up = loss(offsets.at[index].add(step))
        numeric = float(up - loss(offsets)) / step  # forward difference (the right slope)
        np.testing.assert_allclose(grad[index], numeric, rtol=1e-2, atol=1e-3)


def test_kernel_offsets_and_cell_offsets_by_hand():
    kernels = jnp.asarray([[0.0, 0.25, 0.75], [0.5, 0.5, 0.0]])  # taps -1, 0, +1
    np.testing.assert_allclose(kernel_offsets(kernels), [0.75, -0.5])
    # Cells of 2x3 pixels: 2x2 cells tile a 4x6 frame; each pixel takes its cell's offsets.
    rng = np.random.default_rng(2)
    cells = jax.nn.softmax(jnp.asarray(rng.standard_normal((1, 2, 2, 2, 5))), axis=-1)
    per_pixel = np.asarray(cell_offsets(cells, 4, 6))
    assert per_pixel.shape == (1, 4, 6, 2)
    means = np.asarray(kernel_offsets(cells))
    for y, x in np.ndindex(4, 6):
        np.testing.assert_allclose(per_pixel[0, y, x], means[0, y // 2, x // 3], atol=1e-6)


def test_composed_offsets_follow_the_content_back_to_the_source():
    rng = np.random.default_rng(3)
    source = jnp.asarray(rng.uniform(size=(1, 12, 12, 1)), jnp.float32)
    # Frame 1 pulls from (+1, 0) of the source; frame 2 pulls from (0, +0.5) of frame 1.
    first = jnp.broadcast_to(jnp.float32([1.0, 0.0]), (1, 12, 12, 2))
    second = jnp.broadcast_to(jnp.float32([0.0, 0.5]), (1, 12, 12, 2))
    total = compose_offsets(second, compose_offsets(first, jnp.zeros_like(first)))
    np.testing.assert_allclose(total[0, :11, :11], np.broadcast_to([1.0, 0.5], (11, 11, 2)))
    # Away from the borders, one warp by the composed offsets equals the two warps in turn.
    twice = warp(warp(source, first), second)
    np.testing.assert_allclose(warp(source, total)[0, :10, :10], twice[0, :10, :10], atol=1e-6)
    # Offsets that vary in space: frame 2's pixel p reads frame 1 at p + step(p), where
    # frame 1's own offset back to the source is sampled.
    step = jnp.asarray(rng.uniform(-1, 1, size=(1, 12, 12, 2)), jnp.float32)
    total = compose_offsets(step, first)
    expected = np.asarray(step) + warp_by_loop(np.asarray(first), np.asarray(step))
    np.testing.assert_allclose(total, expected, atol=1e-5)


def pinned_flow_model(tap: int, mask: float = 30.0) -> VideoPredictor:
    """A flow model (patches of 4, 9-tap kernels) whose kernel head ignores the states and
    puts nearly all weight of the vertical kernel on ``tap`` (offset ``tap - 4``) and of
    the horizontal kernel on offset 0; its mask logits are ``mask`` everywhere."""
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4,), output="advection", advection_source="flow",
        forecaster_input="prediction", rngs=nnx.Rngs(0),
    )  # fmt: skip
    bias = np.full(18, -40.0, np.float32)
    bias[tap], bias[9 + 4] = 40.0, 40.0
    model.kernel_head.kernel.value = jnp.zeros_like(model.kernel_head.kernel.value)
    model.kernel_head.bias.value = jnp.asarray(bias)
    model.mask_head.kernel.value = jnp.zeros_like(model.mask_head.kernel.value)
    model.mask_head.bias.value = jnp.full_like(model.mask_head.bias.value, mask)
    return model


def test_flow_rollout_moves_the_context_frame_by_the_summed_displacements(monkeypatch):
    import gru_jax.models.advection as advection_module

    warped_sources = []

    def recording_warp(frames, offsets):
        warped_sources.append(frames)
        return warp(frames, offsets)

    monkeypatch.setattr(advection_module, "warp", recording_warp)
    model = pinned_flow_model(tap=5)  # every frame pulls content from one row below
    rng = np.random.default_rng(4)
    context = jnp.asarray(rng.uniform(size=(2, 3, 16, 16, 1)), jnp.float32)
    predicted = np.asarray(jax.nn.sigmoid(model(context, 4)))
    last = np.asarray(context[:, -1])
    for k in range(4):  # frame k+1 is the context frame moved up by k+1 rows, once
        np.testing.assert_allclose(warped_sources[k], last)
        expected = ADVECTION_EPS + (1 - 2 * ADVECTION_EPS) * last[:, k + 1 :]
        np.testing.assert_allclose(predicted[:, k, : 15 - k], expected, atol=1e-5)
        np.testing.assert_allclose(predicted[:, k, 16 - (k + 1) :], ADVECTION_EPS, atol=1e-5)


def test_flow_with_a_shut_mask_is_the_drawn_frame_and_options_are_checked():
    model = pinned_flow_model(tap=5, mask=-30.0)
    context = jnp.asarray(np.random.default_rng(5).uniform(size=(1, 3, 16, 16, 1)), jnp.float32)
    predicted = jax.nn.sigmoid(model(context, 1))[:, 0]
    states, _ = model.encode(context)
    from gru_jax.models.video_ops import depth_to_space, space_to_depth

    fresh = model.forecaster[0](states[0], space_to_depth(context[:, -1], 4))[0]
    drawn = jax.nn.sigmoid(depth_to_space(model.head(fresh), 4))
    np.testing.assert_allclose(
        predicted, ADVECTION_EPS + (1 - 2 * ADVECTION_EPS) * drawn, atol=1e-5
    )
    for source in ("flow", "splat"):
        with pytest.raises(ValueError, match=f"'{source}' needs output='advection'"):
            VideoPredictor(1, advection_source=source, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="advection_motions=0.*got 'advection', 2"):
        VideoPredictor(
            1, output="advection", advection_source="flow", advection_motions=2, rngs=nnx.Rngs(0)
        )
    with pytest.raises(ValueError, match="'splat' needs.*forecaster_motion=False, got .* True"):
        VideoPredictor(
            1, output="advection", advection_source="splat", forecaster_motion=True,
            motion_input="matching", rngs=nnx.Rngs(0),
        )  # fmt: skip
    for predictor in (model, pinned_splat_model(tap=4)):
        with pytest.raises(ValueError, match="teacher_future needs"):
            predictor(context, 2, teacher_future=jnp.zeros((1, 2, 16, 16, 1)))


def test_im2col_convolutions_give_the_same_predictor():
    """``convgru_gradient='im2col'`` (patch GEMMs, the three gates fused) and the fused
    heads are the same model as the per-gate convolutions: outputs and gradients."""
    rng = np.random.default_rng(8)
    context = jnp.asarray(rng.uniform(size=(2, 2, 8, 8, 1)), jnp.float32)
    future = jnp.asarray(rng.uniform(size=(2, 2, 8, 8, 1)), jnp.float32)
    results = []
    for mode in ("stepwise", "im2col"):
        model = VideoPredictor(
            1, patch_size=2, hidden_channels=(3, 4), input_kernel_size=1, head_kernel_size=3,
            output="advection", advection_cell_size=4, forecaster_input="prediction",
            motion_input="matching", matching_radius=1, advection_kernel_size=3,
            motion_channels=2,
            convgru_gradient=mode, rngs=nnx.Rngs(0),
        )  # fmt: skip
        assert all(c.gradient == mode for c in model.forecaster)
        assert all(layer.gradient == mode for layer in model.encoder)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(params, graphdef=graphdef, rest=rest):
            logits = nnx.merge(graphdef, params, rest)(context, 2)
            return jnp.mean((jax.nn.sigmoid(logits) - future) ** 2), logits

        (value, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        results.append((logits, grads))
    (logits_a, grads_a), (logits_b, grads_b) = results
    np.testing.assert_allclose(logits_b, logits_a, rtol=1e-4, atol=1e-4)
    for got, want in zip(jax.tree.leaves(grads_b), jax.tree.leaves(grads_a), strict=True):
        scale = max(float(jnp.abs(want).max()), 1e-8)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale)
    with pytest.raises(ValueError, match="gradient must be one of"):
        VideoPredictor(1, convgru_gradient="fast", rngs=nnx.Rngs(0))


def test_splat_matches_a_loop_is_the_transpose_of_warp_and_shifts_by_whole_pixels():
    rng = np.random.default_rng(0)
    frames = rng.uniform(size=(2, 5, 7, 2)).astype(np.float32)
    moves = rng.uniform(-2.5, 2.5, size=(2, 5, 7, 2)).astype(np.float32)  # some land outside
    splatted = np.asarray(splat(jnp.asarray(frames), jnp.asarray(moves)))
    np.testing.assert_allclose(splatted, splat_by_loop(frames, moves), atol=1e-5)
    probe = rng.standard_normal((2, 5, 7, 2)).astype(np.float32)
    np.testing.assert_allclose(
        np.sum(splatted * probe),
        np.sum(frames * np.asarray(warp(jnp.asarray(probe), jnp.asarray(moves)))),
        rtol=1e-5,
    )
    # A whole-pixel move (+1 row, -2 columns) pushes every pixel there: a shift.
    whole = np.broadcast_to(np.float32([1.0, -2.0]), (2, 5, 7, 2))
    shifted = np.asarray(splat(jnp.asarray(frames), jnp.asarray(whole)))
    np.testing.assert_allclose(shifted[:, 1:, :-2], frames[:, :-1, 2:], atol=1e-6)
    np.testing.assert_array_equal(shifted[:, 0], 0.0)  # nothing lands in the top row
    np.testing.assert_array_equal(shifted[:, :, -2:], 0.0)
    # Two pixels landing on one sum (a half-pixel move spreads one over two).
    pair = np.zeros((1, 1, 4, 1), np.float32)
    pair[0, 0, :2, 0] = [0.25, 0.5]
    to_one = np.zeros((1, 1, 4, 2), np.float32)
    to_one[0, 0, 0, 1] = 1.0  # pixel 0 onto pixel 1
    to_one[0, 0, 1, 1] = 0.5  # pixel 1 halfway to pixel 2
    np.testing.assert_allclose(
        np.asarray(splat(jnp.asarray(pair), jnp.asarray(to_one)))[0, 0, :, 0], [0, 0.5, 0.25, 0]
    )


def test_splat_gradient_reaches_the_moves_and_the_frame():
    rng = np.random.default_rng(1)
    frames = jnp.asarray(rng.uniform(size=(1, 6, 6, 1)), jnp.float32)
    probe = jnp.asarray(rng.standard_normal((1, 6, 6, 1)), jnp.float32)
    loss = lambda moves, frames: jnp.sum(splat(frames, moves) * probe)
    moves = jnp.asarray(rng.uniform(-1.4, 1.4, size=(1, 6, 6, 2)), jnp.float32)
    grad_moves, grad_frames = jax.grad(loss, argnums=(0, 1))(moves, frames)
    assert np.abs(grad_moves).max() > 0.1
    for index in ((0, 2, 3, 1), (0, 4, 1, 0)):
        step = 1e-2
        numeric = float(loss(moves.at[index].add(step), frames) - loss(moves, frames)) / step
        np.testing.assert_allclose(grad_moves[index], numeric, rtol=1e-2, atol=1e-3)
    # Linear in the frame: its gradient is the probe warped back (the transpose).
    np.testing.assert_allclose(grad_frames, warp(probe, moves), atol=1e-6)


def pinned_splat_model(tap: int, horizontal_tap: int = 4, **options) -> VideoPredictor:
    """A splat model (patches of 4, 9-tap kernels) whose kernel head ignores the states and
    puts nearly all weight of the vertical kernel on ``tap`` (offset ``tap - 4``, so a
    move of ``4 - tap`` rows per frame) and of the horizontal one on ``horizontal_tap``."""
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4, 3), output="advection", advection_source="splat",
        rngs=nnx.Rngs(0), **options,
    )  # fmt: skip
    bias = np.full(18, -40.0, np.float32)
    bias[tap], bias[9 + horizontal_tap] = 40.0, 40.0
    model.kernel_head.kernel.value = jnp.zeros_like(model.kernel_head.kernel.value)
    model.kernel_head.bias.value = jnp.asarray(bias)
    return model


def test_splat_rollout_moves_the_context_frame_once_by_the_summed_moves(monkeypatch):
    import gru_jax.models.video_forecast as forecast_module

    splatted, inputs = [], []
    original_project = forecast_module.project_frames

    def recording_splat(frames, moves):
        splatted.append((frames, moves))
        return splat(frames, moves)

    def recording_project(x, *args):
        inputs.append(x)
        return original_project(x, *args)

    monkeypatch.setattr(forecast_module, "splat", recording_splat)
    monkeypatch.setattr(forecast_module, "project_frames", recording_project)
    # Pulls from one row above and one column to the right: content moves down and left.
    model = pinned_splat_model(tap=3, horizontal_tap=5)
    assert model.forecaster[0].in_channels == SPLAT_FEATURES
    rng = np.random.default_rng(4)
    context = jnp.asarray(rng.uniform(size=(2, 3, 16, 16, 1)), jnp.float32)
    predicted = np.asarray(jax.nn.sigmoid(model(context, 4)))
    last = np.asarray(context[:, -1])
    assert len(splatted) == 4 and len(inputs) == 8  # project_frames: once per layer and step
    for k in range(4):  # frame k+1: the context frame moved by (k+1, -(k+1)), in one go
        frames, moves = splatted[k]
        np.testing.assert_allclose(frames, last)
        np.testing.assert_allclose(
            moves, np.broadcast_to([k + 1, -k - 1.0], moves.shape), atol=1e-5
        )
        expected = ADVECTION_EPS + (1 - 2 * ADVECTION_EPS) * last[:, : 15 - k, k + 1 :]
        np.testing.assert_allclose(predicted[:, k, k + 1 :, : 15 - k], expected, atol=1e-5)
        np.testing.assert_allclose(predicted[:, k, : k + 1], ADVECTION_EPS, atol=1e-5)
        np.testing.assert_allclose(predicted[:, k, :, 15 - k :], ADVECTION_EPS, atol=1e-5)
    # The first layer reads (moved rows, moved columns, row, column) per patch, over 16.
    first_layer = inputs[::2]
    centres = np.arange(4) * 4 + 1.5
    for k, x in enumerate(first_layer):
        x = np.asarray(x)
        assert x.shape == (2, 4, 4, SPLAT_FEATURES)
        np.testing.assert_allclose(x[..., 0], k / 16, atol=1e-6)
        np.testing.assert_allclose(x[..., 1], -k / 16, atol=1e-6)
        np.testing.assert_allclose(x[0, :, 0, 2], (centres + k) / 16, atol=1e-6)
        np.testing.assert_allclose(x[0, 0, :, 3], (centres - k) / 16, atol=1e-6)


def test_splat_moves_are_interpolated_between_the_cell_centres(monkeypatch):
    """Cells of 8 px (2x2 of them in a 16x16 frame), their moves set by hand: each pixel
    moves by the linear interpolation of the cells' moves between their centres (3.5 and
    11.5 px), held at the outer centres' values beyond them."""
    import gru_jax.models.video_forecast as forecast_module

    recorded = []
    cell_moves = np.zeros((1, 2, 2, 2), np.float32)
    cell_moves[0, :, 1, 0] = 4.0  # the right-hand cells move 4 rows down, the left ones not
    cell_moves[0, 1, :, 1] = -2.0  # the lower cells move 2 columns left, the upper ones not
    monkeypatch.setattr(forecast_module, "kernel_offsets", lambda kernels: -jnp.asarray(cell_moves))
    monkeypatch.setattr(
        forecast_module, "splat", lambda frames, moves: recorded.append(moves) or frames
    )
    model = pinned_splat_model(tap=4, advection_cell_size=8)
    model(jnp.zeros((1, 2, 16, 16, 1)), 2)
    assert len(recorded) == 2
    ramp = np.clip((np.arange(16) - 3.5) / 8, 0, 1)  # 0 up to the first centre, 1 from the last
    for k, moves in enumerate(recorded):
        moves = np.asarray(moves)[0]
        np.testing.assert_allclose(moves[..., 0], (k + 1) * 4 * np.tile(ramp, (16, 1)), atol=1e-5)
        np.testing.assert_allclose(
            moves[..., 1], (k + 1) * -2 * np.tile(ramp[:, None], (1, 16)), atol=1e-5
        )


def test_splat_with_the_matching_prior_keeps_the_context_motion():
    """Kernel head zeroed: the kernels are the block-matching prior of the last two
    context frames at every step, so content that moved one row down per frame keeps
    doing so (its centre of mass moves a row per predicted frame)."""
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4,), output="advection", advection_source="splat",
        advection_prior="matching", matching_radius=2, advection_kernel_size=5,
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    model.kernel_head.kernel.value = jnp.zeros_like(model.kernel_head.kernel.value)
    model.kernel_head.bias.value = jnp.zeros_like(model.kernel_head.bias.value)
    square = np.zeros((3, 24, 24, 1), np.float32)
    for t in range(3):  # a 4x4 square moving down one row per frame
        square[t, 4 + t : 8 + t, 10:14] = 1.0
    predicted = np.asarray(jax.nn.sigmoid(model(jnp.asarray(square[None]), 3)))[0, ..., 0]
    rows = np.arange(24)[:, None]
    for k in range(3):
        centre = (predicted[k] * rows).sum() / predicted[k].sum()
        assert centre == pytest.approx(7.5 + k + 1, abs=0.15)
    # One context frame: the prior matches it against itself (no motion), and the
    # prediction is that frame, unmoved.
    still = np.asarray(jax.nn.sigmoid(model(jnp.asarray(square[None, -1:]), 2)))[0, ..., 0]
    for k in range(2):
        np.testing.assert_allclose(
            still[k], ADVECTION_EPS + (1 - 2 * ADVECTION_EPS) * square[-1, ..., 0], atol=1e-3
        )
