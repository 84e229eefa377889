"""Command line: export a `.keras` model for TensorFlow Serving.

Writes `MODEL_BASE_PATH/<version>/` (`saved_model.pb`, `variables/`,
`assets/`, `fingerprint.pb`) with the `serving_default` signature of
`lstm_keras.export`, then prints the path and the signatures.

Examples:
    lstm-keras-export runs/sst2/model.keras --model-base-path models/sentiment
    lstm-keras-export runs/fsdd/model.keras --model-base-path models/digits --version 2
    python -m training.export model.keras --model-base-path models/m --overwrite
"""

import argparse
import os
import sys

EXAMPLES = """\
examples:
  lstm-keras-export runs/sst2/model.keras --model-base-path models/sentiment
  lstm-keras-export runs/fsdd/model.keras --model-base-path models/digits --version 2
  python -m training.export model.keras --model-base-path models/m --overwrite

Then serve it (TF Serving watches MODEL_BASE_PATH and loads the highest
version):
  docker run -p 8501:8501 \\
    --mount type=bind,source=$PWD/models/sentiment,target=/models/sentiment \\
    -e MODEL_NAME=sentiment -t tensorflow/serving
  curl -d '{"instances": ["a gripping film"]}' \\
    http://localhost:8501/v1/models/sentiment:predict

Signature serving_default: input `text` (string [batch]) for sentiment, or
`waveform` (float32 [batch, samples], mono, at the model's sample rate,
zero-padded at the end) for speech; outputs `probabilities` (float32
[batch, classes]), `class_id` (int64 [batch]) and `class_name` (string
[batch]). Signature metadata: `class_names` and `sample_rate`. Any other
model keeps its own input and output names. See docs/serving.md.

Exit status: 0 on success; 2 on a user error (a missing or unreadable model
file, an existing version without --overwrite), printed as one line.
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="lstm-keras-export",
        description=(
            "Export a .keras model (loaded with safe_mode) as a SavedModel "
            "version for TensorFlow Serving: only standard TensorFlow ops, "
            "with warm-up requests, written atomically."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL.keras", help="the model file")
    parser.add_argument(
        "--model-base-path",
        required=True,
        metavar="PATH",
        help="the model's folder; the version is written in PATH/VERSION/",
    )
    parser.add_argument(
        "--version",
        type=int,
        default=1,
        help="version number, a positive integer (default 1)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing version (default: refuse)",
    )
    return parser.parse_args(argv)


def load(path):
    """The Keras model in `path`, with errors that name the file."""
    import keras

    import lstm_keras  # noqa: F401  (registers the serializable classes)

    if not os.path.isfile(path):
        raise ValueError(f"Model file {path!r} does not exist.")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as error:
        raise ValueError(
            f"Could not load model file {path!r} as a .keras model: "
            f"{type(error).__name__}: {error}"
        ) from error


def main(argv=None):
    args = parse_args(argv)
    if args.version < 1:
        print(
            f"error: --version must be a positive integer, got {args.version}",
            file=sys.stderr,
        )
        return 2
    from lstm_keras import export

    try:
        print(f"loading {args.model} ...", file=sys.stderr, flush=True)
        model = load(args.model)
        print("exporting ...", file=sys.stderr, flush=True)
        export.export_for_serving(
            model,
            args.model_base_path,
            version=args.version,
            overwrite=args.overwrite,
            verbose=True,
        )
    except (ValueError, FileExistsError) as error:
        # One line, whatever the loader's message spans.
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
