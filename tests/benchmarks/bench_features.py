"""Benchmark: feature extraction per image, EfficientNet-Lite0 vs ResNet18 vs WideResNet50-2.

Not part of the test run (pytest collects ``test_*.py`` only). Each backbone runs its
PatchCore levels (Lite0 ``_blocks.4`` + ``_blocks.10``, the ResNets ``layer2`` +
``layer3``) on the same random batch, under ``torch.no_grad``, after warm-up; the table
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


def time_extractor(name: str, size: int, batch: int, repeats: int, warmup: int,
                   device: torch.device) -> dict:
    """Median ms per image of ``name``'s PatchCore levels on a ``(batch, 3, size, size)`` input."""
    torch.manual_seed(0)
    weights = "imagenet" if name == "efficientnet_lite0" else None
    fe = build_feature_extractor(name, weights=weights, device=device)
    x = torch.rand(batch, 3, size, size, device=device)
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            _sync(device)
            t0 = time.perf_counter()
            out = fe(x)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    grid = next(iter(out.values())).shape[-2:]  # the shallowest level sets PatchCore's grid
    return {"name": name, "layers": "+".join(fe.layers),
            "ms_per_image": 1000 * statistics.median(times) / batch,
            "dim": sum(fe.channels.values()), "patches": grid[0] * grid[1],
            "params_m": sum(p.numel() for p in fe.parameters()) / 1e6}


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
    rows = [time_extractor(n, args.size, args.batch, args.repeats, args.warmup, device)
            for n in NETWORKS]
    base = rows[0]["ms_per_image"]
    print(f"{'backbone':<20}{'levels':<24}{'ms/image':>10}{'vs lite0':>10}{'dim':>7}"
          f"{'patches':>9}{'params (M)':>12}")
    for r in rows:
        print(f"{r['name']:<20}{r['layers']:<24}{r['ms_per_image']:>10.1f}"
              f"{r['ms_per_image'] / base:>9.2f}x{r['dim']:>7}{r['patches']:>9}"
              f"{r['params_m']:>12.2f}")
    return rows


if __name__ == "__main__":
    main()
