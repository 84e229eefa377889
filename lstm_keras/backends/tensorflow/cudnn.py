"""The TensorFlow cuDNN fast path of `lstm_keras.LSTM` (see `lstm_keras.dispatch`).

`lstm_sequence` runs the layer with the `CudnnRNNV3` op when a GPU is
visible, and raises `NotImplementedError` for what it does not cover, so
that dispatch tries the next path. The weights are converted as Keras's
own `keras.src.backend.tensorflow.rnn._cudnn_lstm` converts them, with its
helpers. Two things differ from Keras, because this layer's semantics win:

- A mask that cuDNN cannot express (not right-padded, or with a fully
  masked row) is never asserted on: in eager mode it is checked in Python
  and declined; in a traced function a `tf.cond` on the mask picks the
  generic path at run time.
- Outputs at masked steps are what `generic_loop.generic_lstm_sequence`
  gives (zeros, or the last real output without `zero_output_for_mask`),
  where cuDNN leaves zeros.
"""

import functools

import keras
import tensorflow as tf

from lstm_keras.backends.tensorflow import export_context
from lstm_keras.compat import control_flow_util

# Keras's helpers for its own cuDNN LSTM: the weight layout (the flat
# `params` of `CudnnRNNV3`) and the mask checks are the same for this layer.
from lstm_keras.compat import has_fully_masked_sequence
from lstm_keras.compat import is_sequence_right_padded
from lstm_keras.compat import standardize_cudnn_weights
from lstm_keras.fast_path_conditions import standard_lstm_mismatch
from lstm_keras.generic_loop import generic_lstm_sequence_as_fast_path

# The activations cuDNN computes (Keras's `_do_lstm_arguments_support_cudnn`),
# as TensorFlow's fused LSTM kernels do.
TANH = (keras.activations.tanh, tf.tanh, keras.ops.tanh)
SIGMOID = (keras.activations.sigmoid, tf.sigmoid, keras.ops.sigmoid)


@functools.cache
def _gpu_visible():
    return bool(tf.config.list_logical_devices("GPU"))


def _decline(reason):
    raise NotImplementedError(f"TensorFlow cuDNN path: {reason}")


def _check_layer(layer, check_device=True):
    """The conditions known before the layer is called."""
    if check_device and not _gpu_visible():
        _decline("no GPU is visible")
    reason = standard_lstm_mismatch(
        layer, False, TANH, SIGMOID, require_bias=True
    )
    if reason:
        _decline(reason)


def may_run(layer):
    """Whether this path may run `layer` on a GPU (its configuration allows
    cuDNN); the call decides the rest (device, dtype, dropout, mask). Such a
    layer must not be XLA-compiled, as cuDNN's ops have no XLA kernels: see
    `dispatch.layer_supports_jit`. It does not look for a GPU, as Keras does
    not for `keras.layers.LSTM`: that would initialize TensorFlow's devices
    when a layer is built, before users could configure them."""
    try:
        _check_layer(layer, check_device=False)
    except NotImplementedError:
        return False
    return True


def check_supported(layer, sequences, training):
    """Raises `NotImplementedError` unless cuDNN computes this layer here."""
    _check_layer(layer)
    cell = layer.cell
    if training and cell.recurrent_dropout > 0:
        _decline("recurrent dropout")
    if sequences.dtype != tf.float32 or cell.kernel.dtype != "float32":
        _decline(f"dtype {sequences.dtype.name} (float32 only)")
    graph = tf.compat.v1.get_default_graph()
    if control_flow_util.GraphOrParentsInXlaContext(graph):
        _decline("inside an XLA-compiled function (no XLA cuDNN RNN)")
    if export_context.exporting():
        # A saved graph must serve on a CPU too.
        _decline("tracing for export")


def mask_is_supported(mask):
    """Scalar boolean tensor: whether cuDNN can run `mask`.

    Args:
        mask: Boolean `(batch, timesteps)`, `True` for real steps.

    Returns:
        `True` when every row is right-padded (real steps, then padding)
        and has at least one real step.
    """
    return tf.logical_and(
        tf.logical_not(has_fully_masked_sequence(mask)),
        is_sequence_right_padded(mask),
    )


def cudnn_params(kernel, recurrent_kernel, bias):
    """The flat `params` of `CudnnRNNV3` for one LSTM layer, from Keras's
    fused `kernel` [D, 4H], `recurrent_kernel` [H, 4H] and `bias` [4H]."""
    weights = tf.split(kernel, 4, axis=1)
    weights += tf.split(recurrent_kernel, 4, axis=1)
    # cuDNN adds an input and a recurrent bias: the input one is zero.
    full_bias = tf.concat((tf.zeros_like(bias), bias), 0)
    if tf.sysconfig.get_build_info().get("is_rocm_build", False):
        # MIOpen's gate order is [i, f, o, c] (as in Keras's `_cudnn_lstm`).
        order = (0, 1, 3, 2, 4, 5, 7, 6)
        weights = [weights[x] for x in order]
        full_bias = tf.split(full_bias, 8)
        full_bias = tf.concat([full_bias[x] for x in order], 0)
    return standardize_cudnn_weights(
        weights=weights,
        biases=tf.split(full_bias, 8),
        shape=tf.constant([-1]),
        transpose_weights=True,
    )


def lstm_sequence(layer, sequences, initial_state, mask, training):
    """The cuDNN path; arguments and result as `dispatch.lstm_sequence`."""
    check_supported(layer, sequences, training)
    h0, c0 = (tf.convert_to_tensor(s) for s in initial_state)
    if mask is None:
        return _cudnn_sequence(layer, sequences, h0, c0, None, training)
    mask = tf.cast(mask, tf.bool)
    supported = mask_is_supported(mask)
    known = tf.get_static_value(supported)  # Always known when eager.
    if known is not None:
        if not known:
            _decline("the mask is not right-padded or masks a whole row")
        return _cudnn_sequence(layer, sequences, h0, c0, mask, training)
    # Traced: choose at run time, so that no mask value reaches cuDNN that
    # it cannot run (Keras asserts there instead).
    return tf.cond(
        supported,
        lambda: _cudnn_sequence(layer, sequences, h0, c0, mask, training),
        lambda: generic_lstm_sequence_as_fast_path(
            layer, sequences, [h0, c0], mask, training
        ),
    )


def _cudnn_sequence(layer, sequences, h0, c0, mask, training):
    """`CudnnRNNV3` over the batch; `mask` is None or cuDNN-compatible."""
    cell = layer.cell
    if mask is not None:
        # Padding may hold anything (NaN too): zero it, as the generic path
        # does, so that no gradient through it can be NaN.
        sequences = tf.where(mask[:, :, None], sequences, 0.0)
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
    else:
        shape = tf.shape(sequences)
        lengths = tf.fill(shape[:1], shape[1])
    if training and cell.dropout > 0:
        input_mask = cell.get_dropout_mask(sequences[:, 0, :])
        sequences = sequences * input_mask[:, None, :]
    params = cudnn_params(
        tf.convert_to_tensor(cell.kernel),
        tf.convert_to_tensor(cell.recurrent_kernel),
        tf.convert_to_tensor(cell.bias),
    )
    if layer.go_backwards:
        # Reverse each sequence within its length, so that padding stays at
        # the end where cuDNN expects it (as Keras does).
        sequences = tf.reverse_sequence(
            sequences, lengths, seq_axis=1, batch_axis=0
        )
    try:
        outputs, h, c, _, _ = tf.raw_ops.CudnnRNNV3(
            input=sequences,
            input_h=h0[:, None],  # (batch, layers, units) when batch-major
            input_c=c0[:, None],
            params=params,
            is_training=True,
            rnn_mode="lstm",
            sequence_lengths=lengths,
            time_major=False,
        )
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
        # Eager only: no cuDNN kernel for this device (Keras's fallback too).
        _decline(f"CudnnRNNV3 failed: {e}")
    h, c = h[:, 0], c[:, 0]
    if layer.go_backwards:
        # Back to processing order: the padding's steps come first.
        outputs = tf.reverse_sequence(
            outputs, lengths, seq_axis=1, batch_axis=0
        )
        outputs = tf.reverse(outputs, axis=[1])
    if mask is not None:
        # Masked steps output zeros before the first real step (all of them
        # when going backwards) and, after the last one, zeros only with
        # `zero_output_for_mask`, else the last real output, which is h.
        if layer.go_backwards:
            is_real = tf.reverse(mask, axis=[1])
            padding_output = tf.zeros_like(outputs)
        else:
            is_real = mask
            padding_output = tf.zeros_like(outputs)
            if not layer.zero_output_for_mask:
                padding_output += h[:, None]
        outputs = tf.where(is_real[:, :, None], outputs, padding_output)
    last_output = outputs[:, -1]
    if not layer.return_sequences:
        outputs = last_output[:, None]
    return last_output, outputs, [h, c]
