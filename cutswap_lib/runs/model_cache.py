"""A trained model kept on disk, keyed by everything that made it.

Notebook 05 trains SemiREST's unsupervised and supervised models; notebook 06 starts its
semi-supervised fine-tune from the same unsupervised model and compares with the same
supervised one. Training them again costs minutes on a CPU, so the first notebook to train
a model stores it and every later call with the same inputs loads it.

* :func:`cached_model` is the general mechanism: ``cached_model(key_parts, train_fn,
  restore_fn)`` hashes ``key_parts`` (tensors and JSON-able values,
  :func:`cutswap_lib.runs.results.fingerprint`) into a file name under
  ``results_root()/"cache"/<name>/``; when that file exists and holds the same key, its
  state goes to ``restore_fn``, else ``train_fn()`` trains and returns the state to store.
  A state is a dict of tensors, numbers, strings, lists and dicts, so the file is read with
  ``torch.load(..., weights_only=True)`` (no pickled code is ever run). Files are written
  atomically (:func:`cutswap_lib.files.atomic_write`): an interrupted run leaves no half
  file. A file that cannot be read, holds another key or format, or that ``restore_fn``
  rejects is never used: a warning names it and the model is trained again (and the file
  replaced).
* :func:`fit_semirest_cached` is ``SemiREST.fit`` through that cache. Its key covers the
  configuration (every field of :class:`~cutswap_lib.semirest.SemiRESTConfig`), the memory
  bank's settings, the feature network (its name, levels, weights and a hash of every
  parameter and buffer) and the training data (normal images, foreground masks, texture
  sources, labelled anomalous images and masks, their pixels), plus this module's format
  number and the library version. Same inputs, same file; any change, a new file.

What a stored SemiREST holds: the memory bank, the token pools (unless they are larger
than ``keep_pools_gb``; then loading rebuilds them with ``prepare``, which is seeded and
gives the same pools), the Swin and its weight average, the history and timings, and the
random state after training (the synthetic-anomaly generator and torch's CPU generator),
so that the cells after a loaded model draw the same numbers as after a trained one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import torch

from .. import __version__
from ..config import results_root
from ..files import atomic_write
from ..semirest.ema import warmup_ema
from ..semirest.model import SemiREST, TokenPool
from ..semirest.swin import TokenSwin
from .results import fingerprint

__all__ = ["CacheResult", "FORMAT", "cache_folder", "cached_model", "fit_semirest_cached", "network_fingerprint",
           "semirest_key_parts", "semirest_state", "restore_semirest"]

FORMAT = 1  # raise when the stored state changes shape: older files then train anew


class CacheResult(NamedTuple):
    """What :func:`cached_model` did: the state, whether it came from ``path``, and its key."""

    state: dict
    loaded: bool
    path: Path
    key: str


def cache_folder(name: str, root: Path | None = None) -> Path:
    """``<root>/<name>``; ``root`` None: ``results_root()/"cache"``."""
    return Path(root or results_root() / "cache") / name


def cached_model(key_parts: Sequence, train_fn: Callable[[], dict],
                 restore_fn: Callable[[dict], Any] | None = None, *, name: str = "model",
                 root: Path | None = None) -> CacheResult:
    """Load the state stored under ``fingerprint(*key_parts)``, or train it with ``train_fn()`` and store it.

    ``train_fn()`` returns the state (tensors, numbers, strings, lists, dicts; tensors are
    stored on the CPU). ``restore_fn(state)`` applies a loaded state; if it raises, the file
    is treated as unusable (a warning) and ``train_fn`` runs. Returns a :class:`CacheResult`.
    """
    key = fingerprint(FORMAT, *key_parts)
    path = cache_folder(name, root) / f"{key}.pt"
    if path.exists():
        reason = None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("key") != key:
                reason = "it holds another key or format"
            else:
                if restore_fn is not None:
                    restore_fn(payload["state"])
                return CacheResult(payload["state"], True, path, key)
        except Exception as err:  # unreadable, truncated, unexpected content: never trust it
            reason = f"{type(err).__name__}: {err}"
        warnings.warn(f"{path}: not used ({reason}); training again and replacing it", stacklevel=2)
    state = train_fn()
    with atomic_write(path, "wb") as fh:
        torch.save({"format": FORMAT, "key": key, "state": _to_cpu(state)}, fh)
    return CacheResult(state, False, path, key)


def _to_cpu(value):
    """The same nesting of dicts, lists and tuples, with every tensor moved to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_cpu(v) for v in value]
    return value


def network_fingerprint(module: torch.nn.Module) -> str:
    """16 hex digits of SHA-1 over a network's parameters and buffers (names, shapes, dtypes, values)."""
    h = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name} {tuple(t.shape)} {t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- SemiREST
def semirest_key_parts(model: SemiREST, train_images: torch.Tensor, foreground: torch.Tensor | None = None,
                       sources: torch.Tensor | None = None,
                       anomalous: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple:
    """Everything that makes a trained :class:`SemiREST`: config, memory settings, feature network, data."""
    memory, features = model.memory, model.memory.features
    extractor = features.extractor
    settings = {
        "library": __version__,
        "config": dataclasses.asdict(model.config),
        "label_eps": list(model.label_eps),
        "memory": {"coreset_ratio": memory.coreset_ratio, "projection_dim": memory.projection_dim,
                   "seed": memory.seed, "batch_size": memory.batch_size},
        "features": {"backbone": extractor.name, "layers": list(extractor.layers),
                     "weights": extractor.weights_loaded, "d_f": features.d_f, "feature_dim": features.feature_dim,
                     "lambda_pe": features.lambda_pe, "rho": features.rho, "freq_exponent": features.freq_exponent,
                     "network": network_fingerprint(extractor)},
    }
    images, masks = anomalous if anomalous is not None else (None, None)
    return ("semirest", settings, train_images, foreground, sources, images, masks)


def semirest_state(model: SemiREST, keep_pools_gb: float = 1.0) -> dict:
    """A fitted :class:`SemiREST` as a state dict (see the module doc); pools left out above ``keep_pools_gb``."""
    if model.ema is None:
        raise RuntimeError("semirest_state stores a fitted model: call fit() first")
    pools = {name: {f.name: getattr(pool, f.name) for f in dataclasses.fields(TokenPool)}
             for name, pool in model.pools.items()}
    size = sum(t.numel() * t.element_size() for p in pools.values() for t in p.values() if t is not None)
    state = {
        "grid": list(model.grid),
        "memory_bank": model.memory.memory_bank, "bank_source": model.memory.bank_source,
        "swin": model.model.state_dict(), "ema": model.ema.state_dict(),
        "history": model.history, "timings": dict(model.timings),
        "pools": pools if size <= keep_pools_gb * 2**30 else None,
        "synthetic_gen": model._synthetic_gen.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    return state


def restore_semirest(model: SemiREST, state: dict, train_images: torch.Tensor,
                     foreground: torch.Tensor | None = None, sources: torch.Tensor | None = None,
                     anomalous: tuple[torch.Tensor, torch.Tensor] | None = None) -> SemiREST:
    """Put a :func:`semirest_state` into ``model`` (built with the same config and memory settings)."""
    cfg, device = model.config, model.device
    swin = TokenSwin(state["memory_bank"].shape[1], cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.window).to(device)
    swin.load_state_dict(state["swin"])  # everything is checked before the model is changed
    ema = warmup_ema(swin, cfg.ema_decay, cfg.ema_warmup)
    ema.load_state_dict(state["ema"])
    pools = None if state["pools"] is None else {name: TokenPool(**fields) for name, fields in state["pools"].items()}
    synthetic_gen = torch.Generator().manual_seed(cfg.seed)
    synthetic_gen.set_state(state["synthetic_gen"])
    history, timings, grid = list(state["history"]), dict(state["timings"]), tuple(state["grid"])
    if pools is None:  # not stored: rebuilt, seeded as the first time
        model.pools = {}
        model.prepare(train_images, foreground, sources, anomalous)
    else:
        model.pools = pools
        model.synthetic_source = {"images": train_images, "foreground": foreground, "sources": sources}
    model.grid = grid
    model.memory.memory_bank = state["memory_bank"].to(device)
    model.memory.bank_source = state["bank_source"].to(device)
    model.memory.grid = model.memory._grid = grid
    model.model, model.ema = swin, ema
    model.history, model.timings = history, timings
    model._synthetic_gen = synthetic_gen
    torch.set_rng_state(state["torch_rng"])
    return model


def fit_semirest_cached(model: SemiREST, train_images: torch.Tensor, foreground: torch.Tensor | None = None,
                        sources: torch.Tensor | None = None,
                        anomalous: tuple[torch.Tensor, torch.Tensor] | None = None, *,
                        root: Path | None = None, keep_pools_gb: float = 1.0) -> SemiREST:
    """``model.fit(train_images, foreground, sources, anomalous)``, or the same model loaded from the cache.

    Returns ``model``, with ``model.cache`` the :class:`CacheResult` (``.loaded``: True when
    nothing was trained) and ``model.timings["load"]`` the seconds spent loading. Pools that
    ``prepare`` built before the call are used for training and replaced by the stored ones
    (the same tensors) on a load.
    """
    key_parts = semirest_key_parts(model, train_images, foreground, sources, anomalous)
    t0 = time.perf_counter()

    def train() -> dict:
        model.fit(train_images, foreground, sources, anomalous)
        return semirest_state(model, keep_pools_gb)

    def restore(state: dict) -> None:
        restore_semirest(model, state, train_images, foreground, sources, anomalous)

    model.cache = cached_model(key_parts, train, restore, name="semirest", root=root)
    if model.cache.loaded:
        model.timings["load"] = time.perf_counter() - t0
    return model
