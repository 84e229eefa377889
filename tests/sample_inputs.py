"""Inputs shared by the tests: a sample rate, sentences, and tones.

Importable from the tests as `import sample_inputs` (pytest puts `tests/`
on the path).
"""

import numpy as np

RATE = 8000
TEXTS = [
    "a gem of a film",
    "a dull , tired mess",
    "great acting and a great story",
    "awful",
    "not good",
    "surprisingly good",
]


def tones(lengths, samples=None, seed=0):
    """Noisy tones of `lengths` samples at `RATE`, zero-padded at the end
    to `samples` (default: the longest)."""
    rng = np.random.default_rng(seed)
    batch = np.zeros((len(lengths), samples or max(lengths)), "float32")
    for row, length in enumerate(lengths):
        t = np.arange(length) / RATE
        frequency = rng.uniform(200, 3000)
        batch[row, :length] = 0.5 * np.sin(2 * np.pi * frequency * t)
        batch[row, :length] += rng.normal(scale=0.01, size=length)
    return batch


def fused_speech_lstms(model):
    """Fused LSTM ops a `SpeechClassifier`'s LiteRT file holds: one per
    direction of each of its LSTM layers."""
    config = model.get_config()
    return config["num_layers"] * (2 if config["bidirectional"] else 1)
