"""LiteRT (TensorFlow Lite) files for devices: `export_litert(model, path)`.

The model is traced for the TFLite converter
(`export_context.litert_tracing()`) with its batch size fixed (1 by
default), so that every `lstm_keras.LSTM` the fused kernel can compute
becomes TFLite's `UNIDIRECTIONAL_SEQUENCE_LSTM` (a `Bidirectional`, two of
them) and every other one a builtin `WHILE` loop (see
`lstm_keras.backends.tensorflow.litert`). A `SpeechClassifier` runs whole,
raw waveform in: its log-mel front end is traced as a framing `GATHER` and
matmuls (a two-stage DFT, the mel filters), which are builtins. A
`SentimentClassifier` has string ops, which LiteRT has not: its file takes
token ids and subword n-gram ids (`sentiment_inputs` makes them from texts)
and has the vocabulary beside it, `<path>.vocab.txt`. The file
is refused if it holds any custom or Flex (TensorFlow) op, and written
atomically (a hidden temporary file in the same folder, renamed into
place). A classifier's class names go beside it in `<path>.labels.txt`, one
per line in class id order, as LiteRT's classification tools read them.

A speech model that can stream (`lstm_keras.export.streaming`) also gets
the `stream` signature (`samples` `[batch, n]` and `state` in,
`probabilities` and `state` out), whose LSTMs carry their states in and
out and so run as builtin loops.

Quantization (`quantize`):

- `"none"`: float32 weights and arithmetic.
- `"dynamic"`: int8 weights, float activations (dynamic range); no data.
  The log-mel front end's matmuls are kept small enough (under 1,024
  weights) that the quantizer leaves them float: it would also quantize
  their input, the power spectrum, to 8 bits.
- `"int8"`: the fused LSTMs run TFLite's integer LSTM kernel (int8 weights
  and activations, int16 cell state), calibrated on `representative_data`
  (the training split is the right choice); every other op, the front end
  included, stays float32, as do the inputs and outputs.
- `"full_int8"`: every op in integers (int8, int16 cell states), int8
  inputs and outputs, for integer-only hardware (microcontrollers, NPUs);
  calibrated on `representative_data`. The file's input and output scale
  and zero point are in the file (and in the returned report). Its LSTMs'
  states are variable tensors, carried from one invocation to the next:
  reset them before each sequence (`reset_all_variables()` in Python,
  `ResetVariableTensors()` in C++). A
  `SpeechClassifier`'s spectrum spans more range than 8 bits hold, so its
  file takes the normalized log-mel features of one clip's real frames
  (`features`, int8 `[1, frames, num_mel_bins]`) and a float32 front-end
  file beside it, `<path>.frontend.tflite`, computes them from the
  waveform; `FullIntegerSpeech` runs the pair.

`tf.lite.TFLiteConverter.from_keras_model(model)` gives the same graph for
a model whose inputs have a fixed batch size (`keras.Input(...,
batch_size=1)`); with a free batch size the LSTMs convert to builtin loops,
since the fused kernel keeps its states at a size fixed at conversion. A
serving export's `litert` signature (`add_litert_endpoint`) is the same
graph at batch size 1, for `from_saved_model(path,
signature_keys=["litert"])`.
"""

import itertools
import os
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from lstm_keras.backends.tensorflow import export_context
from lstm_keras.export import streaming
from lstm_keras.export.signatures import check_exportable

QUANTIZATIONS = ("none", "dynamic", "int8", "full_int8")
# A sentiment file's `subword_ids` hold every n-gram of tokens up to this
# many characters (`sentiment_inputs` refuses longer ones).
MAX_TOKEN_CHARS = 30
FUSED_LSTM = "UNIDIRECTIONAL_SEQUENCE_LSTM"
# The signature of a serving SavedModel that the TFLite converter takes:
# `from_saved_model(path, signature_keys=[LITERT_SIGNATURE])`.
LITERT_SIGNATURE = "litert"
# Examples of the representative data used for int8 calibration.
CALIBRATION_EXAMPLES = 200


def export_litert(
    model,
    path,
    quantize="none",
    representative_data=None,
    batch_size=1,
    overwrite=False,
    require_fused=False,
    verbose=True,
):
    """Converts a built Keras model to a LiteRT file at `path`.

    Args:
        model: A built Keras model with one or more fixed-rank inputs (a
            `SpeechClassifier`, or any functional or `Sequential` model),
            or a `SentimentClassifier`, whose file takes token ids
            (`sentiment_inputs`), since LiteRT has no string ops. Other
            models with string inputs are refused.
        path: The `.tflite` file to write.
        quantize: One of `"none"`, `"dynamic"`, `"int8"`, `"full_int8"`.
            Defaults to `"none"`.
        representative_data: For `"int8"` and `"full_int8"` (required
            there): an iterable of
            examples, each an array (or a list of arrays, one per input)
            of one example without the batch axis, e.g. unbatched training
            clips. At most `CALIBRATION_EXAMPLES` (200) are used.
        batch_size: Positive integer, the batch size the file runs at.
            Defaults to `1`.
        overwrite: Boolean, whether an existing file is replaced (else it
            is an error). Defaults to `False`.
        require_fused: Boolean, refuse (with the reasons) a model whose
            LSTMs the fused kernel cannot all run in `serving_default`,
            instead of running those as builtin loops. Defaults to `False`.
        verbose: Boolean, print what was written. Defaults to `True`.

    Returns:
        A dict: `path`, `bytes`, `quantize`, `batch_size`, `ops` (the
        builtin op names, sorted), `fused_lstm` (how many fused LSTM ops),
        `labels` (the labels file, or `None`), `vocabulary` (a sentiment
        model's `<path>.vocab.txt`, one token per line in id order, or
        `None`).

    Example:

    >>> report = export_litert(model, "digits.tflite", quantize="dynamic")
    Wrote digits.tflite (... MB, quantize=dynamic, batch 1, 4 fused LSTM ops)
    >>> report["fused_lstm"]  # the default speech model: 2 BiLSTM layers
    4
    """
    check_exportable(model)
    specs, serve = _litert_api(model, batch_size)
    if quantize not in QUANTIZATIONS:
        raise ValueError(
            f"Argument `quantize` must be one of {QUANTIZATIONS}, got "
            f"{quantize!r}."
        )
    if quantize in ("int8", "full_int8") and representative_data is None:
        raise ValueError(
            "Argument `representative_data` is required for "
            f"quantize={quantize!r}: examples to calibrate the activations' "
            "ranges on (the training split)."
        )
    split_speech = quantize == "full_int8" and _is_speech(model)
    if split_speech and batch_size != 1:
        raise ValueError(
            'Argument `batch_size`: a quantize="full_int8" speech file runs '
            f"one clip at a time (its real frames), got {batch_size!r}."
        )
    if quantize == "full_int8" and _is_sentiment(model):
        raise ValueError(
            'Argument `quantize`: "full_int8" takes models with float '
            "inputs; a SentimentClassifier's file takes token ids, so use "
            '"int8" (its LSTMs in integers) or "dynamic".'
        )
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"Argument `path` {path!r} is a directory.")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"LiteRT file {path!r} exists; pass overwrite=True (or "
            "--overwrite) to replace it."
        )
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)

    frontend = None
    with tempfile.TemporaryDirectory() as staging:
        saved_model = os.path.join(staging, "saved_model")
        if split_speech:
            frontend = _speech_frontend(model, staging)
            examples = [
                speech_features(model, np.asarray(clip, "float32")[None])[0]
                for clip in itertools.islice(
                    representative_data, CALIBRATION_EXAMPLES
                )
            ]
            model, representative_data = _speech_body(model), examples
            specs, serve = _litert_api(model, batch_size)
        with export_context.litert_layer_records() as records:
            signatures = _write_litert_saved_model(
                model,
                specs,
                serve,
                saved_model,
                batch_size,
                full_integer=quantize == "full_int8",
            )
        if require_fused:
            _check_fused(model, records)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model, signature_keys=signatures
        )
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        calibration = None
        if quantize in ("int8", "full_int8"):
            calibration = _calibration(representative_data, specs)
        if quantize == "int8":
            content = _int8_lstms(converter, calibration)
        elif quantize == "full_int8":
            content = _full_integer(converter, calibration)
        else:
            content = converter.convert()
    ops, custom = litert_ops(content)
    if custom:
        raise ValueError(
            f"The LiteRT conversion of model {model.name!r} needs ops that "
            f"are not LiteRT builtins: {sorted(custom)}."
        )
    _write_atomically(path, content)
    if frontend is not None:
        frontend = _write_frontend(frontend, path)
    labels = _write_labels(model, path)
    vocabulary = None
    if _is_sentiment(model):
        vocabulary = f"{path}.vocab.txt"
        _write_atomically(
            vocabulary,
            "".join(f"{token}\n" for token in model.vocabulary()).encode(),
        )
    report = {
        "path": path,
        "bytes": len(content),
        "quantize": quantize,
        "batch_size": batch_size,
        "ops": sorted(set(ops)),
        "fused_lstm": ops.count(FUSED_LSTM),
        "labels": labels,
        "vocabulary": vocabulary,
        "frontend": frontend,
    }
    if quantize == "full_int8":
        report.update(_quantization_parameters(content))
    if verbose:
        print(
            f"Wrote {path} ({len(content) / 1e6:.2f} MB, quantize="
            f"{quantize}, batch {batch_size}, {report['fused_lstm']} fused "
            "LSTM ops)"
        )
    return report


def _full_integer(converter, calibration):
    """The converter's model in integers throughout, int8 in and out."""
    converter.representative_dataset = calibration
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def _quantization_parameters(content):
    """`inputs` and `outputs` of the file's `serving_default`: name ->
    `(scale, zero_point)`, how its int8 tensors map to real values
    (`real = scale * (q - zero_point)`)."""
    schema = _schema()
    model = schema.Model.GetRootAs(content, 0)
    (signature,) = [
        model.SignatureDefs(k)
        for k in range(model.SignatureDefsLength())
        if model.SignatureDefs(k).SignatureKey() == b"serving_default"
    ]
    subgraph = model.Subgraphs(signature.SubgraphIndex())

    def parameters(count, tensor_map):
        found = {}
        for k in range(count):
            entry = tensor_map(k)
            quantization = subgraph.Tensors(entry.TensorIndex()).Quantization()
            found[entry.Name().decode()] = (
                float(quantization.Scale(0)),
                int(quantization.ZeroPoint(0)),
            )
        return found

    return {
        "inputs": parameters(signature.InputsLength(), signature.Inputs),
        "outputs": parameters(signature.OutputsLength(), signature.Outputs),
    }


def _int8_lstms(converter, calibration):
    """The converter's model with its fused LSTMs in int8, the rest float.

    TFLite's integer LSTM kernel (int8 weights and activations, int16 cell
    state) calibrated on `calibration`. The other ops stay float32: a
    log-mel front end's power spectrum spans more range than 8 bits hold.
    """
    converter.representative_dataset = calibration
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_ops=sorted(set(_builtin_names().values()) - {FUSED_LSTM})
    )
    with warnings.catch_warnings():
        # The debugger runs TensorFlow's own (deprecated) interpreter.
        warnings.filterwarnings("ignore", "\\s*Warning: tf.lite.Interpreter")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=calibration,
            debug_options=options,
        )
        return debugger.get_nondebug_quantized_model()


def _schema():
    from lstm_keras.compat import litert_schema as schema_py_generated

    return schema_py_generated


def _builtin_names():
    """Every LiteRT builtin op's code -> name."""
    return {
        value: name
        for name, value in vars(_schema().BuiltinOperator).items()
        if not name.startswith("_")
    }


def litert_ops(content):
    """The ops of a LiteRT flatbuffer, over all its subgraphs.

    Args:
        content: The file's bytes.

    Returns:
        `(builtins, custom)`: the builtin op names, one per op (so counts
        are kept), and the set of custom op codes (Flex ops among them).
    """
    schema = _schema()
    names = _builtin_names()
    model = schema.Model.GetRootAs(content, 0)
    codes = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        codes.append((builtin, custom.decode() if custom else None))
    builtins, custom = [], set()
    for subgraph_index in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(subgraph_index)
        for op_index in range(subgraph.OperatorsLength()):
            builtin, custom_code = codes[
                subgraph.Operators(op_index).OpcodeIndex()
            ]
            if custom_code is not None:
                custom.add(custom_code)
            else:
                builtins.append(names[builtin])
    return builtins, custom


def _input_specs(model, batch_size):
    """The model's inputs as `tf.TensorSpec`s with the batch size fixed."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            "Argument `batch_size` must be a positive integer, got "
            f"{batch_size!r}."
        )
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            f"Model {model.name!r} has no known inputs: export a functional "
            "or Sequential model, built."
        )
    specs = []
    for tensor in model.inputs:
        if tensor.dtype == "string":
            raise ValueError(
                f"Model {model.name!r} takes strings (input "
                f"{tensor.name!r}), which LiteRT has no builtin ops for."
            )
        name = tensor.name.split(":")[0]
        specs.append(
            tf.TensorSpec([batch_size, *tensor.shape[1:]], tensor.dtype, name)
        )
    return specs


def _check_fused(model, records):
    """Raises a `ValueError` naming each LSTM that would run as a loop."""
    loops = {name: reason for name, reason in records.items() if reason}
    if loops:
        listed = "; ".join(
            f"layer {name!r}: {reason}"
            for name, reason in sorted(loops.items())
        )
        raise ValueError(
            "Argument `require_fused`: the fused LSTM kernel cannot run "
            f"every LSTM of model {model.name!r} ({listed})."
        )


def _is_speech(model):
    from lstm_keras.applications import SpeechClassifier

    return isinstance(model, SpeechClassifier)


def speech_features(model, waveforms):
    """The features a speech model's LSTMs read, of one clip's real frames.

    `waveforms` is `[1, samples]`; returns `[1, frames, num_mel_bins]`: the
    normalized log-mel frames (clip-normalized where the model is) inside
    the clip's real length, which the model masks the others of.
    """
    log_mel = model.log_mel
    waveforms = tf.convert_to_tensor(waveforms, tf.float32)
    mask = log_mel.compute_mask(waveforms)
    features = model.normalizer(log_mel(waveforms))
    if model.get_config()["clip_normalization"]:
        features = model.get_layer("clip_normalization")(features, mask=mask)
    real_frames = tf.where(mask[0])[:, 0]
    return tf.gather(features, real_frames, axis=1)


def _speech_body(model):
    """A speech model from its features on: LSTMs and softmax, one clip."""
    features = keras.Input(
        (None, model.log_mel.num_mel_bins), batch_size=1, name="features"
    )
    probabilities = model.get_layer("probabilities")(model.backbone(features))
    body = keras.Model(features, probabilities, name=f"{model.name}_body")
    body.class_names = model.class_names
    return body


def _speech_frontend(model, staging):
    """The float32 front-end LiteRT file's content: waveform -> features."""
    specs = [tf.TensorSpec([1, None], tf.float32, "waveforms")]

    def frontend(waveforms):
        return {"features": speech_features(model, waveforms)}

    path = os.path.join(staging, "frontend")
    signatures = _write_litert_saved_model(
        model, specs, frontend, path, 1, with_stream=False
    )
    converter = tf.lite.TFLiteConverter.from_saved_model(
        path, signature_keys=signatures
    )
    return converter.convert()


def _write_frontend(content, path):
    frontend = f"{path}.frontend.tflite"
    _write_atomically(frontend, content)
    return frontend


class FullIntegerSpeech:
    """Runs a `quantize="full_int8"` speech file and its front-end file.

    The front end (float32) turns one clip into its features, which are
    quantized with the file's input parameters; the file's int8
    probabilities are turned back into real ones. An app on a device does
    the same with its own LiteRT runtime.

    Args:
        path: The `.tflite` file `export_litert(..., quantize="full_int8")`
            wrote for a `SpeechClassifier`; `<path>.frontend.tflite` must
            be beside it.

    Call arguments:
        waveform: float32 `[samples]` or `[1, samples]`, one clip.

    Returns:
        float32 `[1, classes]`, the probabilities.
    """

    def __init__(self, path):
        from ai_edge_litert.interpreter import Interpreter

        path = os.fspath(path)
        with open(path, "rb") as f:
            parameters = _quantization_parameters(f.read())
        self.input_scale, self.input_zero = parameters["inputs"]["features"]
        self.output_scale, self.output_zero = parameters["outputs"][
            "probabilities"
        ]
        self._frontend = Interpreter(
            model_path=f"{path}.frontend.tflite"
        ).get_signature_runner()
        self._interpreter = Interpreter(model_path=path)
        self._interpreter.allocate_tensors()
        self._model = self._interpreter.get_signature_runner()

    def features(self, waveform):
        """The clip's float32 features `[1, frames, num_mel_bins]`."""
        waveform = np.asarray(waveform, np.float32).reshape(1, -1)
        return self._frontend(waveforms=waveform)["features"]

    def __call__(self, waveform):
        features = self.features(waveform)
        quantized = np.round(features / self.input_scale + self.input_zero)
        quantized = np.clip(quantized, -128, 127).astype(np.int8)
        # The LSTMs' states are variable tensors, which the integer kernel
        # carries over from the previous clip unless they are reset.
        self._interpreter.reset_all_variables()
        (output,) = self._model(features=quantized).values()
        return (
            output.astype(np.float32) - self.output_zero
        ) * self.output_scale


def _is_sentiment(model):
    from lstm_keras.applications import SentimentClassifier

    return isinstance(model, SentimentClassifier)


def _litert_api(model, batch_size):
    """`(specs, serve)`: the `serving_default` inputs and their function."""
    if _is_sentiment(model):
        return _sentiment_api(model, batch_size)
    specs = _input_specs(model, batch_size)

    def serve(*inputs):
        inputs = inputs[0] if len(inputs) == 1 else list(inputs)
        outputs = model(inputs, training=False)
        if getattr(model, "class_names", None):
            return {"probabilities": outputs}
        return outputs

    return specs, serve


def add_litert_endpoint(archive, model):
    """Adds the `litert` signature to a serving SavedModel's `archive`.

    The signature is the graph `export_litert` converts, at batch size 1:
    the fused LSTM kernel's functions where it computes the layer, builtin
    loops elsewhere (and in TensorFlow, which runs it too). The serving
    signature cannot be that graph: it runs `BlockLSTM`, which LiteRT has
    no builtin for, at a free batch size, which the fused kernel cannot
    take. So `tf.lite.TFLiteConverter.from_saved_model(path,
    signature_keys=["litert"])` converts an export to a LiteRT file with
    builtin ops only, as `export_litert(model, ..., batch_size=1)` would.

    Args:
        archive: The `keras.export.ExportArchive` being written, tracking
            `model`.
        model: The exported model.

    Returns:
        `LITERT_SIGNATURE`, or `None` for a model whose inputs LiteRT
        cannot take (strings, other than a `SentimentClassifier`'s: its
        signature takes token ids, as its LiteRT file does; a subclassed
        model without Keras inputs), which gets no such signature.
    """
    try:
        specs, serve = _litert_api(model, batch_size=1)
    except ValueError:
        return None

    def litert(*inputs):
        # Whenever it is traced (the archive traces each endpoint again
        # inside TensorFlow's save), it is traced for the converter.
        # The LSTMs read their weights from the export's stacked kernels,
        # as `serving_default` does, so the export holds them once.
        with export_context.litert_tracing(in_serving_export=True):
            with export_context.inference_dropout_off(model):
                return serve(*inputs)

    archive.add_endpoint(LITERT_SIGNATURE, litert, specs)
    return LITERT_SIGNATURE


def sentiment_inputs(model, texts):
    """The inputs of a `SentimentClassifier`'s LiteRT file for `texts`.

    The file takes token ids, not strings: `token_ids` (int32 `[n,
    max_length]`, the ids of `model.vocabulary()` after the model's
    standardization and whitespace split, 0 for padding, 1 for a word out
    of the vocabulary) and, with subwords, `subword_ids` (int32 `[n,
    max_length, max_ngrams]`, each token's character n-grams, `<` and `>`
    around it, hashed by `tf.strings.to_hash_bucket_fast` into
    `subword_buckets` rows; -1 where there is none). An app on a device
    computes the same from the vocabulary file.

    Args:
        model: The `SentimentClassifier`.
        texts: A sequence of strings.

    Returns:
        A dict of int32 numpy arrays by input name.
    """
    texts = tf.constant(list(texts))
    standardized = model.standardizer(texts)
    fit_length = model.get_layer("fit_length")
    token_ids = np.asarray(fit_length(model.vectorizer(standardized)), "int32")
    # The file's length is fixed: padding (masked) to max_length.
    padding = fit_length.max_length - token_ids.shape[1]
    inputs = {"token_ids": np.pad(token_ids, [(0, 0), (0, padding)])}
    subword = _subword_layer(model)
    if subword is not None:
        inputs["subword_ids"] = subword.ngram_ids(
            standardized, subword.max_ngrams(MAX_TOKEN_CHARS)
        ).numpy()
    return inputs


def _subword_layer(model, suffix=""):
    try:
        return model.get_layer(f"subword_embedding{suffix}")
    except ValueError:
        return None


def _sentiment_api(model, batch_size):
    """A sentiment model from token ids: its layers after the strings."""
    max_length = model.get_layer("fit_length").max_length
    subword = _subword_layer(model)
    specs = [tf.TensorSpec([batch_size, max_length], tf.int32, "token_ids")]
    if subword is not None:
        shape = [batch_size, max_length, subword.max_ngrams(MAX_TOKEN_CHARS)]
        specs.append(tf.TensorSpec(shape, tf.int32, "subword_ids"))
    members = model.get_config()["num_members"]
    suffixes = [f"_{index}" if index else "" for index in range(members)]

    def serve(token_ids, subword_ids=None):
        mask = tf.not_equal(token_ids, 0)
        outputs = []
        for suffix in suffixes:
            # The model's layers after the strings, as its graph runs them
            # in inference (its dropouts are identities there).
            x = model.get_layer(f"embedding{suffix}")(token_ids)
            if subword_ids is not None:
                x = x + _subword_layer(model, suffix).embed_ngram_ids(
                    subword_ids
                )
            x = model.get_layer(f"backbone{suffix}")(x, mask=mask)
            outputs.append(model.get_layer(f"probabilities{suffix}")(x))
        probabilities = tf.reduce_mean(tf.stack(outputs), axis=0)
        return {"probabilities": probabilities}

    return specs, serve


def _write_litert_saved_model(
    model, specs, serve, path, batch_size, full_integer=False, with_stream=True
):
    """The model's inference graph for the converter, as a SavedModel.

    Returns:
        The signature names: `serving_default`, and `stream` for a model
        that can stream (`lstm_keras.export.streaming`), unless
        `with_stream` is false or the graph is for a `full_integer` file.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    signatures = ["serving_default"]
    with_stream = with_stream and not full_integer
    with export_context.litert_tracing(full_integer=full_integer):
        with export_context.inference_dropout_off(model):
            archive.add_endpoint("serving_default", serve, specs)
            if with_stream and streaming.streaming_problem(model) is None:
                stream, stream_specs = streaming.stream_signature(
                    model, batch_size
                )
                archive.add_endpoint(
                    streaming.STREAM_SIGNATURE, stream, stream_specs
                )
                signatures.append(streaming.STREAM_SIGNATURE)
            archive.write_out(path, verbose=False)
    return signatures


def _calibration(representative_data, specs):
    """The converter's `representative_dataset` from unbatched examples.

    The examples are read once, here, and checked before any conversion,
    so that a one-shot iterator serves every pass over the data.
    """
    batch_size = specs[0].shape[0]
    examples = []
    for example in itertools.islice(
        representative_data, CALIBRATION_EXAMPLES * batch_size
    ):
        parts = example if isinstance(example, (list, tuple)) else [example]
        if len(parts) != len(specs):
            raise ValueError(
                f"Each example of `representative_data` must have "
                f"{len(specs)} part(s), one per model input; got "
                f"{len(parts)}."
            )
        examples.append([np.asarray(part) for part in parts])
    batches = [
        [
            _stack(
                [example[index] for example in examples[i : i + batch_size]],
                spec,
            )
            for index, spec in enumerate(specs)
        ]
        for i in range(0, len(examples) - batch_size + 1, batch_size)
    ]

    def rows():
        yield from batches

    return rows


def _stack(parts, spec):
    """Examples of one input as a batch, zero-padded to the longest."""
    longest = np.max([part.shape for part in parts], axis=0)
    batch = np.zeros([len(parts), *longest], spec.dtype.as_numpy_dtype)
    for row, part in enumerate(parts):
        batch[(row, *(slice(0, n) for n in part.shape))] = part
    return batch


def _write_atomically(path, content):
    folder = os.path.dirname(os.path.abspath(path))
    handle, staging = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", dir=folder
    )
    # mkstemp makes the file private; give it the permissions of a file
    # the user creates.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o666 & ~umask)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, path)
    except BaseException:
        if os.path.exists(staging):
            os.remove(staging)
        raise


def _write_labels(model, path):
    class_names = getattr(model, "class_names", None)
    if not class_names:
        return None
    labels = f"{path}.labels.txt"
    _write_atomically(
        labels, "".join(f"{name}\n" for name in class_names).encode()
    )
    return labels
