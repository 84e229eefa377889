"""Readers for the files of the local layouts: SST-2 TSV, text files, WAV.

Every reader names the file (and, for a TSV, the line) in its error, so a bad
file in a folder of thousands is found at once.

Decisions where the formats leave room:

- Text is UTF-8. Bytes that are not valid UTF-8 are decoded with replacement
  (each becomes U+FFFD) rather than failing: one stray byte in 67,000 reviews
  should not stop training, and the replacement character is visible.
- An empty sentence (`"\\t1"`) or an empty text file is kept as the empty
  string; a wholly blank TSV line (such as a trailing one) is skipped.
- WAV files are PCM with 8, 16, 24 or 32 bits per sample. Samples become
  float32 in [-1, 1] (divided by 2**(bits - 1)); several channels are
  averaged into one.
"""

import os
import re
import wave

import numpy as np

SST2_HEADER = ("sentence", "label")
SST2_CLASS_NAMES = ("negative", "positive")
# {digit}_{speaker}_{index}.wav, as the Free Spoken Digit Dataset names them.
FSDD_NAME = re.compile(
    r"^(?P<digit>\d)_(?P<speaker>[A-Za-z]+)_(?P<index>\d+)\.wav$"
)
FSDD_SAMPLE_RATE = 8000


def decode_text(data):
    """Decodes UTF-8 `bytes`, replacing invalid bytes with U+FFFD."""
    return data.decode("utf-8", errors="replace")


def read_sst2_tsv(path):
    """Reads an SST-2 file: a `sentence<TAB>label` header, then one row each.

    Args:
        path: The `.tsv` file.

    Returns:
        A list of `(sentence, label)` with `label` 0 (negative) or 1
        (positive), in file order.

    Raises:
        ValueError: naming the file and line for a missing or wrong header,
            a row without a tab, or a label other than 0 or 1.
    """
    rows = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            line = decode_text(raw).rstrip("\r\n")
            if number == 1:
                if tuple(line.split("\t")) != SST2_HEADER:
                    raise ValueError(
                        f"{path}, line 1: expected the header "
                        f"'sentence<TAB>label', got {line[:80]!r}."
                    )
                continue
            if not line.strip():
                continue
            if "\t" not in line:
                raise ValueError(
                    f"{path}, line {number}: expected 'sentence<TAB>label', "
                    f"got a row without a tab: {line[:80]!r}."
                )
            sentence, label = line.rsplit("\t", 1)
            if label.strip() not in ("0", "1"):
                raise ValueError(
                    f"{path}, line {number}: expected the label 0 or 1, "
                    f"got {label!r}."
                )
            rows.append((sentence, int(label)))
    if not rows and not os.path.getsize(path):
        raise ValueError(f"{path}: the file is empty (no header).")
    return rows


def read_text_file(path):
    """Reads one text file whole, as `keras.utils.text_dataset_from_directory`.

    Invalid UTF-8 is replaced (see the module docstring); an empty file gives
    the empty string.
    """
    with open(path, "rb") as f:
        return decode_text(f.read())


def read_wav(path, expected_sample_rate=None):
    """Reads a PCM WAV file as mono float32 samples in [-1, 1].

    Args:
        path: The `.wav` file.
        expected_sample_rate: If given, a file at another rate is an error
            (the layouts do not resample). Defaults to `None`.

    Returns:
        `(samples, sample_rate)`: `<float32>[samples]` and an int.

    Raises:
        ValueError: naming the file, for a bad header, a non-PCM encoding, a
            truncated file or an unexpected sample rate.
    """
    try:
        with wave.open(os.fspath(path), "rb") as w:
            channels = w.getnchannels()
            width = w.getsampwidth()
            rate = w.getframerate()
            frames = w.getnframes()
            data = w.readframes(frames)
    except (wave.Error, EOFError, OSError) as error:
        raise ValueError(
            f"Could not read the WAV file {path}: {error or type(error).__name__}"
        ) from error
    if len(data) < frames * channels * width:
        raise ValueError(
            f"The WAV file {path} is truncated: its header announces {frames} "
            f"frames, the file holds {len(data) // (channels * width)}."
        )
    if expected_sample_rate is not None and rate != expected_sample_rate:
        raise ValueError(
            f"The WAV file {path} has a sample rate of {rate} Hz, expected "
            f"{expected_sample_rate} Hz (files are not resampled: convert it, "
            "e.g. `sox in.wav -r RATE out.wav`)."
        )
    samples = _pcm_to_float(data, width, path).reshape(-1, channels)
    return samples.mean(axis=1, dtype=np.float32), rate


def _pcm_to_float(data, width, path):
    if width == 1:  # 8-bit WAV is unsigned.
        return (np.frombuffer(data, np.uint8).astype(np.float32) - 128) / 128
    if width == 2:
        return np.frombuffer(data, "<i2").astype(np.float32) / 2**15
    if width == 3:
        raw = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
        value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        value = np.where(value >= 2**23, value - 2**24, value)
        return value.astype(np.float32) / 2**23
    if width == 4:
        return (np.frombuffer(data, "<i4").astype(np.float64) / 2**31).astype(
            np.float32
        )
    raise ValueError(
        f"The WAV file {path} has {8 * width}-bit samples; expected 8, 16, 24 "
        "or 32-bit PCM."
    )


def parse_fsdd_name(name):
    """Splits `{digit}_{speaker}_{index}.wav` into `(digit, speaker, index)`.

    Returns `None` for a name of another form.
    """
    match = FSDD_NAME.match(name)
    if match is None:
        return None
    return int(match["digit"]), match["speaker"], int(match["index"])
