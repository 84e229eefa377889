"""What a training run writes besides the model: numbers and plots."""

import json
import os
import tempfile

import numpy as np

from lstm_keras.plots import _pyplot


def confusion_matrix(labels, predictions, num_classes):
    """`<int64>[true, predicted]` counts of `labels` vs `predictions`."""
    labels = np.asarray(labels, np.int64)
    predictions = np.asarray(predictions, np.int64)
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def write_json(data, path):
    """Writes `data` as JSON atomically (a temp file, then a rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def plot_learning_curves(history, path, title):
    """Train vs validation loss and accuracy per epoch.

    Args:
        history: List of per-epoch dicts with `loss`, `accuracy`,
            `val_loss`, `val_accuracy`.
        path: Where to write the PNG.
        title: The figure's title.
    """
    plt = _pyplot()
    epochs = [record["epoch"] + 1 for record in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [r[metric] for r in history], marker="o", label="train")
        ax.plot(
            epochs,
            [r[f"val_{metric}"] for r in history],
            marker="o",
            label="validation",
        )
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(metric)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confusion_matrix(matrix, class_names, path, title):
    """The test set's confusion matrix, counts written in the cells."""
    plt = _pyplot()
    size = max(4.0, 0.5 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=120)
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            color="white" if count > threshold else "black",
            fontsize=8,
        )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
