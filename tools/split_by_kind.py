"""Split an MVTec-layout category into one category per defect kind, to read each kind's table on its own.

    .venv/bin/python tools/split_by_kind.py --root data/elpv_drawn --category elpv_cracks --out data/elpv_kinds

writes ``<out>/<category>_<kind>/`` for every defect folder of ``<root>/<category>/test/`` (``good``
excepted): ``train/`` and ``test/good/`` copied whole into each, ``test/<kind>/`` and
``ground_truth/<kind>/`` of that kind only. Every file is copied byte for byte, so a table on
``<category>_<kind>`` is the same data as the whole category with the other kinds' test images left
out (notebook 06 uses it on ``elpv_cracks``: cracks only, stains only). Nothing is overwritten: an
output folder that exists already is an error, and nothing is written when any check fails.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cutswap_lib.data.folder import is_image_file  # noqa: E402


class SplitError(ValueError):
    """A category that cannot be split: the message names the folder and the problem."""


def defect_kinds(folder: Path) -> list[str]:
    """The defect kinds of an MVTec-layout category ``folder``: its ``test/`` subfolders other than ``good``."""
    for part in ("train/good", "test/good"):
        if not (folder / part).is_dir():
            raise SplitError(f"{folder}: no {part}/ folder (not an MVTec-layout category)")
    kinds = sorted(p.name for p in (folder / "test").iterdir() if p.is_dir() and p.name != "good")
    if not kinds:
        raise SplitError(f"{folder / 'test'}: no defect folder besides good/, nothing to split")
    for kind in kinds:
        if not any(is_image_file(p) for p in (folder / "test" / kind).iterdir()):
            raise SplitError(f"{folder / 'test' / kind}: no images")
        if not (folder / "ground_truth" / kind).is_dir():
            raise SplitError(f"{folder}: test/{kind}/ has no ground_truth/{kind}/ folder of masks")
    return kinds


def split_by_kind(root: Path, category: str, out: Path) -> dict[str, Path]:
    """Write ``out/<category>_<kind>/`` per defect kind (see the module doc); returns ``{kind: folder}``."""
    folder = Path(root) / category
    if not folder.is_dir():
        raise SplitError(f"{folder}: no such category folder")
    kinds = defect_kinds(folder)
    targets = {kind: Path(out) / f"{category}_{kind}" for kind in kinds}
    taken = [str(t) for t in targets.values() if t.exists()]
    if taken:
        raise SplitError(f"{', '.join(taken)}: exists already; remove it or choose another --out")
    for kind, target in targets.items():
        partial = target.with_name(f".{target.name}.partial")  # renamed into place once whole
        shutil.rmtree(partial, ignore_errors=True)
        for part in ("train", "test/good", f"test/{kind}", f"ground_truth/{kind}"):
            shutil.copytree(folder / part, partial / part)
        partial.rename(target)
    return targets


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="dataset folder holding <category>/")
    parser.add_argument("--category", required=True, help="the category to split")
    parser.add_argument("--out", type=Path, default=None, help="where to write <category>_<kind>/ (default: --root)")
    args = parser.parse_args(argv)
    try:
        targets = split_by_kind(args.root, args.category, args.out or args.root)
    except SplitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for kind, target in targets.items():
        n = sum(1 for p in (target / "test" / kind).iterdir() if is_image_file(p))
        print(f"{target}: {kind} only ({n} defective test images; train/ and test/good/ as in {args.category})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
