"""Semi-supervised SemiREST: fine-tune the unsupervised model with box labels through MixMatch.

SemiREST Sec. 3.3-3.4 and Fig. 3. Taught in ``notebooks/06_mixmatch_boxes.ipynb``. The
model is first trained unsupervised (:meth:`.model.SemiREST.fit`: normal images and
synthetic anomalies, focal loss). :func:`finetune_with_boxes` then continues from its
averaged weights with both parts of Fig. 3 in every iteration:

* the full-supervision part (blue): ``b1`` normal and ``b2`` synthetic images, a fraction
  ``p`` of their windows, focal loss Eq. (11);
* the semi-supervision part (red): ``b3`` box-labelled images, the same fraction of their
  windows, :func:`.mixmatch.mixmatch_loss` (Algorithm 1) with ``lambda_u`` ramped over
  400 steps;

AdamW at the semi-supervised learning rate (3e-5), a fresh exponential moving average of
the weights as the final model. Block labels of the boxed images come from Eq. (15)
(:func:`.boxes.box_block_labels`).
"""

from __future__ import annotations

import time

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .boxes import box_block_labels
from .losses import focal_loss
from .mixmatch import MixMatchConfig, mixmatch_loss
from .model import SemiREST
from .token_augment import token_dropout

Tensor = torch.Tensor


def add_box_pool(model: SemiREST, images: Tensor, pixel_labels: Tensor, upsilon: float = 0.5) -> None:
    """Box-labelled images ``(B, 3, H, W)`` with pixel semi-labels ``(B, H, W)`` -> ``model.pools["box"]``."""
    if images.shape[0] != pixel_labels.shape[0] or images.shape[-2:] != pixel_labels.shape[-2:]:
        raise ValueError(f"images {tuple(images.shape)} and pixel labels {tuple(pixel_labels.shape)} do not match")
    features = model._features(images)  # (B, d, h, w)
    labels = box_block_labels(pixel_labels, tuple(features.shape[-2:]), upsilon)  # (B, h, w) Eq. (15)
    model.pools["box"] = model._pool(features, None, torch.full((len(images),), -1),
                                     model.config.eps_plus, labels=labels.to(model.device))


def finetune_with_boxes(model: SemiREST, images: Tensor, pixel_labels: Tensor,
                        config: MixMatchConfig | None = None, progress: bool = True) -> list[dict]:
    """Fine-tune a fitted :class:`SemiREST` with box-labelled images (Fig. 3, red + blue); returns the history."""
    cfg = config or MixMatchConfig()
    if model.ema is None:
        raise RuntimeError("finetune_with_boxes continues from the unsupervised model: call model.fit() first")
    add_box_pool(model, images, pixel_labels, cfg.upsilon)
    model.model.load_state_dict(model.ema.module.state_dict())  # start from the averaged weights
    model.ema = AveragedModel(model.model, multi_avg_fn=get_ema_multi_avg_fn(model.config.ema_decay))
    optimizer = torch.optim.AdamW(model.model.parameters(), lr=cfg.lr, weight_decay=model.config.weight_decay)
    gen = torch.Generator(device=model.device).manual_seed(model.config.seed + 2)
    box_pool = model.pools["box"]
    history = []
    t0 = time.perf_counter()
    for step in tqdm(range(cfg.iterations), desc="MixMatch fine-tuning", disable=not progress):
        model.model.train()
        windows, labels = model._sample_windows(gen, {"normal": cfg.b1, "synthetic": cfg.b2}, cfg.window_fraction)
        loss_f = focal_loss(model.model(token_dropout(windows, model.config.dropout, gen)), labels,
                            model.config.focal_alpha, model.config.focal_gamma)  # blue part, Eq. (11)
        index, corners = model._draw(box_pool, cfg.b3, cfg.window_fraction, gen)
        copies, box_labels = [], None
        for _ in range(cfg.copies):  # M k-NN augmentations of the same windows, Eq. (12)
            w, box_labels = model.windows_from_pool(box_pool, index, corners, gen)
            copies.append(w)
        loss_mix, parts = mixmatch_loss(model.model, copies, box_labels, cfg, step, gen, model.config.dropout)
        loss = loss_f + loss_mix
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if model.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.model.parameters(), model.config.grad_clip)
        optimizer.step()
        model.ema.update_parameters(model.model)
        history.append({"iteration": step + 1, "loss": loss.item(), "loss_focal": loss_f.item(),
                        "loss_x": parts["loss_x"], "loss_u": parts["loss_u"], "lambda_u": parts["lambda_u"]})
    model.timings["finetune_boxes"] = time.perf_counter() - t0
    model.history_semi = history
    return history
