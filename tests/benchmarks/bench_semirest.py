"""Benchmark: SemiREST inference time per image at 256 and 512 px, stage by stage.

Not part of the test run (pytest collects ``test_*.py`` only). The paper reports "around
120 ms to predict anomaly on a 512 x 512 image" (SemiREST Sec. 4.2.2; the GPU is not
named). Per image size this script times, under ``torch.inference_mode`` and after
warm-up, the four stages of :meth:`cutswap_lib.semirest.SemiREST.predict`:

1. patch features: backbone forward + locally aware features
   (``PositionConstrainedFeatures.patch_features``, Eq. 1);
2. PCF + nearest-memory residuals (``ResidualMemory.match_features``, Eq. 2-6; on the CPU
   this includes building the faiss ``IndexFlatL2`` over the bank, as the library does
   on every call);
3. the token Swin over all sliding windows + bagging (``SemiREST.token_map``, Eq. 8-10);
4. bilinear upsampling to the image + Gaussian blur (sigma 4) + image score (max),
   copied from ``SemiREST.predict``; maps and scores end on the CPU, as there.

and the total; the table gives the median over the repeats, in ms per image. Images
start on the CPU, as in ``predict``. Nothing is trained: weights do not change the speed.

Presets:

* ``paper``: WideResNet50-2 layer2 + layer3 with random init (``weights=None``),
  ``d_f = 1024``; Swin embed 1024, 4 blocks, 32 heads, window 8; mu = 32, s = 8
  (``SemiRESTConfig()``).
* ``cpu``: ``SemiRESTConfig.cpu()`` (mu 16, s 4, Swin embed 128, 4 heads) on
  ``choose_backbone("wide_resnet50_2")``, i.e. EfficientNet-Lite0 (ImageNet weights, in
  the package) where WRN50's weights are not available offline.

Memory bank (both presets): the paper's size, 10 % of the patches of 200 training
images at the benchmarked resolution (``--train-images``, ``--bank-ratio``). It is NOT a
greedy coreset: its rows are random rows of the position-constrained features of a few
random-pixel images (``--bank-images``), plus Gaussian noise of 0.1 x each channel's
std, assigned to ``memory.memory_bank`` directly. The exact search costs the same for
any values of the rows. The Swin is a freshly initialised :class:`TokenSwin`, passed to
``SemiREST.token_map(..., model=swin)``. Before timing, the staged pipeline is checked
against ``SemiREST.predict`` on one image at the first size (same maps).

    .venv/bin/python tests/benchmarks/bench_semirest.py --preset cpu
    .venv/bin/python tests/benchmarks/bench_semirest.py --preset paper --quick
    .venv/bin/python tests/benchmarks/bench_semirest.py --preset paper --device cuda --batch 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel
from torchvision.transforms.functional import gaussian_blur

from cutswap_lib.backbones import FeatureExtractor
from cutswap_lib.semirest import ResidualMemory, SemiREST, SemiRESTConfig, TokenSwin, window_corners
from cutswap_lib.weights import choose_backbone

PAPER_MS = 120.0  # SemiREST Sec. 4.2.2: ms per 512 x 512 image, on the authors' (unnamed) GPU
PAPER_SIZE = 512
STAGES = ("features", "residuals", "swin+bagging", "upsample+blur")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def build(preset: str, device: torch.device) -> tuple[SemiREST, TokenSwin, str]:
    """The preset's :class:`SemiREST` (memory bank still empty), a random-init Swin and a description."""
    if preset == "paper":
        memory = ResidualMemory("wide_resnet50_2", weights=None, feature_dim=1024, device=device,
                                progress=False)
        config = SemiRESTConfig()
    else:
        name = choose_backbone("wide_resnet50_2")
        memory = ResidualMemory(name, weights="imagenet", feature_dim=1024, device=device,
                                progress=False)
        config = SemiRESTConfig.cpu()
    semirest = SemiREST(memory, config, progress=False)
    torch.manual_seed(config.seed)
    swin = TokenSwin(memory.features.d_f, config.embed_dim, config.depth, config.num_heads,
                     config.window).to(device).eval()
    fe: FeatureExtractor = memory.features.extractor
    desc = (f"backbone {fe.name} {'+'.join(fe.layers)} (weights: {fe.weights_loaded}), "
            f"d_f = {memory.features.d_f}; Swin embed {config.embed_dim}, {config.depth} blocks, "
            f"{config.num_heads} heads, window {config.window} "
            f"({sum(p.numel() for p in swin.parameters()) / 1e6:.1f} M params); "
            f"mu = {config.mu}, s = {config.step}; residual '{config.residual}', "
            f"blur sigma {config.sigma}")
    return semirest, swin, desc


def fill_memory_bank(memory: ResidualMemory, size: int, train_images: int, ratio: float,
                     sample_images: int, noise: float, seed: int = 0) -> tuple[int, tuple[int, int]]:
    """A bank of ``round(ratio * train_images * h * w)`` PCF rows at ``size`` px, without a coreset.

    Rows are random rows of the PCFs of ``sample_images`` random-pixel images, plus
    Gaussian noise of ``noise`` x each channel's std. Returns the row count and the grid.
    """
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(sample_images, 3, size, size, generator=gen)
    with torch.inference_mode():
        pcf = memory.features(images).float().cpu()  # (k, d, h, w) PCFs, Eq. (2)
    k, d, h, w = pcf.shape
    rows = pcf.permute(0, 2, 3, 1).reshape(-1, d)  # (k*h*w, d)
    count = round(ratio * train_images * h * w)
    pick = torch.randint(rows.shape[0], (count,), generator=gen)  # (T,)
    bank = rows[pick] + noise * rows.std(0) * torch.randn(count, d, generator=gen)  # (T, d)
    memory.memory_bank = bank.contiguous().to(memory.device)  # (T, d)
    memory.bank_source = torch.randint(train_images, (count,), generator=gen).to(memory.device)  # (T,)
    memory.grid = (h, w)
    return count, (h, w)


def upsample_and_blur(tokens: torch.Tensor, size: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 4, as in ``SemiREST.predict``: token map ``(B, 1, h, w)`` -> maps ``(B, H, W)``, scores ``(B,)`` on the CPU."""
    up = F.interpolate(tokens, size=(size, size), mode="bilinear", align_corners=False)  # (B, 1, H, W)
    if sigma > 0:
        radius = int(4 * sigma + 0.5)
        up = gaussian_blur(up, kernel_size=2 * radius + 1, sigma=sigma)
    return up[:, 0].cpu(), up.flatten(1).amax(1).cpu()


def run_stages(semirest: SemiREST, swin: TokenSwin, images: torch.Tensor, window_batch: int,
               device: torch.device) -> tuple[list[float], torch.Tensor]:
    """One pass of the four stages on ``images`` ``(B, 3, H, W)``; seconds per stage and the maps."""
    memory, cfg = semirest.memory, semirest.config
    times = []
    _sync(device)
    t0 = time.perf_counter()
    features = memory.features.patch_features(images)  # (B, d_f, h, w)
    _sync(device)
    times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    residuals = memory.match_features(features, cfg.residual).residuals  # (B, h, w, d_f)
    _sync(device)
    times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    tokens = semirest.token_map(residuals, model=swin, window_batch=window_batch)  # (B, h, w)
    _sync(device)
    times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    maps, _ = upsample_and_blur(tokens.unsqueeze(1), images.shape[-1], cfg.sigma)  # (B, H, W)
    times.append(time.perf_counter() - t0)
    return times, maps


def check_against_predict(semirest: SemiREST, swin: TokenSwin, size: int, device: torch.device) -> float:
    """Max |staged map - ``SemiREST.predict`` map| on one random image (Swin given as the EMA model)."""
    semirest.ema = AveragedModel(swin)  # predict reads self.ema.module; a copy of the same weights
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        _, staged = run_stages(semirest, swin, image, 64, device)
        _, maps = semirest.predict(image)
    semirest.ema = None
    return float((staged - maps).abs().max())


def time_size(semirest: SemiREST, swin: TokenSwin, size: int, batch: int, repeats: int, warmup: int,
              window_batch: int, args, device: torch.device, check: bool) -> dict:
    """Median ms per image of each stage and of the total at ``size`` px."""
    cfg = semirest.config
    t0 = time.perf_counter()
    bank_rows, (h, w) = fill_memory_bank(semirest.memory, size, args.train_images, args.bank_ratio,
                                         args.bank_images, args.bank_noise)
    bank_s = time.perf_counter() - t0
    windows = len(window_corners(h, w, cfg.mu, cfg.step))
    check = check_against_predict(semirest, swin, size, device) if check else float("nan")
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(2))  # CPU, as in predict
    per_rep = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            stage_s, _ = run_stages(semirest, swin, images, window_batch, device)
            if i >= warmup:
                per_rep.append([1000 * s / batch for s in stage_s])  # ms per image
    totals = [sum(r) for r in per_rep]
    return {"size": size, "grid": (h, w), "windows": windows, "bank_rows": bank_rows,
            "bank_s": bank_s, "check": check,
            "stages": [statistics.median(r[k] for r in per_rep) for k in range(len(STAGES))],
            "total": statistics.median(totals), "spread": (min(totals), max(totals)),
            "swin_tokens": windows * cfg.mu * cfg.mu}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("cpu", "paper"), default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="image sides in px")
    parser.add_argument("--batch", type=int, default=1, help="1: latency; e.g. 8: throughput")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes (default 5, --quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed passes first (default 2, --quick 1)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--window-batch", type=int, default=64, help="Swin windows per forward")
    parser.add_argument("--train-images", type=int, default=200, help="training images the bank stands for")
    parser.add_argument("--bank-ratio", type=float, default=0.1, help="coreset ratio the bank stands for")
    parser.add_argument("--bank-images", type=int, default=4, help="images whose PCF rows fill the bank")
    parser.add_argument("--bank-noise", type=float, default=0.1)
    parser.add_argument("--no-check", action="store_true", help="skip the check against SemiREST.predict")
    parser.add_argument("--threads", type=int, default=None, help="torch (and faiss) CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    import faiss

    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    device = torch.device(args.device)
    note = ""
    if device.type == "cuda" and not torch.cuda.is_available():
        device, note = torch.device("cpu"), " (cuda asked for but not available: CPU)"
    load_start = _load()
    semirest, swin, desc = build(args.preset, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"SemiREST inference, preset '{args.preset}': {desc}")
    print(f"device {device} ({name}){note}, torch {torch.__version__}, {torch.get_num_threads()} torch "
          f"threads, {faiss.omp_get_max_threads()} faiss threads, {os.cpu_count()} CPUs; "
          f"batch {args.batch}, median of {repeats} after {warmup} warm-up; fp32")
    print(f"memory bank: {args.bank_ratio:.0%} of the patches of {args.train_images} training images "
          f"at each size, filled with random PCF rows of {args.bank_images} random-pixel images + "
          f"{args.bank_noise} x std noise (no greedy coreset run)")
    if args.preset == "paper":
        print("weights: random init (weights=None) for WideResNet50-2 and the Swin; timing only")
    rows = []
    for size in args.sizes:
        first = not rows  # the check runs the same code at every size: once, at the first
        rows.append(time_size(semirest, swin, size, args.batch, repeats, warmup, args.window_batch,
                              args, device, check=first and not args.no_check))
        r = rows[-1]
        print(f"  {size} px: token grid {r['grid'][0]}x{r['grid'][1]}, {r['windows']} windows of "
              f"{semirest.config.mu}x{semirest.config.mu} per image ({r['swin_tokens']} Swin tokens), "
              f"bank {r['bank_rows']} x {semirest.memory.features.d_f} (built in {r['bank_s']:.1f} s)"
              + (f", max |staged - predict| = {r['check']:.1e}" if first and not args.no_check else ""),
              flush=True)
    print(f"\n{'ms per image (median)':<27}" + "".join(f"{s:>15}" for s in STAGES)
          + f"{'total':>10}{'(min-max)':>14}")
    for r in rows:
        lo, hi = r["spread"]
        print(f"{r['size']:>4} px, grid {r['grid'][0]:>2}x{r['grid'][1]:<3}{r['windows']:>4} win"
              + "".join(f"{v:>15.1f}" for v in r["stages"])
              + f"{r['total']:>10.1f}{f'({lo:.0f}-{hi:.0f})':>14}")
    print("total: median of the per-pass totals (not the sum of the stage medians)")
    print(f"\nload average (1/5/15 min): {load_start} at start, {_load()} at end")
    for r in rows:
        if r["size"] == PAPER_SIZE:
            print(f"vs the paper (DIFFERENT HARDWARE: their unnamed GPU vs this {name}; "
                  f"preset '{args.preset}'): {r['total']:.0f} ms per 512x512 image = "
                  f"{r['total'] / PAPER_MS:.1f} x the paper's ~{PAPER_MS:.0f} ms (Sec. 4.2.2)")
    return rows


if __name__ == "__main__":
    main()
