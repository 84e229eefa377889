"""Command line: compile lstm_keras's TensorFlow CPU ops ahead of time.

Builds the C++ ops of the LSTM fast path
(`lstm_keras.backends.tensorflow.build.build`) into the cache directory
(`LSTM_KERAS_CACHE_DIR`) and prints the library's path, so that the first
training run does not pay for the compilation. Exit status 1 when the
build fails, with the compiler's error.

Examples:
    python -m training.build_ops
    LSTM_KERAS_CACHE_DIR=/tmp/lk python -m training.build_ops --force
"""

import sys

from training import arguments


def parse_args(argv=None):
    parser = arguments.ArgumentParser(
        prog="python -m training.build_ops",
        description=(
            "Compile lstm_keras's TensorFlow CPU ops (the LSTM fast path) "
            "into the cache directory, so that the first training run does "
            "not pay for it."
        ),
        epilog=(
            "examples:\n"
            "  python -m training.build_ops\n"
            "  LSTM_KERAS_CACHE_DIR=/tmp/lk python -m training.build_ops "
            "--force"
        ),
    )
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if cached"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from lstm_keras.backends.tensorflow import build

    print(f"building {build.SOURCE} ...", file=sys.stderr, flush=True)
    try:
        path = build.build(force=args.force)
    except build.BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
