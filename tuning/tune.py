"""Command line: search dropout, size and learning rate of an application.

Examples:
    lstm-keras-tune sentiment --data sample --dir runs/tune_sample --max-trials 4
    lstm-keras-tune sentiment --data ../shared/data/sst2 --dir runs/tune_sst2 \\
        --tuner hyperband --hyperband-iterations 3
    lstm-keras-tune speech --data ../shared/data/fsdd --dir runs/tune_fsdd \\
        --tuner bayesian --units 32:128 --dropout 0:0.3
    python -m tuning sentiment --data sample --dir runs/t --space space.json
"""

import argparse
import json
import sys

from training import arguments

EXAMPLES = """\
examples:
  lstm-keras-tune sentiment --data sample --dir runs/tune_sample --max-trials 4
  lstm-keras-tune sentiment --data ../shared/data/sst2 --dir runs/tune_sst2 \\
      --tuner hyperband --hyperband-iterations 3
  lstm-keras-tune speech --data ../shared/data/fsdd --dir runs/tune_fsdd \\
      --tuner bayesian --units 32:128 --dropout 0:0.3
  python -m tuning sentiment --data sample --dir runs/t --space space.json

SOURCE is what lstm-keras-train takes: "sample", a TFDS name or a local
directory. Every trial trains with the application's preset recipe
(lstm-keras-train's; --epochs and --batch-size override it). Hyperband's
trials train 1/9, 1/3 or all of the recipe's steps (--max-budget), fresh
from the seed; the others train all of them.

The space starts from the application's defaults and their neighbours
(sentiment: units 64:256, 1:2 layers, pooling max/last, embedding 128/256,
subwords 0/50000; speech: units 64:128, 1:2 layers, 40/64 mel bins, head
dropout 0.3/0.5; both: dropout, recurrent dropout, learning rate). Bounds
are LOW:HIGH (both included); a --space JSON file holds {"units": [32, 256],
"dropout": [0.0, 0.5], "choices": {"pooling": ["max"]}, ...} and the flags
override it.

TUNE_DIR receives results.csv (one row per trial, with its overfitting
gap), overfitting.png, report.md and summary.json (the best trial with the
whole budget beside the application's default model, trained with the same
recipe and budget), and best/ (that trial's model, kept from its trial:
model.keras, serving/1/, metrics.json). Running the same command
again after an interruption resumes the search: finished trials are kept,
the interrupted one runs again.

Distributed: start the same command once with KERASTUNER_TUNER_ID=chief
and once per worker with KERASTUNER_TUNER_ID=worker0, worker1, ..., all
with KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set to the chief's
address; TUNE_DIR must be a folder all of them share. The oracle's gRPC
port is unauthenticated: keep it on a private network. A worker waits
--chief-timeout seconds for the chief (at its start, and if the chief goes
away: restart the chief with the same command and the workers carry on),
then exits 2 naming the address. A worker killed mid-trial and restarted
with the same KERASTUNER_TUNER_ID runs that trial again.
"""

# Tuned hyperparameters: (flag, help). Values are LOW:HIGH.
BOUND_FLAGS = [
    (
        "units",
        "LSTM units per direction, powers of 2 from LOW (default: "
        "sentiment 64:256, speech 64:128)",
    ),
    ("num_layers", "stacked LSTM layers (default 1:2)"),
    (
        "dropout",
        "LSTM input dropout, steps of 0.1 (default: sentiment 0:0.4, "
        "speech 0:0.3)",
    ),
    ("recurrent_dropout", "LSTM dropout on h_prev (default 0:0.2)"),
    (
        "learning_rate",
        "Adam's rate, log-uniform (default: sentiment 1e-3:1e-2, speech "
        "1e-3:4e-3)",
    ),
]


def _range(text):
    from lstm_keras.tuning.search_space import parse_range

    try:
        return parse_range(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def parse_args(argv=None):
    parser = arguments.ArgumentParser(
        prog="lstm-keras-tune",
        description=(
            "Search dropout, recurrent dropout, size (units, layers) and the "
            "learning rate of the sentiment or speech application with "
            "KerasTuner, and compare the best trial with an untuned "
            "baseline. Resumable; distributed with KerasTuner's chief and "
            "workers."
        ),
        epilog=EXAMPLES,
    )
    parser.add_argument("app", choices=("sentiment", "speech"))
    parser.add_argument(
        "--data", required=True, metavar="SOURCE", help="see below"
    )
    parser.add_argument(
        "--dir", required=True, metavar="TUNE_DIR", help="the search's folder"
    )
    parser.add_argument(
        "--tuner",
        choices=("random", "hyperband", "bayesian"),
        default="random",
        help="search algorithm (default random)",
    )
    parser.add_argument(
        "--max-trials",
        type=int,
        default=8,
        help="most trials (random, bayesian; default 8)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs of a whole-budget trial and of the baseline (default: "
        "the preset's)",
    )
    parser.add_argument(
        "--max-budget",
        type=int,
        default=9,
        help="Hyperband's whole budget in units; trials train 1/9, 1/3 or "
        "all of the recipe (default 9)",
    )
    parser.add_argument(
        "--hyperband-iterations",
        type=int,
        default=1,
        help="times Hyperband runs its brackets, 17 configurations each "
        "(default 1)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of split, oracle, weights, dropout, batches (default 0)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="batch size (default: the preset's)",
    )
    arguments.add_data_arguments(parser)
    space = parser.add_argument_group("search space (LOW:HIGH)")
    space.add_argument(
        "--space",
        default=None,
        metavar="JSON_FILE",
        help="bounds from a JSON file; the flags below override it",
    )
    for name, text in BOUND_FLAGS:
        space.add_argument(
            "--" + name.replace("_", "-"),
            type=_range,
            default=None,
            metavar="LOW:HIGH",
            help=text,
        )
    space.add_argument(
        "--layer-norm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also try the layer-normalized LSTM cell (default: no)",
    )
    parser.add_argument(
        "--model-options",
        type=json.loads,
        default=None,
        metavar="JSON",
        help="untuned model options, e.g. '{\"embedding_dim\": 64}'",
    )
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train the default model as the baseline (default: yes)",
    )
    parser.add_argument(
        "--max-consecutive-failed-trials",
        type=int,
        default=3,
        help="stop after this many failed trials in a row (default 3)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete a previous search in TUNE_DIR and start over",
    )
    parser.add_argument(
        "--chief-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="a worker's wait for the chief, at start and whenever it is "
        "gone, before it fails (default 300)",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        default=2,
        choices=(0, 1, 2),
        help="Keras progress: 2 a line per epoch (default), 1 a bar",
    )
    return parser.parse_args(argv)


def config_from_args(args):
    from lstm_keras.tuning import SearchSpace
    from lstm_keras.tuning import TuneConfig

    space = SearchSpace.from_overrides(
        args.space,
        app=args.app,
        **{name: getattr(args, name) for name, _ in BOUND_FLAGS},
        layer_norm=args.layer_norm,
    )
    return TuneConfig(
        app=args.app,
        data=args.data,
        tuner=args.tuner,
        max_trials=args.max_trials,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_budget=args.max_budget,
        hyperband_iterations=args.hyperband_iterations,
        seed=args.seed,
        validation_fraction=args.validation_fraction,
        max_train_examples=args.max_train_examples,
        tfds_data_dir=args.tfds_data_dir,
        holdout_speaker=args.holdout_speaker,
        validation_speaker=args.validation_speaker,
        space=space,
        fixed_options=args.model_options or {},
        baseline=args.baseline,
        max_consecutive_failed_trials=args.max_consecutive_failed_trials,
        overwrite=args.overwrite,
        verbose=args.verbose,
    )


def main(argv=None):
    args = parse_args(argv)
    try:
        config = config_from_args(args)
    except (TypeError, ValueError) as error:
        print(f"lstm-keras-tune: error: {error}", file=sys.stderr)
        return 2
    if args.chief_timeout <= 0:
        print(
            "lstm-keras-tune: error: --chief-timeout must be positive, got "
            f"{args.chief_timeout:g}",
            file=sys.stderr,
        )
        return 2
    from lstm_keras.tuning import ChiefUnreachableError
    from lstm_keras.tuning import StateFileError
    from lstm_keras.tuning import tune
    from lstm_keras.tuning.report import summary_text

    try:
        summary = tune(config, args.dir, chief_timeout=args.chief_timeout)
    except (StateFileError, ChiefUnreachableError) as error:
        print(f"lstm-keras-tune: error: {error}", file=sys.stderr)
        return 2
    if summary is None:
        print("worker: search finished; the chief writes the report")
        return 0
    print(summary_text(summary, args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
