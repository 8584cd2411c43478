"""PatchCore: a memory bank of locally aware patch features, scored by nearest neighbour.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022. The
CutSwap paper (Sec. IV) and SemiREST (Sec. 3.1) both stand on it; notebook 00 runs it
and notebook 03 feeds it the CutSwap-fine-tuned encoder.

Choices, following the official code (amazon-science/patchcore-inspection) unless said:

* **Patch features** (Sec. 3.1): each chosen level is averaged over a 3x3 neighbourhood
  (stride 1, so every position keeps its own patch), deeper levels are bilinearly
  resized to the shallowest level's grid, and levels are concatenated along channels.
  ResNet18 layer2+layer3 gives 128+256 = 384 dims; ``feature_dim`` optionally reduces
  wider backbones by adaptive average pooling over channels (the official code pools
  to 1024).
* **Coreset** (Sec. 3.2): greedy k-center on a random Gaussian projection to 128 dims,
  from one seeded random start. Large projected banks are stored in float16 on a CPU
  (halving the memory read per iteration, the bottleneck there) while distances are
  formed in float32; ``tests/benchmarks/bench_patchcore.py`` measures both the speed and
  the effect on AUROC.
* **Search**: faiss ``IndexFlatL2`` on the CPU, chunked ``torch.cdist`` on a GPU.
  Scores are Euclidean distances (the square root of faiss's squared ones).
* **Image score** (Eq. 7): the largest patch score, re-weighted by how isolated its
  nearest memory feature m* is: ``s = (1 - softmax(d(m_test, N_b(m*)))[m*]) * s*``
  where N_b(m*) are the ``num_neighbors`` memory features nearest to m*. The softmax
  form is the numerically stable version of the paper's ratio of exponentials.
* **Pixel map**: the patch score grid is bilinearly upsampled to the image size and
  smoothed with a Gaussian of sigma 4 (as in the paper).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur
from tqdm.auto import tqdm

from .backbones import FeatureExtractor, build_feature_extractor

Tensor = torch.Tensor


# --------------------------------------------------------------------------- features
def locally_aware_patch_features(levels: dict[str, Tensor], feature_dim: int | None = None) -> Tensor:
    """Feature maps of several levels -> one patch-feature map ``(B, D, h, w)`` (PatchCore Sec. 3.1).

    ``levels`` maps level name -> ``(B, C_l, H_l, W_l)``; the first (shallowest) level sets
    the grid ``(h, w)``. Each level is 3x3-averaged, resized to the grid and concatenated.
    """
    maps = list(levels.values())
    h, w = maps[0].shape[-2:]
    out = []
    for fmap in maps:
        fmap = F.avg_pool2d(fmap, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        if fmap.shape[-2:] != (h, w):
            fmap = F.interpolate(fmap, size=(h, w), mode="bilinear", align_corners=False)
        out.append(fmap)
    feats = torch.cat(out, dim=1)  # (B, D, h, w)
    if feature_dim is not None and feature_dim < feats.shape[1]:
        b, d = feats.shape[:2]
        flat = feats.permute(0, 2, 3, 1).reshape(-1, 1, d)  # (B*h*w, 1, D)
        flat = F.adaptive_avg_pool1d(flat, feature_dim)  # (B*h*w, 1, feature_dim)
        feats = flat.reshape(b, h, w, feature_dim).permute(0, 3, 1, 2)
    return feats


# --------------------------------------------------------------------------- coreset
def greedy_coreset(
    features: Tensor,
    n_select: int,
    projection_dim: int | None = 128,
    seed: int = 0,
    half_precision: bool | None = None,
    progress: bool = True,
) -> Tensor:
    """Greedy k-center coreset: indices ``(n_select,)`` of rows of ``features`` ``(N, D)``.

    PatchCore Sec. 3.2 / Alg. 1: start from one random row, then repeatedly add the row
    farthest from everything selected so far. Distances are computed on a random
    Gaussian projection to ``projection_dim`` dims (None: no projection). Runs on the
    device of ``features``; each iteration reads the projected matrix once.

    ``half_precision`` stores that matrix in float16 (distances still in float32).
    None (auto) does so on a CPU when the float32 matrix exceeds 32 MiB: then the
    matrix-vector product is bound by memory bandwidth and float16 halves the bytes
    (measured 2.8x faster for 156,800 x 128 here), while a matrix that fits in cache is
    faster in float32 (``tests/benchmarks/bench_patchcore.py`` prints both).
    """
    n = features.shape[0]
    if not 0 < n_select <= n:
        raise ValueError(f"n_select must be in [1, {n}], got {n_select}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    feats = features.float()
    if projection_dim is not None and projection_dim < feats.shape[1]:
        proj = torch.randn(feats.shape[1], projection_dim, generator=gen) / math.sqrt(projection_dim)
        feats = feats @ proj.to(feats.device)  # (N, k)
    feats = feats - feats.mean(0, keepdim=True)  # centring shrinks norms: less cancellation below
    if half_precision is None:
        half_precision = feats.device.type == "cpu" and feats.numel() * 4 > 32 * 2**20
    if half_precision:
        feats = feats.half()
    sq_norms = (feats.float() ** 2).sum(1)  # (N,)
    min_dist = torch.full((n,), float("inf"), device=feats.device)
    selected = torch.empty(n_select, dtype=torch.long)
    idx = int(torch.randint(n, (1,), generator=gen))
    for i in tqdm(range(n_select), desc="coreset", disable=not progress, mininterval=1.0):
        selected[i] = idx
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, with one matrix-vector product per step
        dist = sq_norms - 2 * torch.mv(feats, feats[idx]).float() + sq_norms[idx]  # (N,)
        torch.minimum(min_dist, dist, out=min_dist)
        idx = int(torch.argmax(min_dist))
    return selected.to(features.device)


def coreset_indices(bank: Tensor, ratio: float | None, projection_dim: int | None = 128,
                    seed: int = 0, progress: bool = True) -> Tensor:
    """Rows ``(T,)`` of ``bank`` ``(N, D)`` that :func:`greedy_coreset` keeps for ``ratio``.

    ``ratio`` None or 1 keeps every row (``arange(N)``).
    """
    if ratio is None or ratio >= 1:
        return torch.arange(bank.shape[0], device=bank.device)
    n_select = max(1, int(round(ratio * bank.shape[0])))
    return greedy_coreset(bank, n_select, projection_dim, seed=seed, progress=progress)


def coreset_subsample(bank: Tensor, ratio: float | None, projection_dim: int | None = 128,
                      seed: int = 0, progress: bool = True) -> Tensor:
    """The ``ratio`` fraction of the rows of ``bank`` ``(N, D)`` kept by :func:`greedy_coreset`.

    ``ratio`` None or 1 keeps every row. Shared by PatchCore and SemiREST's memory.
    """
    if ratio is None or ratio >= 1:
        return bank
    return bank[coreset_indices(bank, ratio, projection_dim, seed, progress)]


# --------------------------------------------------------------------------- search
_INDEX_CACHE: dict = {}  # the last bank's faiss index: (bank tensor, its version) -> index


def _faiss_index(bank: Tensor):
    """A faiss ``IndexFlatL2`` holding ``bank`` ``(M, D)``, reused while the same, unmodified bank is searched.

    Building the index copies the bank (335 MB for SemiREST's 512 px paper bank); one
    image at a time, that copy cost as much as the search. The cache keeps one entry and
    a reference to its bank (so the address cannot be reused by another tensor);
    ``bank._version`` changes with any in-place edit, which rebuilds the index.
    """
    import faiss  # imported here: only the CPU path needs it

    key = (bank.data_ptr(), tuple(bank.shape), bank.dtype, bank._version)
    cached = _INDEX_CACHE.get("entry")
    if cached is not None and cached[0] == key:
        return cached[2]
    index = faiss.IndexFlatL2(bank.shape[1])
    index.add(np.ascontiguousarray(bank.float().numpy()))
    _INDEX_CACHE["entry"] = (key, bank, index)
    return index


def nearest_neighbors(queries: Tensor, bank: Tensor, k: int = 1, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Euclidean k-NN of ``queries`` ``(Q, D)`` in ``bank`` ``(M, D)`` -> distances, indices ``(Q, k)``.

    faiss ``IndexFlatL2`` (exact, cached per bank: :func:`_faiss_index`) on the CPU; chunked
    ``torch.cdist`` on other devices.
    """
    k = min(k, bank.shape[0])
    if bank.device.type == "cpu":
        index = _faiss_index(bank)
        sq_dist, idx = index.search(np.ascontiguousarray(queries.float().cpu().numpy()), k)
        dist = torch.from_numpy(sq_dist).clamp_min(0).sqrt()
        return dist, torch.from_numpy(idx).long()
    dists, idxs = [], []
    for start in range(0, queries.shape[0], chunk):
        d = torch.cdist(queries[start:start + chunk].float(), bank.float())  # (q, M)
        dist, idx = d.topk(k, dim=1, largest=False)
        dists.append(dist)
        idxs.append(idx)
    return torch.cat(dists), torch.cat(idxs)


def reweighted_image_scores(patch_scores: Tensor, nn_index: Tensor, queries: Tensor,
                            bank: Tensor, num_neighbors: int) -> Tensor:
    """PatchCore Eq. 7: image scores ``(B,)`` from patch scores ``(B, P)``.

    ``nn_index`` ``(B, P)`` is each patch's nearest memory row, ``queries`` ``(B, P, D)``
    the patch features. ``num_neighbors <= 1`` (or a bank of one row) returns the plain maximum.
    """
    s_star, p_star = patch_scores.max(dim=1)  # (B,), (B,)
    if num_neighbors <= 1 or bank.shape[0] < 2:  # a one-row bank has no neighbourhood to weigh
        return s_star
    rows = torch.arange(patch_scores.shape[0], device=patch_scores.device)
    m_test = queries[rows, p_star]  # (B, D) the most anomalous patch of each image
    m_star = bank[nn_index[rows, p_star]]  # (B, D) its nearest memory feature
    _, neigh = nearest_neighbors(m_star, bank, k=num_neighbors)  # (B, b), m* itself first
    neigh = neigh.to(bank.device)
    d = torch.linalg.vector_norm(m_test[:, None, :] - bank[neigh], dim=-1)  # (B, b)
    weight = 1 - torch.softmax(d, dim=1)[:, 0]
    return weight * s_star


# --------------------------------------------------------------------------- model
def _image_batches(data, batch_size: int) -> Iterable[Tensor]:
    """Yield image batches ``(B, 3, H, W)`` from a tensor, a Dataset of tuples, or a DataLoader."""
    if isinstance(data, Tensor):
        if data.ndim != 4 or data.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(data.shape)}")
        yield from data.split(batch_size)
        return
    if isinstance(data, torch.utils.data.Dataset):
        data = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    for batch in data:
        yield batch[0] if isinstance(batch, (list, tuple)) else batch


class PatchCore:
    """PatchCore anomaly detector over a pretrained (or fine-tuned) feature extractor.

    ``fit(train_images)`` builds the memory bank from normal images; ``predict(images)``
    returns image scores ``(B,)`` and pixel anomaly maps ``(B, H, W)``. ``backbone`` is a
    name from :data:`cutswap_lib.backbones.BACKBONES` or a ready :class:`FeatureExtractor`
    (e.g. the CutSwap encoder); ``coreset_ratio`` 1.0 (or None) keeps every patch.
    """

    def __init__(self, backbone: str | FeatureExtractor = "resnet18", layers: list[str] | None = None,
                 coreset_ratio: float | None = 0.1, num_neighbors: int = 9, device: str | None = None,
                 weights: str | None = "imagenet", feature_dim: int | None = None,
                 projection_dim: int | None = 128, batch_size: int = 16, seed: int = 0,
                 progress: bool = True):
        if coreset_ratio is not None and not 0 < coreset_ratio <= 1:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {coreset_ratio}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if isinstance(backbone, str):
            backbone = build_feature_extractor(backbone, layers=layers, weights=weights)
        self.extractor = backbone.to(self.device).eval()
        self.coreset_ratio = coreset_ratio
        self.num_neighbors = num_neighbors
        self.feature_dim = feature_dim
        self.projection_dim = projection_dim
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress
        self.memory_bank: Tensor | None = None  # (M, D)
        self.timings: dict[str, float] = {}

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] -> patch features ``(B, D, h, w)``."""
        levels = self.extractor(images.to(self.device, torch.float32))
        return locally_aware_patch_features(levels, self.feature_dim)

    def fit(self, train_images) -> "PatchCore":
        """Build the memory bank from normal images (tensor, Dataset or DataLoader)."""
        t0 = time.perf_counter()
        feats = []
        batches = _image_batches(train_images, self.batch_size)
        for images in tqdm(batches, desc="embed train", disable=not self.progress, leave=False):
            f = self.embed(images)  # (B, D, h, w)
            feats.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]))  # (B*h*w, D)
        if not feats:
            raise ValueError("PatchCore.fit got no training images")
        bank = torch.cat(feats)  # (N, D)
        t1 = time.perf_counter()
        bank = coreset_subsample(bank, self.coreset_ratio, self.projection_dim, self.seed,
                                 self.progress)  # (M, D)
        self.memory_bank = bank.contiguous()
        self.timings.update(embed_train=t1 - t0, coreset=time.perf_counter() - t1)
        return self

    @torch.no_grad()
    def predict(self, images, sigma: float = 4.0) -> tuple[Tensor, Tensor]:
        """Images -> image scores ``(B,)`` and pixel maps ``(B, H, W)`` (CPU tensors)."""
        if self.memory_bank is None:
            raise RuntimeError("PatchCore.predict called before fit()")
        t0 = time.perf_counter()
        scores, maps = [], []
        batches = _image_batches(images, self.batch_size)
        for batch in tqdm(batches, desc="predict", disable=not self.progress, leave=False):
            s, m = self._predict_batch(batch, sigma)
            scores.append(s)
            maps.append(m)
        self.timings["predict"] = time.perf_counter() - t0
        return torch.cat(scores), torch.cat(maps)

    def _predict_batch(self, images: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        b, _, height, width = images.shape
        feats = self.embed(images)  # (B, D, h, w)
        h, w = feats.shape[-2:]
        queries = feats.permute(0, 2, 3, 1).reshape(b, h * w, -1)  # (B, P, D)
        dist, idx = nearest_neighbors(queries.reshape(b * h * w, -1), self.memory_bank, k=1)
        patch_scores = dist[:, 0].reshape(b, h * w).to(self.device)  # (B, P)
        nn_index = idx[:, 0].reshape(b, h * w).to(self.device)
        image_scores = reweighted_image_scores(patch_scores, nn_index, queries,
                                               self.memory_bank, self.num_neighbors)
        maps = patch_scores.reshape(b, 1, h, w)
        maps = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)
        if sigma > 0:
            radius = int(4 * sigma + 0.5)  # kernel truncated at 4 sigma
            maps = gaussian_blur(maps, kernel_size=2 * radius + 1, sigma=sigma)
        return image_scores.cpu(), maps[:, 0].cpu()  # (B,), (B, H, W)
