"""SST-2's validation split by whole sentences.

SST-2's training rows are not independent examples: they are the phrases
of the parse trees of about 6,900 sentences (the sentence itself, its
clauses, down to single words), each with its own label. A random share of
the rows as validation set therefore has, for almost every validation
phrase, its whole sentence or its sub-phrases in training: validation
accuracy keeps rising with memorisation while accuracy on the test set
(the dev sentences, which training never saw) has long peaked.

`split_sentences` holds out whole sentences instead: a seeded share of the
rows that are not part of a longer row is the validation set, and every
training row contained in one of them is removed from training, so no
validation sentence has been seen, whole or in part.

Tokens are the whitespace-separated words of a row; "A is contained in B"
means A's tokens are a contiguous run of B's tokens.
"""

import math

import numpy as np

TRAIN = 0
VALIDATION = 1
REMOVED = 2


def _key(text):
    # Tokens never hold whitespace, so one space between them is a
    # canonical, hashable form of the token sequence.
    return " ".join(text.split())


def _spans(tokens, shorter_than):
    """Every contiguous run of `tokens` with fewer than `shorter_than`."""
    n = len(tokens)
    for start in range(n):
        for stop in range(start + 1, min(n, start + shorter_than - 1) + 1):
            yield " ".join(tokens[start:stop])


def round_half_up(x):
    """Rounds halves up (`round` takes them to even: 4.5 -> 4)."""
    return math.floor(x + 0.5)


def find_sentences(texts):
    """Marks the rows that are not contained in a longer row.

    Args:
        texts: The rows' texts (`str`), in any order.

    Returns:
        A boolean `np.ndarray`, one entry per row: `True` for a sentence.
        Identical rows are all sentences or none. A row without tokens is
        contained in nothing (it shares no word with any row), so it is a
        sentence.

    Example:

    >>> find_sentences(["a fine film", "fine film", "film", "dull"]).tolist()
    [True, False, False, True]
    """
    keys = [_key(t) for t in texts]
    lengths = [k.count(" ") + 1 if k else 0 for k in keys]
    # Longest first: a row contained in a longer row is contained in that
    # row's sentence too, so only sentences need their spans listed.
    order = sorted(range(len(keys)), key=lambda i: -lengths[i])
    contained = set()
    listed = set()
    is_sentence = np.zeros(len(keys), bool)
    for i in order:
        key = keys[i]
        if key in contained:
            continue
        is_sentence[i] = True
        if key not in listed:
            listed.add(key)
            contained.update(_spans(key.split(), lengths[i]))
    return is_sentence


def split_sentences(texts, validation_fraction=0.1, seed=0):
    """Assigns SST-2 training rows to train, validation or neither.

    `k = max(1, round_half_up(validation_fraction * n))` of the `n`
    sentences (see `find_sentences`), drawn with `seed`, are the validation
    set. Every other row contained in a validation sentence, or equal to
    one, is removed: training on it would show the model part of a
    validation sentence. The rest is the training set.

    The draw depends on the texts only, not on the rows' order: sentences
    are drawn from their sorted texts (ties keep row order).

    Args:
        texts: The training rows' texts (`str`).
        validation_fraction: Share of the sentences held out, in (0, 1).
            Defaults to 0.1.
        seed: Seed of the draw. Defaults to 0.

    Returns:
        `(parts, num_sentences)`: `parts` an int8 `np.ndarray` of `TRAIN`,
        `VALIDATION` or `REMOVED` per row, `num_sentences` the number of
        sentences the validation set was drawn from.

    Raises:
        ValueError: if no training row would be left.

    Example:

    >>> parts, n = split_sentences(
    ...     ["a fine film", "fine film", "dull , dull", "dull"], 0.5, seed=0
    ... )
    >>> n, sorted(parts.tolist())
    (2, [0, 0, 1, 2])
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(
            "Received an invalid value for argument validation_fraction, "
            f"expected a number in (0, 1), got {validation_fraction!r}."
        )
    keys = [_key(t) for t in texts]
    sentences = np.flatnonzero(find_sentences(texts))
    sentences = sorted(sentences, key=lambda i: keys[i])
    n = len(sentences)
    k = max(1, round_half_up(validation_fraction * n))
    if k >= n:
        raise ValueError(
            f"The training rows hold {n} sentence(s): too few to hold out "
            f"validation_fraction={validation_fraction!r} of them and train "
            "on the rest."
        )
    chosen = np.random.default_rng(seed).permutation(n)[:k]
    held_out = [sentences[j] for j in chosen]
    parts = np.full(len(keys), TRAIN, np.int8)
    parts[held_out] = VALIDATION
    seen_in_validation = set()
    for i in held_out:
        tokens = keys[i].split()
        seen_in_validation.update(_spans(tokens, len(tokens) + 1))
    for i, key in enumerate(keys):
        if parts[i] == TRAIN and key in seen_in_validation:
            parts[i] = REMOVED
    if not (parts == TRAIN).any():
        raise ValueError(
            "Holding out validation_fraction="
            f"{validation_fraction!r} of the sentences leaves no training "
            "row: every row is part of a validation sentence."
        )
    return parts, n
