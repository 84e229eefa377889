"""Our SavedModels served with no Python: TensorFlow's C API session loader.

TF Serving loads a version with TensorFlow's C++ `LoadSavedModel` (tag
`serve`): it runs the variables' restore op and feeds and fetches the
graph tensors that a signature_def names. It never sees the Python object
graph that `tf.saved_model.load` rebuilds, so a SavedModel can load in
Python and still fail in a server. `c_loader_harness` serves through the
same loader (`TF_LoadSessionFromSavedModel`, `TF_SessionRun`) from a small
C program; these tests compare what it returns with Keras in this process:

- the applications, exported with `export_for_serving`;
- user models exported with `model.export` (masked, embedded and
  bidirectional, backwards, several outputs);
- bad requests: each refused with an error naming the input, or (an empty
  batch) answered with empty outputs, never a crash or a hang;
- why `tf.saved_model.save(model)` of a Keras 3 model does not serve, and
  the workaround;
- the warm-up requests of an export, replayed.
"""

import os
import re
import struct
import subprocess
import unittest

import c_loader_harness as harness
import keras
import numpy as np
import pytest
import tensorflow as tf
from sample_inputs import RATE
from sample_inputs import TEXTS
from sample_inputs import tones

import lstm_keras
from lstm_keras import export
from lstm_keras.applications import SentimentClassifier
from lstm_keras.applications import SpeechClassifier

pytestmark = pytest.mark.tensorflow_only

LONG_TEXT = " ".join(["a great story but a dull tired film"] * 4)
TOLERANCE = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="session")
def loader():
    """The compiled C program (compiled once, cached across sessions)."""
    try:
        return harness.build()
    except unittest.SkipTest as skip:
        pytest.skip(str(skip))


def randomize(model, seed=0):
    """Random weights, biases included: a wrong gate order, a dropped bias
    or a state read from the wrong step changes every output."""
    rng = np.random.default_rng(seed)
    model.set_weights(
        [rng.normal(scale=0.5, size=w.shape) for w in model.get_weights()]
    )
    return model


def only_input(path, signature="serving_default"):
    """The name of a signature's one input (Keras numbers the names of
    `keras.Input`s it creates, so tests do not hard-code them)."""
    (name,) = harness.signature_def(path, signature).inputs
    return name


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    """`{app: (model, version path, input name, requests)}`: two tiny
    adapted applications exported with `export_for_serving`."""
    base = tmp_path_factory.mktemp("apps")
    sentiment = SentimentClassifier(
        units=4, embedding_dim=4, max_length=8, subword_buckets=16, seed=0
    )
    sentiment.adapt(TEXTS)
    randomize(sentiment, seed=1)
    speech = SpeechClassifier(
        ["yes", "no", "maybe"], sample_rate=RATE, units=4, num_mel_bins=8
    )
    speech.adapt(tones([2000, 1500, 1000], seed=1))
    speech.get_layer("probabilities").bias.assign([0.2, -0.1, 0.5])
    clips = tones([300, 1600, 40, 900, 1], seed=3)
    clips[4] = 0.0  # silence: no real frame
    return {
        "sentiment": (
            sentiment,
            export.export_for_serving(sentiment, base / "text", verbose=False),
            "text",
            [
                np.array(["not good"], object),
                np.array(TEXTS[:3] + ["", LONG_TEXT, "unseen words"], object),
            ],
        ),
        "speech": (
            speech,
            export.export_for_serving(speech, base / "speech", verbose=False),
            "waveform",
            [tones([800], seed=4), clips],
        ),
    }


def test_applications_serve_keras_probabilities(apps, loader):
    for model, path, name, batches in apps.values():
        names = np.array([n.encode() for n in model.class_names], object)
        for batch in batches:
            served = harness.serve(path, {name: batch}, binary=loader)
            assert sorted(served) == ["class_id", "class_name", "probabilities"]
            expected = model.predict(tf.constant(batch), verbose=0)
            assert served["probabilities"].dtype == np.float32
            np.testing.assert_allclose(
                served["probabilities"], expected, **TOLERANCE
            )
            ids = served["class_id"]
            assert ids.dtype == np.int64
            np.testing.assert_array_equal(ids, np.argmax(expected, -1))
            np.testing.assert_array_equal(served["class_name"], names[ids])
        metadata = harness.serve(
            path,
            {"unused": np.array(0, "int32")},
            signature=export.METADATA_SIGNATURE,
            binary=loader,
        )
        np.testing.assert_array_equal(metadata["class_names"], names)
        assert metadata["sample_rate"].shape == ()
        assert metadata["sample_rate"].dtype == np.int64
        rate = getattr(model, "sample_rate", None) or 0
        assert int(metadata["sample_rate"]) == rate
    # The last batch's silent clip got the zero state's answer, from the
    # head's bias.
    bias = np.array([0.2, -0.1, 0.5])
    np.testing.assert_allclose(
        served["probabilities"][4], np.exp(bias) / np.exp(bias).sum(), 1e-5
    )
    assert name == "waveform"


def masked_stack(rng):
    """Stacked LSTMs behind `Masking`, right-padded rows of varied length
    (one of them all padding)."""
    model = keras.Sequential(
        [
            keras.Input((10, 3)),
            keras.layers.Masking(0.0),
            lstm_keras.LSTM(8, return_sequences=True),
            lstm_keras.LSTM(6),
            keras.layers.Dense(2),
        ]
    )
    x = rng.normal(size=(5, 10, 3)).astype("float32")
    for row, length in enumerate([10, 7, 3, 1, 0]):
        x[row, length:] = 0.0
    return model, x


def embedded_bidirectional(rng):
    """`Bidirectional` over `Embedding(mask_zero=True)`: int32 token ids,
    padded with 0 (the backward direction must start at each row's end)."""
    tokens = keras.Input((9,), dtype="int32")
    x = keras.layers.Embedding(50, 4, mask_zero=True)(tokens)
    x = keras.layers.Bidirectional(lstm_keras.LSTM(5))(x)
    model = keras.Model(tokens, keras.layers.Dense(3)(x))
    ids = rng.integers(1, 50, size=(4, 9)).astype("int32")
    for row, length in enumerate([9, 4, 1, 6]):
        ids[row, length:] = 0
    return model, ids


def backwards(rng):
    """An unmasked `go_backwards=True` LSTM."""
    model = keras.Sequential(
        [keras.Input((6, 4)), lstm_keras.LSTM(7, go_backwards=True)]
    )
    return model, rng.normal(size=(3, 6, 4)).astype("float32")


def with_states(rng):
    """`return_state=True`: a functional model with three outputs."""
    inputs = keras.Input((5, 3))
    sequence, h, c = lstm_keras.LSTM(
        4, return_sequences=True, return_state=True
    )(inputs)
    logits = keras.layers.Dense(2)(h)
    model = keras.Model(inputs, [sequence, c, logits])
    return model, rng.normal(size=(3, 5, 3)).astype("float32")


def export_with(exporter, model, path):
    """Exports `model` to `path`; returns the served output names, in the
    model's output order."""
    if exporter == "model.export":
        model.export(path, verbose=False)
        # `model.export` names the outputs `output_<i>`.
        return [f"output_{i}" for i in range(len(model.outputs))]
    export.write_saved_model(model, path, litert_signature=False)
    # Ours names them as the model does: the output layer's name, or
    # `output_<i>` where two outputs come from one layer.
    if isinstance(model, keras.Sequential):
        return [model.layers[-1].name]
    names = model.output_names
    if len(set(names)) < len(names):
        return [f"output_{i}" for i in range(len(names))]
    return names


@pytest.mark.parametrize("exporter", ["model.export", "export_for_serving"])
@pytest.mark.parametrize(
    "build",
    [masked_stack, embedded_bidirectional, backwards, with_states],
    ids=lambda build: build.__name__,
)
def test_user_models_serve_keras_outputs(
    build, exporter, loader, tmp_path, rng
):
    model, x = build(rng)
    randomize(model)
    path = str(tmp_path / "model")
    names = export_with(exporter, model, path)
    # A server runs TensorFlow's own ops only.
    assert export.nonstandard_ops(path) == set()
    expected = model(x, training=False)
    if not isinstance(expected, (list, tuple)):
        expected = [expected]
    served = harness.serve(path, {only_input(path): x}, binary=loader)
    assert sorted(served) == sorted(names)
    for name, value in zip(names, expected, strict=True):
        np.testing.assert_allclose(
            served[name], keras.ops.convert_to_numpy(value), **TOLERANCE
        )
    # An empty batch: empty outputs with Keras's trailing shapes.
    empty = harness.serve(path, {only_input(path): x[:0]}, binary=loader)
    for name, value in zip(names, expected, strict=True):
        assert empty[name].shape == (0, *value.shape[1:])
    if build is masked_stack:
        # A batch of padding only: every row is the zero state's answer.
        padding = np.zeros_like(x[:2])
        np.testing.assert_allclose(
            harness.serve(path, {only_input(path): padding}, binary=loader)[
                names[0]
            ],
            keras.ops.convert_to_numpy(model(padding)),
            **TOLERANCE,
        )


@pytest.fixture(scope="module")
def frames_model(tmp_path_factory):
    """A speech-like user classifier over `frames` (batch, time, 8),
    exported with `export_for_serving`."""
    frames = keras.Input((None, 8), name="frames")
    x = keras.layers.Masking(0.0)(frames)
    x = lstm_keras.LSTM(4)(x)
    model = keras.Model(frames, keras.layers.Dense(3, "softmax")(x))
    randomize(model, seed=2)
    base = tmp_path_factory.mktemp("frames")
    path = export.export_for_serving(
        model,
        base,
        class_names=["a", "b", "c"],
        litert_signature=False,
        verbose=False,
    )
    return model, path


def assert_refused(path, inputs, loader, match=()):
    """The C program ran and refused the request itself: exit status 1
    (not a signal: a crash would take a server down), one `error:` line
    holding each of `match`. Returns the message."""
    with pytest.raises(harness.CLoaderError) as caught:
        harness.serve(path, inputs, binary=loader)
    error = caught.value
    assert error.returncode == 1, error.stderr[-3000:]
    for part in match:
        assert part in error.message, error.message
    return error.message


def shape_refused(name):
    """What TensorFlow says when the export's `check_<name>_shape` refuses
    a feed: the function argument (`_arg_serving_default_<name>_0_0`)
    and the node both carry the input's name."""
    return [
        f"_arg_serving_default_{name}_",
        "is not compatible with expected shape",
        f"{{{{node check_{name}_shape}}}}",
    ]


def test_bad_requests_name_the_input(frames_model, apps, loader):
    _, path = frames_model
    good = np.ones((2, 5, 8), "float32")
    # Dtypes and names are checked against the signature_def, as TF
    # Serving does, before anything runs.
    for inputs, message in (
        (
            {"frames": good.astype("int32")},
            "input 'frames': expected float32, got int32",
        ),
        (
            {"frames": good.astype("float64")},
            "input 'frames': expected float32, got float64",
        ),
        ({"frame": good}, "input 'frame': not an input of the signature"),
        (
            {"frames": good, "lengths": np.ones(2, "int32")},
            "input 'lengths': not an input of the signature",
        ),
        ({}, "input 'frames': missing from the request"),
    ):
        with pytest.raises(harness.RequestError, match=message):
            harness.serve(path, inputs, binary=loader)
    # Ranks and feature sizes are refused by the graph itself, through the
    # C API, by the export's `check_frames_shape`.
    for bad in (
        np.ones((2, 5), "float32"),
        np.ones((2, 5, 8, 1), "float32"),
        np.ones((2, 5, 7), "float32"),
        np.ones((0, 5, 7), "float32"),
    ):
        assert_refused(path, {"frames": bad}, loader, shape_refused("frames"))
    # An empty batch answers empty outputs of the right trailing shape.
    served = harness.serve(
        path, {"frames": np.ones((0, 5, 8), "float32")}, binary=loader
    )
    assert served["probabilities"].shape == (0, 3)
    assert served["probabilities"].dtype == np.float32
    assert served["class_id"].shape == (0,)
    assert served["class_id"].dtype == np.int64
    assert served["class_name"].shape == (0,)
    # No timesteps at all (which `lstm_keras.LSTM` refuses in Python,
    # naming `sequences`) is refused by the exported layer, naming it.
    for empty in (np.ones((3, 0, 8), "float32"), np.ones((0, 0, 8), "float32")):
        assert_refused(path, {"frames": empty}, loader, ["no timesteps"])

    for model, path, name, _ in apps.values():
        is_text = name == "text"
        for bad in (
            [np.array([[b"a", b"b"]], object), np.array(b"a", object)]
            if is_text
            else [np.ones(100, "float32"), np.ones((1, 100, 1), "float32")]
        ):
            assert_refused(path, {name: bad}, loader, shape_refused(name))
        wrong = (
            np.array([1.0], "float32") if is_text else np.ones((1, 9), "int32")
        )
        with pytest.raises(harness.RequestError, match=f"input '{name}'"):
            harness.serve(path, {name: wrong}, binary=loader)
        empty = (
            np.array([], object) if is_text else np.ones((0, 800), "float32")
        )
        served = harness.serve(path, {name: empty}, binary=loader)
        assert served["probabilities"].shape == (0, model.num_classes)
        assert served["class_id"].shape == (0,)
        assert served["class_name"].shape == (0,)


def test_unchecked_requests_get_tensorflows_errors(frames_model, loader):
    """Past the harness's checks, TensorFlow (and the C program) refuse a
    bad feed with an error of their own, not a crash."""
    _, path = frames_model
    definition = harness.signature_def(path)
    feed = definition.inputs["frames"].name
    fetch = definition.outputs["probabilities"].name
    for feeds, fetches, match in (
        # TensorFlow's message names the argument by position only.
        (
            {feed: np.ones((2, 5, 8), "int32")},
            [fetch],
            "Expects arg[0] to be float but int32 is provided",
        ),
        (
            {"frames:0": np.ones((2, 5, 8), "float32")},
            [fetch],
            "no operation 'frames' in the graph",
        ),
        ({feed: np.ones((2, 5, 8), "float32")}, ["nope:3"], "'nope'"),
    ):
        with pytest.raises(harness.CLoaderError) as caught:
            harness.run(path, feeds, fetches, binary=loader)
        assert caught.value.returncode == 1, caught.value.stderr
        assert match in caught.value.message
    # A truncated or foreign request file is refused before TF loads.
    request = harness.REQUEST_MAGIC + struct.pack("<I", 1) + b"\x05"
    bad_request = os.path.join(os.path.dirname(path), "bad.bin")
    for data in (request, b"not a request"):
        with open(bad_request, "wb") as f:
            f.write(data)
        ran = subprocess.run(
            [loader, path, bad_request, os.devnull],
            capture_output=True,
            text=True,
            env={"TF_CPP_MIN_LOG_LEVEL": "2"},
            timeout=harness.TIMEOUT,
            check=False,
        )
        assert ran.returncode == 1, ran.stderr
        assert ran.stderr.splitlines()[-1].startswith(
            "error: malformed request"
        )


def graph_variables(path):
    """`(read, restored)`: the variable handles (VarHandleOp shared names)
    that the `serving_default` signature reads, and those that the
    checkpoint's restore op (`saver_def.restore_op_name`) writes; the two
    graph nodes take the handles as inputs."""
    meta_graph = harness.meta_graph(path)
    nodes = {node.name: node for node in meta_graph.graph_def.node}

    def handles(node_name):
        names = (name.split(":")[0] for name in nodes[node_name].input)
        return {
            nodes[name].attr["shared_name"].s.decode()
            for name in names
            if nodes[name].op == "VarHandleOp"
        }

    outputs = meta_graph.signature_def["serving_default"].outputs.values()
    read = set().union(*(handles(o.name.split(":")[0]) for o in outputs))
    return read, handles(meta_graph.saver_def.restore_op_name)


@pytest.mark.parametrize("layer", ["dense", "lstm"])
def test_tf_saved_model_save_of_a_keras_model_does_not_serve(
    layer, loader, tmp_path, rng
):
    """`tf.saved_model.save(model)` restores into other variables than the
    ones the signature reads; `model.export` and a `tf.Module` of the raw
    variables serve.

    Keras 3's TensorFlow `Variable` wraps a `tf.Variable` (`.value`), and
    its `_export_to_saved_model_graph` first copies the wrapped variable
    into the export graph (a `VarHandleOp` with its name, which the traced
    functions capture), then maps the Keras variable itself to a new
    `tf.Variable(copy)`: a second, unnamed `VarHandleOp` (`Variable`,
    `Variable_1`, ...). The object graph (what the layers track) holds the
    Keras variables, so the checkpoint and its restore op write only the
    unnamed copies; no init op initializes the named ones. Python's
    `tf.saved_model.load` rebinds each function's captures to the restored
    objects (`bound_inputs`) and works; a session loader (TF Serving, the
    C API) runs the restore op and the signature by tensor names, and the
    first read fails with "Could not find variable <layer path>".
    """
    inputs = [keras.Input((4, 3))]
    if layer == "lstm":
        inputs.append(keras.layers.LSTM(3))
    model = keras.Sequential([*inputs, keras.layers.Dense(2)])
    randomize(model)
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x))
    spec = tf.TensorSpec([None, 4, 3], "float32", name="x")
    function = tf.function(lambda x: {"y": model(x)}, input_signature=[spec])

    # The model as the root, with Keras's default signature or ours.
    for signatures in (None, function):
        path = str(tmp_path / f"saved-{signatures is None}")
        tf.saved_model.save(model, path, signatures=signatures)
        read, restored = graph_variables(path)
        assert read and not read & restored, (read, restored)
        assert {v.path for v in model.weights} <= read  # the named copies
        with pytest.raises(harness.CLoaderError) as caught:
            harness.serve(path, {only_input(path): x}, binary=loader)
        assert caught.value.returncode == 1
        missing = re.search(
            r"Could not find variable (\S+)\.", str(caught.value)
        )
        assert missing and missing[1] in read, caught.value.message
        # Python's loader, which binds captures by object, does not see it.
        loaded = tf.saved_model.load(path).signatures["serving_default"]
        (output,) = loaded(**{only_input(path): tf.constant(x)}).values()
        np.testing.assert_allclose(output, expected, **TOLERANCE)

    # The workaround: a root that tracks the wrapped `tf.Variable`s (what
    # the functions capture), not the Keras model.
    module = tf.Module()
    module.weights = [v.value for v in model.weights]
    module.serve = function
    path = str(tmp_path / "module")
    tf.saved_model.save(module, path, signatures=module.serve)
    read, restored = graph_variables(path)
    assert read and read <= restored, (read, restored)
    served = harness.serve(path, {"x": x}, binary=loader)
    np.testing.assert_allclose(served["y"], expected, **TOLERANCE)

    # `model.export` (`keras.export.ExportArchive`) also tracks the raw
    # variables the endpoints capture, so its restore op writes them.
    path = str(tmp_path / "export")
    model.export(path, verbose=False)
    read, restored = graph_variables(path)
    assert read and read <= restored, (read, restored)
    served = harness.serve(path, {only_input(path): x}, binary=loader)
    np.testing.assert_allclose(served["output_0"], expected, **TOLERANCE)


def test_warmup_requests_replay_through_the_c_loader(frames_model, loader):
    """TF Serving replays `assets.extra/tf_serving_warmup_requests` while
    it loads a version; each must run, and match Keras."""
    model, path = frames_model
    requests = export.read_warmup_requests(path)
    # One row and a batch: the exported LSTM runs a kernel for each.
    assert sorted(len(inputs["frames"]) for _, inputs in requests) == [1, 8]
    for signature, inputs in requests:
        served = harness.serve(
            path,
            inputs,
            signature=signature or "serving_default",
            binary=loader,
        )
        np.testing.assert_allclose(
            served["probabilities"],
            model.predict(inputs["frames"], verbose=0),
            **TOLERANCE,
        )
