"""`lstm_keras.diagnostics.gradient_flow` against hand-derived BPTT, and its CLIs.

The per-timestep gradients come from the active backend's autodiff (through
probes added to the unrolled layer); they are compared with the NumPy BPTT of
`lstm_keras.gradcheck.reference` (LSTM) and with a SimpleRNN BPTT written out
below, which share no code with it.
"""

import csv
import json

import keras
import numpy as np
import pytest
from keras import ops

import lstm_keras
from lstm_keras import diagnostics
from lstm_keras import gradcheck
from lstm_keras import long_range

B, T, H = 4, 7, 5
PNG = b"\x89PNG\r\n\x1a\n"


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x), np.float64)


def adding_model(layer, rng):
    model = long_range.build_regressor(layer, T)
    model.set_weights(
        [0.5 * rng.standard_normal(w.shape) for w in model.get_weights()]
    )
    return model


def reference_deltas(model, x, y):
    """Per-step gradients of the MSE by `gradcheck.reference_backward`."""
    layer, dense = model.layers[1], model.layers[2]
    weights = {w.path.split("/")[-1]: to_numpy(w) for w in layer.weights}
    r = layer.cell.recurrent_units
    _, last, _, _, cache = gradcheck.reference_forward(
        x,
        np.zeros((B, r)),
        np.zeros((B, H)),
        weights.pop("kernel"),
        weights.pop("recurrent_kernel"),
        weights.pop("bias"),
        **weights,
    )
    kernel, bias = to_numpy(dense.kernel), to_numpy(dense.bias)
    predictions = last @ kernel + bias
    d_outputs = np.zeros((B, T, r))
    d_outputs[:, -1] = (2.0 * (predictions - y) / y.size) @ kernel.T
    grads, deltas = gradcheck.reference_backward(
        cache, d_outputs, return_deltas=True
    )
    return float(np.mean((predictions - y) ** 2)), grads, deltas, cache


@pytest.mark.parametrize(
    "variant",
    [{}, dict(use_peepholes=True, layer_norm=True, projection_units=3)],
    ids=["plain", "all_variants"],
)
def test_lstm_per_step_gradients_match_the_hand_bptt(rng, variant):
    model = adding_model(lstm_keras.LSTM(H, **variant), rng)
    x, y = long_range.adding_problem(B, T, seed=1)
    flow = diagnostics.gradient_flow(model, x, y, loss="mse")
    loss, grads, deltas, cache = reference_deltas(model, x, y)

    assert flow.kind == "lstm"
    np.testing.assert_allclose(flow.loss, loss, rtol=1e-5)
    for key in ("h", "c", "z"):
        _, rel = gradcheck.max_errors(flow.deltas[key], deltas[key])
        assert rel < 1e-5, f"d{key}: relative error {rel:.1e}"
    np.testing.assert_allclose(
        flow.h_norm, np.linalg.norm(deltas["h"], axis=(0, 2)), rtol=1e-4
    )
    np.testing.assert_allclose(
        flow.c_norm, np.linalg.norm(deltas["c"], axis=(0, 2)), rtol=1e-4
    )
    # The gradient arrives at every gate, and the whole-sequence weight
    # gradients per gate are the reference's column blocks.
    for k, gate in enumerate(lstm_keras.GATE_ORDER):
        columns = slice(k * H, (k + 1) * H)
        np.testing.assert_allclose(
            flow.gate_norms[gate],
            np.linalg.norm(deltas["z"][:, :, columns], axis=(0, 2)),
            rtol=1e-4,
        )
        # (At t = 0 the forget gate gets nothing: it multiplies c_0 = 0.)
        assert (flow.gate_norms[gate][1:] > 0).all()
        np.testing.assert_allclose(
            flow.kernel_gradient_norms[gate],
            np.linalg.norm(grads["kernel"][:, columns]),
            rtol=1e-4,
        )
        np.testing.assert_allclose(
            flow.recurrent_gradient_norms[gate],
            np.linalg.norm(grads["recurrent_kernel"][:, columns]),
            rtol=1e-4,
        )
    # The cell-state path: f_{t+1} * dL/dc_{t+1}, from the reference's gates.
    forget = np.stack([s["forget_gate"] for s in cache["steps"]], axis=1)
    carry = np.linalg.norm(forget[:, 1:] * deltas["c"][:, 1:], axis=(0, 2))
    np.testing.assert_allclose(flow.carry_norm[:-1], carry, rtol=1e-4)
    assert np.isnan(flow.carry_norm[-1])


def test_simple_rnn_per_step_gradients_match_a_hand_bptt(rng):
    model = adding_model(keras.layers.SimpleRNN(H), rng)
    x, y = long_range.adding_problem(B, T, seed=2)
    flow = diagnostics.gradient_flow(model, x, y, loss="mse")

    cell, dense = model.layers[1].cell, model.layers[2]
    kernel, recurrent = to_numpy(cell.kernel), to_numpy(cell.recurrent_kernel)
    h = np.zeros((B, H))
    hs = []
    for t in range(T):
        h = np.tanh(x[:, t] @ kernel + h @ recurrent + to_numpy(cell.bias))
        hs.append(h)
    predictions = h @ to_numpy(dense.kernel) + to_numpy(dense.bias)
    delta_h = (2.0 * (predictions - y) / y.size) @ to_numpy(dense.kernel).T
    expected_h, expected_z = np.zeros((B, T, H)), np.zeros((B, T, H))
    for t in reversed(range(T)):
        expected_h[:, t] = delta_h
        expected_z[:, t] = delta_h * (1.0 - hs[t] ** 2)
        delta_h = expected_z[:, t] @ recurrent.T

    assert flow.kind == "simple_rnn" and flow.c_norm is None
    for key, expected in (("h", expected_h), ("z", expected_z)):
        _, rel = gradcheck.max_errors(flow.deltas[key], expected)
        assert rel < 1e-5, f"d{key}: relative error {rel:.1e}"
    assert list(flow.gate_norms) == ["hidden"]


def test_rows_are_a_tidy_table(rng):
    model = adding_model(lstm_keras.LSTM(H), rng)
    model.compile(loss="mse")
    x, y = long_range.adding_problem(B, T)
    flow = diagnostics.gradient_flow(model, x, y)  # the compiled loss
    rows = flow.rows("lstm")
    # h, c, carry, other; then 4 gates x 4 quantities; T rows each.
    assert len(rows) == (4 + 16) * T
    assert set(rows[0]) == {
        "model",
        "t",
        "distance",
        "quantity",
        "gate",
        "norm",
    }
    dh = [r for r in rows if r["quantity"] == "dL/dh"]
    assert [r["distance"] for r in dh] == list(range(T - 1, -1, -1))
    np.testing.assert_allclose([r["norm"] for r in dh], flow.h_norm)
    summary = diagnostics.summarize(flow)
    assert abs(sum(summary["gate_share"].values()) - 1.0) < 1e-9
    assert 0.0 <= summary["carry_share"] <= 1.0


def _two_lstms():
    return keras.Sequential(
        [
            keras.Input((T, 2)),
            lstm_keras.LSTM(3, return_sequences=True),
            lstm_keras.LSTM(3),
        ]
    )


def _residual():
    inputs = keras.Input((T, 2))
    x = keras.layers.Dense(H)(inputs)
    y = lstm_keras.LSTM(H, return_sequences=True)(x)
    return keras.Model(inputs, keras.layers.Add()([x, y]))


def _masked():
    return keras.Sequential(
        [
            keras.Input((T,)),
            keras.layers.Embedding(5, 2, mask_zero=True),
            lstm_keras.LSTM(3),
        ]
    )


@pytest.mark.parametrize(
    "make, match",
    [
        (_two_lstms, "exactly one recurrent layer.*has 2"),
        (
            lambda: keras.Sequential(
                [keras.Input((T, 2)), lstm_keras.LSTM(3, go_backwards=True)]
            ),
            "go_backwards",
        ),
        (_residual, "single chain"),
        (_masked, "masks"),
    ],
    ids=["two_rnns", "go_backwards", "residual", "masked"],
)
def test_unsupported_models_raise_clear_errors(make, match):
    model = make()
    x = np.ones((B,) + tuple(model.inputs[0].shape[1:]), "float32")
    y = np.zeros((B,) + tuple(model.outputs[0].shape[1:]), "float32")
    with pytest.raises(ValueError, match=match):
        diagnostics.gradient_flow(model, x, y, loss="mse")


def test_uncompiled_model_without_loss_raises(rng):
    model = adding_model(lstm_keras.LSTM(H), rng)
    x, y = long_range.adding_problem(B, T)
    with pytest.raises(ValueError, match="`loss`"):
        diagnostics.gradient_flow(model, x, y)


# --- The copy task and chrono initialization ------------------------------


def test_copy_problem_labels_are_the_symbols_after_the_delimiter():
    x, y = long_range.copy_problem(6, length=5, num_symbols=4, copy_length=3)
    assert x.shape == (6, 11, 6) and y.shape == (6, 11)
    tokens = x.argmax(-1)
    np.testing.assert_array_equal(y[:, -3:], tokens[:, :3])
    assert (y[:, :-3] == long_range.COPY_BLANK).all()
    assert (tokens[:, 7] == 5).all()  # the delimiter, just before the copy
    assert ((tokens[:, :3] >= 1) & (tokens[:, :3] <= 4)).all()
    with pytest.raises(ValueError, match="`num_symbols`"):
        long_range.copy_problem(2, 5, num_symbols=1)


def test_chrono_bias_sets_forget_and_input_biases():
    layer = lstm_keras.LSTM(
        64,
        bias_initializer=long_range.ChronoBias(100, seed=0),
        unit_forget_bias=False,
    )
    layer.build((None, 3, 2))
    gates = layer.gate_weights()
    forget = gates["forget"][2]
    # Forget gates remember for u ~ U(1, 99) steps: b_f = log(u).
    assert np.log(1.0) <= forget.min() and forget.max() <= np.log(99.0)
    assert forget.max() > np.log(50.0)
    np.testing.assert_allclose(gates["input"][2], -forget, rtol=1e-6)
    np.testing.assert_array_equal(gates["candidate"][2], 0.0)
    config = layer.get_config()
    clone = lstm_keras.LSTM.from_config(config)
    assert clone.get_config() == config
    with pytest.raises(ValueError, match="`max_timescale`"):
        long_range.ChronoBias(1)


# --- The command lines -----------------------------------------------------


# The commands only add training and files around gradient_flow, which is
# tested on every backend above: TensorFlow alone runs them.
@pytest.mark.tensorflow_only
@pytest.mark.parametrize("task", ["adding", "copy"])
def test_gradflow_command_writes_plot_table_and_summary(tmp_path, task, capsys):
    from training import gradflow

    argv = ["--task", task, "--length", "6", "--samples", "32"]
    argv += ["--epochs", "1", "--units", "4", "--batch", "8", "--verbose", "0"]
    assert gradflow.main(argv + ["--out", str(tmp_path)]) == 0
    assert (tmp_path / "gradient_flow.png").read_bytes()[:8] == PNG
    with open(tmp_path / "gradient_flow.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["model"] for r in rows} == {"LSTM", "SimpleRNN"}
    assert {r["gate"] for r in rows if r["model"] == "LSTM"} >= set(
        lstm_keras.GATE_ORDER
    )
    summary = json.loads((tmp_path / "summary.json").read_text())["summary"]
    assert set(summary) == {"LSTM", "SimpleRNN"}
    assert "along the cell state" in capsys.readouterr().out


def test_gradflow_help_lists_examples(capsys):
    from training import gradflow

    with pytest.raises(SystemExit) as exit_info:
        gradflow.parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out


@pytest.mark.tensorflow_only
def test_long_range_table_writes_json_markdown_and_plot(tmp_path, capsys):
    from training import long_range_table

    argv = ["--lengths", "6", "8", "--samples", "32", "--epochs", "1"]
    argv += ["--units", "4", "--verbose", "0", "--out", str(tmp_path)]
    assert long_range_table.main(argv) == 0
    results = json.loads((tmp_path / "long_range.json").read_text())["results"]
    assert [(r["length"], r["model"]) for r in results] == [
        (6, "lstm_keras.LSTM"),
        (6, "keras.layers.SimpleRNN"),
        (8, "lstm_keras.LSTM"),
        (8, "keras.layers.SimpleRNN"),
    ]
    table = (tmp_path / "long_range.md").read_text()
    assert table.count("\n") == 2 + 4
    assert f"{results[0]['test_mse']:.4f}" in table
    assert (tmp_path / "long_range.png").read_bytes()[:8] == PNG
    assert "total" in capsys.readouterr().out
