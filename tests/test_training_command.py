"""The training command: pipelines, outputs, resuming after a kill.

Runs use tiny models on a few hundred real SST-2 sentences or synthetic
FSDD-named clips, so each takes seconds.
"""

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
import types
import wave

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_keras.applications import pipelines
from lstm_keras.applications import presets
from lstm_keras.applications import runner
from lstm_keras.compat import tf_framework_config as tf_config
from lstm_keras.datasets import samples_dir
from training import train

pytestmark = pytest.mark.tensorflow_only

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_TEXT = [
    "--units", "4", "--embedding-dim", "4", "--vocabulary-size", "300",
    "--max-length", "12", "--no-bidirectional",
]  # fmt: skip


def tiny_sst2(folder, train_rows=240, dev_rows=40):
    """The first rows of the embedded SST-2, in the SST-2 layout."""
    os.makedirs(folder, exist_ok=True)
    for name, rows in (("train.tsv", train_rows), ("dev.tsv", dev_rows)):
        with open(os.path.join(samples_dir(), "sst2", name)) as f:
            lines = list(itertools.islice(f, rows + 1))
        with open(os.path.join(folder, name), "w") as f:
            f.writelines(lines)
    return str(folder)


def tiny_fsdd(folder, speakers=("ann", "ben"), indices=12):
    """FSDD-named 8 kHz clips: digit d is a tone of 300 + 200 d Hz."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for digit, speaker, index in itertools.product(
        range(3), speakers, range(indices)
    ):
        t = np.arange(rng.integers(1200, 2400)) / 8000
        tone = 0.5 * np.sin(2 * np.pi * (300 + 200 * digit) * t)
        path = os.path.join(folder, f"{digit}_{speaker}_{index}.wav")
        with wave.open(path, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes((tone * 2**15).astype("<i2").tobytes())
    return str(folder)


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return {
        "sst2": tiny_sst2(root / "sst2"),
        "fsdd": tiny_fsdd(root / "fsdd"),
        "tfds": str(root / "tfds"),
    }


# ---------------------------------------------------------------- pipelines


def text_examples(n):
    texts = [" ".join(["w"] * (1 + i % 9)) + f" {i}" for i in range(n)]
    return tf.data.Dataset.from_tensor_slices(
        (texts, np.arange(n, dtype=np.int64))
    )


def test_training_stream_is_a_function_of_seed_and_epoch():
    examples, n, batch = text_examples(70), 70, 8
    full = pipelines.training_stream(
        examples, n, "text", batch_size=batch, seed=3, start_epoch=0, epochs=3
    )
    resumed = pipelines.training_stream(
        examples, n, "text", batch_size=batch, seed=3, start_epoch=2, epochs=3
    )
    full = [y.tolist() for _, y in full.as_numpy_iterator()]
    resumed = [y.tolist() for _, y in resumed.as_numpy_iterator()]
    steps = pipelines.steps_per_epoch(n, batch)
    assert steps == math.ceil(70 / 8) and len(full) == 3 * steps
    assert resumed == full[2 * steps :]
    epochs = [sum(full[e * steps : (e + 1) * steps], []) for e in range(3)]
    for labels in epochs:
        assert sorted(labels) == list(range(n))
    assert epochs[0] != epochs[1]  # reshuffled each epoch


def test_text_batches_group_similar_lengths():
    n, batch = 512, 16
    stream = pipelines.training_stream(
        text_examples(n), n, "text", batch_size=batch, seed=0, start_epoch=0,
        epochs=1,
    )  # fmt: skip
    spreads = []
    for texts, _ in stream.as_numpy_iterator():
        counts = [len(t.split()) for t in texts]
        spreads.append(max(counts) - min(counts))
    # Word counts 2..10 drawn at random span ~8 in a batch of 16; sorted
    # pools of 256 leave most batches with a single length.
    assert np.mean(spreads) < 1.0


def test_audio_batches_are_zero_padded_at_the_end():
    clips = [np.full(n, n, np.float32) for n in (3, 5, 2)]
    examples = tf.data.Dataset.from_generator(
        lambda: ((c, np.int64(len(c))) for c in clips),
        output_signature=(
            tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([], tf.int64),
        ),
    )
    (x, y), = pipelines.evaluation_batches(examples, "audio", 4)  # fmt: skip
    expected = np.zeros((3, 5), np.float32)
    for row, clip in enumerate(clips):
        expected[row, : len(clip)] = clip
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(y, [3, 5, 2])


# ------------------------------------------------------------------ options


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as info:
        train.parse_args(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "lstm-keras-train sentiment --data sample --out runs/sst2" in out
    assert "--holdout-speaker" in out and "--strategy" in out


def test_only_given_model_options_reach_the_model():
    args = train.parse_args(
        ["speech", "--data", "sample", "--out", "x", "--units", "8",
         "--no-bidirectional", "--lstm-options", '{"unroll": false}']
    )  # fmt: skip
    config = train.config_from_args(args)
    assert config.model_options == {
        "units": 8,
        "bidirectional": False,
        "lstm_options": {"unroll": False},
    }
    with pytest.raises(ValueError, match="argument strategy.*'tpu'"):
        runner.TrainConfig(app="speech", data="sample", strategy="tpu")
    with pytest.raises(ValueError, match="argument epochs.*0"):
        runner.TrainConfig(app="speech", data="sample", epochs=0)
    with pytest.raises(ValueError, match="argument schedule.*'step'"):
        runner.TrainConfig(app="speech", data="sample", schedule="step")
    with pytest.raises(ValueError, match="argument ema_fraction.*2"):
        runner.TrainConfig(app="speech", data="sample", ema_fraction=2)


def test_unset_recipe_fields_take_the_preset():
    for app, preset in presets.PRESETS.items():
        config = runner.TrainConfig(app=app, data="sample")
        for field in ("batch_size", "learning_rate", "schedule"):
            assert getattr(config, field) == getattr(preset, field)
        assert config.epochs is None  # decided with the data, below
        assert config.ema_fraction == preset.ema_fraction
        assert config.patience == (preset.patience or 0)
    config = runner.TrainConfig(
        app="sentiment", data="sample", epochs=5, ema_fraction=None
    )
    assert config.epochs == 5 and config.ema_fraction is None
    # Epochs from the data: the preset's, or enough for its minimum steps.
    preset = presets.PRESETS["sentiment"]
    splits = types.SimpleNamespace(num_examples={"train": 64 * 930})
    resolved = runner.with_data(runner.TrainConfig("sentiment", "x"), splits)
    assert resolved.epochs == preset.epochs
    splits.num_examples["train"] = 64 * 32  # 32 steps an epoch
    resolved = runner.with_data(runner.TrainConfig("sentiment", "x"), splits)
    assert resolved.epochs == math.ceil(preset.min_steps / 32)
    assert runner.with_data(config, splits).epochs == 5  # given: kept
    # compile(): the preset's rate, annealed over every step, and the
    # moving average's time constant a fraction of them.
    options = runner.compile_options(runner.TrainConfig("sentiment", "x"), 1000)
    assert options == {
        "learning_rate": preset.learning_rate,
        "decay_steps": preset.epochs * 1000,
        "ema_momentum": pytest.approx(
            1 - 1 / (preset.ema_fraction * preset.epochs * 1000)
        ),
    }


def test_print_config_shows_the_resolved_preset(capsys):
    assert train.main(["speech", "--print-config", "--units", "8"]) == 0
    shown = json.loads(capsys.readouterr().out)
    preset = presets.PRESETS["speech"]
    assert shown["epochs"] == preset.epochs
    assert shown["patience"] == preset.patience
    assert shown["model_options"]["units"] == 8
    assert shown["model_options"]["num_mel_bins"] == 40  # a model default
    assert train.main(["sentiment", "--print-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert "percentile" in shown["model_options"]["max_length"]
    assert "steps" in shown["epochs"]
    assert shown["ema_fraction"] == presets.PRESETS["sentiment"].ema_fraction


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    code = train.main(["speech", "--data", missing, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "nowhere" in err and "Traceback" not in err
    code = train.main(
        ["speech", "--data", "sample", "--out", str(tmp_path), "--epochs", "-1"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "epochs" in err and "-1" in err
    with pytest.raises(SystemExit) as info:
        train.parse_args(["speech", "--data", "sample"])
    assert info.value.code == 2


def test_max_length_comes_from_the_training_texts():
    texts = [" ".join(["w"] * n) for n in range(1, 101)] + ["Hi, there!"]
    examples = tf.data.Dataset.from_tensor_slices(
        (texts, np.zeros(len(texts), np.int64))
    )
    counts = runner.token_counts(examples, {})
    # The model's standardization strips punctuation: "hi there" is 2.
    np.testing.assert_array_equal(counts, [*range(1, 101), 2])
    assert presets.max_length_for(counts, 100, 512) == 104
    assert presets.max_length_for(counts, 50, 512) == 56  # median 50.5
    assert presets.max_length_for(counts, 100, 64) == 64
    assert presets.max_length_for([1, 2], 100, 512) == 8


def test_early_stopping_counts_epochs_across_a_resume():
    history = [
        {"epoch": 0, "val_accuracy": 0.5, "val_loss": 0.9},
        {"epoch": 1, "val_accuracy": 0.7, "val_loss": 0.6},
        {"epoch": 2, "val_accuracy": 0.7, "val_loss": 0.5},
        {"epoch": 3, "val_accuracy": 0.6, "val_loss": 0.7},
    ]
    assert runner.best_record(history, "val_accuracy")["epoch"] == 1
    assert runner.best_record(history, "val_loss")["epoch"] == 2
    assert runner.should_stop(history, "val_accuracy", 2)
    assert not runner.should_stop(history, "val_accuracy", 3)
    assert not runner.should_stop(history, "val_loss", 2)
    assert not runner.should_stop(history, "val_accuracy", 0)
    # A resumed run's best-weights callback starts from the earlier best.
    callback = runner.BestWeights("unused", "val_accuracy", history)
    assert callback.best == 0.7


# --------------------------------------------------------------------- runs


def run_command(args, **kwargs):
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": "tensorflow",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "training", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


SERVE = """
import json, sys
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
texts = tf.constant(json.load(sys.stdin))
assert not any(m.startswith("lstm_keras") for m in sys.modules)
print(json.dumps(model.serve(texts).numpy().tolist()))
"""


def test_sentiment_run_writes_consistent_outputs(tmp_path, data_dirs):
    run_dir = str(tmp_path / "run")
    args = train.parse_args(
        ["sentiment", "--data", data_dirs["sst2"], "--out", run_dir,
         "--epochs", "2", "--batch-size", "32", "--verbose", "0",
         "--tfds-data-dir", data_dirs["tfds"], *TINY_TEXT]
    )  # fmt: skip
    determinism_before = tf_config.is_op_determinism_enabled()
    metrics = runner.train_and_evaluate(train.config_from_args(args), run_dir)
    # Deterministic ops were on for the run only.
    assert tf_config.is_op_determinism_enabled() == determinism_before

    with open(os.path.join(run_dir, "metrics.json")) as f:
        assert json.load(f) == json.loads(json.dumps(metrics))
    assert metrics["class_names"] == ["negative", "positive"]
    # Validation is whole sentences of the training file, and the training
    # rows inside them are gone (tests/test_datasets.py checks the split).
    assert metrics["num_examples"] == {
        "train": 214,
        "validation": 24,
        "test": 40,
    }
    assert metrics["validation_scheme"] == "sst2 sentences"
    assert metrics["max_length"] == 12  # given: not chosen from the data
    # Every model option is recorded, the defaults as well as the given.
    assert metrics["model_options"]["units"] == 4
    assert metrics["model_options"]["pooling"] == "max"
    assert [r["epoch"] for r in metrics["history"]] == [0, 1]
    assert metrics["training_seconds"] > 0
    # The test numbers, recomputed from the saved model and the dev rows.
    with open(os.path.join(data_dirs["sst2"], "dev.tsv")) as f:
        rows = [line.rstrip("\n").rsplit("\t", 1) for line in f][1:]
    texts = tf.constant([r[0] for r in rows])
    labels = np.array([int(r[1]) for r in rows])
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    probabilities = model.predict(texts, verbose=0)
    accuracy = np.mean(np.argmax(probabilities, -1) == labels)
    loss = -np.mean(np.log(probabilities[np.arange(len(labels)), labels]))
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert metrics["test_loss"] == pytest.approx(loss, rel=1e-4)
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.sum() == 40 and np.trace(matrix) / 40 == pytest.approx(
        accuracy
    )
    # The SavedModel serves the same probabilities in a process that never
    # imports lstm_keras: no custom op landed in it.
    served = subprocess.run(
        [sys.executable, "-c", SERVE, os.path.join(run_dir, "serving", "1")],
        input=json.dumps([r[0] for r in rows]),
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        check=True,
    )
    np.testing.assert_allclose(
        json.loads(served.stdout.splitlines()[-1]),
        probabilities,
        rtol=1e-5,
        atol=1e-6,
    )
    # The best checkpoint is the first epoch of highest validation accuracy
    # (the preset's monitor), and the model ends with its weights.
    accuracies = [r["val_accuracy"] for r in metrics["history"]]
    assert metrics["best_epoch"] == int(np.argmax(accuracies))
    assert metrics["validation_accuracy"] == max(accuracies)
    _, val_accuracy = model.evaluate(
        runner.load_splits(train.config_from_args(args)).validation.batch(64),
        verbose=0,
    )
    assert val_accuracy == pytest.approx(max(accuracies), abs=1e-6)
    for name in ("learning_curves.png", "checkpoints/best.weights.npz"):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0
    with open(os.path.join(run_dir, "learning_curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(os.path.join(run_dir, "logs", "train"))
    assert not os.path.exists(os.path.join(run_dir, "backup"))


def test_speech_run_learns_tones_and_plots_confusion(tmp_path, data_dirs):
    run_dir = str(tmp_path / "speech")
    config = runner.TrainConfig(
        app="speech",
        data=data_dirs["fsdd"],
        epochs=10,
        batch_size=8,
        tfds_data_dir=data_dirs["tfds"],
        # A small model that learns three tones in 10 epochs; the default
        # two layers need more.
        model_options={
            "units": 16,
            "num_layers": 1,
            "bidirectional": False,
            "augment": False,
        },
        verbose=0,
    )
    metrics = runner.train_and_evaluate(config, run_dir)
    assert metrics["sample_rate"] == 8000
    assert (
        metrics["num_examples"]["test"] == 30
    )  # indices 0-4, 3 digits, 2 speakers
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 30
    # Three pure tones: far above the 1/3 of guessing (0.97-1.0 over seeds
    # 0-2 when written).
    assert metrics["test_accuracy"] > 0.8
    with open(os.path.join(run_dir, "confusion_matrix.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, data_dirs):
    common = [
        "sentiment", "--data", data_dirs["sst2"], "--epochs", "3",
        "--batch-size", "32", "--seed", "7", "--verbose", "2",
        "--tfds-data-dir", data_dirs["tfds"], *TINY_TEXT,
    ]  # fmt: skip
    whole = str(tmp_path / "whole")
    killed = str(tmp_path / "killed")
    reference = run_command([*common, "--out", whole])
    victim = run_command([*common, "--out", killed], start_new_session=True)
    metadata = os.path.join(killed, "backup", "training_metadata.json")
    deadline = time.time() + 120
    while time.time() < deadline and victim.poll() is None:
        if os.path.exists(metadata):
            with open(metadata) as f:
                text = f.read()
            if text and json.loads(text)["epoch"] >= 1:
                break
        time.sleep(0.02)
    assert victim.poll() is None, "the run ended before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not os.path.exists(os.path.join(killed, "metrics.json"))
    with open(metadata) as f:
        resumed_from = json.load(f)["epoch"]
    assert 1 <= resumed_from < 3

    rerun = run_command([*common, "--out", killed])
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out
    assert f"Epoch {resumed_from + 1}/3" in out and "Epoch 1/3" not in out
    out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, out

    results = []
    for run_dir in (whole, killed):
        with open(os.path.join(run_dir, "metrics.json")) as f:
            results.append(json.load(f))
    a, b = results
    # The sentiment preset averages the weights: the average, too, came
    # back from the backup.
    assert (
        b["config"]["ema_fraction"] == presets.PRESETS["sentiment"].ema_fraction
    )
    assert [r["epoch"] for r in b["history"]] == [0, 1, 2]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [r[key] for r in a["history"]] == [r[key] for r in b["history"]]
    assert (a["test_loss"], a["test_accuracy"]) == (
        b["test_loss"],
        b["test_accuracy"],
    )
