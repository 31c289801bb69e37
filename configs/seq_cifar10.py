"""Row-by-row CIFAR-10: 32×32×3 images as T=32 rows of F=W·C=96 values (the three colour
channels of a row side by side), read by a 2-layer bidirectional GRU. A hard benchmark for
recurrent models (no convolution, no augmentation); needs cifar10 prepared for TFDS.

    python -m experiments.train --config configs/seq_cifar10.py --workdir workdirs/cifar10
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Row-by-row CIFAR-10; ``arg='smoke'`` shrinks it to a few steps for tests."""
    config = common.sequence_classification()
    config.dataset.spec = "tfds:cifar10"  # 50,000 train / 10,000 test images
    config.dataset.view = "rows"  # T = 32 rows, F = 32 pixels × 3 channels = 96
    config.model.hidden_size = 256  # per direction: 1,731,594 parameters in all
    config.model.num_layers = 2  # the second layer reads both directions of the first
    config.model.bidirectional = True  # top and bottom rows both reach the readout
    config.model.dropout = 0.2  # between the layers and before the classifier
    config.optimizer.name = "adamw"  # decoupled weight decay for the larger model
    config.optimizer.learning_rate = 1e-3  # peak; cosine decay after warmup
    config.optimizer.weight_decay = 1e-4  # light regularisation
    config.optimizer.grad_clip_norm = 1.0  # global-norm clipping, standard for RNNs
    config.train.batch_size = 128  # 390 steps per epoch
    config.train.num_epochs = 30.0  # 11,700 steps
    config.train.eval_every_steps = 2000  # about every 5 epochs
    config.train.checkpoint_every_steps = 1000  # about every 2.5 epochs
    return common.apply_variant(config, arg)
