"""Every private Keras, TensorFlow and KerasTuner name `lstm_keras` uses.

Keras 3 (`keras.src`), TensorFlow (`tensorflow.python`,
`tensorflow.lite.python`) and KerasTuner (`keras_tuner.src`) may move their
private modules in any release. `lstm_keras` imports them only from here,
so that a release that moves one breaks in one known place:
`tests/test_compat.py` resolves every entry below and fails with the name
and the release it was checked against.

Each entry of `PRIVATE_NAMES` is an attribute of this module, imported on
first access. A backend's private modules are so imported only by the code
that runs on that backend: importing `lstm_keras` on JAX or torch imports
nothing of TensorFlow's from here. Use them as

>>> from lstm_keras.compat import backend_rnn

`PRIVATE_ATTRIBUTES` lists the private attributes of public Keras,
TensorFlow and KerasTuner classes that `lstm_keras` reads, overrides or
wraps; `tests/test_compat.py` checks that they are still there.
"""

import dataclasses
import importlib

KERAS = "keras 3.15.1"
TENSORFLOW = "tensorflow 2.21.0"
KERAS_TUNER = "keras-tuner 1.4.8"


@dataclasses.dataclass(frozen=True)
class PrivateName:
    """A private module, or a name in one, that `lstm_keras` imports.

    Args:
        module: The module's dotted path, e.g. `"keras.src.backend"`.
        attribute: The name inside `module`, or `None` for the module
            itself. Defaults to `None`.
        uses: The attributes of that object which `lstm_keras` reads.
            Defaults to `()`.
        checked: The release it was checked against, e.g. `KERAS`.
            Defaults to `KERAS`.
        backend: The Keras backend on which `lstm_keras` uses it, or `None`
            for every backend. Defaults to `None`.
        used_for: Where it is used, and why no public API serves.
            Defaults to `""`.
    """

    module: str
    attribute: str | None = None
    uses: tuple = ()
    checked: str = KERAS
    backend: str | None = None
    used_for: str = ""

    @property
    def path(self):
        """The dotted path of the name, e.g. `"keras.src.backend.rnn"`."""
        if self.attribute is None:
            return self.module
        return f"{self.module}.{self.attribute}"


SAVED_MODEL_CLI_MODULE = "tensorflow.python.tools.saved_model_cli"
"""The module behind TensorFlow's `saved_model_cli` command, for
`python -m` where the command is not on the `PATH`."""

PRIVATE_NAMES = {
    # Keras, every backend.
    "backend_rnn": PrivateName(
        "keras.src.backend",
        "rnn",
        used_for="The active backend's sequence loop, the one "
        "`keras.layers.RNN` runs (`lstm_keras.generic_loop`): masks, "
        "`go_backwards`, `unroll` and each backend's loop primitive.",
    ),
    "get_keras_mask": PrivateName(
        "keras.src.backend.common.masking",
        "get_keras_mask",
        used_for="Where Keras 3 keeps a tensor's mask, on every backend "
        "(`lstm_keras.diagnostics`).",
    ),
    "DropoutRNNCell": PrivateName(
        "keras.src.layers.rnn.dropout_rnn_cell",
        "DropoutRNNCell",
        uses=("get_dropout_mask", "get_recurrent_dropout_mask"),
        used_for="The mixin for which `keras.layers.RNN` draws dropout "
        "masks once per sequence, outside its loop (`LSTMCell`'s base; "
        "also found in a model by the export path).",
    ),
    "keras_global_state": PrivateName(
        "keras.src.backend.common.global_state",
        uses=("get_global_attribute", "set_global_attribute"),
        used_for="The maps of `keras.saving`'s object-sharing scope, "
        "suspended while `LSTMBackbone` wraps a layer in "
        "`keras.layers.Bidirectional`, which serializes it twice "
        "(`applications.backbone`).",
    ),
    "keras_serialization_lib": PrivateName(
        "keras.src.saving.serialization_lib",
        uses=("record_object_after_serialization", "get_shared_object"),
        used_for="Where `keras.saving` tells shared objects by `id()`, "
        "which `tests/test_applications_backbone.py` makes constant to "
        "load a bidirectional backbone under address reuse.",
    ),
    "keras_dtypes": PrivateName(
        "keras.src.backend.common.dtypes",
        uses=("BIT64_TO_BIT32_DTYPE",),
        used_for="The table by which Keras demotes 64-bit dtypes, switched "
        "off for float64 gradient checks (`lstm_keras.gradcheck`).",
    ),
    # Keras and TensorFlow, the TensorFlow backend.
    "has_fully_masked_sequence": PrivateName(
        "keras.src.backend.tensorflow.rnn",
        "_has_fully_masked_sequence",
        backend="tensorflow",
        used_for="Keras's check that a mask has no all-padding row, which "
        "cuDNN cannot run (`backends.tensorflow.cudnn`).",
    ),
    "is_sequence_right_padded": PrivateName(
        "keras.src.backend.tensorflow.rnn",
        "_is_sequence_right_padded",
        backend="tensorflow",
        used_for="Keras's check that a mask is right-padded, as cuDNN's "
        "sequence lengths are (`backends.tensorflow.cudnn`).",
    ),
    "standardize_cudnn_weights": PrivateName(
        "keras.src.backend.tensorflow.rnn",
        "_standardize_cudnn_weights",
        backend="tensorflow",
        used_for="Keras's layout of `CudnnRNNV3`'s flat `params` "
        "(`backends.tensorflow.cudnn`).",
    ),
    "control_flow_util": PrivateName(
        "tensorflow.python.ops.control_flow_util",
        uses=("GraphOrParentsInXlaContext",),
        checked=TENSORFLOW,
        backend="tensorflow",
        used_for="Whether the graph being traced is XLA-compiled, where "
        "the cuDNN and custom-op paths decline "
        "(`backends.tensorflow.cudnn`, `backends.tensorflow.fast_path`).",
    ),
    "eager_record": PrivateName(
        "tensorflow.python.eager.record",
        uses=("could_possibly_record",),
        checked=TENSORFLOW,
        backend="tensorflow",
        used_for="Whether a gradient tape may record, so that the custom "
        "op skips saving what only its gradient needs "
        "(`backends.tensorflow.fast_path`; if the function moves, it "
        "always saves).",
    ),
    "save_context": PrivateName(
        "tensorflow.python.saved_model.save_context",
        uses=("in_save_context", "save_context"),
        checked=TENSORFLOW,
        backend="tensorflow",
        used_for="Whether `tf.saved_model.save` is tracing, where the fast "
        "paths that add custom or cuDNN ops decline "
        "(`backends.tensorflow.export_context`; without it only the "
        "`lstm_keras.export` functions mark exports); and the context "
        "itself, entered while `ExportArchive.write_out` first traces its "
        "endpoints, so that the save reuses those traces.",
    ),
    "tf_framework_config": PrivateName(
        "tensorflow.python.framework.config",
        uses=("is_op_determinism_enabled", "disable_op_determinism"),
        checked=TENSORFLOW,
        backend="tensorflow",
        used_for="Turning op determinism off again, which TensorFlow "
        "exports only the switch on of (`applications.runner`).",
    ),
    "litert_schema": PrivateName(
        "tensorflow.lite.python.schema_py_generated",
        uses=("BuiltinOperator", "Model"),
        checked=TENSORFLOW,
        backend="tensorflow",
        used_for="TensorFlow's generated reader of the LiteRT flatbuffer "
        "schema, to list a converted model's ops (`export.litert`).",
    ),
    "saved_model_cli": PrivateName(
        SAVED_MODEL_CLI_MODULE,
        uses=("main",),
        checked=TENSORFLOW,
        backend="tensorflow",
        used_for="`python -m` of TensorFlow's `saved_model_cli` where the "
        "command is not installed (`tests/test_export.py`).",
    ),
    # Keras, the torch backend.
    "prepare_lstm_params": PrivateName(
        "keras.src.backend.torch.rnn",
        "prepare_lstm_params",
        backend="torch",
        used_for="Keras's conversion of the fused LSTM weights to "
        "`torch._VF.lstm`'s parameters (`backends.torch.fast_path`).",
    ),
    # KerasTuner.
    "tuner_oracle_client": PrivateName(
        "keras_tuner.src.distribute.oracle_client",
        uses=("TIMEOUT",),
        checked=KERAS_TUNER,
        used_for="The time a worker waits for the chief, which KerasTuner "
        "fixes at an hour (`lstm_keras.tuning.search`).",
    ),
    "tuner_oracle_chief": PrivateName(
        "keras_tuner.src.distribute.oracle_chief",
        uses=("time", "start_server", "exit_chief"),
        checked=KERAS_TUNER,
        used_for="Its `start_server` waits 20 s between checks for the "
        "workers' last trials once the search is done; the chief checks "
        "every second instead (`lstm_keras.tuning.search`).",
    ),
    "tuner_metrics_tracking": PrivateName(
        "keras_tuner.src.engine.metrics_tracking",
        uses=("MetricsTracker",),
        checked=KERAS_TUNER,
        used_for="An empty metrics record for a trial that is run again "
        "after a kill (`lstm_keras.tuning.resume`).",
    ),
    "tuner_trial": PrivateName(
        "keras_tuner.src.engine.trial",
        uses=("TrialStatus",),
        checked=KERAS_TUNER,
        used_for="The trial statuses a resumed search reads and writes "
        "(`lstm_keras.tuning.resume`).",
    ),
}
"""This module's attribute name -> the private name it imports."""


@dataclasses.dataclass(frozen=True)
class PrivateAttribute:
    """A private attribute of a public class that `lstm_keras` uses.

    Args:
        owner: The public class (dotted path) or the object that holds it,
            e.g. `"keras.layers.Layer"`.
        attribute: The attribute, e.g. `"_flatten_layers"`.
        checked: The release it was checked against. Defaults to `KERAS`.
        backend: The Keras backend on which `lstm_keras` uses it, or `None`
            for every backend. Defaults to `None`.
        used_for: Where it is used, and why. Defaults to `""`.
    """

    owner: str
    attribute: str
    checked: str = KERAS
    backend: str | None = None
    used_for: str = ""


TFLITE_KERAS_CONVERTER = "tf.lite.TFLiteConverter.from_keras_model(model)"
"""The owner of the TFLite converter's private attributes: the converter
object `from_keras_model` returns for a Keras 3 model."""

PRIVATE_ATTRIBUTES = (
    PrivateAttribute(
        "keras.layers.Layer",
        "_flatten_layers",
        used_for="A model's nested layers, to find its recurrent cells "
        "(`backends.tensorflow.export_context`, `export.saved_model`).",
    ),
    PrivateAttribute(
        "keras.Model",
        "_symbolic_build",
        backend="tensorflow",
        used_for="Building a model's metrics and optimizer before a "
        "distributed fit (`applications.runner`).",
    ),
    PrivateAttribute(
        "keras.Model",
        "_maybe_symbolic_build",
        backend="tensorflow",
        used_for="Replaced on a model, so that a distributed fit builds "
        "from one known batch (`applications.runner`).",
    ),
    PrivateAttribute(
        "keras.optimizers.Adam",
        "_get_variable_index",
        used_for="`LazyAdam.update_step` (`applications.optimizers`).",
    ),
    PrivateAttribute(
        "keras.optimizers.Adam",
        "_clip_gradients",
        used_for="Overridden by `LazyAdam` (`applications.optimizers`).",
    ),
    PrivateAttribute(
        "keras.optimizers.Adam(use_ema=True), built",
        "_momentums",
        used_for="`LazyAdam.update_step` (`applications.optimizers`).",
    ),
    PrivateAttribute(
        "keras.optimizers.Adam(use_ema=True), built",
        "_velocities",
        used_for="`LazyAdam.update_step` (`applications.optimizers`).",
    ),
    PrivateAttribute(
        "keras.optimizers.Adam(use_ema=True), built",
        "_trainable_variables",
        used_for="The variables the moving averages belong to "
        "(`applications.runner`).",
    ),
    PrivateAttribute(
        "keras.optimizers.Adam(use_ema=True), built",
        "_model_variables_moving_average",
        used_for="The weights' moving averages, saved with a run "
        "(`applications.runner`).",
    ),
    PrivateAttribute(
        "keras.export.ExportArchive()",
        "_tf_trackable",
        backend="tensorflow",
        used_for="The object a SavedModel archive saves, to attach assets "
        "and a `serve` function (`export.saved_model`).",
    ),
    PrivateAttribute(
        "keras.export.ExportArchive()",
        "_filter_and_track_resources",
        backend="tensorflow",
        used_for="Where `write_out` first traces the endpoints; wrapped to "
        "trace them in TensorFlow's save context, so that the save reuses "
        "those traces (`backends.tensorflow.export_context`).",
    ),
    PrivateAttribute(
        "keras.export.ExportArchive(), tracking a layer",
        "_tracked",
        backend="tensorflow",
        used_for="The layers and models an archive tracks, whose LSTM cells "
        "get their stacked kernels before any endpoint is traced "
        "(`backends.tensorflow.serving.create_stacked_kernels`).",
    ),
    PrivateAttribute(
        TFLITE_KERAS_CONVERTER,
        "_convert_keras_to_saved_model",
        checked=TENSORFLOW,
        backend="tensorflow",
        used_for="Where the converter traces a Keras 3 model; wrapped so "
        "that `lstm_keras.LSTM` traces its LiteRT path "
        "(`backends.tensorflow.export_context`).",
    ),
    PrivateAttribute(
        TFLITE_KERAS_CONVERTER,
        "_keras_model",
        checked=TENSORFLOW,
        backend="tensorflow",
        used_for="The model being converted, whose dropout is switched "
        "off while it traces (`backends.tensorflow.export_context`).",
    ),
    PrivateAttribute(
        "keras_tuner.Oracle",
        "_get_oracle_fname",
        checked=KERAS_TUNER,
        used_for="The oracle's state file (`lstm_keras.tuning.resume`).",
    ),
    PrivateAttribute(
        "keras_tuner.Oracle",
        "_get_trial_dir",
        checked=KERAS_TUNER,
        used_for="A trial's folder (`lstm_keras.tuning.resume`).",
    ),
    PrivateAttribute(
        "keras_tuner.Oracle",
        "_record_values",
        checked=KERAS_TUNER,
        used_for="Recording a re-run trial's hyperparameters "
        "(`lstm_keras.tuning.resume`).",
    ),
    PrivateAttribute(
        "keras_tuner.oracles.RandomSearchOracle()",
        "_retry_queue",
        checked=KERAS_TUNER,
        used_for="The trials to run again (`lstm_keras.tuning.resume`).",
    ),
    PrivateAttribute(
        "keras_tuner.oracles.RandomSearchOracle()",
        "_run_times",
        checked=KERAS_TUNER,
        used_for="How often each trial ran (`lstm_keras.tuning.resume`).",
    ),
    PrivateAttribute(
        "keras_tuner.Tuner",
        "_is_worker",
        checked=KERAS_TUNER,
        used_for="Whether a tuner process is a worker "
        "(`lstm_keras.tuning.resume`).",
    ),
    PrivateAttribute(
        "keras_tuner.Tuner",
        "_get_tuner_fname",
        checked=KERAS_TUNER,
        used_for="The tuner's state file (`lstm_keras.tuning.resume`).",
    ),
)
"""The private attributes of public classes that `lstm_keras` uses."""


def resolve(name):
    """Imports the private name `PRIVATE_NAMES[name]`.

    Args:
        name: A key of `PRIVATE_NAMES`, e.g. `"backend_rnn"`.

    Returns:
        The module, or the object in it.

    Raises:
        ImportError: When the installed release lacks it; the message
            names the private path and the release it was checked against.
    """
    entry = PRIVATE_NAMES[name]
    try:
        module = importlib.import_module(entry.module)
        if entry.attribute is None:
            return module
        return getattr(module, entry.attribute)
    except (ImportError, AttributeError) as error:
        raise ImportError(
            f"lstm_keras needs the private `{entry.path}` (checked against "
            f"{entry.checked}), which cannot be imported here: {error}"
        ) from error


def __getattr__(name):
    # Imports each private name on first access only (PEP 562), so that a
    # backend's private modules load only where that backend runs.
    if name not in PRIVATE_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = resolve(name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *PRIVATE_NAMES})
