"""The dispatch rules of lstm_keras.dispatch: fast path first, then generic."""

import keras
import numpy as np
import pytest

import lstm_keras
from lstm_keras import dispatch


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
        last, outputs, states = dispatch.generic_lstm_sequence(
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
