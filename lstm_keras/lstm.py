"""The LSTM layer: `LSTMCell` run over a sequence, a drop-in for Keras's LSTM."""

import keras
from keras import regularizers
from keras import tree

from lstm_keras import dispatch
from lstm_keras.lstm_cell import LSTMCell

# Cell arguments the layer exposes read-only (as `keras.layers.LSTM` does)
# and flattens into its config.
_CELL_ATTRIBUTES = (
    "units",
    "activation",
    "recurrent_activation",
    "use_bias",
    "unit_forget_bias",
    "kernel_initializer",
    "recurrent_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
    "dropout",
    "recurrent_dropout",
    "use_peepholes",
    "layer_norm",
    "projection_units",
)


@keras.saving.register_keras_serializable(package="lstm_keras")
class LSTM(keras.layers.RNN):
    """Long short-term memory layer (Hochreiter, 1997), built from its gates.

    A drop-in replacement for `keras.layers.LSTM`: the same constructor
    arguments with the same defaults, the same call arguments, and the same
    weights (`kernel` [input_dim, 4 * units], `recurrent_kernel`
    [units, 4 * units], `bias` [4 * units], gates in the order input, forget,
    candidate, output), so `set_weights(keras_lstm.get_weights())` reproduces
    a Keras LSTM's outputs. The equations live in `lstm_keras.LSTMCell`, whose
    four gate weight sets `gate_weights()` returns by name; the loop over time
    is chosen in `lstm_keras.dispatch` (a backend fast path when one applies,
    else the generic `keras.ops` path), so the layer runs on the TensorFlow,
    JAX and torch backends.

    Differences from `keras.layers.LSTM`, each deliberate: `units`,
    `dropout` and `recurrent_dropout` outside their ranges raise a
    `ValueError` instead of being clipped; masked (padded) timesteps may hold
    any value, NaN included, without affecting outputs or gradients; and the
    recurrent dropout mask is shared by the four gates, like the input
    dropout mask (Keras draws four recurrent masks).

    Three LSTM variants that `keras.layers.LSTM` lacks are options, off by
    default and composable: `use_peepholes` (Gers & Schmidhuber, 2000, as in
    TensorFlow's `BlockLSTM` op), `layer_norm` (Ba et al., 2016) and
    `projection_units` (LSTMP, Sak et al., 2014, as `torch.nn.LSTM`'s
    `proj_size`); `lstm_keras.LSTMCell` gives their equations, weights and
    initial values. With `D` input features, `H = units` and
    `R = projection_units or units`, the layer has
    `4*H*(D + R) + 4*H*use_bias + 3*H*use_peepholes + 6*H*layer_norm
    + H*R*(projection_units is not None)` parameters; the outputs and `h`
    have `R` features, `c` has `H`. Only the variant-free layer shares
    weights with `keras.layers.LSTM`; backend fast paths decline variants,
    which run on the generic path on every backend.

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation of the candidate and of the cell state before
            the output gate. Defaults to `"tanh"`; `None` means linear.
        recurrent_activation: Activation of the input, forget and output
            gates. Defaults to `"sigmoid"`; `None` means linear.
        use_bias: Boolean, whether the gates have biases. Defaults to `True`.
        kernel_initializer: Initializer for `kernel`. Defaults to
            `"glorot_uniform"`.
        recurrent_initializer: Initializer for `recurrent_kernel`. Defaults to
            `"orthogonal"`.
        bias_initializer: Initializer for `bias`. Defaults to `"zeros"`.
        unit_forget_bias: Boolean, add 1 to the forget gate's bias at
            initialization (Jozefowicz et al., 2015). Defaults to `True`.
        kernel_regularizer: Regularizer for `kernel`. Defaults to `None`.
        recurrent_regularizer: Regularizer for `recurrent_kernel`. Defaults to
            `None`.
        bias_regularizer: Regularizer for `bias`. Defaults to `None`.
        activity_regularizer: Regularizer for the layer's output. Defaults to
            `None`.
        kernel_constraint: Constraint for `kernel`. Defaults to `None`.
        recurrent_constraint: Constraint for `recurrent_kernel`. Defaults to
            `None`.
        bias_constraint: Constraint for `bias`. Defaults to `None`.
        dropout: Float in [0, 1), fraction of the input units dropped (one
            mask per sequence). Defaults to `0.0`.
        recurrent_dropout: Float in [0, 1), fraction of `h_prev` units
            dropped (one mask per sequence). Defaults to `0.0`.
        seed: Integer, random seed for the dropout masks. Defaults to `None`.
        return_sequences: Boolean, return the whole output sequence instead
            of the last output. Defaults to `False`.
        return_state: Boolean, also return the final `h` and `c`. Defaults to
            `False`.
        go_backwards: Boolean, process the sequence backwards and return the
            reversed output sequence. Defaults to `False`.
        stateful: Boolean, carry each sample's final state over as its
            initial state in the next batch (reset with `reset_state()`).
            Defaults to `False`.
        unroll: Boolean, unroll the loop over time (short sequences only).
            Defaults to `False`.
        use_cudnn: `"auto"`, `True` or `False`: whether to use a backend fast
            path (cuDNN on a GPU); `"auto"` uses one when the configuration
            allows and falls back otherwise, `True` raises when none applies.
            Defaults to `"auto"`.
        use_peepholes: Boolean, peephole connections from the cell state to
            the input, forget (`c_prev`) and output (`c_t`) gates. Defaults
            to `False`.
        layer_norm: Boolean, layer normalization of each gate's
            pre-activation and of `c_t` before its output activation.
            Defaults to `False`.
        projection_units: Optional positive integer `R`, the size `h_t` is
            projected to. Defaults to `None` (no projection).
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`, ...),
            `zero_output_for_mask` as for `keras.layers.RNN`, and
            `implementation`, accepted for compatibility and ignored.

    Call arguments:
        sequences: A 3D tensor `(batch, timesteps, features)`.
        initial_state: Optional list `[h_0, c_0]` of `(batch, R)` and
            `(batch, units)` tensors; zeros when `None`. Defaults to `None`.
        mask: Optional boolean `(batch, timesteps)` tensor, `False` for
            padded timesteps (left or right padding). Defaults to `None`.
        training: Python boolean, whether dropout is active. Defaults to
            `False`.

    Returns:
        `(batch, R)` last output, or `(batch, timesteps, R)` with
        `return_sequences=True` (`R = projection_units or units`); with
        `return_state=True`, a list `[output, h_T, c_T]`.

    Example:

    >>> inputs = np.random.random((32, 10, 8)).astype("float32")
    >>> lstm = lstm_keras.LSTM(4)
    >>> tuple(lstm(inputs).shape)
    (32, 4)
    >>> lstm = lstm_keras.LSTM(4, return_sequences=True, return_state=True)
    >>> outputs, h, c = lstm(inputs)
    >>> tuple(outputs.shape), tuple(h.shape), tuple(c.shape)
    ((32, 10, 4), (32, 4), (32, 4))
    >>> lstmp = lstm_keras.LSTM(4, projection_units=2, return_state=True,
    ...                         use_peepholes=True, layer_norm=True)
    >>> [tuple(t.shape) for t in lstmp(inputs)]
    [(32, 2), (32, 2), (32, 4)]
    """

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        use_cudnn="auto",
        use_peepholes=False,
        layer_norm=False,
        projection_units=None,
        **kwargs,
    ):
        if use_cudnn not in ("auto", True, False):
            raise ValueError(
                "Received an invalid value for argument `use_cudnn`, "
                f"expected one of 'auto', True, False, got {use_cudnn!r}."
            )
        kwargs.pop("implementation", None)
        cell = LSTMCell(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            unit_forget_bias=unit_forget_bias,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            use_peepholes=use_peepholes,
            layer_norm=layer_norm,
            projection_units=projection_units,
            dtype=kwargs.get("dtype", None),
            trainable=kwargs.get("trainable", True),
            name="lstm_cell",
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )
        self.use_cudnn = use_cudnn
        # cuDNN's ops have no XLA kernels: where TensorFlow's cuDNN path may
        # run, keep `jit_compile="auto"` off, as `keras.layers.LSTM` does.
        if not dispatch.layer_supports_jit(self):
            self.supports_jit = False

    # Input checks. Each runs wherever shapes are known: `build`, symbolic
    # calls (`compute_output_shape`) and eager calls (`call`).

    def _check_sequences_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 3:
            raise ValueError(
                f"Layer '{self.name}' expects argument `sequences` of rank 3 "
                f"(batch, timesteps, features); received shape {shape}."
            )
        if shape[1] == 0:
            raise ValueError(
                f"Layer '{self.name}' received argument `sequences` with 0 "
                f"timesteps (shape {shape}); a sequence needs at least one."
            )
        input_dim = self.cell.input_dim
        if input_dim is not None and shape[2] not in (None, input_dim):
            raise ValueError(
                f"Layer '{self.name}' was built for {input_dim} features, but "
                f"argument `sequences` has {shape[2]} (shape {shape})."
            )

    def _check_initial_state_shapes(self, state_shapes, sequences_shape):
        if not tree.is_nested(state_shapes) or (
            state_shapes and isinstance(state_shapes[0], (int, type(None)))
        ):
            state_shapes = [state_shapes]
        if len(state_shapes) != 2:
            raise ValueError(
                f"Layer '{self.name}' expects argument `initial_state` to be a "
                f"list of 2 tensors [h_0, c_0]; received {len(state_shapes)}."
            )
        batch_size = sequences_shape[0]
        for name, shape, size in zip(
            ("h_0", "c_0"), state_shapes, self.cell.state_size, strict=True
        ):
            shape = tuple(shape)
            wrong_batch = None not in (batch_size, shape[0]) and (
                shape[0] != batch_size
            )
            if len(shape) != 2 or shape[1] != size or wrong_batch:
                raise ValueError(
                    f"Layer '{self.name}' expects `initial_state` {name} of "
                    f"shape ({batch_size}, {size}); received {shape}."
                )

    def build(self, sequences_shape, initial_state_shape=None):
        self._check_sequences_shape(sequences_shape)
        if sequences_shape[-1] is None:
            raise ValueError(
                f"Layer '{self.name}' needs the feature dimension of argument "
                f"`sequences` to be known; received shape {sequences_shape}."
            )
        super().build(sequences_shape, initial_state_shape)

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        self._check_sequences_shape(sequences_shape)
        if initial_state_shape is not None:
            self._check_initial_state_shapes(
                initial_state_shape, sequences_shape
            )
        return super().compute_output_shape(
            sequences_shape, initial_state_shape
        )

    def call(self, sequences, initial_state=None, mask=None, training=False):
        self._check_sequences_shape(sequences.shape)
        if initial_state is not None:
            states = initial_state
            if not tree.is_nested(states):
                states = [states]
            self._check_initial_state_shapes(
                [s.shape for s in states], sequences.shape
            )
        if self.stateful and self.states is not None:
            expected = int(self.states[0].shape[0])
            received = sequences.shape[0]
            if received is not None and received != expected:
                raise ValueError(
                    f"Layer '{self.name}' is stateful with batch size "
                    f"{expected}, but argument `sequences` has batch size "
                    f"{received}. Keep the batch size fixed, or rebuild the "
                    "layer for the new one."
                )
        return super().call(
            sequences, mask=mask, training=training, initial_state=initial_state
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if tree.is_nested(mask):
            mask = mask[0]
        return dispatch.lstm_sequence(
            self, sequences, initial_state, mask, training
        )

    def gate_weights(self):
        """The cell's four gate weight sets; see `LSTMCell.gate_weights`."""
        return self.cell.gate_weights()

    def set_gate_weights(self, gate_weights):
        """Sets gate weight sets by name; see `LSTMCell.set_gate_weights`."""
        self.cell.set_gate_weights(gate_weights)

    def get_config(self):
        # The cell serializes its own arguments; the layer's config is those
        # (flattened, as in keras.layers.LSTM) plus the RNN and layer options.
        cell_config = self.cell.get_config()
        config = {name: cell_config[name] for name in _CELL_ATTRIBUTES}
        config["seed"] = cell_config["seed"]
        config["activity_regularizer"] = regularizers.serialize(
            self.activity_regularizer
        )
        config["use_cudnn"] = self.use_cudnn
        base_config = super().get_config()
        del base_config["cell"]
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


for _name in _CELL_ATTRIBUTES:
    setattr(
        LSTM,
        _name,
        property(
            lambda self, _name=_name: getattr(self.cell, _name),
            doc=f"The cell's `{_name}`.",
        ),
    )
del _name
