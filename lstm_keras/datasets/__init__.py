"""Datasets for the applications: TFDS names, local folders, the sample.

`load_dataset(source, task)` returns a `Splits` of unbatched `(x, label)`
datasets; see `loading.load_dataset` for the sources and splits,
`layouts` for the local folder layouts and `files` for how files are read.
"""

from lstm_keras.datasets.layouts import LAYOUTS
from lstm_keras.datasets.layouts import detect_layout
from lstm_keras.datasets.loading import TASKS
from lstm_keras.datasets.loading import Splits
from lstm_keras.datasets.loading import load_dataset
from lstm_keras.datasets.loading import samples_dir

__all__ = [
    "LAYOUTS",
    "TASKS",
    "Splits",
    "detect_layout",
    "load_dataset",
    "samples_dir",
]
