"""Image to sequence on digit strings: read the 1–5 digit number in a 16×80 image of
handwritten digits side by side (vertical jitter, 0–3 px gaps) with a CNN column encoder, a
bidirectional GRU over the columns and a GRU decoder with additive attention; beam search
and greedy decoding at test time. Needs no download: the digits are scikit-learn's,
upsampled to 12×12, and test strings use only test-split digit images.

    python -m experiments.train --config configs/digit_strings.py --workdir workdirs/digit_strings
    python -m experiments.train --config configs/digit_strings.py:smoke --workdir workdirs/smoke
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The digit-strings config; ``arg='smoke'`` shrinks it to a few steps for tests."""
    config = ml_collections.ConfigDict()
    config.task = "digit_strings"  # registry key in experiments/tasks/__init__.py
    config.seed = 0  # seeds parameter init, batch order and dropout (fold_in(key, step))

    config.dataset = ml_collections.ConfigDict()
    config.dataset.num_train = 64_000  # training strings, generated once at start-up (6-10 s here)
    config.dataset.num_test = 2_000  # held-out strings (test-split digit images only)
    config.dataset.seed = 0  # seed of the generated strings (train and test differ by split)
    config.dataset.min_len = 1  # fewest digits per string
    config.dataset.max_len = 5  # most digits per string (token rows are max_len + 1 wide)
    config.dataset.height = 16  # image height in pixels
    config.dataset.width = 80  # image width in pixels
    config.dataset.digit_size = 12  # digit side in pixels (8×8 digits upsampled)
    config.dataset.min_gap = 0  # smallest gap between neighbouring digits (pixels)
    config.dataset.max_gap = 3  # largest gap between neighbouring digits (pixels)
    config.dataset.noise_std = 0.0  # Gaussian pixel noise
    config.dataset.source = "digits"  # digit images: 'digits' | 'tfds:mnist' | 'npz:<path>'
    config.dataset.split_seed = 0  # train/test split of the digit images (disjoint digits)
    config.dataset.data_dir = config_dict.placeholder(str)  # TFDS data dir (None: default)

    config.model = ml_collections.ConfigDict()
    config.model.conv_channels = (32, 64, 64)  # filters of each 3×3 conv block
    config.model.width_pooling = (2, 2, 1)  # width pooling per block (height always 2)
    config.model.encoder_hidden_size = 64  # bidirectional GRU over columns (0: none)
    config.model.embedding_size = 32  # previous-token embedding
    config.model.decoder_hidden_size = 128  # decoder GRU state
    config.model.attention_size = 64  # hidden size of the additive attention
    config.model.dropout = 0.1  # on column features and before the output layer
    config.model.reset_after = True  # GRU form: True cuDNN/PyTorch, False Cho et al. 2014

    config.decode = ml_collections.ConfigDict()
    config.decode.beam_width = 5  # beams per image at test time (1 = greedy)
    config.decode.length_penalty = 0.0  # rank beams by log p / length**this (0: raw log p)

    config.optimizer = common.optimizer()  # fields documented in configs/common.py
    config.optimizer.name = "adamw"  # Adam with decoupled weight decay
    config.optimizer.learning_rate = 3e-3  # peak
    config.optimizer.weight_decay = 1e-4  # light regularisation
    config.optimizer.warmup_fraction = 0.03  # linear warmup
    config.optimizer.end_learning_rate_factor = 0.01  # cosine ends at 1% of the peak

    config.train = common.train()  # fields documented in configs/common.py
    config.train.batch_size = 64  # strings per step
    config.train.num_epochs = 2.0  # passes over the training strings: 2,000 steps
    config.train.label_smoothing = 0.1  # cross-entropy label smoothing
    config.train.eval_batch_size = 500  # test strings per evaluation batch
    config.train.log_every_steps = 100  # a console line every ~100 steps
    config.train.eval_every_steps = 500  # test-set evaluation during training (~3 s each)
    config.train.checkpoint_every_steps = 500  # checkpoint period (and at the last step)

    config.plots = ml_collections.ConfigDict()
    config.plots.num_attention_examples = 4  # test strings in plots/attention_maps.png
    return common.apply_variant(config, arg, shrink_for_smoke_test)


def shrink_for_smoke_test(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Tiny data and model: the ``:smoke`` variant (a few seconds; used by the tests)."""
    config.dataset.num_train = 32  # four steps of 8
    config.dataset.num_test = 10  # one padded evaluation batch
    config.model.conv_channels = (4, 8)  # two tiny blocks (16×80 -> 4×20 columns)
    config.model.width_pooling = (2, 2)  # 20 columns of 4 pixels
    config.model.encoder_hidden_size = 8  # keeps the column GRU
    config.model.embedding_size = 4  # tiny decoder
    config.model.decoder_hidden_size = 8  # tiny decoder
    config.model.attention_size = 8  # tiny attention
    config.decode.beam_width = 3  # still a real beam
    config.train.batch_size = 8  # strings per step
    config.train.num_steps = 4  # enough for two logs and checkpoints
    config.train.eval_batch_size = 8  # 10 test strings -> a padded second batch
    config.train.log_every_steps = 2  # logs at steps 2 and 4
    config.train.eval_every_steps = 2  # one mid-run evaluation
    config.train.checkpoint_every_steps = 2  # checkpoints at steps 2 and 4
    config.plots.num_attention_examples = 2  # still draws the attention plot
    return config
