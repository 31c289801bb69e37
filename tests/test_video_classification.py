"""Video classification: model shapes, the per-frame encoder's independence across frames,
the time-shuffled control (real permutations, applied per video), and both configs end to
end (smoke variants; TFDS ucf101 through a faked TFDS reader, and its one-line error
without tensorflow)."""

import importlib.util
import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import motion_direction, ucf101
from experiments.tasks.video_classification import (
    VideoClassificationTask,
    frame_permutations,
    shuffle_frames,
)
from experiments.trainer import train_and_evaluate
from gru_jax.data import tfds_videos
from gru_jax.models import VideoClassifier

HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None


def _model(**kwargs):
    model = VideoClassifier((12, 12, 1), 5, conv_channels=(4, 8), frame_features=6,
                            hidden_size=7, rngs=nnx.Rngs(0), **kwargs)  # fmt: skip
    model.eval()
    return model


@pytest.mark.parametrize("bidirectional", [False, True])
def test_video_classifier_shapes(bidirectional):
    model = _model(bidirectional=bidirectional, num_layers=2)
    assert model(jnp.zeros((3, 4, 12, 12, 1))).shape == (3, 5)
    with pytest.raises(ValueError, match=r"videos must have shape \[batch, time, 12, 12, 1\]"):
        model(jnp.zeros((3, 4, 12, 12)))


def test_frame_encoder_sees_each_frame_alone():
    model = _model()
    videos = jax.random.uniform(jax.random.key(0), (2, 4, 12, 12, 1))
    changed = videos.at[:, 2].set(0.0)
    before, after = model.frame_features(videos), model.frame_features(changed)
    np.testing.assert_array_equal(before[:, [0, 1, 3]], after[:, [0, 1, 3]])
    assert not np.allclose(before[:, 2], after[:, 2])


def test_frame_permutations_are_real_and_fixed_by_seed():
    orders = frame_permutations(500, 4, seed=3)
    assert orders.shape == (500, 4) and orders.dtype == np.int32
    np.testing.assert_array_equal(np.sort(orders, axis=1), np.tile(np.arange(4), (500, 1)))
    assert not (orders == np.arange(4)).all(axis=1).any()  # never the identity (1/24 drawn)
    assert len({tuple(row) for row in orders}) == 23  # every other order of 4 frames occurs
    np.testing.assert_array_equal(orders, frame_permutations(500, 4, seed=3))
    assert not np.array_equal(orders, frame_permutations(500, 4, seed=4))


def test_shuffle_frames_reorders_each_video():
    videos = jnp.arange(2 * 3, dtype=jnp.float32).reshape(2, 3, 1, 1, 1) * jnp.ones((1, 1, 2, 2, 1))
    orders = jnp.array([[2, 0, 1], [1, 2, 0]])
    shuffled = shuffle_frames(videos, orders)
    np.testing.assert_array_equal(shuffled[:, :, 0, 0, 0], [[2, 0, 1], [4, 5, 3]])


class _FirstFrameModel(nnx.Module):
    """Predicts the class given by the brightness of the first frame it reads (x 255)."""

    def __call__(self, videos):
        return jax.nn.one_hot(jnp.rint(videos[:, 0, 0, 0, 0] * 255).astype(jnp.int32), 8)


def test_shuffled_accuracy_reads_the_permuted_frames():
    # Frame t of every video has brightness t/255; the label is 0, so the stub model is
    # right on ordered frames and right after shuffling only if order[0] == 0.
    task = VideoClassificationTask(motion_direction.get_config("smoke"))
    videos = np.broadcast_to(
        np.arange(4, dtype=np.uint8)[None, :, None, None, None], (6, 4, 2, 2, 1)
    )
    orders = frame_permutations(6, 4, seed=0)
    batch = {"videos": videos, "label": np.zeros(6, np.int32), "shuffle_order": orders}
    outputs = task.eval_outputs(_FirstFrameModel(), jax.tree.map(jnp.asarray, batch))
    np.testing.assert_array_equal(outputs["accuracy"], np.ones(6))
    np.testing.assert_array_equal(outputs["shuffled_prediction"], orders[:, 0])
    np.testing.assert_array_equal(outputs["shuffled_accuracy"], orders[:, 0] == 0)


def _check_run(results, workdir):
    test = results["test"]
    assert {"accuracy", "shuffled_accuracy", "loss"} <= set(test)
    assert 0 <= test["accuracy"] <= 1 and 0 <= test["shuffled_accuracy"] <= 1
    with open(os.path.join(workdir, "results.json")) as file:
        assert json.load(file)["test"] == test
    for name in ("confusion_matrix.png", "confusion_matrix_shuffled.png", "examples.png"):
        assert os.path.getsize(os.path.join(workdir, "plots", name)) > 0


def test_motion_direction_smoke_run(tmp_path):
    results = train_and_evaluate(motion_direction.get_config("smoke"), str(tmp_path))
    _check_run(results, str(tmp_path))
    assert results["train_steps"] == 4


def test_full_configs_share_fields_with_smoke():
    for module in (motion_direction, ucf101):
        full, smoke = module.get_config(), module.get_config("smoke")
        assert set(full.to_dict()) == set(smoke.to_dict())
        assert full.train.num_steps == -1 and full.train.num_epochs > 0
    assert ucf101.get_config().dataset.source == "tfds"


def _fake_tfds(num_classes, rng):
    """A stand-in for a prepared TFDS video dataset: clips of varying length and size."""

    def make_split(count):
        return [
            {
                "video": rng.integers(0, 256, (int(rng.integers(3, 9)), 20, 24, 3), np.uint8),
                "label": int(rng.integers(num_classes)),
            }
            for _ in range(count)
        ]

    splits = {"train": make_split(40), "test": make_split(20)}
    label = types.SimpleNamespace(num_classes=num_classes)
    builder = types.SimpleNamespace(info=types.SimpleNamespace(features={"label": label}))
    return builder, splits


def test_sample_frames_evenly_spaced_and_resized():
    video = np.arange(5, dtype=np.uint8)[:, None, None, None] * np.ones((1, 6, 6, 3), np.uint8)
    frames = tfds_videos.sample_frames(video, 3, 4)
    assert frames.shape == (3, 4, 4, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[:, 0, 0, 0], [0, 2, 4])
    np.testing.assert_array_equal(tfds_videos.sample_frames(video[:1], 3, 4)[:, 0, 0, 0], [0, 0, 0])


def test_ucf101_config_with_faked_tfds(tmp_path, monkeypatch):
    builder, splits = _fake_tfds(num_classes=5, rng=np.random.default_rng(0))
    monkeypatch.setattr(tfds_videos, "open_tfds_builder", lambda name, data_dir=None: builder)
    monkeypatch.setattr(
        tfds_videos, "open_tfds_split", lambda builder, split, name, data_dir=None: splits[split]
    )
    config = ucf101.get_config("smoke")
    results = train_and_evaluate(config, str(tmp_path))
    _check_run(results, str(tmp_path))
    assert results["train_steps"] == 4


def test_a_tfds_video_subset_is_drawn_across_the_split_not_its_head(monkeypatch):
    """A class-sorted split (as some builders store it): ``max_examples`` of it must not
    be its first examples, and the same seed draws the same subset."""
    label = types.SimpleNamespace(num_classes=4)
    builder = types.SimpleNamespace(info=types.SimpleNamespace(features={"label": label}))
    video = np.zeros((3, 8, 8, 1), np.uint8)
    split = [{"video": video + index, "label": index // 25} for index in range(100)]  # sorted
    monkeypatch.setattr(tfds_videos, "open_tfds_builder", lambda name, data_dir=None: builder)
    monkeypatch.setattr(tfds_videos, "open_tfds_split", lambda *args, **kwargs: split)

    def load(**kwargs):
        return tfds_videos.load_tfds_videos(
            "ucf101", split="train", num_frames=2, frame_size=8, max_examples=20, **kwargs
        )

    videos, labels, num_classes = load()
    assert videos.shape == (20, 2, 8, 8, 1) and num_classes == 4
    assert set(labels.tolist()) == {0, 1, 2, 3}  # the first 20 would all be class 0
    ids = videos[:, 0, 0, 0, 0].tolist()  # each video's pixels hold its index
    assert ids == sorted(ids) and len(set(ids)) == 20  # storage order, no repeats
    np.testing.assert_array_equal(labels, [split[i]["label"] for i in ids])
    np.testing.assert_array_equal(load()[0], videos)
    assert load(subset_seed=1)[0][:, 0, 0, 0, 0].tolist() != ids
    everything = tfds_videos.load_tfds_videos(
        "ucf101", split="train", num_frames=2, frame_size=8, max_examples=500
    )
    assert everything[0][:, 0, 0, 0, 0].tolist() == list(range(100))  # all, in order


@pytest.mark.skipif(HAS_TENSORFLOW, reason="with tensorflow the builder can be constructed")
def test_ucf101_without_tensorflow_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="ucf101.*tensorflow") as error:
        train_and_evaluate(ucf101.get_config("smoke"), str(tmp_path))
    assert "\n" not in str(error.value)
