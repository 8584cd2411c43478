"""3-way self-supervised fine-tuning of the encoder (CutSwap Sec. III-B).

The encoder (ResNet18 in the paper; any :data:`~cutswap_lib.backbones.BACKBONES` here,
EfficientNet-Lite0 when ResNet18's ImageNet weights cannot be had) is cut after its
deepest level, globally average-pooled to d = 512 (ResNet18's layer4 has 512 channels; that this
is the 512 of the paper's "(30, 5, 4, 512)" is the course's reading), and topped with an MLP head and a linear 3-way classifier:
normal / CutSwap / CutSwap-scar (or the CutPaste classes with ``mode="cutpaste"``).

Choices the paper leaves open (it fixes SGD, initial lr 0.03 and 256 epochs), taken
from CutPaste (Li et al., CVPR 2021), whose 3-way task CutSwap builds on:

* SGD with momentum 0.9 and weight decay 3e-5, cosine decay of the lr to 0 over all
  steps (CutPaste's schedule); the lr is a pure function of the step, so a resumed run
  follows the same curve;
* head 512 -> 512 -> 128 with BatchNorm and ReLU (CutPaste's projection head, shortened;
  the paper gives no size), then a linear classifier to 3 logits;
* a batch holds ``batch_size`` normal images; each brings one triplet (positive,
  CutSwap, CutSwap-scar) per saliency level (``levels="all"``: the paper's five pairs per
  image) built on the device by :func:`~cutswap_lib.cutswap.selfsup.make_batch`.

Randomness: the head is initialised from ``seed``; epoch ``e`` shuffles and draws its
negatives from a generator seeded by ``(seed, e)``, so training is deterministic on the
CPU and a run resumed from a checkpoint ends with the same weights as an uninterrupted
one (tested). Mixed precision is used on CUDA: bfloat16 autocast where the GPU supports
it, float16 with gradient scaling otherwise (e.g. Colab's T4).
Taught in ``notebooks/03_backbone_training.ipynb``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..backbones import FeatureExtractor, build_feature_extractor, default_layers
from .selfsup import PAPER_LEVELS, ThreeWaySpec, make_batch
from ..files import FolderLock, atomic_write
from ..weights import CheckpointError, load_checkpoint, load_state_into


class ThreeWayNet(nn.Module):
    """Encoder + pooled feature + MLP head + 3-way classifier: ``(B, 3, H, W)`` -> logits ``(B, 3)``."""

    def __init__(self, backbone: str = "resnet18", weights: str | None = "imagenet",
                 hidden: int = 512, projection: int = 128, num_classes: int = 3):
        super().__init__()
        deepest = default_layers(backbone, "saliency")[-1]
        self.encoder = build_feature_extractor(backbone, layers=[deepest], weights=weights)
        channels = self.encoder.channels[deepest]  # d: 512 for ResNet18's layer4
        self.head = nn.Sequential(
            nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, projection), nn.BatchNorm1d(projection), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(projection, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] -> pooled encoder feature ``(B, d)``."""
        (fmap,) = self.encoder(images).values()  # (B, d, h, w)
        return fmap.mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.embed(images)))  # (B, num_classes)


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (saved in every checkpoint)."""

    backbone: str = "resnet18"
    weights: str | None = "imagenet"
    mode: str = "cutswap"  # or "cutpaste": the baseline, same loop
    epochs: int = 256  # the paper's
    batch_size: int = 32  # normal images per step (x 3 x levels samples)
    lr: float = 0.03  # the paper's initial learning rate
    momentum: float = 0.9
    weight_decay: float = 3e-5
    patch_size: int = 30  # the paper's 30 px patches (scale it with the image size)
    scar_width: tuple[int, int] = (2, 16)  # CutPaste's scar sizes, px
    scar_length: tuple[int, int] = (10, 25)
    k: int = 4
    cluster: str = "max"
    method: str = "kmeans"
    layers: list[int] | None = None  # saliency levels used (None: all)
    levels: str = "all"  # "all": a triplet per image and level (paper); "one": one random level per image and step
    triplets: int = PAPER_LEVELS  # triplets per image and step without maps (CutPaste) under levels="all":
    #                              set it to CutSwap's number of levels, so both train on the same budget
    overlap: str = "resample"  # anchors that stay in the salient cluster ("push": the older placement)
    refresh_bn: bool = True  # after training, BatchNorm statistics recomputed on the normal images (see below)
    freeze_stem: bool = False  # keep the stem (first convolution + its BatchNorm) as it starts: see stem_parameters
    seed: int = 0
    checkpoint_every: int = 1  # epochs; 0 disables checkpoints


def stem_parameters(net: nn.Module) -> list[nn.Parameter]:
    """The stem's parameters: the network's first convolution and the BatchNorm right after it (if any).

    ResNet's ``conv1`` + ``bn1``, Lite0's stem convolution + BatchNorm, VGG16's first
    convolution. Why freeze it (``TrainConfig.freeze_stem``, a course choice the paper does not
    discuss): from random init, a convolution followed by BatchNorm learns at an effective rate
    of lr / |w|^2 (BatchNorm makes the loss blind to the filter's scale), and ResNet18's stem
    starts with the smallest filters of the network (|w| = 2.4 over 64 filters against 11-32
    for every later convolution). Measured on elpv_cracks (seed 0, the ``--cpu`` sizes): 20
    epochs moved ``conv1`` by 3.1 times its own norm (every later convolution by 0.05-0.28), and
    the patch features PatchCore reads fell from an effective rank of 16.7 / 19.6 (layer2 /
    layer3) to 3.1 / 2.9. Detection fine-tuning freezes the stem for its own reasons
    (Detectron's ``FREEZE_AT``); here it keeps the random stem's variety.
    """
    modules = list(net.modules())
    for i, m in enumerate(modules):
        if isinstance(m, nn.Conv2d):
            stem = [m]
            after = modules[i + 1] if i + 1 < len(modules) else None
            if isinstance(after, nn.modules.batchnorm._BatchNorm):
                stem.append(after)
            return [p for module in stem for p in module.parameters()]
    raise ValueError(f"{type(net).__name__} has no convolution: no stem to freeze")


def lr_at(step: int, total_steps: int, base_lr: float) -> float:
    """Cosine decay from ``base_lr`` at step 0 to 0 at ``total_steps``."""
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def _epoch_generator(seed: int, epoch: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 100_003 + epoch)


def _checkpoint_path(folder: Path, epoch: int) -> Path:
    return folder / f"epoch_{epoch:04d}.pt"


def _checkpoints(folder: Path) -> list[Path]:
    """The ``epoch_NNNN.pt`` files in ``folder``, oldest first."""
    return sorted(Path(folder).glob("epoch_*.pt"))


def _check_keep_last(keep_last: int | None) -> None:
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be at least 1 (the checkpoint to resume from), got {keep_last}")


def latest_checkpoint(folder: Path | None) -> Path | None:
    """The checkpoint of the last finished epoch in ``folder`` (None if there is none)."""
    if folder is None or not Path(folder).is_dir():
        return None
    found = _checkpoints(folder)
    return found[-1] if found else None


def newest_readable_checkpoint(folder: Path | None, map_location="cpu") -> tuple[Path, dict] | None:
    """(path, state) of the newest checkpoint in ``folder`` that reads, or None.

    A truncated or corrupt newer file (an interrupted copy, a full disk) is skipped with a
    warning naming it, so a run resumes from the previous checkpoint it kept.
    """
    if folder is None or not Path(folder).is_dir():
        return None
    for path in reversed(_checkpoints(folder)):
        try:
            return path, load_checkpoint(path, map_location=map_location)
        except CheckpointError as err:
            warnings.warn(f"{err}; trying the previous checkpoint", stacklevel=2)
    return None


def train_three_way(images: torch.Tensor, maps: torch.Tensor | None, config: TrainConfig, *,
                    checkpoint_dir: Path | None = None, resume: bool = True, device=None,
                    progress: bool = True, keep_last: int | None = 2,
                    fingerprint: str | None = None,
                    min_checkpoint_seconds: float = 0.0) -> tuple[ThreeWayNet, list[dict]]:
    """Fine-tune on the 3-way task; returns the model and one history row per epoch.

    ``images``: normal training images ``(N, 3, H, W)`` in [0, 1]; ``maps``: their saliency
    maps ``(N, L, H, W)`` (None for ``mode="cutpaste"``). With ``checkpoint_dir``, a
    checkpoint is written every ``config.checkpoint_every`` epochs and, with ``resume``,
    training continues after the newest readable one found there (a truncated newer file is
    skipped with a warning). Only the ``keep_last`` newest checkpoints stay on disk (None
    keeps all; a ResNet18 checkpoint is about 90 MB, so 256 epochs would otherwise fill a
    Colab disk). While it trains, the folder is locked (:class:`cutswap_lib.files.FolderLock`):
    a second run on the same folder is refused instead of sharing its files. ``fingerprint``
    (of the images and maps the caller trains on) is stored in every checkpoint; resuming a
    folder whose checkpoint holds another fingerprint is refused (it was made from other data).
    ``min_checkpoint_seconds``: skip an epoch's checkpoint when the previous one was written
    less than this long ago (the last epoch, or the refreshed statistics after it, always
    write). A checkpoint is exact at any epoch, so this changes what a cut-off run loses, never
    the result; on a CPU, where an epoch of the toy data takes a second and a ResNet18
    checkpoint a fifth of one, it keeps the writing from costing a tenth of the run.
    """
    _check_keep_last(keep_last)  # before the first epoch, not after it
    if min_checkpoint_seconds < 0:
        raise ValueError(f"min_checkpoint_seconds must be 0 or more, got {min_checkpoint_seconds}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(config.seed)
    model = ThreeWayNet(config.backbone, config.weights).to(device)
    frozen = {id(p) for p in stem_parameters(model.encoder.net)} if config.freeze_stem else set()
    optimizer = torch.optim.SGD([p for p in model.parameters() if id(p) not in frozen], lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    spec = ThreeWaySpec(mode=config.mode, patch_size=config.patch_size, k=config.k,
                        cluster=config.cluster, method=config.method, overlap=config.overlap,
                        scar={"width": tuple(config.scar_width), "length": tuple(config.scar_length)})
    steps_per_epoch = math.ceil(len(images) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    history: list[dict] = []
    start_epoch = 0
    lock = FolderLock(checkpoint_dir, purpose=f"3-way training ({config.mode})") if checkpoint_dir else None
    with lock or contextlib.nullcontext():  # one run per checkpoint folder: no pruning under a reader
        found = newest_readable_checkpoint(checkpoint_dir, map_location=device) if resume else None
        if found is not None:
            last, state = found
            if state["config"] != dataclasses.asdict(config):
                raise ValueError(f"checkpoint {last} was written by another configuration: "
                                 f"{state['config']} vs {dataclasses.asdict(config)}")
            if fingerprint is not None and state.get("fingerprint") != fingerprint:
                raise ValueError(f"checkpoint {last} was made from other data (fingerprint "
                                 f"{state.get('fingerprint')} vs {fingerprint}): refusing to resume it; "
                                 f"train into a new folder or delete {checkpoint_dir}")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            history, start_epoch = list(state["history"]), int(state["epoch"]) + 1
        refreshed = found is not None and bool(found[1].get("bn_refreshed")) and start_epoch >= config.epochs
        amp = device.type == "cuda"
        # bfloat16 where the GPU has it (A100, H100, L4); float16 with loss scaling otherwise (T4)
        amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
        bar = tqdm(range(start_epoch, config.epochs), desc=f"train {config.mode}", disable=not progress,
                   initial=start_epoch, total=config.epochs)
        last_written = time.monotonic()
        for epoch in bar:
            model.train()
            gen = _epoch_generator(config.seed, epoch, device)
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(
                config.seed * 100_003 + epoch))
            t0, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
            for step, batch_idx in enumerate(order.split(config.batch_size)):
                global_step = epoch * steps_per_epoch + step
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(global_step, total_steps, config.lr)
                x = images[batch_idx].to(device)
                m = maps[batch_idx].to(device) if maps is not None else None
                with torch.no_grad():
                    inputs, labels = make_batch(x, m, gen, spec, layers=config.layers, levels=config.levels,
                                                 triplets=config.triplets)  # same samples per image for every mode
                with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp):
                    logits = model(inputs)  # (3M, 3)
                    loss = F.cross_entropy(logits.float(), labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_sum += float(loss.detach()) * len(labels)
                correct += int((logits.argmax(1) == labels).sum())
                seen += len(labels)
            row = {"epoch": epoch, "loss": loss_sum / seen, "accuracy": correct / seen,
                   "lr": lr_at((epoch + 1) * steps_per_epoch, total_steps, config.lr),
                   "seconds": time.perf_counter() - t0}
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.2f}")
            every = config.checkpoint_every
            last = epoch + 1 == config.epochs and not config.refresh_bn  # else the refreshed state is written next
            soon = time.monotonic() - last_written < min_checkpoint_seconds
            if checkpoint_dir is not None and every and (last or ((epoch + 1) % every == 0 and not soon)):
                save_checkpoint(model, optimizer, config, epoch, history, checkpoint_dir, fingerprint)
                prune_checkpoints(checkpoint_dir, keep_last)
                last_written = time.monotonic()
        if config.refresh_bn and not refreshed:  # the training distribution once more (epoch index config.epochs)
            gen = _epoch_generator(config.seed, config.epochs, device)
            batches = (make_batch(images[i].to(device), maps[i].to(device) if maps is not None else None, gen, spec,
                                  layers=config.layers, levels=config.levels, triplets=config.triplets)[0]
                       for i in torch.arange(len(images)).split(config.batch_size))
            refresh_batchnorm(model, batches)
            if checkpoint_dir is not None:  # the last checkpoint holds the refreshed statistics: a rerun needs no maps
                save_checkpoint(model, optimizer, config, config.epochs - 1, history, checkpoint_dir, fingerprint,
                                bn_refreshed=True)
        return model.eval(), history


@torch.no_grad()
def refresh_batchnorm(model: nn.Module, batches) -> None:
    """Recompute every BatchNorm's running statistics as the exact average over ``batches`` of ``(B, 3, H, W)``.

    During training the running statistics follow the batches with momentum 0.1, so after a
    short run they still hold much of their starting values (0.9^20 = 12 % after 20 steps),
    and the eval-mode encoder PatchCore uses sees other statistics than its training did.
    Measured on 20 toy board images at 64 px (ResNet18 from random init, 8 epochs, CutPaste
    mode), held-out 3-way accuracy in eval mode was 0.42 without this refresh (0.68 with
    batch statistics) and 0.63 with it. One pass over 3-way batches
    of the training images (the distribution the weights were trained under) with a
    cumulative average (``momentum=None``) fixes the statistics; the weights are untouched.
    A course choice (the paper does not discuss it): ``TrainConfig.refresh_bn``.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the exact mean over the batches seen
    model.train()
    for batch in batches:
        if len(batch) > 1:  # BatchNorm1d of the head needs two samples
            model(batch)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


def save_checkpoint(model, optimizer, config: TrainConfig, epoch: int, history: list[dict],
                    folder: Path, fingerprint: str | None = None, bn_refreshed: bool = False) -> Path:
    """Write ``epoch_NNNN.pt`` (model, optimizer, config, history) atomically; returns its path.

    ``bn_refreshed``: the model's BatchNorm statistics were recomputed after the last epoch
    (:func:`refresh_batchnorm`), so resuming the finished run loads them as they are.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = _checkpoint_path(folder, epoch)
    with atomic_write(path, "wb") as fh:  # unique temporary name in the same folder, then os.replace
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "config": dataclasses.asdict(config), "epoch": epoch, "history": history,
                    "fingerprint": fingerprint, "bn_refreshed": bn_refreshed}, fh)
    return path


def prune_checkpoints(folder: Path, keep_last: int | None) -> list[Path]:
    """Delete all but the ``keep_last`` newest ``epoch_NNNN.pt`` in ``folder``; returns the deleted paths."""
    _check_keep_last(keep_last)
    if keep_last is None:
        return []
    stale = _checkpoints(folder)[:-keep_last]
    for path in stale:
        path.unlink()
    return stale


def encoder_for_patchcore(model: ThreeWayNet, layers: list[str] | None = None) -> FeatureExtractor:
    """The fine-tuned encoder as a PatchCore extractor over ``layers`` (None: layer2+layer3 or the backbone's defaults)."""
    name = model.encoder.name
    extractor = build_feature_extractor(name, layers=layers, weights=None)
    load_state_into(extractor.net, model.encoder.net.state_dict(), source="the fine-tuned encoder")
    extractor.weights_loaded = f"{model.encoder.weights_loaded}+selfsup"
    return extractor.to(next(model.parameters()).device).eval()
