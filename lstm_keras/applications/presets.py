"""The training recipe of each application, in one place.

`lstm-keras-train`, `make eval` (`training/evaluate.py`) and the tuning
trials all train through `lstm_keras.applications.runner` with these
settings; `lstm-keras-train APP --print-config` shows them resolved. The
values were chosen on the validation splits of `lstm_keras.datasets` (SST-2:
whole held-out sentences; FSDD: held-out recording indices), never on test;
`docs/training.md` gives the runs behind them.
"""

import dataclasses
import math

import numpy as np

SCHEDULES = ("cosine", "constant")
MONITORS = ("val_accuracy", "val_loss")


@dataclasses.dataclass(frozen=True)
class Preset:
    """How an application trains by default.

    Attributes:
        epochs: Most training epochs, unless that is fewer than `min_steps`
            steps (small datasets): then as many as make `min_steps`.
        batch_size: Examples per step.
        learning_rate: Adam's (initial) learning rate.
        schedule: `"cosine"`, annealed over the whole run down to 5% of the
            rate, or `"constant"`.
        ema_fraction: Weight averaging: the time constant of an exponential
            moving average of the weights as a fraction of the run's steps
            (validation, the best epoch and the final model are the
            average's), or `None` for none.
        monitor: The validation metric that picks the best epoch (and stops
            early): `"val_accuracy"` or `"val_loss"`.
        patience: Stop after this many epochs without a better `monitor`;
            `None` to run every epoch.
        length_percentile: Text only: without an explicit `max_length`, the
            model keeps this percentile of the training texts' token counts
            (rounded up to a multiple of 8) ...
        max_length_cap: ... but at most this many tokens.
        min_steps: See `epochs`; `None` for no minimum.
    """

    epochs: int
    batch_size: int
    learning_rate: float
    schedule: str
    ema_fraction: float | None
    monitor: str
    patience: int | None
    length_percentile: float | None = None
    max_length_cap: int | None = None
    min_steps: int | None = None


PRESETS = {
    "sentiment": Preset(
        epochs=1,
        batch_size=64,
        learning_rate=3e-3,
        schedule="cosine",
        ema_fraction=0.25,
        monitor="val_accuracy",
        patience=None,
        length_percentile=99.9,
        max_length_cap=512,
        # SST-2 makes 930 steps an epoch; 2,000 movie reviews make 32, too
        # few to learn from in one or two epochs.
        min_steps=256,
    ),
    "speech": Preset(
        epochs=40,
        batch_size=32,
        learning_rate=2e-3,
        schedule="constant",
        ema_fraction=None,
        monitor="val_accuracy",
        patience=8,
    ),
}


def epochs_for(preset, steps_per_epoch):
    """The preset's epochs for an epoch of `steps_per_epoch` steps.

    Example:

    >>> epochs_for(PRESETS["sentiment"], steps_per_epoch=930)
    1
    >>> epochs_for(PRESETS["sentiment"], steps_per_epoch=32)
    8
    """
    if preset.min_steps is None:
        return preset.epochs
    return max(preset.epochs, math.ceil(preset.min_steps / steps_per_epoch))


def ema_momentum(ema_fraction, total_steps):
    """The EMA momentum whose time constant is `ema_fraction` of the run.

    `1 - 1 / (ema_fraction * total_steps)`, or `None` without averaging.
    """
    if ema_fraction is None:
        return None
    return 1.0 - 1.0 / max(ema_fraction * total_steps, 1.0)


def max_length_for(token_counts, percentile, cap):
    """Tokens to keep per text, from the training texts' token counts.

    Args:
        token_counts: Sequence of non-negative integers, one per text.
        percentile: Percentile in (0, 100] of the counts to keep.
        cap: Upper bound.

    Returns:
        The percentile rounded up to a multiple of 8 (at least 8), at most
        `cap`.

    Example:

    >>> max_length_for([3, 5, 9, 30], percentile=100, cap=512)
    32
    """
    counts = np.asarray(token_counts)
    if counts.size == 0:
        raise ValueError("Cannot choose max_length from no training texts.")
    length = float(np.percentile(counts, percentile))
    return int(min(cap, max(8, 8 * math.ceil(length / 8))))
