"""Moving digits: video prediction (Moving MNIST) and motion-direction classification.

``make_moving_digits`` follows the Moving MNIST protocol of Srivastava et al. (2015): digits of
28×28 pixels move inside a 64×64 canvas, each with a random start position and a random
direction at a constant speed (by default 0.1 of the free range per frame, 3.6 px for 64/28,
as in the original generator), bouncing off the walls (reflected, so a bounce loses no
distance). Overlapping digits are combined by pixelwise max, as in the original, which keeps
values in [0, 1]. Frames 0–9 are the input and 10–19 the target in the 20-frame protocol.

``make_motion_direction`` moves one digit in one of 8 compass directions at a constant
velocity, never leaving the canvas and never bouncing; the label is the direction. Every
trajectory that stays inside the canvas is equally likely, so the *set* of positions a
sequence visits has the same distribution for opposite directions: a model must use the
order of the frames. One frame alone still hints near the borders (a digit touching the left
edge in frame 0 is not moving west), which a canvas much larger than the travel
(``canvas - digit_size`` ≫ ``speed·(num_frames - 1)``) keeps weak.

Both draw digit images from the pool of their split (`gru_jax.data.digit_pool`): train and
test sequences never share a digit image when they use the same ``split_seed``.
"""

from __future__ import annotations

import numpy as np

from gru_jax.data.digit_pool import digit_pool

# Label k is the direction k·45° counterclockwise from east, as (row step, column step):
# rows grow downwards, so "north" is a negative row step.
DIRECTION_NAMES = ("E", "NE", "N", "NW", "W", "SW", "S", "SE")
DIRECTION_STEPS = np.array(
    [(0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1)], dtype=np.int64
)
_SPLIT_SALT = {"train": 0, "test": 1}  # train and test with one seed draw different sequences


def _rng(seed: int, split: str, task: int) -> np.random.Generator:
    if split not in _SPLIT_SALT:
        raise ValueError(f"unknown split {split!r}: expected 'train' or 'test'")
    return np.random.default_rng([seed, _SPLIT_SALT[split], task])


def bouncing_trajectories(
    rng: np.random.Generator,
    num_sequences: int,
    *,
    num_frames: int,
    num_digits: int,
    limit: float,
    speed: float,
) -> np.ndarray:
    """Top-left corners of digits bouncing inside [0, limit]²: f32[N, T, digits, 2] (row, col).

    Start positions are uniform in the square, directions uniform on the circle, the speed is
    constant; a position that crosses a wall is reflected back and that velocity component
    flips.
    """
    position = rng.uniform(0.0, limit, size=(num_sequences, num_digits, 2))
    angle = rng.uniform(0.0, 2.0 * np.pi, size=(num_sequences, num_digits))
    velocity = speed * np.stack([np.sin(angle), np.cos(angle)], axis=-1)
    frames = np.empty((num_sequences, num_frames, num_digits, 2))
    for frame in range(num_frames):
        frames[:, frame] = position
        position = position + velocity
        below, above = position < 0.0, position > limit
        position = np.where(below, -position, np.where(above, 2.0 * limit - position, position))
        velocity = np.where(below | above, -velocity, velocity)
    return frames.astype(np.float32)


def _paste(videos: np.ndarray, corners: np.ndarray, digits: np.ndarray) -> None:
    """Max-combines digits[n, d] into videos[n, t] at integer corners[n, t, d] (row, col)."""
    num_sequences, num_frames, num_digits, _ = corners.shape
    offsets = np.arange(digits.shape[-1])
    sequence = np.arange(num_sequences)[:, None, None]
    # One gather/scatter per (frame, digit) over all sequences; later digits max over earlier.
    for t, d in np.ndindex(num_frames, num_digits):
        rows = (corners[:, t, d, 0, None] + offsets)[:, :, None]  # [N, size, 1]
        cols = (corners[:, t, d, 1, None] + offsets)[:, None, :]  # [N, 1, size]
        frame = videos[:, t, :, :, 0]
        frame[sequence, rows, cols] = np.maximum(frame[sequence, rows, cols], digits[:, d])


def _corners(num_sequences, seed, split, num_frames, canvas, digit_size, num_digits, speed):
    """``(rng, corners)``: the videos' random stream after drawing the trajectories (the
    digit choice comes next) and the corners, as :func:`make_moving_digits` draws them."""
    limit = canvas - digit_size
    if limit < 0:
        raise ValueError(f"digit_size {digit_size} does not fit in a canvas of {canvas}")
    if speed is None:
        speed = 0.1 * limit
    rng = _rng(seed, split, task=0)
    corners = bouncing_trajectories(
        rng, num_sequences, num_frames=num_frames, num_digits=num_digits, limit=limit, speed=speed
    )
    return rng, corners


def moving_digit_corners(
    num_sequences: int,
    *,
    seed: int,
    split: str = "train",
    num_frames: int = 20,
    canvas: int = 64,
    digit_size: int = 28,
    num_digits: int = 2,
    speed: float | None = None,
) -> np.ndarray:
    """The digits' top-left corners in the videos :func:`make_moving_digits` makes with the
    same arguments, before rounding to whole pixels: f32[N, num_frames, num_digits, 2]."""
    _, corners = _corners(
        num_sequences, seed, split, num_frames, canvas, digit_size, num_digits, speed
    )
    return corners


def make_moving_digits(
    num_sequences: int,
    *,
    seed: int,
    split: str = "train",
    num_frames: int = 20,
    canvas: int = 64,
    digit_size: int = 28,
    num_digits: int = 2,
    speed: float | None = None,
    source: str = "digits",
    split_seed: int = 0,
    data_dir: str | None = None,
) -> np.ndarray:
    """Moving MNIST-style videos (see the module docstring).

    Args:
      num_sequences: number of videos N.
      seed: seed of positions, velocities and digit choice (with ``split``).
      split: ``'train'`` or ``'test'``: which digit pool to draw from.
      num_frames: frames T per video (20 = 10 input + 10 target in the protocol).
      canvas: side of the square frame in pixels.
      digit_size: side of a digit in pixels (8×8 digits are upsampled to it).
      num_digits: digits per video.
      speed: pixels per frame; None means 0.1·(canvas − digit_size), 3.6 for 64/28.
      source: digit image source, a `load_image_dataset` spec (``'digits'``, ``'tfds:mnist'``).
      split_seed: seed of the digit pool's train/test split (same for train and test).
      data_dir: TFDS data directory for ``tfds:`` sources.

    Returns:
      f32[N, num_frames, canvas, canvas, 1] in [0, 1]. N=10,000 at the defaults is 3.3 GB.
    """
    pool, _ = digit_pool(
        split, digit_size=digit_size, source=source, split_seed=split_seed, data_dir=data_dir
    )
    rng, corners = _corners(
        num_sequences, seed, split, num_frames, canvas, digit_size, num_digits, speed
    )
    digits = pool[rng.integers(0, len(pool), size=(num_sequences, num_digits))]
    videos = np.zeros((num_sequences, num_frames, canvas, canvas, 1), np.float32)
    _paste(videos, np.rint(corners).astype(np.int64), digits)
    return videos


def make_motion_direction(
    num_sequences: int,
    *,
    seed: int,
    split: str = "train",
    num_frames: int = 8,
    canvas: int = 48,
    digit_size: int = 14,
    speed: int = 2,
    source: str = "digits",
    split_seed: int = 0,
    data_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One digit moving in one of 8 directions; the label is the direction.

    Label k is ``DIRECTION_NAMES[k]`` (E, NE, N, NW, W, SW, S, SE): each frame the digit moves
    ``speed`` pixels along every axis the direction uses, ``DIRECTION_STEPS[k]·speed`` as
    (row, col), so diagonal steps are √2 longer. Labels are balanced (each appears
    ⌊N/8⌋ or ⌈N/8⌉ times, in a random order).

    Args:
      num_sequences: number of videos N.
      seed: seed of labels, start positions and digit choice (with ``split``).
      split: ``'train'`` or ``'test'``: which digit pool to draw from.
      num_frames, canvas, digit_size: video length, frame side and digit side in pixels.
      speed: integer pixels per frame along each moving axis.
      source, split_seed, data_dir: digit images, as in `make_moving_digits`.

    Returns:
      (videos f32[N, num_frames, canvas, canvas, 1] in [0, 1], labels i32[N] in 0..7).
    """
    limit = canvas - digit_size
    travel = speed * (num_frames - 1)
    if speed < 1 or int(speed) != speed:
        raise ValueError(f"speed must be a positive integer number of pixels, got {speed}")
    if travel > limit:
        raise ValueError(
            f"a digit of {digit_size} px moving {speed} px for {num_frames} frames travels "
            f"{travel} px but a canvas of {canvas} leaves only {limit}: enlarge the canvas"
        )
    pool, _ = digit_pool(
        split, digit_size=digit_size, source=source, split_seed=split_seed, data_dir=data_dir
    )
    rng = _rng(seed, split, task=1)
    labels = rng.permutation(np.arange(num_sequences) % len(DIRECTION_NAMES)).astype(np.int32)
    steps = DIRECTION_STEPS[labels] * int(speed)  # [N, 2]
    # Uniform over the start corners whose whole trajectory stays inside [0, limit]:
    # an axis moving forward may start in [0, limit - travel], backward in [travel, limit].
    low = np.where(steps < 0, travel, 0)
    high = np.where(steps > 0, limit - travel, limit)
    start = rng.integers(low, high + 1)  # [N, 2]
    corners = (
        start[:, None, None, :]
        + np.arange(num_frames)[None, :, None, None] * steps[:, None, None, :]
    )
    digits = pool[rng.integers(0, len(pool), size=(num_sequences, 1))]
    videos = np.zeros((num_sequences, num_frames, canvas, canvas, 1), np.float32)
    _paste(videos, corners, digits)
    return videos, labels
