"""The applications' quality runs: train with defaults, time, test.

`run("sentiment" | "speech" | "holdout", data=...)` loads the real data,
trains the default model with early stopping on validation accuracy and
returns its test accuracy and wall time; `training/evaluate.py` is the
command line around it.
"""

import glob
import os
import re
import time
import wave

import keras
import numpy as np
import tensorflow as tf

from lstm_keras.applications import DEFAULT_OPTIONS
from lstm_keras.applications import build_classifier

# Most epochs (early stopping may end sooner) and patience per task.
EPOCHS = {"sentiment": 2, "speech": 40}
PATIENCE = {"sentiment": 2, "speech": 8}
BATCH_SIZE = {"sentiment": 64, "speech": 32}
# Sentiment overfits the phrases of SST-2 within two epochs: its rate is
# annealed (cosine) over the run; speech trains at a constant rate.
ANNEAL = {"sentiment": True, "speech": False}
# Length buckets: a batch pads to its longest member, so grouping similar
# lengths cuts the padded (masked, but still computed) steps.
TEXT_BUCKETS = [4, 8, 12, 16, 20, 25, 30, 40]  # tokens
AUDIO_BUCKETS = [2500, 3000, 3500, 4000, 5000, 6500]  # samples

FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
DIGITS = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]


def run(
    name,
    data,
    seed=0,
    epochs=None,
    holdout_speaker="george",
    options=None,
    verbose=2,
    loader="auto",
):
    """Trains and tests one quality run.

    Args:
        name: `"sentiment"`, `"speech"` or `"holdout"` (speech without
            `holdout_speaker`, tested on all their clips).
        data: Folder holding `sst2/` and `fsdd/recordings/`.
        seed: Seed of the validation split, shuffling and weights.
        epochs: Most epochs; `None` for `EPOCHS[task]`.
        holdout_speaker: The speaker of the holdout run.
        options: Model options overriding `DEFAULT_OPTIONS[task]`.
        verbose: `model.fit` verbosity.
        loader: `"datasets"` for `lstm_keras.datasets.load_dataset`,
            `"files"` for this module's direct reading, `"auto"` for the
            first when it can be imported.

    Returns:
        A dict: run, task, test_accuracy, train_seconds (adapt + fit),
        epochs_run, best_epoch, val_accuracy per epoch, options, sizes.
    """
    task = "sentiment" if name == "sentiment" else "speech"
    keras.utils.set_random_seed(seed)
    splits = load(
        data,
        task,
        seed=seed,
        holdout_speaker=holdout_speaker if name == "holdout" else None,
        loader=loader,
    )
    options = {**DEFAULT_OPTIONS[task], **(options or {})}
    options["seed"] = seed if options.get("seed") is None else options["seed"]
    model = build_classifier(
        task,
        class_names=splits["class_names"],
        sample_rate=splits["sample_rate"],
        **options,
    )
    train = batches(splits["train"], task, shuffle_seed=seed)
    validation = batches(splits["validation"], task)
    test = batches(splits["test"], task)
    epochs = epochs or EPOCHS[task]
    start = time.perf_counter()
    model.adapt(splits["train"])
    decay_steps = None
    if ANNEAL[task]:
        decay_steps = epochs * sum(1 for _ in train)
    model.compile(decay_steps=decay_steps)
    history = model.fit(
        train,
        validation_data=validation,
        epochs=epochs,
        callbacks=stopping_callbacks(model, PATIENCE[task]),
        verbose=verbose,
    )
    train_seconds = time.perf_counter() - start
    _, test_accuracy = model.evaluate(test, verbose=0)
    val_accuracy = [float(a) for a in history.history["val_accuracy"]]
    return {
        "run": name,
        "task": task,
        "test_accuracy": float(test_accuracy),
        "train_seconds": round(train_seconds, 1),
        "epochs_run": len(val_accuracy),
        "decay_steps": decay_steps,
        "ema_momentum": model.optimizer.ema_momentum
        if model.optimizer.use_ema
        else None,
        "best_epoch": int(np.argmax(val_accuracy)) + 1,
        "val_accuracy": val_accuracy,
        "train_accuracy": [float(a) for a in history.history["accuracy"]],
        "holdout_speaker": holdout_speaker if name == "holdout" else None,
        "sizes": splits["sizes"],
        "loader": splits["loader"],
        "options": options,
    }


def stopping_callbacks(model, patience):
    """Early stopping on validation accuracy that restores the best epoch.

    When the compiled optimizer keeps a moving average of the weights
    (`use_ema`), validation, the choice of the best epoch and the weights
    the model ends with are all the average's (`SwapEMAWeights` swaps it in
    for validation and at each epoch's end, before `EarlyStopping` reads
    the weights), not the last step's.
    """
    callbacks = []
    if getattr(model.optimizer, "use_ema", False):
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    callbacks.append(
        keras.callbacks.EarlyStopping(
            monitor="val_accuracy",
            patience=patience,
            restore_best_weights=True,
        )
    )
    return callbacks


def batches(ds, task, shuffle_seed=None):
    """Length-bucketed, zero-padded batches of `(x, label)` pairs."""
    if shuffle_seed is not None:
        ds = ds.shuffle(100_000, seed=shuffle_seed)
    if task == "sentiment":
        boundaries = TEXT_BUCKETS

        def length(text, label):
            return tf.size(tf.strings.split(text))

    else:
        boundaries = AUDIO_BUCKETS

        def length(waveform, label):
            return tf.shape(waveform)[0]

    ds = ds.bucket_by_sequence_length(
        length,
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[BATCH_SIZE[task]] * (len(boundaries) + 1),
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def load(data, task, seed=0, holdout_speaker=None, loader="auto"):
    """The splits of `task` under `data`, as `load_splits` returns them."""
    if loader not in ("auto", "datasets", "files"):
        raise ValueError(
            "Received an invalid value for argument loader, expected one of "
            f"'auto', 'datasets', 'files', got {loader!r}."
        )
    if loader != "files":
        try:
            from lstm_keras.datasets import load_dataset
        except ImportError:
            if loader == "datasets":
                raise
        else:
            folder = "sst2" if task == "sentiment" else "fsdd"
            splits = load_dataset(
                os.path.join(data, folder),
                task,
                seed=seed,
                holdout_speaker=holdout_speaker,
            )
            return {
                "train": splits.train,
                "validation": splits.validation,
                "test": splits.test,
                "class_names": list(splits.class_names),
                "sample_rate": splits.sample_rate,
                "sizes": dict(splits.num_examples),
                "loader": "lstm_keras.datasets",
            }
    return {**load_splits(data, task, seed, holdout_speaker), "loader": "files"}


def load_splits(data, task, seed=0, holdout_speaker=None):
    """Unbatched train/validation/test `(x, label)` datasets of `data`.

    Reads the files directly (SST-2 TSVs, FSDD WAVs); validation is a
    seeded 10% of the training files. Returns a dict with `train`,
    `validation`, `test`, `class_names`, `sample_rate` and `sizes`.
    """
    if task == "sentiment":
        train = _read_sst2(os.path.join(data, "sst2", "train.tsv"))
        test = _read_sst2(os.path.join(data, "sst2", "dev.tsv"))
        class_names, sample_rate = ["negative", "positive"], None
    else:
        clips = _read_fsdd(os.path.join(data, "fsdd", "recordings"))
        if holdout_speaker is None:
            is_test = [index < 5 for _, _, _, index in clips]
        else:
            speakers = sorted({speaker for _, _, speaker, _ in clips})
            if holdout_speaker not in speakers:
                raise ValueError(
                    f"Received an invalid value for argument "
                    f"holdout_speaker, expected one of {speakers}, got "
                    f"{holdout_speaker!r}."
                )
            is_test = [speaker == holdout_speaker for _, _, speaker, _ in clips]
        train = [c[:2] for c, t in zip(clips, is_test, strict=True) if not t]
        test = [c[:2] for c, t in zip(clips, is_test, strict=True) if t]
        class_names, sample_rate = DIGITS, 8000
    order = np.random.default_rng(seed).permutation(len(train))
    n_validation = len(train) // 10
    validation = [train[i] for i in order[:n_validation]]
    train = [train[i] for i in order[n_validation:]]
    return {
        "train": _to_dataset(train, task),
        "validation": _to_dataset(validation, task),
        "test": _to_dataset(test, task),
        "class_names": class_names,
        "sample_rate": sample_rate,
        "sizes": {
            "train": len(train),
            "validation": len(validation),
            "test": len(test),
        },
    }


def _read_sst2(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()[1:]
    rows = []
    for line in lines:
        sentence, label = line.rsplit("\t", 1)
        rows.append((sentence.strip(), int(label)))
    return rows


def _read_fsdd(directory):
    """`(waveform, digit, speaker, index)` of every WAV in `directory`."""
    clips = []
    for path in sorted(glob.glob(os.path.join(directory, "*.wav"))):
        match = FSDD_NAME.match(os.path.basename(path))
        if match is None:
            continue
        with wave.open(path) as f:
            pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2")
        waveform = pcm.astype("float32") / 32768.0
        digit, speaker, index = match.groups()
        clips.append((waveform, int(digit), speaker, int(index)))
    return clips


def _to_dataset(rows, task):
    labels = np.array([label for _, label in rows], "int64")
    if task == "sentiment":
        texts = tf.constant([text for text, _ in rows], tf.string)
        return tf.data.Dataset.from_tensor_slices((texts, labels))
    waveforms = tf.RaggedTensor.from_row_lengths(
        np.concatenate([x for x, _ in rows]), [len(x) for x, _ in rows]
    )
    ds = tf.data.Dataset.from_tensor_slices((waveforms, labels))
    # Slices of a ragged tensor come as 0-ragged-rank RaggedTensors; a map
    # hands them over as plain tensors, which `padded_batch` needs.
    return ds.map(lambda x, y: (x, y))


def format_table(results):
    """The results as a fixed-width table: run, accuracy, time, epochs."""
    lines = [
        f"{'run':<28} {'test acc':>9} {'time (s)':>9} {'epochs':>7}",
    ]
    for result in results:
        name = result["run"]
        if result["holdout_speaker"]:
            name += f" ({result['holdout_speaker']})"
        lines.append(
            f"{name:<28} {result['test_accuracy']:>9.4f} "
            f"{result['train_seconds']:>9.1f} {result['epochs_run']:>7d}"
        )
    return "\n".join(lines)


def plot_curves(results, path):
    """Validation accuracy per epoch of each run, as a PNG."""
    from lstm_keras.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for result in results:
        curve = result["val_accuracy"]
        ax.plot(
            range(1, len(curve) + 1), curve, marker="o", label=result["run"]
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Applications: validation accuracy per epoch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
