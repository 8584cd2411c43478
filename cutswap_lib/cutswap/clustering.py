"""Saliency-map clustering and anchor pairs (CutSwap Sec. III-A, "Saliency Map Clustering").

The paper runs k-means (K = 4) on the intensities of each saliency map, keeps the cluster
with the largest centroid, and draws two random pixels from it as the top-left corners
of the two patches that CutSwap swaps. Written by hand here (scikit-learn's ``KMeans`` is
the reference in ``tests/test_saliency.py``) because the data are 1-D and many maps at
once: batched over maps, on the maps' device, with no per-map Python loop.

**Why it is fast.** In 1-D, a k-means cluster (a Voronoi cell of sorted centroids) is an
interval of the sorted values, cut at the midpoints between neighbouring centroids. So
each map is sorted once; then a Lloyd step is a ``searchsorted`` of the k - 1 midpoints
and k interval means from prefix sums: O(k log N) per step instead of O(k N). A value
exactly on a midpoint goes to the lower cluster (as ``argmin`` does in scikit-learn).

**Initialisation** (the paper does not state one; it cites Hartigan & Wong's k-means,
this is Lloyd's). Deterministic and near-global: the optimal K intervals whose cuts lie
on a grid of 2 x 65 candidate positions of the sorted values (65 rank-spaced, 65
value-spaced; ``GRID``) by dynamic programming over cuts (as Ckmeans.1d.dp does over all
positions), with exact interval costs from prefix sums; O(K * 130^2) per map whatever
its size. Lloyd steps then run on all pixels until the partition no longer changes (at
most ``max_iter``). Simple starts (quantiles, or evenly spaced values) ended up to 5 %
above scikit-learn's best-of-10 inertia on skewed maps; this start stays within 0.03 %
of it on the maps tried (``GRID = 128``: 1e-5, at 4x the initialisation cost) and is
usually slightly below (scikit-learn stops at ``tol=1e-4``).
**Empty clusters** are handled much as scikit-learn does (which moves all of them at
once): the first empty centroid moves to the value farthest from its own centroid, one
per step. A map with
fewer distinct values than K keeps duplicate centroids and empty clusters (centroids
stay sorted; a constant map is one cluster holding every pixel, cluster 0).

Taught in ``notebooks/01_saliency_and_clustering.ipynb``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

CLUSTER_CHOICES = ("max", "min", "random")
METHODS = ("kmeans", "sort")
GRID = 64  # cut positions per kind (rank- and value-spaced) in the initialisation


def _flatten(maps: torch.Tensor, layers: Sequence[int] | None = None):
    """``(M, H, W)`` or ``(B, L, H, W)`` -> ``(M', H*W)`` values, the leading shape, ``(H, W)``."""
    if not isinstance(maps, torch.Tensor) or maps.ndim not in (3, 4) or not maps.is_floating_point():
        got = f"{maps.dtype} {tuple(maps.shape)}" if isinstance(maps, torch.Tensor) else type(maps)
        raise ValueError(f"maps must be a float tensor (M, H, W) or (B, L, H, W), got {got}")
    if layers is not None:
        if maps.ndim != 4:
            raise ValueError(f"layers= selects levels of (B, L, H, W) maps, got {tuple(maps.shape)}")
        bad = [i for i in layers if not -maps.shape[1] <= int(i) < maps.shape[1]]
        if bad or len(layers) == 0:
            raise ValueError(f"layers {list(layers)} are not indices of the {maps.shape[1]} levels")
        maps = maps[:, list(layers)]  # (B, L', H, W)
    h, w = maps.shape[-2:]
    if h * w < 2:
        raise ValueError(f"maps of {h}x{w} pixels: need at least 2 pixels per map")
    return maps.reshape(-1, h * w), maps.shape[:-2], (h, w)  # (M, N)


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _sorted_values(flat: torch.Tensor) -> torch.Tensor:
    """Each row sorted ascending, in the working dtype: ``(M, N)`` -> ``(M, N)``.

    Only the values are needed (never the permutation). On the CPU numpy's SIMD sort of a
    zero-copy view is about 20x faster than ``torch.sort`` (which always builds indices).
    """
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        xs = torch.from_numpy(np.sort(flat.detach().contiguous().numpy(), axis=1))
    else:
        xs = flat.sort(dim=1).values
    return xs.to(_work_dtype(flat.device))  # float32 -> float64 keeps the order


def _interval_stats(cs, cs2, starts, ends):
    """Counts, sums and sums of squares of sorted values in ``[starts, ends)`` from prefix sums."""
    m, shape = ends.shape[0], ends.shape
    s, e = starts.reshape(m, -1), ends.reshape(m, -1)
    sums = (cs.gather(1, e) - cs.gather(1, s)).view(shape)
    squares = (cs2.gather(1, e) - cs2.gather(1, s)).view(shape)
    return ends - starts, sums, squares


def _grid_dp_init(x, cs, cs2, k: int, grid: int | None = None):
    """Optimal k intervals among cuts on a grid of sorted positions: centroids ``(M, 1, k)``.

    Dynamic programming over interval cuts (as in Ckmeans.1d.dp, Wang & Song 2011) but
    with cuts restricted to ``grid + 1`` rank-spaced and ``grid + 1`` value-spaced positions
    of the sorted values, so that it costs O(k grid^2) per map whatever the map size;
    interval costs are exact (prefix sums over all pixels).
    """
    m, n = x.shape
    grid = GRID if grid is None else grid
    ranks = torch.linspace(0, n, grid + 1, device=x.device).round().long().expand(m, -1)
    lo, hi = x[:, :1], x[:, -1:]
    levels = lo + (hi - lo) * torch.linspace(0, 1, grid + 1, device=x.device, dtype=x.dtype)
    by_value = torch.searchsorted(x, levels, right=True)  # (M, G+1)
    pos = torch.cat([ranks, by_value], 1).sort(1).values  # (M, P), holds 0 and N
    p = pos.shape[1]
    s, q = cs.gather(1, pos), cs2.gather(1, pos)  # (M, P)
    count = pos[:, None, :] - pos[:, :, None]  # (M, P, P): [i, j] = pos_j - pos_i
    total = s[:, None, :] - s[:, :, None]
    cost = q[:, None, :] - q[:, :, None] - total * total / count.clamp(min=1)
    cost = cost.masked_fill(count < 0, float("inf"))  # SSE of x[pos_i:pos_j], i <= j
    best, back = cost[:, 0, :], []  # best[j]: one interval covering x[:pos_j]
    for _ in range(k - 1):
        best, arg = (best[:, :, None] + cost).min(1)  # (M, P): last interval starts at pos_i
        back.append(arg)
    j = torch.full((m, 1), p - 1, device=x.device, dtype=torch.long)
    cuts = []
    for arg in reversed(back):
        j = arg.gather(1, j)
        cuts.append(pos.gather(1, j))
    cuts = torch.cat(cuts[::-1], 1)  # (M, k-1) sorted cut positions
    full = torch.full((m, 1), n, device=x.device, dtype=torch.long)
    starts, ends = torch.cat([torch.zeros_like(full), cuts], 1), torch.cat([cuts, full], 1)
    counts, sums, _ = _interval_stats(cs, cs2, starts, ends)
    mean = sums / counts.clamp(min=1)
    # an empty interval takes the value at its position (a duplicate; Lloyd relocates it)
    c = torch.where(counts > 0, mean, x.gather(1, starts.clamp(max=n - 1)))
    return c.sort(1).values[:, None, :]  # (M, 1, k)


def _sorted_kmeans(x: torch.Tensor, k: int, max_iter: int, chunk: int = 32):
    """1-D k-means on sorted rows ``x`` (M, N); returns centroids (M, k) and interval ends (M, k)."""
    if x.shape[0] > chunk:  # bounds the (chunk, P, P) memory of the initialisation
        parts = [_sorted_kmeans(x[i:i + chunk], k, max_iter, chunk) for i in range(0, len(x), chunk)]
        return torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts])
    m, n = x.shape
    zero = torch.zeros(m, 1, dtype=x.dtype, device=x.device)
    cs = torch.cat([zero, x.cumsum(1)], 1)  # (M, N+1) prefix sums
    cs2 = torch.cat([zero, (x * x).cumsum(1)], 1)
    c = _grid_dp_init(x, cs, cs2, k)  # (M, r, k): r = 1 start per map (the loop allows more)
    r = c.shape[1]
    full = torch.full((m, r, 1), n, device=x.device, dtype=torch.long)

    def partition(c):  # (M, r, k) sorted centroids -> interval starts, ends (M, r, k)
        mids = (c[..., 1:] + c[..., :-1]) / 2  # (M, r, k-1)
        cut = torch.searchsorted(x, mids.reshape(m, -1), right=True).view(m, r, k - 1)
        return torch.cat([torch.zeros_like(full), cut], 2), torch.cat([cut, full], 2)

    prev = None
    for _ in range(max_iter):
        starts, ends = partition(c)  # values <= mid_j go to cluster j
        if prev is not None and torch.equal(ends, prev):
            break  # partition unchanged: c are already its means
        prev = ends
        counts, sums, _ = _interval_stats(cs, cs2, starts, ends)
        c = torch.where(counts > 0, sums / counts.clamp(min=1), c)  # empty: keep centroid
        # empty clusters: the first one moves to the value farthest from its centroid
        empty = counts == 0  # (M, r, k)
        first = x.gather(1, starts.clamp(max=n - 1).reshape(m, -1)).view_as(c)
        last = x.gather(1, (ends - 1).clamp(min=0).reshape(m, -1)).view_as(c)
        far = torch.stack([(first - c).abs(), (last - c).abs()], -1)  # (M, r, k, 2)
        dist, at = far.masked_fill(empty[..., None], -1.0).flatten(2).max(-1)  # (M, r)
        value = torch.stack([first, last], -1).flatten(2).gather(2, at[..., None])  # (M, r, 1)
        move = empty.any(-1) & (dist > 0)  # (M, r)
        if bool(move.any()):
            slot = empty.float().argmax(-1, keepdim=True)  # first empty cluster
            hit = move[..., None] & (torch.arange(k, device=x.device) == slot)
            c = torch.where(hit, value, c)
            prev = None  # the partition changes
        c = c.sort(-1).values
    starts, ends = partition(c)
    counts, sums, squares = _interval_stats(cs, cs2, starts, ends)
    inertia = (squares - sums * sums / counts.clamp(min=1)).sum(-1)  # (M, r)
    best = inertia.argmin(1)[:, None, None].expand(m, 1, k)
    return c.gather(1, best)[:, 0], ends.gather(1, best)[:, 0]  # (M, k), (M, k)


def kmeans_saliency(maps: torch.Tensor, k: int = 4, max_iter: int = 300):
    """1-D k-means per map (CutSwap Sec. III-A): ``(..., H, W)`` -> ``(..., k)``, ``(..., H, W)``.

    Returns the centroids, sorted ascending, and the long cluster id of every pixel.

    ``maps``: ``(M, H, W)`` or ``(B, L, H, W)`` floats; each map is clustered on its own
    pixel values; the ids index the sorted centroids. See the module docstring for
    the initialisation, ties and empty clusters.
    """
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    flat, lead, (h, w) = _flatten(maps)
    x = flat.to(_work_dtype(flat.device))  # (M, N)
    xs = _sorted_values(flat)
    if k == 1:
        centroids = xs.mean(1, keepdim=True)
        assign = torch.zeros_like(flat, dtype=torch.long)
    else:
        centroids, _ = _sorted_kmeans(xs, int(k), int(max_iter))
        mids = (centroids[:, 1:] + centroids[:, :-1]) / 2  # (M, k-1)
        assign = torch.searchsorted(mids, x, right=False)  # v <= mid_j -> cluster j
    return centroids.to(maps.dtype).view(*lead, k), assign.view(*lead, h, w)


def _select(maps, k, cluster, method, top_n, layers, max_iter, u_cluster):
    """The chosen pixels of each map, as a value interval: ``(M, N)`` values, mask, counts, shapes.

    Cluster j of a 1-D k-means holds exactly the values in ``(mid_{j-1}, mid_j]`` (midpoints
    of the sorted centroids, open ends at -inf / +inf), so the chosen set is a mask by
    comparison: no pixel permutation is ever built.
    """
    if cluster not in CLUSTER_CHOICES:
        raise ValueError(f"cluster must be one of {CLUSTER_CHOICES}, got {cluster!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    flat, lead, hw = _flatten(maps, layers)
    m, n = flat.shape
    x = flat.to(_work_dtype(flat.device))  # (M, N) pixel order
    xs = _sorted_values(flat)  # (M, N) ascending
    inf = torch.full((m, 1), float("inf"), dtype=x.dtype, device=x.device)
    if method == "sort":  # the paper's saliency-sorting ablation: the top_n pixels
        if int(top_n) < 2:
            raise ValueError(f"top_n must be >= 2, got {top_n}")
        threshold = xs[:, n - min(int(top_n), n)][:, None]  # (M, 1); ties at it are all kept
        mask = x >= threshold
        return x, mask, mask.sum(1), lead, hw
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k == 1:
        centroids = xs.mean(1, keepdim=True)
        ends = torch.full((m, 1), n, device=x.device)
    else:
        centroids, ends = _sorted_kmeans(xs, int(k), int(max_iter))  # (M, k), (M, k)
    starts = torch.cat([torch.zeros_like(ends[:, :1]), ends[:, :-1]], 1)
    ok = (ends - starts) >= 2  # clusters that can give two distinct pixels
    idx = torch.arange(k, device=x.device)
    if cluster == "max":  # highest centroid; if it has < 2 pixels, the next one down
        pick = torch.where(ok, idx, -1).amax(1)
    elif cluster == "min":  # lowest centroid; if it has < 2 pixels, the next one up
        pick = torch.where(ok, idx, k).amin(1)
    else:  # uniformly among the clusters with >= 2 pixels
        nth = (u_cluster * ok.sum(1)).long()  # (M,)
        pick = (ok & (ok.cumsum(1) == nth[:, None] + 1)).int().argmax(1)
    pick = pick.clamp(0, k - 1)[:, None]
    bounds = torch.cat([-inf, (centroids[:, 1:] + centroids[:, :-1]) / 2, inf], 1)  # (M, k+1)
    lo, hi = bounds.gather(1, pick), bounds.gather(1, pick + 1)  # (M, 1)
    none = ~ok.any(1, keepdim=True)  # every cluster has < 2 pixels (N <= k): the whole map
    lo, hi = torch.where(none, -inf, lo), torch.where(none, inf, hi)
    mask = (x > lo) & (x <= hi)  # (M, N)
    return x, mask, mask.sum(1), lead, hw


def _draw(u: torch.Tensor, generator, m: int, device) -> torch.Tensor:
    """``(M, 3)`` float64 uniforms from ``generator`` (any device), moved to ``device``."""
    if u is not None:
        return u
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(m, 3, generator=generator, dtype=torch.float64, device=gen_device).to(device)


def sample_anchor_pairs(maps: torch.Tensor, k: int = 4, generator: torch.Generator | None = None, *,
                        cluster: str = "max", method: str = "kmeans", top_n: int = 300,
                        layers: Sequence[int] | None = None, max_iter: int = 300) -> torch.Tensor:
    """Two distinct anchors per map (CutSwap Sec. III-A): ``(..., H, W)`` -> ``(..., 2, 2)`` (row, col).

    Per map: k-means on its values (:func:`kmeans_saliency`), the cluster with the highest
    centroid (``cluster="max"``, the paper) or lowest (``"min"``) or a random one
    (``"random"``) – the paper's cluster ablation; two distinct pixels drawn uniformly
    from it with ``generator`` (one ``torch.rand`` call for all maps, no per-map loop).
    A chosen cluster with fewer than 2 pixels falls back to the next one towards the
    other end (``"random"`` draws only among clusters with >= 2 pixels); if none has 2,
    the whole map is used. ``method="sort"``: the ``top_n`` most salient pixels instead of
    k-means (the paper's saliency-sorting ablation, 300; pixels tied with the top_n-th
    value are all kept). ``layers``: indices of the levels of ``(B, L, H, W)`` maps to use
    (the paper's layer ablation); the output is then ``(B, len(layers), 2, 2)``.
    ``generator`` may live on any device; same seed, same anchors.
    """
    m = _flatten(maps, layers)[0].shape[0]
    u = _draw(None, generator, m, maps.device)  # (M, 3): cluster, first anchor, offset of second
    x, mask, size, lead, (h, w) = _select(maps, k, cluster, method, top_n, layers, max_iter, u[:, 0])
    anchors = _draw_pairs(mask, size[:, None], u[:, 1:2], u[:, 2:3], w)[:, 0]  # (M, 2, 2) (row, col)
    return anchors.view(*lead, 2, 2)


def _draw_pairs(mask: torch.Tensor, count: torch.Tensor, u_first: torch.Tensor, u_offset: torch.Tensor,
                w: int) -> torch.Tensor:
    """T pairs of distinct chosen pixels per map: mask ``(M, N)``, counts ``(M, 1)``, uniforms ``(M, T)`` -> ``(M, T, 2, 2)``.

    The first pixel is uniform among the ``count`` chosen ones, the second uniform among the
    others (a uniform offset of 1 to count - 1 ranks); (row, col) on a map ``w`` wide.
    """
    first = (u_first * count).long().clamp(max=count - 1)  # (M, T) uniform in [0, count)
    step = 1 + (u_offset * (count - 1)).long().clamp(max=count - 2)  # (M, T) uniform in [1, count)
    rank = torch.stack([first, (first + step) % count], -1)  # (M, T, 2) distinct ranks in the set
    running = mask.cumsum(1, dtype=torch.int32)  # (M, N) how many chosen pixels up to here
    pixel = torch.searchsorted(running, (rank.flatten(1) + 1).to(torch.int32)).view_as(rank)  # flat indices
    return torch.stack([pixel // w, pixel % w], -1)  # (M, T, 2, 2)


def sample_placeable_pairs(maps: torch.Tensor, size, k: int = 4, generator: torch.Generator | None = None, *,
                           tries: int = 16, cluster: str = "max", method: str = "kmeans", top_n: int = 300,
                           max_iter: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor pairs whose two ``size`` patches fit as drawn: ``(M, H, W)`` -> ``(M, 2, 2)``, fallback ``(M,)``.

    The anchors of :func:`sample_anchor_pairs` (same cluster choice) are top-left corners of
    two ``size = (h, w)`` patches; :func:`~cutswap_lib.cutswap.augment.place_patches` moves a
    patch that would leave the image or overlap the other, and a moved corner can leave the
    salient cluster. Here up to ``tries`` pairs are drawn per map from the cluster (one
    ``torch.rand`` call for all maps) and the first pair whose patches lie inside the image
    and do not overlap is kept (uniform over such pairs), so both corners stay in the
    cluster and placement moves nothing. Where all tries fail but a fitting pair exists, one
    is drawn directly: a first corner uniform among the cluster's corners that have a
    fitting partner, then the partner uniform among those. Only where no pair of the
    cluster fits (a cluster too small or too near the border) is the first draw returned,
    with ``fallback`` True for that map: placement then pushes it as before. ``tries`` is
    the course's choice (the paper does not discuss placement).
    """
    h_p, w_p = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if int(tries) < 1:
        raise ValueError(f"tries must be >= 1, got {tries}")
    flat, lead, (h, w) = _flatten(maps, None)
    m = flat.shape[0]
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(m, 3 + 2 * int(tries), generator=generator, dtype=torch.float64,
                   device=gen_device).to(maps.device)  # cluster, (first, offset) per try, 2 for the direct draw
    _, mask, count, _, _ = _select(maps, k, cluster, method, top_n, None, max_iter, u[:, 0])
    pairs = _draw_pairs(mask, count[:, None], u[:, 1:-2:2], u[:, 2:-2:2], w)  # (M, T, 2, 2)
    rows, cols = pairs[..., 0], pairs[..., 1]  # (M, T, 2)
    inside = ((rows + h_p <= h) & (cols + w_p <= w)).all(-1)  # (M, T) both patches in the image
    apart = ((rows[..., 0] - rows[..., 1]).abs() >= h_p) | ((cols[..., 0] - cols[..., 1]).abs() >= w_p)
    good = inside & apart  # (M, T)
    pick = torch.where(good.any(1), good.float().argmax(1), torch.zeros_like(good[:, 0], dtype=torch.long))
    anchors = pairs[torch.arange(m, device=maps.device), pick]  # (M, 2, 2)
    direct, feasible = _direct_pairs(mask, (h, w), (h_p, w_p), u[:, -2:])
    use = ~good.any(1) & feasible  # tries failed, but a fitting pair exists
    anchors = torch.where(use[:, None, None], direct, anchors)
    return anchors.view(*lead, 2, 2), ~(good.any(1) | feasible).view(lead)


def _direct_pairs(mask: torch.Tensor, image: tuple[int, int], patch: tuple[int, int], u: torch.Tensor):
    """A fitting pair drawn directly from each ``(M, N)`` cluster mask: anchors ``(M, 2, 2)``, feasible ``(M,)``.

    Two corners give disjoint patches iff their rows differ by >= h or their columns by >= w;
    so a corner has a partner iff the cluster's fitting corners reach h rows or w columns
    away from it, which the extremes of those corners tell without comparing all pairs.
    """
    (h, w), (h_p, w_p) = image, patch
    n = mask.shape[1]
    idx = torch.arange(n, device=mask.device)
    r, c = idx // w, idx % w  # (N,)
    fits = mask & ((r + h_p <= h) & (c + w_p <= w))[None]  # (M, N) corners whose patch is inside
    big = torch.iinfo(torch.long).max // 2
    rmin = torch.where(fits, r, big).amin(1, keepdim=True)
    rmax = torch.where(fits, r, -big).amax(1, keepdim=True)
    cmin = torch.where(fits, c, big).amin(1, keepdim=True)
    cmax = torch.where(fits, c, -big).amax(1, keepdim=True)
    partnered = fits & ((rmax - r >= h_p) | (r - rmin >= h_p) | (cmax - c >= w_p) | (c - cmin >= w_p))
    feasible = partnered.any(1)  # (M,)

    def uniform_in(choice, uu):  # (M, N) bool, (M,) uniforms -> (M,) flat index of a uniform True
        total = choice.sum(1).clamp(min=1)
        k = (uu * total).long().clamp(max=total - 1)
        return torch.searchsorted(choice.cumsum(1, dtype=torch.int32), (k + 1).to(torch.int32)[:, None])[:, 0]

    first = uniform_in(partnered, u[:, 0]).clamp(max=n - 1)  # (M,)
    rf, cf = (first // w)[:, None], (first % w)[:, None]
    partners = fits & (((r[None] - rf).abs() >= h_p) | ((c[None] - cf).abs() >= w_p))
    second = uniform_in(partners, u[:, 1]).clamp(max=n - 1)
    anchors = torch.stack([torch.stack([first // w, first % w], -1), torch.stack([second // w, second % w], -1)], 1)
    return anchors, feasible


def salient_cluster_mask(maps: torch.Tensor, k: int = 4, *, cluster: str = "max",
                         method: str = "kmeans", top_n: int = 300, max_iter: int = 300,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """The pixels anchors are drawn from (CutSwap Sec. III-A): ``(..., H, W)`` -> bool ``(..., H, W)``.

    Same selection as :func:`sample_anchor_pairs` (same fallback; ``cluster="random"``
    uses ``generator``'s first draw per map, as the anchors do).
    """
    m = _flatten(maps)[0].shape[0]
    u = _draw(None, generator, m, maps.device)
    _, mask, _, lead, (h, w) = _select(maps, k, cluster, method, top_n, None, max_iter, u[:, 0])
    return mask.view(*lead, h, w)


def object_share_of_salient_cluster(maps: torch.Tensor, foreground: torch.Tensor,
                                    k: int = 4, max_iter: int = 300) -> torch.Tensor:
    """Object share of the top cluster: ``(B, L, H, W)``, ``(B, 1, H, W)`` -> ``(B, L)`` in [0, 1].

    The fraction of the most salient k-means cluster's pixels that lie on the object.

    The cluster is the one :func:`sample_anchor_pairs` draws from with ``cluster="max"``
    (CutSwap Sec. III-A). ``foreground``: the object's footprint in {0, 1} (or bool),
    ``(B, 1, H, W)`` or ``(B, H, W)``, same size as the maps. The chance level to compare
    with is the footprint's area fraction, ``foreground.float().mean((-2, -1))``.
    """
    if maps.ndim != 4:
        raise ValueError(f"maps must be (B, L, H, W), got {tuple(maps.shape)}")
    fg = foreground[:, 0] if foreground.ndim == 4 else foreground
    if fg.ndim != 3 or fg.shape[0] != maps.shape[0] or fg.shape[-2:] != maps.shape[-2:]:
        raise ValueError(f"foreground {tuple(foreground.shape)} does not match maps "
                         f"{tuple(maps.shape)}: expected (B, 1, H, W) or (B, H, W)")
    b, l_, h, w = maps.shape
    _, mask, size, _, _ = _select(maps, k, "max", "kmeans", 0, None, max_iter, None)
    fg = fg.to(maps.device).bool().reshape(b, 1, h * w)
    on = (mask.view(b, l_, h * w) & fg).sum(-1)  # (B, L)
    return (on / size.view(b, l_)).to(maps.dtype)
