"""The one place where `lstm_keras.LSTM` chooses how to run its sequence loop.

Dispatch rules, in order:

1. Fast paths are skipped altogether inside `fast_paths_disabled()`, when
   the environment variable `LSTM_KERAS_FAST_PATH` is `0`, or when the layer
   has `use_cudnn=False`.
2. Otherwise the fast paths registered for the active Keras backend
   (`register_fast_path`) are tried in their registered order. Each either
   returns the result or raises `NotImplementedError` for a configuration
   it does not cover, and then the next one is tried. Each fast path is
   tested against the generic path (outputs and gradients within 1e-5 in
   float32).
3. `use_cudnn=True` with no fast path that took the call is an error, as in
   `keras.layers.LSTM`.
4. Otherwise the generic path runs:
   `lstm_keras.generic_loop.generic_lstm_sequence`, written in `keras.ops`,
   which runs on every backend.

Dependencies go one way: this module imports the backends' fast paths
(`lstm_keras.backends`, for the active backend only), and they import what
they share from `lstm_keras.generic_loop` and
`lstm_keras.fast_path_conditions`, never from this module.

Fast paths, in the order they are tried (TensorFlow: cuDNN, then its CPU
ops, then the LiteRT path, then the stock-op path of exports; JAX: cuDNN;
torch: `torch._VF.lstm`):

- cuDNN (`lstm_keras.backends.tensorflow.cudnn`: `CudnnRNNV3`;
  `lstm_keras.backends.jax.cudnn`: `jax.experimental.rnn.lstm`;
  `lstm_keras.backends.torch.fast_path`: `torch._VF.lstm`), only where a
  GPU is there: TensorFlow lists a logical GPU; JAX's default backend is
  `"gpu"`; torch's inputs are on a CUDA device and cuDNN is available.
  The weights are converted as Keras's own cuDNN functions convert them.
  The conditions are Keras's: `activation` tanh, `recurrent_activation`
  sigmoid, `use_bias=True`, `unroll=False`, no recurrent dropout while
  training, plus float32 only and none of the cell variants
  (`use_peepholes`, `layer_norm`, `projection_units`). Input dropout is
  applied to the inputs first. Initial states, `go_backwards`,
  `return_sequences`, `return_state`, `stateful` and
  `zero_output_for_mask` are covered, and the outputs at masked steps are
  made what the generic path gives (cuDNN leaves zeros). Masks:
  TensorFlow and JAX run right-padded masks as cuDNN's sequence lengths;
  a mask that is not right-padded, or that masks a whole row, never
  reaches cuDNN and is never asserted on: with the mask's value known
  (eager) the path declines; traced, a `tf.cond` / `jax.lax.cond` on the
  mask runs the generic path at run time. torch declines every mask (its
  LSTM takes no sequence lengths). TensorFlow's path also declines inside
  an XLA-compiled function (`jit_compile=True`; `layer_supports_jit` says
  which layers XLA would keep off cuDNN, for their `supports_jit`, as
  `keras.layers.LSTM` sets it) and while tracing for export (below);
  torch's inside a TorchScript or Dynamo trace.
- torch on the CPU: the same `torch._VF.lstm` call, the torch backend's
  fused CPU kernel (about twice as fast as the generic path, forward and
  backward, at batch 64, 100 steps, 40 features, 128 units), with the same
  conditions (so no mask); `CPU_FAST_PATH = False` in that module turns it
  off.
- TensorFlow's CPU ops (`lstm_keras.backends.tensorflow.fast_path`): two
  C++ ops, the sequence and its backpropagation through time, built on
  first use from the installed TensorFlow's headers (prebuild with
  `python -m training.build_ops`). They cover float32, the
  default activations (tanh, sigmoid), masks (any padding, fully masked
  rows), initial states, `go_backwards`, `return_sequences`,
  `return_state`, `stateful`, `zero_output_for_mask`, input dropout and
  recurrent dropout (the mask on `h_prev`, forward and backward).
  They decline (so the next path runs) for: `unroll=True`; activations
  other than tanh/sigmoid; any dtype but
  float32 (float16, bfloat16, float64, mixed precision); the cell variants;
  inside an XLA-compiled function (`jit_compile=True`); when a GPU is
  visible (the cuDNN path, or else the generic path, runs there); while
  tracing for export; and when the ops cannot be built or loaded (one
  warning).
- TensorFlow's export path (`lstm_keras.backends.tensorflow.serving`),
  only while a graph is traced for export
  (`lstm_keras.backends.tensorflow.export_context.exporting()`: inside
  `lstm_keras.export`, `keras.export.ExportArchive.write_out` and so
  `model.export()`, and `tf.saved_model.save`), where the two paths above
  decline: stock TensorFlow kernels (`BlockLSTM` for small batches,
  packed loops for right-padded ones, a masked `tf.while_loop`
  otherwise), so that exported graphs hold neither a
  custom op nor a `CudnnRNN` op and serve on any TensorFlow, TF Serving
  included. It covers float32, the default activations, peepholes and any
  mask; other configurations export on the generic path.
- TensorFlow's LiteRT path (`lstm_keras.backends.tensorflow.litert`), only
  while a graph is traced for the TFLite converter
  (`export_context.tracing_for_litert()`: inside
  `lstm_keras.export.export_litert` and
  `tf.lite.TFLiteConverter.from_keras_model`), where the export path
  declines: a function the converter turns into its fused
  `UNIDIRECTIONAL_SEQUENCE_LSTM` kernel (fixed batch size, final states
  unused, no mask or a batch of one), else the export path's masked loop,
  all builtin LiteRT ops. Same coverage as the export path.
"""

import contextlib
import os
import threading

import keras

from lstm_keras import generic_loop

# Backend name -> the fast paths to try, in order (a tuple; a bare callable,
# as tests may set with `monkeypatch.setitem`, counts as a tuple of one).
_FAST_PATHS = {}
_DISABLED = threading.local()


def register_fast_path(backend_name, *fns):
    """Registers the fast paths of a backend, tried in the order given.

    Each `fn(layer, sequences, initial_state, mask, training)` runs the
    whole sequence and returns `(last_output, outputs, [h, c])` like
    `lstm_sequence`, or raises `NotImplementedError` to decline, and
    then the next one is tried. The registration replaces the backend's
    earlier one, so `register_fast_path(name, fn)` makes `fn` its only
    fast path.

    Args:
        backend_name: `"tensorflow"`, `"jax"` or `"torch"`.
        *fns: The fast paths, the first tried first.
    """
    for fn in fns:
        if not callable(fn):
            raise TypeError(
                "Received an invalid value for argument `fns`, expected "
                f"callables, got {fn!r}."
            )
    _FAST_PATHS[backend_name] = tuple(fns)


def registered_fast_paths(backend_name=None):
    """The fast paths of `backend_name` (default: the active backend), in
    the order they are tried."""
    fns = _FAST_PATHS.get(backend_name or keras.backend.backend(), ())
    return (fns,) if callable(fns) else tuple(fns)


@contextlib.contextmanager
def fast_paths_disabled():
    """Forces the generic path for layers called (or traced) inside it.

    Use it to compare a fast path with the generic path, or where a graph
    is converted by a tool that lacks TensorFlow's fused LSTM kernel (a
    LiteRT or ONNX export). SavedModel exports need nothing: they trace on
    stock kernels by themselves.

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


def layer_supports_jit(layer):
    """Whether XLA compilation leaves `layer`'s dispatch unchanged.

    `False` where TensorFlow's cuDNN path could run the layer on a GPU (its
    configuration allows cuDNN; no device is looked up): cuDNN's ops have
    no XLA kernels, so inside `jit_compile=True` the generic path would run
    instead. `keras.layers.LSTM` sets its `supports_jit` so, and Keras's
    `jit_compile="auto"` then leaves XLA off for the model (on a CPU-only
    machine Keras leaves it off anyway).

    Args:
        layer: An `lstm_keras.LSTM`, its cell created.

    Returns:
        A boolean, for the layer's `supports_jit`.
    """
    if layer.use_cudnn not in ("auto", True) or not fast_paths_enabled():
        return True
    if keras.backend.backend() == "tensorflow":
        from lstm_keras.backends.tensorflow import cudnn

        return not cudnn.may_run(layer)
    return True


def _register_builtin_fast_paths():
    # Imported here, for the active backend only: each module imports its
    # backend's framework.
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from lstm_keras.backends.tensorflow import cudnn
        from lstm_keras.backends.tensorflow import export_context
        from lstm_keras.backends.tensorflow import fast_path
        from lstm_keras.backends.tensorflow import litert
        from lstm_keras.backends.tensorflow import serving

        register_fast_path(
            "tensorflow",
            cudnn.lstm_sequence,
            fast_path.lstm_sequence,
            litert.lstm_sequence,
            serving.lstm_sequence,
        )
        export_context.install_keras_export_hook(
            prepare=serving.create_stacked_kernels
        )
        export_context.install_litert_converter_hook()
    elif backend == "jax":
        from lstm_keras.backends.jax import cudnn

        register_fast_path("jax", cudnn.lstm_sequence)
    elif backend == "torch":
        from lstm_keras.backends.torch import fast_path

        register_fast_path("torch", fast_path.lstm_sequence)


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
    if layer.use_cudnn in ("auto", True) and fast_paths_enabled():
        for fast_path in registered_fast_paths():
            try:
                return fast_path(
                    layer, sequences, initial_state, mask, training
                )
            except NotImplementedError:
                pass
    if layer.use_cudnn is True:
        raise ValueError(
            "use_cudnn=True was specified, but no fast path supports this "
            "layer configuration with this backend. Pass use_cudnn='auto' "
            "to fall back to the generic implementation."
        )
    return generic_loop.generic_lstm_sequence(
        layer, sequences, initial_state, mask, training
    )


_register_builtin_fast_paths()
