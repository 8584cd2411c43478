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
* ``patchcore``: PatchCore on your own images, in MVTec layout (``--data-root DIR``, with or
  without ``ground_truth/``) or as plain folders (``--good DIR --test DIR``, optional
  ``--masks DIR``): the table where labels are known, per-image scores (CSV), anomaly-map
  overlays, and with ``--save`` / ``--load`` a fitted model to score more images later.

This module only parses arguments; the work is in :mod:`cutswap_lib.runs` (``toy``,
``cutswap_tables``, ``semirest_tables``, ``patchcore_folder``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

from .config import PROFILES, data_root, get_profile, results_root, toy_root
from .data import DATASETS, TOY_CATEGORIES
from .data import DatasetError
from .files import FolderLockedError
from .runs import cutswap_tables, patchcore_folder, semirest_tables, toy
from .runs.checks import MIN_IMAGE_SIZE
from .runs.results import format_results_table
from .semirest.mixmatch import GUESS_PIVOTS
from .weights import BACKBONES

COMMANDS = ("toy", "gallery", "cutswap-table", "semirest-table", "patchcore")


PATCHCORE_HELP = """\
PatchCore on your own images, in one of two forms:

  MVTec layout   --data-root DIR [--categories C ...]
                 DIR/C/train/good/*   normal images to fit on
                 DIR/C/test/<type>/*  images to score; labels from the folders (good: 0, other: 1)
                 DIR/C/ground_truth/<type>/<stem>_mask.png  optional; then every defect image needs one
                 (without ground_truth/: image-level metrics only)
  plain folders  --good DIR --test DIR [--masks DIR]
                 without --masks: no labels, so scores and maps only; with --masks, a test image
                 without a mask file counts as normal (all-zero mask) and is named in a warning

Prints the table (image AUROC where labels are known; pixel AUROC, pixel AP and AUPRO where masks
are) and writes scores.csv, metrics.csv and maps/<type>/<stem>.png under --results/<category or
'folder'>. --save FILE keeps the fitted model; --load FILE scores --test (or a category's test
split) with it later, without refitting.
"""


# --------------------------------------------------------------------------- argument types
def _whole(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _whole(text, 1)


def _nonnegative_int(text: str) -> int:
    return _whole(text, 0)


def _image_size(text: str) -> int:
    return _whole(text, MIN_IMAGE_SIZE)


def _number(text: str, ok, what: str) -> float:
    """``text`` as a float for which ``ok(value)`` holds, else argparse's one-line error ``must be <what>``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def _positive_float(text: str) -> float:
    return _number(text, lambda v: v > 0 and math.isfinite(v), "> 0 (finite)")


def _share(text: str) -> float:
    return _number(text, lambda v: 0.0 <= v < 1.0, "in [0, 1)")


def _fraction(text: str) -> float:
    return _number(text, lambda v: 0.0 < v <= 1.0, "in (0, 1]")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the usage block is one ``--help`` away), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


class UsageError(Exception):
    """A bad argument found after parsing (device, folder, combination): one line, exit 2."""


def _common(p: argparse.ArgumentParser, results_help: str = "output folder (default: results/)") -> None:
    p.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="sizes to use (default: $CUTSWAP_PROFILE, else 'default')")
    p.add_argument("--results", type=Path, default=None, help=results_help)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m cutswap_lib", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    for name, text in (("toy", "PatchCore on every toy category (the default job)"),
                       ("gallery", "write <results>/toy_samples.png")):
        p = sub.add_parser(name, help=text)
        _common(p)
        p.add_argument("--categories", nargs="+", choices=TOY_CATEGORIES, default=list(TOY_CATEGORIES))
        p.add_argument("--data-root", type=Path, default=None,
                       help="toy dataset folder (default: data/toy_<profile>)")
        p.add_argument("--coreset-ratio", type=_fraction, default=None,
                       help="PatchCore memory fraction in (0, 1] (default: the profile's)")
        p.add_argument("--seeds", type=_nonnegative_int, nargs="+", default=[0, 1, 2],
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
    profile_group = p.add_mutually_exclusive_group()
    profile_group.add_argument("--small", action="store_true",
                               help="CPU profile: 3 epochs on 20 images fine-tuned at 128 px, one saliency level "
                                    "per image and step, seeds 0 1 2 (PatchCore at 224 px on every image)")
    profile_group.add_argument("--cpu", action="store_true",
                               help="CPU profile for --init random: one encoder per category, 40 images fine-tuned at "
                                    "64 px for 40 epochs on the toy data and 80 on any other --dataset (real images "
                                    "learn the 3-way task later; RunSettings.cpu), stem frozen (--stem auto), "
                                    "PatchCore at 128 px, coreset 0.1, seeds 0 1 2")
    p.add_argument("--backbone", choices=BACKBONES, default="resnet18",
                   help="the encoder, in place of the paper's ResNet18 in every column (the 'resnet18' rows are "
                        "then this network before fine-tuning; the saliency network stays VGG16). Default: resnet18")
    p.add_argument("--init", "--weights", dest="init", choices=["imagenet", "random"], default=None,
                   help="the encoder's start (--weights is the same flag): imagenet (the paper; default; offline "
                        "the ImageNet EfficientNet-Lite0 stands in) or random (untrained: the paper's shapes "
                        "offline; 'resnet18' rows are then the untrained encoder; the default with --cpu)")
    p.add_argument("--train-per", choices=["dataset", "category"], default=None,
                   help="fine-tune one encoder per dataset (default; the paper: fine-tuning 'performed on "
                        "each dataset') or one per category (a course choice)")
    p.add_argument("--overlap", choices=["resample", "push"], default=None,
                   help="anchor pairs whose patches overlap or leave the image: draw again from the salient "
                        "cluster (default; a course choice) or push the patches apart")
    p.add_argument("--untrained-bn", choices=["normal", "init"], default=None,
                   help="with --init random, the untrained encoder's BatchNorm statistics: recomputed on the "
                        "fine-tuning images, as the fine-tuned encoders' are (default; a course choice), or as "
                        "initialised (the earlier baseline, which fine-tuning beats by its statistics alone)")
    p.add_argument("--stem", choices=["auto", "train", "freeze"], default=None,
                   help="the encoder's stem (first convolution + BatchNorm) during fine-tuning: frozen or trained; "
                        "auto (default; a course choice): frozen with --init random, where the 3-way task rewrites "
                        "the small random stem in its first steps, trained from ImageNet")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (one JSON line per category x method x variant x seed, with the planner's "
                        "peak host / device memory and CPU / T4 time per stage) and exit without training or "
                        "writing a checkpoint; warns when a peak passes this machine's memory")
    p.add_argument("--epochs", type=_positive_int, default=None, help="default: 256 (paper), 3 with --small")
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="initial fine-tuning learning rate, cosine-decayed to 0 (default: 0.03, the paper's)")
    p.add_argument("--image-size", type=_image_size, default=None, help="default: 224")
    p.add_argument("--train-size", type=_image_size, default=None,
                   help="fine-tuning resolution (default: --image-size; 128 with --small)")
    p.add_argument("--coresets", type=_fraction, nargs="+", default=None,
                   help="PatchCore memory fractions in (0, 1] (default: 0.001 0.01, the paper's; 0.1 with --cpu)")
    p.add_argument("--seeds", type=_nonnegative_int, nargs="+", default=None,
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
    p.add_argument("--backbone", choices=BACKBONES, default=None,
                   help="the feature network of the residuals and the PatchCore column (default: the paper's "
                        "wide_resnet50_2)")
    p.add_argument("--weights", choices=["imagenet", "random"], default=None,
                   help="imagenet (default; offline the ImageNet EfficientNet-Lite0 stands in for the backbone) or "
                        "random: the backbone untrained, the paper's shapes for memory and speed checks offline")
    p.add_argument("--iterations", type=_positive_int, default=None,
                   help="training iterations (default: the profile's)")
    p.add_argument("--image-size", type=_image_size, default=None, help="default: 512 (224 with --small)")
    p.add_argument("--finetune-iterations", type=_positive_int, default=None,
                   help="semi-supervised fine-tune iterations (default: 800; 400 with --small); with --iterations "
                        "alone the fine-tune gets as many, and the lambda_u ramp then spans its first half")
    p.add_argument("--guess-pivot", choices=list(GUESS_PIVOTS), default=None,
                   help="MixMatch sharpens its guesses around 0.5 (half: Algorithm 1, the default), around the "
                        "mean guess of the tokens labelled normal (known: the course's choice for under-confident "
                        "models, the default with --small) or, per window, around the mean guess inside its box "
                        "(box: a course choice)")
    p.add_argument("--upsilon", type=_share, default=None,
                   help="Eq. 15: a block is unknown when more than this share of its pixels lies in a box "
                        "(default: 0.5, the paper's; 0 with --small, a course choice: any box pixel makes the "
                        "block unknown, so no defect pixel is taught as normal)")
    p.add_argument("--coreset-ratio", type=_fraction, default=None,
                   help="memory bank fraction in (0, 1] (default: the dataset's protocol, 0.1; 0.001 on KSDD2)")
    p.add_argument("--labelled", type=_positive_int, default=None,
                   help="labelled defective images of the supervised and semi settings (default 10): from the "
                        "test set, removed from it (MVTec AD, BTAD, toy), or from train_defect/ (KSDD2)")
    p.add_argument("--eval-size", choices=["native", "square"], default="native",
                   help="compare maps with the masks at their own size (native, the paper's) or at --image-size")
    p.add_argument("--foreground", choices=["auto", "otsu", "none"], default="auto",
                   help="where synthetic anomalies land: auto = the toy footprints, Otsu's footprint on MVTec AD's "
                        "object categories, anywhere elsewhere (the course's choice); otsu on every category; none")
    p.add_argument("--textures", default=None, metavar="DIR",
                   help="texture images for the synthetic anomalies, e.g. DTD's images/ (MemSeg's source); "
                        "default: the other toy categories, or the category's other normal images")
    p.add_argument("--position-spacing", choices=["paper", "mae"], default="paper",
                   help="Eq. 3's frequencies: as printed (paper, 10000^(8k/d)) or MAE's, as the authors' code (mae)")
    p.add_argument("--dry-run", action="store_true",
                   help="print one JSON line per category and setting (images, labelled paths, the protocol's "
                        "hyper-parameters, the planner's peak host / device memory and CPU / T4 time per stage) "
                        "and exit without training; warns when a peak passes this machine's memory")
    p.add_argument("--seeds", type=_nonnegative_int, nargs="+", default=None, help="default: 0")
    p.add_argument("--boxes", default=None, metavar="FILE",
                   help="box file in each category folder (notebook 06's widget writes boxes.json): the "
                        "supervised and semi-supervised settings label the images it names, with its boxes "
                        "(default: --labelled seeded images, one tight box around each mask region)")
    p = sub.add_parser("patchcore", help="PatchCore on your own folder of images",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=PATCHCORE_HELP)
    _common(p, results_help="output folder, one subfolder per category (or 'folder' for --good/--test) "
                            "(default: results/patchcore)")
    p.add_argument("--data-root", type=Path, default=None, metavar="DIR",
                   help="MVTec layout: DIR/<category>/train/good/, DIR/<category>/test/<type>/ and optionally "
                        "DIR/<category>/ground_truth/<type>/<stem>_mask.png")
    p.add_argument("--categories", nargs="+", default=None,
                   help="categories under --data-root (default: every folder there with train/ or test/)")
    p.add_argument("--good", type=Path, default=None, metavar="DIR", help="a folder of normal images to fit on")
    p.add_argument("--test", type=Path, default=None, metavar="DIR", help="a folder of images to score")
    p.add_argument("--masks", type=Path, default=None, metavar="DIR",
                   help="a mask per --test image, found by stem (<stem>_mask.<ext> or <stem>.<ext>); a test image "
                        "without one counts as normal (all-zero mask) and is named in a warning; an image's label "
                        "is whether its mask marks any pixel")
    p.add_argument("--backbone", choices=BACKBONES, default=None,
                   help="network (default: resnet18; with ImageNet weights offline, efficientnet_lite0 runs "
                        "instead and a line says so)")
    p.add_argument("--weights", choices=["imagenet", "random"], default=None,
                   help="imagenet (default) or random (untrained, seeded by --seed)")
    p.add_argument("--layers", nargs="+", default=None, help="levels of the network (default: its PatchCore levels)")
    p.add_argument("--coreset-ratio", type=_fraction, default=None,
                   help="memory bank fraction in (0, 1] (default: the profile's, 0.1)")
    p.add_argument("--image-size", type=_image_size, default=None,
                   help="side images are resized to (default: the profile's: 224, 64 with --profile fast)")
    p.add_argument("--seed", type=_nonnegative_int, default=None, help="random init and coreset start (default: 0)")
    p.add_argument("--overlays", type=_nonnegative_int, default=None, metavar="N",
                   help="write overlay PNGs for the N highest-scoring test images (default: every one; 0: none)")
    p.add_argument("--save", type=Path, default=None, metavar="FILE",
                   help="save the fitted model (memory bank, settings, network) to FILE (one category)")
    p.add_argument("--load", type=Path, default=None, metavar="FILE",
                   help="score with a model saved by --save instead of fitting (no --good, --backbone, "
                        "--weights, --layers, --coreset-ratio, --image-size, --seed: they come from FILE)")
    return parser


def _toy(args, profile) -> int:
    print(f"cutswap_lib main job: PatchCore on the toy dataset (profile '{profile.name}', "
          f"{profile.image_size} px, {profile.toy_train} training images per category)")
    args.started = True
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
    path = toy.toy_gallery(args.data_root, profile.image_size, args.results / "toy_samples.png",
                           args.categories)
    print(f"wrote {path}")
    return 0


def _cutswap_table(args, profile) -> int:
    settings = (cutswap_tables.RunSettings.small() if args.small else cutswap_tables.RunSettings.cpu(args.dataset)
                if args.cpu else cutswap_tables.RunSettings())
    for name in ("epochs", "lr", "image_size", "train_size", "init", "train_per", "overlap", "untrained_bn", "stem"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    if args.coresets is not None:
        settings.coresets = tuple(_unique("--coresets", args.coresets))
    settings.seeds = tuple(_unique("--seeds", args.seeds)) if args.seeds is not None else settings.seeds
    methods = _unique("--methods", args.methods)
    cutswap_tables.check_cutswap_options(settings, methods, args.ablation)  # before any toy data is made
    found = _dataset_root(args, profile)
    if found is None:
        return 2
    root, categories = found
    cutswap_tables.check_cutswap_run(root, categories, settings, methods, args.ablation)
    args.started = True  # checks done: what fails from here on is not an argument
    if args.dry_run:
        cutswap_tables.cutswap_table(args.dataset, root, categories, settings, results=args.results,
                                     methods=methods, ablation=args.ablation, device=args.device,
                                     progress=False, dry_run=True, backbone=args.backbone)
        return 0
    print(f"CutSwap tables on {args.dataset} ({len(categories)} categories, {settings})")
    t0 = time.perf_counter()
    rows = cutswap_tables.cutswap_table(args.dataset, root, categories, settings, results=args.results,
                                        methods=methods, ablation=args.ablation, device=args.device,
                                        progress=not args.no_progress, backbone=args.backbone)
    print()
    print(cutswap_tables.paper_layout(rows))
    print(f"\nwrote results under {args.results} in {time.perf_counter() - t0:.0f} s")
    return 0


def _dataset_root(args, profile):
    """(root, categories) of the chosen dataset, or None after printing how to get it."""
    categories = _unique("--categories", args.categories) if args.categories else None
    if args.dataset == "toy":
        root = args.data_root or toy_root(profile)
        categories = categories or list(TOY_CATEGORIES)
        unknown = [c for c in categories if c not in TOY_CATEGORIES]
        if unknown:
            raise UsageError(f"--categories: {unknown[0]!r} is not a toy category (choose from "
                             f"{', '.join(TOY_CATEGORIES)})")
        for category in categories:
            toy.ensure_profile_toy(profile, root, category)
        return root, categories
    record = DATASETS[args.dataset]
    root = args.data_root or data_root() / record.folder
    categories = categories or list(record.categories)
    missing = [c for c in categories if not (root / c).is_dir()]
    if missing:
        print(f"error: {args.dataset} categories {missing} not found under {root}. Download it first "
              f"(on a machine with internet, e.g. Colab): python -c \"from cutswap_lib.data import "
              f"download_dataset; download_dataset('{args.dataset}', 'data')\", or pass --data-root.",
              file=sys.stderr)
        return None
    return root, categories


def _semirest_table(args, profile) -> int:
    settings = semirest_tables.SemiRunSettings.small() if args.small else semirest_tables.SemiRunSettings()
    if args.image_size is not None:
        settings.image_size = args.image_size
    if args.coreset_ratio is not None:
        settings.coreset_ratio = args.coreset_ratio
    settings.backbone = args.backbone or settings.backbone
    settings.weights = args.weights or settings.weights
    settings.seeds = tuple(_unique("--seeds", args.seeds)) if args.seeds is not None else settings.seeds
    settings.n_labelled = args.labelled if args.labelled is not None else settings.n_labelled
    settings.box_file = args.boxes
    settings.eval_size, settings.position_spacing = args.eval_size, args.position_spacing
    settings.foreground, settings.texture_dir = args.foreground, args.textures
    if args.iterations is not None:
        settings.config = dataclasses.replace(settings.config, iterations=args.iterations)
    finetune = args.finetune_iterations or args.iterations
    if finetune is not None:
        ramp = settings.mixmatch.ramp_steps if finetune > settings.mixmatch.ramp_steps else finetune // 2
        settings.mixmatch = dataclasses.replace(settings.mixmatch, iterations=finetune, ramp_steps=ramp)
    if args.guess_pivot is not None:
        settings.mixmatch = dataclasses.replace(settings.mixmatch, guess_pivot=args.guess_pivot)
    if args.upsilon is not None:
        settings.mixmatch = dataclasses.replace(settings.mixmatch, upsilon=args.upsilon)
    setting_names = tuple(_unique("--settings", args.settings))
    settings.validate()
    found = _dataset_root(args, profile)
    if found is None:
        return 2
    root, categories = found
    semirest_tables.check_semirest_run(root, categories, settings, setting_names, args.dataset)
    if args.dry_run:
        for line in semirest_tables.plan_semirest(args.dataset, root, categories, settings, setting_names,
                                                  device=args.device):
            print(json.dumps(line))
        return 0
    args.started = True  # checks done: what fails from here on is not an argument
    print(f"SemiREST tables on {args.dataset} ({len(categories)} categories, {settings})")
    t0 = time.perf_counter()
    rows = semirest_tables.semirest_table(args.dataset, root, categories, settings, results=args.results,
                                          setting_names=setting_names, ablation=args.ablation,
                                          device=args.device, progress=not args.no_progress)
    print()
    print(semirest_tables.semirest_layout(rows))
    print(f"\nwrote results under {args.results} in {time.perf_counter() - t0:.0f} s")
    return 0


def _patchcore(args, profile) -> int:
    plain = args.good is not None or args.test is not None
    if plain and (args.data_root is not None or args.categories):
        raise UsageError("give --data-root (MVTec layout) or --good / --test folders, not both")
    if not plain and args.data_root is None:
        raise UsageError("say where the images are: --data-root DIR (MVTec layout: DIR/<category>/train/good/, "
                         "DIR/<category>/test/<type>/) or --good DIR --test DIR")
    if args.masks is not None and args.test is None:
        raise UsageError("--masks needs --test (the masks belong to the test images)")
    if args.load is not None:
        fixed = [flag for flag in ("good", "backbone", "weights", "layers", "coreset_ratio", "image_size", "seed",
                                   "save") if getattr(args, flag) is not None]
        if fixed:
            raise UsageError(f"--load {args.load}: --{fixed[0].replace('_', '-')} comes from the model file "
                             f"(or is not needed to score); leave it out")
    elif args.good is None and args.test is not None:
        raise UsageError("--test needs --good DIR (normal images to fit on) or --load FILE (a model saved with --save)")
    elif args.test is None and plain and args.save is None:
        raise UsageError("--good without --test has nothing to score: add --test DIR, or --save FILE to keep the model")
    if args.save is not None and args.save.is_dir():
        raise UsageError(f"--save {args.save} is a folder; give a file name, e.g. {args.save / 'patchcore.pt'}")
    categories = _unique("--categories", args.categories) if args.categories else None
    jobs = patchcore_folder.input_sets(data_root=args.data_root, categories=categories, good=args.good,
                                       test=args.test, masks=args.masks, fit=args.load is None)
    if (args.save or args.load) and len(jobs) > 1:
        raise UsageError(f"--save / --load hold the model of one category; name one with --categories "
                         f"(found {' '.join(name for name, _, _ in jobs)})")
    settings = patchcore_folder.FolderSettings(
        backbone=args.backbone or "resnet18", weights=args.weights or "imagenet",
        layers=tuple(args.layers) if args.layers else None,
        coreset_ratio=args.coreset_ratio or profile.coreset_ratio, image_size=args.image_size or profile.image_size,
        seed=args.seed or 0)
    fitted = network = None
    if args.load is not None:
        fitted = patchcore_folder.load_model(args.load, device=args.device, progress=not args.no_progress)
        print(f"model {args.load}: {fitted.backbone} ({fitted.weights}) {' '.join(fitted.layers)}, "
              f"{fitted.image_size} px, coreset {fitted.coreset_ratio}, fitted on {fitted.n_train} images of "
              f"{fitted.trained_on}")
    else:
        network = patchcore_folder.choose_network(settings)
        print(f"PatchCore: {network[0]} ({'ImageNet' if network[1] else 'random init, seed ' + str(settings.seed)}), "
              f"{settings.image_size} px, coreset {settings.coreset_ratio}")
    args.started = True  # checks done: what fails from here on is not an argument
    t0 = time.perf_counter()
    rows = []
    for name, train, test in jobs:
        row, _ = patchcore_folder.run_patchcore_folder(
            name, test, args.results / name, train=train, settings=settings, fitted=fitted, network=network,
            save=args.save, overlays=args.overlays, device=args.device, progress=not args.no_progress)
        rows.append(row)
    print()
    print(format_results_table(rows, ["name", "backbone", "weights", "image_size", "n_train", "n_test",
                                      "image_auroc", "pixel_auroc", "pixel_ap", "aupro"]))
    print(f"\nwrote results under {args.results} in {time.perf_counter() - t0:.1f} s")
    return 0


def _unique(flag: str, values):
    """``values`` without repeats (first occurrence kept); a note on stderr when some were dropped."""
    values = list(values)
    kept = list(dict.fromkeys(values))
    if len(kept) != len(values):
        print(f"note: {flag} repeated values removed: {' '.join(map(str, values))} -> "
              f"{' '.join(map(str, kept))}", file=sys.stderr)
    return kept


def _check_results(path: Path) -> Path:
    """The results folder, created if absent; UsageError when it is a file or cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--results {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--results {path}: cannot create the folder ({err.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--results {path}: the folder is not writable")
    return path


def _check_device(name: str | None) -> None:
    """UsageError unless ``name`` (e.g. ``cpu``, ``cuda``, ``cuda:1``, ``mps``) exists on this machine."""
    if name is None:
        return
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:0, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA device on this machine (torch.cuda.is_available() is "
                             f"False); use --device cpu or leave --device out")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: only cpu, cuda and mps are supported")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv = ["toy", *argv]  # no sub-command: the main job
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:  # --help (0) or a bad argument (2, its line already printed)
        return int(stop.code or 0)
    run = {"toy": _toy, "gallery": _gallery, "cutswap-table": _cutswap_table,
           "semirest-table": _semirest_table, "patchcore": _patchcore}[args.command]
    try:  # every check below happens before any work; each failure is one line and exit 2
        profile = get_profile(args.profile)
        default_results = results_root() / "patchcore" if args.command == "patchcore" else results_root()
        args.results = _check_results(args.results or default_results)
        _check_device(args.device)
        if args.command in ("toy", "gallery"):
            args.categories = _unique("--categories", args.categories)
            if args.command == "toy":
                args.seeds = _unique("--seeds", args.seeds)
            if args.data_root is None:
                args.data_root = toy_root(profile)
        return run(args, profile)
    except (UsageError, ValueError, DatasetError, FileNotFoundError, FolderLockedError) as err:
        # before the work starts, every error is the user's input; after it, only data and lock
        # errors are (a ValueError from inside training is a bug: keep its traceback)
        if getattr(args, "started", False) and not isinstance(err, (DatasetError, FolderLockedError)):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
