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
4. Otherwise the generic path runs: `generic_lstm_sequence`, written in
   `keras.ops`, which runs on every backend.

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
  `python -m lstm_keras.backends.tensorflow`). They cover float32, the
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
  decline: stock TensorFlow kernels (`BlockLSTMV2` for small batches,
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
from keras import ops

# `keras.layers.RNN` itself loops with this function; it handles masks,
# `go_backwards`, `unroll` and every backend's loop primitive.
from keras.src.backend import rnn as backend_rnn

# Backend name -> the fast paths to try, in order (a tuple; a bare callable,
# as tests may set with `monkeypatch.setitem`, counts as a tuple of one).
_FAST_PATHS = {}
_UNKNOWN_LENGTH_BOUND = 2**31 - 1
_DISABLED = threading.local()


def register_fast_path(backend_name, *fns):
    """Registers the fast paths of a backend, tried in the order given.

    Each `fn(layer, sequences, initial_state, mask, training)` runs the
    whole sequence and returns `(last_output, outputs, [h, c])` like
    `generic_lstm_sequence`, or raises `NotImplementedError` to decline, and
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
            (TensorFlow's `BlockLSTMV2` does). Defaults to `False`.
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
        export_context.install_keras_export_hook()
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
    return generic_lstm_sequence(
        layer, sequences, initial_state, mask, training
    )


def generic_lstm_sequence_as_fast_path(
    layer, sequences, initial_state, mask, training
):
    """`generic_lstm_sequence`, its result shaped as a fast path's.

    For the other branch of a run-time choice (`tf.cond`, `jax.lax.cond`)
    beside a fast path: both branches must return the same shapes, and the
    fast paths return `outputs` `(batch, 1, units)` without
    `return_sequences` (`keras.layers.RNN.call` reads `outputs` only with
    it). Arguments and return value as for `lstm_sequence`.
    """
    last_output, outputs, states = generic_lstm_sequence(
        layer, sequences, initial_state, mask, training
    )
    if not layer.return_sequences:
        outputs = last_output[:, None]
    return last_output, outputs, list(states)


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


_register_builtin_fast_paths()
