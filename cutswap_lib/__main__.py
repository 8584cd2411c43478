"""``python -m cutswap_lib``: the course's main job and the reproduction commands.

Sub-commands (``python -m cutswap_lib <command> --help`` for each):

* ``toy`` (the default): generate the toy dataset if absent, run PatchCore on every toy
  category (random-init ResNet18 and ImageNet EfficientNet-Lite0), print the results
  table and write CSV, Markdown and figures to ``results/``.
* ``gallery``: a figure of toy samples, one row per category.
* ``cutswap-table``: the CutSwap paper's Tables I-IV (CutPaste + PC, pretrained + PC,
  CutSwap + PC at coreset 0.001 and 0.01) and, with ``--ablation``, Tables V-VIII, per
  dataset and category, with the paper's numbers alongside.
* ``semirest-table``: SemiREST's Tables 1-5 (unsupervised, supervised and semi-supervised
  columns, PatchCore on the same backbone beside it) and, with ``--ablation``, Table 6, per
  dataset and category, with the paper's numbers alongside.

This module only parses arguments; the work is in :mod:`cutswap_lib.runs` (``toy``,
``cutswap_tables``, ``semirest_tables``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import PROFILES, data_root, get_profile, results_root, toy_root
from .data import DATASETS, TOY_CATEGORIES
from .runs import cutswap_tables, semirest_tables, toy

COMMANDS = ("toy", "gallery", "cutswap-table", "semirest-table")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="sizes to use (default: $CUTSWAP_PROFILE, else 'default')")
    p.add_argument("--results", type=Path, default=None, help="output folder (default: results/)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cutswap_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    for name, text in (("toy", "PatchCore on every toy category (the default job)"),
                       ("gallery", "write <results>/toy_samples.png")):
        p = sub.add_parser(name, help=text)
        _common(p)
        p.add_argument("--categories", nargs="+", choices=TOY_CATEGORIES, default=list(TOY_CATEGORIES))
        p.add_argument("--data-root", type=Path, default=None,
                       help="toy dataset folder (default: data/toy_<profile>)")
        p.add_argument("--coreset-ratio", type=float, default=None,
                       help="PatchCore memory fraction (default: the profile's)")
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                       help="seeds of the random-init backbone and coreset start (table: mean ± std)")
    p = sub.add_parser("cutswap-table", help="CutSwap paper Tables I-VIII on one dataset",
                       description="Reproduce the CutSwap paper's tables on one dataset. "
                                   "--small is the documented CPU profile for the toy data.")
    _common(p)
    p.add_argument("--dataset", default="toy", choices=["toy", *DATASETS],
                   help="toy (generated here) or a downloaded dataset under data/")
    p.add_argument("--data-root", type=Path, default=None,
                   help="folder holding the categories (default: the dataset's folder under data/)")
    p.add_argument("--categories", nargs="+", default=None, help="default: all of the dataset")
    p.add_argument("--methods", nargs="+", default=["cutpaste", "resnet18", "cutswap"],
                   choices=["cutpaste", "resnet18", "cutswap"])
    p.add_argument("--ablation", choices=["k", "cluster", "layers", "method"], default=None,
                   help="Table V (k), VI (cluster), VII (layers) or VIII (method) instead of I-IV")
    p.add_argument("--small", action="store_true",
                   help="CPU profile: 3 epochs on 20 images fine-tuned at 128 px, one saliency level per "
                        "image and step, seeds 0 1 2 (PatchCore at 224 px on every image)")
    p.add_argument("--epochs", type=int, default=None, help="default: 256 (paper), 3 with --small")
    p.add_argument("--image-size", type=int, default=None, help="default: 224")
    p.add_argument("--train-size", type=int, default=None,
                   help="fine-tuning resolution (default: --image-size; 128 with --small)")
    p.add_argument("--coresets", type=float, nargs="+", default=[0.001, 0.01])
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="training and coreset seeds (default: 0; 0 1 2 with --small)")
    p = sub.add_parser("semirest-table", help="SemiREST paper Tables 1, 3, 5, 6 on one dataset",
                       description="Reproduce SemiREST's unsupervised and supervised columns (Tables 1, 3, 5) "
                                   "or its ablation (Table 6) on one dataset. --small is the documented CPU "
                                   "profile for the toy data.")
    _common(p)
    p.add_argument("--dataset", default="toy", choices=["toy", *DATASETS],
                   help="toy (generated here) or a downloaded dataset under data/")
    p.add_argument("--data-root", type=Path, default=None,
                   help="folder holding the categories (default: the dataset's folder under data/)")
    p.add_argument("--categories", nargs="+", default=None, help="default: all of the dataset")
    p.add_argument("--settings", nargs="+", default=["unsupervised", "supervised", "semi"],
                   choices=["unsupervised", "supervised", "semi"],
                   help="semi: the unsupervised model fine-tuned with boxes (drawn tightly around the "
                        "masks' regions of the same labelled images) through MixMatch")
    p.add_argument("--ablation", action="store_true",
                   help="Table 6: square / abs, +PCF, +bagging, +kNN (and +MixMatch, +dropout for semi)")
    p.add_argument("--small", action="store_true",
                   help="CPU profile: 224 px, a narrow Swin (128 channels), windows of 16 every 4 tokens")
    p.add_argument("--iterations", type=int, default=None, help="training iterations (default: the profile's)")
    p.add_argument("--image-size", type=int, default=None, help="default: 512 (224 with --small)")
    p.add_argument("--coreset-ratio", type=float, default=None,
                   help="memory bank fraction (default 0.1; the paper uses 0.001 on KSDD2)")
    p.add_argument("--labelled", type=int, default=None,
                   help="anomalous test images moved to training in the supervised setting (default 10)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0")
    p.add_argument("--boxes", default=None, metavar="FILE",
                   help="box file in each category folder (notebook 06's widget writes boxes.json): the "
                        "supervised and semi-supervised settings label the images it names, with its boxes "
                        "(default: --labelled seeded images, one tight box around each mask region)")
    return parser


def _toy(args, profile) -> int:
    print(f"cutswap_lib main job: PatchCore on the toy dataset (profile '{profile.name}', "
          f"{profile.image_size} px, {profile.toy_train} training images per category)")
    t0 = time.perf_counter()
    rows = toy.toy_patchcore_table(
        profile, data_root=args.data_root, results=args.results, categories=args.categories,
        coreset_ratio=args.coreset_ratio, seeds=tuple(args.seeds), device=args.device,
        progress=not args.no_progress)
    print()
    print(toy.summary_table(rows))
    print(f"\nwrote {args.results / 'patchcore_toy.csv'}, {args.results / 'patchcore_toy.md'} "
          f"and figures under {args.results / 'figures'} in {time.perf_counter() - t0:.0f} s")
    return 0


def _gallery(args, profile) -> int:
    for category in args.categories:
        toy.ensure_profile_toy(profile, args.data_root, category)
    path = toy.toy_gallery(args.data_root, profile.image_size,
                                   args.results / "toy_samples.png", args.categories)
    print(f"wrote {path}")
    return 0


def _cutswap_table(args, profile) -> int:

    settings = cutswap_tables.RunSettings.small() if args.small else cutswap_tables.RunSettings()
    settings.epochs = args.epochs or settings.epochs
    settings.image_size = args.image_size or settings.image_size
    settings.train_size = args.train_size or settings.train_size
    settings.coresets = tuple(args.coresets)
    settings.seeds = tuple(args.seeds) if args.seeds else settings.seeds
    found = _dataset_root(args, profile)
    if found is None:
        return 2
    root, categories = found
    print(f"CutSwap tables on {args.dataset} ({len(categories)} categories, {settings})")
    t0 = time.perf_counter()
    rows = cutswap_tables.cutswap_table(args.dataset, root, categories, settings, results=args.results,
                                   methods=args.methods, ablation=args.ablation,
                                   device=args.device, progress=not args.no_progress)
    print()
    print(cutswap_tables.paper_layout(rows))
    print(f"\nwrote results under {args.results} in {time.perf_counter() - t0:.0f} s")
    return 0


def _dataset_root(args, profile):
    """(root, categories) of the chosen dataset, or None after printing how to get it."""
    if args.dataset == "toy":
        root = args.data_root or toy_root(profile)
        categories = args.categories or list(TOY_CATEGORIES)
        for category in categories:
            toy.ensure_profile_toy(profile, root, category)
        return root, categories
    record = DATASETS[args.dataset]
    root = args.data_root or data_root() / record.folder
    categories = args.categories or list(record.categories)
    missing = [c for c in categories if not (root / c).is_dir()]
    if missing:
        print(f"error: {args.dataset} categories {missing} not found under {root}. Download it first "
              f"(on a machine with internet, e.g. Colab): python -c \"from cutswap_lib.data import "
              f"download_dataset; download_dataset('{args.dataset}', 'data')\", or pass --data-root.",
              file=sys.stderr)
        return None
    return root, categories


def _semirest_table(args, profile) -> int:
    import dataclasses


    settings = semirest_tables.SemiRunSettings.small() if args.small else semirest_tables.SemiRunSettings()
    settings.image_size = args.image_size or settings.image_size
    settings.coreset_ratio = args.coreset_ratio or settings.coreset_ratio
    settings.seeds = tuple(args.seeds) if args.seeds else settings.seeds
    settings.n_labelled = args.labelled if args.labelled is not None else settings.n_labelled
    settings.box_file = args.boxes
    if args.iterations:
        settings.config = dataclasses.replace(settings.config, iterations=args.iterations)
        settings.mixmatch = dataclasses.replace(settings.mixmatch, iterations=args.iterations)
    found = _dataset_root(args, profile)
    if found is None:
        return 2
    root, categories = found
    try:
        semirest_tables.check_box_files(root, categories, settings)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"SemiREST tables on {args.dataset} ({len(categories)} categories, {settings})")
    t0 = time.perf_counter()
    rows = semirest_tables.semirest_table(args.dataset, root, categories, settings, results=args.results,
                               setting_names=tuple(args.settings), ablation=args.ablation,
                               device=args.device, progress=not args.no_progress)
    print()
    print(semirest_tables.semirest_layout(rows))
    print(f"\nwrote results under {args.results} in {time.perf_counter() - t0:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv = ["toy", *argv]  # no sub-command: the main job
    args = _parser().parse_args(argv)
    profile = get_profile(args.profile)
    args.results = args.results or results_root()
    if getattr(args, "data_root", None) is None and args.command in ("toy", "gallery"):
        args.data_root = toy_root(profile)
    run = {"toy": _toy, "gallery": _gallery, "cutswap-table": _cutswap_table,
           "semirest-table": _semirest_table}[args.command]
    return run(args, profile)


if __name__ == "__main__":
    sys.exit(main())
