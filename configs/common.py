"""Fields shared by the experiment configs, every one documented.

Every experiment takes its ``optimizer`` and ``train`` fields from `optimizer` and `train`;
the sequential image classification files (``configs/seq_*.py``, ``pixel_mnist.py``, ...)
start from `sequence_classification` and change what differs. Values derived from others (total
steps from epochs and batch size, warmup steps from the warmup fraction) are computed by
the trainer at run time, so command-line overrides stay consistent.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections
from ml_collections import config_dict


def optimizer() -> ml_collections.ConfigDict:
    """``config.optimizer`` of every experiment: Adam(W)/SGD, warmup + cosine, clipping."""
    config = ml_collections.ConfigDict()
    config.name = "adam"  # 'adam' | 'adamw' | 'sgd' (b1 is the momentum)
    config.learning_rate = 1e-3  # peak learning rate
    config.weight_decay = 0.0  # decoupled weight decay (adamw only)
    config.b1 = 0.9  # Adam first-moment decay
    config.b2 = 0.999  # Adam second-moment decay
    config.eps = 1e-8  # Adam epsilon
    config.schedule = "cosine"  # 'cosine' (warmup + cosine decay) | 'constant'
    config.warmup_fraction = 0.02  # linear warmup over this fraction of all steps
    config.end_learning_rate_factor = 0.01  # cosine ends at peak * this
    config.grad_clip_norm = 1.0  # global-norm gradient clipping (0: off)
    return config


def train() -> ml_collections.ConfigDict:
    """``config.train`` of every experiment: run length, batch sizes, logging, checkpoints."""
    config = ml_collections.ConfigDict()
    config.batch_size = 128  # examples per training step
    config.num_epochs = 10.0  # run length in epochs (used when num_steps <= 0)
    config.num_steps = -1  # run length in steps; overrides num_epochs when > 0
    config.eval_batch_size = 500  # test batch size (last batch padded and masked)
    config.log_every_steps = 100  # train metrics to TensorBoard and the console
    config.eval_every_steps = 1000  # test-set evaluation during training (0: end only)
    config.checkpoint_every_steps = 1000  # checkpoint period (and at the last step)
    config.keep_checkpoints = 3  # most recent checkpoints kept
    config.debug_nan_step = -1  # >= 0: make that step's loss NaN (tests the guard)
    config.param_sharding = "replicated"  # over the data-parallel mesh: | 'sharded' (FSDP-like)
    return config


def sequence_classification() -> ml_collections.ConfigDict:
    """The full field set of the ``sequence_classification`` task with neutral defaults."""
    config = ml_collections.ConfigDict()
    config.task = "sequence_classification"  # registry key in experiments/tasks/__init__.py
    config.seed = 0  # seeds parameter init, batch order and dropout (fold_in(key, step))

    config.dataset = ml_collections.ConfigDict()
    config.dataset.spec = "digits"  # 'digits' | 'tfds:<name>[:train[/test]]' | 'npz:<path>'
    config.dataset.view = "rows"  # image -> sequence: 'rows' | 'pixels' | 'permuted_pixels'
    config.dataset.split_seed = 0  # seed of the digits train/test split (fixed test set)
    config.dataset.permutation_seed = 0  # pixel order of 'permuted_pixels'
    config.dataset.data_dir = config_dict.placeholder(str)  # TFDS data dir (None: default)

    config.model = ml_collections.ConfigDict()
    config.model.cell = "gru"  # 'gru' (gru_jax.StackedGRU) | 'lstm' (nnx.OptimizedLSTMCell)
    config.model.hidden_size = 128  # recurrent state size per direction
    config.model.num_layers = 1  # stacked recurrent layers
    config.model.bidirectional = False  # add a backward direction to every layer
    config.model.dropout = 0.0  # dropout between recurrent layers and before the classifier
    config.model.reset_after = True  # GRU form: True cuDNN/PyTorch, False Cho et al. 2014
    config.model.readout = "last"  # 'last' valid state per direction | 'mean' over time

    config.optimizer = optimizer()  # fields documented in optimizer() above
    config.train = train()  # fields documented in train() above
    config.train.label_smoothing = 0.0  # cross-entropy label smoothing

    config.plots = ml_collections.ConfigDict()
    config.plots.num_gate_examples = 4  # test images in plots/update_gates.png (GRU only)
    return config


def shrink_for_smoke_test(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A few steps of a tiny model: the ``:smoke`` variant every config offers for tests."""
    config.model.hidden_size = 16  # tiny model: compiles and steps fast
    config.model.num_layers = min(config.model.num_layers, 2)  # keeps multi-layer paths
    config.train.batch_size = 8  # fits mock datasets of a few dozen examples
    config.train.num_steps = 6  # enough for two logs, evals and checkpoints
    config.train.eval_batch_size = 32  # small test sets end in a padded batch
    config.train.log_every_steps = 2  # logs at steps 2, 4, 6
    config.train.eval_every_steps = 3  # one mid-run evaluation
    config.train.checkpoint_every_steps = 3  # checkpoints at steps 3 and 6
    config.plots.num_gate_examples = 2  # still draws the gate plot
    return config


VARIANTS = ("smoke",)


def apply_variant(
    config: ml_collections.ConfigDict,
    arg: str | None,
    shrink: Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict] | None = None,
) -> ml_collections.ConfigDict:
    """Applies the ``get_config(arg)`` variant: None/'' (the full run) or 'smoke', which
    calls ``shrink`` (default: `shrink_for_smoke_test`, for sequence classification)."""
    if arg == "smoke":
        return (shrink or shrink_for_smoke_test)(config)
    if arg:
        raise ValueError(f"unknown config variant {arg!r}: expected one of {', '.join(VARIANTS)}")
    return config
