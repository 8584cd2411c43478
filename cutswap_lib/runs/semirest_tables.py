"""Reproduction runs of SemiREST: Tables 1-5 (unsupervised, supervised, semi-supervised) and Table 6.

For one dataset (MVTec-layout folder: the toy data, MVTec AD, BTAD, KSDD2) and its
categories, each run

1. loads the normal training images and the test set at ``image_size``; in the
   supervised and semi-supervised settings draws ``n_labelled`` anomalous test images
   (seeded, spread over the defect types) and removes them from the test set, as the
   paper does (Sec. 4.1, "10 anomalous images"): the supervised model trains on them with
   block labels (Eq. 14), the semi-supervised one with boxes drawn tightly around each
   region of their masks (Eq. 15, :func:`.boxes.boxes_from_mask`). With
   ``box_file`` (``--boxes boxes.json``) the labelled images and their boxes come from
   ``<category>/<box_file>`` instead, the file notebook 06's drawing widget writes;
2. fits PatchCore on the same backbone and coreset ratio as the baseline column;
3. trains :class:`~.model.SemiREST` (unsupervised and supervised from scratch; semi:
   the unsupervised model fine-tuned with :func:`.semi.finetune_with_boxes`), or one
   Table 6 variant, and records pixel AP, PRO (AUPRO to FPR 0.3), pixel AUROC and image
   AUROC beside the paper's figure where the paper has one (MVTec AD, BTAD, KSDD2).

The command line is ``python -m cutswap_lib semirest-table ...`` (see ``--help``); results
go to a CSV per run and a Markdown table with the paper's numbers alongside.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import torch

from .. import metrics
from ..data import AnomalyDataset, load_foregrounds, load_split
from ..patchcore import PatchCore
from ..semirest.boxes import box_key, box_pixel_labels, boxes_from_mask, load_boxes
from ..semirest.mixmatch import MixMatchConfig
from ..semirest.model import SemiREST, SemiRESTConfig
from ..semirest.residuals import ResidualMemory
from ..semirest.semi import finetune_with_boxes
from . import semirest_paper
from .checks import MIN_IMAGE_SIZE, check_fraction, check_names, check_positive, check_seeds, check_test_split
from .results import (format_results_table, merge_rows, rows_with_settings, settings_fingerprint, write_csv,
                      write_text)

SETTINGS = ("unsupervised", "supervised", "semi")
COLUMNS = ["dataset", "category", "setting", "method", "variant", "seed", "ap", "pro", "pixel_auroc",
           "image_auroc", "paper_ap", "paper_pro", "paper_pixel_auroc", "n_labelled", "n_test", "boxes",
           "backbone", "train_s", "predict_s", "settings"]
ROW_KEY = ("dataset", "category", "setting", "method", "variant", "seed", "settings")  # see results.merge_rows

# Table 6's rows for the unsupervised and supervised settings: name -> (residual, lambda_pe, bagging, knn)
ABLATION_VARIANTS = {
    "square": ("square", 0.0, False, False),
    "abs": ("abs", 0.0, False, False),
    "square+PCF": ("square", None, False, False),
    "square+PCF+bagging": ("square", None, True, False),
    "square+PCF+bagging+kNN": ("square", None, True, True),
    "abs+PCF+bagging+kNN": ("abs", None, True, True),
}
# Table 6's semi-supervised rows 5-7 (on the full unsupervised model): MixMatchConfig overrides
SEMI_VARIANTS = {
    "square+PCF+bagging+kNN": {"lambda_u": 0.0, "dropout": 0.0},  # unknown blocks unused
    "square+PCF+bagging+kNN+MixMatch": {"dropout": 0.0},
    "square+PCF+bagging+kNN+MixMatch+dropout": {},
}


@dataclasses.dataclass
class SemiRunSettings:
    """Sizes of a reproduction run; ``small()`` is the documented CPU profile for the toy data."""

    image_size: int = 512
    coreset_ratio: float = 0.1
    lambda_pe: float = 0.1
    n_labelled: int = 10
    seeds: tuple[int, ...] = (0,)
    box_file: str | None = None  # e.g. "boxes.json" in each category folder; None: boxes from masks
    config: SemiRESTConfig = dataclasses.field(default_factory=SemiRESTConfig)
    mixmatch: MixMatchConfig = dataclasses.field(default_factory=MixMatchConfig)

    @classmethod
    def small(cls) -> "SemiRunSettings":
        """Toy data on a 2-core CPU: 224 px (28 x 28 tokens), :meth:`SemiRESTConfig.cpu`."""
        return cls(image_size=224, config=SemiRESTConfig.cpu())

    def validate(self) -> "SemiRunSettings":
        """Raise ValueError naming the first setting out of range; returns self."""
        check_positive("image_size", self.image_size, MIN_IMAGE_SIZE)
        check_fraction("coreset_ratio", self.coreset_ratio)
        check_positive("n_labelled", self.n_labelled, minimum=0)
        check_seeds(self.seeds)
        check_positive("iterations", self.config.iterations)
        check_positive("fine-tuning iterations", self.mixmatch.iterations)
        if self.lambda_pe < 0:
            raise ValueError(f"lambda_pe must be >= 0, got {self.lambda_pe}")
        return self


def check_semirest_run(root: Path, categories, settings: SemiRunSettings, setting_names=SETTINGS) -> None:
    """Every check a ``semirest-table`` run can make before training (ValueError / DatasetError / FileNotFoundError)."""
    settings.validate()
    check_names("settings", setting_names, SETTINGS)
    if not categories:
        raise ValueError("categories must name at least one category")
    labelled = any(s != "unsupervised" for s in setting_names)
    if labelled and not settings.box_file and settings.n_labelled < 1:
        raise ValueError("the supervised and semi-supervised settings need labelled images: "
                         f"n_labelled must be >= 1 (got {settings.n_labelled}), or leave them out of settings")
    for category in categories:
        check_test_split(root, category, held_out=settings.n_labelled if labelled and not settings.box_file else 0)
    if labelled:
        check_box_files(root, categories, settings)


def labelled_split(labels: torch.Tensor, paths: list[str], n: int, seed: int) -> torch.Tensor:
    """Indices ``(n,)`` of anomalous test images for the supervised setting, round robin over defect types."""
    gen = torch.Generator().manual_seed(seed)
    by_type: dict[str, list[int]] = {}
    for i in torch.randperm(len(paths), generator=gen).tolist():
        if int(labels[i]) == 1:
            by_type.setdefault(Path(paths[i]).parent.name, []).append(i)
    if sum(map(len, by_type.values())) < n:
        raise ValueError(f"the supervised setting needs {n} anomalous test images, the test set has "
                         f"{sum(map(len, by_type.values()))}")
    chosen, queues = [], [by_type[k] for k in sorted(by_type)]
    while len(chosen) < n:
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop(0))
    return torch.tensor(sorted(chosen))


def boxes_from_file(path: Path, test_paths: list[str], size: tuple[int, int]
                    ) -> tuple[torch.Tensor, list[list[tuple[int, int, int, int]]]]:
    """The labelled images named in a box file and their boxes at ``size = (H, W)``.

    Returns the indices ``(n,)`` of those images in ``test_paths`` (in the order of the
    test set) and one list of boxes per image, rescaled from the size they were drawn at.
    Raises with the file's name when it is missing or names an image the test set lacks.
    """
    if not path.is_file():
        raise FileNotFoundError(f"box file {path} does not exist: draw boxes with notebook 06's widget "
                                f"(it saves <category>/boxes.json), or leave out --boxes to derive boxes from masks")
    boxes = load_boxes(path, resize_to=size)  # validated at the size they were drawn at, then rescaled
    keys = {box_key(p): i for i, p in enumerate(test_paths)}
    unknown = [name for name in boxes if name not in keys]
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} image(s) are not in the test set, e.g. {unknown[0]!r} "
                         f"(names are <defect type>/<file>, like {next(iter(keys))!r})")
    if not boxes:
        raise ValueError(f"{path}: the file names no image")
    order = sorted(boxes, key=keys.__getitem__)
    return torch.tensor([keys[name] for name in order]), [boxes[name] for name in order]


def check_box_files(root: Path, categories, settings: SemiRunSettings) -> None:
    """Raise (naming the file) if any category's ``settings.box_file`` is missing or does not fit its test set.

    The file must name at least one anomalous test image and leave at least one out (the
    images it names move to training; the rest are the evaluation set).
    """
    if not settings.box_file:
        return
    for category in categories:
        samples = AnomalyDataset(root, category, "test", image_size=None).samples
        path = root / category / settings.box_file
        chosen, _ = boxes_from_file(path, [str(x.image) for x in samples], (settings.image_size, settings.image_size))
        named = sum(samples[i].label == 1 for i in chosen.tolist())
        anomalous = sum(x.label == 1 for x in samples)
        if named == 0:
            raise ValueError(f"{path} names only good images: boxes label defects, so name anomalous test images")
        if named >= anomalous:
            raise ValueError(f"{path} names all {anomalous} anomalous test images of {category}: none would be "
                             f"left to evaluate; leave some out")


def _paper_cells(dataset: str, setting: str, category: str, method: str, variant: str):
    if variant != "paper":  # Table 6 (MVTec AD means); MixMatch and dropout change only the semi column
        semi_only = setting == "semi"
        row = next((r for r in semirest_paper.ABLATION if _variant_name(r, semi_only) == variant), None)
        return row.get(setting) if row else None
    if dataset not in ("mvtec", "btad", "ksdd2"):
        return None
    return semirest_paper.paper_triple(dataset, setting, category, method)


def _variant_name(row: dict, with_semi_modules: bool = True) -> str:
    """Table 6 row -> our variant name, e.g. ``square+PCF+bagging+kNN(+MixMatch+dropout)``."""
    name = row["residual"] + "".join(f"+{label}" for key, label in
                                     (("pcf", "PCF"), ("bagging", "bagging"), ("knn", "kNN")) if row[key])
    if with_semi_modules:
        name += "".join(f"+{label}" for key, label in (("mixmatch", "MixMatch"), ("dropout", "dropout")) if row[key])
    return name


def _metrics(masks, maps, labels, scores) -> dict:
    return {"ap": metrics.pixel_ap(masks, maps), "pro": metrics.aupro(masks, maps),
            "pixel_auroc": metrics.pixel_auroc(masks, maps), "image_auroc": metrics.image_auroc(labels, scores)}


def _toy_sources(root: Path, category: str, size: int, n: int = 20) -> torch.Tensor | None:
    """Texture sources for synthetic anomalies: normal images of the other toy categories."""
    others = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name != category and (p / "train").is_dir()]
    parts = [load_split(root, p.name, "train", size)[0][:n] for p in others]
    return torch.cat(parts) if parts else None


def run_semirest_category(dataset: str, root: Path, category: str, settings: SemiRunSettings, *,
                          setting_names=SETTINGS, ablation: bool = False, device=None,
                          progress: bool = True) -> list[dict]:
    """PatchCore and SemiREST (each setting, each variant, each seed) on one category -> result rows."""
    size = settings.image_size
    train, _, _, train_paths = load_split(root, category, "train", size)
    test, masks, labels, test_paths = load_split(root, category, "test", size)
    toy = dataset == "toy"
    foreground = load_foregrounds(train_paths, size) if toy else None
    sources = _toy_sources(root, category, size) if toy else None
    variants = ABLATION_VARIANTS if ablation else {"paper": None}
    drawn = None  # (indices, boxes) of the images a box file annotates
    if settings.box_file:
        box_path = root / category / settings.box_file
        drawn = boxes_from_file(box_path, test_paths, tuple(masks.shape[-2:]))
        empty = [box_key(test_paths[i]) for i, b in zip(drawn[0].tolist(), drawn[1]) if not b and labels[i]]
        if empty:
            print(f"warning: {box_path} gives no box for {len(empty)} anomalous image(s) (e.g. {empty[0]}): "
                  f"all their pixels count as normal", flush=True)
    rows = []
    for seed in settings.seeds:
        pretrained: SemiREST | None = None  # the full unsupervised model, which "semi" fine-tunes
        for setting in setting_names:
            n_lab = (len(drawn[0]) if drawn else settings.n_labelled) if setting != "unsupervised" else 0
            keep = torch.ones(len(test), dtype=torch.bool)
            if n_lab:
                chosen = drawn[0] if drawn else labelled_split(labels, test_paths, n_lab, seed)
                keep[chosen] = False
            te, tm, tl = test[keep], masks[keep], labels[keep]
            base = {"dataset": dataset, "category": category, "setting": setting, "seed": seed,
                    "n_labelled": n_lab, "n_test": int(keep.sum()),
                    "boxes": (settings.box_file if drawn else "masks") if setting == "semi" else None}
            if setting == "semi":
                if pretrained is None:
                    pretrained = _fit(_config(settings, None, "unsupervised", seed), settings, seed, device,
                                      progress, train, foreground, sources, None)[0]
                rows.append(_patchcore_row(base, pretrained.memory, train, te, tm, tl, settings, seed, device))
                _report(rows[-1], progress)
                image_boxes = drawn[1] if drawn else [boxes_from_mask(masks[i]) for i in chosen.tolist()]
                boxes = torch.stack([box_pixel_labels(b, tuple(masks.shape[-2:]))
                                     for b in image_boxes])  # (n, H, W): 0 outside the boxes, UNKNOWN inside
                for variant, spec in (SEMI_VARIANTS if ablation else {"paper": {}}).items():
                    model = copy.deepcopy(pretrained)
                    model.config = dataclasses.replace(model.config, dropout=spec.get("dropout", model.config.dropout))
                    mix = dataclasses.replace(settings.mixmatch, **{k: v for k, v in spec.items() if k != "dropout"})
                    t0 = time.perf_counter()
                    finetune_with_boxes(model, test[chosen], boxes, mix, progress=progress)
                    rows.append(_semirest_row(base, model, variant, te, tm, tl, time.perf_counter() - t0))
                    _report(rows[-1], progress)
                continue
            anomalous = (test[chosen], masks[chosen].unsqueeze(1).float()) if n_lab else None
            for variant, spec in variants.items():
                cfg = _config(settings, spec, setting, seed)
                model, train_s = _fit(cfg, settings, seed, device, progress, train, foreground, sources, anomalous,
                                      lambda_pe=spec[1] if spec else None)
                if variant == next(iter(variants)):  # the baseline, once per seed and setting
                    rows.append(_patchcore_row(base, model.memory, train, te, tm, tl, settings, seed, device))
                    _report(rows[-1], progress)
                if setting == "unsupervised" and (spec is None or variant == "square+PCF+bagging+kNN"):
                    pretrained = model
                rows.append(_semirest_row(base, model, variant, te, tm, tl, train_s))
                _report(rows[-1], progress)
    return rows


def _config(settings: SemiRunSettings, spec, setting: str, seed: int) -> SemiRESTConfig:
    """The SemiREST configuration of one setting and Table 6 variant ``spec`` (None: the full model)."""
    residual, _, bagging, knn = spec or ("square", None, True, True)
    overrides = {"residual": residual, "knn": knn, "seed": seed}
    if not bagging:
        overrides["step"] = settings.config.mu  # windows side by side: no bagging (a strip overlaps at the edge)
    cfg = dataclasses.replace(settings.config, **overrides)
    if setting == "supervised":  # Sec. 4.2: eps+ 25 %, b1 = b2 = b3 = 2
        cfg = dataclasses.replace(cfg, eps_plus=0.25, b1=2, b2=2, b3=2)
    return cfg


def _fit(cfg, settings, seed, device, progress, train, foreground, sources, anomalous, lambda_pe=None):
    """A trained :class:`SemiREST` on a fresh memory (``lambda_pe`` None: the settings' value) and its time."""
    memory = ResidualMemory(coreset_ratio=settings.coreset_ratio,
                            lambda_pe=settings.lambda_pe if lambda_pe is None else lambda_pe, seed=seed,
                            device=device, progress=False)
    model = SemiREST(memory, cfg, progress=progress)
    t0 = time.perf_counter()
    model.fit(train, foreground=foreground, sources=sources, anomalous=anomalous)
    return model, time.perf_counter() - t0


def _semirest_row(base: dict, model: SemiREST, variant: str, test, masks, labels, train_s: float) -> dict:
    scores, maps = model.predict(test)
    return {**base, "method": "semirest", "variant": variant, **_metrics(masks, maps, labels, scores),
            **_paper(base["dataset"], base["setting"], base["category"], "semirest", variant),
            "backbone": model.memory.features.extractor.name, "train_s": train_s,
            "predict_s": model.timings["predict"]}


def _patchcore_row(base: dict, memory: ResidualMemory, train, test, masks, labels, settings, seed,
                   device) -> dict:
    """PatchCore on the same backbone, coreset ratio and test images as SemiREST."""
    model = PatchCore(memory.features.extractor, coreset_ratio=settings.coreset_ratio, seed=seed,
                      device=device, progress=False).fit(train)
    t0 = time.perf_counter()
    scores, maps = model.predict(test)
    return {**base, "method": "patchcore", "variant": "paper", **_metrics(masks, maps, labels, scores),
            **_paper(base["dataset"], base["setting"], base["category"], "patchcore", "paper"),
            "backbone": memory.features.extractor.name, "train_s": None,
            "predict_s": time.perf_counter() - t0}


def _paper(dataset, setting, category, method, variant) -> dict:
    cells = _paper_cells(dataset, setting, category, method, variant)
    return {"paper_ap": cells[0] if cells else None, "paper_pro": cells[1] if cells else None,
            "paper_pixel_auroc": cells[2] if cells else None}


def _report(row: dict, progress: bool) -> None:
    """One line per result, with or without progress bars (``progress`` is kept for the call sites)."""
    print(f"  {row['category']} {row['setting']:12s} {row['method']:9s} {row['variant']:24s} seed "
          f"{row['seed']}: AP {row['ap']:.3f} PRO {row['pro']:.3f} pixel AUROC {row['pixel_auroc']:.3f}",
          flush=True)


def semirest_layout(rows: list[dict]) -> str:
    """Markdown: one line per category, setting, method and variant; means over seeds, paper alongside."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["category"], r["setting"], r["method"], r["variant"]), []).append(r)
    header = ["category", "setting", "method", "AP", "PRO", "pixel AUROC", "image AUROC", "paper AP / PRO / pixel AUROC"]
    table = []
    for (category, setting, method, variant), group in groups.items():
        def cell(key):
            values = torch.tensor([float(g[key]) for g in group])
            return f"{values.mean():.3f}" + (f" ± {values.std():.3f}" if len(values) > 1 else "")
        paper = group[0]
        paper_txt = (" / ".join(f"{paper[k]:.3f}" for k in ("paper_ap", "paper_pro", "paper_pixel_auroc"))
                     if paper["paper_ap"] is not None else "")
        name = {"patchcore": "PatchCore", "semirest": "SemiREST"}[method] + ("" if variant == "paper" else f" {variant}")
        table.append({"category": category, "setting": setting, "method": name, "AP": cell("ap"),
                      "PRO": cell("pro"), "pixel AUROC": cell("pixel_auroc"), "image AUROC": cell("image_auroc"),
                      "paper AP / PRO / pixel AUROC": paper_txt})
    seeds = len({r["seed"] for r in rows})
    note = (f"\nMean{' ± std' if seeds > 1 else ''} over {seeds} seed(s). Supervised rows are evaluated on the "
            "test set without the labelled anomalous images (PatchCore too).")
    sources = sorted({r["boxes"] for r in rows if r.get("boxes")})
    if sources:
        named = {"masks": "one tight box around each defect region of the mask"}
        note += f" Semi-supervised boxes: {', '.join(named.get(x, x) for x in sources)}."
    return format_results_table(table, header) + "\n" + note


def semirest_table(dataset: str, root: Path, categories, settings: SemiRunSettings, *, results: Path,
                   setting_names=SETTINGS, ablation: bool = False, device=None,
                   progress: bool = True) -> list[dict]:
    """Run :func:`run_semirest_category` over ``categories``; merge into the CSV, write the Markdown.

    As :func:`cutswap_lib.runs.cutswap_tables.cutswap_table`: rows are merged into
    ``results/<stem>.csv`` after each category, and the Markdown holds every row of the CSV
    made with this run's settings. Returns this run's rows.
    """
    stem = f"semirest_{dataset}" + ("_ablation" if ablation else "")
    check_semirest_run(root, categories, settings, setting_names)  # before the first hour of training
    fingerprint = settings_fingerprint(settings)
    rows, merged = [], []
    for category in categories:
        new = run_semirest_category(dataset, root, category, settings, setting_names=setting_names,
                                    ablation=ablation, device=device, progress=progress)
        new = [{**r, "settings": fingerprint} for r in new]
        rows += new
        merged = merge_rows(results / f"{stem}.csv", new, ROW_KEY)
        write_csv(merged, results / f"{stem}.csv", COLUMNS)  # after each category: nothing lost
    same, note = rows_with_settings(merged, fingerprint, f"{stem}.csv")
    write_text(results / f"{stem}.md", semirest_layout(same) + note + "\n")
    return rows
