"""Where a memory bank's rows live before the coreset picks them, and the greedy coreset itself.

PatchCore Sec. 3.2 (Roth et al., CVPR 2022): the memory bank keeps the patches a greedy
k-center search picks from every training patch. SemiREST's position-constrained memory
(Eq. 4) picks the same way, so both :mod:`cutswap_lib.patchcore` and
:mod:`cutswap_lib.semirest.residuals` read this module. Taught in notebook 00b.

* :func:`greedy_coreset`: the search, on a random Gaussian projection to 128 dims, from one
  seeded random start; distances in float32, the projected matrix in float16 on a CPU when
  large (measured faster there, ``tests/benchmarks/bench_patchcore.py``).
* The rows it reads (the course's choices; the paper does not discuss memory): a tensor, the
  blocks they were embedded in (:class:`RowChunks`, float16 past ``half_bank_mb``), or rows that
  are not held at all but computed again at each pass (:class:`RecomputedRows`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from tqdm.auto import tqdm

Tensor = torch.Tensor


# --------------------------------------------------------------------------- storage
BANK_DTYPES = ("auto", "float32", "float16")
HALF_BANK_MB = 512.0  # bank_dtype="auto": float16 once the rows would pass this many MiB in float32
ROW_CHUNK = 65_536  # rows per step where a whole bank is projected, normed or copied


def bank_storage_dtype(bank_dtype: str, n_rows: int, dim: int, half_bank_mb: float = HALF_BANK_MB) -> torch.dtype:
    """The dtype ``n_rows x dim`` bank rows are kept in: ``bank_dtype`` "float32" / "float16", or
    "auto": float16 when the float32 rows would take more than ``half_bank_mb`` MiB."""
    if bank_dtype not in BANK_DTYPES:
        raise ValueError(f"bank_dtype must be one of {BANK_DTYPES}, got {bank_dtype!r}")
    if bank_dtype == "auto":
        return torch.float16 if n_rows * dim * 4 > half_bank_mb * 2**20 else torch.float32
    return getattr(torch, bank_dtype)


def take_rows(blocks: Iterable[Tensor], index: Tensor) -> Tensor:
    """Rows ``(T, D)`` at ``index`` ``(T,)`` of the rows that ``blocks`` ``(n_i, D)`` hold one after
    another, in ``index`` order, in the blocks' dtype and on their device; the blocks are read once."""
    out, start = None, 0
    for block in blocks:
        if out is None:
            out = torch.empty(len(index), block.shape[1], dtype=block.dtype, device=block.device)
            index = index.to(block.device)
        inside = (index >= start) & (index < start + len(block))  # (T,)
        out[inside] = block[index[inside] - start]
        start += len(block)
    return out


class RowChunks:
    """Rows ``(N, D)`` that arrive in blocks, kept as those blocks (no copy of the whole bank).

    The blocks are stored in :func:`bank_storage_dtype`'s dtype for the rows seen so far: with
    "auto" they are float32 until their float32 size passes ``half_bank_mb``, then every block
    (the earlier ones too, which are smaller than that) is float16. :meth:`take` gathers
    rows by index and :meth:`concat` joins the blocks, freeing each as it is copied.
    """

    def __init__(self, bank_dtype: str = "auto", half_bank_mb: float = HALF_BANK_MB):
        bank_storage_dtype(bank_dtype, 0, 0)  # check the name now
        self.bank_dtype, self.half_bank_mb = bank_dtype, half_bank_mb
        self.blocks: list[Tensor] = []
        self.rows = 0

    def append(self, rows: Tensor) -> None:
        """Add a block ``(n, D)``."""
        self.rows += rows.shape[0]
        dtype = bank_storage_dtype(self.bank_dtype, self.rows, rows.shape[1], self.half_bank_mb)
        if self.blocks and self.blocks[0].dtype != dtype:
            self.blocks = [b.to(dtype) for b in self.blocks]
        self.blocks.append(rows.to(dtype))

    def take(self, index: Tensor) -> Tensor:
        """Rows ``(T, D)`` at ``index`` ``(T,)``, in that order."""
        return take_rows(self.blocks, index)

    def concat(self) -> Tensor:
        """All rows ``(N, D)``; the blocks are released (peak: the bank plus one block)."""
        if len(self.blocks) == 1:
            return self.blocks.pop()
        first = self.blocks[0]
        out = torch.empty(self.rows, first.shape[1], dtype=first.dtype, device=first.device)
        start = 0
        while self.blocks:
            block = self.blocks.pop(0)
            out[start:start + len(block)] = block
            start += len(block)
        return out


class RecomputedRows:
    """Rows ``(N, D)`` that are never held whole: each pass over them computes them again, block by block.

    ``blocks``: a function that returns a fresh iterable of row blocks ``(n_i, D)``, the same
    rows in the same order at every call (e.g. a backbone pass over the training images);
    ``rows`` and ``dim``: N and D, known before the first pass; ``device``: where the blocks
    are computed. This is the course's way to
    let a memory bank be chosen from more patches than fit in memory: :func:`greedy_coreset`
    keeps only their ``(N, k)`` projection (one pass; two on a CPU when that projection is
    kept in float16, whose centring needs the mean first) and :meth:`take` gathers the kept
    rows in one more pass. The price is those extra passes, not memory.
    """

    def __init__(self, blocks: Callable[[], Iterable[Tensor]], rows: int, dim: int, device="cpu"):
        self.blocks, self.rows, self.dim, self.device = blocks, rows, dim, torch.device(device)

    def __iter__(self):
        seen = 0
        for block in self.blocks():
            seen += block.shape[0]
            yield block
        if seen != self.rows:
            raise RuntimeError(f"RecomputedRows: a pass gave {seen} rows, {self.rows} were announced")

    def take(self, index: Tensor) -> Tensor:
        """Rows ``(T, D)`` at ``index`` ``(T,)``, in that order, on the blocks' device (one pass)."""
        return take_rows(self, index)

    def concat(self) -> Tensor:
        """All rows ``(N, D)``, gathered in one more pass (peak: the rows plus one block)."""
        return self.take(torch.arange(self.rows))


def _row_blocks(features, chunk: int) -> Callable[[], Iterable[Tensor]]:
    """A tensor ``(N, D)``, a list of row blocks, :class:`RowChunks` or :class:`RecomputedRows` -> a
    function giving the row blocks (views) of at most ``chunk`` rows, as often as it is called."""
    if isinstance(features, RecomputedRows):
        return lambda: (b[i:i + chunk] for b in features for i in range(0, b.shape[0], chunk))
    if isinstance(features, RowChunks):
        features = features.blocks
    blocks = [features] if isinstance(features, Tensor) else list(features)
    blocks = [b[i:i + chunk] for b in blocks for i in range(0, b.shape[0], chunk)]
    return lambda: blocks


# --------------------------------------------------------------------------- coreset
def greedy_coreset(
    features,
    n_select: int,
    projection_dim: int | None = 128,
    seed: int = 0,
    half_precision: bool | None = None,
    progress: bool = True,
    chunk: int = ROW_CHUNK,
    device=None,
) -> Tensor:
    """Greedy k-center coreset: indices ``(n_select,)`` of rows of ``features`` ``(N, D)``.

    PatchCore Sec. 3.2 / Alg. 1: start from one random row, then repeatedly add the row
    farthest from everything selected so far. Distances are computed on a random
    Gaussian projection to ``projection_dim`` dims (None: no projection). Runs on the
    device of ``features``; each iteration reads the projected matrix once.
    ``features`` may also be a list of row blocks ``(N_i, D)`` or a :class:`RowChunks` (a bank
    still in the blocks it was embedded in), in any dtype, or :class:`RecomputedRows`
    (rows computed again at each pass, never held). ``device`` (None: where
    the rows are) is where the search runs: rows kept on the host are moved there one block at
    a time to be projected, so only the projected ``(N, k)`` matrix lives on the device.

    Memory: the projected, centred matrix ``(N, k)`` (k = ``projection_dim``, or D) and a
    few ``(N,)`` vectors; no ``N x n_select`` distance matrix is ever formed, and the
    projection runs ``chunk`` rows at a time in float32, so a float16 bank is never copied
    whole to float32. ``chunk`` does not change the result.

    ``half_precision`` stores that matrix in float16 (distances still in float32).
    None (auto) does so on a CPU when the float32 matrix exceeds 32 MiB: then the
    matrix-vector product is bound by memory bandwidth and float16 halves the bytes
    (measured 2.8x faster for 156,800 x 128 here), while a matrix that fits in cache is
    faster in float32 (``tests/benchmarks/bench_patchcore.py`` prints both).
    """
    blocks = _row_blocks(features, chunk)
    if isinstance(features, RecomputedRows):
        n, dim, home = features.rows, features.dim, features.device
    else:
        first = blocks()[0]
        n, dim, home = sum(b.shape[0] for b in blocks()), first.shape[1], first.device
    device = torch.device(device) if device is not None else home
    if not 0 < n_select <= n:
        raise ValueError(f"n_select must be in [1, {n}], got {n_select}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    proj = None
    if projection_dim is not None and projection_dim < dim:
        proj = (torch.randn(dim, projection_dim, generator=gen) / math.sqrt(projection_dim)).to(device)
    k = dim if proj is None else projection_dim

    def project(block: Tensor) -> Tensor:  # (n_i, D) -> (n_i, k) float32, on the device
        block = block.to(device).float()
        return block @ proj if proj is not None else block

    if half_precision is None:
        half_precision = device.type == "cpu" and n * k * 4 > 32 * 2**20
    feats = torch.empty(n, k, device=device, dtype=torch.float16 if half_precision else torch.float32)
    if half_precision:  # two passes: the column mean first, so that no float32 (N, k) copy exists
        mean = sum(project(b).double().sum(0) for b in blocks()).div(n).float()  # (k,)
        start = 0
        for b in blocks():
            feats[start:start + len(b)] = project(b) - mean  # centring shrinks norms: less cancellation below
            start += len(b)
    else:
        start = 0
        for b in blocks():
            feats[start:start + len(b)] = project(b)
            start += len(b)
        feats -= feats.mean(0, keepdim=True)  # (N, k) centred
    sq_norms = torch.cat([(f.float() ** 2).sum(1) for f in feats.split(chunk)])  # (N,)
    min_dist = torch.full((n,), float("inf"), device=device)
    selected = torch.empty(n_select, dtype=torch.long)
    idx = int(torch.randint(n, (1,), generator=gen))
    for i in tqdm(range(n_select), desc="coreset", disable=not progress, mininterval=1.0):
        selected[i] = idx
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, with one matrix-vector product per step
        dist = sq_norms - 2 * torch.mv(feats, feats[idx]).float() + sq_norms[idx]  # (N,)
        torch.minimum(min_dist, dist, out=min_dist)
        idx = int(torch.argmax(min_dist))
    return selected.to(device)


def coreset_indices(bank: Tensor, ratio: float | None, projection_dim: int | None = 128,
                    seed: int = 0, progress: bool = True) -> Tensor:
    """Rows ``(T,)`` of ``bank`` ``(N, D)`` that :func:`greedy_coreset` keeps for ``ratio``.

    ``ratio`` None or 1 keeps every row (``arange(N)``).
    """
    if ratio is None or ratio >= 1:
        return torch.arange(bank.shape[0], device=bank.device)
    n_select = max(1, int(round(ratio * bank.shape[0])))
    return greedy_coreset(bank, n_select, projection_dim, seed=seed, progress=progress)


def coreset_subsample(bank: Tensor, ratio: float | None, projection_dim: int | None = 128,
                      seed: int = 0, progress: bool = True) -> Tensor:
    """The ``ratio`` fraction of the rows of ``bank`` ``(N, D)`` kept by :func:`greedy_coreset`.

    ``ratio`` None or 1 keeps every row. Shared by PatchCore and SemiREST's memory.
    """
    if ratio is None or ratio >= 1:
        return bank
    return bank[coreset_indices(bank, ratio, projection_dim, seed, progress)]
