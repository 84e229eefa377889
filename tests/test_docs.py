"""The README's code and the docstring examples run and say what they claim."""

import doctest
import pathlib
import re

import keras
import numpy as np
import pytest

import lstm_keras
from lstm_keras import diagnostics
from lstm_keras import long_range
from lstm_keras import lstm
from lstm_keras import lstm_cell
from lstm_keras.gradcheck import check
from lstm_keras.gradcheck import numerics
from lstm_keras.gradcheck import reference

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


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


@pytest.mark.parametrize(
    "module",
    [lstm, lstm_cell, reference, numerics, check, diagnostics, long_range],
    ids=lambda m: m.__name__,
)
def test_docstring_examples(module):
    globs = {
        **vars(module),
        "np": np,
        "keras": keras,
        "ops": keras.ops,
        "lstm_keras": lstm_keras,
    }
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, globs=globs) if t.examples]
    assert tests, f"{module.__name__} has no examples"
    for test in tests:
        runner.run(test)
    assert runner.failures == 0


def test_readme_variants_example_has_the_documented_parameter_count():
    namespace = {}
    exec(compile(_python_blocks()[2], "README.md", "exec"), namespace)
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
    exec(compile(_python_blocks()[3], "README.md", "exec"), namespace)
    model, texts = namespace["model"], namespace["texts"]
    probabilities = model.predict(texts, verbose=0)
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert model.class_names == ["negative", "positive"]
