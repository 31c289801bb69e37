"""Video classification: the direction a digit moves in (8 classes, generated), or the
action of a UCF101 clip (TFDS), with a per-frame CNN and a GRU over the frames
(`gru_jax.models.VideoClassifier`).

Control: the same trained model classifies the test videos with their frames in a fixed,
seeded random order per video (never the identity). ``shuffled_accuracy`` near chance
says the model uses the order of the frames, not what any single frame shows.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

from experiments import plots
from experiments.tasks.base import Array, Batch, Task, TaskData
from gru_jax import data as gru_data
from gru_jax.models import VideoClassifier

SOURCES = ("motion_direction", "tfds")


def frame_permutations(num_videos: int, num_frames: int, seed: int) -> np.ndarray:
    """One random frame order per video, never the identity: i32[num_videos, num_frames]."""
    if num_frames < 2:
        raise ValueError(f"shuffling frames needs at least 2 frames; got {num_frames}")
    rng = np.random.default_rng(seed)
    orders = np.stack([rng.permutation(num_frames) for _ in range(num_videos)])
    identity = np.arange(num_frames)
    for row in np.flatnonzero((orders == identity).all(axis=1)):
        orders[row] = np.roll(identity, 1)  # a rotation: still every frame, wrong order
    return orders.astype(np.int32)


def shuffle_frames(videos: Array, orders: Array) -> Array:
    """``videos[b, orders[b, t]]`` for every b, t: f32[B, T, ...] reordered along time."""
    index = orders.reshape(*orders.shape, *([1] * (videos.ndim - 2)))
    return jnp.take_along_axis(videos, index, axis=1)


def to_float(videos: Array) -> Array:
    """u8 frames → f32 in [0, 1]."""
    return videos.astype(jnp.float32) / 255.0


class VideoClassificationTask(Task):
    """Config fields used: ``dataset.{source, num_train, num_test, test_seed, num_frames,
    canvas, digit_size, speed, digit_source, split_seed, tfds_name, train_split,
    test_split, frame_size, data_dir, shuffle_seed}``, ``model.*`` (`VideoClassifier`'s
    arguments), ``train.label_smoothing``, ``plots.num_examples``."""

    main_metric = "accuracy"

    def __init__(self, config):
        super().__init__(config)
        if config.dataset.source not in SOURCES:
            raise ValueError(
                f"unknown dataset.source {config.dataset.source!r}: expected one of "
                f"{', '.join(SOURCES)}"
            )

    def _motion_direction(self, split: str, count: int, seed: int):
        cfg = self.config.dataset
        videos, labels = gru_data.make_motion_direction(
            count,
            seed=seed,
            split=split,
            num_frames=cfg.num_frames,
            canvas=cfg.canvas,
            digit_size=cfg.digit_size,
            speed=cfg.speed,
            source=cfg.digit_source,
            split_seed=cfg.split_seed,
            data_dir=cfg.data_dir or None,
        )
        return np.rint(videos * 255.0).astype(np.uint8), labels

    def _tfds(self, split: str, count: int):
        from gru_jax.data.tfds_videos import load_tfds_videos

        cfg = self.config.dataset
        return load_tfds_videos(
            cfg.tfds_name,
            split=split,
            num_frames=cfg.num_frames,
            frame_size=cfg.frame_size,
            data_dir=cfg.data_dir or None,
            max_examples=count if count > 0 else None,
        )

    def load_data(self) -> TaskData:
        cfg = self.config.dataset
        if cfg.source == "motion_direction":
            x_train, y_train = self._motion_direction("train", cfg.num_train, self.config.seed)
            x_test, y_test = self._motion_direction("test", cfg.num_test, cfg.test_seed)
            num_classes, names = len(gru_data.DIRECTION_NAMES), list(gru_data.DIRECTION_NAMES)
        else:
            x_train, y_train, num_classes = self._tfds(cfg.train_split, cfg.num_train)
            x_test, y_test, _ = self._tfds(cfg.test_split, cfg.num_test)
            names = [str(k) for k in range(num_classes)]
        orders = frame_permutations(len(x_test), x_test.shape[1], cfg.shuffle_seed)
        logging.info(
            "%s: %d train / %d test videos of shape %s, %d classes",
            cfg.source, len(x_train), len(x_test), x_test.shape[1:], num_classes,
        )  # fmt: skip
        return TaskData(
            train={"videos": x_train, "label": y_train},
            test={"videos": x_test, "label": y_test, "shuffle_order": orders},
            info={"num_classes": num_classes, "class_names": names},
        )

    def build_model(self, data: TaskData, rngs: nnx.Rngs) -> nnx.Module:
        cfg = self.config.model
        return VideoClassifier(
            data.train["videos"].shape[2:],
            data.info["num_classes"],
            conv_channels=tuple(cfg.conv_channels),
            frame_features=cfg.frame_features,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout,
            readout=cfg.readout,
            rngs=rngs,
        )

    def loss(
        self, model: nnx.Module, batch: Batch, progress: Array | None = None
    ) -> tuple[Array, dict[str, Array]]:
        logits = model(to_float(batch["videos"]))
        targets = jax.nn.one_hot(batch["label"], logits.shape[-1])
        targets = optax.smooth_labels(targets, self.config.train.label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        return loss, {"accuracy": (logits.argmax(-1) == batch["label"]).mean()}

    def eval_outputs(self, model: nnx.Module, batch: Batch) -> dict[str, Array]:
        videos = to_float(batch["videos"])
        logits = model(videos)
        shuffled_logits = model(shuffle_frames(videos, batch["shuffle_order"]))
        prediction = logits.argmax(-1).astype(jnp.int32)
        shuffled_prediction = shuffled_logits.argmax(-1).astype(jnp.int32)
        return {
            "loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]),
            "accuracy": (prediction == batch["label"]).astype(jnp.float32),
            "shuffled_accuracy": (shuffled_prediction == batch["label"]).astype(jnp.float32),
            "prediction": prediction,
            "shuffled_prediction": shuffled_prediction,
            "label": batch["label"],
        }

    def summarize(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        return {
            key: float(np.mean(outputs[key])) for key in ("accuracy", "shuffled_accuracy", "loss")
        }

    def plots(
        self, model: nnx.Module, data: TaskData, outputs: dict[str, np.ndarray], plot_dir: str
    ) -> list[str]:
        from experiments import video_plots

        num_classes = data.info["num_classes"]
        paths = [
            plots.confusion_matrix(
                outputs["label"],
                outputs["prediction"],
                num_classes,
                os.path.join(plot_dir, "confusion_matrix.png"),
            ),
            plots.confusion_matrix(
                outputs["label"],
                outputs["shuffled_prediction"],
                num_classes,
                os.path.join(plot_dir, "confusion_matrix_shuffled.png"),
            ),
        ]
        count = min(self.config.plots.num_examples, len(outputs["label"]))
        if count > 0:
            paths.append(
                video_plots.classified_videos(
                    data.test["videos"][:count].astype(np.float32) / 255.0,
                    [data.info["class_names"][k] for k in outputs["label"][:count]],
                    [data.info["class_names"][k] for k in outputs["prediction"][:count]],
                    os.path.join(plot_dir, "examples.png"),
                )
            )
        return paths
