"""Checkpoints of SemiREST's training, so that a run cut off (a Colab disconnect) resumes where it stopped.

A training state holds what the loop in :meth:`~cutswap_lib.semirest.model.SemiREST.fit`
changes: the Swin's weights, its weight average (:mod:`.ema`), AdamW's moments, the two random
generators (window draws and token dropout; fresh synthetic anomalies) and torch's global one,
the history and the iteration reached. The memory bank and the pools are *not* saved: ``prepare``
rebuilds them exactly from the same images and seed, in minutes, and they are the large part.
The MixMatch fine-tune (:func:`.semi.finetune_with_boxes`) keeps the same kind of state.

A state also records the configuration and a ``fingerprint`` of the training data (the caller's
choice, e.g. :func:`cutswap_lib.runs.results.fingerprint` of the images and the feature network):
resuming a folder written by another configuration or other data is refused, never silently
continued. ``config`` is a dataclass, or a dict of name -> dataclass when more than one
configuration shapes the training (the fine-tune: its :class:`.mixmatch.MixMatchConfig` and the
model's :class:`.model.SemiRESTConfig`). Files are ``<prefix>_NNNNNN.pt`` (``iteration_`` for
``fit``, ``finetune_`` for the fine-tune, so both can share a folder), written atomically
(:func:`cutswap_lib.files.atomic_write`) and read with ``weights_only=True``; a truncated newest
file is skipped with a warning and the previous one is used; only the ``keep_last`` newest of a
prefix stay on disk.

The paper says nothing about checkpoints; this is the course's plumbing (a Colab session can end
at any time, and a 2,000-iteration paper-size run takes about an hour).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path

import torch

from ..files import atomic_write
from ..weights import CheckpointError, load_checkpoint

PREFIX = "iteration"  # fit's states; the fine-tune's are "finetune"
PATTERN = f"{PREFIX}_*.pt"


def _checked(prefix: str) -> str:
    if not prefix.isidentifier():  # no glob characters, separators or dots in a file-name prefix
        raise ValueError(f"a state's file-name prefix must be a plain name such as 'finetune', got {prefix!r}")
    return prefix


class SaveSchedule:
    """When a training loop writes its state: every ``every`` iterations, at the last one, and whenever
    ``seconds`` have passed since the last write (None: never by time).

    The clock is the course's answer to "a disconnect loses at most 10 minutes": at the paper's
    sizes on a T4 an iteration takes seconds (the planner estimates about 4), so 200 iterations
    alone would be a quarter of an hour; every 5 minutes (the default of the callers) also bounds
    the loss on a slow GPU. A state is exact at any iteration, so when it is written does not
    change the result.
    """

    def __init__(self, every: int, seconds: float | None = 300.0):
        if every < 1:
            raise ValueError(f"checkpoint_every must be at least 1, got {every}")
        if seconds is not None and seconds <= 0:
            raise ValueError(f"checkpoint_seconds must be positive or None, got {seconds}")
        self.every, self.seconds, self.last = every, seconds, time.monotonic()

    def due(self, iteration: int, total: int) -> bool:
        """Whether to write after ``iteration`` (1-based) of ``total``; a True answer restarts the clock."""
        late = self.seconds is not None and time.monotonic() - self.last >= self.seconds
        if iteration % self.every == 0 or iteration == total or late:
            self.last = time.monotonic()
            return True
        return False


def state_path(folder: Path, iteration: int, prefix: str = PREFIX) -> Path:
    """``folder/<prefix>_NNNNNN.pt``: the state after ``iteration`` training steps."""
    return Path(folder) / f"{_checked(prefix)}_{iteration:06d}.pt"


def _states(folder: Path, prefix: str) -> list[Path]:
    return sorted(Path(folder).glob(f"{_checked(prefix)}_*.pt"))


def _record(config) -> dict:
    """The plain dict a state records for ``config``: a dataclass, or a dict of name -> dataclass."""
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    return {name: _record(part) for name, part in config.items()}


def save_training_state(folder: Path, *, iteration: int, model, ema, optimizer, generators: dict,
                        history: list[dict], config, fingerprint: str | None, keep_last: int = 2,
                        prefix: str = PREFIX) -> Path:
    """Write the state after ``iteration`` steps into ``folder`` (atomically); prune to ``keep_last``; its path.

    ``generators``: name -> :class:`torch.Generator` whose states are saved (restored by name).
    ``prefix``: the file names' (``prefix_NNNNNN.pt``); pruning keeps to the files of that prefix.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be at least 1 (the state to resume from), got {keep_last}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = state_path(folder, iteration, prefix)
    state = {"iteration": iteration, "model": model.state_dict(), "ema": ema.state_dict(),
             "optimizer": optimizer.state_dict(), "history": history,
             "generators": {name: g.get_state() for name, g in generators.items()},
             "torch_rng": torch.get_rng_state(), "config": _record(config), "fingerprint": fingerprint}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    with atomic_write(path, "wb") as fh:
        torch.save(state, fh)
    for stale in _states(folder, prefix)[:-keep_last]:
        stale.unlink()
    return path


def newest_training_state(folder: Path | None, config, fingerprint: str | None,
                          map_location="cpu", prefix: str = PREFIX) -> dict | None:
    """The newest readable state of ``prefix`` in ``folder`` (None: no folder or no state yet).

    Raises ValueError naming the file when that state was written by another configuration or
    from other data (another ``fingerprint``).
    """
    if folder is None or not Path(folder).is_dir():
        return None
    for path in reversed(_states(folder, prefix)):
        try:
            state = load_checkpoint(path, map_location=map_location)
        except CheckpointError as err:
            warnings.warn(f"{err}; trying the previous training state", stacklevel=2)
            continue
        if state.get("config") != _record(config):
            raise ValueError(f"training state {path} was written by another configuration; train into a new "
                             f"folder or delete {folder}")
        if state.get("fingerprint") != fingerprint:
            raise ValueError(f"training state {path} was made from other data (fingerprint "
                             f"{state.get('fingerprint')} vs {fingerprint}); train into a new folder or delete "
                             f"{folder}")
        state["path"] = path
        return state
    return None


def restore_training_state(state: dict, *, model, ema, optimizer, generators: dict) -> tuple[int, list[dict]]:
    """Load ``state`` into the model, average, optimizer and generators; (iterations done, history)."""
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    for name, g in generators.items():
        g.set_state(state["generators"][name])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["iteration"]), list(state["history"])


__all__ = ["newest_training_state", "restore_training_state", "save_training_state", "state_path"]
