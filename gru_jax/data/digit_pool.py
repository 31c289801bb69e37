"""Pools of single-digit images that the generators (moving digits, digit strings) draw from.

A pool is one split of an image dataset, resized to the generator's digit size. Train and
test generators draw from the train and test split of the same ``split_seed``, so a generated
test set never shows a digit image seen in training. The default source is scikit-learn's
digits (8×8, split 1,437 / 360 as in ``load_image_dataset('digits')``); ``'tfds:mnist'`` (60,000
/ 10,000 28×28 images, when prepared) or an ``'npz:<path>'`` file work the same way.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from gru_jax.data.sources import load_image_dataset

SPLITS = ("train", "test")


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resizes f32[N, H, W] images to f32[N, size, size] (bicubic), clipped to [0, 1].

    Bicubic keeps the strokes of 8×8 digits smooth when upsampled to 28×28; its small
    overshoot is clipped so values stay in [0, 1].
    """
    if images.shape[1:] == (size, size):
        return images.astype(np.float32)
    resized = np.stack(
        [
            np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))
            for image in images.astype(np.float32)
        ]
    )
    return np.clip(resized, 0.0, 1.0)


@functools.lru_cache(maxsize=8)
def digit_pool(
    split: str,
    *,
    digit_size: int,
    source: str = "digits",
    split_seed: int = 0,
    data_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One split's digit images, resized; cached and read-only (callers copy what they paste).

    Args:
      split: ``'train'`` or ``'test'``.
      digit_size: side of the square output images in pixels.
      source: a single-channel `load_image_dataset` spec (``'digits'``, ``'tfds:mnist'``, ...).
      split_seed: seed of the ``digits`` train/test split; keep it equal for train and test.
      data_dir: TFDS data directory for ``tfds:`` sources.

    Returns:
      (images f32[N, digit_size, digit_size] in [0, 1], labels i32[N]).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected 'train' or 'test'")
    if digit_size < 1:
        raise ValueError(f"digit_size must be >= 1, got {digit_size}")
    dataset = load_image_dataset(source, seed=split_seed, data_dir=data_dir)
    images = dataset.x_train if split == "train" else dataset.x_test
    labels = dataset.y_train if split == "train" else dataset.y_test
    if images.shape[-1] != 1:
        raise ValueError(
            f"digit source {source!r} has {images.shape[-1]} channels; generators need 1"
        )
    images = resize_images(images[..., 0], digit_size)
    labels = labels.copy()
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels
