"""The generic sequence loop of `lstm_keras.LSTM`, in `keras.ops`.

It runs on every backend, and is the reference each fast path is tested
against (`lstm_keras.dispatch` runs it when no fast path takes the call).
The fast paths call `generic_lstm_sequence_as_fast_path` for the other
branch of a choice made at run time.
"""

import keras
from keras import ops

from lstm_keras.compat import backend_rnn

_UNKNOWN_LENGTH_BOUND = 2**31 - 1


def generic_lstm_sequence(layer, sequences, initial_state, mask, training):
    """The reference sequence loop, in `keras.ops`, for every backend.

    The input projection `x_t @ W + b` of all timesteps is one matmul before
    the loop; each step then only multiplies `h_prev @ U`.

    Masks are applied inside the step rather than by `backend.rnn`, whose
    backends disagree at masked steps (JAX's scan emits `h_prev` where the
    others emit the previous output, and the unrolled loops ignore
    `zero_output_for_mask`). Here, on every backend, a masked step keeps
    `h` and `c` and outputs zeros if `zero_output_for_mask`, else the
    previous step's output (zeros before the first real step), which is
    TensorFlow's behaviour.

    Args:
        layer: The `lstm_keras.LSTM` layer (its cell holds the weights).
        sequences: `(batch, timesteps, input_dim)` inputs.
        initial_state: `[h_0, c_0]`, each `(batch, units)`.
        mask: Optional boolean `(batch, timesteps)`; `True` marks real steps.
        training: Whether dropout is active.

    Returns:
        `(last_output, outputs, [h_T, c_T])`, with `outputs` `(batch,
        timesteps, units)` when `layer.return_sequences`, as
        `keras.layers.RNN.inner_loop` returns them.
    """
    cell = layer.cell
    if layer.stateful and keras.backend.backend() == "torch":
        # A stateful layer's initial state is its state variables, which
        # `keras.layers.RNN.call` overwrites in place after this loop; torch
        # autograd rejects that for tensors the graph saved, so use copies.
        initial_state = [ops.copy(state) for state in initial_state]
    if mask is not None:
        mask = ops.cast(mask, "bool")
        # Padding may hold anything (even NaN): zero it so that masked steps
        # cannot leak NaN into gradients through the unselected branch.
        sequences = ops.where(
            ops.expand_dims(mask, -1), sequences, ops.zeros_like(sequences)
        )
    if training and cell.dropout > 0:
        input_mask = cell.get_dropout_mask(sequences[:, 0, :])
        sequences = sequences * ops.expand_dims(input_mask, 1)
    recurrent_mask = None
    if training and cell.recurrent_dropout > 0:
        recurrent_mask = cell.get_recurrent_dropout_mask(initial_state[0])
    z_x = cell.input_projection(sequences)  # (batch, timesteps, 4 * units)
    states = list(initial_state)

    def lstm_step(z_x_t, h_prev, c_prev):
        if recurrent_mask is not None:
            h_prev = h_prev * recurrent_mask
        return cell.recurrent_step(z_x_t, h_prev, c_prev)

    if mask is None:

        def step(z_x_t, states):
            h, c = lstm_step(z_x_t, states[0], states[1])
            return h, [h, c]

    else:
        # The mask rides along as a second input sequence, and the previous
        # output as a third state, so the loop needs no backend masking.
        z_x = (z_x, ops.expand_dims(mask, -1))
        states.append(ops.zeros_like(states[0]))

        def step(inputs_t, states):
            z_x_t, is_real = inputs_t  # is_real: (batch, 1)
            h_prev, c_prev, output_prev = states
            h, c = lstm_step(z_x_t, h_prev, c_prev)
            if layer.zero_output_for_mask:
                output_prev = ops.zeros_like(h)
            output = ops.where(is_real, h, output_prev)
            h = ops.where(is_real, h, h_prev)
            c = ops.where(is_real, c, c_prev)
            return output, [h, c, output]

    # With `input_length=None`, `backend.rnn` reads `inputs.shape[1]`,
    # which the (z_x, mask) tuple lacks. The length only bounds the loop
    # (TensorFlow's `maximum_iterations`), which stops at the sequences'
    # end anyway, so an unknown length may pass the largest bound.
    input_length = sequences.shape[1] or _UNKNOWN_LENGTH_BOUND
    last_output, outputs, final_states = backend_rnn(
        step,
        z_x,
        states,
        go_backwards=layer.go_backwards,
        unroll=layer.unroll,
        input_length=input_length,
        return_all_outputs=layer.return_sequences,
    )
    return last_output, outputs, list(final_states[:2])


def generic_lstm_sequence_as_fast_path(
    layer, sequences, initial_state, mask, training
):
    """`generic_lstm_sequence`, its result shaped as a fast path's.

    For the other branch of a run-time choice (`tf.cond`, `jax.lax.cond`)
    beside a fast path: both branches must return the same shapes, and the
    fast paths return `outputs` `(batch, 1, units)` without
    `return_sequences` (`keras.layers.RNN.call` reads `outputs` only with
    it). Arguments and return value as for `generic_lstm_sequence`.
    """
    last_output, outputs, states = generic_lstm_sequence(
        layer, sequences, initial_state, mask, training
    )
    if not layer.return_sequences:
        outputs = last_output[:, None]
    return last_output, outputs, list(states)
