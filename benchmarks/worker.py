"""Measures one LSTM implementation in this process; `run.py` drives it.

Each measurement prints one JSON line on stdout. The implementations:

- `ours`: `lstm_keras.LSTM` on TensorFlow (its fast path when it applies).
- `ours_generic`: the same layer forced onto the generic `keras.ops` path.
- `ours_recurrent_dropout`: `lstm_keras.LSTM(H, recurrent_dropout=0.2)`
  (training only drops; inference is `ours`).
- `ours_avx2`: `ours` with the C++ ops' products on their AVX2/FMA
  micro-kernel (`LSTM_KERAS_GEMM_ISA=avx2`) instead of the best the CPU
  has, to compare the micro-kernels on one machine.
- `keras_tf`: `keras.layers.LSTM` on TensorFlow.
- `keras_jax`: `keras.layers.LSTM` on JAX.
- `torch`: `torch.nn.LSTM` with an idiomatic training loop.

Tasks:

- `train`: seconds per training step (forward, backward, Adam update) of
  `LSTM(H) -> Dense(1)` with a mean squared error, through `model.fit` with
  the default `compile()` (one step per execution) for Keras, timed between
  `on_train_batch_end` callbacks; a plain loop for torch.
- `latency`: seconds per batch-1 inference call, compiled the fastest
  idiomatic way: the concrete function of `tf.function(model)` on
  TensorFlow (what a SavedModel signature is), `jax.jit` of
  `model.stateless_call` on JAX, eager `torch.inference_mode()` on torch
  (`nn.LSTM` is one fused ATen kernel).
- `serve_b1` / `serve_b32`: seconds per call, at batch 1 / 32, of the
  `serving_default` signature of the SavedModel that
  `lstm_keras.export.export_for_serving` writes (what TF Serving runs),
  loaded back with `tf.saved_model.load`, for `ours` and `keras_tf` only.
  The model is `Masking -> LSTM(H) -> Dense(2, softmax)`, fed one
  full-length row, or 32 right-padded rows of 50-100% of the length; with
  `--app`, the sentiment or speech application's default preset (on
  `keras.layers.LSTM` for `keras_tf`), fed sentences of the embedded SST-2
  sample or tones of 0.4-1 s.
- `sgemm`: GFLOP/s (not seconds) of float32 `tf.matmul`s of two
  `SGEMM_SIZE` square matrices on all cores: the machine's own
  matrix-multiply rate, which `run.py` sets the training steps' achieved
  rate against.
- `train_memory` / `infer_memory`: the peak resident memory one training
  step / inference call adds on top of the warmed-up process (Linux
  `VmHWM`, reset through `/proc/self/clear_refs` after warm-up), in MiB.
  Run it with `MALLOC_MMAP_THRESHOLD_=4096 MALLOC_TRIM_THRESHOLD_=0` (as
  `run.py` does), or glibc's reuse of freed memory hides the peak.

Example:

    python benchmarks/worker.py --impl ours --task train --batch 64 \\
        --timesteps 100 --features 40 --units 128 --steps 20
"""

import argparse
import json
import os
import sys
import time

IMPLEMENTATIONS = (
    "ours",
    "ours_generic",
    "ours_recurrent_dropout",
    "ours_avx2",
    "keras_tf",
    "keras_jax",
    "torch",
)
RECURRENT_DROPOUT = 0.2
TASKS = (
    "train",
    "latency",
    "serve_b1",
    "serve_b32",
    "sgemm",
    "train_memory",
    "infer_memory",
)
SERVING_IMPLS = ("ours", "keras_tf")
# Large enough that packing and threading costs vanish, small enough that
# a product takes well under a second here.
SGEMM_SIZE = 2048
# Inference calls are cheap, and a median of a few is noisy: this many
# per training step timed (warm-up included).
LATENCY_CALLS_PER_STEP = 20
SERVING_CALLS_PER_STEP = 5


def _backend(impl):
    return {"keras_jax": "jax", "torch": "torch"}.get(impl, "tensorflow")


def _memory_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _data(args, batch):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, args.timesteps, args.features))
    y = rng.normal(size=(batch, 1))
    return x.astype("float32"), y.astype("float32")


def _keras_model(args):
    import keras

    if args.impl in ("ours", "ours_generic", "ours_avx2"):
        import lstm_keras

        lstm = lstm_keras.LSTM(args.units)
    elif args.impl == "ours_recurrent_dropout":
        import lstm_keras

        lstm = lstm_keras.LSTM(args.units, recurrent_dropout=RECURRENT_DROPOUT)
    else:
        lstm = keras.layers.LSTM(args.units)
    model = keras.Sequential(
        [
            keras.Input((args.timesteps, args.features)),
            lstm,
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    return model


def _keras_train(args, model, steps):
    import keras

    x, y = _data(args, args.batch * steps)
    stamps = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    def fit():
        start = time.perf_counter()
        model.fit(
            x,
            y,
            batch_size=args.batch,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[Stamp()],
        )
        return start

    return stamps, fit


def _torch_model(args):
    import torch

    torch.manual_seed(0)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(
                args.features, args.units, batch_first=True
            )
            self.dense = torch.nn.Linear(args.units, 1)

        def forward(self, x):
            _, (h, _) = self.lstm(x)
            return self.dense(h[-1])

    return Model()


def train_step_times(args):
    """Returns the per-step times of `args.steps` steps after warm-up."""
    steps = args.warmup + args.steps
    if args.impl == "torch":
        import torch

        model = _torch_model(args)
        optimizer = torch.optim.Adam(model.parameters())
        x, y = (torch.from_numpy(a) for a in _data(args, args.batch))
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        return times[args.warmup :]
    model = _keras_model(args)
    stamps, fit = _keras_train(args, model, steps)
    start = fit()
    stamps.insert(0, start)
    times = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return times[args.warmup :]


def _inference_call(args, batch):
    """Returns a no-argument function running one compiled inference call."""
    x, _ = _data(args, batch)
    if args.impl == "torch":
        import torch

        model = _torch_model(args).eval()
        x = torch.from_numpy(x)

        def call():
            with torch.inference_mode():
                return model(x)

        return call
    model = _keras_model(args)
    if args.impl == "keras_jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        predict = jax.jit(
            lambda t, n, x: model.stateless_call(t, n, x, training=False)[0]
        )
        x = jax.numpy.asarray(x)
        return lambda: predict(trainable, non_trainable, x).block_until_ready()
    import tensorflow as tf

    # The concrete function, as a SavedModel signature is: calling the
    # tf.function itself would add its Python dispatch (about 0.08 ms here)
    # to every call.
    x = tf.constant(x)
    predict = tf.function(
        lambda x: model(x, training=False)
    ).get_concrete_function(tf.TensorSpec(x.shape, x.dtype))
    return lambda: predict(x).numpy()


def latency_times(args):
    call = _inference_call(args, 1)
    times = []
    calls = LATENCY_CALLS_PER_STEP * args.steps
    for _ in range(LATENCY_CALLS_PER_STEP * args.warmup + calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times[-calls:]


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(REPO, "data", "samples")


def _sample_texts():
    """The embedded SST-2 sample's sentences (train, then dev)."""
    texts = []
    for split in ("train", "dev"):
        with open(os.path.join(SAMPLES, "sst2", f"{split}.tsv")) as f:
            next(f)  # header
            texts += [line.split("\t")[0] for line in f if line.strip()]
    return texts


def _clips(count, rate, seed=0):
    """`count` noisy tones of 0.4-1 s at `rate`, zero-padded at the end."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = rng.integers(int(0.4 * rate), rate + 1, size=count)
    clips = np.zeros((count, rate), "float32")
    for row, length in enumerate(lengths):
        t = np.arange(length) / rate
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 1200) * t)
        clips[row, :length] = tone + 0.01 * rng.normal(size=length)
    return clips


def _application(args):
    """The application `args.app` with its default preset, adapted on the
    embedded samples; on `keras.layers.LSTM` for `keras_tf`."""
    import keras

    from lstm_keras.applications import SentimentClassifier
    from lstm_keras.applications import SpeechClassifier
    from lstm_keras.applications import backbone

    if args.impl == "keras_tf":
        # The backbone builds its layers through this name; the arguments
        # it passes are keras.layers.LSTM's too.
        backbone.LSTM = keras.layers.LSTM
    keras.utils.set_random_seed(0)
    if args.app == "sentiment":
        model = SentimentClassifier()
        model.adapt(_sample_texts())
        model(keras.ops.convert_to_tensor(["a film"]))
    else:
        model = SpeechClassifier(
            class_names=[str(digit) for digit in range(10)], sample_rate=8000
        )
        model.adapt(_clips(16, model.sample_rate))
        model(_clips(1, model.sample_rate))
    return model, model.class_names


def _serving_model(args):
    """`Masking -> LSTM(H) -> Dense(2, softmax)`, or an application."""
    import keras

    if args.app:
        return _application(args)
    if args.impl == "ours":
        import lstm_keras

        lstm = lstm_keras.LSTM(args.units)
    else:
        lstm = keras.layers.LSTM(args.units)
    keras.utils.set_random_seed(0)
    frames = keras.Input((args.timesteps, args.features), name="frames")
    x = keras.layers.Masking(0.0)(frames)
    probabilities = keras.layers.Dense(2, activation="softmax")(lstm(x))
    return keras.Model(frames, probabilities), ["a", "b"]


def _exported_signature(args):
    """The `serving_default` signature of the exported model, loaded back
    in this process (one model per process)."""
    import tempfile

    import tensorflow as tf

    from lstm_keras import export

    if args.impl not in SERVING_IMPLS:
        raise ValueError(
            f"serving tasks take --impl {' or '.join(SERVING_IMPLS)}, "
            f"got {args.impl!r}"
        )
    model, class_names = _serving_model(args)
    base = tempfile.mkdtemp(prefix="lstm_keras_bench_")
    path = export.export_for_serving(
        model, base, class_names=class_names, verbose=False
    )
    return tf.saved_model.load(path).signatures["serving_default"]


def _request(args, batch):
    """A request of `batch` rows: right-padded rows of varied length (one
    full-length row at batch 1), sentences, or clips."""
    import numpy as np
    import tensorflow as tf

    if args.app == "sentiment":
        texts = _sample_texts()
        return {"text": tf.constant(texts[:batch])}
    if args.app == "speech":
        return {"waveform": tf.constant(_clips(batch, 8000, seed=1))}
    x, _ = _data(args, batch)
    if batch > 1:
        rng = np.random.default_rng(1)
        lengths = rng.integers(args.timesteps // 2, args.timesteps + 1, batch)
        x[np.arange(args.timesteps)[None] >= lengths[:, None]] = 0.0
    return {"frames": tf.constant(x)}


def serving_times(args, batch, signature):
    request = _request(args, batch)
    times = []
    calls = SERVING_CALLS_PER_STEP * args.steps
    for _ in range(SERVING_CALLS_PER_STEP * args.warmup + calls):
        start = time.perf_counter()
        signature(**request)["probabilities"].numpy()
        times.append(time.perf_counter() - start)
    return times[-calls:]


def sgemm_rates(args):
    """GFLOP/s of `SGEMM_SIZE`-square float32 matmuls (TensorFlow), one
    value per product timed."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b = (
        tf.constant(rng.standard_normal((SGEMM_SIZE, SGEMM_SIZE)), tf.float32)
        for _ in range(2)
    )
    product = tf.function(tf.matmul).get_concrete_function(a, b)
    rates = []
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        product(a, b).numpy()
        rates.append(2 * SGEMM_SIZE**3 / (time.perf_counter() - start) / 1e9)
    return rates[args.warmup :]


def peak_memory_mib(args, task):
    """Peak resident memory one step adds after warm-up, in MiB."""
    if task == "infer_memory":
        call = _inference_call(args, args.batch)
    elif args.impl == "torch":
        import torch

        model = _torch_model(args)
        optimizer = torch.optim.Adam(model.parameters())
        x, y = (torch.from_numpy(a) for a in _data(args, args.batch))

        def call():
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
    else:
        model = _keras_model(args)
        x, y = _data(args, args.batch)

        def call():
            model.train_on_batch(x, y)

    for _ in range(max(1, args.warmup)):
        call()
    baseline = _memory_kib("VmRSS")
    _reset_peak()
    for _ in range(max(1, args.steps)):
        call()
    return (_memory_kib("VmHWM") - baseline) / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("Example:") :],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--impl", choices=IMPLEMENTATIONS, required=True)
    parser.add_argument(
        "--task",
        required=True,
        help=f"comma-separated, from {', '.join(TASKS)}",
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--timesteps", type=int, default=100)
    parser.add_argument("--features", type=int, default=40)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed")
    parser.add_argument(
        "--app",
        choices=("sentiment", "speech"),
        help="serving tasks: export this application (default preset) "
        "instead of the LSTM model of the shape",
    )
    args = parser.parse_args(argv)

    os.environ["KERAS_BACKEND"] = _backend(args.impl)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.impl == "ours_generic":
        os.environ["LSTM_KERAS_FAST_PATH"] = "0"
    if args.impl == "ours_avx2":
        os.environ["LSTM_KERAS_GEMM_ISA"] = "avx2"
    tasks = args.task.split(",")
    for task in tasks:
        if task not in TASKS:
            parser.error(f"unknown task {task!r}; expected one of {TASKS}")
    signature = None
    for task in tasks:
        if task == "train":
            values = train_step_times(args)
        elif task == "latency":
            values = latency_times(args)
        elif task == "sgemm":
            values = sgemm_rates(args)
        elif task.startswith("serve_b"):
            if signature is None:
                signature = _exported_signature(args)
            values = serving_times(args, int(task[len("serve_b") :]), signature)
        else:
            values = [peak_memory_mib(args, task)]
        record = {"impl": args.impl, "task": task, "values": values}
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
