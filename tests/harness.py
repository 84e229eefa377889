"""Checks that every public layer and model passes the same way.

In the spirit of Keras's `run_layer_test` and keras-hub's
`run_backbone_test` / `run_model_saving_test` (both live in private
modules): each test file sets its arguments and inputs once and calls

- `run_layer_test(layer_cls, init_kwargs, input_data, expected_output_shape,
  tmp_path)` for a layer: config round trip, `.keras` reload in safe mode,
  symbolic against eager shapes, a training step, optionally mixed
  precision;
- `run_model_test(model, input_data, labels, tmp_path, rebuild)` for a
  model: the same, where `rebuild(config)` makes a model from a config
  ready for weights (an application adapts it to the same data).

Not a test module itself: `tests/` is on the path, so tests import it as
`import harness`.
"""

import copy
import json

import keras
import numpy as np

ATOL = 1e-6


def _to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _flat(structure):
    return keras.tree.flatten(structure)


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


def _json(config):
    # As the `.keras` file holds it: tuples become lists, and a config
    # holding anything JSON cannot (a callable, an array) fails here.
    return json.loads(json.dumps(config))


def _differences(actual, expected, path=""):
    if isinstance(actual, dict) and isinstance(expected, dict):
        for key in sorted(set(actual) | set(expected)):
            yield from _differences(
                actual.get(key), expected.get(key), f"{path}/{key}"
            )
    elif (
        isinstance(actual, list)
        and isinstance(expected, list)
        and len(actual) == len(expected)
    ):
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            yield from _differences(a, e, f"{path}[{index}]")
    elif actual != expected:
        yield f"{path}: {actual!r} != {expected!r}"


def _assert_same_config(actual, expected, what):
    differences = list(_differences(_json(actual), _json(expected)))
    assert not differences, f"{what}: " + "; ".join(differences[:5])


def _shapes(structure):
    return [tuple(x.shape) for x in _flat(structure)]


def _assert_same_outputs(actual, expected, what, atol=ATOL):
    actual, expected = _flat(actual), _flat(expected)
    assert len(actual) == len(expected), what
    for a, e in zip(actual, expected, strict=True):
        a, e = _to_numpy(a), _to_numpy(e)
        assert a.shape == e.shape, (what, a.shape, e.shape)
        if np.issubdtype(e.dtype, np.floating):
            np.testing.assert_allclose(a, e, atol=atol, rtol=0, err_msg=what)
        else:
            np.testing.assert_array_equal(a, e, err_msg=what)


def _make_layer(layer_cls, init_kwargs, **extra):
    # A layer argument (a cell, a wrapped layer) is rebuilt from its config
    # for each new layer, so that no two layers share its weights.
    kwargs = {
        key: type(value).from_config(value.get_config())
        if isinstance(value, keras.layers.Layer)
        else value
        for key, value in init_kwargs.items()
    }
    return layer_cls(**kwargs, **extra)


def _symbolic_inputs(input_data, batch_size=None):
    def make(x):
        shape = (batch_size, *tuple(x.shape)[1:])
        return keras.Input(batch_shape=shape, dtype=_dtype(x))

    return keras.tree.map_structure(make, input_data)


def _check_symbolic_shapes(
    layer_cls, init_kwargs, input_data, eager_shapes, unknown_dims
):
    """Symbolic calls, known and unknown batch, against the eager call."""
    batch = eager_shapes[0][0]
    for batch_size in (batch, None):
        layer = _make_layer(layer_cls, init_kwargs)
        symbolic = _shapes(layer(_symbolic_inputs(input_data, batch_size)))
        expected = [(batch_size, *shape[1:]) for shape in eager_shapes]
        if unknown_dims:
            symbolic = _fill_unknown_dims(symbolic, expected)
        assert symbolic == expected, (batch_size, symbolic)
    # `compute_output_shape` where the layer has one of its own.
    layer = _make_layer(layer_cls, init_kwargs)
    input_shape = keras.tree.map_structure(lambda x: tuple(x.shape), input_data)
    try:
        computed = layer.compute_output_shape(input_shape)
    except NotImplementedError:
        return
    if all(isinstance(dim, (int, type(None))) for dim in computed):
        computed = [computed]
    computed = [tuple(shape) for shape in computed]
    if unknown_dims:
        computed = _fill_unknown_dims(computed, eager_shapes)
    assert computed == eager_shapes, computed


def _fill_unknown_dims(shapes, expected):
    """`shapes` with their unknown non-batch dimensions taken from
    `expected`."""
    return [
        tuple(
            want if dim is None and axis else dim
            for axis, (dim, want) in enumerate(zip(shape, wanted, strict=True))
        )
        for shape, wanted in zip(shapes, expected, strict=True)
    ]


def _check_config_round_trip(
    layer, init_kwargs, input_data, outputs, call_kwargs
):
    config = layer.get_config()
    missing = sorted(set(init_kwargs) - set(config))
    assert not missing, f"get_config() lacks constructor arguments {missing}"
    # Some `from_config`s (keras.layers.RNN's) pop from the dict they get.
    clone = type(layer).from_config(copy.deepcopy(config))
    _assert_same_config(clone.get_config(), config, "from_config")
    # Through the registry too: the class comes back from its name alone.
    serialized = keras.saving.serialize_keras_object(layer)
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(layer)
    _assert_same_config(revived.get_config(), config, "registry")
    clone(input_data, **call_kwargs)
    clone.set_weights(layer.get_weights())
    _assert_same_outputs(
        clone(input_data, **call_kwargs), outputs, "config round trip"
    )


def _check_saving(model, input_data, tmp_path, name):
    """`.keras` save and safe-mode load give the same config and outputs."""
    expected = model(input_data, training=False)
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert type(restored) is type(model)
    _assert_same_config(
        restored.get_config(), model.get_config(), ".keras reload"
    )
    _assert_same_outputs(
        restored(input_data, training=False), expected, ".keras reload"
    )
    return restored


def _check_training_step(model, input_data, targets):
    """One step of the compiled `model` moves every trainable weight and
    gives a finite loss."""
    before = [_to_numpy(w).copy() for w in model.trainable_weights]
    assert before, "no trainable weights to train"
    loss = model.train_on_batch(input_data, targets)
    loss = np.asarray(_flat(loss)[0])
    assert np.isfinite(loss), loss
    for weight, old in zip(model.trainable_weights, before, strict=True):
        assert not np.array_equal(_to_numpy(weight), old), (
            f"{weight.path} did not change in a training step"
        )


def _check_mixed_precision(layer_cls, init_kwargs, input_data, policies):
    for policy in policies:
        layer = _make_layer(layer_cls, init_kwargs, dtype=policy)
        outputs = layer(input_data)
        compute_dtype = keras.DTypePolicy(policy).compute_dtype
        for output in _flat(outputs):
            assert _dtype(output) == compute_dtype, (policy, output.dtype)
        for weight in layer.weights:
            if weight.trainable:
                assert _dtype(weight) == "float32", (policy, weight.path)
        for output in _flat(outputs):
            assert np.all(np.isfinite(_to_numpy(output).astype("float32")))


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    tmp_path,
    *,
    call_kwargs=None,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    mixed_precision_policies=(),
    unknown_symbolic_dims=False,
):
    """Runs the checks every layer gets.

    Args:
        layer_cls: The layer class.
        init_kwargs: Dict of constructor arguments. A layer among them (a
            cell, a wrapped layer) is cloned from its config for each layer
            built.
        input_data: An array or tensor, or a list of them, with a batch
            axis first.
        expected_output_shape: The eager output's shape, or a list of
            shapes for several outputs.
        tmp_path: A folder for the `.keras` file (pytest's `tmp_path`).
        call_kwargs: Dict of further call arguments (no tensors), or
            `None`. Defaults to `None`.
        expected_num_trainable_weights: Integer or `None` (unchecked).
            Defaults to `None`.
        expected_num_non_trainable_weights: Integer or `None` (unchecked).
            Defaults to `None`.
        mixed_precision_policies: Policies (`"mixed_float16"`,
            `"mixed_bfloat16"`) under which the output must come in the
            compute dtype from float32 weights. Defaults to `()`.
        unknown_symbolic_dims: Boolean, let a symbolic call leave
            non-batch dimensions unknown (`None`), for a layer whose output
            length depends on the values (random in training). Defaults to
            `False`.

    Returns:
        `(layer, outputs)`: the layer of the eager call and its outputs,
        for a test that pins numbers.
    """
    call_kwargs = dict(call_kwargs or {})
    layer = _make_layer(layer_cls, init_kwargs)
    outputs = layer(input_data, **call_kwargs)
    eager_shapes = _shapes(outputs)
    expected = expected_output_shape
    if isinstance(expected, tuple):
        expected = [expected]
    assert eager_shapes == [tuple(shape) for shape in expected], eager_shapes
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights
    if expected_num_non_trainable_weights is not None:
        assert (
            len(layer.non_trainable_weights)
            == expected_num_non_trainable_weights
        )

    _check_config_round_trip(
        layer, init_kwargs, input_data, outputs, call_kwargs
    )
    _check_symbolic_shapes(
        layer_cls, init_kwargs, input_data, eager_shapes, unknown_symbolic_dims
    )

    # The same layer, weights and all, inside a functional model.
    inputs = _symbolic_inputs(input_data)
    model = keras.Model(inputs, layer(inputs, **call_kwargs))
    _assert_same_outputs(
        model(input_data, training=False), outputs, "functional call"
    )
    _check_saving(model, input_data, tmp_path, layer.name)

    if layer.trainable_weights:
        first = _flat(model.outputs)[0]
        trained = keras.Model(inputs, first)
        rng = np.random.default_rng(0)
        targets = rng.normal(size=_shapes(outputs)[0]).astype("float32")
        # Adam moves every weight whose gradient is not exactly zero, so a
        # weight that stays put is one the loss does not reach.
        trained.compile(
            optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="mse"
        )
        _check_training_step(trained, input_data, targets)

    _check_mixed_precision(
        layer_cls, init_kwargs, input_data, mixed_precision_policies
    )
    return layer, outputs


def run_model_test(
    model,
    input_data,
    labels,
    tmp_path,
    rebuild,
    *,
    compile_kwargs=None,
):
    """Runs the checks every model gets.

    Args:
        model: A built model, ready to predict (adapted, for an
            application).
        input_data: The model's inputs, a batch.
        labels: Training targets for `input_data`.
        tmp_path: A folder for the `.keras` file (pytest's `tmp_path`).
        rebuild: Callable taking `model.get_config()` and returning a model
            of the same class ready for `set_weights` (adapted to the same
            data, for an application).
        compile_kwargs: Dict of `compile()` arguments for the training step,
            or `None` for the model's own `compile()` defaults. Defaults to
            `None`.
    """
    outputs = model(input_data, training=False)

    config = model.get_config()
    clone = rebuild(copy.deepcopy(config))
    assert type(clone) is type(model)
    _assert_same_config(clone.get_config(), config, "from_config")
    clone.set_weights(model.get_weights())
    _assert_same_outputs(
        clone(input_data, training=False), outputs, "config round trip"
    )

    eager_shapes = _shapes(outputs)
    symbolic = [(None, *shape[1:]) for shape in eager_shapes]
    assert _shapes(model.outputs) == symbolic, model.outputs

    _check_saving(model, input_data, tmp_path, model.name)

    model.compile(**(compile_kwargs or {}))
    _check_training_step(model, input_data, labels)
