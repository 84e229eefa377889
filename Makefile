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
CORE_TESTS := tests/test_lstm_layer.py tests/test_lstm_behaviour.py tests/test_gradcheck.py \
	tests/test_dispatch.py tests/test_docs.py tests/test_variants.py tests/test_diagnostics.py \
	tests/test_cudnn.py

.PHONY: demo demo-adding export tune test test-tensorflow test-jax test-torch eval sweep bench \
	bench-quick ops lint gradcheck clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed-demo: setup.cfg pyproject.toml constraints.txt | $(PY)
	$(PIP) -e '.[cpu,apps,plots]'
	touch $@

# TF Serving's protos check our warm-up files in the tests. Their wheel
# requires the `tensorflow` package, which would clash with tensorflow-cpu,
# so it is installed without its dependencies (grpcio and protobuf come with
# TensorFlow).
$(VENV)/.installed-test: setup.cfg pyproject.toml constraints.txt | $(PY)
	$(PIP) -e '.[cpu,apps,tune,plots,test]'
	$(PY) -m pip install -q --no-deps tensorflow-serving-api==2.21.0
	touch $@ $(VENV)/.installed-demo

## demo: train the sentiment LSTM on the embedded SST-2, evaluate, export, print predictions
demo: $(VENV)/.installed-demo
	-$(PY) -m training.build_ops
	$(PY) -m training.demo

## demo-adding: LSTM vs SimpleRNN on the adding problem (T=100), both scores and a plot
demo-adding: $(VENV)/.installed-demo
	$(PY) -m training.adding_demo

## export: the demo's model as TF Serving version 1 in runs/models/sentiment/ (after `make demo`)
export: $(VENV)/.installed-demo
	$(PY) -m training.export runs/sentiment_demo/model.keras --model-base-path runs/models/sentiment --overwrite

## ops: build the TensorFlow fast path's C++ ops now (otherwise on first use)
ops: $(VENV)/.installed-demo
	$(PY) -m training.build_ops

## test: the whole suite on TensorFlow, then the core tests on JAX and torch
test: test-tensorflow test-jax test-torch

# Build the C++ ops once before the two workers start; without a compiler the
# fast-path tests skip and the layer falls back, so a failure must not stop us.
test-tensorflow: $(VENV)/.installed-test
	-$(PY) -m training.build_ops
	KERAS_BACKEND=tensorflow $(PYTEST) tests

# The tests build many layers of the same shapes, whose XLA programs are the
# same: JAX's compilation cache (a fresh one each run) compiles each once.
test-jax: $(VENV)/.installed-test
	cache=$$(mktemp -d) && trap 'rm -rf "$$cache"' EXIT && \
	KERAS_BACKEND=jax JAX_COMPILATION_CACHE_DIR=$$cache \
	JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0 \
	$(PYTEST) -m "not tensorflow_only" $(CORE_TESTS)

test-torch: $(VENV)/.installed-test
	KERAS_BACKEND=torch $(PYTEST) -m "not tensorflow_only" $(CORE_TESTS)

## eval: the long quality runs (lstm-keras-train's defaults, 3 seeds: SST-2, FSDD, a held-out speaker, IMDB reviews, FSDD streaming), the SavedModel/LiteRT deployment table, long-range table, gradient flow, the SST-2 tuning search
eval: $(VENV)/.installed-test
	-$(PY) -m training.build_ops
	$(PY) -m training.evaluate --out runs/eval
	$(PY) -m training.deployment_table --run runs/eval/fsdd/seed0 --out runs/deployment
	$(PY) -m training.long_range_table --out runs/long_range
	$(PY) -m training.gradflow --out runs/gradflow
	$(MAKE) tune

## sweep: the SST-2 and FSDD presets against one-change variants; how validation ranks them against test
sweep: $(VENV)/.installed-test
	-$(PY) -m training.build_ops
	$(PY) -m training.sweep sst2 --out runs/sweep
	$(PY) -m training.sweep fsdd --out runs/sweep
	$(PY) -m training.sweep fsdd_speaker_validation --out runs/sweep

## tune: Hyperband searches around the defaults, each against the default model: SST-2, FSDD, FSDD validated on a new speaker
tune: $(VENV)/.installed-test
	-$(PY) -m training.build_ops
	$(PY) -m tuning sentiment --data ../shared/data/sst2 --dir runs/tune_sst2 --tuner hyperband
	$(PY) -m tuning speech --data ../shared/data/fsdd --dir runs/tune_fsdd --tuner hyperband
	$(PY) -m tuning speech --data ../shared/data/fsdd --dir runs/tune_fsdd_speaker --tuner hyperband \
	    --validation-speaker theo --holdout-speaker george

## bench: speed and memory against keras.layers.LSTM (TF, JAX) and torch.nn.LSTM; results in benchmarks/results/
bench: $(VENV)/.installed-test
	$(PY) -m training.build_ops
	$(PY) benchmarks/run.py
	$(PY) benchmarks/run.py --tasks train --shapes speech text --no-memory \
	    --impls ours ours_recurrent_dropout ours_generic \
	    --output benchmarks/results/recurrent_dropout
	$(PY) benchmarks/run.py --tasks train latency --shapes speech text long --no-memory \
	    --impls ours ours_avx2 --output benchmarks/results/gemm_isa
	$(PY) benchmarks/sparse_step.py

## bench-quick: one short round of the benchmark, a smoke test (~5 min)
bench-quick: $(VENV)/.installed-test
	$(PY) -m training.build_ops
	$(PY) benchmarks/run.py --quick --output /tmp/lstm_keras_bench_quick

## lint: ruff over the code
lint: $(VENV)/.installed-test
	$(PY) -m ruff check lstm_keras training tuning tests benchmarks
	$(PY) -m ruff format --check lstm_keras training tuning tests benchmarks

## gradcheck: print the backprop verification table
gradcheck: $(VENV)/.installed-test
	$(PY) -m training.gradcheck

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
