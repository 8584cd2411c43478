"""Write elpv solar cells (real electroluminescence photographs) as an MVTec-layout category.

    .venv/bin/python tools/elpv_as_mvtec.py --root /tmp/elpv --train 200 --test-normal 60 --test-defect 60

writes ``<root>/elpv_<cell type>/`` from a seeded :func:`cutswap_lib.data.elpv.elpv_split`
(normal = defect probability 0, defective = probability >= ``--defect-threshold``), so that the
tables' commands can run on real images offline, e.g.

    .venv/bin/python -m cutswap_lib cutswap-table --dataset mvtec --data-root /tmp/elpv \\
        --categories elpv_mono --init random --cpu --methods resnet18 cutswap --coresets 0.01 --seeds 0 1 2

elpv has image-level labels only: the defect masks the folder needs are placeholder squares
(:func:`cutswap_lib.data.elpv.write_elpv_mvtec`), so read only the image AUROC of such a run; every
pixel-level column is meaningless. The data is CC BY-NC-SA 4.0 (non-commercial); cite it as
:data:`cutswap_lib.data.elpv.ELPV_CITATIONS` says.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cutswap_lib.data.elpv import ELPV_LICENCE, elpv_split, write_elpv_mvtec  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="folder to write <root>/elpv_<cell type>/ into")
    parser.add_argument("--train", type=int, default=200, help="normal training cells (default 200)")
    parser.add_argument("--test-normal", type=int, default=60, help="normal test cells (default 60)")
    parser.add_argument("--test-defect", type=int, default=60, help="defective test cells (default 60)")
    parser.add_argument("--cell-type", choices=("mono", "poly"), default="mono", help="module type (default mono)")
    parser.add_argument("--defect-threshold", type=float, default=2 / 3,
                        help="a cell is defective when its probability is at least this (default 2/3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    args = parser.parse_args(argv)
    try:
        split = elpv_split(args.train, args.test_normal, args.test_defect, defect_threshold=args.defect_threshold,
                           cell_type=args.cell_type, seed=args.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    folder = write_elpv_mvtec(args.root, split, category=f"elpv_{args.cell_type}")
    print(f"{folder}: {len(split.train)} training cells, {args.test_normal} normal + {args.test_defect} defective "
          f"test cells (placeholder masks: image AUROC only); data {ELPV_LICENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
