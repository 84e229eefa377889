"""A bag-of-words logistic regression to measure the text model against.

`bag_of_words(splits)` fits a softmax regression on TF-IDF weighted word
unigrams and bigrams of the standardized training texts (the sentiment
model's standardization), with an L2 penalty chosen on the validation split
from `L2_GRID`; it reads the test split once, for the chosen penalty. The
features are dense, so it is meant for small corpora (at most
`MAX_TRAIN_TEXTS` training texts), such as a few thousand reviews.
"""

import keras
import numpy as np
import tensorflow as tf

from lstm_keras.applications.preprocessing import TextStandardization

L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3)
EPOCHS = 30
MAX_TOKENS = 50_000
MAX_TRAIN_TEXTS = 10_000


def _texts_and_labels(examples):
    texts, labels = [], []
    for x, y in examples.batch(4096).as_numpy_iterator():
        texts.append(x)
        labels.append(y)
    return np.concatenate(texts), np.concatenate(labels)


def bag_of_words(splits, seed=0):
    """Fits the baseline on `splits` (a `lstm_keras.datasets.Splits`).

    Args:
        splits: Text splits of `(string, label)` examples.
        seed: Seed of the weights and the batch order. Defaults to 0.

    Returns:
        `{"l2", "validation_accuracy", "test_accuracy", "validation": {l2:
        accuracy}}`.
    """
    standardize = TextStandardization()
    vectorize = keras.layers.TextVectorization(
        max_tokens=MAX_TOKENS,
        standardize=None,
        ngrams=2,
        output_mode="tf_idf",
    )
    train_x, train_y = _texts_and_labels(splits.train)
    if len(train_x) > MAX_TRAIN_TEXTS:
        raise ValueError(
            f"The bag-of-words baseline keeps dense features: at most "
            f"{MAX_TRAIN_TEXTS} training texts, got {len(train_x)}."
        )
    val_x, val_y = _texts_and_labels(splits.validation)

    def standardized(texts):
        # As the model does it, inside a graph (a tf.data map).
        batches = tf.data.Dataset.from_tensor_slices(texts).batch(1024)
        return np.concatenate(
            list(batches.map(standardize).as_numpy_iterator())
        )

    vectorize.adapt(standardized(train_x))

    def features(texts):
        return vectorize(standardized(texts)).numpy()

    train_f, val_f = features(train_x), features(val_x)
    num_classes = len(splits.class_names)
    scores, models = {}, {}
    for l2 in L2_GRID:
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [
                keras.Input((train_f.shape[1],)),
                keras.layers.Dense(
                    num_classes,
                    activation="softmax",
                    kernel_regularizer=keras.regularizers.L2(l2),
                ),
            ]
        )
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        model.fit(train_f, train_y, epochs=EPOCHS, batch_size=64, verbose=0)
        _, scores[l2] = model.evaluate(val_f, val_y, verbose=0)
        models[l2] = model
    best = max(L2_GRID, key=lambda l2: scores[l2])
    test_x, test_y = _texts_and_labels(splits.test)
    _, test_accuracy = models[best].evaluate(
        features(test_x), test_y, verbose=0
    )
    return {
        "l2": best,
        "validation_accuracy": float(scores[best]),
        "test_accuracy": float(test_accuracy),
        "validation": {str(k): float(v) for k, v in scores.items()},
    }
