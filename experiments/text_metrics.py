"""Metrics of predicted strings against reference strings (host side, rapidfuzz)."""

from __future__ import annotations

from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein


def sequence_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """The fraction of predictions equal to their reference string (exact match)."""
    _check_pairs(predictions, references)
    return sum(p == r for p, r in zip(predictions, references)) / len(references)


def character_error_rate(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Character error rate: the summed Levenshtein distances (insertions, deletions and
    substitutions) divided by the summed reference lengths. Can exceed 1."""
    _check_pairs(predictions, references)
    characters = sum(len(reference) for reference in references)
    if characters == 0:
        raise ValueError("character_error_rate needs at least one reference character")
    errors = sum(Levenshtein.distance(p, r) for p, r in zip(predictions, references))
    return errors / characters


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references) or not references:
        raise ValueError(
            f"need as many predictions as references (at least one); got "
            f"{len(predictions)} and {len(references)}"
        )
