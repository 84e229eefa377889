"""lstm_keras: an LSTM layer for Keras 3, built from its four gates.

`lstm_keras.LSTM` is a drop-in replacement for `keras.layers.LSTM` whose
equations live in `lstm_keras.LSTMCell`, with four named gate weight sets and
a backpropagation verified by `lstm_keras.gradcheck`.

The applications (`lstm_keras.applications`, `lstm_keras.datasets`) need
TensorFlow and are imported on their own, so the layer stays usable on JAX and
torch without it.
"""

from lstm_keras import diagnostics
from lstm_keras import dispatch
from lstm_keras import long_range
from lstm_keras.lstm import LSTM
from lstm_keras.lstm_cell import GATE_ORDER
from lstm_keras.lstm_cell import LSTMCell

__version__ = "0.1.0"

__all__ = [
    "GATE_ORDER",
    "LSTM",
    "LSTMCell",
    "__version__",
    "diagnostics",
    "dispatch",
    "long_range",
]
