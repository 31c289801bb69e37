"""Row-by-row MNIST: each 28×28 image is a sequence of T=28 rows of F=28 pixels, read by a
GRU with 128 hidden units (the usual setting: Adam, learning rate 1e-3, gradient clipping
at 1.0, batch 128). Needs MNIST prepared for TFDS (see docs/experiments.md).

    python -m experiments.train --config configs/seq_mnist.py --workdir workdirs/seq_mnist
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Row-by-row MNIST; ``arg='smoke'`` shrinks it to a few steps for tests."""
    config = common.sequence_classification()
    config.dataset.spec = "tfds:mnist"  # 60,000 train / 10,000 test images
    config.dataset.view = "rows"  # T = 28 rows, F = 28 pixels
    config.model.hidden_size = 128  # 1 layer: 61,962 parameters with the classifier
    config.optimizer.name = "adam"  # the usual optimiser for this benchmark
    config.optimizer.learning_rate = 1e-3  # Adam's standard rate; cosine decay after warmup
    config.optimizer.grad_clip_norm = 1.0  # global-norm clipping, standard for RNNs
    config.train.batch_size = 128  # 468 steps per epoch
    config.train.num_epochs = 10.0  # 4,680 steps
    config.train.eval_every_steps = 1000  # about every 2 epochs
    config.train.checkpoint_every_steps = 1000  # about every 2 epochs
    return common.apply_variant(config, arg)
