"""Exported signatures under TF Serving's batcher: each row's answer when
requests of different lengths are padded to one length and merged."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from sample_inputs import RATE
from sample_inputs import tones

import lstm_keras
from lstm_keras import export
from lstm_keras.applications import SpeechClassifier

pytestmark = pytest.mark.tensorflow_only

# Around the frame boundaries (frame_length 256, frame_step 128), down to a
# single sample.
LENGTHS = [3000, 1200, 257, 256, 129, 128, 1]


def tf_serving_batch(requests):
    """The tensor TF Serving's batcher feeds for these requests.

    With `pad_variable_length_inputs: true`, each request's tensor is padded
    at the end of every axis but the first to the batch's largest size,
    with the request's own first value (`T pad_value(input.flat<T>()(0))`
    in `PadTensor`, tensorflow_serving/batching/batching_util.cc), then the
    requests are concatenated along the batch axis.
    """
    shape = np.max([request.shape for request in requests], axis=0)
    return np.concatenate(
        [
            np.pad(
                request,
                [(0, 0)]
                + [
                    (0, n - m)
                    for n, m in zip(shape[1:], request.shape[1:], strict=True)
                ],
                constant_values=request.flat[0],
            )
            for request in requests
        ]
    )


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """`(model, serving_default)` of a tiny exported `SpeechClassifier`."""
    keras.utils.set_random_seed(0)
    model = SpeechClassifier(
        ["a", "b", "c"], sample_rate=RATE, units=6, num_mel_bins=16, seed=0
    )
    model.adapt(tones([4000, 3000, 2000, 1000], seed=1))
    model.get_layer("probabilities").bias.assign([0.2, -0.1, 0.5])
    path = export.export_for_serving(
        model,
        tmp_path_factory.mktemp("models") / "speech",
        litert_signature=False,
        verbose=False,
    )
    signature = tf.saved_model.load(path).signatures["serving_default"]

    def serve(waveform):
        outputs = signature(waveform=tf.constant(waveform))
        return outputs["probabilities"].numpy()

    return model, serve


def test_speech_rows_zero_padded_at_the_end_keep_their_answer(speech):
    model, serve = speech
    clips = tones(LENGTHS, seed=2)
    alone = np.concatenate(
        [serve(clip[None, :n]) for clip, n in zip(clips, LENGTHS, strict=True)]
    )
    # The reference: Keras on each unpadded clip.
    keras_alone = np.concatenate(
        [
            model(clip[None, :n], training=False)
            for clip, n in zip(clips, LENGTHS, strict=True)
        ]
    )
    np.testing.assert_allclose(alone, keras_alone, atol=1e-5)
    np.testing.assert_allclose(serve(clips), alone, atol=1e-5)
    # Past the longest clip too, by a length that is no multiple of a frame.
    padded = np.pad(clips, [(0, 0), (0, 700)])
    np.testing.assert_allclose(serve(padded), alone, atol=1e-5)
    # The clips differ, so equal rows would be no evidence.
    assert np.abs(alone - alone[:1]).max() > 1e-3


def test_speech_under_tf_serving_padding(speech):
    _, serve = speech
    clips = tones(LENGTHS, seed=4)
    requests = [clip[None, :n] for clip, n in zip(clips, LENGTHS, strict=True)]
    assert all(request[0, 0] != 0 for request in requests)
    alone = np.concatenate([serve(request) for request in requests])
    # Padded with each request's nonzero first sample, a clip has a
    # constant tail that the model takes for sound: the padded rows change.
    merged = serve(tf_serving_batch(requests))
    np.testing.assert_allclose(merged[0], alone[0], atol=1e-5)  # unpadded
    assert np.abs(merged[1:] - alone[1:]).max(axis=1).min() > 1e-2
    # With a first sample of 0.0 the padding is zeros: every row keeps the
    # answer it has alone.
    starting_at_zero = [np.pad(r, [(0, 0), (1, 0)]) for r in requests]
    alone = np.concatenate([serve(request) for request in starting_at_zero])
    merged = serve(tf_serving_batch(starting_at_zero))
    np.testing.assert_allclose(merged, alone, atol=1e-5)


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    """`(model, serve)` of a Keras model with `Masking`, `model.export`ed."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((None, 3)),
            keras.layers.Masking(0.0),
            lstm_keras.LSTM(8),
            keras.layers.Dense(2),
        ]
    )
    path = str(tmp_path_factory.mktemp("models") / "masked")
    model.export(path, verbose=False)
    signature = tf.saved_model.load(path).signatures["serving_default"]
    (input_name,) = signature.structured_input_signature[1]
    (output_name,) = signature.structured_outputs

    def serve(inputs):
        outputs = signature(**{input_name: tf.constant(inputs)})
        return outputs[output_name].numpy()

    return model, serve


def sequences(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(1, n, 3)).astype("float32") for n in lengths]


def test_masked_rows_zero_padded_at_the_end_keep_their_answer(masked):
    model, serve = masked
    lengths = [7, 3, 1, 5, 7]
    requests = sequences(lengths)
    alone = np.concatenate([serve(request) for request in requests])
    keras_alone = np.concatenate(
        [model(request, training=False) for request in requests]
    )
    np.testing.assert_allclose(alone, keras_alone, atol=1e-5)
    padded = np.zeros((len(lengths), 9, 3), "float32")
    for row, request in enumerate(requests):
        padded[row, : request.shape[1]] = request[0]
    np.testing.assert_allclose(serve(padded), alone, atol=1e-5)
    assert np.abs(alone - alone[:1]).max() > 1e-3


def test_masked_rows_under_tf_serving_padding(masked):
    _, serve = masked
    requests = sequences([7, 3, 1, 5], seed=1)
    alone = np.concatenate([serve(request) for request in requests])
    # Padded with the first feature of each request's first step, the
    # padded steps are not all zero, so not masked: the padded rows change.
    merged = serve(tf_serving_batch(requests))
    np.testing.assert_allclose(merged[0], alone[0], atol=1e-5)  # unpadded
    assert np.abs(merged[1:] - alone[1:]).max(axis=1).min() > 1e-3
    # Led by an all-zero step (masked: the same answer as without it), a
    # request is padded with zeros, and every row keeps its answer.
    led = [np.pad(r, [(0, 0), (1, 0), (0, 0)]) for r in requests]
    led_alone = np.concatenate([serve(request) for request in led])
    np.testing.assert_allclose(led_alone, alone, atol=1e-5)
    np.testing.assert_allclose(serve(tf_serving_batch(led)), alone, atol=1e-5)
