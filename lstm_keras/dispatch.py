"""The one place where `lstm_keras.LSTM` chooses how to run its sequence loop.

Dispatch rules, in order:

1. Fast paths are skipped altogether inside `fast_paths_disabled()`, when
   the environment variable `LSTM_KERAS_FAST_PATH` is `0`, or when the layer
   has `use_cudnn=False`.
2. Otherwise the fast path registered for the active Keras backend
   (`register_fast_path`) is tried first. It either returns the result or
   raises `NotImplementedError` for a configuration it does not cover, and
   then the next rule applies. Each fast path is tested against the generic
   path (outputs and gradients within 1e-5 in float32).
3. `use_cudnn=True` with no fast path that took the call is an error, as in
   `keras.layers.LSTM`.
4. Otherwise the generic path runs: `generic_lstm_sequence`, written in
   `keras.ops`, which runs on every backend.

Fast paths:

- TensorFlow (`lstm_keras.backends.tensorflow`): two C++ CPU ops, the
  sequence and its backpropagation through time, built on first use from the
  installed TensorFlow's headers (prebuild with
  `python -m lstm_keras.backends.tensorflow`). It covers float32, the
  default activations (tanh, sigmoid), masks (any padding, fully masked
  rows), initial states, `go_backwards`, `return_sequences`,
  `return_state`, `stateful`, `zero_output_for_mask` and input dropout. It
  declines (so the generic path runs) for: `unroll=True`; activations other
  than tanh/sigmoid; recurrent dropout while training; any dtype but
  float32 (float16, bfloat16, float64, mixed precision); the cell variants
  (`use_peepholes`, `layer_norm`, `projection_units`); inside an
  XLA-compiled function (`jit_compile=True`); when a GPU is visible (no
  cuDNN path yet); and when the ops cannot be built or loaded (one
  warning). Exported SavedModels should be traced inside
  `fast_paths_disabled()` so that they hold no custom op.
- JAX and torch: none; the generic path runs.
"""

import contextlib
import os
import threading

import keras
from keras import ops

# `keras.layers.RNN` itself loops with this function; it handles masks,
# `go_backwards`, `unroll` and every backend's loop primitive.
from keras.src.backend import rnn as backend_rnn

_FAST_PATHS = {}
_DISABLED = threading.local()


def register_fast_path(backend_name, fn):
    """Registers `fn(layer, sequences, initial_state, mask, training)`.

    `fn` runs the whole sequence for `backend_name` ("tensorflow", "jax" or
    "torch") and returns `(last_output, outputs, [h, c])` like
    `generic_lstm_sequence`, or raises `NotImplementedError` to decline.
    """
    _FAST_PATHS[backend_name] = fn


@contextlib.contextmanager
def fast_paths_disabled():
    """Forces the generic path for layers called (or traced) inside it.

    Use it where a graph must not hold a backend's custom ops, e.g. around
    a SavedModel export, or to compare a fast path with the generic path.

    Example:

    >>> layer = lstm_keras.LSTM(3)
    >>> with lstm_keras.dispatch.fast_paths_disabled():
    ...     outputs = layer(np.zeros((2, 4, 5), "float32"))
    """
    depth = getattr(_DISABLED, "depth", 0)
    _DISABLED.depth = depth + 1
    try:
        yield
    finally:
        _DISABLED.depth = depth


def fast_paths_enabled():
    """Whether rule 1 of this module's docstring lets fast paths run."""
    if getattr(_DISABLED, "depth", 0):
        return False
    return os.environ.get("LSTM_KERAS_FAST_PATH", "1").strip() != "0"


def _register_builtin_fast_paths():
    if keras.backend.backend() == "tensorflow":
        from lstm_keras.backends.tensorflow import fast_path

        register_fast_path("tensorflow", fast_path.lstm_sequence)


def lstm_sequence(layer, sequences, initial_state, mask, training):
    """Runs `layer` over `sequences` by the rules in this module's docstring.

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
    fast_path = _FAST_PATHS.get(keras.backend.backend())
    if (
        fast_path is not None
        and layer.use_cudnn in ("auto", True)
        and fast_paths_enabled()
    ):
        try:
            return fast_path(layer, sequences, initial_state, mask, training)
        except NotImplementedError:
            pass
    if layer.use_cudnn is True:
        raise ValueError(
            "use_cudnn=True was specified, but no fast path supports this "
            "layer configuration with this backend. Pass use_cudnn='auto' "
            "to fall back to the generic implementation."
        )
    return generic_lstm_sequence(
        layer, sequences, initial_state, mask, training
    )


def generic_lstm_sequence(layer, sequences, initial_state, mask, training):
    """The reference sequence loop, in `keras.ops`, for every backend.

    The input projection `x_t @ W + b` of all timesteps is one matmul before
    the loop; each step then only multiplies `h_prev @ U`. Arguments and
    return value as for `lstm_sequence`.

    Masks are applied inside the step rather than by `backend.rnn`, whose
    backends disagree at masked steps (JAX's scan emits `h_prev` where the
    others emit the previous output, and the unrolled loops ignore
    `zero_output_for_mask`). Here, on every backend, a masked step keeps
    `h` and `c` and outputs zeros if `zero_output_for_mask`, else the
    previous step's output (zeros before the first real step), which is
    TensorFlow's behaviour.
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
    units = cell.units

    def lstm_step(z_x_t, h_prev, c_prev):
        if recurrent_mask is not None:
            h_prev = h_prev * recurrent_mask
        return cell.recurrent_step(z_x_t, h_prev, c_prev)

    if mask is None:

        def step(z_x_t, states):
            h, c = lstm_step(z_x_t, states[0], states[1])
            return h, [h, c]

    else:
        # The mask rides along as one more input column, and the previous
        # output as a third state, so the loop needs no backend masking.
        z_x = ops.concatenate(
            [z_x, ops.cast(ops.expand_dims(mask, -1), z_x.dtype)], axis=-1
        )
        states.append(ops.zeros_like(states[0]))

        def step(z_x_and_mask_t, states):
            h_prev, c_prev, output_prev = states
            z_x_t = z_x_and_mask_t[:, : 4 * units]
            is_real = z_x_and_mask_t[:, 4 * units :] > 0  # (batch, 1)
            h, c = lstm_step(z_x_t, h_prev, c_prev)
            if layer.zero_output_for_mask:
                output_prev = ops.zeros_like(h)
            output = ops.where(is_real, h, output_prev)
            h = ops.where(is_real, h, h_prev)
            c = ops.where(is_real, c, c_prev)
            return output, [h, c, output]

    last_output, outputs, final_states = backend_rnn(
        step,
        z_x,
        states,
        go_backwards=layer.go_backwards,
        unroll=layer.unroll,
        input_length=sequences.shape[1],
        return_all_outputs=layer.return_sequences,
    )
    return last_output, outputs, list(final_states[:2])


_register_builtin_fast_paths()
