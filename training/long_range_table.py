"""Command line: the long-range table, LSTM vs SimpleRNN on the adding problem.

Parses the flags into a `lstm_keras.experiments.LongRangeConfig` and runs
`lstm_keras.experiments.long_range_table`: `lstm_keras.LSTM` and
`keras.layers.SimpleRNN` (same width, data, optimizer and budget) trained on
the adding problem at each length; it writes
`long_range.json`, `long_range.md` (the table) and `long_range.png` (the
validation curves).

Examples:
    python -m training.long_range_table --out runs/long_range
    python -m training.long_range_table --lengths 100 --epochs 4 --out /tmp/lr
"""

import sys
import time

from training import arguments


def parse_args(argv=None):
    parser = arguments.ArgumentParser(
        prog="python -m training.long_range_table",
        description=(
            "Train lstm_keras.LSTM and keras.layers.SimpleRNN on the adding "
            "problem at several lengths and write a JSON, a markdown table "
            "and a PNG of the validation curves."
        ),
        epilog=(
            "examples:\n"
            "  python -m training.long_range_table --out runs/long_range\n"
            "  python -m training.long_range_table --lengths 100 --epochs 4 "
            "--out /tmp/lr\n\n"
            "Default budgets (sequences x epochs, batch 32): T=100: "
            "4000 x 6; T=400: 3000 x 10."
        ),
    )
    parser.add_argument(
        "--lengths",
        type=arguments.positive_int,
        nargs="+",
        default=[100, 400],
        help="sequence lengths T (default: 100 400)",
    )
    arguments.add_budget_arguments(
        parser, samples=None, epochs=None, per_length=True
    )
    arguments.add_learning_rate_argument(parser)
    arguments.add_chrono_argument(parser)
    parser.add_argument(
        "--out",
        default="runs/long_range",
        help="output folder (default runs/long_range)",
    )
    arguments.add_verbose_argument(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from lstm_keras import experiments

    config = experiments.LongRangeConfig(
        lengths=args.lengths,
        units=args.units,
        samples=args.samples,
        epochs=args.epochs,
        seed=args.seed,
        learning_rate=args.learning_rate,
        chrono=args.chrono,
        verbose=args.verbose,
    )
    start = time.perf_counter()
    rows = experiments.long_range_table(config, args.out)
    print("\n" + experiments.markdown_table(rows))
    print(f"total {time.perf_counter() - start:.0f} s; wrote {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
