"""Command line: the sentiment application on the embedded SST-2, end to end.

Trains `lstm_keras`'s sentiment model on the real SST-2 sample shipped in
data/samples/, evaluates it on SST-2's dev set (872 sentences), exports a
SavedModel and prints its predictions for a few new sentences. This is what
`make demo` runs (a few minutes on two CPU cores).

Examples:
    python -m training.demo
    python -m training.demo --epochs 1 --max-train-examples 5000 --out runs/quick
"""

import os
import sys

from training import arguments

SENTENCES = (
    "a gripping , beautifully acted film .",
    "a dull , lifeless mess that overstays its welcome .",
    "the plot is thin , but the performances are wonderful .",
    "i wanted to love it , but it never comes alive .",
    "not bad at all .",
)
# SST-2 dev: 444 of 872 positive; always answering "positive" scores this.
MAJORITY_ACCURACY = 444 / 872


def parse_args(argv=None):
    parser = arguments.ArgumentParser(
        prog="python -m training.demo",
        description=(
            "Train the sentiment application on the embedded SST-2 sample, "
            "evaluate, export a SavedModel and print predictions."
        ),
        epilog=(
            "examples:\n"
            "  python -m training.demo\n"
            "  python -m training.demo --epochs 1 --max-train-examples 5000 "
            "--out runs/quick"
        ),
    )
    parser.add_argument(
        "--out",
        default="runs/sentiment_demo",
        help="run folder (default runs/sentiment_demo)",
    )
    parser.add_argument(
        "--epochs",
        type=arguments.positive_int,
        default=3,
        help="training epochs (default 3)",
    )
    parser.add_argument(
        "--max-train-examples",
        type=arguments.non_negative_int,
        default=0,
        help="train on a random subset of this size (default 0: all 60,614)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the run (default 0)"
    )
    parser.add_argument(
        "--verbose",
        type=int,
        default=1,
        choices=(0, 1, 2),
        help="Keras progress: 1 a bar (default), 2 a line per epoch",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    from lstm_keras.applications.runner import TrainConfig
    from lstm_keras.applications.runner import train_and_evaluate

    config = TrainConfig(
        app="sentiment",
        data="sample",
        epochs=args.epochs,
        batch_size=64,
        seed=args.seed,
        max_train_examples=args.max_train_examples or None,
        # Sized for a few minutes on two CPU cores.
        model_options={"units": 32, "embedding_dim": 64, "max_length": 40},
        verbose=args.verbose,
    )
    metrics = train_and_evaluate(config, args.out)

    served = tf.saved_model.load(os.path.join(args.out, "serving", "1"))
    probabilities = served.serve(tf.constant(SENTENCES)).numpy()
    n = metrics["num_examples"]
    print(
        f"\nSST-2 sentiment, {n['train']} training sentences, "
        f"{args.epochs} epochs, seed {args.seed}"
    )
    print(
        f"test accuracy {metrics['test_accuracy']:.4f} on {n['test']} dev "
        f"sentences (majority class {MAJORITY_ACCURACY:.4f}); test loss "
        f"{metrics['test_loss']:.4f}; trained {metrics['training_seconds']:.0f} s"
    )
    print("\npredictions of the exported SavedModel (serving/1):")
    for sentence, p in zip(SENTENCES, probabilities, strict=True):
        label = metrics["class_names"][int(p.argmax())]
        print(f"  {label:<8} {p.max():.2f}  {sentence}")
    print(f"\nwrote {args.out}/ (metrics.json, learning_curves.png, ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
