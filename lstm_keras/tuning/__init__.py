"""Hyperparameter search over dropout and size of the applications.

`tune(TuneConfig(...), tune_dir)` runs a resumable (and, with KerasTuner's
chief/worker variables, distributed) KerasTuner search of the sentiment or
speech application, then compares its best trial with an untuned baseline;
`SentimentHyperModel` and `SpeechHyperModel` are the hypermodels, usable
with any KerasTuner tuner. `tuning/tune.py` is the command line.

It needs `keras-tuner` (the `tune` extra) and, on TensorFlow, `tensorboard`
(the `apps` extra): KerasTuner imports its hparams plugin for every trial.
"""

from lstm_keras.tuning.hypermodels import HYPERMODELS
from lstm_keras.tuning.hypermodels import ApplicationHyperModel
from lstm_keras.tuning.hypermodels import SentimentHyperModel
from lstm_keras.tuning.hypermodels import SpeechHyperModel
from lstm_keras.tuning.resume import StateFileError
from lstm_keras.tuning.search import ChiefUnreachableError
from lstm_keras.tuning.search import TuneConfig
from lstm_keras.tuning.search import tune
from lstm_keras.tuning.search_space import SearchSpace

__all__ = [
    "HYPERMODELS",
    "ApplicationHyperModel",
    "ChiefUnreachableError",
    "SearchSpace",
    "SentimentHyperModel",
    "SpeechHyperModel",
    "StateFileError",
    "TuneConfig",
    "tune",
]
