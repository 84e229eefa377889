"""The TensorFlow fast path computes what the generic keras.ops path does.

Every case runs the same layer twice, on the fast path and inside
`dispatch.fast_paths_disabled()`, and compares outputs, final states and
the gradients of a weighted sum of them with respect to the inputs, the
initial states and the weights, within 1e-5 in float32.
"""

import os
import warnings

import keras
import numpy as np
import pytest

import lstm_keras
from lstm_keras import dispatch

pytestmark = pytest.mark.tensorflow_only

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    from lstm_keras.backends.tensorflow import build
    from lstm_keras.backends.tensorflow import fast_path

BATCH, TIMESTEPS, FEATURES, UNITS = 5, 7, 3, 4
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def _masks():
    right = np.ones((BATCH, TIMESTEPS), bool)
    right[:, 4:] = False
    left = np.ones((BATCH, TIMESTEPS), bool)
    left[:, :3] = False
    mixed = np.ones((BATCH, TIMESTEPS), bool)
    mixed[1, 5:] = False  # right-padded row
    mixed[2, :3] = False  # left-padded row
    mixed[3, :] = False  # fully masked row
    mixed[4, 2:4] = False  # a gap in the middle
    return {"right": right, "left": left, "mixed": mixed}


MASKS = _masks()


@pytest.fixture(scope="module")
def kernels():
    loaded = build.load_kernels()
    if loaded is None:
        pytest.skip("the custom ops could not be built on this machine")
    return loaded


# build.GEMM_ISAS, spelled out: the module imports `build` on TensorFlow only.
GEMM_ISAS = ("portable", "avx2", "avx512")


@pytest.fixture(params=GEMM_ISAS)
def gemm_isa(request, kernels):
    """Runs the test with each micro-kernel the CPU has, then the default."""
    if request.param not in build.supported_gemm_isas():
        pytest.skip(f"this CPU cannot run the {request.param} micro-kernel")
    build.set_gemm_isa(request.param)
    yield request.param
    build.set_gemm_isa(None)


@pytest.fixture
def fast_path_calls(monkeypatch):
    """Counts the calls that the fast path accepted."""
    calls = []

    def counting(layer, sequences, initial_state, mask, training):
        result = fast_path.lstm_sequence(
            layer, sequences, initial_state, mask, training
        )
        calls.append(training)
        return result

    monkeypatch.setitem(dispatch._FAST_PATHS, "tensorflow", counting)
    return calls


def _run(layer, x, mask=None, initial_state=None, training=False):
    """Outputs of the layer and gradients of a weighted sum of them."""
    x = tf.constant(x)
    watched = [x]
    if initial_state is not None:
        initial_state = [tf.constant(s) for s in initial_state]
        watched += initial_state
    with tf.GradientTape() as tape:
        tape.watch(watched)
        result = layer(
            x, mask=mask, initial_state=initial_state, training=training
        )
        results = (
            list(result) if isinstance(result, (list, tuple)) else [result]
        )
        # Distinct weights per unit, so that a swapped gate or unit shows.
        loss = sum(
            tf.reduce_sum(r * np.linspace(0.5, 1.5, r.shape[-1], dtype="f4"))
            for r in results
        )
    gradients = tape.gradient(loss, watched + layer.trainable_weights)
    return [r.numpy() for r in results], [g.numpy() for g in gradients]


def _inputs(rng, mask_name):
    """Inputs (NaN in the padding of mask `mask_name`, if any), the mask
    and random initial states."""
    x = rng.normal(size=(BATCH, TIMESTEPS, FEATURES)).astype("float32")
    mask = None
    if mask_name is not None:
        # Padding may hold anything: NaN must not reach outputs or gradients.
        mask = MASKS[mask_name]
        x[~mask] = np.nan
    states = [
        rng.normal(size=(BATCH, UNITS)).astype("float32") for _ in range(2)
    ]
    return x, mask, states


def _assert_fast_equals_generic(make_layer, x, calls, **call_kwargs):
    layer = make_layer()
    fast = _run(layer, x, **call_kwargs)
    assert calls, "the fast path declined this configuration"
    with dispatch.fast_paths_disabled():
        generic = _run(layer, x, **call_kwargs)
    for got, expected in zip(
        fast[0] + fast[1], generic[0] + generic[1], strict=True
    ):
        np.testing.assert_allclose(got, expected, **TOLERANCE)
    return fast


@pytest.mark.parametrize("mask", [None, *MASKS], ids=str)
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"return_sequences": True},
        {"return_sequences": True, "go_backwards": True},
        {"return_sequences": True, "zero_output_for_mask": True},
        {"return_state": True, "go_backwards": True},
    ],
    ids=lambda o: "-".join(o) or "default",
)
def test_matches_generic_path(kernels, fast_path_calls, rng, mask, options):
    x, mask, states = _inputs(rng, mask)
    fast = _assert_fast_equals_generic(
        lambda: lstm_keras.LSTM(UNITS, **options),
        x,
        fast_path_calls,
        mask=mask,
        initial_state=states,
    )
    assert all(np.isfinite(a).all() for a in fast[0] + fast[1])


@pytest.mark.parametrize(
    "batch, units",
    [(1, 1), (1, 32), (1, 33), (2, 3), (7, 130), (13, 5), (24, 20), (40, 16)],
)
def test_matches_generic_path_for_odd_sizes(
    kernels, gemm_isa, fast_path_calls, rng, batch, units
):
    # The recurrent matmuls run on tiles of up to 6 rows by one panel of 16
    # gate columns (AVX2, portable) or 12 rows by two panels (AVX-512), one
    # row at a time below 4 rows per thread's block: these sizes give
    # single rows, tiles of every height, odd panel counts and partly
    # filled panels, on every micro-kernel the CPU has.
    x = rng.normal(size=(batch, 6, FEATURES)).astype("float32")
    mask = np.ones((batch, 6), bool)
    mask[-1, 4:] = False
    mask[0, :2] = False
    states = [
        rng.normal(size=(batch, units)).astype("float32") for _ in range(2)
    ]
    _assert_fast_equals_generic(
        lambda: lstm_keras.LSTM(
            units, return_sequences=True, return_state=True
        ),
        x,
        fast_path_calls,
        mask=mask,
        initial_state=states,
    )


@pytest.mark.parametrize(
    "units, options",
    [
        (64, {"return_sequences": True}),
        (96, {"return_sequences": True, "go_backwards": True}),
        (128, {"return_sequences": True, "zero_output_for_mask": True}),
        (128, {"return_state": True, "go_backwards": True}),
    ],
    ids=str,
)
def test_batch_one_over_several_projection_chunks(
    kernels, fast_path_calls, rng, units, options
):
    # One batch row (whole gate panels at these sizes) over 66 steps: two
    # projection chunks of 32 steps and one of 2, which the matrix-vector
    # path projects. The mask pads on the left, leaves a gap and pads on
    # the right.
    timesteps = 66
    x = rng.normal(size=(1, timesteps, FEATURES)).astype("float32")
    mask = np.ones((1, timesteps), bool)
    mask[0, :3] = mask[0, 30:35] = mask[0, -4:] = False
    x[~mask] = np.nan
    states = [rng.normal(size=(1, units)).astype("float32") for _ in range(2)]
    layer = lstm_keras.LSTM(units, **options)
    _assert_fast_equals_generic(
        lambda: layer,
        x,
        fast_path_calls,
        mask=mask,
        initial_state=states,
    )
    # Without a tape the op saves nothing and projects into its chunk
    # buffer instead of the saved gates.
    calls_before = len(fast_path_calls)
    got = tf.nest.flatten(layer(x, mask=mask, initial_state=states))
    assert len(fast_path_calls) == calls_before + 1
    with dispatch.fast_paths_disabled():
        expected = tf.nest.flatten(layer(x, mask=mask, initial_state=states))
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g.numpy(), e.numpy(), **TOLERANCE)


def test_matches_numpy_reference(kernels, fast_path_calls, rng):
    # An independent check: the float64 NumPy forward and hand-derived BPTT.
    from lstm_keras.gradcheck import reference

    x = rng.normal(size=(BATCH, TIMESTEPS, FEATURES)).astype("float32")
    mask = MASKS["mixed"]
    h0, c0 = (rng.normal(size=(BATCH, UNITS)).astype("float32") for _ in "hc")
    layer = lstm_keras.LSTM(UNITS, return_sequences=True, return_state=True)
    (outputs, h, c), grads = _run(layer, x, mask=mask, initial_state=[h0, c0])
    assert fast_path_calls
    kernel, recurrent_kernel, bias = layer.get_weights()
    ref_outputs, _, ref_h, ref_c, cache = reference.reference_forward(
        x, h0, c0, kernel, recurrent_kernel, bias, mask=mask
    )
    weights = np.linspace(0.5, 1.5, UNITS)
    ref_grads = reference.reference_backward(
        cache,
        d_outputs=np.broadcast_to(weights, ref_outputs.shape),
        d_h_T=np.broadcast_to(weights, ref_h.shape),
        d_c_T=np.broadcast_to(weights, ref_c.shape),
    )
    for got, expected in zip(
        (outputs, h, c), (ref_outputs, ref_h, ref_c), strict=True
    ):
        np.testing.assert_allclose(got, expected, **TOLERANCE)
    names = ("x", "h0", "c0", "kernel", "recurrent_kernel", "bias")
    for got, name in zip(grads, names, strict=True):
        np.testing.assert_allclose(got, ref_grads[name], **TOLERANCE)


def test_input_dropout_matches_generic(kernels, fast_path_calls, rng):
    x = rng.normal(size=(BATCH, TIMESTEPS, FEATURES)).astype("float32")
    dropout_mask = (rng.random((BATCH, FEATURES)) > 0.5) / 0.5

    def make_layer():
        layer = lstm_keras.LSTM(UNITS, dropout=0.5, return_sequences=True)
        # Both paths must see the same mask; the seed stream would differ.
        layer.cell.get_dropout_mask = lambda step: tf.constant(
            dropout_mask, tf.float32
        )
        return layer

    _assert_fast_equals_generic(make_layer, x, fast_path_calls, training=True)
    assert fast_path_calls == [True]


@pytest.mark.parametrize("mask", [None, *MASKS], ids=str)
@pytest.mark.parametrize(
    "options",
    [
        {"return_sequences": True},
        {"go_backwards": True, "return_state": True},
        {
            "return_sequences": True,
            "zero_output_for_mask": True,
            "dropout": 0.3,
        },
    ],
    ids=lambda o: "-".join(o),
)
def test_recurrent_dropout_matches_generic(
    kernels, fast_path_calls, rng, mask, options
):
    """One mask per sequence on h_prev, forward and backpropagation, with
    every mask kind (a masked step keeps the undropped h)."""
    x, mask, states = _inputs(rng, mask)
    recurrent_mask = (rng.random((BATCH, UNITS)) > 0.4) / 0.6
    input_mask = (rng.random((BATCH, FEATURES)) > 0.3) / 0.7

    def make_layer():
        layer = lstm_keras.LSTM(UNITS, recurrent_dropout=0.4, **options)
        # Both paths must see the same masks; the seed stream would differ.
        layer.cell.get_recurrent_dropout_mask = lambda h: tf.constant(
            recurrent_mask, tf.float32
        )
        layer.cell.get_dropout_mask = lambda step: tf.constant(
            input_mask, tf.float32
        )
        return layer

    fast = _assert_fast_equals_generic(
        make_layer,
        x,
        fast_path_calls,
        mask=mask,
        initial_state=states,
        training=True,
    )
    assert fast_path_calls == [True]
    assert all(np.isfinite(a).all() for a in fast[0] + fast[1])


def test_stateful_matches_generic(kernels, fast_path_calls, rng):
    x = rng.normal(size=(BATCH, TIMESTEPS, FEATURES)).astype("float32")
    fast = lstm_keras.LSTM(UNITS, stateful=True, return_sequences=True)
    generic = lstm_keras.LSTM(UNITS, stateful=True, return_sequences=True)
    fast(x)
    generic(x)
    generic.set_weights(fast.get_weights())
    fast.reset_state()
    generic.reset_state()
    for _ in range(2):  # the second batch starts from the first's state
        got = fast(x).numpy()
        with dispatch.fast_paths_disabled():
            expected = generic(x).numpy()
        np.testing.assert_allclose(got, expected, **TOLERANCE)
    assert len(fast_path_calls) >= 2


@pytest.mark.parametrize(
    "batch, timesteps", [(9, 150), (1100, 2)], ids=["long", "wide"]
)
def test_weight_gradients_over_many_samples(
    kernels, gemm_isa, fast_path_calls, rng, batch, timesteps
):
    # The grad op sums dW and dU over 512 (row, step) samples at a time:
    # "long" needs several such sums per thread, "wide" more rows per
    # thread than one sum holds. Left padding leaves masked samples out.
    x = rng.normal(size=(batch, timesteps, FEATURES)).astype("float32")
    mask = np.ones((batch, timesteps), bool)
    mask[::3, : timesteps // 2] = False
    _assert_fast_equals_generic(
        lambda: lstm_keras.LSTM(UNITS, return_sequences=True),
        x,
        fast_path_calls,
        mask=mask,
    )


def test_weight_gradients_when_the_inputs_need_none(
    kernels, fast_path_calls, rng
):
    # Unwatched inputs tell the grad op to skip their gradient (a tape's
    # `skip_input_indices`); the weights' gradients must not change.
    x = tf.constant(rng.normal(size=(BATCH, TIMESTEPS, FEATURES)), tf.float32)
    layer = lstm_keras.LSTM(UNITS, return_sequences=True)
    layer(x)

    def weight_gradients():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x) * np.linspace(0.5, 1.5, UNITS))
        return tape.gradient(loss, layer.trainable_weights)

    got = weight_gradients()
    assert fast_path_calls
    with dispatch.fast_paths_disabled():
        expected = weight_gradients()
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g.numpy(), e.numpy(), **TOLERANCE)


def test_gradient_of_a_forward_pass_that_saved_nothing(
    kernels, fast_path_calls, rng
):
    # Traced without a tape, the op saves no gates; a tape that turns up
    # later makes its gradient rerun the forward pass to get them.
    x = tf.constant(rng.normal(size=(BATCH, TIMESTEPS, FEATURES)), tf.float32)
    layer = lstm_keras.LSTM(UNITS)
    predict = tf.function(lambda x: layer(x, training=False))
    predict(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(predict(x))
    got = tape.gradient(loss, [x, *layer.trainable_weights])
    assert fast_path_calls
    with dispatch.fast_paths_disabled():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x))
        expected = tape.gradient(loss, [x, *layer.trainable_weights])
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g.numpy(), e.numpy(), **TOLERANCE)


def test_model_fit_step_matches_generic(kernels, fast_path_calls, rng):
    x = rng.normal(size=(16, TIMESTEPS, FEATURES)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")

    def trained_weights():
        keras.utils.set_random_seed(7)
        model = keras.Sequential(
            [
                keras.Input((TIMESTEPS, FEATURES)),
                lstm_keras.LSTM(UNITS),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        return model.get_weights()

    fast = trained_weights()
    assert True in fast_path_calls, "model.fit did not use the fast path"
    with dispatch.fast_paths_disabled():
        generic = trained_weights()
    for got, expected in zip(fast, generic, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "options, dtype, training",
    [
        ({"activation": "relu"}, "float32", False),
        ({"recurrent_activation": "hard_sigmoid"}, "float32", False),
        ({"unroll": True}, "float32", False),
        ({}, "float64", False),
        ({}, "mixed_float16", False),
        ({"use_peepholes": True}, "float32", False),
        ({"layer_norm": True}, "float32", False),
        ({"projection_units": 2}, "float32", False),
    ],
    ids=str,
)
def test_declines_what_it_does_not_cover(
    kernels, fast_path_calls, rng, options, dtype, training
):
    try:
        layer = lstm_keras.LSTM(UNITS, dtype=dtype, **options)
    except TypeError:
        pytest.skip(f"this layer has no option {sorted(options)} yet")
    x = rng.normal(size=(BATCH, TIMESTEPS, FEATURES)).astype("float32")
    layer(x)  # builds
    fast_path_calls.clear()
    inputs = tf.cast(tf.constant(x), layer.compute_dtype)
    state = [tf.zeros((BATCH, s), layer.compute_dtype) for s in (UNITS,) * 2]
    with pytest.raises(NotImplementedError):
        fast_path.lstm_sequence(layer, inputs, state, None, training)
    # ...and the layer still runs, on the generic path.
    result = layer(x, training=training)
    assert not fast_path_calls
    assert np.isfinite(keras.ops.convert_to_numpy(result)).all()


def test_declines_inside_xla(kernels, fast_path_calls, rng):
    layer = lstm_keras.LSTM(UNITS)
    x = tf.constant(rng.normal(size=(BATCH, TIMESTEPS, FEATURES)), tf.float32)
    got = tf.function(lambda x: layer(x), jit_compile=True)(x)
    assert not fast_path_calls
    with dispatch.fast_paths_disabled():
        expected = layer(x)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), **TOLERANCE)


def test_disabled_by_context_manager_and_environment(
    kernels, fast_path_calls, monkeypatch, rng
):
    layer = lstm_keras.LSTM(UNITS)
    x = rng.normal(size=(BATCH, TIMESTEPS, FEATURES)).astype("float32")
    with dispatch.fast_paths_disabled():
        with dispatch.fast_paths_disabled():
            layer(x)
        layer(x)
    assert not fast_path_calls
    monkeypatch.setenv("LSTM_KERAS_FAST_PATH", "0")
    layer(x)
    assert not fast_path_calls
    monkeypatch.setenv("LSTM_KERAS_FAST_PATH", "1")
    layer(x)
    assert len(fast_path_calls) == 1


def test_build_failure_warns_once_and_falls_back(
    kernels, monkeypatch, tmp_path, rng
):
    monkeypatch.setenv("LSTM_KERAS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(build.BuildError, match="no-such-compiler"):
        build.build()
    assert not list(tmp_path.glob("*.so"))
    build.load_kernels.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="fast path is unavailable"):
            assert build.load_kernels() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert build.load_kernels() is None
            layer = lstm_keras.LSTM(UNITS)
            x = rng.normal(size=(BATCH, TIMESTEPS, FEATURES)).astype("f4")
            assert np.isfinite(layer(x).numpy()).all()
            with pytest.raises(NotImplementedError, match="built or loaded"):
                fast_path.lstm_sequence(
                    layer,
                    tf.constant(x),
                    [tf.zeros((BATCH, UNITS))] * 2,
                    None,
                    False,
                )
    finally:
        build.load_kernels.cache_clear()


def test_build_keeps_only_the_flags_the_compiler_accepts():
    # A compiler that rejects a flag must not fail the whole build for it.
    compiler = tuple(os.environ.get("CXX", "g++").split())
    flags = ("-O2", "-mdefinitely-not-an-option")
    assert build.accepted_flags(compiler, flags) == ("-O2",)
    assert build.accepted_flags(("no-such-compiler",), flags) == ()
    command = build.compile_command("out.so")
    assert set(build.accepted_flags(compiler, build.OPTIONAL_FLAGS)) <= set(
        command
    )


def test_build_reuses_the_cached_library(kernels):
    path = build.library_path()
    before = build.build()
    assert before == path
    modified = os.path.getmtime(path)
    assert build.build() == path
    assert os.path.getmtime(path) == modified


def _cpu_flags():
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(
    not os.path.exists("/proc/cpuinfo"), reason="needs Linux's /proc/cpuinfo"
)
def test_supported_micro_kernels_are_the_cpus(kernels):
    assert build.GEMM_ISAS == GEMM_ISAS
    flags = _cpu_flags()
    expected = ["portable"]
    if {"avx2", "fma"} <= flags:
        expected.append("avx2")
    if "avx512f" in flags:
        expected.append("avx512")
    assert build.supported_gemm_isas() == tuple(expected)
    # By default the products run on the best of them.
    assert build.gemm_isa() == expected[-1]


def test_set_gemm_isa_refuses_unknown_and_unsupported(kernels):
    with pytest.raises(ValueError, match="LSTM_KERAS_GEMM_ISA.*got 'sse'"):
        build.set_gemm_isa("sse")
    missing = set(GEMM_ISAS) - set(build.supported_gemm_isas())
    for name in missing:
        with pytest.raises(ValueError, match=f"cannot run the '{name}'"):
            build.set_gemm_isa(name)
    assert build.gemm_isa() == build.supported_gemm_isas()[-1]


def test_x86_micro_kernels_give_identical_results(kernels, rng):
    # Both x86 kernels compute each output element as one chain of FMAs
    # over k in order, so they agree to the bit, forward and backward, on
    # tile heights 1 to 12 and partial panels.
    if not {"avx2", "avx512"} <= set(build.supported_gemm_isas()):
        pytest.skip("needs a CPU with both AVX2/FMA and AVX-512")
    x = rng.normal(size=(26, 9, FEATURES)).astype("float32")
    results = {}
    for name in ("avx2", "avx512"):
        build.set_gemm_isa(name)
        try:
            # The same weights each time.
            keras.utils.set_random_seed(3)
            layer = lstm_keras.LSTM(37, return_sequences=True)
            results[name] = _run(layer, x)
        finally:
            build.set_gemm_isa(None)
    for got, expected in zip(
        results["avx512"][0] + results["avx512"][1],
        results["avx2"][0] + results["avx2"][1],
        strict=True,
    ):
        np.testing.assert_array_equal(got, expected)


def test_gemm_isa_from_the_environment(kernels, monkeypatch):
    # load_kernels applies LSTM_KERAS_GEMM_ISA when it loads the ops.
    monkeypatch.setenv("LSTM_KERAS_GEMM_ISA", "portable")
    try:
        build.gemm_isa_from_environment()
        assert build.gemm_isa() == "portable"
        monkeypatch.setenv("LSTM_KERAS_GEMM_ISA", "avx")
        with pytest.raises(ValueError, match="LSTM_KERAS_GEMM_ISA.*'avx'"):
            build.gemm_isa_from_environment()
    finally:
        build.set_gemm_isa(None)
