"""Semi-supervised SemiREST: fine-tune the unsupervised model with box labels through MixMatch.

SemiREST Sec. 3.3-3.4 and Fig. 3. Taught in ``notebooks/06_mixmatch_boxes.ipynb``. The
model is first trained unsupervised (:meth:`.model.SemiREST.fit`: normal images and
synthetic anomalies, focal loss). :func:`finetune_with_boxes` then continues from its
averaged weights with both parts of Fig. 3 in every iteration, at the semi-supervised
setting's hyper-parameters (:class:`.mixmatch.MixMatchConfig`, Sec. 4.2):

* the full-supervision part (blue): ``b1`` normal and ``b2`` synthetic images, a fraction
  ``p`` of their windows, focal loss Eq. (11); the synthetic anomalies are labelled at the
  semi setting's eps+ / eps- (25 % / 8 %), not the unsupervised 50 %;
* the semi-supervision part (red): ``b3`` box-labelled images, the same fraction of their
  windows, :func:`.mixmatch.mixmatch_loss` (Algorithm 1) with ``lambda_u`` ramped over
  ``ramp_steps`` (400 in the paper), which must end inside the fine-tune;

token dropout (alpha, Eq. 13) on both parts, AdamW at the semi-supervised learning rate
(3e-5), and a weight average (:mod:`.ema`, with warm-up) that starts from the unsupervised
model's weights, so that after the fine-tune almost nothing of the starting point is left
in the evaluated model. Block labels of the boxed images come from Eq. (15)
(:func:`.boxes.box_block_labels`). :func:`semi_copy` gives the fine-tune its own Swin
while sharing the (large) memory bank and pools with the unsupervised model.

With ``checkpoint_dir``, the fine-tune writes its training state (:mod:`.checkpoints`, files
``finetune_NNNNNN.pt``: the Swin, its weight average, AdamW, the window generator, the model's
synthetic-anomaly generator, torch's global one, the history and the iteration) every
``checkpoint_every`` iterations, at least every ``checkpoint_seconds`` (5 minutes) and at the end, and a later call with the same folder continues
from the newest state, to the same losses and weights as an uninterrupted fine-tune. The state
records the :class:`.mixmatch.MixMatchConfig`, the model's configuration and the caller's
``fingerprint`` (of the starting model and the boxes); a folder written with others is refused.
The folder is locked while the fine-tune runs (:class:`cutswap_lib.files.FolderLock`).
"""

from __future__ import annotations

import contextlib
import copy
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..files import FolderLock
from .boxes import box_block_labels
from .checkpoints import SaveSchedule, newest_training_state, restore_training_state, save_training_state
from .ema import warmup_ema
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
    model.pools["box"] = model._pool(images, features, None, torch.full((len(images),), -1), labels=labels)


def semi_copy(model: SemiREST) -> SemiREST:
    """A copy of a fitted model to fine-tune: memory bank and pools shared; Swin, weight average and
    synthetic-anomaly generator its own.

    The generator starts where the fitted model's stands, so each copy (each Table 6 semi row)
    draws the same anomalies whichever is fine-tuned first.
    """
    if model.ema is None:
        raise RuntimeError("semi_copy copies a fitted model: call model.fit() first")
    other = copy.copy(model)
    other.pools = dict(model.pools)  # the box pool is added to the copy only
    other.model = copy.deepcopy(model.ema.module)
    other.ema = None
    other.timings = dict(model.timings)
    if getattr(model, "_synthetic_gen", None) is not None:
        other._synthetic_gen = torch.Generator(device=model._synthetic_gen.device)
        other._synthetic_gen.set_state(model._synthetic_gen.get_state())
    return other


def finetune_with_boxes(model: SemiREST, images: Tensor, pixel_labels: Tensor,
                        config: MixMatchConfig | None = None, progress: bool = True, *,
                        checkpoint_dir: Path | None = None, checkpoint_every: int = 200,
                        checkpoint_seconds: float | None = 300.0, fingerprint: str | None = None) -> list[dict]:
    """Fine-tune a fitted :class:`SemiREST` in place with box-labelled images (Fig. 3, red + blue); returns the history.

    Use :func:`semi_copy` first to keep the unsupervised model as it is. ``checkpoint_dir``: write
    the training state every ``checkpoint_every`` iterations, at least every ``checkpoint_seconds``
    and at the end (:class:`.checkpoints.SaveSchedule`), and continue from the
    newest one found there (see the module doc); ``fingerprint`` (of the starting model and the
    boxes, the caller's) must match the folder's.
    """
    schedule = SaveSchedule(checkpoint_every, checkpoint_seconds)
    cfg = (config or MixMatchConfig()).validate()
    if model.model is None:
        raise RuntimeError("finetune_with_boxes continues from the unsupervised model: call model.fit() first")
    lock = FolderLock(checkpoint_dir, purpose="SemiREST MixMatch fine-tuning") if checkpoint_dir else None
    with lock or contextlib.nullcontext():
        return _finetune(model, images, pixel_labels, cfg, progress, checkpoint_dir, schedule, fingerprint)


def _finetune(model: SemiREST, images: Tensor, pixel_labels: Tensor, cfg: MixMatchConfig, progress: bool,
              checkpoint_dir: Path | None, schedule: SaveSchedule, fingerprint: str | None) -> list[dict]:
    add_box_pool(model, images, pixel_labels, cfg.upsilon)
    if model.ema is not None:
        model.model.load_state_dict(model.ema.module.state_dict())  # start from the averaged weights
    model.ema = warmup_ema(model.model, model.config.ema_decay, model.config.ema_warmup)
    model.label_eps = (cfg.eps_plus, cfg.eps_minus)  # synthetic anomalies at the semi setting's thresholds
    if "synthetic" in model.pools:  # a fixed pool (synthetic_per_image): relabelled once; fresh ones use label_eps
        model.pools["synthetic"] = model.pools["synthetic"].relabelled(*model.label_eps)
    optimizer = torch.optim.AdamW(model.model.parameters(), lr=cfg.lr, weight_decay=model.config.weight_decay)
    gen = torch.Generator(device=model.device).manual_seed(model.config.seed + 2)
    generators = {"windows": gen, "synthetic": model._synthetic_gen}
    configs = {"mixmatch": cfg, "model": model.config}  # both shape the fine-tune; a state records both
    box_pool = model.pools["box"]
    start, history = 0, []
    state = newest_training_state(checkpoint_dir, configs, fingerprint, map_location=model.device, prefix="finetune")
    if state is not None:
        start, history = restore_training_state(state, model=model.model, ema=model.ema, optimizer=optimizer,
                                                generators=generators)
    t0 = time.perf_counter()
    for step in tqdm(range(start, cfg.iterations), desc="MixMatch fine-tuning", disable=not progress,
                     initial=start, total=cfg.iterations):
        windows, labels = model._sample_windows(gen, {"normal": cfg.b1, "synthetic": cfg.b2}, cfg.window_fraction)

        def semi_part(step=step):  # red part of Fig. 3: M k-NN augmentations of the same boxed windows, Eq. (12)
            index, corners = model._draw(box_pool, cfg.b3, cfg.window_fraction, gen)
            pairs = [model.windows_from_pool(box_pool, index, corners, gen) for _ in range(cfg.copies)]
            loss, parts = mixmatch_loss(model.model, [w for w, _ in pairs], pairs[0][1], cfg, step, gen, cfg.dropout)
            return loss, {"loss_x": parts["loss_x"], "loss_u": parts["loss_u"], "lambda_u": parts["lambda_u"]}

        record = model.train_step(optimizer, token_dropout(windows, cfg.dropout, gen), labels, semi_part)
        history.append({"iteration": step + 1, **record})
        if checkpoint_dir is not None and schedule.due(step + 1, cfg.iterations):
            save_training_state(checkpoint_dir, iteration=step + 1, model=model.model, ema=model.ema,
                                optimizer=optimizer, generators=generators, history=history, config=configs,
                                fingerprint=fingerprint, prefix="finetune")
    model.timings["finetune_boxes"] = time.perf_counter() - t0
    model.history_semi = history
    return history
