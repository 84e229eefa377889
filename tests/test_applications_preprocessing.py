"""The applications' input layers against `tf.signal`, NumPy and their spec."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_keras.applications import ClipMeanNormalization
from lstm_keras.applications import FitLength
from lstm_keras.applications import LogMelSpectrogram
from lstm_keras.applications import SpectrogramMasking
from lstm_keras.applications import TextStandardization
from lstm_keras.applications import WaveformAugmentation
from lstm_keras.applications.preprocessing import mel_weight_matrix
from lstm_keras.applications.preprocessing import waveform_lengths

pytestmark = pytest.mark.tensorflow_only

RATE = 8000


def clips_batch(rng, lengths, samples=None):
    """Random clips of `lengths`, zero-padded at the end to `samples`."""
    samples = samples or max(lengths)
    batch = np.zeros((len(lengths), samples), "float32")
    for row, length in enumerate(lengths):
        batch[row, :length] = rng.uniform(-0.5, 0.5, length)
    return batch


# Text.


def test_standardization_repairs_utf8_and_lowercases():
    layer = TextStandardization()
    text = tf.constant([b"GOOD \xff\xfe film", "ÉCOLE".encode(), b""])
    result = layer(text).numpy()
    assert result[0].decode("utf-8") == "good \ufffd\ufffd film"
    assert result[1].decode("utf-8") == "école"
    assert result[2] == b""


def test_standardization_strips_punctuation_when_asked():
    layer = TextStandardization(strip_punctuation=True)
    result = layer(tf.constant(["it 's great , really !"])).numpy()[0]
    assert result.decode().split() == ["it", "s", "great", "really"]


def test_fit_length_truncates_and_keeps_one_step():
    layer = FitLength(3)
    ids = np.array([[5, 6, 7, 8, 9], [5, 0, 0, 0, 0]])
    np.testing.assert_array_equal(layer(ids), [[5, 6, 7], [5, 0, 0]])
    empty = np.zeros((2, 0), "int64")
    np.testing.assert_array_equal(layer(empty), [[0], [0]])
    np.testing.assert_array_equal(layer(ids[:, :1]), [[5, 0], [5, 0]])
    with pytest.raises(ValueError, match="max_length"):
        FitLength(0)


# Speech features.


def test_mel_weights_match_tf_signal():
    expected = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=40,
        num_spectrogram_bins=129,
        sample_rate=RATE,
        lower_edge_hertz=20.0,
        upper_edge_hertz=4000.0,
    )
    actual = mel_weight_matrix(40, 129, RATE, 20.0, 4000.0)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_waveform_lengths_find_last_nonzero_sample(rng):
    batch = clips_batch(rng, [10, 3, 7])
    batch[0, 5] = 0.0  # an inner zero does not end the clip
    zeros = np.zeros((1, 10), "float32")
    lengths = waveform_lengths(np.concatenate([batch, zeros]))
    np.testing.assert_array_equal(lengths, [10, 3, 7, 0])


def test_log_mel_matches_tf_signal_and_masks_padding(rng):
    layer = LogMelSpectrogram(RATE, frame_length=64, frame_step=32)
    lengths = [300, 100, 40, 20]
    batch = clips_batch(rng, lengths, samples=320)
    features = layer(batch).numpy()
    mask = layer.compute_mask(batch).numpy()
    assert features.shape == (4, 320 // 32 + 1, 40)
    weights = tf.signal.linear_to_mel_weight_matrix(40, 33, RATE, 20.0, 4000.0)
    for row, length in enumerate(lengths):
        # Reference: the unpadded clip alone, framed by tf.signal.
        clip = np.pad(batch[row, :length], (0, 64))
        stft = tf.signal.stft(clip, 64, 32, 64, window_fn=tf.signal.hann_window)
        expected = np.log(
            np.matmul(np.abs(stft.numpy()) ** 2, weights.numpy()) + 1e-6
        )
        real_frames = -(-length // 32)  # frames starting inside the clip
        np.testing.assert_array_equal(mask[row, :real_frames], True)
        np.testing.assert_array_equal(mask[row, real_frames:], False)
        np.testing.assert_allclose(
            features[row, :real_frames], expected[:real_frames], atol=2e-3
        )


def test_log_mel_of_clip_shorter_than_a_frame_and_of_silence(rng):
    layer = LogMelSpectrogram(RATE, frame_length=64, frame_step=32)
    batch = clips_batch(rng, [10, 0], samples=10)
    features = layer(batch).numpy()
    np.testing.assert_array_equal(layer.compute_mask(batch), [[True], [False]])
    assert np.all(np.isfinite(features))


def test_log_mel_rejects_nan_and_wrong_rank(rng):
    layer = LogMelSpectrogram(RATE)
    batch = clips_batch(rng, [400, 300])
    batch[1, 5] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="waveforms"):
        layer(batch)
    with pytest.raises(ValueError, match="waveforms.*rank 2"):
        layer(batch[:, :, None])
    with pytest.raises(ValueError, match="fft_length"):
        LogMelSpectrogram(RATE, frame_length=256, fft_length=128)
    with pytest.raises(ValueError, match="upper_hertz"):
        LogMelSpectrogram(RATE, upper_hertz=5000)


def test_log_mel_config_round_trip():
    layer = LogMelSpectrogram(RATE, frame_length=200, frame_step=80)
    restored = LogMelSpectrogram.from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()


def test_clip_mean_normalization_centres_real_frames(rng):
    features = rng.normal(size=(3, 5, 4)).astype("float32") + 3.0
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], bool)
    centred = ClipMeanNormalization()(features, mask=mask).numpy()
    for row in range(2):
        real = features[row, mask[row]]
        np.testing.assert_allclose(
            centred[row], features[row] - real.mean(axis=0), atol=1e-5
        )
    np.testing.assert_array_equal(centred[2], features[2])


# Augmentation.


def test_augmentation_is_identity_at_inference(rng):
    layer = WaveformAugmentation(RATE, seed=1)
    batch = clips_batch(rng, [800, 300])
    np.testing.assert_array_equal(layer(batch), batch)
    np.testing.assert_array_equal(layer(batch, training=False), batch)


def test_delay_prepends_zeros(rng):
    layer = WaveformAugmentation(
        RATE,
        max_shift_seconds=0.01,
        max_gain_db=0.0,
        noise_stddev=0.0,
        max_speed_change=0.0,
        seed=2,
    )
    batch = clips_batch(rng, [800, 300])
    shifted = layer(batch, training=True).numpy()
    max_shift = 80
    assert shifted.shape == (2, 800 + max_shift)
    delays = []
    for row in range(2):
        delay = int(np.argmax(shifted[row] != 0))
        delays.append(delay)
        expected = np.pad(batch[row], (delay, max_shift - delay))
        np.testing.assert_array_equal(shifted[row], expected)
    assert all(0 <= d <= max_shift for d in delays)


def test_gain_and_noise_stay_inside_real_length(rng):
    layer = WaveformAugmentation(
        RATE,
        max_shift_seconds=0.0,
        max_gain_db=6.0,
        noise_stddev=0.0,
        max_speed_change=0.0,
        seed=3,
    )
    batch = clips_batch(rng, [800, 300])
    gained = layer(batch, training=True).numpy()
    ratios = gained[:, :300] / batch[:, :300]
    np.testing.assert_allclose(
        ratios, ratios[:, :1] * np.ones((1, 300)), rtol=1e-5
    )
    assert np.all(np.abs(20 * np.log10(ratios[:, 0])) <= 6.0 + 1e-4)
    noisy = WaveformAugmentation(
        RATE,
        max_shift_seconds=0.0,
        max_gain_db=0.0,
        noise_stddev=0.05,
        max_speed_change=0.0,
        seed=4,
    )(batch, training=True).numpy()
    np.testing.assert_array_equal(noisy[1, 300:], 0.0)
    assert np.abs(noisy[:, :300] - batch[:, :300]).max() > 0


def test_speed_change_resamples_linearly(rng):
    layer = WaveformAugmentation(
        RATE,
        max_shift_seconds=0.0,
        max_gain_db=0.0,
        noise_stddev=0.0,
        max_speed_change=0.2,
        seed=5,
    )
    t = np.arange(1000) / RATE
    batch = np.sin(2 * np.pi * 100 * t)[None].astype("float32")
    resampled = layer(batch, training=True).numpy()[0]
    n = len(resampled)
    assert 1000 / 1.2 - 1 <= n <= 1000 / 0.8
    # Reference: NumPy's linear interpolation at t * factor, for the factors
    # that give this length (the drawn one is among them, to grid spacing).
    errors = [
        np.abs(
            resampled - np.interp(np.arange(n) * f, np.arange(1000), batch[0])
        ).max()
        for f in np.linspace(1000 / (n + 1), 1000 / n, 2001)
    ]
    assert min(errors) < 1e-3


def test_augmentation_inside_model_is_training_only(rng):
    inputs = keras.Input((None,))
    model = keras.Model(inputs, WaveformAugmentation(RATE, seed=6)(inputs))
    batch = clips_batch(rng, [500, 200])
    np.testing.assert_array_equal(model.predict(batch, verbose=0), batch)
    assert model(batch, training=True).shape[1] != batch.shape[1]


# Spectrogram masking.


def zero_runs(flags):
    """Lengths of the runs of True in a 1-D boolean array."""
    runs, length = [], 0
    for flag in list(flags) + [False]:
        if flag:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return runs


def test_masking_is_identity_at_inference(rng):
    layer = SpectrogramMasking(seed=0)
    features = rng.normal(size=(3, 20, 12)).astype("float32")
    np.testing.assert_array_equal(layer(features), features)
    np.testing.assert_array_equal(layer(features, training=False), features)


def test_masking_zeroes_whole_bands_and_spans_inside_real_frames(rng):
    # Features with no zero of their own: every zero is a mask's.
    features = rng.uniform(1.0, 2.0, size=(64, 30, 16)).astype("float32")
    lengths = rng.integers(5, 31, size=64)
    mask = np.arange(30)[None, :] < lengths[:, None]
    layer = SpectrogramMasking(
        frequency_masks=2,
        max_frequency_mask_bins=3,
        time_masks=2,
        max_time_mask_frames=4,
        seed=1,
    )
    out = layer(features, mask=mask, training=True).numpy()
    zero = out == 0
    np.testing.assert_array_equal(out[~zero], features[~zero])
    masked_bins = zero.all(axis=1)  # <bool>[batch, bins]
    masked_frames = zero.all(axis=2)  # <bool>[batch, frames]
    # Every zero lies in a masked band or a masked frame span.
    np.testing.assert_array_equal(
        zero, masked_bins[:, None, :] | masked_frames[:, :, None]
    )
    for row in range(64):
        bands = zero_runs(masked_bins[row])
        spans = zero_runs(masked_frames[row])
        # Two masks of width <= w cover at most 2 w cells, in <= 2 runs.
        assert len(bands) <= 2 and sum(bands) <= 6
        assert len(spans) <= 2 and sum(spans) <= 8
        # Time masks fall on real frames only.
        assert not masked_frames[row, lengths[row] :].any()
    # Widths are drawn from 0..max: over 64 clips some band is the widest.
    assert max(max(zero_runs(r), default=0) for r in masked_bins) >= 3
    assert masked_frames.any(axis=1).mean() > 0.5


def test_masking_passes_the_frame_mask_on(rng):
    # An LSTM behind the layer skips the padding as it does without it: at
    # inference the outputs match those of the same LSTM fed directly.
    inputs = keras.Input((None, 4))
    masked = keras.layers.Masking()(inputs)
    lstm = keras.layers.LSTM(3, seed=0)
    with_layer = keras.Model(inputs, lstm(SpectrogramMasking(seed=2)(masked)))
    direct = keras.Model(inputs, lstm(masked))
    unmasked = keras.Model(inputs, lstm(inputs))
    batch = rng.uniform(1.0, 2.0, size=(2, 6, 4)).astype("float32")
    batch[0, 3:] = 0.0
    expected = direct.predict(batch, verbose=0)
    np.testing.assert_allclose(
        with_layer.predict(batch, verbose=0), expected, atol=1e-6
    )
    assert np.abs(unmasked.predict(batch, verbose=0) - expected).max() > 1e-3


@pytest.mark.parametrize(
    "argument", ["frequency_masks", "max_time_mask_frames"]
)
def test_masking_rejects_negative_counts(argument):
    with pytest.raises(ValueError, match=argument):
        SpectrogramMasking(**{argument: -1})
