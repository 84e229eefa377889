"""The `stream` signature: a clip fed chunk by chunk gives its probabilities.

The reference is the Keras model run on the whole clip so far; the stream
runs where its users run it: the SavedModel in a process without this
package, and the LiteRT file in the LiteRT interpreter.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from sample_inputs import RATE
from sample_inputs import tones

from lstm_keras.applications import SpeechClassifier
from lstm_keras.applications.speech import STREAMING_OPTIONS
from lstm_keras.export import export_for_serving
from lstm_keras.export import export_litert
from lstm_keras.export import read_warmup_requests
from lstm_keras.export import streaming
from training import train as train_command

pytestmark = pytest.mark.tensorflow_only

STEP = 128
SAMPLES = 40 * STEP


def _clips(batch, seed):
    """Tones with noise to the end: no trailing exact zeros (padding)."""
    clips = tones([SAMPLES] * batch, seed=seed)
    rng = np.random.default_rng(seed)
    return clips + rng.normal(scale=0.01, size=clips.shape).astype("float32")


@pytest.fixture(scope="module")
def model():
    model = SpeechClassifier(
        class_names=[str(d) for d in range(10)],
        sample_rate=RATE,
        units=12,
        num_layers=2,
        seed=0,
        **STREAMING_OPTIONS,
    )
    model.adapt(tones([3000, 5000, 8000], seed=1))
    return model


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    export_for_serving(
        model, folder / "serving", litert_signature=False, verbose=False
    )
    litert = export_litert(model, folder / "model.tflite", verbose=False)
    return folder / "serving" / "1", litert["path"]


def _so_far(model, clips, ends):
    """The whole-clip model's probabilities for each prefix `clips[:, :end]`."""
    return [np.asarray(model(clips[:, :end])) for end in ends]


# Divisors of SAMPLES: from one frame step to the whole clip.
CHUNKS = [STEP, 5 * STEP, 10 * STEP, SAMPLES]


def test_state_size_and_metadata(model, exports):
    # 2 layers of h and c, 128 kept samples, the count of samples seen.
    assert streaming.state_size(model) == 2 * 2 * 12 + STEP + 1
    saved_model, _ = exports
    with open(saved_model / "assets" / "metadata.json") as f:
        spec = json.load(f)
    assert spec["state_size"] == streaming.state_size(model)
    assert spec["chunk_multiple"] == STEP
    assert set(spec["signatures"]["stream"]["inputs"]) == {"samples", "state"}


def test_saved_model_stream_in_a_process_without_the_package(
    model, exports, tmp_path
):
    saved_model, _ = exports
    clips = _clips(2, seed=3)
    np.save(tmp_path / "clips.npy", clips)
    script = f"""
import json, sys
import numpy as np, tensorflow as tf
loaded = tf.saved_model.load({str(saved_model)!r})
metadata = loaded.signatures["metadata"](unused=tf.constant(0))
size = int(metadata["state_size"])
clips = np.load({str(tmp_path / "clips.npy")!r})
results = {{}}
for chunk in {CHUNKS!r}:
    state = np.zeros((2, size), "float32")
    out = []
    for start in range(0, clips.shape[1], chunk):
        r = loaded.signatures["stream"](
            samples=tf.constant(clips[:, start:start + chunk]),
            state=tf.constant(state))
        state = r["state"].numpy()
        out.append(r["probabilities"].numpy().tolist())
    results[chunk] = out
assert "lstm_keras" not in sys.modules
json.dump(results, open({str(tmp_path / "out.json")!r}, "w"))
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    with open(tmp_path / "out.json") as f:
        results = json.load(f)
    for chunk in CHUNKS:
        ends = range(chunk, SAMPLES + 1, chunk)
        for got, expected in zip(
            results[str(chunk)], _so_far(model, clips, ends), strict=True
        ):
            np.testing.assert_allclose(got, expected, atol=1e-5)


def test_rows_are_streams_at_their_own_positions(model):
    """A batch may hold streams that started at different times."""
    step = tf.function(lambda s, st: streaming.stream_step(model, s, st))
    size = streaming.state_size(model)
    clips = _clips(2, seed=5)
    # Stream 0 has heard 3 chunks when stream 1 starts.
    state0 = np.zeros((1, size), "float32")
    for start in range(0, 3 * STEP, STEP):
        _, state0 = step(clips[:1, start : start + STEP], state0)
    state = np.concatenate([state0, np.zeros((1, size), "float32")])
    for k in range(6):
        chunk = np.stack(
            [
                clips[0, (3 + k) * STEP : (4 + k) * STEP],
                clips[1, k * STEP : (k + 1) * STEP],
            ]
        )
        probabilities, state = step(chunk, state)
        np.testing.assert_allclose(
            probabilities[0], model(clips[:1, : (4 + k) * STEP])[0], atol=1e-5
        )
        np.testing.assert_allclose(
            probabilities[1], model(clips[1:, : (k + 1) * STEP])[0], atol=1e-5
        )


def test_litert_stream_matches_the_whole_clip(model, exports):
    _, path = exports
    interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner("stream")
    size = streaming.state_size(model)
    clips = _clips(1, seed=7)
    for chunk in CHUNKS:
        state = np.zeros((1, size), "float32")
        ends = list(range(chunk, SAMPLES + 1, chunk))
        for end, expected in zip(
            ends, _so_far(model, clips, ends), strict=True
        ):
            out = runner(samples=clips[:, end - chunk : end], state=state)
            state = out["state"]
            np.testing.assert_allclose(
                out["probabilities"], expected, atol=1e-4
            )
    # The batch is fixed; a wrong state width fails in the graph.
    details = runner.get_input_details()
    assert list(details["state"]["shape_signature"]) == [1, -1]
    assert list(details["samples"]["shape_signature"]) == [1, -1]


def test_bad_chunks_and_states_name_the_argument(exports, model):
    saved_model, litert = exports
    stream = tf.saved_model.load(str(saved_model)).signatures["stream"]
    size = streaming.state_size(model)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`samples`"):
        stream(samples=tf.zeros([1, STEP + 1]), state=tf.zeros([1, size]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="`state`"):
        stream(samples=tf.zeros([2, STEP]), state=tf.zeros([1, size]))
    # LiteRT runs no assertions: there the same requests fail in a
    # reshape, rather than giving wrong probabilities.
    runner = Interpreter(model_path=litert).get_signature_runner("stream")
    chunk = np.full((1, 2 * STEP), 0.1, "float32")
    state = np.zeros((1, size), "float32")
    good = runner(samples=chunk, state=state)["probabilities"]
    for samples, bad_state in (
        (np.zeros((1, STEP + 1), "float32"), state),
        (chunk, np.zeros((1, size + 5), "float32")),
        (chunk, np.zeros((1, size - 5), "float32")),
        (chunk, np.zeros((1, 2 * size), "float32")),
    ):
        with pytest.raises(
            (RuntimeError, ValueError), match="(?i)reshape|concat"
        ):
            runner(samples=samples, state=bad_state)
    # The interpreter still serves good requests afterwards.
    np.testing.assert_array_equal(
        runner(samples=chunk, state=state)["probabilities"], good
    )


def test_models_that_cannot_stream_say_why(tmp_path):
    default = SpeechClassifier(class_names=["a", "b"], sample_rate=RATE)
    default.adapt(tones([3000, 4000], seed=2))
    assert "bidirectional" in streaming.streaming_problem(default)
    with pytest.raises(ValueError, match="cannot stream: its LSTMs"):
        streaming.state_size(default)
    forward = SpeechClassifier(
        class_names=["a", "b"], sample_rate=RATE, bidirectional=False
    )
    assert "clip_normalization" in streaming.streaming_problem(forward)
    export_for_serving(
        default, tmp_path / "m", litert_signature=False, verbose=False
    )
    loaded = tf.saved_model.load(str(tmp_path / "m" / "1"))
    assert "stream" not in loaded.signatures
    metadata = loaded.signatures["metadata"](unused=tf.constant(0))
    assert int(metadata["state_size"]) == 0


def test_streaming_flag_sets_the_preset(capsys):
    status = train_command.main(["speech", "--streaming", "--print-config"])
    assert status == 0
    options = json.loads(capsys.readouterr().out)["model_options"]
    assert options["bidirectional"] is False
    assert options["clip_normalization"] is False
    for argv, message in (
        (["speech", "--streaming", "--bidirectional"], "--no-bidirectional"),
        (["sentiment", "--streaming"], "speech option"),
    ):
        assert train_command.main([*argv, "--print-config"]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and message in error[0]


def test_state_survives_float32(model):
    """The count of samples seen is capped, so the state stays exact."""
    step = tf.function(lambda s, st: streaming.stream_step(model, s, st))
    clips = _clips(1, seed=9)
    state = np.zeros((1, streaming.state_size(model)), "float32")
    for start in range(0, SAMPLES, 4 * STEP):
        _, state = step(clips[:, start : start + 4 * STEP], state)
    assert state[0, -1] == 2 * STEP  # ceil(frame_length / step) steps


def test_litert_stream_with_changing_and_empty_chunks(model, exports):
    """Chunk sizes change from call to call, empty chunks included."""
    _, path = exports
    runner = Interpreter(model_path=path).get_signature_runner("stream")
    rng = np.random.default_rng(0)
    clip = (0.1 * rng.normal(size=(1, 60 * STEP))).astype("float32")
    state = np.zeros((1, streaming.state_size(model)), "float32")
    position = 0
    for _ in range(16):
        size = STEP * int(rng.choice([0, 1, 2, 5]))
        out = runner(samples=clip[:, position : position + size], state=state)
        state, position = out["state"], position + size
        if position:
            np.testing.assert_allclose(
                out["probabilities"], model(clip[:, :position]), atol=1e-4
            )


def test_warmup_requests_replay_on_the_stream_signature(model, exports):
    """TF Serving replays the warm-up file on load: its stream requests
    must run and give a state the next call takes."""
    saved_model, _ = exports
    loaded = tf.saved_model.load(str(saved_model))
    requests = read_warmup_requests(str(saved_model))
    streams = [inputs for name, inputs in requests if name == "stream"]
    assert len(streams) == 2  # a row and a batch
    for inputs in streams:
        out = loaded.signatures["stream"](
            **{name: tf.constant(value) for name, value in inputs.items()}
        )
        assert out["state"].shape == inputs["state"].shape
        np.testing.assert_allclose(
            tf.reduce_sum(out["probabilities"], axis=1), 1.0, atol=1e-5
        )
