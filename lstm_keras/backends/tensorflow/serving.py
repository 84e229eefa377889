"""The path exported graphs run: `lstm_keras.LSTM` on stock TensorFlow ops.

While a graph is traced for export (`export_context.exporting()`), the
custom-op and cuDNN paths decline, and `lstm_sequence` here runs the layer
with ops that every TensorFlow build has (so TF Serving too), choosing at
run time between three implementations that give the generic path's
outputs and states:

- `BlockLSTM`, TensorFlow's fused LSTM kernel, for small batches (up to
  `BLOCK_LSTM_MAX_BATCH` rows) without a mask or with a right-padded one
  (per-row lengths; `go_backwards` through `tf.reverse_sequence`). One op
  runs the whole sequence, so a batch of one row pays no per-step loop
  overhead.
- Packed loops for larger right-padded batches, what a server's batcher
  builds from requests of different lengths. The rows are sorted by
  length, so that the rows still running at any step are a leading block,
  and each stretch of steps over which that block stays the same runs
  unmasked over it alone, with its input projection in one matmul: the
  padding costs no arithmetic and no per-step selects.
- A masked `tf.while_loop` over time for any other mask (left padding,
  holes) and for unmasked batches, with the input projection `x @ W + b`
  of every step in one matmul before the loop.

The loops split the rows into `LOOP_SHARDS` independent loops that
TensorFlow runs concurrently, since one step's `h_prev @ U` is too small
to keep two cores busy. The two directions of a
`keras.layers.Bidirectional` already run concurrently, and splitting them
too makes four loops contend for the cores, so its layers (which Keras
names `forward_*` and `backward_*`) run one loop each. A loop step is a
dozen small ops, each paid for in the executor's overhead as much as in
arithmetic, so the gates are reordered to make the three sigmoid gates
one op.

Covered: float32, `activation` tanh, `recurrent_activation` sigmoid, with or
without bias, peepholes (the cell's peepholes are `BlockLSTM`'s), initial
states, `go_backwards`, `return_sequences`, `zero_output_for_mask`, and any
mask. Declined (the generic loop runs): layer norm, projection, other
activations or dtypes, and dropout while training.
"""

import weakref

import keras
import tensorflow as tf

from lstm_keras.backends.tensorflow import cudnn
from lstm_keras.backends.tensorflow import export_context
from lstm_keras.fast_path_conditions import standard_lstm_mismatch
from lstm_keras.lstm_cell import LSTMCell

# Rows up to which BlockLSTM beats the sharded loop on a 2-core x86-64.
BLOCK_LSTM_MAX_BATCH = 4
LOOP_SHARDS = 2


def _decline(reason):
    raise NotImplementedError(f"TensorFlow serving path: {reason}")


def stock_op_mismatch(layer, sequences, training):
    """Why the stock-op paths (this one, LiteRT's) cannot run the layer.

    Returns:
        A reason, or `None` when they cover the configuration.
    """
    reason = standard_lstm_mismatch(
        layer,
        training,
        cudnn.TANH,
        cudnn.SIGMOID,
        allow_peepholes=True,
        allow_unroll=True,
    )
    if reason:
        return reason
    if training and layer.cell.dropout > 0:
        return "dropout while training"
    if sequences.dtype != tf.float32 or layer.cell.kernel.dtype != "float32":
        return f"dtype {sequences.dtype.name} (float32 only)"
    return None


def check_supported(layer, sequences, training):
    """Raises `NotImplementedError` unless this path computes the layer."""
    if not export_context.exporting():
        _decline("not tracing for export")
    reason = stock_op_mismatch(layer, sequences, training)
    if reason:
        _decline(reason)


def lstm_sequence(layer, sequences, initial_state, mask, training):
    """The serving path; arguments and result as `dispatch.lstm_sequence`.

    Returns `(last_output, outputs, [h, c])` with `outputs` `(batch, 1,
    units)` unless `layer.return_sequences`.
    """
    check_supported(layer, sequences, training)
    if export_context.tracing_for_litert():
        _decline("tracing for the TFLite converter (the LiteRT path's)")
    # A served request may have no timesteps, which the layer refuses when
    # the shape is known; refuse it here too, naming the layer.
    no_steps = tf.debugging.assert_positive(
        tf.shape(sequences)[1],
        message=f"LSTM layer {layer.name!r}: the sequences have no timesteps",
    )
    with tf.control_dependencies([no_steps]):
        sequences = tf.identity(sequences)
    weights = _Weights(layer.cell)
    h0, c0 = (tf.convert_to_tensor(s) for s in initial_state)
    batch = tf.shape(sequences)[0]
    small = batch <= BLOCK_LSTM_MAX_BATCH
    if mask is None:
        branches = [
            lambda: _block_unmasked(layer, weights, sequences, h0, c0),
            lambda: _sharded_loop(layer, weights, sequences, None, h0, c0),
        ]
        branch = tf.where(small, 0, 1)
    else:
        mask = tf.cast(mask, tf.bool)
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        timesteps = tf.shape(mask)[1]
        right_padded = tf.reduce_all(
            tf.equal(mask, tf.sequence_mask(lengths, timesteps))
        )

        def zero_padded():
            # Padding may hold anything (NaN too): zero it, as the generic
            # path, where it is read. The packed loops never read it.
            return tf.where(mask[:, :, None], sequences, 0.0)

        branches = [
            lambda: _block_right_padded(
                layer, weights, zero_padded(), lengths, h0, c0
            ),
            lambda: _packed_loops(layer, weights, sequences, lengths, h0, c0),
            lambda: _sharded_loop(layer, weights, zero_padded(), mask, h0, c0),
        ]
        branch = tf.where(right_padded, tf.where(small, 0, 1), 2)
    known = tf.get_static_value(branch)
    if known is not None:
        last_output, outputs, h, c = branches[int(known)]()
    else:
        last_output, outputs, h, c = tf.switch_case(branch, branches)
    return last_output, outputs, [h, c]


# The gate order of the columns of each kernel: Keras's and the layer's
# (input, forget, candidate, output); `BlockLSTM`'s (input, candidate,
# forget, output); the loops' (`_cell`).
KERAS_GATES = "ifco"
BLOCK_GATES = "icfo"
LOOP_GATES = "ifoc"


class _Weights:
    """The cell's weights as tensors, read once per call.

    `kernel` and `recurrent_kernel` have their gate columns in the order
    `gates` names; `bias` and the peepholes are the cell's. In an
    `ExportArchive`'s endpoints (not LiteRT's) `W` and `U` are read from
    the cell's stacked kernel (`stacked_kernel`), `BlockLSTM`'s `w`, so
    that the served graph does not assemble it on every request; `stacked`
    is then that tensor, else `None`.
    """

    def __init__(self, cell):
        units = cell.units
        self.units = units
        self.stacked = None
        if export_context.tracing_export_archive() and (
            not export_context.tracing_for_litert()
            or export_context.litert_in_serving_export()
        ):
            self.stacked = tf.convert_to_tensor(stacked_kernel(cell))
            self.gates = BLOCK_GATES
            # Row slices: views of `stacked`, not copies.
            features = cell.kernel.shape[0]
            self.kernel = self.stacked[:features]
            self.recurrent_kernel = self.stacked[features:]
        else:
            self.gates = KERAS_GATES
            self.kernel = tf.convert_to_tensor(cell.kernel)
            self.recurrent_kernel = tf.convert_to_tensor(cell.recurrent_kernel)
        if cell.use_bias:
            self.bias = tf.convert_to_tensor(cell.bias)
        else:
            self.bias = tf.zeros([4 * units], tf.float32)
        self.use_peepholes = bool(getattr(cell, "use_peepholes", False))
        if self.use_peepholes:
            self.peepholes = [
                tf.convert_to_tensor(w)
                for w in (
                    cell.input_peephole,
                    cell.forget_peephole,
                    cell.output_peephole,
                )
            ]
        else:
            self.peepholes = [tf.zeros([units], tf.float32)] * 3

    @classmethod
    def from_tensors(cls, units, kernel, recurrent_kernel, bias):
        """The weights of a cell without peepholes, from tensors."""
        weights = cls.__new__(cls)
        weights.units = units
        weights.gates = KERAS_GATES
        weights.kernel = kernel
        weights.recurrent_kernel = recurrent_kernel
        weights.stacked = None
        weights.bias = bias
        weights.use_peepholes = False
        weights.peepholes = [tf.zeros([units], tf.float32)] * 3
        return weights

    def kernels_in(self, gates):
        """`(kernel, recurrent_kernel)` with their columns in `gates` order."""
        if gates == self.gates:
            return self.kernel, self.recurrent_kernel
        columns = _gate_columns(self.units, self.gates, gates)
        return (
            tf.gather(self.kernel, columns, axis=1),
            tf.gather(self.recurrent_kernel, columns, axis=1),
        )

    def in_loop_order(self):
        """These weights with the gates as `_cell` takes them.

        `(input, forget, output, candidate)`: without peepholes the three
        sigmoid gates are then one contiguous block, one op per step.
        """
        loop = _Weights.__new__(_Weights)
        loop.__dict__.update(self.__dict__)
        loop.stacked = None
        loop.gates = LOOP_GATES
        loop.kernel, loop.recurrent_kernel = self.kernels_in(LOOP_GATES)
        loop.bias = tf.gather(
            self.bias, _gate_columns(self.units, KERAS_GATES, LOOP_GATES)
        )
        return loop

    def block_kernel(self):
        """`[W; U]` with the gates in `BlockLSTM`'s order: its `w`."""
        if self.stacked is not None:
            return self.stacked
        joined = tf.concat([self.kernel, self.recurrent_kernel], axis=0)
        columns = _gate_columns(self.units, self.gates, BLOCK_GATES)
        return tf.gather(joined, columns, axis=1)

    def block_bias(self):
        """The bias with the gates in `BlockLSTM`'s order."""
        columns = _gate_columns(self.units, KERAS_GATES, BLOCK_GATES)
        return tf.gather(self.bias, columns)


def _gate_columns(units, source, target):
    """Column indices that take `source`-ordered gates to `target` order."""
    blocks = [source.index(gate) for gate in target]
    return tf.concat(
        [tf.range(b * units, (b + 1) * units) for b in blocks], axis=0
    )


# cell -> its stacked kernel variable, for as long as the cell lives.
_STACKED_KERNELS = weakref.WeakKeyDictionary()


def create_stacked_kernels(archive):
    """Creates the stacked kernel of every cell an `ExportArchive` tracks.

    Run eagerly when `write_out` starts (`export_context`), before any
    endpoint is traced: a `tf.function` that was traced in-process before
    the export may not create variables when it is traced again for it.
    """
    for root in getattr(archive, "_tracked", []):
        if not isinstance(root, keras.layers.Layer):
            continue
        for layer in root._flatten_layers():
            cell = getattr(layer, "cell", None)
            if isinstance(cell, LSTMCell) and cell.built:
                stacked_kernel(cell)


def stacked_kernel(cell):
    """A variable holding the cell's `[W; U]` in `BlockLSTM`'s gate order.

    Created the first time an export traces the cell and given the cell's
    current weights at every trace (outside the graph), so an export
    saves the weights it is made with. The served graph reads `W` and `U`
    from it alone: a reload fine-tuned through `keras.layers.TFSMLayer`
    trains it (it is trainable where `W` is) and every branch of the
    graph sees the update. The cell's own `W` and `U` are saved beside it
    when the export tracks the model, unused by the graph.

    Returns:
        The variable.
    """
    with tf.init_scope():
        joined = tf.concat(
            [cell.kernel.value, cell.recurrent_kernel.value], axis=0
        )
        columns = _gate_columns(cell.units, KERAS_GATES, BLOCK_GATES)
        value = tf.gather(joined, columns, axis=1)
        variable = _STACKED_KERNELS.get(cell)
        if variable is None or variable.shape != value.shape:
            variable = tf.Variable(
                value,
                trainable=cell.trainable and cell.kernel.trainable,
                name=f"{cell.name}_stacked_kernel",
            )
            _STACKED_KERNELS[cell] = variable
        else:
            variable.assign(value)
    return variable


def _finish(layer, outputs, h, c):
    """`(last_output, outputs, h, c)` from batch-major `outputs`."""
    last_output = outputs[:, -1]
    if not layer.return_sequences:
        outputs = last_output[:, None]
    return last_output, outputs, h, c


def _block_lstm(weights, x, h0, c0, seq_len_max):
    """`BlockLSTM` over batch-major `x`: time-major `(h, c)` sequences.

    `BlockLSTM`, not `BlockLSTMV2` (the same kernel, with Keras's gate
    order and no forget bias): TensorFlow registers V2's gradient as
    V1's, which reads the gates in V1's order, so a graph on V2 gives
    wrong gradients to anyone who differentiates a reloaded export.
    """
    i_peep, f_peep, o_peep = weights.peepholes
    outputs = tf.raw_ops.BlockLSTM(
        seq_len_max=tf.cast(seq_len_max, tf.int64),
        x=tf.transpose(x, [1, 0, 2]),
        cs_prev=c0,
        h_prev=h0,
        w=weights.block_kernel(),
        wci=i_peep,
        wcf=f_peep,
        wco=o_peep,
        b=weights.block_bias(),
        forget_bias=0.0,
        # No clipping: a cell_clip of 0 or less turns it off.
        cell_clip=-1.0,
        use_peephole=weights.use_peepholes,
    )
    return outputs.h, outputs.cs


def _block_unmasked(layer, weights, x, h0, c0):
    if layer.go_backwards:
        x = tf.reverse(x, axis=[1])
    h_seq, c_seq = _block_lstm(weights, x, h0, c0, tf.shape(x)[1])
    h, c = h_seq[-1], c_seq[-1]
    if not layer.return_sequences:
        return h, h[:, None], h, c
    return _finish(layer, tf.transpose(h_seq, [1, 0, 2]), h, c)


def _block_right_padded(layer, weights, x, lengths, h0, c0):
    """`BlockLSTM` over rows of real steps then padding.

    The kernel runs every row to the longest length; each row's state is
    read at its own last real step (`h0`, `c0` for a row of no real step).
    """

    def run(x):
        # An empty batch's maximum is the lowest int32, which the kernel
        # would take for a length.
        longest = tf.maximum(tf.reduce_max(lengths), 0)
        h_seq, c_seq = _block_lstm(weights, x, h0, c0, longest)
        rows = tf.range(tf.shape(lengths)[0])
        last_step = tf.stack([tf.maximum(lengths - 1, 0), rows], axis=1)
        has_real = (lengths > 0)[:, None]
        h = tf.where(has_real, tf.gather_nd(h_seq, last_step), h0)
        c = tf.where(has_real, tf.gather_nd(c_seq, last_step), c0)
        return h_seq, h, c

    return _right_padded_results(layer, run, x, lengths, h0)


def _right_padded_results(layer, run, x, lengths, h0):
    """The generic path's results for right-padded rows, from `run(x)`.

    `run(x)` takes batch-major `x` whose rows are real steps then padding
    and returns `(h_seq, h, c)`: time-major outputs (anything at padded
    steps; only read with `return_sequences`) and each row's state after
    its last real step. Backwards, each row is reversed within its length,
    so that its padding stays at the end, and the outputs are put back in
    processing order, where the padding's steps come first.
    """
    if layer.go_backwards:
        x = tf.reverse_sequence(x, lengths, seq_axis=1, batch_axis=0)
    h_seq, h, c = run(x)
    has_real = (lengths > 0)[:, None]
    last_real_output = tf.where(has_real, h, tf.zeros_like(h))
    timesteps = tf.shape(x)[1]
    if not layer.return_sequences:
        # The last step's output: real (h) for a full row, else padding:
        # zeros with `zero_output_for_mask`, else the last real output.
        # Backwards, the last step processed is a row's first real one.
        last_output = last_real_output
        if layer.zero_output_for_mask and not layer.go_backwards:
            full = (lengths == timesteps)[:, None]
            last_output = tf.where(full, h, tf.zeros_like(h))
        return last_output, last_output[:, None], h, c
    outputs = tf.transpose(h_seq, [1, 0, 2])
    is_real = tf.sequence_mask(lengths, timesteps)[:, :, None]
    # The output at a padded step: zeros before any real step, and after
    # the last one zeros with `zero_output_for_mask`, else the last output.
    if layer.go_backwards or layer.zero_output_for_mask:
        padding = tf.zeros_like(outputs)
    else:
        padding = tf.broadcast_to(last_real_output[:, None], tf.shape(outputs))
    outputs = tf.where(is_real, outputs, padding)
    if layer.go_backwards:
        outputs = tf.reverse_sequence(
            outputs, lengths, seq_axis=1, batch_axis=0
        )
        outputs = tf.reverse(outputs, axis=[1])
    return _finish(layer, outputs, h, c)


def _in_bidirectional(layer):
    return layer.name.startswith(("forward_", "backward_"))


def _shards(layer):
    return 1 if _in_bidirectional(layer) else LOOP_SHARDS


def _sharded_loop(layer, weights, x, mask, h0, c0):
    """`_loop` on `LOOP_SHARDS` slices of the batch, run concurrently."""
    shards = _shards(layer)
    weights = weights.in_loop_order()
    if shards == 1:
        return _loop(layer, weights, x, mask, h0, c0)
    batch = tf.shape(x)[0]
    shard = tf.range(shards)
    # Rows as evenly as they go: the first `batch % shards` get one more.
    sizes = batch // shards + tf.cast(shard < batch % shards, tf.int32)
    parts = [
        tf.split(t, sizes, axis=0, num=shards)
        if t is not None
        else [None] * shards
        for t in (x, mask, h0, c0)
    ]
    results = [
        _loop(layer, weights, *part) for part in zip(*parts, strict=True)
    ]
    return tuple(
        tf.concat(pieces, axis=0) for pieces in zip(*results, strict=True)
    )


def _packed_loops(layer, weights, x, lengths, h0, c0):
    """Right-padded rows, each run only over its real steps.

    The rows are sorted longest first and dealt round-robin to
    `LOOP_SHARDS` loops (so the shards' lengths stay even), where the
    active rows of a step are always a leading block: `_packed_loop` runs
    each stretch of steps over that block alone, with no mask at all, so
    the padding costs neither arithmetic nor per-step selects.
    """
    shards = _shards(layer)
    weights = weights.in_loop_order()
    order = tf.argsort(lengths, direction="DESCENDING", stable=True)
    # Shard k takes the sorted rows k, k + shards, ...; `dealt` lists the
    # original row of each row of the shards' concatenated results.
    shard_rows = [order[k::shards] for k in range(shards)]
    dealt = tf.concat(shard_rows, axis=0)

    def run(x):
        # Time-major, so that a stretch of steps is one contiguous slice.
        x = tf.transpose(x, [1, 0, 2])
        parts = []
        for rows in shard_rows:
            parts.append(
                _packed_loop(
                    weights,
                    tf.gather(x, rows, axis=1),
                    *(tf.gather(t, rows) for t in (lengths, h0, c0)),
                    return_sequences=layer.return_sequences,
                )
            )
        h_seqs, hs, cs = zip(*parts, strict=True)
        back = tf.argsort(dealt)
        h = tf.gather(tf.concat(hs, axis=0), back)
        c = tf.gather(tf.concat(cs, axis=0), back)
        h_seq = None
        if layer.return_sequences:
            h_seq = tf.gather(tf.concat(h_seqs, axis=1), back, axis=1)
        return h_seq, h, c

    return _right_padded_results(layer, run, x, lengths, h0)


def _projection(weights, x):
    """`x @ W + b` of every step, time-major `(timesteps, batch, 4 units)`.

    One matmul before the loop instead of one small one per step.
    """
    return _time_major_projection(weights, tf.transpose(x, [1, 0, 2]))


def _time_major_projection(weights, x):
    """`x @ W + b` of time-major `x` `(timesteps, batch, features)`."""
    timesteps, batch, features = tf.unstack(tf.shape(x))
    # `bias_add`, not `+`: grappler fuses it into the matmul, where a
    # separate add of the whole projection costs as much as the product.
    z_x = tf.nn.bias_add(
        tf.matmul(tf.reshape(x, [-1, features]), weights.kernel), weights.bias
    )
    return tf.reshape(z_x, [timesteps, batch, 4 * weights.units])


def _cell(weights, z_x_t, h_prev, c_prev):
    """One step from its input projection: `(h, c)`.

    `weights` are `in_loop_order()`. Every op is paid for per step in the
    executor's overhead as much as in arithmetic, so the step has as few
    as the configuration allows.
    """
    units = weights.units
    z = z_x_t + tf.matmul(h_prev, weights.recurrent_kernel)
    if not weights.use_peepholes:
        z_ifo, z_c = tf.split(z, [3 * units, units], axis=1)
        i, f, o = tf.split(tf.sigmoid(z_ifo), 3, axis=1)
        c = f * c_prev + i * tf.tanh(z_c)
        return o * tf.tanh(c), c
    z_i, z_f, z_o, z_c = tf.split(z, 4, axis=1)
    i_peep, f_peep, o_peep = weights.peepholes
    c = tf.sigmoid(z_f + f_peep * c_prev) * c_prev + tf.sigmoid(
        z_i + i_peep * c_prev
    ) * tf.tanh(z_c)
    return tf.sigmoid(z_o + o_peep * c) * tf.tanh(c), c


def _packed_loop(weights, x, lengths, h0, c0, return_sequences):
    """Rows sorted longest first, each run over its real steps alone.

    `x` is time-major, `(timesteps, batch, features)`. Returns `(h_seq,
    h, c)` as `_right_padded_results`'s `run`. The steps fall into
    stretches over which the active rows (those whose length is past the
    step) stay the same leading block: an outer loop takes one stretch at a
    time and an inner loop runs its steps over the block with no mask,
    while the finished rows keep their state.
    """
    timesteps = tf.shape(x)[0]
    # An empty batch's maximum is the lowest int32.
    longest = tf.maximum(tf.reduce_max(lengths), 0)
    if return_sequences:
        h_seq = tf.TensorArray(tf.float32, size=timesteps)

    def stretch(t, h, c, *h_seq):
        active = tf.reduce_sum(tf.cast(lengths > t, tf.int32))
        end = lengths[active - 1]
        done_h, done_c = h[active:], c[active:]
        # The input projection of the stretch's real steps only, in one
        # matmul: padding costs no arithmetic.
        start = t
        z_x = _time_major_projection(weights, x[start:end, :active])

        def step(i, h_prev, c_prev, *h_seq):
            h_next, c_next = _cell(weights, z_x[i], h_prev, c_prev)
            if return_sequences:
                # The finished rows' entries are padding, replaced later.
                h_next_all = tf.concat([h_next, done_h], 0)
                h_seq = [h_seq[0].write(start + i, h_next_all)]
            return (i + 1, h_next, c_next, *h_seq)

        steps = end - start
        _, h, c, *h_seq = tf.while_loop(
            lambda i, *_: i < steps,
            step,
            (0, h[:active], c[:active], *h_seq),
        )
        return (
            end,
            tf.concat([h, done_h], axis=0),
            tf.concat([c, done_c], axis=0),
            *h_seq,
        )

    state = (tf.constant(0), h0, c0) + ((h_seq,) if return_sequences else ())
    # The state is put back together from two blocks of rows after each
    # stretch, which loses a batch size known at trace time.
    rows = tf.TensorShape([None, weights.units])
    _, h, c, *h_seq = tf.while_loop(
        lambda t, *_: t < longest,
        stretch,
        state,
        shape_invariants=(tf.TensorShape([]), rows, rows)
        + ((tf.TensorShape(None),) if return_sequences else ()),
    )
    if not return_sequences:
        return None, h, c
    # The steps after every row's end are padding.
    rest = tf.range(longest, timesteps)
    h_seq = h_seq[0].scatter(
        rest, tf.broadcast_to(h, [tf.size(rest), *tf.unstack(tf.shape(h))])
    )
    return h_seq.stack(), h, c


def _loop(layer, weights, x, mask, h0, c0, return_sequences=None, array=True):
    """The LSTM over time in a `tf.while_loop`, masked as the generic path.

    A masked step keeps `h` and `c` and outputs zeros with
    `zero_output_for_mask`, else the previous step's output (zeros before
    the first real step). `return_sequences` overrides the layer's. With
    `array=False` the outputs are gathered without a `tf.TensorArray`, by
    adding each step's into a time-major tensor at its one-hot position:
    the TFLite converter lowers an array only when its element shape is
    static, so not at a free batch size.
    """
    if layer.go_backwards:
        x = tf.reverse(x, axis=[1])
        mask = None if mask is None else tf.reverse(mask, axis=[1])
    z_x = _projection(weights, x)
    timesteps = tf.shape(z_x)[0]
    if mask is not None:
        # (timesteps, batch, 1); `expand_dims`, not `[:, :, None]`, which
        # the TFLite converter cannot take at a free batch size.
        mask = tf.expand_dims(tf.transpose(mask), -1)
    if return_sequences is None:
        return_sequences = layer.return_sequences

    # Each loop variable and op costs the executor per step, so only what
    # the configuration needs is carried: the outputs with
    # `return_sequences`, and the previous output only where a masked step
    # repeats it (`return_sequences` without `zero_output_for_mask`).
    # Otherwise the last output is found after the loop: `h` stops at each
    # row's last real step, so it is that step's output.
    carry_output = (
        mask is not None and return_sequences and not layer.zero_output_for_mask
    )

    def step(t, h_prev, c_prev, *carried):
        carried = list(carried)
        h, c = _cell(weights, tf.gather(z_x, t), h_prev, c_prev)
        output = h
        if mask is not None:
            is_real = tf.gather(mask, t)
            if carry_output:
                output = tf.where(is_real, h, carried[0])
                carried[0] = output
            elif return_sequences:
                output = tf.where(is_real, h, 0.0)
            h = tf.where(is_real, h, h_prev)
            c = tf.where(is_real, c, c_prev)
        if return_sequences and array:
            carried[-1] = carried[-1].write(t, output)
        elif return_sequences:
            at_t = tf.cast(tf.equal(tf.range(timesteps), t), tf.float32)
            carried[-1] += tf.reshape(at_t, [-1, 1, 1]) * output
        return (t + 1, h, c, *carried)

    initial = [tf.constant(0), h0, c0]
    if carry_output:
        initial.append(tf.zeros_like(h0))
    if return_sequences and array:
        # A known element shape, for the TFLite converter, which lowers the
        # array to builtins only then.
        initial.append(
            tf.TensorArray(tf.float32, size=timesteps, element_shape=h0.shape)
        )
    elif return_sequences:
        initial.append(tf.zeros(tf.concat([[timesteps], tf.shape(h0)], 0)))
    _, h, c, *carried = tf.while_loop(
        lambda t, *_: t < timesteps, step, tuple(initial)
    )
    last_output = h
    if mask is not None:
        # The last step's output: h if it is real; else zeros with
        # `zero_output_for_mask`, else the last real output (zeros for a
        # row of padding only).
        last_is_real = mask[-1]
        padding_output = tf.zeros_like(h)
        if not layer.zero_output_for_mask:
            any_real = tf.reduce_any(mask, axis=0)
            padding_output = tf.where(any_real, h, padding_output)
        last_output = tf.where(last_is_real, h, padding_output)
    if return_sequences:
        outputs = carried[-1].stack() if array else carried[-1]
        outputs = tf.transpose(outputs, [1, 0, 2])
    else:
        outputs = last_output[:, None]
    return last_output, outputs, h, c
