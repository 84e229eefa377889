"""`lstm_keras.export`: SavedModels that TF Serving runs without our code."""

import doctest
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from sample_inputs import RATE
from sample_inputs import TEXTS
from sample_inputs import fused_speech_lstms
from sample_inputs import tones

import lstm_keras
from lstm_keras import compat
from lstm_keras import export
from lstm_keras.applications import SentimentClassifier
from lstm_keras.applications import SpeechClassifier
from lstm_keras.applications import runner
from lstm_keras.backends.tensorflow.build import load_kernels
from training import export as export_command

pytestmark = pytest.mark.tensorflow_only

LONG_TEXT = " ".join(["a great story but a dull tired film"] * 6)
SAVED_MODEL_CLI = os.path.join(
    os.path.dirname(sys.executable), "saved_model_cli"
)


def requests():
    """`{app: {case: batch}}`: batches of 1 and 7, short and long inputs,
    an empty text and a silent clip among them."""
    texts_7 = TEXTS[:4] + ["", LONG_TEXT, "unseen words only"]
    clips_7 = tones([300, 8000, 1200, 40, 5000, 2000, 1], seed=3)
    clips_7[6] = 0.0  # silence
    return {
        "sentiment": {
            "short_1": np.array(["not good"], object),
            "long_1": np.array([LONG_TEXT], object),
            "mixed_7": np.array(texts_7, object),
        },
        "speech": {
            "short_1": tones([300], seed=4),
            "long_1": tones([8000], seed=5),
            "mixed_7": clips_7,
        },
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`{app: (model, version path)}` of two tiny adapted models."""
    base = tmp_path_factory.mktemp("models")
    sentiment = SentimentClassifier(
        units=6, embedding_dim=5, max_length=8, dropout=0.2, seed=0
    )
    sentiment.adapt(TEXTS)
    # Distinct head biases, so that the zero state has a distinct answer.
    sentiment.get_layer("probabilities").bias.assign([0.3, -0.4])
    speech = SpeechClassifier(
        ["yes", "no", "maybe"], sample_rate=RATE, units=6, num_mel_bins=16
    )
    speech.adapt(tones([4000, 3000, 2000, 1000], seed=1))
    speech.get_layer("probabilities").bias.assign([0.2, -0.1, 0.5])
    return {
        "sentiment": (
            sentiment,
            export.export_for_serving(
                sentiment, base / "sentiment", verbose=False
            ),
        ),
        "speech": (
            speech,
            export.export_for_serving(
                speech, base / "speech", version=4, verbose=False
            ),
        ),
    }


def test_layout_metadata_and_no_leftovers(exported):
    for app, (model, path) in exported.items():
        base, version = os.path.split(path)
        assert os.listdir(base) == [version]  # no temp folder left behind
        assert sorted(os.listdir(path)) == [
            "assets",
            "assets.extra",
            "fingerprint.pb",
            "saved_model.pb",
            "variables",
        ]
        with open(os.path.join(path, "assets", "class_names.txt")) as f:
            assert f.read().splitlines() == model.class_names
        with open(os.path.join(path, "assets", "metadata.json")) as f:
            metadata = json.load(f)
        assert metadata["class_names"] == model.class_names
        loaded = tf.saved_model.load(path)
        assert sorted(loaded.signatures) == [
            "litert",
            "metadata",
            "serving_default",
        ]
        constants = loaded.signatures["metadata"](unused=tf.constant(7))
        assert [n.decode() for n in constants["class_names"].numpy()] == (
            model.class_names
        )
        rate = RATE if app == "speech" else None
        assert metadata["sample_rate"] == rate
        assert int(constants["sample_rate"]) == (rate or 0)
    assert version == "4"


FRESH_PROCESS = r"""
import importlib.abc, json, sys

class NoLstmKeras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("lstm_keras", "training"):
            raise ModuleNotFoundError(f"{name} is blocked in this process")

sys.meta_path.insert(0, NoLstmKeras())
try:
    import lstm_keras
except ModuleNotFoundError:
    pass
else:
    raise AssertionError("lstm_keras imported")
import numpy as np
import tensorflow as tf

requests = json.load(sys.stdin)
results = {}
for app, (path, input_name, dtype) in json.loads(sys.argv[1]).items():
    serve = tf.saved_model.load(path).signatures["serving_default"]
    for case, batch in requests[app].items():
        outputs = serve(**{input_name: tf.constant(batch, dtype)})
        results[f"{app}/{case}"] = {
            "probabilities": outputs["probabilities"].numpy().tolist(),
            "class_id": outputs["class_id"].numpy().tolist(),
            "class_name": [n.decode() for n in outputs["class_name"].numpy()],
        }
assert not [m for m in sys.modules if m.startswith("lstm_keras")]
print(json.dumps(results))
"""


def test_fresh_process_without_lstm_keras_serves_keras_probabilities(
    exported,
):
    paths = {
        "sentiment": (exported["sentiment"][1], "text", "string"),
        "speech": (exported["speech"][1], "waveform", "float32"),
    }
    cases = requests()
    served = subprocess.run(
        [sys.executable, "-I", "-c", FRESH_PROCESS, json.dumps(paths)],
        input=json.dumps(
            {
                app: {case: batch.tolist() for case, batch in batches.items()}
                for app, batches in cases.items()
            }
        ),
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        cwd="/",
        check=False,
    )
    assert served.returncode == 0, served.stderr[-3000:]
    results = json.loads(served.stdout.splitlines()[-1])
    for app, batches in cases.items():
        model = exported[app][0]
        for case, batch in batches.items():
            result = results[f"{app}/{case}"]
            # Keras's own inference, on the fast path where it applies.
            expected = model.predict(tf.constant(batch), verbose=0)
            probabilities = np.array(result["probabilities"], "float32")
            np.testing.assert_allclose(probabilities, expected, atol=1e-5)
            np.testing.assert_allclose(probabilities.sum(-1), 1, atol=1e-5)
            ids = np.argmax(expected, axis=-1)
            assert result["class_id"] == ids.tolist()
            assert result["class_name"] == [model.class_names[i] for i in ids]
    # The empty text and the silent clip get the zero state's answer.
    for app, row, bias in (
        ("sentiment", 4, [0.3, -0.4]),
        ("speech", 6, [0.2, -0.1, 0.5]),
    ):
        zero_state = np.exp(bias) / np.exp(bias).sum()
        np.testing.assert_allclose(
            results[f"{app}/mixed_7"]["probabilities"][row],
            zero_state,
            atol=1e-5,
        )


def test_saved_model_cli_shows_and_runs_the_signature(exported, tmp_path):
    model, path = exported["sentiment"]
    cli = [SAVED_MODEL_CLI]
    if not os.path.exists(SAVED_MODEL_CLI):
        cli = [sys.executable, "-m", compat.SAVED_MODEL_CLI_MODULE]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    shown = subprocess.run(
        [*cli, "show", "--dir", path, "--all"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    default = shown[shown.index("signature_def['serving_default']") :]
    for line in (
        "inputs['text'] tensor_info:",
        "dtype: DT_STRING",
        "outputs['probabilities'] tensor_info:",
        "dtype: DT_FLOAT",
        "shape: (-1, 2)",
        "outputs['class_id'] tensor_info:",
        "dtype: DT_INT64",
        "outputs['class_name'] tensor_info:",
    ):
        assert line in default, shown
    assert "signature_def['metadata']" in shown
    texts = ["a gem of a film", "", LONG_TEXT]
    subprocess.run(
        [*cli, "run", "--dir", path, "--tag_set", "serve"]
        + ["--signature_def", "serving_default"]
        + ["--input_exprs", f"text={texts!r}", "--outdir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    np.testing.assert_allclose(
        np.load(tmp_path / "probabilities.npy"),
        model.predict(tf.constant(texts), verbose=0),
        atol=1e-5,
    )
    assert np.load(tmp_path / "class_name.npy", allow_pickle=True).shape == (3,)


def _converted_litert_signature(path):
    """The export's `litert` signature as a LiteRT file, and its runner."""
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(path), signature_keys=["litert"]
    )
    content = converter.convert()
    ops, custom = export.litert_ops(content)
    assert not custom and "WHILE" not in ops, sorted(set(ops))
    runner_ = Interpreter(model_content=content).get_signature_runner("litert")
    return ops.count("UNIDIRECTIONAL_SEQUENCE_LSTM"), runner_


def test_the_converter_takes_an_export_by_its_litert_signature(
    exported, tmp_path, rng
):
    sentiment, path = exported["sentiment"]
    assert "BlockLSTM" not in export.graph_ops(path, "litert")
    fused, run = _converted_litert_signature(path)
    assert fused == 2  # the BiLSTM's two directions
    texts = [TEXTS[0], "an unseen word", ""]
    expected = sentiment(np.array(texts, object))
    for row, text in enumerate(texts):
        got = run(**export.sentiment_inputs(sentiment, [text]))
        np.testing.assert_allclose(
            got["probabilities"][0], expected[row], atol=1e-5, err_msg=text
        )

    speech, path = exported["speech"]
    fused, run = _converted_litert_signature(path)
    assert fused == fused_speech_lstms(speech)
    clip = tones([4100], seed=5)
    clip[0, 2000:] = 0.0  # padding: masked frames
    (got,) = run(waveforms=clip).values()
    np.testing.assert_allclose(got, speech(clip), atol=1e-5)

    # A user's model: masked, stacked, its input's own name.
    model = keras.Sequential(
        [
            keras.Input((None, 3), name="frames"),
            keras.layers.Masking(0.0),
            lstm_keras.LSTM(8, return_sequences=True),
            lstm_keras.LSTM(6),
            keras.layers.Dense(2),
        ]
    )
    path = export.export_for_serving(model, tmp_path / "user", verbose=False)
    fused, run = _converted_litert_signature(path)
    assert fused == 2
    x = rng.normal(size=(1, 7, 3)).astype("float32")
    x[:, 5:] = 0.0
    (got,) = run(frames=x).values()
    np.testing.assert_allclose(got, model(x), atol=1e-5)
    # TensorFlow runs the signature too (the fused kernel's functions hold
    # builtin loops), with no op TF Serving lacks.
    assert export.nonstandard_ops(path) == set()
    loaded = tf.saved_model.load(path)
    (got,) = loaded.signatures["litert"](frames=tf.constant(x)).values()
    np.testing.assert_allclose(got, model(x), atol=1e-5)


def test_graph_is_standard_and_stateless(exported):
    for _, path in exported.values():
        assert export.nonstandard_ops(path) == set()
        ops = export.graph_ops(path, "serving_default")
        # The stock LSTM paths (TensorFlow's fused kernel, a loop) are in it.
        assert {"BlockLSTM", "MatMul", "Sigmoid", "Tanh"} <= ops
        assert ops & {"While", "StatelessWhile"}
        assert export.state_writes(path) == set()
        # Restoring variables writes them, outside the signature.
        assert "AssignVariableOp" in export.graph_ops(path)
    # Tracing without dropout masks did not change the model's rates.
    sentiment = exported["sentiment"][0]
    assert sentiment.backbone.get_config()["dropout"] == 0.2
    cells = [
        layer
        for layer in sentiment._flatten_layers()
        if isinstance(layer, lstm_keras.LSTMCell)
    ]
    assert cells and all(cell.dropout == 0.2 for cell in cells)


def _save_function(path, function, spec):
    module = tf.Module()
    module.f = tf.function(function, input_signature=[spec])
    tf.saved_model.save(module, str(path), signatures=module.f)
    return str(path)


def test_scanner_finds_py_funcs_cudnn_and_custom_ops(tmp_path):
    spec = tf.TensorSpec([None, 3], "float32")
    py_func = _save_function(
        tmp_path / "py",
        lambda x: tf.numpy_function(np.tanh, [x], "float32"),
        spec,
    )
    assert export.nonstandard_ops(py_func) == {"PyFunc"}

    def cudnn(x):
        # Traced only (no GPU needed): the graph is what is checked.
        weights = tf.zeros([4 * (3 * 2 + 2 * 2 + 2 * 2)])
        h = tf.zeros([1, tf.shape(x)[0], 2])
        outputs = tf.raw_ops.CudnnRNNV3(
            input=x[None], input_h=h, input_c=h, params=weights,
            sequence_lengths=tf.ones(tf.shape(x)[:1], "int32"),
        )  # fmt: skip
        return outputs[0]

    cudnn_path = _save_function(tmp_path / "cudnn", cudnn, spec)
    assert export.nonstandard_ops(cudnn_path) == {"CudnnRNNV3"}

    # The fast path's op, called directly: the layer declines it in every
    # export, so only a graph built by hand holds it.
    kernels = load_kernels()
    if kernels is None:
        pytest.skip("the TensorFlow fast path's ops cannot be built here")

    def fast_path_op(x):
        return kernels.lstm_keras_sequence(
            x=x, kernel=tf.zeros([3, 8]), bias=tf.zeros([8]),
            recurrent_kernel=tf.zeros([2, 8]), h0=tf.zeros([1, 2]),
            c0=tf.zeros([1, 2]), mask=tf.zeros([0]),
            recurrent_mask=tf.zeros([0]),
        )[0]  # fmt: skip

    fast = _save_function(
        tmp_path / "fast", fast_path_op, tf.TensorSpec([1, 5, 3], "float32")
    )
    found = export.nonstandard_ops(fast)
    assert found == {"LstmKerasSequence"}


def test_export_refuses_unservable_and_stateful_models(tmp_path):
    inputs = keras.Input((3,))
    x = keras.layers.Lambda(
        lambda x: tf.ensure_shape(
            tf.numpy_function(np.tanh, [x], "float32"), [None, 3]
        )
    )(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, "softmax")(x))
    base = tmp_path / "py"
    with pytest.raises(ValueError, match="PyFunc"):
        export.export_for_serving(model, base, class_names=["a", "b"])
    assert os.listdir(base) == []  # nothing half-written is left

    stateful = keras.Sequential(
        [
            keras.Input(batch_shape=(2, 4, 3)),
            lstm_keras.LSTM(4, stateful=True, name="memory"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    with pytest.raises(ValueError, match="stateful layers.*memory"):
        export.export_for_serving(
            stateful, tmp_path / "stateful", class_names=["a", "b"]
        )


def test_bad_arguments_name_the_argument(exported, tmp_path):
    model = exported["sentiment"][0]
    for version in (0, -1, "1", 1.0, True):
        with pytest.raises(ValueError, match="`version`.*" + repr(version)):
            export.export_for_serving(model, tmp_path, version=version)
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="3 names but.*2 probabilities"):
        export.export_for_serving(plain, tmp_path, class_names="abc")
    with pytest.raises(ValueError, match="`model`"):
        export.export_for_serving("model.keras", tmp_path)
    assert os.listdir(tmp_path) == []


def test_bad_requests(exported):
    sentiment = tf.saved_model.load(exported["sentiment"][1])
    speech = tf.saved_model.load(exported["speech"][1])
    text = sentiment.signatures["serving_default"]
    waveform = speech.signatures["serving_default"]
    # The input's dtype is the signature's: another one is refused.
    for call in (
        lambda: text(text=tf.constant([1.0, 2.0])),
        lambda: waveform(waveform=tf.zeros([2, 100], "int32")),
        lambda: waveform(waveform=tf.zeros([2, 100], "float64")),
    ):
        with pytest.raises(
            tf.errors.InvalidArgumentError, match="expected to be a"
        ):
            call()
    # Another rank is refused before any layer runs, naming the input (a
    # server feeds the tensor without checking its shape).
    for call, name in (
        (lambda: text(text=tf.constant([["a", "b"]])), "text"),
        (lambda: text(text=tf.constant("a")), "text"),
        (lambda: waveform(waveform=tf.zeros([100])), "waveform"),
        (lambda: waveform(waveform=tf.zeros([1, 100, 1])), "waveform"),
    ):
        with pytest.raises(
            tf.errors.InvalidArgumentError,
            match=f"tensor {name} .* not compatible with expected shape",
        ):
            call()
    with pytest.raises(TypeError, match="text"):
        text(texts=tf.constant(["a"]))
    for function, batch, classes in (
        (text, tf.constant([], "string"), 2),
        (waveform, tf.zeros([0, 800]), 3),
    ):
        name = "text" if function is text else "waveform"
        outputs = function(**{name: batch})
        assert outputs["probabilities"].shape == (0, classes)
        assert outputs["probabilities"].dtype == tf.float32
        assert outputs["class_id"].shape == (0,)
        assert outputs["class_id"].dtype == tf.int64
        assert outputs["class_name"].shape == (0,)
        assert outputs["class_name"].dtype == tf.string


def _error_lines(stderr):
    """What the command printed from its first error on (its progress
    lines come before): one line for a one-line error."""
    lines = stderr.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("error:"))
    return lines[first:]


def test_keras_round_trip_and_command_line(exported, tmp_path, capsys):
    model = exported["sentiment"][0]
    texts = tf.constant(TEXTS + ["", LONG_TEXT])
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(
        restored.predict(texts, verbose=0), model.predict(texts, verbose=0)
    )

    base = str(tmp_path / "served")
    argv = [path, "--model-base-path", base, "--version", "3"]
    assert export_command.main(argv) == 0
    printed = capsys.readouterr().out
    assert os.path.join(base, "3") in printed
    assert "input  text: string [-1]" in printed
    assert "output probabilities: float32 [-1, 2]" in printed
    served = tf.saved_model.load(os.path.join(base, "3"))
    np.testing.assert_allclose(
        served.signatures["serving_default"](text=texts)["probabilities"],
        model.predict(texts, verbose=0),
        atol=1e-5,
    )
    # An existing version is refused, or replaced when told.
    assert export_command.main(argv) == 2
    (error,) = _error_lines(capsys.readouterr().err)
    assert "already exists" in error
    assert export_command.main([*argv, "--overwrite"]) == 0
    assert sorted(os.listdir(base)) == ["3"]

    missing = str(tmp_path / "missing.keras")
    assert export_command.main([missing, "--model-base-path", base]) == 2
    assert repr(missing) in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip file")
    assert export_command.main([str(corrupt), "--model-base-path", base]) == 2
    (error,) = _error_lines(capsys.readouterr().err)
    assert repr(str(corrupt)) in error
    with pytest.raises(SystemExit):
        export_command.main(["--help"])
    assert "docker run" in capsys.readouterr().out


def test_overwrite_replaces_the_version_and_runner_delegates(tmp_path):
    model = SentimentClassifier(units=3, embedding_dim=3, max_length=4)
    model.adapt(TEXTS)
    head = model.get_layer("probabilities")
    texts = tf.constant(TEXTS)
    base = tmp_path / "models"
    # The training command's export: version 1's signature.
    head.bias.assign([2.0, -2.0])
    path = str(base / "1")
    runner.export_serving(model, path)
    served = tf.saved_model.load(path).signatures["serving_default"]
    outputs = served(text=texts)
    assert sorted(outputs) == ["class_id", "class_name", "probabilities"]
    np.testing.assert_allclose(
        outputs["probabilities"], model.predict(texts, verbose=0), atol=1e-5
    )
    # Other weights replace that version in place.
    head.bias.assign([-2.0, 2.0])
    path = export.export_for_serving(
        model, base, overwrite=True, litert_signature=False, verbose=False
    )
    served = tf.saved_model.load(path)
    np.testing.assert_allclose(
        served.serve(texts), model.predict(texts, verbose=0), atol=1e-5
    )
    assert sorted(os.listdir(base)) == ["1"]


def test_docstring_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from lstm_keras.export import saved_model

    globs = {**vars(saved_model), "SentimentClassifier": SentimentClassifier}
    finder = doctest.DocTestFinder()
    runner_ = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(saved_model, globs=globs):
        runner_.run(test)
    results = runner_.summarize(verbose=False)
    assert results.attempted > 0 and results.failed == 0
    assert os.listdir(tmp_path / "models" / "sentiment") == ["1"]


class SubclassedModel(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lstm = lstm_keras.LSTM(3)
        self.dense = keras.layers.Dense(2)

    def call(self, frames):
        return self.dense(self.lstm(frames))


def test_any_model_keeps_its_names_and_subclassed_ones_take_a_signature(
    tmp_path, rng
):
    left = keras.Input((None, 2), name="left")
    right = keras.Input((4,), name="right")
    summary = lstm_keras.LSTM(3)(keras.layers.Masking(0.0)(left))
    joined = keras.layers.Concatenate()([summary, right])
    model = keras.Model(
        {"left": left, "right": right},
        {"score": keras.layers.Dense(1)(joined), "summary": summary},
    )
    inputs = {
        "left": rng.normal(size=(3, 5, 2)).astype("float32"),
        "right": rng.normal(size=(3, 4)).astype("float32"),
    }
    inputs["left"][1, 2:] = 0.0
    path = export.export_for_serving(
        model, tmp_path / "dict", litert_signature=False, verbose=False
    )
    served = tf.saved_model.load(path).signatures["serving_default"]
    assert sorted(served.structured_input_signature[1]) == ["left", "right"]
    got = served(**{k: tf.constant(v) for k, v in inputs.items()})
    expected = model(inputs)
    assert sorted(got) == ["score", "summary"]
    for name in ("score", "summary"):
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5)
    # The warm-up requests hold both inputs, at one row and at a batch.
    requests = export.read_warmup_requests(path)
    assert [sorted(r) for _, r in requests] == [["left", "right"]] * 2

    subclassed = SubclassedModel()
    frames = rng.normal(size=(2, 6, 3)).astype("float32")
    expected = subclassed(frames)
    with pytest.raises(ValueError, match="`input_signature`"):
        export.export_for_serving(subclassed, tmp_path / "sub")
    spec = tf.TensorSpec([None, None, 3], tf.float32, name="frames")
    path = export.export_for_serving(
        subclassed,
        tmp_path / "sub",
        input_signature=[spec],
        litert_signature=False,
        verbose=False,
    )
    served = tf.saved_model.load(path).signatures["serving_default"]
    got = served(frames=tf.constant(frames))
    np.testing.assert_allclose(
        next(iter(got.values())), expected, atol=1e-5, rtol=1e-5
    )
