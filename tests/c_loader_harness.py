"""Serving a SavedModel with no Python: TensorFlow's C API, from a test.

TF Serving loads a SavedModel with TensorFlow's C++ session loader
(`LoadSavedModel`, the tag `serve`) and runs a signature by feeding and
fetching the graph tensors its `signature_def` names. The C API exposes the
same loader (`TF_LoadSessionFromSavedModel`, `TF_SessionRun`), so
`c_loader/serve_saved_model.c`, linked against the pip wheel's
`libtensorflow_cc.so.2` and `libtensorflow_framework.so.2`, serves an
export the way a server would: no Python, no `lstm_keras`, no Keras
objects, only the graph and the variables' checkpoint.

- `build()`: compiles the program once per TensorFlow version and source
  (cached under `~/.cache/lstm_keras/c_loader/`); returns its path.
- `serve(saved_model_dir, inputs, signature)`: checks the request against
  the signature_def (input names and dtypes, as TF Serving's request
  validation does), runs the program in a subprocess and returns the
  signature's outputs by name.
- `run(saved_model_dir, feeds, fetches)`: the program on raw graph tensor
  names, with no checks of its own (what TensorFlow itself says).

The request and response files' binary format is documented at the top of
`c_loader/serve_saved_model.c`.
"""

import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
import unittest

import numpy as np

SOURCE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "c_loader",
    "serve_saved_model.c",
)
REQUEST_MAGIC = b"TFCREQ01"
RESPONSE_MAGIC = b"TFCRES01"
# Loading a SavedModel and running a small signature takes seconds; a run
# past this is a hang.
TIMEOUT = 120

# DataType proto numbers (equal to `TF_DataType`'s) and numpy dtypes.
DT_STRING = 7
DTYPES = {
    1: np.dtype("float32"),
    2: np.dtype("float64"),
    3: np.dtype("int32"),
    4: np.dtype("uint8"),
    5: np.dtype("int16"),
    6: np.dtype("int8"),
    9: np.dtype("int64"),
    10: np.dtype("bool"),
    17: np.dtype("uint16"),
    19: np.dtype("float16"),
    22: np.dtype("uint32"),
    23: np.dtype("uint64"),
}
NUMBERS = {dtype: number for number, dtype in DTYPES.items()}
NAMES = {**{n: d.name for n, d in DTYPES.items()}, DT_STRING: "string"}


class CLoaderError(RuntimeError):
    """The C program failed: `message` is its one-line error (TensorFlow's
    `TF_Message`, or the program's own), `returncode` its exit status (1
    for an error it reported; anything else is a crash)."""

    def __init__(self, message, returncode=1, stderr=""):
        super().__init__(message)
        self.message = message
        self.returncode = returncode
        self.stderr = stderr


class RequestError(ValueError):
    """A request that does not match the signature_def (an unknown or
    missing input, a wrong dtype): refused before the program runs."""


def _compiler():
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return os.path.join(base, "lstm_keras", "c_loader")


def build():
    """Compiles `serve_saved_model.c` against the installed TensorFlow.

    The binary is cached per TensorFlow version, library folder and source
    hash, so a session compiles it at most once (about 10 seconds) and
    later sessions not at all. It is linked to both of the wheel's shared
    libraries with an rpath to their folder, so it runs with an empty
    environment.

    Returns:
        The binary's path.

    Raises:
        unittest.SkipTest: when no C compiler is installed (pytest reports
            the test as skipped).
        RuntimeError: when the compiler fails, with its output.
    """
    compiler = _compiler()
    if compiler is None:
        raise unittest.SkipTest(
            "no C compiler (cc, gcc or clang) to build the C API loader"
        )
    import tensorflow as tf

    include, lib = tf.sysconfig.get_include(), tf.sysconfig.get_lib()
    with open(SOURCE, "rb") as f:
        source = f.read()
    key = hashlib.sha256(source + lib.encode() + compiler.encode())
    folder = os.path.join(_cache_dir(), f"tf-{tf.__version__}")
    binary = os.path.join(folder, f"serve_saved_model-{key.hexdigest()[:16]}")
    if os.path.exists(binary):
        return binary
    os.makedirs(folder, exist_ok=True)
    # Compiled to a temporary name and renamed: concurrent sessions (or
    # pytest-xdist workers) never run a half-written binary.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".build-")
    os.close(fd)
    command = [
        compiler,
        "-std=c99",
        "-O1",
        "-Wall",
        "-Werror",
        f"-I{include}",
        SOURCE,
        "-o",
        tmp,
        f"-L{lib}",
        "-l:libtensorflow_cc.so.2",
        "-l:libtensorflow_framework.so.2",
        f"-Wl,-rpath,{lib}",
    ]
    try:
        compiled = subprocess.run(
            command, capture_output=True, text=True, timeout=300, check=False
        )
        if compiled.returncode != 0:
            raise RuntimeError(
                f"Compiling {SOURCE} failed:\n{' '.join(command)}\n"
                f"{compiled.stdout}{compiled.stderr}"
            )
        os.replace(tmp, binary)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return binary


# ---- The request and response files. ----


def _string(value):
    data = value.encode() if isinstance(value, str) else bytes(value)
    return struct.pack("<I", len(data)) + data


def _is_string(array):
    return array.dtype.kind in "SUO"


def _encode_tensor(array):
    array = np.asarray(array)
    if _is_string(array):
        dtype = DT_STRING
    elif array.dtype in NUMBERS:
        dtype = NUMBERS[array.dtype]
    else:
        raise RequestError(f"dtype {array.dtype} cannot be sent")
    parts = [struct.pack("<II", dtype, array.ndim)]
    parts.append(struct.pack(f"<{array.ndim}q", *array.shape))
    if dtype == DT_STRING:
        for item in array.reshape(-1):
            if isinstance(item, str):
                item = item.encode()
            elif not isinstance(item, bytes):
                raise RequestError(
                    f"a string tensor holds {type(item).__name__} {item!r}"
                )
            parts.append(struct.pack("<Q", len(item)) + item)
    else:
        data = np.ascontiguousarray(array, array.dtype.newbyteorder("<"))
        parts.append(struct.pack("<Q", data.nbytes) + data.tobytes())
    return b"".join(parts)


def _encode_request(feeds, fetches):
    parts = [REQUEST_MAGIC, struct.pack("<I", len(feeds))]
    for name, array in feeds.items():
        parts.append(_string(name) + _encode_tensor(array))
    parts.append(struct.pack("<I", len(fetches)))
    parts.extend(_string(name) for name in fetches)
    return b"".join(parts)


def _decode_response(data, count):
    if data[:8] != RESPONSE_MAGIC:
        raise CLoaderError("the response file has a bad magic")
    pos = 8
    (n,) = struct.unpack_from("<I", data, pos)
    pos += 4
    if n != count:
        raise CLoaderError(f"the response holds {n} tensors, not {count}")
    tensors = []
    for _ in range(n):
        dtype, rank = struct.unpack_from("<II", data, pos)
        pos += 8
        shape = struct.unpack_from(f"<{rank}q", data, pos)
        pos += 8 * rank
        size = int(np.prod(shape, dtype=np.int64))
        if dtype == DT_STRING:
            items = []
            for _ in range(size):
                (length,) = struct.unpack_from("<Q", data, pos)
                pos += 8
                items.append(data[pos : pos + length])
                pos += length
            array = np.empty(size, object)
            array[:] = items
            tensors.append(array.reshape(shape))
            continue
        if dtype not in DTYPES:
            raise CLoaderError(f"the response holds dtype {dtype}")
        (n_bytes,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        array = np.frombuffer(
            data[pos : pos + n_bytes], DTYPES[dtype].newbyteorder("<")
        )
        pos += n_bytes
        tensors.append(array.astype(DTYPES[dtype]).reshape(shape))
    if pos != len(data):
        raise CLoaderError(f"the response has {len(data) - pos} extra bytes")
    return tensors


def _environment():
    """No PYTHONPATH, no PYTHONHOME, nothing to find Python by: the loader
    is a C binary that needs only its rpath."""
    return {
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        "LC_ALL": "C",
    }


def run(saved_model_dir, feeds, fetches, timeout=TIMEOUT, binary=None):
    """Runs the C program on graph tensors, without checks of its own.

    Args:
        saved_model_dir: A SavedModel folder (tag `serve`).
        feeds: Dict of graph tensor names (`op:index`) to numpy arrays
            (strings as object, bytes or str arrays).
        fetches: Sequence of graph tensor names.
        timeout: Seconds before the run counts as a hang.
        binary: The compiled program, or `None` for `build()`.

    Returns:
        A list of numpy arrays, one per fetch (strings as object arrays of
        `bytes`).

    Raises:
        CLoaderError: the program's `error: <message>` line, or a crash.
        subprocess.TimeoutExpired: a run past `timeout` (killed).
    """
    binary = binary or build()
    fetches = list(fetches)
    with tempfile.TemporaryDirectory(prefix="c-loader-") as tmp:
        request = os.path.join(tmp, "request.bin")
        response = os.path.join(tmp, "response.bin")
        with open(request, "wb") as f:
            f.write(_encode_request(feeds, fetches))
        ran = subprocess.run(
            [binary, os.fspath(saved_model_dir), request, response],
            capture_output=True,
            text=True,
            errors="replace",
            env=_environment(),
            cwd=tmp,
            timeout=timeout,
            check=False,
        )
        if ran.returncode != 0:
            errors = [
                line[len("error: ") :]
                for line in ran.stderr.splitlines()
                if line.startswith("error: ")
            ]
            if ran.returncode == 1 and errors:
                raise CLoaderError(errors[-1], ran.returncode, ran.stderr)
            raise CLoaderError(
                f"the C loader exited with status {ran.returncode} "
                f"(a negative status is a signal):\n{ran.stderr[-3000:]}",
                ran.returncode,
                ran.stderr,
            )
        with open(response, "rb") as f:
            return _decode_response(f.read(), len(fetches))


# ---- Signatures. ----


def meta_graph(saved_model_dir):
    """The `MetaGraphDef` proto tagged `serve` of `saved_model.pb`, the one
    TF Serving loads."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for graph in saved_model.meta_graphs:
        if "serve" in graph.meta_info_def.tags:
            return graph
    raise RequestError(
        f"{os.fspath(saved_model_dir)!r} has no meta graph tagged 'serve'"
    )


def signature_def(saved_model_dir, signature="serving_default"):
    """The `SignatureDef` proto of the `serve` meta graph, as TF Serving
    reads it from `saved_model.pb`."""
    signatures = meta_graph(saved_model_dir).signature_def
    if signature not in signatures:
        raise RequestError(
            f"{os.fspath(saved_model_dir)!r} has no signature "
            f"{signature!r}; it has {sorted(signatures)}"
        )
    return signatures[signature]


def check_request(signature, inputs):
    """Refuses `inputs` whose names or dtypes do not match `signature`.

    As TF Serving does before it runs a signature: each input must be one
    of the signature's, each of the signature's must be given, and each
    must have the signature's dtype (no conversion). Shapes are left to
    the graph.

    Raises:
        RequestError: naming the input.
    """
    expected = signature.inputs
    unknown = sorted(set(inputs) - set(expected))
    if unknown:
        raise RequestError(
            f"input {unknown[0]!r}: not an input of the signature; it has "
            f"{sorted(expected)}"
        )
    missing = sorted(set(expected) - set(inputs))
    if missing:
        raise RequestError(f"input {missing[0]!r}: missing from the request")
    for name, value in inputs.items():
        array = np.asarray(value)
        want = expected[name].dtype
        if _is_string(array):
            got = "string"
        else:
            got = NAMES.get(NUMBERS.get(array.dtype), array.dtype.name)
        if got != NAMES.get(want, f"DataType {want}"):
            raise RequestError(
                f"input {name!r}: expected "
                f"{NAMES.get(want, f'DataType {want}')}, got {got}"
            )


def serve(
    saved_model_dir,
    inputs,
    signature="serving_default",
    timeout=TIMEOUT,
    binary=None,
):
    """Runs a signature through the C loader, as TF Serving would.

    Args:
        saved_model_dir: A SavedModel folder (tag `serve`).
        inputs: Dict of the signature's input names to numpy arrays
            (strings as object, bytes or str arrays).
        signature: The signature's name. Defaults to `"serving_default"`.
        timeout: Seconds before the run counts as a hang.
        binary: The compiled program, or `None` for `build()`.

    Returns:
        A dict of the signature's output names to numpy arrays (strings as
        object arrays of `bytes`, as `tf.Tensor.numpy()` gives them).

    Raises:
        RequestError: an input that is unknown, missing or of another
            dtype than the signature's (nothing is run).
        CLoaderError: the program's `error: <message>` (TensorFlow's, for
            a shape the graph refuses), or a crash.
    """
    definition = signature_def(saved_model_dir, signature)
    check_request(definition, inputs)
    feeds = {
        definition.inputs[name].name: np.asarray(value)
        for name, value in inputs.items()
    }
    names = sorted(definition.outputs)
    fetches = [definition.outputs[name].name for name in names]
    values = run(saved_model_dir, feeds, fetches, timeout, binary)
    return dict(zip(names, values, strict=True))
