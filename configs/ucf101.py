"""Action recognition on UCF101 (TFDS ``ucf101``, 101 classes, split 1) with the per-frame CNN
+ GRU video classifier: 16 evenly spaced frames per clip, resized to 64×64. The dataset
must be prepared once, and TFDS's ``ucf101`` builder imports tensorflow even to read
(``pip install "gru_jax[tensorflow]"``); without it the run stops with a one-line error that
says so. Not tuned here (no tensorflow on the development machine): a starting point.

    python -m experiments.train --config configs/ucf101.py --workdir workdirs/ucf101
"""

from __future__ import annotations

import ml_collections

from configs import common, motion_direction


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The UCF101 config; ``arg='smoke'`` shrinks it (tests run it on mocked data)."""
    config = motion_direction.get_config()
    config.dataset.source = "tfds"  # read config.dataset.tfds_name
    config.dataset.tfds_name = "ucf101"  # default builder config: ucf101_1_256 (split 1)
    config.dataset.train_split = "train"  # 9,537 clips of split 1
    config.dataset.test_split = "test"  # 3,783 clips of split 1
    config.dataset.num_train = 0  # every training clip (N > 0: a fixed random N of them)
    config.dataset.num_test = 0  # every test clip (N > 0: a fixed random N of them)
    config.dataset.num_frames = 16  # evenly spaced over each clip
    config.dataset.frame_size = 64  # frames resized to 64×64×3
    config.model.conv_channels = (32, 64, 128, 128)  # 64 -> 4 pixels
    config.model.frame_features = 256  # per-frame feature vector
    config.model.hidden_size = 256  # GRU state per direction
    config.model.bidirectional = True  # both directions read every frame
    config.model.dropout = 0.3  # before the classifier
    config.optimizer.learning_rate = 1e-3  # peak
    config.train.batch_size = 32  # clips per step
    config.train.num_epochs = 30.0  # passes over the training clips
    config.train.label_smoothing = 0.1  # 101 classes, few clips each
    config.train.eval_every_steps = 1_000  # test accuracy during training
    config.train.checkpoint_every_steps = 1_000  # checkpoint period
    config.plots.num_examples = 3  # test clips in plots/examples.png
    return common.apply_variant(config, arg, motion_direction.shrink_for_smoke_test)
