"""TensorFlow Datasets read through random-access data sources (``builder.as_data_source``).

Reading a *prepared* dataset needs no tensorflow: TFDS serves ``array_record`` files as NumPy
examples. Preparing (downloading and encoding) datasets with ``Image``/``Video`` features does
need tensorflow, which is the optional extra ``pip install "gru_jax[tensorflow]"``. Nothing
here downloads: an unprepared dataset is a one-line error that says how to prepare it.

Spec syntax used by ``load_image_dataset('tfds:...')``::

    tfds:<name>[:<train split>[/<test split>]]

    tfds:mnist                              train='train',         test='test'
    tfds:mnist:train[:10%]                  train='train[:10%]',   test='test'
    tfds:mnist:train[:50000]/train[50000:]  a validation split carved from 'train'
    tfds:mnist:/test[:1000]                 an empty part keeps its default

Splits use TFDS's own slicing syntax (``train[:10%]``, ``train[100:200]``, ``train+test``),
which never contains ``/``. The name ends at the first ``:``, so it may carry a config
(``dataset/config``) but not a version.
"""

from __future__ import annotations

import numpy as np

from gru_jax.data.image_dataset import ImageDataset, make_image_dataset

DEFAULT_TRAIN_SPLIT = "train"
DEFAULT_TEST_SPLIT = "test"
_READ_CHUNK = 4096  # examples per batched read: bounds the memory of decoded records in flight


def parse_tfds_spec(body: str) -> tuple[str, str, str]:
    """Splits ``'<name>[:<train split>[/<test split>]]'`` into (name, train split, test split)."""
    name, _, splits = body.partition(":")
    if not name:
        raise ValueError(f"tfds:{body}: missing dataset name; expected 'tfds:<name>[:split]'")
    train_split, separator, test_split = splits.partition("/")
    if "/" in test_split:
        raise ValueError(
            f"tfds:{body}: expected at most one '/' between the train and test splits, "
            "e.g. 'tfds:mnist:train[:50000]/train[50000:]'"
        )
    return name, train_split or DEFAULT_TRAIN_SPLIT, test_split or DEFAULT_TEST_SPLIT


def _prepare_hint(name: str, data_dir: str | None, *, mention_tensorflow: bool = True) -> str:
    data_dir_argument = f", data_dir={data_dir!r}" if data_dir else ""
    command = (
        f'python -c "import tensorflow_datasets as tfds; '
        f"tfds.builder('{name}'{data_dir_argument})"
        f".download_and_prepare(file_format='array_record')\""
    )
    if not mention_tensorflow:
        return command
    return (
        f"prepare it once with: {command} (preparing datasets with Image or Video features "
        'needs tensorflow: pip install "gru_jax[tensorflow]")'
    )


def open_tfds_builder(name: str, data_dir: str | None = None):
    """Returns ``tfds.builder(name, data_dir=data_dir)`` with one-line errors.

    Raises:
      ValueError: the name is not a TFDS dataset, or its builder cannot be built here (some
        builders, e.g. ``moving_mnist``'s Video feature, import tensorflow just to exist).
    """
    import tensorflow_datasets as tfds  # deferred: importing TFDS costs about a second

    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(
            f"unknown TFDS dataset '{name}' (see tfds.list_builders() for the names)"
        ) from error
    except ImportError as error:
        raise ValueError(
            f"TFDS dataset '{name}' cannot be read without tensorflow (its builder imports it): "
            'pip install "gru_jax[tensorflow]"; if it is not prepared yet, prepare it once with: '
            + _prepare_hint(name, data_dir, mention_tensorflow=False)
        ) from error


def open_tfds_split(builder, split: str, *, name: str, data_dir: str | None = None):
    """Returns the random-access data source of one split (``builder.as_data_source(split)``).

    Raises:
      ValueError: the dataset is not prepared in ``data_dir`` (or is prepared as tfrecord,
        which has no random access), with the command that prepares it.
    """
    from tensorflow_datasets.core import file_adapters

    try:
        return builder.as_data_source(split=split)
    except Exception as error:  # TFDS reports a missing dataset in several ways
        if not builder.is_prepared():
            raise ValueError(
                f"TFDS dataset '{name}' not found in {builder.data_dir}; "
                + _prepare_hint(name, data_dir)
            ) from error
        if builder.info.file_format != file_adapters.FileFormat.ARRAY_RECORD:
            raise ValueError(
                f"TFDS dataset '{name}' is prepared as {builder.info.file_format.value}, "
                f"which has no random access; prepare it again as array_record: "
                + _prepare_hint(name, data_dir)
            ) from error
        # Prepared and readable: the error is about the request (an unknown or bad split).
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ValueError(f"tfds:{name}: cannot read split {split!r}: {first_line}") from error


def read_features(source, features: tuple[str, ...], *, what: str) -> dict[str, np.ndarray]:
    """Reads every example of a data source and stacks the named features.

    Returns:
      ``{feature: array[len(source), ...]}``.
    """
    num_examples = len(source)
    columns: dict[str, list[np.ndarray]] = {feature: [] for feature in features}
    for start in range(0, num_examples, _READ_CHUNK):
        keys = list(range(start, min(start + _READ_CHUNK, num_examples)))
        records = None
        if hasattr(source, "__getitems__"):
            try:
                records = source.__getitems__(keys)
            except TypeError:  # the source of tfds.testing.mock_data cannot batch reads
                records = None
        if records is None:
            records = [source[key] for key in keys]
        for record in records:
            for feature in features:
                if feature not in record:
                    raise ValueError(
                        f"{what}: examples have no '{feature}' feature; they have {sorted(record)}"
                    )
                columns[feature].append(np.asarray(record[feature]))
    if num_examples == 0:
        raise ValueError(f"{what}: the split is empty")
    return {feature: np.stack(values) for feature, values in columns.items()}


def load_tfds_dataset(body: str, *, data_dir: str | None = None) -> ImageDataset:
    """Loads ``tfds:<body>`` (see the module docstring) as an `ImageDataset`.

    Reads the ``'image'`` (uint8 [H, W, C]) and ``'label'`` features; num_classes comes from
    the label's ClassLabel metadata when it has one, else max label + 1.
    """
    name, train_split, test_split = parse_tfds_spec(body)
    builder = open_tfds_builder(name, data_dir)
    arrays = {}
    for part, split in (("train", train_split), ("test", test_split)):
        source = open_tfds_split(builder, split, name=name, data_dir=data_dir)
        columns = read_features(source, ("image", "label"), what=f"tfds:{name} split '{split}'")
        arrays[f"x_{part}"] = columns["image"]
        arrays[f"y_{part}"] = columns["label"]
    label_feature = builder.info.features["label"]
    num_classes = getattr(label_feature, "num_classes", None)
    return make_image_dataset(**arrays, name=f"tfds:{body}", num_classes=num_classes)


def load_tfds_sequences(
    name: str, *, split: str, feature: str, data_dir: str | None = None
) -> np.ndarray:
    """Loads one video feature of a TFDS split as f32[N, T, H, W, C] in [0, 1]."""
    builder = open_tfds_builder(name, data_dir)
    source = open_tfds_split(builder, split, name=name, data_dir=data_dir)
    videos = read_features(source, (feature,), what=f"tfds:{name} split '{split}'")[feature]
    if videos.ndim != 5:
        raise ValueError(
            f"tfds:{name}: expected '{feature}' of shape [T, H, W, C], got {videos.shape[1:]}"
        )
    if videos.dtype == np.uint8:
        return videos.astype(np.float32) / np.float32(255.0)
    return videos.astype(np.float32)


def load_moving_mnist_tfds(data_dir: str | None = None, split: str = "test") -> np.ndarray:
    """The fixed Moving MNIST test set of Srivastava et al. (2015) from TFDS ``moving_mnist``.

    TFDS ships only a ``'test'`` split: 10,000 sequences of 20 frames (10 input + 10 target).
    Its Video feature imports tensorflow, so reading it needs the ``tensorflow`` extra.

    Returns:
      f32[N, 20, 64, 64, 1] in [0, 1].
    """
    return load_tfds_sequences(
        "moving_mnist", split=split, feature="image_sequence", data_dir=data_dir
    )
