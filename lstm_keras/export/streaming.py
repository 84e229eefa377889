"""The `stream` signature: a unidirectional speech model fed chunk by chunk.

A device or a server hears audio as it comes. `stream_step(model, samples,
state)` takes the next chunk of samples and the state the previous call
returned (zeros to start), and returns the probabilities for the clip so
far and the new state; the state is one plain float32 tensor, so the
signature stays stateless and TF Serving or LiteRT can run it.

Feeding a clip chunk by chunk gives the probabilities that the whole-clip
model (`serving_default`) gives for the samples so far: its log-mel frames
are those that start inside the samples, each frame `frame_length` samples
from its start, zero-padded past the end. So each call

1. frames the samples that the previous call kept (the last `B` samples,
   `B = frame_step * (ceil(frame_length / frame_step) - 1)`) and the chunk;
2. runs the LSTMs from the state over the frames that lie wholly inside
   the samples so far (the committed frames) and keeps their states;
3. runs them on from there over the frames that reach past the end
   (zero-padded, as the whole-clip model frames them), and the head on the
   result: the probabilities so far. Those frames are framed again, whole,
   by a later call.

State layout (`[batch, state_size]`): for each LSTM layer its `h` and `c`
(`units` each), then the `B` kept samples, then the number of samples seen,
capped at `frame_step * ceil(frame_length / frame_step)` (past it the
framing no longer depends on it; capped, it stays an exact float).

Streams need a causal model: unidirectional LSTMs, no clip-mean
normalization (it needs the whole clip), `fft_length == frame_length`.
`SpeechClassifier(**STREAMING_OPTIONS)` (`lstm-keras-train speech
--streaming`) is one. The whole-clip model reads trailing exact zeros as
batch padding; a stream has no padding, so a clip ending in digital silence
(exact zeros) is where the two differ.
"""

import math

import tensorflow as tf

from lstm_keras.backends.tensorflow import cudnn
from lstm_keras.backends.tensorflow import serving
from lstm_keras.fast_path_conditions import standard_lstm_mismatch

STREAM_SIGNATURE = "stream"


def streaming_problem(model):
    """Why `model` cannot stream, or `None` when it can."""
    from lstm_keras.applications import SpeechClassifier

    if not isinstance(model, SpeechClassifier):
        return "only a SpeechClassifier streams"
    options = model.get_config()
    if options["bidirectional"]:
        return "its LSTMs are bidirectional (they need the whole clip)"
    if options["clip_normalization"]:
        return "it subtracts each clip's mean frame (clip_normalization)"
    log_mel = model.log_mel
    if log_mel.fft_length != log_mel.frame_length:
        return "its fft_length differs from frame_length"
    for layer in model.backbone.lstm_layers:
        reason = standard_lstm_mismatch(
            layer, False, cudnn.TANH, cudnn.SIGMOID, allow_peepholes=True
        )
        if reason:
            return f"LSTM layer {layer.name!r}: {reason}"
        if layer.go_backwards:
            return f"LSTM layer {layer.name!r} goes backwards"
    return None


def check_streaming(model):
    """Raises a `ValueError` saying why `model` cannot stream, if it cannot."""
    problem = streaming_problem(model)
    if problem:
        raise ValueError(f"Model {model.name!r} cannot stream: {problem}.")


def kept_samples(model):
    """`B`, the samples each call keeps for the next one's frames."""
    log_mel = model.log_mel
    return log_mel.frame_step * (
        math.ceil(log_mel.frame_length / log_mel.frame_step) - 1
    )


def state_size(model):
    """The width of the stream's state for `model`."""
    check_streaming(model)
    units = sum(2 * layer.units for layer in model.backbone.lstm_layers)
    return units + kept_samples(model) + 1


def chunk_multiple(model):
    """Each chunk's length must be a multiple of this (the frame step)."""
    return model.log_mel.frame_step


def stream_signature(model, batch_size=None):
    """The `stream` signature of `model`: `(function, input specs)`.

    The function takes `samples` and `state` and returns the dict of
    `probabilities` and `state`; the specs fix the batch size when
    `batch_size` is given (a LiteRT file).
    """
    # A LiteRT file's inputs can be resized to anything at run time, so
    # its state's width is left free and checked by `stream_step`'s
    # reshape, which fails on a wrong one.
    width = state_size(model) if batch_size is None else None
    specs = [
        tf.TensorSpec([batch_size, None], tf.float32, "samples"),
        tf.TensorSpec([batch_size, width], tf.float32, "state"),
    ]

    def stream(samples, state):
        probabilities, new_state = stream_step(model, samples, state)
        return {"probabilities": probabilities, "state": new_state}

    return stream, specs


def stream_step(model, samples, state):
    """The probabilities for the samples so far, and the next state.

    Args:
        model: A `SpeechClassifier` that can stream (`check_streaming`).
        samples: float32 `[batch, n]`, the next `n` samples of each stream,
            `n` a multiple of `chunk_multiple(model)` (0 too).
        state: float32 `[batch, state_size(model)]`, what the previous call
            returned; zeros to start a stream.

    Returns:
        `(probabilities, state)`: `[batch, classes]` and the new state.
    """
    size = state_size(model)  # checks that the model can stream
    log_mel = model.log_mel
    step, frame_length = log_mel.frame_step, log_mel.frame_length
    keep = kept_samples(model)
    # Past `keep + step` samples seen, the framing no longer depends on it.
    cap = keep + step
    layers = model.backbone.lstm_layers

    samples = tf.convert_to_tensor(samples, tf.float32)
    state = tf.convert_to_tensor(state, tf.float32)
    checks = [
        tf.debugging.assert_equal(
            tf.shape(samples)[1] % step,
            0,
            message=(
                f"Signature {STREAM_SIGNATURE!r}: argument `samples` must "
                f"hold a multiple of {step} (the frame step) samples per row"
            ),
        ),
        tf.debugging.assert_equal(
            tf.shape(state),
            tf.stack([tf.shape(samples)[0], size]),
            message=(
                f"Signature {STREAM_SIGNATURE!r}: argument `state` must be "
                f"[batch, {size}] (the `samples` batch, state_size)"
            ),
        ),
    ]
    with tf.control_dependencies(checks):
        samples = tf.identity(samples)
    # LiteRT runs no assertions. There a state of the wrong width fails
    # this reshape, and a chunk that is not a multiple of the frame step
    # the reshape into whole frame steps below, instead of giving wrong
    # probabilities. The batch size is static where it is known, which
    # LiteRT's converter needs further on.
    rows = samples.shape[0]
    if rows is None:
        rows = tf.shape(samples)[0]
    state = tf.reshape(state, [rows, size])

    # === The state ===
    offset = 0
    states = []
    for layer in layers:
        h = state[:, offset : offset + layer.units]
        c = state[:, offset + layer.units : offset + 2 * layer.units]
        states.append((h, c))
        offset += 2 * layer.units
    kept = state[:, offset : offset + keep]
    seen = tf.cast(state[:, offset + keep], tf.int32)

    # === Frames: committed, then those reaching past the end ===
    # Rows are streams of their own: each its own count of samples seen.
    # Joined as whole frame steps (`keep` is a multiple of the step), so
    # that the reshapes stay in the graph between the join and its use.
    whole_steps = tf.concat(
        [
            tf.reshape(kept, [rows, -1, step]),
            tf.reshape(samples, [rows, -1, step]),
        ],
        axis=1,
    )
    audio = tf.reshape(whole_steps, [rows, -1])
    total = seen + tf.shape(samples)[1]

    def committed_count(n):
        return tf.maximum(0, (n - frame_length) // step + 1)

    first, committed_end = committed_count(seen), committed_count(total)
    real_end = (total + step - 1) // step
    # Past the samples, frames read zeros, as the whole-clip model's do.
    padding = tf.zeros(tf.stack([tf.shape(audio)[0], frame_length]))
    audio = tf.concat([audio, padding], axis=1)
    committed, committed_mask = _frames(
        model, audio, seen, keep, first, committed_end
    )
    # At most ceil(frame_length / step) frames reach past the end: a
    # static count, so that their loop's shapes are fixed (LiteRT's XNNPACK
    # delegate misreads a second loop whose shapes changed between calls).
    provisional, provisional_mask = _frames(
        model,
        audio,
        seen,
        keep,
        committed_end,
        real_end,
        size=math.ceil(frame_length / step),
    )

    # === LSTMs and head ===
    # Each row's frames are a right-padded masked sequence; a masked step
    # keeps h and c, so each row's states are those after its own frames.
    x, pending = committed, provisional
    new_states = []
    for layer, (h, c) in zip(layers, states, strict=True):
        weights = serving._Weights(layer.cell).in_loop_order()
        _, x, h, c = serving._loop(
            layer, weights, x, committed_mask, h, c, True, array=False
        )
        new_states.append((h, c))
        _, pending, last_h, _ = serving._loop(
            layer, weights, pending, provisional_mask, h, c, True, array=False
        )
    probabilities = model.get_layer("probabilities")(last_h)

    new_kept = audio[:, -frame_length - keep : -frame_length]
    new_seen = tf.minimum(total, cap)[:, None]
    new_state = tf.concat(
        [part for pair in new_states for part in pair]
        + [new_kept, tf.cast(new_seen, tf.float32)],
        axis=1,
    )
    return probabilities, new_state


def _frames(model, audio, seen, keep, begin, end, size=None):
    """Normalized log-mel frames `begin[r] <= j < end[r]` of each row `r`.

    Frame `j` of row `r` starts at audio index `j * frame_step - seen[r] +
    keep`. Returns `(features, mask)`: `[batch, frames, bins]`, right-padded
    to the longest row (or to `size` frames), and the boolean `[batch,
    frames]` mask of real ones.
    """
    log_mel = model.log_mel
    counts = end - begin
    if size is None:
        size = tf.reduce_max(tf.concat([counts, [0]], 0))
    j = tf.range(size)
    mask = j[None, :] < counts[:, None]
    starts = (begin[:, None] + j[None, :]) * log_mel.frame_step
    starts = starts - seen[:, None] + keep
    # Padding frames read from a valid place; their values are masked.
    last_start = tf.shape(audio)[1] - log_mel.frame_length
    starts = tf.clip_by_value(starts, 0, last_start)
    indices = starts[:, :, None] + tf.range(log_mel.frame_length)
    framed = tf.gather(audio, indices, axis=1, batch_dims=1)
    features = model.normalizer(log_mel.log_mel_of_frames(framed))
    return features, mask
