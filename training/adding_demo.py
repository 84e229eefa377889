"""Command line: LSTM vs SimpleRNN on the adding problem (the pre-application demo).

Examples:
    python -m training.adding_demo
    python -m training.adding_demo --length 200 --epochs 12 --out runs/adding
"""

import argparse
import json
import os
import sys

from training import arguments


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
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
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--length", type=int, default=100, help="timesteps T (default 100)"
    )
    arguments.add_budget_arguments(parser, samples=10000, epochs=8)
    parser.add_argument(
        "--batch-size", type=int, default=32, help="batch size (default 32)"
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
    from lstm_keras import long_range
    from lstm_keras.plots import plot_adding_curves

    results = long_range.compare_on_adding(
        length=args.length,
        units=args.units,
        train_samples=args.samples,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        verbose=args.verbose,
    )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"config": vars(args), "results": results}, f, indent=2)
    plot_path = os.path.join(args.out, "adding_val_mse.png")
    plot_adding_curves(results, args.length, plot_path)

    print(
        f"\nAdding problem, T={args.length}, {args.epochs} epochs, seed {args.seed}"
    )
    print(f"{'model':<24} {'params':>8} {'test MSE':>10} {'train s':>8}")
    for r in results:
        print(
            f"{r['model']:<24} {r['params']:>8} {r['test_mse']:>10.4f} {r['train_seconds']:>8.1f}"
        )
    print(
        f"{'predict 1.0 (baseline)':<24} {'':>8} {long_range.ADDING_BASELINE_MSE:>10.4f}"
    )
    print(f"\nwrote {args.out}/results.json and {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
