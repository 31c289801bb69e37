"""The `tfds:` source, exercised two ways without tensorflow and without downloads.

1. `tfds.testing.mock_data` around the registered `mnist` builder: TFDS builds the builder
   and its metadata, and the mock replaces only `builder.as_data_source`.
2. Tiny builders defined here with `tfds.features.Tensor` features, really prepared into
   array_record files under a temporary directory (TFDS can do that without tensorflow) and
   read back through the same code path a user's prepared `mnist` takes.
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from gru_jax.data import load_image_dataset, load_moving_mnist_tfds
from gru_jax.data.tfds_source import load_tfds_sequences, parse_tfds_spec


class GruJaxTinyDigits(tfds.core.GeneratorBasedBuilder):
    """10 train and 4 test 8×8 images; image i of a split is filled with the value 10·i."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    # 5 classes although only 0..2 occur: num_classes must come from metadata.
                    "label": tfds.features.ClassLabel(num_classes=5),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(10), "test": self._generate_examples(4)}

    def _generate_examples(self, count):
        for index in range(count):
            image = np.full((8, 8, 1), 10 * index, np.uint8)
            yield index, {"image": image, "label": index % 3}


class GruJaxTinyVideos(tfds.core.GeneratorBasedBuilder):
    """3 test videos of 4 frames; frame t of video i is filled with 20·i + t."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        video = tfds.features.Tensor(shape=(4, 6, 6, 1), dtype=np.uint8)
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({"image_sequence": video})
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for index in range(3):
            frames = 20 * index + np.arange(4, dtype=np.uint8)
            yield (
                index,
                {"image_sequence": np.broadcast_to(frames[:, None, None, None], (4, 6, 6, 1))},
            )


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    for builder_class in (GruJaxTinyDigits, GruJaxTinyVideos):
        builder_class(data_dir=str(data_dir)).download_and_prepare(file_format="array_record")
    return str(data_dir)


def _fill_values(images: np.ndarray) -> np.ndarray:
    """The constant each image is filled with, in 0..255, checking it is constant."""
    flat = np.rint(images.reshape(len(images), -1) * 255).astype(int)
    assert (flat == flat[:, :1]).all()
    return flat[:, 0]


def test_prepared_array_record_dataset_is_read_exactly(prepared_dir):
    dataset = load_image_dataset("tfds:gru_jax_tiny_digits", data_dir=prepared_dir)
    assert dataset.x_train.shape == (10, 8, 8, 1) and dataset.x_test.shape == (4, 8, 8, 1)
    assert dataset.x_train.dtype == np.float32 and dataset.y_train.dtype == np.int32
    assert dataset.num_classes == 5  # from the ClassLabel, not max label + 1
    train_values, test_values = _fill_values(dataset.x_train), _fill_values(dataset.x_test)
    np.testing.assert_array_equal(np.sort(train_values), 10 * np.arange(10))
    np.testing.assert_array_equal(np.sort(test_values), 10 * np.arange(4))
    # Labels stay attached to their images through the file shuffling.
    np.testing.assert_array_equal(dataset.y_train, (train_values // 10) % 3)
    np.testing.assert_array_equal(dataset.y_test, (test_values // 10) % 3)


def test_split_override_carves_validation_from_train(prepared_dir):
    dataset = load_image_dataset(
        "tfds:gru_jax_tiny_digits:train[:40%]/train[40%:]", data_dir=prepared_dir
    )
    train_values, test_values = _fill_values(dataset.x_train), _fill_values(dataset.x_test)
    assert len(train_values) == 4 and len(test_values) == 6
    assert not set(train_values) & set(test_values)
    np.testing.assert_array_equal(
        np.sort(np.concatenate([train_values, test_values])), 10 * np.arange(10)
    )
    only_train = load_image_dataset("tfds:gru_jax_tiny_digits:train[:3]", data_dir=prepared_dir)
    assert len(only_train.x_train) == 3 and len(only_train.x_test) == 4  # test keeps 'test'


@pytest.mark.parametrize(
    "splits, message",
    [
        ("validation", r"split 'validation': Unknown split 'validation'"),
        ("train[:abc]", r"split 'train\[:abc\]': Error parsing split"),
        ("train[50:60]", r"split 'train\[50:60\]': .*incompatible with 10 examples"),
    ],
)
def test_bad_split_on_a_prepared_dataset_is_one_line(prepared_dir, splits, message):
    with pytest.raises(
        ValueError, match=r"tfds:gru_jax_tiny_digits: cannot read " + message
    ) as error:
        load_image_dataset(f"tfds:gru_jax_tiny_digits:{splits}", data_dir=prepared_dir)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "body, expected",
    [
        ("mnist", ("mnist", "train", "test")),
        ("mnist:train[:10%]", ("mnist", "train[:10%]", "test")),
        ("mnist:train[:50000]/train[50000:]", ("mnist", "train[:50000]", "train[50000:]")),
        ("mnist:/test[:100]", ("mnist", "train", "test[:100]")),
        # A config ('dataset/config') before the first ':' belongs to the name.
        (
            "cifar10_corrupted/brightness_1:train+test",
            ("cifar10_corrupted/brightness_1", "train+test", "test"),
        ),
    ],
)
def test_parse_tfds_spec(body, expected):
    assert parse_tfds_spec(body) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("tfds:", "missing dataset name"),
        ("tfds:mnist:train/test/extra", "at most one '/'"),
        ("tfds:no_such_dataset_xyz", "unknown TFDS dataset 'no_such_dataset_xyz'"),
    ],
)
def test_bad_tfds_specs(spec, message):
    with pytest.raises(ValueError, match=message) as error:
        load_image_dataset(spec)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["mnist", "gru_jax_tiny_digits"])
def test_not_prepared_error_says_how_to_prepare(tmp_path, name):
    empty = tmp_path / "empty"
    with pytest.raises(ValueError) as error:
        load_image_dataset(f"tfds:{name}", data_dir=str(empty))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"TFDS dataset '{name}' not found in {empty / name}")
    assert (
        f"tfds.builder('{name}', data_dir='{empty}')"
        ".download_and_prepare(file_format='array_record')" in message
    )
    assert 'pip install "gru_jax[tensorflow]"' in message
    # Nothing was downloaded or prepared on the way.
    assert not any(path.is_file() for path in tmp_path.rglob("*"))


def test_mock_data_mnist_through_the_real_builder():
    with tfds.testing.mock_data(num_examples=6):
        dataset = load_image_dataset("tfds:mnist")
    assert dataset.x_train.shape == (6, 28, 28, 1) and dataset.x_test.shape == (6, 28, 28, 1)
    assert dataset.num_classes == 10 and dataset.name == "tfds:mnist"
    assert 0.0 <= dataset.x_train.min() and dataset.x_train.max() <= 1.0
    assert dataset.x_train.std() > 0.1  # random uint8 pixels, not a constant
    # uint8 pixels were divided by 255 exactly.
    np.testing.assert_allclose(dataset.x_train * 255, np.rint(dataset.x_train * 255), atol=1e-4)
    assert set(dataset.y_train) <= set(range(10))


def test_mock_data_source_sees_the_requested_splits_and_values():
    requested = []

    def fake_data_source(builder, split, **kwargs):
        requested.append((builder.name, split))
        offset = 100 if split == "train[50000:]" else 0
        return [
            {"image": np.full((28, 28, 1), offset + index, np.uint8), "label": np.int64(index)}
            for index in range(3)
        ]

    with tfds.testing.mock_data(as_data_source_fn=fake_data_source):
        dataset = load_image_dataset("tfds:mnist:train[:50000]/train[50000:]")
    assert requested == [("mnist", "train[:50000]"), ("mnist", "train[50000:]")]
    np.testing.assert_allclose(dataset.x_train[:, 0, 0, 0], np.arange(3) / 255, rtol=1e-6)
    np.testing.assert_allclose(dataset.x_test[:, 0, 0, 0], (100 + np.arange(3)) / 255, rtol=1e-6)
    np.testing.assert_array_equal(dataset.y_test, [0, 1, 2])


def test_missing_feature_is_named():
    def no_labels(builder, split, **kwargs):
        return [{"image": np.zeros((28, 28, 1), np.uint8)}]

    with tfds.testing.mock_data(as_data_source_fn=no_labels):
        with pytest.raises(ValueError, match=r"no 'label' feature; they have \['image'\]"):
            load_image_dataset("tfds:mnist")


def test_video_sequences_from_prepared_files(prepared_dir):
    videos = load_tfds_sequences(
        "gru_jax_tiny_videos", split="test", feature="image_sequence", data_dir=prepared_dir
    )
    assert videos.shape == (3, 4, 6, 6, 1) and videos.dtype == np.float32
    first_pixels = np.rint(videos[:, :, 0, 0, 0] * 255).astype(int)
    order = np.argsort(first_pixels[:, 0])
    np.testing.assert_array_equal(
        first_pixels[order], 20 * np.arange(3)[:, None] + np.arange(4)[None, :]
    )


def test_moving_mnist_missing_gives_a_clear_error(tmp_path):
    with pytest.raises(ValueError) as error:
        load_moving_mnist_tfds(data_dir=str(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    assert "TFDS dataset 'moving_mnist'" in message
    assert "download_and_prepare(file_format='array_record')" in message
    assert 'pip install "gru_jax[tensorflow]"' in message
