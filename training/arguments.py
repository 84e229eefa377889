"""Command-line arguments the commands share, and their parser.

`ArgumentParser` prints a usage error as one line and exits 2;
`positive_int` and `non_negative_int` reject bad numbers while parsing.

`adding_demo`, `gradflow` and `long_range_table` train the same models on the
same synthetic tasks; their budgets differ, so each passes its defaults.
`lstm-keras-train` and `lstm-keras-tune` read the applications' data the same
way (`add_data_arguments`).
"""

import argparse
import sys


class ArgumentParser(argparse.ArgumentParser):
    """The commands' parser: `--help` keeps the epilog's layout (examples),
    and a usage error is one line on stderr, exit status 2.

    A line such as `lstm-keras-gradflow: error: argument --length: expected
    a positive integer, got -5`, without argparse's usage block, reads the
    same as the errors the commands print after parsing.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault(
            "formatter_class", argparse.RawDescriptionHelpFormatter
        )
        super().__init__(**kwargs)

    def error(self, message):
        message = " ".join(message.split())
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _int_at_least(text, low, kind):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {kind}, got {text!r}"
        ) from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {kind}, got {value}")
    return value


def positive_int(text):
    """An `argparse` type: an integer of at least 1."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text):
    """An `argparse` type: an integer of at least 0."""
    return _int_at_least(text, 0, "a non-negative integer")


def _default_text(default, per_length):
    return "per length, see below" if per_length else str(default)


def add_budget_arguments(parser, *, samples, epochs, per_length=False):
    """Adds `--units`, `--samples`, `--epochs` and `--seed`.

    Args:
        parser: The `argparse.ArgumentParser` to extend.
        samples: Default number of training sequences.
        epochs: Default number of training epochs.
        per_length: Whether the defaults depend on the sequence length (the
            command then documents them in its epilog). Defaults to `False`.
    """
    parser.add_argument(
        "--units",
        type=positive_int,
        default=64,
        help="recurrent width (default 64)",
    )
    parser.add_argument(
        "--samples",
        type=positive_int,
        default=samples,
        help=f"training sequences (default {_default_text(samples, per_length)})",
    )
    parser.add_argument(
        "--epochs",
        type=non_negative_int,
        default=epochs,
        help=f"training epochs (default {_default_text(epochs, per_length)})",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="data and weights (default 0)"
    )


def add_learning_rate_argument(parser, default=1e-2):
    """Adds `--learning-rate`, Adam's rate."""
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=default,
        help=f"Adam learning rate (default {default:g})",
    )


def add_chrono_argument(parser):
    """Adds `--chrono/--no-chrono`, on by default."""
    parser.add_argument(
        "--chrono",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="chrono-initialize the LSTM's gate biases (Tallec & Ollivier, "
        "2018) for timescales up to the sequence length (default: on; "
        "--no-chrono for Keras's forget bias of 1)",
    )


def add_verbose_argument(parser, default=2):
    """Adds `--verbose`, Keras's progress output."""
    parser.add_argument(
        "--verbose",
        type=int,
        default=default,
        choices=(0, 1, 2),
        help=f"Keras progress output (default {default}: "
        + ("a line per epoch)" if default == 2 else "a bar)"),
    )


def add_data_arguments(parser):
    """Adds how an application's data is split and read.

    `--validation-fraction`, `--max-train-examples`, `--tfds-data-dir` and
    `--holdout-speaker` and `--validation-speaker`, as
    `lstm_keras.datasets.load_dataset` takes them.
    """
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="share of the training data held out for validation (SST-2: "
        "of its sentences; FSDD: of the recording indices) (default 0.1)",
    )
    parser.add_argument(
        "--max-train-examples",
        type=int,
        default=None,
        help="train on a random subset of this size (default: all)",
    )
    parser.add_argument(
        "--tfds-data-dir",
        default=None,
        help="TFDS data directory (default: TFDS's, ~/tensorflow_datasets)",
    )
    parser.add_argument(
        "--holdout-speaker",
        default=None,
        help="FSDD: this speaker's clips are the test set",
    )
    parser.add_argument(
        "--validation-speaker",
        default=None,
        help="FSDD: validate on this speaker's clips (not trained on) "
        "instead of held-out recording indices",
    )
