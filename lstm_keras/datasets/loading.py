"""`load_dataset`: one entry point for TFDS names, the embedded sample and
local directories, returning unbatched `(x, label)` splits."""

import collections
import contextlib
import dataclasses
import os

import numpy as np
import tensorflow as tf

from lstm_keras.datasets import catalog
from lstm_keras.datasets import files
from lstm_keras.datasets.layouts import describe_layouts
from lstm_keras.datasets.layouts import detect_layout

TASKS = {"sentiment": "text", "speech": "audio"}
SAMPLE_SOURCE = "sample"
# Folders of data/samples/ that `load_dataset("sample", task)` reads.
SAMPLE_FOLDERS = {"sentiment": "sst2", "speech": "fsdd"}
# A class-per-folder directory has no test split: this share of it becomes one.
CLASS_FOLDERS_TEST_FRACTION = 0.1


@dataclasses.dataclass
class Splits:
    """A dataset ready for an application.

    Attributes:
        train, validation, test: Unbatched `tf.data.Dataset`s of `(x, label)`:
            `x` a `tf.string` scalar (text) or `<float32>[samples]` mono in
            [-1, 1] (audio); `label` int64.
        class_names: The class names, in label order.
        sample_rate: Audio sample rate in Hz; `None` for text.
        layout: `"sst2"`, `"fsdd"`, `"class_folders"` or `"tfds"`.
        source: What was asked for (a TFDS name, `"sample"` or a directory).
        num_examples: `{"train": n, "validation": n, "test": n}`.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    class_names: list
    sample_rate: int | None
    layout: str
    source: str
    num_examples: dict


def samples_dir():
    """The repository's `data/samples/` (present in a source checkout)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, os.pardir, os.pardir, "data", "samples")


def load_dataset(
    source,
    task,
    *,
    seed=0,
    validation_fraction=0.1,
    tfds_data_dir=None,
    holdout_speaker=None,
):
    """Loads `source` for `task` as train/validation/test splits.

    Sources:

    - `"sample"`: the compact real sample embedded in the repository under
      `data/samples/` (all of SST-2 for `"sentiment"`, recordings 0-19 of
      every FSDD speaker for `"speech"`).
    - A local directory in one of the layouts of
      `lstm_keras.datasets.layouts` (SST-2 TSVs, FSDD WAVs, or one folder
      per class), prepared once into TFDS's cache by the builders of
      `lstm_keras.datasets.builders`.
    - A TFDS catalogue name: `imdb_reviews`, `glue/sst2`, `spoken_digit`,
      `speech_commands` (downloaded if there is network, else read from a
      prepared `tfds_data_dir`).

    Splits: a source's own test split is the test set (SST-2's dev set,
    FSDD's recordings 0-4); `validation_fraction` of its training data,
    drawn with `seed`, is the validation set. A class-per-folder directory
    gives a seeded 80/10/10 split (test 10%, validation `validation_fraction`
    of all). `speech_commands` keeps its own three splits.

    Args:
        source: `"sample"`, a directory, or a TFDS name.
        task: `"sentiment"` (text) or `"speech"` (audio).
        seed: Seed of the validation (and class-folder test) draw. Defaults
            to 0.
        validation_fraction: Share held out for validation, in (0, 1).
            Defaults to 0.1.
        tfds_data_dir: TFDS data directory (cache of prepared datasets).
            Defaults to `None` (TFDS's default, `~/tensorflow_datasets`).
        holdout_speaker: For FSDD (local or `spoken_digit`): this speaker's
            clips are the test set and none of them is trained or validated
            on. Defaults to `None` (the dataset's own split).

    Returns:
        A `Splits`.

    Example:

    >>> splits = load_dataset("sample", "sentiment")  # doctest: +SKIP
    >>> splits.class_names  # doctest: +SKIP
    ['negative', 'positive']
    """
    if task not in TASKS:
        raise ValueError(
            f"Received an invalid value for argument task, expected one of "
            f"{sorted(TASKS)}, got {task!r}."
        )
    if not 0 < validation_fraction < 1:
        raise ValueError(
            "Received an invalid value for argument validation_fraction, "
            f"expected a number in (0, 1), got {validation_fraction!r}."
        )
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "Expected argument source to be a string (a TFDS name, "
            f"'sample' or a directory), got {source!r}."
        )
    source = os.fspath(source)
    options = dict(
        seed=seed,
        validation_fraction=validation_fraction,
        tfds_data_dir=tfds_data_dir,
        holdout_speaker=holdout_speaker,
    )
    if source == SAMPLE_SOURCE:
        directory = os.path.join(samples_dir(), SAMPLE_FOLDERS[task])
        if not os.path.isdir(directory):
            raise ValueError(
                f"The embedded sample {directory!r} is missing: it ships with "
                "a source checkout of lstm_keras (data/samples/). Pass a "
                "local directory or a TFDS name as source instead."
            )
        return _load_local(directory, task, source, **options)
    if os.path.isdir(source):
        return _load_local(source, task, source, **options)
    name, entry = catalog.catalog_entry(source)
    if entry is None:
        raise ValueError(
            f"Received an invalid value for argument source: {source!r} is "
            "neither an existing directory, 'sample', nor a known TFDS "
            f"dataset ({', '.join(catalog.TFDS_SOURCES)}). A directory must "
            f"hold one of these layouts:\n{describe_layouts()}"
        )
    return _load_tfds(source, name, entry, task, **options)


@contextlib.contextmanager
def _preparation_lock(builder):
    """Serializes preparing one cache between processes (e.g. the workers
    of a multi-worker run), which would otherwise write the same files."""
    folder = os.path.dirname(os.fspath(builder.data_dir))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".prepare.lock"), "w") as lock:
        try:
            import fcntl
        except ImportError:  # Windows: no lock, one process at a time.
            yield
            return
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _check_task(task, modality, source):
    if TASKS[task] != modality:
        raise ValueError(
            f"The source {source!r} holds {modality}, but the task {task!r} "
            f"needs {TASKS[task]}."
        )


def _check_holdout(holdout_speaker, speakers, source, layout):
    if holdout_speaker is None:
        return
    if speakers is None:
        raise ValueError(
            f"Received holdout_speaker={holdout_speaker!r}, but the source "
            f"{source!r} ({layout}) has no speakers: only FSDD sources "
            "(an FSDD directory, 'sample' for speech, spoken_digit) do."
        )
    if holdout_speaker not in speakers:
        raise ValueError(
            f"Received an invalid value for argument holdout_speaker: "
            f"{holdout_speaker!r} is not a speaker of {source!r}; its "
            f"speakers are {sorted(speakers)}."
        )


def _load_local(
    directory,
    task,
    source,
    *,
    seed,
    validation_fraction,
    tfds_data_dir,
    holdout_speaker,
):
    # Imported here: it registers TFDS builders, which only local use needs.
    from lstm_keras.datasets.builders import builder_for

    layout, root, modality = detect_layout(directory)
    _check_task(task, modality, source)
    speakers = None
    if layout == "fsdd":
        clips = [files.parse_fsdd_name(n) for n in os.listdir(root)]
        speakers = collections.Counter(c[1] for c in clips if c)
    _check_holdout(holdout_speaker, speakers, source, layout)

    builder = builder_for(layout, root, modality, tfds_data_dir)
    with _preparation_lock(builder):
        # Anew: the info of one made before the lock misses what another
        # process prepared meanwhile.
        builder = builder_for(layout, root, modality, tfds_data_dir)
        builder.download_and_prepare()
    info = builder.info
    sizes = {k: v.num_examples for k, v in info.splits.items()}
    config = builder.builder_config
    x_key = {"sst2": "sentence", "fsdd": "audio", "class_folders": "x"}[layout]

    def split(name):
        return builder.as_dataset(split=name, shuffle_files=False)

    def pairs(ds):
        return ds.map(lambda ex: (ex[x_key], ex["label"]))

    if layout == "class_folders":
        parts = _seeded_parts(
            pairs(split("examples")),
            sizes["examples"],
            [
                1 - validation_fraction - CLASS_FOLDERS_TEST_FRACTION,
                validation_fraction,
                CLASS_FOLDERS_TEST_FRACTION,
            ],
            seed,
        )
    else:
        if layout == "sst2":
            pool, n_pool, test, n_test = (
                split("train"),
                sizes["train"],
                split("dev"),
                sizes["dev"],
            )
        elif holdout_speaker is None:
            pool, n_pool, test, n_test = (
                split("train"),
                sizes["train"],
                split("test"),
                sizes["test"],
            )
        else:
            everything = split("train").concatenate(split("test"))
            n_test = speakers[holdout_speaker]
            pool = everything.filter(
                lambda ex: ex["speaker"] != holdout_speaker
            )
            test = everything.filter(
                lambda ex: ex["speaker"] == holdout_speaker
            )
            n_pool = sum(speakers.values()) - n_test
        parts = _seeded_parts(
            pairs(pool),
            n_pool,
            [1 - validation_fraction, validation_fraction],
            seed,
        )
        parts.append((pairs(test), n_test))
    return _splits(
        parts, list(config.class_names), config.sample_rate, layout, source
    )


def _load_tfds(
    source,
    name,
    entry,
    task,
    *,
    seed,
    validation_fraction,
    tfds_data_dir,
    holdout_speaker,
):
    import tensorflow_datasets as tfds

    if entry["task"] != task:
        raise ValueError(
            f"The TFDS dataset {source!r} is for the task {entry['task']!r}, "
            f"got task={task!r}."
        )
    if name != "spoken_digit":
        _check_holdout(holdout_speaker, None, source, "tfds")
    try:
        builder = tfds.builder(source, data_dir=tfds_data_dir)
        builder.download_and_prepare()
    except Exception as error:
        where = tfds_data_dir or "TFDS's default data directory"
        raise ValueError(
            f"The TFDS dataset {source!r} is not available: it is not "
            f"prepared in {where} and could not be downloaded "
            f"({type(error).__name__}: {str(error)[:300]}). Prepare it on a "
            f"machine with network access (`tfds build {source} --data_dir "
            "DIR`) and pass that DIR as tfds_data_dir (--tfds-data-dir), or "
            "use a local directory or 'sample' as the source."
        ) from error
    label_feature = builder.info.features["label"]
    class_names = list(label_feature.names)
    sample_rate = entry.get("sample_rate")
    audio = entry["x"] == "audio"

    def split(name):
        ds = builder.as_dataset(split=name, shuffle_files=False)
        n = _num_examples(builder, name, ds)
        return ds, n

    def pairs(ds):
        def to_pair(ex):
            x = ex[entry["x"]]
            return (catalog.pcm_to_float(x) if audio else x), ex["label"]

        return ds.map(to_pair)

    if "validation" in entry:
        # speech_commands: its own splits, validation_fraction unused.
        parts = []
        for key in ("train", "validation", "test"):
            ds, n = split(entry[key])
            parts.append((pairs(ds), n))
    elif entry["test"] is None:
        ds, _ = split(entry["pool"])
        parts = _spoken_digit_parts(
            ds, pairs, holdout_speaker, validation_fraction, seed, source
        )
    else:
        pool, n_pool = split(entry["pool"])
        test, n_test = split(entry["test"])
        parts = _seeded_parts(
            pairs(pool),
            n_pool,
            [1 - validation_fraction, validation_fraction],
            seed,
        )
        parts.append((pairs(test), n_test))
    return _splits(parts, class_names, sample_rate, "tfds", source)


def _spoken_digit_parts(
    ds, pairs, holdout_speaker, validation_fraction, seed, source
):
    """FSDD's own split (or a held-out speaker) from `audio/filename`."""
    names = [
        n.decode()
        for n in ds.map(lambda ex: ex["audio/filename"]).as_numpy_iterator()
    ]
    parsed = []
    for n in names:
        clip = files.parse_fsdd_name(os.path.basename(n))
        if clip is None:
            raise ValueError(
                f"The spoken_digit clip {n!r} is not named "
                "{digit}_{speaker}_{index}.wav: cannot apply FSDD's split."
            )
        parsed.append(clip)
    speakers = collections.Counter(c[1] for c in parsed)
    _check_holdout(holdout_speaker, speakers, source, "tfds")
    if holdout_speaker is None:
        in_test = np.array([c[2] < 5 for c in parsed])
    else:
        in_test = np.array([c[1] == holdout_speaker for c in parsed])
    mask = tf.constant(in_test)
    indexed = ds.enumerate()
    test = indexed.filter(lambda i, ex: tf.gather(mask, i)).map(
        lambda i, ex: ex
    )
    pool = indexed.filter(lambda i, ex: tf.logical_not(tf.gather(mask, i))).map(
        lambda i, ex: ex
    )
    parts = _seeded_parts(
        pairs(pool),
        int((~in_test).sum()),
        [1 - validation_fraction, validation_fraction],
        seed,
    )
    parts.append((pairs(test), int(in_test.sum())))
    return parts


def _num_examples(builder, split, ds):
    info = builder.info.splits
    if split in info and info[split].num_examples:
        return info[split].num_examples
    cardinality = int(ds.cardinality())
    if cardinality >= 0:
        return cardinality
    return int(ds.reduce(0, lambda n, _: n + 1))


def _seeded_parts(ds, n, fractions, seed):
    """Splits the `n` examples of `ds` into parts of the given `fractions`.

    Which example goes where is a seeded permutation of positions, so the
    split depends on `seed` and the source's (deterministic) order only;
    each part keeps that order. Every part gets at least one example.

    Returns:
        A list of `(dataset, size)`, one per fraction.
    """
    if n < len(fractions):
        raise ValueError(
            f"The source has {n} training examples: too few to split into "
            f"{len(fractions)} non-empty parts."
        )
    sizes = [max(1, round(f * n)) for f in fractions[1:]]
    sizes.insert(0, n - sum(sizes))
    if sizes[0] < 1:
        raise ValueError(
            f"Too few examples ({n}) for the fractions {fractions}."
        )
    order = np.random.default_rng(seed).permutation(n)
    part_of = np.empty(n, np.int64)
    start = 0
    for part, size in enumerate(sizes):
        part_of[order[start : start + size]] = part
        start += size
    part_of = tf.constant(part_of)
    return [
        (_select(ds, part_of, part), size) for part, size in enumerate(sizes)
    ]


def _select(ds, part_of, part):
    """The examples `i` of `ds` with `part_of[i] == part`, in order."""
    indexed = ds.enumerate()
    scalars = all(
        spec.shape.rank == 0 for spec in tf.nest.flatten(ds.element_spec)
    )
    if not scalars:
        return indexed.filter(
            lambda i, xy: tf.equal(tf.gather(part_of, i), part)
        ).map(lambda i, xy: xy)

    # Scalar examples (text): select a block at a time rather than call a
    # filter function per example.
    def select_block(i, xy):
        keep = tf.equal(tf.gather(part_of, i), part)
        return tf.nest.map_structure(lambda t: tf.boolean_mask(t, keep), xy)

    return indexed.batch(4096).map(select_block).unbatch()


def _splits(parts, class_names, sample_rate, layout, source):
    (train, n_train), (validation, n_val), (test, n_test) = parts
    sizes = {"train": n_train, "validation": n_val, "test": n_test}
    datasets = {}
    for key, ds in zip(sizes, (train, validation, test), strict=True):
        # The cardinality is known; telling tf.data lets Keras show progress.
        datasets[key] = ds.apply(
            tf.data.experimental.assert_cardinality(sizes[key])
        )
    return Splits(
        train=datasets["train"],
        validation=datasets["validation"],
        test=datasets["test"],
        class_names=class_names,
        sample_rate=sample_rate,
        layout=layout,
        source=source,
        num_examples=sizes,
    )
