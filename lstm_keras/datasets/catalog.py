"""The TFDS catalogue datasets the applications read by name.

Each entry says which task it serves, which feature is the input, and how its
splits map to train/validation/test. Audio arrives as integer PCM and is
scaled to float32 in [-1, 1].
"""

import tensorflow as tf

# `pool` is split into train and validation with the loader's seed (by
# whole sentences where `sentences` is set); `test` is used as is. An entry
# with `validation` has its own validation split.
TFDS_SOURCES = {
    "imdb_reviews": {
        "task": "sentiment",
        "x": "text",
        "pool": "train",
        "test": "test",
    },
    "glue/sst2": {
        # GLUE's test labels are hidden (-1): its validation split is the
        # labelled test set, as for the local SST-2 layout.
        "task": "sentiment",
        "x": "sentence",
        "pool": "train",
        "test": "validation",
        # Validation by whole sentences (`lstm_keras.datasets.sst2_split`).
        "sentences": True,
    },
    "spoken_digit": {
        # One TFDS split; the dataset's own rule (recordings 0-4 are test)
        # is applied from each clip's file name.
        "task": "speech",
        "x": "audio",
        "pool": "train",
        "test": None,
        "sample_rate": 8000,
    },
    "speech_commands": {
        "task": "speech",
        "x": "audio",
        "train": "train",
        "validation": "validation",
        "test": "test",
        "sample_rate": 16000,
    },
}


def catalog_entry(name):
    """The `TFDS_SOURCES` entry for `name` (also with `/config` or `:version`)."""
    for key, entry in TFDS_SOURCES.items():
        if name == key or name.startswith((key + "/", key + ":")):
            return key, entry
    return None, None


def pcm_to_float(audio):
    """`<int>[samples]` 16-bit PCM to `<float32>[samples]` in [-1, 1]."""
    return tf.cast(audio, tf.float32) / 2.0**15
