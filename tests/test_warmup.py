"""TF Serving warm-up files, checked against TF Serving's own protos, and
the config files of `docs/serving/`, parsed by TF Serving's protos."""

import doctest
import os
import pathlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from sample_inputs import RATE
from sample_inputs import tones

from lstm_keras import export
from lstm_keras.applications import SentimentClassifier
from lstm_keras.applications import SpeechClassifier
from lstm_keras.export import warmup

pytestmark = pytest.mark.tensorflow_only

try:
    from tensorflow_serving.apis import prediction_log_pb2
except ImportError:
    prediction_log_pb2 = None
needs_serving_api = pytest.mark.skipif(
    prediction_log_pb2 is None,
    reason="tensorflow-serving-api is not installed (`pip install --no-deps "
    "tensorflow-serving-api`): its protos are the reference here",
)

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
TEXTS = ["a gem of a film", "a dull , tired mess", "not good", "awful"]


def requests():
    """One request of each kind a signature can take, empty batch too."""
    rng = np.random.default_rng(0)
    waveform = rng.normal(size=(2, 5, 3)).astype("float32")
    # Values whose bits a lossy encoding would change.
    waveform[0, 0] = [-0.0, np.inf, np.finfo("float32").tiny]
    return [
        {"waveform": waveform},
        {
            "ids": np.array([[3, 0, 2**31 - 1], [-(2**31), 5, 6]], "int32"),
            "lengths": np.array([3, 2], "int64"),
        },
        {"ids": np.array([[2**40, -(2**62), 0]], "int64")},
        {
            "text": np.array(["a fine film", "", "ünï ☃"], object),
            "raw": np.array([b"\x00\xff bytes", "str"], object),
            "fixed": np.array([b"ab", b"c"]),
        },
        {
            "waveform": np.zeros((0, 5, 3), "float32"),
            "text": np.zeros((0,), object),
        },
    ]


def expected_array(value):
    """The array TF Serving decodes: strings become UTF-8 bytes objects."""
    if value.dtype.kind in "OSU":
        return np.array(
            [v.encode() if isinstance(v, str) else v for v in value.ravel()],
            object,
        ).reshape(value.shape)
    return value


def assert_same_array(actual, expected):
    expected = expected_array(expected)
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    if expected.dtype == object:
        assert actual.tolist() == expected.tolist()
    else:
        assert actual.tobytes() == expected.tobytes()  # bit for bit


def saved_model_dir(path):
    """A SavedModel folder with no signatures: enough for the file."""
    tf.saved_model.save(tf.Module(), os.fspath(path))
    return os.fspath(path)


def records(path):
    file = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
    return [r.numpy() for r in tf.data.TFRecordDataset(file)]


@needs_serving_api
def test_records_are_tf_serving_prediction_logs(tmp_path):
    path = saved_model_dir(tmp_path / "1")
    written = warmup.write_warmup_requests(
        path, requests(), signature_name="classify", model_name="speech"
    )
    assert written == os.path.join(
        path, "assets.extra", "tf_serving_warmup_requests"
    )
    found = records(path)
    assert len(found) == len(requests())
    for record, inputs in zip(found, requests(), strict=True):
        log = prediction_log_pb2.PredictionLog.FromString(record)
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.signature_name == "classify"
        assert request.model_spec.name == "speech"
        assert not request.model_spec.HasField("version")
        assert sorted(request.inputs) == sorted(inputs)
        for name, value in inputs.items():
            assert_same_array(tf.make_ndarray(request.inputs[name]), value)
        # Byte for byte what the protos write (deterministic: map keys in
        # order), from their own TensorProtos.
        reference = prediction_log_pb2.PredictionLog()
        spec = reference.predict_log.request.model_spec
        spec.name, spec.signature_name = "speech", "classify"
        for name, value in inputs.items():
            reference.predict_log.request.inputs[name].CopyFrom(
                tf.make_tensor_proto(expected_array(value))
            )
        assert record == reference.SerializeToString(deterministic=True)


@needs_serving_api
def test_default_signature_and_no_model_name(tmp_path):
    path = saved_model_dir(tmp_path / "1")
    warmup.write_warmup_requests(path, requests()[:1])
    (record,) = records(path)
    log = prediction_log_pb2.PredictionLog.FromString(record)
    spec = log.predict_log.request.model_spec
    assert (spec.signature_name, spec.name) == ("serving_default", "")
    # proto3 writes no empty string: the spec holds the signature alone.
    assert spec.SerializeToString() == b"\x1a\x0fserving_default"


def test_read_returns_what_was_written(tmp_path):
    path = saved_model_dir(tmp_path / "1")
    pairs = [("metadata", {"unused": np.array(0, "int32")})]
    warmup.write_warmup_requests(path, requests() + pairs, model_name="m")
    found = warmup.read_warmup_requests(path)
    expected = [("serving_default", r) for r in requests()] + pairs
    assert [name for name, _ in found] == [name for name, _ in expected]
    for (_, inputs), (_, reference) in zip(found, expected, strict=True):
        assert sorted(inputs) == sorted(reference)
        for name, value in reference.items():
            assert_same_array(inputs[name], value)
    # Written again from what was read: the same bytes.
    before = records(path)
    warmup.write_warmup_requests(path, found, model_name="m")
    assert records(path) == before


@needs_serving_api
def test_read_parses_files_written_by_the_protos(tmp_path):
    """Other writers' fields (and field order) are skipped or merged."""
    from tensorflow_serving.apis import classification_pb2

    path = saved_model_dir(tmp_path / "1")
    full = prediction_log_pb2.PredictionLog()
    full.log_metadata.model_spec.name = "other"
    full.log_metadata.sampling_config.sampling_rate = 0.5
    request = full.predict_log.request
    request.model_spec.name = "speech"
    request.model_spec.version.value = 7
    request.model_spec.signature_name = "serving_default"
    request.output_filter.append("probabilities")
    clips = np.linspace(-1, 1, 12, dtype="float32").reshape(2, 6)
    request.inputs["waveform"].CopyFrom(tf.make_tensor_proto(clips))
    request.inputs["ids"].CopyFrom(tf.make_tensor_proto(np.int64([1, 2])))
    full.predict_log.response.outputs["class_id"].CopyFrom(
        tf.make_tensor_proto(np.int64([0, 1]))
    )
    bare = prediction_log_pb2.PredictionLog()
    bare.predict_log.request.inputs["x"].CopyFrom(
        tf.make_tensor_proto(np.float32([[1.5]]))
    )
    # Concatenated messages merge: the spec of one, the inputs of both.
    named = prediction_log_pb2.PredictionLog()
    named.predict_log.request.model_spec.signature_name = "classify"
    named.predict_log.request.inputs["y"].CopyFrom(
        tf.make_tensor_proto(np.int32([9]))
    )
    merged = named.SerializeToString() + bare.SerializeToString()
    reference = prediction_log_pb2.PredictionLog.FromString(merged)
    file = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
    os.makedirs(os.path.dirname(file))
    with tf.io.TFRecordWriter(file) as writer:
        writer.write(full.SerializeToString())
        writer.write(bare.SerializeToString())
        writer.write(merged)
    found = warmup.read_warmup_requests(path)
    (name, inputs), (bare_name, bare_inputs), (merged_name, merged_inputs) = (
        found
    )
    reference = reference.predict_log.request
    assert merged_name == reference.model_spec.signature_name == "classify"
    assert sorted(merged_inputs) == sorted(reference.inputs) == ["x", "y"]
    for key, value in merged_inputs.items():
        assert_same_array(value, tf.make_ndarray(reference.inputs[key]))
    assert name == "serving_default" and sorted(inputs) == ["ids", "waveform"]
    assert_same_array(inputs["waveform"], clips)
    assert_same_array(inputs["ids"], np.int64([1, 2]))
    assert bare_name == "" and sorted(bare_inputs) == ["x"]
    assert_same_array(bare_inputs["x"], np.float32([[1.5]]))
    # Another kind of log is refused, with its record's index.
    other = prediction_log_pb2.PredictionLog(
        classify_log=prediction_log_pb2.ClassifyLog(
            request=classification_pb2.ClassificationRequest()
        )
    )
    with tf.io.TFRecordWriter(file) as writer:
        writer.write(bare.SerializeToString())
        writer.write(other.SerializeToString())
    with pytest.raises(ValueError, match="Record 1 .*not a predict_log"):
        warmup.read_warmup_requests(path)


def test_a_corrupt_record_is_refused(tmp_path):
    path = saved_model_dir(tmp_path / "1")
    warmup.write_warmup_requests(path, requests()[:1])
    (record,) = records(path)
    file = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
    with tf.io.TFRecordWriter(file) as writer:
        writer.write(record[:-7])  # a valid TFRecord of a cut message
    with pytest.raises(ValueError, match="Record 0 .*past the message end"):
        warmup.read_warmup_requests(path)


FLOAT = np.zeros((1, 2), "float32")


@pytest.mark.parametrize(
    "kwargs, argument, message",
    [
        (dict(requests=[]), "requests", "non-empty list of dicts"),
        (dict(requests={"x": FLOAT}), "requests", "non-empty list of dicts"),
        (dict(requests=[{}]), "requests", "non-empty list of dicts"),
        (dict(requests=[FLOAT]), "requests", "non-empty list of dicts"),
        (dict(requests=[{"x": [1.0]}]), "requests", "input 'x' is a list"),
        (
            dict(requests=[{"x": FLOAT}, {"x": np.zeros(2)}]),
            "requests",
            "request 1, input 'x' has dtype float64",
        ),
        (
            dict(requests=[{"x": np.array(["a", 1], object)}]),
            "requests",
            "holds int 1",
        ),
        (dict(requests=[{3: FLOAT}]), "requests", "has the key 3"),
        (dict(requests=[("", {"x": FLOAT})]), "requests", "request 0 names"),
        (dict(requests=[{"x": FLOAT}] * 1001), "requests", "more than 1000"),
        (dict(signature_name=""), "signature_name", "non-empty string"),
        (dict(model_name=3), "model_name", "string or None"),
        (dict(saved_model_dir=None), "saved_model_dir", "must be a path"),
        (dict(saved_model_dir="empty"), "saved_model_dir", "SavedModel folder"),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path, kwargs, argument, message):
    path = saved_model_dir(tmp_path / "1")
    arguments = dict(saved_model_dir=path, requests=[{"x": FLOAT}])
    arguments.update(kwargs)
    if arguments["saved_model_dir"] == "empty":
        arguments["saved_model_dir"] = os.fspath(tmp_path)
    with pytest.raises(ValueError, match=f"Argument `{argument}`") as error:
        warmup.write_warmup_requests(**arguments)
    assert message in str(error.value)
    # Nothing is written when the arguments are refused.
    assert not os.path.exists(os.path.join(path, "assets.extra"))


def test_read_without_a_file_names_the_folder(tmp_path):
    path = saved_model_dir(tmp_path / "1")
    with pytest.raises(FileNotFoundError, match="`saved_model_dir`"):
        warmup.read_warmup_requests(path)
    with pytest.raises(ValueError, match="`saved_model_dir`"):
        warmup.read_warmup_requests(3)


def test_writing_again_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    path = saved_model_dir(tmp_path / "1")
    warmup.write_warmup_requests(path, requests())
    warmup.write_warmup_requests(path, requests()[2:3])
    assert os.listdir(os.path.join(path, "assets.extra")) == [
        "tf_serving_warmup_requests"
    ]
    ((_, inputs),) = warmup.read_warmup_requests(path)
    assert_same_array(inputs["ids"], requests()[2]["ids"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`{app: (model, version path)}` of two tiny exported classifiers."""
    keras.utils.set_random_seed(0)
    base = tmp_path_factory.mktemp("models")
    sentiment = SentimentClassifier(
        units=6, embedding_dim=5, max_length=8, seed=0
    )
    sentiment.adapt(TEXTS)
    speech = SpeechClassifier(
        ["yes", "no", "maybe"], sample_rate=RATE, units=6, num_mel_bins=16
    )
    speech.adapt(tones([4000, 3000, 2000, 1000], seed=1))
    return {
        app: (
            model,
            export.export_for_serving(
                model, base / app, litert_signature=False, verbose=0
            ),
        )
        for app, model in (("sentiment", sentiment), ("speech", speech))
    }


def test_replayed_requests_give_the_models_answers(exported):
    """What TF Serving does on loading: each record through its signature."""
    cases = {
        "sentiment": [
            {"text": np.array(TEXTS + [""], object)},
            {"text": np.array(["a gem"], object)},
        ],
        "speech": [
            {"waveform": tones([3000, 1200], seed=2)},
            {"waveform": tones([300], seed=3)},
        ],
    }
    for app, (model, path) in exported.items():
        warmup.write_warmup_requests(
            path,
            cases[app] + [("metadata", {"unused": np.array(0, "int32")})],
            model_name=app,
        )
        # The SavedModel loads as before, the warm-up file aside.
        assert "assets.extra" in os.listdir(path)
        signatures = tf.saved_model.load(path).signatures
        replayed = warmup.read_warmup_requests(path)
        assert len(replayed) == 3
        for (name, inputs), case in zip(replayed, cases[app], strict=False):
            assert name == "serving_default"
            outputs = signatures[name](
                **{key: tf.constant(value) for key, value in inputs.items()}
            )
            (batch,) = case.values()
            expected = model(tf.constant(batch), training=False)
            np.testing.assert_allclose(
                outputs["probabilities"], expected, atol=1e-5
            )
            ids = outputs["class_id"].numpy()
            assert outputs["class_name"].numpy().tolist() == [
                model.class_names[i].encode() for i in ids
            ]
        name, inputs = replayed[2]
        constants = signatures[name](**inputs)
        assert [n.decode() for n in constants["class_names"].numpy()] == (
            model.class_names
        )
        assert int(constants["sample_rate"]) == (RATE if app == "speech" else 0)


def test_docstring_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(warmup, globs=vars(warmup)):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted > 0 and results.failed == 0


# === docs/serving/: the config files, parsed as TF Serving parses them ===


def batching_parameters_class():
    """TF Serving's `BatchingParameters`, or a copy of its descriptor.

    `tensorflow-serving-api` does not ship
    `tensorflow_serving/servables/tensorflow/session_bundle_config_pb2`;
    without it, the message is rebuilt from the fields of
    `session_bundle_config.proto` (tensorflow/serving), with the same
    names, numbers and types (the `Int64Value` wrappers, which decide the
    text format: `max_batch_size { value: 32 }`).
    """
    try:
        from tensorflow_serving.servables.tensorflow import (
            session_bundle_config_pb2,
        )
    except ImportError:
        pass
    else:
        return session_bundle_config_pb2.BatchingParameters
    from google.protobuf import descriptor_pb2
    from google.protobuf import descriptor_pool
    from google.protobuf import message_factory
    from google.protobuf import wrappers_pb2

    Field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="copy/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = file.message_type.add(name="BatchingParameters")
    int64_value = ".google.protobuf.Int64Value"
    for name, number, kind, type_name, label in (
        ("max_batch_size", 1, Field.TYPE_MESSAGE, int64_value, None),
        ("batch_timeout_micros", 2, Field.TYPE_MESSAGE, int64_value, None),
        ("max_enqueued_batches", 3, Field.TYPE_MESSAGE, int64_value, None),
        ("num_batch_threads", 4, Field.TYPE_MESSAGE, int64_value, None),
        (
            "thread_pool_name",
            5,
            Field.TYPE_MESSAGE,
            ".google.protobuf.StringValue",
            None,
        ),
        ("allowed_batch_sizes", 6, Field.TYPE_INT64, None, "repeated"),
        ("pad_variable_length_inputs", 7, Field.TYPE_BOOL, None, None),
    ):
        field = message.field.add(name=name, number=number, type=kind)
        field.label = (
            Field.LABEL_REPEATED
            if label == "repeated"
            else Field.LABEL_OPTIONAL
        )
        if type_name:
            field.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


@needs_serving_api
def test_docs_config_files_parse_as_tf_serving_protos():
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(
        (DOCS / "serving" / "models.config").read_text(),
        model_server_config_pb2.ModelServerConfig(),
    )
    models = {c.name: c for c in config.model_config_list.config}
    assert sorted(models) == ["sentiment", "speech"]
    for name, model in models.items():
        assert model.base_path == f"/models/{name}"
        assert model.model_platform == "tensorflow"
    sentiment = models["sentiment"].model_version_policy
    assert sentiment.WhichOneof("policy_choice") == "latest"
    assert sentiment.latest.num_versions == 2
    speech = models["speech"].model_version_policy
    assert speech.WhichOneof("policy_choice") == "specific"
    assert list(speech.specific.versions) == [3, 4]

    batching = text_format.Parse(
        (DOCS / "serving" / "batching_parameters.txt").read_text(),
        batching_parameters_class()(),
    )
    for field in (
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
    ):
        assert batching.HasField(field), field
    assert batching.max_batch_size.value >= 1
    assert batching.num_batch_threads.value >= 1
    assert batching.pad_variable_length_inputs


def test_serving_page_shows_the_config_files_verbatim():
    page = (DOCS / "serving.md").read_text()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", page, re.S)
    for name in ("models.config", "batching_parameters.txt"):
        assert (DOCS / "serving" / name).read_text() in blocks, name
