"""Command line: export a `.keras` model for TensorFlow Serving or LiteRT.

`--format saved_model` (the default) writes `MODEL_BASE_PATH/<version>/`
(`saved_model.pb`, `variables/`, `assets/`, `fingerprint.pb`) with the
`serving_default` signature of `lstm_keras.export`, then prints the path
and the signatures. `--format litert` writes one `.tflite` file for the
LiteRT interpreter (`lstm_keras.export.export_litert`), optionally
quantized.

Examples:
    lstm-keras-export runs/sst2/model.keras --model-base-path models/sentiment
    lstm-keras-export runs/fsdd/model.keras --model-base-path models/digits --version 2
    lstm-keras-export runs/fsdd/model.keras --format litert --out digits.tflite \
        --quantize int8 --representative-data ../shared/data/fsdd/recordings
"""

import sys

from training import arguments

EXAMPLES = """\
examples:
  lstm-keras-export runs/sst2/model.keras --model-base-path models/sentiment
  lstm-keras-export runs/fsdd/model.keras --model-base-path models/digits --version 2
  python -m training.export model.keras --model-base-path models/m --overwrite
  lstm-keras-export runs/fsdd/model.keras --format litert --out digits.tflite
  lstm-keras-export runs/fsdd/model.keras --format litert --out digits-int8.tflite \
    --quantize int8 --representative-data ../shared/data/fsdd/recordings

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

LiteRT (--format litert): one .tflite file at --out, batch size fixed
(--batch-size, default 1), LSTMs as TFLite's fused LSTM kernel, builtin ops
only; a speech model takes the raw waveform (float32 [batch, samples]) and
returns `probabilities`; a sentiment model takes token ids and subword
n-gram ids (LiteRT has no string ops; lstm_keras.export.sentiment_inputs
makes them) with its vocabulary in OUT.vocab.txt; class names go to
OUT.labels.txt. --quantize
dynamic stores int8 weights; --quantize int8 also runs the LSTMs on int8
activations; --quantize full_int8 runs every op in integers, int8 in and
out (a speech model's file then takes log-mel features, computed by the
float front-end file OUT.frontend.tflite). Both calibrate on the training
split of --representative-data (a dataset source as lstm-keras-train's
--data takes: a folder, "sample", a TFDS name; or a .npy file of
examples). See docs/deployment.md.

Exit status: 0 on success; 2 on a user error (a missing or unreadable model
file, an existing version or file without --overwrite, a bad option),
printed as one line.
"""


def parse_args(argv=None):
    parser = arguments.ArgumentParser(
        prog="lstm-keras-export",
        description=(
            "Export a .keras model (loaded with safe_mode) as a SavedModel "
            "version for TensorFlow Serving: only standard TensorFlow ops, "
            "with warm-up requests, written atomically."
        ),
        epilog=EXAMPLES,
    )
    parser.add_argument("model", metavar="MODEL.keras", help="the model file")
    parser.add_argument(
        "--format",
        choices=("saved_model", "litert"),
        default="saved_model",
        help="a TF Serving SavedModel version, or a LiteRT file (default "
        "saved_model)",
    )
    parser.add_argument(
        "--model-base-path",
        metavar="PATH",
        help="saved_model: the model's folder; the version is written in "
        "PATH/VERSION/ (required)",
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="litert: the .tflite file to write (required)",
    )
    parser.add_argument(
        "--quantize",
        choices=("none", "dynamic", "int8", "full_int8"),
        default="none",
        help="litert: none (float32), dynamic (int8 weights), int8 (the "
        "LSTMs' weights and activations) or full_int8 (every op, int8 in "
        "and out); int8 and full_int8 need --representative-data (default "
        "none)",
    )
    parser.add_argument(
        "--representative-data",
        metavar="SOURCE",
        help="litert, int8 and full_int8: the data whose training split "
        "calibrates the "
        "activations (a folder, 'sample', a TFDS name, or a .npy file of "
        "examples)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="litert: the batch size the file runs at (default 1)",
    )
    parser.add_argument(
        "--require-fused",
        action="store_true",
        help="litert: refuse a model whose LSTMs cannot all run as the fused "
        "kernel, naming them and why (default: run those as builtin loops)",
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


def check_args(args):
    """The first user error among the flags, as a message, or `None`."""
    if args.format == "saved_model":
        if args.model_base_path is None:
            return "--model-base-path is required with --format saved_model"
        if args.version < 1:
            return f"--version must be a positive integer, got {args.version}"
        return None
    if args.out is None:
        return "--out is required with --format litert"
    if args.batch_size < 1:
        return f"--batch-size must be a positive integer, got {args.batch_size}"
    if (
        args.quantize in ("int8", "full_int8")
        and args.representative_data is None
    ):
        return f"--quantize {args.quantize} needs --representative-data SOURCE"
    return None


def main(argv=None):
    args = parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from lstm_keras import export

    try:
        print(f"loading {args.model} ...", file=sys.stderr, flush=True)
        model = export.load_model_file(args.model)
        print("exporting ...", file=sys.stderr, flush=True)
        if args.format == "saved_model":
            export.export_for_serving(
                model,
                args.model_base_path,
                version=args.version,
                overwrite=args.overwrite,
                verbose=True,
            )
        else:
            examples = None
            if args.representative_data is not None:
                examples = export.representative_examples(
                    args.representative_data, model
                )
            export.export_litert(
                model,
                args.out,
                quantize=args.quantize,
                representative_data=examples,
                batch_size=args.batch_size,
                overwrite=args.overwrite,
                require_fused=args.require_fused,
                verbose=True,
            )
    except (ValueError, FileExistsError) as error:
        # One line, whatever the loader's message spans.
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
