"""Command line: LSTM vs SimpleRNN on the adding problem (the pre-application demo).

Examples:
    python -m training.adding_demo
    python -m training.adding_demo --length 200 --epochs 12 --out runs/adding
"""

import argparse
import json
import os
import sys


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
    parser.add_argument(
        "--units", type=int, default=64, help="recurrent width (default 64)"
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=10000,
        help="training sequences (default 10000)",
    )
    parser.add_argument(
        "--epochs", type=int, default=8, help="training epochs (default 8)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="batch size (default 32)"
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-2,
        help="Adam learning rate (default 1e-2)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for data and weights (default 0)",
    )
    parser.add_argument(
        "--out",
        default="runs/adding_demo",
        help="folder for results.json and the plot (default runs/adding_demo)",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        default=2,
        choices=(0, 1, 2),
        help="Keras progress output (default 2: a line per epoch)",
    )
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
