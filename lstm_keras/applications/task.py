"""`Classifier`: what the sentiment and speech applications share.

A functional Keras model (keras-hub's Task style): the subclass builds its
graph from raw inputs to class probabilities in `__init__` and stores its
constructor arguments, which are its whole config; the weights, the
vocabulary and the feature statistics travel in the `.keras` file.

`MemberAverage` turns several member classifiers inside one model into an
ensemble whose members still train independently (see
`Classifier.compute_loss`).
"""

import keras
import tensorflow as tf

from lstm_keras import dispatch
from lstm_keras.applications import presets
from lstm_keras.applications.optimizers import LazyAdam

# The attribute under which `MemberAverage` hands the members' probabilities
# to `Classifier.compute_loss`, beside the average it returns (as Keras's
# softmax hands its logits to the cross-entropy in `_keras_logits`).
_MEMBERS = "_lstm_keras_members"


class Classifier(keras.Model):
    """Base of the application models; see `SentimentClassifier`.

    Subclasses call `super().__init__(inputs, outputs, options=...)` with
    their constructor arguments in `options`, and implement `adapt`.
    """

    # Adam's learning rate for `compile()`; subclasses tune it.
    default_learning_rate = 1e-3
    # With `decay_steps`, the `"auto"` optimizer keeps an exponential moving
    # average of the weights whose time constant is this fraction of the
    # run, and training ends on it; `None` for no average.
    default_ema_fraction = None

    def __init__(self, inputs, outputs, options, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._options = dict(options)

    @property
    def class_names(self):
        return list(self._options["class_names"])

    @property
    def num_classes(self):
        return len(self._options["class_names"])

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics="auto",
        learning_rate=None,
        decay_steps=None,
        ema_momentum="auto",
        **kwargs,
    ):
        """Configures training, with defaults that fit a classifier.

        Args:
            optimizer: `"auto"` for Adam at `default_learning_rate` with
                gradient norm clipping at 1 (an LSTM's gradients can spike),
                annealed when `decay_steps` is given; else anything
                `keras.Model.compile` accepts. The Adam is `LazyAdam`: it
                updates only the embedding rows a batch touches, not whole
                tables.
            loss: `"auto"` for sparse categorical cross-entropy on the
                probabilities (integer labels), else any Keras loss.
            metrics: `"auto"` for `["accuracy"]`, else any Keras metrics.
            learning_rate: The `"auto"` optimizer's (initial) rate; `None`
                for `default_learning_rate` (the application's preset).
                Defaults to `None`.
            decay_steps: `None` for a constant learning rate, or the number
                of training steps (epochs times batches per epoch) over which
                the `"auto"` optimizer's rate follows a cosine from
                `default_learning_rate` down to 5% of it. Defaults to `None`.
            ema_momentum: Weight averaging of the `"auto"` optimizer: a
                float in [0, 1) for Adam's exponential moving average of the
                weights (`use_ema=True`; after each step
                `average = ema_momentum * average + (1 - ema_momentum) *
                weights`, starting from the weights after the first step),
                which `fit` writes into the model when it ends; `None` for
                none; `"auto"` for a time constant of `default_ema_fraction`
                of the run, `ema_momentum = 1 - 1 / (default_ema_fraction *
                decay_steps)`, when both are set, else none. Defaults to
                `"auto"`.
            **kwargs: Further `keras.Model.compile` arguments.
        """
        if ema_momentum == "auto":
            ema_momentum = None
            if decay_steps:
                ema_momentum = presets.ema_momentum(
                    self.default_ema_fraction, decay_steps
                )
        elif ema_momentum is not None and (
            isinstance(ema_momentum, bool)
            or not isinstance(ema_momentum, (int, float))
            or not 0.0 <= ema_momentum < 1.0
        ):
            raise ValueError(
                "Received an invalid value for argument `ema_momentum`, "
                f"expected 'auto', None or a float in [0, 1), got "
                f"{ema_momentum!r}."
            )
        if optimizer == "auto":
            if learning_rate is None:
                learning_rate = self.default_learning_rate
            if decay_steps is not None:
                learning_rate = keras.optimizers.schedules.CosineDecay(
                    learning_rate, decay_steps, alpha=0.05
                )
            ema = {}
            if ema_momentum is not None:
                ema = {"use_ema": True, "ema_momentum": float(ema_momentum)}
            optimizer = LazyAdam(learning_rate, clipnorm=1.0, **ema)
        elif (
            decay_steps is not None
            or ema_momentum is not None
            or learning_rate is not None
        ):
            raise ValueError(
                "Arguments `learning_rate`, `decay_steps` and `ema_momentum` "
                "apply to "
                f"optimizer='auto' only; received optimizer={optimizer!r}."
            )
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy()
        if metrics == "auto":
            metrics = ["accuracy"]
        super().compile(
            optimizer=optimizer, loss=loss, metrics=metrics, **kwargs
        )

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """The compiled loss; for an ensemble, the mean of the members'.

        When `y_pred` comes from a `MemberAverage` and `training` is true,
        the loss is the mean over members of the compiled loss of each
        member's own probabilities, so that each member follows the
        gradient it would follow alone (scaled by 1 / members) instead of
        co-adapting to fix the average. Evaluation losses are those of the
        average, the model's prediction.
        """
        members = getattr(y_pred, _MEMBERS, None)
        if not training or members is None:
            members = [y_pred]
        losses = []
        for member in members:
            losses.append(
                super().compute_loss(
                    x=x,
                    y=y,
                    y_pred=member,
                    sample_weight=sample_weight,
                    training=training,
                )
            )
        return keras.ops.mean(keras.ops.stack(losses))

    def compile_from_config(self, config):
        # Keras skips overridden `compile()` methods when loading; ours
        # takes Keras's arguments, so a loaded model comes back compiled.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def export(self, filepath, format="tf_saved_model", **kwargs):
        """`keras.Model.export`; other formats than SavedModel on the
        generic LSTM path.

        A SavedModel export traces `lstm_keras.LSTM` on TensorFlow's stock
        kernels by itself (`lstm_keras.backends.tensorflow.serving`). Other
        converters (LiteRT, ONNX) lack `BlockLSTM`, so for them the layer
        runs the generic loop, made of ops they all convert.
        """
        if format == "tf_saved_model":
            return super().export(filepath, format=format, **kwargs)
        with dispatch.fast_paths_disabled():
            return super().export(filepath, format=format, **kwargs)

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable}
        return {**config, **self._options}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="lstm_keras")
class MemberAverage(keras.layers.Layer):
    """Averages the members' probabilities of an ensemble model.

    The output is the mean of the inputs. The inputs also travel with it
    (as an attribute of the output tensor), so that
    `Classifier.compute_loss` can train each member on its own loss.

    Call arguments:
        members: List of `(batch, num_classes)` probability tensors.

    Returns:
        `(batch, num_classes)`, their mean.
    """

    def call(self, members):
        average = keras.ops.mean(keras.ops.stack(members, axis=0), axis=0)
        setattr(average, _MEMBERS, tuple(members))
        return average

    def compute_output_shape(self, members_shape):
        return tuple(members_shape[0])


def check_class_names(class_names):
    """Returns `class_names` as a list of at least two distinct strings."""
    if isinstance(class_names, str) or class_names is None:
        raise ValueError(
            "Argument `class_names` must be a sequence of at least two "
            f"distinct strings, got {class_names!r}."
        )
    class_names = [str(name) for name in class_names]
    if len(class_names) < 2 or len(set(class_names)) != len(class_names):
        raise ValueError(
            "Argument `class_names` must be a sequence of at least two "
            f"distinct strings, got {class_names!r}."
        )
    return class_names


def batched_inputs(data, unbatched_rank, argument, batch_size=256):
    """Inputs of `data` as a batched `tf.data.Dataset`, labels dropped.

    Args:
        data: A `tf.data.Dataset` of inputs or of `(inputs, labels, ...)`
            tuples, batched or not, or an array-like of inputs.
        unbatched_rank: Rank of one unbatched input (0 for a string, 1 for
            a waveform); unbatched data is batched with zero padding.
        argument: The input's name, for error messages.
        batch_size: Batch size for unbatched data.
    """
    if not isinstance(data, tf.data.Dataset):
        data = tf.data.Dataset.from_tensor_slices(data)
    if isinstance(data.element_spec, tuple):
        data = data.map(lambda inputs, *rest: inputs)
    rank = data.element_spec.shape.rank
    if rank == unbatched_rank:
        return data.padded_batch(batch_size)
    if rank != unbatched_rank + 1:
        raise ValueError(
            f"Expected a dataset of `{argument}` of rank {unbatched_rank} "
            f"(unbatched) or {unbatched_rank + 1} (batched); received "
            f"element spec {data.element_spec}."
        )
    return data
