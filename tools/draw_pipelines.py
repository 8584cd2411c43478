"""Write the two pipeline figures, ``notebooks/figures/pipeline_{cutswap,semirest}.png``.

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


def draw(out: Path = FIGURES, dpi: int = DPI) -> list[Path]:
    """Draw both papers' pipelines into ``out``; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for paper in PIPELINE_STAGES:
        fig = show_pipeline(paper)
        path = out / f"pipeline_{paper}.png"
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
