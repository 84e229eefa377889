"""`lstm_keras.LSTM` in models: masking, state, dropout, wrappers, training.

Every numeric check compares with an independent reference: the same layer
on unpadded data, `keras.layers.LSTM` with the same weights, or NumPy.
"""

import keras
import numpy as np
import pytest
from keras import ops

from lstm_keras import LSTM

BACKEND = keras.backend.backend()
B, T, D, H = 3, 6, 4, 5
LENGTHS = (6, 4, 2)  # real timesteps of each row; the rest is padding


def to_numpy(x):
    return ops.convert_to_numpy(x)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def built_layer(rng, input_dim=D, scale=0.5, **kwargs):
    """An `LSTM(H)` built for `input_dim` features, with random weights."""
    layer = LSTM(H, **kwargs)
    layer.build((None, T, input_dim))
    layer.set_weights(
        [scale * rng.standard_normal(w.shape) for w in layer.get_weights()]
    )
    return layer


def copy_of(layer, batch_size=None, **kwargs):
    """A new `LSTM` with `layer`'s config (updated by kwargs) and weights."""
    config = {**layer.get_config(), **kwargs}
    config.pop("name")
    clone = LSTM.from_config(config)
    clone.build((batch_size, T, layer.cell.input_dim))
    clone.set_weights(layer.get_weights())
    return clone


def padded(rng, left=False, fill=0.0):
    """Random rows of LENGTHS real steps, padded to T with `fill`."""
    x = rng.standard_normal((B, T, D)).astype("float32")
    mask = np.zeros((B, T), dtype=bool)
    for row, length in enumerate(LENGTHS):
        if left:
            mask[row, T - length :] = True
        else:
            mask[row, :length] = True
    x[~mask] = fill
    return x, mask


def unpadded_rows(x, mask):
    return [x[row : row + 1, mask[row]] for row in range(len(x))]


def input_gradient(layer, x, mask=None):
    """d sum(layer(x, mask)) / dx, with the active backend's autodiff."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, mask=mask))
        return tape.gradient(loss, x).numpy()
    if BACKEND == "jax":
        import jax

        return np.asarray(jax.grad(lambda x: ops.sum(layer(x, mask=mask)))(x))
    import torch

    x = torch.tensor(x, requires_grad=True)
    loss = torch.sum(layer(x, mask=mask))
    loss.backward()
    return x.grad.numpy()


# --- Masking ---------------------------------------------------------------


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_embedding_mask_zero_padding_matches_unpadded_sequences(rng, left):
    tokens = np.zeros((B, T), dtype="int32")
    for row, length in enumerate(LENGTHS):
        ids = rng.integers(1, 10, size=length)
        if left:
            tokens[row, T - length :] = ids
        else:
            tokens[row, :length] = ids
    embedding = keras.layers.Embedding(10, D, mask_zero=True)
    lstm = built_layer(rng)
    inputs = keras.Input((None,), dtype="int32")
    model = keras.Model(inputs, lstm(embedding(inputs)))
    outputs = to_numpy(model(tokens))
    for row in range(B):
        alone = tokens[row : row + 1][tokens[row : row + 1] > 0][None]
        expected = to_numpy(lstm(embedding(alone)))
        np.testing.assert_allclose(outputs[row : row + 1], expected, atol=1e-6)
    # Without the mask the padding would change the padded rows.
    unmasked = to_numpy(lstm(ops.take(embedding.embeddings, tokens, axis=0)))
    assert not np.allclose(unmasked[1:], outputs[1:], atol=1e-3)


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_masking_layer_padding_matches_unpadded_sequences(rng, left):
    x, mask = padded(rng, left=left)
    lstm = built_layer(rng, return_state=True)
    inputs = keras.Input((T, D))
    model = keras.Model(inputs, lstm(keras.layers.Masking(0.0)(inputs)))
    outputs = [to_numpy(o) for o in model(x)]
    for row, alone in enumerate(unpadded_rows(x, mask)):
        expected = [to_numpy(o) for o in lstm(alone)]
        for actual, wanted in zip(outputs, expected, strict=True):
            np.testing.assert_allclose(actual[row : row + 1], wanted, atol=1e-6)


def test_return_sequences_passes_the_mask_to_the_next_layer(rng):
    x, mask = padded(rng)
    first = built_layer(rng, return_sequences=True)
    second = LSTM(H)
    second.build((None, T, H))
    inputs = keras.Input((T, D))
    model = keras.Model(
        inputs, second(first(keras.layers.Masking(0.0)(inputs)))
    )
    outputs = to_numpy(model(x))
    for row, alone in enumerate(unpadded_rows(x, mask)):
        expected = to_numpy(second(first(alone)))
        np.testing.assert_allclose(outputs[row : row + 1], expected, atol=1e-6)


@pytest.mark.parametrize("return_state", [False, True])
def test_compute_mask_passes_mask_only_with_return_sequences(rng, return_state):
    x, mask = padded(rng)
    with_sequences = LSTM(H, return_sequences=True, return_state=return_state)
    without = LSTM(H, return_state=return_state)
    reference = keras.layers.LSTM(
        H, return_sequences=True, return_state=return_state
    )
    for layer in (with_sequences, without, reference):
        layer.build(x.shape)
    passed = with_sequences.compute_mask(x, mask)
    dropped = without.compute_mask(x, mask)
    if return_state:
        assert dropped == [None, None, None]
        assert passed[1:] == [None, None]
        assert len(reference.compute_mask(x, mask)) == 3
        passed = passed[0]
    else:
        assert dropped is None
    np.testing.assert_array_equal(to_numpy(passed), mask)


@pytest.mark.parametrize("go_backwards", [False, True])
def test_fully_masked_row_gives_zero_outputs_and_states(rng, go_backwards):
    layer = built_layer(
        rng, return_sequences=True, return_state=True, go_backwards=go_backwards
    )
    x = rng.standard_normal((B, T, D)).astype("float32")
    mask = np.ones((B, T), dtype=bool)
    mask[1] = False
    outputs, h, c = (to_numpy(o) for o in layer(x, mask=mask))
    np.testing.assert_array_equal(outputs[1], np.zeros((T, H)))
    np.testing.assert_array_equal(h[1], np.zeros(H))
    np.testing.assert_array_equal(c[1], np.zeros(H))
    # The other rows are those of the rows run alone.
    alone = [to_numpy(o) for o in layer(x[[0, 2]])]
    for actual, expected in zip((outputs, h, c), alone, strict=True):
        np.testing.assert_allclose(actual[[0, 2]], expected, atol=1e-6)


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_nan_in_masked_steps_changes_no_output(rng, left):
    clean, mask = padded(rng, left=left)
    dirty = clean.copy()
    dirty[~mask] = np.nan
    layer = built_layer(rng, return_sequences=True, return_state=True)
    expected = [to_numpy(o) for o in layer(clean, mask=mask)]
    actual = [to_numpy(o) for o in layer(dirty, mask=mask)]
    for a, e in zip(actual, expected, strict=True):
        assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_nan_in_masked_steps_changes_no_input_gradient(rng, left):
    clean, mask = padded(rng, left=left)
    dirty = clean.copy()
    dirty[~mask] = np.nan
    layer = built_layer(rng)
    expected = input_gradient(layer, clean, mask)
    actual = input_gradient(layer, dirty, mask)
    assert np.all(np.isfinite(actual))
    np.testing.assert_array_equal(actual, expected)
    # Padded steps get no gradient; real steps do.
    np.testing.assert_array_equal(actual[~mask], 0.0)
    assert np.all(np.abs(actual[mask]).sum(axis=-1) > 0)


@pytest.mark.tensorflow_only  # Weight gradients through tf.GradientTape.
def test_nan_in_masked_steps_changes_no_weight_gradient(rng):
    import tensorflow as tf

    clean, mask = padded(rng)
    dirty = clean.copy()
    dirty[~mask] = np.nan
    layer = built_layer(rng, return_sequences=True)

    def weight_gradients(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, mask=mask) ** 2)
        return [g.numpy() for g in tape.gradient(loss, layer.trainable_weights)]

    for actual, expected in zip(
        weight_gradients(dirty), weight_gradients(clean), strict=True
    ):
        assert np.all(np.isfinite(actual))
        assert np.any(actual != 0)
        np.testing.assert_array_equal(actual, expected)


def test_fully_masked_row_has_exactly_zero_input_gradient(rng):
    layer = built_layer(rng)
    x = rng.standard_normal((B, T, D)).astype("float32")
    mask = np.ones((B, T), dtype=bool)
    mask[2] = False
    gradient = input_gradient(layer, x, mask)
    np.testing.assert_array_equal(gradient[2], np.zeros((T, D)))
    assert np.all(np.abs(gradient[:2]).sum(axis=-1) > 0)


def test_nan_in_one_sample_leaves_other_samples_unchanged(rng):
    layer = built_layer(rng, return_sequences=True)
    x = rng.standard_normal((B, T, D)).astype("float32")
    dirty = x.copy()
    dirty[1, 3, 2] = np.nan
    expected = to_numpy(layer(x))
    actual = to_numpy(layer(dirty))
    np.testing.assert_array_equal(actual[[0, 2]], expected[[0, 2]])
    assert np.all(np.isnan(actual[1, 3:]))
    np.testing.assert_array_equal(actual[1, :3], expected[1, :3])


# --- Stateful --------------------------------------------------------------


def test_stateful_halves_equal_one_call_on_the_whole_sequence(rng):
    layer = built_layer(rng, return_sequences=True)
    stateful = copy_of(layer, batch_size=B, stateful=True)
    x = rng.standard_normal((B, T, D)).astype("float32")
    first = to_numpy(stateful(x[:, :3]))
    second = to_numpy(stateful(x[:, 3:]))
    expected = to_numpy(layer(x))
    np.testing.assert_allclose(
        np.concatenate([first, second], axis=1), expected, atol=1e-6
    )
    # The state variables hold the last h (and c).
    np.testing.assert_allclose(
        to_numpy(stateful.states[0]), expected[:, -1], atol=1e-6
    )


def test_reset_state_zeroes_states_and_next_call_equals_a_fresh_call(rng):
    layer = built_layer(rng)
    stateful = copy_of(layer, batch_size=B, stateful=True)
    x = rng.standard_normal((B, T, D)).astype("float32")
    stateful(x)
    assert np.any(to_numpy(stateful.states[1]) != 0)
    carried = to_numpy(stateful(x))
    assert not np.allclose(carried, to_numpy(layer(x)), atol=1e-4)
    stateful.reset_state()
    for state in stateful.states:
        np.testing.assert_array_equal(to_numpy(state), np.zeros((B, H)))
    np.testing.assert_allclose(
        to_numpy(stateful(x)), to_numpy(layer(x)), atol=1e-6
    )


# --- Dropout ---------------------------------------------------------------


@pytest.mark.parametrize(
    "rates", [(0.5, 0.0), (0.0, 0.5), (0.3, 0.4)], ids=["in", "rec", "both"]
)
def test_inference_output_ignores_dropout_settings(rng, rates):
    reference = keras.layers.LSTM(H, return_sequences=True)
    reference.build((None, T, D))
    plain = built_layer(rng, return_sequences=True)
    reference.set_weights(plain.get_weights())
    layer = copy_of(plain, dropout=rates[0], recurrent_dropout=rates[1])
    x = rng.standard_normal((B, T, D)).astype("float32")
    expected = to_numpy(reference(x))
    np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=1e-5)
    np.testing.assert_allclose(
        to_numpy(layer(x, training=False)), expected, atol=1e-5
    )
    trained = to_numpy(layer(x, training=True))
    assert not np.allclose(trained, expected, atol=1e-3)
    # Zero rates make training mode equal inference mode.
    np.testing.assert_allclose(
        to_numpy(plain(x, training=True)), expected, atol=1e-5
    )


@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_drawn_dropout_mask_has_the_rate_and_one_mask_per_sequence(rng, rate):
    layer = built_layer(rng, dropout=rate, return_sequences=True)
    cell = layer.cell
    drawn = []
    original = cell.get_dropout_mask

    def recording_get_dropout_mask(step_input):
        mask = original(step_input)
        drawn.append(mask)
        return mask

    cell.get_dropout_mask = recording_get_dropout_mask
    x = rng.standard_normal((64, T, D)).astype("float32")
    trained = to_numpy(layer(x, training=True))
    masks = {id(m) for m in drawn}
    assert len(masks) == 1  # the same mask for every timestep
    mask = to_numpy(drawn[0])
    assert mask.shape == (64, D)
    kept = mask != 0
    np.testing.assert_allclose(mask[kept], 1.0 / (1.0 - rate), rtol=1e-6)
    assert abs((~kept).mean() - rate) < 0.1  # 256 draws
    cell.get_dropout_mask = original
    expected = to_numpy(layer(x * mask[:, None, :], training=False))
    np.testing.assert_allclose(trained, expected, atol=1e-5)


def test_input_dropout_is_one_mask_per_sequence(rng):
    layer = built_layer(rng, dropout=0.5, return_sequences=True)
    x = rng.standard_normal((B, T, D)).astype("float32")
    mask = rng.choice([0.0, 2.0], size=(B, D)).astype("float32")
    layer.cell._dropout_mask = ops.convert_to_tensor(mask)
    trained = to_numpy(layer(x, training=True))
    assert layer.cell._dropout_mask is None  # reset after the call
    expected = to_numpy(layer(x * mask[:, None, :], training=False))
    np.testing.assert_allclose(trained, expected, atol=1e-5)


def test_recurrent_dropout_masks_h_prev_with_one_mask(rng):
    layer = built_layer(rng, recurrent_dropout=0.5, return_sequences=True)
    x = rng.standard_normal((B, T, D)).astype("float32")
    mask = rng.choice([0.0, 2.0], size=(B, H)).astype("float32")
    layer.cell._recurrent_dropout_mask = ops.convert_to_tensor(mask)
    trained = to_numpy(layer(x, training=True))
    kernel, recurrent_kernel, bias = (
        w.astype("float64") for w in layer.get_weights()
    )
    h = c = np.zeros((B, H))
    expected = []
    for t in range(T):
        z = x[:, t] @ kernel + (h * mask) @ recurrent_kernel + bias
        z_i, z_f, z_c, z_o = np.split(z, 4, axis=-1)
        c = sigmoid(z_f) * c + sigmoid(z_i) * np.tanh(z_c)
        h = sigmoid(z_o) * np.tanh(c)
        expected.append(h)
    np.testing.assert_allclose(trained, np.stack(expected, 1), atol=1e-5)


@pytest.mark.parametrize(
    "rates", [(0.5, 0.0), (0.0, 0.5)], ids=["input", "recurrent"]
)
def test_dropout_is_seedable(rng, rates):
    kwargs = {"dropout": rates[0], "recurrent_dropout": rates[1]}
    first = built_layer(rng, seed=7, **kwargs)
    same_seed = copy_of(first)
    other_seed = copy_of(first, seed=8)
    x = rng.standard_normal((B, T, D)).astype("float32")
    expected = to_numpy(first(x, training=True))
    np.testing.assert_array_equal(
        to_numpy(same_seed(x, training=True)), expected
    )
    assert not np.allclose(to_numpy(other_seed(x, training=True)), expected)


def test_dropout_masks_are_redrawn_on_each_call(rng):
    layer = built_layer(rng, dropout=0.5, recurrent_dropout=0.5, seed=3)
    x = rng.standard_normal((B, T, D)).astype("float32")
    first = to_numpy(layer(x, training=True))
    second = to_numpy(layer(x, training=True))
    assert not np.allclose(first, second, atol=1e-4)


# --- Wrappers and stacks ---------------------------------------------------


@pytest.mark.parametrize("with_mask", [False, True])
def test_bidirectional_matches_keras_bidirectional(rng, with_mask):
    ours = keras.layers.Bidirectional(LSTM(H, return_sequences=True))
    reference = keras.layers.Bidirectional(
        keras.layers.LSTM(H, return_sequences=True)
    )
    ours.build((None, T, D))
    reference.build((None, T, D))
    assert [w.shape for w in ours.weights] == [
        w.shape for w in reference.weights
    ]
    reference.set_weights(
        [0.5 * rng.standard_normal(w.shape) for w in reference.get_weights()]
    )
    ours.set_weights(reference.get_weights())
    x, mask = padded(rng)
    mask = mask if with_mask else None
    np.testing.assert_allclose(
        to_numpy(ours(x, mask=mask)),
        to_numpy(reference(x, mask=mask)),
        atol=1e-5,
    )


def _stack(layer_class):
    return keras.Sequential(
        [
            keras.Input((T, D)),
            keras.layers.Masking(0.0),
            layer_class(H, return_sequences=True),
            layer_class(3),
        ]
    )


def test_stacked_lstms_match_keras_stack(rng):
    ours = _stack(LSTM)
    reference = _stack(keras.layers.LSTM)
    reference.set_weights(
        [0.5 * rng.standard_normal(w.shape) for w in reference.get_weights()]
    )
    ours.set_weights(reference.get_weights())
    x, _ = padded(rng, left=True)
    np.testing.assert_allclose(
        to_numpy(ours(x)), to_numpy(reference(x)), atol=1e-5
    )


# --- Training --------------------------------------------------------------


def _toy_task(rng, n=32):
    """Predict the mean of the first feature over time (learnable)."""
    x = rng.standard_normal((n, T, 3)).astype("float32")
    y = x[:, :, :1].mean(axis=1) * 2.0
    return x, y


def _model(layer_class, dtype=None):
    return keras.Sequential(
        [
            keras.Input((T, 3)),
            layer_class(4, dtype=dtype),
            keras.layers.Dense(1, dtype=dtype),
        ]
    )


def test_fit_decreases_loss_like_keras_lstm(rng):
    x, y = _toy_task(rng)
    ours = _model(LSTM)
    reference = _model(keras.layers.LSTM)
    reference.set_weights(ours.get_weights())
    histories = []
    for model in (ours, reference):
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        history = model.fit(
            x, y, epochs=8, batch_size=16, shuffle=False, verbose=0
        )
        histories.append(history.history["loss"])
    losses, reference_losses = histories
    assert losses[-1] < 0.7 * losses[0]
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-4)
    for w, r in zip(ours.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(w, r, atol=1e-4)


# jit_compile=True means XLA through tf.function here; on JAX everything is
# jitted anyway, and on torch it means torch.compile (slow, out of scope).
@pytest.mark.tensorflow_only
def test_jit_compile_gives_the_same_predictions_and_trains(rng):
    x, y = _toy_task(rng, n=16)
    eager = _model(LSTM)
    jitted = _model(LSTM)
    jitted.set_weights(eager.get_weights())
    eager.compile(optimizer="sgd", loss="mse", jit_compile=False)
    jitted.compile(optimizer="sgd", loss="mse", jit_compile=True)
    np.testing.assert_allclose(
        jitted.predict(x, verbose=0), eager.predict(x, verbose=0), atol=1e-5
    )
    jit_loss = jitted.fit(x, y, epochs=2, shuffle=False, verbose=0)
    eager_loss = eager.fit(x, y, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(
        jit_loss.history["loss"], eager_loss.history["loss"], rtol=1e-4
    )


@pytest.mark.parametrize(
    "policy, dtype, atol",
    [("mixed_float16", "float16", 1e-2), ("mixed_bfloat16", "bfloat16", 5e-2)],
)
def test_mixed_precision_outputs_close_to_float32(rng, policy, dtype, atol):
    full = built_layer(rng, return_sequences=True, return_state=True)
    x = rng.standard_normal((B, T, D)).astype("float32")
    expected = [to_numpy(o) for o in full(x)]
    keras.config.set_dtype_policy(policy)
    mixed = LSTM(H, return_sequences=True, return_state=True)
    mixed.build((None, T, D))
    mixed.set_weights(full.get_weights())
    assert mixed.compute_dtype == dtype
    for w in mixed.weights:
        assert keras.backend.standardize_dtype(w.dtype) == "float32"
    outputs = mixed(x)
    for output, wanted in zip(outputs, expected, strict=True):
        assert keras.backend.standardize_dtype(output.dtype) == dtype
        actual = to_numpy(ops.cast(output, "float32"))
        np.testing.assert_allclose(actual, wanted, atol=atol)


def test_mixed_float16_fit_step_with_loss_scaling(rng):
    x, y = _toy_task(rng, n=16)
    full = _model(LSTM)
    full.compile(optimizer="sgd", loss="mse")
    expected = full.evaluate(x, y, verbose=0)
    keras.config.set_dtype_policy("mixed_float16")
    mixed = _model(LSTM)
    mixed.set_weights(full.get_weights())
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
    mixed.compile(optimizer=optimizer, loss="mse")
    assert mixed.layers[0].compute_dtype == "float16"
    np.testing.assert_allclose(
        mixed.evaluate(x, y, verbose=0), expected, rtol=1e-2
    )
    losses = mixed.fit(x, y, epochs=3, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    for w in mixed.layers[0].weights:
        assert np.all(np.isfinite(to_numpy(w)))


def _stateful_model(layer_class):
    return keras.Sequential(
        [
            keras.Input((T, 3), batch_size=B),
            layer_class(4, stateful=True),
            keras.layers.Dense(1),
        ]
    )


def _fit_losses(model, x, y, epochs):
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    history = model.fit(
        x, y, epochs=epochs, batch_size=B, shuffle=False, verbose=0
    )
    return history.history["loss"]


def test_stateful_model_trains_and_carries_state_across_batches(rng):
    # One batch per epoch: epoch 2 starts from epoch 1's final state. The
    # reference is a non-stateful `keras.layers.LSTM` fed that state.
    x, y = _toy_task(rng, n=B)
    stateful = _stateful_model(LSTM)
    sequences = keras.Input((T, 3))
    h0, c0 = keras.Input((4,)), keras.Input((4,))
    keras_lstm = keras.layers.LSTM(4)
    outputs = keras.layers.Dense(1)(
        keras_lstm(sequences, initial_state=[h0, c0])
    )
    reference = keras.Model([sequences, h0, c0], outputs)
    reference.set_weights(stateful.get_weights())

    probe = keras.layers.LSTM(4, return_state=True)
    probe.build((None, T, 3))
    probe.set_weights(keras_lstm.get_weights())
    _, h1, c1 = (to_numpy(s) for s in probe(x))
    zeros = np.zeros((B, 4), dtype="float32")

    if BACKEND == "jax":
        # Keras's JAX trainer does not carry the state from one train step to
        # the next (its jitted steps drop the untracked state variables'
        # updates), for `keras.layers.LSTM` too; there the reference is
        # Keras's stateful LSTM itself.
        keras_stateful = _stateful_model(keras.layers.LSTM)
        keras_stateful.set_weights(stateful.get_weights())
        expected = _fit_losses(keras_stateful, x, y, epochs=2)
    else:
        reference.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        expected = [
            reference.fit([x, state, state_c], y, batch_size=B, verbose=0)
            for state, state_c in ((zeros, zeros), (h1, c1))
        ]
        expected = [history.history["loss"][0] for history in expected]
    losses = _fit_losses(stateful, x, y, epochs=2)
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    if BACKEND != "jax":
        assert np.all(to_numpy(stateful.layers[0].states[0]) != 0)
