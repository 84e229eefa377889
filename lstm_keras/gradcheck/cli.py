"""The command line: `python -m lstm_keras.gradcheck`.

`main` runs `check_gradients` for the named `CONFIGURATIONS` (all by default)
in float64 and float32 and prints one table per run; its exit status is 0
when every check passed and 1 otherwise. The `lstm-keras-gradcheck` console
script and `python -m lstm_keras.gradcheck` both call it.
"""

import argparse

import keras

from lstm_keras.gradcheck.check import check_gradients

CONFIGURATIONS = {
    "plain": {},
    "right-mask": {"mask": "right"},
    "left-mask": {"mask": "left"},
    "backwards-state": {"go_backwards": True, "mask": "right"},
    "last-output": {"return_sequences": False, "mask": "right"},
    "zero-output": {"mask": "random", "zero_output_for_mask": True},
    "dropout": {"dropout": 0.3, "recurrent_dropout": 0.25},
    "peepholes": {"use_peepholes": True, "mask": "right"},
    "layer-norm": {"layer_norm": True, "mask": "left"},
    "projection": {"projection_units": 3, "go_backwards": True},
    "all-variants": {
        "use_peepholes": True,
        "layer_norm": True,
        "projection_units": 2,
        "mask": "random",
        "dropout": 0.3,
        "recurrent_dropout": 0.25,
    },
}
"""The configurations `main()` checks, by name (each with the defaults of
`check_gradients` otherwise: return_state and random initial states)."""

_EPILOG = """\
examples:
  python -m lstm_keras.gradcheck
      every configuration, float64 and float32, on $KERAS_BACKEND
  KERAS_BACKEND=jax python -m lstm_keras.gradcheck --config dropout
  python -m lstm_keras.gradcheck --dtype float64 \\
      --sizes 4 20 8 16 --fd-entries 25

The Keras backend is chosen by the KERAS_BACKEND environment variable.
Exit status: 0 if every check passed, 1 otherwise.
"""


def main(argv=None):
    """Prints gradient-check tables; returns 1 if any check failed.

    Args:
        argv: Optional list of command-line arguments. Defaults to `None`
            (`sys.argv[1:]`).

    Returns:
        The exit status, `0` or `1`.

    Example:

    >>> main(["--config", "plain", "--dtype", "float64"])  # doctest: +SKIP
    0
    """
    parser = argparse.ArgumentParser(
        prog="python -m lstm_keras.gradcheck",
        description=(
            "Check lstm_keras.LSTM's gradients: autodiff on the active Keras "
            "backend vs a hand-derived NumPy BPTT and vs finite differences."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        type=int,
        metavar=("B", "T", "D", "H"),
        default=(2, 5, 3, 4),
        help="batch, timesteps, input_dim, units (default: 2 5 3 4)",
    )
    parser.add_argument(
        "--fd-entries",
        type=int,
        default=None,
        help="finite-difference at most N random entries per tensor "
        "(default: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="default: 0")
    args = parser.parse_args(argv)

    names = args.config or list(CONFIGURATIONS)
    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    B, T, D, H = args.sizes
    print(f"Keras {keras.__version__}, backend: {keras.backend.backend()}")
    failed = []
    for dtype in dtypes:
        for name in names:
            try:
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
            except ValueError as error:
                parser.error(str(error))
            print(f"\n== {name} ({dtype})")
            print(result)
            if not result.passed:
                failed.append(f"{name} ({dtype})")
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
        return 1
    print(f"\nall {len(names) * len(dtypes)} checks passed")
    return 0
