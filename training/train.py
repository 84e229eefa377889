"""Command line: train an application (sentiment or speech) and evaluate it.

Examples:
    lstm-keras-train sentiment --data sample --out runs/sst2
    lstm-keras-train speech --data sample --out runs/fsdd --epochs 20
    lstm-keras-train speech --data ../shared/data/fsdd --holdout-speaker theo --out runs/theo
    lstm-keras-train sentiment --data imdb_reviews --tfds-data-dir ~/tfds --out runs/imdb
    python -m training sentiment --data my_reviews/ --out runs/mine --units 64
    lstm-keras-train sentiment --print-config
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
  lstm-keras-train speech --data sample --out runs/stream --streaming
  lstm-keras-train sentiment --data imdb_reviews --tfds-data-dir ~/tfds --out runs/imdb
  python -m training sentiment --data my_reviews/ --out runs/mine --units 64
  lstm-keras-train sentiment --print-config

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


# On/off backbone options (--x / --no-x); unset ones keep the default.
BOOLEAN_OPTIONS = [
    ("bidirectional", "bidirectional LSTMs"),
    ("clip_normalization", "speech: subtract each clip's mean log-mel frame"),
    ("augment", "speech: augment the waveforms while training"),
]


def parse_args(argv=None):
    parser = arguments.ArgumentParser(
        prog="lstm-keras-train",
        description=(
            "Train the sentiment or speech application of lstm_keras.LSTM, "
            "evaluate it on the test split and export it. Writes "
            "metrics.json, learning_curves.png (and confusion_matrix.png), "
            "TensorBoard logs, the best checkpoint, model.keras and a "
            "SavedModel in serving/1/ under --out."
        ),
        epilog=EXAMPLES,
    )
    parser.add_argument("app", choices=("sentiment", "speech"))
    parser.add_argument("--data", metavar="SOURCE", help="see below")
    parser.add_argument("--out", metavar="RUN_DIR", help="the run's folder")
    recipe = parser.add_argument_group(
        "recipe (unset: the application's preset, see --print-config)"
    )
    recipe.add_argument("--epochs", type=int, help="most training epochs")
    recipe.add_argument("--batch-size", type=int, help="global batch size")
    recipe.add_argument(
        "--learning-rate", type=float, help="Adam's initial learning rate"
    )
    recipe.add_argument(
        "--schedule",
        choices=("cosine", "constant"),
        help="learning rate annealed over the run, or constant",
    )
    recipe.add_argument(
        "--ema-fraction",
        type=_fraction_or_none,
        default=argparse.SUPPRESS,
        metavar="F|none",
        help="weight averaging: time constant as a fraction of the run's "
        "steps, or 'none'",
    )
    recipe.add_argument(
        "--monitor",
        choices=("val_accuracy", "val_loss"),
        help="validation metric that picks the best epoch",
    )
    recipe.add_argument(
        "--patience",
        type=int,
        help="stop after this many epochs without a better --monitor "
        "(0: never)",
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
    for name, text in BOOLEAN_OPTIONS:
        group.add_argument(
            "--" + name.replace("_", "-"),
            action=argparse.BooleanOptionalAction,
            default=None,
            help=text,
        )
    group.add_argument(
        "--streaming",
        action="store_true",
        help="speech: the streaming preset (unidirectional, no clip "
        "normalization), whose exports get a `stream` signature",
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
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (preset and model options) as JSON "
        "and exit",
    )
    args = parser.parse_args(argv)
    missing = [
        flag
        for flag, value in (("--data", args.data), ("--out", args.out))
        if value is None
    ]
    if missing and not args.print_config:
        parser.error(
            f"the following arguments are required: {', '.join(missing)}"
        )
    return args


def _fraction_or_none(text):
    if text.lower() == "none":
        return None
    return float(text)


def config_from_args(args):
    from lstm_keras.applications.runner import TrainConfig

    names = [name for name, _, _ in MODEL_OPTIONS]
    names += [name for name, _ in BOOLEAN_OPTIONS] + ["lstm_options"]
    options = {
        n: getattr(args, n) for n in names if getattr(args, n) is not None
    }
    if args.streaming:
        from lstm_keras.applications.speech import STREAMING_OPTIONS

        if args.app != "speech":
            raise ValueError("--streaming is a speech option.")
        for name, value in STREAMING_OPTIONS.items():
            if options.get(name, value) != value:
                flag = "--" + name.replace("_", "-")
                raise ValueError(
                    f"--streaming needs --no-{flag[2:]}, not {flag}."
                )
        options.update(STREAMING_OPTIONS)
    return TrainConfig(
        app=args.app,
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        schedule=args.schedule,
        ema_fraction=getattr(args, "ema_fraction", "preset"),
        monitor=args.monitor,
        patience=args.patience,
        seed=args.seed,
        validation_fraction=args.validation_fraction,
        max_train_examples=args.max_train_examples,
        tfds_data_dir=args.tfds_data_dir,
        holdout_speaker=args.holdout_speaker,
        validation_speaker=args.validation_speaker,
        strategy=args.strategy,
        model_options=options,
        verbose=args.verbose,
    )


def main(argv=None):
    args = parse_args(argv)
    try:
        config = config_from_args(args)
        from lstm_keras.applications import runner

        if args.print_config:
            print(json.dumps(runner.describe_config(config), indent=2))
            return 0

        metrics = runner.train_and_evaluate(config, args.out)
    except (ValueError, TypeError, OSError) as error:
        # A user's mistake (a missing folder, a bad value): one line.
        message = " ".join(str(error).split())
        print(f"lstm-keras-train: error: {message}", file=sys.stderr)
        return 2
    print(
        f"\n{args.app} on {metrics['source']}: validation accuracy "
        f"{metrics['validation_accuracy']:.4f} (best epoch "
        f"{metrics['best_epoch'] + 1}), test accuracy "
        f"{metrics['test_accuracy']:.4f}, test loss {metrics['test_loss']:.6f} "
        f"({metrics['num_examples']['test']} examples), trained "
        f"{metrics['training_seconds']:.0f} s"
    )
    print(f"wrote {args.out}/metrics.json, plots, model.keras, serving/1/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
