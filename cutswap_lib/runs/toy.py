"""The main job behind ``python -m cutswap_lib``: PatchCore on every toy category, table and figures.

Each function takes plain arguments, calls the library and returns rows (dicts) that
the command line prints as a Markdown table and writes as CSV. No argument parsing
here (that lives in ``__main__``), no notebook code.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from .. import metrics, viz
from ..config import Profile, toy_root
from ..data import TOY_CATEGORIES, AnomalyDataset, ensure_toy_dataset, load_split
from ..patchcore import PatchCore
from .results import format_results_table, write_csv, write_text

RESULT_COLUMNS = ["category", "backbone", "weights", "coreset", "image_auroc", "pixel_auroc",
                  "pixel_ap", "aupro", "fit_s", "predict_s"]


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A backbone as the tables name it: network name and weights policy."""

    name: str
    weights: str | None  # "imagenet" or None (random init)

    @property
    def label(self) -> str:
        return f"{self.name} ({'ImageNet' if self.weights else 'random init'})"


# The main job's table: the random-init floor beside the ImageNet network that
# reaches an offline machine (see cutswap_lib.backbones).
DEFAULT_BACKBONES = (BackboneSpec("resnet18", None), BackboneSpec("efficientnet_lite0", "imagenet"))


def ensure_profile_toy(profile: Profile, root: Path, category: str) -> Path:
    """The toy category at the profile's sizes (seed 0), generated only when absent or different."""
    return ensure_toy_dataset(root, category, n_train=profile.toy_train,
                              n_test_good=profile.toy_test_good,
                              n_test_defect=profile.toy_test_defect,
                              image_size=profile.image_size, seed=0)


def toy_root_at(profile: Profile, image_size: int) -> Path:
    """The folder of the profile's toy data drawn at ``image_size`` px.

    ``toy_root(profile)`` when the profile's own size is ``image_size``; otherwise a sibling folder
    ``toy_<profile>_<size>px``, so that data drawn at another size never overwrites the profile's own.
    """
    root = toy_root(profile)
    return root if profile.image_size == image_size else root.with_name(f"{root.name}_{image_size}px")


def ensure_toy_at(profile: Profile, image_size: int, categories=TOY_CATEGORIES) -> Path:
    """The profile's toy ``categories`` (image counts of the profile) drawn at ``image_size`` px; returns the root.

    One call for what every chapter's configuration cell needs: each category is generated only when absent
    or different (``ensure_profile_toy``), into ``toy_root_at(profile, image_size)``.
    """
    root = toy_root_at(profile, image_size)
    sized = dataclasses.replace(profile, image_size=image_size)
    for category in ([categories] if isinstance(categories, str) else categories):
        ensure_profile_toy(sized, root, category)
    return root


def run_patchcore(root: Path, category: str, spec: BackboneSpec, *, image_size: int,
                  coreset_ratio: float, seed: int = 0, device: str | None = None,
                  progress: bool = True):
    """Fit PatchCore on ``train/good`` and evaluate on ``test``; returns (row, predictions)."""
    torch.manual_seed(seed)  # random-init backbones are drawn from torch's global RNG
    train_images, _, _, _ = load_split(root, category, "train", image_size)
    test_images, test_masks, test_labels, test_paths = load_split(root, category, "test", image_size)
    model = PatchCore(spec.name, weights=spec.weights, coreset_ratio=coreset_ratio,
                      device=device, seed=seed, progress=progress)
    t0 = time.perf_counter()
    model.fit(train_images)
    t1 = time.perf_counter()
    scores, maps = model.predict(test_images)
    t2 = time.perf_counter()
    row = {"category": category, "backbone": spec.name,
           "weights": model.extractor.weights_loaded, "coreset": coreset_ratio,
           **metrics.evaluate(test_labels, scores, test_masks, maps),
           "fit_s": t1 - t0, "predict_s": t2 - t1}
    preds = {"images": test_images, "masks": test_masks, "labels": test_labels,
             "scores": scores, "maps": maps, "paths": test_paths}
    return row, preds


def save_anomaly_figure(preds: dict, title: str, path: Path, n_show: int = 6) -> Path:
    """Overlay figure of the ``n_show`` highest-scoring anomalous and a normal test image."""
    labels = preds["labels"]
    anomalous = torch.nonzero(labels == 1).flatten()
    normal = torch.nonzero(labels == 0).flatten()
    order = anomalous[preds["scores"][anomalous].argsort(descending=True)]
    pick = torch.cat([order[: n_show - 1], normal[:1]])
    titles = [f"{Path(preds['paths'][i]).parent.name}/{Path(preds['paths'][i]).name} "
              f"score {preds['scores'][i]:.2f}" for i in pick.tolist()]
    fig = viz.show_anomaly_maps(preds["images"][pick], preds["maps"][pick],
                                preds["masks"][pick], titles=titles)
    fig.suptitle(title)
    return viz.save_figure(fig, path, dpi=80)


def summarize(rows: list[dict], keys=("category", "backbone", "weights", "coreset"),
              values=("image_auroc", "pixel_auroc", "pixel_ap", "aupro")) -> list[dict]:
    """Mean over seeds of each metric per ``keys`` group; ``"0.812 ± 0.040"`` strings when >1 seed."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for key, members in groups.items():
        summary = dict(zip(keys, key), seeds=len(members))
        for v in values:
            x = torch.tensor([m[v] for m in members], dtype=torch.float64)
            summary[v] = float(x.mean()) if len(x) == 1 else f"{x.mean():.3f} ± {x.std():.3f}"
        for v in ("fit_s", "predict_s"):  # timings: the mean is enough
            summary[v] = sum(m[v] for m in members) / len(members)
        out.append(summary)
    return out


def toy_patchcore_table(profile: Profile, *, data_root: Path, results: Path,
                        categories=TOY_CATEGORIES, backbones=DEFAULT_BACKBONES,
                        coreset_ratio: float | None = None, seeds=(0,),
                        device: str | None = None, progress: bool = True) -> list[dict]:
    """The main job: PatchCore on every toy category, backbone and seed; CSV, Markdown, figures.

    The toy dataset is generated once under ``data_root`` (seed 0) when absent; ``seeds``
    vary the random-init backbone and the coreset start. Writes ``results/patchcore_toy.csv``
    (one row per run), ``results/patchcore_toy.md`` (mean ± std over seeds) and one overlay
    figure per (category, backbone) under ``results/figures/``. Returns the per-run rows.
    """
    coreset_ratio = profile.coreset_ratio if coreset_ratio is None else coreset_ratio
    rows = []
    for category in categories:
        ensure_profile_toy(profile, data_root, category)
        for spec in backbones:
            for seed in seeds:
                row, preds = run_patchcore(data_root, category, spec, image_size=profile.image_size,
                                           coreset_ratio=coreset_ratio, seed=seed, device=device,
                                           progress=progress)
                rows.append({**row, "seed": seed})
                print(f"  {category:8s} {spec.label:34s} seed {seed}  image AUROC "
                      f"{row['image_auroc']:.3f}  pixel AUROC {row['pixel_auroc']:.3f}  "
                      f"AUPRO {row['aupro']:.3f}", flush=True)
                if seed == seeds[0]:
                    save_anomaly_figure(preds, f"PatchCore, {spec.label}, toy {category}",
                                        results / "figures" / f"patchcore_{category}_{spec.name}.png")
    write_csv(rows, results / "patchcore_toy.csv", RESULT_COLUMNS + ["seed"])
    write_text(results / "patchcore_toy.md", summary_table(rows) + "\n")
    return rows


def summary_table(rows: list[dict]) -> str:
    """Markdown table of :func:`summarize` over per-run rows."""
    return format_results_table(summarize(rows), ["category", "backbone", "weights", "coreset",
                                                      "seeds", "image_auroc", "pixel_auroc",
                                                      "pixel_ap", "aupro", "fit_s", "predict_s"])


def toy_gallery(root: Path, image_size: int, path: Path, categories=TOY_CATEGORIES) -> Path:
    """One row per toy category: a normal test image, then one image per defect kind (masks outlined)."""
    images, masks, titles, ncols = [], [], [], 0
    for category in categories:
        ds = AnomalyDataset(root, category, "test", image_size=image_size)
        firsts = {}
        for i, sample in enumerate(ds.samples):
            firsts.setdefault(sample.defect_type, i)
        kinds = ["good"] + sorted(k for k in firsts if k != "good")
        ncols = max(ncols, len(kinds))
        for kind in kinds:
            image, mask, _, _ = ds[firsts[kind]]
            images.append(image)
            masks.append(mask)
            titles.append(f"{category}: {kind}")
    fig = viz.show_samples(torch.stack(images), torch.stack(masks), titles=titles, ncols=ncols)
    return viz.save_figure(fig, path, dpi=72)
