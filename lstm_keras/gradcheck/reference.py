"""The NumPy reference: the LSTM forward pass and its hand-derived BPTT.

`reference_forward` restates `lstm_keras.LSTM`'s forward pass in float64
NumPy (default activations; Keras's semantics for masks, `go_backwards` and
variational dropout) and keeps what backpropagation needs in a cache;
`reference_backward` backpropagates through time by hand, in the notation of
the LSTM equations. Both depend on nothing but NumPy, so that they are an
independent check of the layer's autodiff. `TENSOR_NAMES` lists the tensors
whose gradients the reference returns, in the order the checker reports
them. The variants (peepholes, layer normalization, projection) are covered
through their weights' arguments, each optional.
"""

import numpy as np

TENSOR_NAMES = (
    "x",
    "h0",
    "c0",
    "kernel",
    "recurrent_kernel",
    "bias",
    "input_peephole",
    "forget_peephole",
    "output_peephole",
    "gate_norm_gamma",
    "cell_norm_gamma",
    "cell_norm_beta",
    "projection_kernel",
)
"""The tensors whose gradients are checked, in table order."""

_PEEPHOLES = TENSOR_NAMES[6:9]
_NORMS = TENSOR_NAMES[9:12]
_EPSILON = 1e-3  # lstm_keras.lstm_cell.LAYER_NORM_EPSILON, restated


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


def _normalize(x, groups):
    """Layer norm without gain or shift over `groups` blocks of features.

    Returns `(x_hat, inv_std)`, `inv_std` shaped `(batch, groups, 1)`.
    """
    blocks = x.reshape(x.shape[0], groups, -1)
    centered = blocks - blocks.mean(axis=-1, keepdims=True)
    inv_std = 1.0 / np.sqrt(
        (centered**2).mean(axis=-1, keepdims=True) + _EPSILON
    )
    return (centered * inv_std).reshape(x.shape), inv_std


def _normalize_backward(d_x_hat, x_hat, inv_std, groups):
    """Gradient through `_normalize`: (d - mean(d) - x_hat mean(d x_hat)) / s."""
    d = d_x_hat.reshape(d_x_hat.shape[0], groups, -1)
    y = x_hat.reshape(d.shape)
    d_x = inv_std * (
        d
        - d.mean(axis=-1, keepdims=True)
        - y * (d * y).mean(axis=-1, keepdims=True)
    )
    return d_x.reshape(d_x_hat.shape)


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
    input_peephole=None,
    forget_peephole=None,
    output_peephole=None,
    gate_norm_gamma=None,
    cell_norm_gamma=None,
    cell_norm_beta=None,
    projection_kernel=None,
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
      processing order, as Keras does;
    - peepholes (all three given): `z_i += p_i * c_prev`,
      `z_f += p_f * c_prev`, `z_o += p_o * c_t`;
    - layer normalization (all three norm weights given): the gates'
      `x_t W + h_prev U` is normalized per gate (epsilon 1e-3), times
      `gate_norm_gamma`, plus `bias`; `h_t = o * tanh(LN(c_t))` with
      `cell_norm_gamma`, `cell_norm_beta`; the unnormalized `c_t` is carried;
    - projection: `h_t = (o * tanh(.)) @ projection_kernel`, and `h`, the
      outputs and `recurrent_kernel`'s rows have `R` features.

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
        recurrent_dropout_mask: Optional `(batch, R)` multiplier of
            `h_prev` in the recurrent matmul. Defaults to `None`.
        input_peephole, forget_peephole, output_peephole: Optional
            `(units,)` peephole weights, all or none. Defaults to `None`.
        gate_norm_gamma: Optional `(4 * units,)` gate norm gains; with
            `cell_norm_gamma` and `cell_norm_beta` `(units,)`, all or none.
            Defaults to `None` (no layer normalization).
        projection_kernel: Optional `(units, R)` projection. Defaults to
            `None` (no projection, `R = units`).

    Returns:
        A tuple `(outputs, last_output, h_T, c_T, cache)`: `outputs`
        `(batch, timesteps, R)` in Keras's order (processing order),
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
    kernel, units = _check_kernel(kernel, input_dim)
    projection_kernel, r_units = _check_projection(projection_kernel, units)
    variant = _check_variant_weights(
        units,
        input_peephole=input_peephole,
        forget_peephole=forget_peephole,
        output_peephole=output_peephole,
        gate_norm_gamma=gate_norm_gamma,
        cell_norm_gamma=cell_norm_gamma,
        cell_norm_beta=cell_norm_beta,
    )
    peepholes = variant["input_peephole"] is not None
    layer_norm = variant["gate_norm_gamma"] is not None
    recurrent_kernel = _as_float64("recurrent_kernel", recurrent_kernel, 2)
    _check_shape("recurrent_kernel", recurrent_kernel, (r_units, 4 * units))
    h0 = _as_float64("h0", h0, 2)
    _check_shape("h0", h0, (batch, r_units))
    c0 = _as_float64("c0", c0, 2)
    _check_shape("c0", c0, (batch, units))
    if bias is not None:
        bias = _as_float64("bias", bias, 1)
        _check_shape("bias", bias, (4 * units,))
    mask, input_dropout_mask, recurrent_dropout_mask = _check_masks(
        mask,
        input_dropout_mask,
        recurrent_dropout_mask,
        (batch, timesteps, input_dim, r_units),
    )

    # Work in processing order from here on; the backward pass undoes this.
    x = np.where(mask[:, :, None], x, 0.0)
    if go_backwards:
        x, mask = x[:, ::-1], mask[:, ::-1]
    x_dropped = (
        x if input_dropout_mask is None else x * input_dropout_mask[:, None]
    )

    weights = dict(
        kernel=kernel,
        recurrent_kernel=recurrent_kernel,
        bias=bias,
        projection_kernel=projection_kernel,
        variant=variant,
    )
    h_prev, c_prev = h0, c0
    out_prev = np.zeros((batch, r_units))
    outputs = np.empty((batch, timesteps, r_units))
    steps = []
    for t in range(timesteps):
        h_new, c_new, step = _forward_step(
            x_dropped[:, t], h_prev, c_prev, weights, recurrent_dropout_mask
        )
        steps.append(step)
        # Keras's masking: a padded step keeps both states; its output is
        # zeros or the previous step's output.
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
        variant=variant if (peepholes or layer_norm) else {},
        peepholes=peepholes,
        layer_norm=layer_norm,
        projection_kernel=projection_kernel,
    )
    return outputs, outputs[:, -1].copy(), h_prev, c_prev, cache


def _check_kernel(kernel, input_dim):
    """`kernel` as float64, and `units` read from its shape."""
    kernel = _as_float64("kernel", kernel, 2)
    if kernel.shape[0] != input_dim or kernel.shape[1] % 4:
        raise ValueError(
            "Argument `kernel` must have shape (input_dim, 4 * units) with "
            f"input_dim={input_dim}; received {kernel.shape}."
        )
    return kernel, kernel.shape[1] // 4


def _check_projection(projection_kernel, units):
    """`projection_kernel` as float64 (or `None`), and the width R of h."""
    if projection_kernel is None:
        return None, units
    projection_kernel = _as_float64("projection_kernel", projection_kernel, 2)
    if projection_kernel.shape[0] != units:
        raise ValueError(
            "Argument `projection_kernel` must have shape (units, R) with "
            f"units={units}; received {projection_kernel.shape}."
        )
    return projection_kernel, projection_kernel.shape[1]


def _check_variant_weights(units, **weights):
    """The peephole and norm weights by name, float64 or `None`.

    Each group (the three peepholes, the three norm weights) is given
    whole or not at all.
    """
    variant = {name: weights[name] for name in TENSOR_NAMES[6:12]}
    for group in (_PEEPHOLES, _NORMS):
        given = [variant[name] is not None for name in group]
        if any(given) and not all(given):
            raise ValueError(
                f"Arguments {', '.join(f'`{n}`' for n in group)} must be "
                "given together (all or none)."
            )
        for name in group:
            if variant[name] is not None:
                size = 4 * units if name == "gate_norm_gamma" else units
                variant[name] = _as_float64(name, variant[name], 1)
                _check_shape(name, variant[name], (size,))
    return variant


def _check_masks(mask, input_dropout_mask, recurrent_dropout_mask, sizes):
    """The padding mask (all `True` when `None`) and the dropout masks."""
    batch, timesteps, input_dim, r_units = sizes
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
            "recurrent_dropout_mask", recurrent_dropout_mask, (batch, r_units)
        )
    return mask, input_dropout_mask, recurrent_dropout_mask


def _forward_step(x_t, h_prev, c_prev, weights, recurrent_dropout_mask):
    """One unmasked step of the LSTM equations: `(h_t, c_t, step)`.

    `x_t` is the (dropped-out) input at this step; `step` keeps what
    `reference_backward` needs from it.
    """
    variant = weights["variant"]
    step = {}
    h_in = (
        h_prev
        if recurrent_dropout_mask is None
        else h_prev * recurrent_dropout_mask
    )
    z = x_t @ weights["kernel"] + h_in @ weights["recurrent_kernel"]
    if variant["gate_norm_gamma"] is not None:
        step["gates_hat"], step["gates_inv_std"] = _normalize(z, 4)
        z = step["gates_hat"] * variant["gate_norm_gamma"]
    if weights["bias"] is not None:
        z = z + weights["bias"]
    input_gate, forget_gate, candidate, c_new, output_gate = _gates(
        z, c_prev, variant
    )
    tanh_c = np.tanh(_cell_output(c_new, variant, step))
    h_new = output_gate * tanh_c
    if weights["projection_kernel"] is not None:
        step["unprojected"] = h_new
        h_new = h_new @ weights["projection_kernel"]
    step.update(
        h_prev=h_prev,
        h_in=h_in,
        c_prev=c_prev,
        c=c_new,
        input_gate=input_gate,
        forget_gate=forget_gate,
        candidate=candidate,
        output_gate=output_gate,
        tanh_c=tanh_c,
    )
    return h_new, c_new, step


def _gates(z, c_prev, variant):
    """The gates and `c_t` from the pre-activations `z` (peepholes added).

    Returns `(input_gate, forget_gate, candidate, c_t, output_gate)`.
    """
    z_i, z_f, z_c, z_o = np.split(z, 4, axis=-1)
    peepholes = variant["input_peephole"] is not None
    if peepholes:
        z_i = z_i + variant["input_peephole"] * c_prev
        z_f = z_f + variant["forget_peephole"] * c_prev
    input_gate = _sigmoid(z_i)
    forget_gate = _sigmoid(z_f)
    candidate = np.tanh(z_c)
    c_new = forget_gate * c_prev + input_gate * candidate
    if peepholes:
        # The output gate looks at the new cell state, not c_prev.
        z_o = z_o + variant["output_peephole"] * c_new
    output_gate = _sigmoid(z_o)
    return input_gate, forget_gate, candidate, c_new, output_gate


def _cell_output(c_new, variant, step):
    """What `tanh` reads: `LN(c_t)` with gain and shift, or `c_t` itself."""
    if variant["cell_norm_gamma"] is None:
        return c_new
    step["c_hat"], step["c_inv_std"] = _normalize(c_new, 1)
    return (
        step["c_hat"] * variant["cell_norm_gamma"] + variant["cell_norm_beta"]
    )


def reference_backward(
    cache, d_outputs=None, d_h_T=None, d_c_T=None, return_deltas=False
):
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

    The variants add their terms: a projection turns `delta_h_t` into
    `delta_h_t P^T` before the equations above (`dP += m_t^T delta_h_t`);
    the output peephole adds `delta_z_o * p_o` to `delta_c_t` and the input
    and forget peepholes `delta_z_i * p_i + delta_z_f * p_f` to
    `delta_c_{t-1}`; layer normalization backpropagates through each
    normalization, `d x = (d x_hat - mean(d x_hat)
    - x_hat * mean(d x_hat * x_hat)) / sigma`.

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
        return_deltas: Also return the per-step gradients. Defaults to
            `False`.

    Returns:
        A dict with float64 gradients for `"x"`, `"h0"`, `"c0"`, `"kernel"`,
        `"recurrent_kernel"` and `"bias"` (`None` when the forward pass had
        no bias), and for each variant weight the forward pass had. With
        `return_deltas=True`, a tuple `(gradients, deltas)` with `deltas` a
        dict of arrays in processing order: `"h"` `(batch, T, R)` and `"c"`
        `(batch, T, units)`, the total gradients with respect to each step's
        `h_t` and `c_t`, and `"z"` `(batch, T, 4 * units)` with respect to
        the gates' pre-activations (zeros at masked steps).

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
    units = kernel.shape[1] // 4
    r_units = recurrent_kernel.shape[0]
    variant = cache["variant"]
    projection_kernel = cache["projection_kernel"]
    d_variant = {name: np.zeros_like(v) for name, v in variant.items()}
    if projection_kernel is not None:
        d_variant["projection_kernel"] = np.zeros_like(projection_kernel)
    deltas = {
        "h": np.zeros((batch, timesteps, r_units)),
        "c": np.zeros((batch, timesteps, units)),
        "z": np.zeros((batch, timesteps, 4 * units)),
    }

    d_outputs = _upstream("d_outputs", d_outputs, (batch, timesteps, r_units))
    delta_h = _upstream("d_h_T", d_h_T, (batch, r_units)).copy()
    delta_c = _upstream("d_c_T", d_c_T, (batch, units)).copy()

    d_x = np.zeros_like(x_dropped)
    d_kernel = np.zeros_like(kernel)
    d_recurrent_kernel = np.zeros_like(recurrent_kernel)
    d_bias = np.zeros(4 * units)
    # Gradient reaching an output that a later masked step copied forward
    # (zero_output_for_mask=False): it belongs to this step's output.
    delta_out_carried = np.zeros((batch, r_units))

    for t in reversed(range(timesteps)):
        step = cache["steps"][t]
        keep = mask[:, t, None]
        delta_out = d_outputs[:, t] + delta_out_carried

        # Where the step is real, its h_t is both the output and the state
        # handed to t + 1, so both gradients land on it; where masked, the
        # cell's result was discarded and gets no gradient at all.
        delta_h_t = np.where(keep, delta_out + delta_h, 0.0)
        delta_c_t = np.where(keep, delta_c, 0.0)
        deltas["h"][:, t] = delta_h_t

        delta_c_t, delta_z_o = _backward_cell_output(
            cache, step, delta_h_t, delta_c_t, d_variant
        )
        deltas["c"][:, t] = delta_c_t
        delta_z, delta_c_prev = _backward_gates(
            cache, step, delta_c_t, delta_z_o, d_variant
        )
        deltas["z"][:, t] = delta_z
        d_bias += delta_z.sum(axis=0)
        # delta_a: the gradient of x_t W + h_in U, before any normalization.
        delta_a = _backward_gate_norm(cache, step, delta_z, d_variant)
        d_kernel += x_dropped[:, t].T @ delta_a
        # The recurrent weights saw the dropped-out h_prev, not h_prev.
        d_recurrent_kernel += step["h_in"].T @ delta_a
        d_x[:, t] = delta_a @ kernel.T

        delta_h_in = delta_a @ recurrent_kernel.T
        if recurrent_dropout_mask is not None:
            delta_h_in = delta_h_in * recurrent_dropout_mask
        # A masked step forwarded h_prev and c_prev untouched, so their
        # gradients pass straight through it to t - 1.
        delta_h = np.where(keep, delta_h_in, delta_h)
        delta_c = np.where(keep, delta_c_prev, delta_c)
        if cache["zero_output_for_mask"]:
            delta_out_carried = np.zeros((batch, r_units))
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
    gradients = {
        "x": np.ascontiguousarray(d_x),
        "h0": delta_h,
        "c0": delta_c,
        "kernel": d_kernel,
        "recurrent_kernel": d_recurrent_kernel,
        "bias": d_bias if cache["use_bias"] else None,
        **d_variant,
    }
    if return_deltas:
        return gradients, deltas
    return gradients


def _upstream(name, value, shape):
    """A gradient given to `reference_backward`, as float64; zeros if None."""
    if value is None:
        return np.zeros(shape)
    value = np.asarray(value, dtype=np.float64)
    _check_shape(name, value, shape)
    return value


def _backward_cell_output(cache, step, delta_h_t, delta_c_t, d_variant):
    """From `delta_h_t` back through `h_t = o * tanh(c_t)` (and the variants'
    projection, cell normalization and output peephole).

    Returns `(delta_c_t, delta_z_o)`: the total gradient reaching `c_t` and
    the output gate's pre-activation gradient. Adds to `d_variant`.
    """
    variant = cache["variant"]
    projection_kernel = cache["projection_kernel"]
    output_gate = step["output_gate"]
    tanh_c = step["tanh_c"]
    # m_t = o * tanh(c_out) is h_t itself unless it is projected.
    delta_m = delta_h_t
    if projection_kernel is not None:
        d_variant["projection_kernel"] += step["unprojected"].T @ delta_h_t
        delta_m = delta_h_t @ projection_kernel.T
    # c_t feeds h_t through tanh (and the cell norm), on top of what t + 1
    # sent back (that already carries its factor f_{t+1}: see
    # `_backward_gates`'s delta_c_prev).
    delta_c_out = delta_m * output_gate * _dtanh(tanh_c)
    if cache["layer_norm"]:
        d_variant["cell_norm_gamma"] += (delta_c_out * step["c_hat"]).sum(0)
        d_variant["cell_norm_beta"] += delta_c_out.sum(axis=0)
        delta_c_out = _normalize_backward(
            delta_c_out * variant["cell_norm_gamma"],
            step["c_hat"],
            step["c_inv_std"],
            1,
        )
    delta_z_o = delta_m * tanh_c * _dsigmoid(output_gate)
    delta_c_t = delta_c_t + delta_c_out
    if cache["peepholes"]:
        # The output gate saw c_t through its peephole.
        delta_c_t = delta_c_t + delta_z_o * variant["output_peephole"]
        d_variant["output_peephole"] += (delta_z_o * step["c"]).sum(0)
    return delta_c_t, delta_z_o


def _backward_gates(cache, step, delta_c_t, delta_z_o, d_variant):
    """From `delta_c_t` back through `c_t = f * c_{t-1} + i * g`.

    Returns `(delta_z, delta_c_prev)`: the gates' pre-activation gradients
    `(batch, 4 * units)` in Keras's gate order, and the gradient reaching
    `c_{t-1}` through this step (the forget gate, and the input and forget
    peepholes). Adds to `d_variant`.
    """
    variant = cache["variant"]
    units = delta_c_t.shape[-1]
    input_gate = step["input_gate"]
    forget_gate = step["forget_gate"]
    candidate = step["candidate"]
    delta_z = np.concatenate(
        [
            delta_c_t * candidate * _dsigmoid(input_gate),
            delta_c_t * step["c_prev"] * _dsigmoid(forget_gate),
            delta_c_t * input_gate * _dtanh(candidate),
            delta_z_o,
        ],
        axis=-1,
    )
    delta_z_i, delta_z_f = delta_z[:, :units], delta_z[:, units : 2 * units]
    delta_c_prev = delta_c_t * forget_gate
    if cache["peepholes"]:
        d_variant["input_peephole"] += (delta_z_i * step["c_prev"]).sum(0)
        d_variant["forget_peephole"] += (delta_z_f * step["c_prev"]).sum(0)
        delta_c_prev = (
            delta_c_prev
            + delta_z_i * variant["input_peephole"]
            + delta_z_f * variant["forget_peephole"]
        )
    return delta_z, delta_c_prev


def _backward_gate_norm(cache, step, delta_z, d_variant):
    """From the gates' pre-activations back to `x_t W + h_in U`: through the
    gate normalization where there is one (adding to `d_variant`), else
    `delta_z` itself."""
    if not cache["layer_norm"]:
        return delta_z
    variant = cache["variant"]
    d_variant["gate_norm_gamma"] += (delta_z * step["gates_hat"]).sum(0)
    return _normalize_backward(
        delta_z * variant["gate_norm_gamma"],
        step["gates_hat"],
        step["gates_inv_std"],
        4,
    )
