"""The configuration conditions the fast paths of `lstm_keras.LSTM` share.

Each fast path (`lstm_keras.backends`) declines, by raising
`NotImplementedError`, a layer whose configuration its kernel does not
compute; `standard_lstm_mismatch` says why, for the conditions every such
kernel of the standard LSTM has in common.
"""

import keras


def standard_lstm_mismatch(
    layer,
    training,
    activations=(keras.activations.tanh,),
    recurrent_activations=(keras.activations.sigmoid,),
    require_bias=False,
    allow_peepholes=False,
    allow_unroll=False,
    allow_recurrent_dropout=False,
):
    """Why a kernel of the standard LSTM cannot run `layer`, or `None`.

    The conditions every fast path shares (cuDNN's and our CPU ops'):
    no unrolling, none of the cell variants, the default activations, and
    (cuDNN's kernels lack it) no recurrent dropout while training.

    Args:
        layer: An `lstm_keras.LSTM`.
        training: Whether dropout is active.
        activations: The activations the kernel accepts for `activation`.
            Defaults to Keras's `tanh`.
        recurrent_activations: Those it accepts for
            `recurrent_activation`. Defaults to Keras's `sigmoid`.
        require_bias: Whether the kernel needs `use_bias=True` (cuDNN's
            condition in Keras). Defaults to `False`.
        allow_peepholes: Whether the kernel computes the peephole variant
            (TensorFlow's `BlockLSTM` does). Defaults to `False`.
        allow_unroll: Whether `unroll=True` may run it (a kernel that runs
            a traced graph only, where unrolling changes nothing). Defaults
            to `False`.
        allow_recurrent_dropout: Whether the kernel takes a recurrent
            dropout mask (our CPU ops do). Defaults to `False`.

    Returns:
        A short reason for a `NotImplementedError`, or `None` when the
        layer's configuration is the kernel's.
    """
    cell = layer.cell
    if layer.unroll and not allow_unroll:
        return "unroll=True"
    if (
        (getattr(cell, "use_peepholes", False) and not allow_peepholes)
        or getattr(cell, "layer_norm", False)
        or getattr(cell, "projection_units", None)
    ):
        return "cell variant (peepholes, layer norm or projection)"
    if not any(cell.activation is f for f in activations):
        return "activation is not tanh"
    if not any(cell.recurrent_activation is f for f in recurrent_activations):
        return "recurrent_activation is not sigmoid"
    if require_bias and not cell.use_bias:
        return "use_bias=False (Keras's cuDNN condition)"
    if training and cell.recurrent_dropout > 0 and not allow_recurrent_dropout:
        return "recurrent dropout"
    return None
