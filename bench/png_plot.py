"""A line plot written as PNG (matplotlib, the `bench` extra: `pip install -e '.[bench]'`)."""

from __future__ import annotations

from pathlib import Path


def line_plot(path: Path, series: dict[str, list[tuple[float, float]]], xlabel: str,
              ylabel: str, title: str) -> bool:
    """One line per series of `(x, y)` points, with a legend; False if
    matplotlib is missing (nothing written)."""
    try:
        import matplotlib
    except ImportError:
        print("no plot: matplotlib is not installed (pip install -e '.[bench]')")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for name, points in series.items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True
