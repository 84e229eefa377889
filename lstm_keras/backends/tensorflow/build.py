"""Builds and loads the TensorFlow custom ops in `lstm_kernels.cc`.

The ops (`lstm_kernels.cc` and the headers beside it: `packed_gemm.h`,
`lstm_step.h`, `shape_checks.h`) are compiled on first use with the C++
compiler (`$CXX`, else `g++`) against the headers of the installed
TensorFlow, with `-O3 -march=native` (they are built on the machine that
runs them), and cached in `$LSTM_KERAS_CACHE_DIR` (default
`~/.cache/lstm_keras`) under a name keyed by the sources (headers
included), the TensorFlow version, the compiler command and the CPU's
features, so a change to any of them rebuilds (a home directory shared by
machines with different CPUs never loads a library built for another). A
file lock keeps concurrent processes (pytest workers, multi-worker
training) from racing, and the library is renamed into place atomically.
When the build or the load fails, `load_kernels()` warns once and returns
`None`, and the layer falls back to the generic path.

To build ahead of time (the command line is `training/build_ops.py`):

    python -m training.build_ops          # build, print path
    python -m training.build_ops --force  # rebuild
"""

import fcntl
import functools
import glob
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
import warnings

SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))
# The one file compiled: the ops, which include the headers beside them.
SOURCE = os.path.join(SOURCE_DIR, "lstm_kernels.cc")
HEADERS = tuple(sorted(glob.glob(os.path.join(SOURCE_DIR, "*.h"))))
OPTIMIZATION_FLAGS = ("-O3", "-march=native", "-fPIC", "-shared")
# On CPUs with AVX512-FP16 (Sapphire Rapids and later), `-march=native`
# turns on Eigen's half-precision packet math, and the copy of Eigen in
# TensorFlow 2.21's headers does not compile there with GCC 12
# (`PacketMathFP16.h`: `predux_half_dowto4`). The ops use no half-precision
# arithmetic, so the extension is turned off where the compiler knows it.
OPTIONAL_FLAGS = ("-mno-avx512fp16",)


class BuildError(RuntimeError):
    """The custom ops could not be compiled or loaded."""


def cache_dir():
    """Returns the directory holding built libraries (not created here)."""
    configured = os.environ.get("LSTM_KERAS_CACHE_DIR")
    if configured:
        return configured
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return os.path.join(base, "lstm_keras")


def compile_command(output_path):
    """The compiler command line that builds the library at `output_path`."""
    import tensorflow as tf

    compiler = shlex.split(os.environ.get("CXX", "g++"))
    return [
        *compiler,
        *OPTIMIZATION_FLAGS,
        *accepted_flags(tuple(compiler), OPTIONAL_FLAGS),
        f"-I{SOURCE_DIR}",
        SOURCE,
        "-o",
        output_path,
        *tf.sysconfig.get_compile_flags(),
        *tf.sysconfig.get_link_flags(),
    ]


@functools.cache
def accepted_flags(compiler, flags):
    """The `flags` that `compiler` accepts (each tried on an empty file)."""
    accepted = []
    for flag in flags:
        try:
            result = subprocess.run(
                [*compiler, flag, "-x", "c++", "-E", os.devnull],
                capture_output=True,
                check=False,
            )
        except OSError:
            return ()
        if result.returncode == 0:
            accepted.append(flag)
    return tuple(accepted)


def cpu_features():
    """The CPU's model and feature flags, which `-march=native` compiles for."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            lines = cpuinfo.read().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    wanted = ("model name", "flags")
    return "\n".join(sorted({ln for ln in lines if ln.startswith(wanted)}))


def library_path():
    """The cache path for these sources, TensorFlow, compiler and CPU."""
    import tensorflow as tf

    digest = hashlib.sha256()
    for path in (SOURCE, *HEADERS):
        with open(path, "rb") as source:
            digest.update(os.path.basename(path).encode())
            digest.update(source.read())
    digest.update(tf.__version__.encode())
    digest.update(" ".join(compile_command("{out}")).encode())
    digest.update(cpu_features().encode())
    return os.path.join(
        cache_dir(), f"lstm_kernels-{digest.hexdigest()[:16]}.so"
    )


def build(force=False):
    """Compiles the ops unless a cached library exists; returns its path.

    Args:
        force: Rebuild even when the cached library exists. Defaults to
            `False`.

    Raises:
        BuildError: the compiler is missing or failed.
    """
    path = library_path()
    if os.path.exists(path) and not force:
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Another process may have built it while this one waited.
        if os.path.exists(path) and not force:
            return path
        fd, partial = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
        os.close(fd)
        try:
            command = compile_command(partial)
            try:
                result = subprocess.run(
                    command, capture_output=True, text=True, check=False
                )
            except OSError as error:
                raise BuildError(
                    f"could not run the compiler {command[0]!r}: {error}"
                ) from error
            if result.returncode != 0:
                raise BuildError(
                    f"compiling {SOURCE} failed ({shlex.join(command)}):\n"
                    + result.stderr[-4000:]
                )
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    return path


@functools.cache
def load_kernels():
    """Returns the loaded op module, or `None` (with one warning) on failure.

    Set `LSTM_KERAS_FAST_PATH=0` to skip building altogether, and
    `LSTM_KERAS_GEMM_ISA` to one of `GEMM_ISAS` to run the products on that
    micro-kernel instead of the best the CPU has (`set_gemm_isa`).
    """
    import tensorflow as tf

    try:
        kernels = tf.load_op_library(build())
    except (BuildError, OSError, tf.errors.OpError) as error:
        warnings.warn(
            "lstm_keras: the TensorFlow fast path is unavailable, using the "
            f"generic path instead. Reason: {error}",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    gemm_isa_from_environment()
    return kernels


# The micro-kernels of the ops' matrix products (packed_gemm.h's GemmIsa),
# in the order of their numbers there.
GEMM_ISAS = ("portable", "avx2", "avx512")


@functools.cache
def _library():
    """The built library's C functions (the one `load_kernels` loaded)."""
    import ctypes

    # dlopen of a loaded library's path returns that library, so these
    # functions see and set the state the ops use.
    return ctypes.CDLL(build())


def supported_gemm_isas():
    """The micro-kernels this CPU can run, a subset of `GEMM_ISAS`."""
    library = _library()
    return tuple(
        name
        for number, name in enumerate(GEMM_ISAS)
        if library.lstm_keras_gemm_isa_supported(number)
    )


def gemm_isa():
    """The micro-kernel the ops' products run on now, one of `GEMM_ISAS`."""
    return GEMM_ISAS[_library().lstm_keras_gemm_isa()]


def gemm_isa_from_environment():
    """Applies `LSTM_KERAS_GEMM_ISA`, if set, with `set_gemm_isa`."""
    requested = os.environ.get("LSTM_KERAS_GEMM_ISA")
    if requested:
        set_gemm_isa(requested)


def set_gemm_isa(name):
    """Runs the ops' products on micro-kernel `name` from now on.

    Args:
        name: One of `GEMM_ISAS`, or `None` (or `"auto"`) for the best the
            CPU has, the default.

    Raises:
        ValueError: `name` is not a micro-kernel, or the CPU cannot run it.
    """
    if name in (None, "auto"):
        _library().lstm_keras_set_gemm_isa(-1)
        return
    if name not in GEMM_ISAS:
        raise ValueError(
            f"Received an invalid value for the GEMM micro-kernel "
            f"(LSTM_KERAS_GEMM_ISA), expected one of {GEMM_ISAS} or 'auto', "
            f"got {name!r}"
        )
    if not _library().lstm_keras_set_gemm_isa(GEMM_ISAS.index(name)):
        raise ValueError(
            f"This CPU cannot run the {name!r} GEMM micro-kernel "
            f"(LSTM_KERAS_GEMM_ISA); it can run {supported_gemm_isas()}"
        )
