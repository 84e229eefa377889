"""Ready applications of `lstm_keras.LSTM`: sentiment and spoken digits.

Both are functional Keras models that take raw inputs (strings, mono
waveforms), hold their preprocessing inside, share `LSTMBackbone`, and
return class probabilities from its hidden states (speech: the last one;
sentiment: by default their maximum over the text's tokens, which SST-2
rewards, or the last with `pooling="last"`):

```python
model = build_classifier("sentiment", class_names=["negative", "positive"])
model.adapt(train_texts)   # builds the vocabulary
model.compile(decay_steps=2 * steps_per_epoch)  # Adam (annealed), CE, accuracy
model.fit(train_ds, validation_data=val_ds, epochs=2)
model.predict(tf.constant(["a gem of a film"]))   # [[p_negative, p_positive]]
```

They need the TensorFlow backend (string tensors, `tf.debugging` checks).
`runner.train_and_evaluate` trains them (`lstm-keras-train`, `make eval`).
"""

from lstm_keras.applications.backbone import LSTMBackbone
from lstm_keras.applications.optimizers import LazyAdam
from lstm_keras.applications.preprocessing import ClipMeanNormalization
from lstm_keras.applications.preprocessing import FitLength
from lstm_keras.applications.preprocessing import LogMelSpectrogram
from lstm_keras.applications.preprocessing import SpectrogramMasking
from lstm_keras.applications.preprocessing import TextStandardization
from lstm_keras.applications.preprocessing import WaveformAugmentation
from lstm_keras.applications.sentiment import MaxPoolingBackbone
from lstm_keras.applications.sentiment import SentimentClassifier
from lstm_keras.applications.speech import SpeechClassifier
from lstm_keras.applications.subword import SubwordEmbedding
from lstm_keras.applications.task import MemberAverage

TASKS = {"sentiment": SentimentClassifier, "speech": SpeechClassifier}

DEFAULT_OPTIONS = {
    task: dict(cls.DEFAULT_OPTIONS) for task, cls in TASKS.items()
}


def build_classifier(task, *, class_names, sample_rate=None, **options):
    """Builds the application model for `task` from raw-input options.

    Args:
        task: `"sentiment"` or `"speech"`.
        class_names: Sequence of class names; label `i` is `class_names[i]`.
        sample_rate: Samples per second; required for `"speech"`, must be
            `None` for `"sentiment"`.
        **options: Constructor arguments of the task's model (`units`,
            `num_layers`, `bidirectional`, `lstm_options`, ...); the rest
            come from `DEFAULT_OPTIONS[task]`.

    Returns:
        An unadapted, uncompiled `SentimentClassifier` or `SpeechClassifier`.
    """
    if task not in TASKS:
        raise ValueError(
            f"Received an invalid value for argument `task`, expected one of "
            f"{sorted(TASKS)}, got {task!r}."
        )
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS[task]) - {"name"})
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for task {task!r}; known options: "
            f"{sorted(DEFAULT_OPTIONS[task])}."
        )
    if task == "speech":
        if sample_rate is None:
            raise ValueError(
                "Task 'speech' needs argument `sample_rate` (samples per "
                "second), got None."
            )
        return SpeechClassifier(class_names, sample_rate, **options)
    if sample_rate is not None:
        raise ValueError(
            "Argument `sample_rate` only applies to task 'speech'; task "
            f"'sentiment' received {sample_rate!r}."
        )
    return SentimentClassifier(class_names, **options)


__all__ = [
    "ClipMeanNormalization",
    "DEFAULT_OPTIONS",
    "FitLength",
    "LSTMBackbone",
    "LazyAdam",
    "LogMelSpectrogram",
    "MaxPoolingBackbone",
    "MemberAverage",
    "SentimentClassifier",
    "SpectrogramMasking",
    "SpeechClassifier",
    "SubwordEmbedding",
    "TextStandardization",
    "WaveformAugmentation",
    "build_classifier",
]
