"""What a SavedModel's graph holds: its ops, and whether it can be served.

`nonstandard_ops` finds what TF Serving could not run without this package
(custom ops, Python functions, cuDNN-only ops); `state_writes` finds a
signature that writes variables; `describe` prints the signatures like
`saved_model_cli show`.
"""

import os

import tensorflow as tf

# The signature TF Serving calls when a request names none.
SIGNATURE = "serving_default"

# Ops that make a graph unservable without our Python, or without a GPU,
# although TensorFlow registers them.
FORBIDDEN_OP_PREFIXES = ("PyFunc", "EagerPyFunc", "CudnnRNN")
# Ops that write state: a serving graph must read variables only.
STATEFUL_WRITE_OPS = frozenset(
    {
        "AssignVariableOp",
        "AssignAddVariableOp",
        "AssignSubVariableOp",
        "Assign",
        "AssignAdd",
        "AssignSub",
        "LookupTableInsertV2",
        "LookupTableRemoveV2",
        "LookupTableImportV2",
        "ResourceScatterUpdate",
        "ResourceScatterAdd",
    }
)


def _read_saved_model(path):
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    return saved_model


def _called_functions(node):
    """Names of the library functions a node calls (`f`, `body`, ...)."""
    for value in node.attr.values():
        if value.HasField("func"):
            yield value.func.name
        for function in value.list.func:
            yield function.name


def graph_ops(path, signature=None):
    """The op types of a SavedModel's graph, library functions included.

    Args:
        path: A SavedModel folder.
        signature: `None` for every op of the SavedModel (its signatures,
            the variables' restore and save functions, the tables'
            initializers), or a signature's name for only the ops that
            computing that signature's outputs may run.

    Returns:
        A `set` of op type names.
    """
    saved_model = _read_saved_model(path)
    ops = set()
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        library = {f.signature.name: f for f in graph.library.function}
        if signature is None:
            ops.update(node.op for node in graph.node)
            for function in library.values():
                ops.update(node.op for node in function.node_def)
            continue
        if signature not in meta_graph.signature_def:
            raise ValueError(
                f"Argument `signature`: {path!r} has no signature "
                f"{signature!r}; it has {sorted(meta_graph.signature_def)}."
            )
        # The output tensors' nodes and everything upstream of them.
        nodes = {node.name: node for node in graph.node}
        outputs = meta_graph.signature_def[signature].outputs.values()
        pending = [output.name.split(":")[0] for output in outputs]
        seen, functions = set(), []
        while pending:
            name = pending.pop()
            if name in seen or name not in nodes:
                continue
            seen.add(name)
            node = nodes[name]
            ops.add(node.op)
            functions.extend(_called_functions(node))
            pending.extend(i.lstrip("^").split(":")[0] for i in node.input)
        visited = set()
        while functions:
            name = functions.pop()
            if name in visited or name not in library:
                continue
            visited.add(name)
            for node in library[name].node_def:
                ops.add(node.op)
                functions.extend(_called_functions(node))
    return ops


def nonstandard_ops(path):
    """The ops of a SavedModel that TF Serving could not run on its own.

    Those outside TensorFlow's own ops (`tf.raw_ops`, which holds no op of
    a library loaded at run time), Python functions (`PyFunc`,
    `EagerPyFunc`), and cuDNN's RNNs (GPU only).

    Args:
        path: A SavedModel folder.

    Returns:
        A `set` of op type names; empty when the graph is servable.
    """
    standard = set(dir(tf.raw_ops))
    return {
        op
        for op in graph_ops(path)
        if op not in standard or op.startswith(FORBIDDEN_OP_PREFIXES)
    }


def state_writes(path, signature=SIGNATURE):
    """The ops of a signature that write variables or tables.

    A stateless signature, whose answer to a request does not depend on
    earlier requests, has none. (Restoring the variables when the model
    loads writes them, but outside the signatures.)

    Args:
        path: A SavedModel folder.
        signature: The signature's name. Defaults to `"serving_default"`.

    Returns:
        A `set` of op type names; empty when the signature is stateless.
    """
    return graph_ops(path, signature) & STATEFUL_WRITE_OPS


def describe(path):
    """The SavedModel's signatures, as text (like `saved_model_cli show`)."""
    loaded = tf.saved_model.load(path)
    lines = []
    for name, function in sorted(loaded.signatures.items()):
        lines.append(f"signature {name!r}:")
        inputs = function.structured_input_signature[1]
        for key, value in sorted(inputs.items()):
            lines.append(
                f"  input  {key}: {value.dtype.name} {shape_list(value.shape)}"
            )
        for key, value in sorted(function.structured_outputs.items()):
            lines.append(
                f"  output {key}: {value.dtype.name} {shape_list(value.shape)}"
            )
    return "\n".join(lines)


def shape_list(shape):
    """A `TensorShape` as a list, `-1` for unknown dimensions."""
    return [-1 if d is None else int(d) for d in shape]
