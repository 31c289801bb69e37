"""SequenceClassifier: readout semantics, padding, parameter counts, GRU and LSTM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gru_jax.models import SequenceClassifier, count_parameters

BATCH, STEPS, FEATURES, HIDDEN, CLASSES = 4, 6, 3, 5, 7
LENGTHS = jnp.array([6, 4, 1, 6])


def _inputs():
    return jax.random.normal(jax.random.key(0), (BATCH, STEPS, FEATURES))


@nnx.jit
def _logits(model, x, seq_lengths=None):
    return model(x, seq_lengths)


@nnx.jit
def _features_and_outputs(model, x, seq_lengths):
    """The readout features and the stack's last-layer outputs, compiled once."""
    return model.features(x, seq_lengths), model.rnn(x, seq_lengths)


def _model(**kwargs):
    model = SequenceClassifier(
        FEATURES, CLASSES, hidden_size=HIDDEN, rngs=nnx.Rngs(params=0, dropout=1), **kwargs
    )
    model.eval()
    return model


def test_last_readout_of_bidirectional_gru_is_forward_end_and_backward_start():
    model = _model(bidirectional=True, readout="last")
    x = _inputs()
    features, outputs = _features_and_outputs(model, x, LENGTHS)  # outputs: forward | backward
    for row, length in enumerate(np.asarray(LENGTHS)):
        # forward: its state after the last valid step; backward: its state at t = 0.
        np.testing.assert_allclose(
            features[row, :HIDDEN], outputs[row, length - 1, :HIDDEN], atol=1e-6
        )
        np.testing.assert_allclose(features[row, HIDDEN:], outputs[row, 0, HIDDEN:], atol=1e-6)


def test_mean_readout_averages_valid_steps_only():
    model = _model(readout="mean", num_layers=2)
    x = _inputs()
    features, outputs = _features_and_outputs(model, x, LENGTHS)
    for row, length in enumerate(np.asarray(LENGTHS)):
        expected = np.asarray(outputs[row, :length]).mean(axis=0)
        np.testing.assert_allclose(features[row], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "cell, bidirectional, readout",
    [
        ("gru", True, "last"),
        ("gru", False, "mean"),
        ("lstm", True, "mean"),
        ("lstm", False, "last"),
    ],
)
def test_padding_is_ignored_and_matches_truncated_sequences(cell, bidirectional, readout):
    model = _model(cell=cell, bidirectional=bidirectional, readout=readout, num_layers=2)
    x = _inputs()
    logits = _logits(model, x, LENGTHS)
    garbage = x.at[1, 4:].set(50.0).at[2, 1:].set(-9.0)
    np.testing.assert_allclose(_logits(model, garbage, LENGTHS), logits, atol=1e-6)
    # Row 1 (length 4) alone and unpadded gives the same logits as inside the padded batch.
    alone = _logits(model, x[1:2, : int(LENGTHS[1])])
    np.testing.assert_allclose(alone[0], logits[1], atol=1e-5)


@pytest.mark.parametrize(
    "cell, bidirectional, reset_after, expected",
    [
        # GRU per direction: 3 * (F*H + H*H + 2H) with both biases (reset_after), head D*H*C + C.
        ("gru", False, True, 3 * (3 * 5 + 25 + 10) + 5 * 7 + 7),
        ("gru", True, True, 2 * 3 * (3 * 5 + 25 + 10) + 10 * 7 + 7),
        ("gru", False, False, 3 * (3 * 5 + 25 + 5) + 5 * 7 + 7),
        # LSTM per direction: 4 * (F*H + H*H + H).
        ("lstm", True, True, 2 * 4 * (3 * 5 + 25 + 5) + 10 * 7 + 7),
    ],
)
def test_parameter_count(cell, bidirectional, reset_after, expected):
    model = _model(cell=cell, bidirectional=bidirectional, reset_after=reset_after)
    assert count_parameters(model) == expected


def test_update_gates_of_first_layer_match_the_gru_recurrence():
    model = _model()
    x = _inputs()
    gates = model.first_layer_gates(x)
    assert gates.update.shape == (BATCH, STEPS, HIDDEN)
    # h_t = z*h_{t-1} + (1-z)*n_t must hold for the layer's own outputs.
    outputs = np.asarray(model.rnn(x))
    previous = np.concatenate([np.zeros_like(outputs[:, :1]), outputs[:, :-1]], axis=1)
    z, n = np.asarray(gates.update), np.asarray(gates.candidate)
    np.testing.assert_allclose(z * previous + (1 - z) * n, outputs, atol=1e-5)


def test_dropout_is_active_only_in_train_mode():
    model = _model(dropout=0.5, bidirectional=True)
    x = _inputs()
    np.testing.assert_array_equal(model(x), model(x))
    model.train()
    assert not np.allclose(model(x), model(x))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"cell": "rnn"}, "unknown cell 'rnn'"), ({"readout": "max"}, "unknown readout 'max'")],
)
def test_bad_options_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _model(**kwargs)


def test_gates_need_a_gru():
    with pytest.raises(ValueError, match="only available for cell='gru'"):
        _model(cell="lstm").first_layer_gates(_inputs())
