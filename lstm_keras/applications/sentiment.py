"""`SentimentClassifier`: raw strings in, class probabilities out."""

import dataclasses

import keras
from keras import ops

from lstm_keras.applications.backbone import LSTMBackbone
from lstm_keras.applications.preprocessing import FitLength
from lstm_keras.applications.preprocessing import TextStandardization
from lstm_keras.applications.presets import PRESETS
from lstm_keras.applications.subword import SubwordEmbedding
from lstm_keras.applications.task import Classifier
from lstm_keras.applications.task import MemberAverage
from lstm_keras.applications.task import batched_inputs
from lstm_keras.applications.task import check_class_names

# The settings chosen on SST-2's validation sentences (`make sweep`,
# docs/training.md).
DEFAULT_OPTIONS = {
    "vocabulary_size": 20000,
    "max_length": 64,
    "embedding_dim": 256,
    "subword_buckets": 50000,
    "embedding_dropout": 0.5,
    "word_dropout": 0.0,
    "units": 128,
    "num_layers": 1,
    "bidirectional": True,
    "dropout": 0.2,
    "recurrent_dropout": 0.0,
    "head_dropout": 0.4,
    "lowercase": True,
    "strip_punctuation": True,
    "lstm_options": None,
    # The maximum over the BiLSTM's outputs, not the state after the last
    # token ("last" remains an option): 0.865 against 0.855 on SST-2's
    # validation sentences.
    "pooling": "max",
    "num_members": 1,
    "seed": None,
}


@keras.saving.register_keras_serializable(package="lstm_keras")
class MaxPoolingBackbone(LSTMBackbone):
    """Stacked LSTMs whose outputs are max-pooled over the real timesteps.

    Like `LSTMBackbone`, but every layer returns its whole sequence and the
    output is, per feature, the maximum over the unmasked timesteps of the
    last layer's outputs (BiLSTM-max): every word's state can carry the
    sentence's answer, not only the last one's. A fully masked row gives
    zeros, the output of `LSTMBackbone` on it.

    Args:
        units: Positive integer, units of each LSTM (per direction).
            Defaults to `128`.
        num_layers: Positive integer, stacked LSTM layers. Defaults to `1`.
        bidirectional: Boolean. Defaults to `False`.
        dropout: Float in [0, 1), each LSTM's input dropout. Defaults to
            `0.0`.
        recurrent_dropout: Float in [0, 1), each LSTM's dropout on `h_prev`.
            Defaults to `0.0`.
        lstm_options: Dict of further `lstm_keras.LSTM` arguments, or
            `None`. Defaults to `None`.
        seed: Integer or `None`; layer `i` uses `seed + i`. Defaults to
            `None`.
        **kwargs: Base layer arguments.

    Call arguments:
        sequences: `(batch, timesteps, features)` float tensor.
        mask: Optional boolean `(batch, timesteps)`, `False` at padding.
        training: Python boolean, whether dropout is active.

    Returns:
        `(batch, units)`, or `(batch, 2 * units)` when bidirectional
        (`projection_units` in place of `units` with that variant).

    Example:

    >>> backbone = MaxPoolingBackbone(units=8, bidirectional=True)
    >>> mask = np.array([[True] * 10, [True] * 4 + [False] * 6])
    >>> tuple(backbone(np.ones((2, 10, 3), "float32"), mask=mask).shape)
    (2, 16)
    """

    returns_last_sequence = True

    def call(self, sequences, mask=None, training=False):
        x = self.run_layers(sequences, mask=mask, training=training)
        if mask is None:
            return ops.max(x, axis=1)
        real = ops.expand_dims(ops.cast(mask, "bool"), axis=-1)
        # Padded steps' outputs are fillers (zeros or a copy of the last
        # real output), and a zero can exceed every real (negative) output,
        # so padded steps are set to the lowest float before the maximum.
        lowest = ops.cast(-3.0e38, x.dtype)
        pooled = ops.max(ops.where(real, x, lowest), axis=1)
        return ops.where(ops.any(real, axis=1), pooled, ops.zeros_like(pooled))


BACKBONES = {"last": LSTMBackbone, "max": MaxPoolingBackbone}


def _check_options(num_members, subword_buckets, pooling):
    """Raises a `ValueError` naming the first invalid option."""
    if not isinstance(num_members, int) or num_members < 1:
        raise ValueError(
            "Received an invalid value for argument `num_members`, "
            f"expected a positive integer, got {num_members!r}."
        )
    if (
        isinstance(subword_buckets, bool)
        or not isinstance(subword_buckets, int)
        or subword_buckets < 0
    ):
        raise ValueError(
            "Received an invalid value for argument `subword_buckets`, "
            f"expected a non-negative integer, got {subword_buckets!r}."
        )
    if pooling not in BACKBONES:
        raise ValueError(
            "Received an invalid value for argument `pooling`, expected "
            f"one of {sorted(BACKBONES)}, got {pooling!r}."
        )


@dataclasses.dataclass
class _Member:
    """One ensemble member's layers: embedding(s), backbone, head.

    Member `index` names its layers with the suffix `_{index}` (none for
    member 0) and seeds its dropout masks with `seed + 1000 * index`.
    """

    embedding: keras.layers.Layer
    subword: keras.layers.Layer | None
    backbone: keras.layers.Layer
    head: keras.layers.Layer
    seed: int | None

    @classmethod
    def create(
        cls,
        index,
        seed,
        *,
        vocabulary_size,
        max_length,
        embedding_dim,
        subword_buckets,
        backbone,
        backbone_options,
        num_classes,
    ):
        suffix = f"_{index}" if index else ""
        member_seed = None if seed is None else seed + 1000 * index
        embedding = keras.layers.Embedding(
            vocabulary_size,
            embedding_dim,
            mask_zero=True,
            name=f"embedding{suffix}",
        )
        subword = None
        if subword_buckets:
            subword = SubwordEmbedding(
                subword_buckets,
                embedding_dim,
                max_length=max_length,
                name=f"subword_embedding{suffix}",
            )
        backbone = backbone(
            **backbone_options, seed=member_seed, name=f"backbone{suffix}"
        )
        head = keras.layers.Dense(
            num_classes, activation="softmax", name=f"probabilities{suffix}"
        )
        return cls(embedding, subword, backbone, head, member_seed)

    def __call__(
        self,
        standardized,
        token_ids,
        *,
        word_dropout,
        embedding_dropout,
        head_dropout,
    ):
        """The member's probabilities for the symbolic `token_ids`."""
        x = self.embedding(token_ids)
        if self.subword is not None:
            x = keras.layers.Add()([x, self.subword([standardized, token_ids])])
        x = keras.layers.Dropout(
            word_dropout, noise_shape=(None, None, 1), seed=self.seed
        )(x)
        x = keras.layers.Dropout(embedding_dropout, seed=self.seed)(x)
        x = self.backbone(x)
        x = keras.layers.Dropout(head_dropout, seed=self.seed)(x)
        return self.head(x)


@keras.saving.register_keras_serializable(package="lstm_keras")
class SentimentClassifier(Classifier):
    """Text classifier: TextVectorization, embedding, BiLSTM-max, softmax.

    Takes raw strings and returns class probabilities. Inside the model the
    text is repaired to UTF-8 (invalid bytes become U+FFFD), lowercased,
    stripped of ASCII punctuation (by default), split on whitespace and
    mapped to ids by a `TextVectorization` adapted with `adapt()`; texts
    longer than `max_length` tokens keep their first `max_length`; padding
    is masked, so the backbone's output (by default the maximum of the
    BiLSTM's outputs over the text's tokens) sees real tokens only. An
    empty text has no token and gets the probabilities of the all-zero
    backbone output.

    Args:
        class_names: Sequence of class names; label `i` is `class_names[i]`.
            Defaults to `("negative", "positive")`.
        vocabulary_size: Positive integer, ids including padding (0) and
            out-of-vocabulary (1). Defaults to `20000`.
        max_length: Positive integer, tokens kept per text. Defaults to `64`.
        embedding_dim: Positive integer, embedding width. Defaults to `256`.
        subword_buckets: Non-negative integer; when positive, each token's
            embedding also gets the mean of its hashed character n-gram
            vectors from a table of this many rows (`SubwordEmbedding`), so
            unseen and rare words are not blank. `0` turns it off. Defaults
            to `50000`.
        embedding_dropout: Float in [0, 1), dropout on the embeddings.
            Defaults to `0.5`.
        word_dropout: Float in [0, 1), fraction of whole tokens whose
            embedding is zeroed while training. Defaults to `0.0`.
        units: Positive integer, LSTM units (per direction). Defaults to
            `128`.
        num_layers: Positive integer, stacked LSTMs. Defaults to `1`.
        bidirectional: Boolean. Defaults to `True`.
        dropout: Float in [0, 1), the LSTMs' input dropout. Defaults to `0.2`.
        recurrent_dropout: Float in [0, 1), the LSTMs' dropout on `h_prev`.
            Defaults to `0.0`.
        head_dropout: Float in [0, 1), dropout before the softmax layer.
            Defaults to `0.4`.
        lowercase: Boolean, lowercase the text. Defaults to `True`.
        strip_punctuation: Boolean, replace ASCII punctuation by spaces
            ("n't" becomes "n t"). Defaults to `True`.
        lstm_options: Dict of further `lstm_keras.LSTM` arguments, or `None`.
            Defaults to `None`.
        pooling: `"max"` for the maximum of the last LSTM layer's outputs
            over the text's tokens (`MaxPoolingBackbone`), `"last"` for its
            state after the last token (`LSTMBackbone`). Defaults to
            `"max"`.
        num_members: Positive integer; with more than one, the model is an
            ensemble of that many embedding-backbone-head members (own
            initial weights and dropout masks, shared vocabulary) that
            returns the average of their probabilities. Each member trains
            on its own loss (`Classifier.compute_loss`), as if alone.
            Defaults to `1`.
        seed: Integer or `None`, seed of the dropout masks. Defaults to
            `None`.
        **kwargs: `name`, `trainable`.

    Call arguments:
        text: `tf.string` tensor `(batch,)`.

    Returns:
        `(batch, num_classes)` float32 probabilities.

    Example:

    >>> model = SentimentClassifier(units=8, embedding_dim=8)
    >>> model.adapt(["a fine film", "a dull film"])
    >>> model.compile()
    >>> probabilities = model.predict(tf.constant(["fine"]), verbose=0)
    >>> probabilities.shape
    (1, 2)
    """

    DEFAULT_OPTIONS = DEFAULT_OPTIONS
    # `compile()`'s defaults are the training preset's (`presets.py`).
    default_learning_rate = PRESETS["sentiment"].learning_rate
    default_ema_fraction = PRESETS["sentiment"].ema_fraction

    def __init__(
        self,
        class_names=("negative", "positive"),
        vocabulary_size=DEFAULT_OPTIONS["vocabulary_size"],
        max_length=DEFAULT_OPTIONS["max_length"],
        embedding_dim=DEFAULT_OPTIONS["embedding_dim"],
        subword_buckets=DEFAULT_OPTIONS["subword_buckets"],
        embedding_dropout=DEFAULT_OPTIONS["embedding_dropout"],
        word_dropout=DEFAULT_OPTIONS["word_dropout"],
        units=DEFAULT_OPTIONS["units"],
        num_layers=DEFAULT_OPTIONS["num_layers"],
        bidirectional=DEFAULT_OPTIONS["bidirectional"],
        dropout=DEFAULT_OPTIONS["dropout"],
        recurrent_dropout=DEFAULT_OPTIONS["recurrent_dropout"],
        head_dropout=DEFAULT_OPTIONS["head_dropout"],
        lowercase=DEFAULT_OPTIONS["lowercase"],
        strip_punctuation=DEFAULT_OPTIONS["strip_punctuation"],
        lstm_options=DEFAULT_OPTIONS["lstm_options"],
        pooling=DEFAULT_OPTIONS["pooling"],
        num_members=DEFAULT_OPTIONS["num_members"],
        seed=DEFAULT_OPTIONS["seed"],
        **kwargs,
    ):
        class_names = check_class_names(class_names)
        _check_options(num_members, subword_buckets, pooling)

        # === Layers ===
        standardizer = TextStandardization(
            lowercase=lowercase,
            strip_punctuation=strip_punctuation,
            name="standardization",
        )
        vectorizer = keras.layers.TextVectorization(
            max_tokens=vocabulary_size,
            standardize=None,
            split="whitespace",
            output_mode="int",
            name="vectorization",
        )
        fit_length = FitLength(max_length, name="fit_length")
        # Member i has its own embedding, backbone and head; with more than
        # one, the model outputs the average of their probabilities.
        members = [
            _Member.create(
                index,
                seed,
                vocabulary_size=vocabulary_size,
                max_length=max_length,
                embedding_dim=embedding_dim,
                subword_buckets=subword_buckets,
                backbone=BACKBONES[pooling],
                backbone_options=dict(
                    units=units,
                    num_layers=num_layers,
                    bidirectional=bidirectional,
                    dropout=dropout,
                    recurrent_dropout=recurrent_dropout,
                    lstm_options=lstm_options,
                ),
                num_classes=len(class_names),
            )
            for index in range(num_members)
        ]

        # === Functional model ===
        text = keras.Input(shape=(), dtype="string", name="text")
        standardized = standardizer(text)
        token_ids = fit_length(vectorizer(standardized))
        # token_ids: <int64>[batch, timesteps], 0 = padding (masked)
        outputs = [
            member(
                standardized,
                token_ids,
                word_dropout=word_dropout,
                embedding_dropout=embedding_dropout,
                head_dropout=head_dropout,
            )
            for member in members
        ]
        probabilities = outputs[0]
        if num_members > 1:
            probabilities = MemberAverage(name="average")(outputs)

        # === Config ===
        options = {
            "class_names": class_names,
            "vocabulary_size": vocabulary_size,
            "max_length": max_length,
            "embedding_dim": embedding_dim,
            "subword_buckets": subword_buckets,
            "embedding_dropout": embedding_dropout,
            "word_dropout": word_dropout,
            "units": units,
            "num_layers": num_layers,
            "bidirectional": bidirectional,
            "dropout": dropout,
            "recurrent_dropout": recurrent_dropout,
            "head_dropout": head_dropout,
            "lowercase": lowercase,
            "strip_punctuation": strip_punctuation,
            "lstm_options": lstm_options,
            "pooling": pooling,
            "num_members": num_members,
            "seed": seed,
        }
        super().__init__(text, probabilities, options, **kwargs)
        self.standardizer = standardizer
        self.vectorizer = vectorizer
        self.backbone = members[0].backbone

    def adapt(self, data, batch_size=1024):
        """Builds the vocabulary from training texts.

        Args:
            data: `tf.data.Dataset` of strings or of `(string, label)`
                pairs, batched or not, or a list or array of strings.
            batch_size: Batch size used for unbatched data. Defaults to
                `1024`.
        """
        texts = batched_inputs(data, 0, "text", batch_size)
        self.vectorizer.adapt(texts.map(self.standardizer))

    # Options added after the first release, with the value that reproduces
    # a model saved before them (their defaults have since changed).
    OPTIONS_BEFORE_THEY_EXISTED = {"pooling": "last", "subword_buckets": 0}

    @classmethod
    def from_config(cls, config):
        return cls(**{**cls.OPTIONS_BEFORE_THEY_EXISTED, **config})

    def vocabulary(self):
        """The adapted vocabulary: `["", "[UNK]", most frequent, ...]`."""
        return self.vectorizer.get_vocabulary()
