"""The path graphs for LiteRT run: TFLite's fused LSTM kernel, or a loop.

While a graph is traced for the TFLite converter
(`export_context.tracing_for_litert()`), `lstm_sequence` here runs the
layer so that the converter turns it into its fused
`UNIDIRECTIONAL_SEQUENCE_LSTM` kernel wherever that kernel computes it, and
into builtin ops (a `WHILE` loop) everywhere else; never into a Flex
(TensorFlow) op or a custom op.

The fused kernel comes from the converter's pass for Keras LSTMs: it
replaces the body of a function marked with the attributes `api_implements`
= `"lstm_<unique id>"`, `time_major` and `go_backwards` (as tf-keras marks
its LSTM), whose arguments are `(inputs, init_h, init_c, kernel,
recurrent_kernel, bias)` with the gates in Keras's order (input, forget,
candidate, output) and whose results are `(last_output, outputs, h, c,
runtime)`. The pass fuses the function only when

- its initial states have a static shape, so the batch size is fixed at
  conversion (a model whose input has `batch_size` set, or
  `lstm_keras.export.export_litert`, which fixes it);
- the final states `h` and `c` are not used (`return_state=False`): the
  fused kernel does not output them;
- there is no mask, or the batch is one row: its real steps are gathered
  into one unmasked sequence (the generic path's masked steps keep the
  states), and the outputs are put back in place after it.

Otherwise (a free batch size, `return_state`, a mask on several rows,
peepholes) the layer runs the serving path's masked `tf.while_loop`, which
converts to builtins; so does the function's body where the converter
declines to fuse it.

The fused kernel keeps its states in variable tensors when they are
constants, and would carry them from one invocation to the next; so the
initial states are passed as values computed from the inputs (exact zeros
added), which keeps every invocation independent.

Covered: float32, `activation` tanh, `recurrent_activation` sigmoid, with or
without bias, initial states, `go_backwards`, `return_sequences`,
`zero_output_for_mask`; peepholes and masks the fused kernel cannot take
run in the loop. Declined (the generic `keras.ops` loop runs, which also
converts to builtins): layer norm, projection, other activations or dtypes.
The fused kernel's own peephole, projection and layer-norm inputs are not
used: the converter's Keras-LSTM pass has no way to pass them, and its
layer norm (of each gate's pre-activation, scale only) is not this layer's.
"""

import uuid
import zlib

import tensorflow as tf

from lstm_keras.backends.tensorflow import export_context
from lstm_keras.backends.tensorflow import serving


def _decline(reason, layer=None):
    if layer is not None:
        export_context.record_litert_layer(layer.name, reason)
    raise NotImplementedError(f"LiteRT path: {reason}")


def check_supported(layer, sequences, training):
    """Raises `NotImplementedError` unless this path computes the layer."""
    if not export_context.tracing_for_litert():
        _decline("not tracing for the TFLite converter")
    reason = serving.stock_op_mismatch(layer, sequences, training)
    if reason:
        _decline(reason, layer)


def lstm_sequence(layer, sequences, initial_state, mask, training):
    """The LiteRT path; arguments and result as `dispatch.lstm_sequence`.

    Returns `(last_output, outputs, [h, c])` with `outputs` `(batch, 1,
    units)` unless `layer.return_sequences`.
    """
    check_supported(layer, sequences, training)
    weights = serving._Weights(layer.cell)
    h0, c0 = (tf.convert_to_tensor(s) for s in initial_state)
    batch = sequences.shape[0]
    keeps_states = layer.return_state or layer.stateful
    loop_reason = None
    if batch is None:
        loop_reason = (
            "a free batch size (the kernel's states are sized at conversion)"
        )
    elif sequences.shape[2] is None:
        loop_reason = "an unknown feature size"
    elif weights.use_peepholes:
        loop_reason = "peepholes (the converter passes no peephole weights)"
    elif keeps_states:
        loop_reason = "return_state (the kernel outputs no final states)"
    elif mask is not None and batch != 1:
        loop_reason = "a mask on more than one row (the kernel takes none)"
    export_context.record_litert_layer(layer.name, loop_reason)
    if loop_reason is not None:
        last_output, outputs, h, c = _loop(
            layer, weights, sequences, mask, h0, c0
        )
    elif mask is None:
        last_output, outputs, h, c = _fused(layer, weights, sequences, h0, c0)
    else:
        last_output, outputs, h, c = _fused_masked_row(
            layer, weights, sequences, mask, h0, c0
        )
    if not layer.return_sequences:
        outputs = last_output[:, None]
    if not (layer.return_state or layer.stateful):
        # The final states are not the layer's outputs. Any use of the
        # fused call's `h` or `c`, even a dead op, stops the converter
        # from fusing it, so none is made.
        h, c = h0, c0
    return last_output, outputs, [h, c]


def _loop(layer, weights, x, mask, h0, c0):
    """The serving path's masked loop, one shard: builtins only."""
    if mask is not None:
        mask = tf.cast(mask, tf.bool)
        x = tf.where(tf.expand_dims(mask, -1), x, 0.0)
    return serving._loop(
        layer,
        weights.in_loop_order(),
        x,
        mask,
        h0,
        c0,
        array=x.shape[0] is not None,
    )


def _not_constant(state, sequences, key):
    """`state` plus exact zeros that depend on `sequences`.

    A constant initial state becomes a variable tensor of the fused kernel,
    which carries it over from one invocation to the next. `x > t` is a
    boolean, so the zeros are exact whatever `x` holds (NaN too). The
    threshold `t` comes from `key` (the layer's name and the state's), so
    that no two states share one value: the converter refuses a value as
    the state of two fused calls (the two directions of a `Bidirectional`
    get the same initial states), or as both states of one.
    """
    threshold = zlib.crc32(key.encode()) / 2**32
    above = tf.greater(sequences[:, 0, :1], threshold)
    return state + tf.cast(above, tf.float32) * 0.0


def _fused(layer, weights, x, h0, c0):
    """The whole (unmasked) sequence as one fused-kernel function call.

    Returns `(last_output, outputs, h, c)`, `outputs` `(batch, timesteps,
    units)`.
    """
    attributes = {
        "api_implements": f"lstm_{uuid.uuid4()}",
        "time_major": False,
        "go_backwards": bool(layer.go_backwards),
    }
    units = weights.units

    def keras_lstm(inputs, init_h, init_c, kernel, recurrent_kernel, bias):
        # What runs when the converter does not fuse the call (and in
        # TensorFlow itself): the same LSTM as builtin ops.
        loop_weights = serving._Weights.from_tensors(
            units, kernel, recurrent_kernel, bias
        )
        last_output, outputs, h, c = serving._loop(
            layer,
            loop_weights.in_loop_order(),
            inputs,
            None,
            init_h,
            init_c,
            return_sequences=True,
        )
        return last_output, outputs, h, c, tf.constant(0.0)

    function = tf.function(
        keras_lstm, experimental_attributes=attributes, autograph=False
    )
    if export_context.tracing_for_full_integer():
        # Quantized throughout, states computed from the input come out in
        # other types than the integer kernel's (int8 h, int16 c) and
        # corrupt the interpreter's memory. Constant states become
        # variable tensors, which the kernel carries from one invocation
        # to the next: a full-integer file's runner resets them before
        # each sequence (`reset_all_variables`), as documented.
        init_h, init_c = h0, c0
    else:
        init_h = _not_constant(h0, x, f"{layer.name}/h")
        init_c = _not_constant(c0, x, f"{layer.name}/c")
    kernel, recurrent_kernel = weights.kernels_in(serving.KERAS_GATES)
    last_output, outputs, h, c, _ = function(
        tf.reshape(x, [x.shape[0], -1, x.shape[2]]),
        init_h,
        init_c,
        kernel,
        recurrent_kernel,
        weights.bias,
    )
    return last_output, outputs, h, c


def _fused_masked_row(layer, weights, x, mask, h0, c0):
    """One masked row (batch 1) through the fused kernel, any mask.

    The generic path's masked step keeps `h` and `c`, so the row's states
    are those of the LSTM over its real steps alone: those are gathered
    into one sequence and run fused. Each step's output is then the last
    real step's output so far (processing order: reversed with
    `go_backwards`), or zeros: at masked steps with
    `zero_output_for_mask`, and before the first real step. A row without
    a real step runs one (padding) step, whose outputs are all replaced by
    zeros. No branch and no loop, so the file holds the weights once.

    Returns `(last_output, outputs, h, c)`; `h` and `c` are not the final
    states (the fused kernel has none), so the caller needs them unused.
    """
    is_real = tf.cast(mask, tf.bool)[0]
    x = tf.where(is_real[None, :, None], x, 0.0)
    positions = tf.where(is_real)[:, 0]
    real_steps = tf.size(positions)
    # At least one step, so that the kernel never runs an empty sequence.
    positions = tf.concat([positions, tf.zeros([1], positions.dtype)], 0)
    positions = positions[: tf.maximum(real_steps, 1)]
    last_output, real_outputs, h, c = _fused(
        layer, weights, tf.gather(x, positions, axis=1), h0, c0
    )
    any_real = real_steps > 0
    if layer.go_backwards:
        is_real = tf.reverse(is_real, axis=[0])
    last_is_real = is_real[-1]
    if layer.zero_output_for_mask:
        keep_last = tf.logical_and(any_real, last_is_real)
    else:
        keep_last = any_real
    last_output = tf.where(keep_last, last_output, 0.0)
    # Real steps up to and including each step, in processing order.
    count = tf.cumsum(tf.cast(is_real, tf.int32))
    outputs = tf.gather(real_outputs, tf.maximum(count - 1, 0), axis=1)
    keep = is_real if layer.zero_output_for_mask else count > 0
    outputs = tf.where(
        tf.logical_and(keep, any_real)[None, :, None], outputs, 0.0
    )
    return last_output, outputs, h, c
