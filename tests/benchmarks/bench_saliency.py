"""Benchmark: saliency + clustering + anchor sampling per image (CutSwap Sec. III-A), naive vs ours.

Not part of the test run (pytest collects ``test_*.py`` only). Run it with

    .venv/bin/python tests/benchmarks/bench_saliency.py            # 8 + 12 images, 224 px
    .venv/bin/python tests/benchmarks/bench_saliency.py --quick    # 2 images, 96 px: smoke run
    .venv/bin/python tests/benchmarks/bench_saliency.py --device cuda

Three pipelines on the same toy "disc" images, the same network and the same five
saliency levels (VGG16: the paper's features 4, 9, 16, 23, 30, random init since no
ImageNet weights are reachable offline; and the pretrained EfficientNet-Lite0), each
image's top-1 class as the LayerCAM target, K = 4:

(a) naive – what a first implementation looks like: grad-cam's ``LayerCAM`` called once
    per layer (batched over the images, one forward and backward each), scikit-learn's
    ``KMeans(n_clusters=4)`` (its defaults: k-means++, ``n_init="auto"``) on every map,
    and a per-image, per-map Python loop that takes the highest cluster and draws two
    distinct pixels with numpy;
(b) ours, uncached – ``multilevel_layercam`` (one forward and one backward for all levels)
    + ``sample_anchor_pairs`` (batched 1-D k-means and sampling);
(c) ours, cached – the same with ``SaliencyCache``, second pass (maps read from disk).

Then, for issue 8: the share of the most salient k-means cluster that falls on the
object (the toy generator's footprint), per level, Lite0 vs random-init VGG16.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam import LayerCAM
from sklearn.cluster import KMeans

from cutswap_lib.backbones import build_classifier, saliency_target_layers
from cutswap_lib.data import ensure_toy_dataset, load_foregrounds, load_split
from cutswap_lib.cutswap import (SaliencyCache, multilevel_layercam,
                                  object_share_of_salient_cluster, sample_anchor_pairs)


def naive_pipeline(model, images, layers, k=4, seed=0):
    """grad-cam per layer + scikit-learn KMeans per map + per-image loop -> (B, L, 2, 2), times."""
    t0 = time.perf_counter()
    maps = []
    for layer in layers:
        with LayerCAM(model=model, target_layers=[layer]) as cam:
            maps.append(cam(input_tensor=images, targets=None))  # (B, H, W), top-1 targets
    maps = np.stack(maps, 1)  # (B, L, H, W)
    t1 = time.perf_counter()
    rng = np.random.default_rng(seed)
    anchors = np.zeros(maps.shape[:2] + (2, 2), dtype=np.int64)
    for b in range(maps.shape[0]):
        for lv in range(maps.shape[1]):
            values = maps[b, lv].reshape(-1, 1)
            km = KMeans(n_clusters=k, random_state=0).fit(values)
            pixels = np.flatnonzero(km.labels_ == km.cluster_centers_[:, 0].argmax())
            pick = rng.choice(pixels, 2, replace=False)
            anchors[b, lv] = np.stack(np.unravel_index(pick, maps.shape[-2:]), 1)
    return anchors, t1 - t0, time.perf_counter() - t1


def ours_pipeline(model, images, layers, k=4, seed=0, cache=None):
    """multilevel_layercam (or the cache) + sample_anchor_pairs -> (B, L, 2, 2), times."""
    sync(images)
    t0 = time.perf_counter()
    maps = multilevel_layercam(model, images, layers) if cache is None else cache(model, images, layers)
    sync(images)
    t1 = time.perf_counter()
    gen = torch.Generator(device=images.device).manual_seed(seed)
    anchors = sample_anchor_pairs(maps, k, gen)
    sync(images)
    return anchors, t1 - t0, time.perf_counter() - t1


def sync(t):
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)


def load_images(root, split, size, n):
    """n images spread over a toy disc split (n, 3, S, S) and their footprints (n, 1, S, S), via the library."""
    images, _, _, paths = load_split(root, "disc", split, size)
    idx = np.linspace(0, len(images) - 1, n).round().astype(int).tolist()
    return images[idx], load_foregrounds([paths[i] for i in idx], size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 images at 96 px: a smoke run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours (median reported)")
    args = parser.parse_args()
    size, n_speed, n_share = (96, 2, 2) if args.quick else (224, 8, 12)
    device = torch.device(args.device)
    root = Path(tempfile.mkdtemp(prefix="bench_saliency_"))
    ensure_toy_dataset(root, "disc", n_train=max(n_speed, 8), n_test_good=8, n_test_defect=2,
                       image_size=size, seed=0)
    speed_images = load_images(root, "train", size, n_speed)[0].to(device)
    print(f"toy 'disc', {n_speed} images at {size} px for timing, {n_share} test images for the "
          f"object share; device {device}; {torch.get_num_threads()} threads; K = 4; torch "
          f"{torch.__version__}")

    torch.manual_seed(0)
    nets = {"vgg16 (random init)": build_classifier("vgg16", weights=None, device=device),
            "efficientnet_lite0 (ImageNet)": build_classifier("efficientnet_lite0", device=device)}
    for label, model in nets.items():
        name = model.name
        layers = saliency_target_layers(name, model)
        warm = speed_images[:2]
        naive_pipeline(model, warm, layers)  # warm-up: lazy init of kernels and of sklearn
        ours_pipeline(model, warm, layers)
        _, n_sal, n_km = naive_pipeline(model, speed_images, layers)
        runs = [ours_pipeline(model, speed_images, layers)[1:] for _ in range(args.repeats)]
        o_sal, o_km = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        with tempfile.TemporaryDirectory() as folder:
            cache = SaliencyCache(folder)
            fill = ours_pipeline(model, speed_images, layers, cache=cache)[1:]
            cached = [ours_pipeline(model, speed_images, layers, cache=cache)[1:]
                      for _ in range(args.repeats)]
            c_sal = statistics.median(r[0] for r in cached)
            c_km = statistics.median(r[1] for r in cached)
            assert cache.misses == n_speed and cache.hits == n_speed * args.repeats
        b = n_speed
        naive, ours, hit = (n_sal + n_km) / b, (o_sal + o_km) / b, (c_sal + c_km) / b
        print(f"\n{label}, levels {[n for n, m in model.named_modules() if any(m is l for l in layers)]}")
        print(f"  {'per image, ms':34s} {'saliency':>9s} {'k-means+anchors':>16s} {'total':>9s} "
              f"{'naive / this':>13s}")
        rows = [("(a) naive: grad-cam x5 + sklearn", n_sal, n_km),
                ("(b) ours, uncached", o_sal, o_km),
                ("(c) ours, cached (second pass)", c_sal, c_km),
                ("    (cache fill, first pass)", fill[0], fill[1])]
        for row, s, k in rows:
            total = (s + k) / b
            print(f"  {row:34s} {1e3 * s / b:9.1f} {1e3 * k / b:16.1f} {1e3 * total:9.1f} "
                  f"{naive / total:12.1f}x")
        print(f"  ratios: uncached {naive / ours:.1f}x (target >= 5x), cached {naive / hit:.0f}x "
              f"(target >= 100x); saliency alone {n_sal / o_sal:.1f}x, clustering+anchors alone "
              f"{n_km / o_km:.0f}x")

    # issue 8: does the most salient cluster lie on the object?
    images, fg = load_images(root, "test", size, n_share)
    print(f"\nObject share of the most salient k-means cluster (K = 4), toy 'disc' test, "
          f"{n_share} images at {size} px (mean ± std over images; chance = object area "
          f"{fg.mean().item():.3f} ± {fg.mean((1, 2, 3)).std().item():.3f})")
    header = "  ".join(f"level {i + 1} (s{2 ** (i + 1)})".rjust(15) for i in range(5))
    print(f"  {'network':30s} {header}")
    for label, model in nets.items():
        layers = saliency_target_layers(model.name, model)
        maps = torch.cat([multilevel_layercam(model, x.to(device), layers).cpu()
                          for x in images.split(4)])
        share = object_share_of_salient_cluster(maps, fg)  # (B, L)
        cells = "  ".join(f"{m:.3f} ± {s:.3f}".rjust(15) for m, s in zip(share.mean(0), share.std(0)))
        print(f"  {label:30s} {cells}")


if __name__ == "__main__":
    main()
