"""`LSTMBackbone` against Keras's own LSTM run on the unpadded rows."""

import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_keras.applications import LSTMBackbone
from lstm_keras.applications import backbone as backbone_module
from lstm_keras.applications import sentiment as sentiment_module
from lstm_keras.applications import speech as speech_module

pytestmark = pytest.mark.tensorflow_only

B, T, D, H = 3, 7, 4, 5
LENGTHS = [7, 3, 1]


def padded_batch(rng):
    x = rng.normal(size=(B, T, D)).astype("float32")
    mask = np.arange(T)[None, :] < np.array(LENGTHS)[:, None]
    # Padding holds garbage: the mask alone must keep it out.
    return np.where(mask[..., None], x, 100.0).astype("float32"), mask


def keras_reference(backbone, bidirectional, num_layers):
    """A `keras.layers.LSTM` stack holding the backbone's weights."""
    layers = []
    for index in range(num_layers):
        layer = keras.layers.LSTM(H, return_sequences=index < num_layers - 1)
        if bidirectional:
            layer = keras.layers.Bidirectional(layer)
        layers.append(layer)
    reference = keras.Sequential([keras.Input((None, D)), *layers])
    reference.set_weights(backbone.get_weights())
    return reference


@pytest.mark.parametrize(
    "bidirectional, num_layers", [(False, 1), (True, 1), (False, 2), (True, 2)]
)
def test_output_is_last_real_state_of_each_row(rng, bidirectional, num_layers):
    backbone = LSTMBackbone(
        units=H, num_layers=num_layers, bidirectional=bidirectional
    )
    x, mask = padded_batch(rng)
    backbone(x, mask=mask)
    for weight in backbone.weights:
        weight.assign(rng.normal(scale=0.5, size=weight.shape))
    outputs = keras.ops.convert_to_numpy(backbone(x, mask=mask))
    reference = keras_reference(backbone, bidirectional, num_layers)
    for row, length in enumerate(LENGTHS):
        expected = reference(x[row : row + 1, :length])[0]
        np.testing.assert_allclose(outputs[row], expected, atol=1e-5)
    width = H * (2 if bidirectional else 1)
    assert outputs.shape == (B, width)


def test_mask_comes_from_keras_mask_of_inputs(rng):
    token_ids = np.array([[3, 4, 0, 0], [5, 0, 0, 0]])
    inputs = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(8, D, mask_zero=True)(inputs)
    model = keras.Model(inputs, LSTMBackbone(units=H)(embedded))
    outputs = keras.ops.convert_to_numpy(model(token_ids))
    np.testing.assert_allclose(
        outputs[0], model(token_ids[:1, :2])[0], atol=1e-6
    )
    np.testing.assert_allclose(
        outputs[1], model(token_ids[1:, :1])[0], atol=1e-6
    )


def test_fully_masked_row_gives_zero_state(rng):
    backbone = LSTMBackbone(units=H, bidirectional=True, num_layers=2)
    x, mask = padded_batch(rng)
    mask[1] = False
    outputs = keras.ops.convert_to_numpy(backbone(x, mask=mask))
    assert np.all(np.isfinite(outputs))
    np.testing.assert_array_equal(outputs[1], np.zeros(2 * H))


def test_options_reach_every_lstm():
    backbone = LSTMBackbone(
        units=H,
        num_layers=2,
        bidirectional=True,
        dropout=0.1,
        recurrent_dropout=0.2,
        lstm_options={"unit_forget_bias": False, "dropout": 0.3},
    )
    lstms = [layer.forward_layer for layer in backbone.lstm_layers] + [
        layer.backward_layer for layer in backbone.lstm_layers
    ]
    for lstm in lstms:
        assert lstm.unit_forget_bias is False
        assert lstm.dropout == 0.3  # lstm_options win over the shorthand
        assert lstm.recurrent_dropout == 0.2
    assert [lstm.return_sequences for lstm in lstms] == [True, False] * 2


def test_config_round_trip_gives_same_outputs(rng):
    backbone = LSTMBackbone(units=H, num_layers=2, bidirectional=True, seed=3)
    x, mask = padded_batch(rng)
    expected = backbone(x, mask=mask)
    config = keras.saving.serialize_keras_object(backbone)
    restored = keras.saving.deserialize_keras_object(config)
    restored(x, mask=mask)
    restored.set_weights(backbone.get_weights())
    assert restored.get_config() == backbone.get_config()
    np.testing.assert_allclose(restored(x, mask=mask), expected, atol=1e-6)


def test_loads_when_every_object_shares_one_address(rng, tmp_path, monkeypatch):
    # Inside `load_model`, `keras.saving` tells shared objects by `id()`, and
    # `Bidirectional` serializes the layer it wraps twice. An object freed at
    # the address a new layer then takes used to hand the backward layer a
    # wrong object. A constant `id()` is that address reuse at every step.
    from lstm_keras.compat import keras_serialization_lib

    inputs = keras.Input((T, D))
    outputs = LSTMBackbone(units=H, num_layers=2, bidirectional=True)(inputs)
    model = keras.Model(inputs, outputs)
    x, _ = padded_batch(rng)
    path = str(tmp_path / "backbone.keras")
    model.save(path)
    monkeypatch.setattr(
        keras_serialization_lib, "id", lambda obj: 1, raising=False
    )
    restored = keras.models.load_model(path)
    monkeypatch.undo()
    for wrapper in restored.layers[1].lstm_layers:
        assert not wrapper.forward_layer.go_backwards
        assert wrapper.backward_layer.go_backwards
    np.testing.assert_array_equal(restored(x), model(x))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_layers": 0}, "num_layers"),
        ({"num_layers": 1.5}, "num_layers"),
        ({"lstm_options": ["use_bias"]}, "lstm_options"),
        ({"units": -2}, "units"),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        LSTMBackbone(**kwargs)


@pytest.mark.parametrize(
    "module",
    [backbone_module, sentiment_module, speech_module],
    ids=lambda m: m.__name__,
)
def test_docstring_examples(module):
    globs = {**vars(module), "np": np, "tf": tf, "keras": keras}
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, globs=globs) if t.examples]
    assert tests, f"{module.__name__} has no examples"
    for test in tests:
        runner.run(test)
    assert runner.failures == 0
