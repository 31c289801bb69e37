"""Digit strings: images of 1–5 handwritten digits side by side, labelled by token sequences.

The image-to-sequence task (read the number in the image). Each string draws its length
uniformly from [min_len, max_len], its digits from the split's digit pool, a gap before each
following digit uniformly from [min_gap, max_gap] pixels (negative gaps make digits touch or
overlap; overlaps combine by pixelwise max), a vertical offset per digit (jitter) uniformly
from [0, height − digit_size], and a horizontal start so the whole string fits the width.

Token vocabulary (``VOCAB_SIZE`` = 13)::

    0–9   the digits
    10    EOS_ID  end of string, right after the last digit
    11    PAD_ID  fills the rest of the row
    12    BOS_ID  start symbol for a decoder's first input (see `decoder_inputs`)

``tokens`` rows are ``[d_1, ..., d_L, EOS, PAD, ...]`` of width max_len + 1, so every row has
exactly one EOS. Test strings are drawn from the test digit pool only.
"""

from __future__ import annotations

import numpy as np

from gru_jax.data.digit_pool import digit_pool

EOS_ID = 10
PAD_ID = 11
BOS_ID = 12
VOCAB_SIZE = 13
_SPLIT_SALT = {"train": 0, "test": 1}


def make_digit_strings(
    num: int,
    *,
    seed: int,
    split: str = "train",
    min_len: int = 1,
    max_len: int = 5,
    height: int = 16,
    width: int = 80,
    digit_size: int = 12,
    min_gap: int = 0,
    max_gap: int = 3,
    noise_std: float = 0.0,
    source: str = "digits",
    split_seed: int = 0,
    data_dir: str | None = None,
    with_boxes: bool = False,
) -> dict[str, np.ndarray]:
    """Renders ``num`` digit strings (see the module docstring).

    Args:
      num: number of images N.
      seed: seed of lengths, digits, gaps, offsets and noise (with ``split``).
      split: ``'train'`` or ``'test'``: which digit pool to draw from.
      min_len, max_len: range of digits per string (inclusive).
      height, width: image size in pixels.
      digit_size: side of one digit in pixels (8×8 digits are upsampled to it).
      min_gap, max_gap: range of the horizontal gap between neighbours (inclusive, pixels).
      noise_std: standard deviation of Gaussian pixel noise (result clipped to [0, 1]).
      source, split_seed, data_dir: digit images, as in `gru_jax.data.digit_pool`.
      with_boxes: also return each digit's box (for plots of where a model looks).

    Returns:
      ``images`` f32[N, height, width, 1] in [0, 1]; ``tokens`` i32[N, max_len + 1];
      ``lengths`` i32[N] (digits per string, EOS excluded); with ``with_boxes``, ``boxes``
      i32[N, max_len, 4] as (top, left, height, width), -1 for absent digits.
    """
    if split not in _SPLIT_SALT:
        raise ValueError(f"unknown split {split!r}: expected 'train' or 'test'")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    if min_gap > max_gap or min_gap <= -digit_size:
        raise ValueError(f"need -digit_size < min_gap <= max_gap, got {min_gap}, {max_gap}")
    if digit_size > height:
        raise ValueError(f"digit_size {digit_size} exceeds the image height {height}")
    widest = max_len * digit_size + (max_len - 1) * max_gap
    if widest > width:
        raise ValueError(
            f"{max_len} digits of {digit_size} px with gaps up to {max_gap} px need a width "
            f"of {widest}, got {width}"
        )
    pool, pool_labels = digit_pool(
        split, digit_size=digit_size, source=source, split_seed=split_seed, data_dir=data_dir
    )
    rng = np.random.default_rng([seed, _SPLIT_SALT[split], 2])
    lengths = rng.integers(min_len, max_len + 1, size=num)
    choice = rng.integers(0, len(pool), size=(num, max_len))
    gaps = rng.integers(min_gap, max_gap + 1, size=(num, max_len))
    gaps[:, 0] = 0  # no gap before the first digit
    present = np.arange(max_len)[None, :] < lengths[:, None]
    # Left edges relative to the string start; the string then starts anywhere it fits.
    relative_left = np.cumsum(np.where(present, gaps, 0), axis=1) + np.arange(max_len) * digit_size
    string_width = relative_left[np.arange(num), lengths - 1] + digit_size
    start = rng.integers(0, width - string_width + 1)
    left = np.where(present, start[:, None] + relative_left, 0)  # absent slots paste zeros at 0
    top = rng.integers(0, height - digit_size + 1, size=(num, max_len))

    images = np.zeros((num, height, width), np.float32)
    offsets = np.arange(digit_size)
    sample = np.arange(num)[:, None, None]
    for slot in range(max_len):
        rows = (top[:, slot, None] + offsets)[:, :, None]
        cols = (left[:, slot, None] + offsets)[:, None, :]
        digit = np.where(present[:, slot, None, None], pool[choice[:, slot]], 0.0)
        images[sample, rows, cols] = np.maximum(images[sample, rows, cols], digit)
    if noise_std > 0:
        images = np.clip(images + rng.normal(0.0, noise_std, images.shape), 0.0, 1.0)

    tokens = np.full((num, max_len + 1), PAD_ID, np.int32)
    tokens[:, :max_len] = np.where(present, pool_labels[choice], PAD_ID)
    tokens[np.arange(num), lengths] = EOS_ID
    result = {
        "images": images.astype(np.float32)[..., np.newaxis],
        "tokens": tokens,
        "lengths": lengths.astype(np.int32),
    }
    if with_boxes:
        boxes = np.stack([top, left, np.full_like(top, digit_size), np.full_like(top, digit_size)])
        result["boxes"] = np.where(present[..., None], np.moveaxis(boxes, 0, -1), -1).astype(
            np.int32
        )
    return result


def decoder_inputs(tokens: np.ndarray) -> np.ndarray:
    """Teacher-forcing inputs: i32[N, L] tokens shifted right by one, starting with BOS_ID."""
    tokens = np.asarray(tokens)
    start = np.full((tokens.shape[0], 1), BOS_ID, tokens.dtype)
    return np.concatenate([start, tokens[:, :-1]], axis=1)


def tokens_to_text(tokens: np.ndarray) -> list[str]:
    """Decodes i32[N, L] token rows to digit strings, stopping at the first non-digit token."""
    texts = []
    for row in np.asarray(tokens):
        stop = np.flatnonzero(row > 9)
        digits = row[: stop[0]] if stop.size else row
        texts.append("".join(str(int(digit)) for digit in digits))
    return texts
