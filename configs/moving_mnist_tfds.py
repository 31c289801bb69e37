"""Video prediction on Moving MNIST (Srivastava et al. 2015): training videos generated from
MNIST digits (TFDS ``mnist``), evaluated on the fixed 10,000-video test set of TFDS
``moving_mnist``. Both must be prepared once, and TFDS's ``moving_mnist`` builder imports
tensorflow even to read (``pip install "gru_jax[tensorflow]"``); without it the run stops
with a one-line error that says so. Model and training as ``configs/moving_digits.py``.

    python -m experiments.train --config configs/moving_mnist_tfds.py --workdir workdirs/mmnist
"""

from __future__ import annotations

import ml_collections

from configs import common, moving_digits


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The Moving MNIST config; ``arg='smoke'`` shrinks it (tests run it on mocked data)."""
    config = moving_digits.get_config()
    config.dataset.digit_source = "tfds:mnist"  # train videos from MNIST's training digits
    config.dataset.test_set = "tfds"  # the fixed test set of TFDS moving_mnist
    config.dataset.num_test = 10_000  # all of it (the literature's protocol)
    return common.apply_variant(config, arg, moving_digits.shrink_for_smoke_test)
