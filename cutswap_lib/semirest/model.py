"""SemiREST end to end: residual memory, token pools, training the sliding Swin, bagged prediction.

SemiREST Sec. 3.1-3.2 and 4.2 (unsupervised and supervised settings). Taught in
``notebooks/05_swin_bagging.ipynb``. :class:`SemiREST` ties the pieces together:

1. ``fit`` embeds the normal training images once, builds the position-constrained
   memory bank (:class:`~.residuals.ResidualMemory`, Eq. 4), and prepares *token pools*:
   the normal images and, in the supervised setting, a few real anomalous images. A pool
   stores each token's three nearest memory rows (leave-one-image-out for training images,
   see :mod:`.token_augment`), the share of anomalous pixels per block (so it can be
   labelled at any eps+ / eps-, Eq. 14) and the PCFs, on the host (see memory below).
2. Each iteration draws ``b1`` normal and ``b3`` real images from the pools and makes
   ``b2`` synthetic anomalies afresh from random normal images
   (:func:`cutswap_lib.semirest.synthetic.synthetic_anomalies`, Sec. 3.2.3, as MemSeg's data
   loader does), forms their residual tokens with the k-NN augmentation (Eq. 12), cuts them
   into sliding windows (Eq. 8) and keeps a fraction ``p`` of the windows, and takes one
   AdamW step on the focal loss (Eq. 11); a weight average (:mod:`.ema`) is the final model.
   Token dropout (Eq. 13) is a semi-supervised hyper-parameter in the paper ("As to the
   semi-supervised learning, the hyperparameters v, alpha, Gamma and M are set to 50 %,
   25 %, 0.5 and 3"), so ``fit`` leaves it off unless ``dropout_outside_semi`` is set.
3. ``predict`` computes plain residuals (1st neighbour, Eq. 5-6), runs every window through
   the averaged Swin, bags the window maps (Eq. 10), upsamples bilinearly "to the same
   size as the ground-truth" (``output_size``; the image's size by default) and smooths
   with a Gaussian of sigma 4. The image score is the map's maximum.

**Memory.** Only the current iteration's windows go to the device. The normal pool's PCFs
stay on the host in float32 while the pool fits ``pool_budget_gb``, in float16 while half
of that fits, and beyond that are recomputed from the images for the drawn images only
(a backbone pass of ``b1`` images per iteration): the pool then costs the neighbour
indices and block shares (about 50 KB per 512 px image). The memory bank is chosen the
same way: from a float32 buffer of every image's PCFs while that fits the budget, and past
it from PCFs computed again at each pass (``_normal_pool``), so the run's host memory no
longer grows with the PCFs of every image. Fresh synthetic anomalies need no pool at all;
``synthetic_per_image = k`` keeps the course's earlier fixed pool of ``k`` per image.

Open points of the paper, chosen here and made parameters: the number of iterations
(not stated), gradient clipping at 1.0 and EMA decay 0.999 (the public reference code's
values) with the course's warm-up (:mod:`.ema`), the leave-one-image-out memory search for
training images, labels kept under token dropout, fresh synthetic anomalies per iteration.
Memory-only choices of the course (they change no loss or gradient beyond float rounding and
the stochastic-depth draws): ``checkpoint_blocks`` and ``window_chunks`` (on in the paper
preset, so that a 512 px step fits a 16 GB GPU; off in :meth:`SemiRESTConfig.cpu`) and
``pool_budget_gb``: 0 in the paper preset, so the normal PCFs are recomputed for the drawn
images (a WideResNet50 pass of ``b1 = 4`` images at 512 px is 0.38 TFLOP, under 3 % of a
training step's 14.8, by the planner's count) and host memory stays flat in the number of
training images; 2 GiB in the CPU preset, whose small Swin makes that pass a large share.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel
from torchvision.transforms.functional import gaussian_blur
from tqdm.auto import tqdm

from ..coreset import RecomputedRows
from ..files import FolderLock
from .checkpoints import SaveSchedule, newest_training_state, restore_training_state, save_training_state
from .ema import warmup_ema
from .synthetic import synthetic_anomalies
from .labels import anomalous_share, labels_from_share
from .losses import IGNORE, focal_loss
from .residuals import ResidualMemory, elementwise_residual
from .swin import TokenSwin
from .token_augment import k_nearest_memory, knn_residuals, token_dropout
from .windows import bag_windows, extract_windows, window_corners

Tensor = torch.Tensor


@dataclasses.dataclass
class SemiRESTConfig:
    """Sizes and hyper-parameters; defaults are the paper's unsupervised setting (Sec. 4.2)."""

    mu: int = 32  # sliding window, tokens
    step: int = 8  # s, window step; step = mu: no overlap, i.e. no bagging (Table 6)
    embed_dim: int = 1024
    depth: int = 4
    num_heads: int = 32
    window: int = 8  # Swin attention window inside a sliding window
    iterations: int = 2000  # not stated in the paper
    lr: float = 1e-4
    weight_decay: float = 0.05
    ema_decay: float = 0.999
    ema_warmup: float | None = 10.0  # decay_t = min(decay, (1 + t) / (warmup + t)), see .ema; None: plain EMA
    grad_clip: float = 1.0
    window_fraction: float = 0.25  # p
    b1: int = 4  # normal images per iteration
    b2: int = 2  # synthetic anomalous images per iteration
    b3: int = 0  # real anomalous images per iteration (supervised)
    eps_plus: float = 0.5  # Eq. (14)
    eps_minus: float = 0.08
    focal_alpha: float = 0.25
    focal_gamma: float = 4.0
    knn: bool = True  # Eq. (12); False: always the 1st neighbour, delta = 1
    knn_thresholds: tuple[float, float] = (0.5, 0.8)
    delta_sigma: float = 0.2
    delta_clip: float = 0.223
    dropout: float = 0.25  # alpha of Eq. (13); the paper's semi-supervised setting uses it
    dropout_outside_semi: bool = False  # course variant: token dropout in unsupervised / supervised training too
    residual: str = "square"  # Eq. (6); "abs" for Table 6's ABS rows
    synthetic_kinds: tuple[str, ...] = ("texture", "self")  # MemSeg's two kinds; "colour" is the course's extra
    synthetic_per_image: int | None = None  # None: b2 fresh anomalies per iteration; k: a fixed pool of k per image
    pool_budget_gb: float = 0.0  # host memory for the normal pool's PCFs before they are recomputed (see below)
    checkpoint_blocks: bool = True  # recompute the Swin blocks' activations in the backward (memory, not numbers)
    window_chunks: int = 2  # a step's windows through the Swin in this many parts (memory, not numbers)
    inference_step: int | None = None  # window step at inference; None: ``step`` (mu: Table 6's "no bagging")
    sigma: float = 4.0  # Gaussian smoothing of the upsampled map
    seed: int = 0

    @classmethod
    def supervised(cls, **overrides) -> "SemiRESTConfig":
        """Sec. 4.2, supervised: eps+ 25 %, b1 = b2 = b3 = 2, lr 1e-4, p = 1/4."""
        return cls(**{"eps_plus": 0.25, "b1": 2, "b2": 2, "b3": 2, **overrides})

    @classmethod
    def cpu(cls, **overrides) -> "SemiRESTConfig":
        """A 2-core CPU profile for 224 px toy images (28 x 28 tokens at stride 8).

        The paper's 512 px images give 64 x 64 tokens, windows of 32 every 8 (25 windows,
        up to 16 per token); here windows of 16 every 4 keep those proportions on 28 x 28
        (16 windows, up to 16 per token). A narrower Swin (128 channels, 4 heads) and
        fewer iterations keep training to minutes. With so small a Swin a backbone pass is a
        large share of an iteration, so the normal PCFs are held (up to 2 GiB), and the memory
        choices of the paper preset (block checkpointing, windows in parts) are off.
        """
        return cls(**{"mu": 16, "step": 4, "embed_dim": 128, "num_heads": 4, "iterations": 400,
                      "lr": 3e-4, "ema_decay": 0.99, "checkpoint_blocks": False, "window_chunks": 1,
                      "pool_budget_gb": 2.0, **overrides})


@dataclasses.dataclass
class TokenPool:
    """Training images as tokens, on the host.

    ``neighbours`` ``(N, h, w, 3)``: each token's three nearest memory rows; ``labels``
    ``(N, h, w)``: block labels (Eq. 14 or 15); ``share`` ``(N, h, w)``: the share of
    anomalous pixels per block, from which :meth:`relabelled` makes labels at other
    thresholds (None: labels that do not come from masks, e.g. boxes); ``pcf`` ``(N, h, w,
    d)``: the PCFs (float32 or float16), or None when they are recomputed from ``images``
    ``(N, 3, H, W)`` per draw.
    """

    neighbours: Tensor
    labels: Tensor
    share: Tensor | None = None
    pcf: Tensor | None = None
    images: Tensor | None = None

    def __len__(self) -> int:
        return self.neighbours.shape[0]

    def relabelled(self, eps_plus: float, eps_minus: float) -> "TokenPool":
        """The same tokens with Eq. (14)'s labels at ``eps_plus`` / ``eps_minus`` (a new pool sharing the tensors)."""
        if self.share is None:
            raise ValueError("this pool's labels do not come from pixel masks; it cannot be relabelled")
        return dataclasses.replace(self, labels=labels_from_share(self.share, eps_plus, eps_minus))


class SemiREST:
    """Position-constrained residuals + sliding Swin with bagging (SemiREST, unsupervised / supervised).

    ``memory``: a :class:`~.residuals.ResidualMemory` (its backbone, lambda_PE and coreset
    ratio), or None for one built with ``memory_kwargs``. ``config``: :class:`SemiRESTConfig`.
    ``label_eps``: the (eps+, eps-) at which synthetic anomalies are labelled (Eq. 14); the
    config's by default, the semi-supervised setting's during :func:`.semi.finetune_with_boxes`.
    """

    def __init__(self, memory: ResidualMemory | None = None, config: SemiRESTConfig | None = None,
                 progress: bool = True, **memory_kwargs):
        self.memory = memory or ResidualMemory(progress=progress, **memory_kwargs)
        self.config = config or SemiRESTConfig()
        self.device = self.memory.device
        self.progress = progress
        self.model: TokenSwin | None = None
        self.ema: AveragedModel | None = None
        self.history: list[dict] = []
        self.pools: dict[str, TokenPool] = {}
        self.timings: dict[str, float] = {}
        self.label_eps = (self.config.eps_plus, self.config.eps_minus)
        self.synthetic_source: dict | None = None  # normal images (+ foreground, texture sources) for fresh anomalies

    # ------------------------------------------------------------------ pools
    def _features(self, images: Tensor, batch_size: int = 16) -> Tensor:
        """Images ``(N, 3, H, W)`` -> plain patch features ``(N, d_f, h, w)`` on the device (Eq. 1)."""
        parts = [self.memory.features.patch_features(x.to(self.device)) for x in images.split(batch_size)]
        return torch.cat(parts)

    def _pcf(self, features: Tensor) -> Tensor:
        """Plain features ``(n, d, h, w)`` -> PCFs ``(n, h, w, d)`` on the device (Eq. 2)."""
        return self.memory.features.constrain(features.to(self.device)).permute(0, 2, 3, 1)

    def _neighbours(self, pcf: Tensor, exclude: Tensor) -> Tensor:
        """PCFs ``(n, h, w, d)`` -> their three nearest memory rows ``(n, h, w, 3)``, skipping image ``exclude`` ``(n,)``."""
        n, h, w, d = pcf.shape
        _, neighbours = k_nearest_memory(pcf.reshape(-1, d), self.memory.memory_bank, k=3,
                                         exclude=exclude.to(self.device).repeat_interleave(h * w),
                                         bank_source=self.memory.bank_source)  # (n*h*w, 3)
        return neighbours.reshape(n, h, w, 3)

    def _share(self, masks: Tensor | None, n: int) -> Tensor:
        """Masks ``(n, 1, H, W)`` (None: all normal) -> anomalous share per block ``(n, h, w)``."""
        if masks is None:
            return torch.zeros(n, *self.grid)
        return anomalous_share(masks, self.grid).cpu()

    def _keep_pcf(self, n: int, d: int) -> torch.dtype | None:
        """The dtype the normal pool's PCFs are kept in on the host, or None (recomputed per draw)."""
        h, w = self.grid
        size32 = n * h * w * d * 4
        budget = self.config.pool_budget_gb * 2**30
        return torch.float32 if size32 <= budget else torch.float16 if size32 // 2 <= budget else None

    def _pool(self, images: Tensor | None, features: Tensor, masks: Tensor | None, exclude: Tensor,
              labels: Tensor | None = None, keep_dtype: torch.dtype | None = torch.float32,
              batch_size: int = 16) -> TokenPool:
        """Plain features ``(N, d, h, w)`` -> a :class:`TokenPool` on the host (neighbours skip ``exclude`` ``(N,)``).

        Block labels come from ``masks`` (Eq. 14, at ``label_eps``), or are given as ``labels``
        ``(N, h, w)``. ``keep_dtype`` None keeps ``images`` instead of the PCFs.
        """
        n = features.shape[0]
        neighbours, pcfs = [], []
        for start in range(0, n, batch_size):
            pcf = self._pcf(features[start:start + batch_size])  # (b, h, w, d)
            neighbours.append(self._neighbours(pcf, exclude[start:start + batch_size]).cpu())
            if keep_dtype is not None:
                pcfs.append(pcf.to("cpu", keep_dtype))
        share = None if labels is not None else self._share(masks, n)
        if labels is None:
            labels = labels_from_share(share, *self.label_eps)
        return TokenPool(torch.cat(neighbours), labels.cpu(), share,
                         torch.cat(pcfs).contiguous() if keep_dtype is not None else None,
                         None if keep_dtype is not None else images)

    def prepare(self, train_images: Tensor, foreground: Tensor | None = None, sources: Tensor | None = None,
                anomalous: tuple[Tensor, Tensor] | None = None) -> "SemiREST":
        """Memory bank and token pools from normal images ``(N, 3, H, W)`` (+ real anomalies, masks)."""
        cfg = self.config
        t0 = time.perf_counter()
        self.pools = {"normal": self._normal_pool(train_images)}
        ids = torch.arange(len(train_images))
        keep = self.pools["normal"].pcf.dtype if self.pools["normal"].pcf is not None else None
        self.synthetic_source = {"images": train_images, "foreground": foreground, "sources": sources}
        self._synthetic_gen = torch.Generator().manual_seed(cfg.seed)
        if cfg.synthetic_per_image:  # the fixed pool: k anomalies per normal image, made once
            parts = []
            for _ in tqdm(range(cfg.synthetic_per_image), desc="synthetic anomalies", disable=not self.progress,
                          leave=False):
                images, masks = synthetic_anomalies(train_images, self._synthetic_gen, foreground=foreground,
                                                    sources=sources, kinds=cfg.synthetic_kinds)
                parts.append(self._pool(images, self._features(images), masks, ids, keep_dtype=keep))
            self.pools["synthetic"] = TokenPool(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                                                   for f in dataclasses.fields(TokenPool)
                                                   if getattr(parts[0], f.name) is not None})
        if anomalous is not None and len(anomalous[0]):
            images, masks = anomalous
            self.pools["real"] = self._pool(images, self._features(images), masks, torch.full((len(images),), -1))
        self.timings["prepare"] = time.perf_counter() - t0
        return self

    def _normal_pool(self, train_images: Tensor, batch_size: int = 16) -> TokenPool:
        """Memory bank (Eq. 4) and the normal pool, streaming: one batch of features on the device at a time.

        While the float32 PCFs of every image fit ``pool_budget_gb`` they are held once, on the
        host, as the blocks the memory bank's coreset reads (:meth:`.residuals.ResidualMemory.fit_pcf_rows`),
        and the pool keeps them. Past it they are never held whole: the coreset and the gathering
        of the bank's rows compute them again (:class:`~cutswap_lib.patchcore.RecomputedRows`), and
        so does the pass that finds each token's neighbours, which fills the pool's float16 PCFs
        when half of the float32 size fits, or none (recomputed per draw). The bank, the
        neighbours and the pool are the same either way; the price is backbone passes: three
        over the training images instead of one (four on a CPU, where the coreset keeps its
        projection in float16 and reads the rows once more for their mean), so that host
        memory no longer grows with the PCFs.
        """
        n, batches, ids = len(train_images), train_images.split(batch_size), torch.arange(len(train_images))
        first = self._pcf(self._features(batches[0]))  # (b, h, w, d) on the device
        _, h, w, d = first.shape
        self.grid = (h, w)
        keep = self._keep_pcf(n, d)

        def pcf_batches(desc: str, first_batch: int = 0):  # (start, PCFs (b, h, w, d) on the device), computed now
            for i in tqdm(range(first_batch, len(batches)), desc=desc, disable=not self.progress, leave=False):
                yield i * batch_size, self._pcf(self._features(batches[i]))

        if keep == torch.float32:  # held: one host buffer, filled a batch at a time, never copied whole
            pcf = torch.empty(n, h, w, d, dtype=torch.float32)
            pcf[:len(first)] = first.cpu()
            del first
            for start, block in pcf_batches("normal PCFs", first_batch=1):
                pcf[start:start + len(block)] = block.cpu()
            blocks = [pcf[i:i + batch_size].reshape(-1, d) for i in range(0, n, batch_size)]  # views
            self.memory.fit_pcf_rows(blocks, self.grid)  # the coreset search on the device, the rows stay on the host
            del blocks
            neighbours = torch.cat([self._neighbours(pcf[i:i + batch_size].to(self.device),
                                                     ids[i:i + batch_size]).cpu() for i in range(0, n, batch_size)])
        else:  # recomputed at every pass
            del first
            rows = RecomputedRows(lambda: (block.reshape(-1, d) for _, block in pcf_batches("normal PCFs (coreset)")),
                                  n * h * w, d, self.device)
            self.memory.fit_pcf_rows(rows, self.grid)
            pcf = None if keep is None else torch.empty(n, h, w, d, dtype=keep)
            parts = []
            for start, block in pcf_batches("normal PCFs (neighbours)"):
                parts.append(self._neighbours(block, ids[start:start + len(block)]).cpu())
                if pcf is not None:
                    pcf[start:start + len(block)] = block.to("cpu", keep)
            neighbours = torch.cat(parts)
        share = torch.zeros(n, h, w)
        return TokenPool(neighbours, labels_from_share(share, *self.label_eps), share, pcf,
                         None if keep is not None else train_images)

    def fresh_synthetic(self, count: int) -> TokenPool:
        """``count`` synthetic anomalies made now from random normal images, as a pool (PCFs kept)."""
        src = self.synthetic_source
        if src is None:
            raise RuntimeError("SemiREST: call prepare() or fit() before drawing synthetic anomalies")
        index = torch.randint(len(src["images"]), (count,), generator=self._synthetic_gen)  # (count,)
        fg = src["foreground"][index] if src["foreground"] is not None else None
        sources = src["sources"] if src["sources"] is not None else src["images"]  # else: other training images
        images, masks = synthetic_anomalies(src["images"][index], self._synthetic_gen, foreground=fg,
                                            sources=sources, kinds=self.config.synthetic_kinds)
        return self._pool(images, self._features(images), masks, index)

    # ------------------------------------------------------------------ training
    def _tokens(self, pool: TokenPool, index: Tensor, gen: torch.Generator, augment: bool) -> Tensor:
        """Residual tokens ``(n, h, w, d)`` of pool images ``index``: Eq. (12) when ``augment``, else Eq. (5)-(6)."""
        cfg = self.config
        index = index.cpu()
        if pool.pcf is not None:
            pcf = pool.pcf[index].to(self.device, torch.float32)  # (n, h, w, d)
        else:  # recomputed for just these images (pool_budget_gb exceeded)
            pcf = self._pcf(self._features(pool.images[index]))
        neighbours = pool.neighbours[index].to(self.device)  # (n, h, w, 3)
        bank = self.memory.memory_bank
        if augment and cfg.knn:
            return knn_residuals(pcf, bank, neighbours, cfg.residual, gen, cfg.knn_thresholds,
                                 cfg.delta_sigma, cfg.delta_clip)
        return elementwise_residual(pcf - bank[neighbours[..., 0]], cfg.residual)

    def _draw(self, pool: TokenPool, count: int, fraction: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """``count`` random images of a pool ``(count,)`` and, per image, a fraction of its window corners ``(count, k, 2)``."""
        corners = window_corners(*self.grid, self.config.mu, self.config.step)  # (Q, 2)
        per_image = max(1, round(fraction * len(corners)))
        index = torch.randint(len(pool), (count,), generator=gen, device=self.device)  # (count,)
        chosen = torch.stack([torch.randperm(len(corners), generator=gen, device=self.device)[:per_image]
                              for _ in range(count)]).cpu()  # (count, k)
        return index, corners[chosen]  # (count,), (count, k, 2)

    def windows_from_pool(self, pool: TokenPool, index: Tensor, corners: Tensor, gen: torch.Generator,
                          augment: bool = True) -> tuple[Tensor, Tensor]:
        """Windows ``(count*k, mu, mu, d)`` of pool images at ``corners`` ``(count, k, 2)`` and their labels."""
        mu = self.config.mu
        tokens = self._tokens(pool, index, gen, augment)  # (count, h, w, d)
        lab = pool.labels[index.cpu()].to(self.device).unsqueeze(-1) + 2  # (count, h, w, 1); 0 marks padding below
        windows = [extract_windows(tokens[i:i + 1], corners[i], mu)[0] for i in range(len(index))]  # (k, mu, mu, d)
        labels = [extract_windows(lab[i:i + 1], corners[i], mu)[0, ..., 0] - 2 for i in range(len(index))]
        labels = torch.cat(labels)
        return torch.cat(windows), torch.where(labels == -2, IGNORE, labels)  # padded tokens: IGNORE

    def _sample_windows(self, gen: torch.Generator, counts: dict[str, int] | None = None,
                        fraction: float | None = None) -> tuple[Tensor, Tensor]:
        """One iteration's supervised batch: windows ``(M, mu, mu, d)`` and block labels ``(M, mu, mu)``.

        ``counts`` maps pool names to images per iteration; "synthetic" without a fixed pool
        makes that many anomalies afresh (labelled at ``label_eps``).
        """
        cfg = self.config
        counts = counts or {"normal": cfg.b1, "synthetic": cfg.b2, "real": cfg.b3}
        windows, labels = [], []
        for name, count in counts.items():
            pool = self.pools.get(name)
            if count == 0 or (pool is None and name != "synthetic"):
                continue
            if name == "synthetic" and pool is None:
                pool = self.fresh_synthetic(count)
            index, corners = self._draw(pool, count, fraction or cfg.window_fraction, gen)
            w, lab = self.windows_from_pool(pool, index, corners, gen)
            windows.append(w)
            labels.append(lab)
        return torch.cat(windows), torch.cat(labels)

    def fit(self, train_images: Tensor, foreground: Tensor | None = None, sources: Tensor | None = None,
            anomalous: tuple[Tensor, Tensor] | None = None, iterations: int | None = None, *,
            checkpoint_dir: Path | None = None, checkpoint_every: int = 200,
            checkpoint_seconds: float | None = 300.0, fingerprint: str | None = None) -> list[dict]:
        """Prepare (if not done) and train the sliding Swin; returns the per-iteration history.

        ``checkpoint_dir``: write the training state every ``checkpoint_every`` iterations, at least
        every ``checkpoint_seconds`` and at the end (:class:`.checkpoints.SaveSchedule`), and
        continue from the newest one found there, with the same
        result as an uninterrupted run; ``fingerprint`` (of the data, the caller's) must match
        the folder's. The folder is locked while training (:class:`cutswap_lib.files.FolderLock`).
        """
        schedule = SaveSchedule(checkpoint_every, checkpoint_seconds)
        lock = FolderLock(checkpoint_dir, purpose="SemiREST training") if checkpoint_dir else None
        with lock or contextlib.nullcontext():
            return self._fit(train_images, foreground, sources, anomalous, iterations, checkpoint_dir,
                             schedule, fingerprint)

    def _fit(self, train_images, foreground, sources, anomalous, iterations, checkpoint_dir, schedule,
             fingerprint) -> list[dict]:
        cfg = self.config
        if not self.pools:
            self.prepare(train_images, foreground, sources, anomalous)
        if cfg.b3 and "real" not in self.pools:
            raise ValueError("config.b3 > 0 asks for real anomalous images: pass anomalous=(images, masks)")
        torch.manual_seed(cfg.seed)
        d = self.memory.memory_bank.shape[1]
        self.model = TokenSwin(d, cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.window,
                               checkpoint_blocks=cfg.checkpoint_blocks).to(self.device)
        self.ema = warmup_ema(self.model, cfg.ema_decay, cfg.ema_warmup)
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        dropout = cfg.dropout if cfg.dropout_outside_semi else 0.0
        total = iterations or cfg.iterations
        self.history = []
        generators = {"windows": gen, "synthetic": self._synthetic_gen}
        start = 0
        state = newest_training_state(checkpoint_dir, cfg, fingerprint, map_location=self.device)
        if state is not None:
            start, self.history = restore_training_state(state, model=self.model, ema=self.ema,
                                                         optimizer=optimizer, generators=generators)
        t0 = time.perf_counter()
        bar = tqdm(range(start, total), desc="train SemiREST", disable=not self.progress, initial=start, total=total)
        for it in bar:
            windows, labels = self._sample_windows(gen)  # (M, mu, mu, d), (M, mu, mu)
            record = self.train_step(optimizer, token_dropout(windows, dropout, gen), labels)
            self.history.append({"iteration": it + 1, **record})
            if it % 10 == 0:
                bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}")
            if checkpoint_dir is not None and schedule.due(it + 1, total):
                save_training_state(checkpoint_dir, iteration=it + 1, model=self.model, ema=self.ema,
                                    optimizer=optimizer, generators=generators, history=self.history,
                                    config=cfg, fingerprint=fingerprint)
        self.timings["train"] = time.perf_counter() - t0
        return self.history

    def train_step(self, optimizer: torch.optim.Optimizer, windows: Tensor, labels: Tensor,
                   extra_loss=None) -> dict:
        """One AdamW step on the focal loss (Eq. 11) of ``windows`` ``(M, mu, mu, d)``, then the EMA update.

        ``extra_loss``: a callable returning ``(loss, parts)`` added to the focal loss (the
        semi-supervised part of Fig. 3). Returns the step's record (loss, accuracy, ...).
        With ``config.window_chunks = k > 1`` the windows go through the Swin in ``k`` parts,
        each backward right after its forward, and the focal loss divides by the whole step's
        sets (:func:`.losses.focal_loss`'s ``set_sizes``): the same loss and gradient, up to float
        rounding and the stochastic-depth draws, with a ``k``-th of the activations alive.
        """
        cfg = self.config
        self.model.train()
        optimizer.zero_grad(set_to_none=True)
        n = max(1, min(cfg.window_chunks, len(windows)))
        sizes = (int((labels == 0).sum()), int((labels == 1).sum())) if n > 1 else None  # the step's Z-, Z+
        all_logits, loss_f, parts = [], 0.0, {}
        for i, (w, y) in enumerate(zip(windows.tensor_split(n), labels.tensor_split(n))):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                logits = self.model(w)  # (m, mu, mu, 2)
            part = focal_loss(logits.float(), y, cfg.focal_alpha, cfg.focal_gamma, sizes)
            loss_f = loss_f + part.detach()
            all_logits.append(logits.detach())
            if i == n - 1 and extra_loss is not None:
                extra, parts = extra_loss()
                (part + extra).backward()
                loss = loss_f + extra.detach()
            else:
                part.backward()  # gradients add up over the parts; each part's graph is freed here
                loss = loss_f
        logits = torch.cat(all_logits)  # (M, mu, mu, 2)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        optimizer.step()
        self.ema.update_parameters(self.model)
        known = labels != IGNORE
        pred = logits.argmax(-1)
        return {"loss": loss.item(), "loss_focal": loss_f.item(),
                "accuracy": float((pred[known] == labels[known]).float().mean()),
                "anomalous_recall": float((pred[labels == 1] == 1).float().mean())
                if bool((labels == 1).any()) else math.nan, **parts}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def token_map(self, residuals: Tensor, model: torch.nn.Module | None = None,
                  window_batch: int = 64) -> Tensor:
        """SemiREST Eq. (8)-(10): residual tokens ``(B, h, w, d)`` -> bagged anomaly map ``(B, h, w)``.

        Windows every ``inference_step`` tokens (``step`` unless set; ``mu``: side by side, no bagging).
        """
        cfg = self.config
        model = model or (self.ema.module if self.ema is not None else None)
        if model is None:
            raise RuntimeError("SemiREST: call fit() before predicting")
        model.eval()
        b, h, w, d = residuals.shape
        corners = window_corners(h, w, cfg.mu, cfg.inference_step or cfg.step)  # (Q, 2)
        windows = extract_windows(residuals, corners, cfg.mu).reshape(-1, cfg.mu, cfg.mu, d)  # (B*Q, mu, mu, d)
        probs = torch.cat([model.anomaly_probability(x) for x in windows.split(window_batch)])  # (B*Q, mu, mu)
        bagged, _ = bag_windows(probs.reshape(b, len(corners), cfg.mu, cfg.mu), corners, h, w)
        return bagged  # (B, h, w)

    @torch.no_grad()
    def predict(self, images: Tensor, batch_size: int = 16,
                output_size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """Images ``(B, 3, H, W)`` -> image scores ``(B,)`` and pixel maps ``(B, H', W')`` (CPU).

        ``output_size`` ``(H', W')``: the size the token map is upsampled to before the blur,
        e.g. the ground truth's own size (the paper's evaluation); None: the input's ``(H, W)``.
        """
        scores, maps = [], []
        t0 = time.perf_counter()
        for x in images.split(batch_size):
            residuals = self.memory.match_features(self._features(x), self.config.residual).residuals
            tokens = self.token_map(residuals).unsqueeze(1)  # (b, 1, h, w)
            up = upsample_and_smooth(tokens, output_size or tuple(x.shape[-2:]), self.config.sigma)
            maps.append(up[:, 0].cpu())
            scores.append(up.flatten(1).amax(1).cpu())
        self.timings["predict"] = time.perf_counter() - t0
        return torch.cat(scores), torch.cat(maps)


def upsample_and_smooth(maps: Tensor, size: tuple[int, int], sigma: float = 4.0) -> Tensor:
    """Score maps ``(B, 1, h, w)`` -> bilinear to ``size`` ``(H, W)``, then a Gaussian of ``sigma`` pixels."""
    up = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    if sigma > 0:
        radius = int(4 * sigma + 0.5)
        up = gaussian_blur(up, kernel_size=2 * radius + 1, sigma=sigma)
    return up
