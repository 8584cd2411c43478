"""``python -m cutswap_lib patchcore``: PatchCore on your own folder of images, as anomalib's ``Folder`` does.

The images come as an :class:`~cutswap_lib.data.image_lists.ImageSet` (an MVTec-layout
category with or without ``ground_truth/``, or plain ``--good`` / ``--test`` folders with
optional ``--masks``; :mod:`cutswap_lib.data.image_lists` says what each form knows). Here:

* :func:`choose_network` – the network that runs: the one asked for, or with
  ``weights="imagenet"`` offline EfficientNet-Lite0 instead of a torchvision network
  (:func:`~cutswap_lib.weights.choose_pretrained`, which prints the choice and why);
* :func:`fit_model` / :func:`score_images` – :class:`~cutswap_lib.patchcore.PatchCore` fitted
  on the normal images, then image scores and maps of the test images;
* :func:`folder_metrics` – :func:`cutswap_lib.metrics.evaluate` where labels (and masks) are
  known; a metric that is not defined for this set (no labels, one class only) is ``nan``
  with a note saying why;
* :func:`write_outputs` – ``scores.csv`` (path, score, label when known), ``metrics.csv`` and
  one overlay PNG per test image under ``maps/<type>/<stem>.png``, all written atomically.
  **Course choice:** every overlay of a run shares one colour scale, from the lowest to the
  highest map value over all its test images, so that colours compare across files;
* :func:`save_model` / :func:`load_model` – the fitted model as one ``torch.save`` file of
  plain tensors, dicts and strings (read back with ``weights_only=True``): memory bank,
  settings, the name / weights / layers / image size of the network that ran, and **(course
  choice)** the network's own weights, so that scoring later needs neither the ImageNet
  download nor torch's random generator to rebuild the same features (11 MiB for ResNet18
  up to layer3, 95 MiB for WideResNet50-2, 3 MiB for Lite0 up to _blocks.10).

:func:`run_patchcore_folder` does all of it for one input; the command line only parses
arguments and calls it once per category (or once for ``folder``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import metrics
from ..backbones import build_feature_extractor
from ..data.image_lists import ImageList, ImageSet, folder_images, mvtec_categories, mvtec_images
from ..files import atomic_write
from ..patchcore import PatchCore
from ..viz import save_figure
from ..viz.maps import show_anomaly_overlay
from ..weights import BACKBONES, choose_pretrained, load_checkpoint
from .results import write_csv

__all__ = ["FittedModel", "FolderSettings", "ModelFileError", "MODEL_FORMAT", "choose_network", "fit_model",
           "folder_metrics", "input_sets", "load_model", "run_patchcore_folder", "save_model", "score_images", "write_outputs"]

MODEL_FORMAT = "cutswap_lib.patchcore_folder"  # the "format" entry of a saved model
MODEL_VERSION = 1
METRICS = ("image_auroc", "pixel_auroc", "pixel_ap", "aupro")
ROW_COLUMNS = ["name", "backbone", "weights", "layers", "image_size", "coreset", "seed", "n_train", "n_test",
               *METRICS, "fit_s", "predict_s", "model"]


class ModelFileError(ValueError):
    """A ``--load`` file that is not a model saved by :func:`save_model`; the message names it."""


@dataclasses.dataclass(frozen=True)
class FolderSettings:
    """What to fit: the network asked for, its weights, levels, coreset, input size, seed."""

    backbone: str = "resnet18"  # asked for; with "imagenet" offline, Lite0 runs instead
    weights: str = "imagenet"  # "imagenet" or "random" (torch's generator seeded with ``seed``)
    layers: tuple[str, ...] | None = None  # None: the network's PatchCore levels
    coreset_ratio: float = 0.1
    image_size: int = 224
    seed: int = 0  # random init and coreset start
    num_neighbors: int = 9  # PatchCore Eq. 7's b
    batch_size: int = 16


@dataclasses.dataclass
class FittedModel:
    """A fitted :class:`PatchCore` and the record of what made it (saved with it by :func:`save_model`)."""

    patchcore: PatchCore
    backbone: str  # the network that ran
    weights: str  # what it holds: "imagenet" or "random"
    layers: list[str]
    image_size: int
    coreset_ratio: float
    seed: int
    trained_on: str
    n_train: int
    fit_s: float = 0.0
    source: str = ""  # the file it was loaded from, "" when fitted in this run


def input_sets(*, data_root=None, categories=None, good=None, test=None, masks=None,
               fit: bool = True) -> list[tuple[str, ImageSet | None, ImageSet | None]]:
    """``(name, train, test)`` per job: each category of an MVTec-layout ``data_root`` (``categories``
    None: all of them), or one ``"folder"`` job for plain ``good`` / ``test`` / ``masks`` folders.

    ``fit=False`` (a loaded model) reads no training images. Every folder is scanned here,
    before any work, so a missing or empty one is a DatasetError at once.
    """
    if data_root is None:
        train = folder_images(good, what="--good folder") if good is not None and fit else None
        return [("folder", train, folder_images(test, masks) if test is not None else None)]
    names = list(categories) if categories else mvtec_categories(data_root)
    return [(c, mvtec_images(data_root, c, "train") if fit else None, mvtec_images(data_root, c, "test"))
            for c in names]


def choose_network(settings: FolderSettings) -> tuple[str, str | None]:
    """(network, weights argument of :class:`PatchCore`) for ``settings``; prints the choice.

    ``weights="imagenet"``: the asked network where its ImageNet weights load, else Lite0, else
    random init (one printed line says which and why). Raises ValueError when ``layers`` are
    not levels of the network that will run (e.g. ResNet levels after the Lite0 fallback).
    """
    if settings.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {settings.backbone!r}; choose one of {BACKBONES}")
    if settings.weights not in ("imagenet", "random"):
        raise ValueError(f"weights must be 'imagenet' or 'random', got {settings.weights!r}")
    name, weights = settings.backbone, None
    if settings.weights == "imagenet":
        name, ok = choose_pretrained(settings.backbone, verbose=True)
        weights = "imagenet" if ok else None
    if settings.layers is not None:
        try:  # a random build is the cheap way to check levels against the network's own list
            build_feature_extractor(name, list(settings.layers), weights=None)
        except ValueError as err:
            fallback = f" (it runs instead of {settings.backbone}: no ImageNet weights here)" if (
                name != settings.backbone) else ""
            raise ValueError(f"--layers: {err}{fallback}") from None
    return name, weights


def fit_model(train: ImageSet, settings: FolderSettings, network: tuple[str, str | None] | None = None,
              device: str | None = None, progress: bool = True) -> FittedModel:
    """PatchCore fitted on the images of ``train`` (all taken as normal); ``network`` from :func:`choose_network`."""
    name, weights = network or choose_network(settings)
    torch.manual_seed(settings.seed)  # random-init backbones are drawn from torch's global generator
    model = PatchCore(name, layers=None if settings.layers is None else list(settings.layers),
                      coreset_ratio=settings.coreset_ratio, num_neighbors=settings.num_neighbors,
                      device=device, weights=weights, batch_size=settings.batch_size, seed=settings.seed,
                      progress=progress)
    t0 = time.perf_counter()
    model.fit(ImageList(train, settings.image_size))
    return FittedModel(model, name, model.extractor.weights_loaded, list(model.extractor.layers),
                       settings.image_size, settings.coreset_ratio, settings.seed, str(train.source),
                       len(train), fit_s=time.perf_counter() - t0)


def save_model(fitted: FittedModel, path) -> Path:
    """Write ``fitted`` to ``path`` (atomically) as plain tensors, dicts and strings; returns the path."""
    pc = fitted.patchcore
    state = {"format": MODEL_FORMAT, "version": MODEL_VERSION,
             "memory_bank": pc.memory_bank.detach().cpu().contiguous(),  # (M, D)
             "backbone": fitted.backbone, "weights": fitted.weights, "layers": list(fitted.layers),
             "image_size": int(fitted.image_size), "coreset_ratio": float(fitted.coreset_ratio),
             "num_neighbors": int(pc.num_neighbors), "batch_size": int(pc.batch_size), "seed": int(fitted.seed),
             "trained_on": fitted.trained_on, "n_train": int(fitted.n_train),
             "network_state": {k: v.detach().cpu() for k, v in pc.extractor.net.state_dict().items()}}
    with atomic_write(path, "wb") as fh:
        torch.save(state, fh)
    return Path(path)


def load_model(path, device: str | None = None, progress: bool = True) -> FittedModel:
    """The model :func:`save_model` wrote to ``path``, ready to score (no refitting).

    Raises ``FileNotFoundError`` (no such file), :class:`~cutswap_lib.weights.CheckpointError`
    (not a torch file) or :class:`ModelFileError` (a torch file, but not such a model); each
    message names the file.
    """
    obj = load_checkpoint(path)
    if obj.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path} is not a PatchCore model saved by `python -m cutswap_lib patchcore "
                             f"--save` (its top-level keys: {list(obj)[:6]})")
    if obj.get("version") != MODEL_VERSION:
        raise ModelFileError(f"{path} is a model of format version {obj.get('version')!r}; this library "
                             f"reads version {MODEL_VERSION}: fit it again with --save")
    kinds = {"memory_bank": torch.Tensor, "backbone": str, "weights": str, "layers": list, "image_size": int,
             "coreset_ratio": float, "num_neighbors": int, "batch_size": int, "seed": int, "trained_on": str,
             "n_train": int, "network_state": dict}
    wrong = [k for k, kind in kinds.items() if not isinstance(obj.get(k), kind)]
    if wrong or obj["backbone"] not in BACKBONES or obj["memory_bank"].ndim != 2:
        raise ModelFileError(f"{path} is a damaged model file: {wrong or ['backbone', 'memory_bank']} "
                             f"missing or of the wrong kind")
    try:
        extractor = build_feature_extractor(obj["backbone"], obj["layers"], weights=None)
        extractor.net.load_state_dict(obj["network_state"], strict=True)
    except (ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0]
        raise ModelFileError(f"{path}: its network weights do not fit {obj['backbone']} {obj['layers']} "
                             f"({first})") from None
    extractor.weights_loaded = obj["weights"]
    if obj["memory_bank"].shape[1] != sum(extractor.channels.values()):
        raise ModelFileError(f"{path}: its memory bank has {obj['memory_bank'].shape[1]} dims but "
                             f"{obj['backbone']} {obj['layers']} gives {sum(extractor.channels.values())}")
    model = PatchCore(extractor, coreset_ratio=obj["coreset_ratio"], num_neighbors=obj["num_neighbors"],
                      device=device, batch_size=obj["batch_size"], seed=obj["seed"], progress=progress)
    model.memory_bank = obj["memory_bank"].to(model.device).contiguous()  # (M, D)
    return FittedModel(model, obj["backbone"], obj["weights"], list(obj["layers"]), obj["image_size"],
                       obj["coreset_ratio"], obj["seed"], obj["trained_on"], obj["n_train"], source=str(path))


def score_images(fitted: FittedModel, test: ImageSet, progress: bool = True) -> dict:
    """Scores ``(N,)`` and maps ``(N, S, S)`` of every test image, with masks ``(N, S, S)`` and labels ``(N,)``.

    ``masks`` is None unless ``test.masked``, ``labels`` None unless ``test.labelled``.
    """
    pc, data = fitted.patchcore, ImageList(test, fitted.image_size)
    loader = torch.utils.data.DataLoader(data, batch_size=pc.batch_size, shuffle=False)
    scores, maps, masks = [], [], []
    inner, pc.progress = pc.progress, False  # one bar here instead of PatchCore's per call
    t0 = time.perf_counter()
    try:
        for images, mask, _, _ in tqdm(loader, desc="score", disable=not progress, leave=False):
            s, m = pc.predict(images)  # (B,), (B, S, S)
            scores.append(s)
            maps.append(m)
            masks.append(mask[:, 0])  # (B, S, S)
    finally:
        pc.progress = inner
    labels = torch.tensor([it.label for it in test.items]) if test.labelled else None
    return {"set": test, "scores": torch.cat(scores), "maps": torch.cat(maps),
            "masks": torch.cat(masks) if test.masked else None, "labels": labels,
            "paths": [str(it.image) for it in test.items], "predict_s": time.perf_counter() - t0}


def folder_metrics(preds: dict) -> tuple[dict[str, float], list[str]]:
    """The four metrics of :func:`cutswap_lib.metrics.evaluate` that this test set defines (others nan), and notes."""
    out, notes = dict.fromkeys(METRICS, math.nan), []
    labels, masks, scores, maps = preds["labels"], preds["masks"], preds["scores"], preds["maps"]
    if labels is None:
        notes.append("no labels (a plain --test folder): scores and maps only; give --masks for metrics")
        return out, notes
    both = 0 < int(labels.sum()) < len(labels)
    pixels = masks is not None and 0 < int(masks.sum()) < masks.numel()
    if both:
        out.update(metrics.evaluate(labels, scores, masks if pixels else None, maps if pixels else None))
    else:
        kind = "anomalous" if int(labels.sum()) else "normal"
        notes.append(f"every test image is {kind}: image AUROC needs normal and anomalous images")
        if pixels:
            out.update(pixel_auroc=metrics.pixel_auroc(masks, maps), pixel_ap=metrics.pixel_ap(masks, maps),
                       aupro=metrics.aupro(masks, maps))
    if masks is None:
        notes.append("no masks: image-level metrics only")
    elif not pixels:
        notes.append("the masks mark no pixel (or every pixel): pixel metrics need both kinds")
    return out, notes


def _overlay_names(items) -> list[str]:
    """``<type>/<stem>.png`` per item; a stem that repeats in one folder keeps its extension too."""
    keys = [(it.group, it.image.stem) for it in items]
    return [str(Path(it.group) / (f"{it.image.stem}{'_' + it.image.suffix[1:] if keys.count(k) > 1 else ''}.png"))
            for it, k in zip(items, keys)]


def write_outputs(preds: dict, out_dir, overlays: int | None = None, progress: bool = True) -> dict:
    """``scores.csv`` and overlay PNGs (the ``overlays`` highest-scoring images; None: all) in ``out_dir``.

    Returns ``{"scores": path, "maps": [paths]}``.
    """
    out_dir = Path(out_dir)
    test, scores, maps, masks = preds["set"], preds["scores"], preds["maps"], preds["masks"]
    rows = [{"path": p, "score": float(s)} for p, s in zip(preds["paths"], scores.tolist())]
    if preds["labels"] is not None:
        for row, label in zip(rows, preds["labels"].tolist()):
            row["label"] = label
    columns = ["path", "score"] + (["label"] if preds["labels"] is not None else [])
    written = {"scores": write_csv(rows, out_dir / "scores.csv", columns), "maps": []}
    order = scores.argsort(descending=True).tolist()[: len(scores) if overlays is None else overlays]
    names, data = _overlay_names(test.items), ImageList(test, maps.shape[-1])
    vmin, vmax = float(maps.min()), float(maps.max())  # one scale for the run (module docstring)
    for i in tqdm(order, desc="overlays", disable=not progress, leave=False):
        image = data[i][0]  # (3, S, S)
        label = "" if preds["labels"] is None else f", label {int(preds['labels'][i])}"
        fig = show_anomaly_overlay(image, maps[i], None if masks is None else masks[i],
                                   title=f"{Path(names[i]).with_suffix('')} score {float(scores[i]):.3f}{label}",
                                   vmin=vmin, vmax=vmax)
        written["maps"].append(save_figure(fig, out_dir / "maps" / names[i], dpi=80))
    return written


def run_patchcore_folder(name: str, test: ImageSet | None, out_dir, *, train: ImageSet | None = None,
                         settings: FolderSettings = FolderSettings(), fitted: FittedModel | None = None,
                         network: tuple[str, str | None] | None = None, save=None, overlays: int | None = None,
                         device: str | None = None, progress: bool = True) -> tuple[dict, dict | None]:
    """Fit on ``train`` (or use ``fitted``), optionally save, score ``test`` and write its outputs to ``out_dir``.

    Returns (row, predictions): the row names the network that ran and holds the metrics
    (nan where undefined); predictions as :func:`score_images` gives them, or None without ``test``.
    """
    if fitted is None:
        if train is None:
            raise ValueError("run_patchcore_folder needs train images or a fitted model")
        fitted = fit_model(train, settings, network, device, progress)
    if save is not None:
        print(f"  saved the model to {save_model(fitted, save)}")
    row = {"name": name, "backbone": fitted.backbone, "weights": fitted.weights, "layers": " ".join(fitted.layers),
           "image_size": fitted.image_size, "coreset": fitted.coreset_ratio, "seed": fitted.seed,
           "n_train": fitted.n_train, "n_test": 0 if test is None else len(test), **dict.fromkeys(METRICS, math.nan),
           "fit_s": fitted.fit_s, "predict_s": 0.0, "model": fitted.source}
    if test is None:
        return row, None
    preds = score_images(fitted, test, progress)
    values, notes = folder_metrics(preds)
    row.update(values, predict_s=preds["predict_s"])
    written = write_outputs(preds, out_dir, overlays, progress)
    write_csv([row], Path(out_dir) / "metrics.csv", ROW_COLUMNS)
    for note in notes:
        print(f"  {name}: {note}")
    print(f"  {name}: wrote {written['scores']}, {Path(out_dir) / 'metrics.csv'} and {len(written['maps'])} "
          f"overlay(s) under {Path(out_dir) / 'maps'}", flush=True)
    return row, preds
