"""Where CutSwap's patches land: share of placed corners inside the salient cluster, push vs resample.

For each saliency level of toy images, anchors are drawn from the most salient k-means
cluster (CutSwap Sec. III-A) and the two patches are placed
(:func:`~cutswap_lib.cutswap.augment.place_patches`). With ``overlap="push"`` a pair whose
patches leave the image or overlap is moved, and a moved corner can leave the cluster; with
``"resample"`` (:func:`~cutswap_lib.cutswap.clustering.sample_placeable_pairs`) pairs are
drawn until both fit unmoved. Prints, per level, the share of pairs that moved and the share
of placed corners inside the cluster, for both, plus the share of maps where no pair of the
cluster can fit (the resample fallback).

    .venv/bin/python tests/benchmarks/bench_anchor_placement.py --category disc --patch 30
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from cutswap_lib.cutswap import (place_patches, salient_cluster_mask, sample_anchor_pairs,
                                 sample_placeable_pairs)
from cutswap_lib.data import load_split, make_toy_dataset
from cutswap_lib.runs.cutswap_encoders import choose_network, layercam_maps


def shares(maps: torch.Tensor, anchors: torch.Tensor, patch: int) -> tuple[float, float]:
    """(share of pairs moved by placement, share of placed corners inside the cluster) for ``(M, H, W)`` maps."""
    placed = place_patches(anchors, patch, tuple(maps.shape[-2:]))  # (M, 2, 2)
    moved = (placed != anchors).any(-1).any(-1).float().mean()
    cluster = salient_cluster_mask(maps)  # (M, H, W)
    m = torch.arange(len(maps))
    inside = torch.stack([cluster[m, placed[:, i, 0], placed[:, i, 1]] for i in range(2)], 1)
    return float(moved), float(inside.float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", default="disc")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--patch", type=int, default=30)
    parser.add_argument("--draws", type=int, default=8, help="anchor pairs drawn per map and placement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_toy_dataset(root, args.category, n_train=args.images, n_test_good=1, n_test_defect=1,
                         image_size=args.size, seed=0)
        images = load_split(root, args.category, "train", args.size)[0]
        network = choose_network("vgg16", "imagenet", verbose=True)
        maps = layercam_maps(images, root / "cache", network)  # (N, L, H, W)
    print(f"toy {args.category}: {len(images)} images at {args.size} px, {args.patch} px patches, "
          f"{args.draws} draws per map, saliency {network.label}")
    print("level | push: moved, corners in cluster | resample: moved, corners in cluster | no fitting pair")
    for level in range(maps.shape[1]):
        level_maps = maps[:, level].repeat(args.draws, 1, 1)  # (N draws, H, W)
        gen = torch.Generator().manual_seed(level)
        push = sample_anchor_pairs(level_maps, generator=gen)
        resampled, fallback = sample_placeable_pairs(level_maps, args.patch, generator=gen)
        pm, pin = shares(level_maps, push, args.patch)
        rm, rin = shares(level_maps, resampled, args.patch)
        print(f"{level:5d} | {pm:6.1%}, {pin:6.1%} | {rm:6.1%}, {rin:6.1%} | {float(fallback.float().mean()):6.1%}")


if __name__ == "__main__":
    main()
