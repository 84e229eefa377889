"""Command line: how the gradient flows back in time, LSTM beside SimpleRNN.

Parses the flags into a `lstm_keras.experiments.GradientFlowConfig` and
runs `lstm_keras.experiments.gradient_flow_comparison`: `lstm_keras.LSTM`
and `keras.layers.SimpleRNN` (same width) trained briefly on a long-range
task, the gradient reaching each timestep measured on a held-out batch;
writes `gradient_flow.png`, `gradient_flow.csv` (the tidy table) and
`summary.json`.

Examples:
    lstm-keras-gradflow --out runs/gradflow
    python -m training.gradflow --task copy --length 50 --out runs/gradflow_copy
    python -m training.gradflow --length 200 --epochs 0 --out /tmp/untrained
"""

import sys

from training import arguments


def parse_args(argv=None):
    parser = arguments.ArgumentParser(
        prog="lstm-keras-gradflow",
        description=(
            "Train an LSTM and a SimpleRNN briefly on a long-range task and "
            "plot the gradient norm reaching each timestep against its "
            "distance from the loss."
        ),
        epilog=(
            "examples:\n"
            "  lstm-keras-gradflow --out runs/gradflow\n"
            "  python -m training.gradflow --task copy --length 50 "
            "--out runs/gradflow_copy\n"
            "  python -m training.gradflow --length 200 --epochs 0 "
            "--out /tmp/untrained   # at initialization"
        ),
    )
    parser.add_argument(
        "--task",
        choices=("adding", "copy"),
        default="adding",
        help="adding problem (regression) or copy task (default: adding)",
    )
    parser.add_argument(
        "--length",
        type=arguments.positive_int,
        default=100,
        help="timesteps T (adding) or blank steps (copy) (default 100)",
    )
    arguments.add_budget_arguments(parser, samples=4000, epochs=6)
    parser.add_argument(
        "--batch",
        type=arguments.positive_int,
        default=64,
        help="measured batch (default 64)",
    )
    arguments.add_chrono_argument(parser)
    parser.add_argument("--out", required=True, help="output folder")
    arguments.add_verbose_argument(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from lstm_keras import experiments

    config = experiments.GradientFlowConfig(
        task=args.task,
        length=args.length,
        units=args.units,
        samples=args.samples,
        epochs=args.epochs,
        seed=args.seed,
        batch=args.batch,
        chrono=args.chrono,
        verbose=args.verbose,
    )
    summaries = experiments.gradient_flow_comparison(config, args.out)
    print(experiments.format_gradient_flow(summaries, config))
    print(
        f"\nwrote {args.out}/gradient_flow.png, gradient_flow.csv, summary.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
