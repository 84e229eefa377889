"""`lstm_keras.LSTM` against its spec: `keras.layers.LSTM`, NumPy, Keras rules.

Every numeric check compares with an independent reference: the Keras layer
given the same weights, or the LSTM equations written out in NumPy below.
"""

import inspect
import re

import keras
import numpy as np
import pytest
from keras import initializers
from keras import ops

from lstm_keras import GATE_ORDER
from lstm_keras import LSTM
from lstm_keras import LSTMCell

B, T, D, H = 3, 6, 4, 5

BACKEND = keras.backend.backend()

# Float64 tolerances. Keras's torch backend runs `ops.matmul` on float64
# inputs in float32 (its `result_type` maps 64-bit dtypes to 32-bit), so there
# float64 layers, Keras's own included, are only float32-accurate; and XLA's
# CPU tanh (JAX backend) is only accurate to about 1e-7 even in float64.
PARITY_F64_ATOL = 1e-6 if BACKEND == "torch" else 1e-9
NUMPY_F64_ATOL = 1e-12 if BACKEND == "tensorflow" else 1e-6


def to_numpy(x):
    return ops.convert_to_numpy(x)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_lstm(x, kernel, recurrent_kernel, bias, h0=None, c0=None):
    """The LSTM equations as a NumPy loop; returns (outputs, h_T, c_T)."""
    batch, timesteps, _ = x.shape
    units = recurrent_kernel.shape[0]
    h = np.zeros((batch, units)) if h0 is None else h0
    c = np.zeros((batch, units)) if c0 is None else c0
    outputs = []
    for t in range(timesteps):
        z = x[:, t] @ kernel + h @ recurrent_kernel
        if bias is not None:
            z = z + bias
        z_i, z_f, z_c, z_o = np.split(z, 4, axis=-1)
        c = sigmoid(z_f) * c + sigmoid(z_i) * np.tanh(z_c)
        h = sigmoid(z_o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs, axis=1), h, c


def random_weights(layer, rng, scale=0.5):
    """Gives a built layer random weights (biases too, so they matter)."""
    layer.set_weights(
        [scale * rng.standard_normal(w.shape) for w in layer.get_weights()]
    )


def keras_and_ours(rng, input_dim=D, dtype=None, **kwargs):
    """A built `keras.layers.LSTM` with random weights, and ours with them."""
    reference = keras.layers.LSTM(H, dtype=dtype, **kwargs)
    ours = LSTM(H, dtype=dtype, **kwargs)
    reference.build((None, T, input_dim))
    ours.build((None, T, input_dim))
    random_weights(reference, rng)
    ours.set_weights(reference.get_weights())
    return reference, ours


def assert_outputs_close(actual, expected, atol):
    if isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple))
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_outputs_close(a, e, atol)
        return
    actual, expected = to_numpy(actual), to_numpy(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=atol)


# --- Interface ------------------------------------------------------------


def _parameters(function):
    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if name != "self"
    }


# The LSTM variants Keras lacks, each off by default; they come after
# Keras's own arguments (and before **kwargs).
VARIANT_DEFAULTS = {
    "use_peepholes": False,
    "layer_norm": False,
    "projection_units": None,
}


def _without_variants(parameters):
    extra = {k: parameters.pop(k) for k in VARIANT_DEFAULTS}
    assert extra == VARIANT_DEFAULTS
    return parameters


def test_constructor_has_keras_lstm_arguments_and_defaults():
    ours = _parameters(LSTM.__init__)
    reference = _parameters(keras.layers.LSTM.__init__)
    assert list(ours)[-4:] == [*VARIANT_DEFAULTS, "kwargs"]
    ours = _without_variants(ours)
    assert list(ours) == list(reference)
    assert ours == reference


def test_call_has_keras_lstm_arguments_and_defaults():
    ours = _parameters(LSTM.call)
    reference = _parameters(keras.layers.LSTM.call)
    assert list(ours) == list(reference)
    assert ours == reference
    assert list(ours) == ["sequences", "initial_state", "mask", "training"]


def test_cell_constructor_has_keras_lstm_cell_arguments_and_defaults():
    reference = _parameters(keras.layers.LSTMCell.__init__)
    ours = _without_variants(_parameters(LSTMCell.__init__))
    assert ours == reference


def test_layer_exposes_cell_attributes_like_keras():
    layer = LSTM(H, dropout=0.25, recurrent_dropout=0.5, unit_forget_bias=False)
    reference = keras.layers.LSTM(
        H, dropout=0.25, recurrent_dropout=0.5, unit_forget_bias=False
    )
    for name in ("units", "use_bias", "unit_forget_bias", "dropout"):
        assert getattr(layer, name) == getattr(reference, name)
    assert layer.recurrent_dropout == reference.recurrent_dropout
    assert layer.activation is reference.activation
    assert layer.recurrent_activation is reference.recurrent_activation


# --- Parity with keras.layers.LSTM -----------------------------------------

PARITY_CONFIGS = {
    "defaults": {},
    "return_sequences": {"return_sequences": True},
    "return_sequences_and_state": {
        "return_sequences": True,
        "return_state": True,
    },
    "go_backwards": {"go_backwards": True, "return_sequences": True},
    "unroll": {"unroll": True, "return_state": True},
    "no_bias": {"use_bias": False, "return_sequences": True},
    "relu_hard_sigmoid": {
        "activation": "relu",
        "recurrent_activation": "hard_sigmoid",
        "return_sequences": True,
    },
    "softsign_sigmoid_callables": {
        "activation": keras.activations.softsign,
        "recurrent_activation": keras.activations.sigmoid,
    },
}

# One mask holding every padding pattern, a row each (B = 4 rows).
MASK = np.array(
    [
        [1, 1, 1, 1, 0, 0],  # right-padded
        [0, 0, 1, 1, 1, 1],  # left-padded
        [0, 0, 0, 0, 0, 0],  # fully masked
        [1, 1, 1, 1, 1, 1],  # no padding
    ],
    dtype=bool,
)

DTYPES = pytest.mark.parametrize(
    "dtype, atol",
    [("float32", 1e-5), ("float64", PARITY_F64_ATOL)],
    ids=["f32", "f64"],
)


@pytest.fixture
def float64_enabled():
    """Lets JAX hold float64 (it silently uses float32 without x64)."""
    if BACKEND != "jax":
        yield
        return
    import jax

    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("config", PARITY_CONFIGS, ids=str)
@DTYPES
def test_matches_keras_lstm_outputs_after_set_weights(
    rng, config, dtype, atol, float64_enabled
):
    reference, ours = keras_and_ours(rng, dtype=dtype, **PARITY_CONFIGS[config])
    x = rng.standard_normal((B, T, D)).astype(dtype)
    expected = reference(x)
    actual = ours(x)
    assert_outputs_close(actual, expected, atol)
    for tensor in actual if isinstance(actual, (list, tuple)) else [actual]:
        assert keras.backend.standardize_dtype(tensor.dtype) == dtype


@pytest.mark.parametrize(
    "config",
    [
        {"return_sequences": True, "return_state": True},
        {"go_backwards": True, "return_sequences": True, "return_state": True},
        {"unroll": True, "return_sequences": True, "return_state": True},
    ],
    ids=["forwards", "backwards", "unroll"],
)
@DTYPES
def test_matches_keras_lstm_with_masks(
    rng, config, dtype, atol, float64_enabled
):
    reference, ours = keras_and_ours(rng, dtype=dtype, **config)
    x = rng.standard_normal((len(MASK), T, D)).astype(dtype)
    expected = reference(x, mask=MASK)
    assert_outputs_close(ours(x, mask=MASK), expected, atol=atol)
    # The mask matters: without it, padded rows give other numbers.
    unmasked = to_numpy(ours(x)[1])
    assert not np.allclose(unmasked[:3], to_numpy(expected[1])[:3])


@DTYPES
@pytest.mark.parametrize("go_backwards", [False, True])
def test_matches_keras_lstm_with_initial_state(
    rng, dtype, atol, go_backwards, float64_enabled
):
    reference, ours = keras_and_ours(
        rng,
        dtype=dtype,
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
    )
    x = rng.standard_normal((B, T, D)).astype(dtype)
    state = [rng.standard_normal((B, H)).astype(dtype) for _ in range(2)]
    expected = reference(x, initial_state=state)
    assert_outputs_close(ours(x, initial_state=state), expected, atol)
    # The initial state matters: zeros give other numbers.
    assert not np.allclose(to_numpy(ours(x)[0]), to_numpy(expected[0]))


def test_keras_lstm_matches_ours_after_set_weights_reverse_direction(rng):
    ours = LSTM(H, return_sequences=True, return_state=True)
    ours.build((None, T, D))
    random_weights(ours, rng)
    reference = keras.layers.LSTM(H, return_sequences=True, return_state=True)
    reference.build((None, T, D))
    reference.set_weights(ours.get_weights())
    x = rng.standard_normal((len(MASK), T, D)).astype("float32")
    assert_outputs_close(ours(x), reference(x), 1e-5)
    assert_outputs_close(ours(x, mask=MASK), reference(x, mask=MASK), 1e-5)


def test_weights_have_keras_names_shapes_and_order(rng):
    reference, ours = keras_and_ours(rng)
    assert [w.shape for w in ours.weights] == [
        w.shape for w in reference.weights
    ]
    assert [w.path.split("/")[-1] for w in ours.weights] == [
        "kernel",
        "recurrent_kernel",
        "bias",
    ]
    assert len(ours.trainable_weights) == 3
    assert not ours.non_trainable_weights


# --- Independent NumPy checks ----------------------------------------------


def test_constant_weights_give_keras_test_numbers():
    # The numbers of keras/src/layers/rnn/lstm_test.py::test_correctness,
    # recomputed here by the NumPy loop (unit_forget_bias=True: forget bias 1).
    sequence = np.arange(72).reshape((3, 6, 4)).astype("float32")
    layer = LSTM(
        3,
        kernel_initializer=initializers.Constant(0.01),
        recurrent_initializer=initializers.Constant(0.02),
        bias_initializer=initializers.Constant(0.03),
    )
    expected = np.array(
        [
            [0.6288687, 0.6288687, 0.6288687],
            [0.86899155, 0.86899155, 0.86899155],
            [0.9460773, 0.9460773, 0.9460773],
        ]
    )
    bias = np.full(12, 0.03)
    bias[3:6] = 1.0
    _, numpy_h, _ = numpy_lstm(
        sequence.astype("float64"),
        np.full((4, 12), 0.01),
        np.full((3, 12), 0.02),
        bias,
    )
    np.testing.assert_allclose(numpy_h, expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(
        to_numpy(layer(sequence)), expected, atol=1e-5, rtol=1e-5
    )

    backwards = LSTM(
        3,
        kernel_initializer=initializers.Constant(0.01),
        recurrent_initializer=initializers.Constant(0.02),
        bias_initializer=initializers.Constant(0.03),
        go_backwards=True,
    )
    _, numpy_h, _ = numpy_lstm(
        sequence[:, ::-1].astype("float64"),
        np.full((4, 12), 0.01),
        np.full((3, 12), 0.02),
        bias,
    )
    np.testing.assert_allclose(
        to_numpy(backwards(sequence)), numpy_h, atol=1e-5, rtol=1e-5
    )


def test_random_weights_match_numpy_loop_with_initial_state(
    rng, float64_enabled
):
    layer = LSTM(H, return_sequences=True, return_state=True, dtype="float64")
    layer.build((None, T, D))
    random_weights(layer, rng)
    kernel, recurrent_kernel, bias = layer.get_weights()
    x = rng.standard_normal((B, T, D))
    h0, c0 = rng.standard_normal((2, B, H))
    expected = numpy_lstm(x, kernel, recurrent_kernel, bias, h0, c0)
    assert_outputs_close(
        layer(x, initial_state=[h0, c0]), list(expected), atol=NUMPY_F64_ATOL
    )


# --- Gate weights ----------------------------------------------------------


def test_gate_weights_are_the_keras_column_slices(rng):
    _, ours = keras_and_ours(rng)
    kernel, recurrent_kernel, bias = ours.get_weights()
    gates = ours.cell.gate_weights()
    assert set(gates) == {"forget", "input", "candidate", "output"}
    assert GATE_ORDER == ("input", "forget", "candidate", "output")
    for index, gate in enumerate(("input", "forget", "candidate", "output")):
        columns = slice(index * H, (index + 1) * H)
        feedforward, recurrent, gate_bias = gates[gate]
        assert feedforward.shape == (D, H)
        assert recurrent.shape == (H, H)
        assert gate_bias.shape == (H,)
        np.testing.assert_array_equal(feedforward, kernel[:, columns])
        np.testing.assert_array_equal(recurrent, recurrent_kernel[:, columns])
        np.testing.assert_array_equal(gate_bias, bias[columns])
    # The layer forwards to its cell.
    for gate, parts in ours.gate_weights().items():
        for part, expected in zip(parts, gates[gate], strict=True):
            np.testing.assert_array_equal(part, expected)


def test_gate_weights_without_bias_have_none_bias(rng):
    _, ours = keras_and_ours(rng, use_bias=False)
    kernel, recurrent_kernel = ours.get_weights()
    gates = ours.cell.gate_weights()
    for index, gate in enumerate(GATE_ORDER):
        columns = slice(index * H, (index + 1) * H)
        np.testing.assert_array_equal(gates[gate][0], kernel[:, columns])
        np.testing.assert_array_equal(
            gates[gate][1], recurrent_kernel[:, columns]
        )
        assert gates[gate][2] is None


def test_gate_weights_are_copies(rng):
    _, ours = keras_and_ours(rng)
    before = ours.get_weights()
    ours.cell.gate_weights()["input"][0][...] = 123.0
    for w, b in zip(ours.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, b)


def test_set_gate_weights_round_trips(rng):
    _, ours = keras_and_ours(rng)
    x = rng.standard_normal((B, T, D)).astype("float32")
    before_weights = ours.get_weights()
    before_outputs = to_numpy(ours(x))
    other = LSTM(H)
    other.build((None, T, D))
    other.cell.set_gate_weights(ours.cell.gate_weights())
    for w, b in zip(other.get_weights(), before_weights, strict=True):
        np.testing.assert_array_equal(w, b)
    np.testing.assert_allclose(to_numpy(other(x)), before_outputs, atol=1e-6)


@pytest.mark.parametrize("gate", GATE_ORDER)
def test_set_gate_weights_updates_only_the_named_gate(
    rng, gate, float64_enabled
):
    _, ours = keras_and_ours(rng, dtype="float64")
    kernel, recurrent_kernel, bias = ours.get_weights()
    new = (
        rng.standard_normal((D, H)),
        rng.standard_normal((H, H)),
        rng.standard_normal(H),
    )
    ours.set_gate_weights({gate: new})
    index = GATE_ORDER.index(gate)
    columns = slice(index * H, (index + 1) * H)
    kernel[:, columns] = new[0]
    recurrent_kernel[:, columns] = new[1]
    bias[columns] = new[2]
    actual = ours.get_weights()
    np.testing.assert_array_equal(actual[0], kernel)
    np.testing.assert_array_equal(actual[1], recurrent_kernel)
    np.testing.assert_array_equal(actual[2], bias)
    x = rng.standard_normal((B, T, D))
    _, expected_h, _ = numpy_lstm(x, kernel, recurrent_kernel, bias)
    np.testing.assert_allclose(
        to_numpy(ours(x)), expected_h, atol=NUMPY_F64_ATOL, rtol=0
    )


def test_set_gate_weights_rejects_unknown_gate_name(rng):
    _, ours = keras_and_ours(rng)
    weights = ours.cell.gate_weights()["input"]
    before = ours.get_weights()
    with pytest.raises(ValueError, match=r"`gate_weights`.*'update'"):
        ours.cell.set_gate_weights({"update": weights})
    for w, b in zip(ours.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, b)


@pytest.mark.parametrize("part", [0, 1, 2])
def test_set_gate_weights_rejects_wrong_shapes(rng, part):
    _, ours = keras_and_ours(rng)
    before = ours.get_weights()
    weights = list(ours.cell.gate_weights()["forget"])
    weights[part] = np.zeros(weights[part].shape + (1,))
    name = ("feedforward", "recurrent", "bias")[part]
    with pytest.raises(
        ValueError, match=rf"`gate_weights\['forget'\]`.*{name}.*shape"
    ):
        ours.cell.set_gate_weights({"forget": tuple(weights)})
    for w, b in zip(ours.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, b)


def test_set_gate_weights_rejects_wrong_tuple_length(rng):
    _, ours = keras_and_ours(rng)
    feedforward, recurrent, _ = ours.cell.gate_weights()["output"]
    with pytest.raises(ValueError, match=r"`gate_weights\['output'\]`.*2"):
        ours.cell.set_gate_weights({"output": (feedforward, recurrent)})


def test_set_gate_weights_rejects_bias_without_use_bias(rng):
    _, ours = keras_and_ours(rng, use_bias=False)
    feedforward, recurrent, _ = ours.cell.gate_weights()["candidate"]
    with pytest.raises(
        ValueError, match=r"`gate_weights\['candidate'\]`.*use_bias=False"
    ):
        ours.cell.set_gate_weights(
            {"candidate": (feedforward, recurrent, np.zeros(H))}
        )
    # Without a bias the update goes through.
    ours.cell.set_gate_weights(
        {"candidate": (feedforward * 2, recurrent, None)}
    )
    np.testing.assert_array_equal(
        ours.cell.gate_weights()["candidate"][0], feedforward * 2
    )


def test_gate_weights_need_a_built_cell():
    with pytest.raises(ValueError, match="built"):
        LSTM(H).cell.gate_weights()


@pytest.mark.parametrize("bias_initializer", ["zeros", "ones", 0.5])
@pytest.mark.parametrize("unit_forget_bias", [True, False])
def test_bias_initialization_matches_keras(bias_initializer, unit_forget_bias):
    if isinstance(bias_initializer, float):
        bias_initializer = initializers.Constant(bias_initializer)
    kwargs = dict(
        bias_initializer=bias_initializer, unit_forget_bias=unit_forget_bias
    )
    ours = LSTM(H, **kwargs)
    reference = keras.layers.LSTM(H, **kwargs)
    ours.build((None, T, D))
    reference.build((None, T, D))
    np.testing.assert_array_equal(
        to_numpy(ours.cell.bias), to_numpy(reference.cell.bias)
    )
    forget_bias = ours.cell.gate_weights()["forget"][2]
    if unit_forget_bias:
        np.testing.assert_array_equal(forget_bias, np.ones(H))


def test_unit_forget_bias_gives_forget_bias_ones_and_other_biases_zero():
    layer = LSTM(H, unit_forget_bias=True)
    layer.build((None, T, D))
    gates = layer.cell.gate_weights()
    np.testing.assert_array_equal(gates["forget"][2], np.ones(H))
    for gate in ("input", "candidate", "output"):
        np.testing.assert_array_equal(gates[gate][2], np.zeros(H))


# --- Parameter count -------------------------------------------------------


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("input_dim, units", [(1, 1), (D, H)])
def test_parameter_count_is_four_simple_rnns(use_bias, input_dim, units):
    ours = LSTM(units, use_bias=use_bias)
    simple = keras.layers.SimpleRNN(units, use_bias=use_bias)
    inputs = keras.Input((3, input_dim))
    ours(inputs)
    simple(inputs)
    assert ours.count_params() == 4 * simple.count_params()
    expected = 4 * (input_dim * units + units * units + units * use_bias)
    assert ours.count_params() == expected


# --- Serialization ---------------------------------------------------------


def test_get_config_from_config_round_trip(rng):
    layer = LSTM(
        H,
        activation="relu",
        recurrent_activation="hard_sigmoid",
        use_bias=True,
        kernel_regularizer="l2",
        recurrent_constraint="non_neg",
        dropout=0.25,
        recurrent_dropout=0.125,
        seed=3,
        return_sequences=True,
        go_backwards=True,
        unit_forget_bias=False,
        use_cudnn=False,
        name="my_lstm",
    )
    layer.build((None, T, D))
    random_weights(layer, rng)
    config = layer.get_config()
    clone = LSTM.from_config(config)
    assert clone.get_config() == config
    assert clone.name == "my_lstm"
    assert clone.use_cudnn is False
    assert clone.cell.seed == 3
    clone.build((None, T, D))
    clone.set_weights(layer.get_weights())
    x = rng.standard_normal((B, T, D)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(clone(x)), to_numpy(layer(x)), atol=1e-6
    )


def test_config_has_keras_lstm_keys_plus_use_cudnn_and_variants():
    ours = set(LSTM(H).get_config())
    reference = set(keras.layers.LSTM(H).get_config())
    assert ours - reference == {"use_cudnn", *VARIANT_DEFAULTS}
    assert reference - ours == set()


def test_cell_get_config_from_config_round_trip():
    cell = LSTMCell(H, dropout=0.5, seed=4, unit_forget_bias=False)
    config = cell.get_config()
    clone = LSTMCell.from_config(config)
    assert clone.get_config() == config


def test_serialize_deserialize_keras_object(rng):
    layer = LSTM(H, return_state=True, recurrent_dropout=0.25)
    layer.build((None, T, D))
    random_weights(layer, rng)
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == "lstm_keras>LSTM"
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is LSTM
    assert clone.get_config() == layer.get_config()
    clone.build((None, T, D))
    clone.set_weights(layer.get_weights())
    x = rng.standard_normal((B, T, D)).astype("float32")
    assert_outputs_close(clone(x), layer(x), 1e-6)


def test_classes_are_registered_under_lstm_keras():
    assert keras.saving.get_registered_name(LSTM) == "lstm_keras>LSTM"
    assert keras.saving.get_registered_name(LSTMCell) == "lstm_keras>LSTMCell"
    assert keras.saving.get_registered_object("lstm_keras>LSTM") is LSTM


def test_saved_model_loads_in_safe_mode_without_custom_objects(rng, tmp_path):
    inputs = keras.Input((T, D))
    x = LSTM(H, return_sequences=True, name="first")(inputs)
    x = keras.layers.Bidirectional(
        LSTM(3, return_sequences=True, go_backwards=False), name="bi"
    )(x)
    outputs = LSTM(2, name="last")(x)
    model = keras.Model(inputs, outputs)
    model.set_weights(
        [0.5 * rng.standard_normal(w.shape) for w in model.get_weights()]
    )
    x_test = rng.standard_normal((B, T, D)).astype("float32")
    expected = to_numpy(model.predict(x_test, verbose=0))

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.get_layer("first")) is LSTM
    assert type(loaded.get_layer("bi").forward_layer) is LSTM
    assert type(loaded.get_layer("bi").backward_layer) is LSTM
    assert loaded.get_layer("bi").backward_layer.go_backwards
    np.testing.assert_array_equal(
        to_numpy(loaded.predict(x_test, verbose=0)), expected
    )


# --- Bad input -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 4), (2, 3, 4, 1), (4,)])
def test_wrong_rank_raises_naming_sequences_eager(shape):
    layer = LSTM(H)
    with pytest.raises(
        ValueError, match=rf"`sequences` of rank 3.*{re.escape(str(shape))}"
    ):
        layer(np.zeros(shape, dtype="float32"))


def test_wrong_rank_raises_naming_sequences_symbolic():
    with pytest.raises(ValueError, match=r"`sequences` of rank 3.*\(None, 4\)"):
        LSTM(H)(keras.Input((4,)))
    with pytest.raises(ValueError, match=r"`sequences` of rank 3"):
        LSTM(H)(keras.Input((3, 4, 2)))


def test_wrong_rank_raises_on_a_built_layer():
    layer = LSTM(H)
    layer(np.zeros((2, 3, 4), dtype="float32"))
    with pytest.raises(ValueError, match=r"`sequences` of rank 3.*\(2, 4\)"):
        layer(np.zeros((2, 4), dtype="float32"))


def test_other_feature_size_raises_on_built_layer_eager():
    layer = LSTM(H)
    layer(np.zeros((2, 3, 4), dtype="float32"))
    with pytest.raises(
        ValueError, match=r"built for 4 features.*`sequences` has 5"
    ):
        layer(np.zeros((2, 3, 5), dtype="float32"))


def test_other_feature_size_raises_on_built_layer_symbolic():
    layer = LSTM(H)
    layer(keras.Input((3, 4)))
    with pytest.raises(
        ValueError, match=r"built for 4 features.*`sequences` has 6"
    ):
        layer(keras.Input((3, 6)))


def test_unknown_feature_size_raises():
    with pytest.raises(ValueError, match=r"feature dimension.*`sequences`"):
        LSTM(H).build((None, 3, None))


@pytest.mark.parametrize("built", [False, True])
def test_zero_timesteps_raises(built):
    layer = LSTM(H)
    if built:
        layer(np.zeros((2, 3, 4), dtype="float32"))
    with pytest.raises(ValueError, match=r"`sequences` with 0 timesteps"):
        layer(np.zeros((2, 0, 4), dtype="float32"))


@pytest.mark.parametrize("units", [0, -1, 2.5, "3", None, True])
def test_invalid_units_raise(units):
    with pytest.raises(
        ValueError, match=rf"argument `units`.*got {re.escape(repr(units))}"
    ):
        LSTM(units)
    with pytest.raises(ValueError, match=r"argument `units`"):
        LSTMCell(units)


@pytest.mark.parametrize("argument", ["dropout", "recurrent_dropout"])
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan"), "x"])
def test_out_of_range_dropout_is_rejected_not_clipped(argument, value):
    with pytest.raises(
        ValueError,
        match=rf"argument `{argument}`.*\[0, 1\).*got {re.escape(repr(value))}",
    ):
        LSTM(H, **{argument: value})


@pytest.mark.parametrize("argument", ["dropout", "recurrent_dropout"])
@pytest.mark.parametrize("value", [0, 0.0, 0.5, 0.999])
def test_in_range_dropout_is_accepted_as_float(argument, value):
    layer = LSTM(H, **{argument: value})
    assert getattr(layer, argument) == value
    assert isinstance(getattr(layer, argument), float)


@pytest.mark.parametrize("count", [1, 3])
def test_wrong_number_of_initial_states_raises(count):
    layer = LSTM(H)
    x = np.zeros((2, 3, 4), dtype="float32")
    states = [np.zeros((2, H), dtype="float32")] * count
    with pytest.raises(
        ValueError, match=rf"`initial_state`.*2 tensors.*received {count}"
    ):
        layer(x, initial_state=states)


def test_single_initial_state_tensor_raises():
    layer = LSTM(H)
    x = np.zeros((2, 3, 4), dtype="float32")
    with pytest.raises(ValueError, match=r"`initial_state`.*received 1"):
        layer(x, initial_state=np.zeros((2, H), dtype="float32"))


@pytest.mark.parametrize(
    "h_shape, c_shape, name, received",
    [
        ((2, H + 1), (2, H), "h_0", (2, H + 1)),
        ((2, H), (2, H - 1), "c_0", (2, H - 1)),
        ((3, H), (2, H), "h_0", (3, H)),
        ((2, H), (2, H, 1), "c_0", (2, H, 1)),
    ],
)
def test_wrong_initial_state_shape_raises(h_shape, c_shape, name, received):
    layer = LSTM(H)
    x = np.zeros((2, 3, 4), dtype="float32")
    states = [np.zeros(h_shape, "float32"), np.zeros(c_shape, "float32")]
    with pytest.raises(
        ValueError,
        match=rf"`initial_state` {name} of shape \(2, {H}\).*"
        + re.escape(str(received)),
    ):
        layer(x, initial_state=states)


def test_wrong_initial_state_shape_raises_symbolic():
    layer = LSTM(H)
    inputs = keras.Input((3, 4))
    h0 = keras.Input((H + 2,))
    c0 = keras.Input((H,))
    with pytest.raises(ValueError, match=r"`initial_state` h_0"):
        layer(inputs, initial_state=[h0, c0])


def test_stateful_layer_rejects_another_batch_size():
    layer = LSTM(H, stateful=True)
    layer(np.zeros((2, 3, 4), dtype="float32"))
    with pytest.raises(
        ValueError, match=r"stateful with batch size 2.*batch size 3"
    ):
        layer(np.zeros((3, 3, 4), dtype="float32"))


@pytest.mark.parametrize("value", ["yes", 1.5, None])
def test_invalid_use_cudnn_raises(value):
    with pytest.raises(
        ValueError, match=rf"argument `use_cudnn`.*got {re.escape(repr(value))}"
    ):
        LSTM(H, use_cudnn=value)


def test_use_cudnn_true_without_fast_path_raises_like_keras(rng):
    x = rng.standard_normal((B, T, D)).astype("float32")
    # No fast path of ours (cuDNN, the CPU ops) covers a relu activation,
    # and Keras's cuDNN path no recurrent dropout, on every backend.
    options = dict(use_cudnn=True, activation="relu", recurrent_dropout=0.5)
    layer = LSTM(H, **options)
    layer.build((None, T, D))
    with pytest.raises(ValueError, match=r"use_cudnn=True"):
        layer(x, training=True)
    reference = keras.layers.LSTM(H, **options)
    with pytest.raises(ValueError, match=r"use_cudnn=True"):
        reference(x, training=True)


@pytest.mark.parametrize("use_cudnn", [False, "auto"])
def test_use_cudnn_false_and_auto_compute_the_same_numbers(rng, use_cudnn):
    reference, ours = keras_and_ours(rng, use_cudnn=use_cudnn)
    x = rng.standard_normal((B, T, D)).astype("float32")
    assert_outputs_close(ours(x), reference(x), 1e-5)
