"""Adversarial training: the defense side of the study, resumable, every FLOP counted.

* :mod:`~robustlib.advtrain.loop`: :class:`AdvTrainConfig` and
  :func:`adversarial_training` (the paper's loop on one model the caller owns);
* :mod:`~robustlib.advtrain.pool`: which pooled attacked examples a round trains on;
* :mod:`~robustlib.advtrain.checkpoint`: one folder per completed round, to resume from.

The study that defends every model of a fine-tuning run and fills the transfer matrix
is :mod:`robustlib.studies.advtrain`.
"""

from .checkpoint import load_round
from .loop import (
    TRAINING_OWNS,
    AdvTrainConfig,
    AdvTrainResult,
    TextExample,
    adversarial_training,
    rounds_for_size,
)
from .pool import SAMPLING, loss_ranks, sample_without_replacement, sampling_log_weights, sampling_probabilities

__all__ = [
    "SAMPLING", "TRAINING_OWNS", "AdvTrainConfig", "AdvTrainResult", "TextExample", "adversarial_training",
    "load_round", "loss_ranks", "rounds_for_size", "sample_without_replacement", "sampling_log_weights",
    "sampling_probabilities",
]
