"""Models built from gru_jax modules, one file per model family.

Public API::

    SequenceClassifier, StackedLSTM, count_parameters   # sequential image classification
"""

from gru_jax.models.sequence_classifier import SequenceClassifier, StackedLSTM, count_parameters

__all__ = ["SequenceClassifier", "StackedLSTM", "count_parameters"]
