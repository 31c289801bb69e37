"""One entry point for image classification data: ``load_image_dataset(spec)``.

Spec forms:

* ``digits`` — scikit-learn's handwritten digits, shipped inside the package (no download):
  1,797 images of 8×8 pixels, values 0–16 scaled by 1/16, one channel, 10 classes. The
  train/test split is a stratified 80/20 split drawn from ``seed``: 1,437 train and 360 test
  images, every class in the same proportion in both.
* ``tfds:<name>[:<train split>[/<test split>]]`` — a prepared TensorFlow Datasets dataset,
  e.g. ``tfds:mnist``, ``tfds:mnist:train[:10%]``, ``tfds:mnist:train[:50000]/train[50000:]``
  (syntax in `gru_jax.data.tfds_source`).
* ``npz:<path>`` — arrays x_train, y_train, x_test, y_test in an ``.npz`` file, the layout of
  the common ``mnist.npz`` (see `gru_jax.data.npz_source`).
"""

from __future__ import annotations

import functools

import numpy as np

from gru_jax.data.image_dataset import ImageDataset, make_image_dataset
from gru_jax.data.npz_source import load_npz_dataset
from gru_jax.data.tfds_source import load_tfds_dataset

DIGITS_TEST_FRACTION = 0.2
DIGITS_NUM_TRAIN = 1437
DIGITS_NUM_TEST = 360
SPEC_FORMS = "'digits', 'tfds:<name>[:split]' or 'npz:<path>'"


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    labels = digits.target.astype(np.int32)
    images.flags.writeable = False  # shared by every call through the cache
    labels.flags.writeable = False
    return images, labels


def load_digits_dataset(seed: int = 0) -> ImageDataset:
    """scikit-learn's digits with a stratified, seeded 80/20 split (1,437 train / 360 test).

    Returns:
      `ImageDataset` with x_*: f32[N, 8, 8, 1] in [0, 1] and 10 classes.
    """
    from sklearn.model_selection import train_test_split

    images, labels = _digits_arrays()
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=seed
    )
    return make_image_dataset(x_train, y_train, x_test, y_test, name="digits", num_classes=10)


def load_image_dataset(spec: str, *, seed: int = 0, data_dir: str | None = None) -> ImageDataset:
    """Loads an image classification dataset from a spec string.

    Args:
      spec: ``'digits'``, ``'tfds:<name>[:<train split>[/<test split>]]'`` or
        ``'npz:<path>'`` (see the module docstring).
      seed: seed of the ``digits`` train/test split; other sources have fixed splits.
      data_dir: TFDS data directory (None: TFDS's default, ``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``).

    Returns:
      `ImageDataset` with images f32[N, H, W, C] in [0, 1] and labels i32[N].
    """
    if spec == "digits":
        return load_digits_dataset(seed)
    if spec.startswith("tfds:"):
        return load_tfds_dataset(spec[len("tfds:") :], data_dir=data_dir)
    if spec.startswith("npz:"):
        path = spec[len("npz:") :]
        if not path:
            raise ValueError("npz: missing file path; expected 'npz:<path>'")
        return load_npz_dataset(path)
    raise ValueError(f"unknown dataset {spec!r}: expected {SPEC_FORMS}")
