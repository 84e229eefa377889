"""Command line: train variants of a quality run, rank validation vs test.

Trains the preset and one-change variants of a quality run
(`lstm_keras.applications.evaluation.SWEEPS`) on one seed, each in
`--out/RUN/VARIANT/` (a finished one is read back, a killed one resumes),
prints each variant's validation and test accuracy and Spearman's rank
correlation between them, and writes `sweep.json` and `sweep.png`. The
preset is the variant of best validation accuracy; test accuracy is
reported, never chosen on.

Examples:
    python -m training.sweep sst2 --out runs/sweep
    python -m training.sweep fsdd --variants preset units_64 --out runs/sweep
"""

import os
import sys

from training import arguments

DEFAULT_DATA = os.path.join(os.pardir, "shared", "data")


def parse_args(argv=None):
    from lstm_keras.applications.evaluation import SWEEPS

    parser = arguments.ArgumentParser(
        prog="python -m training.sweep",
        description=(
            "Train the preset and its one-change variants of a quality run "
            "and report how validation accuracy ranks them against test."
        ),
        epilog=(
            "examples:\n"
            "  python -m training.sweep sst2 --out runs/sweep\n"
            "  python -m training.sweep fsdd --variants preset units_64 "
            "--out runs/sweep"
        ),
    )
    parser.add_argument("run", choices=sorted(SWEEPS))
    parser.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="which variants (default: all of the run's)",
    )
    parser.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="folder with the runs' data (default ../shared/data)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument(
        "--out", default=os.path.join("runs", "sweep"), help="output folder"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants or ()) - set(SWEEPS[args.run]))
    if unknown:
        parser.error(
            f"unknown variants {unknown} of {args.run}; known: "
            f"{sorted(SWEEPS[args.run])}"
        )
    return args


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from lstm_keras.applications import evaluation

    variants = evaluation.SWEEPS[args.run]
    if args.variants:
        variants = {name: variants[name] for name in args.variants}
    try:
        result = evaluation.sweep(
            args.run, variants, args.data, args.out, seed=args.seed, verbose=2
        )
    except (ValueError, OSError) as error:
        message = " ".join(str(error).split())
        print(f"training.sweep: error: {message}", file=sys.stderr)
        return 2
    for row in result["variants"]:
        print(
            f"{row['variant']:<22} validation {row['validation_accuracy']:.4f}"
            f"  test {row['test_accuracy']:.4f}"
            f"  {row['training_seconds']:>6.0f} s"
        )
    print(f"Spearman rho (validation vs test): {result['spearman']:.3f}")
    for names in evaluation.JOINT_SWEEPS:
        joint = (
            evaluation.joint_validation(args.out, names)
            if args.run in names
            else None
        )
        if joint:
            print(f"mean validation accuracy over {' and '.join(names)}:")
            for variant, mean in joint:
                print(f"  {variant:<22} {mean:.4f}")
    print(f"wrote {os.path.join(args.out, args.run)}/sweep.json and sweep.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
