"""The deployment table: one trained speech model as each runtime runs it.

`deployment_table(run_dir, data)` takes a training run (`model.keras` and
its `serving/1/` SavedModel) and measures, on the test split of `data`, the
SavedModel in TensorFlow and the LiteRT files of `export_litert` (float32,
dynamic-range, int8 LSTMs and full-integer, the last two calibrated on the
training split; full-integer with its float front-end file, sizes summed)
in the LiteRT interpreter: test accuracy, file size, and the latency
of one call on a one-second clip (median and 90th percentile; the formats
take turns, round after round, so that load from outside hits them alike).
"""

import os
import platform
import tempfile
import time

import numpy as np
import tensorflow as tf

from lstm_keras.export.litert import QUANTIZATIONS
from lstm_keras.export.litert import FullIntegerSpeech
from lstm_keras.export.litert import export_litert

LATENCY_ROUNDS = 20
CALLS_PER_ROUND = 10


def deployment_table(run_dir, data, out_dir, verbose=True):
    """Measures the run's model as a SavedModel and as LiteRT files.

    Args:
        run_dir: A `lstm-keras-train speech` run folder.
        data: The dataset source it was trained on (its test split is
            measured, its training split calibrates int8).
        out_dir: Where `deployment.json`, `deployment.png` and the
            `.tflite` files are written.
        verbose: Boolean, print progress and the table. Defaults to `True`.

    Returns:
        The list of rows written to `deployment.json`, one per format:
        `format`, `test_accuracy`, `bytes`, `latency_ms_median`,
        `latency_ms_p90`, `fused_lstm`.
    """
    import keras

    import lstm_keras  # noqa: F401  (registers the serializable classes)
    from lstm_keras.applications import reports
    from lstm_keras.datasets import load_dataset

    model_path = os.path.join(run_dir, "model.keras")
    serving_path = os.path.join(run_dir, "serving", "1")
    for path in (model_path, serving_path):
        if not os.path.exists(path):
            raise ValueError(
                f"Argument `run_dir` {run_dir!r} has no {path!r}: pass a "
                "finished lstm-keras-train speech run."
            )
    model = keras.saving.load_model(model_path, safe_mode=True)
    splits = load_dataset(data, "speech")
    test = [(x.numpy(), int(y)) for x, y in splits.test]
    one_second = np.asarray(test[0][0][: splits.sample_rate], "float32")
    one_second = np.pad(one_second, (0, splits.sample_rate - len(one_second)))
    os.makedirs(out_dir, exist_ok=True)

    runners = {"saved_model": _saved_model_runner(serving_path)}
    sizes = {"saved_model": _folder_bytes(serving_path)}
    fused = {"saved_model": None}
    for quantize in QUANTIZATIONS:
        calibration = (x.numpy() for x, _ in splits.train.shuffle(4096, seed=0))
        report = export_litert(
            model,
            os.path.join(out_dir, f"speech-{quantize}.tflite"),
            quantize=quantize,
            representative_data=calibration,
            overwrite=True,
            verbose=verbose,
        )
        name = f"litert_{quantize}"
        sizes[name] = report["bytes"]
        if report["frontend"] is not None:
            runners[name] = FullIntegerSpeech(report["path"])
            sizes[name] += os.path.getsize(report["frontend"])
        else:
            runners[name] = _litert_runner(report["path"])
        fused[name] = report["fused_lstm"]

    rows = []
    latencies = _latencies(runners, one_second)
    for name, run in runners.items():
        correct = sum(int(np.argmax(run(x)) == y) for x, y in test)
        times = np.array(latencies[name]) * 1e3
        rows.append(
            {
                "format": name,
                "test_accuracy": correct / len(test),
                "bytes": sizes[name],
                "latency_ms_median": float(np.median(times)),
                "latency_ms_p90": float(np.percentile(times, 90)),
                "fused_lstm": fused[name],
            }
        )
        if verbose:
            print(f"{name}: {rows[-1]}", flush=True)
    result = {
        "run_dir": run_dir,
        "data": data,
        "test_examples": len(test),
        "cpu": _cpu_name(),
        "rows": rows,
    }
    reports.write_json(result, os.path.join(out_dir, "deployment.json"))
    _plot(rows, os.path.join(out_dir, "deployment.png"))
    if verbose:
        print(format_table(rows))
    return rows


def format_table(rows):
    """The rows as a Markdown table, sizes and ratios against the first."""
    base = rows[0]
    lines = [
        "| format | test accuracy | size | vs SavedModel | latency median"
        " (p90) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['format']} | {row['test_accuracy']:.4f} | "
            f"{row['bytes'] / 1e6:.2f} MB | "
            f"{base['bytes'] / row['bytes']:.1f}x smaller | "
            f"{row['latency_ms_median']:.2f} ms "
            f"({row['latency_ms_p90']:.2f}) |"
        )
    return "\n".join(lines)


def _saved_model_runner(path):
    serve = tf.saved_model.load(path).signatures["serving_default"]

    def run(clip):
        return serve(waveform=tf.constant(clip[None]))["probabilities"].numpy()

    return run


def _litert_runner(path):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner()

    def run(clip):
        return runner(waveforms=np.asarray(clip, "float32")[None])[
            "probabilities"
        ]

    return run


def _latencies(runners, clip):
    """Seconds per call of each runner, the runners taking turns."""
    times = {name: [] for name in runners}
    for run in runners.values():
        run(clip)  # warm-up
    for _ in range(LATENCY_ROUNDS):
        for name, run in runners.items():
            for _ in range(CALLS_PER_ROUND):
                start = time.perf_counter()
                run(clip)
                times[name].append(time.perf_counter() - start)
    return times


def _folder_bytes(path):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["format"] for row in rows]
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    panels = (
        ("test accuracy", [row["test_accuracy"] for row in rows]),
        ("size (MB)", [row["bytes"] / 1e6 for row in rows]),
        ("latency, median (ms)", [row["latency_ms_median"] for row in rows]),
    )
    for axis, (title, values) in zip(axes, panels, strict=True):
        axis.bar(names, values, color="tab:blue")
        axis.set_title(title)
        axis.tick_params(axis="x", rotation=30)
    axes[0].set_ylim(min(row["test_accuracy"] for row in rows) - 0.05, 1.0)
    figure.suptitle("One FSDD speech model: SavedModel and LiteRT files")
    figure.tight_layout()
    with tempfile.NamedTemporaryFile(
        dir=os.path.dirname(path), suffix=".png", delete=False
    ) as f:
        figure.savefig(f.name, dpi=110)
    os.replace(f.name, path)
    plt.close(figure)
