"""The LSTM variants: peepholes, layer normalization, projection (LSTMP).

Each variant is checked against a reference that does not share its code:
TensorFlow's `BlockLSTMV2` op (peepholes), `torch.nn.LSTM(proj_size=...)`
(projection), a loop of `keras.layers.LayerNormalization` (layer norm) and
the NumPy reference of `lstm_keras.gradcheck` (all three together). The
sequence features (masks, go_backwards, stateful, dropout, initial states)
run through the generic path on every backend.
"""

import re

import keras
import numpy as np
import pytest
from keras import ops

import lstm_keras
from lstm_keras import LSTM
from lstm_keras import LSTMCell
from lstm_keras import gradcheck

B, T, D, H, R = 3, 6, 4, 5, 2

BACKEND = keras.backend.backend()

VARIANTS = {
    "peepholes": dict(use_peepholes=True),
    "layer_norm": dict(layer_norm=True),
    "projection": dict(projection_units=R),
    "all": dict(use_peepholes=True, layer_norm=True, projection_units=R),
}
variants = pytest.mark.parametrize("variant", sorted(VARIANTS))


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def built_layer(rng, variant_kwargs, scale=0.5, **kwargs):
    """A built layer whose every weight (peepholes too) is random."""
    layer = LSTM(H, **variant_kwargs, **kwargs)
    layer.build((None, T, D))
    layer.set_weights(
        [scale * rng.standard_normal(w.shape) for w in layer.get_weights()]
    )
    return layer


def named_weights(layer):
    """The cell's weights by name, as float64 NumPy arrays."""
    return {
        w.path.split("/")[-1]: to_numpy(w).astype(np.float64)
        for w in layer.weights
    }


# --- Arguments -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(use_peepholes=1), "use_peepholes"),
        (dict(use_peepholes="yes"), "use_peepholes"),
        (dict(layer_norm=None), "layer_norm"),
        (dict(layer_norm=0.0), "layer_norm"),
        (dict(projection_units=0), "projection_units"),
        (dict(projection_units=-2), "projection_units"),
        (dict(projection_units=2.5), "projection_units"),
        (dict(projection_units="3"), "projection_units"),
        (dict(projection_units=True), "projection_units"),
    ],
)
def test_bad_variant_arguments_raise_naming_them(kwargs, name):
    value = next(iter(kwargs.values()))
    pattern = rf"argument `{name}`.*got {re.escape(repr(value))}"
    with pytest.raises(ValueError, match=pattern):
        LSTM(H, **kwargs)
    with pytest.raises(ValueError, match=pattern):
        LSTMCell(H, **kwargs)


def test_variants_are_off_by_default_and_add_no_weights():
    layer = LSTM(H)
    assert (layer.use_peepholes, layer.layer_norm) == (False, False)
    assert layer.projection_units is None
    layer.build((None, T, D))
    names = [w.path.split("/")[-1] for w in layer.weights]
    assert names == ["kernel", "recurrent_kernel", "bias"]


@pytest.mark.parametrize(
    "kwargs",
    [{}, *VARIANTS.values(), dict(use_peepholes=True, use_bias=False)],
)
@pytest.mark.parametrize("input_dim", [1, D])
def test_parameter_count_matches_the_docstring_formula(kwargs, input_dim):
    layer = LSTM(H, **kwargs)
    layer(keras.Input((T, input_dim)))
    r = kwargs.get("projection_units") or H
    use_bias = kwargs.get("use_bias", True)
    expected = (
        4 * H * (input_dim + r)
        + 4 * H * use_bias
        + 3 * H * kwargs.get("use_peepholes", False)
        + 6 * H * kwargs.get("layer_norm", False)
        + H * r * ("projection_units" in kwargs)
    )
    assert layer.count_params() == expected


def test_variant_weights_have_their_names_shapes_and_initial_values():
    layer = LSTM(H, **VARIANTS["all"])
    layer.build((None, T, D))
    weights = named_weights(layer)
    shapes = {name: w.shape for name, w in weights.items()}
    assert shapes == {
        "kernel": (D, 4 * H),
        "recurrent_kernel": (R, 4 * H),
        "bias": (4 * H,),
        "input_peephole": (H,),
        "forget_peephole": (H,),
        "output_peephole": (H,),
        "gate_norm_gamma": (4 * H,),
        "cell_norm_gamma": (H,),
        "cell_norm_beta": (H,),
        "projection_kernel": (H, R),
    }
    for name in ("input_peephole", "forget_peephole", "output_peephole"):
        np.testing.assert_array_equal(weights[name], 0.0)
    np.testing.assert_array_equal(weights["gate_norm_gamma"], 1.0)
    np.testing.assert_array_equal(weights["cell_norm_gamma"], 1.0)
    np.testing.assert_array_equal(weights["cell_norm_beta"], 0.0)
    # Zero peepholes start the cell as a plain LSTM.
    gates = layer.cell.gate_weights()
    assert gates["forget"][1].shape == (R, H)
    np.testing.assert_array_equal(gates["forget"][2], 1.0)


def test_set_gate_weights_with_projection_expects_r_rows(rng):
    layer = built_layer(rng, VARIANTS["projection"])
    feedforward, recurrent, bias = layer.gate_weights()["output"]
    with pytest.raises(ValueError, match=r"recurrent.*\(2, 5\)"):
        layer.set_gate_weights({"output": (feedforward, np.eye(H), bias)})
    layer.set_gate_weights({"output": (feedforward, 2 * recurrent, bias)})
    np.testing.assert_allclose(
        layer.gate_weights()["output"][1], 2 * recurrent, rtol=1e-6
    )


# --- Independent references ------------------------------------------------


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("with_state", [False, True])
def test_peepholes_match_tensorflow_block_lstm(rng, with_state):
    import tensorflow as tf

    layer = built_layer(
        rng, VARIANTS["peepholes"], return_sequences=True, return_state=True
    )
    w = named_weights(layer)
    x = rng.standard_normal((B, T, D)).astype("float32")
    h0 = 0.5 * rng.standard_normal((B, H)).astype("float32")
    c0 = rng.standard_normal((B, H)).astype("float32")
    if not with_state:
        h0, c0 = np.zeros_like(h0), np.zeros_like(c0)
    # BlockLSTMV2: gates in Keras's order (i, f, c, o) over [x, h] @ w; no
    # forget bias added; cell_clip <= 0 disables clipping.
    _, cs, _, _, _, _, h = tf.raw_ops.BlockLSTMV2(
        seq_len_max=np.int64(T),
        x=np.transpose(x, (1, 0, 2)),
        cs_prev=c0,
        h_prev=h0,
        w=np.concatenate([w["kernel"], w["recurrent_kernel"]]).astype("f4"),
        wci=w["input_peephole"].astype("float32"),
        wcf=w["forget_peephole"].astype("float32"),
        wco=w["output_peephole"].astype("float32"),
        b=w["bias"].astype("float32"),
        cell_clip=-1.0,
        use_peephole=True,
    )
    args = dict(initial_state=[h0, c0]) if with_state else {}
    outputs, h_t, c_t = layer(x, **args)
    expected = np.transpose(h.numpy(), (1, 0, 2))
    np.testing.assert_allclose(to_numpy(outputs), expected, atol=1e-5)
    np.testing.assert_allclose(to_numpy(h_t), expected[:, -1], atol=1e-5)
    np.testing.assert_allclose(to_numpy(c_t), cs.numpy()[-1], atol=1e-5)
    # The peepholes matter: the op without them gives other numbers.
    plain = tf.raw_ops.BlockLSTMV2(
        seq_len_max=np.int64(T),
        x=np.transpose(x, (1, 0, 2)),
        cs_prev=c0,
        h_prev=h0,
        w=np.concatenate([w["kernel"], w["recurrent_kernel"]]).astype("f4"),
        wci=w["input_peephole"].astype("float32"),
        wcf=w["forget_peephole"].astype("float32"),
        wco=w["output_peephole"].astype("float32"),
        b=w["bias"].astype("float32"),
        cell_clip=-1.0,
        use_peephole=False,
    )[6].numpy()
    assert np.abs(np.transpose(plain, (1, 0, 2)) - expected).max() > 1e-2


@pytest.mark.parametrize("go_backwards", [False, True])
def test_projection_matches_torch_lstm_proj_size(rng, go_backwards):
    torch = pytest.importorskip("torch")
    layer = built_layer(
        rng,
        VARIANTS["projection"],
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
    )
    w = named_weights(layer)
    reference = torch.nn.LSTM(D, H, batch_first=True, proj_size=R).double()
    with torch.no_grad():
        # torch's gate order (i, f, g, o) is Keras's; weights transposed.
        reference.weight_ih_l0.copy_(torch.from_numpy(w["kernel"].T))
        reference.weight_hh_l0.copy_(torch.from_numpy(w["recurrent_kernel"].T))
        reference.bias_ih_l0.copy_(torch.from_numpy(w["bias"]))
        reference.bias_hh_l0.zero_()
        reference.weight_hr_l0.copy_(torch.from_numpy(w["projection_kernel"].T))
    x = rng.standard_normal((B, T, D)).astype("float32")
    h0 = 0.5 * rng.standard_normal((B, R)).astype("float32")
    c0 = rng.standard_normal((B, H)).astype("float32")
    outputs, h_t, c_t = layer(x, initial_state=[h0, c0])
    x_torch = x[:, ::-1] if go_backwards else x
    with torch.no_grad():
        expected, (h_n, c_n) = reference(
            torch.from_numpy(np.ascontiguousarray(x_torch, dtype="float64")),
            (
                torch.from_numpy(h0[None].astype("float64")),
                torch.from_numpy(c0[None].astype("float64")),
            ),
        )
    assert tuple(outputs.shape) == (B, T, R)
    np.testing.assert_allclose(to_numpy(outputs), expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(to_numpy(h_t), h_n.numpy()[0], atol=1e-5)
    np.testing.assert_allclose(to_numpy(c_t), c_n.numpy()[0], atol=1e-5)


def test_layer_norm_matches_a_loop_of_keras_layer_normalization(rng):
    layer = built_layer(rng, VARIANTS["layer_norm"], return_sequences=True)
    w = named_weights(layer)
    # One LayerNormalization per gate and one for c, each given the cell's
    # gain and shift (the gates' shift being their bias).
    gate_norms, splits = [], np.split(np.arange(4 * H), 4)
    for columns in splits:
        norm = keras.layers.LayerNormalization(epsilon=1e-3)
        norm.build((None, H))
        norm.set_weights([w["gate_norm_gamma"][columns], w["bias"][columns]])
        gate_norms.append(norm)
    cell_norm = keras.layers.LayerNormalization(epsilon=1e-3)
    cell_norm.build((None, H))
    cell_norm.set_weights([w["cell_norm_gamma"], w["cell_norm_beta"]])

    x = rng.standard_normal((B, T, D)).astype("float32")
    h = np.zeros((B, H), "float32")
    c = np.zeros((B, H), "float32")
    expected = []
    for t in range(T):
        a = x[:, t] @ w["kernel"] + h @ w["recurrent_kernel"]
        z_i, z_f, z_c, z_o = (
            to_numpy(norm(a[:, columns].astype("float32")))
            for norm, columns in zip(gate_norms, splits, strict=True)
        )
        c = sigmoid(z_f) * c + sigmoid(z_i) * np.tanh(z_c)
        h = sigmoid(z_o) * np.tanh(to_numpy(cell_norm(c.astype("float32"))))
        expected.append(h)
    np.testing.assert_allclose(
        to_numpy(layer(x)), np.stack(expected, 1), atol=2e-5
    )


def test_layer_norm_makes_the_cell_blind_to_the_weights_scale(rng):
    layer = built_layer(rng, VARIANTS["layer_norm"], return_sequences=True)
    x = rng.standard_normal((B, T, D)).astype("float32")
    before = to_numpy(layer(x))
    layer.cell.kernel.assign(10.0 * layer.cell.kernel)
    layer.cell.recurrent_kernel.assign(10.0 * layer.cell.recurrent_kernel)
    # Normalization divides the factor out (up to epsilon); a plain LSTM
    # would saturate its gates instead.
    np.testing.assert_allclose(to_numpy(layer(x)), before, atol=2e-3)


@variants
def test_forward_matches_the_numpy_reference_with_state_and_mask(rng, variant):
    layer = built_layer(
        rng, VARIANTS[variant], return_sequences=True, return_state=True
    )
    w = named_weights(layer)
    r = layer.cell.recurrent_units
    x = rng.standard_normal((B, T, D)).astype("float32")
    h0 = 0.5 * rng.standard_normal((B, r)).astype("float32")
    c0 = rng.standard_normal((B, H)).astype("float32")
    mask = np.ones((B, T), bool)
    mask[1, 4:] = False
    mask[2, :2] = False
    actual = layer(x, initial_state=[h0, c0], mask=mask)
    variant_weights = {
        k: v for k, v in w.items() if k in gradcheck.TENSOR_NAMES[6:]
    }
    outputs, _, h_t, c_t, _ = gradcheck.reference_forward(
        x,
        h0,
        c0,
        w["kernel"],
        w["recurrent_kernel"],
        w["bias"],
        mask=mask,
        **variant_weights,
    )
    for got, want in zip(actual, (outputs, h_t, c_t), strict=True):
        np.testing.assert_allclose(to_numpy(got), want, atol=2e-5)


# --- Sequence features on the generic path, every backend ------------------


@variants
def test_left_padding_with_mask_equals_the_unpadded_sequence(rng, variant):
    layer = built_layer(rng, VARIANTS[variant])
    x = rng.standard_normal((B, T, D)).astype("float32")
    padded = np.concatenate([np.full((B, 2, D), np.nan, "float32"), x], 1)
    mask = np.concatenate([np.zeros((B, 2), bool), np.ones((B, T), bool)], 1)
    np.testing.assert_allclose(
        to_numpy(layer(padded, mask=mask)), to_numpy(layer(x)), atol=1e-5
    )


@variants
def test_go_backwards_equals_reversed_inputs(rng, variant):
    forwards = built_layer(rng, VARIANTS[variant], return_state=True)
    backwards = LSTM(
        H, go_backwards=True, return_state=True, **VARIANTS[variant]
    )
    backwards.build((None, T, D))
    backwards.set_weights(forwards.get_weights())
    x = rng.standard_normal((B, T, D)).astype("float32")
    for a, b in zip(backwards(x), forwards(x[:, ::-1]), strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-6)


@variants
def test_stateful_halves_equal_one_call(rng, variant):
    whole = built_layer(rng, VARIANTS[variant], return_sequences=True)
    stateful = LSTM(
        H, stateful=True, return_sequences=True, **VARIANTS[variant]
    )
    stateful.build((B, T // 2, D))
    stateful.set_weights(whole.get_weights())
    x = rng.standard_normal((B, T, D)).astype("float32")
    halves = [to_numpy(stateful(x[:, :3])), to_numpy(stateful(x[:, 3:]))]
    np.testing.assert_allclose(
        np.concatenate(halves, 1), to_numpy(whole(x)), atol=1e-5
    )
    assert tuple(stateful.states[0].shape) == (B, whole.cell.recurrent_units)
    assert tuple(stateful.states[1].shape) == (B, H)


@variants
def test_dropout_trains_differently_and_infers_like_no_dropout(rng, variant):
    kwargs = dict(VARIANTS[variant], dropout=0.3, recurrent_dropout=0.3)
    layer = built_layer(rng, kwargs, seed=1)
    plain = LSTM(H, **VARIANTS[variant])
    plain.build((None, T, D))
    plain.set_weights(layer.get_weights())
    x = rng.standard_normal((B, T, D)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(layer(x)), to_numpy(plain(x)), atol=1e-6
    )
    assert (
        np.abs(to_numpy(layer(x, training=True)) - to_numpy(plain(x))).max()
        > 1e-3
    )


def test_projection_checks_initial_state_sizes(rng):
    layer = built_layer(rng, VARIANTS["projection"])
    x = np.zeros((B, T, D), "float32")
    with pytest.raises(
        ValueError, match=r"`initial_state` h_0 of shape \(3, 2\)"
    ):
        layer(x, initial_state=[np.zeros((B, H)), np.zeros((B, H))])
    with pytest.raises(
        ValueError, match=r"`initial_state` c_0 of shape \(3, 5\)"
    ):
        layer(x, initial_state=[np.zeros((B, R)), np.zeros((B, R))])


def test_fit_with_all_variants_reduces_the_loss(rng):
    model = keras.Sequential(
        [keras.Input((T, D)), LSTM(H, **VARIANTS["all"]), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    x = rng.standard_normal((32, T, D)).astype("float32")
    y = x[:, :, :1].sum(axis=1)
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=12, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.6 * before


# --- Serialization and export ----------------------------------------------


@variants
def test_config_round_trip_and_keras_file(rng, variant, tmp_path):
    layer = built_layer(rng, VARIANTS[variant], return_sequences=True)
    config = layer.get_config()
    for key, value in VARIANTS[variant].items():
        assert config[key] == value
    clone = LSTM.from_config(config)
    assert clone.get_config() == config
    cell_config = layer.cell.get_config()
    assert LSTMCell.from_config(cell_config).get_config() == cell_config

    model = keras.Sequential([keras.Input((T, D)), layer])
    x = rng.standard_normal((B, T, D)).astype("float32")
    expected = to_numpy(model(x))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(to_numpy(loaded(x)), expected)


@pytest.mark.tensorflow_only
def test_model_with_all_variants_exports_a_saved_model(rng, tmp_path):
    import tensorflow as tf

    layer = built_layer(rng, VARIANTS["all"], return_sequences=True)
    model = keras.Sequential([keras.Input((T, D)), layer])
    x = rng.standard_normal((B, T, D)).astype("float32")
    expected = to_numpy(model(x))
    model.export(str(tmp_path / "exported"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "exported"))
    np.testing.assert_allclose(served.serve(x).numpy(), expected, atol=1e-6)


def test_lstm_keras_exports_the_variant_weight_names():
    assert lstm_keras.lstm_cell.VARIANT_WEIGHTS == gradcheck.TENSOR_NAMES[6:]
