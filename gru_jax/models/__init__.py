"""Models built from gru_jax modules, one file per model family.

Public API::

    SequenceClassifier, StackedLSTM, count_parameters   # sequential image classification
    VideoPredictor                                      # ConvGRU encoder-forecaster
"""

from gru_jax.models.sequence_classifier import SequenceClassifier, StackedLSTM, count_parameters
from gru_jax.models.video_predictor import VideoPredictor

__all__ = ["SequenceClassifier", "StackedLSTM", "VideoPredictor", "count_parameters"]
