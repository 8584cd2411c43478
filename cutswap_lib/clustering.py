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

**Initialisation** (the paper does not state one). Deterministic: two starts run side
by side and the one with lower inertia (sum of squared distances) is kept – the
quantiles ``(2i+1)/(2K)`` of the map's values, and the same fractions of its value range
``[min, max]``. Saliency maps are skewed (mostly near 0), where the second start
usually wins. Lloyd steps then run until the partition no longer changes (at most
``max_iter``). **Empty clusters** are handled as scikit-learn does: the first empty
centroid moves to the value farthest from its own centroid, one per step. A map with
fewer distinct values than K keeps duplicate centroids and empty clusters (centroids
stay sorted; a constant map is one cluster holding every pixel, cluster 0).

Taught in ``notebooks/01_saliency_and_clustering.ipynb``.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def _interval_stats(cs, cs2, starts, ends):
    """Counts, sums and sums of squares of sorted values in ``[starts, ends)`` from prefix sums."""
    m, shape = ends.shape[0], ends.shape
    s, e = starts.reshape(m, -1), ends.reshape(m, -1)
    sums = (cs.gather(1, e) - cs.gather(1, s)).view(shape)
    squares = (cs2.gather(1, e) - cs2.gather(1, s)).view(shape)
    return ends - starts, sums, squares


def _grid_dp_init(x, cs, cs2, k: int, grid: int = GRID):
    """Optimal k intervals among cuts on a grid of sorted positions: centroids ``(M, 1, k)``.

    Dynamic programming over interval cuts (as in Ckmeans.1d.dp, Wang & Song 2011) but
    with cuts restricted to ``grid + 1`` rank-spaced and ``grid + 1`` value-spaced positions
    of the sorted values, so that it costs O(k grid^2) per map whatever the map size;
    interval costs are exact (prefix sums over all pixels).
    """
    m, n = x.shape
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


def _sorted_kmeans(x: torch.Tensor, k: int, max_iter: int, chunk: int = 64):
    """1-D k-means on sorted rows ``x`` (M, N); returns centroids (M, k) and interval ends (M, k)."""
    if x.shape[0] > chunk:  # bounds the (chunk, P, P) memory of the initialisation
        parts = [_sorted_kmeans(x[i:i + chunk], k, max_iter, chunk) for i in range(0, len(x), chunk)]
        return torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts])
    m, n = x.shape
    zero = torch.zeros(m, 1, dtype=x.dtype, device=x.device)
    cs = torch.cat([zero, x.cumsum(1)], 1)  # (M, N+1) prefix sums
    cs2 = torch.cat([zero, (x * x).cumsum(1)], 1)
    c = _grid_dp_init(x, cs, cs2, k)  # (M, r, k), r starts per map
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
    """1-D k-means per map (CutSwap Sec. III-A): ``(..., H, W)`` -> centroids ``(..., k)`` ascending, assignments ``(..., H, W)``.

    ``maps``: ``(M, H, W)`` or ``(B, L, H, W)`` floats; each map is clustered on its own
    pixel values. Assignments are long cluster ids indexing the sorted centroids. See
    the module docstring for the initialisation, ties and empty clusters.
    """
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    flat, lead, (h, w) = _flatten(maps)
    x = flat.to(_work_dtype(flat.device))
    xs = x.sort(1).values  # (M, N)
    if k == 1:
        centroids = xs.mean(1, keepdim=True)
        assign = torch.zeros_like(flat, dtype=torch.long)
    else:
        centroids, _ = _sorted_kmeans(xs, int(k), int(max_iter))
        mids = (centroids[:, 1:] + centroids[:, :-1]) / 2  # (M, k-1)
        assign = torch.searchsorted(mids, x, right=False)  # v <= mid_j -> cluster j
    return centroids.to(maps.dtype).view(*lead, k), assign.view(*lead, h, w)


def _select(maps, k, cluster, method, top_n, layers, max_iter, u_cluster):
    """Sorted pixel order and the chosen interval ``[start, end)`` of it, per map."""
    if cluster not in CLUSTER_CHOICES:
        raise ValueError(f"cluster must be one of {CLUSTER_CHOICES}, got {cluster!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    flat, lead, hw = _flatten(maps, layers)
    m, n = flat.shape
    x, order = flat.to(_work_dtype(flat.device)).sort(dim=1, stable=True)  # (M, N)
    if method == "sort":  # the paper's saliency-sorting ablation: the top_n pixels
        if int(top_n) < 2:
            raise ValueError(f"top_n must be >= 2, got {top_n}")
        end = torch.full((m,), n, device=x.device)
        return x, order, end - min(int(top_n), n), end, lead, hw
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k == 1:
        ends = torch.full((m, 1), n, device=x.device)
    else:
        ends = _sorted_kmeans(x, int(k), int(max_iter))[1]  # (M, k)
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
    none = ~ok.any(1)  # every cluster has < 2 pixels (N <= k): use the whole map
    pick = pick.clamp(0, k - 1)[:, None]
    start = torch.where(none, 0, starts.gather(1, pick)[:, 0])
    end = torch.where(none, n, ends.gather(1, pick)[:, 0])
    return x, order, start, end, lead, hw


def sample_anchor_pairs(maps: torch.Tensor, k: int = 4, generator: torch.Generator | None = None, *,
                        cluster: str = "max", method: str = "kmeans", top_n: int = 300,
                        layers: Sequence[int] | None = None, max_iter: int = 300) -> torch.Tensor:
    """Two distinct anchor pixels per map (CutSwap Sec. III-A): ``(..., H, W)`` -> ``(..., 2, 2)`` long ``(row, col)``.

    Per map: k-means on its values (:func:`kmeans_saliency`), the cluster with the highest
    centroid (``cluster="max"``, the paper) or lowest (``"min"``) or a random one
    (``"random"``) – the paper's cluster ablation; two distinct pixels drawn uniformly
    from it with ``generator`` (one ``torch.rand`` call for all maps, no per-map loop).
    A chosen cluster with fewer than 2 pixels falls back to the next one towards the
    other end (``"random"`` draws only among clusters with >= 2 pixels); if none has 2,
    the whole map is used. ``method="sort"``: the ``top_n`` most salient pixels instead of
    k-means (the paper's saliency-sorting ablation, 300). ``layers``: indices of the
    levels of ``(B, L, H, W)`` maps to use (the paper's layer ablation); the output is
    then ``(B, len(layers), 2, 2)``. ``generator`` may live on any device.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    flat_m = _flatten(maps, layers)[0].shape[0]
    u = torch.rand(flat_m, 3, generator=generator, dtype=torch.float64, device=gen_device)
    u = u.to(maps.device)  # (M, 3): cluster choice, first anchor, offset of the second
    x, order, start, end, lead, (h, w) = _select(maps, k, cluster, method, top_n, layers,
                                                 max_iter, u[:, 0])
    size = end - start  # (M,) >= 2
    first = (u[:, 1] * size).long().clamp(max=size - 1)  # uniform in [0, size)
    step = 1 + (u[:, 2] * (size - 1)).long().clamp(max=size - 2)  # uniform in [1, size)
    pos = start[:, None] + torch.stack([first, (first + step) % size], 1)  # (M, 2) distinct
    pixel = order.gather(1, pos)  # (M, 2) flat pixel indices
    anchors = torch.stack([pixel // w, pixel % w], -1)  # (M, 2, 2) (row, col)
    return anchors.view(*lead, 2, 2)


def salient_cluster_mask(maps: torch.Tensor, k: int = 4, *, cluster: str = "max",
                         method: str = "kmeans", top_n: int = 300, max_iter: int = 300,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """The pixels anchors are drawn from (CutSwap Sec. III-A): ``(..., H, W)`` -> bool ``(..., H, W)``.

    Same selection as :func:`sample_anchor_pairs` (same fallback; ``cluster="random"``
    uses ``generator``'s first draw per map, as the anchors do).
    """
    flat_m = _flatten(maps)[0].shape[0]
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(flat_m, 3, generator=generator, dtype=torch.float64, device=gen_device)
    x, order, start, end, lead, (h, w) = _select(maps, k, cluster, method, top_n, None,
                                                 max_iter, u[:, 0].to(maps.device))
    rank = torch.arange(x.shape[1], device=x.device)
    in_sorted = (rank >= start[:, None]) & (rank < end[:, None])  # (M, N) in sorted order
    mask = torch.zeros_like(in_sorted).scatter_(1, order, in_sorted)  # back to pixel order
    return mask.view(*lead, h, w)


def object_share_of_salient_cluster(maps: torch.Tensor, foreground: torch.Tensor,
                                    k: int = 4, max_iter: int = 300) -> torch.Tensor:
    """Fraction of the most salient cluster's pixels on the object: ``(B, L, H, W)``, ``(B, 1, H, W)`` -> ``(B, L)``.

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
    x, order, start, end, _, _ = _select(maps, k, "max", "kmeans", 0, None, max_iter, None)
    fg = fg.to(maps.device, x.dtype).reshape(b, 1, h * w).expand(b, l_, h * w).reshape(b * l_, -1)
    on = torch.cat([torch.zeros_like(fg[:, :1]), fg.gather(1, order).cumsum(1)], 1)  # (M, N+1)
    share = (on.gather(1, end[:, None]) - on.gather(1, start[:, None]))[:, 0] / (end - start)
    return share.view(b, l_).to(maps.dtype)
