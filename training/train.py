"""Command line: train an application (sentiment or speech) and evaluate it.

Examples:
    lstm-keras-train sentiment --data sample --out runs/sst2
    lstm-keras-train speech --data sample --out runs/fsdd --epochs 20
    lstm-keras-train speech --data ../shared/data/fsdd --holdout-speaker theo --out runs/theo
    lstm-keras-train sentiment --data imdb_reviews --tfds-data-dir ~/tfds --out runs/imdb
    python -m training sentiment --data my_reviews/ --out runs/mine --units 64
"""

import argparse
import json
import sys

from training import arguments

EXAMPLES = """\
examples:
  lstm-keras-train sentiment --data sample --out runs/sst2
  lstm-keras-train speech --data sample --out runs/fsdd --epochs 20
  lstm-keras-train speech --data ../shared/data/fsdd --holdout-speaker theo --out runs/theo
  lstm-keras-train sentiment --data imdb_reviews --tfds-data-dir ~/tfds --out runs/imdb
  python -m training sentiment --data my_reviews/ --out runs/mine --units 64

SOURCE is "sample" (the real data embedded in the repository: SST-2, or
FSDD recordings 0-19), a TFDS name (imdb_reviews, glue/sst2, spoken_digit,
speech_commands), or a local directory: SST-2's train.tsv + dev.tsv, FSDD's
{digit}_{speaker}_{index}.wav files, or one sub-folder per class of .txt or
.wav files. Running the same command again after an interruption resumes it.
"""

# Backbone options: (flag, type, help). Unset ones keep the model's default.
MODEL_OPTIONS = [
    ("units", int, "LSTM units per direction"),
    ("num_layers", int, "stacked LSTM layers"),
    ("dropout", float, "LSTM input dropout"),
    ("recurrent_dropout", float, "LSTM dropout on h_prev"),
    ("embedding_dim", int, "sentiment: word embedding size"),
    (
        "subword_buckets",
        int,
        "sentiment: hashed character n-gram rows (0: off)",
    ),
    ("vocabulary_size", int, "sentiment: vocabulary size"),
    ("max_length", int, "sentiment: tokens kept per text"),
    ("pooling", str, "sentiment: 'max' (over the outputs) or 'last' (state)"),
    ("num_members", int, "sentiment: independently trained ensemble members"),
    ("frame_length", int, "speech: STFT frame length (samples)"),
    ("frame_step", int, "speech: STFT hop (samples)"),
    ("num_mel_bins", int, "speech: mel bins"),
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="lstm-keras-train",
        description=(
            "Train the sentiment or speech application of lstm_keras.LSTM, "
            "evaluate it on the test split and export it. Writes "
            "metrics.json, learning_curves.png (and confusion_matrix.png), "
            "TensorBoard logs, the best checkpoint, model.keras and a "
            "SavedModel in serving/1/ under --out."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("app", choices=("sentiment", "speech"))
    parser.add_argument(
        "--data", required=True, metavar="SOURCE", help="see below"
    )
    parser.add_argument(
        "--out", required=True, metavar="RUN_DIR", help="the run's folder"
    )
    parser.add_argument(
        "--epochs", type=int, default=4, help="training epochs (default 4)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="global batch size (default 64)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of split, weights, dropout, batch order (default 0)",
    )
    arguments.add_data_arguments(parser)
    parser.add_argument(
        "--strategy",
        choices=("default", "mirrored", "multi_worker"),
        default="default",
        help="tf.distribute strategy; multi_worker reads TF_CONFIG "
        "(default: default)",
    )
    group = parser.add_argument_group("model (backbone) options")
    for name, kind, text in MODEL_OPTIONS:
        group.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=None, help=text
        )
    group.add_argument(
        "--bidirectional",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bidirectional LSTMs",
    )
    group.add_argument(
        "--lstm-options",
        type=json.loads,
        default=None,
        metavar="JSON",
        help="extra lstm_keras.LSTM arguments, e.g. '{\"unroll\": false}'",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        default=1,
        choices=(0, 1, 2),
        help="Keras progress: 1 a bar (default), 2 a line per epoch",
    )
    return parser.parse_args(argv)


def config_from_args(args):
    from lstm_keras.applications.runner import TrainConfig

    names = [name for name, _, _ in MODEL_OPTIONS]
    names += ["bidirectional", "lstm_options"]
    options = {
        n: getattr(args, n) for n in names if getattr(args, n) is not None
    }
    return TrainConfig(
        app=args.app,
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        validation_fraction=args.validation_fraction,
        max_train_examples=args.max_train_examples,
        tfds_data_dir=args.tfds_data_dir,
        holdout_speaker=args.holdout_speaker,
        strategy=args.strategy,
        model_options=options,
        verbose=args.verbose,
    )


def main(argv=None):
    args = parse_args(argv)
    from lstm_keras.applications.runner import train_and_evaluate

    metrics = train_and_evaluate(config_from_args(args), args.out)
    print(
        f"\n{args.app} on {metrics['source']}: test accuracy "
        f"{metrics['test_accuracy']:.4f}, test loss {metrics['test_loss']:.6f} "
        f"({metrics['num_examples']['test']} examples), trained "
        f"{metrics['training_seconds']:.0f} s"
    )
    print(f"wrote {args.out}/metrics.json, plots, model.keras, serving/1/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
