"""Backprop, verified: the LSTM's gradients checked three independent ways.

For one small `lstm_keras.LSTM` with random weights, this package computes the
gradients of a scalar loss with respect to the inputs, both initial states
and every weight in three ways, and compares them:

1. **Autodiff** of the real layer on the active Keras backend
   (`tf.GradientTape` on TensorFlow, `jax.grad` over `layer.stateless_call`
   on JAX, `torch.autograd` on torch).
2. **Reference backpropagation through time**, derived by hand and written
   in NumPy (float64) in `reference_backward`, next to its forward pass
   `reference_forward`.
3. **Central finite differences** of the real layer's forward pass, in
   float64, for every entry of every tensor (or a random sample of entries).

The loss is `L = sum(outputs * G_out) + sum(h_T * G_h) + sum(c_T * G_c)` with
fixed random cotangents `G`, so that every output and both final states
carry gradient. `check_gradients` runs one configuration and returns a table;
the `lstm-keras-gradcheck` command (`training/gradcheck.py`) prints the
table for each of `CONFIGURATIONS`.

Errors are normwise per tensor: for a computed tensor `a` and a reference
`b`, `abs_error = max|a - b|` and
`rel_error = max|a - b| / max(max|b|, tiny)`, with `tiny` the smallest
positive normal float64; one large wrong entry cannot hide behind small
correct ones, and near-zero entries of `b` do not blow the ratio up.

The reference covers only the layer's default activations (`tanh` for the
candidate and cell output, `sigmoid` for the gates), with or without each of
the variants (`use_peepholes`, `layer_norm`, `projection_units`), whose
weights are checked like the others.

The package, one module per part, each readable on its own:

- `reference`: the NumPy forward pass and hand-derived BPTT;
- `numerics`: finite differences, `max_errors` and `float64_mode`;
- `autodiff`: the real layer's forward pass and autodiff on each backend;
- `check`: `check_gradients` (its `GradcheckConfig`, `run_check`), its
  `CONFIGURATIONS` and its result table.

Every public name is importable from `lstm_keras.gradcheck` itself.
"""

from lstm_keras.gradcheck.check import CONFIGURATIONS
from lstm_keras.gradcheck.check import DEFAULT_FD_RTOL
from lstm_keras.gradcheck.check import DEFAULT_RTOL
from lstm_keras.gradcheck.check import MASK_KINDS
from lstm_keras.gradcheck.check import GradcheckConfig
from lstm_keras.gradcheck.check import GradcheckResult
from lstm_keras.gradcheck.check import TensorCheck
from lstm_keras.gradcheck.check import check_gradients
from lstm_keras.gradcheck.numerics import float64_mode
from lstm_keras.gradcheck.numerics import max_errors
from lstm_keras.gradcheck.numerics import numerical_gradients
from lstm_keras.gradcheck.reference import TENSOR_NAMES
from lstm_keras.gradcheck.reference import reference_backward
from lstm_keras.gradcheck.reference import reference_forward

__all__ = [
    "CONFIGURATIONS",
    "DEFAULT_FD_RTOL",
    "DEFAULT_RTOL",
    "MASK_KINDS",
    "TENSOR_NAMES",
    "GradcheckConfig",
    "GradcheckResult",
    "TensorCheck",
    "check_gradients",
    "float64_mode",
    "max_errors",
    "numerical_gradients",
    "reference_backward",
    "reference_forward",
]
