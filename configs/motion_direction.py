"""Video classification on generated motion: one digit moves in one of 8 compass directions
(E, NE, N, ...) for 8 frames of 48×48; a per-frame CNN encodes each frame and a GRU reads
the frames in order. Needs no download. The control ``shuffled_accuracy`` (frames in a
fixed random order) should sit near chance (1/8): one frame alone does not tell the
direction.

    python -m experiments.train --config configs/motion_direction.py --workdir workdirs/motion
    python -m experiments.train --config configs/motion_direction.py:smoke --workdir workdirs/smoke
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The motion-direction config; ``arg='smoke'`` shrinks it to a few steps for tests."""
    config = ml_collections.ConfigDict()
    config.task = "video_classification"  # registry key in experiments/tasks/__init__.py
    config.seed = 0  # seeds parameter init, the training videos, batch order and dropout

    config.dataset = ml_collections.ConfigDict()
    config.dataset.source = "motion_direction"  # 'motion_direction' (generated) | 'tfds'
    config.dataset.num_train = 8_000  # training videos (tfds: at most this many; 0: all)
    config.dataset.num_test = 2_000  # test videos (tfds: at most this many; 0: all)
    config.dataset.test_seed = 0  # seed of the generated test videos (fixed test set)
    config.dataset.shuffle_seed = 0  # seed of the frame orders of the shuffled control
    config.dataset.num_frames = 8  # frames per video
    config.dataset.canvas = 48  # frame side in pixels (motion_direction)
    config.dataset.digit_size = 14  # digit side in pixels (motion_direction)
    config.dataset.speed = 2  # pixels per frame along each moving axis (motion_direction)
    config.dataset.digit_source = "digits"  # digit images: 'digits' | 'tfds:mnist' | 'npz:..'
    config.dataset.split_seed = 0  # train/test split of the digit images (disjoint digits)
    config.dataset.tfds_name = "ucf101"  # TFDS video dataset (source 'tfds')
    config.dataset.train_split = "train"  # its training split (source 'tfds')
    config.dataset.test_split = "test"  # its test split (source 'tfds')
    config.dataset.frame_size = 64  # frames resized to this side (source 'tfds')
    config.dataset.data_dir = config_dict.placeholder(str)  # TFDS data dir (None: default)

    config.model = ml_collections.ConfigDict()
    config.model.conv_channels = (16, 32, 32)  # stride-2 3×3 convolutions: 48 -> 6 pixels
    config.model.frame_features = 64  # per-frame feature vector the GRU reads
    config.model.hidden_size = 64  # GRU state size per direction
    config.model.num_layers = 1  # stacked GRU layers
    config.model.bidirectional = False  # one forward pass reads the frames in order
    config.model.dropout = 0.0  # before the classifier (and between GRU layers)
    config.model.readout = "last"  # 'last' state per direction | 'mean' over time

    config.optimizer = common.optimizer()  # fields documented in configs/common.py
    config.optimizer.name = "adamw"  # Adam with decoupled weight decay
    config.optimizer.learning_rate = 3e-3  # peak
    config.optimizer.weight_decay = 1e-4  # light regularisation
    config.optimizer.warmup_fraction = 0.05  # linear warmup

    config.train = common.train()  # fields documented in configs/common.py
    config.train.batch_size = 64  # videos per step
    config.train.num_epochs = 4.0  # passes over the training videos
    config.train.label_smoothing = 0.0  # cross-entropy label smoothing
    config.train.eval_batch_size = 250  # test videos per evaluation batch
    config.train.log_every_steps = 50  # a console line every 50 steps
    config.train.eval_every_steps = 250  # test accuracy during training
    config.train.checkpoint_every_steps = 250  # checkpoint period (and at the last step)

    config.plots = ml_collections.ConfigDict()
    config.plots.num_examples = 4  # test videos in plots/examples.png
    return common.apply_variant(config, arg, shrink_for_smoke_test)


def shrink_for_smoke_test(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Tiny videos and model: the ``:smoke`` variant (a few seconds; used by the tests)."""
    config.dataset.num_train = 32  # two steps per epoch
    config.dataset.num_test = 20  # one padded evaluation batch
    config.dataset.num_frames = 4  # short videos
    config.dataset.canvas = 24  # small frames
    config.dataset.digit_size = 8  # the digits' native size
    config.dataset.frame_size = 16  # small frames (source 'tfds')
    config.model.conv_channels = (4, 8)  # tiny encoder
    config.model.frame_features = 8  # per-frame features
    config.model.hidden_size = 8  # tiny GRU
    config.train.batch_size = 16  # videos per step
    config.train.num_steps = 4  # enough for two logs and checkpoints
    config.train.eval_batch_size = 16  # 20 test videos -> a padded second batch
    config.train.log_every_steps = 2  # logs at steps 2 and 4
    config.train.eval_every_steps = 2  # one mid-run evaluation
    config.train.checkpoint_every_steps = 2  # checkpoints at steps 2 and 4
    config.plots.num_examples = 2  # still draws every plot
    return config
