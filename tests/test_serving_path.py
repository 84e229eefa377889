"""The stock-op path that exported graphs run, held to the generic path."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

import lstm_keras
from lstm_keras import dispatch
from lstm_keras.backends.tensorflow import export_context
from lstm_keras.backends.tensorflow import serving

pytestmark = pytest.mark.tensorflow_only

FEATURES, UNITS, TIMESTEPS = 3, 5, 7


def masks(batch, rng):
    """Masks by kind: right-padded (with an empty row), left-padded, holes."""
    lengths = rng.integers(0, TIMESTEPS + 1, size=batch)
    lengths[0] = TIMESTEPS
    if batch > 2:
        lengths[1] = 0
    steps = np.arange(TIMESTEPS)
    right = steps[None] < lengths[:, None]
    holes = rng.random((batch, TIMESTEPS)) < 0.7
    holes[0] = True
    return {
        "none": None,
        "right": right,
        "left": right[:, ::-1].copy(),
        "holes": holes,
    }


def traced_for_export(layer, with_mask, with_state):
    """`layer`'s call traced as `model.export()` traces it (batch and time
    unknown), reading `W` and `U` from the stacked kernel."""
    specs = [tf.TensorSpec([None, None, FEATURES], tf.float32)]
    if with_mask:
        specs.append(tf.TensorSpec([None, None], tf.bool))
    if with_state:
        specs += [tf.TensorSpec([None, UNITS], tf.float32)] * 2

    def call(x, *rest):
        rest = list(rest)
        mask = rest.pop(0) if with_mask else None
        return layer(x, mask=mask, initial_state=rest or None)

    with export_context.export_archive_tracing():
        return tf.function(call, input_signature=specs).get_concrete_function()


def function_ops(concrete):
    graph_def = concrete.graph.as_graph_def()
    ops = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        ops.update(node.op for node in function.node_def)
    return ops


def built_layer(config, x, rng):
    """`lstm_keras.LSTM(UNITS, **config)` built on `x`, with random biases
    and peepholes (zeros would hide a swapped gate)."""
    layer = lstm_keras.LSTM(UNITS, **config)
    layer(x)
    if config.get("use_peepholes"):
        for weight in ("input", "forget", "output"):
            peephole = getattr(layer.cell, f"{weight}_peephole")
            peephole.assign(rng.normal(size=UNITS).astype("float32"))
    if layer.cell.use_bias:
        layer.cell.bias.assign(rng.normal(size=4 * UNITS).astype("float32"))
    return layer


CONFIGS = [
    dict(go_backwards=go_backwards, return_sequences=return_sequences)
    for go_backwards, return_sequences in itertools.product(
        (False, True), (False, True)
    )
] + [
    dict(return_sequences=True, zero_output_for_mask=True),
    dict(go_backwards=True, zero_output_for_mask=True, return_state=True),
    dict(return_state=True, use_bias=False),
    dict(return_sequences=True, use_peepholes=True),
    dict(go_backwards=True, use_peepholes=True, return_state=True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(c))
def test_exported_path_matches_generic_path(config, rng):
    """Each mask kind at 3 rows (BlockLSTM where right-padded) and 9 (the
    loops), through graphs traced once, as an export's: batch unknown."""
    layer = built_layer(
        config, np.zeros((1, TIMESTEPS, FEATURES), "float32"), rng
    )
    traced = {}
    for batch in (3, 9):
        x = rng.normal(size=(batch, TIMESTEPS, FEATURES)).astype("float32")
        h0, c0 = rng.normal(size=(2, batch, UNITS)).astype("float32")
        for kind, mask in masks(batch, rng).items():
            # Initial states with half of the mask kinds, which keeps the
            # traces few: both ways are covered for masked and unmasked
            # inputs.
            with_state = kind in ("right", "holes")
            key = (mask is not None, with_state)
            if key not in traced:
                traced[key] = traced_for_export(layer, *key)
                assert not any(
                    op.startswith("LstmKeras")
                    for op in function_ops(traced[key])
                )
            args = [x] + ([mask] if mask is not None else [])
            args += [h0, c0] if with_state else []
            # Padding may hold anything: NaN there must not matter.
            if mask is not None:
                args[0] = np.where(mask[:, :, None], x, np.nan).astype(
                    "float32"
                )
            got = tf.nest.flatten(traced[key](*args))
            with dispatch.fast_paths_disabled():
                expected = layer(
                    args[0],
                    mask=mask,
                    initial_state=[h0, c0] if with_state else None,
                )
            expected = tf.nest.flatten(expected)
            assert len(got) == len(expected)
            for g, e in zip(got, expected, strict=True):
                np.testing.assert_allclose(
                    g,
                    e,
                    atol=1e-5,
                    rtol=1e-5,
                    err_msg=f"batch {batch}, mask {kind}",
                )


@pytest.mark.parametrize(
    "config, batch",
    [
        (dict(go_backwards=True, use_peepholes=True, return_state=True), 3),
        (dict(return_sequences=True), 9),
    ],
    ids=["block-lstm", "packed-loops"],
)
def test_exported_path_gradients_match_generic_path(config, batch, rng):
    """What a reload fine-tuned through `TFSMLayer` trains on: every branch
    (BlockLSTM at 3 rows, the packed loops at 9) against the generic
    path's gradients, right-padded rows and initial states included."""
    x = rng.normal(size=(batch, TIMESTEPS, FEATURES)).astype("float32")
    layer = built_layer(config, x, rng)
    h0, c0 = rng.normal(size=(2, batch, UNITS)).astype("float32")
    mask = masks(batch, rng)["right"]
    served = traced_for_export(layer, True, True)
    # The export's stacked kernel stands in for W and U in the served
    # graph: their gradients are its own, stacked.
    stacked = serving.stacked_kernel(layer.cell)
    others = [w for w in layer.trainable_weights if "kernel" not in w.path]
    inputs = [tf.constant(t) for t in (x, h0, c0)]

    def gradients(call, weights):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            results = tf.nest.flatten(call())
            loss = sum(
                tf.reduce_sum(r * np.linspace(-1, 2, r.shape[-1]))
                for r in results
            )
        return [
            tf.convert_to_tensor(g)
            for g in tape.gradient(loss, inputs + weights)
        ]

    got = gradients(lambda: served(inputs[0], mask, *inputs[1:]), [stacked])
    with dispatch.fast_paths_disabled():
        expected = gradients(
            lambda: layer(inputs[0], mask=mask, initial_state=inputs[1:]),
            [layer.cell.kernel, layer.cell.recurrent_kernel] + others,
        )
    expected[3:5] = [as_stacked(*expected[3:5])]
    got_others = gradients(lambda: served(inputs[0], mask, *inputs[1:]), others)
    got += got_others[3:]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "config",
    [
        dict(),
        dict(return_sequences=True),
        dict(go_backwards=True, return_sequences=True),
        dict(return_sequences=True, zero_output_for_mask=True),
        dict(return_sequences=True, use_peepholes=True, return_state=True),
    ],
    ids=lambda c: "-".join(c) or "default",
)
@pytest.mark.parametrize("shards", [1, 2, 3])
def test_packed_loops_run_each_row_over_its_own_length(
    config, shards, rng, monkeypatch
):
    """Right-padded rows of many lengths (ties, empty and full rows, more
    shards than some lengths) through the packed loops, against the
    generic path; a batch bigger than `BLOCK_LSTM_MAX_BATCH` takes them."""
    monkeypatch.setattr(serving, "LOOP_SHARDS", shards)
    batch, timesteps = 11, 19
    x = rng.normal(size=(batch, timesteps, FEATURES)).astype("float32")
    layer = built_layer(config, x, rng)
    lengths = rng.integers(0, timesteps + 1, size=batch)
    lengths[:4] = [timesteps, 0, 5, 5]
    mask = np.arange(timesteps)[None] < lengths[:, None]
    specs = [
        tf.TensorSpec([None, None, FEATURES], tf.float32),
        tf.TensorSpec([None, None], tf.bool),
    ]
    with export_context.export_tracing():
        served = tf.function(
            lambda x, mask: layer(x, mask=mask), input_signature=specs
        ).get_concrete_function()
    padded = np.where(mask[:, :, None], x, np.nan).astype("float32")
    got = tf.nest.flatten(served(padded, mask))
    with dispatch.fast_paths_disabled():
        expected = tf.nest.flatten(layer(padded, mask=mask))
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)


def test_a_batch_size_fixed_at_trace_time_is_served(rng):
    """The packed loops' state changes rows between stretches; a static
    batch dimension must not pin it."""
    batch = 8
    model = keras.Sequential(
        [
            keras.Input((TIMESTEPS, FEATURES), batch_size=batch),
            keras.layers.Masking(0.0),
            lstm_keras.LSTM(UNITS, return_sequences=True),
            lstm_keras.LSTM(UNITS),
        ]
    )
    x = rng.normal(size=(batch, TIMESTEPS, FEATURES)).astype("float32")
    x[2, 4:] = 0.0
    x[5, 1:] = 0.0
    spec = tf.TensorSpec([batch, TIMESTEPS, FEATURES], tf.float32)
    with export_context.export_tracing():
        served = tf.function(lambda x: model(x)).get_concrete_function(spec)
    with dispatch.fast_paths_disabled():
        expected = model(x)
    np.testing.assert_allclose(served(x), expected, atol=1e-5, rtol=1e-5)


def test_exported_graph_holds_both_stock_paths(rng):
    layer = lstm_keras.LSTM(UNITS)
    layer(np.zeros((1, TIMESTEPS, FEATURES), "float32"))
    ops = function_ops(traced_for_export(layer, True, False))
    assert {"BlockLSTM", "While", "If"} <= ops or {
        "BlockLSTM",
        "StatelessWhile",
    } <= ops
    assert not any(op.startswith(("LstmKeras", "CudnnRNN")) for op in ops)


def test_declines_outside_export_and_for_variants():
    layer = lstm_keras.LSTM(UNITS, layer_norm=True)
    x = tf.zeros((1, TIMESTEPS, FEATURES))
    layer(x)
    with pytest.raises(NotImplementedError, match="not tracing for export"):
        serving.check_supported(lstm_keras.LSTM(UNITS), x, False)
    with export_context.export_tracing():
        with pytest.raises(NotImplementedError, match="layer norm"):
            serving.check_supported(layer, x, False)
        relu = lstm_keras.LSTM(UNITS, activation="relu")
        relu(x)
        with pytest.raises(NotImplementedError, match="activation"):
            serving.check_supported(relu, x, False)
        dropout = lstm_keras.LSTM(UNITS, dropout=0.5)
        dropout(x)
        with pytest.raises(NotImplementedError, match="dropout"):
            serving.check_supported(dropout, x, True)
        serving.check_supported(dropout, x, False)


def test_keras_export_archive_traces_for_export(tmp_path):
    seen = []
    layer = lstm_keras.LSTM(UNITS)

    def serve(x):
        seen.append(export_context.exporting())
        return layer(x)

    layer(np.zeros((1, TIMESTEPS, FEATURES), "float32"))
    archive = keras.export.ExportArchive()
    archive.track(layer)
    archive.add_endpoint(
        "serve", serve, [tf.TensorSpec([None, None, FEATURES], tf.float32)]
    )
    assert not export_context.exporting()
    archive.write_out(str(tmp_path / "m"), verbose=False)
    assert seen and all(seen)
    assert not export_context.exporting()
    # Once the export's own variables exist (the first trace creates them,
    # and `tf.function` traces again after that), each endpoint is traced
    # once: Keras's trace, to find the variables, is the one that
    # `tf.saved_model.save` reuses.
    seen.clear()
    archive = keras.export.ExportArchive()
    archive.track(layer)
    archive.add_endpoint(
        "serve", serve, [tf.TensorSpec([None, None, FEATURES], tf.float32)]
    )
    archive.write_out(str(tmp_path / "again"), verbose=False)
    assert seen == [True]
    x = np.random.default_rng(0).normal(size=(2, TIMESTEPS, FEATURES))
    loaded = tf.saved_model.load(str(tmp_path / "again"))
    np.testing.assert_allclose(
        loaded.serve(tf.constant(x, tf.float32)), layer(x), atol=1e-6
    )


def _user_model():
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            keras.layers.Masking(0.0),
            lstm_keras.LSTM(UNITS, return_sequences=True),
            keras.layers.Bidirectional(lstm_keras.LSTM(UNITS)),
            keras.layers.Dense(2),
        ]
    )
    return model


def _exported_with(exporter, model, path):
    spec = tf.TensorSpec([None, None, FEATURES], tf.float32)
    if exporter == "model.export":
        model.export(path, verbose=False)
    elif exporter == "ExportArchive":
        # The endpoint form `model.export` does not use: a `tf.function`
        # traced in-process (with the fast path's op) before the export.
        predict = tf.function(lambda x: model(x))
        predict.get_concrete_function(spec)
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("predict", predict)
        archive.write_out(path, verbose=False)
    elif exporter == "tf.saved_model.save":
        module = tf.Module()
        module.weights = [w.value for w in model.weights]
        module.serve = tf.function(lambda x: model(x), input_signature=[spec])
        tf.saved_model.save(module, path, signatures=module.serve)
    else:
        from lstm_keras import export

        export.write_saved_model(model, path, litert_signature=False)


@pytest.mark.parametrize(
    "exporter",
    ["model.export", "ExportArchive", "tf.saved_model.save", "ours"],
)
def test_every_exporter_writes_stock_ops_while_fit_keeps_the_fast_path(
    exporter, tmp_path, rng
):
    from lstm_keras import export
    from lstm_keras.backends.tensorflow import build

    model = _user_model()
    x = rng.normal(size=(4, TIMESTEPS, FEATURES)).astype("float32")
    x[1, 3:] = 0.0
    expected = model(x)
    spec = tf.TensorSpec([None, None, FEATURES], tf.float32)
    in_process = tf.function(lambda x: model(x)).get_concrete_function(spec)
    if build.load_kernels() is not None:
        # In-process graphs (fit, predict, a user's tf.function) keep it.
        assert "LstmKerasSequence" in function_ops(in_process)
    path = str(tmp_path / "exported")
    _exported_with(exporter, model, path)
    assert export.nonstandard_ops(path) == set()
    assert "BlockLSTM" in export.graph_ops(path)
    loaded = tf.saved_model.load(path)
    signature = next(iter(loaded.signatures.values()))
    got = next(iter(signature(tf.constant(x)).values()))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def as_stacked(kernel, recurrent_kernel):
    """`[W; U]` with its gate columns as the stacked kernel holds them."""
    joined = np.concatenate([kernel, recurrent_kernel])
    columns = serving._gate_columns(
        joined.shape[1] // 4, serving.KERAS_GATES, serving.BLOCK_GATES
    )
    return joined[:, columns.numpy()]


def _stacked_by_cell(model, variables):
    """`{cell: variable}`, matching each stacked kernel to its cell's value."""
    cells = [
        layer.cell
        for layer in model._flatten_layers()
        if isinstance(layer, lstm_keras.LSTM)
    ]
    found = {}
    for cell in cells:
        joined = as_stacked(cell.kernel.numpy(), cell.recurrent_kernel)
        (match,) = [
            v
            for v in variables
            if v.shape == joined.shape and np.array_equal(v.numpy(), joined)
        ]
        found[cell] = match
    return found


def test_a_reloaded_export_reads_and_trains_the_stacked_kernels(tmp_path, rng):
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            keras.layers.Masking(0.0),
            keras.layers.Bidirectional(lstm_keras.LSTM(UNITS)),
            keras.layers.Dense(2),
        ]
    )
    lengths = [TIMESTEPS, 2, 5, 1, TIMESTEPS, 3, 6, 4]
    x = rng.normal(size=(len(lengths), TIMESTEPS, FEATURES)).astype("float32")
    for row, length in enumerate(lengths):
        x[row, length:] = 0.0
    model(x)
    model.export(str(tmp_path / "first"), verbose=False)
    reloaded = keras.layers.TFSMLayer(str(tmp_path / "first"))
    # The served graph reads each cell's `[W; U]` from one variable, and
    # its W and U from nowhere else: the reload's weights are those.
    stacked = _stacked_by_cell(model, reloaded.trainable_weights)
    assert len(reloaded.trainable_weights) == len(model.trainable_weights) - 2
    assert all(v.trainable for v in stacked.values())

    # New weights, given to the model and to the reload's stacked kernels:
    # a batch of one row (BlockLSTM) and of eight (the packed loops)
    # both follow them, so no branch reads a stale copy.
    for cell, variable in stacked.items():
        for weight in (cell.kernel, cell.recurrent_kernel):
            weight.assign(rng.normal(size=weight.shape).astype("float32"))
        variable.assign(as_stacked(cell.kernel.numpy(), cell.recurrent_kernel))
    for rows in (x[:1], x):
        with dispatch.fast_paths_disabled():
            with tf.GradientTape() as tape:
                expected = model(rows)
                loss = tf.reduce_sum(expected**2)
            cell_grads = tape.gradient(
                loss, [(c.kernel, c.recurrent_kernel) for c in stacked]
            )
        with tf.GradientTape() as tape:
            got = reloaded(rows)
            loss = tf.reduce_sum(got**2)
        grads = tape.gradient(loss, list(stacked.values()))
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
        for grad, (kernel_grad, recurrent_grad) in zip(
            grads, cell_grads, strict=True
        ):
            np.testing.assert_allclose(
                grad,
                as_stacked(kernel_grad, recurrent_grad),
                atol=1e-4,
                rtol=1e-4,
            )

    # A second export of the same model saves its new weights.
    model.export(str(tmp_path / "second"), verbose=False)
    second = tf.saved_model.load(str(tmp_path / "second"))
    with dispatch.fast_paths_disabled():
        expected = model(x)
    np.testing.assert_allclose(second.serve(x), expected, atol=1e-5, rtol=1e-5)
