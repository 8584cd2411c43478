"""Benchmark: peak memory of SemiREST training against the number of training images.

Not part of the test run (pytest collects ``test_*.py`` only). Run it with

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_semirest_memory.py             # 8 / 16 / 32 images
    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_semirest_memory.py --quick     # 2 / 4, 128 px
    .venv/bin/python tests/benchmarks/bench_semirest_memory.py --device cuda                 # + device memory
    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_semirest_memory.py --pool-budget-gb 2  # PCFs held

``--pool-budget-gb`` (default: ``SemiRESTConfig()``'s, 0) is the host memory the normal PCFs may
hold; at 0 nothing of them is held: the coreset, the bank, the neighbours and each iteration's
normal images recompute them. 2 is the CPU preset's budget, under which these sizes hold them.

Every point runs in a fresh subprocess: ``SemiREST.fit`` with ``SemiRESTConfig()``'s shapes
(WideResNet50-2 layer2 + layer3 with random init, d_f = 1024; Swin 1024 channels, 4 blocks,
32 heads; windows of 32 every 8 tokens) at ``--image-size`` px (256: 32 x 32 tokens) for
``--iterations`` iterations (2), on random training images. ``prepare`` (memory bank and
token pools) is called first, so the peak is reported for it and for the whole fit:

* ``ru_maxrss``: the process's peak resident memory (everything: torch, the backbone,
  the images, the pools, the Swin's training step);
* ``CUDA``: ``torch.cuda.max_memory_allocated`` when the run is on a CUDA device.

The last columns are the slope between the first and last point: MB per added image.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(n_images: int, size: int, iterations: int, device: str, pool_budget_gb: float) -> dict:
    """One point, in this (fresh) process."""
    import torch

    from cutswap_lib.semirest.model import SemiREST, SemiRESTConfig
    from cutswap_lib.semirest.residuals import ResidualMemory

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(0)
    images = torch.rand(n_images, 3, size, size, generator=torch.Generator().manual_seed(0))
    memory = ResidualMemory("wide_resnet50_2", weights=None, coreset_ratio=0.1, device=device, progress=False)
    model = SemiREST(memory, dataclasses.replace(SemiRESTConfig(), iterations=iterations,
                                                 pool_budget_gb=pool_budget_gb), progress=False)
    cuda = model.device.type == "cuda"
    start = _peak_mb()
    t0 = time.perf_counter()
    model.prepare(images)
    prepare_s, prepare_peak = time.perf_counter() - t0, _peak_mb()
    cuda_prepare = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    model.fit(images)
    return {"images": n_images, "size": size, "start_mb": start, "prepare_mb": prepare_peak,
            "fit_mb": _peak_mb(), "cuda_prepare_mb": cuda_prepare,
            "cuda_fit_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            "prepare_s": prepare_s, "train_s": model.timings["train"], "bank": list(model.memory.memory_bank.shape),
            "grid": list(model.grid)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 and 4 images at 128 px: a smoke run")
    parser.add_argument("--images", type=int, nargs="+", default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pool-budget-gb", type=float, default=None,
                        help="SemiRESTConfig.pool_budget_gb (default: the paper preset's, 0: the PCFs are recomputed, "
                             "never held; 2: the CPU preset's)")
    parser.add_argument("--worker", nargs=5, metavar=("N", "SIZE", "ITERATIONS", "DEVICE", "BUDGET"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pool_budget_gb is None:
        from cutswap_lib.semirest.model import SemiRESTConfig

        args.pool_budget_gb = SemiRESTConfig().pool_budget_gb
    if args.worker:
        n, size, iterations, device, budget = args.worker
        print(json.dumps(worker(int(n), int(size), int(iterations), device, float(budget))))
        return
    images = args.images or ([2, 4] if args.quick else [8, 16, 32])
    size = args.image_size or (128 if args.quick else 256)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(f"SemiREST.fit, SemiRESTConfig() shapes, WideResNet50-2 random init, {size} px, {args.iterations} "
          f"iterations, {args.device}, pool_budget_gb {args.pool_budget_gb}; one fresh process per point\n")
    points = []
    for n in images:
        out = subprocess.run([sys.executable, __file__, "--worker", str(n), str(size), str(args.iterations),
                              args.device, str(args.pool_budget_gb)], capture_output=True, text=True, env=env)
        if out.returncode:
            sys.exit(f"{n} images failed:\n{out.stderr[-3000:]}")
        points.append(json.loads(out.stdout.strip().splitlines()[-1]))
        p = points[-1]
        print(f"  {n} images: ru_maxrss {p['fit_mb']:.0f} MB, prepare {p['prepare_s']:.0f} s, "
              f"train {p['train_s']:.0f} s", file=sys.stderr, flush=True)
    cuda = points[0]["cuda_fit_mb"] is not None
    header = ["training images", "bank rows x d_f", "ru_maxrss before fit (MB)", "after prepare (MB)",
              "after fit (MB)"] + (["CUDA after prepare (MB)", "CUDA after fit (MB)"] if cuda else []) + \
             ["prepare (s)", "train (s)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for p in points:
        cells = [p["images"], f"{p['bank'][0]} x {p['bank'][1]}", f"{p['start_mb']:.0f}", f"{p['prepare_mb']:.0f}",
                 f"{p['fit_mb']:.0f}"] + ([f"{p['cuda_prepare_mb']:.0f}", f"{p['cuda_fit_mb']:.0f}"] if cuda else []) + \
                [f"{p['prepare_s']:.0f}", f"{p['train_s']:.0f}"]
        print("| " + " | ".join(map(str, cells)) + " |")
    if len(points) > 1:
        span = points[-1]["images"] - points[0]["images"]
        keys = ["prepare_mb", "fit_mb"] + (["cuda_prepare_mb", "cuda_fit_mb"] if cuda else [])
        slopes = ", ".join(f"{k.replace('_mb', '')} {(points[-1][k] - points[0][k]) / span:.1f}" for k in keys)
        print(f"\nMB per added training image (slope from {points[0]['images']} to {points[-1]['images']}): {slopes}")


if __name__ == "__main__":
    main()
