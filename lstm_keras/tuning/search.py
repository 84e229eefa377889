"""Hyperparameter searches of the applications: `tune(config, tune_dir)`.

The command line (`tuning/tune.py`) parses arguments into a `TuneConfig`
and calls `tune`, which loads the data as a training run does, searches
with KerasTuner (random, Hyperband or Bayesian) and writes into
`tune_dir`:

- `search/`: KerasTuner's project (`oracle.json`, `trial_<id>/` with each
  trial's `trial.json`, `history.json` and best-epoch checkpoint) and
  `trial_runs.jsonl`, which process ran which trial;
- `baseline/`: the application's default model trained with the same
  recipe and the whole budget: `result.json`, `history.json`;
- `best/`: the best trial with the whole budget, exported like a training
  run (`model.keras`, `serving/1/`, `metrics.json`, `learning_curves.png`).
  Such a trial is the run `lstm-keras-train` makes of its options (same
  split, recipe, seed and best epoch), so the model is kept from it rather
  than trained again;
- `results.csv`, `overfitting.png`, `report.md`, `summary.json`
  (see `lstm_keras.tuning.report`).

The same command started again resumes: finished trials are kept, the
trial that was running is run again (see `lstm_keras.tuning.resume`).
Started with KerasTuner's `KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`
and `KERASTUNER_ORACLE_PORT`, the process is the chief (it serves the
oracle, then writes the outputs) or a worker (it runs trials). A worker
waits at most `chief_timeout` seconds for the chief, at its start and
whenever the chief is gone (a chief restarted with the same command
within that time is picked up again), then fails with
`ChiefUnreachableError`; KerasTuner alone would wait an hour per call.
A worker restarted with the same `KERASTUNER_TUNER_ID` is handed the trial
it was running again.
"""

import contextlib
import dataclasses
import json
import os
import shutil
import types

import keras
import keras_tuner

from lstm_keras.applications import pipelines
from lstm_keras.applications import reports
from lstm_keras.applications import runner
from lstm_keras.tuning import report
from lstm_keras.tuning import resume
from lstm_keras.tuning.hypermodels import HYPERMODELS
from lstm_keras.tuning.hypermodels import TrialRecipe
from lstm_keras.tuning.hypermodels import has_whole_budget
from lstm_keras.tuning.hypermodels import read_records
from lstm_keras.tuning.search_space import SearchSpace

TUNERS = tuple(resume.TUNERS)
# How long a worker waits for the chief: long enough for the chief to load
# the data and start its server after the workers were started.
CHIEF_TIMEOUT_SECONDS = 300
OBJECTIVE = keras_tuner.Objective("val_accuracy", direction="max")
PROJECT = "search"
# Settings that may change between a search and its resumption.
RESUMABLE_CHANGES = ("verbose", "overwrite")


@dataclasses.dataclass
class TuneConfig:
    """Everything a search depends on; the same config resumes it.

    Attributes:
        app: `"sentiment"` or `"speech"`.
        data: The source (see `lstm_keras.datasets.load_dataset`).
        tuner: `"random"`, `"hyperband"` or `"bayesian"`. Defaults to
            `"random"`.
        max_trials: Most trials (random, bayesian; Hyperband sizes its own
            brackets from `max_budget`). Defaults to 8.
        epochs: The recipe's epochs, a trial's with the whole budget.
            Defaults to `None`: the application preset's for the data.
        batch_size: Examples per step. Defaults to `None`: the preset's.
        max_budget: Hyperband's whole budget in units; a trial of `b`
            units trains `b / max_budget` of the recipe's steps (see
            `TrialRecipe`). Defaults to 9: rounds of 1/9, 1/3 and all.
        hyperband_iterations: Times Hyperband runs its brackets (17
            configurations each with `max_budget` 9). Defaults to 1.
        seed: Seeds the split, the oracle, and every trial's weights,
            dropout and batch order. Defaults to 0.
        validation_fraction: Share of the training data held out. Defaults
            to 0.1.
        max_train_examples: Train on a random subset of this size. Defaults
            to `None` (all).
        tfds_data_dir: TFDS data directory. Defaults to `None`.
        holdout_speaker: FSDD speaker used as the test set. Defaults to
            `None`.
        validation_speaker: FSDD speaker used as the validation set.
            Defaults to `None` (held-out recording indices).
        space: The `SearchSpace`. Defaults to `None`: the application's,
            `SearchSpace.for_app(app)`.
        fixed_options: Untuned model options (`embedding_dim`, ...).
            Defaults to `{}`.
        baseline: Whether to train the baseline, the application's
            defaults with the same recipe and budget. Defaults to `True`.
        max_consecutive_failed_trials: The search stops (with an error)
            after this many failed trials in a row. Defaults to 3.
        overwrite: Start over, deleting a previous search in the folder.
            Defaults to `False`.
        verbose: Keras progress: 0, 1 or 2. Defaults to 2.
    """

    app: str
    data: str
    tuner: str = "random"
    max_trials: int = 8
    epochs: int | None = None
    batch_size: int | None = None
    max_budget: int = 9
    hyperband_iterations: int = 1
    seed: int = 0
    validation_fraction: float = 0.1
    max_train_examples: int | None = None
    tfds_data_dir: str | None = None
    holdout_speaker: str | None = None
    validation_speaker: str | None = None
    space: SearchSpace | None = None
    fixed_options: dict = dataclasses.field(default_factory=dict)
    baseline: bool = True
    max_consecutive_failed_trials: int = 3
    overwrite: bool = False
    verbose: int = 2

    def __post_init__(self):
        if self.app not in HYPERMODELS:
            raise ValueError(
                "Received an invalid value for argument app, expected one "
                f"of {sorted(HYPERMODELS)}, got {self.app!r}."
            )
        if self.tuner not in TUNERS:
            raise ValueError(
                "Received an invalid value for argument tuner, expected one "
                f"of {list(TUNERS)}, got {self.tuner!r}."
            )
        for name in (
            "max_trials",
            "epochs",
            "batch_size",
            "max_budget",
            "hyperband_iterations",
            "max_consecutive_failed_trials",
        ):
            value = getattr(self, name)
            if value is None and name in ("epochs", "batch_size"):
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                value = None
            if value is None or value < 1:
                raise ValueError(
                    f"Received an invalid value for argument {name}, "
                    f"expected a positive integer, got {getattr(self, name)!r}."
                )
        if self.space is None:
            self.space = SearchSpace.for_app(self.app)
        if not isinstance(self.space, SearchSpace):
            raise TypeError(
                "Expected argument space to be a SearchSpace, got "
                f"{self.space!r}."
            )
        self.space.check_choices_for(self.app)

    def to_dict(self):
        config = dataclasses.asdict(self)
        config["space"] = self.space.to_dict()
        return config

    def train_config(self):
        """The `TrainConfig` whose data loading the search shares."""
        return runner.TrainConfig(
            app=self.app,
            data=self.data,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.seed,
            validation_fraction=self.validation_fraction,
            max_train_examples=self.max_train_examples,
            tfds_data_dir=self.tfds_data_dir,
            holdout_speaker=self.holdout_speaker,
            validation_speaker=self.validation_speaker,
        )


# ------------------------------------------------------------------ roles


def distributed_role():
    """`"chief"`, `"worker"` or `None`, from KerasTuner's variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "")
    return "chief" if "chief" in tuner_id else "worker"


class ChiefUnreachableError(RuntimeError):
    """A worker could not reach the chief's oracle in time."""


def chief_address():
    return (
        f"{os.environ['KERASTUNER_ORACLE_IP']}:"
        f"{os.environ['KERASTUNER_ORACLE_PORT']}"
    )


def _unreachable(timeout):
    return ChiefUnreachableError(
        f"The tuning chief at {chief_address()} (KERASTUNER_ORACLE_IP:"
        f"KERASTUNER_ORACLE_PORT) did not answer within {timeout:g} s; start "
        "the chief (KERASTUNER_TUNER_ID=chief) with the same command, or "
        "check the address."
    )


def wait_for_chief(timeout):
    """Returns once the chief's gRPC server accepts connections.

    Raises:
        ChiefUnreachableError: It did not within `timeout` seconds.
    """
    import grpc

    channel = grpc.insecure_channel(chief_address())
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise _unreachable(timeout) from None
    finally:
        channel.close()


@contextlib.contextmanager
def chief_calls_bounded(timeout):
    """KerasTuner's worker calls to the chief wait `timeout` seconds (not
    an hour) for it, and a call that fails says which chief."""
    import grpc

    from lstm_keras.compat import tuner_oracle_client as oracle_client

    saved = oracle_client.TIMEOUT
    oracle_client.TIMEOUT = timeout
    try:
        yield
    except grpc.RpcError as error:
        if error.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ):
            raise _unreachable(timeout) from error
        raise
    finally:
        oracle_client.TIMEOUT = saved


# How often a chief that has handed out its last trial checks whether the
# workers finished theirs (KerasTuner: every 20 s).
CHIEF_POLL_SECONDS = 1.0


@contextlib.contextmanager
def chief_polls_often(seconds=CHIEF_POLL_SECONDS):
    """KerasTuner's chief waits at most `seconds` between its checks.

    Once every trial is handed out, KerasTuner's `start_server` checks
    every 20 s whether the workers' last trials ended, so a search would
    run up to 20 s past its end. Its module's `sleep` is capped while the
    chief serves.
    """
    from lstm_keras.compat import tuner_oracle_chief as oracle_chief

    clock = oracle_chief.time
    oracle_chief.time = types.SimpleNamespace(
        sleep=lambda wait: clock.sleep(min(wait, seconds))
    )
    try:
        yield
    finally:
        oracle_chief.time = clock


# ------------------------------------------------------------------ setup


def prepare_directory(config, tune_dir):
    """Creates `tune_dir`, or checks that it holds the same search.

    Raises:
        resume.StateFileError: `tune_dir` holds a search with other
            settings, or a corrupt state file.
    """
    project_dir = os.path.join(tune_dir, PROJECT)
    settings_path = os.path.join(tune_dir, "tune_config.json")
    worker = distributed_role() == "worker"
    if config.overwrite and not worker:
        for name in (PROJECT, "baseline", "best"):
            shutil.rmtree(os.path.join(tune_dir, name), ignore_errors=True)
        for name in report.OUTPUTS + ("tune_config.json",):
            path = os.path.join(tune_dir, name)
            if os.path.exists(path):
                os.remove(path)
    os.makedirs(tune_dir, exist_ok=True)
    settings = {
        k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES
    }
    if os.path.exists(settings_path):
        try:
            with open(settings_path) as f:
                previous = json.load(f)
        except json.JSONDecodeError as error:
            raise resume.StateFileError(
                f"The tuning state file {settings_path!r} is corrupt or "
                f"truncated ({error}). To recover, delete it (the search "
                "resumes if the settings are unchanged) or run the same "
                "command with --overwrite."
            ) from error
        # A setting the file predates is taken at its default, so that a
        # search resumes after an upgrade that added a setting.
        defaults = {
            f.name: f.default
            for f in dataclasses.fields(TuneConfig)
            if f.default is not dataclasses.MISSING
        }
        changed = sorted(
            k
            for k in settings
            if previous.get(k, _jsonable(defaults.get(k)))
            != _jsonable(settings[k])
        )
        if changed:
            raise resume.StateFileError(
                f"{tune_dir!r} holds a search with other settings "
                f"({', '.join(changed)} differ); resume it with the same "
                "arguments, use another --dir, or pass --overwrite to start "
                "over."
            )
    elif not worker:
        reports.write_json(settings, settings_path)
    resume.check_state_files(project_dir, tune_dir)


def _jsonable(value):
    return json.loads(json.dumps(value))


def load_data(config):
    """The splits and the batched datasets a search trains and scores on.

    Returns:
        `(splits, data)`: `data` holds `train` (unbatched, cached),
        `num_train`, `validation`, `test` and `train_evaluation` (the first
        `len(validation)` training examples, batched, for the inference-mode
        training loss).
    """
    train_config = config.train_config()
    splits = runner.load_splits(train_config)
    modality = runner.MODALITY[config.app]
    batch_size = train_config.batch_size
    n_eval = min(
        splits.num_examples["train"], splits.num_examples["validation"]
    )
    data = {
        "train": splits.train,
        "num_train": splits.num_examples["train"],
        "validation": pipelines.evaluation_batches(
            splits.validation, modality, batch_size
        ),
        "test": pipelines.evaluation_batches(splits.test, modality, batch_size),
        "train_evaluation": pipelines.evaluation_batches(
            splits.train.take(n_eval), modality, batch_size
        ),
    }
    return splits, data


def make_hypermodel(config, splits, hypermodel_class=None):
    """The application's hypermodel, adapted to the training inputs.

    Its fixed options are `config.fixed_options` and, for sentiment, the
    `max_length` a training run takes from the training texts
    (`runner.model_options`); its recipe is the preset's. The hypermodel
    class defaults to `HYPERMODELS[config.app]`.
    """
    train_config = runner.with_data(config.train_config(), splits)
    options = runner.model_options(
        dataclasses.replace(train_config, model_options=config.fixed_options),
        splits,
    )
    options.pop("seed")
    recipe = TrialRecipe.for_app(
        config.app,
        splits.num_examples["train"],
        epochs=train_config.epochs,
        batch_size=train_config.batch_size,
        max_budget=config.max_budget,
    )
    hypermodel_class = hypermodel_class or HYPERMODELS[config.app]
    return hypermodel_class(
        splits.class_names,
        sample_rate=splits.sample_rate,
        adapt_data=pipelines.inputs_only(splits.train),
        space=config.space,
        fixed_options=options,
        recipe=recipe,
        seed=config.seed,
    )


def check_tensorboard():
    """Fails early when KerasTuner's per-trial TensorBoard import would.

    KerasTuner 1.4.8 imports `tensorboard.plugins.hparams` in every trial on
    the TensorFlow backend, and TensorFlow 2.21 no longer installs
    TensorBoard: without it every trial fails with the same ImportError.
    """
    if keras.backend.backend() != "tensorflow":
        return
    try:
        from tensorboard.plugins.hparams import api  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "Tuning on TensorFlow needs TensorBoard (KerasTuner imports "
            "tensorboard.plugins.hparams for every trial): pip install "
            "'lstm_keras[apps,tune]' or pip install tensorboard."
        ) from error


def make_tuner(config, hypermodel, tune_dir):
    """The resumable KerasTuner tuner of `config.tuner` in `tune_dir`."""
    check_tensorboard()
    common = dict(
        objective=OBJECTIVE,
        seed=config.seed + 1,  # KerasTuner reads a seed of 0 as "random".
        max_consecutive_failed_trials=config.max_consecutive_failed_trials,
    )
    if config.tuner == "hyperband":
        oracle = resume.ORACLES["hyperband"](
            max_epochs=config.max_budget,
            factor=3,
            hyperband_iterations=config.hyperband_iterations,
            **common,
        )
    else:
        oracle = resume.ORACLES[config.tuner](
            max_trials=config.max_trials, **common
        )
    return resume.TUNERS[config.tuner](
        oracle=oracle,
        hypermodel=hypermodel,
        directory=tune_dir,
        project_name=PROJECT,
        overwrite=False,
    )


# ----------------------------------------------------------------- search


def tune(
    config,
    tune_dir,
    hypermodel_class=None,
    chief_timeout=CHIEF_TIMEOUT_SECONDS,
):
    """Runs (or resumes) the search of `config`; see the module docstring.

    Runs with TF's deterministic ops, so a trial run twice (resumed) gives
    the same numbers.

    Args:
        config: A `TuneConfig`.
        tune_dir: The tuning folder (created if missing).
        hypermodel_class: Optional subclass of the application's
            hypermodel class (`HYPERMODELS[config.app]`) to search with;
            made with the same arguments. The baseline uses it too.
        chief_timeout: Seconds a worker waits for the chief, at its start
            and whenever it is gone. Defaults to `CHIEF_TIMEOUT_SECONDS`.

    Returns:
        The dict written to `summary.json`, or `None` in a worker process.

    Raises:
        ChiefUnreachableError: In a worker, the chief did not answer in
            time.
    """
    if chief_timeout <= 0:
        raise ValueError(
            f"Argument chief_timeout must be positive, got {chief_timeout!r}."
        )
    with runner.deterministic_ops():
        if distributed_role() != "worker":
            return _tune(config, tune_dir, hypermodel_class)
        # Fail fast, before loading any data.
        wait_for_chief(chief_timeout)
        with chief_calls_bounded(chief_timeout):
            return _tune(config, tune_dir, hypermodel_class)


def _tune(config, tune_dir, hypermodel_class):
    prepare_directory(config, tune_dir)
    splits, data = load_data(config)
    hypermodel = make_hypermodel(
        config, splits, hypermodel_class=hypermodel_class
    )
    tuner = make_tuner(config, hypermodel, tune_dir)
    serving = (
        chief_polls_often()
        if distributed_role() == "chief"
        else contextlib.nullcontext()
    )
    with serving:
        tuner.search(
            data["train"],
            verbose=config.verbose,
            **_fit_arguments(config, data),
        )
    if distributed_role() == "worker":
        return None
    return finish(config, tune_dir, tuner, splits, data)


def _fit_arguments(config, data):
    """What each trial's and the baseline's training share, after the data."""
    return {
        "validation": data["validation"],
        "num_train": data["num_train"],
        "train_evaluation": data["train_evaluation"],
    }


def finish(config, tune_dir, tuner, splits, data):
    """Baseline, best model export and the report, after the search."""
    oracle = tuner.oracle
    rows = report.trial_rows(oracle, os.path.join(tune_dir, PROJECT))
    report.write_results_csv(rows, os.path.join(tune_dir, "results.csv"))
    completed = [r for r in rows if r["status"] == "COMPLETED"]
    if not completed:
        raise RuntimeError(
            f"No trial of the search in {tune_dir!r} completed; see the "
            "messages in results.csv."
        )
    if not any(has_whole_budget(r, config.max_budget) for r in completed):
        raise RuntimeError(
            f"No trial of the search in {tune_dir!r} completed with the "
            "whole budget; see the messages in results.csv."
        )
    baseline = None
    if config.baseline:
        baseline = train_baseline(
            config, tune_dir, tuner.hypermodel, splits, data
        )
    best = export_best(config, tune_dir, tuner, splits, data)
    return report.write_report(
        config, tune_dir, rows, best, baseline, oracle.objective.name
    )


def baseline_hyperparameters(hypermodel):
    """The baseline's values of the tuned hyperparameters: the defaults."""
    hp = keras_tuner.HyperParameters()
    for name, value in hypermodel.default_values().items():
        hp.Fixed(name, value)
    return hp


def train_baseline(config, tune_dir, hypermodel, splits, data):
    """Trains (once) the baseline: the application's default model, with
    the search's fixed options, recipe and whole budget (the run
    `lstm-keras-train` makes with those options).

    Returns:
        `result.json`'s dict: the trial numbers, `test_accuracy`,
        `test_loss` and `hyperparameters`.
    """
    out = os.path.join(tune_dir, "baseline")
    result_path = os.path.join(out, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    os.makedirs(out, exist_ok=True)
    fixed = hypermodel.fixed_options
    hp = baseline_hyperparameters(hypermodel)
    keras.backend.clear_session()
    model = hypermodel.build(hp)
    checkpoint = os.path.join(out, "best.weights.h5")
    numbers = hypermodel.fit(
        hp,
        model,
        data["train"],
        **_fit_arguments(config, data),
        callbacks=[
            keras.callbacks.ModelCheckpoint(
                checkpoint,
                monitor="val_accuracy",
                mode="max",
                save_best_only=True,
                save_weights_only=True,
            )
        ],
        trial_dir=out,
        verbose=config.verbose,
    )
    # The checkpoint is of the best epoch; with a weight average, the
    # average validation saw (the hypermodel swaps it in at each epoch end).
    model.load_weights(checkpoint)
    tested = runner.evaluate(model, data["test"], len(splits.class_names))
    result = {
        **numbers,
        "test_accuracy": tested["test_accuracy"],
        "test_loss": tested["test_loss"],
        "hyperparameters": dict(hp.values),
        "fixed_options": fixed,
        "params": model.count_params(),
    }
    reports.write_json(result, result_path)
    return result


def best_full_budget_trial(oracle, max_budget):
    """The completed trial of the whole budget with the best score.

    Hyperband's trials of part of the budget are not candidates: they
    trained on fewer steps than the model a user would train.
    """
    trials = [
        t
        for t in oracle.get_best_trials(len(oracle.trials))
        if has_whole_budget(t.hyperparameters.values, max_budget)
    ]
    return trials[0]


def export_best(config, tune_dir, tuner, splits, data):
    """The best whole-budget trial's model (weights of its best epoch),
    tested and exported like a training run into `tune_dir/best/`."""
    trial = best_full_budget_trial(tuner.oracle, config.max_budget)
    model = tuner.load_model(trial)
    tested = runner.evaluate(model, data["test"], len(splits.class_names))
    out = os.path.join(tune_dir, "best")
    os.makedirs(out, exist_ok=True)
    trial_dir = os.path.join(tune_dir, PROJECT, f"trial_{trial.trial_id}")
    history = read_records(os.path.join(trial_dir, "history.json"))
    metrics = {
        "app": config.app,
        "source": splits.source,
        "layout": splits.layout,
        "class_names": splits.class_names,
        "sample_rate": splits.sample_rate,
        "num_examples": splits.num_examples,
        "trial_id": trial.trial_id,
        "hyperparameters": dict(trial.hyperparameters.values),
        **{
            name: trial.metrics.get_last_value(name)
            for name in trial.metrics.metrics
        },
        **tested,
        "history": history,
        "params": model.count_params(),
        "tune_config": config.to_dict(),
    }
    if history and "val_loss" in history[0]:
        reports.plot_learning_curves(
            history,
            os.path.join(out, "learning_curves.png"),
            f"best trial {trial.trial_id}: {config.app} on {splits.source}",
        )
    runner.save_model(model, os.path.join(out, "model.keras"))
    runner.export_serving(model, os.path.join(out, "serving", "1"))
    # Last: its presence says the export finished.
    reports.write_json(metrics, os.path.join(out, "metrics.json"))
    return metrics
