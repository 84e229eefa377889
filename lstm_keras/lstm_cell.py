"""The LSTM cell: one timestep of the LSTM equations, written in `keras.ops`.

For gates g in {input, forget, candidate, output}, with feedforward weights
`W_g` [D, H], recurrent weights `U_g` [H, H] and bias `b_g` [H]:

    i_t = sigmoid(x_t W_i + h_prev U_i + b_i)        input gate
    f_t = sigmoid(x_t W_f + h_prev U_f + b_f)        forget gate
    g_t = tanh(x_t W_c + h_prev U_c + b_c)           candidate cell state
    o_t = sigmoid(x_t W_o + h_prev U_o + b_o)        output gate
    c_t = f_t * c_prev + i_t * g_t                   cell state
    h_t = o_t * tanh(c_t)                            hidden state / output

The four weight sets are stored fused, in Keras's layout, so that weights move
freely between `keras.layers.LSTM` and this cell: `kernel` [D, 4H] holds
`[W_i | W_f | W_c | W_o]`, `recurrent_kernel` [H, 4H] holds the `U`s and
`bias` [4H] the `b`s, in the gate order of `GATE_ORDER`.

Three variants, each off by default and composable with the others:

- peepholes (Gers & Schmidhuber, 2000; TensorFlow's `BlockLSTM` op): the
  input and forget gates add `w_ci * c_prev` and `w_cf * c_prev` to their
  pre-activations, the output gate adds `w_co * c_t`;
- layer normalization (Ba et al., 2016): each gate's pre-activation
  `x_t W_g + h_prev U_g` is normalized over its `units` features, scaled by
  a gain, then shifted by `b_g`; `c_t` is normalized before its output
  `tanh` (`h_t = o_t * tanh(LN(c_t))`) while the carried state stays the
  unnormalized `c_t`, as in Ba et al.;
- a projection (LSTMP, Sak et al., 2014): `h_t = (o_t * tanh(c_t)) P` with
  `P` [H, R], so `h`, the output and `U` [R, 4H] have `R` features.
"""

import keras
import numpy as np
from keras import activations
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers

# `keras.layers.RNN` draws the dropout masks once per sequence, outside its
# loop, only for cells that are instances of this (private) mixin; without it
# a mask would be drawn inside a traced loop, which JAX cannot do.
from lstm_keras.compat import DropoutRNNCell

GATE_ORDER = ("input", "forget", "candidate", "output")
"""The order of the four gates inside the fused kernels (Keras's order)."""

LAYER_NORM_EPSILON = 1e-3
"""Added to the variance in layer normalization (Keras's default)."""

VARIANT_WEIGHTS = (
    "input_peephole",
    "forget_peephole",
    "output_peephole",
    "gate_norm_gamma",
    "cell_norm_gamma",
    "cell_norm_beta",
    "projection_kernel",
)
"""Weights the variants add, in the order they are created (after `bias`)."""


def check_positive_int(name, value):
    """Raises a `ValueError` naming `name` unless `value` is an integer > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"positive integer, got {value!r}."
        )
    if value <= 0:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"positive integer, got {value}."
        )


def check_bool(name, value):
    """Raises a `ValueError` naming `name` unless `value` is a boolean."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"boolean, got {value!r}."
        )
    return bool(value)


def check_rate(name, value):
    """Raises a `ValueError` naming `name` unless 0 <= `value` < 1."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = None
    if rate is None or not 0.0 <= rate < 1.0:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"float in [0, 1), got {value!r}."
        )
    return rate


@keras.saving.register_keras_serializable(package="lstm_keras")
class LSTMCell(keras.layers.Layer, DropoutRNNCell):
    """One timestep of a long short-term memory network (Hochreiter, 1997).

    `LSTMCell` computes the LSTM equations for a single timestep; wrap it in
    `lstm_keras.LSTM` (or `keras.layers.RNN`) to run it over a sequence. It
    keeps four gate weight sets (input, forget, candidate, output), each a
    feedforward matrix `W` [input_dim, units], a recurrent matrix
    `U` [units, units] and a bias [units]; `gate_weights()` and
    `set_gate_weights()` read and write them by gate name. They are stored
    fused as `kernel`, `recurrent_kernel` and `bias` in `keras.layers.LSTMCell`'s
    layout, so the two cells' weights are interchangeable.

    Dropout is variational (Gal & Ghahramani, 2016): one mask per sequence,
    drawn when the sequence starts and shared by the four gates.

    Three variants (see the module docstring for their equations) add weights
    after `bias`, leaving the Keras weights unchanged: `use_peepholes` adds
    `input_peephole`, `forget_peephole` and `output_peephole` [units], each
    initialized to zeros (the cell starts as a plain LSTM); `layer_norm` adds
    `gate_norm_gamma` [4 * units] (ones; the gates' shift is `bias`) and
    `cell_norm_gamma`, `cell_norm_beta` [units] (ones, zeros);
    `projection_units=R` adds `projection_kernel` [units, R] (initialized,
    regularized and constrained like `kernel`) and makes `recurrent_kernel`
    [R, 4 * units]. With `D` input features, `H = units` and
    `R = projection_units or units`, the cell has
    `4*H*(D + R) + 4*H*use_bias + 3*H*use_peepholes + 6*H*layer_norm
    + H*R*(projection_units is not None)` parameters.

    Args:
        units: Positive integer, dimensionality of the hidden and cell states.
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
        kernel_constraint: Constraint for `kernel`. Defaults to `None`.
        recurrent_constraint: Constraint for `recurrent_kernel`. Defaults to
            `None`.
        bias_constraint: Constraint for `bias`. Defaults to `None`.
        dropout: Float in [0, 1), fraction of the input units dropped.
            Defaults to `0.0`.
        recurrent_dropout: Float in [0, 1), fraction of the recurrent units
            (`h_prev`) dropped. Defaults to `0.0`.
        seed: Integer, random seed for the dropout masks. Defaults to `None`.
        use_peepholes: Boolean, add peephole connections from the cell state
            to the gates (TensorFlow's `BlockLSTM` formulation). Defaults to
            `False`.
        layer_norm: Boolean, layer-normalize the gates' pre-activations and
            the cell state before its output activation. Defaults to `False`.
        projection_units: Optional positive integer `R`: project `h_t` to
            `R` features (LSTMP). Defaults to `None` (no projection).
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: A 2D tensor `(batch, input_dim)`, the step input `x_t`.
        states: A list `[h_prev, c_prev]` of 2D tensors, `(batch, R)` and
            `(batch, units)` (`R = projection_units or units`).
        training: Python boolean, whether dropout is active. Defaults to
            `False`.

    Returns:
        A tuple `(h_t, [h_t, c_t])`.

    Example:

    >>> cell = lstm_keras.LSTMCell(4)
    >>> layer = keras.layers.RNN(cell)
    >>> tuple(layer(np.zeros((2, 5, 3))).shape)
    (2, 4)
    >>> sorted(cell.gate_weights())
    ['candidate', 'forget', 'input', 'output']
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
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        use_peepholes=False,
        layer_norm=False,
        projection_units=None,
        **kwargs,
    ):
        check_positive_int("units", units)
        use_peepholes = check_bool("use_peepholes", use_peepholes)
        layer_norm = check_bool("layer_norm", layer_norm)
        if projection_units is not None:
            check_positive_int("projection_units", projection_units)
            projection_units = int(projection_units)
        # Accepted for drop-in compatibility with `keras.layers.LSTMCell`;
        # both of its implementations compute the same numbers as this one.
        kwargs.pop("implementation", None)
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.dropout = check_rate("dropout", dropout)
        self.recurrent_dropout = check_rate(
            "recurrent_dropout", recurrent_dropout
        )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        self.use_peepholes = use_peepholes
        self.layer_norm = layer_norm
        self.projection_units = projection_units
        self.state_size = [self.recurrent_units, self.units]
        self.output_size = self.recurrent_units

    @property
    def recurrent_units(self):
        """Features of `h` (and of the output): `projection_units or units`."""
        return self.projection_units or self.units

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "The last dimension of the inputs to LSTMCell (the feature "
                f"size) must be known; received input_shape={input_shape}."
            )
        self.kernel = self.add_weight(
            shape=(input_dim, 4 * self.units),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.recurrent_units, 4 * self.units),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(4 * self.units,),
                name="bias",
                initializer=self._bias_initializer_with_forget_bias,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        self._build_variant_weights()

    def _build_variant_weights(self):
        units = self.units
        if self.use_peepholes:
            for name in VARIANT_WEIGHTS[:3]:
                setattr(
                    self,
                    name,
                    self.add_weight(
                        shape=(units,), name=name, initializer="zeros"
                    ),
                )
        if self.layer_norm:
            self.gate_norm_gamma = self.add_weight(
                shape=(4 * units,), name="gate_norm_gamma", initializer="ones"
            )
            self.cell_norm_gamma = self.add_weight(
                shape=(units,), name="cell_norm_gamma", initializer="ones"
            )
            self.cell_norm_beta = self.add_weight(
                shape=(units,), name="cell_norm_beta", initializer="zeros"
            )
        if self.projection_units is not None:
            self.projection_kernel = self.add_weight(
                shape=(units, self.projection_units),
                name="projection_kernel",
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )

    def _bias_initializer_with_forget_bias(self, shape, dtype=None):
        if not self.unit_forget_bias:
            return self.bias_initializer(shape, dtype=dtype)
        units = self.units
        return ops.concatenate(
            [
                self.bias_initializer((units,), dtype=dtype),
                ops.ones((units,), dtype=dtype),
                self.bias_initializer((2 * units,), dtype=dtype),
            ]
        )

    @property
    def input_dim(self):
        """The feature size the cell was built for (`None` before build)."""
        return self.kernel.shape[0] if self.built else None

    def input_projection(self, inputs):
        """Returns `inputs @ kernel + bias`, the gates' feedforward part.

        Works on a step `(batch, input_dim)` or a whole sequence
        `(batch, timesteps, input_dim)`; the layer projects every timestep in
        one matmul before its loop, so the loop only does `h_prev @ U`. With
        `layer_norm=True` the bias is left out: it is added after the
        normalization, in `recurrent_step`.
        """
        z_x = ops.matmul(inputs, self.kernel)
        if self.use_bias and not self.layer_norm:
            z_x = z_x + self.bias
        return z_x

    def _normalize(self, x, groups):
        # Layer normalization without gain and shift, over each of `groups`
        # consecutive blocks of `units` features.
        x = ops.reshape(x, (-1, groups, self.units))
        mean = ops.mean(x, axis=-1, keepdims=True)
        centered = x - mean
        variance = ops.mean(ops.square(centered), axis=-1, keepdims=True)
        x = centered * ops.rsqrt(variance + LAYER_NORM_EPSILON)
        return ops.reshape(x, (-1, groups * self.units))

    def recurrent_step(self, z_x, h_prev, c_prev):
        """Applies the LSTM equations given the gates' feedforward part.

        Args:
            z_x: `(batch, 4 * units)`, `input_projection(x_t)`.
            h_prev: `(batch, recurrent_units)`, the previous hidden state
                (after recurrent dropout, if any).
            c_prev: `(batch, units)`, the previous cell state.

        Returns:
            A tuple `(h_t, c_t)`.
        """
        h, c, _ = self._step(z_x, h_prev, c_prev)
        return h, c

    def _step(self, z_x, h_prev, c_prev, offsets=None):
        # `offsets`, for `lstm_keras.diagnostics`: `(d_z, d_c, d_h)` added to
        # the gates' final pre-activations, to c_t and to h_t, so that the
        # gradient with respect to them is the loss's gradient there.
        # Returns (h_t, c_t, gates) with gates the four activations.
        z = z_x + ops.matmul(h_prev, self.recurrent_kernel)
        if self.layer_norm:
            z = self._normalize(z, 4) * self.gate_norm_gamma
            if self.use_bias:
                z = z + self.bias
        z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
        if self.use_peepholes:
            z_i = z_i + self.input_peephole * c_prev
            z_f = z_f + self.forget_peephole * c_prev
        if offsets is not None:
            d_i, d_f, d_c, d_o = ops.split(offsets[0], 4, axis=-1)
            z_i, z_f, z_c = z_i + d_i, z_f + d_f, z_c + d_c
        input_gate = self.recurrent_activation(z_i)
        forget_gate = self.recurrent_activation(z_f)
        candidate = self.activation(z_c)
        c = forget_gate * c_prev + input_gate * candidate
        if offsets is not None:
            c = c + offsets[1]
        if self.use_peepholes:
            # The output gate looks at the new cell state, as in BlockLSTM.
            z_o = z_o + self.output_peephole * c
        if offsets is not None:
            z_o = z_o + d_o
        output_gate = self.recurrent_activation(z_o)
        c_out = c
        if self.layer_norm:
            c_out = (
                self._normalize(c, 1) * self.cell_norm_gamma
                + self.cell_norm_beta
            )
        h = output_gate * self.activation(c_out)
        if self.projection_units is not None:
            h = ops.matmul(h, self.projection_kernel)
        if offsets is not None:
            h = h + offsets[2]
        gates = dict(
            input=input_gate,
            forget=forget_gate,
            candidate=candidate,
            output=output_gate,
        )
        return h, c, gates

    def call(self, inputs, states, training=False):
        h_prev, c_prev = states[0], states[1]
        if training and self.dropout > 0:
            inputs = inputs * self.get_dropout_mask(inputs)
        if training and self.recurrent_dropout > 0:
            h_prev = h_prev * self.get_recurrent_dropout_mask(h_prev)
        h, c = self.recurrent_step(
            self.input_projection(inputs), h_prev, c_prev
        )
        return h, [h, c]

    def get_initial_state(self, batch_size=None):
        return [
            ops.zeros((batch_size, size), dtype=self.compute_dtype)
            for size in self.state_size
        ]

    def gate_weights(self):
        """Returns the four gate weight sets, by gate name.

        Returns:
            A dict mapping each of `"forget"`, `"input"`, `"candidate"` and
            `"output"` to a tuple `(feedforward, recurrent, bias)` of NumPy
            arrays shaped `[input_dim, units]`, `[recurrent_units, units]`
            and `[units]` (`bias` is `None` when `use_bias=False`). They are
            copies: change them with `set_gate_weights()`. The variants'
            own weights (peepholes, norm gains, `projection_kernel`) are not
            per-gate sets; read and assign them as the cell's attributes.
        """
        if not self.built:
            raise ValueError(
                "gate_weights() needs a built cell: call the layer on data, "
                "or call build(input_shape), first."
            )
        kernel = ops.convert_to_numpy(self.kernel)
        recurrent = ops.convert_to_numpy(self.recurrent_kernel)
        bias = ops.convert_to_numpy(self.bias) if self.use_bias else None
        weights = {}
        for index, gate in enumerate(GATE_ORDER):
            columns = slice(index * self.units, (index + 1) * self.units)
            weights[gate] = (
                kernel[:, columns].copy(),
                recurrent[:, columns].copy(),
                None if bias is None else bias[columns].copy(),
            )
        return weights

    def set_gate_weights(self, gate_weights):
        """Sets some or all of the gate weight sets, by gate name.

        Args:
            gate_weights: A dict mapping gate names (`"forget"`, `"input"`,
                `"candidate"`, `"output"`) to `(feedforward, recurrent, bias)`
                tuples shaped as `gate_weights()` returns them. Gates left
                out keep their weights.
        """
        current = self.gate_weights()
        unknown = set(gate_weights) - set(GATE_ORDER)
        if unknown:
            raise ValueError(
                "Argument `gate_weights` has unknown gate names "
                f"{sorted(unknown)}; expected some of {list(GATE_ORDER)}."
            )
        for gate, new in gate_weights.items():
            if len(new) != 3:
                raise ValueError(
                    f"Argument `gate_weights['{gate}']` must be a tuple "
                    f"(feedforward, recurrent, bias); got {len(new)} items."
                )
            checked = []
            for part, old, value in zip(
                ("feedforward", "recurrent", "bias"),
                current[gate],
                new,
                strict=True,
            ):
                if old is None:
                    if value is not None:
                        raise ValueError(
                            f"Argument `gate_weights['{gate}']` has a bias, "
                            "but the cell has use_bias=False."
                        )
                    checked.append(None)
                    continue
                value = np.asarray(value)
                if value.shape != old.shape:
                    raise ValueError(
                        f"Argument `gate_weights['{gate}']`: the {part} "
                        f"weights must have shape {old.shape}, received "
                        f"{value.shape}."
                    )
                checked.append(value)
            current[gate] = tuple(checked)
        self.kernel.assign(
            np.concatenate([current[g][0] for g in GATE_ORDER], axis=1)
        )
        self.recurrent_kernel.assign(
            np.concatenate([current[g][1] for g in GATE_ORDER], axis=1)
        )
        if self.use_bias:
            self.bias.assign(
                np.concatenate([current[g][2] for g in GATE_ORDER])
            )

    def get_config(self):
        config = {
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "recurrent_activation": activations.serialize(
                self.recurrent_activation
            ),
            "use_bias": self.use_bias,
            "unit_forget_bias": self.unit_forget_bias,
            "kernel_initializer": initializers.serialize(
                self.kernel_initializer
            ),
            "recurrent_initializer": initializers.serialize(
                self.recurrent_initializer
            ),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(
                self.kernel_regularizer
            ),
            "recurrent_regularizer": regularizers.serialize(
                self.recurrent_regularizer
            ),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": constraints.serialize(
                self.recurrent_constraint
            ),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
            "use_peepholes": self.use_peepholes,
            "layer_norm": self.layer_norm,
            "projection_units": self.projection_units,
        }
        base_config = super().get_config()
        return {**base_config, **config}
