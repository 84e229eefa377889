"""`tf.data` pipelines for training the applications.

The training stream is a pure function of `(seed, epoch)`: each epoch is
shuffled with its own seed, so a run resumed at epoch k (from
`keras.callbacks.BackupAndRestore`) sees exactly the batches an
uninterrupted run sees from epoch k on. Every epoch has the same number of
batches, `ceil(n / batch_size)`, which `fit` gets as `steps_per_epoch`.

Batches hold examples of similar lengths (texts by word count, clips by
samples: sorted within pools of `POOL_BATCHES` batches, then the batches
shuffled), so the padding each batch computes stays short. Audio batches
are zero-padded at the end.
"""

import math

import tensorflow as tf

# Batches per pool that are sorted by length: more pools less padding, but
# batches of a pool then differ less in length from one another.
POOL_BATCHES = 16


def steps_per_epoch(num_examples, batch_size):
    """Batches per epoch: every example once, the last batch partial."""
    return math.ceil(num_examples / batch_size)


def _epoch_seed(seed, epoch):
    # Distinct for every (seed, epoch) pair a run can meet; a Python int,
    # because TF's seed checks cannot take a tensor seed when seed == 0.
    return (seed * 1_000_003 + epoch) % 2**31


def _word_counts(texts):
    """`<int32>[batch]` whitespace-separated words of `<string>[batch]`."""
    words = tf.strings.split(tf.strings.strip(texts))
    return tf.cast(words.row_lengths(), tf.int32)


def _sort_pool(texts, labels):
    order = tf.argsort(_word_counts(texts), stable=True)
    return tf.gather(texts, order), tf.gather(labels, order)


def _sort_clip_pool(clips, labels):
    # clips: <float32>[pool, (samples)], ragged
    order = tf.argsort(clips.row_lengths(), stable=True)
    return tf.gather(clips, order), tf.gather(labels, order)


def _batches(examples, modality, batch_size, seed):
    """One epoch of `examples` (already shuffled) as training batches."""
    pool = batch_size * POOL_BATCHES
    if modality == "audio":
        pooled = (
            examples.ragged_batch(pool)
            .map(_sort_clip_pool)
            .unbatch()
            # Rows of a ragged batch come as ragged scalars; `padded_batch`
            # needs plain tensors.
            .map(lambda clip, label: (tf.convert_to_tensor(clip), label))
            .padded_batch(batch_size)
        )
    else:
        pooled = (
            examples.batch(pool).map(_sort_pool).unbatch().batch(batch_size)
        )
    return pooled.shuffle(POOL_BATCHES, seed=seed)


def training_stream(
    examples, num_examples, modality, *, batch_size, seed, start_epoch, epochs
):
    """Batches of epochs `start_epoch .. epochs - 1`, one after the other.

    Args:
        examples: Unbatched `(x, label)` dataset (cache it beforehand).
        num_examples: Its size.
        modality: `"text"` (`x` a string) or `"audio"` (`<float32>[samples]`).
        batch_size: Examples per batch (the global batch under a strategy).
        seed: The run's seed.
        start_epoch: The first epoch to produce (where a resumed run starts).
        epochs: One past the last epoch.

    Returns:
        A dataset of `(x, label)` batches: `<string>[batch]` or
        `<float32>[batch, samples]`, and `<int64>[batch]`;
        `steps_per_epoch(num_examples, batch_size)` batches per epoch.
    """

    def one_epoch(epoch):
        epoch_seed = _epoch_seed(seed, epoch)
        shuffled = examples.shuffle(
            num_examples, seed=epoch_seed, reshuffle_each_iteration=False
        )
        return _batches(shuffled, modality, batch_size, epoch_seed)

    stream = None
    for epoch in range(start_epoch, epochs):
        batches = one_epoch(epoch)
        stream = batches if stream is None else stream.concatenate(batches)
    if stream is None:
        raise ValueError(
            f"Nothing to train: start_epoch={start_epoch} >= epochs={epochs}."
        )
    return stream.prefetch(tf.data.AUTOTUNE)


def evaluation_batches(examples, modality, batch_size):
    """`examples` in order, batched (audio zero-padded at the end)."""
    if modality == "audio":
        batches = examples.padded_batch(batch_size)
    else:
        batches = examples.batch(batch_size)
    return batches.prefetch(tf.data.AUTOTUNE)


def inputs_only(examples):
    """The `x` of `(x, label)` examples, for `adapt`."""
    return examples.map(lambda x, label: x)
