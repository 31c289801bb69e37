"""The in-memory image classification dataset every source returns, and its normalisation.

Every loader (`digits`, `tfds:`, `npz:`) ends in `make_image_dataset`, so all of them agree on
the contract: images f32[N, H, W, C] in [0, 1], labels i32[N] in [0, num_classes).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """An image classification dataset held in memory.

    Attributes:
      x_train: f32[num_train, height, width, channels], values in [0, 1].
      y_train: i32[num_train], class ids in [0, num_classes).
      x_test: f32[num_test, height, width, channels], values in [0, 1].
      y_test: i32[num_test].
      num_classes: number of classes (from the dataset's metadata, else max label + 1).
      name: the spec the dataset was loaded from, e.g. ``'digits'`` or ``'tfds:mnist'``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


def images_to_float(images: np.ndarray, *, what: str) -> np.ndarray:
    """Converts images to f32[N, H, W, C] in [0, 1].

    Args:
      images: uint8 (divided by 255) or floating (kept as is; must lie in [0, 1]) array of
        shape [N, H, W] (a channel axis is added) or [N, H, W, C].
      what: name used in error messages, e.g. ``"npz 'x_train'"``.

    Returns:
      f32[N, H, W, C].
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4:
        raise ValueError(
            f"{what}: expected images of shape [N, H, W] or [N, H, W, C], got shape {images.shape}"
        )
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(images.dtype, np.floating):
        low, high = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
        if not 0.0 <= low <= high <= 1.0:  # also rejects NaN
            raise ValueError(
                f"{what}: float images must lie in [0, 1], got values in [{low:g}, {high:g}]; "
                "store uint8 pixels or scale them first"
            )
        return images.astype(np.float32)
    raise ValueError(f"{what}: expected uint8 or floating images, got dtype {images.dtype}")


def labels_to_int(labels: np.ndarray, *, what: str) -> np.ndarray:
    """Converts integer class ids to i32[N]; rejects floats, negatives and wrong ranks."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{what}: expected labels of shape [N], got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what}: expected integer labels, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{what}: labels must be >= 0, got minimum {labels.min()}")
    return labels.astype(np.int32)


def make_image_dataset(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    name: str,
    num_classes: int | None = None,
) -> ImageDataset:
    """Validates and normalises raw arrays into an `ImageDataset`.

    Args:
      x_train, x_test: uint8 or float images, [N, H, W] or [N, H, W, C].
      y_train, y_test: integer labels [N].
      name: dataset name, used in error messages and stored on the result.
      num_classes: known number of classes; None means max label + 1.
    """
    x_train = images_to_float(x_train, what=f"{name} 'x_train'")
    x_test = images_to_float(x_test, what=f"{name} 'x_test'")
    y_train = labels_to_int(y_train, what=f"{name} 'y_train'")
    y_test = labels_to_int(y_test, what=f"{name} 'y_test'")
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise ValueError(
                f"{name}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels"
            )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{name}: train images have shape {x_train.shape[1:]} but test images "
            f"have shape {x_test.shape[1:]}"
        )
    largest_label = max((int(y.max()) for y in (y_train, y_test) if y.size), default=-1)
    if num_classes is None:
        num_classes = largest_label + 1
    elif largest_label >= num_classes:
        raise ValueError(f"{name}: label {largest_label} is out of range for {num_classes} classes")
    return ImageDataset(x_train, y_train, x_test, y_test, int(num_classes), name)
