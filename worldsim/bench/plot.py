"""A comparison benchmark's bar chart, written as a PNG beside its JSON."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def chart_path(json_path: str | Path) -> Path:
    """Where the chart of a benchmark that wrote `json_path` goes: the same name, .png."""
    return Path(json_path).with_suffix(".png")


def bar_chart(labels: list[str], values: list[float], path: str | Path, *, title: str, unit: str) -> Path:
    """Horizontal bars, one per row (first row on top), each labelled with its rounded value."""
    import matplotlib  # heavy, optional: only a comparison bench draws

    matplotlib.use("Agg")  # no display: a file, also on a headless machine
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.35 * len(labels)))
    y = list(range(len(labels)))[::-1]
    bars = ax.barh(y, values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:,.1f}" for v in values], padding=3, fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(unit)
    ax.set_title(title, fontsize=10)
    ax.margins(x=0.15)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)  # atomic: a reader never sees half a file
    log.info("wrote %s", path)
    return path
