"""Benchmark: feature extraction per image, EfficientNet-Lite0 vs ResNet18 vs WideResNet50-2.

Not part of the test run (pytest collects ``test_*.py`` only). Each backbone runs its
PatchCore levels (Lite0 ``_blocks.4`` + ``_blocks.10``, the ResNets ``layer2`` +
``layer3``) on the same random batch, under ``torch.no_grad``, after warm-up, taking turns; the table
gives the median time per image, the patch-feature dimension (channels of the levels
concatenated) and the patches per image (the stride-8 grid). Weights do not change the
speed, so the torchvision networks run with random init (no download needed).

    .venv/bin/python tests/benchmarks/bench_features.py                 # 224 px, batch 8, CPU
    .venv/bin/python tests/benchmarks/bench_features.py --size 128 --repeats 3
    .venv/bin/python tests/benchmarks/bench_features.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cutswap_lib.backbones import build_feature_extractor

NETWORKS = ("efficientnet_lite0", "resnet18", "wide_resnet50_2")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_extractors(size: int, batch: int, repeats: int, warmup: int,
                    device: torch.device) -> list[dict]:
    """Median ms per image of each network's PatchCore levels on one ``(batch, 3, size, size)`` input.

    The networks take turns within every repeat (round robin), so that load from other
    processes on a shared machine falls on all of them alike.
    """
    torch.manual_seed(0)
    extractors = [build_feature_extractor(n, weights="imagenet" if n == "efficientnet_lite0"
                                          else None, device=device) for n in NETWORKS]
    x = torch.rand(batch, 3, size, size, device=device)
    times: list[list[float]] = [[] for _ in extractors]
    grids = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            for k, fe in enumerate(extractors):
                _sync(device)
                t0 = time.perf_counter()
                out = fe(x)
                _sync(device)
                if i >= warmup:
                    times[k].append(time.perf_counter() - t0)
                elif i == 0:
                    grids.append(next(iter(out.values())).shape[-2:])  # shallowest level's grid
    return [{"name": fe.name, "layers": "+".join(fe.layers),
             "ms_per_image": 1000 * statistics.median(t) / batch,
             "spread": (1000 * min(t) / batch, 1000 * max(t) / batch),
             "dim": sum(fe.channels.values()), "patches": g[0] * g[1],
             "params_m": sum(p.numel() for p in fe.parameters()) / 1e6}
            for fe, t, g in zip(extractors, times, grids)]


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input side in px")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"feature extraction, {args.size} px, batch {args.batch}, {args.device} "
          f"({torch.get_num_threads()} threads), median of {args.repeats} after "
          f"{args.warmup} warm-up")
    rows = time_extractors(args.size, args.batch, args.repeats, args.warmup, device)
    base = rows[0]["ms_per_image"]
    print(f"{'backbone':<20}{'levels':<22}{'ms/image':>9}{'(min-max)':>14}{'vs lite0':>10}"
          f"{'dim':>6}{'patches':>9}{'params (M)':>12}")
    for r in rows:
        lo, hi = r["spread"]
        print(f"{r['name']:<20}{r['layers']:<22}{r['ms_per_image']:>9.1f}"
              f"{f'({lo:.0f}-{hi:.0f})':>14}{r['ms_per_image'] / base:>9.2f}x{r['dim']:>6}"
              f"{r['patches']:>9}{r['params_m']:>12.2f}")
    return rows


if __name__ == "__main__":
    main()
