"""Images read as sequences, the classic GRU-on-images benchmarks.

Views of an image batch f32[N, H, W, C]:

* ``rows``            — one step per image row:  T = H,     F = W·C   (row-by-row MNIST).
* ``pixels``          — one step per pixel in raster order: T = H·W, F = C (sequential MNIST).
* ``permuted_pixels`` — the pixels in a fixed random order: T = H·W, F = C (permuted MNIST,
  Le et al. 2015). The permutation depends only on ``seed`` and the image size, so train
  and test images (and every batch) see the same order when given the same seed.
"""

from __future__ import annotations

import numpy as np

VIEWS = ("rows", "pixels", "permuted_pixels")


def _check_view(view: str) -> None:
    if view not in VIEWS:
        raise ValueError(f"unknown sequence view {view!r}: expected one of {', '.join(VIEWS)}")


def sequence_shape(image_shape: tuple[int, ...], view: str) -> tuple[int, int]:
    """(time steps, features per step) of one image of shape (H, W, C) under ``view``."""
    _check_view(view)
    if len(image_shape) != 3:
        raise ValueError(f"expected an image shape (H, W, C), got {tuple(image_shape)}")
    height, width, channels = image_shape
    if view == "rows":
        return height, width * channels
    return height * width, channels


def pixel_permutation(num_pixels: int, seed: int) -> np.ndarray:
    """The fixed pixel order of ``permuted_pixels``: i64[num_pixels], drawn from ``seed``."""
    return np.random.default_rng(seed).permutation(num_pixels)


def image_to_sequence(images: np.ndarray, view: str, *, seed: int = 0) -> np.ndarray:
    """Reads a batch of images as sequences.

    Args:
      images: [N, H, W, C] images.
      view: ``'rows'``, ``'pixels'`` or ``'permuted_pixels'`` (see the module docstring).
      seed: seed of the pixel permutation (``permuted_pixels`` only).

    Returns:
      [N, T, F] with (T, F) = ``sequence_shape(images.shape[1:], view)``, same dtype.
    """
    _check_view(view)
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape [N, H, W, C], got shape {images.shape}")
    num_steps, num_features = sequence_shape(images.shape[1:], view)
    sequences = images.reshape(images.shape[0], num_steps, num_features)
    if view == "permuted_pixels":
        sequences = sequences[:, pixel_permutation(num_steps, seed)]
    return sequences
