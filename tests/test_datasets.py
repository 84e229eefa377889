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
from lstm_keras.datasets.files import read_wav

pytestmark = pytest.mark.tensorflow_only

SHARED = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared")
SST2 = os.path.join(SHARED, "data", "sst2")
FSDD = os.path.join(SHARED, "data", "fsdd")
needs_sst2 = pytest.mark.skipif(
    not os.path.exists(os.path.join(SST2, "train.tsv")),
    reason=f"the real SST-2 copy is absent ({SST2})",
)
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


@needs_sst2
def test_real_sst2_has_the_published_sizes_and_labels(tfds_dir):
    splits = load_dataset(SST2, "sentiment", tfds_data_dir=tfds_dir)
    assert splits.num_examples == {
        "train": 60614,
        "validation": 6735,
        "test": 872,
    }
    # PROVENANCE.md: dev 444 positive / 428 negative.
    test_labels = np.concatenate(
        [y for _, y in splits.test.batch(1000).as_numpy_iterator()]
    )
    assert (len(test_labels), test_labels.sum()) == (872, 444)
    # Iterated, the validation split really holds its announced size.
    assert sum(len(y) for _, y in splits.validation.batch(8192)) == 6735


# ----------------------------------------------------------------- FSDD


def test_fsdd_layout_uses_the_datasets_own_split(tmp_path, tfds_dir):
    clips = make_fsdd(tmp_path / "recordings")
    # The folder holding recordings/ works too.
    splits = load_dataset(str(tmp_path), "speech", tfds_data_dir=tfds_dir)

    def keys(ds):
        return sorted(clip_key(x) + (y,) for x, y in ds.as_numpy_iterator())

    test = keys(splits.test)
    assert test == sorted(
        (d, s, i, d)
        for d, speaker, i in clips
        for s in [("alice", "bob").index(speaker)]
        if i < 5
    )
    pool = keys(splits.train) + keys(splits.validation)
    assert sorted(pool) == sorted(
        (d, s, i, d)
        for d, speaker, i in clips
        for s in [("alice", "bob").index(speaker)]
        if i >= 5
    )
    assert splits.num_examples == {"train": 7, "validation": 1, "test": 20}
    assert splits.sample_rate == 8000
    assert splits.class_names == [str(d) for d in range(10)]
    x, _ = next(iter(splits.test))
    assert x.dtype == tf.float32
    # 16-bit PCM scaled by 2**-15: -32768 -> -1 exactly.
    assert x.numpy()[3] == -1.0 and x.numpy()[4] == 32767 / 32768


def test_fsdd_holdout_speaker_is_the_whole_test_set(tmp_path, tfds_dir):
    make_fsdd(tmp_path)
    splits = load_dataset(
        str(tmp_path), "speech", holdout_speaker="bob", tfds_data_dir=tfds_dir
    )

    def speaker(ds):
        return {clip_key(x)[1] for x, _ in ds.as_numpy_iterator()}

    assert speaker(splits.test) == {1}
    assert speaker(splits.train) | speaker(splits.validation) == {0}
    assert splits.num_examples["test"] == 14
    assert (
        splits.num_examples["train"] + splits.num_examples["validation"] == 14
    )


def test_holdout_speaker_errors_name_the_argument(tmp_path, tfds_dir):
    make_fsdd(tmp_path / "fsdd")
    with pytest.raises(ValueError, match="holdout_speaker.*'carol'.*alice"):
        load_dataset(
            str(tmp_path / "fsdd"),
            "speech",
            holdout_speaker="carol",
            tfds_data_dir=tfds_dir,
        )
    os.makedirs(tmp_path / "sst2")
    write_tsv(tmp_path / "sst2" / "train.tsv", sst2_rows(4))
    write_tsv(tmp_path / "sst2" / "dev.tsv", sst2_rows(2))
    with pytest.raises(ValueError, match="holdout_speaker='theo'.*no speakers"):
        load_dataset(
            str(tmp_path / "sst2"),
            "sentiment",
            holdout_speaker="theo",
            tfds_data_dir=tfds_dir,
        )


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
    assert splits.num_examples == {
        "train": 2025,
        "validation": 225,
        "test": 250,
    }
    labels = [y for _, y in splits.test.as_numpy_iterator()]
    assert collections.Counter(labels) == {d: 25 for d in range(10)}
    theo = load_dataset(
        FSDD, "speech", holdout_speaker="theo", tfds_data_dir=tfds_dir
    )
    assert theo.num_examples == {"train": 1800, "validation": 200, "test": 500}
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
    # Recordings 0-19 of 10 digits x 5 speakers: 0-4 test, 5-19 train pool.
    assert splits.num_examples == {"train": 675, "validation": 75, "test": 250}
    assert splits.source == "sample" and splits.sample_rate == 8000


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
        held = load_dataset(
            "spoken_digit",
            "speech",
            holdout_speaker="theo",
            tfds_data_dir=tfds_dir,
        )
    assert splits.num_examples == {"train": 3, "validation": 1, "test": 10}
    assert sorted(round(x[0] * 2**15) for x in test) == sorted(
        list(range(5)) * 2
    )
    np.testing.assert_array_equal(test[0][1:], [-1.0, 0.5])
    assert splits.sample_rate == 8000
    assert held.num_examples["test"] == 7


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
