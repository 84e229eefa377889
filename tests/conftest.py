"""Shared test settings: backend markers, test order, determinism."""

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()


# Modules of long tests (subprocesses, searches, training runs): run first,
# so that under `-n 2` neither worker is left with them at the end while
# the other idles.
LONG_MODULES = (
    "test_tuning_search.py",
    "test_training_command.py",
    "test_distributed.py",
)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name not in LONG_MODULES)
    skip_tf = pytest.mark.skip(
        reason=f"needs the TensorFlow backend (running on {BACKEND})"
    )
    for item in items:
        if "tensorflow_only" in item.keywords and BACKEND != "tensorflow":
            item.add_marker(skip_tf)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from float32, no mixed precision, seeded RNGs."""
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")
    # Without the full `gc.collect()` that clear_session runs by default:
    # with TensorFlow loaded it takes about 0.4 s, which over a thousand
    # tests was a third of the suite's time. Python's own collector still
    # frees the old models.
    keras.backend.clear_session(free_memory=False)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
