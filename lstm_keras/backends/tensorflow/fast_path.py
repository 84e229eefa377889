"""The TensorFlow CPU fast path of `lstm_keras.LSTM` (see `lstm_keras.dispatch`).

`lstm_sequence` runs the layer with the custom ops of `lstm_kernels.cc`
(built by `build.py`) and raises `NotImplementedError` for what they do not
cover, so that dispatch falls back to the generic path. The gradient is
registered here: the grad op runs backpropagation through time and returns
every gradient (inputs, weights, bias, initial states).
"""

import functools

import tensorflow as tf

from lstm_keras.backends.tensorflow import build
from lstm_keras.backends.tensorflow import export_context
from lstm_keras.compat import control_flow_util
from lstm_keras.compat import eager_record as record
from lstm_keras.fast_path_conditions import standard_lstm_mismatch

_OP_NAME = "LstmKerasSequence"


@functools.cache
def _gpu_visible():
    return bool(tf.config.list_logical_devices("GPU"))


def _could_record_gradients():
    try:
        return record.could_possibly_record()
    except AttributeError:  # A private API: if it moves, always save.
        return True


def _decline(reason):
    raise NotImplementedError(f"TensorFlow fast path: {reason}")


def check_supported(layer, sequences, training):
    """Raises `NotImplementedError` unless the ops compute this layer."""
    cell = layer.cell
    reason = standard_lstm_mismatch(
        layer, training, allow_recurrent_dropout=True
    )
    if reason:
        _decline(reason)
    if sequences.dtype != tf.float32 or cell.kernel.dtype != "float32":
        _decline(f"dtype {sequences.dtype.name} (float32 only)")
    if _gpu_visible():
        _decline("a GPU is visible (the ops are CPU-only)")
    if export_context.exporting():
        # A graph run elsewhere (TF Serving, a fresh process) lacks our ops.
        _decline("tracing for export")
    graph = tf.compat.v1.get_default_graph()
    if control_flow_util.GraphOrParentsInXlaContext(graph):
        _decline("inside an XLA-compiled function")


def lstm_sequence(layer, sequences, initial_state, mask, training):
    """The fast path; arguments and result as `dispatch.lstm_sequence`."""
    check_supported(layer, sequences, training)
    kernels = build.load_kernels()
    if kernels is None:
        _decline("the custom ops could not be built or loaded")
    cell = layer.cell
    h0, c0 = (tf.convert_to_tensor(s) for s in initial_state)
    if mask is not None:
        mask = tf.cast(mask, tf.bool)
        # Padding may hold anything (NaN too): zero it, as the generic path.
        sequences = tf.where(mask[:, :, None], sequences, 0.0)
        mask = tf.cast(mask, tf.float32)
    else:
        mask = tf.zeros([0], tf.float32)
    if training and cell.dropout > 0:
        input_mask = cell.get_dropout_mask(sequences[:, 0, :])
        sequences = sequences * input_mask[:, None, :]
    if training and cell.recurrent_dropout > 0:
        # One mask per sequence on h_prev, drawn as the generic path does.
        recurrent_mask = cell.get_recurrent_dropout_mask(h0)
    else:
        recurrent_mask = tf.zeros([0], tf.float32)
    units = cell.units
    bias = cell.bias if cell.use_bias else tf.zeros([4 * units], tf.float32)
    # Saving the gates costs memory linear in T; the gradient recomputes
    # them when a tape turns up that the forward pass did not expect.
    save = bool(training) or _could_record_gradients()
    outputs, h_last, c_last, _, _, _ = kernels.lstm_keras_sequence(
        x=sequences,
        kernel=tf.convert_to_tensor(cell.kernel),
        bias=tf.convert_to_tensor(bias),
        recurrent_kernel=tf.convert_to_tensor(cell.recurrent_kernel),
        h0=h0,
        c0=c0,
        mask=mask,
        recurrent_mask=recurrent_mask,
        go_backwards=bool(layer.go_backwards),
        zero_output_for_mask=bool(layer.zero_output_for_mask),
        return_sequences=bool(layer.return_sequences),
        save_for_backward=save,
    )
    return outputs[:, -1], outputs, [h_last, c_last]


def _sequence_grad(op, d_outputs, d_h_last, d_c_last, *unused):
    kernels = build.load_kernels()
    x, kernel, bias, recurrent_kernel, h0, c0, mask, recurrent_mask = op.inputs
    attrs = {
        name: op.get_attr(name)
        for name in ("go_backwards", "zero_output_for_mask")
    }
    if op.get_attr("save_for_backward"):
        h_prev, c_seq, gates = op.outputs[3:]
    else:
        _, _, _, h_prev, c_seq, gates = kernels.lstm_keras_sequence(
            *op.inputs,
            return_sequences=op.get_attr("return_sequences"),
            save_for_backward=True,
            **attrs,
        )

    def zeros_if_none(grad, like):
        return tf.zeros_like(like) if grad is None else grad

    # A tape tells which inputs need no gradient (`skip_input_indices`): the
    # first layer's inputs usually do not, and their product by W^T is
    # then skipped.
    skipped = getattr(op, "skip_input_indices", None) or ()
    compute_d_x = 0 not in skipped
    d_x, d_kernel, d_recurrent_kernel, d_bias, d_h0, d_c0 = (
        kernels.lstm_keras_sequence_grad(
            x=x,
            kernel=kernel,
            recurrent_kernel=recurrent_kernel,
            c0=c0,
            mask=mask,
            recurrent_mask=recurrent_mask,
            h_prev_seq=h_prev,
            c_seq=c_seq,
            gates=gates,
            d_outputs=zeros_if_none(d_outputs, op.outputs[0]),
            d_h_last=zeros_if_none(d_h_last, h0),
            d_c_last=zeros_if_none(d_c_last, c0),
            compute_d_x=compute_d_x,
            **attrs,
        )
    )
    return (
        d_x if compute_d_x else None,
        d_kernel,
        d_bias,
        d_recurrent_kernel,
        d_h0,
        d_c0,
        None,
        None,
    )


try:
    tf.RegisterGradient(_OP_NAME)(_sequence_grad)
except KeyError:  # Already registered (this module was reloaded).
    pass
