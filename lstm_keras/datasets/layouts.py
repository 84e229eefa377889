"""Recognizes which of the local layouts a directory holds.

The layouts (`LAYOUTS`):

- `"sst2"`: `train.tsv` and `dev.tsv` (`sentence<TAB>label`, with a header),
  as GLUE distributes SST-2. Text.
- `"fsdd"`: `{digit}_{speaker}_{index}.wav` files (8 kHz mono), as the Free
  Spoken Digit Dataset ships them; the folder holding `recordings/` works
  too. Audio.
- `"class_folders"`: `<root>/<class_name>/...` with `.txt` or `.wav` files,
  as `keras.utils.text_dataset_from_directory` and
  `audio_dataset_from_directory` read them. Text or audio.
"""

import os

from lstm_keras.datasets.files import parse_fsdd_name

LAYOUTS = {
    "sst2": "train.tsv and dev.tsv (sentence<TAB>label, with a header line)",
    "fsdd": "{digit}_{speaker}_{index}.wav files, or a folder holding "
    "recordings/ with them",
    "class_folders": "one sub-folder per class holding .txt or .wav files",
}
MODALITY = {".txt": "text", ".wav": "audio"}


def describe_layouts():
    return "\n".join(f"  - {name}: {text}" for name, text in LAYOUTS.items())


def detect_layout(directory):
    """Finds the layout of `directory`.

    Args:
        directory: A local folder.

    Returns:
        `(layout, root, modality)`: a key of `LAYOUTS`, the folder that holds
        the data (`recordings/` for FSDD when given its parent) and `"text"`
        or `"audio"`.

    Raises:
        ValueError: if `directory` does not exist, or matches no layout or
            more than one, listing the layouts.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(
            f"The data directory {directory!r} does not exist or is not a "
            "directory."
        )
    found = []
    names = set(os.listdir(directory))
    if {"train.tsv", "dev.tsv"} <= names:
        found.append(("sst2", directory, "text"))
    recordings = os.path.join(directory, "recordings")
    for root in (directory, recordings):
        if os.path.isdir(root) and _is_fsdd(root):
            found.append(("fsdd", root, "audio"))
            break
    else:
        modality = _class_folder_modality(directory)
        if modality is not None:
            found.append(("class_folders", directory, modality))
    if len(found) == 1:
        return found[0]
    what = (
        "matches several layouts ("
        + ", ".join(layout for layout, _, _ in found)
        + ")"
        if found
        else "matches none of the layouts"
    )
    raise ValueError(
        f"The data directory {directory!r} {what}. Expected exactly one of:\n"
        f"{describe_layouts()}"
    )


def _is_fsdd(root):
    wavs = [n for n in os.listdir(root) if n.lower().endswith(".wav")]
    return bool(wavs) and all(parse_fsdd_name(n) for n in wavs)


def _class_folder_modality(directory):
    """The modality of a class-per-folder directory, or `None` if it is not one."""
    classes = [
        n
        for n in os.listdir(directory)
        if os.path.isdir(os.path.join(directory, n)) and not n.startswith(".")
    ]
    if not classes:
        return None
    extensions = set()
    for name in classes:
        for _, _, files in os.walk(os.path.join(directory, name)):
            extensions.update(os.path.splitext(f)[1].lower() for f in files)
    kinds = {MODALITY[e] for e in extensions if e in MODALITY}
    if len(kinds) != 1:
        return None
    return kinds.pop()


def class_folder_files(directory, modality):
    """`(class_names, [(path, label), ...])` of a class-per-folder directory.

    Classes are the sub-folder names in sorted order, as Keras's
    `*_dataset_from_directory` numbers them; files are found recursively and
    listed in sorted order.
    """
    extension = {"text": ".txt", "audio": ".wav"}[modality]
    class_names = sorted(
        n
        for n in os.listdir(directory)
        if os.path.isdir(os.path.join(directory, n)) and not n.startswith(".")
    )
    files = []
    for label, name in enumerate(class_names):
        for root, _, names in sorted(os.walk(os.path.join(directory, name))):
            files.extend(
                (os.path.join(root, f), label)
                for f in sorted(names)
                if f.lower().endswith(extension)
            )
    return class_names, files
