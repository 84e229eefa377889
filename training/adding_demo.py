"""Command line: LSTM vs SimpleRNN on the adding problem (the pre-application demo).

Parses the flags into a `lstm_keras.experiments.AddingDemoConfig` and runs
`lstm_keras.experiments.adding_demo`.

Examples:
    python -m training.adding_demo
    python -m training.adding_demo --length 200 --epochs 12 --out runs/adding
"""

import os
import sys

from training import arguments


def parse_args(argv=None):
    parser = arguments.ArgumentParser(
        prog="python -m training.adding_demo",
        description=(
            "Train lstm_keras.LSTM and keras.layers.SimpleRNN on the adding "
            "problem and print both test errors beside the trivial baseline."
        ),
        epilog=(
            "examples:\n"
            "  python -m training.adding_demo\n"
            "  python -m training.adding_demo --length 200 --epochs 12 "
            "--out runs/adding"
        ),
    )
    parser.add_argument(
        "--length",
        type=arguments.positive_int,
        default=100,
        help="timesteps T (default 100)",
    )
    arguments.add_budget_arguments(parser, samples=10000, epochs=8)
    parser.add_argument(
        "--batch-size",
        type=arguments.positive_int,
        default=32,
        help="batch size (default 32)",
    )
    arguments.add_learning_rate_argument(parser)
    parser.add_argument(
        "--out",
        default="runs/adding_demo",
        help="folder for results.json and the plot (default runs/adding_demo)",
    )
    arguments.add_verbose_argument(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from lstm_keras import experiments

    config = experiments.AddingDemoConfig(
        length=args.length,
        units=args.units,
        samples=args.samples,
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        verbose=args.verbose,
    )
    results = experiments.adding_demo(config, args.out)
    print(experiments.format_adding_results(results, config))
    plot_path = os.path.join(args.out, "adding_val_mse.png")
    print(f"\nwrote {args.out}/results.json and {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
