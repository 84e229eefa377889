"""`SpeechClassifier`: raw waveforms in, padding-proof probabilities out."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from sample_inputs import RATE
from sample_inputs import tones

import lstm_keras  # noqa: F401  (registers the serializable classes)
from lstm_keras.applications import DEFAULT_OPTIONS
from lstm_keras.applications import SpeechClassifier
from lstm_keras.applications import build_classifier
from lstm_keras.applications import pipelines
from lstm_keras.datasets import files

pytestmark = pytest.mark.tensorflow_only

DATA = os.environ.get(
    "LSTM_KERAS_SHARED_DATA",
    os.path.join(
        os.path.dirname(__file__), os.pardir, os.pardir, "shared", "data"
    ),
)
FSDD = os.path.join(DATA, "fsdd", "recordings")
needs_fsdd = pytest.mark.skipif(
    not os.path.isdir(FSDD),
    reason=f"FSDD not found under {FSDD} (set LSTM_KERAS_SHARED_DATA)",
)


def small_model(**kwargs):
    options = dict(units=6, num_mel_bins=16, seed=0)
    model = SpeechClassifier(
        ["a", "b", "c"], sample_rate=RATE, **{**options, **kwargs}
    )
    model.adapt(tones([4000, 3000, 2000, 1000], seed=1))
    model.get_layer("probabilities").bias.assign([0.2, -0.1, 0.5])
    return model


def softmax(z):
    z = np.exp(z - np.max(z))
    return z / z.sum()


def test_probabilities_do_not_depend_on_end_padding():
    model = small_model()
    clips = tones([3000, 1200])
    alone = model.predict(clips[1:, :1200], verbose=0)
    padded = model.predict(clips, verbose=0)
    much_padded = model.predict(np.pad(clips, [(0, 0), (0, 9000)]), verbose=0)
    np.testing.assert_allclose(padded[1], alone[0], atol=1e-5)
    np.testing.assert_allclose(much_padded, padded, atol=1e-5)
    np.testing.assert_allclose(padded.sum(axis=1), 1.0, atol=1e-6)


def test_adapt_normalizes_real_frames_only():
    model = small_model()
    clips = tones([4000, 3000, 2000, 1000], seed=1)
    # Reference: the log-mel frames of each unpadded clip.
    frames = []
    for clip in clips:
        length = int(np.max(np.nonzero(clip)[0])) + 1
        features = model.log_mel(clip[None, :length])[0].numpy()
        frames.append(features[: -(-length // model.log_mel.frame_step)])
    frames = np.concatenate(frames)
    np.testing.assert_allclose(
        np.squeeze(model.normalizer.mean), frames.mean(axis=0), atol=1e-3
    )
    np.testing.assert_allclose(
        np.squeeze(model.normalizer.variance), frames.var(axis=0), rtol=1e-3
    )


def test_silent_and_very_short_clips_give_valid_probabilities():
    model = small_model()
    clips = np.zeros((3, 2000), "float32")
    clips[1, :30] = tones([30])[0]  # shorter than one frame
    clips[2] = tones([2000])[0]
    probabilities = model.predict(clips, verbose=0)
    assert np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    # Silence has no real frame: the head on the zero state, softmax(bias).
    expected = softmax(np.array([0.2, -0.1, 0.5]))
    np.testing.assert_allclose(probabilities[0], expected, atol=1e-6)


def test_nan_waveform_raises_naming_the_input():
    model = small_model()
    clips = tones([1000, 1000])
    clips[0, 10] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="waveforms"):
        model.predict(clips, verbose=0)


@pytest.mark.parametrize("shape", [(1000,), (2, 1000, 2), (2, 1, 1000, 1)])
def test_wrong_rank_raises_naming_the_input(shape):
    model = small_model()
    with pytest.raises(ValueError, match="waveforms"):
        model(np.zeros(shape, "float32"))


def test_augmentation_acts_in_fit_only():
    model = small_model()
    clips = tones([2000, 1500])
    inference = model(clips, training=False)
    np.testing.assert_allclose(
        model.predict(clips, verbose=0), inference, atol=1e-6
    )
    assert not np.allclose(model(clips, training=True), inference, atol=1e-4)
    plain = small_model(augment=False)
    assert "augmentation" not in [layer.name for layer in plain.layers]


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    model = small_model(bidirectional=True)
    model.compile()
    clips = tones([3000, 2000, 1000])
    model.fit(clips, np.array([0, 1, 2]), epochs=1, verbose=0)
    expected = model.predict(clips, verbose=0)
    path = str(tmp_path / "speech.keras")
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    assert isinstance(restored, SpeechClassifier)
    assert restored.sample_rate == RATE
    assert restored.class_names == ["a", "b", "c"]
    assert restored.get_config() == model.get_config()
    np.testing.assert_array_equal(restored.predict(clips, verbose=0), expected)


def test_export_serves_the_same_probabilities(tmp_path):
    model = small_model()
    clips = tones([3000, 2000])
    path = str(tmp_path / "exported")
    model.export(path, verbose=False)
    # The artifact runs without lstm_keras: no fast-path custom op in it.
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        assert b"LstmKeras" not in f.read()
    exported = tf.saved_model.load(path)
    np.testing.assert_allclose(
        exported.serve(clips), model.predict(clips, verbose=0), atol=1e-5
    )


def test_build_classifier_and_default_options():
    model = build_classifier(
        "speech", class_names=list("0123456789"), sample_rate=RATE, units=4
    )
    assert isinstance(model, SpeechClassifier)
    assert model.sample_rate == RATE
    assert set(DEFAULT_OPTIONS["speech"]) == (
        set(model.get_config())
        - {"name", "trainable", "class_names", "sample_rate"}
    )
    with pytest.raises(ValueError, match="sample_rate"):
        build_classifier("speech", class_names=["a", "b"])


def clips_dataset(rows):
    waveforms = tf.RaggedTensor.from_row_lengths(
        np.concatenate([x for x, _ in rows]), [len(x) for x, _ in rows]
    )
    labels = np.array([label for _, label in rows], "int64")
    ds = tf.data.Dataset.from_tensor_slices((waveforms, labels))
    # Ragged slices come as ragged scalars; a map makes them plain tensors.
    return ds.map(lambda x, y: (tf.convert_to_tensor(x), y))


@needs_fsdd
def test_learns_digits_from_a_slice_of_fsdd():
    # Two speakers, recordings 5-24 to train, 0-4 to test: chance is 0.1;
    # measured 0.95-0.97 (two seeds).
    train, test = [], []
    for name in sorted(os.listdir(FSDD)):
        clip = files.parse_fsdd_name(name)
        if (
            clip is None
            or clip[1] not in ("jackson", "nicolas")
            or clip[2] >= 25
        ):
            continue
        waveform, _ = files.read_wav(os.path.join(FSDD, name), RATE)
        (train if clip[2] >= 5 else test).append((waveform, clip[0]))
    train, test = clips_dataset(train), clips_dataset(test)
    digits = [str(d) for d in range(10)]
    model = SpeechClassifier(digits, sample_rate=RATE, units=32, seed=0)
    model.adapt(train)
    model.compile()
    model.fit(
        pipelines.training_stream(
            train, 400, "audio", batch_size=32, seed=0, start_epoch=0,
            epochs=12,
        ),
        epochs=12,
        steps_per_epoch=pipelines.steps_per_epoch(400, 32),
        verbose=0,
    )  # fmt: skip
    _, accuracy = model.evaluate(test.padded_batch(50), verbose=0)
    assert accuracy > 0.8


def test_spectrogram_masking_trains_only_and_round_trips(tmp_path):
    # Waveform augmentation that changes nothing, to see the masks alone.
    still = dict(
        max_shift_seconds=0.0,
        max_gain_db=0.0,
        noise_stddev=0.0,
        max_speed_change=0.0,
    )
    masked = small_model(frequency_masks=2, time_masks=2, **still)
    plain = small_model(**still)
    assert "masking" in [layer.name for layer in masked.layers]
    assert "masking" not in [layer.name for layer in plain.layers]
    plain.set_weights(masked.get_weights())
    clips = tones([3000, 1200], seed=2)
    # Inference skips the masks: the same answers as without them.
    np.testing.assert_allclose(
        masked.predict(clips, verbose=0),
        plain.predict(clips, verbose=0),
        atol=1e-6,
    )
    # Training draws them: the backbone sees other features.
    sub = keras.Model(masked.input, masked.get_layer("masking").output)
    before = keras.Model(
        masked.input, masked.get_layer("clip_normalization").output
    )
    assert np.any(sub(clips, training=True).numpy() != before(clips).numpy())
    path = tmp_path / "masked.keras"
    masked.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("masking").get_config()["time_masks"] == 2
    np.testing.assert_allclose(
        loaded.predict(clips, verbose=0),
        masked.predict(clips, verbose=0),
        atol=1e-6,
    )
    # `augment=False` turns every augmentation off, masks included.
    bare = small_model(augment=False, frequency_masks=2, time_masks=2)
    assert "masking" not in [layer.name for layer in bare.layers]
