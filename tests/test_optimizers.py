"""`LazyAdam` against a NumPy lazy Adam, Keras's Adam, and in training."""

import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf
from sample_inputs import TEXTS

from lstm_keras.applications import LazyAdam
from lstm_keras.applications import SentimentClassifier
from lstm_keras.applications import optimizers

pytestmark = pytest.mark.tensorflow_only

ROWS, WIDTH = 12, 3
# Rows that no batch below reads.
UNTOUCHED = [0, 7, 11]
# (indices, values) of each step's gradient: different rows each step, with
# duplicates whose values partly cancel.
BATCHES = [
    ([1, 2, 2, 5], [[0.5, -1.0, 2.0], [1.0, 1.0, 1.0], [-3.0, 0.5, 0.0]]),
    ([3, 4, 1, 1, 1], None),
    ([9, 10, 8, 2], None),
    ([5, 6, 6, 3, 9], None),
    ([4, 10, 1], None),
    ([8, 8, 8, 2, 6], None),
]


def _batches(seed=0):
    """`BATCHES` with random values where none are given."""
    rng = np.random.default_rng(seed)
    batches = []
    for indices, values in BATCHES:
        if values is None or len(values) != len(indices):
            values = rng.normal(size=(len(indices), WIDTH))
        batches.append((np.array(indices), np.array(values, "float32")))
    return batches


def _slices(indices, values, rows=ROWS):
    return tf.IndexedSlices(
        tf.constant(values),
        tf.constant(indices, "int32"),
        tf.constant([rows, values.shape[1]]),
    )


def _reference_lazy_adam(
    table, batches, rates, beta_1=0.9, beta_2=0.999, epsilon=1e-7
):
    """Lazy Adam in float64: moments and weights of the read rows only."""
    var = table.astype("float64")
    m = np.zeros_like(var)
    v = np.zeros_like(var)
    for t, ((indices, values), lr) in enumerate(
        zip(batches, rates, strict=True), 1
    ):
        dense = np.zeros_like(var)
        np.add.at(dense, indices, values)
        rows = np.unique(indices)
        g = dense[rows]
        m[rows] = beta_1 * m[rows] + (1 - beta_1) * g
        v[rows] = beta_2 * v[rows] + (1 - beta_2) * g**2
        lr_t = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        var[rows] -= lr_t * m[rows] / (np.sqrt(v[rows]) + epsilon)
    return var, m, v


def _cosine(initial, decay_steps, alpha, step):
    step = min(step, decay_steps)
    cosine = 0.5 * (1 + np.cos(np.pi * step / decay_steps))
    return initial * ((1 - alpha) * cosine + alpha)


@pytest.mark.parametrize("schedule", [False, True], ids=["constant", "cosine"])
def test_sparse_steps_match_a_numpy_lazy_adam(schedule, rng):
    table = rng.normal(size=(ROWS, WIDTH)).astype("float32")
    batches = _batches()
    if schedule:
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.05, decay_steps=4, alpha=0.05
        )
        # The rate of step t is the schedule at `iterations` = t - 1.
        rates = [_cosine(0.05, 4, 0.05, step) for step in range(len(batches))]
    else:
        learning_rate, rates = 0.05, [0.05] * len(batches)
    variable = keras.Variable(table)
    optimizer = LazyAdam(learning_rate)
    for indices, values in batches:
        optimizer.apply([_slices(indices, values)], [variable])

    expected, m, v = _reference_lazy_adam(table, batches, rates)
    result = keras.ops.convert_to_numpy(variable)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-6)
    momentum = keras.ops.convert_to_numpy(optimizer._momentums[0])
    velocity = keras.ops.convert_to_numpy(optimizer._velocities[0])
    np.testing.assert_allclose(momentum, m, rtol=0, atol=1e-6)
    np.testing.assert_allclose(velocity, v, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(result[UNTOUCHED], table[UNTOUCHED])
    assert not momentum[UNTOUCHED].any() and not velocity[UNTOUCHED].any()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"weight_decay": 0.1},
        {"clipnorm": 0.5},
        {"global_clipnorm": 0.5},
        {"clipvalue": 0.3},
    ],
    ids=lambda options: "-".join(options) or "plain",
)
def test_touching_every_row_equals_dense_adam(options, rng):
    table = rng.normal(size=(ROWS, WIDTH)).astype("float32")
    bias = rng.normal(size=(WIDTH,)).astype("float32")
    # A large epsilon makes the step depend on the gradient's size, so a
    # clip of the wrong size shows.
    settings = {"learning_rate": 0.05, "epsilon": 0.1, **options}
    lazy = LazyAdam(**settings)
    adam = keras.optimizers.Adam(**settings)
    lazy_vars = [keras.Variable(table), keras.Variable(bias)]
    adam_vars = [keras.Variable(table), keras.Variable(bias)]
    for _ in range(5):
        # Every row, some twice with values that partly cancel.
        indices = np.concatenate([rng.permutation(ROWS), [3, 3, 8]])
        values = rng.normal(size=(len(indices), WIDTH)).astype("float32")
        values[-2:] = -0.9 * values[[np.flatnonzero(indices == 3)[0]] * 2]
        sparse = _slices(indices, values)
        bias_gradient = tf.constant(rng.normal(size=(WIDTH,)), "float32")
        lazy.apply([sparse, bias_gradient], lazy_vars)
        adam.apply([tf.convert_to_tensor(sparse), bias_gradient], adam_vars)
    for lazy_var, adam_var in zip(lazy_vars, adam_vars, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(lazy_var),
            keras.ops.convert_to_numpy(adam_var),
            rtol=0,
            atol=1e-6,
        )


def test_dense_gradients_are_exactly_adam(rng):
    kernel = rng.normal(size=(4, 3)).astype("float32")
    settings = {"learning_rate": 0.01, "clipnorm": 1.0, "weight_decay": 0.01}
    lazy, adam = LazyAdam(**settings), keras.optimizers.Adam(**settings)
    lazy_var, adam_var = keras.Variable(kernel), keras.Variable(kernel)
    for _ in range(4):
        gradient = tf.constant(rng.normal(size=(4, 3)), "float32")
        lazy.apply([gradient], [lazy_var])
        adam.apply([gradient], [adam_var])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(lazy_var),
        keras.ops.convert_to_numpy(adam_var),
    )


@pytest.mark.parametrize(
    "options",
    [{"clipnorm": 1.0}, {"global_clipnorm": 1.0}, {"clipvalue": 0.5}],
    ids=lambda options: next(iter(options)),
)
def test_clipping_keeps_sparse_gradients_sparse_and_equal_to_dense(options):
    # Row 1's entries partly cancel: the gradient's norm is 0.78, below the
    # clip, while the entries' norm is 7; its last value is 0.6, above
    # `clipvalue`, while each entry's is 0.3.
    values = np.array(
        [[3.0, 4.0, 0.3], [-3.0, -4.0, 0.3], [0.3, 0.0, 0.4]], "float32"
    )
    sparse = _slices(np.array([1, 1, 2]), values)
    dense_other = tf.constant([[0.6, 0.0, 0.8]])
    lazy_clipped = LazyAdam(**options)._clip_gradients([sparse, dense_other])
    dense_clipped = keras.optimizers.Adam(**options)._clip_gradients(
        [tf.convert_to_tensor(sparse), dense_other]
    )
    assert isinstance(lazy_clipped[0], tf.IndexedSlices)
    for lazy, dense in zip(lazy_clipped, dense_clipped, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(tf.convert_to_tensor(lazy)),
            keras.ops.convert_to_numpy(dense),
            rtol=1e-6,
            atol=1e-7,
        )


def test_amsgrad_is_refused():
    with pytest.raises(ValueError, match="amsgrad"):
        LazyAdam(amsgrad=True)


def test_docstring_example():
    globs = {"np": np, "keras": keras, "tf": tf, "LazyAdam": LazyAdam}
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = doctest.DocTestFinder().find(optimizers, globs=globs)
    tests = [test for test in tests if test.examples]
    assert tests
    for test in tests:
        runner.run(test)
    assert runner.failures == 0


class _RecordTable(keras.callbacks.Callback):
    def __init__(self, table):
        super().__init__()
        self.table = table
        self.values = []

    def on_train_begin(self, logs=None):
        self.values.append(keras.ops.convert_to_numpy(self.table))

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(keras.ops.convert_to_numpy(self.table))


def _fit_embedding_model(optimizer):
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((3,), dtype="int32"),
            keras.layers.Embedding(10, 4, name="embedding"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(1),
        ]
    )
    # Ids 0 and 7-9 never occur; each batch of 2 reads a few of ids 1-6.
    ids = np.array([[1, 2, 2], [3, 1, 1], [4, 5, 4], [6, 6, 6], [2, 3, 5]])
    targets = np.array([[1.0], [-1.0], [0.5], [2.0], [0.0]])
    model.compile(optimizer=optimizer, loss="mse")
    table = model.get_layer("embedding").embeddings
    record = _RecordTable(table)
    model.fit(
        ids,
        targets,
        batch_size=2,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[record],
    )
    batches = [ids[start : start + 2] for start in (0, 2, 4)] * 2
    return record.values, batches


def test_fit_moves_only_the_rows_each_batch_reads():
    lazy_values, batches = _fit_embedding_model(LazyAdam(0.05))
    adam_values, _ = _fit_embedding_model(keras.optimizers.Adam(0.05))
    np.testing.assert_array_equal(lazy_values[0], adam_values[0])
    unread = [0, 7, 8, 9]
    np.testing.assert_array_equal(
        lazy_values[-1][unread], lazy_values[0][unread]
    )
    adam_moved_unread_rows = False
    for step, batch in enumerate(batches):
        idle = np.setdiff1d(np.arange(10), batch)
        before, after = lazy_values[step], lazy_values[step + 1]
        np.testing.assert_array_equal(after[idle], before[idle])
        assert not np.array_equal(after[batch], before[batch])
        # Adam moves the rows of earlier batches on their momentum.
        adam_before, adam_after = adam_values[step], adam_values[step + 1]
        if not np.array_equal(adam_after[idle], adam_before[idle]):
            adam_moved_unread_rows = True
    assert adam_moved_unread_rows


def _subword_buckets(texts, buckets):
    """The table rows `SubwordEmbedding` reads for `texts` (standardized)."""
    ngrams = []
    for text in texts:
        for token in text.split():
            wrapped = f"<{token}>"
            grams = [
                wrapped[i : i + width]
                for width in (3, 4, 5)
                for i in range(len(wrapped) - width + 1)
            ]
            ngrams.extend(grams or [wrapped])
    rows = tf.strings.to_hash_bucket_fast(ngrams, buckets)
    return np.unique(keras.ops.convert_to_numpy(rows))


def _sentiment_model(**options):
    model = SentimentClassifier(
        ["negative", "positive"],
        units=8,
        embedding_dim=8,
        subword_buckets=64,
        vocabulary_size=50,
        **options,
    )
    model.adapt(TEXTS)
    return model


def _tables(model):
    return (
        keras.ops.convert_to_numpy(model.get_layer("embedding").embeddings),
        keras.ops.convert_to_numpy(
            model.get_layer("subword_embedding").embeddings
        ),
    )


def test_sentiment_classifier_trains_lazily_by_default():
    model = _sentiment_model()
    model.compile()
    assert isinstance(model.optimizer, LazyAdam)
    first, second = TEXTS[:3], TEXTS[3:]
    labels = np.array([1, 0, 1])
    words_start, buckets_start = _tables(model)
    model.train_on_batch(tf.constant(first), labels)
    words_middle, buckets_middle = _tables(model)
    model.train_on_batch(tf.constant(second), labels)
    words_end, buckets_end = _tables(model)

    vocabulary = model.vocabulary()
    standardized = [
        text.replace(",", "").lower() for text in second
    ]  # The texts' only punctuation.
    read_ids = {0} | {
        vocabulary.index(w) for t in standardized for w in t.split()
    }
    idle_ids = np.setdiff1d(np.arange(50), sorted(read_ids))
    np.testing.assert_array_equal(words_end[idle_ids], words_middle[idle_ids])
    assert not np.array_equal(words_end, words_middle)
    unused_ids = np.arange(len(vocabulary), 50)
    assert len(unused_ids)
    np.testing.assert_array_equal(
        words_end[unused_ids], words_start[unused_ids]
    )

    read_buckets = _subword_buckets(standardized, 64)
    idle_buckets = np.setdiff1d(np.arange(64), read_buckets)
    assert len(idle_buckets)
    np.testing.assert_array_equal(
        buckets_end[idle_buckets], buckets_middle[idle_buckets]
    )
    assert not np.array_equal(
        buckets_end[read_buckets], buckets_middle[read_buckets]
    )
    never_read = np.setdiff1d(
        idle_buckets,
        _subword_buckets([t.replace(",", "").lower() for t in first], 64),
    )
    assert len(never_read)
    np.testing.assert_array_equal(
        buckets_end[never_read], buckets_start[never_read]
    )


def test_sentiment_classifier_with_weight_averaging():
    model = _sentiment_model()
    model.compile(decay_steps=10)
    assert isinstance(model.optimizer, LazyAdam) and model.optimizer.use_ema
    _, buckets_start = _tables(model)
    model.fit(tf.constant(TEXTS[:3]), np.array([1, 0, 1]), epochs=3, verbose=0)
    _, buckets_end = _tables(model)
    never_read = np.setdiff1d(
        np.arange(64),
        _subword_buckets([t.replace(",", "").lower() for t in TEXTS[:3]], 64),
    )
    assert len(never_read)
    # `fit` ends on the average, which for an unchanged row is that row up
    # to the rounding of `momentum * w + (1 - momentum) * w`.
    np.testing.assert_allclose(
        buckets_end[never_read], buckets_start[never_read], rtol=1e-6
    )
    assert not np.allclose(buckets_end, buckets_start)
    subword = model.get_layer("subword_embedding").embeddings
    average = model.optimizer._model_variables_moving_average[
        model.optimizer._get_variable_index(subword)
    ]
    np.testing.assert_array_equal(
        buckets_end, keras.ops.convert_to_numpy(average)
    )


def test_serialize_deserialize_keeps_the_class_and_settings():
    optimizer = LazyAdam(
        keras.optimizers.schedules.CosineDecay(0.01, 100, alpha=0.05),
        beta_1=0.8,
        epsilon=1e-6,
        clipnorm=1.0,
        use_ema=True,
        ema_momentum=0.9,
    )
    config = keras.optimizers.serialize(optimizer)
    assert config["registered_name"] == "lstm_keras>LazyAdam"
    restored = keras.optimizers.deserialize(config)
    assert type(restored) is LazyAdam
    assert keras.saving.serialize_keras_object(restored) == (
        keras.saving.serialize_keras_object(optimizer)
    )
    assert restored.beta_1 == 0.8 and restored.ema_momentum == 0.9
    assert isinstance(
        restored.learning_rate_schedule
        if hasattr(restored, "learning_rate_schedule")
        else restored._learning_rate,
        keras.optimizers.schedules.CosineDecay,
    )


def test_saved_model_resumes_with_the_same_optimizer_state(tmp_path):
    # Without dropout, the step after loading is deterministic.
    model = _sentiment_model(
        embedding_dropout=0.0, dropout=0.0, head_dropout=0.0
    )
    model.compile()
    texts, labels = tf.constant(TEXTS), np.array([1, 0, 1, 0, 0, 1])
    model.train_on_batch(texts, labels)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is LazyAdam
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for saved, restored in zip(
        model.optimizer.variables, loaded.optimizer.variables, strict=True
    ):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(saved),
            keras.ops.convert_to_numpy(restored),
        )
    model.train_on_batch(texts, labels)
    loaded.train_on_batch(texts, labels)
    for trained, resumed in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(trained),
            keras.ops.convert_to_numpy(resumed),
            rtol=1e-5,
            atol=1e-6,
        )
