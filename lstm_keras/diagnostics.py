"""Gradient flow: where backpropagation carries a loss's gradient in an RNN.

`gradient_flow(model, inputs, targets)` measures, for one batch, how large
the loss's gradient is at every timestep of the model's recurrent layer:
with respect to the hidden state `h_t` and (LSTM) the cell state `c_t`, and
per gate with respect to the gate's pre-activation and its weights. Run it on
an LSTM model and on a `keras.layers.SimpleRNN` model of the same width to
see why LSTMs learn long-range dependencies: the RNN's gradient shrinks
geometrically with the distance from the loss, the LSTM's travels along the
cell state, `c_t = f_t * c_{t-1} + i_t * g_t`.

Supported models: a `keras.Model` (Sequential or functional) whose layers
form a single chain (each layer feeds only the next) with exactly one
recurrent layer, an `lstm_keras.LSTM` (any variant) or a
`keras.layers.SimpleRNN`, that runs forwards from zero initial states
(`go_backwards=False`, `stateful=False`, `return_state=False`) and gets no
mask. Layers before it (e.g. `Embedding`, `Dense`) and after it (e.g.
`Dense`) may be anything. The measurement runs the recurrent layer unrolled,
in inference mode (no dropout), with zero-valued probes added to each `h_t`,
`c_t` and pre-activation: the gradient of the loss with respect to a probe is
the gradient at that point. It works on the TensorFlow, JAX and torch
backends; the sequence is unrolled in Python, so keep it to a few hundred
steps.
"""

import dataclasses

import keras
import numpy as np
from keras import ops

# Where Keras 3 keeps a tensor's mask, on every backend.
from lstm_keras.compat import get_keras_mask
from lstm_keras.lstm import LSTM
from lstm_keras.lstm_cell import GATE_ORDER


@dataclasses.dataclass
class GradientFlow:
    """Per-timestep gradient norms of one model on one batch.

    All norms are Frobenius norms over the batch and the features of the
    per-example-averaged loss's gradient. Arrays are indexed by timestep
    `t` (processing order); `distance[t] = T - 1 - t` is the number of steps
    between `t` and the last step.

    Attributes:
        kind: `"lstm"` or `"simple_rnn"`.
        loss: The loss value on the batch.
        distance: `<int>[T]`, `T - 1 - t`.
        h_norm: `[T]`, `||dL/dh_t||`.
        c_norm: `[T]`, `||dL/dc_t||` (LSTM; `None` for SimpleRNN).
        gate_norms: Dict gate -> `[T]`, `||dL/dz_t||` of the gate's
            pre-activation (SimpleRNN: one gate, `"hidden"`).
        kernel_norms: Dict gate -> `[T]`, the norm of step t's share of the
            gate's feedforward weight gradient, `x_t^T dL/da_t`, where `a`
            is `x W + h U` before any layer normalization.
        recurrent_norms: Dict gate -> `[T]`, step t's share of the gate's
            recurrent weight gradient, `h_{t-1}^T dL/da_t`.
        to_h_prev_norms: Dict gate -> `[T]`, `||dL/da_t U_g^T||`: the
            gradient that reaches `h_{t-1}` through the gate.
        carry_norm: `[T]` (LSTM), `||f_{t+1} * dL/dc_{t+1}||`: the part of
            `dL/dc_t` that arrives along the cell state (NaN at the last
            step).
        other_norm: `[T]` (LSTM), the norm of the rest of `dL/dc_t` (from
            `h_t` and the peepholes).
        deltas: Dict of the raw per-step gradients, arrays `[batch, T, n]`:
            `"h"`, `"c"` (LSTM), `"z"` (final pre-activations) and `"a"`.
        kernel_gradient_norms: Dict gate -> float, the norm of the gate's
            whole feedforward weight gradient (summed over time).
        recurrent_gradient_norms: Dict gate -> float, likewise for `U`.
    """

    kind: str
    loss: float
    distance: np.ndarray
    h_norm: np.ndarray
    c_norm: np.ndarray | None
    gate_norms: dict
    kernel_norms: dict
    recurrent_norms: dict
    to_h_prev_norms: dict
    carry_norm: np.ndarray | None
    other_norm: np.ndarray | None
    deltas: dict
    kernel_gradient_norms: dict
    recurrent_gradient_norms: dict

    def rows(self, model_name=None):
        """The measurements as a tidy table: a list of dicts.

        Each row has `model`, `t`, `distance`, `quantity` (`"dL/dh"`,
        `"dL/dc"`, `"carry"`, `"other"`, `"preactivation"`, `"kernel"`,
        `"recurrent_kernel"`, `"to_h_prev"`), `gate` (empty for the states)
        and `norm`.
        """
        name = model_name or self.kind
        out = []

        def add(quantity, gate, values):
            for t, value in enumerate(values):
                out.append(
                    dict(
                        model=name,
                        t=t,
                        distance=int(self.distance[t]),
                        quantity=quantity,
                        gate=gate,
                        norm=float(value),
                    )
                )

        add("dL/dh", "", self.h_norm)
        if self.c_norm is not None:
            add("dL/dc", "", self.c_norm)
            add("carry", "", self.carry_norm)
            add("other", "", self.other_norm)
        for quantity, norms in (
            ("preactivation", self.gate_norms),
            ("kernel", self.kernel_norms),
            ("recurrent_kernel", self.recurrent_norms),
            ("to_h_prev", self.to_h_prev_norms),
        ):
            for gate, values in norms.items():
                add(quantity, gate, values)
        return out


def _split_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Argument `model` must be a keras.Model; received {model!r}."
        )
    layers = [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    recurrent = [
        k
        for k, layer in enumerate(layers)
        if isinstance(layer, (LSTM, keras.layers.SimpleRNN))
    ]
    if len(recurrent) != 1:
        raise ValueError(
            "gradient_flow supports models with exactly one recurrent layer "
            "(an lstm_keras.LSTM or a keras.layers.SimpleRNN) in a single "
            f"chain of layers; model '{model.name}' has {len(recurrent)}."
        )
    index = recurrent[0]
    layer = layers[index]
    for option in ("go_backwards", "stateful", "return_state"):
        if getattr(layer, option):
            raise ValueError(
                f"gradient_flow does not support {option}=True (layer "
                f"'{layer.name}')."
            )
    return layers[:index], layer, layers[index + 1 :]


def _chain(layers, x):
    for layer in layers:
        x = layer(x, training=False)
    return x


def _unrolled(layer, sequences, probes):
    """Runs `layer` step by step with additive probes; returns outputs, aux."""
    cell = layer.cell
    d_a, d_z, d_c, d_h = probes
    timesteps = sequences.shape[1]
    batch = ops.shape(sequences)[0]
    if isinstance(layer, LSTM):
        z_x = cell.input_projection(sequences)
        h = ops.zeros((batch, cell.recurrent_units), dtype=sequences.dtype)
        c = ops.zeros((batch, cell.units), dtype=sequences.dtype)
    else:
        z_x = ops.matmul(sequences, cell.kernel)
        if cell.bias is not None:
            z_x = z_x + cell.bias
        h = ops.zeros((batch, cell.units), dtype=sequences.dtype)
    hs, h_prevs, forgets = [], [], []
    for t in range(timesteps):
        h_prevs.append(h)
        if isinstance(layer, LSTM):
            h, c, gates = cell._step(
                z_x[:, t] + d_a[t], h, c, offsets=(d_z[t], d_c[t], d_h[t])
            )
            forgets.append(gates["forget"])
        else:
            z = z_x[:, t] + d_a[t] + ops.matmul(h, cell.recurrent_kernel)
            h = cell.activation(z + d_z[t]) + d_h[t]
        hs.append(h)
    outputs = ops.stack(hs, axis=1) if layer.return_sequences else hs[-1]
    aux = dict(h_prev=ops.stack(h_prevs, axis=1))
    if forgets:
        aux["forget"] = ops.stack(forgets, axis=1)
    return outputs, aux


def _probe_gradients(loss_fn, probes):
    """`(loss, aux, d_probes)` on the active backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(probes)
            loss, aux = loss_fn(probes)
        grads = tape.gradient(
            loss, probes, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        return loss, aux, grads
    if backend == "jax":
        import jax

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(probes)
        return loss, aux, grads
    if backend == "torch":
        import torch

        probes = [p.detach().clone().requires_grad_(True) for p in probes]
        loss, aux = loss_fn(probes)
        grads = torch.autograd.grad(loss, probes, allow_unused=True)
        grads = [
            torch.zeros_like(p) if g is None else g
            for p, g in zip(probes, grads, strict=True)
        ]
        return loss, aux, grads
    raise ValueError(
        f"gradient_flow supports the tensorflow, jax and torch backends; "
        f"the active one is {backend!r}."
    )


def _norms(array):
    """Frobenius norm per timestep of a `[batch, T, n]` array."""
    return np.sqrt((array**2).sum(axis=(0, 2)))


def gradient_flow(model, inputs, targets, loss=None):
    """Measures the gradient reaching each timestep of a model's RNN layer.

    Args:
        model: A `keras.Model` of a supported shape (see the module
            docstring): one `lstm_keras.LSTM` or `keras.layers.SimpleRNN`
            in a single chain of layers.
        inputs: The model's inputs for one batch (array-like).
        targets: The targets for that batch.
        loss: A Keras loss (name, function or `keras.losses.Loss`). Defaults
            to `None`: the compiled model's loss.

    Returns:
        A `GradientFlow`.

    Example:

    >>> x, y = lstm_keras.long_range.adding_problem(8, 20)
    >>> model = lstm_keras.long_range.build_regressor(lstm_keras.LSTM(4), 20)
    >>> flow = gradient_flow(model, x, y, loss="mse")
    >>> flow.h_norm.shape, sorted(flow.gate_norms)
    ((20,), ['candidate', 'forget', 'input', 'output'])
    """
    before, layer, after = _split_model(model)
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError(
                "Argument `loss` is needed: the model is not compiled with one."
            )
    loss_object = keras.losses.get(loss)
    dtype = layer.compute_dtype
    x = ops.convert_to_tensor(np.asarray(inputs))
    y = ops.convert_to_tensor(np.asarray(targets))
    not_a_chain = (
        f"Model '{model.name}' is not a single chain of layers: running its "
        "layers one after the other does not reproduce its output. "
        "gradient_flow supports chains only."
    )
    try:
        sequences = _chain(before, x)
        chained = ops.convert_to_numpy(_chain(after, layer(sequences)))
    except Exception as error:  # A layer that needs several inputs.
        raise ValueError(not_a_chain) from error
    if get_keras_mask(sequences) is not None:
        raise ValueError(
            f"gradient_flow does not support masks; layer '{layer.name}' "
            "receives one."
        )
    expected = ops.convert_to_numpy(model(x, training=False))
    if expected.shape != chained.shape or not np.allclose(
        expected, chained, atol=1e-5, rtol=1e-4
    ):
        raise ValueError(not_a_chain)

    cell = layer.cell
    is_lstm = isinstance(layer, LSTM)
    batch, timesteps = int(sequences.shape[0]), int(sequences.shape[1])
    units = cell.units
    gates = GATE_ORDER if is_lstm else ("hidden",)
    z_width = len(gates) * units
    h_width = cell.recurrent_units if is_lstm else units
    widths = (z_width, z_width, units, h_width)
    probes = [ops.zeros((timesteps, batch, w), dtype=dtype) for w in widths]

    def loss_fn(probes):
        outputs, aux = _unrolled(layer, sequences, probes)
        predictions = _chain(after, outputs)
        return ops.mean(loss_object(y, predictions)), aux

    value, aux, grads = _probe_gradients(loss_fn, probes)
    # [T, batch, n] -> [batch, T, n], float64 NumPy.
    d_a, d_z, d_c, d_h = (
        np.transpose(np.asarray(ops.convert_to_numpy(g), np.float64), (1, 0, 2))
        for g in grads
    )
    x_seq = np.asarray(ops.convert_to_numpy(sequences), np.float64)
    h_prev = np.asarray(ops.convert_to_numpy(aux["h_prev"]), np.float64)
    recurrent = np.asarray(
        ops.convert_to_numpy(cell.recurrent_kernel), np.float64
    )

    gate_norms, kernel_norms, recurrent_norms, to_h_prev = {}, {}, {}, {}
    kernel_totals, recurrent_totals = {}, {}
    for k, gate in enumerate(gates):
        columns = slice(k * units, (k + 1) * units)
        gate_norms[gate] = _norms(d_z[:, :, columns])
        a_gate = d_a[:, :, columns]
        # Step t's share of dW_g and dU_g: x_t^T da_t and h_{t-1}^T da_t.
        per_step_kernel = np.einsum("bti,btj->tij", x_seq, a_gate)
        per_step_recurrent = np.einsum("bti,btj->tij", h_prev, a_gate)
        kernel_norms[gate] = np.sqrt((per_step_kernel**2).sum(axis=(1, 2)))
        recurrent_norms[gate] = np.sqrt(
            (per_step_recurrent**2).sum(axis=(1, 2))
        )
        kernel_totals[gate] = float(np.linalg.norm(per_step_kernel.sum(0)))
        recurrent_totals[gate] = float(
            np.linalg.norm(per_step_recurrent.sum(0))
        )
        to_h_prev[gate] = _norms(a_gate @ recurrent[:, columns].T)

    carry = other = c_norm = None
    deltas = dict(h=d_h, z=d_z, a=d_a)
    if is_lstm:
        deltas["c"] = d_c
        c_norm = _norms(d_c)
        forget = np.asarray(ops.convert_to_numpy(aux["forget"]), np.float64)
        carried = np.zeros_like(d_c)
        carried[:, :-1] = forget[:, 1:] * d_c[:, 1:]
        carry = _norms(carried)
        carry[-1] = np.nan
        other = _norms(d_c - carried)
    return GradientFlow(
        kind="lstm" if is_lstm else "simple_rnn",
        loss=float(ops.convert_to_numpy(value)),
        distance=np.arange(timesteps)[::-1].copy(),
        h_norm=_norms(d_h),
        c_norm=c_norm,
        gate_norms=gate_norms,
        kernel_norms=kernel_norms,
        recurrent_norms=recurrent_norms,
        to_h_prev_norms=to_h_prev,
        carry_norm=carry,
        other_norm=other,
        deltas=deltas,
        kernel_gradient_norms=kernel_totals,
        recurrent_gradient_norms=recurrent_totals,
    )


def summarize(flow):
    """A few numbers that say where a `GradientFlow`'s gradient went.

    Returns:
        A dict: `loss`; `h_norm_near` and `h_norm_far`, `||dL/dh_t||` at
        distance 0 and at the farthest step, and their ratio `h_far_over_near`;
        for an LSTM the same for `c`, `carry_share` (median over steps of
        `carry / (carry + other)`: how much of `dL/dc_t` arrives along the
        cell state), and `gate_share` (each gate's share of the summed
        pre-activation gradient norms) and `gate_weight_norms` (each gate's
        whole-sequence weight gradient norm, `W` and `U` together).
    """
    near, far = -1, 0
    out = dict(
        kind=flow.kind,
        loss=flow.loss,
        h_norm_near=float(flow.h_norm[near]),
        h_norm_far=float(flow.h_norm[far]),
        h_far_over_near=float(flow.h_norm[far] / flow.h_norm[near]),
    )
    if flow.c_norm is not None:
        out.update(
            c_norm_near=float(flow.c_norm[near]),
            c_norm_far=float(flow.c_norm[far]),
            c_far_over_near=float(flow.c_norm[far] / flow.c_norm[near]),
        )
        carry, other = flow.carry_norm[:-1], flow.other_norm[:-1]
        total = carry + other
        share = np.divide(
            carry, total, out=np.zeros_like(carry), where=total > 0
        )
        out["carry_share"] = float(np.median(share))
    sums = {g: float(np.sum(v)) for g, v in flow.gate_norms.items()}
    grand = sum(sums.values()) or 1.0
    out["gate_share"] = {g: v / grand for g, v in sums.items()}
    out["gate_weight_norms"] = {
        g: float(
            np.hypot(
                flow.kernel_gradient_norms[g], flow.recurrent_gradient_norms[g]
            )
        )
        for g in flow.gate_norms
    }
    return out
