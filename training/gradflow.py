"""Command line: how the gradient flows back in time, LSTM beside SimpleRNN.

Trains `lstm_keras.LSTM` and `keras.layers.SimpleRNN` (same width) briefly on
a long-range task, measures the gradient reaching each timestep with
`lstm_keras.diagnostics.gradient_flow` on a held-out batch, and writes
`gradient_flow.png`, `gradient_flow.csv` (the tidy table) and
`summary.json`.

Examples:
    lstm-keras-gradflow --out runs/gradflow
    python -m training.gradflow --task copy --length 50 --out runs/gradflow_copy
    python -m training.gradflow --length 200 --epochs 0 --out /tmp/untrained
"""

import argparse
import csv
import json
import os
import sys
import time

from training import arguments


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
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
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--task",
        choices=("adding", "copy"),
        default="adding",
        help="adding problem (regression) or copy task (default: adding)",
    )
    parser.add_argument(
        "--length",
        type=int,
        default=100,
        help="timesteps T (adding) or blank steps (copy) (default 100)",
    )
    arguments.add_budget_arguments(parser, samples=4000, epochs=6)
    parser.add_argument(
        "--batch", type=int, default=64, help="measured batch (default 64)"
    )
    arguments.add_chrono_argument(parser)
    parser.add_argument("--out", required=True, help="output folder")
    arguments.add_verbose_argument(parser)
    return parser.parse_args(argv)


def _task(args):
    """Data, model builder and loss for the chosen task."""
    import keras

    from lstm_keras import long_range

    if args.task == "adding":
        x, y = long_range.adding_problem(args.samples, args.length, args.seed)
        x_test, y_test = long_range.adding_problem(
            args.batch, args.length, args.seed + 1
        )

        def build(layer):
            return long_range.build_regressor(layer, args.length)

        return (x, y), (x_test, y_test), build, "mse"

    x, y = long_range.copy_problem(args.samples, args.length, seed=args.seed)
    x_test, y_test = long_range.copy_problem(
        args.batch, args.length, seed=args.seed + 1
    )
    steps, channels = x.shape[1:]

    def build(layer):
        inputs = keras.Input((steps, channels))
        outputs = keras.layers.Dense(channels - 1)(layer(inputs))
        return keras.Model(inputs, outputs, name=layer.name + "_copier")

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return (x, y), (x_test, y_test), build, loss


def main(argv=None):
    args = parse_args(argv)
    import keras

    from lstm_keras import LSTM
    from lstm_keras import diagnostics
    from lstm_keras.plots import plot_gradient_flow

    train, test, build, loss = _task(args)
    chrono_kwargs = {}
    if args.chrono:
        from lstm_keras.long_range import ChronoBias

        timescale = max(train[0].shape[1], 3)
        chrono_kwargs = dict(
            bias_initializer=ChronoBias(timescale, seed=args.seed),
            unit_forget_bias=False,
        )
    sequences = args.task == "copy"
    candidates = {
        "LSTM": lambda: LSTM(
            args.units,
            return_sequences=sequences,
            name="lstm",
            **chrono_kwargs,
        ),
        "SimpleRNN": lambda: keras.layers.SimpleRNN(
            args.units, return_sequences=sequences, name="rnn"
        ),
    }
    flows, summaries = {}, {}
    for label, make in candidates.items():
        keras.utils.set_random_seed(args.seed)
        model = build(make())
        model.compile(
            optimizer=keras.optimizers.Adam(1e-2, clipnorm=1.0), loss=loss
        )
        start = time.perf_counter()
        if args.epochs > 0:
            print(f"== training {label} ({args.epochs} epochs)")
            model.fit(
                *train, batch_size=32, epochs=args.epochs, verbose=args.verbose
            )
        seconds = time.perf_counter() - start
        print(f"== measuring {label}'s gradient flow on {args.batch} sequences")
        flows[label] = diagnostics.gradient_flow(model, *test)
        summaries[label] = dict(
            diagnostics.summarize(flows[label]), train_seconds=seconds
        )

    os.makedirs(args.out, exist_ok=True)
    with open(
        os.path.join(args.out, "gradient_flow.csv"), "w", newline=""
    ) as f:
        writer = csv.DictWriter(
            f, fieldnames=["model", "t", "distance", "quantity", "gate", "norm"]
        )
        writer.writeheader()
        for label, flow in flows.items():
            writer.writerows(flow.rows(label))
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"config": vars(args), "summary": summaries}, f, indent=2)
    plot_gradient_flow(
        flows,
        os.path.join(args.out, "gradient_flow.png"),
        title=(
            f"{args.task} task, T = {args.length}, {args.epochs} epochs"
            + (", LSTM chrono-initialized" if args.chrono else "")
        ),
    )

    print(f"\nGradient flow, {args.task} task, length {args.length}")
    for label, s in summaries.items():
        line = (
            f"{label:<10} loss {s['loss']:.4f}  ||dL/dh|| near {s['h_norm_near']:.2e}"
            f" far {s['h_norm_far']:.2e} (far/near {s['h_far_over_near']:.1e})"
        )
        if "c_norm_near" in s:
            line += (
                f"\n{'':<10} ||dL/dc|| near {s['c_norm_near']:.2e} far "
                f"{s['c_norm_far']:.2e} (far/near {s['c_far_over_near']:.1e}); "
                f"along the cell state: {100 * s['carry_share']:.0f}% (median)"
            )
            shares = ", ".join(
                f"{g} {100 * v:.0f}%" for g, v in s["gate_share"].items()
            )
            line += f"\n{'':<10} pre-activation gradient by gate: {shares}"
        print(line)
    print(
        f"\nwrote {args.out}/gradient_flow.png, gradient_flow.csv, summary.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
