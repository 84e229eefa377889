"""Command line: the applications' quality run (`make eval`).

Trains each application with its default settings on the full real data and
prints a table of test accuracy and wall time: sentiment (SST-2, its dev set
as test), speech (FSDD, recordings 0-4 as test) and speech on a held-out
speaker (trained without them, tested on all their clips). Writes
`results.json` and `accuracy.png` under `--out`.

Examples:
    python -m training.evaluate --out runs/eval
    python -m training.evaluate --runs speech holdout --holdout-speaker theo
    python -m training.evaluate --runs sentiment --option units=256 --epochs 6
"""

import argparse
import ast
import json
import os
import sys

DEFAULT_DATA = os.path.join(os.pardir, "shared", "data")
RUNS = ("sentiment", "speech", "holdout")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=(
            "Train the sentiment and speech applications with their default "
            "settings and report test accuracy and wall time."
        ),
        epilog=(
            "examples:\n"
            "  python -m training.evaluate --out runs/eval\n"
            "  python -m training.evaluate --runs speech holdout "
            "--holdout-speaker theo\n"
            "  python -m training.evaluate --runs sentiment --option "
            "units=256 --epochs 6"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="folder with sst2/ and fsdd/recordings/ (default ../shared/data)",
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        choices=RUNS,
        default=list(RUNS),
        help="which runs (default: all three)",
    )
    parser.add_argument(
        "--holdout-speaker",
        default="george",
        help="FSDD speaker left out of training in the holdout run "
        "(default george)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="most epochs (default: 2 sentiment, 40 speech); early stopping "
        "on validation accuracy restores the best epoch",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model option, e.g. units=256 (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument(
        "--loader",
        choices=("auto", "datasets", "files"),
        default="auto",
        help="lstm_keras.datasets.load_dataset ('datasets'), direct file "
        "reading ('files'), or the first when available (default auto)",
    )
    parser.add_argument(
        "--out", default=os.path.join("runs", "eval"), help="output folder"
    )
    return parser.parse_args(argv)


def parse_options(pairs):
    """`["units=256", "bidirectional=False"]` -> `{"units": 256, ...}`."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"Expected --option KEY=VALUE, got {pair!r}.")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from lstm_keras.applications import quality

    options = parse_options(args.option)
    results = []
    for run in args.runs:
        print(f"== {run} ==", flush=True)
        results.append(
            quality.run(
                run,
                data=args.data,
                seed=args.seed,
                epochs=args.epochs,
                holdout_speaker=args.holdout_speaker,
                options=options,
                loader=args.loader,
            )
        )
    os.makedirs(args.out, exist_ok=True)
    print(quality.format_table(results))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    quality.plot_curves(results, os.path.join(args.out, "accuracy.png"))
    print(f"wrote {args.out}/results.json and accuracy.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
