"""Sequential (pixel-by-pixel) MNIST: each image is a sequence of T=784 pixels with F=1
feature, read in raster order by a GRU of 150 hidden units (70,360 parameters, the ~70K
budget of Bai et al. 2018, Table 1, who report 96.2% test accuracy for a GRU). Long
sequences: meant for an accelerator; an epoch takes hours on a 2-core CPU.

    python -m experiments.train --config configs/pixel_mnist.py --workdir workdirs/pixel_mnist
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Pixel MNIST; ``arg='smoke'`` shrinks it to a few steps for tests."""
    config = common.sequence_classification()
    config.dataset.spec = "tfds:mnist"  # 60,000 train / 10,000 test images
    config.dataset.view = "pixels"  # T = 784 pixels in raster order, F = 1
    config.model.hidden_size = 150  # 70,360 parameters (Bai et al. 2018: ~70K)
    config.optimizer.name = "adam"  # the usual optimiser for this benchmark
    config.optimizer.learning_rate = 1e-3  # Adam's standard rate; cosine decay after warmup
    config.optimizer.grad_clip_norm = 1.0  # long sequences: clipping keeps early steps stable
    config.train.batch_size = 128  # 468 steps per epoch
    config.train.num_epochs = 30.0  # long sequences learn slowly
    config.train.eval_every_steps = 2000  # about every 4 epochs
    config.train.checkpoint_every_steps = 500  # steps are slow: checkpoint often
    return common.apply_variant(config, arg)
