"""Tests for `lstm_keras.gradcheck`: the checker, and the layer through it.

Three independent computations meet here: the hand-derived NumPy BPTT, finite
differences (of the NumPy forward, and of the real layer's forward), and the
backend's autodiff of the real layer. Each test compares two of them with a
threshold; the negative tests show that the comparisons can fail.
"""

import keras
import numpy as np
import pytest

import lstm_keras
from lstm_keras import gradcheck
from lstm_keras.gradcheck import autodiff
from lstm_keras.gradcheck import reference
from training import gradcheck as gradcheck_command

BACKEND = keras.backend.backend()
B, T, D, H = 2, 5, 3, 4


# ---------------------------------------------------------------------------
# Helpers: random problems for the pure-NumPy tests.
# ---------------------------------------------------------------------------


def _problem(rng, mask=None, dropout=False, use_bias=True):
    values = {
        "x": rng.normal(size=(B, T, D)),
        "h0": 0.5 * rng.normal(size=(B, H)),
        "c0": 0.5 * rng.normal(size=(B, H)),
        "kernel": 0.6 * rng.normal(size=(D, 4 * H)),
        "recurrent_kernel": 0.6 * rng.normal(size=(H, 4 * H)),
    }
    if use_bias:
        values["bias"] = 0.3 * rng.normal(size=(4 * H,))
    masks = {}
    if dropout:
        # Exactly the kind of masks Keras draws: 0 or 1 / (1 - rate).
        masks["input_dropout_mask"] = (rng.random((B, D)) > 0.3) / 0.7
        masks["recurrent_dropout_mask"] = (rng.random((B, H)) > 0.25) / 0.75
        assert (masks["input_dropout_mask"] == 0).any()
    return values, masks


def _masks():
    right = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    left = right[:, ::-1].copy()
    holes = np.array([[1, 0, 1, 1, 0], [0, 1, 0, 1, 1]], bool)
    empty_row = np.array([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    return {
        "none": None,
        "right": right,
        "left": left,
        "holes": holes,
        "empty_row": empty_row,
    }


REFERENCE_CASES = {
    "plain": dict(mask="none"),
    "right": dict(mask="right"),
    "left": dict(mask="left"),
    "holes": dict(mask="holes"),
    "holes_zero_output": dict(mask="holes", zero_output_for_mask=True),
    "backwards_right": dict(mask="right", go_backwards=True),
    "backwards_holes_zero": dict(
        mask="holes", go_backwards=True, zero_output_for_mask=True
    ),
    "empty_row": dict(mask="empty_row"),
    "dropout": dict(mask="none", dropout=True),
    "dropout_backwards_left": dict(
        mask="left", dropout=True, go_backwards=True
    ),
    "no_bias": dict(mask="right", use_bias=False),
}


def _reference_case(rng, case):
    case = dict(case)
    mask = _masks()[case.pop("mask")]
    values, masks = _problem(
        rng,
        dropout=case.pop("dropout", False),
        use_bias=case.pop("use_bias", True),
    )
    options = dict(mask=mask, **masks, **case)
    return values, options


def _reference_loss(values, options, cotangents):
    outputs, last, h_t, c_t, _ = gradcheck.reference_forward(
        values["x"],
        values["h0"],
        values["c0"],
        values["kernel"],
        values["recurrent_kernel"],
        values.get("bias"),
        **options,
    )
    return (
        np.sum(outputs * cotangents["outputs"])
        + np.sum(last * cotangents["last"])
        + np.sum(h_t * cotangents["h"])
        + np.sum(c_t * cotangents["c"])
    )


def _reference_gradients(values, options, cotangents):
    *_, cache = gradcheck.reference_forward(
        values["x"],
        values["h0"],
        values["c0"],
        values["kernel"],
        values["recurrent_kernel"],
        values.get("bias"),
        **options,
    )
    # The last output is outputs[:, -1]: its gradient joins that slot.
    d_outputs = cotangents["outputs"].copy()
    d_outputs[:, -1] += cotangents["last"]
    return gradcheck.reference_backward(
        cache, d_outputs, cotangents["h"], cotangents["c"]
    )


def _cotangents(rng):
    return {
        "outputs": rng.normal(size=(B, T, H)),
        "last": rng.normal(size=(B, H)),
        "h": rng.normal(size=(B, H)),
        "c": rng.normal(size=(B, H)),
    }


def _worst_fd_error(values, options, cotangents):
    grads = _reference_gradients(values, options, cotangents)
    fd = gradcheck.numerical_gradients(
        lambda point: _reference_loss(point, options, cotangents), values
    )
    worst = 0.0
    for name, (indices, estimates) in fd.items():
        _, rel = gradcheck.max_errors(
            grads[name].reshape(-1)[indices], estimates
        )
        worst = max(worst, rel)
    return worst, grads


# ---------------------------------------------------------------------------
# 1. The hand-derived BPTT against finite differences of the NumPy forward.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_reference_backward_matches_finite_differences(case):
    rng = np.random.default_rng(sorted(REFERENCE_CASES).index(case))
    values, options = _reference_case(rng, REFERENCE_CASES[case])
    cotangents = _cotangents(rng)
    worst, grads = _worst_fd_error(values, options, cotangents)
    assert worst <= 1e-7, f"{case}: relative error {worst:.2e}"
    if case == "empty_row":
        # A row with no real step: its inputs get exactly nothing, and its
        # initial states exactly the final states' cotangents (its outputs
        # are copies of the constant zero output, which has no gradient).
        np.testing.assert_array_equal(grads["x"][1], 0.0)
        np.testing.assert_array_equal(grads["h0"][1], cotangents["h"][1])
        np.testing.assert_array_equal(grads["c0"][1], cotangents["c"][1])


def test_reference_backward_check_can_fail(monkeypatch):
    # The same comparison, with the sigmoid's derivative sign flipped.
    rng = np.random.default_rng(0)
    values, options = _reference_case(rng, REFERENCE_CASES["right"])
    monkeypatch.setattr(reference, "_dsigmoid", lambda s: -s * (1.0 - s))
    worst, _ = _worst_fd_error(values, options, _cotangents(rng))
    assert worst > 1e-2


def test_reference_forward_step_by_hand():
    # One step, one unit, numbers worked out by hand from the equations.
    x = np.array([[[1.0]]])
    kernel = np.array([[0.5, -0.5, 1.0, 2.0]])  # gates i, f, c, o
    recurrent_kernel = np.zeros((1, 4))
    h0, c0 = np.zeros((1, 1)), np.array([[2.0]])
    outputs, last, h, c, _ = gradcheck.reference_forward(
        x, h0, c0, kernel, recurrent_kernel
    )

    def sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))

    c_expected = sigmoid(-0.5) * 2.0 + sigmoid(0.5) * np.tanh(1.0)
    h_expected = sigmoid(2.0) * np.tanh(c_expected)
    np.testing.assert_allclose(c[0, 0], c_expected, rtol=1e-15)
    np.testing.assert_allclose(h[0, 0], h_expected, rtol=1e-15)
    np.testing.assert_array_equal(outputs[:, -1], last)


def test_reference_forward_mask_semantics():
    rng = np.random.default_rng(3)
    values, _ = _problem(rng)
    mask = _masks()["left"]
    x = values["x"].copy()
    x[~mask] = np.nan  # padding may hold anything
    args = (x, values["h0"], values["c0"], values["kernel"])
    args += (values["recurrent_kernel"], values["bias"])
    outputs, last, h_t, _, _ = gradcheck.reference_forward(*args, mask=mask)
    assert np.isfinite(outputs).all()
    # Row 1 starts with two padded steps: zero outputs there, not h0.
    np.testing.assert_array_equal(outputs[1, :2], 0.0)
    np.testing.assert_array_equal(h_t, outputs[:, -1])
    zero, *_ = gradcheck.reference_forward(
        *args, mask=_masks()["right"], zero_output_for_mask=True
    )
    np.testing.assert_array_equal(zero[1, 3:], 0.0)
    carried, *_ = gradcheck.reference_forward(*args, mask=_masks()["right"])
    np.testing.assert_array_equal(carried[1, 3], carried[1, 2])


def test_reference_validates_arguments():
    rng = np.random.default_rng(0)
    values, _ = _problem(rng)
    args = [values[k] for k in ("x", "h0", "c0", "kernel", "recurrent_kernel")]
    with pytest.raises(ValueError, match="`recurrent_kernel`"):
        gradcheck.reference_forward(*args[:4], np.zeros((H, 3 * H)))
    with pytest.raises(ValueError, match="`mask`"):
        gradcheck.reference_forward(*args, mask=np.ones((B, T + 1), bool))
    with pytest.raises(ValueError, match="`cache`"):
        gradcheck.reference_backward({})
    with pytest.raises(ValueError, match="`mask`"):
        gradcheck.check_gradients(mask="middle")
    with pytest.raises(ValueError, match="`dtype`"):
        gradcheck.check_gradients(dtype="float16")


# ---------------------------------------------------------------------------
# 2. The NumPy forward against the real layer's forward, in float64.
# ---------------------------------------------------------------------------

# Left padding (and right padding read backwards) starts a row with padded
# steps; those rows use zero initial states here, see the JAX test below.
LAYER_FORWARD_CASES = {
    "plain": dict(mask="none"),
    "right": dict(mask="right"),
    "left": dict(mask="left", zero_state=True),
    "holes_zero_output": dict(mask="holes", zero_output_for_mask=True),
    "backwards_left": dict(mask="left", go_backwards=True),
    "backwards_right": dict(mask="right", go_backwards=True, zero_state=True),
    "empty_row": dict(mask="empty_row", zero_state=True),
    "dropout": dict(mask="right", dropout=True),
}


def _layer_forward(values, options, dropout):
    """Runs a float64 `lstm_keras.LSTM` on the values; NumPy results."""
    input_mask = options.get("input_dropout_mask")
    recurrent_mask = options.get("recurrent_dropout_mask")
    with gradcheck.float64_mode():
        layer = lstm_keras.LSTM(
            H,
            return_sequences=True,
            return_state=True,
            go_backwards=options.get("go_backwards", False),
            zero_output_for_mask=options.get("zero_output_for_mask", False),
            dropout=0.3 if dropout else 0.0,
            recurrent_dropout=0.25 if dropout else 0.0,
            dtype="float64",
        )
        layer.build((B, T, D))
        layer.set_weights(
            [values["kernel"], values["recurrent_kernel"], values["bias"]]
        )
        if dropout:
            layer.cell._dropout_mask = keras.ops.convert_to_tensor(
                input_mask, "float64"
            )
            layer.cell._recurrent_dropout_mask = keras.ops.convert_to_tensor(
                recurrent_mask, "float64"
            )
        result = layer(
            values["x"],
            initial_state=[values["h0"], values["c0"]],
            mask=options["mask"],
            training=dropout,
        )
        return [keras.ops.convert_to_numpy(r) for r in result]


@pytest.mark.parametrize("case", sorted(LAYER_FORWARD_CASES))
def test_reference_forward_matches_layer(case):
    rng = np.random.default_rng(10 + sorted(LAYER_FORWARD_CASES).index(case))
    spec = dict(LAYER_FORWARD_CASES[case])
    zero_state = spec.pop("zero_state", False)
    dropout = spec.get("dropout", False)
    values, options = _reference_case(rng, spec)
    if zero_state:
        values["h0"] = np.zeros((B, H))
        values["c0"] = np.zeros((B, H))
    outputs, h_t, c_t = _layer_forward(values, options, dropout)
    assert outputs.dtype == np.float64
    ref_outputs, _, ref_h, ref_c, _ = gradcheck.reference_forward(
        values["x"],
        values["h0"],
        values["c0"],
        values["kernel"],
        values["recurrent_kernel"],
        values["bias"],
        **options,
    )
    for name, got, want in (
        ("outputs", outputs, ref_outputs),
        ("h_T", h_t, ref_h),
        ("c_T", c_t, ref_c),
    ):
        _, rel = gradcheck.max_errors(got, want)
        assert rel <= 1e-12, f"{case} {name}: relative error {rel:.2e}"


# ---------------------------------------------------------------------------
# 3. check_gradients: autodiff of the real layer vs BPTT vs finite differences.
# ---------------------------------------------------------------------------

CHECK_CASES = {
    "plain": dict(),
    "right_mask": dict(mask="right"),
    "left_mask": dict(mask="left", initial_state=False),
    "random_mask_zero_output": dict(mask="random", zero_output_for_mask=True),
    "go_backwards_state": dict(go_backwards=True, mask="left"),
    "last_output": dict(return_sequences=False, mask="right"),
    "no_state_no_bias": dict(return_state=False, use_bias=False),
    "dropout": dict(dropout=0.3, recurrent_dropout=0.25),
}


def _assert_passed(result):
    assert result.passed, str(result)
    # Every gradient tensor was checked against both references.
    names = {r.name for r in result.rows if r.kind == "gradient"}
    assert {"x", "kernel", "recurrent_kernel"} <= names
    for row in result.rows:
        assert row.ref_rel_error <= result.reference_rtol
        if result.dtype == "float64" and row.kind == "gradient":
            assert row.fd_entries == np.prod(row.shape)
            assert row.fd_rel_error <= result.fd_rtol


# float64 runs every case (with finite differences); float32 the main ones.
CHECK_PARAMS = [(case, "float64") for case in sorted(CHECK_CASES)] + [
    (case, "float32")
    for case in sorted(CHECK_CASES)
    if case not in ("no_state_no_bias", "last_output")
]


@pytest.mark.parametrize("case,dtype", CHECK_PARAMS)
def test_check_gradients_passes(case, dtype):
    result = gradcheck.check_gradients(dtype=dtype, **CHECK_CASES[case])
    _assert_passed(result)
    assert result.backend == BACKEND
    assert result.dtype == dtype
    if case == "dropout":
        input_mask, recurrent_mask = result.dropout_masks
        # The masks really drop units, so dropout is part of what passed.
        assert (input_mask == 0).any() and (input_mask > 1).any()
        assert (recurrent_mask == 0).any()
    if case == "plain":
        assert {r.name for r in result.rows} == set(
            gradcheck.TENSOR_NAMES[:6]
        ) | {
            "outputs",
            "h_T",
            "c_T",
        }


@pytest.mark.tensorflow_only
def test_recurrent_dropout_is_checked_on_the_tensorflow_fast_path(monkeypatch):
    """In float32 the C++ ops run the dropout case, recurrent mask included,
    so the check holds their backpropagation to both references."""
    from lstm_keras import dispatch
    from lstm_keras.backends.tensorflow import build
    from lstm_keras.backends.tensorflow import fast_path

    if build.load_kernels() is None:
        pytest.skip("the TensorFlow fast path's ops are not available here")
    calls = []

    def counting(layer, sequences, initial_state, mask, training):
        result = fast_path.lstm_sequence(
            layer, sequences, initial_state, mask, training
        )
        calls.append((training, layer.cell.recurrent_dropout))
        return result

    monkeypatch.setitem(dispatch._FAST_PATHS, "tensorflow", counting)
    result = gradcheck.check_gradients(
        dtype="float32", **CHECK_CASES["dropout"]
    )
    _assert_passed(result)
    assert (True, 0.25) in calls


@pytest.mark.parametrize("pad_value", [None, float("nan")], ids=["0", "nan"])
def test_check_gradients_fully_masked_row(pad_value):
    # Zero initial states: see test_leading_padding_with_initial_state.
    mask = np.ones((B, T), bool)
    mask[1] = False
    result = gradcheck.check_gradients(
        mask=mask, initial_state=False, pad_value=pad_value, seed=2
    )
    assert result.passed, str(result)
    if pad_value is None:
        assert result.row("x").fd_entries == B * T * D
    else:
        assert result.row("x").fd_rel_error is None  # x +- eps is NaN
    assert result.row("kernel").fd_rel_error <= result.fd_rtol
    for grads in (result.autodiff, result.reference):
        assert all(np.isfinite(g).all() for g in grads.values())
        np.testing.assert_array_equal(grads["x"][1], 0.0)
    assert np.abs(result.autodiff["x"][0]).min() > 0


def test_check_gradients_samples_entries():
    result = gradcheck.check_gradients(
        batch_size=3, timesteps=6, input_dim=4, units=5, fd_entries=6, seed=4
    )
    assert result.passed, str(result)
    assert result.row("recurrent_kernel").fd_entries == 6
    assert result.row("h0").shape == (3, 5)


def test_float64_mode_is_needed_off_tensorflow():
    result = gradcheck.check_gradients(
        keep_float64=False, finite_differences=False
    )
    if BACKEND == "tensorflow":
        assert result.passed and not result.float64_lifted
    else:
        # Keras demotes float64 matmuls to float32 on JAX and torch, so a
        # plain float64 layer misses the float64 thresholds there.
        assert not result.passed
        assert gradcheck.check_gradients(
            finite_differences=False
        ).float64_lifted


# Before a row's first real step the output is zero and the state is h0;
# Keras's JAX scan would emit h0 there, the layer's own masking does not.
@pytest.mark.parametrize(
    "options",
    [dict(mask="left"), dict(mask="right", go_backwards=True)],
    ids=["left", "backwards_right"],
)
def test_leading_padding_with_initial_state(options):
    result = gradcheck.check_gradients(
        dtype="float32", initial_state=True, **options
    )
    assert result.passed, str(result)


# ---------------------------------------------------------------------------
# 4. The checker can fail.
# ---------------------------------------------------------------------------


def test_check_fails_with_wrong_reference(monkeypatch):
    # A sign error in tanh's derivative: the reference is wrong, the layer is
    # not, so only the reference comparison may fail.
    monkeypatch.setattr(reference, "_dtanh", lambda t: 1.0 + t * t)
    result = gradcheck.check_gradients(mask="right")
    assert not result.passed
    assert result.row("kernel").ref_rel_error > 1e-3
    assert result.row("kernel").fd_rel_error <= 1e-6


def test_check_fails_with_corrupted_autodiff(monkeypatch):
    original = autodiff._LayerProbe.gradients

    def corrupted(self, cotangents):
        grads = original(self, cotangents)
        kernel = grads["recurrent_kernel"]
        kernel[1, 2] += 1e-5 * np.abs(kernel).max()
        return grads

    monkeypatch.setattr(autodiff._LayerProbe, "gradients", corrupted)
    result = gradcheck.check_gradients()
    assert not result.passed
    row = result.row("recurrent_kernel")
    assert not row.passed
    assert 5e-6 < row.ref_rel_error < 2e-5
    assert 5e-6 < row.fd_rel_error < 2e-5
    assert result.row("kernel").passed


def test_max_errors_fails_on_nan():
    abs_error, rel_error = gradcheck.max_errors([np.nan, 1.0], [0.0, 1.0])
    assert np.isnan(abs_error) and np.isnan(rel_error)
    assert not rel_error <= 1.0
    assert gradcheck.max_errors([0.0], [0.0]) == (0.0, 0.0)
    assert gradcheck.max_errors([1.0, 3.0], [1.0, 4.0]) == (1.0, 0.25)


# ---------------------------------------------------------------------------
# 5. The command line.
# ---------------------------------------------------------------------------


def test_main_prints_table_and_exit_status(capsys):
    status = gradcheck_command.main(
        ["--config", "right-mask", "--dtype", "float64"]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert f"backend: {BACKEND}" in out
    assert "recurrent_kernel" in out and "PASSED" in out


def test_main_exit_status_on_failure(monkeypatch, capsys):
    monkeypatch.setattr(reference, "_dsigmoid", lambda s: s)
    status = gradcheck_command.main(["--config", "plain", "--dtype", "float32"])
    assert status == 1
    assert "FAILED" in capsys.readouterr().out


def test_main_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        gradcheck_command.main(["--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out


# ---------------------------------------------------------------------------
# 6. The variants: peepholes, layer normalization, projection.
# ---------------------------------------------------------------------------

VARIANT_CHECK_CASES = {
    "peepholes_right_mask": dict(use_peepholes=True, mask="right"),
    "layer_norm_left_mask": dict(
        layer_norm=True, mask="left", initial_state=False
    ),
    "projection_backwards": dict(projection_units=3, go_backwards=True),
    "all_variants_dropout": dict(
        use_peepholes=True,
        layer_norm=True,
        projection_units=2,
        mask="random",
        zero_output_for_mask=True,
        dropout=0.3,
        recurrent_dropout=0.25,
    ),
}
VARIANT_WEIGHTS = {
    "use_peepholes": {"input_peephole", "forget_peephole", "output_peephole"},
    "layer_norm": {"gate_norm_gamma", "cell_norm_gamma", "cell_norm_beta"},
    "projection_units": {"projection_kernel"},
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", sorted(VARIANT_CHECK_CASES))
def test_check_gradients_passes_with_variants(case, dtype):
    options = VARIANT_CHECK_CASES[case]
    result = gradcheck.check_gradients(dtype=dtype, **options)
    _assert_passed(result)
    checked = {r.name for r in result.rows if r.kind == "gradient"}
    for option, names in VARIANT_WEIGHTS.items():
        assert (names <= checked) == (option in options), option
    if "projection_units" in options:
        r = options["projection_units"]
        assert result.row("h0").shape == (2, r)
        assert result.row("recurrent_kernel").shape == (r, 16)


def _variant_values(rng, r_units):
    values = {
        "x": rng.normal(size=(B, T, D)),
        "h0": 0.5 * rng.normal(size=(B, r_units)),
        "c0": 0.5 * rng.normal(size=(B, H)),
        "kernel": 0.6 * rng.normal(size=(D, 4 * H)),
        "recurrent_kernel": 0.6 * rng.normal(size=(r_units, 4 * H)),
        "bias": 0.3 * rng.normal(size=(4 * H,)),
        "input_peephole": 0.5 * rng.normal(size=(H,)),
        "forget_peephole": 0.5 * rng.normal(size=(H,)),
        "output_peephole": 0.5 * rng.normal(size=(H,)),
        "gate_norm_gamma": 1.0 + 0.2 * rng.normal(size=(4 * H,)),
        "cell_norm_gamma": 1.0 + 0.2 * rng.normal(size=(H,)),
        "cell_norm_beta": 0.2 * rng.normal(size=(H,)),
        "projection_kernel": 0.6 * rng.normal(size=(H, r_units)),
    }
    return values


@pytest.mark.parametrize("mask", ["none", "holes", "left"])
def test_reference_backward_with_all_variants_matches_finite_differences(
    mask,
):
    # The NumPy reference on its own, no Keras involved.
    rng = np.random.default_rng(["none", "holes", "left"].index(mask))
    values = _variant_values(rng, r_units=2)
    options = dict(mask=_masks()[mask], go_backwards=mask == "left")
    cotangents = {
        "outputs": rng.normal(size=(B, T, 2)),
        "h": rng.normal(size=(B, 2)),
        "c": rng.normal(size=(B, H)),
    }

    def run(point):
        return gradcheck.reference_forward(
            point["x"],
            point["h0"],
            point["c0"],
            **{k: v for k, v in point.items() if k not in ("x", "h0", "c0")},
            **options,
        )

    def loss(point):
        outputs, _, h_t, c_t, _ = run(point)
        return (
            np.sum(outputs * cotangents["outputs"])
            + np.sum(h_t * cotangents["h"])
            + np.sum(c_t * cotangents["c"])
        )

    grads = gradcheck.reference_backward(
        run(values)[-1], cotangents["outputs"], cotangents["h"], cotangents["c"]
    )
    fd = gradcheck.numerical_gradients(loss, values)
    assert set(fd) == set(gradcheck.TENSOR_NAMES)
    for name, (indices, estimates) in fd.items():
        _, rel = gradcheck.max_errors(
            grads[name].reshape(-1)[indices], estimates
        )
        assert rel <= 1e-7, f"{name}: relative error {rel:.2e}"


def test_variant_check_fails_with_wrong_layer_norm_backward(monkeypatch):
    # Drop the mean-of-gradient term of the normalization's backward pass.
    def wrong(d_x_hat, x_hat, inv_std, groups):
        d = d_x_hat.reshape(d_x_hat.shape[0], groups, -1)
        return (inv_std * d).reshape(d_x_hat.shape)

    monkeypatch.setattr(reference, "_normalize_backward", wrong)
    assert gradcheck.check_gradients(use_peepholes=True).passed
    result = gradcheck.check_gradients(layer_norm=True)
    assert not result.passed
    assert result.row("kernel").ref_rel_error > 1e-3
    assert result.row("kernel").fd_rel_error <= 1e-6


def test_reference_rejects_partial_variant_weights():
    rng = np.random.default_rng(0)
    values = _variant_values(rng, r_units=H)
    args = [values[k] for k in ("x", "h0", "c0", "kernel", "recurrent_kernel")]
    with pytest.raises(ValueError, match="`input_peephole`.*together"):
        gradcheck.reference_forward(
            *args, input_peephole=values["input_peephole"]
        )
    with pytest.raises(ValueError, match="`projection_kernel`"):
        gradcheck.reference_forward(
            *args, projection_kernel=np.zeros((H + 1, 2))
        )


def test_main_runs_the_variant_configurations(capsys):
    assert {"peepholes", "layer-norm", "projection", "all-variants"} <= set(
        gradcheck.CONFIGURATIONS
    )
    status = gradcheck_command.main(
        ["--config", "all-variants", "--dtype", "float32"]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "projection_kernel" in out and "gate_norm_gamma" in out
