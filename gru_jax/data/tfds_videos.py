"""Labelled videos of variable length from TensorFlow Datasets (e.g. ``ucf101``), reduced to
a fixed number of evenly spaced frames at a fixed size so that they fit in memory.

TFDS's video builders (``ucf101``, ``moving_mnist``) import tensorflow to exist, so reading
them needs the ``tensorflow`` extra; without it `open_tfds_builder` raises a one-line
error that says so. Nothing here downloads.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from gru_jax.data.tfds_source import open_tfds_builder, open_tfds_split


def sample_frames(video: np.ndarray, num_frames: int, frame_size: int) -> np.ndarray:
    """``num_frames`` evenly spaced frames of ``video`` (u8[T, H, W, C], T >= 1), each
    resized to ``frame_size × frame_size`` (bilinear); short videos repeat frames.

    Returns:
      u8[num_frames, frame_size, frame_size, C].
    """
    video = np.asarray(video)
    if video.ndim != 4 or len(video) == 0:
        raise ValueError(f"expected a video u8[T >= 1, H, W, C]; got shape {video.shape}")
    indices = np.rint(np.linspace(0, len(video) - 1, num_frames)).astype(np.int64)
    frames = []
    for frame in video[indices]:
        image = Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame)
        resized = np.asarray(image.resize((frame_size, frame_size), Image.Resampling.BILINEAR))
        frames.append(resized.reshape(frame_size, frame_size, frame.shape[-1]))
    return np.stack(frames).astype(np.uint8)


def load_tfds_videos(
    name: str,
    *,
    split: str,
    num_frames: int,
    frame_size: int,
    data_dir: str | None = None,
    max_examples: int | None = None,
    subset_seed: int = 0,
    video_feature: str = "video",
    label_feature: str = "label",
) -> tuple[np.ndarray, np.ndarray, int]:
    """Reads a labelled video split (one example at a time: videos vary in length).

    Args:
      name: TFDS name, with a config if needed (``'ucf101'``, ``'ucf101/ucf101_1_256'``).
      split: TFDS split (``'train'``, ``'test[:10%]'``, ...).
      num_frames, frame_size: what `sample_frames` keeps of each video.
      max_examples: read at most this many examples (None: the whole split). A smaller
        count reads a random subset drawn with ``subset_seed`` (in storage order), not the
        split's first examples, which a builder may have stored sorted by class.
      subset_seed: seed of that subset; the same seed gives the same examples.

    Returns:
      (videos u8[N, num_frames, frame_size, frame_size, C], labels i32[N], num_classes).
    """
    builder = open_tfds_builder(name, data_dir)
    source = open_tfds_split(builder, split, name=name, data_dir=data_dir)
    count = len(source) if max_examples is None else min(len(source), max_examples)
    if count == 0:
        raise ValueError(f"tfds:{name} split '{split}': the split is empty")
    indices = range(count)
    if count < len(source):
        rng = np.random.default_rng(subset_seed)
        indices = np.sort(rng.choice(len(source), size=count, replace=False)).tolist()
    videos, labels = [], []
    for index in indices:
        record = source[index]
        for feature in (video_feature, label_feature):
            if feature not in record:
                raise ValueError(
                    f"tfds:{name}: examples have no '{feature}' feature; they have {sorted(record)}"
                )
        videos.append(sample_frames(record[video_feature], num_frames, frame_size))
        labels.append(int(record[label_feature]))
    labels_array = np.asarray(labels, np.int32)
    num_classes = getattr(builder.info.features[label_feature], "num_classes", None)
    return np.stack(videos), labels_array, int(num_classes or labels_array.max() + 1)
