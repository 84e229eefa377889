# Two commands on a fresh machine: `make demo` and `make test`.
# Everything runs inside .venv, created and filled on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt
PYTEST := $(PY) -m pytest -q -n 2
# TensorFlow's C++ start-up chatter hides the test output.
export TF_CPP_MIN_LOG_LEVEL ?= 2
# Core tests that also run on the JAX and torch backends.
CORE_TESTS := tests/test_lstm_layer.py tests/test_lstm_behaviour.py tests/test_gradcheck.py tests/test_dispatch.py tests/test_docs.py

.PHONY: demo test test-tensorflow test-jax test-torch lint gradcheck clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed-demo: setup.cfg pyproject.toml constraints.txt | $(PY)
	$(PIP) -e '.[cpu,apps,plots]'
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml constraints.txt | $(PY)
	$(PIP) -e '.[cpu,apps,plots,test]'
	touch $@ $(VENV)/.installed-demo

## demo: train LSTM vs SimpleRNN on the adding problem (T=100) and print both scores
demo: $(VENV)/.installed-demo
	$(PY) -m training.adding_demo

## test: the whole suite on TensorFlow, then the core tests on JAX and torch
test: test-tensorflow test-jax test-torch

test-tensorflow: $(VENV)/.installed-test
	KERAS_BACKEND=tensorflow $(PYTEST) tests

test-jax: $(VENV)/.installed-test
	KERAS_BACKEND=jax $(PYTEST) -m "not tensorflow_only" $(CORE_TESTS)

test-torch: $(VENV)/.installed-test
	KERAS_BACKEND=torch $(PYTEST) -m "not tensorflow_only" $(CORE_TESTS)

## lint: ruff over the code
lint: $(VENV)/.installed-test
	$(PY) -m ruff check lstm_keras training tuning tests
	$(PY) -m ruff format --check lstm_keras training tuning tests

## gradcheck: print the backprop verification table
gradcheck: $(VENV)/.installed-test
	$(PY) -m lstm_keras.gradcheck

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
