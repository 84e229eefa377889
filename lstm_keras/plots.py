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
