"""Every public layer and model passes the shared checks of `harness.py`.

Config round trip, `.keras` reload in safe mode, symbolic against eager
shapes and a training step, for `lstm_keras.LSTM` and its variants on every
backend, and for the applications' layers and models on TensorFlow.
"""

import inspect

import keras
import numpy as np
import pytest
from harness import run_layer_test
from harness import run_model_test
from sample_inputs import RATE
from sample_inputs import TEXTS
from sample_inputs import tones

import lstm_keras
from lstm_keras import long_range

BACKEND = keras.backend.backend()
BATCH, STEPS, FEATURES, UNITS = 2, 5, 3, 4
MIXED = ("mixed_float16", "mixed_bfloat16")


def sequences():
    rng = np.random.default_rng(0)
    return rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")


# Each case: the public class it covers, the arguments of `run_layer_test`.
LSTM_CASES = {
    "plain": dict(
        init_kwargs={"units": UNITS},
        expected_output_shape=(BATCH, UNITS),
        expected_num_trainable_weights=3,
        mixed_precision_policies=MIXED,
    ),
    "sequences_and_states": dict(
        init_kwargs={
            "units": UNITS,
            "return_sequences": True,
            "return_state": True,
        },
        expected_output_shape=[
            (BATCH, STEPS, UNITS),
            (BATCH, UNITS),
            (BATCH, UNITS),
        ],
    ),
    "go_backwards": dict(
        init_kwargs={"units": UNITS, "go_backwards": True},
        expected_output_shape=(BATCH, UNITS),
    ),
    "peepholes": dict(
        init_kwargs={"units": UNITS, "use_peepholes": True},
        expected_output_shape=(BATCH, UNITS),
        expected_num_trainable_weights=6,
    ),
    "layer_norm": dict(
        init_kwargs={"units": UNITS, "layer_norm": True},
        expected_output_shape=(BATCH, UNITS),
        expected_num_trainable_weights=6,
    ),
    "projection": dict(
        init_kwargs={"units": UNITS, "projection_units": 2},
        expected_output_shape=(BATCH, 2),
        expected_num_trainable_weights=4,
    ),
    "all_variants": dict(
        init_kwargs={
            "units": UNITS,
            "use_peepholes": True,
            "layer_norm": True,
            "projection_units": 2,
            "return_sequences": True,
        },
        expected_output_shape=(BATCH, STEPS, 2),
        expected_num_trainable_weights=10,
        mixed_precision_policies=MIXED,
    ),
}


@pytest.mark.parametrize("case", sorted(LSTM_CASES))
def test_lstm(case, tmp_path):
    run_layer_test(
        lstm_keras.LSTM,
        input_data=sequences(),
        tmp_path=tmp_path,
        **LSTM_CASES[case],
    )


def test_lstm_cell_in_keras_rnn(tmp_path):
    run_layer_test(
        keras.layers.RNN,
        {"cell": lstm_keras.LSTMCell(UNITS, use_peepholes=True)},
        sequences(),
        (BATCH, UNITS),
        tmp_path,
        expected_num_trainable_weights=6,
    )


def test_bidirectional_lstm(tmp_path):
    run_layer_test(
        keras.layers.Bidirectional,
        {"layer": lstm_keras.LSTM(UNITS, layer_norm=True)},
        sequences(),
        (BATCH, 2 * UNITS),
        tmp_path,
        expected_num_trainable_weights=12,
        mixed_precision_policies=("mixed_bfloat16",),
    )


# === Applications (TensorFlow) ===


def _applications():
    from lstm_keras import applications

    return applications


def _tf():
    import tensorflow as tf

    return tf


def _clips():
    return tones([400, 300], samples=400)


APPLICATION_LAYER_CASES = {
    "LSTMBackbone": lambda: dict(
        init_kwargs={"units": UNITS, "num_layers": 2, "bidirectional": True},
        input_data=sequences(),
        expected_output_shape=(BATCH, 2 * UNITS),
        expected_num_trainable_weights=12,
    ),
    "MaxPoolingBackbone": lambda: dict(
        init_kwargs={"units": UNITS, "bidirectional": True},
        input_data=sequences(),
        expected_output_shape=(BATCH, 2 * UNITS),
        expected_num_trainable_weights=6,
    ),
    "SubwordEmbedding": lambda: dict(
        init_kwargs={"num_buckets": 50, "output_dim": UNITS, "max_length": 8},
        input_data=[
            _tf().constant(["a fine film", "dull"]),
            _tf().constant([[2, 3, 4], [5, 0, 0]]),
        ],
        expected_output_shape=(BATCH, 3, UNITS),
        expected_num_trainable_weights=1,
    ),
    "TextStandardization": lambda: dict(
        init_kwargs={"strip_punctuation": True},
        input_data=_tf().constant(["A Fine, FILM!", "dull"]),
        expected_output_shape=(BATCH,),
    ),
    "FitLength": lambda: dict(
        init_kwargs={"max_length": 4},
        input_data=np.arange(12, dtype="int32").reshape(BATCH, 6),
        expected_output_shape=(BATCH, 4),
    ),
    "LogMelSpectrogram": lambda: dict(
        init_kwargs={
            "sample_rate": RATE,
            "frame_length": 64,
            "frame_step": 32,
            "num_mel_bins": 8,
        },
        input_data=_clips(),
        expected_output_shape=(BATCH, 400 // 32 + 1, 8),
    ),
    "ClipMeanNormalization": lambda: dict(
        init_kwargs={},
        input_data=sequences(),
        expected_output_shape=(BATCH, STEPS, FEATURES),
    ),
    "WaveformAugmentation": lambda: dict(
        init_kwargs={"sample_rate": RATE, "seed": 0},
        input_data=_clips(),
        expected_output_shape=(BATCH, 400),
        # A training call delays each clip by a random shift.
        unknown_symbolic_dims=True,
    ),
    "SpectrogramMasking": lambda: dict(
        init_kwargs={"seed": 0},
        input_data=sequences(),
        expected_output_shape=(BATCH, STEPS, FEATURES),
    ),
    "MemberAverage": lambda: dict(
        init_kwargs={},
        input_data=[
            np.full((BATCH, 3), 0.2, "float32"),
            np.full((BATCH, 3), 0.4, "float32"),
        ],
        expected_output_shape=(BATCH, 3),
    ),
}


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("name", sorted(APPLICATION_LAYER_CASES))
def test_application_layer(name, tmp_path):
    layer_cls = getattr(_applications(), name)
    run_layer_test(
        layer_cls, tmp_path=tmp_path, **APPLICATION_LAYER_CASES[name]()
    )


def _adapted(model_cls, data):
    def rebuild(config):
        model = model_cls.from_config(config)
        model.adapt(data)
        return model

    return rebuild


@pytest.mark.tensorflow_only
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"pooling": "last", "num_members": 2, "subword_buckets": 0},
    ],
    ids=["max_pooling_subwords", "last_state_ensemble"],
)
def test_sentiment_classifier(options, tmp_path):
    cls = _applications().SentimentClassifier
    kwargs = dict(
        vocabulary_size=100,
        subword_buckets=50,
        embedding_dim=UNITS,
        units=UNITS,
        max_length=8,
        seed=0,
    )
    rebuild = _adapted(cls, TEXTS)
    model = rebuild(cls(**{**kwargs, **options}).get_config())
    labels = np.array([1, 0, 1, 0, 0, 1])
    run_model_test(model, _tf().constant(TEXTS), labels, tmp_path, rebuild)


@pytest.mark.tensorflow_only
def test_speech_classifier(tmp_path):
    cls = _applications().SpeechClassifier
    clips = tones([4000, 3000, 2000, 1000], seed=1)
    rebuild = _adapted(cls, clips)
    model = rebuild(
        cls(
            ["a", "b", "c"], RATE, units=UNITS, num_mel_bins=8, seed=0
        ).get_config()
    )
    labels = np.array([0, 1, 2, 0])
    run_model_test(model, clips, labels, tmp_path, rebuild)


# === Coverage and registration ===


def _public_classes():
    """The Keras objects a user can name: layers, models, optimizers and
    initializers among the public names."""
    namespaces = [lstm_keras, long_range]
    if BACKEND == "tensorflow":
        namespaces.append(_applications())
    bases = (
        keras.layers.Layer,
        keras.optimizers.Optimizer,
        keras.initializers.Initializer,
    )
    found = {}
    for namespace in namespaces:
        names = getattr(namespace, "__all__", None) or [
            name
            for name, value in vars(namespace).items()
            if inspect.isclass(value) and value.__module__ == namespace.__name__
        ]
        for name in names:
            value = getattr(namespace, name)
            if inspect.isclass(value) and issubclass(value, bases):
                found[name] = value
    return found


def test_every_public_layer_and_model_has_a_harness_test():
    layers = {
        name
        for name, cls in _public_classes().items()
        if issubclass(cls, keras.layers.Layer)
    }
    covered = {"LSTM", "LSTMCell", "SentimentClassifier", "SpeechClassifier"}
    covered |= set(APPLICATION_LAYER_CASES)
    missing = sorted(layers - covered)
    assert not missing, f"public classes without a harness test: {missing}"


@pytest.mark.parametrize("name", sorted(_public_classes()))
def test_public_class_is_registered_serializable(name):
    cls = _public_classes()[name]
    registered = keras.saving.get_registered_name(cls)
    assert registered.startswith("lstm_keras>"), registered
    assert keras.saving.get_registered_object(registered) is cls
