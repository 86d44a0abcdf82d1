"""One plot style for every figure notebook, and saving to figures/ as PNG and PDF."""
from __future__ import annotations

from pathlib import Path

from .results import REPO


def apply_style(context: str = "paper"):
    import seaborn as sns
    sns.set_theme(context=context, style="whitegrid", palette="colorblind")
    import matplotlib as mpl
    mpl.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "axes.titlesize": "medium"})


def savefig(fig, name: str, directory: str | Path | None = None) -> list[Path]:
    d = Path(directory) if directory is not None else REPO / "figures"
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / f"{name}.png", d / f"{name}.pdf"]
    for p in paths:     # no creation date in the PDF: re-drawing unchanged data leaves the file unchanged
        fig.savefig(p, bbox_inches="tight", metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
    return paths
