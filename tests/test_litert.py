"""LiteRT: models holding `lstm_keras.LSTM`, run by the LiteRT interpreter.

Every file here is converted by TensorFlow's own converter and run by
`ai_edge_litert` (the runtime devices have), and its outputs are held to
the Keras model's; the op lists come from the file itself.
"""

import doctest
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
from lstm_keras.applications import SentimentClassifier
from lstm_keras.applications import SpeechClassifier
from lstm_keras.applications.preprocessing import LogMelSpectrogram
from lstm_keras.backends.tensorflow import export_context
from lstm_keras.export import FullIntegerSpeech
from lstm_keras.export import export_for_serving
from lstm_keras.export import export_litert
from lstm_keras.export import litert_ops
from lstm_keras.export import sentiment_inputs
from lstm_keras.export.litert import speech_features
from training import export as export_command

pytestmark = pytest.mark.tensorflow_only

FUSED = "UNIDIRECTIONAL_SEQUENCE_LSTM"
UNITS, FEATURES, STEPS = 6, 5, 9


def _lstm(**kwargs):
    return lstm_keras.LSTM(UNITS, **kwargs)


def _convert(model):
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _run(content, feeds):
    """Each output of the file's one signature, for `feeds` by name."""
    runner = Interpreter(model_content=content).get_signature_runner()
    return list(runner(**feeds).values())


def _inputs(rng, batch, mask):
    x = rng.normal(size=(batch, STEPS, FEATURES)).astype("float32")
    if mask == "right_padded":
        x[:, 6:] = 0.0
    elif mask == "holes":
        x[:, [0, 3, 4, 8]] = 0.0
    elif mask == "empty":
        x[:] = 0.0
    return x


# (name, layer builder, batch, mask, fused ops expected; 0: a builtin loop)
CASES = [
    ("last_output", lambda x: _lstm()(x), 1, None, 1),
    ("sequences", lambda x: _lstm(return_sequences=True)(x), 1, None, 1),
    (
        "go_backwards",
        lambda x: _lstm(go_backwards=True, return_sequences=True)(x),
        1,
        None,
        1,
    ),
    ("stacked", lambda x: _lstm()(_lstm(return_sequences=True)(x)), 1, None, 2),
    (
        "bidirectional",
        lambda x: keras.layers.Bidirectional(_lstm(return_sequences=True))(x),
        1,
        None,
        2,
    ),
    ("batch_3", lambda x: _lstm(return_sequences=True)(x), 3, None, 1),
    ("no_bias", lambda x: _lstm(use_bias=False)(x), 1, None, 1),
    ("return_state", lambda x: _lstm(return_state=True)(x), 1, None, 0),
    ("peepholes", lambda x: _lstm(use_peepholes=True)(x), 1, None, 0),
    ("layer_norm", lambda x: _lstm(layer_norm=True)(x), 1, None, 0),
    ("free_batch", lambda x: _lstm(return_sequences=True)(x), None, None, 0),
    (
        "free_batch_masked",
        lambda x: _lstm(return_sequences=True)(x),
        None,
        "right_padded",
        0,
    ),
    ("masked_batch_2", lambda x: _lstm()(x), 2, "holes", 0),
    (
        "masked_bidirectional",
        lambda x: keras.layers.Bidirectional(_lstm())(x),
        1,
        "right_padded",
        2,
    ),
]
# One masked row (batch 1) runs fused for any mask, every output option.
CASES += [
    (
        f"row_{mask}_{'zero' if zero else 'carry'}"
        f"{'_backwards' if backwards else ''}{'_sequences' if sequences else ''}",
        lambda x, z=zero, b=backwards, s=sequences: _lstm(
            zero_output_for_mask=z, go_backwards=b, return_sequences=s
        )(x),
        1,
        mask,
        1,
    )
    for mask in ("right_padded", "holes", "empty")
    for zero in (True, False)
    for backwards in (False, True)
    for sequences in (False, True)
    # Every output option on holes; one each on the other masks.
    if (mask == "holes" and (sequences or zero))
    or (mask != "holes" and zero and sequences and not backwards)
]


@pytest.mark.parametrize(
    "name, build, batch, mask, fused", CASES, ids=[c[0] for c in CASES]
)
def test_from_keras_model_fuses_and_matches_keras(
    name, build, batch, mask, fused
):
    rng = np.random.default_rng(len(name))
    inputs = keras.Input((None, FEATURES), batch_size=batch, name="x")
    x = keras.layers.Masking(0.0)(inputs) if mask else inputs
    model = keras.Model(inputs, build(x))
    content = _convert(model)
    ops, custom = litert_ops(content)
    assert not custom
    assert ops.count(FUSED) == fused
    assert ("WHILE" in ops) == (fused == 0)
    # Two different inputs in turn: the fused kernel keeps no state from
    # one invocation to the next.
    for call in range(2):
        x = _inputs(rng, batch or 3, mask)
        expected = model(x)
        if not isinstance(expected, (list, tuple)):
            expected = [expected]
        got = _run(content, {"x": x})
        assert len(got) == len(expected)
        for value in expected:
            value = np.asarray(value)
            matches = [
                np.abs(out - value).max()
                for out in got
                if out.shape == value.shape
            ]
            assert min(matches) < 1e-5, (name, call)


def test_initial_states_from_inputs_fuse_and_match(rng):
    inputs = keras.Input((None, FEATURES), batch_size=2, name="x")
    h0 = keras.Input((UNITS,), batch_size=2, name="h0")
    c0 = keras.Input((UNITS,), batch_size=2, name="c0")
    outputs = _lstm(return_sequences=True)(inputs, initial_state=[h0, c0])
    model = keras.Model([inputs, h0, c0], outputs)
    content = _convert(model)
    assert litert_ops(content)[0].count(FUSED) == 1
    feeds = {
        "x": rng.normal(size=(2, STEPS, FEATURES)).astype("float32"),
        "h0": rng.normal(size=(2, UNITS)).astype("float32"),
        "c0": rng.normal(size=(2, UNITS)).astype("float32"),
    }
    (got,) = _run(content, feeds)
    expected = model([feeds["x"], feeds["h0"], feeds["c0"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_outside_a_litert_trace_nothing_changes(rng):
    """The LiteRT path takes only graphs traced for the converter."""
    from lstm_keras.backends.tensorflow import litert

    layer = _lstm()
    x = rng.normal(size=(1, STEPS, FEATURES)).astype("float32")
    layer(x)
    with pytest.raises(NotImplementedError, match="not tracing"):
        litert.lstm_sequence(
            layer, tf.constant(x), [tf.zeros([1, UNITS])] * 2, None, False
        )


@pytest.mark.parametrize(
    "frame_length, frame_step, fft_length",
    # Two-stage DFTs of 16 x 16 points, and a prime length (one matmul).
    [(256, 128, None), (200, 80, 256), (250, 100, 251)],
)
def test_front_end_by_matmul_gives_the_stft_features(
    frame_length, frame_step, fft_length
):
    layer = LogMelSpectrogram(
        RATE,
        frame_length=frame_length,
        frame_step=frame_step,
        fft_length=fft_length,
    )
    clips = tones([50, 1000, 6001], seed=2)
    expected = layer(clips)
    with export_context.litert_tracing():
        got = tf.function(layer)(tf.constant(clips))
    # Log-mel values of order 1-10; a matmul and an FFT round differently.
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.fixture(scope="module")
def speech_model():
    model = SpeechClassifier(
        class_names=[str(d) for d in range(10)], sample_rate=RATE, seed=0
    )
    model.adapt(tones([3000, 5000, 8000, 4000], seed=1))
    return model


@pytest.fixture(scope="module")
def speech_files(speech_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("litert")
    clips = list(tones([2000, 4000, 6000, 7000, 3000], seed=7))
    return {
        quantize: export_litert(
            speech_model,
            folder / f"speech-{quantize}.tflite",
            quantize=quantize,
            representative_data=clips,
            verbose=False,
        )
        for quantize in ("none", "dynamic", "int8", "full_int8")
    }


def test_speech_model_runs_whole_on_builtins(speech_model, speech_files):
    report = speech_files["none"]
    assert report["fused_lstm"] == fused_speech_lstms(speech_model)
    assert "RFFT2D" not in report["ops"]
    with open(report["labels"]) as f:
        assert f.read().split() == speech_model.class_names
    runner = Interpreter(model_path=report["path"]).get_signature_runner()
    for length in (300, 4100, 9000):
        clip = tones([length], seed=length)
        clip[0, length // 2 :] = 0.0  # padding: masked frames
        (got,) = runner(waveforms=clip).values()
        np.testing.assert_allclose(got, speech_model(clip), atol=1e-5)


def test_quantized_files_are_smaller_and_close(
    speech_model, speech_files, tmp_path
):
    export_for_serving(speech_model, tmp_path / "serving", verbose=False)
    saved_model_bytes = sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(tmp_path / "serving" / "1")
        for name in names
    )
    assert saved_model_bytes / speech_files["none"]["bytes"] >= 2
    clip = tones([5000], seed=11)
    expected = np.asarray(speech_model(clip))
    # Loose: an untrained model's probabilities; the accuracy of quantized
    # files on FSDD is measured by `make eval` (docs/deployment.md).
    for quantize in ("dynamic", "int8", "full_int8"):
        report = speech_files[quantize]
        size = report["bytes"]
        if quantize == "full_int8":
            # A device stores the float front end too.
            size += os.path.getsize(report["frontend"])
            got = FullIntegerSpeech(report["path"])(clip)
        else:
            runner = Interpreter(model_path=report["path"])
            (got,) = runner.get_signature_runner()(waveforms=clip).values()
        assert saved_model_bytes / size >= 3.5, quantize
        assert report["fused_lstm"] == fused_speech_lstms(speech_model)
        assert np.abs(got - expected).max() < 0.15, quantize
        # An int8 softmax is quantized in steps of 1/256.
        assert abs(got.sum() - 1) < 0.02


def _float_tensors(content):
    """Names of the float32 tensors that a LiteRT file's ops read or write.

    An integer LSTM also lists "intermediates", tensors that hold only the
    quantization scales of its gates' internal values; they hold no data.
    """
    from lstm_keras.compat import litert_schema as schema

    model = schema.Model.GetRootAs(content, 0)
    names = []
    for index in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(index)
        used = set()
        for o in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(o)
            used.update(op.InputsAsNumpy().tolist())
            used.update(op.OutputsAsNumpy().tolist())
        for t in sorted(used - {-1}):
            tensor = subgraph.Tensors(t)
            if tensor.Type() == schema.TensorType.FLOAT32:
                names.append(tensor.Name().decode())
    return names


def test_full_integer_speech_file_takes_features_from_its_front_end(
    speech_model, speech_files
):
    report = speech_files["full_int8"]
    with open(report["path"], "rb") as f:
        assert _float_tensors(f.read()) == []
    assert set(report["inputs"]) == {"features"}
    assert set(report["outputs"]) == {"probabilities"}
    with open(report["frontend"], "rb") as f:
        frontend_ops, custom = litert_ops(f.read())
    assert not custom and FUSED not in frontend_ops
    runner = FullIntegerSpeech(report["path"])
    for length in (300, 4100, 9000):
        clip = tones([length], seed=length)
        clip[0, length // 2 :] = 0.0  # padding: masked frames
        expected = speech_features(speech_model, clip)
        np.testing.assert_allclose(runner.features(clip), expected, atol=1e-4)


def test_full_integer_file_of_a_user_model(rng, tmp_path):
    model = keras.Sequential(
        [
            keras.Input((STEPS, FEATURES)),
            _lstm(return_sequences=True),
            _lstm(go_backwards=True),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    examples = rng.normal(size=(64, STEPS, FEATURES)).astype("float32")
    report = export_litert(
        model,
        tmp_path / "m.tflite",
        quantize="full_int8",
        representative_data=examples,
        verbose=False,
    )
    assert report["fused_lstm"] == 2 and "WHILE" not in report["ops"]
    content = (tmp_path / "m.tflite").read_bytes()
    assert _float_tensors(content) == []
    ((name, (scale, zero)),) = report["inputs"].items()
    ((_, (out_scale, out_zero)),) = report["outputs"].items()
    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    runner = interpreter.get_signature_runner()

    def run(x, reset=True):
        if reset:
            interpreter.reset_all_variables()
        q = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
        (output,) = runner(**{name: q}).values()
        return (output.astype(np.float32) - out_zero) * out_scale

    first, second = examples[:1], examples[1:2]
    got = run(first)
    # Input steps of `scale` and output steps of 1/256, through two LSTMs.
    np.testing.assert_allclose(got, model(first), atol=0.05)
    # The LSTMs' states are variable tensors, carried from one call to the
    # next unless reset, as documented.
    run(second)
    assert not np.array_equal(run(first, reset=False), got)
    run(second)
    np.testing.assert_array_equal(run(first), got)


def test_files_load_in_a_process_with_only_the_runtime(speech_files, tmp_path):
    """The file needs neither TensorFlow nor this package to run."""
    clip = tones([4000], seed=3)
    np.save(tmp_path / "clip.npy", clip)
    script = f"""
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
runner = Interpreter(model_path={speech_files["none"]["path"]!r}).get_signature_runner()
(p,) = runner(waveforms=np.load({str(tmp_path / "clip.npy")!r})).values()
np.save({str(tmp_path / "p.npy")!r}, p)
assert 'tensorflow' not in sys.modules and 'lstm_keras' not in sys.modules
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    runner = Interpreter(
        model_path=speech_files["none"]["path"]
    ).get_signature_runner()
    (expected,) = runner(waveforms=clip).values()
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), expected)


def test_bad_arguments_name_the_argument(speech_model, tmp_path):
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match="`quantize`"):
        export_litert(speech_model, path, quantize="int4")
    for quantize in ("int8", "full_int8"):
        with pytest.raises(ValueError, match="`representative_data`"):
            export_litert(speech_model, path, quantize=quantize)
    with pytest.raises(ValueError, match="`batch_size`.*one clip"):
        export_litert(
            speech_model,
            path,
            quantize="full_int8",
            representative_data=[np.zeros(100, "float32")],
            batch_size=2,
        )
    with pytest.raises(ValueError, match="`batch_size`"):
        export_litert(speech_model, path, batch_size=0)
    with pytest.raises(ValueError, match="`path`.*directory"):
        export_litert(speech_model, tmp_path)
    text = keras.Input((), dtype="string", name="text")
    lookup = keras.layers.StringLookup(vocabulary=["a", "b"])(text)
    with pytest.raises(ValueError, match="strings"):
        export_litert(keras.Model(text, lookup), path)
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_litert(speech_model, path, verbose=False)
    assert path.read_bytes() == b"old"
    export_litert(speech_model, path, overwrite=True, verbose=False)
    assert path.read_bytes() != b"old"
    # Written in place by a rename: no temporary file is left beside it.
    assert sorted(os.listdir(tmp_path)) == ["m.tflite", "m.tflite.labels.txt"]


def test_command_writes_a_calibrated_file(speech_model, tmp_path, capsys):
    model_path = tmp_path / "speech.keras"
    speech_model.save(model_path)
    out = tmp_path / "digits.tflite"
    status = export_command.main(
        [
            str(model_path),
            "--format",
            "litert",
            "--out",
            str(out),
            "--quantize",
            "int8",
            "--representative-data",
            "sample",
        ]
    )
    assert status == 0
    ops, custom = litert_ops(out.read_bytes())
    assert ops.count(FUSED) == fused_speech_lstms(speech_model) and not custom
    assert "QUANTIZE" in ops


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--format", "litert"], "--out is required"),
        (
            ["--format", "litert", "--out", "x.tflite", "--quantize", "int8"],
            "--representative-data",
        ),
        (
            ["--format", "litert", "--out", "x.tflite"]
            + ["--quantize", "full_int8"],
            "--quantize full_int8 needs --representative-data",
        ),
        (
            ["--format", "litert", "--out", "x.tflite", "--batch-size", "0"],
            "--batch-size",
        ),
        (
            [
                "--format",
                "litert",
                "--out",
                "x.tflite",
                "--quantize",
                "int8",
                "--representative-data",
                "missing.npy",
            ],
            "missing.npy",
        ),
        ([], "--model-base-path is required"),
    ],
)
def test_command_user_errors_are_one_line(
    speech_model, tmp_path, capsys, flags, message
):
    model_path = tmp_path / "speech.keras"
    speech_model.save(model_path)
    status = export_command.main([str(model_path), *flags])
    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert message in lines[-1]
    assert "Traceback" not in "".join(lines)


@pytest.mark.parametrize(
    "options, fused",
    [
        ({}, 2),  # BiLSTM-max with subwords, the default
        ({"subword_buckets": 0, "pooling": "last"}, 2),
        ({"num_members": 2, "bidirectional": False}, 2),
    ],
)
def test_sentiment_file_takes_token_ids(options, fused, tmp_path):
    texts = TEXTS + ["an unseen supercalifragilistic word", ""]
    model = SentimentClassifier(
        units=6, embedding_dim=5, max_length=12, seed=0, **options
    )
    model.adapt(TEXTS)
    if not options:
        with pytest.raises(ValueError, match="`quantize`.*token ids"):
            export_litert(
                model,
                tmp_path / "s.tflite",
                quantize="full_int8",
                representative_data=[TEXTS[0]],
            )
    report = export_litert(model, tmp_path / "s.tflite", verbose=False)
    assert report["fused_lstm"] == fused
    with open(report["vocabulary"]) as f:
        assert f.read().splitlines() == model.vocabulary()
    runner = Interpreter(model_path=report["path"]).get_signature_runner()
    inputs = sentiment_inputs(model, texts)
    assert ("subword_ids" in inputs) == bool(
        model.get_config()["subword_buckets"]
    )
    expected = model(np.array(texts, object))
    for row, text in enumerate(texts):
        got = runner(
            **{name: value[row : row + 1] for name, value in inputs.items()}
        )
        np.testing.assert_allclose(
            got["probabilities"][0], expected[row], atol=1e-5, err_msg=text
        )


def test_sentiment_inputs_refuse_a_token_too_long(tmp_path):
    model = SentimentClassifier(units=4, embedding_dim=4, max_length=4)
    model.adapt(TEXTS)
    with pytest.raises(ValueError, match="n-grams"):
        sentiment_inputs(model, ["a" * 40])


def test_docstring_example(speech_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from lstm_keras.export import litert

    globs = {**vars(litert), "model": speech_model}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(litert, globs=globs):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted > 0 and results.failed == 0
    assert (tmp_path / "digits.tflite").exists()


def test_require_fused_names_the_layers_that_would_loop(speech_model, tmp_path):
    report = export_litert(
        speech_model, tmp_path / "s.tflite", require_fused=True, verbose=False
    )
    assert report["fused_lstm"] == fused_speech_lstms(speech_model)
    inputs = keras.Input((None, FEATURES), batch_size=1)
    x = _lstm(use_peepholes=True, return_sequences=True, name="peephole")(
        inputs
    )
    x = _lstm(layer_norm=True, name="normed")(x)
    model = keras.Model(inputs, x)
    with pytest.raises(ValueError, match="`require_fused`") as error:
        export_litert(model, tmp_path / "m.tflite", require_fused=True)
    assert "'peephole': peepholes" in str(error.value)
    assert "'normed': cell variant" in str(error.value)
    assert not (tmp_path / "m.tflite").exists()
