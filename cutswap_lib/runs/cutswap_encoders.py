"""The encoders a CutSwap table compares, and the identity of each: what it was trained on, where it is kept.

A table compares PatchCore on three encoders (CutSwap Tables I-IV): the encoder before
fine-tuning ("resnet18" in the paper's columns: ImageNet ResNet18, or with ``init="random"``
the same network untrained), and the encoder fine-tuned on the 3-way task with CutPaste or
CutSwap negatives. Each fine-tuning is one :class:`Job`:

* its **training set** is the normal training images of one *group*: all categories of the
  dataset (``train_per="dataset"``, the paper's wording: fine-tuning "performed on each
  dataset") or one category (``train_per="category"``);
* its **fingerprint** hashes everything that changes the model: the training images'
  pixels at the training size, the saliency network and its weights (which fix the maps),
  and every field of the :class:`~cutswap_lib.cutswap.train.TrainConfig`. The checkpoint
  folder is named by it, so changed data or settings train anew in their own folder, and
  :func:`~cutswap_lib.cutswap.train.train_three_way` refuses to resume a folder whose
  checkpoints hold another fingerprint;
* :meth:`Job.plan` is its line of the ``--dry-run`` plan.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..backbones import build_classifier, saliency_target_layers
from ..cutswap.saliency import SaliencyCache
from ..cutswap.train import ThreeWayNet, TrainConfig, encoder_for_patchcore, refresh_batchnorm, train_three_way
from ..data import load_split
from ..weights import choose_pretrained
from .results import fingerprint

# A table run writes an encoder's checkpoint at most this often (and after its last epoch): a cut-off run
# loses at most about a minute of training, and a CPU run does not spend a tenth of its time writing.
MIN_CHECKPOINT_SECONDS = 60.0

__all__ = ["Job", "NetworkChoice", "choose_network", "finetune_set", "layercam_maps", "training_groups"]


@dataclasses.dataclass(frozen=True)
class NetworkChoice:
    """A network as a result row names it: ``resnet18 / imagenet``, ``... (fallback for resnet18)``."""

    name: str
    weights: str | None  # "imagenet" or None (random init)
    preferred: str

    @property
    def label(self) -> str:
        text = f"{self.name} / {self.weights or 'random init'}"
        return text + (f" (fallback for {self.preferred})" if self.name != self.preferred else "")


def choose_network(preferred: str, init: str = "imagenet", verbose: bool = False) -> NetworkChoice:
    """The paper's network where its ImageNet weights load, else Lite0; ``init="random"``: the paper's network untrained."""
    if init == "random":
        return NetworkChoice(preferred, None, preferred)
    name, pretrained = choose_pretrained(preferred, verbose=verbose)
    return NetworkChoice(name, "imagenet" if pretrained else None, preferred)


def training_groups(dataset: str, categories, train_per: str) -> list[tuple[str, list[str]]]:
    """``[(group name, its categories)]``: one group of all categories, or one per category."""
    if train_per == "dataset":
        return [(f"{dataset}-all", list(categories))]
    if train_per == "category":
        return [(c, [c]) for c in categories]
    raise ValueError(f"train_per must be 'dataset' or 'category', got {train_per!r}")


def finetune_set(root: Path, categories, settings) -> torch.Tensor:
    """The 3-way training images of a group ``(N, 3, t, t)``: the first ``finetune_images`` of each category."""
    size, train_size = settings.image_size, settings.train_size or settings.image_size
    parts = []
    for category in categories:
        train = load_split(root, category, "train", size)[0]
        parts.append(train[: settings.finetune_images or len(train)])
    images = torch.cat(parts)  # (N, 3, S, S)
    if train_size != size:
        images = F.interpolate(images, size=(train_size, train_size), mode="bilinear", align_corners=False,
                               antialias=True).clamp(0, 1)
    return images


def layercam_maps(images: torch.Tensor, cache_dir: Path, network: NetworkChoice, batch_size: int = 16,
                  device=None) -> torch.Tensor:
    """Multilevel LayerCAM maps ``(N, L, H, W)`` of ``images`` ``(N, 3, H, W)`` on ``device``, cached on disk."""
    model = build_classifier(network.name, weights=network.weights, device=device)
    layers = saliency_target_layers(network.name, model)
    cache = SaliencyCache(cache_dir)
    maps = [cache(model, x.to(model_device(model)), layers).cpu() for x in images.split(batch_size)]
    return torch.cat(maps)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@dataclasses.dataclass
class Job:
    """One encoder of the table: ``method`` x ``variant`` x ``seed``, trained on ``group`` (or not trained)."""

    group: str
    categories: list[str]
    method: str  # "resnet18" (not fine-tuned), "cutpaste" or "cutswap"
    variant: str
    seed: int
    encoder: NetworkChoice
    saliency: NetworkChoice | None  # the network of the anchors' maps (CutSwap only)
    config: TrainConfig | None  # None: the encoder as it starts (pretrained or random init)
    fingerprint: str | None = None  # of the training images, saliency network and config
    folder: Path | None = None  # the checkpoint folder, named by the fingerprint
    bn_batch: int | None = None  # untrained only: BatchNorm statistics from the fine-tuning images in batches of this
    #                              many (RunSettings.untrained_bn "normal"); None: as initialised

    @property
    def label(self) -> str:
        """The encoder as the rows name it, e.g. ``resnet18 / random init + cutswap fine-tuning``."""
        if self.config is not None:
            return f"{self.encoder.label} + {self.method} fine-tuning" + (", stem frozen" if self.config.freeze_stem else "")
        return self.encoder.label + (", BatchNorm statistics of the normal images" if self.bn_batch else "")

    @property
    def finished(self) -> bool:
        """True when the checkpoint of the last epoch of exactly this run exists."""
        return bool(self.folder and self.config and
                    (self.folder / f"epoch_{self.config.epochs - 1:04d}.pt").is_file())

    def plan(self, epoch_seconds: float | None = None) -> dict:
        """This job's line of the ``--dry-run`` plan."""
        line = {"group": self.group, "categories": self.categories, "method": self.method,
                "variant": self.variant, "seed": self.seed, "encoder": self.label,
                "saliency": self.saliency.label if self.saliency else None,
                "checkpoint": str(self.folder) if self.folder else None,
                "reuse": self.finished if self.config else None,
                "config": dataclasses.asdict(self.config) if self.config else None}
        if self.config and epoch_seconds is not None:
            line["estimated_epoch_s"] = round(epoch_seconds, 2)
            line["estimated_train_s"] = 0.0 if self.finished else round(epoch_seconds * self.config.epochs, 1)
        return line

    def identify(self, images: torch.Tensor, workdir: Path) -> None:
        """Set :attr:`fingerprint` and :attr:`folder` from the training images ``(N, 3, t, t)``."""
        if self.config is None:
            return
        saliency = self.saliency.label if self.saliency else None
        self.fingerprint = fingerprint(images, saliency, dataclasses.asdict(self.config))
        self.folder = (workdir / "checkpoints" / self.group /
                       f"{self.method}_{self.variant}_seed{self.seed}_{self.fingerprint}")

    def build(self, images: torch.Tensor | None, maps: torch.Tensor | None, *, device=None,
              progress: bool = True):
        """The encoder as a PatchCore extractor (CPU) and the seconds spent training (0 when reused)."""
        t0 = time.perf_counter()
        if self.config is None:  # the starting point of fine-tuning, seeded as train_three_way seeds it
            torch.manual_seed(self.seed)
            model = ThreeWayNet(self.encoder.name, self.encoder.weights)
            if self.bn_batch:  # the statistics every fine-tuned encoder also gets recomputed (weights untouched)
                refresh_batchnorm(model, images.split(self.bn_batch))
        else:
            model, _ = train_three_way(images, maps if self.method == "cutswap" else None, self.config,
                                       checkpoint_dir=self.folder, device=device, progress=progress,
                                       fingerprint=self.fingerprint, min_checkpoint_seconds=MIN_CHECKPOINT_SECONDS)
        extractor = encoder_for_patchcore(model.cpu())
        if self.config is None:
            extractor.weights_loaded = model.encoder.weights_loaded
        return extractor, time.perf_counter() - t0


def estimate_epoch_seconds(config: TrainConfig, n_images: int, train_size: int, per_image: int,
                           device=None, timed: bool | None = None) -> float:
    """Seconds per epoch: from one timed training step on random inputs (nothing is saved), or
    from the step's FLOPs (:func:`.planner.backbone_trace`) over this CPU's measured convolution
    rate (:func:`.planner.cpu_rates`). ``timed`` None: timed on a GPU, where a step takes a
    fraction of a second; counted on a CPU, where a paper-size step (3 x 32 x 5 images) takes
    minutes through ResNet18 and over ten through WideResNet50, twice with the warm-up."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    steps = -(-n_images // config.batch_size)
    b = min(config.batch_size, n_images)
    if not (timed if timed is not None else device.type == "cuda"):
        from .planner import backbone_trace, cpu_rates

        flops = backbone_trace(config.backbone, train_size, 3 * b * per_image, None, None, True)["flops"]
        return flops / cpu_rates()["conv"] * steps
    torch.manual_seed(0)
    model = ThreeWayNet(config.backbone, None).to(device)
    x = torch.rand(3 * b * per_image, 3, train_size, train_size, device=device)
    y = torch.randint(0, 3, (len(x),), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for step in range(2):  # the first step warms up (allocations, cuDNN choices)
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - t0) * steps
