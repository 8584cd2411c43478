"""PatchCore: a memory bank of locally aware patch features, scored by nearest neighbour.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022. The
CutSwap paper (Sec. IV) and SemiREST (Sec. 3.1) both stand on it; notebook 00b builds it step by step
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
* **Search**: faiss ``IndexFlatL2`` for a float32 bank on the CPU; otherwise (a GPU, or a
  float16 bank) an exact search by blocks of queries x bank rows, written by hand so that
  no block outgrows 64 MiB and a float16 bank is read in float32 one block at a time.
  Scores are Euclidean distances (the square root of the squared ones).
* **Memory** (the course's choices; the paper does not discuss them): training images are
  embedded a batch at a time and only their patch rows kept; the bank is float16 once it
  would pass ``half_bank_mb`` (512 MiB) in float32 (``bank_dtype``, see :class:`PatchCore`).
* **Image score** (Eq. 7): the largest patch score, re-weighted by how isolated its
  nearest memory feature m* is: ``s = (1 - softmax(d(m_test, N_b(m*)))[m*]) * s*``
  where N_b(m*) are the ``num_neighbors`` memory features nearest to m*. The softmax
  form is the numerically stable version of the paper's ratio of exponentials.
* **Pixel map**: the patch score grid is bilinearly upsampled to the image size and
  smoothed with a Gaussian of sigma 4 (as in the paper).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur
from tqdm.auto import tqdm

from .backbones import FeatureExtractor, build_feature_extractor
from .coreset import (HALF_BANK_MB, RecomputedRows, RowChunks, bank_storage_dtype, coreset_indices,
                      coreset_subsample, greedy_coreset)
from .images import as_float_images

# the coreset's names are kept importable from here, where the course first meets them (notebook 00b)
__all__ = ["PatchCore", "locally_aware_patch_features", "nearest_neighbors", "reweighted_image_scores",
           "greedy_coreset", "coreset_indices", "coreset_subsample", "RowChunks", "RecomputedRows",
           "bank_storage_dtype", "HALF_BANK_MB", "ROW_BUDGET_MB"]

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


ROW_BUDGET_MB = 4096.0  # PatchCore.fit: training rows past this many MiB (as stored) are recomputed, not kept
QUERY_CHUNK = 4096  # queries per block of the chunked search
BANK_CHUNK = 4096  # bank rows per block: a block is at most 4096 x 4096 float32 distances (64 MiB)


# --------------------------------------------------------------------------- search
_INDEX_CACHE: dict = {}  # the last bank's faiss index: (bank tensor, its version) -> index
KNN_BACKENDS = ("auto", "faiss", "torch")


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


def _chunked_knn(queries: Tensor, bank: Tensor, k: int, chunk: int, bank_chunk: int) -> tuple[Tensor, Tensor]:
    """Exact k-NN by blocks of ``chunk`` queries x ``bank_chunk`` rows, distances in float32 per block.

    Written by hand (the search faiss does, for banks faiss would have to copy to float32):
    ``|q - b|^2 = |q|^2 - 2 q.b + |b|^2`` per block, a running top-k across the bank's
    blocks; peak memory is one block of distances plus one float32 copy of a bank block.
    """
    with torch.autocast(bank.device.type, enabled=False):  # float32 even inside a caller's autocast
        return _chunked_knn_fp32(queries, bank, k, chunk, bank_chunk)


def _chunked_knn_fp32(queries: Tensor, bank: Tensor, k: int, chunk: int, bank_chunk: int) -> tuple[Tensor, Tensor]:
    device, m = bank.device, bank.shape[0]
    b_sq = torch.cat([(b.float() ** 2).sum(1) for b in bank.split(bank_chunk)])  # (M,)
    dists, idxs = [], []
    for q in queries.split(chunk):
        q = q.to(device, torch.float32)  # (q, D)
        q_sq = (q ** 2).sum(1, keepdim=True)  # (q, 1)
        best_d = best_i = None
        for start in range(0, m, bank_chunk):
            b = bank[start:start + bank_chunk].float()  # (m_c, D) float32, this block only
            d2 = torch.addmm(b_sq[start:start + len(b)], q, b.T, alpha=-2).add_(q_sq)  # (q, m_c) squared
            if k == 1:
                d, i = d2.min(dim=1, keepdim=True)  # (q, 1)
            else:
                d, i = d2.topk(min(k, len(b)), dim=1, largest=False)  # (q, k_c)
            i = i + start
            if best_d is not None:
                d, i = torch.cat([best_d, d], 1), torch.cat([best_i, i], 1)  # (q, k + k_c)
                if k == 1:
                    d, pick = d.min(dim=1, keepdim=True)
                else:
                    d, pick = d.topk(k, dim=1, largest=False)
                i = i.gather(1, pick)
            best_d, best_i = d, i
        dists.append(best_d.clamp_min_(0).sqrt_())
        idxs.append(best_i)
    return torch.cat(dists), torch.cat(idxs)


def nearest_neighbors(queries: Tensor, bank: Tensor, k: int = 1, chunk: int = QUERY_CHUNK,
                      bank_chunk: int = BANK_CHUNK, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Euclidean k-NN of ``queries`` ``(Q, D)`` in ``bank`` ``(M, D)`` -> distances, indices ``(Q, k)``.

    ``backend`` "faiss": ``IndexFlatL2`` (exact, cached per bank: :func:`_faiss_index`; it
    holds a float32 copy of the bank; results on the CPU); "torch": :func:`_chunked_knn` on
    the bank's device, blocks of ``chunk`` queries x ``bank_chunk`` bank rows; "auto":
    faiss for a float32 bank on the CPU, torch otherwise (a GPU, or a float16 bank, which
    faiss would copy whole to float32). Neither holds a ``Q x M`` matrix; the chunk sizes
    do not change the result.
    """
    if backend not in KNN_BACKENDS:
        raise ValueError(f"backend must be one of {KNN_BACKENDS}, got {backend!r}")
    k = min(k, bank.shape[0])
    if backend == "auto":
        backend = "faiss" if bank.device.type == "cpu" and bank.dtype == torch.float32 else "torch"
    if backend == "faiss":
        index = _faiss_index(bank.cpu())
        sq_dist, idx = index.search(np.ascontiguousarray(queries.float().cpu().numpy()), k)
        dist = torch.from_numpy(sq_dist).clamp_min(0).sqrt()
        return dist, torch.from_numpy(idx).long()
    return _chunked_knn(queries, bank, k, chunk, bank_chunk)


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
def _image_count(data) -> int | None:
    """Images in a tensor, a sized Dataset or a DataLoader over one; None when it cannot be told."""
    if isinstance(data, torch.utils.data.DataLoader):
        data = data.dataset
    try:
        return len(data)
    except TypeError:
        return None


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

    Memory (what grows with the data): ``fit`` embeds ``batch_size`` images at a time and
    keeps only their patch features (the backbone's maps of one batch at a time), as row
    blocks (:class:`RowChunks`), never joined before the coreset picks its rows. Both
    those rows and the kept bank are stored as ``bank_dtype`` says: "float32",
    "float16", or "auto", float16 once the float32 rows would pass ``half_bank_mb`` MiB
    (512: the course's choice, not the paper's, so that a 512 px WideResNet50 bank of a
    few hundred images fits a Colab GPU; the fast and default profiles stay float32).
    Distances are always formed in float32, per block: the coreset's projection
    ``ROW_CHUNK`` rows at a time, the search in blocks of ``search_chunk`` queries x
    ``BANK_CHUNK`` bank rows (:func:`nearest_neighbors`). A float16 bank changes each
    patch score by at most 2**-11 times the largest bank row's norm (its rounding error);
    ``tests/benchmarks/bench_patchcore_memory.py`` measures the peak memory.

    Past ``row_budget_mb`` MiB of stored rows (4096 by default, the course's choice: KSDD2's
    2,085 images at 512 px through WideResNet50 would be 17.5 GB even in float16) the rows
    are not kept at all: they are recomputed at each pass (:class:`RecomputedRows`), and what
    stays is the coreset's ``(N, 128)`` projection and the bank. That costs backbone passes (two
    over the training images after the first batch, three on a CPU where the projection is kept
    in float16) and gives the bank the kept float32 rows would (``row_budget_mb=None``: always keep).
    """

    def __init__(self, backbone: str | FeatureExtractor = "resnet18", layers: list[str] | None = None,
                 coreset_ratio: float | None = 0.1, num_neighbors: int = 9, device: str | None = None,
                 weights: str | None = "imagenet", feature_dim: int | None = None,
                 projection_dim: int | None = 128, batch_size: int = 16, seed: int = 0,
                 progress: bool = True, bank_dtype: str = "auto", half_bank_mb: float = HALF_BANK_MB,
                 search_chunk: int = QUERY_CHUNK, row_budget_mb: float | None = ROW_BUDGET_MB):
        if coreset_ratio is not None and not 0 < coreset_ratio <= 1:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {coreset_ratio}")
        bank_storage_dtype(bank_dtype, 0, 0)  # an unknown name fails here, not after the embedding
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
        self.bank_dtype, self.half_bank_mb, self.search_chunk = bank_dtype, half_bank_mb, search_chunk
        self.row_budget_mb = row_budget_mb
        self.streamed = False  # whether fit() recomputed the rows instead of keeping them
        self.memory_bank: Tensor | None = None  # (M, D), float32 or float16 (bank_dtype)
        self.timings: dict[str, float] = {}

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] (or uint8) -> patch features ``(B, D, h, w)``."""
        levels = self.extractor(as_float_images(images, self.device))
        return locally_aware_patch_features(levels, self.feature_dim)

    def fit(self, train_images) -> "PatchCore":
        """Build the memory bank from normal images (tensor, Dataset or DataLoader).

        The patch rows are kept while they fit ``row_budget_mb``; beyond it (known from the
        first batch) they are recomputed at each pass instead (:class:`RecomputedRows`).
        """
        t0 = time.perf_counter()
        rows, streamed = RowChunks(self.bank_dtype, self.half_bank_mb), None
        n_images = _image_count(train_images)
        batches = _image_batches(train_images, self.batch_size)
        for images in tqdm(batches, desc="embed train", disable=not self.progress, leave=False):
            block = self._rows(images)  # (B*h*w, D)
            if not rows.blocks and self._stream(n_images, block.shape[0] // len(images), block.shape[1]):
                streamed = self._recomputed_rows(train_images, n_images * (block.shape[0] // len(images)),
                                                 block.shape[1])
                break
            rows.append(block)  # only the patch rows of this batch stay
        if not rows.blocks and streamed is None:
            raise ValueError("PatchCore.fit got no training images")
        t1 = time.perf_counter()
        source = streamed if streamed is not None else rows  # kept or recomputed rows: the same calls below
        if self.coreset_ratio is None or self.coreset_ratio >= 1:
            bank = source.concat()  # (N, D)
        else:
            n_select = max(1, int(round(self.coreset_ratio * source.rows)))
            keep = greedy_coreset(source, n_select, self.projection_dim, seed=self.seed,
                                  progress=self.progress)  # (M,)
            bank = source.take(keep)  # (M, D)
        del rows, source
        dtype = bank_storage_dtype(self.bank_dtype, *bank.shape, self.half_bank_mb)
        self.memory_bank = bank.to(dtype).contiguous()
        self.timings.update(embed_train=t1 - t0, coreset=time.perf_counter() - t1)
        self.streamed = streamed is not None
        return self

    def _rows(self, images: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` -> patch rows ``(B*h*w, D)``, in (image, row, column) order."""
        f = self.embed(images)  # (B, D, h, w)
        return f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])

    def _stream(self, n_images: int | None, per_image: int, dim: int) -> bool:
        """Whether the training rows would pass ``row_budget_mb`` in their storage dtype (then they are recomputed)."""
        if self.row_budget_mb is None or n_images is None:
            return False
        n_rows = n_images * per_image
        item = bank_storage_dtype(self.bank_dtype, n_rows, dim, self.half_bank_mb).itemsize
        return n_rows * dim * item > self.row_budget_mb * 2**20

    def _recomputed_rows(self, train_images, n_rows: int, dim: int) -> RecomputedRows:
        if isinstance(train_images, torch.utils.data.DataLoader) and not isinstance(
                train_images.sampler, torch.utils.data.SequentialSampler):
            raise ValueError(f"PatchCore: the {n_rows:,} training patches pass row_budget_mb={self.row_budget_mb} "
                             f"and would be recomputed, which needs the same order at every pass; give a tensor, "
                             f"a Dataset or a DataLoader without shuffling, or raise row_budget_mb")

        def blocks():
            for images in tqdm(_image_batches(train_images, self.batch_size), desc="embed train (again)",
                               disable=not self.progress, leave=False):
                yield self._rows(images)

        return RecomputedRows(blocks, n_rows, dim, self.device)

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
        dist, idx = nearest_neighbors(queries.reshape(b * h * w, -1), self.memory_bank, k=1,
                                      chunk=self.search_chunk)
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
