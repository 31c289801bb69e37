"""Greedy decoding and beam search for autoregressive decoders, batched and jit-compatible.

Both run a fixed number of steps (``jax.lax.scan``) with masks instead of early exits, so
they compile once per shape. A decoder is given as a step function::

    step_fn(state, tokens i32[rows]) -> (new_state, log_probs f32[rows, vocab])

where ``state`` is any pytree whose leaves have ``rows`` as their leading axis, ``tokens`` are
the previous outputs (``start_token`` at the first step) and ``log_probs`` are normalised
log-probabilities of the next token (``-inf`` for tokens the decoder must never emit).
Anything the decoder reads but never changes (encoder outputs) is closed over by
``step_fn``; for beam search it must be laid out for ``rows = batch * beam_width`` with
`tile_beams` (row ``b * beam_width + k`` is beam k of example b).

End of sequence: once a hypothesis emits ``eos_token`` it is finished; every later position
holds ``pad_token`` and adds nothing to its score. A hypothesis still unfinished after
``max_length`` steps is returned as it is (its tokens fill the whole row).

Length normalisation (beam search only): the final hypotheses are ranked by
``log_prob / length ** length_penalty`` (length counts the EOS token). ``length_penalty=0``
(the default) ranks by the raw log-probability, which is the exact objective of the search;
while searching, beams are always pruned by raw log-probability.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
StepFn = Callable[[Any, Array], tuple[Any, Array]]


class SearchResult(NamedTuple):
    """Decoded hypotheses.

    Attributes:
      tokens: i32[batch, max_length] (greedy) or i32[batch, beam_width, max_length]
        (beam search, best first).
      log_probs: f32[batch] or f32[batch, beam_width]: summed log-probability of each row.
      lengths: i32[batch] or i32[batch, beam_width]: tokens up to and including EOS.
      scores: like ``log_probs``: the ranking score (``log_probs`` after length
        normalisation; equal to it for greedy decoding).
    """

    tokens: Array
    log_probs: Array
    lengths: Array
    scores: Array


def tile_beams(tree: Any, beam_width: int) -> Any:
    """Repeats every leaf ``[batch, ...] -> [batch * beam_width, ...]`` (each row
    ``beam_width`` times in a row), the row layout `beam_search` uses."""
    return jax.tree.map(lambda leaf: jnp.repeat(leaf, beam_width, axis=0), tree)


def greedy_search(
    step_fn: StepFn,
    initial_state: Any,
    batch_size: int,
    *,
    max_length: int,
    start_token: int,
    eos_token: int,
    pad_token: int,
) -> SearchResult:
    """Picks the most probable token at every step. ``initial_state`` leaves: [batch, ...]."""

    def body(carry, _):
        state, previous, finished, log_prob, length = carry
        state, step_log_probs = step_fn(state, previous)
        token = jnp.argmax(step_log_probs, axis=-1).astype(jnp.int32)
        token_log_prob = jnp.take_along_axis(step_log_probs, token[:, None], axis=-1)[:, 0]
        token = jnp.where(finished, pad_token, token)
        log_prob = log_prob + jnp.where(finished, 0.0, token_log_prob)
        length = length + (~finished).astype(jnp.int32)
        finished = finished | (token == eos_token)
        return (state, token, finished, log_prob, length), token

    init = (
        initial_state,
        jnp.full((batch_size,), start_token, jnp.int32),
        jnp.zeros((batch_size,), bool),
        jnp.zeros((batch_size,), jnp.float32),
        jnp.zeros((batch_size,), jnp.int32),
    )
    (_, _, _, log_prob, length), tokens = jax.lax.scan(body, init, None, length=max_length)
    return SearchResult(tokens.T, log_prob, length, log_prob)


class _Beams(NamedTuple):
    state: Any  # decoder state, leaves [batch * beam_width, ...]
    tokens: Array  # i32[batch, beam_width, max_length]
    log_probs: Array  # f32[batch, beam_width]
    finished: Array  # bool[batch, beam_width]
    lengths: Array  # i32[batch, beam_width]


def beam_search(
    step_fn: StepFn,
    initial_state: Any,
    batch_size: int,
    *,
    beam_width: int,
    max_length: int,
    start_token: int,
    eos_token: int,
    pad_token: int,
    length_penalty: float = 0.0,
) -> SearchResult:
    """Keeps the ``beam_width`` most probable prefixes per example at every step.

    ``initial_state`` leaves are ``[batch, ...]`` (tiled to the beams here). At step t each
    unfinished beam is extended by every token and each finished beam by ``pad_token`` at no
    cost; the best ``beam_width`` of these candidates per example survive. At the start only
    beam 0 is live (the others score -inf), so the first step does not fill the beam with
    copies. With ``beam_width=1`` this is exactly `greedy_search`.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1; got {beam_width}")
    rows = batch_size * beam_width
    example = jnp.arange(batch_size)[:, None]

    def reorder(leaf: Array, parent: Array) -> Array:
        """Leaf [batch * beam, ...] -> the same rows taken from each beam's parent."""
        grouped = leaf.reshape(batch_size, beam_width, *leaf.shape[1:])
        return grouped[example, parent].reshape(leaf.shape)

    def body(beams: _Beams, position: Array):
        previous = jnp.where(
            position == 0,
            jnp.full((rows,), start_token, jnp.int32),
            jnp.take(beams.tokens.reshape(rows, max_length), position - 1, axis=1),
        )
        state, step_log_probs = step_fn(beams.state, previous)
        vocab = step_log_probs.shape[-1]
        step_log_probs = step_log_probs.reshape(batch_size, beam_width, vocab)
        only_pad = jnp.full((vocab,), -jnp.inf).at[pad_token].set(0.0)
        step_log_probs = jnp.where(beams.finished[..., None], only_pad, step_log_probs)
        candidates = (beams.log_probs[..., None] + step_log_probs).reshape(batch_size, -1)
        log_probs, index = jax.lax.top_k(candidates, beam_width)  # ties: lower index first
        parent, token = index // vocab, (index % vocab).astype(jnp.int32)
        was_finished = beams.finished[example, parent]
        tokens = beams.tokens[example, parent].at[:, :, position].set(token)
        return _Beams(
            state=jax.tree.map(lambda leaf: reorder(leaf, parent), state),
            tokens=tokens,
            log_probs=log_probs,
            finished=was_finished | (token == eos_token),
            lengths=beams.lengths[example, parent] + (~was_finished).astype(jnp.int32),
        ), None

    live_first = jnp.where(jnp.arange(beam_width) == 0, 0.0, -jnp.inf)
    init = _Beams(
        state=tile_beams(initial_state, beam_width),
        tokens=jnp.full((batch_size, beam_width, max_length), pad_token, jnp.int32),
        log_probs=jnp.broadcast_to(live_first, (batch_size, beam_width)).astype(jnp.float32),
        finished=jnp.zeros((batch_size, beam_width), bool),
        lengths=jnp.zeros((batch_size, beam_width), jnp.int32),
    )
    beams, _ = jax.lax.scan(body, init, jnp.arange(max_length))
    scores = beams.log_probs
    if length_penalty != 0.0:
        scores = scores / jnp.maximum(beams.lengths, 1).astype(jnp.float32) ** length_penalty
    order = jnp.argsort(-scores, axis=-1, stable=True)
    return SearchResult(
        tokens=beams.tokens[example, order],
        log_probs=beams.log_probs[example, order],
        lengths=beams.lengths[example, order],
        scores=scores[example, order],
    )
