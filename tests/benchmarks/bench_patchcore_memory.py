"""Benchmark: peak process memory of PatchCore fit + predict against the number of training images.

Not part of the test run (pytest collects ``test_*.py`` only). Run it with

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_patchcore_memory.py            # 8 / 16 / 32 images
    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_patchcore_memory.py --quick    # 4 / 8, 128 px

Every point runs in a fresh subprocess: WideResNet50-2 layer2 + layer3 (random init, 1536
channels, the backbone SemiREST's PatchCore column uses) at ``--image-size`` px, random
training images, a 10 % coreset, then ``predict`` on 4 images. The figure is the peak
resident memory during fit + predict above the memory just before fit (Linux:
``/proc/self/clear_refs`` resets the peak after the model is built and warmed up, so the
backbone's own memory is not counted; elsewhere ``ru_maxrss`` over the whole process).
Three variants of the same fit:

* ``before``: the fit as it was before the memory work (every batch's patch rows kept in
  float32, joined by one ``torch.cat`` into a second copy, then the coreset);
* ``float32``: the streamed fit (row blocks, never joined; the coreset gathers its rows
  from them), ``bank_dtype="float32"``;
* ``float16``: the same, ``bank_dtype="float16"`` (rows and bank in float16, distances in
  float32 per block).

The last column is the slope between the first and last point: MB per added image.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

VARIANTS = ("before", "float32", "float16")


def _peak_kb() -> int:
    """The process's peak resident set in KiB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_kb() -> int:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def worker(variant: str, n_images: int, size: int) -> dict:
    """One point, in this (fresh) process: fit + predict, and the memory it took."""
    import torch

    from cutswap_lib.backbones import build_feature_extractor
    from cutswap_lib.patchcore import PatchCore, coreset_subsample

    class BeforePatchCore(PatchCore):
        """The fit before the memory work: a float32 list of rows, one ``torch.cat``, then the coreset."""

        def fit(self, train_images):
            feats = []
            for images in train_images.split(self.batch_size):
                f = self.embed(images)  # (B, D, h, w)
                feats.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]))  # (B*h*w, D)
            bank = torch.cat(feats)  # (N, D): a second copy of every row
            self.memory_bank = coreset_subsample(bank, self.coreset_ratio, self.projection_dim, self.seed,
                                                 False).contiguous()
            return self

    torch.set_num_threads(1)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    train = torch.rand(n_images, 3, size, size, generator=gen)
    test = torch.rand(4, 3, size, size, generator=gen)
    extractor = build_feature_extractor("wide_resnet50_2", weights=None)
    kwargs = {"coreset_ratio": 0.1, "device": "cpu", "progress": False, "batch_size": 8}
    model = (BeforePatchCore(extractor, **kwargs) if variant == "before"
             else PatchCore(extractor, bank_dtype=variant, **kwargs))
    model.embed(test[:1])  # warm-up: the backbone's first allocations are not the bank's
    reset = _reset_peak()
    start = _rss_kb()
    t0 = time.perf_counter()
    model.fit(train)
    scores, maps = model.predict(test)
    seconds = time.perf_counter() - t0
    peak = _peak_kb()
    return {"variant": variant, "images": n_images, "size": size, "bank": list(model.memory_bank.shape),
            "dtype": str(model.memory_bank.dtype).replace("torch.", ""), "peak_mb": peak / 1024,
            "above_start_mb": (peak - start) / 1024 if reset else None, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 and 8 images at 128 px: a smoke run")
    parser.add_argument("--images", type=int, nargs="+", default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "N", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        variant, n, size = args.worker
        print(json.dumps(worker(variant, int(n), int(size))))
        return
    images = args.images or ([4, 8] if args.quick else [8, 16, 32])
    size = args.image_size or (128 if args.quick else 256)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(f"PatchCore fit + predict (4 test images), WideResNet50-2 random init, {size} px, coreset 0.1, "
          f"one fresh process per point\n")
    print("| variant | " + " | ".join(f"{n} images: peak above start (MB)" for n in images)
          + " | MB per added image | bank (rows x dims, dtype) at the largest |")
    print("|---|" + "---|" * (len(images) + 2))
    for variant in args.variants:
        points = []
        for n in images:
            out = subprocess.run([sys.executable, __file__, "--worker", variant, str(n), str(size)],
                                 capture_output=True, text=True, env=env, check=True)
            points.append(json.loads(out.stdout.strip().splitlines()[-1]))
        key = "above_start_mb" if points[0]["above_start_mb"] is not None else "peak_mb"
        slope = ((points[-1][key] - points[0][key]) / (images[-1] - images[0])) if len(images) > 1 else float("nan")
        last = points[-1]
        print(f"| {variant} | " + " | ".join(f"{p[key]:.0f} ({p['seconds']:.0f} s)" for p in points)
              + f" | {slope:.2f} | {last['bank'][0]} x {last['bank'][1]}, {last['dtype']} |", flush=True)
    print("\nPeak above start: the highest resident memory during fit + predict minus the memory just before "
          "fit (the model and images already loaded); seconds in brackets.")


if __name__ == "__main__":
    main()
