"""The JAX cuDNN fast path of `lstm_keras.LSTM` (see `lstm_keras.dispatch`).

`lstm_sequence` runs the layer with `jax.experimental.rnn.lstm` (cuDNN; it
has no CPU kernel) when JAX's default backend is a GPU, and raises
`NotImplementedError` for what it does not cover, so that dispatch falls
back to the generic path. The weights are packed as Keras's own
`keras.src.backend.jax.rnn.lstm` packs them. Unlike Keras, which declines
every mask, right-padded masks run on cuDNN as sequence lengths; any other
mask (not right-padded, or a fully masked row) goes to the generic path,
decided in Python for a concrete mask and by `jax.lax.cond` for a traced
one. Outputs at masked steps are what `generic_loop.generic_lstm_sequence`
gives.
"""

import jax
import jax.numpy as jnp
import keras

# The module, not the function: looked up at call time, so that tests can
# swap cuDNN's `lstm` for its CPU reference.
from jax.experimental import rnn as jax_rnn

from lstm_keras.fast_path_conditions import standard_lstm_mismatch
from lstm_keras.generic_loop import generic_lstm_sequence_as_fast_path

# The activations cuDNN computes (Keras's `cudnn_ok` for JAX).
_TANH = (keras.activations.tanh, jnp.tanh, keras.ops.tanh)
_SIGMOID = (keras.activations.sigmoid, keras.ops.sigmoid)


def _gpu_available():
    return jax.default_backend() == "gpu"


def _decline(reason):
    raise NotImplementedError(f"JAX cuDNN path: {reason}")


def check_supported(layer, sequences, training):
    """Raises `NotImplementedError` unless cuDNN computes this layer here."""
    cell = layer.cell
    if not _gpu_available():
        _decline("JAX's default backend is not a GPU")
    reason = standard_lstm_mismatch(
        layer, training, _TANH, _SIGMOID, require_bias=True
    )
    if reason:
        _decline(reason)
    if sequences.dtype != jnp.float32 or cell.kernel.dtype != "float32":
        _decline(f"dtype {sequences.dtype} (float32 only)")


def mask_is_supported(mask):
    """Boolean scalar: every row right-padded, with at least one real step.

    Args:
        mask: Boolean `(batch, timesteps)`, `True` for real steps.
    """
    lengths = jnp.sum(mask, axis=1)
    right_padded = jnp.arange(mask.shape[1])[None] < lengths[:, None]
    return jnp.all(mask == right_padded) & jnp.all(lengths > 0)


def cudnn_weights(kernel, recurrent_kernel, bias):
    """The flat weights of `jax.experimental.rnn.lstm` for one layer.

    cuDNN's layout `[W_ih, W_hh, b_ih, b_hh]`, each matrix `(4H, in)`, gates
    in Keras's order; `bias` goes in `b_ih` and `b_hh` is zero (as in
    Keras's `keras.src.backend.jax.rnn.lstm`).
    """
    return jnp.concatenate(
        [
            kernel.T.ravel(),
            recurrent_kernel.T.ravel(),
            bias,
            jnp.zeros_like(bias),
        ]
    )


def _reverse_sequence(x, lengths):
    """Reverses each row's first `lengths` steps (`tf.reverse_sequence`)."""
    steps = jnp.arange(x.shape[1])[None]  # (1, timesteps)
    index = jnp.where(
        steps < lengths[:, None], lengths[:, None] - 1 - steps, steps
    )
    return jnp.take_along_axis(x, index[:, :, None], axis=1)


def lstm_sequence(layer, sequences, initial_state, mask, training):
    """The cuDNN path; arguments and result as `dispatch.lstm_sequence`."""
    check_supported(layer, sequences, training)
    h0, c0 = (jnp.asarray(s) for s in initial_state)
    if mask is None:
        return _cudnn_sequence(layer, sequences, h0, c0, None, training)
    mask = jnp.asarray(mask).astype(bool)
    supported = mask_is_supported(mask)
    try:
        known = bool(supported)
    except jax.errors.ConcretizationTypeError:  # Traced, e.g. under jit.
        known = None
    if known is not None:
        if not known:
            _decline("the mask is not right-padded or masks a whole row")
        return _cudnn_sequence(layer, sequences, h0, c0, mask, training)
    return jax.lax.cond(
        supported,
        lambda: _cudnn_sequence(layer, sequences, h0, c0, mask, training),
        lambda: generic_lstm_sequence_as_fast_path(
            layer, sequences, [h0, c0], mask, training
        ),
    )


def _cudnn_sequence(layer, sequences, h0, c0, mask, training):
    """cuDNN over the batch; `mask` is None or cuDNN-compatible."""
    cell = layer.cell
    batch, timesteps, input_dim = sequences.shape
    if mask is not None:
        # Padding may hold anything (NaN too): zero it, as the generic path
        # does, so that no gradient through it can be NaN.
        sequences = jnp.where(mask[:, :, None], sequences, 0.0)
        lengths = jnp.sum(mask, axis=1, dtype=jnp.int32)
    else:
        lengths = jnp.full((batch,), timesteps, jnp.int32)
    if training and cell.dropout > 0:
        input_mask = cell.get_dropout_mask(sequences[:, 0, :])
        sequences = sequences * input_mask[:, None, :]
    weights = cudnn_weights(
        jnp.asarray(keras.ops.convert_to_tensor(cell.kernel)),
        jnp.asarray(keras.ops.convert_to_tensor(cell.recurrent_kernel)),
        jnp.asarray(keras.ops.convert_to_tensor(cell.bias)),
    )
    if layer.go_backwards:
        # Padding stays at the end, where cuDNN expects it (as Keras's TF).
        sequences = _reverse_sequence(sequences, lengths)
    try:
        outputs, h, c = jax_rnn.lstm(
            sequences,
            h0[None],  # (layers, batch, units)
            c0[None],
            weights,
            lengths,
            input_size=input_dim,
            hidden_size=cell.units,
            num_layers=1,
            dropout=0.0,
            bidirectional=False,
        )
    except (RuntimeError, TypeError, ValueError) as e:
        _decline(f"jax.experimental.rnn.lstm failed: {e}")
    h, c = h[0], c[0]
    if layer.go_backwards:
        # Back to processing order: the padding's steps come first.
        outputs = jnp.flip(_reverse_sequence(outputs, lengths), axis=1)
    if mask is not None:
        # Masked steps output zeros before the first real step (all of them
        # when going backwards) and, after the last one, zeros only with
        # `zero_output_for_mask`, else the last real output, which is h.
        if layer.go_backwards:
            is_real = jnp.flip(mask, axis=1)
            padding_output = jnp.zeros_like(outputs)
        else:
            is_real = mask
            padding_output = jnp.zeros_like(outputs)
            if not layer.zero_output_for_mask:
                padding_output = padding_output + h[:, None]
        outputs = jnp.where(is_real[:, :, None], outputs, padding_output)
    last_output = outputs[:, -1]
    if not layer.return_sequences:
        outputs = last_output[:, None]
    return last_output, outputs, [h, c]
