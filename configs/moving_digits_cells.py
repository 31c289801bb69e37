"""Video prediction on moving digits (Moving MNIST protocol: two digits bounce in a 64×64
canvas; the model sees 10 frames and predicts the next 10) with a ConvGRU
encoder-forecaster whose output moves the previous frame by a kernel pair per 16×16
cell (dynamic neural advection). The default up to round 17 (docs/video_experiments.md):
an MSE 0.2-2.6 lower than ``configs/moving_digits.py``'s on two seeds, but its late
frames blur into blobs. Its fields are the ones every moving-digits config has; the others
start from it. Needs no download: the digits are scikit-learn's, upsampled to 28×28.

    python -m experiments.train --config configs/moving_digits_cells.py --workdir workdirs/cells
    python -m experiments.train --config configs/moving_digits_cells.py:smoke --workdir wd/smoke
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The per-cell-kernel moving-digits config; ``arg='smoke'`` shrinks it for tests."""
    config = ml_collections.ConfigDict()
    config.task = "video_prediction"  # registry key in experiments/tasks/__init__.py
    config.seed = 0  # seeds parameter init, the training videos and their order

    config.dataset = ml_collections.ConfigDict()
    config.dataset.digit_source = "digits"  # digit images: 'digits' | 'tfds:mnist' | 'npz:..'
    config.dataset.data_dir = config_dict.placeholder(str)  # TFDS data dir (None: default)
    config.dataset.split_seed = 0  # train/test split of the digit images (disjoint digits)
    config.dataset.test_set = "generated"  # 'generated' (test_seed) | 'tfds' (moving_mnist)
    config.dataset.num_train = 12_000  # training videos, generated once at start-up
    config.dataset.num_test = 1_000  # test videos
    config.dataset.test_seed = 0  # seed of the generated test videos (fixed test set)
    config.dataset.context_frames = 10  # frames the model sees
    config.dataset.future_frames = 10  # frames it predicts
    config.dataset.canvas = 64  # frame side in pixels
    config.dataset.digit_size = 28  # digit side in pixels (as MNIST)
    config.dataset.num_digits = 2  # digits per video

    config.model = ml_collections.ConfigDict()
    config.model.patch_size = 8  # space-to-depth: 64×64×1 frames -> 8×8×64 grids
    config.model.hidden_channels = (64, 64)  # state channels of each encoder/forecaster layer
    config.model.kernel_size = 3  # ConvGRU state convolution window (and input, unless:)
    config.model.input_kernel_size = 1  # ConvGRU input convolution window (None: kernel_size)
    config.model.head_kernel_size = 3  # window of the states -> logits convolution
    config.model.head_hidden_channels = 0  # 0: one linear head conv; >0: conv-GELU-conv
    config.model.forecaster_input = "prediction"  # 'zeros' | 'prediction' (previous frame)
    config.model.forecaster = "separate"  # 'separate' weights | 'shared' (encoder runs on)
    config.model.output = "advection"  # 'pixels' (head draws) | 'advection' (moves last frame)
    config.model.advection_kernel_size = 9  # advection window: reaches 4 px per frame
    config.model.advection_cell_size = 16  # px per kernel pair: 2×2 patches (8: one per patch)
    config.model.advection_motions = 0  # 0: kernels per cell; K: K shared (splat: K layers)
    config.model.advection_temperature = 1.0  # kernel softmax temperature (<1: sharper)
    config.model.layer_temperature = 1.0  # layers' assignment softmax temperature (<1: harder)
    config.model.layer_fade = False  # layers: each also dims by a gain per step (unsure: dim)
    config.model.layer_gate = False  # layers + prior: the head corrects the prior via a gate
    config.model.layer_split_steps = 0  # layers + prior: EM rounds sorting the split by motion
    config.model.layer_split_weight = 1.0  # weight of the motion agreement in those rounds
    config.model.advection_source = "previous"  # 'previous' | 'context' | 'flow' | 'splat'
    config.model.advection_prior = "none"  # kernel logits += 'matching' of the last 2 frames
    config.model.prior_frames = 1  # splat: match the last context frame with the n-th before
    config.model.prior_temperature = 0.02  # matching prior's softmax temperature (<: sharper)
    config.model.prior_neighbourhood = True  # prior averaged over each cell's 3×3 neighbours
    config.model.forecaster_motion = False  # forecaster also reads its frames' matching
    config.model.motion_input = "matching"  # encoder extra input: 'none'|'differences'|'matching'
    config.model.matching_radius = 4  # block matching searches [-4, 4]² px per frame
    config.model.motion_temperature = 0.003  # matching input softmax (0.02: 0.5-2 pts worse)
    config.model.motion_channels = 16  # matching distribution projected to this many channels
    config.model.dtype = "float32"  # convolution operand dtype: 'float32' | 'bfloat16'
    config.model.convgru_gradient = "im2col"  # ConvGRU convs as patch GEMMs: 1.3x faster steps

    config.optimizer = common.optimizer()  # fields documented in configs/common.py
    config.optimizer.learning_rate = 5e-3  # peak
    config.optimizer.warmup_fraction = 0.03  # linear warmup
    config.optimizer.end_learning_rate_factor = 0.05  # cosine ends at 5% of the peak

    config.train = common.train()  # fields documented in configs/common.py
    config.train.loss = "bce"  # 'bce' on logits | 'mse' or 'mae' of sigmoid(logits)
    config.train.context_loss_weight = 0.0  # weight of the encoder's next-frame loss (0: off)
    config.train.one_step_loss_weight = 0.0  # weight of the teacher-forced one-step loss
    config.train.gradient_loss_weight = 0.0  # weight of the gradient difference (anti-blur)
    config.train.assignment_entropy_weight = 0.0  # layered: split-pixel penalty (0.2 collapsed)
    config.train.absolute_loss_weight = 2.0  # + mean |error|: sharper, same MSE (round 17)
    config.train.ramp_start = 0.5  # the two above ramp 0 -> full from mid-run
    config.train.batch_size = 8  # videos per step
    config.train.num_epochs = 2.2  # passes over the training videos (~18 min on 2 AVX2 cores)
    config.train.eval_batch_size = 100  # test videos per evaluation batch
    config.train.log_every_steps = 25  # a console line every ~25 s
    config.train.eval_every_steps = 0  # evaluate at the end only (an evaluation costs ~20 s)
    config.train.checkpoint_every_steps = 250  # a checkpoint every few minutes

    config.plots = ml_collections.ConfigDict()
    config.plots.num_examples = 3  # test videos in plots/predictions.png and .gif
    config.plots.examples = "quantiles"  # which: 'quantiles' of the model's error | 'first'
    return common.apply_variant(config, arg, shrink_for_smoke_test)


def shrink_for_smoke_test(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Tiny videos and model: the ``:smoke`` variant (a few seconds; used by the tests)."""
    config.dataset.num_train = 16  # two epochs of 8
    config.dataset.num_test = 10  # one padded evaluation batch
    config.dataset.context_frames = 3  # short videos compile fast
    config.dataset.future_frames = 2  # predicted frames
    config.dataset.canvas = 16  # 16×16 frames -> 4×4 grids
    config.dataset.digit_size = 8  # the digits' native size
    config.model.hidden_channels = (4, 4)  # two tiny layers (keeps the multi-layer path)
    config.train.batch_size = 8  # videos per step
    config.train.num_steps = 4  # enough for two logs and checkpoints
    config.train.eval_batch_size = 8  # 10 test videos -> a padded second batch
    config.train.log_every_steps = 2  # logs at steps 2 and 4
    config.train.eval_every_steps = 2  # one mid-run evaluation
    config.train.checkpoint_every_steps = 2  # checkpoints at steps 2 and 4
    config.plots.num_examples = 2  # still draws every plot
    return config
