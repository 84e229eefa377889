"""What `lstm-keras-export` reads: a `.keras` file and calibration data.

- `load_model_file(path)`: the model, loaded in safe mode, with errors
  that name the file.
- `representative_examples(source, model)`: examples that calibrate an
  int8 LiteRT file's activations (`export_litert(representative_data=)`).
"""

import os

import numpy as np


def load_model_file(path):
    """Loads the `.keras` model in `path` with `safe_mode=True`.

    Args:
        path: The `.keras` file.

    Returns:
        The Keras model.

    Raises:
        ValueError: The file does not exist or is not a `.keras` model; the
            message names the file.
    """
    import keras

    import lstm_keras  # noqa: F401  (registers the serializable classes)

    if not os.path.isfile(path):
        raise ValueError(f"Model file {path!r} does not exist.")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as error:
        raise ValueError(
            f"Could not load model file {path!r} as a .keras model: "
            f"{type(error).__name__}: {error}"
        ) from error


def representative_examples(source, model):
    """Unbatched inputs of `model` from the training split of `source`.

    Args:
        source: A `.npy` file of examples, for any model; or, for a speech
            model, a dataset source as `lstm-keras-train --data` takes (a
            folder, `"sample"`, a TFDS name), whose training clips are
            drawn in a seeded shuffle.
        model: The model the examples are for.

    Returns:
        An iterable of NumPy examples, one model input each.

    Raises:
        ValueError: The `.npy` file does not exist, or a dataset source is
            given for a model other than a speech model.
    """
    if source.endswith(".npy"):
        if not os.path.isfile(source):
            raise ValueError(
                f"--representative-data file {source!r} does not exist."
            )
        return list(np.load(source))
    from lstm_keras.applications import SpeechClassifier
    from lstm_keras.datasets import load_dataset

    if not isinstance(model, SpeechClassifier):
        raise ValueError(
            f"--representative-data {source!r}: a dataset source calibrates "
            "a speech model; for any other model pass a .npy file of "
            "examples."
        )
    splits = load_dataset(source, "speech")
    return (
        waveform.numpy() for waveform, _ in splits.train.shuffle(4096, seed=0)
    )
