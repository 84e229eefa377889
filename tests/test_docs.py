"""The README's code and the docstring examples run and say what they claim."""

import doctest
import importlib
import pathlib
import re

import keras
import numpy as np
import pytest

import lstm_keras

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PACKAGE = ROOT / "lstm_keras"

# Subpackages that need TensorFlow whichever backend runs (string tensors,
# `tf.data`, SavedModels); `lstm_keras.backends.<name>` needs its backend.
TENSORFLOW_PACKAGES = (
    "lstm_keras.applications",
    "lstm_keras.datasets",
    "lstm_keras.export",
    "lstm_keras.tuning",
)

# Modules whose examples need a fixture (a trained model) or share one with
# the module's tests: their own test files run them.
RUN_ELSEWHERE = {
    "lstm_keras.applications.backbone": "test_applications_backbone.py",
    "lstm_keras.applications.optimizers": "test_optimizers.py",
    "lstm_keras.applications.sentiment": "test_applications_backbone.py",
    "lstm_keras.applications.speech": "test_applications_backbone.py",
    "lstm_keras.export.litert": "test_litert.py",
    "lstm_keras.export.saved_model": "test_export.py",
    "lstm_keras.export.warmup": "test_warmup.py",
}


def _python_blocks(path=README):
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def test_readme_quickstart_names_the_two_commands():
    text = README.read_text()
    quickstart = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    assert "make demo" in quickstart and "make test" in quickstart


def test_readme_fit_example_is_at_most_ten_lines_and_learns(capsys):
    block = _python_blocks()[0]
    assert "model.fit" in block
    assert len([line for line in block.splitlines() if line.strip()]) <= 10
    exec(compile(block, "README.md", "exec"), {})
    loss, accuracy = eval(capsys.readouterr().out.strip())
    # The label is a sign of a sum over the sequence: well above chance.
    assert accuracy > 0.7


def test_readme_gate_example_runs():
    namespace = {"np": np, "lstm_keras": lstm_keras}
    exec(compile(_python_blocks()[1], "README.md", "exec"), namespace)
    weights = namespace["layer"].gate_weights()["forget"]
    np.testing.assert_allclose(weights[2], namespace["b_f"] + 1.0)


def _modules_with_examples():
    """Names of the package's modules whose docstrings hold `>>>` lines."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>>" not in path.read_text():
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


MODULES_WITH_EXAMPLES = _modules_with_examples()


def _backend_skip_reason(name):
    backend = keras.backend.backend()
    if name.startswith("lstm_keras.backends."):
        needed = name.split(".")[2]
        if needed != backend:
            return f"{name} runs on the {needed} backend only"
    if name.startswith(TENSORFLOW_PACKAGES) and backend != "tensorflow":
        return f"{name} needs the TensorFlow backend"
    return None


def test_modules_run_elsewhere_hold_examples_their_tests_run():
    for name, test_file in RUN_ELSEWHERE.items():
        assert name in MODULES_WITH_EXAMPLES, name
        text = (ROOT / "tests" / test_file).read_text()
        assert "DocTestFinder" in text, test_file
        assert name.rsplit(".", 1)[1] in text, (name, test_file)


@pytest.mark.parametrize(
    "name",
    [name for name in MODULES_WITH_EXAMPLES if name not in RUN_ELSEWHERE],
)
def test_docstring_examples(name, tmp_path, monkeypatch):
    reason = _backend_skip_reason(name)
    if reason:
        pytest.skip(reason)
    module = importlib.import_module(name)
    # Examples that write files write them here.
    monkeypatch.chdir(tmp_path)
    globs = {
        **vars(module),
        "np": np,
        "keras": keras,
        "ops": keras.ops,
        "lstm_keras": lstm_keras,
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        globs["tf"] = tf
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(
        optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    )
    tests = [t for t in finder.find(module, globs=globs) if t.examples]
    assert tests, f"{name} has `>>>` lines but no examples doctest finds"
    report = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_readme_variants_example_has_the_documented_parameter_count():
    namespace = {}
    variants = ROOT / "docs" / "variants.md"
    exec(compile(_python_blocks(variants)[0], str(variants), "exec"), namespace)
    layer, outputs = namespace["layer"], namespace["outputs"]
    assert tuple(outputs.shape) == (2, 64)
    # 4H(D + R) + 4H + 3H peepholes + 6H layer norm + H R projection.
    units, features, projected = 128, 40, 64
    expected = (
        4 * units * (features + projected)
        + 4 * units
        + 3 * units
        + 6 * units
        + units * projected
    )
    assert layer.count_params() == expected


@pytest.mark.tensorflow_only
def test_readme_application_example_runs_and_returns_probabilities():
    namespace = {}
    applications = ROOT / "docs" / "applications.md"
    block = _python_blocks(applications)[0]
    exec(compile(block, str(applications), "exec"), namespace)
    model, texts = namespace["model"], namespace["texts"]
    probabilities = model.predict(texts, verbose=0)
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert model.class_names == ["negative", "positive"]
