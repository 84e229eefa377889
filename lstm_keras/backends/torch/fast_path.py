"""The torch fast path of `lstm_keras.LSTM` (see `lstm_keras.dispatch`).

`lstm_sequence` runs the layer with `torch._VF.lstm`, the kernel behind
`torch.nn.LSTM`: cuDNN for inputs on a CUDA device, torch's fused CPU
implementation for inputs on the CPU (see `CPU_FAST_PATH`). It raises
`NotImplementedError` for what it does not cover, so that dispatch falls
back to the generic path. The weights are converted by Keras's own
`keras.src.backend.torch.rnn.prepare_lstm_params`. Like Keras, it declines
every mask: `torch._VF.lstm` takes no sequence lengths (only packed
sequences, sorted by length).
"""

import keras
import torch

# Keras's conversion of its fused weights to torch's LSTM parameters (the
# gate order is the same, so it transposes and adds a zero `bias_hh`).
from lstm_keras.compat import prepare_lstm_params
from lstm_keras.fast_path_conditions import standard_lstm_mismatch

CPU_FAST_PATH = True
"""Whether inputs on the CPU take this path too. Forward and backward at
batch 64, 100 steps, 40 features, 128 units on 2 cores, it took 45 ms
against the generic path's 86 ms (medians of 9), with the same results
within 1e-5 (tests/test_cudnn.py)."""

# The activations torch's LSTM computes (Keras's `cudnn_ok` for torch).
_TANH = (keras.activations.tanh, torch.tanh, keras.ops.tanh)
_SIGMOID = (keras.activations.sigmoid, torch.sigmoid, keras.ops.sigmoid)


def _cudnn_available():
    return torch.cuda.is_available() and torch.backends.cudnn.is_available()


def _tracing():
    """Whether TorchScript or Dynamo traces the call (Keras skips cuDNN
    there: the trace records device transfers that fail validation)."""
    compiling = getattr(torch.compiler, "is_compiling", lambda: False)
    return torch.jit.is_tracing() or compiling()


def _decline(reason):
    raise NotImplementedError(f"torch fast path: {reason}")


def check_supported(layer, sequences, mask, training):
    """Raises `NotImplementedError` unless `torch._VF.lstm` computes this
    layer here."""
    cell = layer.cell
    device = sequences.device.type
    if device == "cuda":
        if not _cudnn_available():
            _decline("cuDNN is not available")
    elif device != "cpu" or not CPU_FAST_PATH:
        _decline(f"inputs on a {device} device")
    if mask is not None:
        _decline("a mask (torch's LSTM takes no sequence lengths)")
    if _tracing():
        _decline("inside a TorchScript or Dynamo trace")
    reason = standard_lstm_mismatch(
        layer, training, _TANH, _SIGMOID, require_bias=True
    )
    if reason:
        _decline(reason)
    if sequences.dtype != torch.float32 or cell.kernel.dtype != "float32":
        _decline(f"dtype {sequences.dtype} (float32 only)")


def lstm_sequence(layer, sequences, initial_state, mask, training):
    """The fast path; arguments and result as `dispatch.lstm_sequence`."""
    sequences = keras.ops.convert_to_tensor(sequences)
    check_supported(layer, sequences, mask, training)
    cell = layer.cell
    h0, c0 = (keras.ops.convert_to_tensor(s) for s in initial_state)
    if layer.stateful:
        # `keras.layers.RNN.call` overwrites the state variables in place
        # after this call; autograd saved them, so pass copies.
        h0, c0 = h0.clone(), c0.clone()
    if training and cell.dropout > 0:
        input_mask = cell.get_dropout_mask(sequences[:, 0, :])
        sequences = sequences * input_mask[:, None, :]
    if layer.go_backwards:
        sequences = torch.flip(sequences, dims=[1])
    params = prepare_lstm_params(
        keras.ops.convert_to_tensor(cell.kernel),
        keras.ops.convert_to_tensor(cell.recurrent_kernel),
        keras.ops.convert_to_tensor(cell.bias),
        sequences.device,
    )
    try:
        outputs, h, c = torch._VF.lstm(
            sequences,
            (h0[None], c0[None]),  # (layers, batch, units)
            params,
            True,  # has_biases
            1,  # num_layers
            0.0,  # dropout
            torch.is_grad_enabled(),  # train: keep what backward needs
            False,  # bidirectional
            True,  # batch_first
        )
    except (RuntimeError, TypeError, ValueError) as e:
        _decline(f"torch._VF.lstm failed: {e}")
    # Outputs are in processing order, as the generic path returns them.
    last_output = outputs[:, -1]
    if not layer.return_sequences:
        outputs = last_output[:, None]
    return last_output, outputs, [h[0], c[0]]
