"""The check: autodiff vs the NumPy reference vs finite differences.

`check_gradients` builds a small `lstm_keras.LSTM` with random weights on the
active Keras backend, computes its gradients three ways (`_LayerProbe`'s
autodiff, `reference_backward`, `numerical_gradients`) and returns a
`GradcheckResult`: one `TensorCheck` row per tensor, with the errors between
the three and whether they are within the thresholds (`DEFAULT_RTOL`,
`DEFAULT_FD_RTOL`). `_draw_mask` draws the padding patterns of `MASK_KINDS`.
`TENSOR_NAMES` lives in `reference`, where `autodiff` imports it without a
cycle; it is imported here too, so `check.TENSOR_NAMES` works as well.
"""

import dataclasses

import keras
import numpy as np
from keras import ops

import lstm_keras
from lstm_keras.gradcheck.autodiff import _LayerProbe
from lstm_keras.gradcheck.numerics import float64_mode
from lstm_keras.gradcheck.numerics import max_errors
from lstm_keras.gradcheck.numerics import numerical_gradients
from lstm_keras.gradcheck.reference import TENSOR_NAMES
from lstm_keras.gradcheck.reference import reference_backward
from lstm_keras.gradcheck.reference import reference_forward
from lstm_keras.lstm_cell import check_positive_int

MASK_KINDS = ("right", "left", "random")
"""Named padding patterns `check_gradients` can draw (or pass an array)."""

DEFAULT_RTOL = {"float64": 1e-7, "float32": 1e-4}
"""Relative error allowed between autodiff and the reference BPTT."""

DEFAULT_FD_RTOL = 1e-6
"""Relative error allowed between autodiff and finite differences."""


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
    use_peepholes=False,
    layer_norm=False,
    projection_units=None,
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
        use_peepholes: Layer option; its three peephole weights are drawn
            at random (not zeros) and checked. Defaults to `False`.
        layer_norm: Layer option; the norm gains and shift are drawn
            around their initial values and checked. Defaults to `False`.
        projection_units: Layer option (`None` or a positive int); the
            projection is checked too. Defaults to `None`.

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
    if projection_units is not None:
        check_positive_int("projection_units", projection_units)
    run_fd = bool(finite_differences) and dtype == "float64"
    backend = keras.backend.backend()

    with float64_mode(dtype == "float64" and bool(keep_float64)) as lifted:
        rng = np.random.default_rng(seed)
        B, T, D, H = batch_size, timesteps, input_dim, units
        R = projection_units or units
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
            "h0": draw(B, R, scale=0.5) if initial_state else np.zeros((B, R)),
            "c0": draw(B, H, scale=0.5) if initial_state else np.zeros((B, H)),
            "kernel": draw(D, 4 * H, scale=0.6),
            "recurrent_kernel": draw(R, 4 * H, scale=0.6),
        }
        if use_bias:
            values["bias"] = draw(4 * H, scale=0.3)
        if use_peepholes:
            for name in ("input_peephole", "forget_peephole"):
                values[name] = draw(H, scale=0.5)
            values["output_peephole"] = draw(H, scale=0.5)
        if layer_norm:
            values["gate_norm_gamma"] = 1.0 + draw(4 * H, scale=0.2)
            values["cell_norm_gamma"] = 1.0 + draw(H, scale=0.2)
            values["cell_norm_beta"] = draw(H, scale=0.2)
        if projection_units is not None:
            values["projection_kernel"] = draw(H, R, scale=0.6)
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
            use_peepholes=use_peepholes,
            layer_norm=layer_norm,
            projection_units=projection_units,
            dtype=dtype,
        )
        layer.build((B, T, D))
        for name in TENSOR_NAMES[3:]:
            if name in values:
                getattr(layer.cell, name).assign(values[name].astype(np_dtype))

        training = dropout > 0 or recurrent_dropout > 0
        input_dropout_mask = recurrent_dropout_mask = None
        if training:
            cell = layer.cell
            cell.reset_dropout_mask()
            cell.reset_recurrent_dropout_mask()
            dtype_zeros = ops.zeros((B, R), dtype=dtype)
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
            **{n: values[n] for n in TENSOR_NAMES[6:] if n in values},
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
        d_outputs = np.zeros((B, T, R))
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
        # Variants appear in the table's header only when they are on.
        if use_peepholes:
            config["use_peepholes"] = True
        if layer_norm:
            config["layer_norm"] = True
        if projection_units is not None:
            config["projection_units"] = projection_units
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
