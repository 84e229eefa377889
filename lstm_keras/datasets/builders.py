"""TFDS builders that read the local layouts, so they get TFDS's caching,
splits and metadata like any catalogue dataset.

Each builder takes a `LocalDirectoryConfig` keyed by the directory: its name
is the layout plus a digest of the folder's absolute path and of its files'
names, sizes and modification times, so a changed folder is prepared again
and two folders never share a cache. `builder_for(layout, root, modality,
data_dir)` makes the builder; `download_and_prepare()` then writes TFRecords
under `data_dir` (TFDS's default, `~/tensorflow_datasets`, if `None`) once.

Splits, as the sources define them:

- `lstm_keras_sst2`: `train` (train.tsv) and `dev` (dev.tsv).
- `lstm_keras_fsdd`: `train` (recording index 5 and above) and `test`
  (index 0-4), with each clip's speaker and index.
- `lstm_keras_class_folders`: one split, `examples`; the loader draws a seeded
  train/validation/test split from it.
"""

import dataclasses
import hashlib
import os

import numpy as np
import tensorflow_datasets as tfds

from lstm_keras.datasets import files
from lstm_keras.datasets.layouts import class_folder_files

_VERSION = tfds.core.Version("1.0.0")


@dataclasses.dataclass
class LocalDirectoryConfig(tfds.core.BuilderConfig):
    """A builder config naming the local folder to read.

    Attributes:
        directory: The folder holding the data (absolute path).
        modality: `"text"` or `"audio"`.
        class_names: The class names, in label order.
        sample_rate: Audio sample rate in Hz, `None` for text.
    """

    directory: str = ""
    modality: str = "text"
    class_names: tuple = ()
    sample_rate: int | None = None


def _digest(root, paths):
    h = hashlib.sha1(os.path.abspath(root).encode())
    for path in sorted(paths):
        stat = os.stat(path)
        h.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return h.hexdigest()[:12]


class LstmKerasSst2(tfds.core.GeneratorBasedBuilder):
    """SST-2 as GLUE distributes it, read from a local folder."""

    VERSION = _VERSION

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "sentence": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(
                        names=list(files.SST2_CLASS_NAMES)
                    ),
                }
            ),
            supervised_keys=("sentence", "label"),
            homepage="https://nlp.stanford.edu/sentiment/",
        )

    def _split_generators(self, dl_manager):
        root = self.builder_config.directory
        return {
            "train": self._generate_examples(os.path.join(root, "train.tsv")),
            "dev": self._generate_examples(os.path.join(root, "dev.tsv")),
        }

    def _generate_examples(self, path):
        for number, (sentence, label) in enumerate(files.read_sst2_tsv(path)):
            yield number, {"sentence": sentence, "label": label}


class LstmKerasFsdd(tfds.core.GeneratorBasedBuilder):
    """The Free Spoken Digit Dataset, read from a local folder of WAVs."""

    VERSION = _VERSION

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "audio": tfds.features.Tensor(
                        shape=(None,), dtype=np.float32
                    ),
                    "label": tfds.features.ClassLabel(
                        names=[str(d) for d in range(10)]
                    ),
                    "speaker": tfds.features.Text(),
                    "index": np.int32,
                }
            ),
            supervised_keys=("audio", "label"),
            homepage="https://github.com/Jakobovski/free-spoken-digit-dataset",
        )

    def _split_generators(self, dl_manager):
        root = self.builder_config.directory
        clips = sorted(
            (n, files.parse_fsdd_name(n))
            for n in os.listdir(root)
            if files.parse_fsdd_name(n)
        )
        # The dataset's own split: recordings 0-4 of each digit and speaker.
        return {
            "train": self._generate_examples(
                root, [c for c in clips if c[1][2] >= 5]
            ),
            "test": self._generate_examples(
                root, [c for c in clips if c[1][2] < 5]
            ),
        }

    def _generate_examples(self, root, clips):
        for name, (digit, speaker, index) in clips:
            audio, _ = files.read_wav(
                os.path.join(root, name), files.FSDD_SAMPLE_RATE
            )
            yield (
                name,
                {
                    "audio": audio,
                    "label": digit,
                    "speaker": speaker,
                    "index": index,
                },
            )


class LstmKerasClassFolders(tfds.core.GeneratorBasedBuilder):
    """`<root>/<class_name>/*.txt|*.wav`, as Keras's `*_from_directory` read."""

    VERSION = _VERSION

    def _info(self):
        config = self.builder_config
        if config.modality == "text":
            x = tfds.features.Text()
        else:
            x = tfds.features.Tensor(shape=(None,), dtype=np.float32)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "x": x,
                    "label": tfds.features.ClassLabel(
                        names=list(config.class_names)
                    ),
                    "path": tfds.features.Text(),
                }
            ),
            supervised_keys=("x", "label"),
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        _, paths = class_folder_files(config.directory, config.modality)
        return {"examples": self._generate_examples(paths)}

    def _generate_examples(self, paths):
        config = self.builder_config
        for path, label in paths:
            if config.modality == "text":
                x = files.read_text_file(path)
            else:
                x, _ = files.read_wav(path, config.sample_rate)
            relative = os.path.relpath(path, config.directory)
            yield relative, {"x": x, "label": label, "path": relative}


def builder_for(layout, root, modality, data_dir=None):
    """The TFDS builder reading `root` in `layout` (see `detect_layout`).

    Args:
        layout: `"sst2"`, `"fsdd"` or `"class_folders"`.
        root: The folder holding the data.
        modality: `"text"` or `"audio"`.
        data_dir: Where TFDS caches the prepared data. Defaults to `None`
            (TFDS's default).

    Returns:
        A `tfds.core.DatasetBuilder`, not yet prepared.
    """
    root = os.path.abspath(root)
    class_names, sample_rate = (), None
    if layout == "sst2":
        cls = LstmKerasSst2
        paths = [os.path.join(root, n) for n in ("train.tsv", "dev.tsv")]
        class_names = files.SST2_CLASS_NAMES
    elif layout == "fsdd":
        cls = LstmKerasFsdd
        paths = [
            os.path.join(root, n)
            for n in os.listdir(root)
            if files.parse_fsdd_name(n)
        ]
        class_names = tuple(str(d) for d in range(10))
        sample_rate = files.FSDD_SAMPLE_RATE
    elif layout == "class_folders":
        cls = LstmKerasClassFolders
        class_names, labelled = class_folder_files(root, modality)
        if not labelled:
            raise ValueError(f"The data directory {root!r} holds no files.")
        paths = [p for p, _ in labelled]
        if modality == "audio":
            # Every clip must share the first one's rate; read_wav checks.
            _, sample_rate = files.read_wav(paths[0])
        class_names = tuple(class_names)
    else:
        raise ValueError(f"Unknown layout {layout!r}.")
    config = LocalDirectoryConfig(
        name=f"{layout}-{_digest(root, paths)}",
        version=_VERSION,
        description=f"{layout} layout read from {root}",
        directory=root,
        modality=modality,
        class_names=class_names,
        sample_rate=sample_rate,
    )
    return cls(config=config, data_dir=data_dir)
