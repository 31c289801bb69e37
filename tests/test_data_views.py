"""image_to_sequence / sequence_shape: the rows, pixels and permuted-pixels views."""

import numpy as np
import pytest

from gru_jax.data import VIEWS, image_to_sequence, load_image_dataset, sequence_shape


def _images(count=3, height=4, width=5, channels=2):
    return np.arange(count * height * width * channels, dtype=np.float32).reshape(
        count, height, width, channels
    )


def test_rows_view_is_one_step_per_row():
    images = _images()
    sequences = image_to_sequence(images, "rows")
    assert sequences.shape == (3, 4, 10) == (3, *sequence_shape((4, 5, 2), "rows"))
    # Step t holds row t, pixels left to right with their channels interleaved.
    np.testing.assert_array_equal(sequences[1, 2], images[1, 2].reshape(-1))
    np.testing.assert_array_equal(sequences[0, 0, :4], [0, 1, 2, 3])


def test_pixels_view_is_raster_order():
    images = _images()
    sequences = image_to_sequence(images, "pixels")
    assert sequences.shape == (3, 20, 2) == (3, *sequence_shape((4, 5, 2), "pixels"))
    # Step t is pixel (t // W, t % W).
    for step in (0, 6, 19):
        np.testing.assert_array_equal(sequences[2, step], images[2, step // 5, step % 5])


def test_permuted_pixels_is_a_fixed_permutation_shared_by_train_and_test():
    dataset = load_image_dataset("digits")
    train = image_to_sequence(dataset.x_train, "permuted_pixels", seed=3)
    test = image_to_sequence(dataset.x_test, "permuted_pixels", seed=3)
    assert train.shape == (1437, 64, 1) and test.shape == (360, 64, 1)
    # Recover the permutation from images whose pixels are their own raster index.
    probe = np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1)
    order = image_to_sequence(probe, "permuted_pixels", seed=3)[0, :, 0].astype(int)
    assert sorted(order) == list(range(64)) and (order != np.arange(64)).any()
    pixels_train = image_to_sequence(dataset.x_train, "pixels")
    pixels_test = image_to_sequence(dataset.x_test, "pixels")
    np.testing.assert_array_equal(train, pixels_train[:, order])
    np.testing.assert_array_equal(test, pixels_test[:, order])
    # Fixed by the seed: same seed, same order; another seed, another order.
    again = image_to_sequence(probe, "permuted_pixels", seed=3)[0, :, 0].astype(int)
    other = image_to_sequence(probe, "permuted_pixels", seed=4)[0, :, 0].astype(int)
    np.testing.assert_array_equal(order, again)
    assert (order != other).any()


def test_unknown_view_lists_the_valid_views():
    message = "unknown sequence view 'columns': expected one of rows, pixels, permuted_pixels"
    with pytest.raises(ValueError) as error:
        image_to_sequence(_images(), "columns")
    assert str(error.value) == message
    with pytest.raises(ValueError, match="expected one of rows, pixels, permuted_pixels"):
        sequence_shape((28, 28, 1), "columns")
    assert VIEWS == ("rows", "pixels", "permuted_pixels")


def test_wrong_image_rank_is_an_error():
    with pytest.raises(ValueError, match=r"\[N, H, W, C\], got shape \(4, 5\)"):
        image_to_sequence(np.zeros((4, 5)), "rows")
    with pytest.raises(ValueError, match=r"\(H, W, C\), got \(28, 28\)"):
        sequence_shape((28, 28), "rows")
