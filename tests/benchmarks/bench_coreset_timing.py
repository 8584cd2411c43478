"""Benchmark: coreset selection time alone at the issue's size, ours vs the straightforward version.

    .venv/bin/python tests/benchmarks/bench_coreset_timing.py

A 156,800 x 384 bank (ResNet18 layer2+layer3 of 200 images at 224 px; selection time does not
depend on the values) and a 10 % coreset. Ours runs to the end; the straightforward greedy
k-center (full dimension, float32, one ``torch.cdist`` row per iteration) would take over an
hour, so its per-iteration time is measured over ``--ref-iterations`` and multiplied out: every
iteration does the same work. ``bench_patchcore.py`` compares the selections' quality.
"""

import argparse
import time

import torch

from cutswap_lib.patchcore import greedy_coreset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=156_800)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--ref-iterations", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(0)
    bank = torch.randn(args.rows, args.dims)
    n_select = int(round(args.ratio * args.rows))
    t = time.perf_counter()
    greedy_coreset(bank, n_select, progress=False)
    t_ours = time.perf_counter() - t
    min_dist, idx = torch.full((args.rows,), float("inf")), 0
    t = time.perf_counter()
    for _ in range(args.ref_iterations):
        min_dist = torch.minimum(min_dist, torch.cdist(bank, bank[idx:idx + 1])[:, 0])
        idx = int(min_dist.argmax())
    t_ref = (time.perf_counter() - t) / args.ref_iterations * n_select
    print(f"{n_select} of {args.rows} x {args.dims} rows, {torch.get_num_threads()} threads: ours "
          f"{t_ours:.1f} s; straightforward {t_ref:.0f} s (extrapolated from {args.ref_iterations} "
          f"iterations); ratio {t_ref / t_ours:.1f}x")


if __name__ == "__main__":
    main()
