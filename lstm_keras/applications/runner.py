"""Training runs of the applications: `train_and_evaluate(config, run_dir)`.

The one training function: `lstm-keras-train` (`training/train.py`) and
`make eval` (`training/evaluate.py`) build a `TrainConfig`, whose recipe
(epochs, batch size, learning-rate schedule, weight averaging, the metric
that picks the best epoch, early stopping, text lengths) comes from the
application's preset (`lstm_keras.applications.presets`) unless given, and
call it. The steps are small functions that tests call directly. A run
writes into `run_dir`:

- `metrics.json`: the resolved config and model options, the validation
  scheme, sizes, per-epoch history, the best epoch and its validation
  numbers, training time, and the test accuracy, loss and confusion matrix
  (the test split is read once, after training);
- `learning_curves.png` (and `confusion_matrix.png` for speech);
- `logs/` (TensorBoard), `checkpoints/best.weights.npz` (the weights of the
  best epoch, the weight average where there is one), `model.keras`, and
  `serving/1/` (the TF Serving SavedModel of `lstm_keras.export`, whose
  graph holds only standard TensorFlow ops);
- while it runs, `backup/` and `history.json`: a run killed and started
  again with the same arguments resumes from its last finished epoch
  (weights, optimizer slots and weight average, random states) and ends
  with the same result (see `lstm_keras.applications.pipelines`).

Under `MultiWorkerMirroredStrategy` the chief writes `run_dir`; every other
worker writes to `run_dir/.worker-<id>/`, removed when it finishes.
"""

import contextlib
import dataclasses
import json
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from lstm_keras.applications import pipelines
from lstm_keras.applications import presets
from lstm_keras.applications import reports
from lstm_keras.applications import task

STRATEGIES = ("default", "mirrored", "multi_worker")
APPS = ("sentiment", "speech")
MODALITY = {"sentiment": "text", "speech": "audio"}


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on; the same config resumes the same run.

    The recipe fields (`epochs` to `patience`) left at `None` take the
    application's preset (`lstm_keras.applications.presets.PRESETS`), so a
    config always holds the settings the run used.

    Attributes:
        app: `"sentiment"` or `"speech"`.
        data: The source: a TFDS name, `"sample"` or a local directory (see
            `lstm_keras.datasets.load_dataset`).
        epochs: Most training epochs. Defaults to the preset's
            (`presets.epochs_for`: more for a small training set), resolved
            by `with_data` once the data is loaded.
        batch_size: Examples per step, across all replicas. Defaults to the
            preset's.
        learning_rate: Adam's initial learning rate. Defaults to the
            preset's.
        schedule: `"cosine"` (annealed over the run) or `"constant"`.
            Defaults to the preset's.
        ema_fraction: Time constant of the weight average as a fraction of
            the run's steps, or `None` for none; `"preset"` for the
            preset's. Defaults to `"preset"`.
        monitor: `"val_accuracy"` or `"val_loss"`, what picks the best
            epoch. Defaults to the preset's.
        patience: Epochs without a better `monitor` before stopping, `0`
            to run every epoch. Defaults to the preset's.
        seed: Seeds the split, the weights, dropout and the batch order.
            Defaults to 0.
        validation_fraction: Share of the training data held out. Defaults
            to 0.1.
        max_train_examples: Train on the first this many training examples
            only (the split is random, so it is a random subset). Defaults
            to `None` (all).
        tfds_data_dir: TFDS data directory. Defaults to `None`.
        holdout_speaker: FSDD speaker used as the test set. Defaults to
            `None`.
        validation_speaker: FSDD speaker used as the validation set.
            Defaults to `None` (held-out recording indices).
        strategy: `"default"`, `"mirrored"` or `"multi_worker"`
            (`MultiWorkerMirroredStrategy`, cluster from `TF_CONFIG`).
            Defaults to `"default"`.
        model_options: Options of `build_classifier` (`units`,
            `num_layers`, ...); unset ones take the model's defaults, and a
            sentiment model's `max_length` the training texts' lengths.
        verbose: Keras progress output: `"auto"`, 0, 1 or 2. Defaults to
            `"auto"`.
    """

    app: str
    data: str
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    schedule: str | None = None
    ema_fraction: float | str | None = "preset"
    monitor: str | None = None
    patience: int | None = None
    seed: int = 0
    validation_fraction: float = 0.1
    max_train_examples: int | None = None
    tfds_data_dir: str | None = None
    holdout_speaker: str | None = None
    validation_speaker: str | None = None
    strategy: str = "default"
    model_options: dict = dataclasses.field(default_factory=dict)
    verbose: str | int = "auto"

    def __post_init__(self):
        _check_choice("app", self.app, APPS)
        _check_choice("strategy", self.strategy, STRATEGIES)
        preset = presets.PRESETS[self.app]
        for field in ("batch_size", "learning_rate", "schedule"):
            if getattr(self, field) is None:
                setattr(self, field, getattr(preset, field))
        if self.monitor is None:
            self.monitor = preset.monitor
        if self.patience is None:
            self.patience = preset.patience or 0
        if self.ema_fraction == "preset":
            self.ema_fraction = preset.ema_fraction
        if self.epochs is not None:
            _check_positive_int("epochs", self.epochs)
        _check_positive_int("batch_size", self.batch_size)
        if not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(
                "Received an invalid value for argument patience, expected "
                f"a non-negative integer, got {self.patience!r}."
            )
        if self.max_train_examples is not None:
            _check_positive_int("max_train_examples", self.max_train_examples)
        if not (
            isinstance(self.learning_rate, (int, float))
            and self.learning_rate > 0
        ):
            raise ValueError(
                "Received an invalid value for argument learning_rate, "
                f"expected a positive number, got {self.learning_rate!r}."
            )
        _check_choice("schedule", self.schedule, presets.SCHEDULES)
        _check_choice("monitor", self.monitor, presets.MONITORS)
        if self.ema_fraction is not None and not (
            isinstance(self.ema_fraction, (int, float))
            and 0 < self.ema_fraction <= 1
        ):
            raise ValueError(
                "Received an invalid value for argument ema_fraction, "
                f"expected a number in (0, 1] or None, got "
                f"{self.ema_fraction!r}."
            )


def with_data(config, splits):
    """`config` with the settings the data decides (its `epochs`)."""
    if config.epochs is not None:
        return config
    steps = pipelines.steps_per_epoch(
        splits.num_examples["train"], config.batch_size
    )
    return dataclasses.replace(config, epochs=epochs_of(config, steps))


def epochs_of(config, steps_per_epoch):
    """`config.epochs`, or the preset's for epochs of that many steps."""
    if config.epochs is not None:
        return config.epochs
    return presets.epochs_for(presets.PRESETS[config.app], steps_per_epoch)


def describe_config(config):
    """What `lstm-keras-train --print-config` shows of `config`.

    Args:
        config: A `TrainConfig`.

    Returns:
        A JSON-ready dict: the run's settings, the model's options with
        the application's defaults filled in, and, where the data decides
        (the text length, the epochs of a small corpus), how.
    """
    from lstm_keras.applications import DEFAULT_OPTIONS

    shown = dataclasses.asdict(config)
    options = {**DEFAULT_OPTIONS[config.app], "seed": config.seed}
    options.update(config.model_options)
    preset = presets.PRESETS[config.app]
    if config.app == "sentiment" and "max_length" not in config.model_options:
        options["max_length"] = (
            f"from the training texts: their {preset.length_percentile:g}th "
            f"percentile token count, at most {preset.max_length_cap}"
        )
    shown["model_options"] = options
    if config.epochs is None:
        shown["epochs"] = preset.epochs
        if preset.min_steps:
            shown["epochs"] = (
                f"{preset.epochs}, or more to make {preset.min_steps} steps"
            )
    return shown


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"Received an invalid value for argument {name}, expected one "
            f"of {list(choices)}, got {value!r}."
        )


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"Received an invalid value for argument {name}, expected a "
            f"positive integer, got {value!r}."
        )


# ---------------------------------------------------------------- strategy


def make_strategy(name):
    """The `tf.distribute` strategy called `name` (see `STRATEGIES`).

    Create it before any other TensorFlow work: collective ops configure
    the runtime when the strategy is made.
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def worker_role(strategy):
    """`(is_chief, task_id)` of this process in `strategy`'s cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, 0
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if task_type == "chief" or (task_type == "worker" and not has_chief):
        return task_type == "chief" or task_id == 0, task_id
    return False, task_id


def output_dir(run_dir, strategy):
    """Where this worker writes: `run_dir` for the chief, else a private dir."""
    is_chief, task_id = worker_role(strategy)
    if is_chief:
        return run_dir
    return os.path.join(run_dir, f".worker-{task_id}")


# -------------------------------------------------------------------- data


def load_splits(config):
    """`lstm_keras.datasets.load_dataset` for `config`, train capped if asked."""
    from lstm_keras.datasets import load_dataset

    splits = load_dataset(
        config.data,
        config.app,
        seed=config.seed,
        validation_fraction=config.validation_fraction,
        tfds_data_dir=config.tfds_data_dir,
        holdout_speaker=config.holdout_speaker,
        validation_speaker=config.validation_speaker,
    )
    n = splits.num_examples["train"]
    if config.max_train_examples is not None and config.max_train_examples < n:
        splits.train = splits.train.take(config.max_train_examples)
        splits.num_examples = {
            **splits.num_examples,
            "train": config.max_train_examples,
        }
    # Decoded once (TFRecords, WAV floats), then read from memory.
    splits.train = splits.train.cache()
    splits.validation = splits.validation.cache()
    splits.test = splits.test.cache()
    return splits


# ------------------------------------------------------------------- model


def model_options(config, splits):
    """`config.model_options` completed with what the data decides.

    A sentiment model without an explicit `max_length` keeps the preset's
    percentile of the training texts' token counts (as the model's own
    standardization splits them), capped: SST-2's phrases need some 50
    tokens, movie reviews several hundred.
    """
    options = {"seed": config.seed, **config.model_options}
    preset = presets.PRESETS[config.app]
    if config.app == "sentiment" and "max_length" not in options:
        options["max_length"] = presets.max_length_for(
            token_counts(splits.train, options),
            preset.length_percentile,
            preset.max_length_cap,
        )
    return options


def token_counts(examples, options):
    """Tokens per text of `(text, label)` examples, as the model splits."""
    from lstm_keras.applications import DEFAULT_OPTIONS
    from lstm_keras.applications.preprocessing import TextStandardization

    defaults = DEFAULT_OPTIONS["sentiment"]
    standardize = TextStandardization(
        lowercase=options.get("lowercase", defaults["lowercase"]),
        strip_punctuation=options.get(
            "strip_punctuation", defaults["strip_punctuation"]
        ),
    )

    def count(texts, labels):
        words = tf.strings.split(standardize(texts))
        return words.row_lengths()

    counts = examples.batch(4096).map(count)
    return np.concatenate(list(counts.as_numpy_iterator()))


def build_model(config, splits, model_builder=None, options=None):
    """Builds, adapts and compiles the application model.

    Call it inside `strategy.scope()`. `model_builder` defaults to
    `lstm_keras.applications.build_classifier` (tests pass a stand-in with
    the same signature); `options` to `model_options(config, splits)`.
    """
    if model_builder is None:
        from lstm_keras.applications import build_classifier

        model_builder = build_classifier
    if options is None:
        options = model_options(config, splits)
    model = model_builder(
        config.app,
        class_names=splits.class_names,
        sample_rate=splits.sample_rate,
        **options,
    )
    model.adapt(pipelines.inputs_only(splits.train))
    steps = pipelines.steps_per_epoch(
        splits.num_examples["train"], config.batch_size
    )
    model.compile(**compile_options(config, steps))
    return model


def compile_options(config, steps_per_epoch):
    """`Classifier.compile` arguments of `config`'s recipe."""
    total_steps = epochs_of(config, steps_per_epoch) * steps_per_epoch
    return {
        "learning_rate": config.learning_rate,
        "decay_steps": total_steps if config.schedule == "cosine" else None,
        "ema_momentum": presets.ema_momentum(config.ema_fraction, total_steps),
    }


# ---------------------------------------------------------------- progress


def backup_dir(out_dir):
    return os.path.join(out_dir, "backup")


def start_epoch(out_dir):
    """The epoch a run in `out_dir` starts at: 0, or after its last backup.

    Reads the metadata `keras.callbacks.BackupAndRestore` writes, so the
    data stream and the callback agree on where training resumes.
    """
    path = os.path.join(backup_dir(out_dir), "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["epoch"])


def load_history(out_dir, epochs_done):
    """The per-epoch records of the epochs already done (a resumed run)."""
    path = os.path.join(out_dir, "history.json")
    if not epochs_done or not os.path.exists(path):
        return []
    with open(path) as f:
        return [r for r in json.load(f) if r["epoch"] < epochs_done]


class EpochLog(keras.callbacks.Callback):
    """Appends each epoch's logs and duration to `history.json`.

    It outlives the process, unlike `fit`'s `History`, so a resumed run
    reports every epoch.
    """

    def __init__(self, path, records):
        super().__init__()
        self.path = path
        self.records = list(records)

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch}
        record.update({k: float(v) for k, v in (logs or {}).items()})
        record["seconds"] = time.perf_counter() - self._started
        self.records = [r for r in self.records if r["epoch"] < epoch]
        self.records.append(record)
        reports.write_json(self.records, self.path)


class SeedStateBackup(keras.callbacks.Callback):
    """Backs up the model's random states (dropout, augmentation) per epoch.

    `BackupAndRestore` saves weights and optimizer but not the
    `SeedGenerator` states, so a resumed run would redraw the dropout masks
    of the first epochs. This saves them into the same backup folder (which
    `BackupAndRestore` deletes when training ends) and restores them.
    """

    def __init__(self, backup_dir):
        super().__init__()
        self.path = os.path.join(backup_dir, "seed_states.npz")

    def _states(self):
        return [
            v for v in self.model.variables if v.name == "seed_generator_state"
        ]

    def on_train_begin(self, logs=None):
        if not os.path.exists(self.path):
            return
        with np.load(self.path) as saved:
            for i, state in enumerate(self._states()):
                state.assign(saved[f"state_{i}"])

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp.npz"
        np.savez(
            tmp,
            **{
                f"state_{i}": np.asarray(state.numpy())
                for i, state in enumerate(self._states())
            },
        )
        os.replace(tmp, self.path)


def best_weights_path(out_dir):
    return os.path.join(out_dir, "checkpoints", "best.weights.npz")


def is_better(monitor, value, best):
    """Whether `value` of `monitor` beats `best` (`None`: nothing yet)."""
    if best is None:
        return True
    return value > best if monitor == "val_accuracy" else value < best


def best_record(history, monitor):
    """The first epoch's record with the best `monitor`, or `None`."""
    best = None
    for record in history:
        if best is None or is_better(monitor, record[monitor], best[monitor]):
            best = record
    return best


def evaluated_weights(model):
    """The weights validation saw: the optimizer's moving average where it
    keeps one (`SwapEMAWeights` swaps it in for validation), else the
    model's, as `{variable path: array}`."""
    averages = {}
    optimizer = model.optimizer
    if getattr(optimizer, "use_ema", False):
        averages = dict(
            zip(
                (v.path for v in optimizer._trainable_variables),
                optimizer._model_variables_moving_average,
                strict=True,
            )
        )
    # Each variable read once: the tables hold millions of weights.
    return {
        v.path: np.asarray(averages.get(v.path, v).numpy())
        for v in model.weights
    }


def restore_weights(model, path):
    """Assigns the weights `BestWeights` saved to `path` to `model`."""
    with np.load(path) as saved:
        for variable in model.weights:
            variable.assign(saved[variable.path])


class BestWeights(keras.callbacks.Callback):
    """Saves the evaluated weights of the best epoch so far to `path`.

    Like `ModelCheckpoint(save_best_only=True, save_weights_only=True)`,
    but it saves the weight average where the optimizer keeps one (what
    validation measured), only the model's weights (not the optimizer's
    slots), atomically, and it starts from the best of `history`, so a
    resumed run does not forget the best of its first part.
    """

    def __init__(self, path, monitor, history):
        super().__init__()
        self.path = path
        self.monitor = monitor
        best = best_record(history, monitor)
        self.best = None if best is None else best[monitor]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not is_better(self.monitor, value, self.best):
            return
        self.best = float(value)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp.npz"
        np.savez(tmp, **evaluated_weights(self.model))
        os.replace(tmp, self.path)


def should_stop(history, monitor, patience):
    """Whether `patience` epochs have passed without a better `monitor`."""
    best = best_record(history, monitor)
    if not patience or best is None:
        return False
    return history[-1]["epoch"] - best["epoch"] >= patience


class PatientStop(keras.callbacks.Callback):
    """Early stopping that reads the run's whole history (`EpochLog`), so
    its count of epochs without improvement survives a resume."""

    def __init__(self, epoch_log, monitor, patience):
        super().__init__()
        self.epoch_log = epoch_log
        self.monitor = monitor
        self.patience = patience

    def on_epoch_end(self, epoch, logs=None):
        if should_stop(self.epoch_log.records, self.monitor, self.patience):
            self.model.stop_training = True


def make_callbacks(out_dir, history, config, model):
    """The run's callbacks, in the order they must run at an epoch's end.

    Validation of the weight average (when the optimizer keeps one), the
    best epoch's weights, the epoch log, early stopping (which reads the
    log), TensorBoard, and the backup last, so a backup never runs ahead
    of the log and the best weights.
    """
    callbacks = []
    if getattr(model.optimizer, "use_ema", False):
        callbacks.append(keras.callbacks.SwapEMAWeights())
    epoch_log = EpochLog(os.path.join(out_dir, "history.json"), history)
    callbacks += [
        BestWeights(best_weights_path(out_dir), config.monitor, history),
        epoch_log,
        PatientStop(epoch_log, config.monitor, config.patience),
        keras.callbacks.TensorBoard(os.path.join(out_dir, "logs")),
        SeedStateBackup(backup_dir(out_dir)),
        keras.callbacks.BackupAndRestore(backup_dir(out_dir)),
    ]
    return callbacks


def work_around_keras_distribution(model, batches, multi_worker):
    """Works around two Keras 3.15 bugs of its TF trainer under a strategy.

    1. It builds metrics and optimizer from the first distributed batch
       averaged over the replicas (`_maybe_symbolic_build`), which fails for
       string inputs (the sentiment model's). Building from one local batch
       of `batches` creates the same variables.
    2. Under `MultiWorkerMirroredStrategy` it reduces each step's logs with
       `strategy.reduce("MEAN", v, axis=0)`, which fails for the scalar
       metric values (tensorflow/tensorflow#72388). Giving them shape `[1]`
       makes that reduction a mean over the workers' (synchronized, thus
       equal) values.
    """
    x, y = next(iter(batches))

    def symbolic_build(iterator=None, data_batch=None):
        with model.distribute_strategy.scope():
            model._symbolic_build(data_batch=(x, y))

    model._maybe_symbolic_build = symbolic_build
    if not multi_worker:
        return
    for name in ("train_step", "test_step"):
        step = getattr(model, name)

        def vector_logs(data, step=step):
            logs = step(data)
            return {k: tf.reshape(v, [1]) for k, v in logs.items()}

        setattr(model, name, vector_logs)


# ------------------------------------------------------------------ export


def export_serving(model, path):
    """Writes the serving SavedModel of `model` to `path`, replacing it.

    `lstm_keras.export.write_saved_model`: the `serving_default` signature
    (raw inputs to `probabilities`, `class_id`, `class_name`) and the
    `litert` one for the TFLite converter, written atomically, traced
    without custom ops, and checked for them.
    """
    from lstm_keras import export

    export.write_saved_model(model, path, overwrite=True)


def save_model(model, path):
    """`model.save(path)` through a temp file, so `path` is never partial."""
    tmp = path + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------- evaluate


def evaluate(model, test_batches, num_classes):
    """Test loss, accuracy and confusion matrix of `model`.

    Returns:
        `{"test_loss", "test_accuracy", "confusion_matrix"}`; the accuracy
        is also recomputed from the predictions, which must agree.
    """
    results = model.evaluate(test_batches, return_dict=True, verbose=0)
    labels, predicted = [], []
    for x, y in test_batches:
        # A plain call: predict_on_batch would gather every worker's copy.
        probabilities = model(x, training=False)
        predicted.append(np.argmax(probabilities, axis=-1))
        labels.append(y.numpy())
    labels, predicted = np.concatenate(labels), np.concatenate(predicted)
    return {
        "test_loss": float(results["loss"]),
        "test_accuracy": float(results["accuracy"]),
        "confusion_matrix": reports.confusion_matrix(
            labels, predicted, num_classes
        ).tolist(),
    }


# --------------------------------------------------------------------- run


@contextlib.contextmanager
def deterministic_ops():
    """TF's deterministic kernels inside, the previous setting restored after
    (so a run inside a test session leaves the process as it found it)."""
    # TF exports the switch on only; the switch off is in its config module.
    from lstm_keras.compat import tf_framework_config as tf_config

    was_enabled = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_enabled:
            tf_config.disable_op_determinism()


def train_and_evaluate(config, run_dir, model_builder=None):
    """Trains the application of `config`, evaluates, exports; see the module.

    Seeds Python, NumPy and TensorFlow with `config.seed` and runs with TF's
    deterministic ops, so a run (resumed or not) repeats exactly.

    Args:
        config: A `TrainConfig`.
        run_dir: The run's folder (created if missing).
        model_builder: Optional stand-in for `build_classifier`.

    Returns:
        The dict written to `metrics.json`.
    """
    with deterministic_ops():
        return _train_and_evaluate(config, run_dir, model_builder)


def _train_and_evaluate(config, run_dir, model_builder):
    started = time.perf_counter()
    strategy = make_strategy(config.strategy)
    is_chief, _ = worker_role(strategy)
    out_dir = output_dir(run_dir, strategy)
    os.makedirs(out_dir, exist_ok=True)

    splits = load_splits(config)
    config = with_data(config, splits)
    modality = MODALITY[config.app]
    n_train = splits.num_examples["train"]
    first_epoch = start_epoch(out_dir)
    history = load_history(out_dir, first_epoch)
    options = model_options(config, splits)

    # Seeded here, after the data: preparing a TFDS cache (done by the first
    # run only) draws from the global generators.
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_model(config, splits, model_builder, options)
    validation = pipelines.evaluation_batches(
        splits.validation, modality, config.batch_size
    )
    data_options = tf.data.Options()
    # Every worker reads the source; each takes its share of each batch.
    data_options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    validation = validation.with_options(data_options)

    if config.strategy != "default":
        work_around_keras_distribution(
            model, validation, config.strategy == "multi_worker"
        )
    callbacks = make_callbacks(out_dir, history, config, model)
    epoch_log = next(c for c in callbacks if isinstance(c, EpochLog))
    # A run killed after its last epoch's backup (or after it stopped
    # early) has nothing left to train.
    if first_epoch < config.epochs and not should_stop(
        history, config.monitor, config.patience
    ):
        train = pipelines.training_stream(
            splits.train,
            n_train,
            modality,
            batch_size=config.batch_size,
            seed=config.seed,
            start_epoch=first_epoch,
            epochs=config.epochs,
        )
        model.fit(
            train.with_options(data_options),
            epochs=config.epochs,
            steps_per_epoch=pipelines.steps_per_epoch(
                n_train, config.batch_size
            ),
            validation_data=validation,
            callbacks=callbacks,
            # The stream is already shuffled, per epoch, by the seed.
            shuffle=False,
            verbose=config.verbose,
        )
    history = epoch_log.records
    if os.path.exists(best_weights_path(out_dir)):
        restore_weights(model, best_weights_path(out_dir))
    best = best_record(history, config.monitor)
    # The test split is read here only, once, for the report.
    test = pipelines.evaluation_batches(
        splits.test, modality, config.batch_size
    ).with_options(data_options)
    results = evaluate(model, test, len(splits.class_names))
    metrics = {
        "app": config.app,
        "source": splits.source,
        "layout": splits.layout,
        "class_names": splits.class_names,
        "sample_rate": splits.sample_rate,
        "num_examples": splits.num_examples,
        "validation_scheme": getattr(splits, "validation_scheme", None),
        "split_notes": getattr(splits, "split_notes", None),
        "config": dataclasses.asdict(config),
        # Every option the model was built with, its defaults included.
        "model_options": _all_options(model, options),
        **results,
        "best_epoch": best["epoch"] if best else None,
        "validation_accuracy": best["val_accuracy"] if best else None,
        "validation_loss": best["val_loss"] if best else None,
        "epochs_run": len(history),
        "history": history,
        "training_seconds": sum(r["seconds"] for r in history),
        "wall_seconds": time.perf_counter() - started,
        "params": model.count_params(),
    }
    if config.app == "sentiment":
        metrics["max_length"] = model.get_config().get("max_length")
    write_outputs(model, metrics, out_dir)
    if not is_chief:
        shutil.rmtree(out_dir, ignore_errors=True)
    return metrics


def _all_options(model, options):
    if isinstance(model, task.Classifier):
        config = model.get_config()
        return {
            k: v for k, v in config.items() if k not in ("name", "trainable")
        }
    return dict(options)


def write_outputs(model, metrics, out_dir):
    """metrics.json, plots, model.keras and the SavedModel, into `out_dir`."""
    title = f"{metrics['app']} on {metrics['source']}"
    reports.plot_learning_curves(
        metrics["history"],
        os.path.join(out_dir, "learning_curves.png"),
        title,
    )
    if metrics["app"] == "speech":
        reports.plot_confusion_matrix(
            np.array(metrics["confusion_matrix"]),
            metrics["class_names"],
            os.path.join(out_dir, "confusion_matrix.png"),
            f"{title}: test confusion matrix",
        )
    save_model(model, os.path.join(out_dir, "model.keras"))
    export_serving(model, os.path.join(out_dir, "serving", "1"))
    # Last: its presence says the run finished.
    reports.write_json(metrics, os.path.join(out_dir, "metrics.json"))
