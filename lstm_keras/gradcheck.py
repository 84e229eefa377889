"""Backprop, verified: the LSTM's gradients checked three independent ways.

For one small `lstm_keras.LSTM` with random weights, this module computes the
gradients of a scalar loss with respect to the inputs, both initial states
and every weight in three ways, and compares them:

1. **Autodiff** of the real layer on the active Keras backend
   (`tf.GradientTape` on TensorFlow, `jax.grad` over `layer.stateless_call`
   on JAX, `torch.autograd` on torch).
2. **Reference backpropagation through time**, derived by hand and written
   in NumPy (float64) in `reference_backward`, next to its forward pass
   `reference_forward`.
3. **Central finite differences** of the real layer's forward pass, in
   float64, for every entry of every tensor (or a random sample of entries).

The loss is `L = sum(outputs * G_out) + sum(h_T * G_h) + sum(c_T * G_c)` with
fixed random cotangents `G`, so that every output and both final states
carry gradient. `check_gradients` runs one configuration and returns a table;
`python -m lstm_keras.gradcheck` (or the `lstm-keras-gradcheck` console
script) prints the table for a handful of configurations.

Errors are normwise per tensor: for a computed tensor `a` and a reference
`b`, `abs_error = max|a - b|` and
`rel_error = max|a - b| / max(max|b|, tiny)`, with `tiny` the smallest
positive normal float64; one large wrong entry cannot hide behind small
correct ones, and near-zero entries of `b` do not blow the ratio up.

The reference covers only the layer's default activations (`tanh` for the
candidate and cell output, `sigmoid` for the gates).
"""

import argparse
import contextlib
import dataclasses
import sys

import keras
import numpy as np
from keras import ops

import lstm_keras
from lstm_keras.lstm_cell import check_positive_int

TENSOR_NAMES = ("x", "h0", "c0", "kernel", "recurrent_kernel", "bias")
"""The tensors whose gradients are checked, in table order."""

MASK_KINDS = ("right", "left", "random")
"""Named padding patterns `check_gradients` can draw (or pass an array)."""

DEFAULT_RTOL = {"float64": 1e-7, "float32": 1e-4}
"""Relative error allowed between autodiff and the reference BPTT."""

DEFAULT_FD_RTOL = 1e-6
"""Relative error allowed between autodiff and finite differences."""

_TINY = np.finfo(np.float64).tiny


# ---------------------------------------------------------------------------
# NumPy reference: forward pass and hand-derived backpropagation through time.
# ---------------------------------------------------------------------------


def _sigmoid(z):
    # Split by sign so that exp never overflows, even for huge |z|.
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _dsigmoid(s):
    """sigma'(z) written through its output s = sigma(z)."""
    return s * (1.0 - s)


def _dtanh(t):
    """tanh'(z) written through its output t = tanh(z)."""
    return 1.0 - t * t


def _as_float64(name, value, ndim):
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Argument `{name}` must be a numeric array; received {value!r}."
        ) from error
    if array.ndim != ndim:
        raise ValueError(
            f"Argument `{name}` must have rank {ndim}; received shape "
            f"{array.shape}."
        )
    return array


def _check_shape(name, array, shape):
    if array.shape != tuple(shape):
        raise ValueError(
            f"Argument `{name}` must have shape {tuple(shape)}; received "
            f"{array.shape}."
        )


def reference_forward(
    x,
    h0,
    c0,
    kernel,
    recurrent_kernel,
    bias=None,
    mask=None,
    go_backwards=False,
    zero_output_for_mask=False,
    input_dropout_mask=None,
    recurrent_dropout_mask=None,
):
    """Runs the LSTM forward pass in NumPy, in float64.

    An independent restatement of `lstm_keras.LSTM`'s forward pass with the
    default activations (`tanh` candidate and cell output, `sigmoid` gates;
    other activations are not supported), with Keras's semantics for masks,
    `go_backwards` and variational dropout:

    - gates `z = x_t W + (h_prev * r) U + b`, in the order input, forget,
      candidate, output; `c_t = f * c_prev + i * g`, `h_t = o * tanh(c_t)`;
    - masked inputs are replaced by zeros first (they may hold NaN); then the
      inputs are multiplied by `input_dropout_mask` and `h_prev` by
      `recurrent_dropout_mask` where it enters the recurrent matmul (the
      carried state itself is not dropped);
    - at a masked step `h` and `c` keep their previous values, and the output
      is zero with `zero_output_for_mask=True`, else the previous step's
      output (zeros before the first step, not `h0`);
    - `go_backwards=True` processes time reversed and returns the outputs in
      processing order, as Keras does.

    Args:
        x: `(batch, timesteps, input_dim)` inputs.
        h0: `(batch, units)` initial hidden state.
        c0: `(batch, units)` initial cell state.
        kernel: `(input_dim, 4 * units)` feedforward weights.
        recurrent_kernel: `(units, 4 * units)` recurrent weights.
        bias: Optional `(4 * units,)` bias. Defaults to `None` (no bias).
        mask: Optional boolean `(batch, timesteps)`, `False` at padded steps.
            Defaults to `None` (no padding).
        go_backwards: Process the sequence in reverse. Defaults to `False`.
        zero_output_for_mask: Output zeros at masked steps instead of the
            previous output. Defaults to `False`.
        input_dropout_mask: Optional `(batch, input_dim)` multiplier of the
            inputs (0 or `1 / (1 - rate)`). Defaults to `None`.
        recurrent_dropout_mask: Optional `(batch, units)` multiplier of
            `h_prev` in the recurrent matmul. Defaults to `None`.

    Returns:
        A tuple `(outputs, last_output, h_T, c_T, cache)`: `outputs`
        `(batch, timesteps, units)` in Keras's order (processing order),
        `last_output = outputs[:, -1]`, the final states, and an opaque
        `cache` for `reference_backward`. Arrays are float64.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2, 5, 3))
    >>> h0 = c0 = np.zeros((2, 4))
    >>> kernel = rng.normal(size=(3, 16))
    >>> recurrent_kernel = rng.normal(size=(4, 16))
    >>> outputs, last, h, c, cache = reference_forward(
    ...     x, h0, c0, kernel, recurrent_kernel)
    >>> outputs.shape, last.shape
    ((2, 5, 4), (2, 4))
    """
    x = _as_float64("x", x, 3)
    batch, timesteps, input_dim = x.shape
    if timesteps == 0:
        raise ValueError("Argument `x` must have at least one timestep.")
    kernel = _as_float64("kernel", kernel, 2)
    if kernel.shape[0] != input_dim or kernel.shape[1] % 4:
        raise ValueError(
            "Argument `kernel` must have shape (input_dim, 4 * units) with "
            f"input_dim={input_dim}; received {kernel.shape}."
        )
    units = kernel.shape[1] // 4
    recurrent_kernel = _as_float64("recurrent_kernel", recurrent_kernel, 2)
    _check_shape("recurrent_kernel", recurrent_kernel, (units, 4 * units))
    h0 = _as_float64("h0", h0, 2)
    _check_shape("h0", h0, (batch, units))
    c0 = _as_float64("c0", c0, 2)
    _check_shape("c0", c0, (batch, units))
    if bias is not None:
        bias = _as_float64("bias", bias, 1)
        _check_shape("bias", bias, (4 * units,))
    if mask is None:
        mask = np.ones((batch, timesteps), dtype=bool)
    else:
        mask = np.asarray(mask).astype(bool)
        _check_shape("mask", mask, (batch, timesteps))
    if input_dropout_mask is not None:
        input_dropout_mask = _as_float64(
            "input_dropout_mask", input_dropout_mask, 2
        )
        _check_shape(
            "input_dropout_mask", input_dropout_mask, (batch, input_dim)
        )
    if recurrent_dropout_mask is not None:
        recurrent_dropout_mask = _as_float64(
            "recurrent_dropout_mask", recurrent_dropout_mask, 2
        )
        _check_shape(
            "recurrent_dropout_mask", recurrent_dropout_mask, (batch, units)
        )

    # Work in processing order from here on; the backward pass undoes this.
    x = np.where(mask[:, :, None], x, 0.0)
    if go_backwards:
        x, mask = x[:, ::-1], mask[:, ::-1]
    x_dropped = (
        x if input_dropout_mask is None else x * input_dropout_mask[:, None]
    )

    h_prev, c_prev = h0, c0
    out_prev = np.zeros((batch, units))
    outputs = np.empty((batch, timesteps, units))
    steps = []
    for t in range(timesteps):
        h_in = (
            h_prev
            if recurrent_dropout_mask is None
            else h_prev * recurrent_dropout_mask
        )
        z = x_dropped[:, t] @ kernel + h_in @ recurrent_kernel
        if bias is not None:
            z = z + bias
        z_i, z_f, z_c, z_o = np.split(z, 4, axis=-1)
        input_gate = _sigmoid(z_i)
        forget_gate = _sigmoid(z_f)
        candidate = np.tanh(z_c)
        output_gate = _sigmoid(z_o)
        c_new = forget_gate * c_prev + input_gate * candidate
        tanh_c = np.tanh(c_new)
        h_new = output_gate * tanh_c
        steps.append(
            dict(
                h_prev=h_prev,
                h_in=h_in,
                c_prev=c_prev,
                input_gate=input_gate,
                forget_gate=forget_gate,
                candidate=candidate,
                output_gate=output_gate,
                tanh_c=tanh_c,
            )
        )
        keep = mask[:, t, None]
        masked_output = 0.0 if zero_output_for_mask else out_prev
        out_prev = np.where(keep, h_new, masked_output)
        outputs[:, t] = out_prev
        h_prev = np.where(keep, h_new, h_prev)
        c_prev = np.where(keep, c_new, c_prev)

    cache = dict(
        x_dropped=x_dropped,
        mask=mask,
        steps=steps,
        kernel=kernel,
        recurrent_kernel=recurrent_kernel,
        use_bias=bias is not None,
        go_backwards=bool(go_backwards),
        zero_output_for_mask=bool(zero_output_for_mask),
        input_dropout_mask=input_dropout_mask,
        recurrent_dropout_mask=recurrent_dropout_mask,
    )
    return outputs, outputs[:, -1].copy(), h_prev, c_prev, cache


def reference_backward(cache, d_outputs=None, d_h_T=None, d_c_T=None):
    """Backpropagation through time for `reference_forward`, by hand.

    Given the gradients of a loss with respect to the forward pass's results,
    returns the gradients with respect to its arguments. In the notation of
    the LSTM equations, going from the last processed step back to the first:

        delta_h_t = dL/d(output_t) + delta_h from t+1   (output and state)
        delta_c_t = delta_c_{t+1} * f_{t+1}
                    + delta_h_t * o_t * (1 - tanh^2(c_t))
        delta_o = delta_h_t * tanh(c_t)        delta_z_o = delta_o * o (1 - o)
        delta_i = delta_c_t * g_t              delta_z_i = delta_i * i (1 - i)
        delta_f = delta_c_t * c_{t-1}          delta_z_f = delta_f * f (1 - f)
        delta_g = delta_c_t * i_t              delta_z_c = delta_g * (1 - g^2)

    then `dW += x_t^T delta_z`, `dU += (h_{t-1} r)^T delta_z`,
    `db += sum delta_z`, `delta_x_t = delta_z W^T` and
    `delta_h_{t-1} = (delta_z U^T) r`. A masked step contributes nothing to
    the weights and passes `delta_h`, `delta_c` unchanged to `t - 1`.

    Args:
        cache: The `cache` returned by `reference_forward`.
        d_outputs: Optional `(batch, timesteps, units)` gradient of the loss
            with respect to `outputs` (Keras's order, as returned). For a
            layer with `return_sequences=False`, put the gradient of the last
            output in `d_outputs[:, -1]`. Defaults to `None` (zeros).
        d_h_T: Optional `(batch, units)` gradient with respect to the final
            hidden state. Defaults to `None` (zeros).
        d_c_T: Optional `(batch, units)` gradient with respect to the final
            cell state. Defaults to `None` (zeros).

    Returns:
        A dict with float64 gradients for `"x"`, `"h0"`, `"c0"`, `"kernel"`,
        `"recurrent_kernel"` and `"bias"` (`None` when the forward pass had
        no bias).

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2, 5, 3))
    >>> h0 = c0 = np.zeros((2, 4))
    >>> outputs, last, h, c, cache = reference_forward(
    ...     x, h0, c0, rng.normal(size=(3, 16)), rng.normal(size=(4, 16)))
    >>> grads = reference_backward(cache, d_outputs=np.ones_like(outputs))
    >>> grads["kernel"].shape
    (3, 16)
    """
    if not isinstance(cache, dict) or "steps" not in cache:
        raise ValueError(
            "Argument `cache` must be the cache returned by "
            "`reference_forward`."
        )
    x_dropped = cache["x_dropped"]
    mask = cache["mask"]
    kernel = cache["kernel"]
    recurrent_kernel = cache["recurrent_kernel"]
    input_dropout_mask = cache["input_dropout_mask"]
    recurrent_dropout_mask = cache["recurrent_dropout_mask"]
    batch, timesteps, _ = x_dropped.shape
    units = recurrent_kernel.shape[0]

    def _gradient(name, value, shape):
        if value is None:
            return np.zeros(shape)
        value = np.asarray(value, dtype=np.float64)
        _check_shape(name, value, shape)
        return value

    d_outputs = _gradient("d_outputs", d_outputs, (batch, timesteps, units))
    delta_h = _gradient("d_h_T", d_h_T, (batch, units)).copy()
    delta_c = _gradient("d_c_T", d_c_T, (batch, units)).copy()

    d_x = np.zeros_like(x_dropped)
    d_kernel = np.zeros_like(kernel)
    d_recurrent_kernel = np.zeros_like(recurrent_kernel)
    d_bias = np.zeros(4 * units)
    # Gradient reaching an output that a later masked step copied forward
    # (zero_output_for_mask=False): it belongs to this step's output.
    delta_out_carried = np.zeros((batch, units))

    for t in reversed(range(timesteps)):
        step = cache["steps"][t]
        keep = mask[:, t, None]
        delta_out = d_outputs[:, t] + delta_out_carried

        # Where the step is real, its h_t is both the output and the state
        # handed to t + 1, so both gradients land on it; where masked, the
        # cell's result was discarded and gets no gradient at all.
        delta_h_t = np.where(keep, delta_out + delta_h, 0.0)
        delta_c_t = np.where(keep, delta_c, 0.0)

        input_gate = step["input_gate"]
        forget_gate = step["forget_gate"]
        candidate = step["candidate"]
        output_gate = step["output_gate"]
        tanh_c = step["tanh_c"]

        # c_t feeds h_t through tanh, on top of what t + 1 sent back (that
        # already carries its factor f_{t+1}: see delta_c_prev below).
        delta_c_t = delta_c_t + delta_h_t * output_gate * _dtanh(tanh_c)
        delta_output_gate = delta_h_t * tanh_c
        delta_input_gate = delta_c_t * candidate
        delta_forget_gate = delta_c_t * step["c_prev"]
        delta_candidate = delta_c_t * input_gate
        delta_z = np.concatenate(
            [
                delta_input_gate * _dsigmoid(input_gate),
                delta_forget_gate * _dsigmoid(forget_gate),
                delta_candidate * _dtanh(candidate),
                delta_output_gate * _dsigmoid(output_gate),
            ],
            axis=-1,
        )

        d_kernel += x_dropped[:, t].T @ delta_z
        # The recurrent weights saw the dropped-out h_prev, not h_prev.
        d_recurrent_kernel += step["h_in"].T @ delta_z
        d_bias += delta_z.sum(axis=0)
        d_x[:, t] = delta_z @ kernel.T

        delta_h_in = delta_z @ recurrent_kernel.T
        if recurrent_dropout_mask is not None:
            delta_h_in = delta_h_in * recurrent_dropout_mask
        # A masked step forwarded h_prev and c_prev untouched, so their
        # gradients pass straight through it to t - 1.
        delta_h = np.where(keep, delta_h_in, delta_h)
        delta_c = np.where(keep, delta_c_t * forget_gate, delta_c)
        if cache["zero_output_for_mask"]:
            delta_out_carried = np.zeros((batch, units))
        else:
            # A masked step's output was the previous output, copied.
            delta_out_carried = np.where(keep, 0.0, delta_out)
    # What is left in delta_out_carried reached the constant zeros that
    # stand in for "the output before the first step": it is dropped.

    if input_dropout_mask is not None:
        d_x = d_x * input_dropout_mask[:, None]
    # Padded inputs were replaced by zeros: nothing flows back into them.
    d_x = np.where(mask[:, :, None], d_x, 0.0)
    if cache["go_backwards"]:
        d_x = d_x[:, ::-1]
    return {
        "x": np.ascontiguousarray(d_x),
        "h0": delta_h,
        "c0": delta_c,
        "kernel": d_kernel,
        "recurrent_kernel": d_recurrent_kernel,
        "bias": d_bias if cache["use_bias"] else None,
    }


# ---------------------------------------------------------------------------
# Finite differences and error measures.
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# The real layer: forward values and autodiff on the active backend.
# ---------------------------------------------------------------------------


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
    from keras.src.backend.common import dtypes

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


class _LayerProbe:
    """Runs one built `lstm_keras.LSTM` with fixed inputs and dropout masks.

    `forward(values)` evaluates the layer at arbitrary `values` (inputs,
    initial states and weights, as NumPy arrays) through
    `layer.stateless_call`, compiled where the backend allows, so that
    finite differences do not touch the layer's variables; `gradients()`
    differentiates the layer as it stands (its variables hold the weights).
    """

    def __init__(self, layer, values, mask, use_initial_state, training, masks):
        self.layer = layer
        self.cell = layer.cell
        self.mask = mask
        self.use_initial_state = use_initial_state
        self.training = training
        self.input_dropout_mask, self.recurrent_dropout_mask = masks
        self.values = values
        self.dtype = layer.compute_dtype
        self.backend = keras.backend.backend()
        trainable = list(layer.trainable_variables)
        self.weight_names = [n for n in TENSOR_NAMES[3:] if n in values]
        weights = [getattr(self.cell, n) for n in self.weight_names]
        self._positions = []
        for name, variable in zip(self.weight_names, weights, strict=True):
            matches = [k for k, v in enumerate(trainable) if v is variable]
            if len(matches) != 1:
                raise ValueError(
                    f"The layer's trainable variables do not hold `{name}` "
                    "exactly once; is the layer frozen (trainable=False)?"
                )
            self._positions.append(matches[0])
        self._num_trainable = len(trainable)
        self._forward = self._compile_forward()

    # Outputs are normalised to a dict: "outputs" (return_sequences) or
    # "last_output", plus "h_T" and "c_T" with return_state.
    def _name_outputs(self, result):
        if self.layer.return_state:
            first, h_t, c_t = result
        else:
            first, h_t, c_t = result, None, None
        key = "outputs" if self.layer.return_sequences else "last_output"
        named = {key: first}
        if h_t is not None:
            named["h_T"] = h_t
            named["c_T"] = c_t
        return named

    def _tensor(self, value):
        return (
            None if value is None else ops.convert_to_tensor(value, self.dtype)
        )

    def _set_dropout_masks(self, input_mask, recurrent_mask):
        # `keras.layers.RNN.call` draws masks only when these are None, and
        # resets them after the call: set them right before every call.
        self.cell._dropout_mask = input_mask
        self.cell._recurrent_dropout_mask = recurrent_mask

    def _call_kwargs(self, h0, c0):
        kwargs = {"mask": self.mask, "training": self.training}
        if self.use_initial_state:
            kwargs["initial_state"] = [h0, c0]
        return kwargs

    def _stateless(self, x, h0, c0, weights, input_mask, recurrent_mask):
        trainable = [v.value for v in self.layer.trainable_variables]
        for position, weight in zip(self._positions, weights, strict=True):
            trainable[position] = weight
        non_trainable = [v.value for v in self.layer.non_trainable_variables]
        self._set_dropout_masks(input_mask, recurrent_mask)
        result, _ = self.layer.stateless_call(
            trainable, non_trainable, x, **self._call_kwargs(h0, c0)
        )
        return self._name_outputs(result)

    def _compile_forward(self):
        if self.backend == "jax":
            import jax

            return jax.jit(self._stateless)
        if self.backend == "tensorflow":
            import tensorflow as tf

            return tf.function(self._stateless, reduce_retracing=True)
        return self._stateless

    def forward(self, values):
        """Layer results at `values`, as float64 NumPy arrays."""
        weights = [self._tensor(values[n]) for n in self.weight_names]
        args = (
            self._tensor(values["x"]),
            self._tensor(values["h0"]),
            self._tensor(values["c0"]),
            weights,
            self._tensor(self.input_dropout_mask),
            self._tensor(self.recurrent_dropout_mask),
        )
        if self.backend == "torch":
            import torch

            with torch.no_grad():
                result = self._forward(*args)
        else:
            result = self._forward(*args)
        # jax.jit hands dicts back with sorted keys: restore table order.
        order = ("outputs", "last_output", "h_T", "c_T")
        return {
            k: np.asarray(ops.convert_to_numpy(result[k]), dtype=np.float64)
            for k in order
            if k in result
        }

    def _loss(self, named, cotangents):
        total = 0.0
        for key, value in named.items():
            total = total + ops.sum(value * self._tensor(cotangents[key]))
        return total

    def gradients(self, cotangents):
        """Autodiff gradients of the cotangent loss at `self.values`."""
        differentiated = ["x"]
        if self.use_initial_state:
            differentiated += ["h0", "c0"]
        differentiated += self.weight_names
        if self.backend == "tensorflow":
            grads = self._tensorflow_gradients(cotangents)
        elif self.backend == "jax":
            grads = self._jax_gradients(cotangents)
        elif self.backend == "torch":
            grads = self._torch_gradients(cotangents)
        else:
            raise ValueError(
                f"Unsupported Keras backend {self.backend!r}; expected "
                "'tensorflow', 'jax' or 'torch'."
            )
        return {
            name: np.asarray(ops.convert_to_numpy(g), dtype=np.float64)
            for name, g in zip(differentiated, grads, strict=True)
        }

    def _tensorflow_gradients(self, cotangents):
        import tensorflow as tf

        x = self._tensor(self.values["x"])
        h0 = self._tensor(self.values["h0"])
        c0 = self._tensor(self.values["c0"])
        sources = [x] + ([h0, c0] if self.use_initial_state else [])
        variables = [getattr(self.cell, n) for n in self.weight_names]
        with tf.GradientTape() as tape:
            tape.watch(sources)
            self._set_dropout_masks(
                self._tensor(self.input_dropout_mask),
                self._tensor(self.recurrent_dropout_mask),
            )
            result = self.layer(x, **self._call_kwargs(h0, c0))
            loss = self._loss(self._name_outputs(result), cotangents)
        grads = tape.gradient(
            loss,
            sources + [v.value for v in variables],
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
        return grads

    def _jax_gradients(self, cotangents):
        import jax

        input_mask = self._tensor(self.input_dropout_mask)
        recurrent_mask = self._tensor(self.recurrent_dropout_mask)

        def loss_fn(x, h0, c0, weights):
            named = self._stateless(
                x, h0, c0, weights, input_mask, recurrent_mask
            )
            return self._loss(named, cotangents)

        x = self._tensor(self.values["x"])
        h0 = self._tensor(self.values["h0"])
        c0 = self._tensor(self.values["c0"])
        weights = [self._tensor(self.values[n]) for n in self.weight_names]
        d_x, d_h0, d_c0, d_weights = jax.grad(loss_fn, argnums=(0, 1, 2, 3))(
            x, h0, c0, weights
        )
        initial = [d_h0, d_c0] if self.use_initial_state else []
        return [d_x] + initial + list(d_weights)

    def _torch_gradients(self, cotangents):
        import torch

        def leaf(value):
            return self._tensor(value).detach().clone().requires_grad_(True)

        x = leaf(self.values["x"])
        h0 = leaf(self.values["h0"])
        c0 = leaf(self.values["c0"])
        sources = [x] + ([h0, c0] if self.use_initial_state else [])
        weights = [getattr(self.cell, n).value for n in self.weight_names]
        self._set_dropout_masks(
            self._tensor(self.input_dropout_mask),
            self._tensor(self.recurrent_dropout_mask),
        )
        result = self.layer(x, **self._call_kwargs(h0, c0))
        loss = self._loss(self._name_outputs(result), cotangents)
        grads = torch.autograd.grad(loss, sources + weights, allow_unused=True)
        return [
            torch.zeros_like(s) if g is None else g
            for s, g in zip(sources + weights, grads, strict=True)
        ]


# ---------------------------------------------------------------------------
# The check.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class TensorCheck:
    """One row of the gradient-check table.

    Attributes:
        kind: `"forward"` (layer results vs `reference_forward`; the FD
            columns are empty) or `"gradient"`.
        name: Tensor name (`"x"`, `"kernel"`, ..., or `"outputs"`, `"h_T"`).
        shape: The tensor's shape.
        ref_abs_error: Max abs error of the layer vs the NumPy reference.
        ref_rel_error: Normwise relative error vs the NumPy reference.
        fd_abs_error: Max abs error of autodiff vs finite differences, or
            `None` when finite differences were not run.
        fd_rel_error: Normwise relative error vs finite differences, or
            `None`.
        fd_entries: Number of entries checked by finite differences.
        passed: Whether both errors are within the thresholds.
    """

    kind: str
    name: str
    shape: tuple
    ref_abs_error: float
    ref_rel_error: float
    fd_abs_error: float | None = None
    fd_rel_error: float | None = None
    fd_entries: int = 0
    passed: bool = False


@dataclasses.dataclass
class GradcheckResult:
    """What `check_gradients` measured, with a printable table.

    Attributes:
        backend: The Keras backend the layer ran on.
        dtype: `"float32"` or `"float64"`, the layer's dtype.
        config: Dict of the options the check ran with.
        rows: List of `TensorCheck`, forward rows first.
        reference_rtol: Threshold on relative errors vs the NumPy reference.
        fd_rtol: Threshold on relative errors vs finite differences.
        autodiff: Dict `{name: array}` of the layer's autodiff gradients.
        reference: Dict `{name: array}` of the reference BPTT gradients.
        finite_differences: Dict `{name: (flat_indices, values)}`, empty
            when finite differences were not run.
        float64_lifted: Whether the check ran with `float64_mode()`
            changing anything (float64 on JAX and torch).
        dropout_masks: `(input_mask, recurrent_mask)` the layer ran with,
            NumPy arrays or `None`.
        passed: Whether every row passed.
    """

    backend: str
    dtype: str
    config: dict
    rows: list
    reference_rtol: float
    fd_rtol: float
    autodiff: dict
    reference: dict
    finite_differences: dict
    float64_lifted: bool = False
    dropout_masks: tuple = (None, None)

    @property
    def passed(self):
        return all(row.passed for row in self.rows)

    def row(self, name, kind="gradient"):
        """Returns the row for tensor `name` of the given `kind`."""
        for row in self.rows:
            if row.name == name and row.kind == kind:
                return row
        raise ValueError(f"No {kind} row named {name!r} in this result.")

    def table(self):
        """Returns the result as a fixed-width text table."""

        def fmt(value):
            return "-" if value is None else f"{value:.2e}"

        header = (
            f"{'kind':<9}{'tensor':<18}{'shape':<12}{'abs vs ref':>11}"
            f"{'rel vs ref':>11}{'abs vs FD':>11}{'rel vs FD':>11}"
            f"{'FD n':>6}  ok"
        )
        lines = [header, "-" * len(header)]
        for r in self.rows:
            shape = "x".join(str(s) for s in r.shape)
            lines.append(
                f"{r.kind:<9}{r.name:<18}{shape:<12}{fmt(r.ref_abs_error):>11}"
                f"{fmt(r.ref_rel_error):>11}{fmt(r.fd_abs_error):>11}"
                f"{fmt(r.fd_rel_error):>11}{r.fd_entries:>6}  "
                f"{'yes' if r.passed else 'NO'}"
            )
        return "\n".join(lines)

    def __str__(self):
        options = ", ".join(f"{k}={v}" for k, v in self.config.items())
        lifted = (
            " (in float64_mode: x64 / no float64->float32 demotion)"
            if self.float64_lifted
            else ""
        )
        return (
            f"backend={self.backend} dtype={self.dtype}{lifted}\n"
            f"{options}\n"
            f"thresholds: rel vs ref <= {self.reference_rtol:g}, "
            f"rel vs FD <= {self.fd_rtol:g}\n"
            f"{self.table()}\n"
            f"{'PASSED' if self.passed else 'FAILED'}"
        )


def _draw_mask(kind, batch, timesteps, rng):
    if kind is None:
        return None
    if isinstance(kind, str):
        if kind not in MASK_KINDS:
            raise ValueError(
                f"Argument `mask` must be None, one of {MASK_KINDS} or a "
                f"boolean (batch, timesteps) array; received {kind!r}."
            )
        if kind == "random":
            mask = rng.random((batch, timesteps)) < 0.6
            mask[0] = True
            return mask
        # Row 0 keeps every step; the others are padded, so both cases run.
        lengths = np.full(batch, timesteps)
        if batch > 1:
            lengths[1:] = rng.integers(1, max(timesteps, 2), size=batch - 1)
        steps = np.arange(timesteps)[None, :]
        if kind == "right":
            return steps < lengths[:, None]
        return steps >= timesteps - lengths[:, None]
    mask = np.asarray(kind)
    if mask.shape != (batch, timesteps):
        raise ValueError(
            f"Argument `mask` as an array must have shape ({batch}, "
            f"{timesteps}); received {mask.shape}."
        )
    return mask.astype(bool)


def check_gradients(
    batch_size=2,
    timesteps=5,
    input_dim=3,
    units=4,
    mask=None,
    go_backwards=False,
    return_sequences=True,
    return_state=True,
    initial_state=True,
    zero_output_for_mask=False,
    use_bias=True,
    dropout=0.0,
    recurrent_dropout=0.0,
    dtype="float64",
    finite_differences=True,
    fd_entries=None,
    fd_epsilon=1e-6,
    reference_rtol=None,
    fd_rtol=DEFAULT_FD_RTOL,
    pad_value=None,
    keep_float64=True,
    seed=0,
):
    """Checks `lstm_keras.LSTM`'s gradients against BPTT and finite differences.

    Builds an `lstm_keras.LSTM` with random weights (of the requested dtype)
    on the active Keras backend and random inputs, initial states and loss
    cotangents, all drawn from `seed`. Then compares:

    - the layer's forward results with `reference_forward`;
    - the layer's autodiff gradients with `reference_backward`;
    - the autodiff gradients with central finite differences of the layer's
      own forward pass (float64 only).

    Errors are normwise per tensor (see `max_errors`). The loss is
    `sum(out * G_out) + sum(h_T * G_h) + sum(c_T * G_c)` over whatever the
    layer returns (`outputs` or the last output; the states with
    `return_state=True`).

    Args:
        batch_size: Positive int. Defaults to `2`.
        timesteps: Positive int. Defaults to `5`.
        input_dim: Positive int. Defaults to `3`.
        units: Positive int. Defaults to `4`.
        mask: `None`, `"right"` (row 0 full, other rows right-padded),
            `"left"` (left-padded), `"random"` (any pattern, row 0 full) or
            a boolean `(batch_size, timesteps)` array. Defaults to `None`.
        go_backwards: Layer option. Defaults to `False`.
        return_sequences: Layer option; with `False` the loss uses the last
            output. Defaults to `True`.
        return_state: Layer option; with `True` the loss covers `h_T`, `c_T`.
            Defaults to `True`.
        initial_state: Pass random `[h0, c0]` to the layer (and check their
            gradients) instead of the layer's zeros. Defaults to `True`.
        zero_output_for_mask: Layer attribute (see `keras.layers.RNN`).
            Defaults to `False`.
        use_bias: Layer option. Defaults to `True`.
        dropout: Input dropout rate in [0, 1). Defaults to `0.0`.
        recurrent_dropout: Recurrent dropout rate in [0, 1). Defaults to
            `0.0`. With any dropout the layer runs with `training=True`, its
            masks drawn once by the layer's own generator (seeded by `seed`)
            and reused by every evaluation.
        dtype: `"float64"` or `"float32"`. Defaults to `"float64"`.
        finite_differences: Run finite differences (float64 only; ignored
            for float32). Defaults to `True`.
        fd_entries: Optional positive int: finite-difference only this many
            random entries per tensor. Defaults to `None` (every entry).
        fd_epsilon: Finite-difference step. Defaults to `1e-6`.
        reference_rtol: Threshold on relative errors vs the reference.
            Defaults to `None`: `1e-7` for float64, `1e-4` for float32.
        fd_rtol: Threshold on relative errors vs finite differences.
            Defaults to `1e-6`.
        pad_value: Optional float written into the masked (padded) input
            steps, e.g. `float("nan")`, to check that padding cannot leak.
            Finite differences then skip `x`. Defaults to `None` (padding
            keeps its random values).
        keep_float64: Run a float64 check inside `float64_mode()`, so that
            the layer computes in float64 on JAX and torch too. With `False`
            the layer runs as Keras runs it, which on JAX and torch is only
            float32-accurate and fails the float64 thresholds. Defaults to
            `True`.
        seed: Integer seed for everything random. Defaults to `0`.

    Returns:
        A `GradcheckResult`; `result.passed` tells whether every check held,
        `print(result)` shows the table.

    Example:

    >>> result = check_gradients(mask="right", go_backwards=True)
    >>> result.passed
    True
    >>> result.row("kernel").ref_rel_error < 1e-7
    True
    """
    for name, value in (
        ("batch_size", batch_size),
        ("timesteps", timesteps),
        ("input_dim", input_dim),
        ("units", units),
    ):
        check_positive_int(name, value)
    if dtype not in DEFAULT_RTOL:
        raise ValueError(
            "Argument `dtype` must be 'float64' or 'float32'; received "
            f"{dtype!r}."
        )
    if reference_rtol is None:
        reference_rtol = DEFAULT_RTOL[dtype]
    if not reference_rtol > 0:
        raise ValueError(
            "Argument `reference_rtol` must be positive; got "
            f"{reference_rtol!r}."
        )
    if not fd_rtol > 0:
        raise ValueError(
            f"Argument `fd_rtol` must be positive; got {fd_rtol!r}."
        )
    run_fd = bool(finite_differences) and dtype == "float64"
    backend = keras.backend.backend()

    with float64_mode(dtype == "float64" and bool(keep_float64)) as lifted:
        rng = np.random.default_rng(seed)
        B, T, D, H = batch_size, timesteps, input_dim, units
        np_dtype = np.dtype(dtype)
        mask_array = _draw_mask(mask, B, T, rng)

        def draw(*shape, scale=1.0):
            # Rounded to the layer's dtype so that the reference sees exactly
            # the numbers the layer sees.
            return (
                (scale * rng.normal(size=shape))
                .astype(np_dtype)
                .astype(np.float64)
            )

        values = {
            "x": draw(B, T, D),
            "h0": draw(B, H, scale=0.5) if initial_state else np.zeros((B, H)),
            "c0": draw(B, H, scale=0.5) if initial_state else np.zeros((B, H)),
            "kernel": draw(D, 4 * H, scale=0.6),
            "recurrent_kernel": draw(H, 4 * H, scale=0.6),
        }
        if use_bias:
            values["bias"] = draw(4 * H, scale=0.3)
        if pad_value is not None and mask_array is not None:
            values["x"][~mask_array] = pad_value

        layer = lstm_keras.LSTM(
            H,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            use_bias=use_bias,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            zero_output_for_mask=zero_output_for_mask,
            dtype=dtype,
        )
        layer.build((B, T, D))
        for name in ("kernel", "recurrent_kernel", "bias"):
            if name in values:
                getattr(layer.cell, name).assign(values[name].astype(np_dtype))

        training = dropout > 0 or recurrent_dropout > 0
        input_dropout_mask = recurrent_dropout_mask = None
        if training:
            cell = layer.cell
            cell.reset_dropout_mask()
            cell.reset_recurrent_dropout_mask()
            dtype_zeros = ops.zeros((B, H), dtype=dtype)
            x_step = ops.convert_to_tensor(values["x"][:, 0, :], dtype=dtype)
            if dropout > 0:
                input_dropout_mask = ops.convert_to_numpy(
                    cell.get_dropout_mask(x_step)
                )
            if recurrent_dropout > 0:
                recurrent_dropout_mask = ops.convert_to_numpy(
                    cell.get_recurrent_dropout_mask(dtype_zeros)
                )
            cell.reset_dropout_mask()
            cell.reset_recurrent_dropout_mask()

        probe = _LayerProbe(
            layer,
            values,
            mask_array,
            bool(initial_state),
            training,
            (input_dropout_mask, recurrent_dropout_mask),
        )

        # Reference forward and backward, with the layer's exact masks.
        outputs, last_output, h_t, c_t, cache = reference_forward(
            values["x"],
            values["h0"],
            values["c0"],
            values["kernel"],
            values["recurrent_kernel"],
            values.get("bias"),
            mask=mask_array,
            go_backwards=go_backwards,
            zero_output_for_mask=zero_output_for_mask,
            input_dropout_mask=input_dropout_mask,
            recurrent_dropout_mask=recurrent_dropout_mask,
        )
        reference_results = {
            "outputs": outputs,
            "last_output": last_output,
            "h_T": h_t,
            "c_T": c_t,
        }
        layer_results = probe.forward(values)
        cotangents = {
            key: draw(*value.shape) for key, value in layer_results.items()
        }
        d_outputs = np.zeros((B, T, H))
        if return_sequences:
            d_outputs += cotangents["outputs"]
        else:
            d_outputs[:, -1] = cotangents["last_output"]
        reference = reference_backward(
            cache, d_outputs, cotangents.get("h_T"), cotangents.get("c_T")
        )
        reference = {k: v for k, v in reference.items() if v is not None}
        autodiff = probe.gradients(cotangents)

        fd = {}
        if run_fd:
            fd_values = {k: v for k, v in values.items() if k in autodiff}
            if pad_value is not None and mask_array is not None:
                fd_values.pop("x")  # x +- epsilon is still NaN where padded

            def loss_fn(point):
                full = dict(values, **point)
                results = probe.forward(full)
                return sum(
                    float(np.sum(results[k] * cotangents[k])) for k in results
                )

            fd = numerical_gradients(
                loss_fn,
                fd_values,
                epsilon=fd_epsilon,
                max_entries=fd_entries,
                seed=seed,
            )

        rows = []
        for key, value in layer_results.items():
            ref_abs, ref_rel = max_errors(value, reference_results[key])
            rows.append(
                TensorCheck(
                    "forward",
                    key,
                    value.shape,
                    ref_abs,
                    ref_rel,
                    passed=bool(ref_rel <= reference_rtol),
                )
            )
        for name in TENSOR_NAMES:
            if name not in autodiff:
                continue
            grad = autodiff[name]
            ref_abs, ref_rel = max_errors(grad, reference[name])
            passed = bool(ref_rel <= reference_rtol)
            fd_abs = fd_rel = None
            count = 0
            if name in fd:
                indices, estimates = fd[name]
                fd_abs, fd_rel = max_errors(
                    grad.reshape(-1)[indices], estimates
                )
                count = len(indices)
                passed = passed and bool(fd_rel <= fd_rtol)
            rows.append(
                TensorCheck(
                    "gradient",
                    name,
                    grad.shape,
                    ref_abs,
                    ref_rel,
                    fd_abs,
                    fd_rel,
                    count,
                    passed,
                )
            )

        config = dict(
            sizes=(B, T, D, H),
            mask=mask if isinstance(mask, str) or mask is None else "array",
            go_backwards=go_backwards,
            return_sequences=return_sequences,
            return_state=return_state,
            initial_state=initial_state,
            zero_output_for_mask=zero_output_for_mask,
            use_bias=use_bias,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
        )
        result = GradcheckResult(
            backend=backend,
            dtype=dtype,
            config=config,
            rows=rows,
            reference_rtol=reference_rtol,
            fd_rtol=fd_rtol,
            autodiff=autodiff,
            reference=reference,
            finite_differences=fd,
            float64_lifted=lifted,
            dropout_masks=(input_dropout_mask, recurrent_dropout_mask),
        )
    return result


# ---------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------

CONFIGURATIONS = {
    "plain": {},
    "right-mask": {"mask": "right"},
    "left-mask": {"mask": "left"},
    "backwards-state": {"go_backwards": True, "mask": "right"},
    "last-output": {"return_sequences": False, "mask": "right"},
    "zero-output": {"mask": "random", "zero_output_for_mask": True},
    "dropout": {"dropout": 0.3, "recurrent_dropout": 0.25},
}
"""The configurations `main()` checks, by name (each with the defaults of
`check_gradients` otherwise: return_state and random initial states)."""

_EPILOG = """\
examples:
  python -m lstm_keras.gradcheck
      every configuration, float64 and float32, on $KERAS_BACKEND
  KERAS_BACKEND=jax python -m lstm_keras.gradcheck --config dropout
  python -m lstm_keras.gradcheck --dtype float64 \\
      --sizes 4 20 8 16 --fd-entries 25

The Keras backend is chosen by the KERAS_BACKEND environment variable.
Exit status: 0 if every check passed, 1 otherwise.
"""


def main(argv=None):
    """Prints gradient-check tables; returns 1 if any check failed.

    Args:
        argv: Optional list of command-line arguments. Defaults to `None`
            (`sys.argv[1:]`).

    Returns:
        The exit status, `0` or `1`.

    Example:

    >>> main(["--config", "plain", "--dtype", "float64"])  # doctest: +SKIP
    0
    """
    parser = argparse.ArgumentParser(
        prog="python -m lstm_keras.gradcheck",
        description=(
            "Check lstm_keras.LSTM's gradients: autodiff on the active Keras "
            "backend vs a hand-derived NumPy BPTT and vs finite differences."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        action="append",
        choices=sorted(CONFIGURATIONS),
        help="configuration to check (repeatable; default: all)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32", "both"),
        default="both",
        help="layer dtype (default: both)",
    )
    parser.add_argument(
        "--sizes",
        nargs=4,
        type=int,
        metavar=("B", "T", "D", "H"),
        default=(2, 5, 3, 4),
        help="batch, timesteps, input_dim, units (default: 2 5 3 4)",
    )
    parser.add_argument(
        "--fd-entries",
        type=int,
        default=None,
        help="finite-difference at most N random entries per tensor "
        "(default: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="default: 0")
    args = parser.parse_args(argv)

    names = args.config or list(CONFIGURATIONS)
    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    B, T, D, H = args.sizes
    print(f"Keras {keras.__version__}, backend: {keras.backend.backend()}")
    failed = []
    for dtype in dtypes:
        for name in names:
            try:
                result = check_gradients(
                    batch_size=B,
                    timesteps=T,
                    input_dim=D,
                    units=H,
                    dtype=dtype,
                    fd_entries=args.fd_entries,
                    seed=args.seed,
                    **CONFIGURATIONS[name],
                )
            except ValueError as error:
                parser.error(str(error))
            print(f"\n== {name} ({dtype})")
            print(result)
            if not result.passed:
                failed.append(f"{name} ({dtype})")
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
        return 1
    print(f"\nall {len(names) * len(dtypes)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
