"""`make eval`'s runs (`lstm_keras.applications.evaluation`): configs,
summaries over seeds, the validation-ranks-test statistic, the command."""

import json
import os

import numpy as np
import pytest

from lstm_keras.applications import evaluation
from lstm_keras.applications import presets
from training import evaluate

pytestmark = pytest.mark.tensorflow_only


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "python -m training.evaluate" in text


def test_runs_are_the_training_command_with_its_preset():
    config = evaluation.run_config("fsdd_holdout", "/data", seed=2)
    preset = presets.PRESETS["speech"]
    assert config.data == os.path.join("/data", "fsdd/recordings")
    assert config.holdout_speaker == "george" and config.seed == 2
    # Epochs are left to the data (presets.epochs_for); the rest is set.
    assert config.epochs is None
    assert (config.batch_size, config.patience) == (
        preset.batch_size,
        preset.patience,
    )
    assert config.model_options == {}
    with pytest.raises(ValueError, match="argument name.*'cifar'"):
        evaluation.run_config("cifar", "/data", seed=0)


def fake_metrics(seed, validation, test, seconds):
    return {
        "config": {"seed": seed, "app": "speech", "epochs": 40},
        "num_examples": {"train": 10, "validation": 2, "test": 3},
        "validation_scheme": "fsdd indices",
        "validation_accuracy": validation,
        "test_accuracy": test,
        "training_seconds": seconds,
    }


def test_summary_gives_mean_and_sample_spread():
    results = [
        fake_metrics(0, 0.90, 0.80, 10.0),
        fake_metrics(1, 0.92, 0.84, 12.0),
        fake_metrics(2, 0.94, 0.82, 14.0),
    ]
    summary = evaluation.summarize("fsdd", results)
    assert summary["seeds"] == [0, 1, 2]
    assert summary["test_accuracy"]["mean"] == pytest.approx(0.82)
    assert summary["test_accuracy"]["std"] == pytest.approx(0.02)
    assert summary["validation_accuracy"]["values"] == [0.90, 0.92, 0.94]
    assert "seed" not in summary["config"]
    row = evaluation.format_table([summary]).splitlines()[1].split()
    assert row == ["fsdd", "3", "0.9200", "±", "0.0200", "0.8200", "±",
                   "0.0200", "12"]  # fmt: skip


def test_report_puts_each_baseline_under_the_table():
    summary = evaluation.summarize(
        "imdb_head", [fake_metrics(0, 0.8, 0.75, 3.0)]
    )
    summary["bag_of_words"] = {
        "l2": 0.1,
        "validation_accuracy": 0.81,
        "test_accuracy": 0.79,
    }
    lines = evaluation.format_report([summary]).splitlines()
    assert lines[:-1] == evaluation.format_table([summary]).splitlines()
    assert lines[-1] == (
        "imdb_head: bag-of-words logistic regression (L2 0.1, chosen on "
        "validation): validation 0.8100, test 0.7900"
    )


def test_a_finished_run_is_read_back_not_trained(tmp_path):
    run_dir = tmp_path / "fsdd" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(
        json.dumps(fake_metrics(0, 0.5, 0.4, 1.0))
    )
    # The data path does not exist: training would fail.
    results = evaluation.run_seeds("fsdd", "/nonexistent", str(tmp_path), [0])
    assert results[0]["test_accuracy"] == 0.4


def test_spearman_matches_the_rank_formula():
    # Without ties, rho = 1 - 6 sum(d^2) / (n (n^2 - 1)).
    a = [0.81, 0.84, 0.79, 0.86, 0.83, 0.80, 0.85, 0.82]
    b = [0.80, 0.85, 0.78, 0.84, 0.86, 0.79, 0.83, 0.81]
    rank_a, rank_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    n = len(a)
    expected = 1 - 6 * np.sum((rank_a - rank_b) ** 2) / (n * (n**2 - 1))
    assert evaluation.spearman(a, b) == pytest.approx(expected)
    assert evaluation.spearman(a, a) == pytest.approx(1.0)
    assert evaluation.spearman(a, [-x for x in a]) == pytest.approx(-1.0)
    # Ties share their average rank: [1, 2.5, 2.5, 4] against [1, 2, 3, 4].
    tied = evaluation.spearman([1, 2, 2, 3], [1, 2, 3, 4])
    assert tied == pytest.approx(
        np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1]
    )
    with pytest.raises(ValueError, match="two sequences"):
        evaluation.spearman([1], [1])


def test_summaries_plot_to_a_png(tmp_path):
    results = [fake_metrics(s, 0.9, 0.8 + s / 100, 10.0) for s in range(3)]
    path = tmp_path / "accuracy.png"
    evaluation.plot_summaries([evaluation.summarize("fsdd", results)], path)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_sweep_command_names_its_variants(capsys):
    from training import sweep

    args = sweep.parse_args(["fsdd", "--variants", "preset", "units_64"])
    assert args.variants == ["preset", "units_64"]
    with pytest.raises(SystemExit) as info:
        sweep.parse_args(["fsdd", "--variants", "units_9000"])
    assert info.value.code == 2
    assert "units_9000" in capsys.readouterr().err
    # Every variant is a preset plus settings TrainConfig takes.
    for name, variants in evaluation.SWEEPS.items():
        assert variants["preset"] == {}
        for settings in variants.values():
            config = evaluation.run_config(name, "/data", 0, **settings)
            assert config.app == evaluation.RUNS[name]["app"]


def test_bag_of_words_baseline_chooses_its_penalty_on_validation():
    import tensorflow as tf

    from lstm_keras.applications import baselines
    from lstm_keras.datasets.loading import Splits

    good, bad = "a fine warm film", "a dull cold mess"

    def examples(n):
        texts = [good if i % 2 else bad for i in range(n)]
        labels = np.arange(n, dtype=np.int64) % 2
        return tf.data.Dataset.from_tensor_slices((texts, labels))

    # The test texts carry a word training never saw: it must not matter.
    test = tf.data.Dataset.from_tensor_slices(
        ([good + " unseen", bad + " unseen"], np.array([1, 0], np.int64))
    )
    splits = Splits(
        train=examples(40), validation=examples(10), test=test,
        class_names=["negative", "positive"], sample_rate=None,
        layout="class_folders", source="x",
        num_examples={"train": 40, "validation": 10, "test": 2},
    )  # fmt: skip
    result = baselines.bag_of_words(splits)
    assert result["l2"] in baselines.L2_GRID
    assert result["validation_accuracy"] == max(result["validation"].values())
    assert result["test_accuracy"] == 1.0


def test_joint_validation_averages_the_sweeps(tmp_path):
    names = ("fsdd", "fsdd_speaker_validation")
    assert evaluation.joint_validation(str(tmp_path), names) is None
    for name, scores in zip(
        names, ({"a": 0.9, "b": 1.0}, {"a": 0.8, "b": 0.6}), strict=True
    ):
        (tmp_path / name).mkdir()
        rows = [
            {"variant": v, "validation_accuracy": x} for v, x in scores.items()
        ]
        (tmp_path / name / "sweep.json").write_text(
            json.dumps({"variants": rows})
        )
    joint = evaluation.joint_validation(str(tmp_path), names)
    assert [v for v, _ in joint] == ["a", "b"]
    assert joint[0][1] == pytest.approx(0.85) and joint[1][1] == pytest.approx(
        0.8
    )
