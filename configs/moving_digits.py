"""Video prediction on moving digits (Moving MNIST protocol: two digits bounce in a 64×64
canvas; the model sees 10 frames and predicts the next 10) with a ConvGRU
encoder-forecaster. Needs no download: the digits are scikit-learn's, upsampled to 28×28.

The forecaster moves the last context frame as 8 soft layers, each rigidly by its own
displacement per step (``advection_source='splat'``, ``advection_motions=8``), starting
from the block matching of the context (``advection_prior='matching'``): digits keep their
strokes as they move, where the per-cell kernels of ``configs/moving_digits_cells.py``
blur them after a few frames (docs/video_experiments.md, rounds 9 to 18). Squared error,
plus a mean absolute error ramped in over the second half of the run.

    python -m experiments.train --config configs/moving_digits.py --workdir workdirs/moving_digits
    python -m experiments.train --config configs/moving_digits.py:smoke --workdir workdirs/smoke
"""

from __future__ import annotations

import ml_collections

from configs import common, moving_digits_cells
from configs.moving_digits_cells import shrink_for_smoke_test

__all__ = ["get_config", "shrink_for_smoke_test"]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The moving-digits config; ``arg='smoke'`` shrinks it to a few steps for tests."""
    config = moving_digits_cells.get_config()
    config.model.advection_source = "splat"  # the content carries its motion (no drawn frame)
    config.model.advection_motions = 8  # 8 rigid layers of the last context frame
    config.model.advection_prior = "matching"  # each layer starts from the context's motion
    config.model.motion_temperature = 0.02  # encoder's matching input (0.003: no gain here)
    config.train.loss = "mse"  # cross-entropy makes the layers spread into faint copies
    config.train.absolute_loss_weight = 1.0  # + mean |error|: sharper, same MSE (round 12)
    config.train.ramp_start = 0.5  # ... ramped in from mid-run (alone it did not learn)
    config.train.num_epochs = 1.85  # 2,775 steps of 8 (~16 min on 2 AVX-512 cores; round 18)
    return common.apply_variant(config, arg, shrink_for_smoke_test)
