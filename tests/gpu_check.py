"""GPU check: the papers' sizes on one CUDA device in under 8 minutes, reported as one Markdown table.

    .venv/bin/python tests/gpu_check.py              # on a machine with CUDA (``make gpu-check``)
    .venv/bin/python tests/gpu_check.py --cpu-smoke  # the same code path at tiny sizes on the CPU

Not collected by pytest (its name does not match ``test_*.py``); ``tests/test_paper_configs.py``
runs the ``--cpu-smoke`` version. Without CUDA and without ``--cpu-smoke`` it says so in one
line and exits 0. Checks, in order:

1. **CUDA tests**: the fast suite's tests that need a device (``pytest -k "cuda or gpu"``, less
   the test that runs this script).
2. **Mixed precision**: bf16 and fp16 autocast forward of the SemiREST Swin at the paper's
   width (``SemiRESTConfig()``: 1024 channels, 4 blocks, 32 heads, windows of 32 tokens) and
   of the PatchCore embedding (WideResNet50-2 layer2 + layer3, random init, 512 px), each
   against float32: largest difference, and whether everything stayed finite.
3. **SemiREST inference per 512 x 512 image** (the paper: about 120 ms, SemiREST Sec. 4.2.2,
   GPU not named): ``SemiREST.predict`` one image at a time, median over 8 images after
   warm-up, ``SemiRESTConfig()`` on a random-init WideResNet50-2 (d_f = 1024). The memory
   bank is built from 4 random images (1,638 rows); a second line swaps in a bank of the
   paper's size (10 % of 200 images' 64 x 64 patches: 81,920 random rows), since the search
   grows with the bank. The Swin is trained for one step only (speed does not depend on it).
4. **SemiREST training memory**: ``torch.cuda.max_memory_allocated`` of ``SemiREST.fit`` on 40
   random 512 px images, 3 iterations of the paper's configuration (bf16 autocast, as the
   library trains on CUDA); seconds per iteration.
5. **CutSwap training step**: one step of :func:`cutswap_lib.cutswap.train.train_three_way` at
   the paper's batch, 32 images x 5 saliency levels x 3 classes = 480 images of 224 px,
   ResNet18 (random init: the memory and time do not depend on the weights), random maps;
   the second of two steps is timed (the first pays cuDNN's warm-up).

Images and weights are random throughout: nothing is downloaded, and sizes, not scores,
are what is checked.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PAPER_MS = 120.0  # SemiREST Sec. 4.2.2: ms per 512 x 512 image
BUDGET_S = 8 * 60


@dataclasses.dataclass
class Sizes:
    """The sizes of one run of the check: the papers' (``PAPER``) or tiny (``SMOKE``)."""

    name: str
    image: int  # SemiREST image side, px
    backbone: str  # SemiREST / PatchCore feature extractor (random init)
    semirest: dict  # SemiRESTConfig overrides (none: the paper's configuration)
    bank_images: int
    infer_images: int
    paper_bank_rows: int
    train_images: int
    train_iterations: int
    cutswap_images: int  # normal images per step (the paper's batch: 32)
    cutswap_size: int
    cutswap_patch: int
    cutswap_scar: tuple[tuple[int, int], tuple[int, int]]


PAPER = Sizes("paper", image=512, backbone="wide_resnet50_2", semirest={}, bank_images=4, infer_images=8,
              paper_bank_rows=81_920, train_images=40, train_iterations=3, cutswap_images=32, cutswap_size=224,
              cutswap_patch=30, cutswap_scar=((2, 16), (10, 25)))
SMOKE = Sizes("cpu-smoke", image=64, backbone="resnet18",
              semirest={"mu": 8, "step": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "window": 4},
              bank_images=2, infer_images=2, paper_bank_rows=2_000, train_images=4, train_iterations=2,
              cutswap_images=2, cutswap_size=64, cutswap_patch=12, cutswap_scar=((2, 4), (6, 10)))


@dataclasses.dataclass
class Row:
    check: str
    size: str
    result: str
    seconds: float
    peak_mb: float | None = None
    reference: str = ""
    ok: bool = True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _config(sizes: Sizes, **more):
    from cutswap_lib.semirest.model import SemiRESTConfig

    return dataclasses.replace(SemiRESTConfig(), **{**sizes.semirest, **more})


def _memory(sizes: Sizes, device):
    from cutswap_lib.semirest.residuals import ResidualMemory

    return ResidualMemory(sizes.backbone, weights=None, coreset_ratio=0.1, device=device, progress=False)


# --------------------------------------------------------------------------- checks
def check_cuda_tests(sizes: Sizes, device) -> list[Row]:
    """The suite's device tests, in a subprocess (fast profile)."""
    t0 = time.perf_counter()
    env = {**os.environ, "CUTSWAP_PROFILE": "fast", "MPLBACKEND": "Agg"}
    # "not gpu_check": the test that runs this script (its name has "gpu" in it) must not run it again
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "(cuda or gpu) and not gpu_check",
           str(REPO / "tests")]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = [x for x in out.stdout.splitlines() if re.search(r"\d+ (passed|failed|skipped|deselected|error)", x)]
    summary = lines[-1].strip("= ") if lines else f"no summary (exit {out.returncode})"
    ok = out.returncode in (0, 5)  # 5: nothing collected
    if not ok:
        print(out.stdout[-4000:], out.stderr[-2000:], sep="\n", file=sys.stderr)
    return [Row("CUDA tests of the fast suite", 'pytest -k "cuda or gpu"', summary, time.perf_counter() - t0,
                ok=ok)]


def _autocast_dtypes(device) -> list[torch.dtype]:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return [torch.float16]
    return [torch.bfloat16, torch.float16]


def check_mixed_precision(sizes: Sizes, device) -> list[Row]:
    """bf16 / fp16 autocast forwards of the Swin and of the PatchCore embedding against float32."""
    from cutswap_lib.backbones import build_feature_extractor
    from cutswap_lib.patchcore import PatchCore
    from cutswap_lib.semirest.swin import TokenSwin

    cfg = _config(sizes)
    rows = []
    torch.manual_seed(0)
    extractor = build_feature_extractor(sizes.backbone, weights=None)
    d_f = min(sum(extractor.channels.values()), 1024)  # SemiREST's token width (d_f = 1024 in the paper)
    swin = TokenSwin(d_f, cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.window).to(device).eval()
    windows = torch.rand(4, cfg.mu, cfg.mu, d_f, device=device) ** 2  # squared residuals, (4, mu, mu, d_f)
    patchcore = PatchCore(extractor, device=str(device), progress=False)
    images = torch.rand(2, 3, sizes.image, sizes.image, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref_p = swin.anomaly_probability(windows)  # (4, mu, mu)
        ref_f = patchcore.embed(images)  # (2, D, h, w)
        for dtype in _autocast_dtypes(device):
            name = str(dtype).replace("torch.", "")
            for what, run, ref, size in (
                    ("Swin forward", lambda: swin.anomaly_probability(windows), ref_p,
                     f"{tuple(windows.shape)}, E={cfg.embed_dim}, {cfg.num_heads} heads"),
                    ("PatchCore embedding", lambda: patchcore.embed(images), ref_f,
                     f"{sizes.backbone} {sizes.image} px -> {tuple(ref_f.shape[1:])}")):
                t0 = time.perf_counter()
                try:
                    with torch.autocast(device.type, dtype=dtype):
                        out = run()
                    _sync(device)
                except RuntimeError as err:  # e.g. an autocast dtype this CPU build lacks
                    rows.append(Row(f"{what}, {name} autocast", size, f"unsupported here: {str(err)[:80]}",
                                    time.perf_counter() - t0, ok=device.type != "cuda"))
                    continue
                out_dtype, out = str(out.dtype).replace("torch.", ""), out.float()
                finite = bool(torch.isfinite(out).all())
                if what == "Swin forward":  # probabilities: the largest difference
                    label, err = "max abs diff", (out - ref).abs().max().item()
                else:  # features: relative to their size
                    label, err = "relative error", ((out - ref).norm() / ref.norm()).item()
                rows.append(Row(f"{what}, {name} autocast", size,
                                f"{label} {err:.1e} (output {out_dtype}){'' if finite else ', NOT FINITE'}",
                                time.perf_counter() - t0, reference="< 0.05 vs float32", ok=finite and err < 0.05))
    return rows


def _median_ms(model, images, device) -> float:
    model.predict(images[:1], batch_size=1)  # warm-up (allocations, cuDNN choices)
    times = []
    for i in range(len(images)):
        _sync(device)
        t0 = time.perf_counter()
        model.predict(images[i:i + 1], batch_size=1)
        _sync(device)
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def check_inference(sizes: Sizes, device) -> list[Row]:
    """SemiREST.predict per image at the paper's size; a few-image bank, then a paper-size bank."""
    from cutswap_lib.semirest.model import SemiREST

    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(1)
    bank_images = torch.rand(sizes.bank_images, 3, sizes.image, sizes.image, generator=gen)
    test = torch.rand(sizes.infer_images, 3, sizes.image, sizes.image, generator=gen)
    torch.manual_seed(0)
    model = SemiREST(_memory(sizes, device), _config(sizes, iterations=1), progress=False)
    model.fit(bank_images)  # the memory bank, and a Swin after one step (speed does not depend on it)
    scores, maps = model.predict(test[:1])
    shape_ok = maps.shape == (1, sizes.image, sizes.image) and scores.shape == (1,) and maps.dtype == torch.float32
    bank = model.memory.memory_bank
    ms = _median_ms(model, test, device)
    size = f"{sizes.image} px, d_f {bank.shape[1]}, grid {model.grid[0]}x{model.grid[1]}"
    rows = [Row("SemiREST inference per image", f"{size}, bank {bank.shape[0]} rows", f"{ms:.0f} ms",
                time.perf_counter() - t0, _peak_mb(device), f"paper: about {PAPER_MS:.0f} ms",
                ok=shape_ok and bool(torch.isfinite(maps).all()))]
    t0 = time.perf_counter()
    gen_d = torch.Generator(device=bank.device).manual_seed(2)
    big = torch.randn(sizes.paper_bank_rows, bank.shape[1], generator=gen_d, device=bank.device, dtype=bank.dtype)
    model.memory.memory_bank = big * bank.std(0) + bank.mean(0)  # (T, d_f) random rows of the bank's spread
    _reset_peak(device)
    ms = _median_ms(model, test, device)
    rows.append(Row("SemiREST inference per image", f"{size}, bank {sizes.paper_bank_rows} rows (paper size, random)",
                    f"{ms:.0f} ms", time.perf_counter() - t0, _peak_mb(device), f"paper: about {PAPER_MS:.0f} ms"))
    return rows


def check_semirest_training(sizes: Sizes, device) -> list[Row]:
    """Peak device memory of SemiREST.fit on ``train_images`` images, a few iterations."""
    from cutswap_lib.semirest.model import SemiREST

    t0 = time.perf_counter()
    images = torch.rand(sizes.train_images, 3, sizes.image, sizes.image, generator=torch.Generator().manual_seed(3))
    _reset_peak(device)
    torch.manual_seed(0)
    model = SemiREST(_memory(sizes, device), _config(sizes, iterations=sizes.train_iterations), progress=False)
    history = model.fit(images)
    peak = _peak_mb(device)
    per_it = model.timings["train"] / sizes.train_iterations
    ok = len(history) == sizes.train_iterations and all(math.isfinite(h["loss"]) for h in history)
    cfg = model.config
    return [Row("SemiREST training (fit)", f"{sizes.train_images} images of {sizes.image} px, "
                f"{sizes.train_iterations} iterations, b1+b2 = {cfg.b1}+{cfg.b2}, p = {cfg.window_fraction:g}",
                f"{per_it:.2f} s / iteration, prepare {model.timings.get('prepare', float('nan')):.1f} s",
                time.perf_counter() - t0, peak, "", ok=ok)]


def check_cutswap_step(sizes: Sizes, device) -> list[Row]:
    """One 3-way training step at the paper's batch (``cutswap_images`` x 5 levels x 3 classes)."""
    from cutswap_lib.cutswap.train import TrainConfig, train_three_way

    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(4)
    n, s = sizes.cutswap_images, sizes.cutswap_size
    images, maps = torch.rand(n, 3, s, s, generator=gen), torch.rand(n, 5, s, s, generator=gen)
    config = TrainConfig(backbone="resnet18", weights=None, epochs=2, batch_size=n, levels="all",
                         patch_size=sizes.cutswap_patch, scar_width=sizes.cutswap_scar[0],
                         scar_length=sizes.cutswap_scar[1], checkpoint_every=0, refresh_bn=False)
    _reset_peak(device)
    _, history = train_three_way(images, maps, config, device=device, progress=False)
    peak = _peak_mb(device)
    ok = len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    return [Row("CutSwap training step", f"{n} x 5 x 3 = {n * 15} images of {s} px, resnet18",
                f"{history[-1]['seconds']:.2f} s / step", time.perf_counter() - t0, peak, "", ok=ok)]


CHECKS = (check_cuda_tests, check_mixed_precision, check_inference, check_semirest_training, check_cutswap_step)


def table(rows: list[Row], device: torch.device, sizes: Sizes) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"GPU check ({sizes.name} sizes) on {name}, torch {torch.__version__}", "",
             "| check | sizes | result | time (s) | peak device memory (MB) | reference | status |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = f"{r.peak_mb:.0f}" if r.peak_mb is not None else "-"
        lines.append(f"| {r.check} | {r.size} | {r.result} | {r.seconds:.1f} | {peak} | {r.reference} | "
                     f"{'ok' if r.ok else 'FAIL'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="run every check at tiny sizes on the CPU")
    parser.add_argument("--skip-tests", action="store_true", help="leave out the pytest step")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: the GPU check needs one" + (" (running the tiny --cpu-smoke version)"
                                                           if args.cpu_smoke else "; nothing checked"), flush=True)
        if not args.cpu_smoke:
            return 0
    sizes, device = (SMOKE, torch.device("cpu")) if args.cpu_smoke else (PAPER, torch.device("cuda"))
    start, rows = time.perf_counter(), []
    for check in CHECKS:
        if args.skip_tests and check is check_cuda_tests:
            continue
        t0 = time.perf_counter()
        try:
            rows += check(sizes, device)
        except Exception as err:  # one failed check must not hide the others' figures
            traceback.print_exc()
            rows.append(Row(check.__doc__.splitlines()[0], "", f"error: {type(err).__name__}: {str(err)[:120]}",
                            time.perf_counter() - t0, ok=False))
        print(f"[{time.perf_counter() - start:.0f} s] {check.__name__} done", file=sys.stderr, flush=True)
    print(table(rows, device, sizes))
    total = time.perf_counter() - start
    print(f"\nTotal {total:.0f} s" + (f" (over the {BUDGET_S} s budget)" if total > BUDGET_S and sizes is PAPER else ""))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
