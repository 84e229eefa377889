"""`lstm_keras.datasets`: layouts, splits, TFDS names, bad files.

Expected splits are recomputed here from the files written by each test
(or from the published counts of the real data), never read back from the
loader's own metadata.
"""

import collections
import hashlib
import os
import wave

import numpy as np
import pytest
import tensorflow as tf

from lstm_keras.datasets import load_dataset
from lstm_keras.datasets import samples_dir
from lstm_keras.datasets import sst2_split
from lstm_keras.datasets.files import read_wav

pytestmark = pytest.mark.tensorflow_only

SHARED = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared")
FSDD = os.path.join(SHARED, "data", "fsdd")
needs_fsdd = pytest.mark.skipif(
    not os.path.isdir(os.path.join(FSDD, "recordings")),
    reason=f"the real FSDD copy is absent ({FSDD})",
)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def write_wav(path, samples, rate=8000, channels=1, width=2):
    """Writes integer PCM `samples` ([frames] or [frames, channels])."""
    samples = np.asarray(samples)
    dtype = {1: np.uint8, 2: "<i2", 4: "<i4"}[width]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.astype(dtype).tobytes())


def write_tsv(path, rows, header="sentence\tlabel"):
    with open(path, "w", encoding="utf-8") as f:
        f.write(header + "\n")
        for sentence, label in rows:
            f.write(f"{sentence}\t{label}\n")


def as_list(ds):
    out = []
    for x, y in ds.as_numpy_iterator():
        out.append((x.decode() if isinstance(x, bytes) else tuple(x), int(y)))
    return out


def sst2_rows(n, offset=0):
    return [(f"sentence number {i + offset} .", i % 2) for i in range(n)]


def batched_rows(ds):
    """`as_list` of a text dataset, a batch at a time (for 60,000 rows)."""
    out = []
    for x, y in ds.batch(8192).as_numpy_iterator():
        out += [(t.decode(), int(label)) for t, label in zip(x, y, strict=True)]
    return out


def contains(longer, shorter):
    """Whether `shorter`'s tokens are a contiguous run of `longer`'s."""
    a, b = longer.split(), shorter.split()
    return any(a[i : i + len(b)] == b for i in range(len(a) - len(b) + 1))


def make_fsdd(root, speakers=("alice", "bob"), digits=(0, 1), indices=7):
    """FSDD-named clips whose samples encode (digit, speaker, index)."""
    os.makedirs(root, exist_ok=True)
    clips = {}
    for s, speaker in enumerate(speakers):
        for digit in digits:
            for index in range(indices):
                samples = np.array(
                    [digit * 1000, s * 100 + 7, index, -32768, 32767]
                )
                write_wav(
                    os.path.join(root, f"{digit}_{speaker}_{index}.wav"),
                    samples,
                )
                clips[(digit, speaker, index)] = samples
    return clips


def clip_key(waveform):
    """Recovers (digit, speaker id, index) from a `make_fsdd` waveform."""
    ints = np.round(np.asarray(waveform) * 2**15).astype(int)
    return ints[0] // 1000, (ints[1] - 7) // 100, ints[2]


def split_keys(splits):
    """`{part: sorted (digit, speaker id, index, label)}` of `make_fsdd` data."""
    return {
        part: sorted(
            tuple(int(k) for k in clip_key(x)) + (int(y),)
            for x, y in getattr(splits, part).as_numpy_iterator()
        )
        for part in ("train", "validation", "test")
    }


def expected_keys(
    clips,
    speakers,
    validation_indices=(),
    test_indices=(),
    *,
    validation_speaker=None,
    test_speakers=(),
):
    """`split_keys`' answer for the `make_fsdd` `clips`, by index or speaker."""
    parts = {"train": [], "validation": [], "test": []}
    for digit, speaker, index in clips:
        if index in test_indices or speaker in test_speakers:
            part = "test"
        elif speaker == validation_speaker or index in validation_indices:
            part = "validation"
        else:
            part = "train"
        parts[part].append((digit, speakers.index(speaker), index, digit))
    return {part: sorted(keys) for part, keys in parts.items()}


# ---------------------------------------------------------------- SST-2


def test_sst2_layout_splits_train_into_train_and_validation(tmp_path, tfds_dir):
    train_rows, dev_rows = sst2_rows(40), sst2_rows(6, offset=100)
    write_tsv(tmp_path / "train.tsv", train_rows)
    write_tsv(tmp_path / "dev.tsv", dev_rows)

    splits = load_dataset(str(tmp_path), "sentiment", tfds_data_dir=tfds_dir)

    train, val, test = (
        as_list(splits.train),
        as_list(splits.validation),
        as_list(splits.test),
    )
    assert (len(train), len(val)) == (36, 4)
    assert sorted(train + val) == sorted(train_rows)
    assert not set(train) & set(val)
    assert sorted(test) == sorted(dev_rows)
    assert splits.num_examples == {"train": 36, "validation": 4, "test": 6}
    # Forty distinct sentences, none inside another: nothing to remove.
    assert splits.validation_scheme == "sst2 sentences"
    assert splits.num_removed_from_train == 0
    assert splits.split_notes == {
        "sentences": 40,
        "validation_sentences": 4,
        "removed_from_train": 0,
    }
    assert splits.class_names == ["negative", "positive"]
    assert (splits.sample_rate, splits.layout) == (None, "sst2")
    assert splits.train.element_spec == (
        tf.TensorSpec((), tf.string),
        tf.TensorSpec((), tf.int64),
    )


def test_validation_split_depends_on_the_seed_only(tmp_path, tfds_dir):
    write_tsv(tmp_path / "train.tsv", sst2_rows(50))
    write_tsv(tmp_path / "dev.tsv", sst2_rows(2))

    def load(seed):
        return sorted(
            as_list(
                load_dataset(
                    str(tmp_path),
                    "sentiment",
                    seed=seed,
                    tfds_data_dir=tfds_dir,
                ).validation
            )
        )

    assert load(0) == load(0)
    assert load(0) != load(1)


def test_sst2_decodes_bad_utf8_with_replacement_and_keeps_empty_sentences(
    tmp_path, tfds_dir
):
    with open(tmp_path / "train.tsv", "wb") as f:
        f.write(b"sentence\tlabel\ncaf\xe9 au lait\t1\n\t0\n\nplain\t1\n")
    write_tsv(tmp_path / "dev.tsv", [("ok", 0)])
    splits = load_dataset(
        str(tmp_path),
        "sentiment",
        validation_fraction=0.34,
        tfds_data_dir=tfds_dir,
    )
    rows = sorted(as_list(splits.train) + as_list(splits.validation))
    # The blank line is skipped; the empty sentence is kept.
    assert rows == sorted([("caf\ufffd au lait", 1), ("", 0), ("plain", 1)])


@pytest.mark.parametrize(
    "body, line, message",
    [
        ("good\t1\nno tab here\n", 3, "without a tab"),
        ("good\t1\nbad label\t2\n", 3, "label 0 or 1"),
        ("good\tpositive\n", 2, "label 0 or 1"),
    ],
)
def test_sst2_bad_rows_name_the_file_and_line(
    tmp_path, tfds_dir, body, line, message
):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + body)
    write_tsv(tmp_path / "dev.tsv", [("ok", 0)])
    with pytest.raises(ValueError, match=message) as info:
        load_dataset(str(tmp_path), "sentiment", tfds_data_dir=tfds_dir)
    assert f"train.tsv, line {line}" in str(info.value)


def test_sst2_missing_header_is_an_error(tmp_path, tfds_dir):
    (tmp_path / "train.tsv").write_text("good\t1\n")
    write_tsv(tmp_path / "dev.tsv", [("ok", 0)])
    with pytest.raises(
        ValueError, match="train.tsv, line 1: expected the header"
    ):
        load_dataset(str(tmp_path), "sentiment", tfds_data_dir=tfds_dir)


# Rows of a hand-made treebank: three sentences with their sub-phrases, a
# phrase ("film") of two sentences, a sentence twice (once with other
# spacing), a sub-phrase twice, and rows that look contained but are not
# ("fun" is no token of "funny"; "a film" is no contiguous run of "a dull
# film").
TREEBANK = [
    ("a gripping , funny film ", 1),  # 0: sentence
    ("gripping , funny", 1),  # 1: in 0
    ("funny film", 1),  # 2: in 0
    ("film", 1),  # 3: in 0, 4, 6 and 11
    ("a dull film ", 0),  # 4: sentence
    ("dull", 0),  # 5: in 4 and 6
    ("a  dull film", 0),  # 6: sentence, 4 again
    ("funny film", 1),  # 7: 2 again
    ("an odd one", 0),  # 8: sentence
    ("odd one", 0),  # 9: in 8
    ("fun", 1),  # 10: sentence
    ("a film", 1),  # 11: sentence
]
TREEBANK_SENTENCES = [0, 4, 6, 8, 10, 11]
# The rows each sentence contains (itself excluded), worked out by hand.
TREEBANK_CONTAINS = {
    0: {1, 2, 3, 7},
    4: {3, 5, 6},
    6: {3, 4, 5},
    8: {9},
    10: set(),
    11: {3},
}


def expected_treebank_parts(validation):
    """TRAIN/VALIDATION/REMOVED per `TREEBANK` row, for these sentences."""
    removed = set().union(*(TREEBANK_CONTAINS[v] for v in validation))
    return [
        sst2_split.VALIDATION
        if i in validation
        else sst2_split.REMOVED
        if i in removed
        else sst2_split.TRAIN
        for i in range(len(TREEBANK))
    ]


def test_sentences_are_the_rows_no_longer_row_contains():
    texts = [t for t, _ in TREEBANK]
    found = sst2_split.find_sentences(texts)
    assert np.flatnonzero(found).tolist() == TREEBANK_SENTENCES
    assert sst2_split.find_sentences([]).tolist() == []
    # A row without tokens shares no word with another row.
    assert sst2_split.find_sentences(["", "a b"]).tolist() == [True, True]


def test_split_removes_every_row_inside_a_validation_sentence():
    texts = [t for t, _ in TREEBANK]
    seen = set()
    for seed in range(200):
        # round_half_up(0.25 * 6) = 2 validation sentences.
        parts, n = sst2_split.split_sentences(texts, 0.25, seed)
        validation = set(np.flatnonzero(parts == sst2_split.VALIDATION))
        assert n == 6 and len(validation) == 2
        assert validation <= set(TREEBANK_SENTENCES)
        assert parts.tolist() == expected_treebank_parts(validation)
        seen.add(frozenset(validation))
    # Every pair is drawn for some seed: among them {0, 8}, which removes
    # "film" though it is also part of the training sentence "a dull film",
    # and {4, 6}, the sentence twice, both validated.
    assert len(seen) == 15
    with pytest.raises(ValueError, match="validation_fraction.*1.2"):
        sst2_split.split_sentences(texts, 1.2)
    with pytest.raises(ValueError, match="2 sentence"):
        sst2_split.split_sentences(["good", "bad"], 0.9)


def test_sst2_directory_validates_on_whole_sentences(tmp_path, tfds_dir):
    write_tsv(tmp_path / "train.tsv", TREEBANK)
    write_tsv(tmp_path / "dev.tsv", [("a fine film", 1)])
    splits = load_dataset(
        str(tmp_path),
        "sentiment",
        validation_fraction=0.25,
        seed=3,
        tfds_data_dir=tfds_dir,
    )
    train, validation = as_list(splits.train), as_list(splits.validation)
    # TFDS reorders rows: find the validation sentences by text, then
    # expect the train set the hand-made table gives for them.
    # (The two spellings of "a dull film" are told apart by their spaces.)
    rows = dict(enumerate(TREEBANK))
    chosen = {i for i in TREEBANK_SENTENCES if rows[i] in validation}
    assert len(validation) == len(chosen) == 2
    parts = expected_treebank_parts(chosen)
    expected_train = [
        rows[i] for i, p in enumerate(parts) if p == sst2_split.TRAIN
    ]
    assert sorted(train) == sorted(expected_train)
    assert sorted(validation) == sorted(rows[i] for i in chosen)
    removed = parts.count(sst2_split.REMOVED)
    assert splits.num_removed_from_train == removed
    assert splits.num_examples == {
        "train": len(expected_train),
        "validation": 2,
        "test": 1,
    }
    assert splits.split_notes == {
        "sentences": 6,
        "validation_sentences": 2,
        "removed_from_train": removed,
    }


@pytest.fixture(scope="module")
def sst2_sample(tfds_dir):
    """The embedded SST-2 (all of it) split at seed 0, and its rows."""
    splits = load_dataset("sample", "sentiment", tfds_data_dir=tfds_dir)
    with open(os.path.join(samples_dir(), "sst2", "train.tsv")) as f:
        rows = [line.rstrip("\n").rsplit("\t", 1) for line in f][1:]
    return {
        "splits": splits,
        "rows": [(text, int(label)) for text, label in rows],
        "train": batched_rows(splits.train),
        "validation": batched_rows(splits.validation),
    }


def test_real_sst2_has_the_published_sizes_and_labels(sst2_sample):
    splits = sst2_sample["splits"]
    train, validation = sst2_sample["train"], sst2_sample["validation"]
    # 6,885 of the 67,349 rows are sentences (counted with a set of all
    # spans of all rows); round(0.1 * 6885) = 689 are held out.
    assert splits.split_notes["sentences"] == 6885
    removed = splits.num_removed_from_train
    assert splits.num_examples == {
        "train": 67349 - 689 - removed,
        "validation": 689,
        "test": 872,
    }
    assert (len(train), len(validation)) == (67349 - 689 - removed, 689)
    assert splits.validation_scheme == "sst2 sentences"
    # Train and validation are rows of the file, none used twice.
    assert not collections.Counter(train + validation) - collections.Counter(
        sst2_sample["rows"]
    )
    # PROVENANCE.md: dev 444 positive / 428 negative.
    test_labels = np.concatenate(
        [y for _, y in splits.test.batch(1000).as_numpy_iterator()]
    )
    assert (len(test_labels), test_labels.sum()) == (872, 444)


def test_real_sst2_validation_sentences_are_unseen(sst2_sample):
    rows = [t for t, _ in sst2_sample["rows"]]
    train = {tuple(t.split()) for t, _ in sst2_sample["train"]}
    validation = [t for t, _ in sst2_sample["validation"]]
    rng = np.random.default_rng(0)
    for text in rng.choice(validation, 20, replace=False):
        tokens = tuple(text.split())
        # A sentence: no row of the file holds it inside more tokens.
        assert not any(
            len(r.split()) > len(tokens) and contains(r, text) for r in rows
        )
        # No run of its tokens, itself included, is a training row.
        for start in range(len(tokens)):
            for stop in range(start + 1, len(tokens) + 1):
                assert tokens[start:stop] not in train, (text, start, stop)
    # And only what a validation sentence holds was removed.
    left = collections.Counter(rows) - collections.Counter(
        [t for t, _ in sst2_sample["train"]] + validation
    )
    removed = sorted(left.elements())
    assert len(removed) == sst2_sample["splits"].num_removed_from_train
    for text in rng.choice(removed, 20, replace=False):
        assert any(contains(v, text) for v in validation), text


def test_real_sst2_split_depends_on_the_seed_not_the_row_order(sst2_sample):
    validation = sorted(sst2_sample["validation"])
    # The loader reads the rows in TFDS's order, not the file's: the same
    # draw from the file's rows in a third order, so any order gives it.
    rows = sst2_sample["rows"]
    order = np.random.default_rng(1).permutation(len(rows))
    texts = [rows[i][0] for i in order]

    def drawn(seed):
        parts, _ = sst2_split.split_sentences(texts, 0.1, seed)
        return sorted(
            rows[i]
            for i, p in zip(order, parts, strict=True)
            if p == sst2_split.VALIDATION
        )

    assert drawn(0) == validation
    other = drawn(1)
    assert len(other) == 689 and other != validation


# ----------------------------------------------------------------- FSDD


def test_fsdd_layout_uses_the_datasets_own_split(tmp_path, tfds_dir):
    clips = make_fsdd(tmp_path / "recordings")
    # The folder holding recordings/ works too.
    splits = load_dataset(str(tmp_path), "speech", tfds_data_dir=tfds_dir)

    parts = split_keys(splits)
    # Test: recordings 0-4. Validation: the lowest max(1, round(0.1 * 2))
    # of the training indices 5-6, of every speaker and digit.
    assert parts == expected_keys(clips, ("alice", "bob"), {5}, range(5))
    assert splits.num_examples == {"train": 4, "validation": 4, "test": 20}
    assert splits.validation_scheme == "fsdd indices 5"
    assert splits.split_notes == {"validation_indices": [5]}
    assert splits.num_removed_from_train == 0
    assert splits.sample_rate == 8000
    assert splits.class_names == [str(d) for d in range(10)]
    x, _ = next(iter(splits.test))
    assert x.dtype == tf.float32
    # 16-bit PCM scaled by 2**-15: -32768 -> -1 exactly.
    assert x.numpy()[3] == -1.0 and x.numpy()[4] == 32767 / 32768


@pytest.mark.parametrize(
    "indices, fraction, validation",
    [
        (25, 0.1, [5, 6]),  # 0.1 * 20 = 2
        (15, 0.25, [5, 6, 7]),  # 0.25 * 10 = 2.5: halves round up
        (15, 0.01, [5]),  # at least one
    ],
)
def test_fsdd_validates_on_the_lowest_training_indices(
    tmp_path, tfds_dir, indices, fraction, validation
):
    clips = make_fsdd(tmp_path, speakers=("ann",), digits=(3,), indices=indices)
    splits = load_dataset(
        str(tmp_path),
        "speech",
        validation_fraction=fraction,
        tfds_data_dir=tfds_dir,
    )
    assert split_keys(splits) == expected_keys(
        clips, ("ann",), set(validation), range(5)
    )
    assert splits.split_notes == {"validation_indices": validation}
    assert splits.validation_scheme == (
        f"fsdd indices {validation[0]}-{validation[-1]}"
        if len(validation) > 1
        else f"fsdd indices {validation[0]}"
    )


def test_fsdd_with_one_training_index_asks_for_a_validation_speaker(
    tmp_path, tfds_dir
):
    make_fsdd(tmp_path, indices=6)
    with pytest.raises(
        ValueError, match=r"indices to validate on.* have 5, .*validation_sp"
    ):
        load_dataset(str(tmp_path), "speech", tfds_data_dir=tfds_dir)
    splits = load_dataset(
        str(tmp_path),
        "speech",
        validation_speaker="bob",
        tfds_data_dir=tfds_dir,
    )
    assert splits.num_examples == {"train": 2, "validation": 2, "test": 20}


def test_fsdd_holdout_speaker_is_the_whole_test_set(tmp_path, tfds_dir):
    clips = make_fsdd(tmp_path)
    splits = load_dataset(
        str(tmp_path), "speech", holdout_speaker="bob", tfds_data_dir=tfds_dir
    )
    # alice's recordings 0-6 are all training indices: round(0.1 * 7) = 1.
    assert split_keys(splits) == expected_keys(
        clips, ("alice", "bob"), {0}, test_speakers={"bob"}
    )
    assert splits.num_examples == {"train": 12, "validation": 2, "test": 14}
    assert splits.validation_scheme == "fsdd indices 0"
    assert splits.split_notes == {
        "validation_indices": [0],
        "holdout_speaker": "bob",
    }


def test_fsdd_validation_speaker_alone_and_with_a_holdout_speaker(
    tmp_path, tfds_dir
):
    speakers = ("alice", "bob", "carol")
    clips = make_fsdd(tmp_path, speakers=speakers)
    splits = load_dataset(
        str(tmp_path),
        "speech",
        validation_speaker="bob",
        tfds_data_dir=tfds_dir,
    )
    # bob's recordings 0-4 stay in the test set; none of his is trained on.
    assert split_keys(splits) == expected_keys(
        clips, speakers, validation_speaker="bob", test_indices=range(5)
    )
    assert splits.num_examples == {"train": 8, "validation": 4, "test": 30}
    assert splits.validation_scheme == "fsdd speaker bob"
    assert splits.split_notes == {"validation_speaker": "bob"}
    both = load_dataset(
        str(tmp_path),
        "speech",
        holdout_speaker="carol",
        validation_speaker="bob",
        tfds_data_dir=tfds_dir,
    )
    assert split_keys(both) == expected_keys(
        clips, speakers, validation_speaker="bob", test_speakers={"carol"}
    )
    assert both.num_examples == {"train": 14, "validation": 14, "test": 14}
    assert both.split_notes == {
        "validation_speaker": "bob",
        "holdout_speaker": "carol",
    }


def test_speaker_errors_name_the_argument(tmp_path, tfds_dir):
    make_fsdd(tmp_path / "fsdd")
    fsdd = str(tmp_path / "fsdd")
    for argument in ("holdout_speaker", "validation_speaker"):
        with pytest.raises(
            ValueError, match=f"argument {argument}: 'carol'.*'alice', 'bob'"
        ):
            load_dataset(
                fsdd, "speech", tfds_data_dir=tfds_dir, **{argument: "carol"}
            )
    with pytest.raises(
        ValueError,
        match="validation_speaker: 'bob' is also the holdout_speaker.*"
        r"\['alice'\]",
    ):
        load_dataset(
            fsdd,
            "speech",
            holdout_speaker="bob",
            validation_speaker="bob",
            tfds_data_dir=tfds_dir,
        )
    os.makedirs(tmp_path / "sst2")
    write_tsv(tmp_path / "sst2" / "train.tsv", sst2_rows(4))
    write_tsv(tmp_path / "sst2" / "dev.tsv", sst2_rows(2))
    for argument in ("holdout_speaker", "validation_speaker"):
        with pytest.raises(ValueError, match=f"{argument}='theo'.*no speakers"):
            load_dataset(
                str(tmp_path / "sst2"),
                "sentiment",
                tfds_data_dir=tfds_dir,
                **{argument: "theo"},
            )
    # Refused before any download is tried.
    with pytest.raises(
        ValueError, match="validation_speaker='theo'.*imdb_reviews.*no speak"
    ):
        load_dataset("imdb_reviews", "sentiment", validation_speaker="theo")


def test_fsdd_wrong_sample_rate_names_the_file(tmp_path, tfds_dir):
    make_fsdd(tmp_path, indices=6)
    write_wav(tmp_path / "1_bob_5.wav", [1, 2, 3], rate=16000)
    with pytest.raises(
        ValueError,
        match=r"1_bob_5\.wav has a sample rate of 16000 Hz, expected 8000",
    ):
        load_dataset(str(tmp_path), "speech", tfds_data_dir=tfds_dir)


@needs_fsdd
def test_real_fsdd_standard_and_speaker_splits(tfds_dir):
    splits = load_dataset(FSDD, "speech", tfds_data_dir=tfds_dir)
    # Validation: recordings 5-9 (round(0.1 * 45) = 5 of 5-49).
    assert splits.num_examples == {
        "train": 2000,
        "validation": 250,
        "test": 250,
    }
    assert splits.validation_scheme == "fsdd indices 5-9"
    labels = [y for _, y in splits.test.as_numpy_iterator()]
    assert collections.Counter(labels) == {d: 25 for d in range(10)}
    theo = load_dataset(
        FSDD, "speech", holdout_speaker="theo", tfds_data_dir=tfds_dir
    )
    # Validation: recordings 0-4 of the four other speakers.
    assert theo.num_examples == {"train": 1800, "validation": 200, "test": 500}
    assert theo.validation_scheme == "fsdd indices 0-4"
    # The held-out test set is exactly theo's recordings, read independently.
    expected = sorted(
        read_wav(os.path.join(FSDD, "recordings", n))[0].shape[0]
        for n in os.listdir(os.path.join(FSDD, "recordings"))
        if "_theo_" in n
    )
    got = sorted(x.shape[0] for x, _ in theo.test.as_numpy_iterator())
    assert got == expected


# -------------------------------------------------------- class folders


def test_text_class_folders_split_80_10_10(tmp_path, tfds_dir):
    expected = []
    for label, name in enumerate(["neg", "pos"]):
        os.makedirs(tmp_path / name)
        for i in range(25):
            text = f"{name} review {i}"
            (tmp_path / name / f"{i}.txt").write_text(text)
            expected.append((text, label))
    (tmp_path / "pos" / "empty.txt").write_bytes(b"")
    (tmp_path / "neg" / "latin1.txt").write_bytes(b"na\xefve")
    expected += [("", 1), ("na\ufffdve", 0)]

    splits = load_dataset(str(tmp_path), "sentiment", tfds_data_dir=tfds_dir)

    parts = [
        as_list(getattr(splits, k)) for k in ("train", "validation", "test")
    ]
    # 52 files: round(0.1 * 52) = 5 for validation and for test.
    assert [len(p) for p in parts] == [42, 5, 5]
    assert sorted(parts[0] + parts[1] + parts[2]) == sorted(expected)
    assert splits.class_names == ["neg", "pos"]
    assert splits.layout == "class_folders"
    assert splits.validation_scheme == "random"


def test_audio_class_folders_average_channels_and_check_rates(
    tmp_path, tfds_dir
):
    for label, name in enumerate(["no", "yes"]):
        os.makedirs(tmp_path / name)
        for i in range(5):
            write_wav(
                tmp_path / name / f"{i}.wav", [label * 100 + i, 0], rate=16000
            )
    stereo = np.array([[1000, 3000], [-200, 200]])
    write_wav(tmp_path / "yes" / "stereo.wav", stereo, rate=16000, channels=2)

    splits = load_dataset(str(tmp_path), "speech", tfds_data_dir=tfds_dir)
    assert splits.sample_rate == 16000
    everything = [
        (tuple(np.round(x * 2**15).astype(int)), y)
        for part in (splits.train, splits.validation, splits.test)
        for x, y in part.as_numpy_iterator()
    ]
    assert ((2000, 0), 1) in everything
    assert len(everything) == 11

    write_wav(tmp_path / "no" / "fast.wav", [1, 2], rate=8000)
    with pytest.raises(
        ValueError,
        match=r"fast\.wav has a sample rate of 8000 Hz, expected 16000",
    ):
        load_dataset(str(tmp_path), "speech", tfds_data_dir=tfds_dir)


# ------------------------------------------------------------ bad files


def test_wav_reader_names_bad_and_truncated_files(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not a RIFF file at all")
    with pytest.raises(
        ValueError, match="Could not read the WAV file .*bad.wav"
    ):
        read_wav(bad)
    good = tmp_path / "cut.wav"
    write_wav(good, np.arange(100))
    data = good.read_bytes()
    good.write_bytes(data[: len(data) - 50])
    with pytest.raises(
        ValueError,
        match=r"cut\.wav is truncated: .* 100 frames, the file holds 75",
    ):
        read_wav(good)


def test_wav_reader_scales_every_pcm_width_to_unit_range(tmp_path):
    write_wav(tmp_path / "a.wav", [0, 255, 128], width=1)
    np.testing.assert_array_equal(
        read_wav(tmp_path / "a.wav")[0], [-1, 127 / 128, 0]
    )
    write_wav(tmp_path / "b.wav", [-(2**31), 2**30], width=4)
    np.testing.assert_array_equal(read_wav(tmp_path / "b.wav")[0], [-1, 0.5])


def test_corrupt_wav_in_a_folder_names_the_file(tmp_path, tfds_dir):
    make_fsdd(tmp_path, indices=6)
    (tmp_path / "0_alice_5.wav").write_bytes(b"RIFF\x00\x00")
    with pytest.raises(ValueError, match=r"0_alice_5\.wav"):
        load_dataset(str(tmp_path), "speech", tfds_data_dir=tfds_dir)


# ------------------------------------------------------ layouts, sources


def test_unknown_and_ambiguous_directories_list_the_layouts(tmp_path):
    (tmp_path / "notes.md").write_text("nothing here")
    with pytest.raises(
        ValueError,
        match="(?s)matches none of the layouts.*sst2.*fsdd.*class_folders",
    ):
        load_dataset(str(tmp_path), "sentiment")
    write_tsv(tmp_path / "train.tsv", sst2_rows(3))
    write_tsv(tmp_path / "dev.tsv", sst2_rows(3))
    os.makedirs(tmp_path / "pos")
    (tmp_path / "pos" / "a.txt").write_text("x")
    with pytest.raises(
        ValueError, match="matches several layouts \\(sst2, class_folders\\)"
    ):
        load_dataset(str(tmp_path), "sentiment")


def test_task_must_match_the_data(tmp_path, tfds_dir):
    write_tsv(tmp_path / "train.tsv", sst2_rows(3))
    write_tsv(tmp_path / "dev.tsv", sst2_rows(3))
    with pytest.raises(
        ValueError, match="holds text, but the task 'speech' needs audio"
    ):
        load_dataset(str(tmp_path), "speech", tfds_data_dir=tfds_dir)
    with pytest.raises(ValueError, match="argument task.*'vision'"):
        load_dataset(str(tmp_path), "vision")
    with pytest.raises(ValueError, match="validation_fraction.*1.5"):
        load_dataset(str(tmp_path), "sentiment", validation_fraction=1.5)


def test_unknown_source_is_neither_directory_nor_tfds_name():
    with pytest.raises(
        ValueError, match="'no_such_data' is neither an existing directory"
    ):
        load_dataset("no_such_data", "sentiment")


def test_embedded_sample_is_the_published_sst2_and_an_fsdd_subset(tfds_dir):
    folder = samples_dir()
    digests = {
        "train.tsv": "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
        "dev.tsv": "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
    }
    for name, digest in digests.items():
        with open(os.path.join(folder, "sst2", name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest
    assert os.path.exists(os.path.join(folder, "ATTRIBUTION.md"))
    splits = load_dataset("sample", "speech", tfds_data_dir=tfds_dir)
    # Recordings 0-19 of 10 digits x 5 speakers: 0-4 test, 5-19 train pool,
    # of which the lowest round(0.1 * 15) = 2 indices, 5-6, validate.
    assert splits.num_examples == {"train": 650, "validation": 100, "test": 250}
    assert splits.source == "sample" and splits.sample_rate == 8000
    assert splits.validation_scheme == "fsdd indices 5-6"
    # Which recordings each split holds, told by their samples.
    recordings = os.path.join(folder, "fsdd", "recordings")
    index_of = collections.defaultdict(set)
    for name in os.listdir(recordings):
        samples = read_wav(os.path.join(recordings, name))[0]
        index_of[samples.tobytes()].add(int(name[:-4].split("_")[2]))
    for part, indices in [
        ("train", range(7, 20)),
        ("validation", (5, 6)),
        ("test", range(5)),
    ]:
        found = collections.Counter()
        for x, _ in getattr(splits, part).as_numpy_iterator():
            (index,) = index_of[x.tobytes()]
            found[index] += 1
        assert found == {i: 50 for i in indices}, part


# --------------------------------------------------------- TFDS by name


def fake_tfds(examples_by_split):
    """An `as_dataset_fn` for `tfds.testing.mock_data` serving fixed examples."""

    def as_dataset(self, split, **kwargs):
        return tf.data.Dataset.from_tensor_slices(examples_by_split[str(split)])

    return as_dataset


def test_tfds_imdb_reviews_maps_text_and_splits(tfds_dir):
    import tensorflow_datasets as tfds

    train = {
        "text": [f"review {i}" for i in range(20)],
        "label": [i % 2 for i in range(20)],
    }
    test = {"text": ["a", "b", "c"], "label": [1, 0, 1]}
    with tfds.testing.mock_data(
        as_dataset_fn=fake_tfds({"train": train, "test": test})
    ):
        splits = load_dataset(
            "imdb_reviews", "sentiment", tfds_data_dir=tfds_dir
        )
        got_test = as_list(splits.test)
        pool = as_list(splits.train) + as_list(splits.validation)
    assert splits.class_names == ["neg", "pos"]
    assert splits.num_examples == {"train": 18, "validation": 2, "test": 3}
    assert got_test == [("a", 1), ("b", 0), ("c", 1)]
    assert sorted(pool) == sorted(
        zip(train["text"], train["label"], strict=True)
    )
    assert (splits.layout, splits.sample_rate) == ("tfds", None)
    assert splits.validation_scheme == "random"


def test_tfds_glue_sst2_validates_on_whole_sentences(tfds_dir):
    import tensorflow_datasets as tfds

    train = {
        "sentence": [t for t, _ in TREEBANK],
        "label": [y for _, y in TREEBANK],
        "idx": list(range(len(TREEBANK))),
    }
    test = {"sentence": ["a fine film"], "label": [1], "idx": [0]}
    with tfds.testing.mock_data(
        as_dataset_fn=fake_tfds({"train": train, "validation": test})
    ):
        splits = load_dataset(
            "glue/sst2",
            "sentiment",
            validation_fraction=0.25,
            tfds_data_dir=tfds_dir,
        )
        got = {p: as_list(getattr(splits, p)) for p in ("train", "validation")}
        got_test = as_list(splits.test)
    rows = dict(enumerate(TREEBANK))
    chosen = {i for i in TREEBANK_SENTENCES if rows[i] in got["validation"]}
    assert len(chosen) == 2
    parts = expected_treebank_parts(chosen)
    assert got["train"] == [
        rows[i] for i, p in enumerate(parts) if p == sst2_split.TRAIN
    ]
    assert got_test == [("a fine film", 1)]
    assert splits.validation_scheme == "sst2 sentences"
    assert splits.num_removed_from_train == parts.count(sst2_split.REMOVED)


def test_tfds_spoken_digit_applies_fsdd_split_and_scales_pcm(tfds_dir):
    import tensorflow_datasets as tfds

    names, audio, labels = [], [], []
    for speaker in ("jackson", "theo"):
        for index in range(7):
            names.append(f"3_{speaker}_{index}.wav")
            audio.append([index, -32768, 16384])
            labels.append(3)
    data = {"audio": audio, "label": labels, "audio/filename": names}
    with tfds.testing.mock_data(as_dataset_fn=fake_tfds({"train": data})):
        splits = load_dataset("spoken_digit", "speech", tfds_data_dir=tfds_dir)
        test = [x for x, _ in splits.test.as_numpy_iterator()]
        validation = [x for x, _ in splits.validation.as_numpy_iterator()]
        held = load_dataset(
            "spoken_digit",
            "speech",
            holdout_speaker="theo",
            tfds_data_dir=tfds_dir,
        )
        by_speaker = load_dataset(
            "spoken_digit",
            "speech",
            validation_speaker="theo",
            tfds_data_dir=tfds_dir,
        )
        with pytest.raises(ValueError, match="validation_speaker: 'ann'"):
            load_dataset(
                "spoken_digit",
                "speech",
                validation_speaker="ann",
                tfds_data_dir=tfds_dir,
            )
    # Test: recordings 0-4; validation: round(0.1 * 2) = 1 index, 5.
    assert splits.num_examples == {"train": 2, "validation": 2, "test": 10}
    assert sorted(round(x[0] * 2**15) for x in test) == sorted(
        list(range(5)) * 2
    )
    assert [round(x[0] * 2**15) for x in validation] == [5, 5]
    assert splits.validation_scheme == "fsdd indices 5"
    np.testing.assert_array_equal(test[0][1:], [-1.0, 0.5])
    assert splits.sample_rate == 8000
    # jackson's 0-6 train; the lowest of them, 0, validates.
    assert held.num_examples == {"train": 6, "validation": 1, "test": 7}
    assert held.validation_scheme == "fsdd indices 0"
    assert by_speaker.num_examples == {"train": 2, "validation": 2, "test": 10}
    assert by_speaker.validation_scheme == "fsdd speaker theo"


def test_tfds_speech_commands_keeps_its_three_splits(tfds_dir):
    import tensorflow_datasets as tfds

    def split(n, offset):
        return {
            "audio": [[offset + i] * 4 for i in range(n)],
            "label": [i % 12 for i in range(n)],
        }

    data = {
        "train": split(6, 0),
        "validation": split(3, 100),
        "test": split(2, 200),
    }
    with tfds.testing.mock_data(as_dataset_fn=fake_tfds(data)):
        splits = load_dataset(
            "speech_commands", "speech", tfds_data_dir=tfds_dir
        )
        first_val = next(iter(splits.validation))[0].numpy()
    assert splits.num_examples == {"train": 6, "validation": 3, "test": 2}
    assert (
        len(splits.class_names) == 12 and splits.class_names[-1] == "_unknown_"
    )
    assert splits.sample_rate == 16000
    np.testing.assert_array_equal(
        first_val, np.full(4, 100 / 2**15, np.float32)
    )


def test_unavailable_tfds_dataset_says_how_to_fix_it(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    def offline(self, *args, **kwargs):
        raise ConnectionError("network is unreachable")

    # No network in CI: simulate the failed download rather than wait for it.
    monkeypatch.setattr(
        tfds.core.DatasetBuilder, "download_and_prepare", offline
    )
    with pytest.raises(ValueError) as info:
        load_dataset("glue/sst2", "sentiment", tfds_data_dir=str(tmp_path))
    message = str(info.value)
    assert "'glue/sst2' is not available" in message
    assert str(tmp_path) in message and "tfds build glue/sst2" in message
    assert "tfds_data_dir (--tfds-data-dir)" in message
    with pytest.raises(
        ValueError, match="'imdb_reviews' is for the task 'sentiment'"
    ):
        load_dataset("imdb_reviews", "speech")
