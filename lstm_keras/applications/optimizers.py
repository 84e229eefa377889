"""`LazyAdam`: Adam that updates only the embedding rows a batch touches.

The gradient of a table read with `tf.gather` (`keras.layers.Embedding`,
`SubwordEmbedding`) is a `tf.IndexedSlices`: the few rows the batch read.
`keras.optimizers.Adam` rewrites every row of the table and of its two
moment slots at each step, so for the sentiment model's 70,000 rows of
embeddings the update costs in proportion to the tables, not to the batch.
"""

import keras
from keras import ops

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
else:
    # Only TensorFlow has `tf.IndexedSlices`; elsewhere every gradient is
    # dense and the optimizer is plain Adam.
    tf = None


def _is_indexed_slices(value):
    return tf is not None and isinstance(value, tf.IndexedSlices)


def _deduplicate(slices):
    """`slices` with one entry per row, the duplicates' values summed.

    This is the gradient's dense value restricted to its rows, which is what
    Adam's moments and the clipping norms must see.
    """
    indices, positions = tf.unique(slices.indices)
    values = tf.math.unsorted_segment_sum(
        slices.values, positions, tf.shape(indices)[0]
    )
    return tf.IndexedSlices(values, indices, slices.dense_shape)


def _with_values(slices, values):
    return tf.IndexedSlices(values, slices.indices, slices.dense_shape)


def _as_tf_variable(variable):
    # `keras.Variable` wraps a `tf.Variable`, whose `sparse_read` reads the
    # rows without reading the whole table.
    if isinstance(variable, keras.Variable):
        return variable.value
    return variable


@keras.saving.register_keras_serializable(package="lstm_keras")
class LazyAdam(keras.optimizers.Adam):
    """Adam whose sparse updates touch only the rows in the gradient.

    For a dense gradient this is exactly `keras.optimizers.Adam`. For a
    `tf.IndexedSlices` gradient (an embedding table's, on the TensorFlow
    backend), entries of the same row are first summed, then only those
    rows are updated:

    ```
    m[rows] = beta_1 * m[rows] + (1 - beta_1) * g
    v[rows] = beta_2 * v[rows] + (1 - beta_2) * g ** 2
    var[rows] -= lr_t * m[rows] / (sqrt(v[rows]) + epsilon)
    ```

    with Adam's `lr_t = lr * sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)` at
    step `t = iterations + 1`. The other rows and their moments stay as they
    are, whereas Adam keeps moving them on their decaying momentum; this is
    the "lazy" Adam of TensorFlow Addons. Its cost grows with the rows a
    batch reads, not with the table. When every row appears in every step
    the two optimizers agree.

    Gradient clipping keeps sparse gradients sparse: `clipnorm`,
    `global_clipnorm` and `clipvalue` act on the summed rows, so they clip an
    `IndexedSlices` exactly as they would clip its dense value. Weight decay
    (`weight_decay`) is Adam's decoupled decay: it shrinks every row of
    every variable at every step, touched or not, since it does not depend
    on the gradient. `use_ema` averages all weights as in Adam. On backends
    other than TensorFlow, gradients are always dense and the optimizer is
    Adam.

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or a
            callable that takes no arguments and returns the value to use.
            Defaults to `0.001`.
        beta_1: Float, the exponential decay rate of the first moment
            estimates. Defaults to `0.9`.
        beta_2: Float, the exponential decay rate of the second moment
            estimates. Defaults to `0.999`.
        epsilon: Small float added to the root of the second moment, for
            numerical stability. Defaults to `1e-7`.
        amsgrad: Must be `False`: the AMSGrad variant is not supported, and
            `True` raises a `ValueError` rather than quietly falling back to
            dense updates; use `keras.optimizers.Adam(amsgrad=True)` for it.
            Defaults to `False`.
        **kwargs: The other arguments of `keras.optimizers.Adam`
            (`weight_decay`, `clipnorm`, `clipvalue`, `global_clipnorm`,
            `use_ema`, `ema_momentum`, `ema_overwrite_frequency`,
            `loss_scale_factor`, `gradient_accumulation_steps`, `name`).
            With `gradient_accumulation_steps` the accumulated gradients are
            dense, and so is the update.

    Example:

    >>> table = keras.Variable(np.ones((4, 2), "float32"))
    >>> optimizer = LazyAdam(learning_rate=0.1)
    >>> gradient = tf.IndexedSlices(
    ...     tf.constant([[1.0, -1.0]]), tf.constant([1]), tf.constant([4, 2])
    ... )
    >>> optimizer.apply([gradient], [table])
    >>> np.round(keras.ops.convert_to_numpy(table), 3)
    array([[1. , 1. ],
           [0.9, 1.1],
           [1. , 1. ],
           [1. , 1. ]], dtype=float32)
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        **kwargs,
    ):
        if amsgrad:
            raise ValueError(
                "Received an invalid value for argument `amsgrad`: LazyAdam "
                f"has no AMSGrad variant, expected False, got {amsgrad!r}. "
                "Use keras.optimizers.Adam(amsgrad=True) for AMSGrad."
            )
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=False,
            **kwargs,
        )

    def update_step(self, gradient, variable, learning_rate):
        """Adam's update; on the gradient's rows only if it is sparse."""
        if not _is_indexed_slices(gradient):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        # Entries of one row are summed before anything is squared: Keras's
        # `ops.square` of an `IndexedSlices` squares each entry, which for
        # a row read twice is not the square of its gradient.
        gradient = _deduplicate(tf.cast(gradient, dtype))
        rows, g = gradient.indices, gradient.values
        lr = ops.cast(learning_rate, dtype)
        local_step = ops.cast(self.iterations + 1, dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, dtype), local_step)
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)

        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]
        # The same arithmetic as Adam's dense update, on the rows, so that
        # the two agree to rounding when every row is touched.
        m_rows = tf.gather(_as_tf_variable(m), rows)
        v_rows = tf.gather(_as_tf_variable(v), rows)
        m_rows = m_rows + (g - m_rows) * (1 - self.beta_1)
        v_rows = v_rows + (ops.square(g) - v_rows) * (1 - self.beta_2)
        self.assign(m, _with_values(gradient, m_rows))
        self.assign(v, _with_values(gradient, v_rows))
        step = (m_rows * alpha) / (ops.sqrt(v_rows) + self.epsilon)
        self.assign_sub(variable, _with_values(gradient, step))

    def _clip_gradients(self, grads):
        sparse = [_is_indexed_slices(g) for g in grads]
        clipping = (
            (self.clipnorm and self.clipnorm > 0)
            or (self.global_clipnorm and self.global_clipnorm > 0)
            or (self.clipvalue and self.clipvalue > 0)
        )
        if not any(sparse) or not clipping:
            return super()._clip_gradients(grads)
        # Duplicate rows add up in the dense gradient; a norm or a clip of
        # the separate entries would not be that of the gradient.
        grads = [
            _deduplicate(g) if s else g
            for g, s in zip(grads, sparse, strict=True)
        ]
        if self.clipnorm and self.clipnorm > 0:
            # TensorFlow's `clip_by_norm` scales the values of an
            # `IndexedSlices` by the norm of its values.
            return super()._clip_gradients(grads)
        values = [
            g.values if s else g for g, s in zip(grads, sparse, strict=True)
        ]
        if self.global_clipnorm and self.global_clipnorm > 0:
            values, _ = tf.clip_by_global_norm(values, self.global_clipnorm)
        else:
            limit = self.clipvalue
            values = [
                None if x is None else ops.clip(x, -limit, limit)
                for x in values
            ]
        return [
            _with_values(g, x) if s else x
            for g, s, x in zip(grads, sparse, values, strict=True)
        ]
