"""Benchmarks lstm_keras.LSTM against keras.layers.LSTM and torch.nn.LSTM.

Every implementation runs in its own fresh process (`worker.py`), one after
another in a rotating order, for several rounds, so that a machine's drift
and other load hit all of them alike. Reported per shape: the median
training step (forward, backward, Adam; through `model.fit` for Keras), the
median batch-1 compiled inference latency, the median call of the exported
SavedModel's `serving_default` signature at batch 1 and 32 (what TF Serving
runs; ours against `keras.layers.LSTM`, both exported by
`lstm_keras.export`), and (one round, fresh processes) the peak memory of a
training step and of inference. Ratios compare ours
with each peer within the same round, then take the median over rounds:
quote those, not absolute times, which depend on the machine and its load.

Writes `benchmarks/results/latest.json` and `latest.png` (or `--output`)
and prints a markdown table. Workers run with `OMP_WAIT_POLICY=PASSIVE`
unless it is set: torch's spinning OpenMP threads otherwise collapse on a
machine shared with other processes.

Examples:

    python benchmarks/run.py                 # full run, 3 rounds (~20 min)
    python benchmarks/run.py --quick         # smoke test (~3 min)
    python benchmarks/run.py --rounds 5 --shapes speech text
    python benchmarks/run.py --impls ours keras_tf torch --no-memory
    python benchmarks/run.py --tasks serve --impls ours keras_tf --no-memory
    python benchmarks/run.py --tasks train --shapes speech text --no-memory \
        --impls ours ours_recurrent_dropout ours_generic
    python benchmarks/run.py --tasks train latency --no-memory \
        --impls ours ours_avx2
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "worker.py")
PEERS = ("keras_tf", "keras_jax", "torch")
# Variants of ours that `make bench` runs separately, not by default.
OURS_VARIANTS = ("ours_recurrent_dropout", "ours_avx2")
IMPLEMENTATIONS = ("ours", "ours_generic", *OURS_VARIANTS, *PEERS)
LABELS = {
    "ours": "lstm_keras (TF)",
    "ours_generic": "lstm_keras generic (TF)",
    "ours_recurrent_dropout": "lstm_keras recurrent_dropout=0.2 (TF)",
    "ours_avx2": "lstm_keras AVX2 micro-kernel (TF)",
    "keras_tf": "keras LSTM (TF)",
    "keras_jax": "keras LSTM (JAX)",
    "torch": "torch.nn.LSTM",
}
# --tasks choice: the worker tasks it runs.
TASKS = {
    "train": ("train",),
    "latency": ("latency",),
    "serve": ("serve_b1", "serve_b32"),
}
# The exported SavedModel: TensorFlow implementations only.
SERVING_IMPLS = ("ours", "keras_tf")
TASK_LABELS = {
    "train": "train step",
    "latency": "batch-1 latency",
    "serve_b1": "served signature, batch 1",
    "serve_b32": "served signature, batch 32",
}
# name: (batch, timesteps, features, units, training steps timed)
SHAPES = {
    "speech": (64, 100, 40, 128, 40),
    "text": (64, 200, 128, 128, 30),
    "long": (8, 2000, 32, 128, 5),
    # The applications' default presets, served (serve task only); the
    # numbers are those of the request loop (batch unused, 30 steps).
    "sentiment_app": (32, 0, 0, 0, 30),
    "speech_app": (32, 0, 0, 0, 30),
}
APPS = {"sentiment_app": "sentiment", "speech_app": "speech"}
# Inference memory is measured at these lengths of the long shape too, to
# show whether it grows with T.
SHORT_INFERENCE_TIMESTEPS = 200
# glibc keeps freed memory for reuse, which hides a step's peak from VmHWM
# once the process is warm. Served by mmap and returned at once, every
# allocation of 4 KiB or more counts while live, and no longer.
MEASURE_MEMORY_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "4096",
    "MALLOC_TRIM_THRESHOLD_": "0",
}


def run_worker(
    impl,
    tasks,
    batch,
    timesteps,
    features,
    units,
    steps,
    warmup,
    env=None,
    app=None,
):
    command = [
        sys.executable,
        WORKER,
        f"--impl={impl}",
        f"--task={','.join(tasks)}",
        f"--batch={batch}",
        f"--timesteps={timesteps}",
        f"--features={features}",
        f"--units={units}",
        f"--steps={steps}",
        f"--warmup={warmup}",
    ] + ([f"--app={app}"] if app else [])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    # Spinning OpenMP threads (torch's) collapse when the CPUs are shared
    # with other processes; sleeping ones do not. Only torch uses OpenMP.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [os.path.dirname(HERE), env.get("PYTHONPATH")])
    )
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"worker failed: {' '.join(command)}\n{result.stderr[-3000:]}"
        )
    # The 1-minute load average when the worker ends: a busy machine
    # distorts times (ratios less, since every implementation shares it).
    records = {"load_average": os.getloadavg()[0]}
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            records[record["task"]] = record["values"]
    return records


def cpu_description():
    """The CPU's model name and the vector extensions it has (Linux)."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni")
    return {"cpu_model": model, "isa": [f for f in wanted if f in flags]}


def training_step_flops(batch, timesteps, features, units):
    """Floating-point work of one training step of `LSTM(units)`: its
    matrix products, at 2 FLOP per multiply-add.

    Forward, per step: `x_t W` and `h_prev U`, 8BDH + 8BH^2 (W and U are
    `4H` wide). Backward: `dW = x^T dz` (8BDH), `dU = h_prev^T dz` (8BH^2)
    and the gradient reaching `h_prev`, `dz U^T` (8BH^2); the inputs, data,
    need no gradient. In all `16 B T D H + 24 B T H^2`; the gate arithmetic
    and the Dense head are left out (a few percent at these sizes).
    """
    return 16 * batch * timesteps * units * (features + 1.5 * units)


def measure_sgemm(steps):
    """The machine's SGEMM rate now (GFLOP/s, median), in a fresh worker."""
    records = run_worker("ours", ["sgemm"], 0, 0, 0, 0, steps=steps, warmup=2)
    rate = statistics.median(records["sgemm"])
    print(f"sgemm {rate:.0f} GFLOP/s", file=sys.stderr, flush=True)
    return rate


def measure(args):
    """Runs all rounds; returns `{shape: {task: {impl: [per-round]}}}`."""
    tasks = [t for choice in args.tasks for t in TASKS[choice]]
    raw = {shape: {task: {} for task in tasks} for shape in args.shapes}
    step_scale = 0.25 if args.quick else 1.0
    total = args.rounds * len(args.shapes) * len(args.impls)
    done = 0
    started = time.time()
    for round_index in range(args.rounds):
        for shape_index, shape in enumerate(args.shapes):
            batch, timesteps, features, units, steps = SHAPES[shape]
            # Rotate the order each round and shape.
            offset = round_index + shape_index
            order = args.impls[offset:] + args.impls[:offset]
            for impl in order:
                serving = [t for t in tasks if t.startswith("serve")]
                if shape in APPS:
                    impl_tasks = serving if impl in SERVING_IMPLS else []
                elif impl in SERVING_IMPLS:
                    impl_tasks = tasks
                else:
                    impl_tasks = [t for t in tasks if t not in serving]
                if not impl_tasks:
                    done += 1
                    continue
                records = run_worker(
                    impl,
                    impl_tasks,
                    batch,
                    timesteps,
                    features,
                    units,
                    steps=max(2, int(steps * step_scale)),
                    warmup=3,
                    app=APPS.get(shape),
                )
                for task in impl_tasks:
                    raw[shape][task].setdefault(impl, []).append(
                        statistics.median(records[task])
                    )
                    # The fastest step is what the load of other
                    # processes distorts least: kept for reference.
                    raw[shape][task + "_min"] = raw[shape].get(
                        task + "_min", {}
                    )
                    raw[shape][task + "_min"].setdefault(impl, []).append(
                        min(records[task])
                    )
                raw[shape].setdefault("load_average", {}).setdefault(
                    impl, []
                ).append(records["load_average"])
                done += 1
                times = "  ".join(
                    f"{t} {1e3 * statistics.median(records[t]):7.2f} ms"
                    for t in impl_tasks
                )
                print(
                    f"[{done}/{total}] round {round_index + 1} {shape:6s} "
                    f"{impl:12s} {times}"
                    f"  load {records['load_average']:.1f}"
                    f"  ({time.time() - started:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        if "train" in tasks:
            # Once a round, beside the steps it is compared with.
            raw.setdefault("sgemm", []).append(
                measure_sgemm(5 if args.quick else 20)
            )
        # A run cut short still leaves its finished rounds behind.
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        with open(args.output + ".partial.json", "w") as file:
            json.dump(raw, file, indent=1)
    if args.memory:
        memory = {}
        batch, timesteps, features, units, _ = SHAPES["long"]
        runs = [
            ("train_memory", timesteps),
            ("infer_memory", timesteps),
            ("infer_memory", SHORT_INFERENCE_TIMESTEPS),
        ]
        for task, length in runs:
            for impl in args.impls:
                records = run_worker(
                    impl,
                    [task],
                    batch,
                    length,
                    features,
                    units,
                    steps=1,
                    warmup=1,
                    env=MEASURE_MEMORY_ENV,
                )
                key = f"{task}_T{length}"
                memory.setdefault(key, {})[impl] = records[task][0]
                print(
                    f"memory {key:20s} {impl:12s} {records[task][0]:8.1f} MiB",
                    file=sys.stderr,
                    flush=True,
                )
        raw["memory"] = memory
    return raw


def _speedups(per_impl, impls):
    """Median over rounds of peer time / our time in the same round."""
    return {
        peer: statistics.median(
            p / o for p, o in zip(per_impl[peer], per_impl["ours"], strict=True)
        )
        for peer in impls
        if peer != "ours" and peer in per_impl
    }


def summarize(raw, impls):
    """Medians over rounds and ours-vs-peer ratios (peer / ours, per round)."""
    summary = {}
    sgemm = statistics.median(raw["sgemm"]) if raw.get("sgemm") else None
    for shape, tasks in raw.items():
        if shape in ("memory", "sgemm"):
            continue
        summary[shape] = {}
        for task in TASK_LABELS:
            if not tasks.get(task):
                continue
            per_impl = tasks[task]
            fastest = tasks[task + "_min"]
            entry = {
                "median_s": {
                    i: statistics.median(v) for i, v in per_impl.items()
                },
                "min_s": {i: min(v) for i, v in fastest.items()},
            }
            if "ours" in per_impl:
                entry["speedup_vs"] = _speedups(per_impl, impls)
                entry["speedup_vs_using_min"] = _speedups(fastest, impls)
            if task == "train" and sgemm:
                flops = training_step_flops(*SHAPES[shape][:4])
                entry["gflop_per_step"] = flops / 1e9
                entry["gflops"] = {
                    i: flops / t / 1e9 for i, t in entry["median_s"].items()
                }
                entry["fraction_of_sgemm"] = {
                    i: rate / sgemm for i, rate in entry["gflops"].items()
                }
            summary[shape][task] = entry
        if "load_average" not in tasks:
            # A shape no implementation ran (an application's, which only
            # the serve task runs).
            del summary[shape]
            continue
        loads = [x for v in tasks["load_average"].values() for x in v]
        summary[shape]["load_average"] = statistics.median(loads)
    if "memory" in raw:
        summary["memory_mib"] = raw["memory"]
    if sgemm:
        summary["sgemm_gflops"] = sgemm
    return summary


def _shapes(summary):
    return [s for s in summary if s not in ("memory_mib", "sgemm_gflops")]


def markdown(summary, impls):
    peers = [i for i in impls if i != "ours"]
    lines = [
        "| shape | task | "
        + " | ".join(f"{LABELS[p]} / ours" for p in peers)
        + " | ours (median) | load avg |",
        "|---" * (len(peers) + 4) + "|",
    ]
    for shape in _shapes(summary):
        tasks = summary[shape]
        batch, timesteps, features, units, _ = SHAPES[shape]
        name = f"{shape} (B={batch}, T={timesteps}, D={features}, H={units})"
        if shape in APPS:
            name = f"{APPS[shape]} application, default preset"
        for task, label in TASK_LABELS.items():
            if task not in tasks:
                continue
            entry = tasks[task]
            ratios = entry.get("speedup_vs", {})
            cells = [f"{ratios[p]:.2f}x" if p in ratios else "-" for p in peers]
            ours = entry["median_s"].get("ours")
            ours_text = f"{1e3 * ours:.1f} ms" if ours is not None else "-"
            lines.append(
                f"| {name} | {label} | "
                + " | ".join(cells)
                + f" | {ours_text} | {tasks['load_average']:.1f} |"
            )
    if "memory_mib" in summary:
        lines += [
            "",
            "| peak memory added (MiB) | "
            + " | ".join(LABELS[i] for i in impls)
            + " |",
            "|---" * (len(impls) + 1) + "|",
        ]
        for key, values in summary["memory_mib"].items():
            cells = [f"{values[i]:.1f}" if i in values else "-" for i in impls]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if "sgemm_gflops" in summary:
        lines += _limit_table(summary, impls)
    lines.append("")
    lines.append(
        "Ratios are peer time / our time (above 1: ours is faster), median "
        "of per-round ratios; memory is the peak resident memory one step "
        "adds to the warmed-up process (VmHWM, glibc set to return freed "
        "memory at once), B=8, D=32, H=128. Load avg: the machine's median "
        f"1-minute load average over the runs ({os.cpu_count()} CPUs)."
    )
    return "\n".join(lines)


def _limit_table(summary, impls):
    """Each training step's achieved GFLOP/s and share of the SGEMM rate."""
    lines = [
        "",
        f"Machine SGEMM rate (float32 tf.matmul, 2048 x 2048, all cores, "
        f"median over rounds): {summary['sgemm_gflops']:.0f} GFLOP/s. "
        "Training step work: `16 B T D H + 24 B T H^2` FLOP (matrix "
        "products, forward and backward).",
        "",
        "| shape | GFLOP per step | "
        + " | ".join(f"{LABELS[i]} GFLOP/s (of SGEMM)" for i in impls)
        + " |",
        "|---" * (len(impls) + 2) + "|",
    ]
    for shape in _shapes(summary):
        entry = summary[shape].get("train")
        if not entry or "gflops" not in entry:
            continue
        cells = [
            f"{entry['gflops'][i]:.0f} ({entry['fraction_of_sgemm'][i]:.0%})"
            if i in entry["gflops"]
            else "-"
            for i in impls
        ]
        lines.append(
            f"| {shape} | {entry['gflop_per_step']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def plot(summary, impls, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    shapes = _shapes(summary)
    panels = [
        (task, f"{label} (ms)")
        for task, label in TASK_LABELS.items()
        if any(task in summary[s] for s in shapes)
    ]
    has_memory = "memory_mib" in summary
    columns = len(panels) + has_memory
    figure, axes = plt.subplots(
        1, columns, figsize=(5 * columns, 4), squeeze=False
    )
    axes = axes[0]
    width = 0.8 / len(impls)
    for axis, (task, title) in zip(axes, panels, strict=False):
        for index, impl in enumerate(impls):
            values = [
                1e3
                * summary[s]
                .get(task, {})
                .get("median_s", {})
                .get(impl, float("nan"))
                for s in shapes
            ]
            bars = axis.bar(
                [k + index * width for k in range(len(shapes))],
                values,
                width,
                label=LABELS[impl],
            )
            axis.bar_label(bars, fmt="%.3g", fontsize=7, rotation=90)
        axis.set_xticks([k + 0.4 - width / 2 for k in range(len(shapes))])
        axis.set_xticklabels(shapes)
        # Log scale: the shapes' times differ by 10x and more. Ticks as
        # plain numbers, and headroom for the labels.
        axis.set_yscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        axis.yaxis.set_major_formatter(plain)
        axis.yaxis.set_minor_locator(
            matplotlib.ticker.LogLocator(subs=(2.0, 3.0, 5.0))
        )
        axis.yaxis.set_minor_formatter(plain)
        axis.tick_params(axis="y", which="minor", labelsize=7)
        low, high = axis.get_ylim()
        axis.set_ylim(low / 1.5, high * 2)
        axis.set_title(title)
    if has_memory:
        axis = axes[-1]
        keys = list(summary["memory_mib"])
        for index, impl in enumerate(impls):
            values = [
                summary["memory_mib"][k].get(impl, float("nan")) for k in keys
            ]
            axis.bar(
                [k + index * width for k in range(len(keys))], values, width
            )
        axis.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))])
        axis.set_xticklabels(
            [k.replace("_memory_", "\n") for k in keys], fontsize=8
        )
        axis.set_title("peak memory added (MiB), B=8")
    axes[0].legend(fontsize=8)
    figure.suptitle("LSTM on CPU: lower is better (medians over rounds)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("Examples:") :],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES)
    )
    parser.add_argument(
        "--impls",
        nargs="+",
        choices=IMPLEMENTATIONS,
        default=[i for i in IMPLEMENTATIONS if i not in OURS_VARIANTS],
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=list(TASKS),
        default=list(TASKS),
        help="what to time (default: all); serve: the exported SavedModel's "
        "signature at batch 1 and 32, ours and keras_tf only",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 round, a quarter of the steps: a smoke test, not a result",
    )
    parser.add_argument(
        "--no-memory",
        dest="memory",
        action="store_false",
        help="skip the peak-memory processes",
    )
    parser.add_argument(
        "--output",
        default=os.path.join(HERE, "results", "latest"),
        help="path prefix of the .json and .png written",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")

    raw = measure(args)
    summary = summarize(raw, args.impls)
    table = markdown(summary, args.impls)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            **cpu_description(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "shapes": {s: SHAPES[s][:4] for s in args.shapes},
        "rounds": args.rounds,
        "quick": args.quick,
        "raw": raw,
        "summary": summary,
    }
    with open(args.output + ".json", "w") as file:
        json.dump(result, file, indent=1)
    plot(summary, args.impls, args.output + ".png")
    cpu = result["machine"]
    print(
        f"CPU: {cpu['cpu_model']} ({', '.join(cpu['isa'])}), {cpu['cpus']} cores"
    )
    print(table)
    print(f"\nwrote {args.output}.json and {args.output}.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
