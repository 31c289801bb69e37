"""Models built from gru_jax modules, one file per model family.

Public API::

    SequenceClassifier, StackedLSTM, count_parameters   # sequential image classification
    VideoPredictor                                      # ConvGRU encoder-forecaster
    VideoClassifier, FrameEncoder                       # per-frame CNN + GRU
    ImageToSequence                                     # CNN + attention GRU decoder
    greedy_search, beam_search, tile_beams, SearchResult  # autoregressive decoding
"""

from gru_jax.models.image_to_sequence import ImageToSequence
from gru_jax.models.sequence_classifier import SequenceClassifier, StackedLSTM, count_parameters
from gru_jax.models.sequence_search import SearchResult, beam_search, greedy_search, tile_beams
from gru_jax.models.video_classifier import FrameEncoder, VideoClassifier
from gru_jax.models.video_predictor import VideoPredictor

__all__ = [
    "FrameEncoder",
    "ImageToSequence",
    "SearchResult",
    "SequenceClassifier",
    "StackedLSTM",
    "VideoClassifier",
    "VideoPredictor",
    "beam_search",
    "count_parameters",
    "greedy_search",
    "tile_beams",
]
