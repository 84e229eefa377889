"""Plots of results people would rather look at than read (matplotlib, headless)."""


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "Plotting needs matplotlib: pip install 'lstm-keras[plots]'."
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_adding_curves(results, length, path):
    """Plots validation MSE per epoch of each model against the baseline.

    Args:
        results: The list `lstm_keras.long_range.compare_on_adding` returns.
        length: The sequence length, for the title.
        path: Where to write the PNG.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for result in results:
        curve = result["val_mse_per_epoch"]
        ax.plot(
            range(1, len(curve) + 1), curve, marker="o", label=result["model"]
        )
    ax.axhline(
        results[0]["baseline_mse"],
        color="gray",
        linestyle="--",
        label="predict 1.0 (baseline)",
    )
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation MSE (log scale)")
    ax.set_title(f"Adding problem, T = {length}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_long_range_curves(rows, path):
    """Validation MSE per epoch, one panel per sequence length.

    Args:
        rows: Result dicts as `training.long_range_table` writes them: those
            of `lstm_keras.long_range.compare_on_adding` plus `length`.
        path: Where to write the PNG.
    """
    plt = _pyplot()
    lengths = sorted({r["length"] for r in rows})
    fig, axes = plt.subplots(
        1, len(lengths), figsize=(5 * len(lengths), 4), dpi=120, squeeze=False
    )
    for ax, length in zip(axes[0], lengths, strict=True):
        for r in (r for r in rows if r["length"] == length):
            curve = r["val_mse_per_epoch"]
            ax.plot(
                range(1, len(curve) + 1), curve, marker="o", label=r["model"]
            )
        ax.axhline(
            rows[0]["baseline_mse"],
            color="gray",
            linestyle="--",
            label="predict 1.0 (baseline)",
        )
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation MSE (log scale)")
        ax.set_title(f"Adding problem, T = {length}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_gradient_flow(flows, path, title=None):
    """Gradient norm against distance from the loss, LSTM beside SimpleRNN.

    Args:
        flows: Dict `{label: GradientFlow}` from
            `lstm_keras.diagnostics.gradient_flow`, e.g. an LSTM's and a
            SimpleRNN's.
        path: Where to write the PNG.
        title: Optional figure title.
    """
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    for label, flow in flows.items():
        distance = flow.distance
        left.plot(distance, flow.h_norm, label=f"{label}: dL/dh_t")
        if flow.c_norm is not None:
            left.plot(distance, flow.c_norm, label=f"{label}: dL/dc_t")
            right.plot(
                distance,
                flow.carry_norm,
                label=f"{label}: via c_t -> c_t+1 (f * dL/dc_t+1)",
            )
            right.plot(
                distance,
                flow.other_norm,
                linestyle=":",
                label=f"{label}: via h_t and gates",
            )
    left.set_title("gradient reaching step t")
    right.set_title("LSTM: the two paths into dL/dc_t")
    for ax in (left, right):
        ax.set_yscale("log")
        ax.set_xlabel("distance from the loss (T - 1 - t)")
        ax.set_ylabel("norm (log scale)")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
