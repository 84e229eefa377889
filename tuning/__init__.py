"""The tuning command (`lstm-keras-tune`, `python -m tuning`) and the
applications' KerasTuner hypermodels, one `keras_tuner.HyperModel` per
application: `tuning.SentimentHyperModel` and `tuning.SpeechHyperModel`
(from `lstm_keras.tuning`, imported on first use so that `--help` stays
fast)."""

__all__ = ["SentimentHyperModel", "SpeechHyperModel"]


def __getattr__(name):
    if name in __all__:
        from lstm_keras import tuning

        return getattr(tuning, name)
    raise AttributeError(f"module 'tuning' has no attribute {name!r}")
