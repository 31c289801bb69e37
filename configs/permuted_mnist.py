"""Permuted sequential MNIST (Le et al. 2015): the 784 pixels of every image in one fixed
random order (``dataset.permutation_seed``), which breaks the locality that makes raster
order easy, so long-range memory matters. GRU of 150 units, 70,360 parameters (Bai et al.
2018, Table 1 report 87.3% for a GRU at ~70K parameters). Meant for an accelerator.

    python -m experiments.train --config configs/permuted_mnist.py --workdir workdirs/pmnist
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Permuted pixel MNIST; ``arg='smoke'`` shrinks it to a few steps for tests."""
    config = common.sequence_classification()
    config.dataset.spec = "tfds:mnist"  # 60,000 train / 10,000 test images
    config.dataset.view = "permuted_pixels"  # T = 784 permuted pixels, F = 1
    config.dataset.permutation_seed = 0  # the same order for train and test
    config.model.hidden_size = 150  # 70,360 parameters (Bai et al. 2018: ~70K)
    config.optimizer.name = "adam"  # the usual optimiser for this benchmark
    config.optimizer.learning_rate = 1e-3  # Adam's standard rate; cosine decay after warmup
    config.optimizer.grad_clip_norm = 1.0  # global-norm clipping, standard for RNNs
    config.train.batch_size = 128  # 468 steps per epoch
    config.train.num_epochs = 30.0  # long sequences learn slowly
    config.train.eval_every_steps = 2000  # about every 4 epochs
    config.train.checkpoint_every_steps = 500  # steps are slow: checkpoint often
    return common.apply_variant(config, arg)
