"""lstm_keras: an LSTM layer for Keras 3, built from its four gates.

`lstm_keras.LSTM` is a drop-in replacement for `keras.layers.LSTM` whose
equations live in `lstm_keras.LSTMCell`, with four named gate weight sets and
a backpropagation verified by `lstm_keras.gradcheck`.

The applications (`lstm_keras.applications`, `lstm_keras.datasets`) need
TensorFlow: the first is imported here on the TensorFlow backend only, so the
layer stays usable on JAX and torch without it. So does
`lstm_keras.export.export_for_serving`, which writes a TF Serving SavedModel
of an application model.
"""

import keras

from lstm_keras import diagnostics
from lstm_keras import dispatch
from lstm_keras import long_range
from lstm_keras.lstm import LSTM
from lstm_keras.lstm_cell import GATE_ORDER
from lstm_keras.lstm_cell import LSTMCell

__version__ = "0.3.0"

if keras.backend.backend() == "tensorflow":
    # Registers the applications' classes, so that their `.keras` files load
    # after `import lstm_keras` with safe_mode and no custom_objects.
    from lstm_keras import applications  # noqa: F401
    from lstm_keras import export  # noqa: F401

__all__ = [
    "GATE_ORDER",
    "LSTM",
    "LSTMCell",
    "__version__",
    "diagnostics",
    "dispatch",
    "long_range",
]
