"""Video prediction: the model's shapes and layout, the metrics against hand-computed
values, and both configs end to end (smoke variants; TFDS moving_mnist through a mocked
loader, and its one-line error without tensorflow)."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from configs import moving_digits, moving_digits_cells, moving_mnist_tfds
from experiments.tasks import video_prediction
from experiments.tasks.video_prediction import (
    baseline_squared_errors,
    frame_errors,
    pick_examples,
    summarize_frames,
)
from experiments.trainer import train_and_evaluate
from gru_jax.models import VideoPredictor
from gru_jax.models.advection import motion_kernels
from gru_jax.models.video_ops import (
    advect,
    depth_to_space,
    intensity_logits,
    matching_costs,
    matching_prior,
    space_to_depth,
)
from gru_jax.models.video_predictor import ADVECTION_EPS

HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None
REQUIRED = {
    "mse", "mae", "ssim", "loss", "mse_reduction", "sharpness",
    "baseline_zeros_mse", "baseline_mean_mse", "baseline_copy_last_mse",
}  # fmt: skip


def test_space_to_depth_layout_and_inverse():
    frames = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
    grid = space_to_depth(frames, 2)
    assert grid.shape == (2, 2, 2, 4)
    # Cell (0, 1) of image 0 holds the 2x2 patch at rows 0-1, columns 2-3, row-major.
    np.testing.assert_array_equal(grid[0, 0, 1], [2, 3, 6, 7])
    np.testing.assert_array_equal(depth_to_space(grid, 2), frames)


@pytest.mark.parametrize("forecaster_input", ["zeros", "prediction"])
def test_video_predictor_shapes(forecaster_input):
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4, 6), forecaster_input=forecaster_input,
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    logits = model(jnp.zeros((2, 3, 16, 12, 1)), 5)
    assert logits.shape == (2, 5, 16, 12, 1) and logits.dtype == jnp.float32
    assert bool(jnp.isfinite(logits).all())


@pytest.mark.parametrize("input_kernel_size", [None, 1])
def test_input_kernel_size_sets_the_input_convolutions_window(input_kernel_size):
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4, 6), input_kernel_size=input_kernel_size,
        forecaster_input="prediction", rngs=nnx.Rngs(0),
    )  # fmt: skip
    window = (3, 3) if input_kernel_size is None else (1, 1)
    for cell in [layer.cell for layer in model.encoder] + list(model.forecaster):
        assert (cell.kernel_size, cell.recurrent_kernel_size) == (window, (3, 3))
    # The encoder's first output (zero state) reads only its own patch with a 1x1 input
    # convolution, its 3x3 neighbourhood of patches otherwise.
    context = jnp.asarray(np.random.default_rng(3).uniform(size=(1, 2, 16, 16, 1)), jnp.float32)
    nudged = context.at[0, 0, 0, 0, 0].add(1.0)  # a pixel of patch (0, 0)
    first = [model.encode(frames)[1][0][0, 0] for frames in (context, nudged)]
    changed = np.abs(np.asarray(first[1] - first[0])).max(axis=-1) > 0  # [4, 4] patches
    expected = np.zeros((4, 4), bool)
    expected[: (window[0] + 1) // 2, : (window[1] + 1) // 2] = True
    np.testing.assert_array_equal(changed, expected)
    assert model(context, 2).shape == (1, 2, 16, 16, 1)


def test_context_logits_are_next_frame_guesses_and_shared_forecaster_continues_them():
    """The encoder's guess after frame t is frame t+1's; with ``forecaster='shared'`` the
    first predicted frame is exactly the guess the encoder would make one step later, and
    a longer context only extends (never changes) the earlier guesses."""
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4, 4), forecaster="shared", rngs=nnx.Rngs(0)
    )
    assert len(model.forecaster) == 0  # no second set of weights
    frames = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 8, 16, 16, 1)), jnp.float32)
    future, guesses = model(frames[:, :5], 3, return_context_logits=True)
    assert future.shape == (2, 3, 16, 16, 1) and guesses.shape == (2, 4, 16, 16, 1)
    longer_future, longer_guesses = model(frames[:, :6], 1, return_context_logits=True)
    np.testing.assert_allclose(longer_guesses[:, :4], guesses, atol=1e-5)
    np.testing.assert_allclose(longer_guesses[:, 4], future[:, 0], atol=1e-5)
    # Separate weights: the forecaster is its own stack and its first frame differs.
    separate = VideoPredictor(1, patch_size=4, hidden_channels=(4, 4), rngs=nnx.Rngs(0))
    assert len(separate.forecaster) == 2
    sep_future, sep_guesses = separate(frames[:, :5], 3, return_context_logits=True)
    assert sep_guesses.shape == guesses.shape
    assert float(jnp.abs(sep_future[:, 0] - separate(frames[:, :6], 1, True)[1][:, 4]).max()) > 0


def test_nonlinear_head_is_conv_gelu_conv_on_the_concatenated_states():
    model = VideoPredictor(
        1, patch_size=2, hidden_channels=(3, 5), head_kernel_size=3, head_hidden_channels=7,
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    assert model.head_hidden.out_features == 7 and model.head.in_features == 7
    states = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 6, 6, 8)), jnp.float32)
    flat = states.reshape(8, 6, 6, 8)
    expected = model.head(jax.nn.gelu(model.head_hidden(flat))).reshape(2, 4, 6, 6, 4)
    np.testing.assert_allclose(model._logits(states), expected, rtol=1e-6, atol=1e-6)
    assert model(jnp.zeros((2, 3, 12, 12, 1)), 2).shape == (2, 2, 12, 12, 1)
    assert VideoPredictor(1, hidden_channels=(3,), rngs=nnx.Rngs(0)).head_hidden is None
    with pytest.raises(ValueError, match="head_hidden_channels must be >= 0, got -1"):
        VideoPredictor(1, head_hidden_channels=-1, rngs=nnx.Rngs(0))


def test_advect_matches_a_loop_over_pixels_and_offsets():
    rng = np.random.default_rng(0)
    frames = rng.uniform(size=(2, 4, 6, 2)).astype(np.float32)
    ky, kx = rng.uniform(size=(2, 2, 2, 2, 3)).astype(np.float32)  # 2x2 cells of 2x3 px
    ky, kx = ky / ky.sum(-1, keepdims=True), kx / kx.sum(-1, keepdims=True)
    vertical = np.zeros_like(frames)
    for b, y, x, d in np.ndindex(2, 4, 6, 3):
        if 0 <= y + d - 1 < 4:
            vertical[b, y, x] += ky[b, y // 2, x // 3, d] * frames[b, y + d - 1, x]
    expected = np.zeros_like(frames)
    for b, y, x, d in np.ndindex(2, 4, 6, 3):
        if 0 <= x + d - 1 < 6:
            expected[b, y, x] += kx[b, y // 2, x // 3, d] * vertical[b, y, x + d - 1]
    moved = advect(jnp.asarray(frames), jnp.asarray(ky), jnp.asarray(kx))
    np.testing.assert_allclose(moved, expected, atol=1e-6)
    # One-hot kernels at offsets (dy, dx) = (-1, +1): content moves one pixel down-left.
    up, right = np.zeros((2, 2, 2, 3), np.float32), np.zeros((2, 2, 2, 3), np.float32)
    up[..., 0], right[..., 2] = 1.0, 1.0
    moved = np.asarray(advect(jnp.asarray(frames), jnp.asarray(up), jnp.asarray(right)))
    np.testing.assert_allclose(moved[:, 1:, :-1], frames[:, :-1, 1:], atol=1e-6)
    np.testing.assert_allclose(moved[:, 0], 0.0)
    np.testing.assert_allclose(moved[:, :, -1], 0.0)
    with pytest.raises(ValueError, match="do not tile frames"):
        advect(jnp.asarray(frames), jnp.zeros((2, 3, 2, 3)), jnp.zeros((2, 3, 2, 3)))


def first_frame_by_hand(model, context, x, prior=(0.0, 0.0)):
    """The first advected frame rebuilt from the model's pieces: the forecaster cells from
    the encoder's final states reading ``x``, the kernels (plus ``prior``'s logits), the
    mask and the drawn frame, mixed as the docs say."""
    states, _ = model.encode(context)
    fresh = []
    for cell, state in zip(model.forecaster, states):
        x = cell(state, x)[0]
        fresh.append(x)
    stacked = jnp.concatenate(fresh, axis=-1)
    logits = np.asarray(model.kernel_head(stacked))
    cps = model.cells_per_side  # kernel pairs per patch side, row-major in the channels
    if cps > 1:  # cell (i, j) reads patch (i // cps, j // cps)'s sub-cell (i % cps, j % cps)
        batch, rows, cols, width = logits.shape
        pair = width // cps**2
        cells = np.zeros((batch, rows * cps, cols * cps, pair), np.float32)
        for i in range(rows * cps):
            for j in range(cols * cps):
                sub = (i % cps) * cps + j % cps
                cells[:, i, j] = logits[:, i // cps, j // cps, sub * pair : (sub + 1) * pair]
        logits = cells
    m = model.patches_per_cell  # a cell of m x m patches: the mean of their logits
    if m > 1:
        batch, rows, cols, width = logits.shape
        pooled = np.zeros((batch, rows // m, cols // m, width), np.float32)
        for i in range(rows // m):
            for j in range(cols // m):
                pooled[:, i, j] = logits[:, m * i : m * i + m, m * j : m * j + m].mean(axis=(1, 2))
        logits = pooled
    taps = logits.shape[-1] // 2  # vertical then horizontal logits per cell
    t = model.advection_temperature  # the kernels' softmax temperature (1 unless set)
    ky = jax.nn.softmax((logits[..., :taps] + prior[0]) / t, -1)
    kx = jax.nn.softmax((logits[..., taps:] + prior[1]) / t, -1)
    p = model.patch_size
    mask = jax.nn.sigmoid(depth_to_space(model.mask_head(stacked), p))
    drawn = jax.nn.sigmoid(depth_to_space(model.head(stacked), p))
    return mask * advect(context[:, -1], ky, kx) + (1 - mask) * drawn


def assert_first_frame_matches_by_hand(model, seed):
    """The model's first predicted frame for random 16×16 context frames (patches of 4, the
    last frame fed to the forecaster) equals :func:`first_frame_by_hand`; returns them."""
    context = jnp.asarray(np.random.default_rng(seed).uniform(size=(2, 3, 16, 16, 1)), jnp.float32)
    predicted = jax.nn.sigmoid(model(context, 2))
    first = first_frame_by_hand(model, context, space_to_depth(context[:, -1], 4))
    np.testing.assert_allclose(
        predicted[:, 0], ADVECTION_EPS + (1 - 2 * ADVECTION_EPS) * first, atol=2e-5
    )
    return context


def test_advection_output_moves_the_last_frame_and_mixes_with_the_drawn_frame():
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4, 4), output="advection",
        forecaster_input="prediction", rngs=nnx.Rngs(0),
    )  # fmt: skip
    context = jnp.asarray(np.random.default_rng(2).uniform(size=(2, 3, 16, 16, 1)), jnp.float32)
    logits = model(context, 3)
    assert logits.shape == (2, 3, 16, 16, 1)
    predicted = jax.nn.sigmoid(logits)
    assert float(predicted.min()) >= ADVECTION_EPS * 0.99
    assert float(predicted.max()) <= 1 - ADVECTION_EPS * 0.99
    # The first predicted frame, rebuilt from the same pieces by hand.
    first = first_frame_by_hand(model, context, space_to_depth(context[:, -1], 4))
    np.testing.assert_allclose(
        predicted[:, 0], ADVECTION_EPS + (1 - 2 * ADVECTION_EPS) * first, atol=2e-5
    )
    with pytest.raises(ValueError, match="needs forecaster='separate'"):
        VideoPredictor(1, output="advection", forecaster="shared", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="advection_kernel_size must be a positive odd int"):
        VideoPredictor(1, output="advection", advection_kernel_size=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown output 'flow'"):
        VideoPredictor(1, output="flow", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="not available with output='advection'"):
        model(context, 2, return_context_logits=True)


@pytest.mark.parametrize("cell", [4, 2, 1])
def test_advection_cells_smaller_than_a_patch_each_get_their_kernels(cell):
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4,), output="advection", advection_cell_size=cell,
        forecaster_input="prediction", rngs=nnx.Rngs(0),
    )  # fmt: skip
    assert model.kernel_head.out_features == 2 * 9 * (4 // cell) ** 2
    assert_first_frame_matches_by_hand(model, seed=5)
    with pytest.raises(ValueError, match="must divide or be a multiple of patch_size 4, got 6"):
        VideoPredictor(1, patch_size=4, output="advection", advection_cell_size=6, rngs=nnx.Rngs(0))


def test_advection_cells_of_several_patches_share_their_mean_logits():
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4,), output="advection", advection_cell_size=8,
        forecaster_input="prediction", rngs=nnx.Rngs(0),
    )  # fmt: skip
    # By hand: the per-patch logits averaged over each 2x2 block of patches.
    context = assert_first_frame_matches_by_hand(model, seed=7)
    with pytest.raises(ValueError, match="not a multiple of advection_cell_size=8"):
        model(context[:, :, :12, :12], 2)


def test_advection_temperature_divides_the_kernel_logits_and_is_checked():
    def build(**options):
        return VideoPredictor(
            1, patch_size=4, hidden_channels=(4,), output="advection",
            forecaster_input="prediction", rngs=nnx.Rngs(0), **options,
        )  # fmt: skip

    plain, sharp = build(), build(advection_temperature=0.25)
    context = assert_first_frame_matches_by_hand(sharp, seed=3)  # by hand: softmax(logits/T)
    plain_frame, sharp_frame = (np.asarray(jax.nn.sigmoid(m(context, 2))) for m in (plain, sharp))
    assert np.abs(plain_frame - sharp_frame).max() > 1e-3  # the same weights, other kernels
    np.testing.assert_array_equal(np.asarray(build(advection_temperature=1)(context, 2)),
                                  np.asarray(plain(context, 2)))  # fmt: skip
    # Shared motions: the taps' softmax is tempered, the attention over the grid is not.
    logits = jnp.asarray(np.random.default_rng(4).normal(size=(2, 3, 4, 2 * (2 * 5 + 1))))
    kernels, attention = motion_kernels(logits, 2, temperature=0.5)
    reference, reference_attention = motion_kernels(logits, 2)
    np.testing.assert_allclose(attention, reference_attention)
    np.testing.assert_allclose(kernels, jax.nn.softmax(2 * jnp.log(reference), -1), atol=1e-6)
    for bad in (0, -1.0, float("inf"), float("nan"), "0.5"):
        with pytest.raises(ValueError, match="advection_temperature must be a finite number > 0"):
            build(advection_temperature=bad)
    with pytest.raises(ValueError, match="advection_temperature=0.5 needs output='advection'"):
        VideoPredictor(1, advection_temperature=0.5, rngs=nnx.Rngs(0))
    for source in ("flow", "splat"):  # kernels read as mean offsets: T would move them
        with pytest.raises(
            ValueError, match=f"'previous' or 'context', got 'advection', '{source}'"
        ):
            build(advection_temperature=0.5, advection_source=source)


def test_shared_motions_pool_the_patches_kernels_and_pick_one_source_per_pixel():
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4,), output="advection", advection_motions=3,
        advection_kernel_size=5, forecaster_input="prediction", rngs=nnx.Rngs(0),
    )  # fmt: skip
    assert model.kernel_head.out_features == 3 * (2 * 5 + 1)
    assert model.mask_head.out_features == 4 * 4 * (3 + 1)
    rng = np.random.default_rng(11)
    context = jnp.asarray(rng.uniform(size=(2, 3, 12, 16, 1)), jnp.float32)  # 3x4 patches
    predicted = np.asarray(jax.nn.sigmoid(model(context, 2)))
    # By hand, in NumPy: the forecaster's first states, then per motion the attention-
    # weighted mean of the patches' logits, softmax kernels, and a per-pixel softmax over
    # the three moved frames and the drawn one.
    states, _ = model.encode(context)
    x = space_to_depth(context[:, -1], 4)
    stacked = model.forecaster[0](states[0], x)[0]
    head = np.asarray(model.kernel_head(stacked), np.float64).reshape(2, 12, 3, 11)
    weights = np.exp(head[..., 10] - head[..., 10].max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)  # [batch, patch, motion]
    pooled = (weights[..., None] * head[..., :10]).sum(axis=1)  # [batch, motion, 10]
    kernels = np.exp(pooled.reshape(2, 3, 2, 5))
    kernels /= kernels.sum(axis=-1, keepdims=True)
    mask = np.asarray(depth_to_space(model.mask_head(stacked), 4), np.float64)  # [2,12,16,4]
    mask = np.exp(mask - mask.max(axis=-1, keepdims=True))
    mask /= mask.sum(axis=-1, keepdims=True)
    frame = np.asarray(context[:, -1, :, :, 0], np.float64)
    expected = (
        mask[..., 3] * np.asarray(jax.nn.sigmoid(depth_to_space(model.head(stacked), 4)))[..., 0]
    )
    for b, m in np.ndindex(2, 3):
        moved = np.zeros((12, 16))
        for y, x, dy, dx in np.ndindex(12, 16, 5, 5):
            sy, sx = y + dy - 2, x + dx - 2
            if 0 <= sy < 12 and 0 <= sx < 16:
                moved[y, x] += kernels[b, m, 0, dy] * kernels[b, m, 1, dx] * frame[b, sy, sx]
        expected[b] += mask[b, ..., m] * moved
    np.testing.assert_allclose(
        predicted[:, 0, :, :, 0], ADVECTION_EPS + (1 - 2 * ADVECTION_EPS) * expected, atol=2e-5
    )
    with pytest.raises(ValueError, match="advection_motions must be >= 0"):
        VideoPredictor(1, output="advection", advection_motions=-1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="needs output='advection' and advection_prior='none'"):
        VideoPredictor(1, output="pixels", advection_motions=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"'none' \(or advection_source='splat'\), got 2, 'adv"):
        VideoPredictor(
            1, output="advection", advection_motions=2, advection_prior="matching",
            rngs=nnx.Rngs(0),
        )  # fmt: skip


def test_one_step_logits_move_the_true_previous_frame_with_the_rollouts_kernels():
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4,), output="advection",
        forecaster_input="prediction", rngs=nnx.Rngs(0),
    )  # fmt: skip
    rng = np.random.default_rng(6)
    context = jnp.asarray(rng.uniform(size=(2, 3, 8, 8, 1)), jnp.float32)
    truth = jnp.asarray(rng.uniform(size=(2, 4, 8, 8, 1)), jnp.float32)
    plain = model(context, 4)
    future, one_step = model(context, 4, teacher_future=truth)
    assert one_step.shape == (2, 3, 8, 8, 1)
    np.testing.assert_allclose(future, plain, rtol=1e-6)  # the rollout is unchanged
    # Teacher = the model's own predictions: one-step frame t is the rollout's frame t.
    own = (jax.nn.sigmoid(plain) - ADVECTION_EPS) / (1 - 2 * ADVECTION_EPS)
    _, replayed = model(context, 4, teacher_future=own)
    np.testing.assert_allclose(replayed, plain[:, 1:], atol=2e-4)
    # One-step frame t reads the true frame t-1 and nothing later.
    changed = truth.at[:, 2].set(0.0)
    _, moved = model(context, 4, teacher_future=changed)
    np.testing.assert_allclose(moved[:, :2], one_step[:, :2], rtol=1e-6)
    assert float(jnp.abs(moved[:, 2] - one_step[:, 2]).max()) > 1e-3
    _, none_yet = model(context, 1, teacher_future=truth[:, :1])  # one frame: no t >= 1
    assert none_yet.shape == (2, 0, 8, 8, 1)
    with pytest.raises(ValueError, match=r"teacher_future has shape \(2, 3, 8, 8, 1\)"):
        model(context, 4, teacher_future=truth[:, :3])
    pixels = VideoPredictor(1, patch_size=4, hidden_channels=(4,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="teacher_future needs output='advection'"):
        pixels(context, 4, teacher_future=truth)


def test_one_step_loss_weight_adds_the_teacher_forced_loss():
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4,), output="advection",
        forecaster_input="prediction", rngs=nnx.Rngs(0),
    )  # fmt: skip
    loss, metrics, context, future = task_loss_on_random_videos(
        model, seed=1, one_step_loss_weight=0.5
    )
    logits, one_step = model(context, future.shape[1], teacher_future=future)
    expected_future, expected_one_step = bce(logits, future), bce(one_step, future[:, 1:])
    assert expected_one_step > 0
    np.testing.assert_allclose(float(metrics["future_loss"]), expected_future, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["one_step_loss"]), expected_one_step, rtol=1e-5)
    np.testing.assert_allclose(float(loss), expected_future + 0.5 * expected_one_step, rtol=1e-5)


def squeezed_logits(frames, eps=ADVECTION_EPS):
    p = eps + (1 - 2 * eps) * frames
    return jnp.log(p) - jnp.log1p(-p)


def test_intensity_logits_stay_finite_past_the_unit_range_with_identity_gradient():
    # TF32 / bfloat16 products leave [0, 1] by ~1e-3: the plain log-odds is then NaN.
    frames = jnp.array([-2e-3, 0.0, 0.25, 1.0, 1 + 2e-3], jnp.float32)
    assert np.isnan(np.asarray(squeezed_logits(frames))[[0, 4]]).all()
    logits = np.asarray(intensity_logits(frames))
    assert np.isfinite(logits).all()
    np.testing.assert_allclose(logits[1:4], squeezed_logits(frames[1:4]), rtol=1e-6)
    assert logits[0] == logits[1] and logits[4] == logits[3]  # the nearest end's value
    inside = frames[1:4] * 0.5 + 0.2
    np.testing.assert_allclose(
        jax.grad(lambda f: intensity_logits(f).sum())(inside),
        jax.grad(lambda f: squeezed_logits(f).sum())(inside),
        rtol=1e-6,
    )
    # Outside, the gradient is still the formula's (the clip passes it through).
    assert np.isfinite(np.asarray(jax.grad(lambda f: intensity_logits(f).sum())(frames))).all()


def test_advected_frames_past_one_give_finite_logits(monkeypatch):
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4,), output="advection",
        forecaster_input="prediction", rngs=nnx.Rngs(0),
    )  # fmt: skip
    original, overshot = VideoPredictor._advect, []

    def advect_past_one(*args):  # as rounding on an accelerator can: leave [0, 1]
        frames, flow = original(*args)
        overshot.append([(frame - 0.3) * 8 for frame in frames])
        return overshot[-1], flow

    monkeypatch.setattr(VideoPredictor, "_advect", advect_past_one)
    context = jnp.asarray(np.random.default_rng(3).uniform(size=(1, 3, 8, 8, 1)), jnp.float32)
    logits = np.asarray(model(context, 3))
    first = np.asarray(overshot[0][0])
    assert first.max() > 1 and first.min() < 0  # the plain log-odds would be NaN here
    assert np.isfinite(logits).all()
    np.testing.assert_allclose(
        logits[:, 0], squeezed_logits(np.clip(first, 0, 1)), rtol=1e-5, atol=1e-5
    )


def test_frame_differences_feed_the_encoder_each_frame_and_its_change():
    model = VideoPredictor(
        1, patch_size=2, hidden_channels=(3,), motion_input="differences", rngs=nnx.Rngs(0)
    )
    assert model.encoder[0].in_channels == 8  # 4 patch pixels + their 4 differences
    context = jnp.asarray(np.random.default_rng(3).uniform(size=(2, 4, 6, 6, 1)), jnp.float32)
    patches = space_to_depth(context, 2)
    changes = jnp.concatenate([jnp.zeros_like(patches[:, :1]), jnp.diff(patches, axis=1)], 1)
    expected = model.encoder[0](jnp.concatenate([patches, changes], -1), return_carry=True)
    states, outputs = model.encode(context)
    np.testing.assert_allclose(states[0], expected[0], atol=1e-6)
    np.testing.assert_allclose(outputs[0], expected[1], atol=1e-6)
    assert model(context, 2).shape == (2, 2, 6, 6, 1)
    with pytest.raises(ValueError, match="motion_input='differences' needs forecaster='sep"):
        VideoPredictor(1, motion_input="differences", forecaster="shared", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown motion_input 'flow'"):
        VideoPredictor(1, motion_input="flow", rngs=nnx.Rngs(0))


def test_matching_costs_by_hand_and_zero_at_the_true_displacement():
    rng = np.random.default_rng(4)
    frames = rng.uniform(size=(1, 2, 4, 4, 1)).astype(np.float32)
    costs = np.asarray(matching_costs(jnp.asarray(frames), 2, 1))
    assert costs.shape == (1, 2, 2, 2, 9)
    padded = np.pad(frames[0, 0, :, :, 0], 1)
    for cy, cx, oy, ox in np.ndindex(2, 2, 3, 3):
        diffs = [
            (frames[0, 1, y, x, 0] - padded[y + oy, x + ox]) ** 2
            for y in range(2 * cy, 2 * cy + 2)
            for x in range(2 * cx, 2 * cx + 2)
        ]
        np.testing.assert_allclose(costs[0, 1, cy, cx, oy * 3 + ox], np.mean(diffs), rtol=1e-5)
    np.testing.assert_allclose(costs[0, 0, ..., 4], 0.0)  # frame 0 against itself
    # A blob that moves 2 px right and 1 px down between frames: cost 0 at offset (-1, -2).
    video = np.zeros((1, 2, 16, 16, 1), np.float32)
    video[0, 0, 5:9, 4:8] = 1.0
    video[0, 1, 6:10, 6:10] = 1.0
    costs = np.asarray(matching_costs(jnp.asarray(video), 4, 2))
    best = costs[0, 1, 1, 1].argmin()  # the cell with pixels 4..7 x 4..7, inside the blob
    assert divmod(int(best), 5) == (2 - 1, 2 - 2)
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(3,), motion_input="matching", matching_radius=2,
        motion_channels=5, rngs=nnx.Rngs(0),
    )  # fmt: skip
    assert model.encoder[0].in_channels == 16 + 5
    assert model(jnp.asarray(video), 2).shape == (1, 2, 16, 16, 1)


def test_video_predictor_rejects_bad_inputs():
    model = VideoPredictor(1, patch_size=4, hidden_channels=(4,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="multiple of patch_size=4"):
        model(jnp.zeros((1, 2, 10, 8, 1)), 1)
    with pytest.raises(ValueError, match="context must be rank 5"):
        model(jnp.zeros((2, 16, 16, 1)), 1)
    with pytest.raises(ValueError, match="unknown forecaster_input 'ones'"):
        VideoPredictor(1, forecaster_input="ones", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown forecaster 'tied'"):
        VideoPredictor(1, forecaster="tied", rngs=nnx.Rngs(0))


def test_frame_errors_sum_over_pixels():
    truth = np.zeros((1, 2, 2, 2, 1), np.float32)
    truth[0, 0, 0, 0, 0] = 1.0  # frame 1: one white pixel
    truth[0, 1] = 0.5  # frame 2: all four pixels grey
    prediction = np.zeros_like(truth)
    prediction[0, 1, 0, 0, 0] = 0.5  # frame 2: one pixel right
    errors = frame_errors(jnp.asarray(prediction), jnp.asarray(truth))
    np.testing.assert_allclose(errors["squared_error"], [[1.0, 3 * 0.25]])
    np.testing.assert_allclose(errors["absolute_error"], [[1.0, 3 * 0.5]])
    same = frame_errors(jnp.full((2, 3, 16, 16, 1), 0.3), jnp.full((2, 3, 16, 16, 1), 0.3))
    np.testing.assert_allclose(same["ssim"], np.ones((2, 3)), atol=1e-5)


def test_baselines_by_hand():
    rng = np.random.default_rng(0)
    context = rng.uniform(size=(2, 3, 4, 4, 1)).astype(np.float32)
    future = rng.uniform(size=(2, 2, 4, 4, 1)).astype(np.float32)
    mean_frame = np.full((4, 4, 1), 0.25, np.float32)
    errors = baseline_squared_errors(*map(jnp.asarray, (context, future, mean_frame)))
    for b, t in np.ndindex(2, 2):
        last = context[b, 2]
        expected = sum(
            (future[b, t, i, j, 0] - last[i, j, 0]) ** 2 for i in range(4) for j in range(4)
        )
        np.testing.assert_allclose(errors["baseline_copy_last"][b, t], expected, rtol=1e-5)
        np.testing.assert_allclose(
            errors["baseline_mean"][b, t], ((future[b, t] - 0.25) ** 2).sum(), rtol=1e-5
        )
        np.testing.assert_allclose(
            errors["baseline_zeros"][b, t], (future[b, t] ** 2).sum(), rtol=1e-5
        )


def test_summary_means_over_sequences_and_frames():
    outputs = {
        "squared_error": np.array([[1.0, 3.0], [3.0, 5.0]]),  # frame means 2 and 4
        "absolute_error": np.array([[1.0, 1.0], [2.0, 2.0]]),
        "ssim": np.array([[0.5, 0.5], [1.0, 1.0]]),
        "gradient_energy": np.array([[1.0, 1.0], [1.0, 2.0]]),
        "truth_gradient_energy": np.array([[2.0, 2.0], [2.0, 2.0]]),
        "contrast_energy": np.array([[1.0, 1.0], [1.0, 1.0]]),
        "truth_contrast_energy": np.array([[1.0, 1.0], [1.0, 1.0]]),
        "loss": np.array([0.2, 0.4]),
        "baseline_zeros": np.full((2, 2), 10.0),
        "baseline_mean": np.full((2, 2), 6.0),
        "baseline_copy_last": np.full((2, 2), 12.0),
    }
    metrics = summarize_frames(outputs)
    assert metrics["mse"] == 3.0 and metrics["mae"] == 1.5 and metrics["ssim"] == 0.75
    assert (metrics["mse_frame_1"], metrics["mse_frame_2"]) == (2.0, 4.0)
    assert metrics["baseline_mean_mse"] == 6.0
    # Sharpness per frame: the summed energies' ratio (2/4 and 3/4), then their mean.
    assert (metrics["sharpness_frame_1"], metrics["sharpness_frame_2"]) == (0.5, 0.75)
    assert metrics["sharpness"] == 0.625 and metrics["ssim_frame_2"] == 0.75
    # Equal contrast energies on both sides: the relative sharpness is the same ratio.
    assert metrics["relative_sharpness_frame_1"] == 0.5 and metrics["relative_sharpness"] == 0.625
    assert metrics["mse_reduction"] == pytest.approx(0.5)  # 1 - 3 / min(10, 6, 12)


def _check_run(results, workdir, future_frames):
    test = results["test"]
    missing = REQUIRED | {f"mse_frame_{k}" for k in range(1, future_frames + 1)}
    assert missing <= set(test), sorted(missing - set(test))
    assert all(np.isfinite(value) for value in test.values())
    with open(os.path.join(workdir, "results.json")) as file:
        assert json.load(file)["test"] == test
    for name in ("predictions.png", "predictions.gif", "mse_per_frame.png",
                 "sharpness_per_frame.png"):  # fmt: skip
        assert os.path.getsize(os.path.join(workdir, "plots", name)) > 0
    assert os.listdir(os.path.join(workdir, "tensorboard"))


def test_plotted_examples_are_the_first_or_spread_over_the_error_quantiles():
    errors = np.array([50.0, 10.0, 90.0, 30.0, 70.0, 20.0])  # sorted: 1, 5, 3, 0, 4, 2
    np.testing.assert_array_equal(pick_examples(errors, 3, "first"), [0, 1, 2])
    # Quantiles 1/6, 1/2, 5/6 of 6 videos: ranks 1, 3, 5 of the sorted errors.
    np.testing.assert_array_equal(pick_examples(errors, 3, "quantiles"), [5, 0, 2])
    np.testing.assert_array_equal(pick_examples(errors, 1, "quantiles"), [0])  # the median
    with pytest.raises(ValueError, match="unknown plots.examples 'best'"):
        pick_examples(errors, 3, "best")
    config = moving_digits.get_config("smoke")
    config.plots.examples = "best"
    with pytest.raises(ValueError, match="unknown plots.examples 'best'"):
        video_prediction.VideoPredictionTask(config)


def test_moving_digits_smoke_run(tmp_path):
    config = moving_digits.get_config("smoke")
    results = train_and_evaluate(config, str(tmp_path))
    _check_run(results, str(tmp_path), config.dataset.future_frames)
    assert results["train_steps"] == 4
    test = results["test"]
    # The zeros baseline is the mean energy of the target frames: positive and finite.
    assert 0 < test["baseline_zeros_mse"] and test["baseline_mean_mse"] < test["baseline_zeros_mse"]


def task_loss_on_random_videos(model, seed, progress=None, **train_fields):
    """The per-cell smoke config's task loss (cross-entropy; with ``train_fields`` set, its
    absolute error off unless set, so each test sees the terms it names) on random uint8
    videos at run fraction ``progress``: ``(loss, metrics, context, future)``, the frames
    as floats in [0, 1]."""
    config = moving_digits_cells.get_config("smoke")
    config.train.absolute_loss_weight = 0.0
    config.train.update(train_fields)
    task = video_prediction.VideoPredictionTask(config)
    cfg = config.dataset
    steps = cfg.context_frames + cfg.future_frames
    frames = np.random.default_rng(seed).integers(0, 256, (2, steps, 16, 16, 1), dtype=np.uint8)
    at = None if progress is None else jnp.float32(progress)
    loss, metrics = task.loss(model, {"frames": jnp.asarray(frames)}, at)
    video = jnp.asarray(frames.astype(np.float32) / 255.0)
    return loss, metrics, video[:, : cfg.context_frames], video[:, cfg.context_frames :]


def bce(x, t):  # mean over everything of max(x, 0) - x t + log(1 + e^-|x|)
    x = np.asarray(x, np.float64)
    return float(np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))))


@pytest.mark.parametrize("loss_name", ["bce", "mse", "mae"])
def test_train_loss_is_the_named_per_pixel_loss_of_the_intensities(loss_name):
    model = VideoPredictor(1, patch_size=4, hidden_channels=(4,), rngs=nnx.Rngs(0))
    loss, metrics, context, future = task_loss_on_random_videos(model, seed=2, loss=loss_name)
    logits = np.asarray(model(context, future.shape[1]), np.float64)
    predicted, truth = 1 / (1 + np.exp(-logits)), np.asarray(future, np.float64)
    by_name = {
        "bce": bce(logits, truth),
        "mse": float(np.mean((predicted - truth) ** 2)),
        "mae": float(np.mean(np.abs(predicted - truth))),
    }
    np.testing.assert_allclose(float(metrics["future_loss"]), by_name[loss_name], rtol=1e-5)
    np.testing.assert_allclose(float(loss), by_name[loss_name], rtol=1e-5)
    assert len({round(v, 4) for v in by_name.values()}) == 3  # the three differ here


def test_the_cells_config_adds_the_absolute_error_from_mid_run():
    """``configs/moving_digits_cells.py``: cross-entropy plus twice the mean absolute error
    of the intensities, whose weight ramps linearly from 0 at half the run to 2 at its end."""
    config = moving_digits_cells.get_config()
    assert (config.train.absolute_loss_weight, config.train.ramp_start) == (2.0, 0.5)
    model = VideoPredictor(1, patch_size=4, hidden_channels=(4,), rngs=nnx.Rngs(0))
    fields = {"absolute_loss_weight": 2.0, "ramp_start": 0.5}
    for progress, ramp in ((0.25, 0.0), (0.75, 0.5), (1.0, 1.0)):
        loss, metrics, context, future = task_loss_on_random_videos(
            model, seed=3, progress=progress, **fields
        )
        logits = np.asarray(model(context, future.shape[1]), np.float64)
        truth = np.asarray(future, np.float64)
        absolute = float(np.mean(np.abs(1 / (1 + np.exp(-logits)) - truth)))
        assert absolute > 0.1
        np.testing.assert_allclose(float(metrics["absolute_loss"]), absolute, rtol=1e-5)
        expected = bce(logits, truth) + 2.0 * ramp * absolute
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_unknown_train_loss_is_a_one_line_error():
    config = moving_digits.get_config("smoke")
    config.train.loss = "l2"
    with pytest.raises(ValueError, match=r"train.loss.*'l2'.*mae"):
        video_prediction.VideoPredictionTask(config)


def test_context_loss_weight_adds_the_encoder_next_frame_loss():
    model = VideoPredictor(1, patch_size=4, hidden_channels=(4,), rngs=nnx.Rngs(0))
    loss, metrics, context, future = task_loss_on_random_videos(
        model, seed=0, context_loss_weight=0.5
    )
    logits, guesses = model(context, future.shape[1], return_context_logits=True)

    expected_future, expected_context = bce(logits, future), bce(guesses, context[:, 1:])
    np.testing.assert_allclose(float(metrics["future_loss"]), expected_future, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["context_loss"]), expected_context, rtol=1e-5)
    np.testing.assert_allclose(float(loss), expected_future + 0.5 * expected_context, rtol=1e-5)


def test_full_configs_share_fields_with_smoke():
    for module in (moving_digits, moving_digits_cells, moving_mnist_tfds):
        full, smoke = module.get_config(), module.get_config("smoke")
        assert set(full.to_dict()) == set(smoke.to_dict())
        assert full.train.num_steps == -1 and full.train.num_epochs > 0
    assert moving_mnist_tfds.get_config().dataset.test_set == "tfds"


def test_moving_mnist_tfds_config_with_mocked_data(tmp_path, monkeypatch):
    config = moving_mnist_tfds.get_config("smoke")
    cfg = config.dataset
    shape = (cfg.context_frames + cfg.future_frames, cfg.canvas, cfg.canvas, 1)
    fake = np.random.default_rng(0).uniform(size=(12, *shape)).astype(np.float32)
    calls = []

    def load_moving_mnist_tfds(data_dir=None, split="test"):
        calls.append(split)
        return fake

    monkeypatch.setattr(video_prediction.gru_data, "load_moving_mnist_tfds", load_moving_mnist_tfds)
    with tfds.testing.mock_data(num_examples=20):  # MNIST digits for the training videos
        results = train_and_evaluate(config, str(tmp_path))
    assert calls == ["test"]
    _check_run(results, str(tmp_path), cfg.future_frames)


@pytest.mark.skipif(HAS_TENSORFLOW, reason="with tensorflow the builder can be constructed")
def test_moving_mnist_tfds_without_tensorflow_is_a_one_line_error(tmp_path):
    config = moving_mnist_tfds.get_config("smoke")
    config.dataset.digit_source = "digits"  # reach the test set without MNIST prepared
    with pytest.raises(ValueError, match="moving_mnist.*tensorflow") as error:
        train_and_evaluate(config, str(tmp_path))
    assert "\n" not in str(error.value)


def test_matching_prior_points_the_kernels_back_along_the_seen_motion():
    rng = np.random.default_rng(4)
    previous = np.zeros((1, 48, 48, 1), np.float32)
    blob = rng.uniform(0.2, 1.0, size=(10, 10))
    previous[0, 8:18, 8:18, 0] = blob
    current = np.zeros_like(previous)
    current[0, 10:20, 7:17, 0] = blob  # moved 2 px down, 1 px left
    log_y, log_x = matching_prior(jnp.asarray(previous), jnp.asarray(current), 8, 4)
    assert log_y.shape == log_x.shape == (1, 6, 6, 9)
    prob_y, prob_x = np.exp(log_y), np.exp(log_x)
    # Kernel tap d pulls from offset d - 4: content that moved by (+2, -1) is pulled
    # from (-2, +1), taps 2 and 5, in the blob's cells and (spread) their neighbours.
    for cy, cx in [(1, 1), (1, 2), (2, 1), (2, 2), (0, 0), (3, 2)]:
        assert prob_y[0, cy, cx].argmax() == 2 and prob_x[0, cy, cx].argmax() == 5
        assert prob_y[0, cy, cx, 2] > 0.5 and prob_x[0, cy, cx, 5] > 0.5
    # Two cells or more from any content the prior is flat.
    np.testing.assert_allclose(prob_y[0, 4:, 4:], 1 / 9, rtol=1e-2)
    np.testing.assert_allclose(prob_x[0, 4:, 4:], 1 / 9, rtol=1e-2)
    # Moving the previous frame by the prior's most likely kernels rebuilds the current one.
    one_hot_y = jax.nn.one_hot(log_y.argmax(-1), 9)
    one_hot_x = jax.nn.one_hot(log_x.argmax(-1), 9)
    np.testing.assert_allclose(advect(jnp.asarray(previous), one_hot_y, one_hot_x), current)


def test_advection_prior_adds_the_matching_logits_to_the_kernel_head():
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4,), output="advection", advection_prior="matching",
        advection_kernel_size=5, matching_radius=2, rngs=nnx.Rngs(0),
    )  # fmt: skip
    context = jnp.asarray(np.random.default_rng(5).uniform(size=(2, 3, 16, 16, 1)), jnp.float32)
    predicted = jax.nn.sigmoid(model(context, 2))
    prior = matching_prior(context[:, -2], context[:, -1], 4, 2)
    first = first_frame_by_hand(model, context, jnp.zeros((2, 4, 4, 16)), prior)
    np.testing.assert_allclose(
        predicted[:, 0], ADVECTION_EPS + (1 - 2 * ADVECTION_EPS) * first, atol=2e-5
    )
    with pytest.raises(ValueError, match="advection_kernel_size == 2 \\* matching_radius"):
        VideoPredictor(
            1, output="advection", advection_prior="matching", advection_kernel_size=7,
            rngs=nnx.Rngs(0),
        )  # fmt: skip
    with pytest.raises(ValueError, match="unknown advection_prior 'flow'"):
        VideoPredictor(1, output="advection", advection_prior="flow", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("source", ["previous", "context"])
def test_advection_source_picks_the_frame_the_kernels_move(monkeypatch, source):
    import gru_jax.models.advection as advection_module

    moved_frames = []

    def recording_advect(frames, kernels_y, kernels_x):
        moved_frames.append(frames)
        return advect(frames, kernels_y, kernels_x)

    monkeypatch.setattr(advection_module, "advect", recording_advect)
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4,), output="advection", advection_source=source,
        forecaster_input="prediction", rngs=nnx.Rngs(0),
    )  # fmt: skip
    context = jnp.asarray(np.random.default_rng(6).uniform(size=(2, 3, 16, 16, 1)), jnp.float32)
    predicted = jax.nn.sigmoid(model(context, 3))
    assert len(moved_frames) == 3
    np.testing.assert_allclose(moved_frames[0], context[:, -1])
    for step in (1, 2):
        if source == "context":  # always the last context frame
            np.testing.assert_allclose(moved_frames[step], context[:, -1])
        else:  # the model's previous prediction (before the [eps, 1 - eps] squeeze)
            unsqueezed = (predicted[:, step - 1] - ADVECTION_EPS) / (1 - 2 * ADVECTION_EPS)
            np.testing.assert_allclose(moved_frames[step], unsqueezed, atol=2e-4)
            assert float(jnp.abs(moved_frames[step] - context[:, -1]).max()) > 0.1
    with pytest.raises(ValueError, match="unknown advection_source 'next'"):
        VideoPredictor(1, output="advection", advection_source="next", rngs=nnx.Rngs(0))


def test_forecaster_motion_reads_the_matching_of_the_two_frames_before(monkeypatch):
    import gru_jax.models.video_predictor as predictor_module

    matched = []

    def recording_costs(frames, patch_size, radius):
        matched.append(frames)
        return matching_costs(frames, patch_size, radius)

    monkeypatch.setattr(predictor_module, "matching_costs", recording_costs)
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4, 4), output="advection", motion_input="matching",
        forecaster_input="prediction", forecaster_motion=True, matching_radius=2,
        advection_kernel_size=5, motion_channels=3, rngs=nnx.Rngs(0),
    )  # fmt: skip
    assert model.forecaster[0].in_channels == 16 + 3 and model.forecaster[1].in_channels == 4
    context = jnp.asarray(np.random.default_rng(7).uniform(size=(2, 4, 16, 16, 1)), jnp.float32)
    predicted = jax.nn.sigmoid(model(context, 3))
    # One matching call for the encoder (all context frames), then one per step.
    assert len(matched) == 4 and matched[0].shape == (2, 4, 16, 16, 1)
    np.testing.assert_allclose(matched[1], context[:, -2:])
    first = (predicted[:, 0] - ADVECTION_EPS) / (1 - 2 * ADVECTION_EPS)
    np.testing.assert_allclose(matched[2][:, 0], context[:, -1])
    np.testing.assert_allclose(matched[2][:, 1], first, atol=2e-4)
    # The first forecaster step, by hand: patches of the last frame + its motion features.
    motion = model._motion(context[:, -2:])[:, 1]
    x = jnp.concatenate([space_to_depth(context[:, -1], 4), motion], -1)
    expected = first_frame_by_hand(model, context, x)
    np.testing.assert_allclose(first, expected, atol=2e-4)
    with pytest.raises(ValueError, match="forecaster_motion=True needs motion_input='matching'"):
        VideoPredictor(1, output="advection", forecaster_motion=True, rngs=nnx.Rngs(0))
