"""Image to sequence on digit strings: the smoke config end to end (and resumed), attention,
greedy and beam search (against a hand-built score table), metrics and the masked loss."""

import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import digit_strings as digit_strings_config
from experiments.tasks.digit_strings import masked_token_loss, shift_right
from experiments.text_metrics import character_error_rate, sequence_accuracy
from experiments.trainer import train_and_evaluate
from gru_jax import data as gru_data
from gru_jax.models import ImageToSequence, beam_search, greedy_search

TEST_KEYS = {"sequence_accuracy", "cer", "greedy_sequence_accuracy", "greedy_cer", "loss"}


def test_smoke_config_trains_evaluates_and_resumes(tmp_path):
    config = digit_strings_config.get_config("smoke")
    results = train_and_evaluate(config, str(tmp_path))
    with open(tmp_path / "results.json") as file:
        written = json.load(file)
    assert TEST_KEYS <= set(written["test"])
    for key in TEST_KEYS - {"loss"}:
        assert 0.0 <= written["test"][key] <= (1.0 if "accuracy" in key else 10.0)
    assert np.isfinite(written["test"]["loss"]) and written["train_steps"] == 4
    assert written["test"] == pytest.approx(results["test"])
    assert (tmp_path / "plots" / "attention_maps.png").stat().st_size > 1000
    assert os.listdir(tmp_path / "tensorboard")
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
    # A second run in the same workdir restores the final checkpoint and evaluates it again.
    resumed = train_and_evaluate(config, str(tmp_path))
    assert resumed["resumed_from_step"] == 4
    assert resumed["test"] == pytest.approx(results["test"])


@pytest.fixture(scope="module")
def model() -> ImageToSequence:
    """A random model with the smoke config's sizes (initialisers compile once per shape)."""
    cfg = digit_strings_config.get_config("smoke").model
    model = ImageToSequence(
        (16, 80, 1),
        gru_data.VOCAB_SIZE,
        start_token=gru_data.BOS_ID,
        eos_token=gru_data.EOS_ID,
        pad_token=gru_data.PAD_ID,
        forbidden_tokens=(gru_data.PAD_ID, gru_data.BOS_ID),
        conv_channels=cfg.conv_channels,
        width_pooling=cfg.width_pooling,
        encoder_hidden_size=cfg.encoder_hidden_size,
        embedding_size=cfg.embedding_size,
        decoder_hidden_size=cfg.decoder_hidden_size,
        attention_size=cfg.attention_size,
        rngs=nnx.Rngs(params=0, dropout=1),
    )
    model.eval()
    return model


def _images(count: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(3).uniform(size=(count, 16, 80, 1)), jnp.float32)


def test_attention_weights_sum_to_one_over_valid_columns(model):
    valid_columns = jnp.array([20, 7, 3, 1, 12])
    tokens = jnp.array([[1, 2, gru_data.EOS_ID, gru_data.PAD_ID]] * 5)

    @nnx.jit
    def attention(model, images):
        memory, state = model.encode(images)
        valid = jnp.arange(memory.mask.shape[1])[None, :] < valid_columns[:, None]
        _, masked = model.attend(memory._replace(mask=valid), state)
        _, unmasked = model.attend(memory, state)
        return valid, masked, unmasked, model.attention(images, shift_right(tokens))

    valid, masked, unmasked, teacher_forced = map(np.asarray, attention(model, _images(5)))
    assert valid.shape == (5, 20)  # 80 px / (2 * 2) width pooling
    np.testing.assert_allclose(masked.sum(-1), 1.0, rtol=1e-6)
    assert np.all(masked[~valid] == 0.0) and np.all(masked[valid] > 0.0)
    np.testing.assert_allclose(unmasked.sum(-1), 1.0, rtol=1e-6)
    # The teacher-forced pass reports such weights at every step.
    assert teacher_forced.shape == (5, 4, 20)
    np.testing.assert_allclose(teacher_forced.sum(-1), 1.0, rtol=1e-6)


def test_beam_search_of_width_one_is_greedy_decoding(model):
    @nnx.jit
    def decode(model, images):
        return model.greedy_decode(images, 6), model.beam_decode(images, 6, beam_width=1)

    greedy, beam = decode(model, _images(16))
    np.testing.assert_array_equal(beam.tokens[:, 0], greedy.tokens)
    np.testing.assert_allclose(beam.log_probs[:, 0], greedy.log_probs, rtol=1e-5)
    np.testing.assert_array_equal(beam.lengths[:, 0], greedy.lengths)
    assert not np.isin(np.asarray(greedy.tokens), [gru_data.BOS_ID]).any()


# A hand-built decoder: the next-token distribution depends on the previous token only.
A, B, C, EOS, PAD, START = range(6)
TABLE = np.zeros((6, 6))
TABLE[START, [A, B, EOS]] = [0.5, 0.4, 0.1]
TABLE[A, [A, B, EOS]] = [0.34, 0.33, 0.33]
TABLE[B, [EOS, C]] = [0.9, 0.1]
TABLE[C, EOS] = 1.0
TABLE[[EOS, PAD], EOS] = 1.0  # never read: finished hypotheses are extended by PAD


def _table_step(state, tokens):
    with np.errstate(divide="ignore"):
        log_table = jnp.asarray(np.log(TABLE), jnp.float32)
    return state, log_table[tokens]


def _sequence_log_prob(sequence):
    previous, total = START, 0.0
    for token in sequence:
        total += np.log(TABLE[previous, token]) if TABLE[previous, token] > 0 else -np.inf
        previous = token
    return total


def _best_sequence(max_length):
    """Exhaustive search over every ending (EOS) or full-length sequence."""
    candidates = []
    for length in range(1, max_length + 1):
        for body in itertools.product([A, B, C, EOS], repeat=length):
            if EOS in body[:-1] or (length < max_length and body[-1] != EOS):
                continue
            candidates.append((_sequence_log_prob(body), body))
    return max(candidates)


def test_beam_search_finds_the_best_sequence_where_greedy_fails():
    kwargs = dict(max_length=3, start_token=START, eos_token=EOS, pad_token=PAD)
    state = jnp.zeros((2, 1))  # two identical examples: the batch axis is handled per row
    greedy = greedy_search(_table_step, state, 2, **kwargs)
    beam = beam_search(_table_step, state, 2, beam_width=2, **kwargs)
    best_log_prob, best = _best_sequence(3)
    assert best == (B, EOS)
    # Greedy follows A (0.5) and ends with A A A (p = 0.058); beam search keeps B (0.4),
    # whose continuation B EOS (p = 0.36) is the best sequence.
    np.testing.assert_array_equal(greedy.tokens, [[A, A, A]] * 2)
    np.testing.assert_allclose(greedy.log_probs, np.log(0.5 * 0.34 * 0.34), rtol=1e-5)
    np.testing.assert_array_equal(beam.tokens[:, 0], [[B, EOS, PAD]] * 2)
    np.testing.assert_allclose(beam.log_probs[:, 0], best_log_prob, rtol=1e-5)
    np.testing.assert_array_equal(beam.lengths[:, 0], [2, 2])
    np.testing.assert_array_equal(beam.tokens[:, 1], [[A, A, A]] * 2)  # the runner-up
    # A beam as wide as the vocabulary ranks all hypotheses it keeps, best first.
    wide = beam_search(_table_step, state, 2, beam_width=6, **kwargs)
    assert np.all(np.diff(np.asarray(wide.scores), axis=-1) <= 0)
    np.testing.assert_array_equal(wide.tokens[0, :3], [[B, EOS, PAD], [A, EOS, PAD], [A, B, EOS]])


def test_length_penalty_ranks_by_log_prob_per_token():
    kwargs = dict(max_length=3, start_token=START, eos_token=EOS, pad_token=PAD, beam_width=4)
    beam = beam_search(_table_step, jnp.zeros((1, 1)), 1, length_penalty=1.0, **kwargs)
    expected = np.asarray(beam.log_probs) / np.asarray(beam.lengths)
    np.testing.assert_allclose(beam.scores, expected, rtol=1e-6)
    assert np.all(np.diff(np.asarray(beam.scores), axis=-1) <= 0)
    with pytest.raises(ValueError, match="beam_width must be >= 1"):
        beam_search(_table_step, jnp.zeros((1, 1)), 1, **{**kwargs, "beam_width": 0})


def test_sequence_accuracy_and_character_error_rate_on_hand_made_strings():
    references = ["123", "455", "1", "8", "90"]
    predictions = ["123", "45", "", "9", "0912"]
    # distances: 0, 1 (deletion), 1 (deletion), 1 (substitution), 3 (insert 0, 1, 2 / ...)
    assert sequence_accuracy(predictions, references) == pytest.approx(1 / 5)
    assert character_error_rate(predictions, references) == pytest.approx((0 + 1 + 1 + 1 + 3) / 10)
    assert character_error_rate(references, references) == 0.0
    with pytest.raises(ValueError, match="as many predictions as references"):
        sequence_accuracy(["1"], ["1", "2"])
    texts = gru_data.tokens_to_text(np.array([[1, 2, gru_data.EOS_ID, 11], [7, 10, 11, 11]]))
    assert texts == ["12", "7"]


def test_teacher_forced_loss_ignores_pad_positions():
    tokens = jnp.array([[3, 1, gru_data.EOS_ID, 11, 11], [4, 4, 4, 4, gru_data.EOS_ID]])
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 5, gru_data.VOCAB_SIZE)), jnp.float32)
    loss, mask = masked_token_loss(logits, tokens)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    log_probs = jax.nn.log_softmax(logits)
    picked = -jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(loss, [picked[0, :3].mean(), picked[1].mean()], rtol=1e-6)
    changed = logits.at[0, 3:].set(100.0 * rng.normal(size=(2, gru_data.VOCAB_SIZE)))
    np.testing.assert_allclose(masked_token_loss(changed, tokens)[0], loss, rtol=1e-6)
    np.testing.assert_array_equal(shift_right(tokens)[:, 0], gru_data.BOS_ID)
    np.testing.assert_array_equal(shift_right(tokens), gru_data.decoder_inputs(tokens))
