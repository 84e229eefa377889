"""`training/evaluate.py` and its splits: arguments, tables, data splits."""

import os

import numpy as np
import pytest

from lstm_keras.applications import quality
from training import evaluate

pytestmark = pytest.mark.tensorflow_only

DATA = os.environ.get(
    "LSTM_KERAS_SHARED_DATA",
    os.path.join(
        os.path.dirname(__file__), os.pardir, os.pardir, "shared", "data"
    ),
)
needs_fsdd = pytest.mark.skipif(
    not os.path.isdir(os.path.join(DATA, "fsdd", "recordings")),
    reason=f"FSDD not found under {DATA} (set LSTM_KERAS_SHARED_DATA)",
)


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "python -m training.evaluate" in text


def test_options_parse_as_python_literals():
    options = evaluate.parse_options(
        ["units=256", "bidirectional=False", "lstm_options={'a': 1}", "x=y"]
    )
    assert options == {
        "units": 256,
        "bidirectional": False,
        "lstm_options": {"a": 1},
        "x": "y",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        evaluate.parse_options(["units"])


def test_table_lists_each_run():
    table = quality.format_table(
        [
            {
                "run": "holdout",
                "holdout_speaker": "theo",
                "test_accuracy": 0.5,
                "train_seconds": 12.0,
                "epochs_run": 3,
            }
        ]
    )
    assert table.splitlines()[1].split() == [
        "holdout",
        "(theo)",
        "0.5000",
        "12.0",
        "3",
    ]


@needs_fsdd
def test_holdout_speaker_is_only_in_test():
    splits = quality.load_splits(DATA, "speech", holdout_speaker="theo")
    assert splits["sizes"] == {"train": 1800, "validation": 200, "test": 500}
    assert splits["sample_rate"] == 8000
    labels = np.array([int(y) for _, y in splits["test"]])
    np.testing.assert_array_equal(np.bincount(labels), [50] * 10)
    with pytest.raises(ValueError, match="holdout_speaker"):
        quality.load_splits(DATA, "speech", holdout_speaker="nobody")
