"""The serving API of an exported model: its signatures and warm-up inputs.

`serving_api(model, ...)` describes what `export_for_serving` writes for a
model, in one of two forms:

- A classifier (the applications, or any model given `class_names`): one
  input, `text` (string `[batch]`, `SentimentClassifier`), `waveform`
  (float32 `[batch, samples]`, `SpeechClassifier`) or the Keras input's
  name; outputs `probabilities` (float32 `[batch, classes]`), `class_id`
  (int64 `[batch]`) and `class_name` (string `[batch]`); and a `metadata`
  signature with the `class_names` and the `sample_rate`.
- Any other model: the Keras inputs, named as the model names them (a
  dict-input model's keys, else each `keras.Input`'s name), and the model's
  outputs, named by its output dict's keys or `model.output_names`.

Every input is checked against its spec (rank and known dimensions, with
`tf.ensure_shape` named `check_<input>_shape`) before any layer sees it,
because a server feeds a request's tensors unchecked.
"""

import keras
import numpy as np
import tensorflow as tf

from lstm_keras.export import streaming
from lstm_keras.export.graph import SIGNATURE
from lstm_keras.export.graph import shape_list
from lstm_keras.export.streaming import STREAM_SIGNATURE

METADATA_SIGNATURE = "metadata"
# Rows of the warm-up requests: one, and a batch, since the exported LSTM
# runs a different kernel for each.
WARMUP_BATCHES = (1, 8)
# Steps of a warm-up request along a dimension of unknown size.
WARMUP_STEPS = 16
WARMUP_TEXTS = (
    "a gripping, beautifully acted film",
    "dull and far too long",
    "the plot never quite comes together",
    "one of the best films of the year",
)


class ServingAPI:
    """What an export serves: the signatures' functions and their description.

    Attributes:
        inputs: List of `(name, tf.TensorSpec)`, the `serving_default`
            signature's inputs in the model's order.
        serve: Function of the inputs (keyword arguments by name) returning
            the dict of `serving_default` outputs.
        metadata: Function of `unused` for the `metadata` signature, or
            `None` (not a classifier).
        spec: JSON-serializable description (`metadata.json`).
        primary_output: The output that `loaded.serve(...)` returns, or
            `None` for the first of the model's outputs.
        stream: Function of `samples` and `state` for the `stream`
            signature (`lstm_keras.export.streaming`), or `None` (a model
            that cannot stream).
        stream_inputs: The `stream` signature's `(name, tf.TensorSpec)`s.
    """

    def __init__(
        self,
        inputs,
        serve,
        metadata,
        spec,
        primary_output=None,
        stream=None,
        stream_inputs=(),
    ):
        self.inputs = inputs
        self.serve = serve
        self.metadata = metadata
        self.spec = spec
        self.primary_output = primary_output
        self.stream = stream
        self.stream_inputs = list(stream_inputs)

    def warmup_requests(self):
        """Realistic requests for each signature, for TF Serving's warm-up.

        Returns:
            A list of `(signature_name, {input name: numpy array})`.
        """
        requests = []
        for batch in WARMUP_BATCHES:
            request = {}
            for name, spec in self.inputs:
                request[name] = _example(spec, batch, self.spec)
            requests.append((SIGNATURE, request))
        if self.stream is not None:
            # A stream's first chunk: a tenth of a second, from zeros.
            chunk = self.spec["chunk_multiple"] * max(
                1,
                (self.spec["sample_rate"] // 10) // self.spec["chunk_multiple"],
            )
            for batch in WARMUP_BATCHES:
                rng = np.random.default_rng(batch)
                requests.append(
                    (
                        STREAM_SIGNATURE,
                        {
                            "samples": (
                                0.1 * rng.standard_normal((batch, chunk))
                            ).astype("float32"),
                            "state": np.zeros(
                                (batch, self.spec["state_size"]), "float32"
                            ),
                        },
                    )
                )
        return requests


def check_exportable(model):
    """Raises a `ValueError` unless `model` is a built, stateless Keras model.

    Shared by the SavedModel and LiteRT exports: neither can carry a state
    from one request to the next.
    """
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(
            "Argument `model` must be a built Keras model, got "
            f"{type(model).__name__}: {model!r}."
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


def serving_api(
    model, class_names=None, sample_rate=None, input_signature=None
):
    """Describes the export of `model`; arguments as `export_for_serving`.

    Raises:
        ValueError: naming the argument, for a model or arguments that
            cannot be exported.
    """
    if class_names is None:
        class_names = getattr(model, "class_names", None)
    if sample_rate is None:
        sample_rate = getattr(model, "sample_rate", None)
    _check_sample_rate(sample_rate)
    inputs, call_model = _model_inputs(model, input_signature)
    if class_names is not None:
        return _classifier_api(
            model, inputs, call_model, class_names, sample_rate
        )
    return _model_api(model, inputs, call_model, sample_rate)


def _check_sample_rate(sample_rate):
    if sample_rate is not None and (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, int)
        or sample_rate < 1
    ):
        raise ValueError(
            "Argument `sample_rate` must be a positive integer or None, got "
            f"{sample_rate!r}."
        )


def _model_inputs(model, input_signature):
    """`([(name, TensorSpec)], call)` with `call(dict of inputs)` the model."""
    keras_inputs = getattr(model, "_inputs_struct", None)
    if input_signature is not None:
        specs = _named_specs(input_signature)
        structure = None
    elif getattr(model, "inputs", None):
        structure = keras_inputs
        if isinstance(keras_inputs, dict):
            named = list(keras_inputs.items())
        else:
            named = [(tensor.name, tensor) for tensor in model.inputs]
        specs = [
            (
                name,
                tf.TensorSpec(
                    (None,) + tuple(tensor.shape[1:]), tensor.dtype, name=name
                ),
            )
            for name, tensor in named
        ]
    else:
        raise ValueError(
            f"Argument `model` ({model.name!r}) has no `inputs` (a subclassed "
            "model): pass `input_signature`, a list of `tf.TensorSpec` with "
            "names, one per input of its `call`."
        )
    names = [name for name, _ in specs]
    if len(set(names)) != len(names):
        raise ValueError(
            f"Argument `model` ({model.name!r}) has inputs with the same "
            f"name {names}; give each `keras.Input` its own `name`."
        )

    def call(inputs):
        if isinstance(structure, dict):
            args = {name: inputs[name] for name in names}
        elif len(names) == 1:
            args = inputs[names[0]]
        else:
            args = [inputs[name] for name in names]
        return model(args, training=False)

    return specs, call


def _named_specs(input_signature):
    if isinstance(input_signature, tf.TensorSpec):
        input_signature = [input_signature]
    specs = list(input_signature) if input_signature else []
    if not specs or not all(
        isinstance(s, tf.TensorSpec) and s.name for s in specs
    ):
        raise ValueError(
            "Argument `input_signature` must be a list of named "
            f"`tf.TensorSpec`s, got {input_signature!r}."
        )
    return [(spec.name, spec) for spec in specs]


def _checked(inputs, specs):
    """`inputs` with each tensor's shape checked, naming the input."""
    return {
        name: tf.ensure_shape(
            inputs[name], spec.shape, name=f"check_{name}_shape"
        )
        for name, spec in specs
    }


def _output_names(model, outputs):
    """The model's output dict keys, else its output layers' names when
    they are distinct, else `output_<i>` (as `model.export` names them)."""
    structure = getattr(model, "_outputs_struct", None)
    if isinstance(structure, dict):
        return list(structure)
    names = getattr(model, "output_names", None)
    if names is None and isinstance(model, keras.Sequential) and model.layers:
        names = [model.layers[-1].name]
    if names and len(names) == len(outputs) and len(set(names)) == len(names):
        return list(names)
    return [f"output_{i}" for i in range(len(outputs))]


def _model_api(model, inputs, call_model, sample_rate):
    outputs = tf.nest.flatten(getattr(model, "outputs", None) or [])
    output_names = _output_names(model, outputs) if outputs else None

    def serve(**kwargs):
        results = call_model(_checked(kwargs, inputs))
        if isinstance(results, dict):
            return dict(results)
        flat = tf.nest.flatten(results)
        names = output_names or [f"output_{i}" for i in range(len(flat))]
        return dict(zip(names, flat, strict=True))

    spec = _spec(model, inputs, None, sample_rate)
    primary = output_names[0] if output_names else None
    return ServingAPI(inputs, serve, None, spec, primary)


def _classifier_api(model, inputs, call_model, class_names, sample_rate):
    class_names = [str(name) for name in class_names]
    if len(class_names) < 2 or len(set(class_names)) != len(class_names):
        raise ValueError(
            "Argument `class_names` must hold at least two distinct names, "
            f"got {class_names!r}."
        )
    outputs = getattr(model, "outputs", None)
    if len(inputs) != 1 or (outputs is not None and len(outputs) != 1):
        raise ValueError(
            "Argument `class_names` is for a classifier of one input and one "
            f"`(batch, classes)` output; {model.name!r} has {len(inputs)} "
            "inputs. Export it without `class_names`."
        )
    num_classes = outputs[0].shape[-1] if outputs else None
    if num_classes is not None and num_classes != len(class_names):
        raise ValueError(
            f"Argument `class_names` has {len(class_names)} names but "
            f"{model.name!r} outputs {num_classes} probabilities."
        )
    # A request holds one waveform per row: the speech model's Keras input
    # is `waveforms`, its signature input `waveform`.
    name, spec = inputs[0]
    if name == "waveforms":
        name = "waveform"
        spec = tf.TensorSpec(spec.shape, spec.dtype, name=name)
    inputs = [(name, spec)]
    keras_name = "waveforms" if name == "waveform" else name
    names = tf.constant(class_names)

    def serve(**kwargs):
        checked = _checked(kwargs, inputs)
        probabilities = tf.cast(
            call_model({keras_name: checked[name]}), "float32"
        )
        class_id = tf.argmax(probabilities, axis=-1, output_type="int64")
        return {
            "probabilities": probabilities,
            "class_id": class_id,
            "class_name": tf.gather(names, class_id),
        }

    can_stream = streaming.streaming_problem(model) is None
    size = streaming.state_size(model) if can_stream else 0
    multiple = streaming.chunk_multiple(model) if can_stream else 0

    def metadata(unused):
        return {
            "class_names": names,
            "sample_rate": tf.constant(sample_rate or 0, "int64"),
            "state_size": tf.constant(size, "int64"),
            "chunk_multiple": tf.constant(multiple, "int64"),
        }

    stream, stream_inputs = None, ()
    if can_stream:
        stream, specs = streaming.stream_signature(model)
        stream_inputs = [(spec.name, spec) for spec in specs]

    spec = _spec(model, inputs, class_names, sample_rate, size, multiple)
    return ServingAPI(
        inputs,
        serve,
        metadata,
        spec,
        "probabilities",
        stream=stream,
        stream_inputs=stream_inputs,
    )


def _spec(
    model, inputs, class_names, sample_rate, state_size=0, chunk_multiple=0
):
    signatures = {
        SIGNATURE: {
            "inputs": {
                name: {
                    "dtype": spec.dtype.name,
                    "shape": shape_list(spec.shape),
                }
                for name, spec in inputs
            },
        }
    }
    if class_names is not None:
        signatures[SIGNATURE]["outputs"] = {
            "probabilities": {
                "dtype": "float32",
                "shape": [-1, len(class_names)],
            },
            "class_id": {"dtype": "int64", "shape": [-1]},
            "class_name": {"dtype": "string", "shape": [-1]},
        }
        signatures[METADATA_SIGNATURE] = {
            "inputs": {"unused": {"dtype": "int32", "shape": []}},
            "outputs": {
                "class_names": {"dtype": "string", "shape": [len(class_names)]},
                "sample_rate": {"dtype": "int64", "shape": []},
                "state_size": {"dtype": "int64", "shape": []},
                "chunk_multiple": {"dtype": "int64", "shape": []},
            },
        }
    if state_size:
        state = {"dtype": "float32", "shape": [-1, state_size]}
        signatures[STREAM_SIGNATURE] = {
            "inputs": {
                "samples": {"dtype": "float32", "shape": [-1, -1]},
                "state": state,
            },
            "outputs": {
                "probabilities": {
                    "dtype": "float32",
                    "shape": [-1, len(class_names)],
                },
                "state": state,
            },
        }
    return {
        "model": type(model).__name__,
        "class_names": class_names,
        "sample_rate": sample_rate,
        "state_size": state_size,
        "chunk_multiple": chunk_multiple,
        "signatures": signatures,
    }


def _example(spec, batch, description):
    """A plausible input of `spec` with `batch` rows, for warm-up."""
    rng = np.random.default_rng(0)
    if spec.dtype == tf.string:
        texts = [WARMUP_TEXTS[i % len(WARMUP_TEXTS)] for i in range(batch)]
        texts = np.array(texts, dtype=object)
        trailing = [1 if d is None else d for d in spec.shape[1:]]
        return np.broadcast_to(
            texts.reshape([batch] + [1] * len(trailing)), [batch] + trailing
        ).copy()
    shape = [batch]
    for i, dim in enumerate(spec.shape[1:]):
        if dim is not None:
            shape.append(dim)
        elif i == 0 and spec.shape.rank == 2 and description["sample_rate"]:
            shape.append(description["sample_rate"])  # a second of audio
        else:
            shape.append(WARMUP_STEPS)
    if spec.dtype.is_floating:
        scale = 0.1 if description["sample_rate"] else 1.0
        return (scale * rng.standard_normal(shape)).astype(
            spec.dtype.as_numpy_dtype
        )
    if spec.dtype.is_integer:
        # Token ids: 0 is padding in most models, so use small ids above it.
        return rng.integers(1, 4, size=shape).astype(spec.dtype.as_numpy_dtype)
    if spec.dtype == tf.bool:
        return np.ones(shape, bool)
    raise ValueError(
        f"Input {spec.name!r} has dtype {spec.dtype.name}, which the warm-up "
        "requests do not cover."
    )
