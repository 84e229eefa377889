"""`LSTMBackbone`: stacked, optionally bidirectional `lstm_keras.LSTM`s."""

import contextlib

import keras

from lstm_keras.lstm import LSTM

# The global attributes behind `keras.saving`'s object-sharing scope, which
# `load_model` enters while it rebuilds a model.
_SHARING_MAPS = (
    "shared_objects/id_to_obj_map",
    "shared_objects/id_to_config_map",
)


@contextlib.contextmanager
def _without_object_sharing():
    """Suspends `keras.saving`'s object sharing for the enclosed code.

    `keras.layers.Bidirectional` serializes the layer it wraps twice, once
    per direction. Inside `load_model`'s sharing scope the second copy is
    marked as shared under the layer's `id()`, and the backward layer is
    then taken from whatever object was recorded under that id: an object
    since freed at the same address gives the backward layer the forward
    one's `go_backwards`, or another layer's weights. Nothing this layer
    builds is shared, so it builds with the scope's maps set aside.
    """
    from lstm_keras.compat import keras_global_state as state

    saved = {name: state.get_global_attribute(name) for name in _SHARING_MAPS}
    for name in _SHARING_MAPS:
        state.set_global_attribute(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            state.set_global_attribute(name, value)


@keras.saving.register_keras_serializable(package="lstm_keras")
class LSTMBackbone(keras.layers.Layer):
    """Encodes a masked sequence into its last hidden state (many-to-one).

    `num_layers` `lstm_keras.LSTM` layers, each wrapped in
    `keras.layers.Bidirectional` when `bidirectional`; every layer but the
    last returns its whole sequence to the next. Masked (padded) timesteps
    are skipped, so the output is the state after each row's last real step
    (and, bidirectionally, the backward layer's state after its first). A
    fully masked row gives the initial state, zeros.

    Args:
        units: Positive integer, units of each LSTM (per direction).
            Defaults to `128`.
        num_layers: Positive integer, stacked LSTM layers. Defaults to `1`.
        bidirectional: Boolean, run each layer in both directions and
            concatenate. Defaults to `False`.
        dropout: Float in [0, 1), each LSTM's input dropout (one mask per
            sequence). Defaults to `0.0`.
        recurrent_dropout: Float in [0, 1), each LSTM's dropout on `h_prev`.
            Defaults to `0.0`.
        lstm_options: Dict of further `lstm_keras.LSTM` arguments for every
            layer (`use_peepholes`, `unit_forget_bias`, ...), or `None`.
            Defaults to `None`.
        seed: Integer or `None`, seed of the dropout masks (layer `i` uses
            `seed + i`). Defaults to `None`.
        **kwargs: Base layer arguments.

    Call arguments:
        sequences: `(batch, timesteps, features)` float tensor.
        mask: Optional boolean `(batch, timesteps)`, `False` at padding;
            taken from the inputs' Keras mask when `None`.
        training: Python boolean, whether dropout is active.

    Returns:
        `(batch, units)`, or `(batch, 2 * units)` when bidirectional
        (`projection_units` in place of `units` with that variant).

    Example:

    >>> backbone = LSTMBackbone(units=8, num_layers=2, bidirectional=True)
    >>> tuple(backbone(np.zeros((4, 10, 3), "float32")).shape)
    (4, 16)
    """

    # Subclasses that pool over time need the last layer's whole sequence.
    returns_last_sequence = False

    def __init__(
        self,
        units=128,
        num_layers=1,
        bidirectional=False,
        dropout=0.0,
        recurrent_dropout=0.0,
        lstm_options=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError(
                "Received an invalid value for argument `num_layers`, "
                f"expected a positive integer, got {num_layers!r}."
            )
        if lstm_options is not None and not isinstance(lstm_options, dict):
            raise TypeError(
                "Argument `lstm_options` must be a dict of lstm_keras.LSTM "
                f"arguments or None, got {lstm_options!r}."
            )
        self.units = units
        self.num_layers = num_layers
        self.bidirectional = bool(bidirectional)
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
        self.lstm_options = dict(lstm_options or {})
        self.seed = seed
        self.lstm_layers = []
        for index in range(num_layers):
            options = {
                "dropout": dropout,
                "recurrent_dropout": recurrent_dropout,
                "seed": None if seed is None else seed + index,
                **self.lstm_options,
            }
            layer = LSTM(
                units,
                return_sequences=(
                    index < num_layers - 1 or self.returns_last_sequence
                ),
                name=f"lstm_{index}",
                **options,
            )
            if self.bidirectional:
                with _without_object_sharing():
                    layer = keras.layers.Bidirectional(
                        layer, name=f"bidirectional_{index}"
                    )
            self.lstm_layers.append(layer)
        self.supports_masking = True

    def build(self, sequences_shape):
        shape = tuple(sequences_shape)
        for layer in self.lstm_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def run_layers(self, sequences, mask=None, training=False):
        """The stacked (bidirectional) LSTMs' output, before any pooling."""
        x = sequences
        for layer in self.lstm_layers:
            x = layer(x, mask=mask, training=training)
        return x

    def call(self, sequences, mask=None, training=False):
        return self.run_layers(sequences, mask=mask, training=training)

    def compute_mask(self, sequences, mask=None):
        return None

    @property
    def output_width(self):
        """Features of the output: `h_t`'s size, times two if bidirectional."""
        # With a projection (LSTMP), h_t has `projection_units` features.
        per_direction = self.lstm_options.get("projection_units") or self.units
        return per_direction * (2 if self.bidirectional else 1)

    def compute_output_shape(self, sequences_shape):
        return (sequences_shape[0], self.output_width)

    def get_config(self):
        config = {
            "units": self.units,
            "num_layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "lstm_options": dict(self.lstm_options),
            "seed": self.seed,
        }
        return {**super().get_config(), **config}
