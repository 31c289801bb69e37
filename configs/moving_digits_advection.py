r"""Moving digits (as ``configs/moving_digits.py``) predicted by per-cell advection kernels:
the default before round 13 (docs/video_experiments.md). For every 16×16 cell and every
predicted step the forecaster gives a vertical and a horizontal 9-tap kernel that move the
previous frame's pixels, plus a mask and a drawn frame; trained with cross-entropy for
3,300 steps. About the default's MSE (56.3% and 56.9% below the best baseline for seeds
0 and 1), but the frames blur into grey blobs after the first few predicted steps.

    python -m experiments.train --config configs/moving_digits_advection.py \
        --workdir workdirs/advection
"""

from __future__ import annotations

import ml_collections

from configs import common, moving_digits


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The per-cell-kernel moving-digits config; ``arg='smoke'`` shrinks it for the tests."""
    config = moving_digits.get_config()
    config.model.advection_source = "previous"  # kernels move the previous (predicted) frame
    config.model.advection_motions = 0  # a kernel pair per cell, not shared layers
    config.model.advection_prior = "none"  # the kernels' logits come from the states alone
    config.train.loss = "bce"  # cross-entropy: squared error trains this form worse (round 4)
    config.train.absolute_loss_weight = 0.0  # no added absolute error
    config.train.ramp_start = 0.0  # (nothing to ramp)
    config.train.num_epochs = 2.2  # 3,300 steps of 8 (~18-19 min on 2 CPU cores)
    return common.apply_variant(config, arg, moving_digits.shrink_for_smoke_test)
