"""Reproduction runs of the CutSwap paper: Tables I-IV and the ablations of Tables V-VIII.

For one dataset (MVTec-layout folder: the toy dataset, MVTec AD, VisA, ...) and its
categories, each run

1. computes multilevel LayerCAM maps of the normal training images once (cached on
   disk) with the saliency network (:func:`~cutswap_lib.backbones.choose_backbone`:
   VGG16 where its ImageNet weights load, EfficientNet-Lite0 otherwise);
2. fine-tunes the encoder (ResNet18 where its ImageNet weights load, Lite0 otherwise) on
   the 3-way task, CutPaste and CutSwap, with :func:`~cutswap_lib.cutswap.train.train_three_way`
   (checkpointed, so an interrupted run resumes);
3. runs PatchCore on the untouched pretrained encoder and on both fine-tuned encoders,
   at each coreset ratio (the paper: 0.001 and 0.01), and records image / pixel AUROC
   and AUPRO beside the paper's figure for the same cell where the paper has one.

Ablations change one knob of the CutSwap training (K, cluster choice, saliency levels,
k-means vs saliency sorting) and keep the rest. The command line is
``python -m cutswap_lib cutswap-table ...`` (see ``--help``); results go to a CSV per
run and a Markdown table laid out like the paper's.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from .. import metrics
from ..backbones import (build_classifier, build_feature_extractor, choose_backbone,
                        saliency_target_layers)
from ..data import load_split
from ..patchcore import PatchCore
from ..cutswap.saliency import SaliencyCache
from ..cutswap.augment import SCAR_ANGLE, SCAR_LENGTH, SCAR_WIDTH, scar_bound
from ..cutswap.train import TrainConfig, encoder_for_patchcore, train_three_way
from . import cutswap_paper
from .checks import MIN_IMAGE_SIZE, check_fraction, check_positive, check_seeds, check_test_split
from .results import format_results_table, merge_rows, settings_fingerprint, write_csv, write_text

METHODS = ("cutpaste", "resnet18", "cutswap")  # the paper's column order
ABLATIONS = ("k", "cluster", "layers", "method")
COLUMNS = ["dataset", "category", "method", "ablation", "coreset", "seed", "image_auroc",
           "pixel_auroc", "aupro", "paper_image_auroc", "paper_pixel_auroc", "encoder",
           "train_s", "fit_s", "predict_s", "settings"]
ROW_KEY = ("dataset", "category", "method", "ablation", "coreset", "seed", "settings")  # see results.merge_rows


@dataclasses.dataclass
class RunSettings:
    """Sizes of a reproduction run; ``small()`` is the documented CPU profile for the toy data."""

    image_size: int = 224
    epochs: int = 256
    batch_size: int = 32
    levels: str = "all"
    coresets: tuple[float, ...] = (0.001, 0.01)
    seeds: tuple[int, ...] = (0,)
    patch_size: int = 30
    finetune_images: int | None = None  # fine-tune on the first n normal images (None: all)
    train_size: int | None = None  # fine-tuning resolution (None: image_size)

    @classmethod
    def small(cls) -> "RunSettings":
        """Toy data on a 2-core CPU: 3 epochs on 20 images fine-tuned at 128 px, one level per step, seeds 0-2.

        PatchCore still sees every training and test image at 224 px; only the 3-way
        fine-tuning (the slow part on a CPU: a backward pass per image) runs at 128 px,
        with the paper's 30 px patch scaled to 17 px. Measured on this 2-core machine: see
        the README ("Reproducing the papers' tables").
        """
        return cls(image_size=224, epochs=3, batch_size=10, levels="one", finetune_images=20,
                   train_size=128, seeds=(0, 1, 2))

    def patch_px(self) -> int:
        """The CutSwap patch at the fine-tuning resolution (``patch_size`` is given at 224 px)."""
        return max(4, round(self.patch_size * (self.train_size or self.image_size) / 224))

    def validate(self) -> "RunSettings":
        """Raise ValueError naming the first setting out of range; returns self."""
        check_positive("image_size", self.image_size, MIN_IMAGE_SIZE)
        check_positive("epochs", self.epochs)
        check_positive("batch_size", self.batch_size)
        check_positive("patch_size", self.patch_size)
        if self.levels not in ("all", "one"):
            raise ValueError(f"levels must be 'all' or 'one', got {self.levels!r}")
        if not self.coresets:
            raise ValueError("coresets must name at least one coreset ratio")
        for c in self.coresets:
            check_fraction("each coreset ratio", c)
        if len(set(self.coresets)) != len(self.coresets):
            raise ValueError(f"coresets must be distinct, got {list(self.coresets)}")
        check_seeds(self.seeds)
        if self.finetune_images is not None:
            check_positive("finetune_images", self.finetune_images)
        train_size = self.train_size if self.train_size is not None else self.image_size
        check_positive("train_size", train_size, MIN_IMAGE_SIZE)
        if 2 * self.patch_px() > train_size:  # CutSwap places two disjoint patches side by side
            raise ValueError(f"train_size {train_size} px is too small for two {self.patch_px()} px CutSwap "
                             f"patches side by side (needs at least {2 * self.patch_px()} px)")
        scar = min(scar_bound(SCAR_WIDTH, SCAR_LENGTH, SCAR_ANGLE))  # the scar boxes, side by side too
        if 2 * scar > train_size:
            raise ValueError(f"train_size {train_size} px is too small for two CutPaste-size scars (boxes of up "
                             f"to {scar} px) side by side (needs at least {2 * scar} px)")
        return self


def check_cutswap_run(root: Path, categories, settings: RunSettings, methods=METHODS,
                      ablation: str | None = None) -> None:
    """Every check a ``cutswap-table`` run can make before training (ValueError / DatasetError)."""
    settings.validate()
    if not methods:
        raise ValueError("methods must name at least one of " + ", ".join(METHODS))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; choose from {METHODS}")
    if ablation is not None:
        ablation_variants(ablation)  # unknown names raise
        if "cutswap" not in methods:
            raise ValueError(f"the {ablation!r} ablation varies CutSwap's training; add cutswap to methods "
                             f"(got {list(methods)})")
    if not categories:
        raise ValueError("categories must name at least one category")
    for category in categories:
        check_test_split(root, category)


def ablation_variants(ablation: str | None) -> dict[str, dict]:
    """Name -> TrainConfig overrides for one ablation (None: the paper's CutSwap only)."""
    if ablation is None:
        return {"paper": {}}
    if ablation == "k":  # Table V
        return {f"K={k}": {"k": k} for k in range(1, 7)}
    if ablation == "cluster":  # Table VI
        return {c: {"cluster": c} for c in ("random", "min", "max")}
    if ablation == "layers":  # Table VII, in the paper's VGG16 indices
        return {"+".join(f"#{i}" for i in combo): {
            "layers": [cutswap_paper.VGG16_LEVEL_INDEX[i] for i in combo]}
            for combo in cutswap_paper.ABLATION_LAYERS}
    if ablation == "method":  # Table VIII
        return {"sort": {"method": "sort"}, "kmeans": {"method": "kmeans"}}
    raise ValueError(f"unknown ablation {ablation!r}; choose one of {ABLATIONS}")


def _paper_ablation(ablation: str | None, variant: str, coreset: float):
    """(image, pixel) of the paper's ablation tables for this variant, or None."""
    if ablation == "k":
        return cutswap_paper.ABLATION_K.get(int(variant[2:])) if coreset == 0.001 else None
    if ablation == "cluster":
        return cutswap_paper.ABLATION_CLUSTER.get(variant) if coreset == 0.001 else None
    if ablation == "layers":
        key = tuple(int(i) for i in variant.replace("#", "").split("+"))
        return cutswap_paper.ABLATION_LAYERS.get(key) if coreset == 0.001 else None
    if ablation == "method":
        return cutswap_paper.ABLATION_METHOD.get(coreset, {}).get(variant)
    return None


def saliency_maps(images: torch.Tensor, cache_dir: Path, batch_size: int = 16,
                  progress: bool = True) -> tuple[torch.Tensor, str]:
    """Multilevel LayerCAM maps ``(N, 5, H, W)`` of ``images`` ``(N, 3, H, W)``, cached on disk."""
    name = choose_backbone("vgg16", verbose=progress)
    model = build_classifier(name)
    layers = saliency_target_layers(name, model)
    cache = SaliencyCache(cache_dir)
    maps = [cache(model, x, layers) for x in images.split(batch_size)]
    return torch.cat(maps), name


def evaluate_patchcore(extractor, train, test, masks, labels, coreset: float, seed: int,
                       device=None) -> dict:
    """PatchCore on one extractor at one coreset ratio -> metrics and timings."""
    model = PatchCore(extractor, coreset_ratio=coreset, seed=seed, device=device, progress=False)
    t0 = time.perf_counter()
    model.fit(train)
    t1 = time.perf_counter()
    scores, maps = model.predict(test)
    t2 = time.perf_counter()
    return {"image_auroc": metrics.image_auroc(labels, scores),
            "pixel_auroc": metrics.pixel_auroc(masks, maps), "aupro": metrics.aupro(masks, maps),
            "fit_s": t1 - t0, "predict_s": t2 - t1}


def run_category(dataset: str, root: Path, category: str, settings: RunSettings, *,
                 workdir: Path, methods=METHODS, ablation: str | None = None,
                 device=None, progress: bool = True) -> list[dict]:
    """Every method (and ablation variant) x coreset x seed on one category -> result rows."""
    size = settings.image_size
    train, _, _, _ = load_split(root, category, "train", size)
    test, masks, labels, _ = load_split(root, category, "test", size)
    encoder = choose_backbone("resnet18", verbose=progress)
    finetune = train[: settings.finetune_images or len(train)]  # (n, 3, S, S) for the 3-way task
    train_size = settings.train_size or size
    if train_size != size:
        finetune = torch.nn.functional.interpolate(finetune, size=(train_size, train_size), mode="bilinear",
                                                   align_corners=False, antialias=True).clamp(0, 1)
    maps, _ = (saliency_maps(finetune, workdir / "saliency", progress=progress)
               if "cutswap" in methods else (None, None))
    patch = settings.patch_px()  # the paper's 30 px at 224 px, scaled to the fine-tuning size
    rows = []
    for seed in settings.seeds:
        for method in methods:
            variants = ablation_variants(ablation) if method == "cutswap" else {"paper": {}}
            for variant, overrides in variants.items():
                t0 = time.perf_counter()
                if method == "resnet18":  # the pretrained encoder, untouched
                    extractor = build_feature_extractor(encoder)
                else:
                    config = TrainConfig(backbone=encoder, mode=method, epochs=settings.epochs,
                                         batch_size=settings.batch_size, levels=settings.levels,
                                         patch_size=patch, seed=seed, **overrides)
                    folder = workdir / "checkpoints" / category / f"{method}_{variant}_seed{seed}"
                    model, _ = train_three_way(finetune, maps if method == "cutswap" else None, config,
                                               checkpoint_dir=folder, device=device,
                                               progress=progress)
                    extractor = encoder_for_patchcore(model)
                train_s = time.perf_counter() - t0
                for coreset in settings.coresets:
                    result = evaluate_patchcore(extractor, train, test, masks, labels, coreset, seed,
                                                device)
                    paper = (_paper_ablation(ablation, variant, coreset) if ablation and method == "cutswap"
                             else cutswap_paper.paper_row(dataset, coreset, category, method))
                    row = {"dataset": dataset, "category": category, "method": method,
                           "ablation": variant, "coreset": coreset, "seed": seed, **result,
                           "paper_image_auroc": paper[0] if paper else None,
                           "paper_pixel_auroc": paper[1] if paper else None,
                           "encoder": extractor.weights_loaded, "train_s": train_s}
                    rows.append(row)
                    # one line per result even with progress bars off: the log of a long run
                    print(f"  {category} {method:8s} {variant:14s} coreset {coreset:<6} seed {seed}: "
                          f"image {row['image_auroc']:.3f} pixel {row['pixel_auroc']:.3f}", flush=True)
    return rows


def paper_layout(rows: list[dict]) -> str:
    """Markdown laid out like the paper's Tables I-IV: one line per category and coreset.

    Cells are means (± standard deviation with several seeds); the paper's figure follows in
    brackets where it has one.
    """
    cells: dict[tuple, list] = {}
    for r in rows:
        cells.setdefault((r["category"], r["coreset"], r["method"], r["ablation"]), []).append(r)
    variants = sorted({(r["method"], r["ablation"]) for r in rows},
                      key=lambda mv: (METHODS.index(mv[0]) if mv[0] in METHODS else 9, mv[1]))
    header = ["category", "coreset"]
    for method, variant in variants:
        name = {"cutpaste": "CutPaste+PC", "resnet18": "pretrained+PC", "cutswap": "CutSwap+PC"}[method]
        name += "" if variant == "paper" else f" {variant}"
        header += [f"{name} image", f"{name} pixel"]
    table = []
    for category, coreset in dict.fromkeys((r["category"], r["coreset"]) for r in rows):
        line = {"category": category, "coreset": coreset}
        for (method, variant), col in zip(variants, range(2, len(header), 2)):
            group = cells.get((category, coreset, method, variant), [])
            for key, paper_key, name in (("image_auroc", "paper_image_auroc", header[col]),
                                         ("pixel_auroc", "paper_pixel_auroc", header[col + 1])):
                if not group:
                    line[name] = ""
                    continue
                values = torch.tensor([float(g[key]) for g in group])
                spread = f" ± {values.std():.3f}" if len(values) > 1 else ""
                paper = group[0][paper_key]
                line[name] = f"{values.mean():.3f}{spread}" + (f" ({paper:.3f})" if paper is not None else "")
        table.append(line)
    seeds = len({r["seed"] for r in rows})
    note = (f"\nMean{' ± std' if seeds > 1 else ''} over {seeds} seed(s); the paper's figure in brackets where "
            "it reports this cell. "
            "'pretrained' is the encoder before fine-tuning (the paper's ResNet18 + PC).")
    return format_results_table(table, header) + "\n" + note


def cutswap_table(dataset: str, root: Path, categories, settings: RunSettings, *, results: Path,
                  methods=METHODS, ablation: str | None = None, device=None,
                  progress: bool = True) -> list[dict]:
    """Run :func:`run_category` over ``categories``; merge into the CSV, write the paper-style Markdown.

    Rows are merged into ``results/<stem>.csv`` after each category (:func:`merge_rows`: other
    categories, seeds and settings already there are kept). The Markdown is made from every
    row in the CSV with this run's settings (``settings`` column), so it covers earlier
    categories run with the same settings too, never rows made with other settings.
    Returns this run's rows.
    """
    check_cutswap_run(root, categories, settings, methods, ablation)  # before training, not after it
    stem = f"cutswap_{dataset}" + (f"_ablation_{ablation}" if ablation else "")
    workdir = results / "work" / dataset
    fingerprint = settings_fingerprint(settings)
    rows, merged = [], []
    for category in categories:
        new = run_category(dataset, root, category, settings, workdir=workdir, methods=methods,
                           ablation=ablation, device=device, progress=progress)
        new = [{**r, "settings": fingerprint} for r in new]
        rows += new
        merged = merge_rows(results / f"{stem}.csv", new, ROW_KEY)
        write_csv(merged, results / f"{stem}.csv", COLUMNS)  # after each category: nothing lost
    same = [r for r in merged if r.get("settings") == fingerprint]
    other = len(merged) - len(same)
    note = (f"\n{other} row(s) of {stem}.csv were made with other settings and are not in this table."
            if other else "")
    write_text(results / f"{stem}.md", paper_layout(same) + note + "\n")
    return rows
