"""Command line: the applications' quality runs (`make eval`).

Each run is `lstm-keras-train` with its defaults (the application's preset)
on the full real data, once per seed: sentiment on SST-2 (its dev set as
test), speech on FSDD (recordings 0-4 as test), speech on a held-out speaker
(george: trained without them, tested on all their clips), sentiment on
the IMDB reviews of `imdb_head/` (class folders, a seeded test split) and
speech's streaming preset on FSDD (`--streaming`).
Prints mean ± std over the seeds of validation and test accuracy and of
training time, and for the IMDB reviews a bag-of-words logistic regression
beside them; writes `results.json` and `accuracy.png` under `--out`, and
each run's own outputs under `--out/RUN/seed<k>/` (a finished run is read
back, a killed one resumes).

Examples:
    python -m training.evaluate --out runs/eval
    python -m training.evaluate --runs fsdd fsdd_holdout --seeds 0
    python -m training.evaluate --runs sst2 --data /data --out runs/sst2
"""

import os
import sys

from training import arguments

DEFAULT_DATA = os.path.join(os.pardir, "shared", "data")
RUNS = ("sst2", "fsdd", "fsdd_holdout", "imdb_head", "fsdd_streaming")


def parse_args(argv=None):
    parser = arguments.ArgumentParser(
        prog="python -m training.evaluate",
        description=(
            "Train the applications with their default settings on the real "
            "data, several seeds each, and report validation and test "
            "accuracy (mean ± std) and training time."
        ),
        epilog=(
            "examples:\n"
            "  python -m training.evaluate --out runs/eval\n"
            "  python -m training.evaluate --runs fsdd fsdd_holdout --seeds 0\n"
            "  python -m training.evaluate --runs sst2 --data /data "
            "--out runs/sst2"
        ),
    )
    parser.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="folder with sst2/, fsdd/recordings/ and imdb_head/ "
        "(default ../shared/data)",
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        choices=RUNS,
        default=list(RUNS),
        help="which runs (default: all)",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0, 1, 2],
        help="seeds of each run (default 0 1 2)",
    )
    parser.add_argument(
        "--out", default=os.path.join("runs", "eval"), help="output folder"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from lstm_keras.applications import evaluation

    try:
        summaries = evaluation.evaluate(
            args.runs, args.data, args.out, args.seeds
        )
    except (ValueError, OSError) as error:
        message = " ".join(str(error).split())
        print(f"training.evaluate: error: {message}", file=sys.stderr)
        return 2
    print(evaluation.format_report(summaries))
    print(f"wrote {args.out}/results.json and accuracy.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
