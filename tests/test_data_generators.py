"""Generated data: moving digits, motion direction and digit strings, checked pixel by pixel."""

import numpy as np
import pytest

from gru_jax.data import (
    BOS_ID,
    DIRECTION_STEPS,
    EOS_ID,
    PAD_ID,
    decoder_inputs,
    digit_pool,
    make_digit_strings,
    make_motion_direction,
    make_moving_digits,
    tokens_to_text,
)
from gru_jax.data.moving_digits import bouncing_trajectories


def _find_pasted(frame: np.ndarray, pool: np.ndarray) -> list[tuple[int, int, int]]:
    """All (pool index, row, col) such that pasting pool[index] there reproduces ``frame``."""
    size = pool.shape[-1]
    rows, cols = np.nonzero(frame)
    matches = []
    for index, digit in enumerate(pool):
        digit_rows, digit_cols = np.nonzero(digit)
        row, col = rows.min() - digit_rows.min(), cols.min() - digit_cols.min()
        if not (0 <= row <= frame.shape[0] - size and 0 <= col <= frame.shape[1] - size):
            continue
        rendered = np.zeros_like(frame)
        rendered[row : row + size, col : col + size] = digit
        if np.array_equal(rendered, frame):
            matches.append((index, int(row), int(col)))
    return matches


def test_digit_pools_are_disjoint_and_follow_the_digits_split():
    train, train_labels = digit_pool("train", digit_size=8)
    test, test_labels = digit_pool("test", digit_size=8)
    assert train.shape == (1437, 8, 8) and test.shape == (360, 8, 8)
    assert not {image.tobytes() for image in train} & {image.tobytes() for image in test}
    assert np.bincount(test_labels).min() >= 35  # stratified: ~36 of each class
    big, big_labels = digit_pool("test", digit_size=28)
    assert big.shape == (360, 28, 28) and 0.0 <= big.min() and big.max() <= 1.0
    np.testing.assert_array_equal(big_labels, test_labels)
    with pytest.raises(ValueError, match="expected 'train' or 'test'"):
        digit_pool("validation", digit_size=8)


def test_moving_digits_protocol_shapes_values_and_determinism():
    videos = make_moving_digits(3, seed=0)
    assert videos.shape == (3, 20, 64, 64, 1) and videos.dtype == np.float32
    assert videos.min() == 0.0 and videos.max() <= 1.0
    assert (videos.max(axis=(2, 3, 4)) > 0.5).all()  # digits are visible in every frame
    np.testing.assert_array_equal(videos, make_moving_digits(3, seed=0))
    assert not np.array_equal(videos, make_moving_digits(3, seed=1))
    assert not np.array_equal(videos, make_moving_digits(3, seed=0, split="test"))


def test_one_moving_digit_is_a_test_pool_image_bouncing_inside_the_canvas():
    videos = make_moving_digits(2, seed=5, split="test", num_digits=1, num_frames=12)
    test_pool, _ = digit_pool("test", digit_size=28)
    train_pool, _ = digit_pool("train", digit_size=28)
    for video in videos[..., 0]:
        tracks = [_find_pasted(frame, test_pool) for frame in video]
        assert all(len(track) >= 1 for track in tracks)
        assert len({track[0][0] for track in tracks}) == 1  # the same digit in every frame
        assert not _find_pasted(video[0], train_pool)
        corners = np.array([track[0][1:] for track in tracks])
        assert corners.min() >= 0 and corners.max() <= 64 - 28
        steps = np.linalg.norm(np.diff(corners, axis=0), axis=1)
        # Constant speed 3.6 px/frame, up to rounding to whole pixels (a bounce only shortens).
        assert steps.max() <= 3.6 + np.sqrt(2) and np.median(steps) >= 3.6 - np.sqrt(2)


def test_bouncing_trajectories_reflect_off_the_walls():
    corners = bouncing_trajectories(
        np.random.default_rng(0), 200, num_frames=30, num_digits=2, limit=36, speed=3.6
    )
    assert corners.shape == (200, 30, 2, 2)
    assert corners.min() >= 0.0 and corners.max() <= 36.0
    # Reflection off walls at 0 and L is straight-line motion folded into [0, L]:
    # fold(x) = L - |L - (x mod 2L)|. Rebuild the straight lines from the same draws.
    rng = np.random.default_rng(0)
    start = rng.uniform(0.0, 36, size=(200, 2, 2))
    angle = rng.uniform(0.0, 2.0 * np.pi, size=(200, 2))
    velocity = 3.6 * np.stack([np.sin(angle), np.cos(angle)], axis=-1)
    straight = start[:, None] + np.arange(30)[None, :, None, None] * velocity[:, None]
    folded = 36 - np.abs(36 - np.mod(straight, 72))
    np.testing.assert_allclose(corners, folded, atol=1e-3)
    assert (np.abs(straight - folded) > 1).any()  # some digits did bounce
    speeds = np.linalg.norm(np.diff(corners, axis=1), axis=-1)
    assert speeds.max() <= 3.6 + 1e-4 and np.median(speeds) == pytest.approx(3.6, abs=1e-4)


def _center_of_mass(frames: np.ndarray) -> np.ndarray:
    """(row, col) center of mass of f32[..., H, W]."""
    rows, cols = np.indices(frames.shape[-2:])
    mass = frames.sum(axis=(-2, -1))
    return (
        np.stack([(frames * rows).sum((-2, -1)), (frames * cols).sum((-2, -1))], -1)
        / mass[..., None]
    )


def test_motion_direction_labels_match_the_displacement_of_the_digit():
    videos, labels = make_motion_direction(64, seed=0)
    assert videos.shape == (64, 8, 48, 48, 1) and labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(labels), [8] * 8)  # balanced
    frames = videos[..., 0]
    displacement = _center_of_mass(frames[:, -1]) - _center_of_mass(frames[:, 0])
    np.testing.assert_allclose(displacement, DIRECTION_STEPS[labels] * 2 * 7, atol=1e-3)
    # Label k is k·45° counterclockwise from east (rows grow downwards).
    angle = np.degrees(np.arctan2(-displacement[:, 0], displacement[:, 1])) % 360
    np.testing.assert_array_equal(np.rint(angle / 45).astype(int) % 8, labels)
    # Never leaves the canvas: every frame holds the whole digit, shifted by a constant step.
    np.testing.assert_allclose(
        frames.sum((2, 3)), frames[:, :1].sum((2, 3)).repeat(8, 1), rtol=1e-5
    )
    for video, label in zip(frames[:8], labels[:8], strict=True):
        row_step, col_step = DIRECTION_STEPS[label] * 2
        np.testing.assert_array_equal(
            np.roll(video[0], (3 * row_step, 3 * col_step), axis=(0, 1)), video[3]
        )


def test_motion_direction_is_deterministic_and_uses_its_split():
    videos, labels = make_motion_direction(4, seed=2, split="test")
    again, again_labels = make_motion_direction(4, seed=2, split="test")
    np.testing.assert_array_equal(videos, again)
    np.testing.assert_array_equal(labels, again_labels)
    assert not np.array_equal(videos, make_motion_direction(4, seed=3, split="test")[0])
    test_pool, _ = digit_pool("test", digit_size=14)
    train_pool, _ = digit_pool("train", digit_size=14)
    for video in videos[:, 0, :, :, 0]:
        assert _find_pasted(video, test_pool) and not _find_pasted(video, train_pool)
    with pytest.raises(ValueError, match="travels 18 px but a canvas of 20 leaves only 6"):
        make_motion_direction(1, seed=0, canvas=20, num_frames=10)


def test_digit_strings_tokens_match_the_rendered_test_digits():
    data = make_digit_strings(40, seed=0, split="test", with_boxes=True)
    images, tokens, lengths, boxes = data["images"], data["tokens"], data["lengths"], data["boxes"]
    assert images.shape == (40, 16, 80, 1) and images.dtype == np.float32
    assert tokens.shape == (40, 6) and tokens.dtype == np.int32 and lengths.dtype == np.int32
    assert lengths.min() == 1 and lengths.max() == 5
    test_pool, test_labels = digit_pool("test", digit_size=12)
    train_pool, _ = digit_pool("train", digit_size=12)
    train_keys = {image.tobytes() for image in train_pool}
    for image, row, length, row_boxes in zip(images[..., 0], tokens, lengths, boxes, strict=True):
        # digits, then exactly one EOS, then PAD
        assert (row[:length] <= 9).all() and row[length] == EOS_ID
        assert (row[length + 1 :] == PAD_ID).all() and (row == EOS_ID).sum() == 1
        assert (row_boxes[length:] == -1).all()
        covered = np.zeros(image.shape, bool)
        lefts = []
        for token, (top, left, height, width) in zip(row[:length], row_boxes[:length]):
            crop = image[top : top + height, left : left + width]
            same = np.flatnonzero((test_pool == crop).all(axis=(1, 2)))
            assert same.size and token in test_labels[same]  # the token is the digit shown
            assert crop.tobytes() not in train_keys
            covered[top : top + height, left : left + width] = True
            lefts.append(left)
        gaps = np.diff(lefts) - 12
        assert (0 <= gaps).all() and (gaps <= 3).all()  # left to right, gaps in [0, 3]
        assert not image[~covered].any()  # nothing drawn outside the digits


def test_digit_strings_determinism_noise_and_errors():
    clean = make_digit_strings(6, seed=1, min_len=2, max_len=3)
    assert set(clean) == {"images", "tokens", "lengths"}
    again = make_digit_strings(6, seed=1, min_len=2, max_len=3)
    np.testing.assert_array_equal(clean["images"], again["images"])
    assert set(clean["lengths"]) <= {2, 3} and clean["tokens"].shape == (6, 4)
    noisy = make_digit_strings(6, seed=1, min_len=2, max_len=3, noise_std=0.1)
    np.testing.assert_array_equal(noisy["tokens"], clean["tokens"])  # noise leaves the layout
    assert 0.0 <= noisy["images"].min() and noisy["images"].max() <= 1.0
    assert 0.03 < np.abs(noisy["images"] - clean["images"]).mean() < 0.1
    with pytest.raises(ValueError, match="need a width of 72, got 60"):
        make_digit_strings(1, seed=0, width=60)
    with pytest.raises(ValueError, match="min_len <= max_len"):
        make_digit_strings(1, seed=0, min_len=3, max_len=2)


def test_token_helpers():
    tokens = np.array([[3, 1, EOS_ID, PAD_ID], [7, EOS_ID, PAD_ID, PAD_ID]], np.int32)
    np.testing.assert_array_equal(
        decoder_inputs(tokens), [[BOS_ID, 3, 1, EOS_ID], [BOS_ID, 7, EOS_ID, PAD_ID]]
    )
    assert tokens_to_text(tokens) == ["31", "7"]
