"""The C++ ops name the input, the dimension and both sizes of a bad shape.

Each case gives the raw ops (`LstmKerasSequence`, `LstmKerasSequenceGrad`)
valid inputs but one, and checks the error: eagerly the kernel raises
`InvalidArgumentError`; traced in a `tf.function` the shape function
raises `ValueError` first with the same message; with the sizes unknown
when traced, the kernel raises at run time.
"""

import re
import warnings

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow_only

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    from lstm_keras.backends.tensorflow import build

# Valid sizes: batch_size, timesteps, input_dim, units.
B, T, D, H = 2, 3, 5, 4


@pytest.fixture(scope="module")
def kernels():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = build.load_kernels()
    if loaded is None:
        reasons = "; ".join(str(w.message) for w in caught)
        pytest.skip(f"the custom ops could not be built here: {reasons}")
    return loaded


def _zeros(*shape):
    return tf.zeros(shape, tf.float32)


def sequence_inputs(**overrides):
    """Valid inputs of `LstmKerasSequence`, with `overrides` (shapes)."""
    shapes = {
        "x": (B, T, D),
        "kernel": (D, 4 * H),
        "bias": (4 * H,),
        "recurrent_kernel": (H, 4 * H),
        "h0": (B, H),
        "c0": (B, H),
        "mask": (B, T),
        "recurrent_mask": (B, H),
        **overrides,
    }
    return {name: _zeros(*shape) for name, shape in shapes.items()}


def grad_inputs(**overrides):
    """Valid inputs of `LstmKerasSequenceGrad`, with `overrides` (shapes)."""
    shapes = {
        "x": (B, T, D),
        "kernel": (D, 4 * H),
        "recurrent_kernel": (H, 4 * H),
        "c0": (B, H),
        "mask": (B, T),
        "recurrent_mask": (B, H),
        "h_prev_seq": (B, T, H),
        "c_seq": (B, T, H),
        "gates": (B, T, 4 * H),
        "d_outputs": (B, T, H),
        "d_h_last": (B, H),
        "d_c_last": (B, H),
        **overrides,
    }
    return {name: _zeros(*shape) for name, shape in shapes.items()}


# (input, its wrong shape, the message). The sizes are those of the input
# and of x (batch_size, timesteps, input_dim) or recurrent_kernel (units).
SEQUENCE_CASES = [
    (
        "x",
        (B, T),
        "x must be rank 3 [batch_size, timesteps, input_dim], got shape [2,3]",
    ),
    ("h0", (B + 1, H), "h0.dims(0) != batch_size: 3 vs. 2"),
    ("h0", (B, H + 2), "h0.dims(1) != units: 6 vs. 4"),
    ("c0", (1, H), "c0.dims(0) != batch_size: 1 vs. 2"),
    (
        "c0",
        (B, H, 1),
        "c0 must be rank 2 [batch_size, units], got shape [2,4,1]",
    ),
    ("kernel", (D + 1, 4 * H), "kernel.dims(0) != input_dim: 6 vs. 5"),
    ("kernel", (D, 3 * H), "kernel.dims(1) != 4 * units: 12 vs. 16"),
    (
        "recurrent_kernel",
        (H, 3 * H),
        "recurrent_kernel.dims(1) != 4 * units: 12 vs. 16",
    ),
    (
        "recurrent_kernel",
        (4 * H,),
        "recurrent_kernel must be rank 2 [units, 4 * units], got shape [16]",
    ),
    ("bias", (3 * H,), "bias.dims(0) != 4 * units: 12 vs. 16"),
    ("mask", (B, T + 1), "mask.dims(1) != timesteps: 4 vs. 3"),
    (
        "mask",
        (B, T, 1),
        "mask must be rank 2 [batch_size, timesteps], got shape [2,3,1]",
    ),
    (
        "recurrent_mask",
        (B + 1, H),
        "recurrent_mask.dims(0) != batch_size: 3 vs. 2",
    ),
]

GRAD_CASES = [
    (
        "x",
        (B, T, D, 1),
        "x must be rank 3 [batch_size, timesteps, "
        "input_dim], got shape [2,3,5,1]",
    ),
    ("kernel", (D - 1, 4 * H), "kernel.dims(0) != input_dim: 4 vs. 5"),
    (
        "recurrent_kernel",
        (H, 4 * H + 1),
        "recurrent_kernel.dims(1) != 4 * units: 17 vs. 16",
    ),
    ("c0", (B, H - 1), "c0.dims(1) != units: 3 vs. 4"),
    ("mask", (B + 1, T), "mask.dims(0) != batch_size: 3 vs. 2"),
    ("recurrent_mask", (B, H + 1), "recurrent_mask.dims(1) != units: 5 vs. 4"),
    ("h_prev_seq", (B, T - 1, H), "h_prev_seq.dims(1) != timesteps: 2 vs. 3"),
    ("c_seq", (B, T, H + 1), "c_seq.dims(2) != units: 5 vs. 4"),
    ("gates", (B, T, 3 * H), "gates.dims(2) != 4 * units: 12 vs. 16"),
    (
        "d_outputs",
        (B, T - 1, H),
        "d_outputs.dims(1) != timesteps or 1: 2 vs. 3",
    ),
    ("d_outputs", (B + 1, 1, H), "d_outputs.dims(0) != batch_size: 3 vs. 2"),
    ("d_h_last", (B, H + 1), "d_h_last.dims(1) != units: 5 vs. 4"),
    ("d_c_last", (1, H), "d_c_last.dims(0) != batch_size: 1 vs. 2"),
]


def _sequence(kernels, inputs):
    return kernels.lstm_keras_sequence(**inputs)


def _grad(kernels, inputs):
    return kernels.lstm_keras_sequence_grad(**inputs)


def _params(op, inputs, cases):
    return [
        pytest.param(
            op,
            inputs,
            (name, shape, message),
            id=f"{op.__name__[1:]}-{name}-{'x'.join(map(str, shape))}",
        )
        for name, shape, message in cases
    ]


OPS = _params(_sequence, sequence_inputs, SEQUENCE_CASES) + _params(
    _grad, grad_inputs, GRAD_CASES
)


@pytest.mark.parametrize("op, inputs, case", OPS)
def test_kernel_names_the_input_and_both_sizes(kernels, op, inputs, case):
    name, shape, message = case
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=re.escape(message)
    ):
        op(kernels, inputs(**{name: shape}))


@pytest.mark.parametrize("op, inputs, case", OPS)
def test_shape_function_names_the_input_and_both_sizes(
    kernels, op, inputs, case
):
    name, shape, message = case
    bad = inputs(**{name: shape})
    with pytest.raises(ValueError, match=re.escape(message)):
        tf.function(lambda: op(kernels, bad))()


# The kernels' own checks are the eager test's; one case of each op shows
# that they also catch what a shape function could not see.
FIRST_OF_EACH_OP = [
    OPS[0],
    next(p for p in OPS if p.values[0] is not OPS[0].values[0]),
]


@pytest.mark.parametrize("op, inputs, case", FIRST_OF_EACH_OP)
def test_kernel_checks_what_the_shape_function_could_not(
    kernels, op, inputs, case
):
    # Every shape unknown when traced: the shape functions let it through.
    name, shape, message = case
    bad = inputs(**{name: shape})
    signature = {key: tf.TensorSpec(None, tf.float32) for key in bad}
    run = tf.function(
        lambda **tensors: op(kernels, tensors)
    ).get_concrete_function(**signature)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=re.escape(message)
    ):
        run(**bad)


@pytest.mark.parametrize("traced", [False, True], ids=["eager", "traced"])
@pytest.mark.parametrize("with_masks", [True, False])
def test_valid_shapes_pass_with_or_without_masks(kernels, traced, with_masks):
    empty = {} if with_masks else {"mask": (0,), "recurrent_mask": (0,)}
    sequence = sequence_inputs(**empty)
    grad = grad_inputs(**empty, d_outputs=(B, 1, H))

    def run():
        return _sequence(kernels, sequence), _grad(kernels, grad)

    outputs, grads = tf.function(run)() if traced else run()
    assert outputs[0].shape == (B, T, H)
    assert [tuple(g.shape) for g in grads] == [
        (B, T, D),
        (D, 4 * H),
        (H, 4 * H),
        (4 * H,),
        (B, H),
        (B, H),
    ]


def test_shape_function_takes_units_from_any_input(kernels):
    # h0 and c0 of unknown shape: units comes from recurrent_kernel.
    inputs = sequence_inputs()
    signature = {
        name: tf.TensorSpec(
            None if name in ("h0", "c0") else tensor.shape, tf.float32
        )
        for name, tensor in inputs.items()
    }
    graph = (
        tf.function(lambda **tensors: _sequence(kernels, tensors))
        .get_concrete_function(**signature)
        .graph
    )
    outputs = graph.structured_outputs
    assert [tuple(o.shape) for o in outputs] == [
        (B, T, H),
        (B, H),
        (B, H),
        (B, T, H),
        (B, T, H),
        (B, T, 4 * H),
    ]
    assert np.isfinite(_sequence(kernels, inputs)[0].numpy()).all()
