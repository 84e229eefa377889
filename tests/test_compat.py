"""The private names of `lstm_keras.compat` are still where it expects them.

Each test imports the private name itself (not through `compat`), so that a
Keras, TensorFlow or KerasTuner release that moves one fails here, naming
it and the release it was checked against.
"""

import ast
import importlib
import importlib.util
import pathlib

import keras
import numpy as np
import pytest

from lstm_keras import compat

REPO = pathlib.Path(__file__).resolve().parents[1]
PRIVATE_PREFIXES = (
    "keras.src",
    "tensorflow.python",
    "tensorflow.lite.python",
    "keras_tuner.src",
)


def _skip_unless_usable(top_module, backend):
    if backend is not None and keras.backend.backend() != backend:
        pytest.skip(f"used on the {backend} backend only")
    if importlib.util.find_spec(top_module) is None:
        pytest.skip(f"{top_module} is not installed")


def _installed(top_module):
    module = importlib.import_module(top_module)
    return f"{top_module} {getattr(module, '__version__', '(unknown)')}"


@pytest.mark.parametrize("name", sorted(compat.PRIVATE_NAMES))
def test_private_name_resolves(name):
    entry = compat.PRIVATE_NAMES[name]
    top = entry.module.split(".")[0]
    _skip_unless_usable(top, entry.backend)
    moved = (
        f"`{entry.path}` is not in {_installed(top)}; lstm_keras.compat "
        f"checked it against {entry.checked}: update compat.{name}"
    )
    try:
        value = importlib.import_module(entry.module)
    except ImportError as error:
        pytest.fail(f"{moved} ({error})")
    if entry.attribute is not None:
        assert hasattr(value, entry.attribute), moved
        value = getattr(value, entry.attribute)
    for attribute in entry.uses:
        assert hasattr(value, attribute), (
            f"`{entry.path}.{attribute}` is not in {_installed(top)}; "
            f"lstm_keras.compat checked it against {entry.checked}"
        )
    assert getattr(compat, name) is value


def _built_adam():
    optimizer = keras.optimizers.Adam(use_ema=True)
    optimizer.build([keras.Variable(np.zeros(2, "float32"))])
    return optimizer


def _tracking_archive():
    layer = keras.layers.Dense(1)
    layer.build((None, 2))
    archive = keras.export.ExportArchive()
    archive.track(layer)
    return archive


def _tflite_keras_converter():
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(keras.Sequential())


def _keras_tuner(path):
    def owner():
        keras_tuner = importlib.import_module("keras_tuner")
        if path == "RandomSearchOracle()":
            return keras_tuner.oracles.RandomSearchOracle(
                objective="val_loss", max_trials=1
            )
        return getattr(keras_tuner, path)

    return owner


# The owners of `compat.PRIVATE_ATTRIBUTES`: a public class, or an object
# that carries the attribute once it is made.
OWNERS = {
    "keras.layers.Layer": lambda: keras.layers.Layer,
    "keras.Model": lambda: keras.Model,
    "keras.optimizers.Adam": lambda: keras.optimizers.Adam,
    "keras.optimizers.Adam(use_ema=True), built": _built_adam,
    "keras.export.ExportArchive()": lambda: keras.export.ExportArchive(),
    "keras.export.ExportArchive(), tracking a layer": _tracking_archive,
    compat.TFLITE_KERAS_CONVERTER: _tflite_keras_converter,
    "keras_tuner.Oracle": _keras_tuner("Oracle"),
    "keras_tuner.Tuner": _keras_tuner("Tuner"),
    "keras_tuner.oracles.RandomSearchOracle()": _keras_tuner(
        "RandomSearchOracle()"
    ),
}


@pytest.mark.parametrize(
    "entry",
    compat.PRIVATE_ATTRIBUTES,
    ids=lambda entry: f"{entry.owner}.{entry.attribute}",
)
def test_private_attribute_is_there(entry):
    top = "keras_tuner" if entry.owner.startswith("keras_tuner") else "keras"
    _skip_unless_usable(top, entry.backend)
    assert entry.owner in OWNERS, f"no owner for {entry.owner!r} in OWNERS"
    owner = OWNERS[entry.owner]()
    package = entry.checked.split()[0].replace("-", "_")
    assert hasattr(owner, entry.attribute), (
        f"{entry.owner} has no `{entry.attribute}` in "
        f"{_installed(package)}; lstm_keras.compat checked it against "
        f"{entry.checked}"
    )


def test_a_moved_name_fails_naming_it_and_its_checked_release(monkeypatch):
    entry = compat.PrivateName(
        "keras.src.backend", "no_such_name", checked="keras 3.15.1"
    )
    monkeypatch.setitem(compat.PRIVATE_NAMES, "moved", entry)
    with pytest.raises(ImportError, match=r"keras\.src\.backend\.no_such"):
        compat.resolve("moved")
    with pytest.raises(ImportError, match="checked against keras 3.15.1"):
        from lstm_keras.compat import moved  # noqa: F401


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        compat.no_such_name  # noqa: B018


def _private_imports(path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name.startswith(PRIVATE_PREFIXES):
                yield f"{path.relative_to(REPO)}:{node.lineno}: {name}"


def test_private_modules_are_imported_by_compat_only():
    folders = ("lstm_keras", "training", "tuning", "tests", "benchmarks")
    found = [
        line
        for folder in folders
        for path in sorted((REPO / folder).rglob("*.py"))
        if path != REPO / "lstm_keras" / "compat.py"
        for line in _private_imports(path)
    ]
    assert not found, (
        "import private modules through lstm_keras.compat, which notes "
        f"the release each was checked against: {found}"
    )
