"""Benchmark: PatchCore fit+predict and coreset selection, ours vs a straightforward version.

Not part of the test run (pytest collects ``test_*.py`` only). Run it with

    .venv/bin/python tests/benchmarks/bench_patchcore.py            # 200 images, 224 px
    .venv/bin/python tests/benchmarks/bench_patchcore.py --quick    # 40 images, smoke run

The straightforward version is what a first implementation looks like: greedy k-center
over the full-dimension float32 features, one distance row per iteration, and
``torch.cdist`` for the nearest-neighbour search. Both run on the same embedded
features of the same toy images, side by side in one process, so the printed ratios
are comparable even when absolute times are noisy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cutswap_lib import metrics
from cutswap_lib.data import ensure_toy_dataset
from cutswap_lib.data import load_split
from cutswap_lib.patchcore import PatchCore, greedy_coreset, reweighted_image_scores


def straightforward_coreset(features: torch.Tensor, n_select: int, seed: int = 0) -> torch.Tensor:
    """Reference greedy k-center: full dimension, float32, one distance row per step."""
    gen = torch.Generator().manual_seed(seed)
    idx = int(torch.randint(features.shape[0], (1,), generator=gen))
    min_dist = torch.full((features.shape[0],), float("inf"))
    selected = []
    for _ in range(n_select):
        selected.append(idx)
        dist = torch.cdist(features, features[idx:idx + 1])[:, 0]
        min_dist = torch.minimum(min_dist, dist)
        idx = int(torch.argmax(min_dist))
    return torch.tensor(selected)


def straightforward_scores(queries: torch.Tensor, bank: torch.Tensor, num_neighbors: int = 9,
                           chunk: int = 2048):
    """Reference scoring: torch.cdist against the whole bank (in query chunks), then PatchCore Eq. 7."""
    b, p, d = queries.shape
    flat = queries.reshape(b * p, d)
    best, idx = zip(*(torch.cdist(q, bank).min(dim=1) for q in flat.split(chunk)))  # (B*P,) each
    best, idx = torch.cat(best), torch.cat(idx)
    return reweighted_image_scores(best.reshape(b, p), idx.reshape(b, p), queries, bank, num_neighbors)


def coverage_radius(features: torch.Tensor, selected: torch.Tensor, chunk: int = 8192) -> float:
    """k-center objective: the largest distance from any row to its nearest selected row."""
    centres = features[selected]
    return max(float(torch.cdist(features[i:i + chunk], centres).min(dim=1).values.max())
               for i in range(0, features.shape[0], chunk))


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 images: a smoke run")
    parser.add_argument("--category", default="board")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--backbone", default="resnet18", choices=["resnet18", "efficientnet_lite0"],
                        help="resnet18 (random init, the issue's setting) or Lite0 (ImageNet)")
    parser.add_argument("--skip-reference-coreset", action="store_true",
                        help="skip the slow full-dimension reference selection")
    args = parser.parse_args()
    n_train = 40 if args.quick else 200
    torch.manual_seed(0)
    root = Path(tempfile.mkdtemp(prefix="bench_patchcore_"))
    ensure_toy_dataset(root, args.category, n_train=n_train, n_test_good=20, n_test_defect=10,
                       image_size=args.image_size, seed=0)
    train, _, _, _ = load_split(root, args.category, "train", args.image_size)
    test, masks, labels, _ = load_split(root, args.category, "test", args.image_size)

    torch.manual_seed(0)  # the same random-init network here and in the PatchCore run below
    model = PatchCore(args.backbone, weights=None if args.backbone == "resnet18" else "imagenet",
                      coreset_ratio=None, device="cpu", progress=False)
    feats, t_embed = timed(lambda: torch.cat([model.embed(x) for x in train.split(16)]))
    bank = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]).contiguous()  # (N, D)
    queries = model.embed(test)
    queries = queries.permute(0, 2, 3, 1).reshape(test.shape[0], -1, queries.shape[1])
    n_select = int(round(args.ratio * bank.shape[0]))
    print(f"toy '{args.category}', {n_train} train images at {args.image_size} px, {args.backbone} "
          f"({model.extractor.weights_loaded}) {'+'.join(model.extractor.layers)}: {bank.shape[0]} patches x {bank.shape[1]} dims; "
          f"coreset {args.ratio:.0%} = {n_select} rows; embedding took {t_embed:.1f} s; "
          f"{torch.get_num_threads()} threads")

    exact_scores = straightforward_scores(queries, bank)
    exact_auroc = metrics.image_auroc(labels, exact_scores)
    print(f"no coreset (exact): image AUROC {exact_auroc:.4f}\n")
    print(f"{'coreset selection':38s} {'time s':>8s} {'vs ours':>8s} {'radius':>8s} "
          f"{'img AUROC':>10s} {'Δ exact':>8s}", flush=True)
    variants = [("ours: proj 128, float16", lambda: greedy_coreset(bank, n_select, half_precision=True,
                                                                   progress=False)),
                ("proj 128, float32", lambda: greedy_coreset(bank, n_select, half_precision=False,
                                                             progress=False))]
    if not args.skip_reference_coreset:
        variants.append(("straightforward: full dim, float32",
                         lambda: straightforward_coreset(bank, n_select)))
    t_ours = None
    for name, select in variants:
        sel, t = timed(select)
        t_ours = t_ours or t
        auroc = metrics.image_auroc(labels, straightforward_scores(queries, bank[sel]))
        print(f"{name:38s} {t:8.1f} {t / t_ours:8.2f} {coverage_radius(bank, sel):8.3f} "
              f"{auroc:10.4f} {auroc - exact_auroc:+8.4f}", flush=True)
        if name.startswith("straightforward"):
            ref, t_ref = sel, t

    # fit + predict end to end on the same images, through the PatchCore class
    torch.manual_seed(0)
    pc = PatchCore(model.extractor, coreset_ratio=args.ratio, device="cpu", progress=False)
    _, t_fit = timed(pc.fit, train)
    (scores, maps), t_pred = timed(pc.predict, test)
    res = metrics.evaluate(labels, scores, masks, maps)
    print(f"\nPatchCore fit {t_fit:.1f} s (embed {pc.timings['embed_train']:.1f} s, coreset "
          f"{pc.timings['coreset']:.1f} s), predict {t_pred:.1f} s for {test.shape[0]} images; "
          + ", ".join(f"{k} {v:.3f}" for k, v in res.items()))
    if not args.skip_reference_coreset:
        t_ref_search = timed(straightforward_scores, queries, bank[ref])[1]
        t_our_search = timed(lambda: pc.predict(test))[1]
        print(f"straightforward fit (embed + reference coreset) {t_embed + t_ref:.1f} s vs ours "
              f"{t_fit:.1f} s: {(t_embed + t_ref) / t_fit:.1f}x; search+score cdist {t_ref_search:.2f} s "
              f"vs ours predict (incl. embedding) {t_our_search:.2f} s")


if __name__ == "__main__":
    main()
