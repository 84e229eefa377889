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
from lstm_keras.datasets import sst2_split
from lstm_keras.datasets.layouts import describe_layouts
from lstm_keras.datasets.layouts import detect_layout

TASKS = {"sentiment": "text", "speech": "audio"}
SAMPLE_SOURCE = "sample"
# Folders of data/samples/ that `load_dataset("sample", task)` reads.
SAMPLE_FOLDERS = {"sentiment": "sst2", "speech": "fsdd"}
# A class-per-folder directory has no test split: this share of it becomes one.
CLASS_FOLDERS_TEST_FRACTION = 0.1
# FSDD's own test set: recordings 0-4 of every digit and speaker.
FSDD_TEST_INDICES = 5
# `Splits.validation_scheme` of a seeded random share of the training pool.
RANDOM_SCHEME = "random"
_TRAIN, _VALIDATION, _TEST = 0, 1, 2


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
        validation_scheme: How the validation set was drawn: `"sst2
            sentences"` (whole SST-2 sentences), `"fsdd indices 5-9"`
            (those recordings of every training speaker), `"fsdd speaker
            theo"` (one speaker's clips), `"random"` (a seeded share of the
            training pool) or `"own split"` (the source's own).
        num_removed_from_train: Training rows dropped because a validation
            example contains them (SST-2's sub-phrases of the validation
            sentences); 0 for other sources.
        split_notes: JSON-ready details of the split, e.g.
            `{"sentences": 6885, "validation_sentences": 689,
            "removed_from_train": 7184}` or `{"validation_indices": [5, 6]}`.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    class_names: list
    sample_rate: int | None
    layout: str
    source: str
    num_examples: dict
    validation_scheme: str = RANDOM_SCHEME
    num_removed_from_train: int = 0
    split_notes: dict = dataclasses.field(default_factory=dict)


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
    validation_speaker=None,
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
    FSDD's recordings 0-4). The validation set is drawn from the training
    data so that it is as unseen as the test set:

    - SST-2 (a local SST-2 directory, `"sample"` for `"sentiment"`,
      `glue/sst2`): its training rows are the phrases of the parse trees of
      about 6,900 sentences, so a random share of the rows would validate
      on phrases whose sentence or parts are trained on. Instead
      `validation_fraction` of the sentences (rows not contained in a
      longer row), drawn with `seed`, are the validation set, and every
      training row they contain is removed from training (see
      `lstm_keras.datasets.sst2_split`).
    - FSDD (a local FSDD directory, `"sample"` for `"speech"`,
      `spoken_digit`): the lowest `max(1, round(validation_fraction * n))`
      (halves rounded up) of the `n` recording indices of the training set
      (5-9 of 5-49 at 0.1), of every speaker and digit; or, with
      `validation_speaker`, that
      speaker's training clips. With `holdout_speaker`, the held-out
      speaker's clips are the test set and the other speakers' recordings
      0-49 are the training indices (validation 0-4 at 0.1).
    - Others: `validation_fraction` of the training data, drawn with
      `seed`. A class-per-folder directory gives a seeded 80/10/10 split
      (test 10%, validation `validation_fraction` of all).
      `speech_commands` keeps its own three splits.

    `Splits.validation_scheme`, `num_removed_from_train` and `split_notes`
    say which rule applied.

    Args:
        source: `"sample"`, a directory, or a TFDS name.
        task: `"sentiment"` (text) or `"speech"` (audio).
        seed: Seed of the validation (and class-folder test) draw; FSDD's
            split by index or speaker does not use it. Defaults to 0.
        validation_fraction: Share held out for validation, in (0, 1): of
            the sentences for SST-2, of the recording indices for FSDD, of
            the examples otherwise. Defaults to 0.1.
        tfds_data_dir: TFDS data directory (cache of prepared datasets).
            Defaults to `None` (TFDS's default, `~/tensorflow_datasets`).
        holdout_speaker: For FSDD (local or `spoken_digit`): this speaker's
            clips are the test set and none of them is trained or validated
            on. Defaults to `None` (the dataset's own split).
        validation_speaker: For FSDD: this speaker's clips outside the test
            set are the validation set and none of them is trained on; it
            must differ from `holdout_speaker`. Defaults to `None`
            (validation by recording index, as above).

    Returns:
        A `Splits`.

    Example:

    ```python
    # Prepares a TFDS copy of data/samples on first use (about 10 s).
    splits = load_dataset("sample", "sentiment")
    splits.class_names  # ['negative', 'positive']
    splits.validation_scheme  # 'sst2 sentences'
    speech = load_dataset("sample", "speech", validation_speaker="theo")
    speech.num_examples  # {'train': 600, 'validation': 150, 'test': 250}
    ```
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
        validation_speaker=validation_speaker,
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


def _check_speakers(
    holdout_speaker, validation_speaker, speakers, source, layout
):
    for argument, speaker in (
        ("holdout_speaker", holdout_speaker),
        ("validation_speaker", validation_speaker),
    ):
        if speaker is None:
            continue
        if speakers is None:
            raise ValueError(
                f"Received {argument}={speaker!r}, but the source "
                f"{source!r} ({layout}) has no speakers: only FSDD sources "
                "(an FSDD directory, 'sample' for speech, spoken_digit) do."
            )
        if speaker not in speakers:
            raise ValueError(
                f"Received an invalid value for argument {argument}: "
                f"{speaker!r} is not a speaker of {source!r}; its "
                f"speakers are {sorted(speakers)}."
            )
    if validation_speaker is not None and validation_speaker == holdout_speaker:
        others = sorted(set(speakers) - {holdout_speaker})
        raise ValueError(
            "Received an invalid value for argument validation_speaker: "
            f"{validation_speaker!r} is also the holdout_speaker, whose "
            "clips are all test clips. Pass another of the speakers "
            f"{others}."
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
    validation_speaker,
):
    # Imported here: it registers TFDS builders, which only local use needs.
    from lstm_keras.datasets.builders import builder_for

    layout, root, modality = detect_layout(directory)
    _check_task(task, modality, source)
    speakers = None
    if layout == "fsdd":
        clips = [files.parse_fsdd_name(n) for n in os.listdir(root)]
        speakers = collections.Counter(c[1] for c in clips if c)
    _check_speakers(
        holdout_speaker, validation_speaker, speakers, source, layout
    )

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
        rule = (RANDOM_SCHEME, 0, {})
    elif layout == "sst2":
        pool = split("train")
        texts = pool.map(lambda ex: ex[x_key])
        parts, rule = _sentence_parts(
            pairs(pool), texts, validation_fraction, seed
        )
        parts.append((pairs(split("dev")), sizes["dev"]))
    else:
        everything = split("train").concatenate(split("test"))
        clips = [
            (speaker.decode(), int(index))
            for speaker, index in everything.map(
                lambda ex: (ex["speaker"], ex["index"])
            ).as_numpy_iterator()
        ]
        parts, rule = _fsdd_parts(
            pairs(everything),
            clips,
            holdout_speaker=holdout_speaker,
            validation_speaker=validation_speaker,
            validation_fraction=validation_fraction,
        )
    return _splits(
        parts,
        list(config.class_names),
        config.sample_rate,
        layout,
        source,
        rule,
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
    validation_speaker,
):
    import tensorflow_datasets as tfds

    if entry["task"] != task:
        raise ValueError(
            f"The TFDS dataset {source!r} is for the task {entry['task']!r}, "
            f"got task={task!r}."
        )
    if name != "spoken_digit":
        _check_speakers(
            holdout_speaker, validation_speaker, None, source, "tfds"
        )
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

    rule = (RANDOM_SCHEME, 0, {})
    if "validation" in entry:
        # speech_commands: its own splits, validation_fraction unused.
        parts = []
        for key in ("train", "validation", "test"):
            ds, n = split(entry[key])
            parts.append((pairs(ds), n))
        rule = ("own split", 0, {})
    elif entry["test"] is None:
        ds, _ = split(entry["pool"])
        parts, rule = _spoken_digit_parts(
            ds,
            pairs,
            holdout_speaker,
            validation_speaker,
            validation_fraction,
            source,
        )
    else:
        pool, n_pool = split(entry["pool"])
        test, n_test = split(entry["test"])
        if entry.get("sentences"):
            texts = pool.map(lambda ex: ex[entry["x"]])
            parts, rule = _sentence_parts(
                pairs(pool), texts, validation_fraction, seed
            )
        else:
            parts = _seeded_parts(
                pairs(pool),
                n_pool,
                [1 - validation_fraction, validation_fraction],
                seed,
            )
        parts.append((pairs(test), n_test))
    return _splits(parts, class_names, sample_rate, "tfds", source, rule)


def _sentence_parts(ds, texts, validation_fraction, seed):
    """SST-2's train and validation parts of `ds` by whole sentences.

    Args:
        ds: The training pool's `(x, label)` examples.
        texts: The same examples' texts (`tf.string`), in the same order:
            read from the dataset, not the file, as TFDS stores examples in
            an order of its own.

    Returns:
        `(parts, rule)`: `[(train, n), (validation, n)]` and the
        `(scheme, removed, notes)` of `_splits`.
    """
    texts = [
        files.decode_text(t)
        for batch in texts.batch(8192).as_numpy_iterator()
        for t in batch
    ]
    part_of, num_sentences = sst2_split.split_sentences(
        texts, validation_fraction, seed
    )
    counts = np.bincount(part_of, minlength=3)
    n_train = int(counts[sst2_split.TRAIN])
    n_val = int(counts[sst2_split.VALIDATION])
    removed = int(counts[sst2_split.REMOVED])
    part_of = tf.constant(part_of.astype(np.int64))
    parts = [
        (_select(ds, part_of, sst2_split.TRAIN), n_train),
        (_select(ds, part_of, sst2_split.VALIDATION), n_val),
    ]
    notes = {
        "sentences": num_sentences,
        "validation_sentences": n_val,
        "removed_from_train": removed,
    }
    return parts, ("sst2 sentences", removed, notes)


def _fsdd_parts(
    ds, clips, *, holdout_speaker, validation_speaker, validation_fraction
):
    """FSDD's train, validation and test parts of `ds`.

    Validation is by recording index (the lowest of the training indices,
    of every training speaker and digit), as FSDD draws its own test set
    (recordings 0-4), so validation and test measure the same thing; or by
    `validation_speaker`, to measure what a held-out speaker's test does.

    Args:
        ds: Every `(x, label)` example of the source.
        clips: `(speaker, index)` of each example of `ds`, in order.

    Returns:
        `(parts, rule)`: `[(train, n), (validation, n), (test, n)]` and the
        `(scheme, removed, notes)` of `_splits`.
    """
    speaker = np.array([c[0] for c in clips])
    index = np.array([c[1] for c in clips], np.int64)
    if holdout_speaker is None:
        in_test = index < FSDD_TEST_INDICES
    else:
        in_test = speaker == holdout_speaker
    notes = {}
    if validation_speaker is not None:
        in_validation = ~in_test & (speaker == validation_speaker)
        scheme = f"fsdd speaker {validation_speaker}"
        notes["validation_speaker"] = validation_speaker
    else:
        training_indices = np.unique(index[~in_test])
        k = max(
            1,
            sst2_split.round_half_up(
                validation_fraction * len(training_indices)
            ),
        )
        if k >= len(training_indices):
            raise ValueError(
                "Too few recording indices to validate on: the training "
                f"clips have {_index_ranges(training_indices)}, and "
                f"validation_fraction={validation_fraction!r} of them "
                "leaves none to train on. Pass a validation_speaker "
                "instead, or add recordings."
            )
        chosen = training_indices[:k]
        in_validation = ~in_test & np.isin(index, chosen)
        scheme = f"fsdd indices {_index_ranges(chosen)}"
        notes["validation_indices"] = chosen.tolist()
    if holdout_speaker is not None:
        notes["holdout_speaker"] = holdout_speaker
    part_of = np.full(len(clips), _TRAIN, np.int64)
    part_of[in_validation] = _VALIDATION
    part_of[in_test] = _TEST
    counts = [int((part_of == p).sum()) for p in (_TRAIN, _VALIDATION, _TEST)]
    for name, count in zip(("training", "validation"), counts, strict=False):
        if not count:
            raise ValueError(
                f"The {scheme} split leaves no {name} clip: "
                f"holdout_speaker={holdout_speaker!r}, "
                f"validation_speaker={validation_speaker!r}."
            )
    part_of = tf.constant(part_of)
    parts = [
        (_select(ds, part_of, p), n)
        for p, n in zip((_TRAIN, _VALIDATION, _TEST), counts, strict=True)
    ]
    return parts, (scheme, 0, notes)


def _index_ranges(indices):
    """`[5, 6, 7, 9]` -> `"5-7, 9"`."""
    runs = []
    for i in sorted(int(i) for i in indices):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs)


def _spoken_digit_parts(
    ds, pairs, holdout_speaker, validation_speaker, validation_fraction, source
):
    """FSDD's split of TFDS's `spoken_digit` from `audio/filename`."""
    names = [
        n.decode()
        for n in ds.map(lambda ex: ex["audio/filename"]).as_numpy_iterator()
    ]
    clips = []
    for n in names:
        clip = files.parse_fsdd_name(os.path.basename(n))
        if clip is None:
            raise ValueError(
                f"The spoken_digit clip {n!r} is not named "
                "{digit}_{speaker}_{index}.wav: cannot apply FSDD's split."
            )
        clips.append(clip[1:])
    speakers = collections.Counter(c[0] for c in clips)
    _check_speakers(
        holdout_speaker, validation_speaker, speakers, source, "tfds"
    )
    return _fsdd_parts(
        pairs(ds),
        clips,
        holdout_speaker=holdout_speaker,
        validation_speaker=validation_speaker,
        validation_fraction=validation_fraction,
    )


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


def _splits(parts, class_names, sample_rate, layout, source, rule):
    (train, n_train), (validation, n_val), (test, n_test) = parts
    scheme, removed, notes = rule
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
        validation_scheme=scheme,
        num_removed_from_train=removed,
        split_notes=notes,
    )
