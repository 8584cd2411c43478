"""``python -m cutswap_lib``: the course's main job and (later) the reproduction commands.

With no sub-command it runs ``toy``: generate the toy dataset if absent, run PatchCore on
every toy category, print the results table and write CSV, Markdown and figures to
``results/``. This module only parses arguments; the work is in :mod:`experiments`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import experiments
from .config import PROFILES, get_profile, results_root, toy_root
from .data import TOY_CATEGORIES


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cutswap_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="toy", choices=["toy", "gallery"],
                        help="toy: PatchCore on every toy category (the default job); "
                             "gallery: write a figure of toy samples to <results>/toy_samples.png")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None,
                        help="sizes to use (default: $CUTSWAP_PROFILE, else 'default')")
    parser.add_argument("--categories", nargs="+", choices=TOY_CATEGORIES, default=list(TOY_CATEGORIES))
    parser.add_argument("--data-root", type=Path, default=None,
                        help="toy dataset folder (default: data/toy_<profile>)")
    parser.add_argument("--results", type=Path, default=None, help="output folder (default: results/)")
    parser.add_argument("--coreset-ratio", type=float, default=None,
                        help="PatchCore memory fraction (default: the profile's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds of the random-init backbone and coreset start (table: mean ± std)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    profile = get_profile(args.profile)
    args.data_root = args.data_root or toy_root(profile)
    args.results = args.results or results_root()
    if args.command == "gallery":
        for category in args.categories:
            experiments.ensure_profile_toy(profile, args.data_root, category)
        path = experiments.toy_gallery(args.data_root, profile.image_size,
                                       args.results / "toy_samples.png", args.categories)
        print(f"wrote {path}")
        return 0
    print(f"cutswap_lib main job: PatchCore on the toy dataset (profile '{profile.name}', "
          f"{profile.image_size} px, {profile.toy_train} training images per category)")
    t0 = time.perf_counter()
    rows = experiments.toy_patchcore_table(
        profile, data_root=args.data_root, results=args.results, categories=args.categories,
        coreset_ratio=args.coreset_ratio, seeds=tuple(args.seeds), device=args.device,
        progress=not args.no_progress)
    print()
    print(experiments.summary_table(rows))
    print(f"\nwrote {args.results / 'patchcore_toy.csv'}, {args.results / 'patchcore_toy.md'} "
          f"and figures under {args.results / 'figures'} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
