"""The synthetic long-range experiments, each writing its results to a folder.

Each experiment trains `lstm_keras.LSTM` beside `keras.layers.SimpleRNN` of
the same width, on the same data and budget, and takes one config object:

- `adding_demo(AddingDemoConfig(...), out_dir)`: both on the adding problem;
  writes `results.json` and `adding_val_mse.png`.
- `long_range_table(LongRangeConfig(...), out_dir)`: the adding problem at
  several lengths; writes `long_range.json`, `long_range.md` (the table) and
  `long_range.png` (the validation curves).
- `gradient_flow_comparison(GradientFlowConfig(...), out_dir)`: a brief
  training on the adding or copy task, then the gradient reaching each
  timestep (`lstm_keras.diagnostics.gradient_flow`) on a held-out batch;
  writes `gradient_flow.png`, `gradient_flow.csv` (the tidy table) and
  `summary.json`.

Every `summary.json`/`results.json` holds the config it ran with, including
`out`, the folder. The `format_*` functions give the text the commands
(`training/adding_demo.py`, `training/long_range_table.py`,
`training/gradflow.py`) print.
"""

import csv
import dataclasses
import json
import os
import time

# Per length: (training sequences, epochs). Long sequences cost more per
# update, so they get fewer sequences; about 750 and 940 updates.
DEFAULT_BUDGETS = {100: (4000, 6), 400: (3000, 10)}
"""`long_range_table`'s budget per length when the config sets none."""

_FALLBACK_BUDGET = (4000, 10)


def _write_json(config, out_dir, key, results, filename):
    os.makedirs(out_dir, exist_ok=True)
    shown = {**dataclasses.asdict(config), "out": out_dir}
    with open(os.path.join(out_dir, filename), "w") as f:
        json.dump({"config": shown, key: results}, f, indent=2)


# ---------------------------------------------------------------- adding demo


@dataclasses.dataclass
class AddingDemoConfig:
    """Settings of `adding_demo`.

    Args:
        length: Timesteps T. Defaults to `100`.
        units: Width of both recurrent layers. Defaults to `64`.
        samples: Training sequences. Defaults to `10000`.
        epochs: Training epochs. Defaults to `8`.
        seed: Seed of data and weights. Defaults to `0`.
        batch_size: Batch size. Defaults to `32`.
        learning_rate: Adam's rate. Defaults to `1e-2`.
        verbose: Keras progress output. Defaults to `2`.
    """

    length: int = 100
    units: int = 64
    samples: int = 10000
    epochs: int = 8
    seed: int = 0
    batch_size: int = 32
    learning_rate: float = 1e-2
    verbose: int = 2


def adding_demo(config, out_dir):
    """Trains both models on the adding problem and writes the results.

    Args:
        config: An `AddingDemoConfig`.
        out_dir: Folder for `results.json` and `adding_val_mse.png`.

    Returns:
        The list of per-model dicts of `long_range.compare_on_adding`.
    """
    from lstm_keras import long_range
    from lstm_keras.plots import plot_adding_curves

    results = long_range.compare_on_adding(
        length=config.length,
        units=config.units,
        train_samples=config.samples,
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        verbose=config.verbose,
    )
    _write_json(config, out_dir, "results", results, "results.json")
    plot_adding_curves(
        results, config.length, os.path.join(out_dir, "adding_val_mse.png")
    )
    return results


def format_adding_results(results, config):
    """The adding demo's table: test MSE per model beside the baseline."""
    from lstm_keras.long_range import ADDING_BASELINE_MSE

    lines = [
        f"\nAdding problem, T={config.length}, {config.epochs} epochs, "
        f"seed {config.seed}",
        f"{'model':<24} {'params':>8} {'test MSE':>10} {'train s':>8}",
    ]
    for r in results:
        lines.append(
            f"{r['model']:<24} {r['params']:>8} {r['test_mse']:>10.4f} "
            f"{r['train_seconds']:>8.1f}"
        )
    lines.append(
        f"{'predict 1.0 (baseline)':<24} {'':>8} {ADDING_BASELINE_MSE:>10.4f}"
    )
    return "\n".join(lines)


# --------------------------------------------------------- long-range table


@dataclasses.dataclass
class LongRangeConfig:
    """Settings of `long_range_table`.

    Args:
        lengths: Sequence lengths T. Defaults to `(100, 400)`.
        units: Width of both recurrent layers. Defaults to `64`.
        samples: Training sequences at every length, or `None` for
            `DEFAULT_BUDGETS`. Defaults to `None`.
        epochs: Training epochs at every length, or `None` for
            `DEFAULT_BUDGETS`. Defaults to `None`.
        seed: Seed of data and weights. Defaults to `0`.
        learning_rate: Adam's rate. Defaults to `1e-2`.
        chrono: Whether to chrono-initialize the LSTM's gate biases.
            Defaults to `True`.
        verbose: Keras progress output. Defaults to `2`.
    """

    lengths: tuple = (100, 400)
    units: int = 64
    samples: int | None = None
    epochs: int | None = None
    seed: int = 0
    learning_rate: float = 1e-2
    chrono: bool = True
    verbose: int = 2


def long_range_table(config, out_dir):
    """Trains both models at each length and writes the table.

    Args:
        config: A `LongRangeConfig`.
        out_dir: Folder for `long_range.json`, `long_range.md` and
            `long_range.png`.

    Returns:
        One dict per model and length: `compare_on_adding`'s numbers with
        the length and the budget.
    """
    from lstm_keras import long_range
    from lstm_keras.plots import plot_long_range_curves

    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for length in config.lengths:
        samples, epochs = DEFAULT_BUDGETS.get(length, _FALLBACK_BUDGET)
        samples = config.samples or samples
        epochs = config.epochs or epochs
        print(f"\n== adding problem, T={length}: {samples} x {epochs} epochs")
        results = long_range.compare_on_adding(
            chrono=config.chrono,
            length=length,
            units=config.units,
            train_samples=samples,
            test_samples=1000,
            epochs=epochs,
            batch_size=32,
            learning_rate=config.learning_rate,
            seed=config.seed,
            verbose=config.verbose,
        )
        for r in results:
            r.update(
                length=length,
                units=config.units,
                train_samples=samples,
                epochs=epochs,
                batch_size=32,
                learning_rate=config.learning_rate,
                seed=config.seed,
                chrono=config.chrono,
            )
            rows.append(r)
    _write_json(config, out_dir, "results", rows, "long_range.json")
    with open(os.path.join(out_dir, "long_range.md"), "w") as f:
        f.write(markdown_table(rows))
    plot_long_range_curves(rows, os.path.join(out_dir, "long_range.png"))
    return rows


def markdown_table(rows):
    """The results as a markdown table, one line per model and length."""
    lines = [
        "| T | model (width) | params | sequences x epochs | test MSE "
        "| baseline MSE | train s |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['length']} | `{r['model']}` ({r['units']}) "
            f"| {r['params']:,} | {r['train_samples']} x {r['epochs']} "
            f"| {r['test_mse']:.4f} | {r['baseline_mse']:.4f} "
            f"| {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------ gradient flow


@dataclasses.dataclass
class GradientFlowConfig:
    """Settings of `gradient_flow_comparison`.

    Args:
        task: `"adding"` (regression) or `"copy"` (sequence to sequence).
            Defaults to `"adding"`.
        length: Timesteps T (adding) or blank steps (copy). Defaults to
            `100`.
        units: Width of both recurrent layers. Defaults to `64`.
        samples: Training sequences. Defaults to `4000`.
        epochs: Training epochs; `0` measures at initialization. Defaults
            to `6`.
        seed: Seed of data and weights. Defaults to `0`.
        batch: Held-out sequences the gradient is measured on. Defaults to
            `64`.
        chrono: Whether to chrono-initialize the LSTM's gate biases.
            Defaults to `True`.
        verbose: Keras progress output. Defaults to `2`.
    """

    task: str = "adding"
    length: int = 100
    units: int = 64
    samples: int = 4000
    epochs: int = 6
    seed: int = 0
    batch: int = 64
    chrono: bool = True
    verbose: int = 2


def _task(config):
    """Data, model builder and loss for the configured task."""
    import keras

    from lstm_keras import long_range

    if config.task == "adding":
        x, y = long_range.adding_problem(
            config.samples, config.length, config.seed
        )
        x_test, y_test = long_range.adding_problem(
            config.batch, config.length, config.seed + 1
        )

        def build(layer):
            return long_range.build_regressor(layer, config.length)

        return (x, y), (x_test, y_test), build, "mse"

    x, y = long_range.copy_problem(
        config.samples, config.length, seed=config.seed
    )
    x_test, y_test = long_range.copy_problem(
        config.batch, config.length, seed=config.seed + 1
    )
    steps, channels = x.shape[1:]

    def build(layer):
        inputs = keras.Input((steps, channels))
        outputs = keras.layers.Dense(channels - 1)(layer(inputs))
        return keras.Model(inputs, outputs, name=layer.name + "_copier")

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return (x, y), (x_test, y_test), build, loss


def _recurrent_layers(config, timesteps):
    """`{label: factory}` of the two compared layers."""
    import keras

    from lstm_keras import LSTM
    from lstm_keras.long_range import ChronoBias

    chrono_kwargs = {}
    if config.chrono:
        chrono_kwargs = dict(
            bias_initializer=ChronoBias(max(timesteps, 3), seed=config.seed),
            unit_forget_bias=False,
        )
    sequences = config.task == "copy"
    return {
        "LSTM": lambda: LSTM(
            config.units,
            return_sequences=sequences,
            name="lstm",
            **chrono_kwargs,
        ),
        "SimpleRNN": lambda: keras.layers.SimpleRNN(
            config.units, return_sequences=sequences, name="rnn"
        ),
    }


def gradient_flow_comparison(config, out_dir):
    """Trains both models briefly, then measures their gradient flow.

    Args:
        config: A `GradientFlowConfig`.
        out_dir: Folder for `gradient_flow.png`, `gradient_flow.csv` and
            `summary.json`.

    Returns:
        `{label: summary}` for `"LSTM"` and `"SimpleRNN"`: the numbers of
        `lstm_keras.diagnostics.summarize` and `train_seconds`.
    """
    import keras

    from lstm_keras import diagnostics
    from lstm_keras.plots import plot_gradient_flow

    train, test, build, loss = _task(config)
    flows, summaries = {}, {}
    layers = _recurrent_layers(config, train[0].shape[1])
    for label, make in layers.items():
        keras.utils.set_random_seed(config.seed)
        model = build(make())
        model.compile(
            optimizer=keras.optimizers.Adam(1e-2, clipnorm=1.0), loss=loss
        )
        start = time.perf_counter()
        if config.epochs > 0:
            print(f"== training {label} ({config.epochs} epochs)")
            model.fit(
                *train,
                batch_size=32,
                epochs=config.epochs,
                verbose=config.verbose,
            )
        seconds = time.perf_counter() - start
        print(
            f"== measuring {label}'s gradient flow on {config.batch} sequences"
        )
        flows[label] = diagnostics.gradient_flow(model, *test)
        summaries[label] = dict(
            diagnostics.summarize(flows[label]), train_seconds=seconds
        )

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "gradient_flow.csv"), "w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=["model", "t", "distance", "quantity", "gate", "norm"]
        )
        writer.writeheader()
        for label, flow in flows.items():
            writer.writerows(flow.rows(label))
    _write_json(config, out_dir, "summary", summaries, "summary.json")
    plot_gradient_flow(
        flows,
        os.path.join(out_dir, "gradient_flow.png"),
        title=(
            f"{config.task} task, T = {config.length}, {config.epochs} epochs"
            + (", LSTM chrono-initialized" if config.chrono else "")
        ),
    )
    return summaries


def format_gradient_flow(summaries, config):
    """The gradient norms near and far from the loss, per model."""
    lines = [f"\nGradient flow, {config.task} task, length {config.length}"]
    for label, s in summaries.items():
        line = (
            f"{label:<10} loss {s['loss']:.4f}  ||dL/dh|| near "
            f"{s['h_norm_near']:.2e} far {s['h_norm_far']:.2e} "
            f"(far/near {s['h_far_over_near']:.1e})"
        )
        if "c_norm_near" in s:
            line += (
                f"\n{'':<10} ||dL/dc|| near {s['c_norm_near']:.2e} far "
                f"{s['c_norm_far']:.2e} (far/near {s['c_far_over_near']:.1e}); "
                f"along the cell state: {100 * s['carry_share']:.0f}% (median)"
            )
            shares = ", ".join(
                f"{g} {100 * v:.0f}%" for g, v in s["gate_share"].items()
            )
            line += f"\n{'':<10} pre-activation gradient by gate: {shares}"
        lines.append(line)
    return "\n".join(lines)
