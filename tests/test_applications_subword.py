"""SubwordEmbedding against a plain-Python fastText reference, and in use."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_keras.applications import SentimentClassifier
from lstm_keras.applications import SubwordEmbedding

pytestmark = pytest.mark.tensorflow_only

BUCKETS = 97
WIDTHS = (3, 4, 5)


def reference_rows(token, widths=WIDTHS, buckets=BUCKETS):
    """fastText's n-grams of `<token>`, by code point, hashed by TF."""
    characters = list(f"<{token}>")
    ngrams = [
        "".join(characters[i : i + n])
        for n in widths
        for i in range(len(characters) - n + 1)
    ]
    if not ngrams:  # shorter than every width: the whole wrapped token
        ngrams = ["".join(characters)]
    return tf.strings.to_hash_bucket_fast(ngrams, buckets).numpy()


def reference(texts, table, timesteps, max_length=64):
    out = np.zeros((len(texts), timesteps, table.shape[1]), "float32")
    for b, text in enumerate(texts):
        for t, token in enumerate(text.split()[:max_length][:timesteps]):
            out[b, t] = table[reference_rows(token)].mean(axis=0)
    return out


def make_layer(max_length=64, widths=WIDTHS):
    layer = SubwordEmbedding(
        BUCKETS, 3, ngram_widths=widths, max_length=max_length
    )
    layer.build([(None,), (None, None)])
    table = np.random.default_rng(0).normal(size=(BUCKETS, 3))
    layer.embeddings.assign(table.astype("float32"))
    return layer, layer.embeddings.numpy()


def test_vectors_are_mean_of_hashed_ngram_rows():
    layer, table = make_layer()
    texts = ["a fine  film", "unfunny", "", "héllo wörld ok"]
    ids = tf.zeros((4, 5), "int64")
    got = layer([tf.constant(texts), ids]).numpy()
    np.testing.assert_allclose(got, reference(texts, table, 5), atol=1e-6)
    # Padding and the empty text are zero, a 1-letter token is "<a>".
    assert np.all(got[1, 1:] == 0) and np.all(got[2] == 0)
    np.testing.assert_allclose(got[0, 0], table[reference_rows("a")][0])


def test_output_follows_token_ids_and_max_length():
    layer, table = make_layer(max_length=2)
    texts = ["one two three four"]
    got = layer([tf.constant(texts), tf.zeros((1, 3), "int64")]).numpy()
    # Only the first max_length tokens, padded out to token_ids' 3 steps.
    np.testing.assert_allclose(
        got, reference(texts, table, 3, max_length=2), atol=1e-6
    )
    assert np.all(got[0, 2] == 0) and np.any(got[0, 1] != 0)


def test_short_token_keeps_one_ngram_for_wide_ngrams():
    layer, table = make_layer(widths=(5,))
    got = layer([tf.constant(["ab"]), tf.zeros((1, 1), "int64")]).numpy()
    rows = reference_rows("ab", widths=(5,))
    assert len(rows) == 1  # "<ab>" is shorter than 5: kept whole
    np.testing.assert_allclose(got[0, 0], table[rows[0]], atol=1e-6)


def test_gradient_spreads_over_each_tokens_ngrams():
    layer, _ = make_layer()
    texts = tf.constant(["fine film", "fun"])
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(layer([texts, tf.zeros((2, 2), "int64")]))
    grad = tf.convert_to_tensor(tape.gradient(total, layer.embeddings))
    # d(sum)/d(row) = sum over tokens of (times the row occurs) / n-grams.
    expected = np.zeros((BUCKETS, 3))
    for token in ["fine", "film", "fun"]:
        rows = reference_rows(token)
        np.add.at(expected, rows, 1.0 / len(rows))
    np.testing.assert_allclose(grad.numpy(), expected, atol=1e-6)


def test_gradient_holds_each_row_once():
    layer, _ = make_layer()
    # "film" and "films" share "<fi", "fil", "ilm", "<fil", "film", ...
    texts = tf.constant(["film films", "film"])
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(layer([texts, tf.zeros((2, 2), "int64")]))
    grad = tape.gradient(total, layer.embeddings.value)
    assert isinstance(grad, tf.IndexedSlices)
    indices = grad.indices.numpy()
    occurrences = np.concatenate(
        [reference_rows(t) for t in ["film", "films", "film"]]
    )
    assert len(occurrences) > len(np.unique(occurrences))
    assert sorted(indices) == sorted(np.unique(occurrences))


def test_config_round_trip_and_bad_arguments():
    layer = SubwordEmbedding(10, 4, ngram_widths=(2, 3), max_length=7)
    clone = SubwordEmbedding.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="num_buckets"):
        SubwordEmbedding(0, 4)
    with pytest.raises(ValueError, match="ngram_widths"):
        SubwordEmbedding(10, 4, ngram_widths=(0,))
    with pytest.raises(ValueError, match="subword_buckets"):
        SentimentClassifier(subword_buckets=-1)


def small_model(**options):
    model = SentimentClassifier(
        units=4,
        embedding_dim=4,
        subword_buckets=50,
        num_members=1,
        seed=0,
        **options,
    )
    model.adapt(["a fine film", "a dull film", "fine acting"])
    return model


def test_classifier_adds_subwords_and_keeps_the_mask():
    model = small_model()
    texts = tf.constant(["a fine film indeed", "unseenword"])
    together = model.predict(texts, verbose=0)
    alone = np.concatenate(
        [model.predict(texts[i : i + 1], verbose=0) for i in range(2)]
    )
    # Padding is masked: a text scores the same alone or in a batch.
    np.testing.assert_allclose(together, alone, atol=1e-6)
    # An out-of-vocabulary word now has a vector of its own: zeroing the
    # subword table changes its prediction.
    before = model.predict(tf.constant(["unseenword"]), verbose=0)
    table = model.get_layer("subword_embedding")
    table.embeddings.assign(tf.zeros_like(table.embeddings))
    after = model.predict(tf.constant(["unseenword"]), verbose=0)
    assert np.abs(before - after).max() > 1e-4


def test_classifier_with_subwords_saves_and_serves(tmp_path):
    from lstm_keras import export

    model = small_model()
    model.compile()
    model.fit(
        tf.constant(["a fine film", "a dull film"]),
        tf.constant([1, 0]),
        epochs=1,
        verbose=0,
    )
    texts = tf.constant(["a fine film", "dullish films", ""])
    expected = model.predict(texts, verbose=0)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(texts, verbose=0), expected)
    version = export.export_for_serving(
        model,
        os.path.join(tmp_path, "serving"),
        litert_signature=False,
        verbose=False,
    )
    assert export.nonstandard_ops(version) == set()
    served = tf.saved_model.load(version).signatures["serving_default"]
    np.testing.assert_allclose(
        served(text=texts)["probabilities"].numpy(), expected, atol=1e-5
    )
