"""What a search writes: results.csv, overfitting.png, report.md, summary.json.

- `results.csv`: one row per trial: id, status, the tuner that ran it,
  every hyperparameter, the numbers of `hypermodels.TRIAL_METRICS` (the
  gap is validation loss minus inference-mode training loss at the epoch
  of best validation accuracy) and, for a failed trial, its error.
- `overfitting.png`: the gap and the validation accuracy of the completed
  trials against dropout and against size (units), the baseline marked.
- `summary.json`: `best` (the best trial with the whole budget) and
  `baseline` (the application's defaults, same recipe and budget), each
  with `val_accuracy`, `val_loss`, `train_loss`, `gap`, `test_accuracy` and
  `hyperparameters`, and `improvement` (best minus baseline accuracies,
  baseline minus best gap, and whether the best beats the default on
  validation without being worse on test).
- `report.md`: the same in words and tables.
"""

import csv
import os

from lstm_keras.applications.reports import write_json
from lstm_keras.plots import _pyplot
from lstm_keras.tuning import resume
from lstm_keras.tuning.hypermodels import TRIAL_METRICS
from lstm_keras.tuning.search_space import BOUNDS

OUTPUTS = ("results.csv", "overfitting.png", "report.md", "summary.json")
SUMMARY_KEYS = ("val_accuracy", "val_loss", "train_loss", "gap")


def trial_rows(oracle, project_dir):
    """One dict per trial of `oracle`, in trial order (see the module)."""
    ran_by = {}
    for record in resume.read_run_log(project_dir):
        if record["event"] == "start":
            ran_by[record["trial_id"]] = record["tuner_id"]
    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        row = {
            "trial_id": trial_id,
            "status": trial.status,
            "tuner_id": ran_by.get(trial_id, ""),
        }
        for name, value in trial.hyperparameters.values.items():
            row[name] = round(value, 8) if isinstance(value, float) else value
        for name in TRIAL_METRICS:
            if trial.metrics.exists(name):
                row[name] = trial.metrics.get_last_value(name)
        for name in ("best_epoch", "epochs_run"):
            if row.get(name) is not None:
                row[name] = int(row[name])
        row["message"] = _last_line(trial.message)
        rows.append(row)
    return rows


def _last_line(message):
    lines = [line.strip() for line in (message or "").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else ""


def columns(rows):
    """The CSV header: ids, hyperparameters (tuned ones first), numbers."""
    names = ["trial_id", "status", "tuner_id"]
    hyper = [name for name in BOUNDS if any(name in r for r in rows)]
    known = set(names) | set(TRIAL_METRICS) | {"message"}
    for row in rows:
        hyper += [n for n in row if n not in known and n not in hyper]
    return names + hyper + list(TRIAL_METRICS) + ["message"]


def write_results_csv(rows, path):
    """`results.csv` (atomically: a temp file, then a rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns(rows), restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_results_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def summary_entry(numbers, test_accuracy, hyperparameters, **extra):
    entry = {key: float(numbers[key]) for key in SUMMARY_KEYS}
    entry["test_accuracy"] = float(test_accuracy)
    entry["hyperparameters"] = dict(hyperparameters)
    entry.update(extra)
    return entry


def write_report(config, tune_dir, rows, best, baseline, objective):
    """overfitting.png, summary.json and report.md; returns the summary.

    Args:
        config: The `TuneConfig`.
        tune_dir: Where to write.
        rows: `trial_rows(...)`.
        best: The best trial's `metrics.json` dict (`export_best`).
        baseline: The baseline's `result.json` dict, or `None`.
        objective: The objective's name.
    """
    summary = {
        "objective": objective,
        "best": summary_entry(
            best,
            best["test_accuracy"],
            best["hyperparameters"],
            trial_id=best["trial_id"],
            test_loss=best["test_loss"],
        ),
        "baseline": None,
        "improvement": None,
        "trials": {
            status.lower(): sum(r["status"] == status for r in rows)
            for status in ("COMPLETED", "FAILED", "INVALID", "RUNNING")
        },
        "config": config.to_dict(),
    }
    if baseline is not None:
        summary["baseline"] = summary_entry(
            baseline,
            baseline["test_accuracy"],
            baseline["hyperparameters"],
            test_loss=baseline["test_loss"],
            fixed_options=baseline.get("fixed_options", {}),
        )
        b, s = summary["best"], summary["baseline"]
        summary["improvement"] = {
            "val_accuracy": b["val_accuracy"] - s["val_accuracy"],
            "gap_reduction": s["gap"] - b["gap"],
            "test_accuracy": b["test_accuracy"] - s["test_accuracy"],
            "smaller_gap_and_higher_val_accuracy": bool(
                b["gap"] < s["gap"] and b["val_accuracy"] > s["val_accuracy"]
            ),
            "beats_default": bool(
                b["val_accuracy"] > s["val_accuracy"]
                and b["test_accuracy"] >= s["test_accuracy"]
            ),
        }
    plot_overfitting(
        rows, summary["baseline"], os.path.join(tune_dir, "overfitting.png")
    )
    write_json(summary, os.path.join(tune_dir, "summary.json"))
    with open(os.path.join(tune_dir, "report.md"), "w") as f:
        f.write(markdown(config, rows, summary))
    return summary


def plot_overfitting(rows, baseline, path):
    """Gap and validation accuracy against dropout and against units."""
    plt = _pyplot()
    done = [r for r in rows if r["status"] == "COMPLETED"]
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.4), dpi=120, sharey="row")
    for col, name in enumerate(("dropout", "units")):
        for row, metric in enumerate(("gap", "val_accuracy")):
            ax = axes[row][col]
            # A row's best_val_accuracy is the val_accuracy of its best epoch.
            key = "best_val_accuracy" if metric == "val_accuracy" else metric
            x = [r.get(name) for r in done]
            y = [r[key] for r in done]
            ax.scatter(x, y, color="tab:blue", label="trials", zorder=3)
            for r in done:
                ax.annotate(
                    r["trial_id"],
                    (r.get(name), r[key]),
                    textcoords="offset points",
                    xytext=(4, 3),
                    fontsize=7,
                )
            if baseline is not None:
                ax.scatter(
                    [baseline["hyperparameters"][name]],
                    [baseline[metric]],
                    marker="*",
                    s=160,
                    color="tab:red",
                    label="default (baseline)",
                    zorder=4,
                )
            if name == "units":
                ax.set_xscale("log", base=2)
            ax.set_xlabel("units" if name == "units" else "LSTM dropout")
            ax.set_ylabel(
                "gap: val loss - train loss" if metric == "gap" else metric
            )
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Overfitting against dropout and size (best epoch per run)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(config, rows, summary):
    """report.md's text."""
    best, base = summary["best"], summary["baseline"]
    lines = [
        f"# Tuning {config.app} on {config.data}",
        "",
        f"{config.tuner} search, {len(rows)} trials "
        f"({summary['trials']['completed']} completed, "
        f"{summary['trials']['failed']} failed), each with the "
        f"{config.app} preset's recipe"
        + (f" ({config.epochs} epochs)" if config.epochs else "")
        + (
            f", Hyperband budgets of 1/9, 1/3 and all of it (max_budget "
            f"{config.max_budget})"
            if config.tuner == "hyperband"
            else ""
        )
        + f", seed {config.seed}"
        + (
            f", {config.max_train_examples} training examples"
            if config.max_train_examples
            else ""
        )
        + f"; objective: {summary['objective']} (max).",
        "",
        "The gap is validation loss minus training loss, both measured in "
        "inference mode (no dropout), at the epoch of best validation "
        "accuracy.",
        "",
    ]
    if base is not None:
        improvement = summary["improvement"]
        verdict = (
            "beats"
            if improvement["beats_default"]
            else "does NOT beat (higher validation accuracy, test no worse)"
        )
        lines += [
            f"The best trial with the whole budget ({best['trial_id']}) "
            f"{verdict} the application's default model trained with the "
            "same recipe and budget: its gap is "
            f"{improvement['gap_reduction']:+.4f} smaller "
            f"({best['gap']:.4f} against {base['gap']:.4f}) and its "
            "validation accuracy "
            f"{100 * improvement['val_accuracy']:+.2f} points higher "
            f"({best['val_accuracy']:.4f} against "
            f"{base['val_accuracy']:.4f}); test accuracy "
            f"{best['test_accuracy']:.4f} against "
            f"{base['test_accuracy']:.4f} "
            f"({100 * improvement['test_accuracy']:+.2f} points).",
            "",
            "| | val accuracy | val loss | train loss | gap | test accuracy |",
            "|---|---|---|---|---|---|",
        ]
        for label, entry in (("best trial", best), ("default", base)):
            lines.append(
                f"| {label} | {entry['val_accuracy']:.4f} | "
                f"{entry['val_loss']:.4f} | {entry['train_loss']:.4f} | "
                f"{entry['gap']:.4f} | {entry['test_accuracy']:.4f} |"
            )
        lines.append("")
    hp = ", ".join(f"{k}={v}" for k, v in best["hyperparameters"].items())
    lines += [
        f"Best hyperparameters: {hp}.",
        "",
        "![overfitting](overfitting.png)",
        "",
        "## All trials",
        "",
    ]
    header = [c for c in columns(rows) if c not in ("message", "tuner_id")]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in rows:
        cells = [_cell(row.get(c, "")) for c in header]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def _cell(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_text(summary, tune_dir):
    """What the tuning command prints when a search ends.

    Args:
        summary: The dict `tune` returns (`best`, `baseline`, ...).
        tune_dir: The search's folder.

    Returns:
        The best trial's and the baseline's numbers and the files written,
        as lines of text.
    """
    best, base = summary["best"], summary["baseline"]
    lines = [
        f"\nbest trial {best['trial_id']}: val accuracy "
        f"{best['val_accuracy']:.4f}, gap {best['gap']:.4f}, test accuracy "
        f"{best['test_accuracy']:.4f}"
    ]
    if base is not None:
        lines.append(
            f"default: val accuracy {base['val_accuracy']:.4f}, gap "
            f"{base['gap']:.4f}, test accuracy {base['test_accuracy']:.4f}"
        )
    lines.append(
        f"wrote {tune_dir}/results.csv, overfitting.png, report.md, "
        "summary.json, best/"
    )
    return "\n".join(lines)
