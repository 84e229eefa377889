"""The check: autodiff vs the NumPy reference vs finite differences.

`check_gradients(...)` takes its options as keywords, gathers them in a
`GradcheckConfig` (validated, with derived settings) and calls `run_check`,
which reads top to bottom in four parts:

1. the problem: random values from one seeded generator (`_draw_values`,
   `_draw_mask` for the padding patterns of `MASK_KINDS`), the layer
   holding them (`_build_layer`) and its dropout masks;
2. the three computations: `_LayerProbe`'s autodiff, the NumPy reference
   (`_reference_forward`, `_reference_gradients`) and finite differences;
3. the comparison: one `TensorCheck` row per result and gradient, within
   `DEFAULT_RTOL` / `DEFAULT_FD_RTOL` or the given thresholds;
4. the report: a `GradcheckResult`, printable as a table.

`CONFIGURATIONS` names the option sets the `lstm-keras-gradcheck` command
checks. `TENSOR_NAMES` lives in `reference`, where `autodiff` imports it
without a cycle; it is imported here too, so `check.TENSOR_NAMES` works as
well.
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

CONFIGURATIONS = {
    "plain": {},
    "right-mask": {"mask": "right"},
    "left-mask": {"mask": "left"},
    "backwards-state": {"go_backwards": True, "mask": "right"},
    "last-output": {"return_sequences": False, "mask": "right"},
    "zero-output": {"mask": "random", "zero_output_for_mask": True},
    "dropout": {"dropout": 0.3, "recurrent_dropout": 0.25},
    "peepholes": {"use_peepholes": True, "mask": "right"},
    "layer-norm": {"layer_norm": True, "mask": "left"},
    "projection": {"projection_units": 3, "go_backwards": True},
    "all-variants": {
        "use_peepholes": True,
        "layer_norm": True,
        "projection_units": 2,
        "mask": "random",
        "dropout": 0.3,
        "recurrent_dropout": 0.25,
    },
}
"""Named `check_gradients` options the `lstm-keras-gradcheck` command
checks (each with the defaults otherwise: return_state and random initial
states)."""

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


@dataclasses.dataclass
class GradcheckConfig:
    """What one gradient check runs: `check_gradients`'s arguments.

    Every field and its default is documented in `check_gradients`;
    construction validates them. The properties derive what the check
    needs from them.
    """

    # The layer's sizes.
    batch_size: int = 2
    timesteps: int = 5
    input_dim: int = 3
    units: int = 4
    # Its inputs and options.
    mask: object = None
    go_backwards: bool = False
    return_sequences: bool = True
    return_state: bool = True
    initial_state: bool = True
    zero_output_for_mask: bool = False
    use_bias: bool = True
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    dtype: str = "float64"
    # The comparisons.
    finite_differences: bool = True
    fd_entries: int | None = None
    fd_epsilon: float = 1e-6
    reference_rtol: float | None = None
    fd_rtol: float = DEFAULT_FD_RTOL
    pad_value: float | None = None
    keep_float64: bool = True
    seed: int = 0
    # The layer's variants.
    use_peepholes: bool = False
    layer_norm: bool = False
    projection_units: int | None = None

    def __post_init__(self):
        for name in ("batch_size", "timesteps", "input_dim", "units"):
            check_positive_int(name, getattr(self, name))
        if self.dtype not in DEFAULT_RTOL:
            raise ValueError(
                "Argument `dtype` must be 'float64' or 'float32'; received "
                f"{self.dtype!r}."
            )
        if not self.reference_threshold > 0:
            raise ValueError(
                "Argument `reference_rtol` must be positive; got "
                f"{self.reference_rtol!r}."
            )
        if not self.fd_rtol > 0:
            raise ValueError(
                f"Argument `fd_rtol` must be positive; got {self.fd_rtol!r}."
            )
        if self.projection_units is not None:
            check_positive_int("projection_units", self.projection_units)

    @property
    def reference_threshold(self):
        """`reference_rtol`, or the dtype's `DEFAULT_RTOL` when unset."""
        if self.reference_rtol is None:
            return DEFAULT_RTOL[self.dtype]
        return self.reference_rtol

    @property
    def output_units(self):
        """Width R of `h_t`: `projection_units` or `units`."""
        return self.projection_units or self.units

    @property
    def training(self):
        """Whether the layer runs with dropout (`training=True`)."""
        return self.dropout > 0 or self.recurrent_dropout > 0

    @property
    def run_finite_differences(self):
        """Finite differences run in float64 only."""
        return bool(self.finite_differences) and self.dtype == "float64"

    def header(self):
        """The options the result's table header shows."""
        mask = self.mask
        shown = dict(
            sizes=(self.batch_size, self.timesteps, self.input_dim, self.units),
            mask=mask if isinstance(mask, str) or mask is None else "array",
            go_backwards=self.go_backwards,
            return_sequences=self.return_sequences,
            return_state=self.return_state,
            initial_state=self.initial_state,
            zero_output_for_mask=self.zero_output_for_mask,
            use_bias=self.use_bias,
            dropout=self.dropout,
            recurrent_dropout=self.recurrent_dropout,
            seed=self.seed,
        )
        # Variants appear in the table's header only when they are on.
        if self.use_peepholes:
            shown["use_peepholes"] = True
        if self.layer_norm:
            shown["layer_norm"] = True
        if self.projection_units is not None:
            shown["projection_units"] = self.projection_units
        return shown


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
    # The arguments, exactly as passed: the config validates them.
    config = GradcheckConfig(**locals())
    return run_check(config)


def run_check(config):
    """Runs the check `config` describes (see `check_gradients`).

    Args:
        config: A `GradcheckConfig`.

    Returns:
        A `GradcheckResult`.
    """
    lift = config.dtype == "float64" and bool(config.keep_float64)
    with float64_mode(lift) as lifted:
        # One generator, drawn in a fixed order: mask, values, cotangents.
        rng = np.random.default_rng(config.seed)
        draw = _drawer(rng, np.dtype(config.dtype))
        mask = _draw_mask(config.mask, config.batch_size, config.timesteps, rng)
        values = _draw_values(config, draw, mask)
        layer = _build_layer(config, values)
        dropout_masks = _draw_dropout_masks(config, layer, values)
        probe = _LayerProbe(
            layer,
            values,
            mask,
            bool(config.initial_state),
            config.training,
            dropout_masks,
        )
        forward, cache = _reference_forward(config, values, mask, dropout_masks)
        layer_results = probe.forward(values)
        cotangents = {
            key: draw(*value.shape) for key, value in layer_results.items()
        }
        reference = _reference_gradients(config, cache, cotangents)
        autodiff = probe.gradients(cotangents)
        fd = {}
        if config.run_finite_differences:
            fd = _finite_differences(
                config, probe, values, mask, cotangents, autodiff
            )
        rows = _forward_rows(config, layer_results, forward)
        rows += _gradient_rows(config, autodiff, reference, fd)
        return GradcheckResult(
            backend=keras.backend.backend(),
            dtype=config.dtype,
            config=config.header(),
            rows=rows,
            reference_rtol=config.reference_threshold,
            fd_rtol=config.fd_rtol,
            autodiff=autodiff,
            reference=reference,
            finite_differences=fd,
            float64_lifted=lifted,
            dropout_masks=dropout_masks,
        )


# ---------------------------------------------------------------------------
# The problem: random values, the layer holding them, its dropout masks.
# ---------------------------------------------------------------------------


def _drawer(rng, np_dtype):
    def draw(*shape, scale=1.0):
        # Rounded to the layer's dtype so that the reference sees exactly
        # the numbers the layer sees.
        return (
            (scale * rng.normal(size=shape)).astype(np_dtype).astype(np.float64)
        )

    return draw


def _draw_values(config, draw, mask):
    """`{name: float64 array}` of the inputs, initial states and weights."""
    B, T, D = config.batch_size, config.timesteps, config.input_dim
    H, R = config.units, config.output_units
    values = {
        "x": draw(B, T, D),
        "h0": draw(B, R, scale=0.5)
        if config.initial_state
        else np.zeros((B, R)),
        "c0": draw(B, H, scale=0.5)
        if config.initial_state
        else np.zeros((B, H)),
        "kernel": draw(D, 4 * H, scale=0.6),
        "recurrent_kernel": draw(R, 4 * H, scale=0.6),
    }
    if config.use_bias:
        values["bias"] = draw(4 * H, scale=0.3)
    if config.use_peepholes:
        for name in ("input_peephole", "forget_peephole", "output_peephole"):
            values[name] = draw(H, scale=0.5)
    if config.layer_norm:
        values["gate_norm_gamma"] = 1.0 + draw(4 * H, scale=0.2)
        values["cell_norm_gamma"] = 1.0 + draw(H, scale=0.2)
        values["cell_norm_beta"] = draw(H, scale=0.2)
    if config.projection_units is not None:
        values["projection_kernel"] = draw(H, R, scale=0.6)
    if config.pad_value is not None and mask is not None:
        values["x"][~mask] = config.pad_value
    return values


def _build_layer(config, values):
    """An `lstm_keras.LSTM` as configured, holding the drawn weights."""
    layer = lstm_keras.LSTM(
        config.units,
        return_sequences=config.return_sequences,
        return_state=config.return_state,
        go_backwards=config.go_backwards,
        use_bias=config.use_bias,
        dropout=config.dropout,
        recurrent_dropout=config.recurrent_dropout,
        seed=config.seed,
        zero_output_for_mask=config.zero_output_for_mask,
        use_peepholes=config.use_peepholes,
        layer_norm=config.layer_norm,
        projection_units=config.projection_units,
        dtype=config.dtype,
    )
    layer.build((config.batch_size, config.timesteps, config.input_dim))
    np_dtype = np.dtype(config.dtype)
    for name in TENSOR_NAMES[3:]:
        if name in values:
            getattr(layer.cell, name).assign(values[name].astype(np_dtype))
    return layer


def _draw_dropout_masks(config, layer, values):
    """`(input_mask, recurrent_mask)`, drawn once by the layer's generator.

    Each is a NumPy array, or `None` when its rate is 0. The cell's cached
    masks are cleared afterwards, so the probe hands these in explicitly.
    """
    if not config.training:
        return None, None
    cell = layer.cell
    cell.reset_dropout_mask()
    cell.reset_recurrent_dropout_mask()
    input_mask = recurrent_mask = None
    if config.dropout > 0:
        x_step = ops.convert_to_tensor(values["x"][:, 0, :], dtype=config.dtype)
        input_mask = ops.convert_to_numpy(cell.get_dropout_mask(x_step))
    if config.recurrent_dropout > 0:
        h_zeros = ops.zeros(
            (config.batch_size, config.output_units), dtype=config.dtype
        )
        recurrent_mask = ops.convert_to_numpy(
            cell.get_recurrent_dropout_mask(h_zeros)
        )
    cell.reset_dropout_mask()
    cell.reset_recurrent_dropout_mask()
    return input_mask, recurrent_mask


# ---------------------------------------------------------------------------
# The three computations: the NumPy reference, finite differences (autodiff
# is `_LayerProbe.gradients`).
# ---------------------------------------------------------------------------


def _reference_forward(config, values, mask, dropout_masks):
    """The reference's results by name, and its cache for the backward."""
    input_mask, recurrent_mask = dropout_masks
    outputs, last_output, h_t, c_t, cache = reference_forward(
        values["x"],
        values["h0"],
        values["c0"],
        values["kernel"],
        values["recurrent_kernel"],
        values.get("bias"),
        mask=mask,
        go_backwards=config.go_backwards,
        zero_output_for_mask=config.zero_output_for_mask,
        input_dropout_mask=input_mask,
        recurrent_dropout_mask=recurrent_mask,
        **{n: values[n] for n in TENSOR_NAMES[6:] if n in values},
    )
    results = {
        "outputs": outputs,
        "last_output": last_output,
        "h_T": h_t,
        "c_T": c_t,
    }
    return results, cache


def _reference_gradients(config, cache, cotangents):
    """`reference_backward`'s gradients of the loss, `None`s dropped."""
    B, T = config.batch_size, config.timesteps
    d_outputs = np.zeros((B, T, config.output_units))
    if config.return_sequences:
        d_outputs += cotangents["outputs"]
    else:
        d_outputs[:, -1] = cotangents["last_output"]
    gradients = reference_backward(
        cache, d_outputs, cotangents.get("h_T"), cotangents.get("c_T")
    )
    return {k: v for k, v in gradients.items() if v is not None}


def _finite_differences(config, probe, values, mask, cotangents, autodiff):
    """`{name: (flat_indices, estimates)}` of the layer's own forward."""
    fd_values = {k: v for k, v in values.items() if k in autodiff}
    if config.pad_value is not None and mask is not None:
        fd_values.pop("x")  # x +- epsilon is still NaN where padded

    def loss_fn(point):
        results = probe.forward(dict(values, **point))
        return sum(float(np.sum(results[k] * cotangents[k])) for k in results)

    return numerical_gradients(
        loss_fn,
        fd_values,
        epsilon=config.fd_epsilon,
        max_entries=config.fd_entries,
        seed=config.seed,
    )


# ---------------------------------------------------------------------------
# The comparison: one `TensorCheck` row per result and per gradient.
# ---------------------------------------------------------------------------


def _forward_rows(config, layer_results, reference_results):
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
                passed=bool(ref_rel <= config.reference_threshold),
            )
        )
    return rows


def _gradient_rows(config, autodiff, reference, fd):
    rows = []
    for name in TENSOR_NAMES:
        if name not in autodiff:
            continue
        grad = autodiff[name]
        ref_abs, ref_rel = max_errors(grad, reference[name])
        passed = bool(ref_rel <= config.reference_threshold)
        fd_abs = fd_rel = None
        count = 0
        if name in fd:
            indices, estimates = fd[name]
            fd_abs, fd_rel = max_errors(grad.reshape(-1)[indices], estimates)
            count = len(indices)
            passed = passed and bool(fd_rel <= config.fd_rtol)
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
    return rows
