"""batches / train_batches / eval_batches: determinism, resume equivalence, full coverage."""

import itertools

import numpy as np
import pytest

from gru_jax.data import (
    batch_at_step,
    batches,
    epoch_permutation,
    eval_batches,
    steps_per_epoch,
    train_batches,
)


def _arrays(count=23):
    # Every field derives from the example id, so a batch's rows can be checked for alignment.
    ids = np.arange(count)
    return {
        "image": np.broadcast_to(ids[:, None, None].astype(np.float32), (count, 2, 3)).copy(),
        "label": (ids % 7).astype(np.int32),
        "id": ids,
    }


def _assert_aligned(batch):
    ids = batch["id"]
    np.testing.assert_array_equal(batch["image"][:, 0, 0], ids.astype(np.float32))
    np.testing.assert_array_equal(batch["label"], ids % 7)


def test_one_epoch_is_a_seeded_permutation_without_the_remainder():
    arrays = _arrays()
    epoch = list(batches(arrays, 5, seed=1, epoch=0))
    assert len(epoch) == 4 == steps_per_epoch(23, 5)
    for batch in epoch:
        assert batch["image"].shape == (5, 2, 3)
        _assert_aligned(batch)
    seen = np.concatenate([batch["id"] for batch in epoch])
    np.testing.assert_array_equal(seen, epoch_permutation(23, seed=1, epoch=0)[:20])
    assert len(set(seen)) == 20
    # Deterministic in (seed, epoch); different across epochs and seeds.
    again = np.concatenate([b["id"] for b in batches(arrays, 5, seed=1, epoch=0)])
    next_epoch = np.concatenate([b["id"] for b in batches(arrays, 5, seed=1, epoch=1)])
    other_seed = np.concatenate([b["id"] for b in batches(arrays, 5, seed=2, epoch=0)])
    np.testing.assert_array_equal(seen, again)
    assert (seen != next_epoch).any() and (seen != other_seed).any()


def test_unshuffled_epoch_with_remainder_keeps_order():
    epoch = list(batches(_arrays(), 5, seed=0, epoch=0, shuffle=False, drop_remainder=False))
    assert [len(batch["id"]) for batch in epoch] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate([b["id"] for b in epoch]), np.arange(23))


def test_train_stream_crosses_epochs_in_epoch_order():
    arrays = _arrays()
    stream = list(itertools.islice(train_batches(arrays, 5, seed=4), 12))
    expected = [b for epoch in range(3) for b in batches(arrays, 5, seed=4, epoch=epoch)]
    for got, want in zip(stream, expected, strict=True):
        np.testing.assert_array_equal(got["id"], want["id"])
        _assert_aligned(got)


@pytest.mark.parametrize("start_step", [0, 1, 3, 4, 9, 17])
def test_resumed_stream_equals_the_tail_of_the_full_stream(start_step):
    arrays = _arrays()
    full = list(itertools.islice(train_batches(arrays, 5, seed=7), 24))
    resumed = list(itertools.islice(train_batches(arrays, 5, seed=7, start_step=start_step), 6))
    for offset, batch in enumerate(resumed):
        for key in arrays:
            np.testing.assert_array_equal(batch[key], full[start_step + offset][key])
    np.testing.assert_array_equal(
        batch_at_step(arrays, 5, seed=7, step=start_step)["id"], full[start_step]["id"]
    )
    positional = next(train_batches(arrays, 5, 7, start_step))  # (arrays, batch_size, seed, step)
    np.testing.assert_array_equal(positional["id"], full[start_step]["id"])


def test_train_batches_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size 30 is larger than the 23 examples"):
        next(train_batches(_arrays(), 30, seed=0))
    with pytest.raises(ValueError, match="start_step must be >= 0"):
        next(train_batches(_arrays(), 5, seed=0, start_step=-1))
    with pytest.raises(ValueError, match="share their leading"):
        next(train_batches({"a": np.zeros(4), "b": np.zeros(5)}, 2, seed=0))


@pytest.mark.parametrize("count, batch_size", [(23, 5), (20, 5), (3, 8), (1, 1)])
def test_eval_batches_cover_every_example_once_with_a_mask(count, batch_size):
    arrays = _arrays(count)
    evaluated = list(eval_batches(arrays, batch_size))
    assert len(evaluated) == -(-count // batch_size)
    for batch in evaluated:
        assert batch["id"].shape == (batch_size,) and batch["mask"].dtype == bool
        _assert_aligned(batch)
    masks = np.concatenate([batch["mask"] for batch in evaluated])
    ids = np.concatenate([batch["id"] for batch in evaluated])
    np.testing.assert_array_equal(ids[masks], np.arange(count))
    assert masks.sum() == count and not masks[count:].any()
    # Padding repeats a real example, so models see valid inputs in the padded rows.
    np.testing.assert_array_equal(ids[~masks], 0)


def test_eval_batches_refuses_an_existing_mask_key():
    with pytest.raises(ValueError, match="already have a 'mask' key"):
        next(eval_batches({"mask": np.zeros(3)}, 2))
