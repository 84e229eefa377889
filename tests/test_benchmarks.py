"""The benchmark's bookkeeping: FLOP counts, achieved rates, tables."""

import importlib.util
import pathlib
import types

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(
        f"bench_{name}", BENCHMARKS / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = _load("run")
worker = _load("worker")


def _products(batch, features, units):
    """(m, k, n) of each matrix product of one training step's timestep."""
    gates = 4 * units
    return [
        (batch, features, gates),  # x_t W
        (batch, units, gates),  # h_prev U
        (features, batch, gates),  # dW += x_t^T dz
        (units, batch, gates),  # dU += h_prev^T dz
        (batch, gates, units),  # dz U^T, reaching h_prev
    ]


@pytest.mark.parametrize("shape", ["speech", "text", "long"])
def test_training_step_flops_counts_every_product(shape):
    batch, timesteps, features, units, _ = run.SHAPES[shape]
    expected = timesteps * sum(
        2 * m * k * n for m, k, n in _products(batch, features, units)
    )
    assert run.training_step_flops(batch, timesteps, features, units) == (
        pytest.approx(expected, rel=1e-12)
    )


def test_summary_reports_achieved_rate_and_share_of_sgemm():
    raw = {
        "speech": {
            "train": {"ours": [0.030, 0.020, 0.025], "keras_tf": [0.05] * 3},
            "train_min": {"ours": [0.02] * 3, "keras_tf": [0.04] * 3},
            "load_average": {"ours": [1.0] * 3, "keras_tf": [1.0] * 3},
        },
        "sgemm": [190.0, 200.0, 150.0],
    }
    summary = run.summarize(raw, ["ours", "keras_tf"])
    assert summary["sgemm_gflops"] == 190.0
    entry = summary["speech"]["train"]
    flops = run.training_step_flops(*run.SHAPES["speech"][:4])
    assert entry["gflops"]["ours"] == pytest.approx(flops / 0.025 / 1e9)
    assert entry["fraction_of_sgemm"]["keras_tf"] == pytest.approx(
        flops / 0.05 / 1e9 / 190.0
    )
    table = run.markdown(summary, ["ours", "keras_tf"])
    ours = f"{flops / 0.025 / 1e9:.0f} ({flops / 0.025 / 1e9 / 190:.0%})"
    assert f"| speech | {flops / 1e9:.2f} | {ours} |" in table
    assert "190 GFLOP/s" in table


def test_summary_without_sgemm_has_no_rate_table():
    raw = {
        "text": {
            "train": {"ours": [0.06]},
            "train_min": {"ours": [0.05]},
            "load_average": {"ours": [1.0]},
        }
    }
    summary = run.summarize(raw, ["ours"])
    assert "gflops" not in summary["text"]["train"]
    assert "SGEMM" not in run.markdown(summary, ["ours"])


@pytest.mark.tensorflow_only
def test_sgemm_rate_matches_the_time_of_one_product(monkeypatch):
    """The worker's rate is 2 N^3 over the measured time of a product."""
    monkeypatch.setattr(worker, "SGEMM_SIZE", 256)
    clock = iter([0.0, 0.5, 1.0, 1.25, 2.0, 2.1])
    monkeypatch.setattr(worker.time, "perf_counter", lambda: next(clock))
    rates = worker.sgemm_rates(types.SimpleNamespace(warmup=1, steps=2))
    flop = 2 * 256**3
    assert rates == pytest.approx([flop / 0.25 / 1e9, flop / 0.1 / 1e9])
