"""`keras_tuner.HyperModel`s of the applications: sentiment and speech.

A hypermodel keeps its fixed arguments in `__init__` (class names, the
data to adapt the preprocessing to, the untuned model options, the search
space, the training recipe, the seed), names every hyperparameter with the
application's default in `build(hp)`, and trains in `fit(hp, model, ...)`
with the application's recipe (`TrialRecipe`: the preset's epochs, batch
size, schedule, weight average and early stopping). `fit` reports what the
tuning report needs: the best epoch's validation and training losses (the
overfitting gap) beside the final ones. A trial whose loss becomes NaN is
stopped and raised as `keras_tuner.errors.FailedTrialError`, so the search
marks it failed and goes on.

A trial's budget is Hyperband's `tuner/epochs` (every trial of the other
tuners has the whole budget, `TrialRecipe.max_budget`): a trial with
budget `b` trains `b / max_budget` of the recipe's steps from the seed's
initial weights, in fewer epochs, or, when the recipe is one epoch, in one
epoch over that share of the training examples. With the whole budget a
trial is the training run `lstm-keras-train` makes of the same options.

```python
hypermodel = SentimentHyperModel(
    class_names=["negative", "positive"], adapt_data=train_texts
)
tuner = keras_tuner.RandomSearch(
    hypermodel, objective="val_accuracy", max_trials=8, directory="tune"
)
tuner.search(train_examples, validation=validation_batches)
```
"""

import dataclasses
import json
import math
import os

import keras
import keras_tuner
import numpy as np

from lstm_keras.applications import build_classifier
from lstm_keras.applications import pipelines
from lstm_keras.applications import presets
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
# Hyperband's budget of a trial, in units of 1 / `TrialRecipe.max_budget`.
BUDGET = "tuner/epochs"


def has_whole_budget(values, max_budget):
    """Whether a trial of these hyperparameter values (or its
    `report.trial_rows` row) trained with the whole budget: Hyperband's
    last round, or any trial of the other tuners, which have no budget."""
    return values.get(BUDGET, max_budget) >= max_budget


@dataclasses.dataclass(frozen=True)
class TrialRecipe:
    """How a trial trains: the application's preset, and its budget.

    Attributes:
        epochs: The whole budget's epochs (the preset's for the data).
        batch_size: Examples per step.
        num_train: Training examples.
        schedule: `"cosine"` (over the trial's steps) or `"constant"`.
        ema_fraction: Weight average time constant as a fraction of the
            trial's steps, or `None`.
        patience: Epochs without a better validation accuracy before a
            trial stops; `0` or `None` to run every epoch.
        max_budget: The whole budget, in Hyperband's units. Defaults to 9.
    """

    epochs: int
    batch_size: int
    num_train: int
    schedule: str = "constant"
    ema_fraction: float | None = None
    patience: int | None = None
    max_budget: int = 9

    @classmethod
    def for_app(cls, app, num_train, epochs=None, batch_size=None, **kwargs):
        """The preset's recipe (`presets.PRESETS[app]`) for `num_train`
        examples; `epochs` and `batch_size` override the preset's."""
        preset = presets.PRESETS[app]
        batch_size = batch_size or preset.batch_size
        if epochs is None:
            steps = pipelines.steps_per_epoch(num_train, batch_size)
            epochs = presets.epochs_for(preset, steps)
        return cls(
            epochs=epochs,
            batch_size=batch_size,
            num_train=num_train,
            schedule=preset.schedule,
            ema_fraction=preset.ema_fraction,
            patience=preset.patience,
            **kwargs,
        )

    def plan(self, budget=None):
        """`(epochs, examples)` a trial of `budget` units trains.

        `budget / max_budget` of the recipe's steps: that share of the
        epochs (rounded up), or, for a one-epoch recipe, one epoch over that
        share of the examples. `None` is the whole budget.
        """
        if budget is None or budget >= self.max_budget:
            return self.epochs, self.num_train
        share = budget / self.max_budget
        if share * self.epochs >= 1:
            return math.ceil(share * self.epochs), self.num_train
        examples = math.ceil(share * self.epochs * self.num_train)
        return 1, max(examples, self.batch_size)

    def total_steps(self, budget=None):
        epochs, examples = self.plan(budget)
        return epochs * pipelines.steps_per_epoch(examples, self.batch_size)


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
        space: The `SearchSpace`. Defaults to the application's,
            `SearchSpace.for_app(app)`.
        fixed_options: Untuned options of the application model
            (`max_length`, `vocabulary_size`, ...); the rest take its
            defaults. An option of `space.choices` given here is fixed, not
            chosen. Defaults to `None` (none).
        recipe: The `TrialRecipe`, or `None` for the preset's with
            `num_train` examples of `adapt_data` counted. Defaults to `None`.
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
        recipe=None,
        seed=0,
        name=None,
    ):
        super().__init__(name=name)
        self.class_names = list(class_names)
        self.sample_rate = sample_rate
        self.adapt_data = adapt_data
        self.space = SearchSpace.for_app(self.app) if space is None else space
        if not isinstance(self.space, SearchSpace):
            raise TypeError(
                f"Expected argument space to be a SearchSpace, got {space!r}."
            )
        self.space.check_choices_for(self.app)
        self.fixed_options = dict(fixed_options or {})
        # A categorical option given a fixed value is not chosen.
        pinned = set(self.space.choices) & set(self.fixed_options)
        if pinned:
            self.space = dataclasses.replace(
                self.space,
                choices={
                    k: v
                    for k, v in self.space.choices.items()
                    if k not in pinned
                },
            )
        tuned = {"units", "num_layers", "dropout", "recurrent_dropout"}
        clash = sorted(tuned & set(self.fixed_options))
        if clash:
            raise ValueError(
                f"Argument fixed_options may not hold the tuned options "
                f"{clash}; set their bounds in the search space instead."
            )
        if recipe is None:
            num_train = 0 if adapt_data is None else _count(adapt_data)
            recipe = TrialRecipe.for_app(self.app, max(num_train, 1))
        self.recipe = recipe
        self.seed = seed

    def default_values(self):
        """The application's defaults of every hyperparameter `build` names:
        the model's `DEFAULT_OPTIONS` and the preset's learning rate."""
        defaults = self.model_class.DEFAULT_OPTIONS
        values = {
            name: defaults[name]
            for name in ("units", "num_layers", "dropout", "recurrent_dropout")
        }
        values["learning_rate"] = self.model_class.default_learning_rate
        if self.space.layer_norm:
            values["layer_norm"] = False
        for name in self.space.choices:
            values[name] = defaults[name]
        return values

    # ------------------------------------------------------------ build

    def build(self, hp):
        """An adapted, compiled application model for the values of `hp`.

        Hyperparameters (defaults: the application's, clipped to the
        bounds): `units`, `num_layers`, `dropout`, `recurrent_dropout`,
        `learning_rate`, `layer_norm` when the space offers it, and each
        option of `space.choices` (its default the model's where listed,
        else the first value). The learning rate schedule and the weight
        average span the trial's steps (`TrialRecipe.total_steps`).
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
        chosen = {}
        for name, values in space.choices.items():
            default = defaults[name] if defaults[name] in values else values[0]
            chosen[name] = hp.Choice(name, list(values), default=default)

        keras.utils.set_random_seed(self.seed)
        options = {
            "seed": self.seed,
            **self.fixed_options,
            **chosen,
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
        recipe = self.recipe
        total_steps = recipe.total_steps(hp.values.get(BUDGET))
        model.compile(
            learning_rate=learning_rate,
            decay_steps=total_steps if recipe.schedule == "cosine" else None,
            ema_momentum=presets.ema_momentum(recipe.ema_fraction, total_steps),
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
        epochs=None,
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
            train_examples: Unbatched `(x, label)` training dataset (cached,
                in random order); batched here by
                `pipelines.training_stream`. A trial with part of the budget
                may train on its first examples only (`TrialRecipe.plan`).
            validation: Batched `(x, label)` validation dataset.
            epochs: Ignored: the epochs are the recipe's for the trial's
                budget (Hyperband passes the budget as `epochs`).
            num_train: Size of `train_examples`; the recipe's when `None`.
            train_evaluation: Batched training examples whose loss and
                accuracy are measured in inference mode (no dropout) after
                every epoch, as `train_loss` and `train_accuracy`; `None` for
                Keras's running training loss (dropout on), which
                overstates the training loss of a dropout model.
            callbacks: The tuner's callbacks.
            initial_epoch: Ignored: every trial trains from its first epoch
                (Hyperband's later rounds train again, from the seed).
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
        recipe = self.recipe
        if num_train is not None and num_train != recipe.num_train:
            recipe = dataclasses.replace(recipe, num_train=num_train)
        epochs, examples = recipe.plan(hp.values.get(BUDGET))
        if examples < recipe.num_train:
            train_examples = train_examples.take(examples)
        stream = pipelines.training_stream(
            train_examples,
            examples,
            modality,
            batch_size=recipe.batch_size,
            seed=self.seed,
            start_epoch=0,
            epochs=epochs,
        )
        # Ours first, so the tuner's callbacks (its best-epoch checkpoint)
        # see the weight average and `train_loss`; the trained weights come
        # back last.
        own, last = [], []
        if getattr(model.optimizer, "use_ema", False):
            average = WeightAverageAtEpochEnd()
            own += [keras.callbacks.SwapEMAWeights(), average]
            last.append(average.restore_trained)
        if train_evaluation is not None:
            own.append(TrainingSetEvaluation(train_evaluation))
        own.append(keras.callbacks.TerminateOnNaN())
        if recipe.patience:
            own.append(
                keras.callbacks.EarlyStopping(
                    "val_accuracy", patience=recipe.patience, mode="max"
                )
            )
        if trial_dir is not None:
            own.append(EpochRecords(os.path.join(trial_dir, "history.json")))
        history = model.fit(
            stream,
            epochs=epochs,
            steps_per_epoch=pipelines.steps_per_epoch(
                examples, recipe.batch_size
            ),
            validation_data=validation,
            callbacks=own + list(callbacks or []) + last,
            shuffle=False,
            verbose=verbose,
            **kwargs,
        )
        return summarize_history(history.history)


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


class WeightAverageAtEpochEnd(keras.callbacks.Callback):
    """Puts the optimizer's weight average in the model at an epoch's end;
    its `restore_trained` callback, run last, puts the trained weights back.

    The callbacks between them (the training-set evaluation, the tuner's
    best-epoch checkpoint) then see the weights validation saw, as
    `lstm-keras-train`'s best-epoch file holds them. Unlike
    `SwapEMAWeights(swap_on_epoch=True)`, whose swap is arithmetic (adds and
    subtracts), the trained weights come back bit for bit, so training
    runs on exactly as in a training run.
    """

    def __init__(self):
        super().__init__()
        self._trained = None
        self.restore_trained = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs=None: self._restore()
        )

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        variables = optimizer._trainable_variables
        self._trained = [v.numpy() for v in variables]
        averages = optimizer._model_variables_moving_average
        for variable, average in zip(variables, averages, strict=True):
            variable.assign(average)

    def _restore(self):
        if self._trained is None:
            return
        variables = self.model.optimizer._trainable_variables
        for variable, value in zip(variables, self._trained, strict=True):
            variable.assign(value)
        self._trained = None


class TrainingSetEvaluation(keras.callbacks.Callback):
    """Adds `train_loss` and `train_accuracy` to each epoch's logs.

    They are measured on fixed training batches in inference mode, like the
    validation numbers, so `val_loss - train_loss` is the generalization
    gap and not partly the effect of dropout on the training loss.

    Keras's recurrent layers draw their dropout masks on every call, in
    inference too; the seed generators' states are put back after the
    evaluation, so that training goes on with the masks it would have
    drawn without it.
    """

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not math.isfinite(logs.get("loss", 0.0)):
            return
        seeds = [v for v in self.model.variables if "seed_generator" in v.path]
        states = [v.numpy() for v in seeds]
        results = self.model.evaluate(self.batches, verbose=0, return_dict=True)
        for variable, state in zip(seeds, states, strict=True):
            variable.assign(state)
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


def _count(examples):
    """Examples in a `tf.data.Dataset` (counted) or an array-like."""
    if hasattr(examples, "reduce"):
        return int(examples.reduce(0, lambda n, _: n + 1))
    return len(examples)


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
