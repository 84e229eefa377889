"""Both applications take the LSTM variants through `lstm_options`."""

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow_only

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402

import lstm_keras  # noqa: E402
from lstm_keras.applications import SentimentClassifier  # noqa: E402
from lstm_keras.applications import SpeechClassifier  # noqa: E402

VARIANTS = {"use_peepholes": True, "layer_norm": True, "projection_units": 3}
TEXTS = ["a gem of a film", "a dull , tired mess", "not bad", ""]
RATE = 8000


def waveforms():
    rng = np.random.default_rng(0)
    batch = np.zeros((3, 3000), "float32")
    for row, length in enumerate([3000, 2000, 900]):
        batch[row, :length] = rng.uniform(-0.5, 0.5, size=length)
    return batch


def sentiment_model():
    model = SentimentClassifier(
        units=5, embedding_dim=4, max_length=8, seed=0, lstm_options=VARIANTS
    )
    model.adapt(tf.constant(TEXTS))
    return model, tf.constant(TEXTS), np.array([1, 0, 1, 0])


def speech_model():
    model = SpeechClassifier(
        ["a", "b"],
        sample_rate=RATE,
        units=5,
        num_mel_bins=8,
        seed=0,
        lstm_options=VARIANTS,
    )
    inputs = waveforms()
    model.adapt(inputs)
    return model, inputs, np.array([0, 1, 1])


def lstm_layers(model):
    return [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, lstm_keras.LSTM)
    ]


@pytest.mark.parametrize("build", [sentiment_model, speech_model])
def test_variants_train_save_and_export(build, tmp_path):
    model, inputs, labels = build()
    layers = lstm_layers(model)
    assert layers, "the application holds no lstm_keras.LSTM"
    for layer in layers:
        assert layer.use_peepholes and layer.layer_norm
        assert layer.projection_units == 3
        # The projection shrinks h (and the recurrent kernel) to 3 features.
        assert tuple(layer.cell.recurrent_kernel.shape) == (3, 4 * 5)

    model.compile()
    before = [w.copy() for w in layers[0].cell.get_weights()]
    model.fit(inputs, labels, epochs=1, batch_size=len(labels), verbose=0)
    after = layers[0].cell.get_weights()
    names = [w.name for w in layers[0].cell.weights]
    changed = {
        name
        for name, old, new in zip(names, before, after, strict=True)
        if not np.allclose(old, new)
    }
    # Every variant weight learns.
    assert {"input_peephole", "gate_norm_gamma", "projection_kernel"} <= (
        changed
    )
    expected = model.predict(inputs, verbose=0)

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        loaded.predict(inputs, verbose=0), expected, atol=1e-6
    )

    model.export(str(tmp_path / "serving"))
    # Keep the loaded object: its variables die with it.
    reloaded = tf.saved_model.load(str(tmp_path / "serving"))
    served = reloaded.serve(inputs)
    np.testing.assert_allclose(np.asarray(served), expected, atol=1e-5)
