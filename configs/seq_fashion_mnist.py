"""Row-by-row Fashion-MNIST: 28×28 clothing images as T=28 rows of F=28 pixels, the same
model and optimiser as configs/seq_mnist.py on a harder dataset. Needs fashion_mnist
prepared for TFDS (see docs/experiments.md).

    python -m experiments.train --config configs/seq_fashion_mnist.py --workdir workdirs/fmnist
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Row-by-row Fashion-MNIST; ``arg='smoke'`` shrinks it to a few steps for tests."""
    config = common.sequence_classification()
    config.dataset.spec = "tfds:fashion_mnist"  # 60,000 train / 10,000 test images
    config.dataset.view = "rows"  # T = 28 rows, F = 28 pixels
    config.model.hidden_size = 128  # per direction: 123,914 parameters in all
    config.model.bidirectional = True  # the garment's bottom rows matter as much as the top
    config.model.dropout = 0.1  # before the classifier: Fashion-MNIST overfits sooner
    config.optimizer.name = "adam"  # as for row-by-row MNIST
    config.optimizer.learning_rate = 1e-3  # Adam's standard rate; cosine decay after warmup
    config.optimizer.grad_clip_norm = 1.0  # global-norm clipping, standard for RNNs
    config.train.batch_size = 128  # 468 steps per epoch
    config.train.num_epochs = 15.0  # 7,020 steps
    config.train.eval_every_steps = 1000  # about every 2 epochs
    config.train.checkpoint_every_steps = 1000  # about every 2 epochs
    return common.apply_variant(config, arg)
