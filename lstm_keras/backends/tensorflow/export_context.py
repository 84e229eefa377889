"""Whether TensorFlow is tracing a graph to be exported.

A graph traced for export is run by another program (TF Serving, a fresh
TensorFlow, the TFLite converter) that has neither this package's custom
ops nor, often, a GPU. While `exporting()` is true the fast paths that add
such ops (our C++ ops, cuDNN's) decline, and `lstm_keras.LSTM` runs on
stock TensorFlow ops instead (`lstm_keras.backends.tensorflow.serving`).

`exporting()` is true:

- inside `export_tracing()`, which `lstm_keras.export` enters;
- inside `keras.export.ExportArchive.write_out`, which `model.export()`
  calls and where Keras traces its endpoints (`install_keras_export_hook`
  wraps it, once, when the TensorFlow fast paths are registered);
- while `tf.saved_model.save` traces (TensorFlow's save context).

An endpoint that was traced before the export (a `tf.function` called
in-process, then passed to `ExportArchive.add_endpoint` without an
`input_signature`) keeps the graph it was traced with.
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

    >>> with export_tracing():
    ...     concrete = tf.function(model).get_concrete_function(spec)
    """
    depth = getattr(_STATE, "depth", 0)
    _STATE.depth = depth + 1
    try:
        yield
    finally:
        _STATE.depth = depth


@functools.cache
def _save_context():
    try:
        # Private: checked against TensorFlow 2.18-2.21.
        from tensorflow.python.saved_model import save_context
    except ImportError:
        return None
    return save_context


def _in_save_context():
    # Asked on every layer call that reaches a TensorFlow fast path.
    module = _save_context()
    return module is not None and module.in_save_context()


def exporting():
    """Whether the graph being traced now is to be exported."""
    return getattr(_STATE, "depth", 0) > 0 or _in_save_context()


def install_keras_export_hook():
    """Makes `ExportArchive.write_out` trace inside `export_tracing()`.

    Keras traces an archive's endpoints in `write_out` (to find the
    variables they use) before it calls `tf.saved_model.save`, so
    TensorFlow's save context does not cover that trace. Idempotent.
    """
    archive_class = type(keras.export.ExportArchive())
    for owner in archive_class.__mro__:
        if "write_out" in vars(owner):
            break
    original = owner.write_out
    if getattr(original, _HOOK_ATTRIBUTE, False):
        return

    @functools.wraps(original)
    def write_out(self, *args, **kwargs):
        with export_tracing():
            return original(self, *args, **kwargs)

    setattr(write_out, _HOOK_ATTRIBUTE, True)
    owner.write_out = write_out
