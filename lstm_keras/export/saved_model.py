"""SavedModels for TensorFlow Serving: `export_for_serving(model, path)`.

Writes the layout TF Serving watches, `model_base_path/<version>/`
(`saved_model.pb`, `variables/`, `assets/`, `fingerprint.pb`), whose
`serving_default` signature goes from raw inputs to a decision:

- input `text`, string `[batch]` (`SentimentClassifier`); or `waveform`,
  float32 `[batch, samples]`, mono, at the model's sample rate, zero-padded
  at the end (`SpeechClassifier`); or, for any other classifier, the Keras
  input's name, dtype and shape;
- outputs `probabilities`, float32 `[batch, classes]`; `class_id`, int64
  `[batch]`; `class_name`, string `[batch]`.

A second signature, `metadata`, returns the `class_names` (string
`[classes]`) and the `sample_rate` (int64 scalar, 0 for text); its one
input, `unused` (int32 scalar), is ignored (TF Serving's REST API cannot
call a signature without inputs). The same travel as files in `assets/`:
`class_names.txt` (one per line, in class id order) and `metadata.json`
(model class, class names, sample rate, the signatures' names, dtypes and
shapes). In Python, `loaded.serve(x)` (not a signature) returns the
probabilities alone, as after `model.export`.

The graph holds only standard TensorFlow ops, so TF Serving (or any
TensorFlow) runs it without this package: it is traced inside
`lstm_keras.dispatch.fast_paths_disabled()` (no fast-path custom op), and
every written SavedModel is scanned (`nonstandard_ops`) for custom ops,
`PyFunc`s and `CudnnRNN*`, and refused if it has any. The signature is
stateless: models with a stateful layer are refused, and a signature that
writes a variable (`state_writes`) is too. An input of the wrong dtype or
rank is refused before any layer sees it. A version is written into a
hidden sibling folder (`.tmp-<version>-*`, which TF Serving ignores, not
being an integer) and renamed into place, so a server never sees a
half-written version.
"""

import contextlib
import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from lstm_keras import dispatch
from lstm_keras.export.graph import SIGNATURE
from lstm_keras.export.graph import describe
from lstm_keras.export.graph import nonstandard_ops
from lstm_keras.export.graph import shape_list
from lstm_keras.export.graph import state_writes

METADATA_SIGNATURE = "metadata"


def export_for_serving(
    model,
    model_base_path,
    version=1,
    overwrite=False,
    class_names=None,
    sample_rate=None,
    verbose=True,
):
    """Exports `model` as version `version` of a TF Serving model.

    Args:
        model: A built Keras classifier with one input and one
            `(batch, classes)` probability output: a `SentimentClassifier`,
            a `SpeechClassifier`, or any model given `class_names`.
        model_base_path: The model's folder (TF Serving's
            `--model_base_path`); created if missing.
        version: Positive integer, the version folder's name. Defaults to
            `1`.
        overwrite: Boolean, whether an existing version is replaced (else
            it is an error). Defaults to `False`.
        class_names: Sequence of class names in class id order, or `None`
            for `model.class_names`. Defaults to `None`.
        sample_rate: Samples per second of a waveform input, or `None` for
            `model.sample_rate` (if any). Defaults to `None`.
        verbose: Boolean, print where the version went and its signature.
            Defaults to `True`.

    Returns:
        The version folder's path, `model_base_path/<version>`.

    Example:

    >>> model = SentimentClassifier(units=8, embedding_dim=8)
    >>> model.adapt(["a fine film", "a dull film"])
    >>> path = export_for_serving(model, "models/sentiment", verbose=False)
    >>> served = tf.saved_model.load(path).signatures["serving_default"]
    >>> sorted(served(text=tf.constant(["fine"])))
    ['class_id', 'class_name', 'probabilities']
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            f"Argument `version` must be a positive integer, got {version!r}."
        )
    if not isinstance(model_base_path, (str, os.PathLike)):
        raise ValueError(
            "Argument `model_base_path` must be a path, got "
            f"{model_base_path!r}."
        )
    if os.path.isfile(model_base_path):
        raise ValueError(
            "Argument `model_base_path` must be a folder, got the file "
            f"{os.fspath(model_base_path)!r}."
        )
    path = os.path.join(os.fspath(model_base_path), str(version))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"Version {version} already exists at {path!r}; pass "
            "overwrite=True (--overwrite) to replace it, or another "
            "version."
        )
    write_saved_model(
        model,
        path,
        overwrite=overwrite,
        class_names=class_names,
        sample_rate=sample_rate,
    )
    if verbose:
        print(f"Exported version {version} to {path}")
        print(describe(path))
    return path


def write_saved_model(
    model, path, overwrite=False, class_names=None, sample_rate=None
):
    """Writes the serving SavedModel to exactly `path`, atomically.

    `export_for_serving` without the version layout; arguments as there.
    The SavedModel is written into a hidden sibling folder, scanned by
    `nonstandard_ops`, then renamed to `path` (an existing `path`, with
    `overwrite`, is first renamed aside, then removed).

    Returns:
        `path`.
    """
    # Checked before anything is written (`_archive` uses the result).
    _check_model(model, class_names, sample_rate)
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".tmp-{name}-")
    old = None
    try:
        with tempfile.TemporaryDirectory() as staging, _tracing(model):
            # Traced lazily: in `write_out`, so inside `_tracing` too.
            archive, spec = _archive(model, class_names, sample_rate)
            # `ExportArchive` saves what its root tracks; assets included.
            archive._tf_trackable.assets = _assets(spec, staging)
            archive.write_out(tmp, verbose=False)
        found = nonstandard_ops(tmp)
        if found:
            raise ValueError(
                f"The SavedModel of {model.name!r} holds ops that TF Serving "
                f"cannot run without lstm_keras or a GPU: {sorted(found)}. "
                "It was not written."
            )
        writes = state_writes(tmp)
        if writes:
            raise ValueError(
                f"The serving signature of {model.name!r} writes state "
                f"({sorted(writes)}), so a request would depend on the ones "
                "before it. It was not written."
            )
        if os.path.exists(path):
            if not overwrite:
                raise FileExistsError(f"{path!r} exists (overwrite=False).")
            old = tempfile.mkdtemp(dir=parent, prefix=f".old-{name}-")
            os.replace(path, os.path.join(old, name))
        os.replace(tmp, path)
    except BaseException:
        if old is not None and not os.path.exists(path):
            os.replace(os.path.join(old, name), path)
        raise
    finally:
        for leftover in (tmp, old):
            if leftover is not None and os.path.exists(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
    return path


@contextlib.contextmanager
def _tracing(model):
    """Traces the inference graph that a server should run.

    The generic LSTM loop (no custom op), and recurrent cells with dropout
    rates of 0: Keras's `RNN.call` draws the cells' dropout masks even
    when not training (and throws them away), which would put a write of
    the seed generator's state into every request. Inference does not
    depend on the rates, so the outputs are unchanged.
    """
    from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

    cells = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, DropoutRNNCell)
    ]
    rates = [(cell.dropout, cell.recurrent_dropout) for cell in cells]
    try:
        for cell in cells:
            cell.dropout = cell.recurrent_dropout = 0.0
        with dispatch.fast_paths_disabled():
            yield
    finally:
        for cell, (dropout, recurrent_dropout) in zip(
            cells, rates, strict=True
        ):
            cell.dropout, cell.recurrent_dropout = dropout, recurrent_dropout


def _input_spec(model):
    """`(signature input name, tf.TensorSpec)` of the model's raw input."""
    inputs = getattr(model, "inputs", None) or []
    outputs = getattr(model, "outputs", None) or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            "Argument `model` must be a functional model with one input and "
            f"one output to be exported for serving; {model.name!r} has "
            f"{len(inputs)} and {len(outputs)}."
        )
    tensor = inputs[0]
    # The signature's input key is the TensorSpec's name: `text`, or
    # `waveform` (a request holds one per row) for the speech model, whose
    # Keras input is called `waveforms`.
    name = {"waveforms": "waveform"}.get(tensor.name, tensor.name)
    shape = (None,) + tuple(tensor.shape[1:])
    return name, tf.TensorSpec(shape, tensor.dtype, name=name)


def _check_model(model, class_names, sample_rate):
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(
            "Argument `model` must be a built Keras model, got "
            f"{type(model).__name__}: {model!r}."
        )
    _input_spec(model)
    if class_names is None:
        class_names = getattr(model, "class_names", None)
    if class_names is None:
        raise ValueError(
            f"Argument `model` ({model.name!r}) has no `class_names`; pass "
            "`class_names` (the names of its outputs' classes, in order)."
        )
    class_names = [str(name) for name in class_names]
    if len(class_names) < 2 or len(set(class_names)) != len(class_names):
        raise ValueError(
            "Argument `class_names` must hold at least two distinct names, "
            f"got {class_names!r}."
        )
    num_classes = model.outputs[0].shape[-1]
    if num_classes != len(class_names):
        raise ValueError(
            f"Argument `class_names` has {len(class_names)} names but "
            f"{model.name!r} outputs {num_classes} probabilities."
        )
    stateful = [
        layer.name
        for layer in model._flatten_layers(include_self=False)
        if getattr(layer, "stateful", False)
    ]
    if stateful:
        raise ValueError(
            f"Argument `model` ({model.name!r}) has stateful layers "
            f"{stateful}; a served request must not depend on the ones "
            "before it. Rebuild the model with stateful=False (the weights "
            "load unchanged) and export that."
        )
    if sample_rate is None:
        sample_rate = getattr(model, "sample_rate", None)
    if sample_rate is not None and (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, int)
        or sample_rate < 1
    ):
        raise ValueError(
            "Argument `sample_rate` must be a positive integer or None, got "
            f"{sample_rate!r}."
        )
    return class_names, sample_rate


def _archive(model, class_names, sample_rate):
    """The `keras.export.ExportArchive` and the description of its API."""
    class_names, sample_rate = _check_model(model, class_names, sample_rate)
    input_name, input_spec = _input_spec(model)
    names = tf.constant(class_names)

    def serve(inputs):
        # A server feeds the request's tensor unchecked; refuse another
        # rank here, with the input's name, before any layer sees it.
        inputs = tf.ensure_shape(
            inputs, input_spec.shape, name=f"check_{input_name}_shape"
        )
        probabilities = tf.cast(model(inputs, training=False), "float32")
        class_id = tf.argmax(probabilities, axis=-1, output_type="int64")
        return {
            "probabilities": probabilities,
            "class_id": class_id,
            "class_name": tf.gather(names, class_id),
        }

    def metadata(unused):
        return {
            "class_names": names,
            "sample_rate": tf.constant(sample_rate or 0, "int64"),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    serving_fn = archive.add_endpoint(SIGNATURE, serve, [input_spec])
    # TF Serving's REST API and `saved_model_cli run` cannot call a
    # signature without inputs: `metadata` takes one, which it ignores.
    archive.add_endpoint(
        METADATA_SIGNATURE, metadata, [tf.TensorSpec([], "int32", "unused")]
    )
    # `loaded.serve(x)`, the probabilities, as `model.export` gives it (a
    # Python convenience, not a signature); it calls the same graph.
    archive._tf_trackable.serve = tf.function(
        lambda inputs: serving_fn(inputs)["probabilities"],
        input_signature=[input_spec],
        autograph=False,
    )
    spec = {
        "model": type(model).__name__,
        "class_names": class_names,
        "sample_rate": sample_rate,
        "signatures": {
            SIGNATURE: {
                "inputs": {
                    input_name: {
                        "dtype": input_spec.dtype.name,
                        "shape": shape_list(input_spec.shape),
                    }
                },
                "outputs": {
                    "probabilities": {
                        "dtype": "float32",
                        "shape": [-1, len(class_names)],
                    },
                    "class_id": {"dtype": "int64", "shape": [-1]},
                    "class_name": {"dtype": "string", "shape": [-1]},
                },
            },
            METADATA_SIGNATURE: {
                "inputs": {"unused": {"dtype": "int32", "shape": []}},
                "outputs": {
                    "class_names": {
                        "dtype": "string",
                        "shape": [len(class_names)],
                    },
                    "sample_rate": {"dtype": "int64", "shape": []},
                },
            },
        },
    }
    return archive, spec


def _assets(spec, staging):
    """`tf.saved_model.Asset`s of `class_names.txt` and `metadata.json`."""
    with open(os.path.join(staging, "class_names.txt"), "w") as f:
        f.write("".join(name + "\n" for name in spec["class_names"]))
    with open(os.path.join(staging, "metadata.json"), "w") as f:
        json.dump(spec, f, indent=1)
    return [
        tf.saved_model.Asset(os.path.join(staging, name))
        for name in ("class_names.txt", "metadata.json")
    ]
