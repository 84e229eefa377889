"""`SubwordEmbedding`: token vectors from hashed character n-grams.

A word the vocabulary never saw ("[UNK]") still has a spelling: "unfunny"
shares "unf", "fun", "nny>" with words it did see. SST-2's dev sentences
hold 5.7% of tokens that its training phrases lack, and those are often the
words that carry the sentiment. Following fastText (Bojanowski et al.,
2017), each token is wrapped as `<token>`, cut into its character n-grams,
each n-gram hashed into one of `num_buckets` rows of a table, and the token
gets the mean of its rows; `SentimentClassifier` adds it to the word
embedding. Every op (`StringSplit`, `UnicodeDecode`, `StringNGrams`,
`StringToHashBucketFast`) is a standard TensorFlow op, so exported models
keep serving without this package.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="lstm_keras")
class SubwordEmbedding(keras.layers.Layer):
    """Mean of hashed character n-gram embeddings, one vector per token.

    Tokens are the whitespace-separated words of the (standardized) text,
    as `keras.layers.TextVectorization(split="whitespace")` cuts them, so
    row `t` of the output belongs to the token whose id is `token_ids[:, t]`.
    Padding positions (beyond a text's tokens) are zero, and the output
    carries the padding mask `token_ids != 0`, so that adding it to a masked
    word embedding (`keras.layers.Add`) keeps the mask.

    Args:
        num_buckets: Positive integer, rows of the n-gram table.
        output_dim: Positive integer, width of the vectors.
        ngram_widths: Tuple of positive integers, the n-gram lengths in
            characters (counting the `<` and `>` around a token). A token
            shorter than all of them contributes its whole `<token>`.
            Defaults to `(3, 4, 5)`.
        max_length: Positive integer, tokens kept per text (the first ones).
            Defaults to `64`.
        embeddings_initializer: Initializer of the table. Defaults to
            `"uniform"` (as `keras.layers.Embedding`).
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: List `[texts, token_ids]`: `texts`, a `tf.string` tensor
            `(batch,)`, already standardized; `token_ids`, the
            `(batch, timesteps)` ids of the same texts (0 for padding),
            which give the output's length and mask.

    Returns:
        `(batch, timesteps, output_dim)` float tensor.

    Example:

    >>> layer = SubwordEmbedding(num_buckets=100, output_dim=4)
    >>> ids = tf.constant([[2, 3, 4, 0]])
    >>> layer([tf.constant(["a fine film"]), ids]).shape
    TensorShape([1, 4, 4])
    """

    def __init__(
        self,
        num_buckets,
        output_dim,
        ngram_widths=(3, 4, 5),
        max_length=64,
        embeddings_initializer="uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.supports_masking = True
        for name, value in (
            ("num_buckets", num_buckets),
            ("output_dim", output_dim),
            ("max_length", max_length),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"Received an invalid value for argument `{name}`, "
                    f"expected a positive integer, got {value!r}."
                )
        widths = tuple(ngram_widths)
        if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(
                "Received an invalid value for argument `ngram_widths`, "
                f"expected positive integers, got {ngram_widths!r}."
            )
        self.num_buckets = num_buckets
        self.output_dim = output_dim
        self.ngram_widths = widths
        self.max_length = max_length
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer
        )

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            shape=(self.num_buckets, self.output_dim),
            initializer=self.embeddings_initializer,
            name="embeddings",
        )

    def call(self, inputs):
        texts, token_ids = inputs
        rows = self._ngram_rows(texts)
        # rows: [batch, (tokens), (ngrams)]. N-grams repeat within a batch
        # (64 SST-2 phrases: about 7,000 n-grams, 4,000 distinct), so each
        # distinct row is read once and the token means index into those.
        # The gradient then holds each row once, not once per occurrence,
        # which is less for the optimizer's sparse update to sum and apply.
        ngram_rows = rows.flat_values
        distinct_rows, positions = tf.unique(ngram_rows)
        vectors = tf.gather(
            tf.convert_to_tensor(self.embeddings), distinct_rows
        )
        tokens = rows.values
        per_token = tf.sparse.segment_mean(
            vectors,
            positions,
            tf.cast(tokens.value_rowids(), tf.int32),
            num_segments=tf.cast(tokens.nrows(), tf.int32),
        )
        per_token = tf.RaggedTensor.from_row_splits(per_token, rows.row_splits)
        shape = tf.shape(token_ids)
        return per_token.to_tensor(shape=[shape[0], shape[1], self.output_dim])

    def max_ngrams(self, max_token_chars):
        """N-grams of a token of `max_token_chars` characters (the most)."""
        wrapped = max_token_chars + 2
        return max(1, sum(max(0, wrapped - w + 1) for w in self.ngram_widths))

    def ngram_ids(self, texts, max_ngrams):
        """Each token's n-gram rows, `[batch, max_length, max_ngrams]` int32.

        What `embed_ngram_ids` takes: a model with token ids and these as
        inputs has no string op (a LiteRT file). Missing n-grams (and
        tokens) are -1.

        Raises:
            ValueError: if a token has more than `max_ngrams` n-grams.
        """
        rows = self._ngram_rows(tf.convert_to_tensor(texts))
        per_token = rows.values.row_lengths()
        longest = int(tf.reduce_max(tf.concat([per_token, [0]], 0)))
        if longest > max_ngrams:
            raise ValueError(
                f"A token of the texts has {longest} character n-grams, more "
                f"than the {max_ngrams} that `max_ngrams` holds."
            )
        return tf.cast(
            rows.to_tensor(
                default_value=-1,
                shape=[len(texts), self.max_length, max_ngrams],
            ),
            tf.int32,
        )

    def embed_ngram_ids(self, ngram_ids):
        """`call`'s output from `ngram_ids` (-1 for none): the mean vector."""
        real = tf.cast(ngram_ids >= 0, self.embeddings.dtype)[..., None]
        vectors = tf.gather(
            tf.convert_to_tensor(self.embeddings), tf.maximum(ngram_ids, 0)
        )
        count = tf.maximum(tf.reduce_sum(real, axis=2), 1.0)
        return tf.reduce_sum(vectors * real, axis=2) / count

    def _ngram_rows(self, texts):
        """The rows of each token's n-grams: `[batch, (tokens), (ngrams)]`."""
        tokens = tf.strings.split(texts)[:, : self.max_length]
        # tokens: <string>[batch, (tokens)]
        wrapped = tf.ragged.map_flat_values(
            lambda t: tf.strings.join(["<", t, ">"]), tokens
        )
        characters = tf.strings.unicode_split(
            wrapped, "UTF-8", errors="replace"
        )
        # characters: <string>[batch, (tokens), (characters)]
        ngrams = tf.strings.ngrams(
            characters,
            ngram_width=self.ngram_widths,
            separator="",
            preserve_short_sequences=True,
        )
        return tf.ragged.map_flat_values(
            tf.strings.to_hash_bucket_fast, ngrams, self.num_buckets
        )

    def compute_mask(self, inputs, previous_mask=None):
        return keras.ops.not_equal(inputs[1], 0)

    def compute_output_shape(self, input_shape):
        return (*input_shape[1], self.output_dim)

    def get_config(self):
        config = {
            "num_buckets": self.num_buckets,
            "output_dim": self.output_dim,
            "ngram_widths": list(self.ngram_widths),
            "max_length": self.max_length,
            "embeddings_initializer": keras.initializers.serialize(
                self.embeddings_initializer
            ),
        }
        return {**super().get_config(), **config}
