"""The cuDNN fast paths compute what the generic keras.ops path does.

No GPU runs these tests, so each backend's wrapper runs with its GPU kernel
swapped for a CPU equivalent, and a GPU made to look visible:

- TensorFlow: `tf.raw_ops.CudnnRNNV3` becomes `_TensorFlowCudnnEmulation`,
  the op's documented computation (cuDNN's weight layout, sequence
  lengths) in TensorFlow ops, which refuses inputs that a mask cuDNN
  cannot run would give (left padding, fully masked rows): in eager mode
  by raising, in a `tf.function` by a failing `tf.debugging.Assert`.
- JAX: `jax.experimental.rnn.lstm` becomes its CPU reference,
  `jax.experimental.rnn.lstm_ref`, behind a `jax.debug.callback` that
  refuses the same inputs, under `jax.jit` too.
- torch: nothing is swapped: `torch._VF.lstm` runs on the CPU too, and is
  the torch backend's CPU fast path.

Every case runs the same layer on the fast path and inside
`dispatch.fast_paths_disabled()`, and compares outputs, final states and
the gradients of a weighted sum of them with respect to the inputs, the
initial states and the weights, within 1e-5 in float32. What needs a real
GPU cannot be checked here: cuDNN's own kernels, their gradients, and
device placement.
"""

import keras
import numpy as np
import pytest

import lstm_keras
from lstm_keras import dispatch

BACKEND = keras.backend.backend()
BATCH, TIMESTEPS, FEATURES, UNITS = 4, 6, 3, 5
TOLERANCE = dict(rtol=1e-5, atol=1e-5)

if BACKEND == "tensorflow":
    import tensorflow as tf

    from lstm_keras import export
    from lstm_keras.backends.tensorflow import cudnn
    from lstm_keras.backends.tensorflow import fast_path as tf_cpu_path
elif BACKEND == "jax":
    import jax
    import jax.numpy as jnp
    from jax.experimental import rnn as jax_rnn

    from lstm_keras.backends.jax import cudnn
elif BACKEND == "torch":
    import torch

    from lstm_keras.backends.torch import fast_path as cudnn


def _masks():
    right = np.ones((BATCH, TIMESTEPS), bool)
    for row, length in enumerate([6, 4, 1, 3]):
        right[row, length:] = False
    left = np.ones((BATCH, TIMESTEPS), bool)
    left[1, :2] = False
    fully_masked = right.copy()
    fully_masked[2, :] = False  # otherwise right-padded
    gap = np.ones((BATCH, TIMESTEPS), bool)
    gap[3, 1] = False  # a gap between real steps
    # All three kinds that cuDNN cannot run, each in one row.
    mixed = right & left & gap
    mixed[2, :] = False
    return {
        "right": right,
        "left": left,
        "fully_masked": fully_masked,
        "gap": gap,
        "mixed": mixed,
    }


MASKS = _masks()
# The masks cuDNN runs (as sequence lengths); the others go to the generic
# path. torch's LSTM takes no lengths, so there every mask does.
CUDNN_MASKS = {"right"} if BACKEND in ("tensorflow", "jax") else set()


# CPU stand-ins for the GPU kernels.


def _padding_matches_lengths(inputs, lengths):
    """Whether cuDNN got what a right-padded mask gives: the wrappers zero
    masked steps and the tests' real steps are never all zeros, so the
    zero steps must be exactly those at or after each row's length."""
    ops = keras.ops
    real = ops.any(ops.not_equal(inputs, 0), axis=-1)  # (batch, timesteps)
    steps = ops.arange(inputs.shape[1], dtype="int32")[None]
    expected = ops.less(steps, ops.reshape(lengths, (-1, 1)))
    return ops.logical_and(
        ops.all(ops.equal(real, expected)), ops.all(ops.greater(lengths, 0))
    )


class _TensorFlowCudnnEmulation:
    """`tf.raw_ops.CudnnRNNV3` for batch-major LSTMs, in TensorFlow ops."""

    def __init__(self):
        self.runs = tf.Variable(0)  # Counts runs, in graphs too.

    def __call__(
        self,
        *,
        input,
        input_h,
        input_c,
        params,
        sequence_lengths,
        is_training,
        rnn_mode,
        time_major,
        name=None,
    ):
        if rnn_mode != "lstm" or time_major or not is_training:
            raise AssertionError("unexpected CudnnRNNV3 attributes")
        valid = _padding_matches_lengths(input, sequence_lengths)
        message = "cuDNN got a mask that it cannot run"
        if tf.executing_eagerly():
            if not bool(valid):
                raise AssertionError(message)
            checks = [self.runs.assign_add(1)]
        else:
            checks = [
                tf.debugging.Assert(valid, [message]),
                self.runs.assign_add(1),
            ]
        with tf.control_dependencies(checks):
            return self._lstm(input, input_h, input_c, params, sequence_lengths)

    @staticmethod
    def _lstm(x, h, c, params, lengths):
        units, features = h.shape[-1], x.shape[-1]
        # cuDNN's canonical layout: input matrices W_i, W_f, W_c, W_o, each
        # (units, features), recurrent matrices U_*, then 4 input and 4
        # recurrent biases, all flattened row-major.
        sizes = [units * features] * 4 + [units * units] * 4 + [units] * 8
        parts = tf.split(params, sizes)
        w = [tf.reshape(p, [units, features]) for p in parts[:4]]
        u = [tf.reshape(p, [units, units]) for p in parts[4:8]]
        b = [parts[8 + g] + parts[12 + g] for g in range(4)]
        h, c = h[:, 0], c[:, 0]
        outputs = []
        for t in range(x.shape[1]):
            z = [
                tf.matmul(x[:, t], w[g], transpose_b=True)
                + tf.matmul(h, u[g], transpose_b=True)
                + b[g]
                for g in range(4)
            ]
            c_t = tf.sigmoid(z[1]) * c + tf.sigmoid(z[0]) * tf.tanh(z[2])
            h_t = tf.sigmoid(z[3]) * tf.tanh(c_t)
            # Past a row's length: zero output, state kept.
            live = (t < lengths)[:, None]
            h, c = tf.where(live, h_t, h), tf.where(live, c_t, c)
            outputs.append(tf.where(live, h_t, 0.0))
        empty = tf.zeros([0])
        return tf.stack(outputs, axis=1), h[:, None], c[:, None], empty, empty


class _JaxCudnnReference:
    """`jax.experimental.rnn.lstm` by its CPU reference, `lstm_ref`."""

    def __init__(self):
        self.runs = []  # One entry per run, recorded under jax.jit too.

    def _record(self, valid):
        self.runs.append(bool(valid))
        if not valid:
            raise AssertionError("cuDNN got a mask that it cannot run")

    def __call__(
        self,
        x,
        h_0,
        c_0,
        weights,
        seq_lengths,
        input_size,
        hidden_size,
        num_layers,
        dropout,
        bidirectional,
        precision=None,
    ):
        valid = _padding_matches_lengths(x, seq_lengths)
        jax.debug.callback(self._record, valid)
        unpacked = jax_rnn.unpack_lstm_weights(
            weights, input_size, hidden_size, num_layers, bidirectional
        )
        return jax_rnn.lstm_ref(
            x,
            h_0,
            c_0,
            *unpacked,
            seq_lengths,
            input_size,
            hidden_size,
            num_layers,
            dropout,
            bidirectional,
        )


class _Calls:
    """Counts the calls that the first registered fast path accepted, and
    the runs of the (emulated) GPU kernel."""

    def __init__(self, kernel=None):
        self.accepted = []
        self.kernel = kernel

    @property
    def kernel_runs(self):
        if BACKEND == "tensorflow":
            return int(self.kernel.runs.numpy())
        if BACKEND == "jax":
            return len(self.kernel.runs)
        return len(self.accepted)


@pytest.fixture
def gpu(monkeypatch):
    """A GPU that looks visible, its kernel run on the CPU."""
    first, *rest = dispatch.registered_fast_paths()
    calls = _Calls()

    def counting(layer, sequences, initial_state, mask, training):
        result = first(layer, sequences, initial_state, mask, training)
        calls.accepted.append(training)
        return result

    monkeypatch.setitem(dispatch._FAST_PATHS, BACKEND, (counting, *rest))
    if BACKEND == "tensorflow":
        calls.kernel = _TensorFlowCudnnEmulation()
        monkeypatch.setattr(cudnn, "_gpu_visible", lambda: True)
        # As on a GPU: the CPU ops decline, so what cuDNN declines is generic.
        monkeypatch.setattr(tf_cpu_path, "_gpu_visible", lambda: True)
        monkeypatch.setattr(tf.raw_ops, "CudnnRNNV3", calls.kernel)
    elif BACKEND == "jax":
        calls.kernel = _JaxCudnnReference()
        monkeypatch.setattr(cudnn, "_gpu_available", lambda: True)
        monkeypatch.setattr(jax_rnn, "lstm", calls.kernel)
    return calls


# Running a layer, with gradients, on each backend.


def _loss(results):
    # Distinct weights per unit, so that a swapped gate or unit shows.
    return sum(
        keras.ops.sum(
            r
            * keras.ops.convert_to_tensor(
                np.linspace(0.5, 1.5, r.shape[-1], dtype="f4")
            )
        )
        for r in results
    )


def _as_list(result):
    return list(result) if isinstance(result, (list, tuple)) else [result]


def _runner(layer, training=False, traced=False):
    """`run(x, mask=None, initial_state=None)`: the layer's outputs and the
    gradients of `_loss` of them, as NumPy arrays. `traced` runs it in one
    `tf.function` or `jax.jit`, traced once for inputs of one shape, with
    the mask an argument so that its value is unknown to the trace."""
    if BACKEND == "tensorflow":
        return _tensorflow_runner(layer, training, traced)
    if BACKEND == "jax":
        return _jax_runner(layer, training, traced)
    return _torch_runner(layer, training)


def _run(layer, x, mask=None, initial_state=None, training=False):
    return _runner(layer, training)(x, mask, initial_state)


def _numpy(tensors):
    if BACKEND == "torch":
        tensors = [t.detach() for t in tensors]
    return [keras.ops.convert_to_numpy(t) for t in tensors]


def _tensorflow_runner(layer, training, traced):
    def differentiate(x, states, mask):
        with tf.GradientTape() as tape:
            tape.watch([x, *states])
            results = _as_list(
                layer(
                    x,
                    mask=mask,
                    initial_state=states or None,
                    training=training,
                )
            )
            loss = _loss(results)
        gradients = tape.gradient(
            loss,
            [x, *states, *layer.trainable_weights],
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
        return results, gradients

    if traced:
        differentiate = tf.function(differentiate)

    def run(x, mask=None, initial_state=None):
        states = [tf.constant(s) for s in initial_state or []]
        mask = None if mask is None else tf.constant(mask)
        results, gradients = differentiate(tf.constant(x), states, mask)
        return _numpy(results), _numpy(gradients)

    return run


def _jax_runner(layer, training, traced):
    def differentiate(x, states, trainable, non_trainable, mask):
        def loss_fn(x, states, trainable):
            result, _ = layer.stateless_call(
                trainable,
                non_trainable,
                x,
                mask=mask,
                initial_state=states or None,
                training=training,
            )
            results = _as_list(result)
            return _loss(results), results

        grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1, 2), has_aux=True)
        (_, results), (d_x, d_states, d_weights) = grad_fn(x, states, trainable)
        return results, [d_x, *d_states, *d_weights]

    if traced:
        differentiate = jax.jit(differentiate)

    def run(x, mask=None, initial_state=None):
        if not layer.built:
            layer.build(x.shape)
        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]
        states = [jnp.asarray(s) for s in initial_state or []]
        mask = None if mask is None else jnp.asarray(mask)
        results, gradients = differentiate(
            jnp.asarray(x), states, trainable, non_trainable, mask
        )
        return _numpy(results), _numpy(gradients)

    return run


def _torch_runner(layer, training):
    def run(x, mask=None, initial_state=None):
        x = torch.tensor(x, requires_grad=True)
        states = [
            torch.tensor(s, requires_grad=True) for s in initial_state or []
        ]
        mask = None if mask is None else torch.tensor(mask)
        results = _as_list(
            layer(x, mask=mask, initial_state=states or None, training=training)
        )
        weights = [w.value for w in layer.trainable_weights]
        gradients = torch.autograd.grad(_loss(results), [x, *states, *weights])
        return _numpy(results), _numpy(gradients)

    return run


def _assert_same(got, expected):
    got_values, expected_values = got[0] + got[1], expected[0] + expected[1]
    assert len(got_values) == len(expected_values)
    for g, e in zip(got_values, expected_values, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(g),
            keras.ops.convert_to_numpy(e),
            **TOLERANCE,
        )


def _inputs(rng, mask=None, features=FEATURES):
    x = rng.normal(size=(BATCH, TIMESTEPS, features)).astype("float32")
    if mask is not None:
        # Padding may hold anything: NaN must not reach outputs or gradients.
        x[~mask] = np.nan
    return x


def _states(rng):
    return [rng.normal(size=(BATCH, UNITS)).astype("float32") for _ in "hc"]


OPTIONS = [
    {},
    {"return_sequences": True, "return_state": True},
    {"return_sequences": True, "go_backwards": True},
    {"zero_output_for_mask": True, "return_state": True},
    {"return_sequences": True, "return_state": True, "go_backwards": True,
     "zero_output_for_mask": True},
]  # fmt: skip


@pytest.mark.parametrize("mask", [None, "right"], ids=str)
@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: "-".join(o) or "default"
)
def test_matches_generic_path(gpu, rng, mask, options):
    name, mask = mask, (None if mask is None else MASKS[mask])
    x, states = _inputs(rng, mask), _states(rng)
    layer = lstm_keras.LSTM(UNITS, **options)
    fast = _run(layer, x, mask, states)
    with dispatch.fast_paths_disabled():
        generic = _run(layer, x, mask, states)
    _assert_same(fast, generic)
    assert all(np.isfinite(a).all() for a in fast[0] + fast[1])
    took = mask is None or name in CUDNN_MASKS
    assert bool(gpu.accepted) == took, gpu.accepted
    assert gpu.kernel_runs == int(took)


@pytest.mark.parametrize(
    "options", [OPTIONS[0], OPTIONS[-1]], ids=["default", "all_options"]
)
def test_masks_cudnn_cannot_run_go_to_the_generic_path(gpu, rng, options):
    # Left padding, a fully masked row and a gap, each in one row: declined
    # before the kernel (which would refuse them), so the generic path runs.
    mask = MASKS["mixed"]
    x, states = _inputs(rng, mask), _states(rng)
    layer = lstm_keras.LSTM(UNITS, **options)
    fast = _run(layer, x, mask, states)
    assert not gpu.accepted and gpu.kernel_runs == 0
    with dispatch.fast_paths_disabled():
        generic = _run(layer, x, mask, states)
    _assert_same(fast, generic)


@pytest.mark.skipif(BACKEND == "torch", reason="torch runs eagerly")
def test_traced_mask_chooses_at_run_time(gpu, rng):
    # Traced, the mask's value is unknown: a cond on it runs cuDNN for the
    # right-padded mask, the generic path for the others, never asserting.
    layer = lstm_keras.LSTM(UNITS, return_sequences=True, return_state=True)
    traced = _runner(layer, traced=True)
    for name in ("right", "fully_masked", "mixed"):
        mask = MASKS[name]
        x, states = _inputs(rng, mask), _states(rng)
        runs = gpu.kernel_runs
        fast = traced(x, mask, states)
        with dispatch.fast_paths_disabled():
            generic = _run(layer, x, mask, states)
        _assert_same(fast, generic)
        assert gpu.kernel_runs - runs == int(name == "right"), name
    assert gpu.accepted  # The cond itself is the fast path's result.


def test_traced_without_mask_matches_generic(gpu, rng):
    x, states = _inputs(rng), _states(rng)
    layer = lstm_keras.LSTM(UNITS, return_sequences=True, go_backwards=True)
    fast = _runner(layer, traced=BACKEND != "torch")(x, None, states)
    with dispatch.fast_paths_disabled():
        generic = _run(layer, x, None, states)
    _assert_same(fast, generic)
    assert gpu.kernel_runs == 1


def test_input_dropout_matches_generic(gpu, rng):
    features = 8  # Enough that no row's dropout mask is all zeros.
    x = _inputs(rng, features=features)
    dropout_mask = (rng.random((BATCH, features)) > 0.5) / 0.5
    layer = lstm_keras.LSTM(UNITS, dropout=0.5, return_sequences=True)
    # Both paths must see the same mask; the seed stream would differ.
    layer.cell.get_dropout_mask = lambda step: keras.ops.convert_to_tensor(
        dropout_mask, "float32"
    )
    fast = _run(layer, x, training=True)
    with dispatch.fast_paths_disabled():
        generic = _run(layer, x, training=True)
    _assert_same(fast, generic)
    assert gpu.accepted == [True]
    # Dropout changed the result: the mask was applied, and equally.
    no_dropout = _run(layer, x, training=False)
    assert np.abs(no_dropout[0][0] - fast[0][0]).max() > 1e-3


def test_stateful_matches_generic(gpu, rng):
    x = _inputs(rng)
    fast = lstm_keras.LSTM(UNITS, stateful=True, return_sequences=True)
    generic = lstm_keras.LSTM(UNITS, stateful=True, return_sequences=True)
    fast(x)
    generic(x)
    generic.set_weights(fast.get_weights())
    fast.reset_state()
    generic.reset_state()
    gpu.accepted.clear()
    # `stateless_call` keeps no state: on JAX compare outputs only.
    run = _run if BACKEND != "jax" else lambda layer, x: ([layer(x)], [])
    for _ in range(2):  # the second batch starts from the first's state
        got = run(fast, x)
        with dispatch.fast_paths_disabled():
            expected = run(generic, x)
        _assert_same(got, expected)
    assert len(gpu.accepted) == 2


@pytest.mark.parametrize(
    "options, training",
    [
        ({"activation": "relu"}, False),
        ({"recurrent_activation": "hard_sigmoid"}, False),
        ({"use_bias": False}, False),
        ({"recurrent_dropout": 0.3}, True),
        ({"unroll": True}, False),
        pytest.param(
            {"dtype": "float64"},
            False,
            marks=pytest.mark.skipif(
                BACKEND == "jax", reason="JAX runs float64 as float32"
            ),
        ),
        ({"use_peepholes": True}, False),
        ({"layer_norm": True}, False),
        ({"projection_units": 2}, False),
    ],
    ids=str,
)
def test_declines_what_cudnn_does_not_cover(gpu, rng, options, training):
    layer = lstm_keras.LSTM(UNITS, **options)
    x = keras.ops.convert_to_tensor(_inputs(rng), layer.compute_dtype)
    layer(x)  # builds (and, for recurrent dropout, runs cuDNN: inference)
    gpu.accepted.clear()
    runs = gpu.kernel_runs
    states = [keras.ops.zeros((BATCH, size)) for size in layer.cell.state_size]
    states = [keras.ops.cast(s, layer.compute_dtype) for s in states]
    with pytest.raises(NotImplementedError):
        cudnn.lstm_sequence(layer, x, states, None, training)
    # ...and the layer still runs, on the generic path.
    result = keras.ops.convert_to_numpy(layer(x, training=training))
    assert not gpu.accepted and gpu.kernel_runs == runs
    assert np.isfinite(result).all()


def test_without_a_gpu_cudnn_declines(rng):
    layer = lstm_keras.LSTM(UNITS)
    x = keras.ops.convert_to_tensor(_inputs(rng))
    layer(x)
    states = [keras.ops.zeros((BATCH, UNITS))] * 2
    if BACKEND == "torch":
        # torch's kernel runs on the CPU too, unless that is switched off.
        cudnn.CPU_FAST_PATH, saved = False, cudnn.CPU_FAST_PATH
        try:
            with pytest.raises(NotImplementedError, match="cpu device"):
                cudnn.lstm_sequence(layer, x, states, None, False)
        finally:
            cudnn.CPU_FAST_PATH = saved
    else:
        with pytest.raises(NotImplementedError, match="GPU"):
            cudnn.lstm_sequence(layer, x, states, None, False)


@pytest.mark.skipif(BACKEND == "torch", reason="torch declines every mask")
def test_mask_is_supported_only_when_right_padded():
    supported = {
        name: bool(keras.ops.convert_to_numpy(cudnn.mask_is_supported(mask)))
        for name, mask in MASKS.items()
    }
    assert supported == {
        "right": True,
        "left": False,
        "fully_masked": False,
        "gap": False,
        "mixed": False,
    }


def test_layer_supports_jit_unless_tensorflow_cudnn_may_run(gpu):
    # cuDNN's ops have no XLA kernels: on TensorFlow, a layer that cuDNN
    # may run must keep Keras's `jit_compile="auto"` off.
    on_tensorflow = BACKEND == "tensorflow"
    assert dispatch.layer_supports_jit(lstm_keras.LSTM(3)) is not on_tensorflow
    assert lstm_keras.LSTM(3).supports_jit is not on_tensorflow
    for layer in (
        lstm_keras.LSTM(3, activation="relu"),
        lstm_keras.LSTM(3, use_cudnn=False),
        lstm_keras.LSTM(3, layer_norm=True),
    ):
        assert dispatch.layer_supports_jit(layer)
    with dispatch.fast_paths_disabled():
        assert dispatch.layer_supports_jit(lstm_keras.LSTM(3))


@pytest.mark.tensorflow_only
def test_tensorflow_order_cudnn_then_cpu_ops_then_litert_then_serving():
    from lstm_keras.backends.tensorflow import litert
    from lstm_keras.backends.tensorflow import serving

    paths = dispatch.registered_fast_paths("tensorflow")
    assert paths == (
        cudnn.lstm_sequence,
        tf_cpu_path.lstm_sequence,
        litert.lstm_sequence,
        serving.lstm_sequence,
    )


@pytest.mark.tensorflow_only
def test_tensorflow_declines_inside_xla(gpu, rng):
    layer = lstm_keras.LSTM(UNITS)
    x = tf.constant(_inputs(rng))
    got = tf.function(lambda x: layer(x), jit_compile=True)(x)
    assert not gpu.accepted and gpu.kernel_runs == 0
    with dispatch.fast_paths_disabled():
        expected = layer(x)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), **TOLERANCE)


@pytest.mark.tensorflow_only
def test_saved_models_hold_no_cudnn_op_while_a_gpu_is_visible(
    monkeypatch, tmp_path
):
    # The real op, traced only (no GPU needed): the graph is what matters.
    monkeypatch.setattr(cudnn, "_gpu_visible", lambda: True)
    monkeypatch.setattr(tf_cpu_path, "_gpu_visible", lambda: True)
    inputs = keras.Input((TIMESTEPS, FEATURES))
    outputs = lstm_keras.LSTM(UNITS)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, "softmax")(outputs))
    spec = tf.TensorSpec([None, TIMESTEPS, FEATURES], tf.float32)

    # A plain trace does hold cuDNN: the checks below can fail.
    graph = tf.function(model).get_concrete_function(spec).graph
    assert "CudnnRNNV3" in {op.type for op in graph.get_operations()}

    # Traced by tf.saved_model.save itself: the path declines.
    module = tf.Module()
    module.model = model
    module.serve = tf.function(model, input_signature=[spec])
    path = str(tmp_path / "plain")
    tf.saved_model.save(module, path, signatures=module.serve)
    assert export.nonstandard_ops(path) == set()

    # And `export_for_serving` traces with fast paths disabled.
    path = export.export_for_serving(
        model,
        tmp_path / "served",
        class_names=["a", "b"],
        litert_signature=False,
        verbose=False,
    )
    assert export.nonstandard_ops(path) == set()
