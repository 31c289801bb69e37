"""load_image_dataset: the embedded digits, user .npz files, and spec errors."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from gru_jax.data import ImageDataset, load_image_dataset


def test_digits_split_sizes_values_and_stratification():
    dataset = load_image_dataset("digits", seed=0)
    assert isinstance(dataset, ImageDataset)
    assert dataset.x_train.shape == (1437, 8, 8, 1) and dataset.x_test.shape == (360, 8, 8, 1)
    assert dataset.x_train.dtype == np.float32 and dataset.y_train.dtype == np.int32
    assert dataset.num_classes == 10 and dataset.name == "digits"
    assert dataset.x_train.min() == 0.0 and dataset.x_train.max() == 1.0
    # Values are the 0..16 counts divided by 16.
    np.testing.assert_array_equal(np.unique(dataset.x_train * 16), np.arange(17))
    # Stratified: each class's share of the test set matches its share of the whole set.
    all_counts = np.bincount(load_digits().target)
    test_counts = np.bincount(dataset.y_test, minlength=10)
    np.testing.assert_allclose(test_counts, all_counts * 0.2, atol=1)
    np.testing.assert_array_equal(test_counts + np.bincount(dataset.y_train), all_counts)


def test_digits_split_is_a_partition_and_deterministic_by_seed():
    dataset = load_image_dataset("digits", seed=0)
    again = load_image_dataset("digits", seed=0)
    other = load_image_dataset("digits", seed=1)
    np.testing.assert_array_equal(dataset.x_test, again.x_test)
    np.testing.assert_array_equal(dataset.y_train, again.y_train)
    assert not np.array_equal(dataset.y_test, other.y_test)
    # Disjoint and complete: train + test is exactly the 1,797 images, each used once.
    originals = load_digits().images.reshape(1797, -1)
    split = np.concatenate([dataset.x_train, dataset.x_test]).reshape(1797, -1) * 16
    np.testing.assert_array_equal(
        split[np.lexsort(split.T)], originals[np.lexsort(originals.T)].astype(np.float32)
    )


def _write_mnist_like(path, **overrides):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8),
        "y_train": np.arange(12, dtype=np.uint8) % 10,
        "x_test": rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8),
        "y_test": np.array([0, 1, 2, 3, 4], dtype=np.int64),
    }
    arrays.update(overrides)
    arrays = {key: value for key, value in arrays.items() if value is not None}
    np.savez(path, **arrays)
    return arrays


def test_npz_round_trip_mnist_layout(tmp_path):
    path = tmp_path / "mnist.npz"
    arrays = _write_mnist_like(path)
    dataset = load_image_dataset(f"npz:{path}")
    assert dataset.x_train.shape == (12, 28, 28, 1) and dataset.x_train.dtype == np.float32
    np.testing.assert_allclose(dataset.x_train[..., 0], arrays["x_train"] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(dataset.x_test[..., 0], arrays["x_test"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(dataset.y_train, arrays["y_train"])
    assert dataset.y_test.dtype == np.int32 and dataset.num_classes == 10
    assert dataset.name == f"npz:{path}"


def test_npz_float_images_with_channels_are_kept(tmp_path):
    path = tmp_path / "float.npz"
    images = np.linspace(0, 1, 4 * 5 * 6 * 3, dtype=np.float64).reshape(4, 5, 6, 3)
    _write_mnist_like(
        path, x_train=images, y_train=np.array([0, 1, 2, 6]), x_test=images[:2], y_test=[1, 1]
    )
    dataset = load_image_dataset(f"npz:{path}")
    np.testing.assert_allclose(dataset.x_train, images.astype(np.float32))
    assert dataset.num_classes == 7


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"y_test": None}, r"missing key\(s\) \['y_test'\]"),
        ({"x_train": np.zeros((12, 28), np.uint8)}, r"'x_train'.*shape \[N, H, W\].*\(12, 28\)"),
        ({"y_train": np.zeros(11, np.int64)}, r"x_train has 12 images but y_train has 11 labels"),
        ({"y_train": np.zeros(12, np.float32)}, r"'y_train'.*integer labels.*float32"),
        ({"y_test": np.array([0, 1, -2, 3, 4])}, r"'y_test'.*>= 0"),
        ({"x_test": np.zeros((5, 27, 28), np.uint8)}, r"train images have shape .*test images"),
        ({"x_train": np.zeros((12, 28, 28), np.int16)}, r"'x_train'.*uint8 or floating.*int16"),
        (
            {"x_test": np.full((5, 28, 28), 255.0)},
            r"'x_test'.*\[0, 1\], got values in \[255, 255\]",
        ),
        ({"x_test": np.full((5, 28, 28), np.nan)}, r"'x_test'.*\[0, 1\], got values in \[nan"),
    ],
)
def test_malformed_npz_raises_one_line_error(tmp_path, overrides, message):
    path = tmp_path / "bad.npz"
    _write_mnist_like(path, **overrides)
    with pytest.raises(ValueError, match=message) as error:
        load_image_dataset(f"npz:{path}")
    assert "\n" not in str(error.value)


def test_npz_missing_file_and_unreadable_file(tmp_path):
    with pytest.raises(ValueError, match=r"npz:.*nope\.npz: file not found"):
        load_image_dataset(f"npz:{tmp_path / 'nope.npz'}")
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(ValueError, match=r"not a readable \.npz file") as error:
        load_image_dataset(f"npz:{tmp_path / 'text.npz'}")
    assert "\n" not in str(error.value)
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="got a single array"):
        load_image_dataset(f"npz:{tmp_path / 'single.npy'}")


@pytest.mark.parametrize("spec", ["foo", "mnist", "tfds", "Digits", ""])
def test_unknown_spec_lists_the_valid_forms(spec):
    expected = f"unknown dataset {spec!r}: expected 'digits', 'tfds:<name>[:split]' or 'npz:<path>'"
    with pytest.raises(ValueError) as error:
        load_image_dataset(spec)
    assert str(error.value) == expected
