"""The matching prior's options: a longer baseline (``prior_frames``), a sharper softmax
(``prior_temperature``) and the neighbourhood averaging (``prior_neighbourhood``), the
layered model reading that prior, and the split sorted by it (``layer_split_steps``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gru_jax.data.moving_digits import make_moving_digits, moving_digit_corners
from gru_jax.models import VideoPredictor
from gru_jax.models.advection import (
    FADE_BIAS,
    GATE_BIAS,
    layer_gains,
    layer_moves,
    refine_split,
)
from gru_jax.models.video_ops import (
    _per_frame_taps,
    kernel_offsets,
    matching_costs,
    matching_prior,
)


def prior_moves(log_y, log_x) -> np.ndarray:
    """Where the prior's kernels move content, per cell: f32[..., 2] (minus the mean
    offset of each kernel, which says where content comes from)."""
    return -np.stack(
        [np.asarray(kernel_offsets(jax.nn.softmax(log, axis=-1))) for log in (log_y, log_x)], -1
    )


def test_per_frame_taps_keep_the_mean_over_n_frames():
    np.testing.assert_array_equal(_per_frame_taps(4, 1), np.eye(9, dtype=np.float32))
    for frames in (2, 3, 5):
        taps = _per_frame_taps(3, frames)
        offsets = np.arange(-3 * frames, 3 * frames + 1)
        assert taps.shape == (offsets.size, 7)
        np.testing.assert_allclose(taps.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(taps @ np.arange(-3, 4), offsets / frames, atol=1e-6)
        assert ((taps > 0).sum(axis=1) <= 2).all()  # the two taps around o / n at most


def square_video(rows: list[int], col: int = 12, size: int = 40) -> np.ndarray:
    """A textured 6×6 square at ``rows[t]`` in frame ``t`` (texture, so that block
    matching inside it is not ambiguous): f32[T, size, size, 1]."""
    texture = np.random.default_rng(7).uniform(0.3, 1.0, size=(6, 6))
    video = np.zeros((len(rows), size, size, 1), np.float32)
    for t, row in enumerate(rows):
        video[t, row : row + 6, col : col + 6, 0] = texture
    return video


def test_a_longer_baseline_reads_the_mean_motion_of_rounded_positions():
    """Positions rounded to whole pixels move 2, 3, 2 rows (7/3 per frame): matching the
    last two frames says 2 per frame, the last against the fourth from last 7/3."""
    video = jnp.asarray(square_video([4, 6, 9, 11]))
    sharp = {"temperature": 0.003, "neighbourhood": False}
    one = prior_moves(*matching_prior(video[2:3], video[3:4], 4, 3, 1, **sharp))
    three = prior_moves(*matching_prior(video[0:1], video[3:4], 4, 3, 3, **sharp))
    cells = (slice(None), slice(3, 4), slice(3, 4))  # the cell wholly inside the square
    np.testing.assert_allclose(one[cells], [[[[2.0, 0.0]]]], atol=0.02)
    np.testing.assert_allclose(three[cells], [[[[7 / 3, 0.0]]]], atol=0.02)
    with pytest.raises(ValueError, match="frames_apart must be a positive int, got 0"):
        matching_prior(video[0:1], video[3:4], 4, 3, 0)


def test_a_sharper_prior_falls_less_short_of_the_digits_motion():
    """On moving digits (smooth, upsampled strokes) the default temperature spreads the
    matching over neighbouring offsets and the prior's move falls short of the true one;
    0.003 and no neighbourhood averaging leave much less of that shortfall (measured over
    the cells wholly inside one digit that did not bounce)."""
    videos = make_moving_digits(24, seed=0, split="test", num_frames=11)
    corners = moving_digit_corners(24, seed=0, split="test", num_frames=11)
    before, last = jnp.asarray(videos[:, 8]), jnp.asarray(videos[:, 9])
    true_move = corners[:, 9] - corners[:, 8]  # per digit, [N, 2, 2]
    cells = []
    for n, corner in enumerate(np.rint(corners[:, 9]).astype(int)):
        for digit in range(2):
            other = corner[1 - digit]
            for row, col in np.ndindex(8, 8):
                y, x = 8 * row, 8 * col
                inside = (corner[digit] <= (y, x)).all() and (
                    corner[digit] + 28 >= (y + 8, x + 8)
                ).all()
                clear = (other + 28 <= (y, x)).any() or (other >= (y + 8, x + 8)).any()
                bounced = (
                    np.abs(
                        corners[n, 9, digit] - 2 * corners[n, 8, digit] + corners[n, 7, digit]
                    ).max()
                    > 1e-4
                )
                if (
                    inside
                    and clear
                    and not bounced
                    and videos[n, 9, y : y + 8, x : x + 8].mean() > 0.1
                ):
                    cells.append((n, row, col, digit))
    assert len(cells) > 40
    n, row, col, digit = np.array(cells).T

    def shortfall(**options) -> float:  # how far the prior's move falls short, on average
        moves = prior_moves(*matching_prior(before, last, 8, 4, **options))[n, row, col]
        truth = true_move[n, digit]
        return float(np.mean((truth - moves) * np.sign(truth)))

    default, sharp = shortfall(), shortfall(temperature=0.003, neighbourhood=False)
    assert default > 0.3  # about half a pixel per frame at 3.6 px per frame
    assert abs(sharp) < 0.5 * default


def test_the_layered_model_reads_the_prior_over_prior_frames():
    """Kernel head zeroed: each layer's motion is the prior pooled over its content, so
    with ``prior_frames=3`` the square moves by 7/3 rows per predicted frame, by 2 with
    the default one-frame baseline."""
    video = jnp.asarray(square_video([4, 6, 9, 11])[None])
    rows = np.arange(40)[:, None]
    last = np.asarray(video[0, -1, ..., 0])
    start = (last * rows).sum() / last.sum()
    centres = {}
    for frames in (1, 3):
        model = VideoPredictor(
            1, patch_size=4, hidden_channels=(4,), output="advection", advection_source="splat",
            advection_motions=2, advection_prior="matching", matching_radius=3,
            advection_kernel_size=7, prior_frames=frames, prior_temperature=0.003,
            prior_neighbourhood=False, rngs=nnx.Rngs(0),
        )  # fmt: skip
        model.kernel_head.kernel.value = jnp.zeros_like(model.kernel_head.kernel.value)
        model.kernel_head.bias.value = jnp.zeros_like(model.kernel_head.bias.value)
        predicted = np.asarray(jax.nn.sigmoid(model(video, 2)))[0, ..., 0]
        centres[frames] = [(p * rows).sum() / p.sum() for p in predicted]
    for k in range(2):
        assert centres[1][k] == pytest.approx(start + 2 * (k + 1), abs=0.05)
        assert centres[3][k] == pytest.approx(start + 7 / 3 * (k + 1), abs=0.05)


def layered(**options) -> VideoPredictor:
    return VideoPredictor(
        1, patch_size=4, hidden_channels=(4,), output="advection", advection_source="splat",
        advection_motions=2, rngs=nnx.Rngs(0), **options,
    )  # fmt: skip


def test_prior_options_are_checked():
    with pytest.raises(ValueError, match="prior_frames must be an int >= 1, got 0"):
        layered(advection_prior="matching", prior_frames=0)
    with pytest.raises(ValueError, match="prior_frames=2 needs advection_source='splat' and"):
        VideoPredictor(1, output="advection", advection_prior="matching", prior_frames=2,
                       rngs=nnx.Rngs(0))  # fmt: skip
    with pytest.raises(ValueError, match="prior_frames=2 needs .* got 'splat', 'none'"):
        layered(prior_frames=2)
    with pytest.raises(ValueError, match="prior_temperature must be a finite number > 0"):
        layered(advection_prior="matching", prior_temperature=0.0)
    with pytest.raises(ValueError, match="prior_neighbourhood=False set the matching prior"):
        layered(prior_neighbourhood=False)
    model = layered(advection_prior="matching", prior_frames=3)
    context = jnp.zeros((1, 3, 8, 8, 1))
    with pytest.raises(ValueError, match="prior_frames=3 needs more than 3 context frames, got 3"):
        model(context, 1)
    assert model(jnp.zeros((1, 4, 8, 8, 1)), 1).shape == (1, 1, 8, 8, 1)


def test_motion_temperature_sets_the_encoders_matching_softmax():
    """The encoder's block-matching input is the projection of softmax(-cost / T)."""
    rng = np.random.default_rng(3)
    frames = jnp.asarray(rng.uniform(size=(2, 3, 8, 8, 1)), jnp.float32)
    costs = matching_costs(frames, 4, 2)
    for temperature in (0.02, 0.003):
        model = VideoPredictor(
            1, patch_size=4, hidden_channels=(4,), motion_input="matching", matching_radius=2,
            motion_temperature=temperature, rngs=nnx.Rngs(0),
        )  # fmt: skip
        expected = model.motion_projection(jax.nn.softmax(-costs / temperature, axis=-1))
        np.testing.assert_allclose(model._motion(frames), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="motion_temperature must be a finite number > 0"):
        VideoPredictor(1, motion_input="matching", motion_temperature=-1.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="motion_temperature=0.003 needs motion_input='matching'"):
        VideoPredictor(1, motion_temperature=0.003, rngs=nnx.Rngs(0))


def test_layer_gate_blends_the_prior_move_and_the_heads_move():
    """``[vertical k | horizontal k | fade | gate | score]``: each layer's move is the
    prior's move plus its pooled gate (``sigmoid(logit + GATE_BIAS)``) times the head's
    correction; with a zero gate logit it stays within 0.12 of the way to the head's; the
    fade logit is still read as the gain."""
    k, motions = 3, 2
    content = np.zeros((1, 2, 2, motions), np.float32)
    content[0, 0, 0, 0] = 0.6
    content[0, 1, 1, 1] = 0.3
    prior = np.full((1, motions, 2, k), -30.0, np.float32)
    prior[0, :, 0, 1] = prior[0, :, 1, 1] = 0.0  # both layers: the prior says stay
    logits = np.zeros((1, 2, 2, motions, 2 * k + 3), np.float32)
    logits[..., 0, [0, k + 2]] = 60.0  # layer 0: the head pulls from (-1, +1): moves (1, -1)
    logits[..., 1, [2, k + 1]] = 60.0  # layer 1: pulls from (+1, 0): moves (-1, 0)
    logits[0, 0, 0, 0, 2 * k] = -FADE_BIAS  # layer 0's gain: 0.5
    logits[0, 0, 0, 0, 2 * k + 1] = -GATE_BIAS  # layer 0's gate: 0.5
    logits[0, 1, 1, 1, 2 * k + 1] = 40.0  # layer 1's gate: open
    flat = jnp.asarray(logits.reshape(1, 2, 2, -1))
    moves = layer_moves(flat, motions, jnp.asarray(content), jnp.asarray(prior), True, True)
    # (layer 0's logits weigh 0.995 at its patch, ~0.002 at the three empty ones)
    np.testing.assert_allclose(moves, [[[0.5, -0.5], [-1.0, 0.0]]], atol=5e-3)
    gains = layer_gains(flat, motions, jnp.asarray(content), gate=True)
    np.testing.assert_allclose(gains[0, 0], 0.5, atol=0.01)
    shut = logits.copy()
    shut[..., 2 * k + 1] = 0.0
    moves = layer_moves(
        jnp.asarray(shut.reshape(1, 2, 2, -1)), motions, jnp.asarray(content),
        jnp.asarray(prior), True, True,
    )  # fmt: skip
    start = 1 / (1 + np.exp(-GATE_BIAS))
    np.testing.assert_allclose(moves, [[[start, -start], [-start, 0.0]]], atol=2e-3)
    with pytest.raises(ValueError, match="gate=True\\) needs a prior"):
        layer_moves(flat, motions, jnp.asarray(content), None, True, True)
    with pytest.raises(ValueError, match="layer_gate=True needs the layered form with a prior"):
        layered(layer_gate=True)
    model = layered(advection_prior="matching", layer_gate=True, layer_fade=True)
    assert model.kernel_head.out_features == 2 * (2 * 9 + 3)
    assert model(jnp.zeros((1, 2, 8, 8, 1)), 2).shape == (1, 2, 8, 8, 1)


def two_squares(frames: int = 5) -> np.ndarray:
    """f32[frames, 40, 40, 1]: square A (5×5) moves 2 columns right per frame, square B 2
    rows up."""
    video = np.zeros((frames, 40, 40, 1), np.float32)
    for t in range(frames):
        video[t, 6:11, 4 + 2 * t : 9 + 2 * t] = 1.0
        video[t, 30 - 2 * t : 35 - 2 * t, 25:30] = 1.0
    return video


def test_refine_split_sorts_the_layers_by_motion():
    """From a split that puts both squares mostly in layer 0, each EM round moves the
    pixels of the square whose motion disagrees with its layer's pooled motion, until each
    square is wholly in a layer of its own; with one shared motion nothing is sorted."""
    video = two_squares(2)
    prior = matching_prior(
        jnp.asarray(video[:1]), jnp.asarray(video[1:]), 8, 4, temperature=0.003,
        neighbourhood=False,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(0.0, 0.1, (1, 40, 40, 2)) + [0.3, 0.0], jnp.float32)
    frame = jnp.asarray(video[1:])
    np.testing.assert_allclose(
        refine_split(logits, frame, prior, 8, 0), jax.nn.softmax(logits, axis=-1), rtol=1e-6
    )
    shares = []
    for steps in (0, 1, 2, 3, 4):
        split = np.asarray(refine_split(logits, frame, prior, 8, steps))[0]
        np.testing.assert_allclose(split.sum(axis=-1), 1.0, rtol=1e-5)
        shares.append((split[6:11, 6:11].mean(axis=(0, 1)), split[28:33, 25:30].mean((0, 1))))
    a0, b0 = shares[0]
    assert a0[0] > 0.5 and b0[0] > 0.5  # both squares start mostly in layer 0
    a, b = shares[-1]
    assert max(a) > 0.98 and max(b) > 0.98 and np.argmax(a) != np.argmax(b)
    purity = [abs(a[0] - b[0]) for a, b in shares]
    assert all(later >= earlier for earlier, later in zip(purity, purity[1:]))
    gentle = np.asarray(refine_split(logits, frame, prior, 8, 4, weight=0.1))[0]
    a, b = gentle[6:11, 6:11].mean(axis=(0, 1)), gentle[28:33, 25:30].mean(axis=(0, 1))
    assert purity[0] < abs(a[0] - b[0]) < 0.5 * purity[-1]  # a weaker pull sorts less
    same = np.zeros_like(video)  # both squares move right: the matching cannot tell them apart
    for t in range(2):
        same[t, 6:11, 4 + 2 * t : 9 + 2 * t] = same[t, 28:33, 20 + 2 * t : 25 + 2 * t] = 1.0
    prior = matching_prior(
        jnp.asarray(same[:1]), jnp.asarray(same[1:]), 8, 4, temperature=0.003,
        neighbourhood=False,
    )  # fmt: skip
    split = refine_split(logits, jnp.asarray(same[1:]), prior, 8, 4)
    np.testing.assert_allclose(split, jax.nn.softmax(logits, axis=-1), atol=1e-3)


def test_the_layered_model_sorts_its_split_with_layer_split_steps():
    """Kernel head zeroed: each layer moves by its content's pooled prior. A random mask
    head leaves both squares half in each layer, so both layers move by a compromise and
    square A (2 columns right per frame) hardly moves; three EM rounds give each square
    its own layer, and both move as they did."""
    video = jnp.asarray(two_squares()[None])
    columns, rows = np.arange(22), np.arange(40)[:, None]
    moves = {}
    for steps in (0, 3):
        model = layered(
            advection_prior="matching", matching_radius=3, advection_kernel_size=7,
            prior_temperature=0.003, prior_neighbourhood=False, layer_split_steps=steps,
        )  # fmt: skip
        model.kernel_head.kernel.value = jnp.zeros_like(model.kernel_head.kernel.value)
        model.kernel_head.bias.value = jnp.zeros_like(model.kernel_head.bias.value)
        logits, split = model(video, 2, return_assignment=True)
        split = np.asarray(split)[0]
        square_a, square_b = split[6:11, 12:17].mean((0, 1)), split[22:27, 25:30].mean((0, 1))
        predicted = np.asarray(jax.nn.sigmoid(logits))[0, -1, ..., 0]
        a, b = predicted[:, :22], predicted[:, 22:]
        moves[steps] = ((a * columns).sum() / a.sum() - 14, (b * rows).sum() / b.sum() - 24)
        if steps:
            assert max(square_a) > 0.95 and max(square_b) > 0.95
            assert np.argmax(square_a) != np.argmax(square_b)
        else:
            assert max(square_a) < 0.6 and max(square_b) < 0.6
    assert moves[3][0] == pytest.approx(4.0, abs=0.6)  # A: 2 columns right per frame
    assert moves[3][1] == pytest.approx(-4.0, abs=0.2)  # B: 2 rows up per frame
    assert moves[0][0] < 2.0  # without sorting A lags by more than a frame's move
    with pytest.raises(ValueError, match="layer_split_steps must be an int >= 0, got -1"):
        layered(advection_prior="matching", layer_split_steps=-1)
    with pytest.raises(ValueError, match="layer_split_steps=2 needs the layered form with a"):
        layered(layer_split_steps=2)
    with pytest.raises(ValueError, match="layer_split_weight must be a finite number > 0"):
        layered(advection_prior="matching", layer_split_steps=1, layer_split_weight=0.0)
    with pytest.raises(ValueError, match="layer_split_weight=0.25 .* needs layer_split_steps > 0"):
        layered(advection_prior="matching", layer_split_weight=0.25)
