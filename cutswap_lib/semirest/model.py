"""SemiREST end to end: residual memory, token pools, training the sliding Swin, bagged prediction.

SemiREST Sec. 3.1-3.2 and 4.2 (unsupervised and supervised settings). Taught in
``notebooks/05_swin_bagging.ipynb``. :class:`SemiREST` ties the pieces together:

1. ``fit`` embeds the normal training images once, builds the position-constrained
   memory bank (:class:`~.residuals.ResidualMemory`, Eq. 4), and prepares three *token
   pools*: the normal images, synthetic anomalies made from them
   (:func:`cutswap_lib.semirest.synthetic.synthetic_anomalies`, Sec. 3.2.3) and, in the supervised
   setting, a few real anomalous images. A pool stores PCFs, each token's three nearest
   memory rows (leave-one-image-out for training images, see :mod:`.token_augment`) and
   block labels (Eq. 14).
2. Each iteration draws ``b1`` normal, ``b2`` synthetic and ``b3`` real images, forms their
   residual tokens with the k-NN augmentation (Eq. 12), cuts them into sliding windows
   (Eq. 8) and keeps a fraction ``p`` of the windows, zeroes tokens by dropout (Eq. 13),
   and takes one AdamW step on the focal loss (Eq. 11); an exponential moving average of
   the weights is the final model.
3. ``predict`` computes plain residuals (1st neighbour, Eq. 5-6), runs every window through
   the averaged Swin, bags the window maps (Eq. 10), upsamples bilinearly to the image and
   smooths with a Gaussian of sigma 4. The image score is the map's maximum.

Open points of the paper, chosen here and made parameters: the number of iterations
(not stated), gradient clipping at 1.0 and EMA decay 0.999 (the public reference code's
values), the leave-one-image-out memory search for training images, labels kept under
token dropout.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.transforms.functional import gaussian_blur
from tqdm.auto import tqdm

from .synthetic import synthetic_anomalies
from .labels import block_labels
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
    dropout: float = 0.25  # Eq. (13)
    residual: str = "square"  # Eq. (6); "abs" for Table 6's ABS rows
    synthetic_per_image: int = 4  # synthetic anomalies prepared per normal training image
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
        fewer iterations keep training to minutes.
        """
        return cls(**{"mu": 16, "step": 4, "embed_dim": 128, "num_heads": 4, "iterations": 400,
                      "lr": 3e-4, "ema_decay": 0.99, **overrides})


@dataclasses.dataclass
class TokenPool:
    """Training images as tokens: PCFs ``(N, h, w, d)``, memory neighbours ``(N, h, w, 3)``, labels ``(N, h, w)``."""

    pcf: Tensor
    neighbours: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.pcf.shape[0]


class SemiREST:
    """Position-constrained residuals + sliding Swin with bagging (SemiREST, unsupervised / supervised).

    ``memory``: a :class:`~.residuals.ResidualMemory` (its backbone, lambda_PE and coreset
    ratio), or None for one built with ``memory_kwargs``. ``config``: :class:`SemiRESTConfig`.
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

    # ------------------------------------------------------------------ pools
    def _features(self, images: Tensor, batch_size: int = 16) -> Tensor:
        """Images ``(N, 3, H, W)`` -> plain patch features ``(N, d_f, h, w)`` (Eq. 1)."""
        parts = [self.memory.features.patch_features(x) for x in images.split(batch_size)]
        return torch.cat(parts)

    def _pool(self, features: Tensor, masks: Tensor | None, exclude: Tensor, eps_plus: float,
              labels: Tensor | None = None) -> TokenPool:
        """Plain features ``(N, d, h, w)`` -> a :class:`TokenPool` (neighbours skip ``exclude`` ``(N,)``).

        Block labels come from ``masks`` (Eq. 14), or are given as ``labels`` ``(N, h, w)``.
        """
        n, d, h, w = features.shape
        pcf = self.memory.features.constrain(features.to(self.device)).permute(0, 2, 3, 1)  # (N, h, w, d)
        _, neighbours = k_nearest_memory(pcf.reshape(-1, d), self.memory.memory_bank, k=3,
                                         exclude=exclude.to(self.device).repeat_interleave(h * w),
                                         bank_source=self.memory.bank_source)  # (N*h*w, 3)
        if labels is not None:
            pass
        elif masks is None:
            labels = torch.zeros(n, h, w, dtype=torch.long)
        else:
            labels = block_labels(masks, (h, w), eps_plus, self.config.eps_minus)  # (N, h, w)
        return TokenPool(pcf.contiguous(), neighbours.reshape(n, h, w, 3), labels.to(self.device))

    def prepare(self, train_images: Tensor, foreground: Tensor | None = None, sources: Tensor | None = None,
                anomalous: tuple[Tensor, Tensor] | None = None) -> "SemiREST":
        """Memory bank and token pools from normal images ``(N, 3, H, W)`` (+ real anomalies, masks)."""
        cfg = self.config
        t0 = time.perf_counter()
        features = self._features(train_images)  # (N, d, h, w)
        self.memory.fit_features(features)
        self.grid = tuple(features.shape[-2:])
        ids = torch.arange(len(train_images))
        self.pools = {"normal": self._pool(features, None, ids, cfg.eps_plus)}
        gen = torch.Generator().manual_seed(cfg.seed)
        syn_features, syn_masks, syn_ids = [], [], []
        for _ in tqdm(range(cfg.synthetic_per_image), desc="synthetic anomalies", disable=not self.progress,
                      leave=False):
            images, masks = synthetic_anomalies(train_images, gen, foreground=foreground, sources=sources)
            syn_features.append(self._features(images))
            syn_masks.append(masks)
            syn_ids.append(ids)
        if syn_features:
            self.pools["synthetic"] = self._pool(torch.cat(syn_features), torch.cat(syn_masks),
                                                 torch.cat(syn_ids), cfg.eps_plus)
        if anomalous is not None and len(anomalous[0]):
            images, masks = anomalous
            self.pools["real"] = self._pool(self._features(images), masks,
                                            torch.full((len(images),), -1), cfg.eps_plus)
        self.timings["prepare"] = time.perf_counter() - t0
        return self

    # ------------------------------------------------------------------ training
    def _tokens(self, pool: TokenPool, index: Tensor, gen: torch.Generator, augment: bool) -> Tensor:
        """Residual tokens ``(n, h, w, d)`` of pool images ``index``: Eq. (12) when ``augment``, else Eq. (5)-(6)."""
        cfg = self.config
        pcf, neighbours = pool.pcf[index], pool.neighbours[index]  # (n, h, w, d), (n, h, w, 3)
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
        lab = pool.labels[index].unsqueeze(-1) + 2  # (count, h, w, 1); 0 marks padding below
        windows = [extract_windows(tokens[i:i + 1], corners[i], mu)[0] for i in range(len(index))]  # (k, mu, mu, d)
        labels = [extract_windows(lab[i:i + 1], corners[i], mu)[0, ..., 0] - 2 for i in range(len(index))]
        labels = torch.cat(labels)
        return torch.cat(windows), torch.where(labels == -2, IGNORE, labels)  # padded tokens: IGNORE

    def _sample_windows(self, gen: torch.Generator, counts: dict[str, int] | None = None,
                        fraction: float | None = None) -> tuple[Tensor, Tensor]:
        """One iteration's supervised batch: windows ``(M, mu, mu, d)`` and block labels ``(M, mu, mu)``."""
        cfg = self.config
        counts = counts or {"normal": cfg.b1, "synthetic": cfg.b2, "real": cfg.b3}
        windows, labels = [], []
        for name, count in counts.items():
            pool = self.pools.get(name)
            if pool is None or count == 0:
                continue
            index, corners = self._draw(pool, count, fraction or cfg.window_fraction, gen)
            w, lab = self.windows_from_pool(pool, index, corners, gen)
            windows.append(w)
            labels.append(lab)
        return torch.cat(windows), torch.cat(labels)

    def fit(self, train_images: Tensor, foreground: Tensor | None = None, sources: Tensor | None = None,
            anomalous: tuple[Tensor, Tensor] | None = None, iterations: int | None = None) -> list[dict]:
        """Prepare (if not done) and train the sliding Swin; returns the per-iteration history."""
        cfg = self.config
        if not self.pools:
            self.prepare(train_images, foreground, sources, anomalous)
        if cfg.b3 and "real" not in self.pools:
            raise ValueError("config.b3 > 0 asks for real anomalous images: pass anomalous=(images, masks)")
        torch.manual_seed(cfg.seed)
        d = self.memory.memory_bank.shape[1]
        self.model = TokenSwin(d, cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.window).to(self.device)
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        use_amp = self.device.type == "cuda"
        total = iterations or cfg.iterations
        self.history = []
        t0 = time.perf_counter()
        bar = tqdm(range(total), desc="train SemiREST", disable=not self.progress)
        for it in bar:
            self.model.train()
            windows, labels = self._sample_windows(gen)  # (M, mu, mu, d), (M, mu, mu)
            windows = token_dropout(windows, cfg.dropout, gen)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                logits = self.model(windows)  # (M, mu, mu, 2)
            loss = focal_loss(logits.float(), labels, cfg.focal_alpha, cfg.focal_gamma)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            optimizer.step()
            self.ema.update_parameters(self.model)
            known = labels != IGNORE
            pred = logits.argmax(-1)
            record = {"iteration": it + 1, "loss": loss.item(),
                      "accuracy": float((pred[known] == labels[known]).float().mean()),
                      "anomalous_recall": float((pred[labels == 1] == 1).float().mean())
                      if bool((labels == 1).any()) else math.nan}
            self.history.append(record)
            if it % 10 == 0:
                bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}")
        self.timings["train"] = time.perf_counter() - t0
        return self.history

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def token_map(self, residuals: Tensor, model: torch.nn.Module | None = None,
                  window_batch: int = 64) -> Tensor:
        """SemiREST Eq. (8)-(10): residual tokens ``(B, h, w, d)`` -> bagged anomaly map ``(B, h, w)``."""
        cfg = self.config
        model = model or (self.ema.module if self.ema is not None else None)
        if model is None:
            raise RuntimeError("SemiREST: call fit() before predicting")
        model.eval()
        b, h, w, d = residuals.shape
        corners = window_corners(h, w, cfg.mu, cfg.step)  # (Q, 2)
        windows = extract_windows(residuals, corners, cfg.mu).reshape(-1, cfg.mu, cfg.mu, d)  # (B*Q, mu, mu, d)
        probs = torch.cat([model.anomaly_probability(x) for x in windows.split(window_batch)])  # (B*Q, mu, mu)
        bagged, _ = bag_windows(probs.reshape(b, len(corners), cfg.mu, cfg.mu), corners, h, w)
        return bagged  # (B, h, w)

    @torch.no_grad()
    def predict(self, images: Tensor, batch_size: int = 16) -> tuple[Tensor, Tensor]:
        """Images ``(B, 3, H, W)`` -> image scores ``(B,)`` and pixel maps ``(B, H, W)`` (CPU)."""
        scores, maps = [], []
        t0 = time.perf_counter()
        for x in images.split(batch_size):
            residuals = self.memory.match_features(self._features(x), self.config.residual).residuals
            tokens = self.token_map(residuals).unsqueeze(1)  # (b, 1, h, w)
            up = F.interpolate(tokens, size=x.shape[-2:], mode="bilinear", align_corners=False)
            if self.config.sigma > 0:
                radius = int(4 * self.config.sigma + 0.5)
                up = gaussian_blur(up, kernel_size=2 * radius + 1, sigma=self.config.sigma)
            maps.append(up[:, 0].cpu())
            scores.append(up.flatten(1).amax(1).cpu())
        self.timings["predict"] = time.perf_counter() - t0
        return torch.cat(scores), torch.cat(maps)
