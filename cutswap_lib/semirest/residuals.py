"""SemiREST position-constrained residuals (PCR): the tokens of the residual transformer.

SemiREST Sec. 3.1.1, Eq. (1)-(6). Taught in ``notebooks/04_semirest_residuals.ipynb``.
The pipeline, one step per class or function here:

1. **Patch features** (Eq. 1): PatchCore's locally aware features
   (:func:`cutswap_lib.patchcore.locally_aware_patch_features`): two backbone levels,
   3x3 average, resized to the shallower grid and concatenated, pooled to ``d_f = 1024``
   channels. The paper uses WideResNet50 layer2 + layer3; :class:`PositionConstrainedFeatures`
   asks :func:`~cutswap_lib.backbones.choose_backbone` for it and falls back to
   EfficientNet-Lite0 (the ImageNet network installed with the package; its
   ``_blocks.4`` + ``_blocks.10`` give ``d_f = 152``) where WRN50's weights are missing.
   ResNet18 (``d_f = 384``) is the other CPU profile.
2. **Position-constrained features** (PCF, Eq. 2-3): ``f + lambda_PE * eta`` with the
   position code of :mod:`cutswap_lib.semirest.position`, ``lambda_PE = 0.1``, added to
   memory and query features alike, so the search below runs over PCFs.
3. **Memory bank** (Eq. 4): the PCFs of all normal training patches, thinned by
   PatchCore's greedy coreset (:func:`cutswap_lib.patchcore.greedy_coreset`, 10 % by
   default; ``coreset_ratio=None`` keeps every patch).
4. **Residual** (Eq. 5-6): for each query PCF its nearest memory PCF (Euclidean, through
   :func:`cutswap_lib.patchcore.nearest_neighbors`: faiss on the CPU, ``cdist`` on a
   GPU) and the element-wise square of their difference; ``mode="abs"`` gives the
   absolute difference (the "ABS" rows of Table 6). The distance to that neighbour is
   kept too: with ``lambda_pe=0`` it is plain PatchCore's patch score.

Written by hand: the position code, the PCF sum and the residual (the paper's additions);
features, coreset and search are PatchCore's, reused from :mod:`cutswap_lib.patchcore`.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import torch
from torch import nn
from tqdm.auto import tqdm

from ..backbones import FeatureExtractor, build_feature_extractor, choose_backbone
from ..images import as_float_images
from ..coreset import RecomputedRows, greedy_coreset, take_rows
from ..patchcore import _image_batches, locally_aware_patch_features, nearest_neighbors
from .position import add_position_code

Tensor = torch.Tensor

RESIDUAL_MODES = ("square", "abs")


# --------------------------------------------------------------------------- residual
def elementwise_residual(diff: Tensor, mode: str = "square") -> Tensor:
    """SemiREST Eq. (6): ``S(x) = x**2`` element-wise ("square"), or ``|x|`` ("abs", Table 6); any shape."""
    if mode == "square":
        return diff * diff
    if mode == "abs":
        return diff.abs()
    raise ValueError(f"residual mode must be one of {RESIDUAL_MODES}, got {mode!r}")


def nearest_residuals(queries: Tensor, bank: Tensor,
                      mode: str = "square") -> tuple[Tensor, Tensor, Tensor]:
    """SemiREST Eq. (5): queries ``(Q, D)``, bank ``(M, D)`` -> residuals ``(Q, D)``, distance, index.

    Each query's nearest bank row (Euclidean), the residual ``S(query - nearest)`` of
    :func:`elementwise_residual`, the Euclidean distance to that row and its index ``(Q,)``.
    Results live on ``queries``' device.
    """
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(f"expected queries (Q, D) and bank (M, D) of the same D, got "
                         f"{tuple(queries.shape)} and {tuple(bank.shape)}")
    if bank.shape[0] == 0:
        raise ValueError("the memory bank is empty")
    elementwise_residual(queries[:0], mode)  # check the mode before the search
    dist, idx = nearest_neighbors(queries, bank, k=1)  # (Q, 1), (Q, 1)
    idx = idx[:, 0].to(bank.device)  # (Q,)
    diff = queries - bank[idx].to(queries.device)  # (Q, D)
    return elementwise_residual(diff, mode), dist[:, 0].to(queries.device), idx.to(queries.device)


class ResidualMatch(NamedTuple):
    """What :meth:`ResidualMemory.match` returns for ``B`` images on an ``h_f x w_f`` grid."""

    residuals: Tensor  # (B, h_f, w_f, d_f) Eq. (5)-(6), the transformer's tokens
    distance: Tensor  # (B, h_f, w_f) Euclidean distance to the nearest memory PCF
    index: Tensor  # (B, h_f, w_f) row of that memory PCF in the bank


# --------------------------------------------------------------------------- features
class PositionConstrainedFeatures(nn.Module):
    """Images ``(B, 3, H, W)`` in [0, 1] -> PCFs ``(B, d_f, h_f, w_f)`` (SemiREST Eq. (1)-(2), Sec. 3.1.1).

    ``backbone``: a name of :data:`cutswap_lib.backbones.BACKBONES`, a ready
    :class:`~cutswap_lib.backbones.FeatureExtractor`, or None for the paper's
    ``wide_resnet50_2`` where its ImageNet weights load and EfficientNet-Lite0 otherwise
    (:func:`~cutswap_lib.backbones.choose_backbone` prints the choice). ``layers`` None:
    the backbone's PatchCore defaults (layer2 + layer3; Lite0 ``_blocks.4`` +
    ``_blocks.10``). ``feature_dim`` caps ``d_f`` (1024 in the paper; narrower
    backbones keep their own width), which must be a multiple of 4 for Eq. (3).
    ``lambda_pe``, ``rho``, ``freq_exponent``: see :func:`.position.position_code`.
    """

    def __init__(self, backbone: str | FeatureExtractor | None = None, layers: list[str] | None = None,
                 weights="imagenet", feature_dim: int | None = 1024, lambda_pe: float = 0.1,
                 rho: float = 1, freq_exponent: float = 8.0, device=None):
        super().__init__()
        if backbone is None:
            backbone = choose_backbone("wide_resnet50_2")
        if isinstance(backbone, str):
            backbone = build_feature_extractor(backbone, layers=layers, weights=weights)
        elif layers is not None:
            raise ValueError("layers= applies only when backbone is a name; this extractor "
                             f"already has its layers {backbone.layers}")
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.extractor = backbone.to(device).eval()
        width = sum(backbone.channels.values())
        self.feature_dim = feature_dim
        self.d_f = width if feature_dim is None else min(width, feature_dim)
        if self.d_f % 4:
            raise ValueError(f"{backbone.name} levels {backbone.layers} give d_f = {self.d_f} "
                             f"channels, but the position code of SemiREST Eq. (3) needs a "
                             f"multiple of 4; pass feature_dim={self.d_f // 4 * 4}")
        self.lambda_pe, self.rho, self.freq_exponent = lambda_pe, rho, freq_exponent

    @property
    def device(self) -> torch.device:
        return next(self.extractor.parameters()).device

    @torch.no_grad()
    def patch_features(self, images: Tensor) -> Tensor:
        """SemiREST Eq. (1): images ``(B, 3, H, W)`` (float or uint8) -> plain patch features ``(B, d_f, h_f, w_f)``."""
        levels = self.extractor(as_float_images(images, self.device))
        return locally_aware_patch_features(levels, self.feature_dim)  # (B, d_f, h_f, w_f)

    def constrain(self, features: Tensor) -> Tensor:
        """SemiREST Eq. (2): patch features ``(B, d_f, h, w)`` -> PCFs ``f + lambda_pe * eta``, same shape."""
        return add_position_code(features, self.lambda_pe, self.rho, freq_exponent=self.freq_exponent)

    def forward(self, images: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` -> PCFs ``(B, d_f, h_f, w_f)``."""
        return self.constrain(self.patch_features(images))

    def extra_repr(self) -> str:
        return (f"d_f={self.d_f}, lambda_pe={self.lambda_pe}, rho={self.rho}, "
                f"freq_exponent={self.freq_exponent}")


def _rows(pcf: Tensor) -> Tensor:
    """``(B, D, h, w)`` -> one row per patch ``(B*h*w, D)``, rows in (image, row, column) order."""
    return pcf.permute(0, 2, 3, 1).reshape(-1, pcf.shape[1])


# --------------------------------------------------------------------------- memory
class ResidualMemory:
    """Memory bank of normal PCFs and the residuals of queries against it (SemiREST Eq. (4)-(6)).

    ``fit(train_images)`` builds the bank; ``match(images, mode)`` returns a
    :class:`ResidualMatch` (residual tokens ``(B, h_f, w_f, d_f)``, nearest distance and
    index ``(B, h_f, w_f)``); ``residuals`` and ``distance_map`` return one part each.
    Images: a tensor ``(N, 3, H, W)`` in [0, 1], a Dataset of tuples or a DataLoader.
    The feature arguments go to :class:`PositionConstrainedFeatures` (``features``);
    ``coreset_ratio`` None or 1 keeps every training patch. Results stay on ``device``.
    ``fit_features`` / ``match_features`` do the same on plain patch features
    ``(N, d_f, h, w)`` that were computed elsewhere. After fitting, ``bank_source`` ``(T,)``
    holds the training image each memory row came from (for leave-one-image-out residuals
    of the training images, :func:`cutswap_lib.semirest.token_augment.k_nearest_memory`).
    """

    def __init__(self, backbone: str | FeatureExtractor | None = None, layers: list[str] | None = None,
                 weights="imagenet", feature_dim: int | None = 1024, lambda_pe: float = 0.1,
                 rho: float = 1, freq_exponent: float = 8.0, coreset_ratio: float | None = 0.1,
                 projection_dim: int | None = 128, batch_size: int = 16, seed: int = 0,
                 device=None, progress: bool = True):
        if coreset_ratio is not None and not 0 < coreset_ratio <= 1:
            raise ValueError(f"coreset_ratio must be in (0, 1] or None, got {coreset_ratio}")
        self.features = PositionConstrainedFeatures(backbone, layers, weights, feature_dim,
                                                    lambda_pe, rho, freq_exponent, device)
        self.device = self.features.device
        self.coreset_ratio, self.projection_dim = coreset_ratio, projection_dim
        self.batch_size, self.seed, self.progress = batch_size, seed, progress
        self.memory_bank: Tensor | None = None  # (T, d_f) memory PCFs, Eq. (4)
        self.bank_source: Tensor | None = None  # (T,) training image each memory row came from
        self.timings: dict[str, float] = {}

    # ---- Eq. (4): the memory bank
    def fit(self, train_images) -> "ResidualMemory":
        """Build the memory bank from normal images (tensor, Dataset or DataLoader)."""
        t0 = time.perf_counter()
        rows = []
        batches = _image_batches(train_images, self.batch_size)
        for images in tqdm(batches, desc="embed train", disable=not self.progress, leave=False):
            pcf = self.features(images)  # (B, d_f, h, w)
            self._grid = pcf.shape[-2:]
            rows.append(_rows(pcf))  # (B*h*w, d_f) PCFs
        self.timings["embed_train"] = time.perf_counter() - t0
        return self._build_bank(rows)

    def fit_features(self, features: Tensor) -> "ResidualMemory":
        """Build the memory bank from plain patch features ``(N, d_f, h, w)`` of normal images."""
        self._grid = features.shape[-2:]
        return self._build_bank([_rows(self.features.constrain(features.to(self.device)))])

    def fit_pcf_rows(self, blocks: "list[Tensor] | RecomputedRows", grid: tuple[int, int]) -> "ResidualMemory":
        """Build the memory bank from PCF rows ``(n_i*h*w, d_f)`` in image order, given as blocks (not joined),
        or as :class:`~cutswap_lib.coreset.RecomputedRows` (computed again at each pass, never held)."""
        self._grid = grid
        return self._build_bank(blocks)

    def _build_bank(self, rows: "list[Tensor] | RecomputedRows") -> "ResidualMemory":
        """Coreset of the rows, which stay in their blocks (on the host or the device): the bank is never held twice.

        The greedy search runs on ``self.device`` either way (:func:`~cutswap_lib.coreset.greedy_coreset`
        moves host blocks there one at a time); only the kept rows are then copied to the device.
        Recomputed rows are read once more to gather the kept ones.
        """
        recomputed = isinstance(rows, RecomputedRows)
        if not recomputed and not rows:
            raise ValueError("ResidualMemory.fit got no training images")
        n = rows.rows if recomputed else sum(r.shape[0] for r in rows)  # N*h*w rows in (image, row, column) order
        self.grid = tuple(self._grid)
        t0 = time.perf_counter()
        if self.coreset_ratio is None or self.coreset_ratio >= 1:
            keep = torch.arange(n)
        else:
            keep = greedy_coreset(rows, max(1, int(round(self.coreset_ratio * n))), self.projection_dim,
                                  seed=self.seed, progress=self.progress, device=self.device)  # (T,)
        kept = take_rows(rows, keep)  # (T, d_f), where the rows are (recomputed rows: one more pass)
        self.memory_bank = kept.to(self.device).contiguous()  # only the bank on the device
        self.bank_source = (keep.cpu() // (self.grid[0] * self.grid[1])).to(self.device)  # (T,) training image per row
        self.timings["coreset"] = time.perf_counter() - t0
        return self

    # ---- Eq. (5)-(6): residuals
    def match(self, images, mode: str = "square") -> ResidualMatch:
        """Images -> :class:`ResidualMatch`: residuals ``(B, h_f, w_f, d_f)``, distance, index."""
        t0 = time.perf_counter()
        parts = []
        batches = _image_batches(images, self.batch_size)
        for batch in tqdm(batches, desc="residuals", disable=not self.progress, leave=False):
            parts.append(self._match_pcf(self.features(batch), mode))
        if not parts:
            raise ValueError("ResidualMemory.match got no images")
        self.timings["match"] = time.perf_counter() - t0
        return ResidualMatch(*(torch.cat(p) for p in zip(*parts)))

    def match_features(self, features: Tensor, mode: str = "square") -> ResidualMatch:
        """Plain patch features ``(B, d_f, h, w)`` -> :class:`ResidualMatch` (no backbone run)."""
        return self._match_pcf(self.features.constrain(features.to(self.device)), mode)

    def residuals(self, images, mode: str = "square") -> Tensor:
        """SemiREST Eq. (5)-(6): images -> residual tokens ``(B, h_f, w_f, d_f)``; mode "square" | "abs"."""
        return self.match(images, mode).residuals

    def distance_map(self, images) -> Tensor:
        """Images -> nearest memory-PCF distance ``(B, h_f, w_f)``; PatchCore's patch score if lambda_pe=0."""
        return self.match(images).distance

    def _match_pcf(self, pcf: Tensor, mode: str) -> ResidualMatch:
        if self.memory_bank is None:
            raise RuntimeError("ResidualMemory: call fit() before asking for residuals")
        b, d, h, w = pcf.shape
        if d != self.memory_bank.shape[1]:
            raise ValueError(f"query features have {d} channels, the memory bank {self.memory_bank.shape[1]}")
        res, dist, idx = nearest_residuals(_rows(pcf), self.memory_bank, mode)  # (B*h*w, d), (B*h*w,) x2
        return ResidualMatch(res.reshape(b, h, w, d), dist.reshape(b, h, w), idx.reshape(b, h, w))
