"""The tuning command end to end on a few hundred real SST-2 sentences:
outputs, NaN trials, corrupt state, SIGKILL and resume, chief and workers.

The models are tiny (4-8 units), so a trial takes a second or two.
"""

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_keras.applications import DEFAULT_OPTIONS
from lstm_keras.applications import TASKS
from lstm_keras.applications.runner import TrainConfig
from lstm_keras.applications.runner import train_and_evaluate
from lstm_keras.datasets import load_dataset
from lstm_keras.datasets import samples_dir
from lstm_keras.tuning import SentimentHyperModel
from lstm_keras.tuning import TuneConfig
from lstm_keras.tuning import tune
from lstm_keras.tuning.report import read_results_csv
from lstm_keras.tuning.resume import read_run_log
from lstm_keras.tuning.search_space import SearchSpace
from tuning import tune as tune_command

pytestmark = pytest.mark.tensorflow_only

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_OPTIONS = {
    "embedding_dim": 4,
    "subword_buckets": 0,
    "vocabulary_size": 300,
    "max_length": 12,
    "bidirectional": False,
}


def tiny_sst2(folder, train_rows=240, dev_rows=40):
    """The first rows of the embedded SST-2, in the SST-2 layout."""
    os.makedirs(folder, exist_ok=True)
    for name, rows in (("train.tsv", train_rows), ("dev.tsv", dev_rows)):
        with open(os.path.join(samples_dir(), "sst2", name)) as f:
            lines = list(itertools.islice(f, rows + 1))
        with open(os.path.join(folder, name), "w") as f:
            f.writelines(lines)
    return str(folder)


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return {"sst2": tiny_sst2(root / "sst2"), "tfds": str(root / "tfds")}


def tiny_args(data_dirs, tune_dir, trials=3, *extra):
    return [
        "sentiment", "--data", data_dirs["sst2"], "--dir", str(tune_dir),
        "--tfds-data-dir", data_dirs["tfds"], "--max-trials", str(trials),
        "--epochs", "2", "--batch-size", "32", "--units", "4:8",
        "--num-layers", "1:1", "--recurrent-dropout", "0:0",
        "--verbose", "0",
        "--model-options", json.dumps(TINY_OPTIONS), *extra,
    ]  # fmt: skip


def run_command(args, env=None):
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": "tensorflow",
        **(env or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tuning", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def finished_search(data_dirs, tmp_path_factory):
    """A 3-trial search run in-process; its folder."""
    tune_dir = tmp_path_factory.mktemp("tune") / "search"
    assert tune_command.main(tiny_args(data_dirs, tune_dir)) == 0
    return tune_dir


def numbers(row):
    return {
        k: v
        for k, v in row.items()
        if k not in ("tuner_id", "message") and v != ""
    }


# ---------------------------------------------------------------- outputs


def test_search_writes_consistent_outputs(finished_search, data_dirs):
    tune_dir = finished_search
    rows = read_results_csv(tune_dir / "results.csv")
    assert [r["trial_id"] for r in rows] == ["0", "1", "2"]
    assert {r["status"] for r in rows} == {"COMPLETED"}
    for row in rows:
        assert row["units"] in ("4", "8") and row["num_layers"] == "1"
        assert 0 <= float(row["dropout"]) <= 0.4
        assert 1e-3 <= float(row["learning_rate"]) <= 1e-2
        assert row["pooling"] in ("max", "last")
        gap = float(row["val_loss"]) - float(row["train_loss"])
        assert float(row["gap"]) == pytest.approx(gap, abs=1e-6)
        # The best epoch's numbers are those of the trial's history.json.
        with open(tune_dir / "search" / f"trial_{row['trial_id']}" /
                  "history.json") as f:  # fmt: skip
            history = json.load(f)
        best = max(history, key=lambda r: r["val_accuracy"])
        assert float(row["best_val_accuracy"]) == pytest.approx(
            best["val_accuracy"]
        )
        assert float(row["train_loss"]) == pytest.approx(best["train_loss"])
        assert float(row["final_train_loss"]) == pytest.approx(
            history[-1]["train_loss"]
        )

    with open(tune_dir / "summary.json") as f:
        summary = json.load(f)
    best_row = max(rows, key=lambda r: float(r["best_val_accuracy"]))
    assert summary["best"]["trial_id"] == best_row["trial_id"]
    for key in ("val_accuracy", "val_loss", "train_loss", "gap"):
        assert set(summary["best"]) >= {key, "test_accuracy"}
        assert set(summary["baseline"]) >= {key, "test_accuracy"}
    assert summary["best"]["gap"] == pytest.approx(float(best_row["gap"]))
    # The baseline is the default model; the options the search fixes
    # (embedding_dim, subword_buckets) are not chosen.
    defaults = DEFAULT_OPTIONS["sentiment"]
    assert summary["baseline"]["hyperparameters"] == {
        "units": defaults["units"],
        "num_layers": defaults["num_layers"],
        "dropout": defaults["dropout"],
        "recurrent_dropout": defaults["recurrent_dropout"],
        "learning_rate": TASKS["sentiment"].default_learning_rate,
        "pooling": defaults["pooling"],
    }
    with open(tune_dir / "baseline" / "history.json") as f:
        baseline_history = json.load(f)
    assert len(baseline_history) == 2  # the trials' budget
    assert summary["baseline"]["val_accuracy"] == pytest.approx(
        max(r["val_accuracy"] for r in baseline_history)
    )
    improvement = summary["improvement"]
    assert improvement["gap_reduction"] == pytest.approx(
        summary["baseline"]["gap"] - summary["best"]["gap"]
    )
    report = (tune_dir / "report.md").read_text()
    assert f"{summary['best']['gap']:.4f}" in report
    assert f"{summary['baseline']['gap']:.4f}" in report
    with open(tune_dir / "overfitting.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # The best model, exported like a training run, scores what it says.
    best_dir = tune_dir / "best"
    assert (best_dir / "serving" / "1" / "saved_model.pb").exists()
    with open(best_dir / "metrics.json") as f:
        metrics = json.load(f)
    model = keras.saving.load_model(best_dir / "model.keras")
    assert model.get_config()["units"] == int(best_row["units"])
    splits = load_dataset(
        data_dirs["sst2"], "sentiment", tfds_data_dir=data_dirs["tfds"]
    )
    texts, labels = zip(*splits.test.as_numpy_iterator(), strict=True)
    probabilities = model.predict(tf.constant(list(texts)), verbose=0)
    predicted = np.argmax(probabilities, axis=-1)
    assert metrics["test_accuracy"] == pytest.approx(
        np.mean(predicted == np.array(labels)), abs=1e-6
    )


def test_a_whole_budget_trial_is_the_training_run_of_its_options(
    finished_search, data_dirs, tmp_path
):
    # Why the best model is kept from its trial, not trained again.
    with open(finished_search / "best" / "metrics.json") as f:
        best = json.load(f)
    values = best["hyperparameters"]
    config = TrainConfig(
        app="sentiment",
        data=data_dirs["sst2"],
        tfds_data_dir=data_dirs["tfds"],
        epochs=2,
        batch_size=32,
        learning_rate=values["learning_rate"],
        model_options={
            **TINY_OPTIONS,
            **{k: v for k, v in values.items() if k != "learning_rate"},
        },
        verbose=0,
    )
    run = train_and_evaluate(config, str(tmp_path / "run"))
    assert len(run["history"]) == len(best["history"]) == 2
    for ours, trial in zip(run["history"], best["history"], strict=True):
        for key in ("val_loss", "val_accuracy"):
            assert ours[key] == pytest.approx(trial[key], abs=1e-6), key
    assert run["test_accuracy"] == pytest.approx(best["test_accuracy"])


def test_rerunning_a_finished_search_changes_nothing(finished_search):
    before = (finished_search / "results.csv").read_text()
    summary = (finished_search / "summary.json").read_text()
    args = tune_command.parse_args(
        ["sentiment", "--data", "x", "--dir", str(finished_search)]
    )
    with open(finished_search / "tune_config.json") as f:
        settings = json.load(f)
    assert settings["max_trials"] == 3
    # Other settings in the same folder are refused, naming them.
    args.epochs = 5
    config = tune_command.config_from_args(args)
    with pytest.raises(ValueError, match="other settings.*epochs"):
        tune(config, str(finished_search))
    assert (finished_search / "results.csv").read_text() == before
    assert (finished_search / "summary.json").read_text() == summary


def test_a_setting_newer_than_the_search_resumes_at_its_default(tmp_path):
    from lstm_keras.tuning.search import prepare_directory

    config = TuneConfig(app="sentiment", data="sample")
    settings = config.to_dict()
    del settings["hyperband_iterations"], settings["verbose"]
    (tmp_path / "tune_config.json").write_text(json.dumps(settings))
    prepare_directory(config, str(tmp_path))  # the default: the same search
    changed = TuneConfig(app="sentiment", data="sample", hyperband_iterations=2)
    with pytest.raises(ValueError, match=r"\(hyperband_iterations differ"):
        prepare_directory(changed, str(tmp_path))


def test_corrupt_state_file_gives_a_clear_error(
    finished_search, data_dirs, tmp_path, capsys
):
    import shutil

    tune_dir = tmp_path / "copy"
    shutil.copytree(finished_search, tune_dir)
    oracle_file = tune_dir / "search" / "oracle.json"
    text = oracle_file.read_text()
    oracle_file.write_text(text[: len(text) // 3])
    assert tune_command.main(tiny_args(data_dirs, tune_dir)) == 2
    err = capsys.readouterr().err
    assert str(oracle_file) in err and "corrupt or truncated" in err
    assert "--overwrite" in err and str(tune_dir / "search") in err


# -------------------------------------------------------------------- NaN


class PoisonedHyperModel(SentimentHyperModel):
    """Trials with 8 units train at a NaN learning rate: their loss is NaN."""

    def build(self, hp):
        model = super().build(hp)
        if hp.get("units") == 8:
            model.compile(optimizer=keras.optimizers.Adam(float("nan")))
        return model


def test_nan_trial_is_marked_failed_and_the_search_goes_on(data_dirs, tmp_path):
    config = TuneConfig(
        app="sentiment",
        data=data_dirs["sst2"],
        tfds_data_dir=data_dirs["tfds"],
        max_trials=4,
        epochs=1,
        batch_size=32,
        seed=1,
        space=SearchSpace(
            units=(4, 8), num_layers=(1, 1), recurrent_dropout=(0.0, 0.0)
        ),
        fixed_options=TINY_OPTIONS,
        baseline=False,
        max_consecutive_failed_trials=4,
        verbose=0,
    )
    summary = tune(config, str(tmp_path), hypermodel_class=PoisonedHyperModel)
    rows = read_results_csv(tmp_path / "results.csv")
    assert len(rows) == 4
    statuses = [(r["units"], r["status"]) for r in rows]
    assert {status for units, status in statuses if units == "8"} == {"FAILED"}
    assert {status for units, status in statuses if units == "4"} == {
        "COMPLETED"
    }
    # A failed trial, then a completed one: the search went on.
    failed = [i for i, (_, s) in enumerate(statuses) if s == "FAILED"]
    assert failed and failed[0] < len(rows) - 1
    assert any(s == "COMPLETED" for _, s in statuses[failed[0] + 1 :])
    for row in rows:
        if row["status"] == "FAILED":
            assert "FailedTrialError" in row["message"]
            assert "became nan" in row["message"]
    assert summary["trials"]["failed"] == len(failed)
    assert summary["best"]["hyperparameters"]["units"] == 4


# ----------------------------------------------------------------- resume


TUNER_ARGS = {
    "random": [],
    "bayesian": ["--tuner", "bayesian"],
    # Hyperband sizes its brackets from the budget: 3 gives two brackets.
    "hyperband": ["--tuner", "hyperband", "--max-budget", "3"],
}


@pytest.mark.parametrize("tuner", sorted(TUNER_ARGS))
def test_search_killed_mid_trial_resumes_and_completes(
    data_dirs, finished_search, tmp_path, tuner
):
    """Each tuner resumes: every trial ends once, finished ones untouched.
    The random search also ends with the uninterrupted search's numbers
    (the others' trials are as deterministic; their own uninterrupted runs
    would double the cost of `make test`)."""
    # No baseline: it trains after the search, which is what is tested.
    # Two trials: the first ends before the kill, the second is cut short.
    args = tiny_args(
        data_dirs, tmp_path / "killed", 2, "--no-baseline", *TUNER_ARGS[tuner]
    )
    tune_dir = tmp_path / "killed"
    process = run_command(args)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and process.poll() is None:
            events = read_run_log(tune_dir / "search")
            ends = [e for e in events if e["event"] == "end"]
            starts = [e for e in events if e["event"] == "start"]
            if ends and len(starts) > len(ends):
                break  # a trial finished and the next one runs
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()[0]
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    ended_before = {e["trial_id"] for e in read_run_log(tune_dir / "search")
                    if e["event"] == "end"}  # fmt: skip
    started_before = {e["trial_id"] for e in read_run_log(tune_dir / "search")}
    assert ended_before and ended_before < started_before
    trial_files = {
        t: (tune_dir / "search" / f"trial_{t}" / "trial.json").read_text()
        for t in ended_before
    }

    process = run_command(args)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output

    rows = read_results_csv(tune_dir / "results.csv")
    trial_ids = [r["trial_id"] for r in rows]
    assert started_before <= set(trial_ids)
    assert {r["status"] for r in rows} == {"COMPLETED"}
    events = read_run_log(tune_dir / "search")
    assert {e["trial_id"] for e in events} == set(trial_ids)
    for trial_id in trial_ids:
        ends = [e for e in events if e["trial_id"] == trial_id
                and e["event"] == "end"]  # fmt: skip
        assert len(ends) == 1, events
    for trial_id, text in trial_files.items():
        # Finished trials: not re-run, their records untouched.
        starts = [e for e in events if e["trial_id"] == trial_id
                  and e["event"] == "start"]  # fmt: skip
        assert len(starts) == 1
        path = tune_dir / "search" / f"trial_{trial_id}" / "trial.json"
        assert path.read_text() == text
    if tuner != "random":
        return
    # Deterministic trials: the killed-and-resumed search ends with the
    # numbers of the uninterrupted one's first two trials (same arguments
    # and seed, so the same draws, in another folder).
    uninterrupted = read_results_csv(finished_search / "results.csv")[:2]
    assert trial_ids == [r["trial_id"] for r in uninterrupted]
    for row, reference in zip(rows, uninterrupted, strict=True):
        got, want = numbers(row), numbers(reference)
        assert got.keys() == want.keys()
        for key in got:
            if key in ("trial_id", "status", "pooling"):
                assert got[key] == want[key]
            else:
                assert float(got[key]) == pytest.approx(
                    float(want[key]), rel=1e-5, abs=1e-6
                ), key


# ------------------------------------------------------------ distributed


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_worker_without_a_chief_fails_naming_the_address(data_dirs, tmp_path):
    port = free_port()
    args = tiny_args(data_dirs, tmp_path / "lonely", 2, "--chief-timeout", "2")
    env = {
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(port),
        "KERASTUNER_TUNER_ID": "worker0",
    }
    started = time.time()
    process = run_command(args, env=env)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 2, output
    # Bounded: the import, then the 2 s wait; KerasTuner alone waits 1 h.
    assert time.time() - started < 90
    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 1, output
    assert f"127.0.0.1:{port}" in errors[0]
    assert "did not answer within 2 s" in errors[0]
    assert "Traceback" not in output


def _wait_for(predicate, timeout, processes):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        dead = [p for p in processes if p.poll() is not None]
        assert not dead, dead[0].communicate()[0]
        time.sleep(0.05)
    raise AssertionError("timed out")


# A chief and two workers; worker0 SIGKILLed mid-trial and restarted under
# its id, then the chief SIGKILLed and restarted while the workers train.
def test_chief_and_workers_survive_kills_and_run_each_trial_once(
    data_dirs, tmp_path
):
    tune_dir = tmp_path / "faults"
    args = tiny_args(data_dirs, tune_dir, 4, "--no-baseline")
    address = {
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(free_port()),
    }
    chief_env = {**address, "KERASTUNER_TUNER_ID": "chief"}
    log_dir = tune_dir / "search"

    def worker(tuner_id):
        return run_command(
            args, env={**address, "KERASTUNER_TUNER_ID": tuner_id}
        )

    def events(kind, tuner_id=None):
        return [
            e
            for e in read_run_log(log_dir)
            if e["event"] == kind and tuner_id in (None, e["tuner_id"])
        ]

    chief = run_command(args, env=chief_env)
    workers = {"worker0": worker("worker0"), "worker1": worker("worker1")}
    processes = [chief, *workers.values()]
    try:
        # worker0 dies in its first trial and comes back under its id.
        _wait_for(lambda: events("start", "worker0"), 240, processes)
        workers["worker0"].send_signal(signal.SIGKILL)
        workers["worker0"].wait()
        assert not events("end", "worker0")
        workers["worker0"] = worker("worker0")
        processes = [chief, *workers.values()]
        # The chief dies once the last trial has been handed out.
        _wait_for(
            lambda: {e["trial_id"] for e in events("start")} >= {"3"},
            240,
            processes,
        )
        chief.send_signal(signal.SIGKILL)
        chief.wait()
        chief = run_command(args, env=chief_env)
        processes = [chief, *workers.values()]
        outputs = {
            tuner_id: process.communicate(timeout=300)[0]
            for tuner_id, process in workers.items()
        }
        outputs["chief"] = chief.communicate(timeout=300)[0]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for tuner_id, process in [*workers.items(), ("chief", chief)]:
        assert process.returncode == 0, outputs[tuner_id]
        if tuner_id != "chief":
            assert "worker: search finished" in outputs[tuner_id]

    log = read_run_log(log_dir)
    for trial_id in ("0", "1", "2", "3"):
        ends = [e for e in log if e["trial_id"] == trial_id
                and e["event"] == "end"]  # fmt: skip
        assert len(ends) == 1, log
    # The killed worker's trial ran again, in the restarted process; the
    # other worker's trials ran once each.
    killed = events("start", "worker0")[0]["trial_id"]
    first = [e for e in log if e["trial_id"] == killed]
    assert [e["event"] for e in first] == ["start", "start", "end"], log
    assert first[0]["pid"] != first[1]["pid"] == first[2]["pid"]
    for trial_id in {"0", "1", "2", "3"} - {killed}:
        starts = [e for e in log if e["trial_id"] == trial_id
                  and e["event"] == "start"]  # fmt: skip
        assert len(starts) == 1, log
    assert {e["tuner_id"] for e in log} == {"worker0", "worker1"}
    rows = read_results_csv(tune_dir / "results.csv")
    assert [r["trial_id"] for r in rows] == ["0", "1", "2", "3"]
    assert {r["status"] for r in rows} == {"COMPLETED"}
    with open(tune_dir / "summary.json") as f:
        assert json.load(f)["baseline"] is None
    assert (tune_dir / "best" / "model.keras").exists()


def test_chief_timeout_must_be_positive(data_dirs, tmp_path, capsys):
    args = tiny_args(data_dirs, tmp_path / "t", 2, "--chief-timeout", "0")
    assert tune_command.main(args) == 2
    assert "--chief-timeout must be positive" in capsys.readouterr().err
    with pytest.raises(ValueError, match="chief_timeout"):
        tune(TuneConfig(app="sentiment", data="sample"), tmp_path, None, 0)


def test_the_chief_checks_for_the_last_trials_every_second(monkeypatch):
    from lstm_keras.compat import tuner_oracle_chief as oracle_chief
    from lstm_keras.tuning.search import chief_polls_often

    waits = []
    clock = types.SimpleNamespace(sleep=waits.append)
    monkeypatch.setattr(oracle_chief, "time", clock)
    with chief_polls_often(1.0):
        # KerasTuner's 20 s between checks, and its 1 s serving tick.
        oracle_chief.time.sleep(20)
        oracle_chief.time.sleep(0.5)
    assert waits == [1.0, 0.5]
    assert oracle_chief.time is clock
