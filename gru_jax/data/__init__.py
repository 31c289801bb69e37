"""Data for GRU vision experiments: sources, sequence views, batching, generated tasks.

NumPy in, NumPy out; no framework imports, and nothing downloads.

Public API::

    load_image_dataset(spec, seed=, data_dir=) -> ImageDataset   # 'digits' | 'tfds:..' | 'npz:..'
    image_to_sequence(images, view, seed=), sequence_shape(image_shape, view), VIEWS
    batches(arrays, batch_size, seed=, epoch=), train_batches(..., start_step=),
    batch_at_step, eval_batches(arrays, batch_size), steps_per_epoch
    make_moving_digits, make_motion_direction, load_moving_mnist_tfds
    make_digit_strings, decoder_inputs, tokens_to_text, EOS_ID, PAD_ID, BOS_ID, VOCAB_SIZE
"""

from gru_jax.data.digit_pool import digit_pool
from gru_jax.data.digit_strings import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    VOCAB_SIZE,
    decoder_inputs,
    make_digit_strings,
    tokens_to_text,
)
from gru_jax.data.image_dataset import ImageDataset, make_image_dataset
from gru_jax.data.moving_digits import (
    DIRECTION_NAMES,
    DIRECTION_STEPS,
    make_motion_direction,
    make_moving_digits,
)
from gru_jax.data.npz_source import load_npz_dataset
from gru_jax.data.pipeline import (
    batch_at_step,
    batches,
    epoch_permutation,
    eval_batches,
    steps_per_epoch,
    train_batches,
)
from gru_jax.data.sources import load_digits_dataset, load_image_dataset
from gru_jax.data.tfds_source import load_moving_mnist_tfds, load_tfds_dataset
from gru_jax.data.views import VIEWS, image_to_sequence, pixel_permutation, sequence_shape

__all__ = [
    "BOS_ID",
    "DIRECTION_NAMES",
    "DIRECTION_STEPS",
    "EOS_ID",
    "PAD_ID",
    "VIEWS",
    "VOCAB_SIZE",
    "ImageDataset",
    "batch_at_step",
    "batches",
    "decoder_inputs",
    "digit_pool",
    "epoch_permutation",
    "eval_batches",
    "image_to_sequence",
    "load_digits_dataset",
    "load_image_dataset",
    "load_moving_mnist_tfds",
    "load_npz_dataset",
    "load_tfds_dataset",
    "make_digit_strings",
    "make_image_dataset",
    "make_motion_direction",
    "make_moving_digits",
    "pixel_permutation",
    "sequence_shape",
    "steps_per_epoch",
    "tokens_to_text",
    "train_batches",
]
