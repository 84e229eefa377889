"""Command line: one speech run as a SavedModel and as LiteRT files.

Measures test accuracy, size and one-call latency of the run's SavedModel
and of its float32, dynamic-range and int8 LiteRT files
(`lstm_keras.export.deployment`); writes `deployment.json`,
`deployment.png` and the files under `--out`, and prints the table.

Examples:
    python -m training.deployment_table --run runs/eval/fsdd/seed0
    python -m training.deployment_table --run runs/fsdd --data sample --out runs/deploy
"""

import os
import sys

from training import arguments


def parse_args(argv=None):
    parser = arguments.ArgumentParser(
        prog="python -m training.deployment_table",
        description=(
            "Measure a trained speech model as a SavedModel and as float, "
            "dynamic-range and int8 LiteRT files: test accuracy, size, "
            "latency."
        ),
        epilog=(
            "examples:\n"
            "  python -m training.deployment_table --run runs/eval/fsdd/seed0\n"
            "  python -m training.deployment_table --run runs/fsdd --data "
            "sample --out runs/deploy"
        ),
    )
    parser.add_argument(
        "--run",
        required=True,
        metavar="RUN_DIR",
        help="a finished lstm-keras-train speech run",
    )
    parser.add_argument(
        "--data",
        default=os.path.join(os.pardir, "shared", "data", "fsdd", "recordings"),
        help="the data it was trained on (default ../shared/data/fsdd/recordings)",
    )
    parser.add_argument(
        "--out",
        default=os.path.join("runs", "deployment"),
        help="output folder (default runs/deployment)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from lstm_keras.export.deployment import deployment_table

    try:
        deployment_table(args.run, args.data, args.out)
    except (ValueError, OSError) as error:
        message = " ".join(str(error).split())
        print(f"training.deployment_table: error: {message}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}/deployment.json and deployment.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
