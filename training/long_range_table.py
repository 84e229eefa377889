"""Command line: the long-range table, LSTM vs SimpleRNN on the adding problem.

Trains `lstm_keras.LSTM` and `keras.layers.SimpleRNN` (same width, data,
optimizer and budget) on the adding problem at each length, and writes
`long_range.json`, `long_range.md` (the table) and `long_range.png` (the
validation curves).

Examples:
    python -m training.long_range_table --out runs/long_range
    python -m training.long_range_table --lengths 100 --epochs 4 --out /tmp/lr
"""

import argparse
import json
import os
import sys
import time

from training import arguments

# Per length: (training sequences, epochs). Long sequences cost more per
# update, so they get fewer sequences; about 750 and 940 updates.
DEFAULT_BUDGETS = {100: (4000, 6), 400: (3000, 10)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
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
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--lengths",
        type=int,
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


def markdown_table(rows):
    """The results as a markdown table, one line per model and length."""
    lines = [
        "| T | model (width) | params | sequences x epochs | test MSE "
        "| baseline MSE | train s |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['length']} | `{r['model']}` ({r['units']}) "
            f"| {r['params']:,} | {r['train_samples']} x {r['epochs']} "
            f"| {r['test_mse']:.4f} | {r['baseline_mse']:.4f} "
            f"| {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    from lstm_keras import long_range
    from lstm_keras.plots import plot_long_range_curves

    os.makedirs(args.out, exist_ok=True)
    rows = []
    start = time.perf_counter()
    for length in args.lengths:
        samples, epochs = DEFAULT_BUDGETS.get(length, (4000, 10))
        samples = args.samples or samples
        epochs = args.epochs or epochs
        print(f"\n== adding problem, T={length}: {samples} x {epochs} epochs")
        results = long_range.compare_on_adding(
            chrono=args.chrono,
            length=length,
            units=args.units,
            train_samples=samples,
            test_samples=1000,
            epochs=epochs,
            batch_size=32,
            learning_rate=args.learning_rate,
            seed=args.seed,
            verbose=args.verbose,
        )
        for r in results:
            r.update(
                length=length,
                units=args.units,
                train_samples=samples,
                epochs=epochs,
                batch_size=32,
                learning_rate=args.learning_rate,
                seed=args.seed,
                chrono=args.chrono,
            )
            rows.append(r)
    table = markdown_table(rows)
    with open(os.path.join(args.out, "long_range.json"), "w") as f:
        json.dump({"config": vars(args), "results": rows}, f, indent=2)
    with open(os.path.join(args.out, "long_range.md"), "w") as f:
        f.write(table)
    plot_path = os.path.join(args.out, "long_range.png")
    plot_long_range_curves(rows, plot_path)
    print("\n" + table)
    print(f"total {time.perf_counter() - start:.0f} s; wrote {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
