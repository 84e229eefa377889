"""The adding problem generator and the demo's command line."""

import json

import numpy as np
import pytest

from lstm_keras import long_range


def test_adding_problem_targets_are_sums_of_the_two_marked_values():
    inputs, targets = long_range.adding_problem(500, 30, seed=3)
    values, marker = inputs[..., 0], inputs[..., 1]
    assert inputs.shape == (500, 30, 2) and targets.shape == (500, 1)
    np.testing.assert_array_equal(marker.sum(axis=1), np.full(500, 2.0))
    # One marker in each half, so the pair is never adjacent by construction.
    assert (marker[:, :15].sum(axis=1) == 1).all()
    assert (marker[:, 15:].sum(axis=1) == 1).all()
    np.testing.assert_allclose(
        targets[:, 0], (values * marker).sum(axis=1), rtol=1e-6
    )


def test_adding_problem_baseline_is_one_sixth():
    _, targets = long_range.adding_problem(200_000, 4, seed=0)
    mse_of_predicting_one = float(np.mean((targets - 1.0) ** 2))
    assert abs(mse_of_predicting_one - long_range.ADDING_BASELINE_MSE) < 3e-3


def test_adding_problem_is_reproducible_by_seed():
    a = long_range.adding_problem(10, 8, seed=5)
    b = long_range.adding_problem(10, 8, seed=5)
    c = long_range.adding_problem(10, 8, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_samples": 4, "length": 1}, "length"),
        ({"num_samples": 0, "length": 8}, "num_samples"),
    ],
)
def test_adding_problem_rejects_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        long_range.adding_problem(**kwargs)


def test_demo_command_writes_results_and_plot(tmp_path, capsys):
    from training import adding_demo

    code = adding_demo.main(
        [
            "--length",
            "6",
            "--samples",
            "64",
            "--epochs",
            "1",
            "--units",
            "4",
            "--verbose",
            "0",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [r["model"] for r in results] == [
        "lstm_keras.LSTM",
        "keras.layers.SimpleRNN",
    ]
    # 4 units on 2 features: LSTM 4*(2*4 + 4*4 + 4) + dense 5; RNN a quarter of the recurrent part.
    assert [r["params"] for r in results] == [
        4 * (8 + 16 + 4) + 5,
        (8 + 16 + 4) + 5,
    ]
    assert all(np.isfinite(r["test_mse"]) for r in results)
    assert (tmp_path / "adding_val_mse.png").read_bytes()[
        :8
    ] == b"\x89PNG\r\n\x1a\n"
    assert "baseline" in capsys.readouterr().out


def test_demo_help_lists_examples(capsys):
    from training import adding_demo

    with pytest.raises(SystemExit) as exit_info:
        adding_demo.parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out
