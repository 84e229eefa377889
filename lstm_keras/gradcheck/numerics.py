"""Finite differences, error measures and float64 arithmetic on every backend.

`numerical_gradients` estimates gradients by central finite differences of
any scalar function of NumPy arrays; `max_errors` measures how far a computed
tensor is from a reference one (normwise, see the package overview); and
`float64_mode` lifts the two obstacles that keep a float64 Keras layer from
computing in float64 on JAX and torch. None of them knows about the LSTM.
"""

import contextlib

import keras
import numpy as np

from lstm_keras.lstm_cell import check_positive_int

_TINY = np.finfo(np.float64).tiny


def numerical_gradients(
    loss_fn, values, epsilon=1e-6, max_entries=None, seed=0
):
    """Central finite differences of a scalar function of several arrays.

    Each checked entry `v[k]` gets
    `(loss(v[k] + epsilon) - loss(v[k] - epsilon)) / (2 * epsilon)`, all
    other entries held fixed; the arrays are copied, never modified.

    Args:
        loss_fn: Callable taking a dict `{name: float64 array}` shaped like
            `values` and returning a float.
        values: Dict `{name: array}` of the point to differentiate at.
        epsilon: Positive float step. Defaults to `1e-6`, near the best
            trade-off between truncation (`epsilon**2`) and rounding
            (`1e-16 / epsilon`) errors in float64.
        max_entries: Optional positive int: check at most this many entries
            per array, drawn at random without replacement. Defaults to
            `None` (every entry).
        seed: Integer seed for that draw. Defaults to `0`.

    Returns:
        A dict `{name: (flat_indices, gradient_values)}`: the flat indices
        checked (into `array.ravel()`) and the estimated gradient there.

    Example:

    >>> fd = numerical_gradients(
    ...     lambda v: float(np.sum(v["a"] ** 2)), {"a": np.array([1.0, 2.0])})
    >>> np.round(fd["a"][1], 6)
    array([2., 4.])
    """
    if not callable(loss_fn):
        raise ValueError(
            f"Argument `loss_fn` must be callable; got {loss_fn!r}."
        )
    if not epsilon > 0:
        raise ValueError(
            f"Argument `epsilon` must be a positive float; got {epsilon!r}."
        )
    if max_entries is not None:
        check_positive_int("max_entries", max_entries)
    rng = np.random.default_rng(seed)
    point = {
        name: np.array(value, dtype=np.float64, copy=True)
        for name, value in values.items()
    }
    results = {}
    for name, array in point.items():
        size = array.size
        if max_entries is None or max_entries >= size:
            indices = np.arange(size)
        else:
            indices = np.sort(rng.choice(size, size=max_entries, replace=False))
        flat = array.reshape(-1)  # a view: edits show in `point[name]`
        estimates = np.empty(len(indices))
        for n, k in enumerate(indices):
            original = flat[k]
            flat[k] = original + epsilon
            loss_plus = float(loss_fn(point))
            flat[k] = original - epsilon
            loss_minus = float(loss_fn(point))
            flat[k] = original
            estimates[n] = (loss_plus - loss_minus) / (2.0 * epsilon)
        results[name] = (indices, estimates)
    return results


def max_errors(computed, reference):
    """Normwise errors of `computed` against `reference`.

    Args:
        computed: Array-like, the values under test.
        reference: Array-like of the same shape, the trusted values.

    Returns:
        A tuple `(abs_error, rel_error)`: `max|computed - reference|` and that
        divided by `max(max|reference|, tiny)`. NaN anywhere in `computed`
        makes both NaN (so any threshold check fails).

    Example:

    >>> max_errors([1.0, 2.0], [1.0, 2.5])
    (0.5, 0.2)
    """
    a = np.asarray(computed, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(
            f"Arguments `computed` {a.shape} and `reference` {b.shape} must "
            "have the same shape."
        )
    if a.size == 0:
        return 0.0, 0.0
    diff = np.abs(a - b)
    abs_error = float(np.nan if np.isnan(diff).any() else diff.max())
    scale = max(float(np.max(np.abs(b))), _TINY)
    return abs_error, abs_error / scale


@contextlib.contextmanager
def float64_mode(enabled=True):
    """Makes float64 layers compute in float64 on every backend, while active.

    Two things stand between a float64 Keras layer and float64 arithmetic
    outside TensorFlow, and this context manager lifts both for its duration,
    restoring them on exit:

    - JAX creates float32 arrays unless `jax_enable_x64` is on;
    - Keras 3 (through at least 3.15) resolves `result_type(float64,
      float64)` to float32 on every backend but TensorFlow, mimicking JAX's
      default, so on JAX and torch `ops.matmul` (and, on JAX, `ops.tanh`) of
      float64 tensors compute in float32 even inside a float64 layer
      (keras-team/keras issues #23223 and #23704).

    `check_gradients` runs its float64 checks inside it. Layers built or
    arrays made inside keep their float64 dtype afterwards, but Keras ops
    called on them outside demote to float32 again on JAX and torch.

    Args:
        enabled: Boolean; with `False` this does nothing. Defaults to
            `True`.

    Yields:
        Whether anything had to be changed (`False` on TensorFlow).

    Example:

    >>> with float64_mode():
    ...     layer = lstm_keras.LSTM(4, dtype="float64")
    ...     y = layer(np.zeros((2, 5, 3)))
    >>> ops.convert_to_numpy(y).dtype
    dtype('float64')
    """
    from lstm_keras.compat import keras_dtypes as dtypes

    changed = False
    restore_x64 = None
    table = getattr(dtypes, "BIT64_TO_BIT32_DTYPE", None)
    demoted = None
    if enabled:
        if keras.backend.backend() == "jax":
            import jax

            if not jax.config.jax_enable_x64:
                jax.config.update("jax_enable_x64", True)
                restore_x64 = False
                changed = True
        if isinstance(table, dict) and table.get("float64", "float64") != (
            "float64"
        ):
            demoted = table["float64"]
            table["float64"] = "float64"
            changed = True
    try:
        yield changed
    finally:
        if demoted is not None:
            table["float64"] = demoted
        if restore_x64 is not None:
            import jax

            jax.config.update("jax_enable_x64", restore_x64)
