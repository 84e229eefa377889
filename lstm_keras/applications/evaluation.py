"""The quality runs of `make eval`: the training command, several seeds.

Each run is `runner.train_and_evaluate` of a `TrainConfig` that names only
the data, the seed and (for the held-out speaker) the speaker, so it trains
exactly what `lstm-keras-train APP --data DIR` trains. `run_seeds` trains
one run per seed, each in its own folder (a finished one is read back, a
killed one resumes), and `summarize` gives the mean and spread of each
figure. `sweep` trains variants of a run on one seed and measures how well
validation accuracy ranks them as test accuracy does (Spearman's rho).
"""

import dataclasses
import json
import os

import numpy as np

from lstm_keras.applications import reports
from lstm_keras.applications import runner

# The quality runs: what `lstm-keras-train` is given, data relative to the
# data root (`../shared/data` in this project).
RUNS = {
    "sst2": {"app": "sentiment", "data": "sst2"},
    "fsdd": {"app": "speech", "data": "fsdd/recordings"},
    "fsdd_holdout": {
        "app": "speech",
        "data": "fsdd/recordings",
        "holdout_speaker": "george",
    },
    "imdb_head": {"app": "sentiment", "data": "imdb_head"},
    # The streaming preset (`lstm-keras-train speech --streaming`).
    "fsdd_streaming": {
        "app": "speech",
        "data": "fsdd/recordings",
        "model_options": {"bidirectional": False, "clip_normalization": False},
    },
    # Speech validated on a speaker it never hears (theo), tested on
    # another (george): how the variants do on new voices.
    "fsdd_speaker_validation": {
        "app": "speech",
        "data": "fsdd/recordings",
        "holdout_speaker": "george",
        "validation_speaker": "theo",
    },
}
# Runs that also report the bag-of-words logistic regression beside them.
BASELINE_RUNS = ("imdb_head",)
FIGURES = ("validation_accuracy", "test_accuracy", "training_seconds")
# The variants `python -m training.sweep RUN` trains: the preset and one
# change each, the choices the preset's values were picked from.
SPEECH_VARIANTS = {
    "preset": {},
    "units_64": {"model_options": {"units": 64}},
    "weight_average": {"ema_fraction": 0.25},
    "cosine": {"schedule": "cosine"},
    "no_augmentation": {"model_options": {"augment": False}},
    "head_dropout_0.3": {"model_options": {"head_dropout": 0.3}},
    "no_clip_normalization": {"model_options": {"clip_normalization": False}},
    "one_layer": {"model_options": {"num_layers": 1}},
    "spec_augment": {"model_options": {"frequency_masks": 2, "time_masks": 2}},
    "patience_12": {"patience": 12},
}
SWEEPS = {
    "sst2": {
        "preset": {},
        "epochs_2": {"epochs": 2},
        "epochs_3": {"epochs": 3},
        "no_weight_average": {"ema_fraction": None},
        "learning_rate_1e-3": {"learning_rate": 1e-3},
        "pooling_last": {"model_options": {"pooling": "last"}},
        "no_subwords": {"model_options": {"subword_buckets": 0}},
        "units_256": {"model_options": {"units": 256}},
        "members_3": {"model_options": {"num_members": 3}},
    },
    # Speech is chosen on the mean of its two validation accuracies: held-out
    # recordings of the training speakers, and a held-out speaker.
    "fsdd": SPEECH_VARIANTS,
    "fsdd_speaker_validation": SPEECH_VARIANTS,
}


def run_config(name, data_root, seed, **overrides):
    """The `TrainConfig` of quality run `name` for `seed`."""
    if name not in RUNS:
        raise ValueError(
            f"Received an invalid value for argument name, expected one of "
            f"{sorted(RUNS)}, got {name!r}."
        )
    settings = {**RUNS[name], **overrides}
    settings["data"] = os.path.join(data_root, settings["data"])
    return runner.TrainConfig(seed=seed, **settings)


def train_once(config, run_dir):
    """`metrics.json` of a finished run in `run_dir`, else trains it."""
    path = os.path.join(run_dir, "metrics.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return runner.train_and_evaluate(config, run_dir)


def run_seeds(name, data_root, out, seeds, **overrides):
    """Trains quality run `name` once per seed, in `out/name/seed<k>/`.

    Returns:
        The runs' `metrics.json` dicts, in the order of `seeds`.
    """
    results = []
    for seed in seeds:
        print(f"== {name}, seed {seed} ==", flush=True)
        config = run_config(name, data_root, seed, **overrides)
        results.append(
            train_once(config, os.path.join(out, name, f"seed{seed}"))
        )
    return results


def bag_of_words_baseline(name, data_root, out, seed=0):
    """The bag-of-words baseline on run `name`'s splits, cached in
    `out/name/bag_of_words.json` (see `baselines.bag_of_words`)."""
    from lstm_keras.applications import baselines

    path = os.path.join(out, name, "bag_of_words.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    splits = runner.load_splits(run_config(name, data_root, seed))
    result = {"seed": seed, **baselines.bag_of_words(splits, seed=seed)}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    reports.write_json(result, path)
    return result


def summarize(name, results):
    """Mean, sample standard deviation and values of each figure."""
    summary = {
        "run": name,
        "seeds": [r["config"]["seed"] for r in results],
        "config": _shared_config(results),
        "num_examples": results[0]["num_examples"],
        "validation_scheme": results[0].get("validation_scheme"),
    }
    for figure in FIGURES:
        values = [float(r[figure]) for r in results]
        summary[figure] = {
            "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": values,
        }
    if "max_length" in results[0]:
        summary["max_length"] = [r["max_length"] for r in results]
    return summary


def evaluate(names, data_root, out, seeds, verbose=2):
    """`make eval`'s runs, each over `seeds`, summarized.

    Each run of `names` trains with `lstm-keras-train`'s defaults once per
    seed; a run in `BASELINE_RUNS` also gets its bag-of-words baseline.
    Writes `out/results.json` and `out/accuracy.png`.

    Args:
        names: Run names, keys of `RUNS`.
        data_root: The folder holding the datasets.
        out: The output folder; each seed's run is in `out/NAME/seedS/`.
        seeds: The seeds, e.g. `(0, 1, 2)`.
        verbose: Keras's `fit` verbosity. Defaults to 2.

    Returns:
        The summaries, one per run (`summarize`'s).
    """
    summaries = []
    for name in names:
        results = run_seeds(name, data_root, out, seeds, verbose=verbose)
        summary = summarize(name, results)
        if name in BASELINE_RUNS:
            summary["bag_of_words"] = bag_of_words_baseline(
                name, data_root, out
            )
        summaries.append(summary)
    reports.write_json(summaries, os.path.join(out, "results.json"))
    plot_summaries(summaries, os.path.join(out, "accuracy.png"))
    return summaries


def format_report(summaries):
    """`format_table` of the summaries, then each run's baseline line."""
    lines = [format_table(summaries)]
    for summary in summaries:
        baseline = summary.get("bag_of_words")
        if baseline:
            lines.append(
                f"{summary['run']}: bag-of-words logistic regression (L2 "
                f"{baseline['l2']:g}, chosen on validation): validation "
                f"{baseline['validation_accuracy']:.4f}, test "
                f"{baseline['test_accuracy']:.4f}"
            )
    return "\n".join(lines)


def _shared_config(results):
    config = dict(results[0]["config"])
    config.pop("seed", None)
    return config


def format_table(summaries):
    """The summaries as a fixed-width table (mean ± std over seeds)."""
    lines = [
        f"{'run':<14} {'seeds':>5} {'validation acc':>16} {'test acc':>16} "
        f"{'train (s)':>10}"
    ]
    for s in summaries:
        val, test, secs = (s[f] for f in FIGURES)
        lines.append(
            f"{s['run']:<14} {len(s['seeds']):>5} "
            f"{val['mean']:>9.4f} ± {val['std']:.4f} "
            f"{test['mean']:>9.4f} ± {test['std']:.4f} "
            f"{secs['mean']:>10.0f}"
        )
    return "\n".join(lines)


def plot_summaries(summaries, path):
    """Validation and test accuracy of every seed of every run, as a PNG."""
    from lstm_keras.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=120)
    for i, s in enumerate(summaries):
        for offset, figure, color in (
            (-0.12, "validation_accuracy", "tab:blue"),
            (0.12, "test_accuracy", "tab:orange"),
        ):
            values = s[figure]["values"]
            ax.scatter([i + offset] * len(values), values, color=color, s=18)
            ax.errorbar(
                i + offset,
                s[figure]["mean"],
                yerr=s[figure]["std"],
                color=color,
                capsize=4,
                marker="_",
                markersize=14,
                label=figure.replace("_", " ") if i == 0 else None,
            )
    ax.set_xticks(range(len(summaries)), [s["run"] for s in summaries])
    ax.set_ylabel("accuracy")
    ax.set_title("Quality runs: each seed, mean ± std")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------ sweep


def spearman(a, b):
    """Spearman's rank correlation of two equal-length sequences (ties get
    their average rank)."""
    ranks = [_average_ranks(np.asarray(x, float)) for x in (a, b)]
    if len(ranks[0]) != len(ranks[1]) or len(ranks[0]) < 2:
        raise ValueError("Spearman's rho needs two sequences of >= 2 values.")
    return float(np.corrcoef(ranks[0], ranks[1])[0, 1])


def _average_ranks(values):
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def sweep(name, variants, data_root, out, seed=0, **overrides):
    """Trains each variant of run `name` and ranks validation against test.

    Args:
        name: A key of `RUNS`.
        variants: Dict of variant name to `TrainConfig` overrides
            (`model_options` merged into the run's).
        data_root: The folder the runs' data paths are relative to.
        out: Output folder; variant `v` trains in `out/name/v/`.
        seed: The seed of every variant. Defaults to 0.
        **overrides: `TrainConfig` settings shared by every variant.

    Returns:
        `{"run", "seed", "variants": [{"variant", "overrides",
        "validation_accuracy", "test_accuracy", "training_seconds"}],
        "spearman"}`.
    """
    rows = []
    for variant, settings in variants.items():
        print(f"== {name}, variant {variant} ==", flush=True)
        merged = {**overrides, **settings}
        merged["model_options"] = {
            **overrides.get("model_options", {}),
            **settings.get("model_options", {}),
        }
        config = run_config(name, data_root, seed, **merged)
        metrics = train_once(config, os.path.join(out, name, variant))
        rows.append(
            {
                "variant": variant,
                "overrides": settings,
                **{f: metrics[f] for f in FIGURES},
                "config": dataclasses.asdict(config),
            }
        )
    rho = spearman(
        [r["validation_accuracy"] for r in rows],
        [r["test_accuracy"] for r in rows],
    )
    result = {"run": name, "seed": seed, "variants": rows, "spearman": rho}
    reports.write_json(result, os.path.join(out, name, "sweep.json"))
    plot_sweep(result, os.path.join(out, name, "sweep.png"))
    return result


# Sweeps chosen together: the preset is the variant of best mean validation
# accuracy over them.
JOINT_SWEEPS = (("fsdd", "fsdd_speaker_validation"),)


def joint_validation(out, names):
    """Mean validation accuracy per variant over the sweeps `names` found
    in `out` (`None` until all of them have run), best first."""
    paths = [os.path.join(out, name, "sweep.json") for name in names]
    if not all(os.path.exists(p) for p in paths):
        return None
    scores = {}
    for path in paths:
        with open(path) as f:
            for row in json.load(f)["variants"]:
                scores.setdefault(row["variant"], []).append(
                    row["validation_accuracy"]
                )
    means = {
        v: float(np.mean(a)) for v, a in scores.items() if len(a) == len(names)
    }
    return sorted(means.items(), key=lambda item: -item[1])


def plot_sweep(result, path):
    """Test against validation accuracy of the sweep's variants, as a PNG."""
    from lstm_keras.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    # Variants that score alike share a point and one label.
    points = {}
    for row in result["variants"]:
        xy = (row["validation_accuracy"], row["test_accuracy"])
        points.setdefault(xy, []).append(row["variant"])
    # Labels alternate above and below their points, left to right, so
    # that neighbours' labels do not run into each other.
    for i, ((x, y), names) in enumerate(sorted(points.items())):
        ax.scatter([x], [y], color="tab:blue")
        ax.annotate("\n".join(names), (x, y), fontsize=7,
                    xytext=(3, 3) if i % 2 == 0 else (3, -3),
                    va="bottom" if i % 2 == 0 else "top",
                    textcoords="offset points")  # fmt: skip
    ax.set_xlabel("validation accuracy")
    ax.set_ylabel("test accuracy")
    ax.set_title(
        f"{result['run']}: variants, Spearman rho = {result['spearman']:.2f}"
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
