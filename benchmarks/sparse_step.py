"""Times one SST-2 training step with Adam against `LazyAdam`.

The model is `SentimentClassifier` with its defaults (a 20,000-row word
embedding and a 50,000-row subword table, 256 wide), adapted on
`data/samples/sst2/train.tsv`; a step is `train_on_batch` on 64 of its
sentences. Both optimizers clip at norm 1, as `compile()` does. The two
models train in one process, alternating within each round (the order
swaps every round) after a warm-up, so that load on the machine hits both
alike. Reported: the median step of each, and the median over rounds of
the ratio Adam / LazyAdam within a round.

Writes `benchmarks/results/sparse_step.json` (or `--output`).

Example:

    python benchmarks/sparse_step.py --rounds 5 --steps 10
"""

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRAIN = os.path.join(ROOT, "data", "samples", "sst2", "train.tsv")
OPTIMIZERS = ("adam", "lazy_adam")


def cpu_model():
    """The CPU's model name from `/proc/cpuinfo` (Linux), else "unknown"."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return "unknown"


def read_sst2(path):
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file, delimiter="\t"))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


def build_models(texts, seed):
    """Two identical adapted classifiers, compiled with each optimizer."""
    import keras

    from lstm_keras.applications import LazyAdam
    from lstm_keras.applications import SentimentClassifier

    keras.utils.set_random_seed(seed)
    adam = SentimentClassifier(["negative", "positive"])
    adam.adapt(texts)
    lazy = SentimentClassifier(["negative", "positive"])
    lazy.vectorizer.set_vocabulary(adam.vocabulary())
    lazy.set_weights(adam.get_weights())
    # The learning rate of `compile()`; the step's cost does not depend on it.
    rate = SentimentClassifier.default_learning_rate
    adam.compile(optimizer=keras.optimizers.Adam(rate, clipnorm=1.0))
    lazy.compile(optimizer=LazyAdam(rate, clipnorm=1.0))
    return {"adam": adam, "lazy_adam": lazy}


def time_steps(model, batches):
    """Seconds of each `train_on_batch` call over `batches`."""
    times = []
    for texts, labels in batches:
        started = time.perf_counter()
        model.train_on_batch(texts, labels)
        times.append(time.perf_counter() - started)
    return times


def measure(args):
    import numpy as np
    import tensorflow as tf

    texts, labels = read_sst2(args.data)
    models = build_models(texts, args.seed)
    rng = np.random.default_rng(args.seed)
    batches = []
    for _ in range(args.steps):
        rows = rng.choice(len(texts), size=args.batch_size, replace=False)
        batches.append(
            (
                tf.constant([texts[i] for i in rows]),
                np.array([labels[i] for i in rows]),
            )
        )
    for model in models.values():
        time_steps(model, batches[: args.warmup])
    per_round = {name: [] for name in OPTIMIZERS}
    for round_index in range(args.rounds):
        order = OPTIMIZERS if round_index % 2 == 0 else OPTIMIZERS[::-1]
        for name in order:
            per_round[name].append(time_steps(models[name], batches))
        medians = {n: statistics.median(per_round[n][-1]) for n in OPTIMIZERS}
        print(
            f"round {round_index + 1}/{args.rounds}: "
            + ", ".join(f"{n} {medians[n] * 1e3:.1f} ms" for n in OPTIMIZERS),
            flush=True,
        )
    return per_round


def summarize(per_round, args):
    import keras
    import tensorflow as tf

    round_medians = {
        name: [statistics.median(times) for times in rounds]
        for name, rounds in per_round.items()
    }
    ratios = [
        adam / lazy
        for adam, lazy in zip(
            round_medians["adam"], round_medians["lazy_adam"], strict=True
        )
    ]
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "warmup_steps": args.warmup,
        "median_step_ms": {
            name: 1e3 * statistics.median(t for r in rounds for t in r)
            for name, rounds in per_round.items()
        },
        "round_median_step_ms": {
            name: [1e3 * m for m in medians]
            for name, medians in round_medians.items()
        },
        "ratio_adam_over_lazy_adam": statistics.median(ratios),
        "round_ratios": ratios,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=(
            "Time a training step of the SST-2 sentiment model with "
            "keras.optimizers.Adam(clipnorm=1.0) against "
            "LazyAdam(clipnorm=1.0), alternating the two in one process."
        ),
        epilog="example: python benchmarks/sparse_step.py --rounds 5",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="timed rounds per optimizer"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=10,
        help="train_on_batch calls per optimizer and round",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="untimed steps per optimizer first (tracing, allocation)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=TRAIN, help="SST-2 TSV file")
    parser.add_argument(
        "--output",
        default=os.path.join(HERE, "results", "sparse_step.json"),
        help="where the JSON results go",
    )
    args = parser.parse_args(argv)
    for name in ("rounds", "steps", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")

    per_round = measure(args)
    result = summarize(per_round, args)
    steps = result["median_step_ms"]
    print(f"CPU: {result['cpu_model']} ({result['cpu_count']} logical)")
    print(f"Adam(clipnorm=1.0):     {steps['adam']:.1f} ms per step (median)")
    print(f"LazyAdam(clipnorm=1.0): {steps['lazy_adam']:.1f} ms per step")
    print(
        "Adam / LazyAdam: "
        f"{result['ratio_adam_over_lazy_adam']:.2f}x (median over rounds)"
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as file:
        json.dump(result, file, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
