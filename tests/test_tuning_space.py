"""Tuning building blocks: the search space, the hypermodels, the trial
numbers and the repaired reload of a killed search (no training here)."""

import json
import math
import os

import keras
import keras_tuner
import numpy as np
import pytest

from lstm_keras.applications import DEFAULT_OPTIONS
from lstm_keras.tuning import SearchSpace
from lstm_keras.tuning import SentimentHyperModel
from lstm_keras.tuning import SpeechHyperModel
from lstm_keras.tuning import resume
from lstm_keras.tuning.hypermodels import TrialRecipe
from lstm_keras.tuning.hypermodels import summarize_history
from lstm_keras.tuning.search_space import parse_range
from tuning import tune as tune_command

pytestmark = pytest.mark.tensorflow_only


# ------------------------------------------------------------ search space


def test_default_space_and_range_parsing():
    space = SearchSpace()
    assert space.to_dict() == {
        "units": [32, 256],
        "num_layers": [1, 2],
        "dropout": [0.0, 0.5],
        "recurrent_dropout": [0.0, 0.3],
        "learning_rate": [3e-4, 1e-2],
        "layer_norm": False,
        "choices": {},
    }
    assert parse_range("32:256") == (32, 256)
    assert parse_range("1e-4:0.5") == (1e-4, 0.5)
    assert parse_range("0.2") == (0.2, 0.2)
    with pytest.raises(ValueError, match="LOW:HIGH.*'a:b'"):
        parse_range("a:b")


@pytest.mark.parametrize("app", ["sentiment", "speech"])
def test_application_space_covers_its_defaults_and_their_neighbours(app):
    from lstm_keras.applications import TASKS

    space = SearchSpace.for_app(app)
    defaults = DEFAULT_OPTIONS[app]
    for name in ("units", "num_layers", "dropout", "recurrent_dropout"):
        low, high = getattr(space, name)
        assert low <= defaults[name] <= high, name
    assert space.units[0] < defaults["units"]  # a smaller neighbour
    assert space.num_layers[0] < space.num_layers[1]
    low, high = space.learning_rate
    assert low < TASKS[app].default_learning_rate < high
    assert space.choices  # the options that moved accuracy
    for name, values in space.choices.items():
        assert defaults[name] in values and len(values) > 1, name


def test_choices_override_per_option_and_are_checked_per_app(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"choices": {"pooling": ["last"]}}))
    space = SearchSpace.from_overrides(str(path), app="sentiment")
    assert space.choices["pooling"] == ("last",)
    assert space.choices["embedding_dim"] == (128, 256)  # the app's
    with pytest.raises(ValueError, match=r"choices \['pooling'\] for speech"):
        SearchSpace.from_overrides(str(path), app="speech")
    with pytest.raises(
        ValueError, match="choice pooling: expected a non-empty"
    ):
        SearchSpace(choices={"pooling": []})


def test_config_file_then_flags_override_the_defaults(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"units": [16, 64], "dropout": [0.1, 0.3]}))
    space = SearchSpace.from_overrides(str(path), dropout=(0.0, 0.2))
    assert space.units == (16, 64)  # from the file
    assert space.dropout == (0.0, 0.2)  # the flag wins
    assert space.num_layers == (1, 2)  # the default


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"units": (256, 32)}, "bound units: low is greater than high"),
        ({"units": (0, 32)}, "bound units: expected positive integers"),
        ({"num_layers": (1.5, 2)}, "bound num_layers: expected positive"),
        ({"dropout": (0.0, 1.0)}, r"bound dropout: expected rates in \[0, 1\)"),
        ({"recurrent_dropout": (-0.1, 0.2)}, "bound recurrent_dropout"),
        (
            {"learning_rate": (0.0, 0.1)},
            r"learning_rate: expected rates in \(0",
        ),
        ({"learning_rate": (float("nan"), 0.1)}, "expected finite numbers"),
        ({"units": (32,)}, r"bound units: expected a pair"),
        ({"widht": (1, 2)}, r"Unknown search space entries \['widht'\]"),
    ],
)
def test_invalid_bounds_are_rejected_by_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace.from_overrides(**overrides)


def test_bad_config_file_names_the_file(tmp_path):
    path = tmp_path / "space.json"
    path.write_text("{units: [")
    with pytest.raises(ValueError, match=f"{path}.*not valid JSON"):
        SearchSpace.from_overrides(str(path))


def test_command_rejects_invalid_bounds_with_a_clear_error(capsys, tmp_path):
    code = tune_command.main(
        ["sentiment", "--data", "sample", "--dir", str(tmp_path),
         "--dropout", "0.6:0.2"]
    )  # fmt: skip
    assert code == 2
    assert "bound dropout: low is greater than high" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tune_command.main(
            ["sentiment", "--data", "sample", "--dir", "x", "--units", "a:b"]
        )


# ------------------------------------------------------------- hypermodels


def test_sentiment_hypermodel_defaults_and_built_model():
    hypermodel = SentimentHyperModel(
        ["negative", "positive"], fixed_options={"vocabulary_size": 50}
    )
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    # Every hyperparameter is named, with the application's defaults.
    defaults = DEFAULT_OPTIONS["sentiment"]
    assert hp.values == {
        "units": defaults["units"],
        "num_layers": defaults["num_layers"],
        "dropout": defaults["dropout"],
        "recurrent_dropout": defaults["recurrent_dropout"],
        "learning_rate": 3e-3,
        "pooling": defaults["pooling"],
        "embedding_dim": defaults["embedding_dim"],
        "subword_buckets": defaults["subword_buckets"],
    }
    assert hp.values == hypermodel.default_values()
    # A choice given a fixed value is no longer chosen.
    pinned = SentimentHyperModel(["a", "b"], fixed_options={"pooling": "last"})
    hp = keras_tuner.HyperParameters()
    assert pinned.build(hp).get_config()["pooling"] == "last"
    assert "pooling" not in hp.values
    config = model.get_config()
    for name in ("units", "num_layers", "dropout", "pooling", "embedding_dim"):
        assert config[name] == defaults[name], name
    assert config["vocabulary_size"] == 50 and config["seed"] == 0
    # The preset's recipe: a weight average and a cosine schedule.
    assert model.optimizer.use_ema
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-3)


def test_trial_budget_is_a_share_of_the_recipe():
    one_epoch = TrialRecipe.for_app("sentiment", num_train=59_000)
    assert one_epoch.epochs == 1 and one_epoch.batch_size == 64
    assert one_epoch.plan() == (1, 59_000)
    assert one_epoch.plan(3) == (1, math.ceil(59_000 / 3))
    assert one_epoch.plan(1) == (1, math.ceil(59_000 / 9))
    assert one_epoch.total_steps(1) == math.ceil(59_000 / 9 / 64)
    speech = TrialRecipe.for_app("speech", num_train=2000)
    assert (speech.epochs, speech.patience) == (40, 8)
    assert speech.plan(1) == (5, 2000) and speech.plan(3) == (14, 2000)
    assert speech.plan(9) == (40, 2000)


def test_hyperparameter_values_reach_the_model():
    space = SearchSpace(units=(8, 32), layer_norm=True)
    hypermodel = SentimentHyperModel(
        ["a", "b"], space=space, fixed_options={"embedding_dim": 4}
    )
    hp = keras_tuner.HyperParameters()
    hp.Fixed("units", 16)
    hp.Fixed("num_layers", 2)
    hp.Fixed("dropout", 0.3)
    hp.Fixed("recurrent_dropout", 0.1)
    hp.Fixed("learning_rate", 5e-4)
    hp.Fixed("layer_norm", True)
    model = hypermodel.build(hp)
    config = model.get_config()
    assert (config["units"], config["num_layers"]) == (16, 2)
    assert (config["dropout"], config["recurrent_dropout"]) == (0.3, 0.1)
    assert config["lstm_options"] == {"layer_norm": True}
    assert float(model.optimizer.learning_rate) == pytest.approx(5e-4)
    lstm = model.backbone.lstm_layers[0]
    layer = getattr(lstm, "forward_layer", lstm)
    assert layer.cell.layer_norm


def test_space_values_and_defaults_stay_in_bounds():
    space = SearchSpace(units=(48, 200), dropout=(0.3, 0.5))
    hp = keras_tuner.HyperParameters()
    SentimentHyperModel(["a", "b"], space=space).build(hp)
    # The grid is 48, 96, 192; the default snaps to the largest at or
    # below it (256 -> 192, 128 -> 96).
    default = DEFAULT_OPTIONS["sentiment"]["units"]
    expected_units = max(u for u in (48, 96, 192) if u <= default)
    assert hp.values["units"] == expected_units
    assert hp.values["dropout"] == 0.3  # the default 0.2 clipped
    units = hp.get_config()["space"][0]["config"]
    assert units["min_value"] == 48 and units["max_value"] == 200
    values = {
        SentimentHyperModel(["a", "b"], space=space)
        .build(keras_tuner.HyperParameters())
        .get_config()["units"]
    }
    assert values == {expected_units}


def test_hypermodel_argument_errors():
    with pytest.raises(ValueError, match="sample_rate"):
        SpeechHyperModel(["0", "1"])
    with pytest.raises(ValueError, match=r"tuned options \['dropout'\]"):
        SentimentHyperModel(["a", "b"], fixed_options={"dropout": 0.1})
    with pytest.raises(ValueError, match=r"choices \['pooling'\] for speech"):
        SpeechHyperModel(
            ["0", "1"],
            sample_rate=8000,
            space=SearchSpace(choices={"pooling": ("max",)}),
        )
    with pytest.raises(TypeError, match="space to be a SearchSpace"):
        SentimentHyperModel(["a", "b"], space={"units": (8, 16)})


# ---------------------------------------------------------- trial numbers


def test_trial_numbers_come_from_the_best_validation_epoch():
    history = {
        "loss": [0.9, 0.6, 0.4],
        "accuracy": [0.5, 0.7, 0.8],
        "train_loss": [0.7, 0.5, 0.2],
        "train_accuracy": [0.6, 0.8, 0.95],
        "val_loss": [0.69, 0.55, 0.6],
        "val_accuracy": [0.6, 0.75, 0.74],
    }
    numbers = summarize_history(history, initial_epoch=2)
    assert numbers["val_accuracy"] == 0.75
    assert numbers["best_epoch"] == 3  # index 1, after 2 earlier epochs
    assert numbers["gap"] == pytest.approx(0.55 - 0.5)
    assert numbers["best_val_loss"] == 0.55
    assert numbers["final_train_loss"] == 0.2
    assert numbers["final_train_accuracy"] == 0.95
    # Without inference-mode numbers, Keras's running ones are used.
    history.pop("train_loss"), history.pop("train_accuracy")
    assert summarize_history(history)["gap"] == pytest.approx(0.55 - 0.6)


def test_nan_loss_fails_the_trial():
    history = {"loss": [0.7, math.nan], "val_loss": [0.6], "accuracy": [0.5]}
    with pytest.raises(
        keras_tuner.errors.FailedTrialError, match="loss became nan at epoch 2"
    ):
        summarize_history(history)


def test_terminate_on_nan_with_training_set_evaluation():
    # A NaN learning rate makes the weights, then the loss, NaN.
    hypermodel = SentimentHyperModel(
        ["a", "b"],
        space=SearchSpace(units=(4, 4), learning_rate=(1e-3, 1e-3)),
        fixed_options={"embedding_dim": 4, "vocabulary_size": 50},
        adapt_data=np.array(["good film", "bad film"]),
        recipe=TrialRecipe(epochs=3, batch_size=8, num_train=32),
    )
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    model.compile(optimizer=keras.optimizers.SGD(float("nan")))
    import tensorflow as tf

    examples = tf.data.Dataset.from_tensor_slices(
        (["good film", "bad film"] * 16, [1, 0] * 16)
    )
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="nan"):
        hypermodel.fit(
            hp,
            model,
            examples,
            validation=examples.batch(8),
            train_evaluation=examples.batch(8),
            verbose=0,
        )


# ------------------------------------------------------ repaired reload


def _toy_tuner(directory, max_trials=3):
    def build(hp):
        hp.Int("x", 0, 100)
        return keras.Sequential([keras.layers.Dense(1)])

    oracle = resume.ORACLES["random"](
        objective=keras_tuner.Objective("score", "max"),
        max_trials=max_trials,
        seed=1,
    )
    return resume.TUNERS["random"](
        oracle=oracle,
        hypermodel=build,
        directory=str(directory),
        project_name="search",
        overwrite=False,
    )


def _state(project):
    with open(os.path.join(project, "oracle.json")) as f:
        return json.load(f)


def test_reload_never_reruns_a_trial_saved_as_finished(tmp_path):
    # Killed inside end_trial: trial.json says COMPLETED, oracle.json
    # (written after it) still lists the trial as running.
    tuner = _toy_tuner(tmp_path)
    trial = tuner.oracle.create_trial("tuner0")
    project = os.path.join(tmp_path, "search")
    stale_oracle = _state(project)
    tuner.oracle.update_trial(trial.trial_id, {"score": 0.5})
    trial.status = "COMPLETED"
    tuner.oracle.end_trial(trial)
    with open(os.path.join(project, "oracle.json"), "w") as f:
        json.dump(stale_oracle, f)
    # The tuner file comes after the oracle's (Tuner.on_trial_end).
    assert not os.path.exists(os.path.join(project, "tuner0.json"))

    reloaded = _toy_tuner(tmp_path).oracle
    assert reloaded.trials[trial.trial_id].status == "COMPLETED"
    assert reloaded.trials[trial.trial_id].score == 0.5
    assert reloaded._retry_queue == []
    assert reloaded.end_order == [trial.trial_id]
    following = reloaded.create_trial("tuner0")
    assert following.trial_id != trial.trial_id


def test_reload_reruns_a_trial_created_before_the_kill(tmp_path):
    # Killed inside create_trial: trial.json written (RUNNING), oracle.json
    # not; and a second trial killed while running, after reporting.
    tuner = _toy_tuner(tmp_path)
    first = tuner.oracle.create_trial("tuner0")
    tuner.oracle.update_trial(first.trial_id, {"score": 0.25})
    tuner.save()
    project = os.path.join(tmp_path, "search")
    before = _state(project)
    tuner.oracle.create_trial("tuner1")
    with open(os.path.join(project, "oracle.json"), "w") as f:
        json.dump(before, f)

    oracle = _toy_tuner(tmp_path).oracle
    assert sorted(oracle.trials) == ["0", "1"]
    rerun = [oracle.create_trial("tuner0"), oracle.create_trial("tuner1")]
    assert [t.trial_id for t in rerun] == ["0", "1"]
    assert [t.status for t in rerun] == ["RUNNING", "RUNNING"]
    # The killed run's report is dropped, not averaged with the re-run's.
    assert not oracle.trials["0"].metrics.exists("score")
    # Then the search goes on with a new trial.
    assert oracle.create_trial("tuner2").trial_id == "2"


def test_truncated_state_file_names_the_file_and_the_fix(tmp_path):
    tuner = _toy_tuner(tmp_path)
    tuner.oracle.create_trial("tuner0")
    tuner.save()
    project = os.path.join(tmp_path, "search")
    trial_file = os.path.join(project, "trial_0", "trial.json")
    for path in (os.path.join(project, "oracle.json"), trial_file):
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text[: len(text) // 2])
        with pytest.raises(resume.StateFileError) as error:
            resume.check_state_files(project, str(tmp_path))
        assert repr(path) in str(error.value)
        assert "--overwrite" in str(error.value)
        assert f"delete {project!r}" in str(error.value)
        with open(path, "w") as f:
            f.write(text)
    resume.check_state_files(project, str(tmp_path))
