"""Layers that turn raw inputs into masked sequences for `LSTMBackbone`.

Text: `TextStandardization` (UTF-8 repair, lowercasing) and `FitLength`
(truncation to `max_length`) around Keras's `TextVectorization`. Speech:
`LogMelSpectrogram`, whose mask marks the frames of each clip's real audio,
so that end-zero-padding never reaches the LSTM, and, while training only,
`WaveformAugmentation` before it and `SpectrogramMasking` after it. The
layers run inside the models, on TensorFlow (string tensors and
`tf.debugging` checks need it).
"""

import functools

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from lstm_keras.backends.tensorflow import export_context

# Added to the mel power before the log, so that silence stays finite.
_LOG_OFFSET = 1e-6


@keras.saving.register_keras_serializable(package="lstm_keras")
class TextStandardization(keras.layers.Layer):
    """Repairs UTF-8, lowercases and optionally strips punctuation.

    Invalid UTF-8 byte sequences become U+FFFD (the replacement character),
    so any bytes give a defined token sequence instead of an error in the
    middle of `predict`. Control characters (U+0000-U+001F, U+007F-U+009F)
    and the Unicode line and paragraph separators become spaces: they are
    no part of a word, and a token holding one would break the saved model,
    whose vocabulary file is read back line by line with Python's
    `splitlines` (which also breaks at U+001C-U+001E, U+0085, U+2028 and
    U+2029).

    Args:
        lowercase: Boolean, lowercase the text (Unicode-aware). Defaults to
            `True`.
        strip_punctuation: Boolean, replace ASCII punctuation by spaces.
            Defaults to `False`.
        **kwargs: Base layer arguments.

    Call arguments:
        text: `tf.string` tensor of any shape.

    Returns:
        The standardized `tf.string` tensor, same shape.
    """

    def __init__(self, lowercase=True, strip_punctuation=False, **kwargs):
        super().__init__(**kwargs)
        self.lowercase = bool(lowercase)
        self.strip_punctuation = bool(strip_punctuation)

    def call(self, text):
        text = tf.strings.unicode_transcode(
            text,
            input_encoding="UTF-8",
            output_encoding="UTF-8",
            errors="replace",
            replacement_char=0xFFFD,
        )
        text = tf.strings.regex_replace(
            text, r"[\x00-\x1f\x7f-\x9f\x{2028}\x{2029}]", " "
        )
        if self.lowercase:
            text = tf.strings.lower(text, encoding="utf-8")
        if self.strip_punctuation:
            text = tf.strings.regex_replace(
                text, r"[!\"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~']", " "
            )
        return text

    def compute_output_spec(self, text):
        return keras.KerasTensor(text.shape, dtype="string")

    def get_config(self):
        config = {
            "lowercase": self.lowercase,
            "strip_punctuation": self.strip_punctuation,
        }
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="lstm_keras")
class FitLength(keras.layers.Layer):
    """Cuts token ids to `max_length` and guarantees at least one timestep.

    `TextVectorization` pads each batch to its longest text, so a batch of
    empty strings has zero timesteps, which no LSTM accepts. One padding id
    (0) is appended before cutting, which gives such a batch one fully
    masked step; the backbone then returns its initial state, zeros.

    Args:
        max_length: Positive integer, the most tokens kept (the first ones).
        **kwargs: Base layer arguments.

    Call arguments:
        token_ids: Integer tensor `(batch, timesteps)`, 0 for padding.

    Returns:
        Integer tensor `(batch, min(timesteps + 1, max_length))`.
    """

    def __init__(self, max_length, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("max_length", max_length)
        self.max_length = max_length

    def call(self, token_ids):
        batch = ops.shape(token_ids)[0]
        padding = ops.zeros((batch, 1), dtype=token_ids.dtype)
        token_ids = ops.concatenate([token_ids, padding], axis=1)
        return token_ids[:, : self.max_length]

    def compute_output_shape(self, input_shape):
        steps = input_shape[1]
        if steps is not None:
            steps = min(steps + 1, self.max_length)
        return (input_shape[0], steps)

    def get_config(self):
        return {**super().get_config(), "max_length": self.max_length}


def mel_weight_matrix(
    num_mel_bins, num_spectrogram_bins, sample_rate, lower_hertz, upper_hertz
):
    """Triangular mel filters `[num_spectrogram_bins, num_mel_bins]` (HTK).

    The same filters as `tf.signal.linear_to_mel_weight_matrix`: mel(f) =
    1127 ln(1 + f / 700), triangles between equally spaced mel edges, and
    no weight on the DC bin.
    """

    def to_mel(hertz):
        return 1127.0 * np.log1p(np.asarray(hertz, "float64") / 700.0)

    bin_mels = to_mel(np.linspace(0.0, sample_rate / 2, num_spectrogram_bins))
    edges = np.linspace(
        to_mel(lower_hertz), to_mel(upper_hertz), num_mel_bins + 2
    )
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mels[:, None] - lower) / (center - lower)
    falling = (upper - bin_mels[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0] = 0.0
    return weights.astype("float32")


@functools.cache
def hann_window(frame_length, fft_length):
    """`keras.ops.stft`'s `window="hann"` for `frame_length`-sample frames:
    periodic, centred in `fft_length` samples by zeros."""
    left = (fft_length - frame_length) // 2
    window = np.zeros(fft_length)
    n = np.arange(frame_length)
    window[left : left + frame_length] = 0.5 - 0.5 * np.cos(
        2 * np.pi * n / frame_length
    )
    return window


@functools.cache
def dft_stages(fft_length):
    """The constants of a two-stage DFT of `fft_length = n1 * n2` points.

    Cooley-Tukey in matrices: an `n1`-point DFT down the columns of the
    frame laid out `[n1, n2]`, twiddle factors, then an `n2`-point DFT
    along the rows. Its matrices are small (`n1 ~ sqrt(fft_length)`), so
    the arithmetic is `O(N sqrt N)` instead of the full DFT's `O(N^2)`, and
    the file stores kilobytes, not the full DFT's `4 N^2` bytes; they stay
    below the 1,024 weights from which LiteRT's quantizer makes a matmul's
    weights int8, so the spectrum keeps float32 precision in every file.

    Returns:
        `None` when `fft_length` has no factor but 1 and itself, else a
        dict of float32 arrays: `first` `[n1, 2 n1]` (the `n1`-point DFT,
        real parts then imaginary), `twiddle_cos` and `twiddle_sin` `[n2,
        n1]`, `second_of_real` and `second_of_imag` `[n2, 2 n2]` (the
        `n2`-point DFT of a complex input's real and imaginary parts).
    """
    n1 = max(
        d for d in range(1, int(np.sqrt(fft_length)) + 1) if fft_length % d == 0
    )
    if n1 == 1:
        return None
    n2 = fft_length // n1

    def dft(points):
        angle = (
            2 * np.pi * np.outer(np.arange(points), np.arange(points)) / points
        )
        return np.cos(angle), np.sin(angle)

    cos1, sin1 = dft(n1)
    cos2, sin2 = dft(n2)
    twiddle = 2 * np.pi * np.outer(np.arange(n2), np.arange(n1)) / fft_length
    stages = {
        "first": np.concatenate([cos1, -sin1], axis=1),
        "twiddle_cos": np.cos(twiddle),
        "twiddle_sin": np.sin(twiddle),
        "second_of_real": np.concatenate([cos2, -sin2], axis=1),
        "second_of_imag": np.concatenate([sin2, cos2], axis=1),
    }
    return {name: value.astype("float32") for name, value in stages.items()}


@functools.cache
def dft_matrix(frame_length, fft_length):
    """The windowed real DFT as a matrix `[fft_length, 2 (fft_length//2+1)]`.

    A frame of `fft_length` samples times this matrix gives the real parts
    of its spectrum, then the imaginary parts, as `keras.ops.stft` computes
    them with `window="hann"`: a periodic Hann window of `frame_length`
    samples, centred in the frame by zeros.
    """
    bins = fft_length // 2 + 1
    angle = 2 * np.pi * np.outer(np.arange(fft_length), np.arange(bins))
    angle /= fft_length
    matrix = np.concatenate([np.cos(angle), -np.sin(angle)], axis=1)
    window = hann_window(frame_length, fft_length)
    return (window[:, None] * matrix).astype("float32")


def waveform_lengths(waveforms):
    """Samples up to and including the last non-zero one, per clip.

    Clips are zero-padded at the end, so this is each clip's real length
    (a clip that ends in exact digital silence loses only that silence).

    Args:
        waveforms: `(batch, samples)` float tensor.

    Returns:
        `(batch,)` int32 tensor; 0 for an all-zero clip.
    """
    nonzero = ops.cast(ops.not_equal(waveforms, 0.0), "int32")
    # 1-based sample positions, written shape-agnostically so the function
    # also runs on symbolic tensors of unknown length.
    positions = ops.cumsum(ops.ones_like(nonzero), axis=1)
    return ops.max(nonzero * positions, axis=1)


def _check_waveform_shape(layer, shape):
    if len(shape) != 2:
        raise ValueError(
            f"Layer '{layer.name}' expects argument `waveforms` of rank 2 "
            f"(batch, samples), mono, zero-padded at the end; received shape "
            f"{tuple(shape)}. Pass one clip as `waveform[None]`."
        )


@keras.saving.register_keras_serializable(package="lstm_keras")
class LogMelSpectrogram(keras.layers.Layer):
    """Log-mel frames of mono waveforms, masked to each clip's real length.

    Each clip's length is found from its end-zero-padding
    (`waveform_lengths`); a frame is real when it starts inside the clip, and
    the mask (`compute_mask`) is `False` for the others, so the LSTM's last
    hidden state is that of the clip's last real frame. An all-zero clip has
    no real frame (a fully masked row). NaN or infinite samples raise an
    `InvalidArgumentError` naming `waveforms`: they have no defined spectrum.

    Args:
        sample_rate: Positive integer, samples per second.
        frame_length: Positive integer, samples per frame (window). Defaults
            to `256`.
        frame_step: Positive integer, samples between frame starts. Defaults
            to `128`.
        fft_length: Positive integer >= `frame_length`. Defaults to
            `frame_length` when `None`.
        num_mel_bins: Positive integer, mel filters. Defaults to `40`.
        lower_hertz: Float, lowest filter edge. Defaults to `20.0`.
        upper_hertz: Float, highest filter edge; `None` for half the sample
            rate. Defaults to `None`.
        **kwargs: Base layer arguments.

    Call arguments:
        waveforms: `(batch, samples)` float tensor, zero-padded at the end;
            any length, even shorter than one frame.

    Returns:
        `(batch, samples // frame_step + 1, num_mel_bins)` float32 log-mel
        features (the end is padded by one frame first), with the frame
        mask attached.
    """

    def __init__(
        self,
        sample_rate,
        frame_length=256,
        frame_step=128,
        fft_length=None,
        num_mel_bins=40,
        lower_hertz=20.0,
        upper_hertz=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("sample_rate", sample_rate),
            ("frame_length", frame_length),
            ("frame_step", frame_step),
            ("num_mel_bins", num_mel_bins),
        ):
            _check_positive_int(name, value)
        fft_length = frame_length if fft_length is None else fft_length
        if not isinstance(fft_length, int) or fft_length < frame_length:
            raise ValueError(
                "Received an invalid value for argument `fft_length`, "
                f"expected an integer >= frame_length ({frame_length}), got "
                f"{fft_length!r}."
            )
        nyquist = sample_rate / 2
        upper = nyquist if upper_hertz is None else float(upper_hertz)
        if not 0 <= lower_hertz < upper <= nyquist:
            raise ValueError(
                "Received invalid arguments `lower_hertz` and `upper_hertz`: "
                f"expected 0 <= lower_hertz < upper_hertz <= {nyquist}, got "
                f"{lower_hertz!r} and {upper_hertz!r}."
            )
        self.sample_rate = sample_rate
        self.frame_length = frame_length
        self.frame_step = frame_step
        self.fft_length = fft_length
        self.num_mel_bins = num_mel_bins
        self.lower_hertz = float(lower_hertz)
        self.upper_hertz = upper_hertz
        self._mel_weights = mel_weight_matrix(
            num_mel_bins, fft_length // 2 + 1, sample_rate, lower_hertz, upper
        )

    def call(self, waveforms):
        _check_waveform_shape(self, waveforms.shape)
        waveforms = ops.cast(waveforms, "float32")
        waveforms = tf.debugging.assert_all_finite(
            waveforms,
            f"Layer '{self.name}': argument `waveforms` contains NaN or "
            "infinite samples",
        )
        # Padding by one frame gives every clip, however short, at least
        # one frame, and frames = samples // frame_step + 1 in all cases.
        waveforms = ops.pad(waveforms, [[0, 0], [0, self.frame_length]])
        if export_context.tracing_for_litert():
            return self.log_mel_of_frames(self._frames(waveforms))
        real, imag = ops.stft(
            waveforms,
            sequence_length=self.frame_length,
            sequence_stride=self.frame_step,
            fft_length=self.fft_length,
            window="hann",
            center=False,
        )
        power = ops.square(real) + ops.square(imag)
        # power: <float32>[batch, frames, fft_length // 2 + 1]
        mel = ops.matmul(power, ops.convert_to_tensor(self._mel_weights))
        return ops.log(mel + _LOG_OFFSET)

    def log_mel_of_frames(self, frames):
        """Log-mel features of frames `[..., fft_length]`, by matmuls.

        The spectrum comes from matmuls (`dft_stages`, or `dft_matrix` for
        a prime `fft_length`) instead of an FFT: the graph a LiteRT trace
        needs (builtin ops, no complex numbers), and the frames the stream
        signature makes (`lstm_keras.export.streaming`). Within 2e-6 of
        `call`'s features for the same frames.
        """
        stages = dft_stages(self.fft_length)
        if stages is None:
            spectrum = ops.matmul(
                frames,
                ops.convert_to_tensor(
                    dft_matrix(self.frame_length, self.fft_length)
                ),
            )
            real, imag = ops.split(spectrum, 2, axis=-1)
        else:
            real, imag = self._two_stage_dft(frames, stages)
        power = ops.square(real) + ops.square(imag)
        # The mel filters in matmuls of fewer than 1,024 weights, which
        # LiteRT's dynamic-range quantizer leaves float: it would also
        # quantize the power spectrum to 8 bits on the fly, and the quiet
        # bins, many decibels down, would read as silence.
        bins = self._mel_weights.shape[0]
        width = max(1, 1023 // bins)
        mel = ops.concatenate(
            [
                ops.matmul(
                    power,
                    ops.convert_to_tensor(self._mel_weights[:, i : i + width]),
                )
                for i in range(0, self.num_mel_bins, width)
            ],
            axis=-1,
        )
        return ops.log(mel + _LOG_OFFSET)

    def _two_stage_dft(self, frames, stages):
        """Real and imaginary parts of the first `fft_length // 2 + 1` bins.

        Sample `n = n2 * a + b` of a frame is `x[a, b]`; bin `k = k1 +
        n1 * k2` is `sum_b W_N^(b k1) W_n2^(b k2) sum_a W_n1^(a k1) x[a, b]`.
        """
        n1 = stages["first"].shape[0]
        n2 = self.fft_length // n1
        window = ops.convert_to_tensor(
            hann_window(self.frame_length, self.fft_length).astype("float32")
        )
        lead = ops.shape(frames)[:-1]
        x = ops.reshape(frames * window, (-1, n1, n2))
        # stage 1, down the columns: <float32>[rows, n2 (b), 2 n1 (k1)]
        y = ops.matmul(ops.transpose(x, (0, 2, 1)), stages["first"])
        y_real, y_imag = y[..., :n1], y[..., n1:]
        cos, sin = stages["twiddle_cos"], stages["twiddle_sin"]
        t_real = y_real * cos + y_imag * sin
        t_imag = y_imag * cos - y_real * sin
        # stage 2, along the rows: <float32>[rows, n1 (k1), 2 n2 (k2)]
        z = ops.matmul(
            ops.transpose(t_real, (0, 2, 1)), stages["second_of_real"]
        ) + ops.matmul(
            ops.transpose(t_imag, (0, 2, 1)), stages["second_of_imag"]
        )
        bins = self.fft_length // 2 + 1

        def in_bin_order(part):
            # [rows, k1, k2] -> bin k1 + n1 k2, the first `bins` of them.
            part = ops.reshape(
                ops.transpose(part, (0, 2, 1)), (-1, self.fft_length)
            )
            return ops.reshape(part[:, :bins], (*lead, bins))

        return in_bin_order(z[..., :n2]), in_bin_order(z[..., n2:])

    def _frames(self, waveforms):
        """The STFT's frames of the padded waveforms, gathered by index.

        `tf.signal.frame`, which `ops.stft` uses, stops the TFLite converter
        from fusing the LSTM that follows; a `GATHER` does not.
        """
        samples = tf.shape(waveforms)[1]
        frames = tf.maximum(
            0, 1 + (samples - self.fft_length) // self.frame_step
        )
        starts = tf.range(frames) * self.frame_step
        indices = starts[:, None] + tf.range(self.fft_length)[None, :]
        return tf.gather(waveforms, indices, axis=1)

    def compute_mask(self, waveforms, previous_mask=None):
        # Frame i starts at sample i * frame_step, for i up to
        # samples // frame_step; it is real when it starts inside the clip.
        waveforms = ops.cast(waveforms, "float32")
        lengths = waveform_lengths(waveforms)
        positions = ops.cumsum(ops.ones_like(waveforms, dtype="int32"), axis=1)
        inside = ops.less_equal(positions, lengths[:, None])
        inside = ops.concatenate(
            [inside, ops.zeros_like(inside[:, :1])], axis=1
        )
        return inside[:, :: self.frame_step]

    def compute_output_shape(self, input_shape):
        _check_waveform_shape(self, input_shape)
        frames = None
        if input_shape[1] is not None:
            frames = input_shape[1] // self.frame_step + 1
        return (input_shape[0], frames, self.num_mel_bins)

    def get_config(self):
        config = {
            "sample_rate": self.sample_rate,
            "frame_length": self.frame_length,
            "frame_step": self.frame_step,
            "fft_length": self.fft_length,
            "num_mel_bins": self.num_mel_bins,
            "lower_hertz": self.lower_hertz,
            "upper_hertz": self.upper_hertz,
        }
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="lstm_keras")
class ClipMeanNormalization(keras.layers.Layer):
    """Subtracts each clip's mean feature vector over its real frames.

    Cepstral-style mean normalization: a constant per-clip offset of the
    log-mel features (microphone, level, part of a speaker's timbre) is
    removed. Masked frames neither count nor change meaning; a clip with no
    real frame is left as it is.

    Call arguments:
        features: `(batch, frames, bins)` float tensor.
        mask: Boolean `(batch, frames)`, `False` at padding.

    Returns:
        The centred features, same shape, same mask.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, features, mask=None):
        if mask is None:
            return features - ops.mean(features, axis=1, keepdims=True)
        weights = ops.cast(mask, features.dtype)[:, :, None]
        count = ops.maximum(ops.sum(weights, axis=1, keepdims=True), 1.0)
        mean = ops.sum(features * weights, axis=1, keepdims=True) / count
        return features - mean

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="lstm_keras")
class SpectrogramMasking(keras.layers.Layer):
    """SpecAugment's masks: random mel bands and frame spans set to zero.

    While training, each clip gets `frequency_masks` bands of up to
    `max_frequency_mask_bins` consecutive bins and `time_masks` spans of up
    to `max_time_mask_frames` consecutive real frames set to zero (after
    normalization, zero is the mean: the masked cells carry no evidence).
    Widths and positions are drawn per clip; time masks fall inside each
    clip's real frames. A model that cannot lean on one band or one moment
    learns cues that survive a new voice (Park et al., 2019).

    Args:
        frequency_masks: Integer >= 0, bands masked per clip. Defaults to
            `2`.
        max_frequency_mask_bins: Integer >= 0, widest band. Defaults to `6`.
        time_masks: Integer >= 0, spans masked per clip. Defaults to `2`.
        max_time_mask_frames: Integer >= 0, longest span. Defaults to `4`.
        seed: Integer or `None`, seed of the draws. Defaults to `None`.
        **kwargs: Base layer arguments.

    Call arguments:
        features: `(batch, frames, bins)` float tensor.
        mask: Boolean `(batch, frames)`, `False` at padding; passed on.
        training: Python boolean; the layer is the identity unless `True`.

    Returns:
        The masked features, same shape, same mask.

    Example:

    >>> layer = SpectrogramMasking(time_masks=0, seed=0)
    >>> out = layer(np.ones((1, 5, 8), "float32"), training=True)
    >>> bool(np.all(np.any(out[0] != 0, axis=1)))  # frames stay
    True
    """

    def __init__(
        self,
        frequency_masks=2,
        max_frequency_mask_bins=6,
        time_masks=2,
        max_time_mask_frames=4,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("frequency_masks", frequency_masks),
            ("max_frequency_mask_bins", max_frequency_mask_bins),
            ("time_masks", time_masks),
            ("max_time_mask_frames", max_time_mask_frames),
        ):
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(
                    f"Received an invalid value for argument `{name}`, "
                    f"expected an integer >= 0, got {value!r}."
                )
        self.frequency_masks = int(frequency_masks)
        self.max_frequency_mask_bins = int(max_frequency_mask_bins)
        self.time_masks = int(time_masks)
        self.max_time_mask_frames = int(max_time_mask_frames)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, features, mask=None, training=False):
        if not training:
            return features
        shape = ops.shape(features)
        batch, frames, bins = shape[0], shape[1], shape[2]
        if mask is None:
            lengths = ops.full((batch,), frames, dtype="int32")
        else:
            lengths = ops.sum(ops.cast(mask, "int32"), axis=1)
        # keep_bins: <float>[batch, bins]; keep_frames: <float>[batch, frames]
        keep_bins = self._keep(
            batch, bins, ops.full((batch,), bins, dtype="int32"),
            self.frequency_masks, self.max_frequency_mask_bins,
        )  # fmt: skip
        keep_frames = self._keep(
            batch, frames, lengths, self.time_masks, self.max_time_mask_frames
        )
        keep = keep_frames[:, :, None] * keep_bins[:, None, :]
        return features * ops.cast(keep, features.dtype)

    def _keep(self, batch, size, lengths, count, max_width):
        """1.0 outside, 0.0 inside `count` random spans of each row's first
        `lengths[i]` positions."""
        positions = ops.arange(size, dtype="int32")[None, :]
        keep = ops.ones((batch, size), dtype="bool")
        for _ in range(count if max_width > 0 else 0):
            width = keras.random.randint(
                (batch, 1), 0, max_width + 1, seed=self.seed_generator
            )
            room = ops.maximum(lengths[:, None] - width + 1, 1)
            start = ops.cast(
                keras.random.uniform((batch, 1), seed=self.seed_generator)
                * ops.cast(room, "float32"),
                "int32",
            )
            inside = ops.logical_and(
                positions >= start, positions < start + width
            )
            keep = ops.logical_and(keep, ops.logical_not(inside))
        return ops.cast(keep, "float32")

    def compute_mask(self, features, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {
            "frequency_masks": self.frequency_masks,
            "max_frequency_mask_bins": self.max_frequency_mask_bins,
            "time_masks": self.time_masks,
            "max_time_mask_frames": self.max_time_mask_frames,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="lstm_keras")
class WaveformAugmentation(keras.layers.Layer):
    """Random speed, time shift, gain and noise; identity at inference.

    Every change keeps the end-zero-padding that `LogMelSpectrogram` reads
    lengths from: speed resamples the whole batch (padding stays zero),
    the shift delays each clip by prepending zeros (the batch grows by
    `max_shift` samples, nothing is cut), and noise is added inside each
    clip's real length only.

    Args:
        sample_rate: Positive integer, samples per second.
        max_shift_seconds: Float >= 0, largest random delay. Defaults to
            `0.1`.
        max_gain_db: Float >= 0, gain drawn from [-max_gain_db, max_gain_db]
            per clip. Defaults to `6.0`.
        noise_stddev: Float >= 0, largest noise standard deviation (each
            clip draws one in [0, noise_stddev]). Defaults to `0.005`.
        max_speed_change: Float in [0, 0.5), speed factor drawn from
            [1 - max_speed_change, 1 + max_speed_change] per batch. Defaults
            to `0.1`.
        seed: Integer or `None`, seed of the draws. Defaults to `None`.
        **kwargs: Base layer arguments.

    Call arguments:
        waveforms: `(batch, samples)` float tensor, zero-padded at the end.
        training: Python boolean; the layer is the identity unless `True`.

    Returns:
        The augmented `(batch, samples')` waveforms.
    """

    def __init__(
        self,
        sample_rate,
        max_shift_seconds=0.1,
        max_gain_db=6.0,
        noise_stddev=0.005,
        max_speed_change=0.1,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int("sample_rate", sample_rate)
        for name, value in (
            ("max_shift_seconds", max_shift_seconds),
            ("max_gain_db", max_gain_db),
            ("noise_stddev", noise_stddev),
        ):
            if not value >= 0:
                raise ValueError(
                    f"Received an invalid value for argument `{name}`, "
                    f"expected a float >= 0, got {value!r}."
                )
        if not 0 <= max_speed_change < 0.5:
            raise ValueError(
                "Received an invalid value for argument `max_speed_change`, "
                f"expected a float in [0, 0.5), got {max_speed_change!r}."
            )
        self.sample_rate = sample_rate
        self.max_shift_seconds = float(max_shift_seconds)
        self.max_gain_db = float(max_gain_db)
        self.noise_stddev = float(noise_stddev)
        self.max_speed_change = float(max_speed_change)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._max_shift = int(round(self.max_shift_seconds * sample_rate))

    def call(self, waveforms, training=False):
        _check_waveform_shape(self, waveforms.shape)
        if not training:
            return waveforms
        waveforms = ops.cast(waveforms, "float32")
        if self.max_speed_change > 0:
            waveforms = self._change_speed(waveforms)
        if self._max_shift > 0:
            waveforms = self._delay(waveforms)
        batch = ops.shape(waveforms)[0]
        gain_db = keras.random.uniform(
            (batch, 1),
            -self.max_gain_db,
            self.max_gain_db,
            seed=self.seed_generator,
        )
        waveforms = waveforms * ops.power(10.0, gain_db / 20.0)
        if self.noise_stddev > 0:
            lengths = waveform_lengths(waveforms)
            positions = ops.arange(ops.shape(waveforms)[1], dtype="int32")
            inside = ops.cast(positions[None, :] < lengths[:, None], "float32")
            stddev = keras.random.uniform(
                (batch, 1), 0.0, self.noise_stddev, seed=self.seed_generator
            )
            noise = keras.random.normal(
                ops.shape(waveforms), seed=self.seed_generator
            )
            waveforms = waveforms + noise * stddev * inside
        return waveforms

    def _change_speed(self, waveforms):
        # Linear interpolation at positions t * factor: factor > 1 is faster
        # (shorter), and zeros between zeros stay zeros.
        factor = keras.random.uniform(
            (),
            1.0 - self.max_speed_change,
            1.0 + self.max_speed_change,
            seed=self.seed_generator,
        )
        samples = ops.shape(waveforms)[1]
        new_samples = ops.cast(
            ops.floor(ops.cast(samples, "float32") / factor), "int32"
        )
        new_samples = ops.maximum(new_samples, 1)
        positions = ops.arange(new_samples, dtype="float32") * factor
        left = ops.minimum(ops.cast(ops.floor(positions), "int32"), samples - 1)
        right = ops.minimum(left + 1, samples - 1)
        fraction = positions - ops.cast(left, "float32")
        x_left = ops.take(waveforms, left, axis=1)
        x_right = ops.take(waveforms, right, axis=1)
        return x_left + fraction[None, :] * (x_right - x_left)

    def _delay(self, waveforms):
        batch = ops.shape(waveforms)[0]
        samples = ops.shape(waveforms)[1]
        delays = keras.random.randint(
            (batch, 1), 0, self._max_shift + 1, seed=self.seed_generator
        )
        positions = ops.arange(samples + self._max_shift, dtype="int32")
        source = positions[None, :] - delays
        inside = ops.logical_and(source >= 0, source < samples)
        source = ops.clip(source, 0, samples - 1)
        shifted = ops.take_along_axis(waveforms, source, axis=1)
        return ops.where(inside, shifted, 0.0)

    def compute_output_shape(self, input_shape):
        _check_waveform_shape(self, input_shape)
        return (input_shape[0], None)

    def get_config(self):
        config = {
            "sample_rate": self.sample_rate,
            "max_shift_seconds": self.max_shift_seconds,
            "max_gain_db": self.max_gain_db,
            "noise_stddev": self.noise_stddev,
            "max_speed_change": self.max_speed_change,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}


def _check_positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"positive integer, got {value!r}."
        )
