"""SavedModels for TensorFlow Serving: `export_for_serving(model, path)`.

Writes the layout TF Serving watches, `model_base_path/<version>/`
(`saved_model.pb`, `variables/`, `assets/`, `assets.extra/`,
`fingerprint.pb`), for any built Keras model:

- a classifier (`SentimentClassifier`, `SpeechClassifier`, or any model
  given `class_names`) gets a `serving_default` signature from raw input
  (`text`, `waveform`, or the Keras input's name) to `probabilities`,
  `class_id` and `class_name`, and a `metadata` signature (`class_names`,
  `sample_rate`, `state_size`, `chunk_multiple`; its one input, `unused`,
  is ignored, since TF Serving's REST API cannot call a signature without
  inputs); a speech model that can stream (unidirectional, no clip
  normalization) also gets a `stream` signature, `samples` and `state` in,
  `probabilities` and `state` out (`lstm_keras.export.streaming`);
- any other model gets a `serving_default` signature with the model's own
  input and output names (`lstm_keras.export.signatures`);
- every model whose inputs LiteRT can take also gets a `litert` signature
  (batch size 1; a `SentimentClassifier`'s takes token ids), the graph
  `export_litert` converts, so that the TFLite converter turns the export
  into a LiteRT file of builtin ops with the LSTMs fused:
  `tf.lite.TFLiteConverter.from_saved_model(path,
  signature_keys=["litert"])` (`litert_signature=False` leaves it out).

`assets/metadata.json` describes the signatures (and `class_names.txt`
lists a classifier's classes in class id order);
`assets.extra/tf_serving_warmup_requests` holds requests of one row and of
a batch that TF Serving replays when it loads the version, so that the
first real request is not slow. In Python, `loaded.serve(...)` (not a
signature) returns the first output alone, as after `model.export`.

The graph holds only standard TensorFlow ops, so TF Serving (or any
TensorFlow) runs it without this package: it is traced inside
`export_tracing()`, where `lstm_keras.LSTM` runs on TensorFlow's own
kernels (`lstm_keras.backends.tensorflow.serving`), and every written
SavedModel is scanned (`nonstandard_ops`) for custom ops, `PyFunc`s and
`CudnnRNN*`, and refused if it has any. The signature is stateless: models
with a stateful layer are refused, and a signature that writes a variable
(`state_writes`) is too. An input of the wrong rank or size is refused
before any layer sees it, with an error naming the input. A version is
written into a hidden sibling folder (`.tmp-<version>-*`, which TF Serving
ignores, not being an integer) and renamed into place, so a server never
sees a half-written version.
"""

import contextlib
import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from lstm_keras.backends.tensorflow import export_context
from lstm_keras.export import warmup
from lstm_keras.export.graph import SIGNATURE
from lstm_keras.export.graph import describe
from lstm_keras.export.graph import nonstandard_ops
from lstm_keras.export.graph import state_writes
from lstm_keras.export.litert import add_litert_endpoint
from lstm_keras.export.signatures import METADATA_SIGNATURE
from lstm_keras.export.signatures import check_exportable
from lstm_keras.export.signatures import serving_api
from lstm_keras.export.streaming import STREAM_SIGNATURE


def export_for_serving(
    model,
    model_base_path,
    version=1,
    overwrite=False,
    class_names=None,
    sample_rate=None,
    input_signature=None,
    litert_signature=True,
    verbose=True,
):
    """Exports `model` as version `version` of a TF Serving model.

    Args:
        model: A built Keras model: a classifier (`SentimentClassifier`,
            `SpeechClassifier`, or any model with one input and one
            `(batch, classes)` probability output, given `class_names`), or
            any other model (functional, `Sequential`, or subclassed with
            `input_signature`).
        model_base_path: The model's folder (TF Serving's
            `--model_base_path`); created if missing.
        version: Positive integer, the version folder's name. Defaults to
            `1`.
        overwrite: Boolean, whether an existing version is replaced (else
            it is an error). Defaults to `False`.
        class_names: Sequence of class names in class id order, or `None`
            for `model.class_names` if the model has them (a classifier's
            signature), else the model's own outputs. Defaults to `None`.
        sample_rate: Samples per second of a waveform input, or `None` for
            `model.sample_rate` (if any). Defaults to `None`.
        input_signature: List of named `tf.TensorSpec`s, one per input, for
            a model without `inputs` (subclassed); `None` takes the model's
            Keras inputs. Defaults to `None`.
        litert_signature: Boolean, also write the `litert` signature (batch
            size 1), which `tf.lite.TFLiteConverter.from_saved_model(path,
            signature_keys=["litert"])` converts to a LiteRT file of
            builtin ops, the LSTMs fused (see
            `lstm_keras.export.litert.add_litert_endpoint`); models whose
            inputs LiteRT cannot take get none. It adds about as much
            tracing as the serving signature. Defaults to `True`.
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
        input_signature=input_signature,
        litert_signature=litert_signature,
    )
    if verbose:
        print(f"Exported version {version} to {path}")
        print(describe(path))
    return path


def write_saved_model(
    model,
    path,
    overwrite=False,
    class_names=None,
    sample_rate=None,
    input_signature=None,
    litert_signature=True,
):
    """Writes the serving SavedModel to exactly `path`, atomically.

    `export_for_serving` without the version layout; arguments as there.
    The SavedModel is written into a hidden sibling folder, scanned by
    `nonstandard_ops`, then renamed to `path` (an existing `path`, with
    `overwrite`, is first renamed aside, then removed).

    Returns:
        `path`.
    """
    check_exportable(model)
    # Checked before anything is written.
    api = serving_api(model, class_names, sample_rate, input_signature)
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".tmp-{name}-")
    old = None
    try:
        with tempfile.TemporaryDirectory() as staging, _tracing(model):
            archive = _archive(model, api, litert_signature)
            # `ExportArchive` saves what its root tracks; assets included.
            archive._tf_trackable.assets = _assets(api.spec, staging)
            # Traced here, inside `_tracing`.
            archive.write_out(tmp, verbose=False)
        _check_written(model, tmp)
        warmup.write_warmup_requests(tmp, api.warmup_requests())
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


def _check_written(model, path):
    found = nonstandard_ops(path)
    if found:
        raise ValueError(
            f"The SavedModel of {model.name!r} holds ops that TF Serving "
            f"cannot run without lstm_keras or a GPU: {sorted(found)}. "
            "It was not written."
        )
    writes = state_writes(path)
    if writes:
        raise ValueError(
            f"The serving signature of {model.name!r} writes state "
            f"({sorted(writes)}), so a request would depend on the ones "
            "before it. It was not written."
        )


@contextlib.contextmanager
def _tracing(model):
    """Traces the inference graph that a server should run.

    Inside `export_tracing()` (stock ops only), with the recurrent cells'
    dropout rates at 0 (`export_context.inference_dropout_off`).
    """
    with export_context.inference_dropout_off(model):
        with export_context.export_tracing():
            yield


def _archive(model, api, litert_signature):
    """The `keras.export.ExportArchive` of the model's serving API."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    specs = [spec for _, spec in api.inputs]
    names = [name for name, _ in api.inputs]

    def serve(*inputs):
        return api.serve(**dict(zip(names, inputs, strict=True)))

    serving_fn = archive.add_endpoint(SIGNATURE, serve, specs)
    if api.metadata is not None:
        archive.add_endpoint(
            METADATA_SIGNATURE,
            api.metadata,
            [tf.TensorSpec([], "int32", "unused")],
        )
    if api.stream is not None:
        archive.add_endpoint(
            STREAM_SIGNATURE,
            api.stream,
            [spec for _, spec in api.stream_inputs],
        )
    if litert_signature:
        add_litert_endpoint(archive, model)

    # `loaded.serve(...)`, the first output, as `model.export` gives it (a
    # Python convenience, not a signature); it calls the same graph.
    def first_output(*inputs):
        outputs = serving_fn(*inputs)
        return outputs[api.primary_output or next(iter(outputs))]

    archive._tf_trackable.serve = tf.function(
        first_output, input_signature=specs, autograph=False
    )
    return archive


def _assets(spec, staging):
    """`tf.saved_model.Asset`s of `metadata.json` (and `class_names.txt`)."""
    names = ["metadata.json"]
    with open(os.path.join(staging, "metadata.json"), "w") as f:
        json.dump(spec, f, indent=1)
    if spec["class_names"] is not None:
        names.insert(0, "class_names.txt")
        with open(os.path.join(staging, "class_names.txt"), "w") as f:
            f.write("".join(name + "\n" for name in spec["class_names"]))
    return [tf.saved_model.Asset(os.path.join(staging, name)) for name in names]
