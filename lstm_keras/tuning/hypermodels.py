"""`keras_tuner.HyperModel`s of the applications: sentiment and speech.

A hypermodel keeps its fixed arguments in `__init__` (class names, the
data to adapt the preprocessing to, the untuned model options, the search
space's bounds, the seed), names every hyperparameter with a default in
`build(hp)`, and trains in `fit(hp, model, ...)`, which reports what the
tuning report needs: the best epoch's validation and training losses (the
overfitting gap) beside the final ones. A trial whose loss becomes NaN is
stopped and raised as `keras_tuner.errors.FailedTrialError`, so the search
marks it failed and goes on.

```python
hypermodel = SentimentHyperModel(
    class_names=["negative", "positive"], adapt_data=train_texts
)
tuner = keras_tuner.RandomSearch(
    hypermodel, objective="val_accuracy", max_trials=8, directory="tune"
)
tuner.search(train_examples, validation=validation_batches, epochs=3)
```
"""

import json
import math
import os

import keras
import keras_tuner
import numpy as np

from lstm_keras.applications import build_classifier
from lstm_keras.applications import pipelines
from lstm_keras.applications.reports import write_json
from lstm_keras.applications.sentiment import SentimentClassifier
from lstm_keras.applications.speech import SpeechClassifier
from lstm_keras.tuning.search_space import DROPOUT_STEP
from lstm_keras.tuning.search_space import SearchSpace

# What `fit` reports per trial (all floats), in the order of `results.csv`.
TRIAL_METRICS = (
    "final_train_loss",
    "final_train_accuracy",
    "best_val_loss",
    "best_val_accuracy",
    "val_loss",
    "train_loss",
    "gap",
    "best_epoch",
    "epochs_run",
)
# Dropout options a baseline "without dropout" sets to zero, per app.
DROPOUT_OPTIONS = {
    "sentiment": ("embedding_dropout", "word_dropout", "head_dropout"),
    "speech": ("head_dropout",),
}


class ApplicationHyperModel(keras_tuner.HyperModel):
    """Base of `SentimentHyperModel` and `SpeechHyperModel`.

    Args:
        class_names: Sequence of class names; label `i` is `class_names[i]`.
        sample_rate: Samples per second (speech), else `None`. Defaults to
            `None`.
        adapt_data: What `model.adapt` builds the vocabulary or the feature
            statistics from (a dataset of inputs or `(input, label)` pairs),
            or `None` to leave the preprocessing unadapted. Defaults to
            `None`.
        space: The `SearchSpace` (bounds). Defaults to `SearchSpace()`.
        fixed_options: Untuned options of the application model
            (`embedding_dim`, `head_dropout`, ...); the rest take its
            defaults. Defaults to `None` (none).
        decay_steps: Steps over which the learning rate follows its cosine
            down to 5% (see `Classifier.compile`), or `None` for a constant
            rate. Defaults to `None`.
        seed: Seeds the weights and the dropout masks of every trial, so a
            trial repeats exactly and trials differ by their
            hyperparameters only. Defaults to `0`.
        name: Optional name of the hypermodel.
    """

    app = None
    model_class = None

    def __init__(
        self,
        class_names,
        sample_rate=None,
        adapt_data=None,
        space=None,
        fixed_options=None,
        decay_steps=None,
        seed=0,
        name=None,
    ):
        super().__init__(name=name)
        self.class_names = list(class_names)
        self.sample_rate = sample_rate
        self.adapt_data = adapt_data
        self.space = SearchSpace() if space is None else space
        if not isinstance(self.space, SearchSpace):
            raise TypeError(
                f"Expected argument space to be a SearchSpace, got {space!r}."
            )
        self.fixed_options = dict(fixed_options or {})
        tuned = {"units", "num_layers", "dropout", "recurrent_dropout"}
        clash = sorted(tuned & set(self.fixed_options))
        if clash:
            raise ValueError(
                f"Argument fixed_options may not hold the tuned options "
                f"{clash}; set their bounds in the search space instead."
            )
        self.decay_steps = decay_steps
        self.seed = seed

    # ------------------------------------------------------------ build

    def build(self, hp):
        """An adapted, compiled application model for the values of `hp`.

        Hyperparameters (defaults: the application's, clipped to the
        bounds): `units`, `num_layers`, `dropout`, `recurrent_dropout`,
        `learning_rate`, and `layer_norm` when the space offers it.
        """
        space = self.space
        defaults = self.model_class.DEFAULT_OPTIONS
        units = _int(
            hp,
            "units",
            space.units,
            _power_of_two_default(space.units, defaults["units"]),
            step=2,
            sampling="log",
        )
        num_layers = _int(
            hp,
            "num_layers",
            space.num_layers,
            _clip(defaults["num_layers"], space.num_layers),
        )
        dropout = _rate(hp, "dropout", space.dropout, defaults["dropout"])
        recurrent_dropout = _rate(
            hp,
            "recurrent_dropout",
            space.recurrent_dropout,
            defaults["recurrent_dropout"],
        )
        learning_rate = _float(
            hp,
            "learning_rate",
            space.learning_rate,
            _clip(self.model_class.default_learning_rate, space.learning_rate),
            sampling="log",
        )
        lstm_options = self.fixed_options.get("lstm_options")
        if space.layer_norm and hp.Boolean("layer_norm", default=False):
            lstm_options = {**(lstm_options or {}), "layer_norm": True}

        keras.utils.set_random_seed(self.seed)
        options = {
            "seed": self.seed,
            **self.fixed_options,
            "units": units,
            "num_layers": num_layers,
            "dropout": dropout,
            "recurrent_dropout": recurrent_dropout,
            "lstm_options": lstm_options,
        }
        model = build_classifier(
            self.app,
            class_names=self.class_names,
            sample_rate=self.sample_rate,
            **options,
        )
        if self.adapt_data is not None:
            model.adapt(self.adapt_data)
        # No weight average: trials are scored, checkpointed and compared
        # on each epoch's trained weights.
        model.compile(
            learning_rate=learning_rate,
            decay_steps=self.decay_steps,
            ema_momentum=None,
        )
        return model

    # -------------------------------------------------------------- fit

    def fit(
        self,
        hp,
        model,
        train_examples,
        *,
        validation,
        epochs,
        batch_size=64,
        num_train=None,
        train_evaluation=None,
        callbacks=None,
        initial_epoch=0,
        trial_dir=None,
        verbose="auto",
        **kwargs,
    ):
        """Trains `model` on `train_examples`; returns the trial's numbers.

        Args:
            hp: The trial's `HyperParameters`.
            model: The model `build(hp)` returned.
            train_examples: Unbatched `(x, label)` training dataset (cached);
                batched here by `pipelines.training_stream`.
            validation: Batched `(x, label)` validation dataset.
            epochs: One past the last epoch (Hyperband passes its own).
            batch_size: Examples per step. Defaults to 64.
            num_train: Size of `train_examples`; counted when `None`.
            train_evaluation: Batched training examples whose loss and
                accuracy are measured in inference mode (no dropout) after
                every epoch, as `train_loss` and `train_accuracy`; `None` for
                Keras's running training loss (dropout on), which
                overstates the training loss of a dropout model.
            callbacks: The tuner's callbacks.
            initial_epoch: The first epoch (Hyperband's resumed trials).
            trial_dir: Folder to write the per-epoch `history.json` to.
            verbose: `model.fit` verbosity.
            **kwargs: Further `model.fit` arguments.

        Returns:
            A dict of the floats of `TRIAL_METRICS` plus `val_accuracy`
            (the objective): at the epoch of best validation accuracy, its
            `val_accuracy`, `val_loss`, `train_loss` and `gap` (`val_loss -
            train_loss`); `best_val_loss` and `best_val_accuracy` over the
            epochs; the last epoch's `final_train_loss` and accuracy.

        Raises:
            keras_tuner.errors.FailedTrialError: The loss became NaN or
                infinite.
        """
        modality = "audio" if self.app == "speech" else "text"
        if num_train is None:
            num_train = int(train_examples.reduce(0, lambda n, _: n + 1))
        stream = pipelines.training_stream(
            train_examples,
            num_train,
            modality,
            batch_size=batch_size,
            seed=self.seed,
            start_epoch=initial_epoch,
            epochs=epochs,
        )
        # Ours first, so the tuner's callbacks see `train_loss` in the logs.
        own = []
        if train_evaluation is not None:
            own.append(TrainingSetEvaluation(train_evaluation))
        own.append(keras.callbacks.TerminateOnNaN())
        if trial_dir is not None:
            own.append(EpochRecords(os.path.join(trial_dir, "history.json")))
        history = model.fit(
            stream,
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=pipelines.steps_per_epoch(num_train, batch_size),
            validation_data=validation,
            callbacks=own + list(callbacks or []),
            shuffle=False,
            verbose=verbose,
            **kwargs,
        )
        return summarize_history(history.history, initial_epoch)


def summarize_history(history, initial_epoch=0):
    """The trial's numbers (see `ApplicationHyperModel.fit`) from `history`.

    Args:
        history: `History.history`: lists per metric, one value per epoch
            run, with `loss`, `val_loss`, `val_accuracy` and optionally
            `train_loss` and `train_accuracy` (else `loss` and `accuracy`).
        initial_epoch: The epoch number of the first values.

    Raises:
        keras_tuner.errors.FailedTrialError: A loss is NaN or infinite, or
            no epoch ran.
    """
    losses = history.get("loss", [])
    for name in ("loss", "val_loss", "train_loss"):
        for epoch, value in enumerate(history.get(name, [])):
            if not math.isfinite(value):
                raise keras_tuner.errors.FailedTrialError(
                    f"The trial's {name} became {value} at epoch "
                    f"{initial_epoch + epoch + 1}; it is marked failed."
                )
    if not losses or "val_loss" not in history:
        raise keras_tuner.errors.FailedTrialError(
            "The trial ran no epoch with validation (a NaN loss in the "
            "first epoch stops it before its validation)."
        )
    train_loss = history.get("train_loss", losses)
    train_accuracy = history.get("train_accuracy", history["accuracy"])
    val_loss, val_accuracy = history["val_loss"], history["val_accuracy"]
    best = int(np.argmax(val_accuracy))
    return {
        "val_accuracy": float(val_accuracy[best]),
        "val_loss": float(val_loss[best]),
        "train_loss": float(train_loss[best]),
        "gap": float(val_loss[best] - train_loss[best]),
        "best_val_loss": float(np.min(val_loss)),
        "best_val_accuracy": float(val_accuracy[best]),
        "final_train_loss": float(train_loss[-1]),
        "final_train_accuracy": float(train_accuracy[-1]),
        "best_epoch": float(initial_epoch + best),
        "epochs_run": float(len(val_loss)),
    }


class SentimentHyperModel(ApplicationHyperModel):
    """Tunes `SentimentClassifier`; see `ApplicationHyperModel`.

    Example:

    >>> hypermodel = SentimentHyperModel(["negative", "positive"])
    >>> model = hypermodel.build(keras_tuner.HyperParameters())
    >>> model.get_config()["units"]
    128
    """

    app = "sentiment"
    model_class = SentimentClassifier


class SpeechHyperModel(ApplicationHyperModel):
    """Tunes `SpeechClassifier`; see `ApplicationHyperModel`.

    `sample_rate` is required.
    """

    app = "speech"
    model_class = SpeechClassifier

    def __init__(self, class_names, sample_rate=None, **kwargs):
        if sample_rate is None:
            raise ValueError(
                "SpeechHyperModel needs argument sample_rate (samples per "
                "second), got None."
            )
        super().__init__(class_names, sample_rate=sample_rate, **kwargs)


HYPERMODELS = {"sentiment": SentimentHyperModel, "speech": SpeechHyperModel}


class TrainingSetEvaluation(keras.callbacks.Callback):
    """Adds `train_loss` and `train_accuracy` to each epoch's logs.

    They are measured on fixed training batches in inference mode, like the
    validation numbers, so `val_loss - train_loss` is the generalization
    gap and not partly the effect of dropout on the training loss.
    """

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not math.isfinite(logs.get("loss", 0.0)):
            return
        results = self.model.evaluate(self.batches, verbose=0, return_dict=True)
        logs["train_loss"] = float(results["loss"])
        logs["train_accuracy"] = float(results["accuracy"])


class EpochRecords(keras.callbacks.Callback):
    """Writes every epoch's logs to a JSON list at `path` (atomically)."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.records = []

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch}
        record.update({k: float(v) for k, v in (logs or {}).items()})
        self.records.append(record)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_json(self.records, self.path)


def read_records(path):
    """The records `EpochRecords` wrote, or `[]` when there are none."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------- helpers


def _clip(value, bounds):
    return min(max(value, bounds[0]), bounds[1])


def _power_of_two_default(bounds, preferred):
    """The largest `low * 2**k` within `bounds` not above `preferred`."""
    low, high = bounds
    value = low
    while value * 2 <= min(high, max(preferred, low)):
        value *= 2
    return value


def _int(hp, name, bounds, default, **kwargs):
    low, high = bounds
    if low == high:
        return hp.Fixed(name, low)
    return hp.Int(name, low, high, default=default, **kwargs)


def _float(hp, name, bounds, default, **kwargs):
    low, high = bounds
    if low == high:
        return hp.Fixed(name, low)
    return hp.Float(name, low, high, default=default, **kwargs)


def _rate(hp, name, bounds, default):
    """A dropout rate in steps of `DROPOUT_STEP`, rounded to 2 decimals."""
    low, high = bounds
    if high - low < DROPOUT_STEP:
        return hp.Fixed(name, low)
    steps = round((_clip(default, bounds) - low) / DROPOUT_STEP)
    value = hp.Float(
        name, low, high, step=DROPOUT_STEP, default=low + steps * DROPOUT_STEP
    )
    return round(value, 2)
