"""The benchmarks' figures (matplotlib): quality against the number of network evaluations."""

from __future__ import annotations

from pathlib import Path


def line_plot(path: Path, series: dict[str, list[tuple[float, float]]], title: str, x_label: str, y_label: str,
              references: dict[str, float] | None = None, log_x: bool = True) -> Path:
    """One line per series on a log-scaled x axis (step counts, each one a tick; log_x=False: a linear axis with
    matplotlib's ticks); a dotted horizontal line per reference (e.g. the degraded input's PSNR), coloured like the
    series of the same name prefix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    colours = {}
    for index, (name, points) in enumerate(series.items()):
        colours[name] = f"C{index}"
        ax.plot([x for x, _ in points], [y for _, y in points], "o-", color=colours[name], label=name)
    for label, value in (references or {}).items():
        colour = next((c for name, c in colours.items() if label.startswith(name)), "grey")
        ax.axhline(value, color=colour, linestyle=":", linewidth=1.2, label=label)
    if log_x:
        ticks = sorted({x for points in series.values() for x, _ in points})
        ax.set_xscale("log")
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set(xlabel=x_label, ylabel=y_label, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
