"""Moving digits (as ``configs/moving_digits.py``) predicted by rigid layers: the last
context frame is split into 8 soft layers, each moved by its own displacement per step
(``advection_source='splat'``, ``advection_motions=8``; docs/video_experiments.md, rounds 9
to 12). Squared error, plus a mean absolute error ramped in over the second half of the
run (round 12). Sharper frames than the default at about its MSE; where the model is
unsure it leaves faint copies of a digit instead of a blur.

    python -m experiments.train --config configs/moving_digits_layers.py --workdir workdirs/layers
"""

from __future__ import annotations

import ml_collections

from configs import common, moving_digits


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The layered moving-digits config; ``arg='smoke'`` shrinks it for the tests."""
    config = moving_digits.get_config()
    config.model.advection_source = "splat"  # the content carries its motion (no drawn frame)
    config.model.advection_motions = 8  # 8 rigid layers of the last context frame
    config.model.advection_prior = "matching"  # each layer starts from the context's motion
    config.model.motion_temperature = 0.02  # as measured (rounds 9-14; 0.003: round 15)
    config.train.loss = "mse"  # cross-entropy makes the layers spread into faint copies
    config.train.absolute_loss_weight = 1.0  # + mean |error|: sharper, same MSE (round 12)
    config.train.ramp_start = 0.5  # ... ramped in from mid-run (alone it did not learn)
    config.train.num_epochs = 22 / 15  # 2,200 steps of 8: 1.19x the default's step cost
    return common.apply_variant(config, arg, moving_digits.shrink_for_smoke_test)
