"""The 3-way self-supervised training set: normal / CutSwap / CutSwap-scar (CutSwap Sec. III-A, III-B).

For every normal training image and every selected saliency level (the paper's n = 5
maps of "(30, 5, 4, 512)"), one **triplet** is made:

* label 0, *normal*: the image after :func:`~cutswap_lib.cutswap.augment.weak_augment` (the positive);
* label 1, *CutSwap*: that positive with two 30 px patches swapped, anchors drawn from
  the level's saliency map (k-means, K = 4, most salient cluster);
* label 2, *CutSwap-scar*: that positive with two thin scars swapped and rotated, anchors
  drawn (afresh) from the same map.

So an image with ``n`` levels gives ``3 n`` items (15 for the paper's five levels): n
positives, n CutSwap and n CutSwap-scar negatives, classes balanced exactly 1/3 each, and
every negative differs from its own positive only inside its patches. This is the
paper's "n sample pairs per image", with CutPaste's 3-way task (Li et al., CVPR 2021
Sec. 3) on top. ``mode="cutpaste"`` makes the CutPaste 3-way baseline with the same
interface and the same number of items (normal / CutPaste / CutPaste-scar; no maps needed).

Two ways to use it (the training loop picks one):

* :class:`ThreeWayDataset` – a map-style dataset of single items, deterministic given
  ``(seed, epoch, index)``: each item builds its own ``torch.Generator`` from those
  (the three items of a triplet share the positive's draw), so items can be read in any
  order, by any DataLoader worker; :meth:`ThreeWayDataset.set_epoch` draws fresh
  negatives for a new epoch (call it before each epoch, as with ``DistributedSampler``;
  persistent workers keep the epoch they started with).
* :func:`make_batch` – a whole batch at once on the images' device, vectorised (one
  k-means call for all maps, one CutSwap call for all images): for GPU training.

Taught in ``notebooks/02_cutswap_generation.ipynb``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..jitter import uniform
from .augment import (SCAR_ANGLE, SCAR_LENGTH, SCAR_WIDTH, cutpaste, cutpaste_scar, cutswap, cutswap_scar,
                      scar_bound, weak_augment)
from .clustering import CLUSTER_CHOICES, METHODS, sample_anchor_pairs, sample_placeable_pairs
from .saliency import multilevel_layercam

MODES = ("cutswap", "cutpaste")
# How anchors meet the image border and each other. "push": draw one pair, let place_patches move
# patches inwards and apart (corners may leave the salient cluster). "resample": draw pairs until
# both patches fit unmoved (sample_placeable_pairs), pushing only when no draw fits.
OVERLAP = ("resample", "push")
LABELS = {"cutswap": ("normal", "cutswap", "cutswap-scar"),
          "cutpaste": ("normal", "cutpaste", "cutpaste-scar")}
PAPER_LEVELS = 5  # n in the paper's "(30, 5, 4, 512)": triplets per image without maps


@dataclass(frozen=True)
class ThreeWaySpec:
    """How the three classes are made (CutSwap Sec. III-A; defaults are the paper's).

    ``mode``: "cutswap" or "cutpaste"; ``patch_size``: CutSwap's square patch (int or
    ``(h, w)``); ``k``, ``cluster``, ``method``, ``top_n``: anchor sampling, as
    :func:`~cutswap_lib.cutswap.clustering.sample_anchor_pairs` (the paper's ablations);
    ``weak``, ``scar``, ``paste``: keyword arguments of
    :func:`~cutswap_lib.cutswap.augment.weak_augment`, of the scar function of the mode
    (``cutswap_scar`` / ``cutpaste_scar``) and of :func:`~cutswap_lib.cutswap.augment.cutpaste`.
    """

    mode: str = "cutswap"
    patch_size: int | tuple[int, int] = 30
    k: int = 4
    cluster: str = "max"
    method: str = "kmeans"
    top_n: int = 300
    weak: dict = field(default_factory=dict)
    scar: dict = field(default_factory=dict)
    paste: dict = field(default_factory=dict)
    overlap: str = "resample"  # or "push" (see OVERLAP); the course's choice, the paper is silent
    tries: int = 16  # anchor pairs drawn per map with overlap="resample"

    def __post_init__(self):
        for name, value, allowed in (("mode", self.mode, MODES), ("cluster", self.cluster, CLUSTER_CHOICES),
                                     ("method", self.method, METHODS), ("overlap", self.overlap, OVERLAP)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")

    def positive(self, images, generator):
        """Label 0: ``(B, 3, H, W)`` -> weak-augmented ``(B, 3, H, W)``."""
        return weak_augment(images, generator, **self.weak)

    def anchors(self, label: int, maps, generator):
        """Anchor pairs ``(B, 2, 2)`` of CutSwap (label 1) or CutSwap-scar (label 2) from maps ``(B, H, W)``.

        ``overlap="resample"``: pairs whose patches (the scar's largest box for label 2) fit
        unmoved (:func:`~cutswap_lib.cutswap.clustering.sample_placeable_pairs`); ``"push"``:
        one pair, moved later by :func:`~cutswap_lib.cutswap.augment.place_patches`.
        """
        if self.overlap == "push":
            return sample_anchor_pairs(maps, self.k, generator, cluster=self.cluster,
                                       method=self.method, top_n=self.top_n)
        size = self.patch_size if label == 1 else scar_bound(
            self.scar.get("width", SCAR_WIDTH), self.scar.get("length", SCAR_LENGTH),
            self.scar.get("angle", SCAR_ANGLE))
        return sample_placeable_pairs(maps, size, self.k, generator, tries=self.tries, cluster=self.cluster,
                                      method=self.method, top_n=self.top_n)[0]

    def negative(self, label: int, positives, maps, generator):
        """Label 1 or 2 from positives ``(B, 3, H, W)`` and maps ``(B, H, W)`` -> images, masks."""
        if self.mode == "cutpaste":
            if label == 1:
                return cutpaste(positives, generator, **self.paste)
            return cutpaste_scar(positives, generator, **self.scar)
        anchors = self.anchors(label, maps, generator)  # (B, 2, 2), the generator's first draw
        if label == 1:
            return cutswap(positives, anchors, self.patch_size)
        return cutswap_scar(positives, anchors, generator, **self.scar)


def _levels(maps, layers) -> list[int]:
    """The selected level indices of ``(N, L, H, W)`` maps (all if ``layers`` is None)."""
    count = maps.shape[1]
    levels = list(range(count)) if layers is None else [int(i) for i in layers]
    if not levels or any(not -count <= i < count for i in levels):
        raise ValueError(f"layers {layers} are not indices of the {count} saliency levels")
    return [i % count for i in levels]


def _check_maps(maps, n: int | None, size) -> None:
    if not isinstance(maps, torch.Tensor) or maps.ndim != 4 or not maps.is_floating_point():
        got = f"{maps.dtype} {tuple(maps.shape)}" if isinstance(maps, torch.Tensor) else type(maps)
        raise ValueError(f"maps must be a float tensor (N, L, H, W), got {got}")
    if n is not None and maps.shape[0] != n:
        raise ValueError(f"maps hold {maps.shape[0]} images' levels, but there are {n} images")
    if tuple(maps.shape[-2:]) != tuple(size):
        raise ValueError(f"maps are {tuple(maps.shape[-2:])} px but images are {tuple(size)} px: "
                         f"compute the maps at the training image size")


def _as_image(item):
    """A dataset item (a tensor, or a tuple / list whose first entry is one) -> ``(3, H, W)``."""
    image = item[0] if isinstance(item, (tuple, list)) else item
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or not image.is_floating_point():
        raise ValueError(f"images must be float (3, H, W) tensors in [0, 1], got "
                         f"{getattr(image, 'dtype', type(image))} {tuple(getattr(image, 'shape', ()))}")
    return image


class ThreeWayDataset(torch.utils.data.Dataset):
    """3-way items (CutSwap Sec. III-A): ``dataset[i]`` -> ``(image (3, H, W), label)``.

    ``images``: ``(N, 3, H, W)`` float in [0, 1], or a dataset whose items are such an image
    or start with one (e.g. ``AnomalyDataset(..., "train")``). ``maps``: their saliency maps
    ``(N, L, H, W)`` at the same size (:func:`~cutswap_lib.cutswap.saliency.multilevel_layercam`
    or a :class:`~cutswap_lib.cutswap.saliency.SaliencyCache`; see :meth:`from_saliency`); not needed
    with ``mode="cutpaste"``. ``layers``: the levels used (paper's layer ablation; all by
    default); one triplet per image and level, items ordered (image, level, label), so item
    ``i`` has label ``i % 3``. ``repeats``: triplets per image in cutpaste mode (default: as
    many as the cutswap mode would give; 5 without maps). The other keywords are those of
    :class:`ThreeWaySpec`. ``return_masks=True`` adds the changed-pixel mask ``(1, H, W)``.
    Taught in ``notebooks/02_cutswap_generation.ipynb``.
    """

    def __init__(self, images, maps=None, *, mode: str = "cutswap", patch_size=30, k: int = 4,
                 cluster: str = "max", method: str = "kmeans", top_n: int = 300,
                 layers: Sequence[int] | None = None, seed: int = 0, repeats: int | None = None,
                 weak: dict | None = None, scar: dict | None = None, paste: dict | None = None,
                 return_masks: bool = False):
        self.spec = ThreeWaySpec(mode, patch_size, k, cluster, method, top_n, dict(weak or {}),
                                 dict(scar or {}), dict(paste or {}))
        self.images, self.maps, self.seed, self.epoch = images, maps, int(seed), 0
        self.return_masks = return_masks
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
                raise ValueError(f"images must be float (N, 3, H, W) in [0, 1], got "
                                 f"{images.dtype} {tuple(images.shape)}")
        if len(images) == 0:
            raise ValueError("images is empty: the 3-way task needs normal training images")
        size = tuple(self._image(0).shape[-2:])
        if maps is None:
            if mode == "cutswap":
                raise ValueError("mode='cutswap' needs saliency maps (N, L, H, W): pass maps= or "
                                 "use ThreeWayDataset.from_saliency(images, model, layers)")
            self.levels = []
        else:
            _check_maps(maps, len(images), size)
            self.levels = _levels(maps, layers)
        if mode == "cutswap" and repeats is not None and repeats != len(self.levels):
            raise ValueError(f"repeats={repeats}: in cutswap mode it is the number of levels "
                             f"({len(self.levels)}); choose the levels with layers=")
        self.triplets = int(repeats or len(self.levels) or PAPER_LEVELS)  # per image
        self.labels = LABELS[mode]

    @classmethod
    def from_saliency(cls, images, model, layers, *, cache=None, target=None, batch_size: int = 16,
                      **kwargs) -> ThreeWayDataset:
        """Compute the maps with ``model`` and ``layers`` (through ``cache``, a ``SaliencyCache``,
        if given), in batches on the model's device, then build the dataset (``kwargs``)."""
        device = next(model.parameters()).device
        n, parts = len(images), []
        for start in tqdm(range(0, n, batch_size), desc="saliency maps", leave=False):
            if isinstance(images, torch.Tensor):
                x = images[start:start + batch_size]
            else:
                x = torch.stack([_as_image(images[i]) for i in range(start, min(n, start + batch_size))])
            x = x.to(device)
            maps = cache(model, x, layers, target) if cache is not None else \
                multilevel_layercam(model, x, layers, target)
            parts.append(maps.cpu())  # (b, L, H, W)
        return cls(images, torch.cat(parts), **kwargs)

    def _image(self, n: int) -> torch.Tensor:
        return self.images[n] if isinstance(self.images, torch.Tensor) else _as_image(self.images[n])

    def __len__(self) -> int:
        return len(self.images) * self.triplets * 3

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh positives and negatives: items depend on ``(seed, epoch, index)``."""
        self.epoch = int(epoch)

    def locate(self, index: int) -> tuple[int, int, int]:
        """Item ``index`` -> (image index, triplet index = position in ``levels``, label)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self)
        return index // (3 * self.triplets), (index // 3) % self.triplets, index % 3

    def generator(self, image: int, triplet: int, label: int) -> torch.Generator:
        """The CPU generator an item draws from, seeded by ``(seed, epoch, image, triplet, label)``."""
        words = np.random.SeedSequence([self.seed, self.epoch, image, triplet, label]).generate_state(2)
        return torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))

    def _map(self, n: int, j: int):
        return None if self.maps is None else self.maps[n, self.levels[j]][None].float()  # (1, H, W)

    def anchors(self, index: int) -> torch.Tensor | None:
        """The ``(2, 2)`` (row, col) anchors a CutSwap item drew (before clipping); None otherwise."""
        n, j, label = self.locate(index)
        if label == 0 or self.spec.mode != "cutswap":
            return None
        return self.spec.anchors(label, self._map(n, j), self.generator(n, j, label))[0]

    def __getitem__(self, index: int):
        n, j, label = self.locate(int(index))
        x = self._image(n)[None]  # (1, 3, H, W)
        pos = self.spec.positive(x, self.generator(n, j, 0))  # shared by the triplet
        if label == 0:
            image, mask = pos, torch.zeros_like(pos[:, :1])
        else:
            image, mask = self.spec.negative(label, pos, self._map(n, j), self.generator(n, j, label))
        return (image[0], label, mask[0]) if self.return_masks else (image[0], label)

    def __repr__(self) -> str:
        return (f"ThreeWayDataset({len(self.images)} images x {self.triplets} triplets x "
                f"{self.labels} = {len(self)} items, levels={self.levels}, seed={self.seed}, "
                f"epoch={self.epoch}, {self.spec})")


def make_batch(images: torch.Tensor, maps: torch.Tensor | None, generator: torch.Generator | None = None,
               spec: ThreeWaySpec | None = None, *, layers: Sequence[int] | None = None,
               levels: str = "all", triplets: int | None = None, return_masks: bool = False):
    """A 3-way batch (CutSwap Sec. III-A): ``(B, 3, H, W)``, ``(B, L, H, W)`` -> ``(3M, 3, H, W)``, ``(3M,)``.

    Vectorised on the images' device. ``levels="all"``: one triplet per image and selected
    level (``layers``), M = B x levels, as :class:`ThreeWayDataset`; ``"one"``: one level
    drawn per image, M = B. Output in blocks: M positives (label 0, rows ordered image-major,
    then level), then their M label-1 and M label-2 negatives (row ``m`` of each block comes
    from positive ``m``). ``spec``: :class:`ThreeWaySpec` (default: the paper's CutSwap);
    cutpaste mode accepts ``maps=None``: then, for the same budget as CutSwap, each image
    gives ``triplets`` triplets under ``levels="all"`` (default: ``len(layers)`` if given, else
    :data:`PAPER_LEVELS`) and one under ``"one"``. ``return_masks=True`` also returns the
    changed-pixel masks ``(3M, 1, H, W)``. Taught in ``notebooks/02_cutswap_generation.ipynb``.
    """
    spec = spec or ThreeWaySpec()
    if levels not in ("all", "one"):
        raise ValueError(f"levels must be 'all' or 'one', got {levels!r}")
    b, _, h, w = images.shape
    per_image = None
    if maps is None:
        if spec.mode == "cutswap":
            raise ValueError("mode='cutswap' needs saliency maps (B, L, H, W)")
        n = 1 if levels == "one" else int(triplets or (len(layers) if layers is not None else PAPER_LEVELS))
        x = images.repeat_interleave(n, 0)  # (M, 3, H, W), M = B n: CutSwap's samples per image
    else:
        _check_maps(maps, b, (h, w))
        chosen = _levels(maps, layers)
        if levels == "all":
            per_image = maps[:, chosen].float().reshape(-1, h, w)  # (M, H, W), M = B L'
            x = images.repeat_interleave(len(chosen), 0)  # (M, 3, H, W)
        else:
            u = uniform(generator, b, 1, maps.device)[:, 0]
            slot = (u * len(chosen)).long().clamp(max=len(chosen) - 1)  # (B,) uniform level
            pick = torch.tensor(chosen, device=maps.device)[slot]
            per_image = maps[torch.arange(b, device=maps.device), pick].float()  # (B, H, W)
            x = images
    pos = spec.positive(x, generator)  # (M, 3, H, W)
    neg1, mask1 = spec.negative(1, pos, per_image, generator)
    neg2, mask2 = spec.negative(2, pos, per_image, generator)
    m = pos.shape[0]
    out = torch.cat([pos, neg1, neg2])  # (3M, 3, H, W)
    labels = torch.arange(3, device=images.device).repeat_interleave(m)  # (3M,)
    if not return_masks:
        return out, labels
    return out, labels, torch.cat([torch.zeros_like(mask1), mask1, mask2])
