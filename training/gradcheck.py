"""Command line: check lstm_keras.LSTM's gradients three independent ways.

Runs `lstm_keras.gradcheck.check_gradients` for the named
`lstm_keras.gradcheck.CONFIGURATIONS` (all by default) in float64 and
float32 and prints one table per run; the exit status is 0 when every check
passed and 1 otherwise.

Examples:
    lstm-keras-gradcheck
    KERAS_BACKEND=jax python -m training.gradcheck --config dropout
    python -m training.gradcheck --dtype float64 --sizes 4 20 8 16 --fd-entries 25
"""

import sys

from training import arguments

EXAMPLES = """\
examples:
  lstm-keras-gradcheck
      every configuration, float64 and float32, on $KERAS_BACKEND
  KERAS_BACKEND=jax python -m training.gradcheck --config dropout
  python -m training.gradcheck --dtype float64 \\
      --sizes 4 20 8 16 --fd-entries 25

The Keras backend is chosen by the KERAS_BACKEND environment variable.
Exit status: 0 if every check passed, 1 otherwise, 2 on a bad argument.
"""


def parse_args(argv=None):
    from lstm_keras.gradcheck import CONFIGURATIONS

    parser = arguments.ArgumentParser(
        prog="lstm-keras-gradcheck",
        description=(
            "Check lstm_keras.LSTM's gradients: autodiff on the active Keras "
            "backend vs a hand-derived NumPy BPTT and vs finite differences."
        ),
        epilog=EXAMPLES,
    )
    parser.add_argument(
        "--config",
        action="append",
        choices=sorted(CONFIGURATIONS),
        help="configuration to check (repeatable; default: all)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32", "both"),
        default="both",
        help="layer dtype (default: both)",
    )
    parser.add_argument(
        "--sizes",
        nargs=4,
        type=arguments.positive_int,
        metavar=("B", "T", "D", "H"),
        default=(2, 5, 3, 4),
        help="batch, timesteps, input_dim, units (default: 2 5 3 4)",
    )
    parser.add_argument(
        "--fd-entries",
        type=arguments.positive_int,
        default=None,
        help="finite-difference at most N random entries per tensor "
        "(default: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="default: 0")
    return parser.parse_args(argv)


def main(argv=None):
    """Prints gradient-check tables; returns 1 if any check failed."""
    args = parse_args(argv)
    import keras

    from lstm_keras.gradcheck import CONFIGURATIONS
    from lstm_keras.gradcheck import check_gradients

    names = args.config or list(CONFIGURATIONS)
    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    B, T, D, H = args.sizes
    print(f"Keras {keras.__version__}, backend: {keras.backend.backend()}")
    failed = []
    for dtype in dtypes:
        for name in names:
            result = check_gradients(
                batch_size=B,
                timesteps=T,
                input_dim=D,
                units=H,
                dtype=dtype,
                fd_entries=args.fd_entries,
                seed=args.seed,
                **CONFIGURATIONS[name],
            )
            print(f"\n== {name} ({dtype})")
            print(result)
            if not result.passed:
                failed.append(f"{name} ({dtype})")
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
        return 1
    print(f"\nall {len(names) * len(dtypes)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
