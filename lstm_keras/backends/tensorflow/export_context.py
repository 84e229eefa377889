"""Whether TensorFlow is tracing a graph to be exported.

A graph traced for export is run by another program (TF Serving, a fresh
TensorFlow, the TFLite converter) that has neither this package's custom
ops nor, often, a GPU. While `exporting()` is true the fast paths that add
such ops (our C++ ops, cuDNN's) decline, and `lstm_keras.LSTM` runs on
stock TensorFlow ops instead (`lstm_keras.backends.tensorflow.serving`).

While `tracing_for_litert()` is also true the graph is for the TFLite
converter, which has no kernel for some of those stock ops (`BlockLSTM`)
and its own fused LSTM: `lstm_keras.backends.tensorflow.litert` runs the
layer then. It is true inside `litert_tracing()`, which
`lstm_keras.export.export_litert` enters, and inside
`tf.lite.TFLiteConverter.from_keras_model(...).convert()`, whose trace of a
Keras 3 model `install_litert_converter_hook` wraps.

`exporting()` is true:

- inside `export_tracing()`, which `lstm_keras.export` enters;
- inside `keras.export.ExportArchive.write_out`, which `model.export()`
  calls and where Keras traces its endpoints (`install_keras_export_hook`
  wraps it, once, when the TensorFlow fast paths are registered);
- while `tf.saved_model.save` traces (TensorFlow's save context).

`tracing_export_archive()` is true inside `write_out` only: there Keras
saves every variable the endpoints use, so a trace may add variables of
its own (`serving`'s stacked kernels), which `tf.saved_model.save` alone
would refuse as untracked.

An endpoint that was traced before the export (a `tf.function` called
in-process, then passed to `ExportArchive.add_endpoint` without an
`input_signature`) is traced again in `write_out`, for the export. As
`tf.function` lets only a first trace create variables, the variables
that trace reads (`serving`'s stacked kernels) are created eagerly when
`write_out` starts (`install_keras_export_hook`'s `prepare`).
"""

import contextlib
import functools
import threading

import keras

_STATE = threading.local()
_HOOK_ATTRIBUTE = "_lstm_keras_export_tracing"


@contextlib.contextmanager
def export_tracing():
    """Marks the graphs traced inside it as graphs to be exported.

    Example:

    >>> model = keras.Sequential([keras.Input((5, 3)), lstm_keras.LSTM(4)])
    >>> spec = tf.TensorSpec([None, 5, 3], "float32")
    >>> with export_tracing():
    ...     print(exporting())
    ...     concrete = tf.function(model).get_concrete_function(spec)
    True
    >>> exporting()
    False
    """
    depth = getattr(_STATE, "depth", 0)
    _STATE.depth = depth + 1
    try:
        yield
    finally:
        _STATE.depth = depth


@contextlib.contextmanager
def export_archive_tracing():
    """Marks the graphs traced inside it as an `ExportArchive`'s endpoints.

    Implies `export_tracing()`.
    """
    depth = getattr(_STATE, "archive_depth", 0)
    _STATE.archive_depth = depth + 1
    try:
        with export_tracing():
            yield
    finally:
        _STATE.archive_depth = depth


def tracing_export_archive():
    """Whether the graph being traced now is an `ExportArchive` endpoint.

    Such an archive saves every variable its endpoints capture, including
    ones created while they trace.
    """
    return getattr(_STATE, "archive_depth", 0) > 0


@functools.cache
def _save_context():
    try:
        from lstm_keras.compat import save_context
    except ImportError:
        return None
    return save_context


def _in_save_context():
    # Asked on every layer call that reaches a TensorFlow fast path.
    module = _save_context()
    return module is not None and module.in_save_context()


def exporting():
    """Whether the graph being traced now is to be exported."""
    return (
        getattr(_STATE, "depth", 0) > 0
        or tracing_for_litert()
        or _in_save_context()
    )


@contextlib.contextmanager
def litert_tracing(full_integer=False, in_serving_export=False):
    """Marks the graphs traced inside it as graphs for the TFLite converter.

    Implies `export_tracing()`.

    Args:
        full_integer: Boolean, whether the graph is to be quantized to
            integers throughout (`tracing_for_full_integer()`). Defaults to
            `False`.
        in_serving_export: Boolean, whether the graph is a signature of a
            serving export (`litert_in_serving_export()`), whose LSTM
            weights it then reads from the export's stacked kernels, so
            that the export saves them once. Defaults to `False`.
    """
    depth = getattr(_STATE, "litert_depth", 0)
    outer = (
        getattr(_STATE, "full_integer", False),
        getattr(_STATE, "litert_in_serving", False),
    )
    _STATE.litert_depth = depth + 1
    _STATE.full_integer = full_integer
    _STATE.litert_in_serving = in_serving_export
    try:
        yield
    finally:
        _STATE.litert_depth = depth
        _STATE.full_integer, _STATE.litert_in_serving = outer


def litert_in_serving_export():
    """Whether the LiteRT graph traced now is a serving export's signature."""
    return tracing_for_litert() and getattr(_STATE, "litert_in_serving", False)


def tracing_for_full_integer():
    """Whether the LiteRT graph traced now is to be quantized throughout."""
    return tracing_for_litert() and getattr(_STATE, "full_integer", False)


def tracing_for_litert():
    """Whether the graph being traced now is for the TFLite converter."""
    return getattr(_STATE, "litert_depth", 0) > 0


@contextlib.contextmanager
def litert_layer_records():
    """Collects how each `lstm_keras.LSTM` traced inside it runs in LiteRT.

    Yields a dict, filled as layers trace: layer name -> `None` (the fused
    kernel) or the reason it runs as a builtin loop. A layer traced more
    than once (Keras traces some twice, once at a free batch size) counts
    as fused when any of its traces is.
    """
    records = {}
    outer = getattr(_STATE, "litert_records", None)
    _STATE.litert_records = records
    try:
        yield records
    finally:
        _STATE.litert_records = outer


def record_litert_layer(name, reason):
    """Notes, for `litert_layer_records`, how layer `name` runs in LiteRT."""
    records = getattr(_STATE, "litert_records", None)
    if records is None:
        return
    if reason is None:
        records[name] = None
    else:
        records.setdefault(name, reason)


@contextlib.contextmanager
def inference_dropout_off(model):
    """Sets the recurrent cells' dropout rates to 0 while tracing `model`.

    Keras's `RNN.call` draws the cells' dropout masks even when not
    training (and throws them away), which puts a write of the seed
    generator's state into the traced graph: a variable update in every
    served request, and an op the TFLite converter rejects. Inference does
    not depend on the rates, so the outputs are unchanged.
    """
    from lstm_keras.compat import DropoutRNNCell

    cells = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, DropoutRNNCell)
    ]
    rates = [(cell.dropout, cell.recurrent_dropout) for cell in cells]
    try:
        for cell in cells:
            cell.dropout = cell.recurrent_dropout = 0.0
        yield
    finally:
        for cell, (dropout, recurrent_dropout) in zip(
            cells, rates, strict=True
        ):
            cell.dropout, cell.recurrent_dropout = dropout, recurrent_dropout


def _wrap_method(cls, name, context):
    """Runs method `name` of `cls` inside `context(self)`, once.

    The method is replaced on the class of `cls`'s MRO that defines it;
    a wrapped method is left as it is (idempotent), and a class without
    the method too.
    """
    owner = next((c for c in cls.__mro__ if name in vars(c)), None)
    if owner is None:
        return
    original = vars(owner)[name]
    if getattr(original, _HOOK_ATTRIBUTE, False):
        return

    @functools.wraps(original)
    def wrapped(self, *args, **kwargs):
        with context(self):
            return original(self, *args, **kwargs)

    setattr(wrapped, _HOOK_ATTRIBUTE, True)
    setattr(owner, name, wrapped)


def _as_in_default_save(archive):
    """TensorFlow's save context with default `SaveOptions`, if not in one.

    `write_out` traces each endpoint to find the variables it uses, then
    `tf.saved_model.save` traces it again: a function's traces are cached
    per save context (its variable policy is part of the cache key), and
    the first trace was made outside one. Made inside the context that
    `tf.saved_model.save` enters by default, the first trace is the one
    the save finds: each endpoint is traced once, which makes an export
    about a third faster.
    """
    module = _save_context()
    if module is None or module.in_save_context():
        return contextlib.nullcontext()
    import tensorflow as tf

    return module.save_context(tf.saved_model.SaveOptions())


@contextlib.contextmanager
def _writing_archive(archive, prepare):
    with export_archive_tracing():
        if prepare is not None:
            prepare(archive)
        yield


def install_keras_export_hook(prepare=None):
    """Makes `ExportArchive.write_out` trace inside `export_archive_tracing()`.

    `prepare(archive)`, if given, runs first inside it, eagerly: there the
    serving path creates its variables (`serving.create_stacked_kernels`),
    since an endpoint that was traced before the export may not create
    any when it is traced again.

    Keras traces an archive's endpoints in `write_out` (to find the
    variables they use, which it then saves) before it calls
    `tf.saved_model.save`, so TensorFlow's save context does not cover
    that trace; that trace also runs in a save context of its own
    (`_as_in_default_save`), so that the save reuses it. Idempotent.
    """
    archive_class = type(keras.export.ExportArchive())
    _wrap_method(
        archive_class,
        "write_out",
        lambda archive: _writing_archive(archive, prepare),
    )
    _wrap_method(
        archive_class, "_filter_and_track_resources", _as_in_default_save
    )


def _keras_model_converter_class():
    """The class `TFLiteConverter.from_keras_model` returns, or `None`."""
    import tensorflow as tf

    try:
        converter = tf.lite.TFLiteConverter.from_keras_model(keras.Sequential())
    except Exception:  # noqa: BLE001  (no converter in this TensorFlow)
        return None
    return type(converter)


@contextlib.contextmanager
def _converting_keras_model(converter):
    with litert_tracing(), inference_dropout_off(converter._keras_model):
        yield


def install_litert_converter_hook():
    """Makes `from_keras_model(model).convert()` trace inside `litert_tracing()`.

    For a Keras 3 model the converter writes the model out with
    `keras.export.ExportArchive` in `_convert_keras_to_saved_model` and
    converts that SavedModel; the hook runs that method inside
    `litert_tracing()` and `inference_dropout_off(model)`, so that each
    `lstm_keras.LSTM` traces the graph the converter turns into its fused
    LSTM kernel. Idempotent; a TensorFlow without the method (checked
    against 2.18-2.21) is left as it is, and the layer then converts to a
    builtin loop.
    """
    converter_class = _keras_model_converter_class()
    if converter_class is not None:
        _wrap_method(
            converter_class,
            "_convert_keras_to_saved_model",
            _converting_keras_model,
        )
