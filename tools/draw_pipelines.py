"""Write the two pipeline figures, ``notebooks/figures/pipeline_{cutswap,semirest}.png``, and each chapter's "you are here".

``here_<NN>.png`` is the pipeline of chapter ``NN`` with the stages it teaches highlighted
(:data:`CHAPTERS`); each chapter's opening shows it as a Markdown image, so it shows on GitHub
although the committed notebooks have no outputs.

    .venv/bin/python tools/draw_pipelines.py                 # into notebooks/figures/
    .venv/bin/python tools/draw_pipelines.py --out /tmp/figs

The figures are :func:`cutswap_lib.viz.show_pipeline` with no stage highlighted, saved at a
fixed size (no tight bounding box, so the PNG is ``figsize x DPI`` pixels whatever the
fonts) and without the matplotlib version in the file, so that a redraw changes the file
only when the figure changes. ``tests/test_viz_pipeline.py`` checks that the committed
PNGs have the size this script writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

from cutswap_lib.viz.pipeline import PIPELINE_STAGES, show_pipeline  # noqa: E402

DPI = 100
FIGURES = REPO / "notebooks" / "figures"
# chapter -> (paper, the stages it teaches); 00 (the data) shows both pipelines unhighlighted
CHAPTERS = {
    "00b": ("cutswap", ["patchcore"]),
    "01": ("cutswap", ["layercam", "kmeans"]),
    "02": ("cutswap", ["swap"]),
    "03": ("cutswap", ["three_way", "patchcore"]),
    "04": ("semirest", ["pcf", "memory", "residuals"]),
    "05": ("semirest", ["windows", "swin", "bagging"]),
    "06": ("semirest", ["mixmatch"]),
}


def draw(out: Path = FIGURES, dpi: int = DPI) -> list[Path]:
    """Draw both papers' pipelines into ``out``; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    figures = [(f"pipeline_{paper}.png", paper, None) for paper in PIPELINE_STAGES]
    figures += [(f"here_{chapter}.png", paper, here) for chapter, (paper, here) in CHAPTERS.items()]
    for name, paper, here in figures:
        fig = show_pipeline(paper, here=here)
        path = out / name
        fig.savefig(path, dpi=dpi, metadata={"Software": None})
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIGURES, help="folder for the PNGs (default: %(default)s)")
    parser.add_argument("--dpi", type=int, default=DPI, help="pixels per inch (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in draw(args.out, args.dpi):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
