"""The dispatch rules of lstm_keras.dispatch: fast path first, then generic."""

import ast
import pathlib

import keras
import numpy as np
import pytest

import lstm_keras
from lstm_keras import dispatch
from lstm_keras import generic_loop

PACKAGE = pathlib.Path(lstm_keras.__file__).parent


@pytest.fixture
def fast_path_slot():
    """Restores the registry after a test registers a fake fast path."""
    saved = dict(dispatch._FAST_PATHS)
    yield
    dispatch._FAST_PATHS.clear()
    dispatch._FAST_PATHS.update(saved)


def _inputs():
    return np.random.default_rng(1).normal(size=(2, 4, 3)).astype("float32")


def _generic_outputs(layer, x):
    dispatch._FAST_PATHS.pop(keras.backend.backend(), None)
    return keras.ops.convert_to_numpy(layer(x))


def test_registered_fast_path_is_used_when_it_accepts(fast_path_slot):
    layer = lstm_keras.LSTM(5)
    x = _inputs()
    expected = _generic_outputs(layer, x)
    calls = []

    def doubling_fast_path(layer, sequences, initial_state, mask, training):
        calls.append(training)
        last, outputs, states = generic_loop.generic_lstm_sequence(
            layer, sequences, initial_state, mask, training
        )
        return 2 * last, outputs, states

    dispatch.register_fast_path(keras.backend.backend(), doubling_fast_path)
    got = keras.ops.convert_to_numpy(layer(x))
    assert calls, "the registered fast path was not called"
    np.testing.assert_allclose(got, 2 * expected, rtol=1e-6)


def test_declining_fast_path_falls_back_to_generic(fast_path_slot):
    layer = lstm_keras.LSTM(5)
    x = _inputs()
    expected = _generic_outputs(layer, x)

    def declining_fast_path(*args):
        raise NotImplementedError("not this configuration")

    dispatch.register_fast_path(keras.backend.backend(), declining_fast_path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-6
    )


def test_use_cudnn_false_skips_fast_paths(fast_path_slot):
    layer = lstm_keras.LSTM(5, use_cudnn=False)
    x = _inputs()
    expected = _generic_outputs(layer, x)

    def failing_fast_path(*args):
        raise AssertionError("use_cudnn=False must not reach a fast path")

    dispatch.register_fast_path(keras.backend.backend(), failing_fast_path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-6
    )


def test_use_cudnn_true_without_an_accepting_fast_path_raises(fast_path_slot):
    dispatch._FAST_PATHS.pop(keras.backend.backend(), None)
    with pytest.raises(ValueError, match="use_cudnn=True"):
        lstm_keras.LSTM(5, use_cudnn=True)(_inputs())


def test_fast_paths_are_tried_in_registered_order(fast_path_slot):
    layer = lstm_keras.LSTM(5)
    x = _inputs()
    expected = _generic_outputs(layer, x)
    tried = []

    def declining(*args):
        tried.append("declining")
        raise NotImplementedError("not this configuration")

    def scaling(factor):
        def fast_path(layer, sequences, initial_state, mask, training):
            tried.append(factor)
            last, outputs, states = generic_loop.generic_lstm_sequence(
                layer, sequences, initial_state, mask, training
            )
            return factor * last, outputs, states

        return fast_path

    backend = keras.backend.backend()
    dispatch.register_fast_path(backend, declining, scaling(2), scaling(3))
    got = keras.ops.convert_to_numpy(layer(x))
    # The first declined, the second took the call, the third never ran.
    assert tried == ["declining", 2]
    np.testing.assert_allclose(got, 2 * expected, rtol=1e-6)
    assert dispatch.registered_fast_paths(backend)[0] is declining


def test_registering_again_replaces_the_backends_fast_paths(fast_path_slot):
    backend = keras.backend.backend()

    def first(*args):
        raise AssertionError("replaced, so never called")

    def second(*args):
        raise NotImplementedError("not this configuration")

    dispatch.register_fast_path(backend, first, first)
    dispatch.register_fast_path(backend, second)
    assert dispatch.registered_fast_paths(backend) == (second,)
    layer = lstm_keras.LSTM(5)
    x = _inputs()
    expected = _generic_outputs(layer, x)  # (empties the registry)
    dispatch.register_fast_path(backend, second)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-6
    )


def test_register_fast_path_rejects_what_is_not_callable():
    with pytest.raises(TypeError, match="fns"):
        dispatch.register_fast_path("jax", "not a function")


def test_builtin_fast_paths_of_the_active_backend():
    names = [
        f"{fn.__module__}.{fn.__name__}"
        for fn in dispatch.registered_fast_paths()
    ]
    prefix = "lstm_keras.backends."
    assert (
        names
        == {
            "tensorflow": [
                prefix + "tensorflow.cudnn.lstm_sequence",
                prefix + "tensorflow.fast_path.lstm_sequence",
                prefix + "tensorflow.litert.lstm_sequence",
                prefix + "tensorflow.serving.lstm_sequence",
            ],
            "jax": [prefix + "jax.cudnn.lstm_sequence"],
            "torch": [prefix + "torch.fast_path.lstm_sequence"],
        }[keras.backend.backend()]
    )


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("go_backwards", [False, True])
def test_generic_path_with_a_mask_and_an_unknown_length(go_backwards):
    # Served graphs take any text length, so the generic loop is traced with
    # an unknown number of timesteps; it must give the known-length result.
    import tensorflow as tf

    x = np.random.default_rng(2).normal(size=(3, 6, 4)).astype("float32")
    mask = np.ones((3, 6), bool)
    mask[0, 4:] = False
    mask[2, :2] = False
    layer = lstm_keras.LSTM(5, return_sequences=True, go_backwards=go_backwards)
    with dispatch.fast_paths_disabled():
        expected = layer(x, mask=mask).numpy()
        traced = tf.function(
            lambda x, mask: layer(x, mask=mask),
            input_signature=[
                tf.TensorSpec((None, None, 4), tf.float32),
                tf.TensorSpec((None, None), tf.bool),
            ],
        )
        np.testing.assert_allclose(
            traced(x, mask).numpy(), expected, rtol=1e-6, atol=1e-6
        )


def _imported_modules(path):
    """The dotted names a module imports, function-local imports included;
    for `from a import b`, both `a` and `a.b` (`b` may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = path.relative_to(PACKAGE.parent).parent.parts
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _module_file(name):
    """The file of module `name` inside `lstm_keras`, or `None`."""
    parts = name.split(".")
    if parts[0] != "lstm_keras":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def test_no_backend_module_imports_dispatch():
    backends = sorted((PACKAGE / "backends").rglob("*.py"))
    assert backends
    offenders = [
        str(path.relative_to(PACKAGE.parent))
        for path in backends
        if "lstm_keras.dispatch" in _imported_modules(path)
    ]
    assert not offenders, (
        f"{offenders} import lstm_keras.dispatch; backends take what they "
        "share from lstm_keras.generic_loop and "
        "lstm_keras.fast_path_conditions"
    )


def _package_modules(names):
    # `lstm_keras` itself imports dispatch, and has begun to run before
    # dispatch does, so it does not count as imported by dispatch.
    return [n for n in names if n != "lstm_keras" and _module_file(n)]


def test_nothing_dispatch_imports_imports_it_back():
    seen = set()
    pending = _package_modules(_imported_modules(PACKAGE / "dispatch.py"))
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        imported = _imported_modules(_module_file(name))
        assert "lstm_keras.dispatch" not in imported, (
            f"{name}, which lstm_keras.dispatch imports, imports it back"
        )
        pending.extend(_package_modules(imported))
    assert "lstm_keras.generic_loop" in seen
    assert "lstm_keras.backends.tensorflow.cudnn" in seen
