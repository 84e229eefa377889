"""The real layer: its forward values and its autodiff on the active backend.

`_LayerProbe` wraps one built `lstm_keras.LSTM` with fixed inputs, initial
states and dropout masks. It evaluates the layer at arbitrary NumPy values
through `layer.stateless_call` (for finite differences) and differentiates
the layer with the active Keras backend's own machinery: `tf.GradientTape`
on TensorFlow, `jax.grad` over `stateless_call` on JAX, `torch.autograd` on
torch.
"""

import keras
import numpy as np
from keras import ops

from lstm_keras.gradcheck.reference import TENSOR_NAMES


class _LayerProbe:
    """Runs one built `lstm_keras.LSTM` with fixed inputs and dropout masks.

    `forward(values)` evaluates the layer at arbitrary `values` (inputs,
    initial states and weights, as NumPy arrays) through
    `layer.stateless_call`, compiled where the backend allows, so that
    finite differences do not touch the layer's variables; `gradients()`
    differentiates the layer as it stands (its variables hold the weights).
    """

    def __init__(self, layer, values, mask, use_initial_state, training, masks):
        self.layer = layer
        self.cell = layer.cell
        self.mask = mask
        self.use_initial_state = use_initial_state
        self.training = training
        self.input_dropout_mask, self.recurrent_dropout_mask = masks
        self.values = values
        self.dtype = layer.compute_dtype
        self.backend = keras.backend.backend()
        trainable = list(layer.trainable_variables)
        self.weight_names = [n for n in TENSOR_NAMES[3:] if n in values]
        weights = [getattr(self.cell, n) for n in self.weight_names]
        self._positions = []
        for name, variable in zip(self.weight_names, weights, strict=True):
            matches = [k for k, v in enumerate(trainable) if v is variable]
            if len(matches) != 1:
                raise ValueError(
                    f"The layer's trainable variables do not hold `{name}` "
                    "exactly once; is the layer frozen (trainable=False)?"
                )
            self._positions.append(matches[0])
        self._num_trainable = len(trainable)
        self._forward = self._compile_forward()

    # Outputs are normalised to a dict: "outputs" (return_sequences) or
    # "last_output", plus "h_T" and "c_T" with return_state.
    def _name_outputs(self, result):
        if self.layer.return_state:
            first, h_t, c_t = result
        else:
            first, h_t, c_t = result, None, None
        key = "outputs" if self.layer.return_sequences else "last_output"
        named = {key: first}
        if h_t is not None:
            named["h_T"] = h_t
            named["c_T"] = c_t
        return named

    def _tensor(self, value):
        return (
            None if value is None else ops.convert_to_tensor(value, self.dtype)
        )

    def _set_dropout_masks(self, input_mask, recurrent_mask):
        # `keras.layers.RNN.call` draws masks only when these are None, and
        # resets them after the call: set them right before every call.
        self.cell._dropout_mask = input_mask
        self.cell._recurrent_dropout_mask = recurrent_mask

    def _call_kwargs(self, h0, c0):
        kwargs = {"mask": self.mask, "training": self.training}
        if self.use_initial_state:
            kwargs["initial_state"] = [h0, c0]
        return kwargs

    def _stateless(self, x, h0, c0, weights, input_mask, recurrent_mask):
        trainable = [v.value for v in self.layer.trainable_variables]
        for position, weight in zip(self._positions, weights, strict=True):
            trainable[position] = weight
        non_trainable = [v.value for v in self.layer.non_trainable_variables]
        self._set_dropout_masks(input_mask, recurrent_mask)
        result, _ = self.layer.stateless_call(
            trainable, non_trainable, x, **self._call_kwargs(h0, c0)
        )
        return self._name_outputs(result)

    def _compile_forward(self):
        if self.backend == "jax":
            import jax

            return jax.jit(self._stateless)
        if self.backend == "tensorflow":
            import tensorflow as tf

            return tf.function(self._stateless, reduce_retracing=True)
        return self._stateless

    def forward(self, values):
        """Layer results at `values`, as float64 NumPy arrays."""
        weights = [self._tensor(values[n]) for n in self.weight_names]
        args = (
            self._tensor(values["x"]),
            self._tensor(values["h0"]),
            self._tensor(values["c0"]),
            weights,
            self._tensor(self.input_dropout_mask),
            self._tensor(self.recurrent_dropout_mask),
        )
        if self.backend == "torch":
            import torch

            with torch.no_grad():
                result = self._forward(*args)
        else:
            result = self._forward(*args)
        # jax.jit hands dicts back with sorted keys: restore table order.
        order = ("outputs", "last_output", "h_T", "c_T")
        return {
            k: np.asarray(ops.convert_to_numpy(result[k]), dtype=np.float64)
            for k in order
            if k in result
        }

    def _loss(self, named, cotangents):
        total = 0.0
        for key, value in named.items():
            total = total + ops.sum(value * self._tensor(cotangents[key]))
        return total

    def gradients(self, cotangents):
        """Autodiff gradients of the cotangent loss at `self.values`."""
        differentiated = ["x"]
        if self.use_initial_state:
            differentiated += ["h0", "c0"]
        differentiated += self.weight_names
        if self.backend == "tensorflow":
            grads = self._tensorflow_gradients(cotangents)
        elif self.backend == "jax":
            grads = self._jax_gradients(cotangents)
        elif self.backend == "torch":
            grads = self._torch_gradients(cotangents)
        else:
            raise ValueError(
                f"Unsupported Keras backend {self.backend!r}; expected "
                "'tensorflow', 'jax' or 'torch'."
            )
        return {
            name: np.asarray(ops.convert_to_numpy(g), dtype=np.float64)
            for name, g in zip(differentiated, grads, strict=True)
        }

    def _tensorflow_gradients(self, cotangents):
        import tensorflow as tf

        x = self._tensor(self.values["x"])
        h0 = self._tensor(self.values["h0"])
        c0 = self._tensor(self.values["c0"])
        sources = [x] + ([h0, c0] if self.use_initial_state else [])
        variables = [getattr(self.cell, n) for n in self.weight_names]
        with tf.GradientTape() as tape:
            tape.watch(sources)
            self._set_dropout_masks(
                self._tensor(self.input_dropout_mask),
                self._tensor(self.recurrent_dropout_mask),
            )
            result = self.layer(x, **self._call_kwargs(h0, c0))
            loss = self._loss(self._name_outputs(result), cotangents)
        grads = tape.gradient(
            loss,
            sources + [v.value for v in variables],
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
        return grads

    def _jax_gradients(self, cotangents):
        import jax

        input_mask = self._tensor(self.input_dropout_mask)
        recurrent_mask = self._tensor(self.recurrent_dropout_mask)

        def loss_fn(x, h0, c0, weights):
            named = self._stateless(
                x, h0, c0, weights, input_mask, recurrent_mask
            )
            return self._loss(named, cotangents)

        x = self._tensor(self.values["x"])
        h0 = self._tensor(self.values["h0"])
        c0 = self._tensor(self.values["c0"])
        weights = [self._tensor(self.values[n]) for n in self.weight_names]
        d_x, d_h0, d_c0, d_weights = jax.grad(loss_fn, argnums=(0, 1, 2, 3))(
            x, h0, c0, weights
        )
        initial = [d_h0, d_c0] if self.use_initial_state else []
        return [d_x] + initial + list(d_weights)

    def _torch_gradients(self, cotangents):
        import torch

        def leaf(value):
            return self._tensor(value).detach().clone().requires_grad_(True)

        x = leaf(self.values["x"])
        h0 = leaf(self.values["h0"])
        c0 = leaf(self.values["c0"])
        sources = [x] + ([h0, c0] if self.use_initial_state else [])
        weights = [getattr(self.cell, n).value for n in self.weight_names]
        self._set_dropout_masks(
            self._tensor(self.input_dropout_mask),
            self._tensor(self.recurrent_dropout_mask),
        )
        result = self.layer(x, **self._call_kwargs(h0, c0))
        loss = self._loss(self._name_outputs(result), cotangents)
        grads = torch.autograd.grad(loss, sources + weights, allow_unused=True)
        return [
            torch.zeros_like(s) if g is None else g
            for s, g in zip(sources + weights, grads, strict=True)
        ]
