"""TF Serving warm-up requests: `assets.extra/tf_serving_warmup_requests`.

TensorFlow initializes parts of a loaded graph lazily (kernels, the
`While` loop's functions, thread pools), so the first request to a freshly
loaded version is much slower than the ones after it. When a version folder
holds `assets.extra/tf_serving_warmup_requests`, TF Serving replays those
requests while loading the version, before it serves any real one; a
request that fails there fails the load, and more than 1000 records are
refused. `write_warmup_requests` writes that file; `read_warmup_requests`
reads it back.

The format: a TFRecord file whose records are serialized
`tensorflow.serving.PredictionLog` protos, each with a `predict_log` whose
`request` is a `PredictRequest`: a `model_spec` (`name`, `signature_name`)
and `inputs`, a map from the signature's input names to `TensorProto`s.
The protos of `tensorflow-serving-api` are not needed to write or read it:
that package requires the `tensorflow` package, which clashes with
`tensorflow-cpu`. The wrapper messages are encoded here in protobuf's wire
format (field numbers below, from TF Serving's `prediction_log.proto`,
`predict.proto` and `model.proto`), and the tensors are TensorFlow's own
`TensorProto`s (`tf.make_tensor_proto`). Map entries are encoded in key
order, so a file is byte-identical to the protos' deterministic
serialization.
"""

import os
import tempfile

import numpy as np
import tensorflow as tf

from lstm_keras.export.graph import SIGNATURE

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# TF Serving refuses a warm-up file with more records than this.
MAX_RECORDS = 1000

# Field numbers of TF Serving's protos.
_PREDICTION_LOG_PREDICT_LOG = 6  # PredictionLog.predict_log: PredictLog
_PREDICT_LOG_REQUEST = 1  # PredictLog.request: PredictRequest
_PREDICT_REQUEST_MODEL_SPEC = 1  # PredictRequest.model_spec: ModelSpec
_PREDICT_REQUEST_INPUTS = 2  # PredictRequest.inputs: map<string, TensorProto>
_MODEL_SPEC_NAME = 1  # ModelSpec.name: string
_MODEL_SPEC_SIGNATURE_NAME = 3  # ModelSpec.signature_name: string
_MAP_KEY = 1  # Every map<K, V> entry is a message {K key = 1; V value = 2;}.
_MAP_VALUE = 2

# Wire types.
_VARINT = 0
_FIXED64 = 1
_LENGTH_DELIMITED = 2
_FIXED32 = 5

_NUMERIC_DTYPES = (np.dtype("float32"), np.dtype("int32"), np.dtype("int64"))


def write_warmup_requests(
    saved_model_dir, requests, signature_name=SIGNATURE, model_name=None
):
    """Writes the warm-up requests that TF Serving replays on loading.

    Writes `saved_model_dir/assets.extra/tf_serving_warmup_requests`, one
    `PredictionLog` record per request, replacing the file if it exists.
    The file is written next to its final name and renamed into place, so
    a reader never sees half of it. Requests should look like real ones
    (dtypes, ranks, typical lengths and batch sizes): each is run once
    while the version loads, and one that fails makes the load fail.

    Args:
        saved_model_dir: A SavedModel folder (one holding `saved_model.pb`),
            e.g. the version folder `export_for_serving` returns.
        requests: Non-empty list (at most 1000) of dicts, each mapping the
            signature's input names to numpy arrays of dtype float32, int32
            or int64, or to string arrays (object arrays of `bytes` or
            `str`, or numpy `S`/`U` arrays; `str` is encoded as UTF-8).
            An item may also be a `(signature_name, dict)` pair, for a
            request to another signature (what `read_warmup_requests`
            returns, so its result can be written again).
        signature_name: Non-empty string, the signature that the dict
            requests call. Defaults to `"serving_default"`.
        model_name: String or `None`, written as each request's
            `model_spec.name` (TF Serving ignores it during warm-up; `None`
            leaves it empty). Defaults to `None`.

    Returns:
        The path of the written file.

    Example:

    >>> doubler = tf.Module()
    >>> doubler.f = tf.function(
    ...     lambda x: {"y": 2 * x},
    ...     input_signature=[tf.TensorSpec([None], "float32", name="x")],
    ... )
    >>> tf.saved_model.save(doubler, "doubler/1", signatures=doubler.f)
    >>> write_warmup_requests("doubler/1", [{"x": np.ones(2, "float32")}])
    'doubler/1/assets.extra/tf_serving_warmup_requests'
    """
    saved_model_dir = _check_saved_model_dir(saved_model_dir)
    if not isinstance(signature_name, str) or not signature_name:
        raise ValueError(
            "Argument `signature_name` must be a non-empty string, got "
            f"{signature_name!r}."
        )
    if model_name is not None and not isinstance(model_name, str):
        raise ValueError(
            f"Argument `model_name` must be a string or None, got {model_name!r}."
        )
    records = [
        _prediction_log(name, model_name or "", _check_request(index, request))
        for index, (name, request) in enumerate(
            _check_requests(requests, signature_name)
        )
    ]
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-warmup-")
    os.close(fd)
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            for record in records:
                writer.write(record)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_warmup_requests(saved_model_dir):
    """Reads the warm-up requests of a SavedModel folder.

    Parses every record of `saved_model_dir/assets.extra/
    tf_serving_warmup_requests` (as written by `write_warmup_requests`, or
    by TF Serving's own protos; fields other than the signature name and
    the inputs are skipped).

    Args:
        saved_model_dir: A SavedModel folder holding a warm-up file.

    Returns:
        A list with one `(signature_name, inputs)` tuple per record, in
        file order: `inputs` maps input names to numpy arrays (strings as
        object arrays of `bytes`). An empty `signature_name` is returned
        as `""` (TF Serving then calls `serving_default`).

    Example:

    >>> tf.saved_model.save(tf.Module(), "texts/1")
    >>> texts = np.array(["a fine film"], object)
    >>> write_warmup_requests("texts/1", [{"text": texts}], model_name="sst2")
    'texts/1/assets.extra/tf_serving_warmup_requests'
    >>> read_warmup_requests("texts/1")
    [('serving_default', {'text': array([b'a fine film'], dtype=object)})]
    """
    from tensorflow.core.framework import tensor_pb2

    if not isinstance(saved_model_dir, (str, os.PathLike)):
        raise ValueError(
            "Argument `saved_model_dir` must be a path, got "
            f"{saved_model_dir!r}."
        )
    path = os.path.join(os.fspath(saved_model_dir), WARMUP_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Argument `saved_model_dir` has no warm-up file: {path!r} does "
            "not exist."
        )
    requests = []
    for index, record in enumerate(tf.data.TFRecordDataset(path)):
        try:
            signature_name, inputs = _parse_prediction_log(record.numpy())
        except ValueError as error:
            raise ValueError(f"Record {index} of {path!r}: {error}") from None
        requests.append(
            (
                signature_name,
                {
                    name: tf.make_ndarray(tensor_pb2.TensorProto.FromString(t))
                    for name, t in inputs.items()
                },
            )
        )
    return requests


# === Checks ===


def _check_saved_model_dir(saved_model_dir):
    if not isinstance(saved_model_dir, (str, os.PathLike)):
        raise ValueError(
            "Argument `saved_model_dir` must be a path, got "
            f"{saved_model_dir!r}."
        )
    saved_model_dir = os.fspath(saved_model_dir)
    if not any(
        os.path.isfile(os.path.join(saved_model_dir, name))
        for name in ("saved_model.pb", "saved_model.pbtxt")
    ):
        # A misplaced file (e.g. in `model_base_path`) is never replayed.
        raise ValueError(
            "Argument `saved_model_dir` must be a SavedModel folder (one "
            f"holding saved_model.pb, e.g. model_base_path/<version>), got "
            f"{saved_model_dir!r}."
        )
    return saved_model_dir


def _check_requests(requests, signature_name):
    """`[(signature name, request dict)]`; a bare dict calls `signature_name`."""
    pairs = []
    if isinstance(requests, (list, tuple)):
        for index, request in enumerate(requests):
            if (
                isinstance(request, tuple)
                and len(request) == 2
                and isinstance(request[0], str)
            ):
                if not request[0]:
                    raise ValueError(
                        "Argument `requests` must name non-empty signatures; "
                        f"request {index} names ''."
                    )
                pairs.append(request)
            else:
                pairs.append((signature_name, request))
    if not pairs or not all(
        isinstance(request, dict) and request for _, request in pairs
    ):
        raise ValueError(
            "Argument `requests` must be a non-empty list of dicts mapping "
            "signature input names to numpy arrays (or of "
            "`(signature_name, dict)` pairs), none of them empty, got "
            f"{_short(requests)}."
        )
    if len(pairs) > MAX_RECORDS:
        raise ValueError(
            f"Argument `requests` holds {len(pairs)} requests; TF Serving "
            f"refuses a warm-up file of more than {MAX_RECORDS}."
        )
    return pairs


def _check_request(index, request):
    """`{name: numpy array}` of one request, strings as bytes objects."""
    checked = {}
    for name, value in request.items():
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"Argument `requests` must map input names (non-empty "
                f"strings) to arrays; request {index} has the key {name!r}."
            )
        where = f"request {index}, input {name!r}"
        if not isinstance(value, np.ndarray):
            raise ValueError(
                f"Argument `requests` must hold numpy arrays; {where} is a "
                f"{type(value).__name__}. Pass np.asarray(value, dtype) with "
                "the signature's dtype."
            )
        if value.dtype in _NUMERIC_DTYPES:
            checked[name] = value
        elif value.dtype.kind in "OSU":
            checked[name] = _as_bytes(value, where)
        else:
            # A float64 array would be sent as DT_DOUBLE, which a float32
            # signature refuses: the version would then fail to load.
            raise ValueError(
                "Argument `requests` must hold float32, int32, int64 or "
                f"string arrays; {where} has dtype {value.dtype}. Cast it to "
                "the signature's dtype (e.g. .astype('float32'))."
            )
    return checked


def _as_bytes(value, where):
    flat = value.ravel().tolist()
    for item in flat:
        if not isinstance(item, (bytes, str)):
            raise ValueError(
                "Argument `requests` must hold strings as bytes or str; "
                f"{where} holds {type(item).__name__} {item!r}."
            )
    encoded = np.empty(len(flat), object)
    encoded[:] = [
        item.encode("utf-8") if isinstance(item, str) else item for item in flat
    ]
    return encoded.reshape(value.shape)


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# === Wire format ===


def _varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number, payload):
    """A length-delimited field: strings, bytes and embedded messages."""
    return (
        _varint(number << 3 | _LENGTH_DELIMITED)
        + _varint(len(payload))
        + payload
    )


def _prediction_log(signature_name, model_name, inputs):
    """The serialized `PredictionLog` of one predict request."""
    # proto3 leaves fields at their default (empty strings) out.
    model_spec = b""
    if model_name:
        model_spec += _field(_MODEL_SPEC_NAME, model_name.encode("utf-8"))
    model_spec += _field(
        _MODEL_SPEC_SIGNATURE_NAME, signature_name.encode("utf-8")
    )
    request = _field(_PREDICT_REQUEST_MODEL_SPEC, model_spec)
    for name in sorted(inputs):
        tensor = tf.make_tensor_proto(inputs[name]).SerializeToString()
        entry = _field(_MAP_KEY, name.encode("utf-8")) + _field(
            _MAP_VALUE, tensor
        )
        request += _field(_PREDICT_REQUEST_INPUTS, entry)
    predict_log = _field(_PREDICT_LOG_REQUEST, request)
    return _field(_PREDICTION_LOG_PREDICT_LOG, predict_log)


def _read_varint(data, position):
    value = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position
        if shift >= 64:
            raise ValueError("varint longer than 10 bytes")


def _fields(data):
    """`{field number: [payloads]}` of a message; lengths checked.

    Length-delimited payloads are `bytes`; other wire types are skipped
    (none of the fields read here has one).
    """
    fields = {}
    position = 0
    while position < len(data):
        key, position = _read_varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            _, position = _read_varint(data, position)
        elif wire_type == _FIXED64:
            position += 8
        elif wire_type == _FIXED32:
            position += 4
        elif wire_type == _LENGTH_DELIMITED:
            length, position = _read_varint(data, position)
            if position + length > len(data):
                raise ValueError(f"field {number} runs past the message end")
            fields.setdefault(number, []).append(
                bytes(data[position : position + length])
            )
            position += length
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        if position > len(data):
            raise ValueError("truncated message")
    return fields


def _message(fields, number):
    # Occurrences of an embedded message merge, which for serialized
    # messages is concatenation (protobuf's own rule).
    return b"".join(fields.get(number, []))


def _string(fields, number):
    # Of a repeated singular scalar, the last occurrence wins.
    return fields[number][-1].decode("utf-8") if number in fields else ""


def _parse_prediction_log(record):
    """`(signature_name, {input name: serialized TensorProto})`."""
    log = _fields(record)
    if _PREDICTION_LOG_PREDICT_LOG not in log:
        raise ValueError(
            "not a predict_log (the only kind write_warmup_requests writes)"
        )
    predict_log = _fields(_message(log, _PREDICTION_LOG_PREDICT_LOG))
    request = _fields(_message(predict_log, _PREDICT_LOG_REQUEST))
    model_spec = _fields(_message(request, _PREDICT_REQUEST_MODEL_SPEC))
    inputs = {}
    for entry in request.get(_PREDICT_REQUEST_INPUTS, []):
        entry = _fields(entry)
        inputs[_string(entry, _MAP_KEY)] = _message(entry, _MAP_VALUE)
    return _string(model_spec, _MODEL_SPEC_SIGNATURE_NAME), inputs
